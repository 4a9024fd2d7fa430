"""The command line shared by the checkpoint converters in ``tools/model_converters/``.

Every converter reads SRC with :func:`load_checkpoint_state` (weights only unless
``--unsafe-load``), converts the tensors, and writes DST atomically (nothing is written when
anything fails). Errors that name the problem (missing file, unrecognised or missing key,
shape) are printed as ``error: ...`` with exit status 1, without a traceback.
"""
import argparse
import os.path as osp
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from torch import Tensor

from .io import load_checkpoint_state, torch_save_atomic

StateDict = Dict[str, Tensor]
# ``convert(state, args)`` returns the converted state, or it and a note for the summary line.
ConvertFn = Callable[[StateDict, argparse.Namespace], Union[StateDict, Tuple[StateDict, str]]]


def run_converter(name: str,
                  description: str,
                  src_help: str,
                  convert: ConvertFn,
                  argv: Optional[Sequence[str]] = None,
                  add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
                  ) -> int:
    """Parse ``argv``, convert SRC to DST; return the exit status (0, or 1 on an error).

    Args:
        name: the converter's name, stored in DST's ``meta.converter``.
        description: the ``--help`` text.
        src_help: what SRC is (e.g. ``'official SAN checkpoint (.pth)'``).
        convert: ``convert(state, args)`` -> converted state (or ``(state, note)``); raises
            ``KeyError``/``ValueError`` naming the offending key or shape.
        argv: the arguments (default ``sys.argv[1:]``).
        add_arguments: adds the converter's own options to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=src_help)
    parser.add_argument('dst', help='output checkpoint for mmseg-ovseg (load_from, --checkpoint)')
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle arbitrary objects in SRC (only for trusted files)')
    args = parser.parse_args(argv)
    try:
        out = convert(load_checkpoint_state(args.src, args.unsafe_load), args)
    except (KeyError, ValueError, FileNotFoundError) as e:
        # KeyError's str() is the repr of its message; show the message itself.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {msg}', file=sys.stderr)
        return 1
    state, note = out if isinstance(out, tuple) else (out, '')
    torch_save_atomic(
        dict(state_dict=state, meta=dict(converted_from=osp.basename(args.src), converter=name)),
        args.dst)
    print(f'converted {len(state)} tensors -> {args.dst}' + (f'; {note}' if note else ''))
    return 0
