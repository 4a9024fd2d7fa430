"""The command line shared by the checkpoint converters in ``tools/model_converters/``.

Every converter reads SRC with :func:`load_checkpoint_state` (weights only unless
``--unsafe-load``), converts the tensors, and writes DST atomically (a temporary file in DST's
folder renamed into place; nothing is written when anything fails). With ``--config CFG`` the
model is first built from CFG (every ``pretrained`` file switched off, no weights read) and the
converted state must load into it **strictly**: missing, unexpected and mis-shaped keys are all
listed in one error and DST is not written. Errors that name the problem (missing file,
unrecognised or missing key, shape) are printed as ``error: ...`` with exit status 1, without
a traceback.
"""
import argparse
import os.path as osp
import sys
import traceback
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from torch import Tensor, nn

from .io import load_checkpoint_state, torch_save_atomic
from .strict_load import compare_state_dict

StateDict = Dict[str, Tensor]
# ``convert(state, args)`` returns the converted state, or it and a note for the summary line.
ConvertFn = Callable[[StateDict, argparse.Namespace], Union[StateDict, Tuple[StateDict, str]]]


def _without_pretrained(cfg):
    """Switch off every weight file of a model config in place: each ``pretrained`` value
    anywhere in it becomes None and ``init_cfg`` of type ``Pretrained`` is dropped (the
    converted checkpoint supplies all weights)."""
    if isinstance(cfg, dict):
        for key in list(cfg.keys()):
            value = cfg[key]
            if key == 'pretrained' and isinstance(value, str):
                cfg[key] = None
            elif key == 'init_cfg' and isinstance(value, dict) and \
                    value.get('type') == 'Pretrained':
                cfg[key] = None
            else:
                _without_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for item in cfg:
            _without_pretrained(item)


def build_model_from_config(config: str) -> nn.Module:
    """The model of an mmseg-ovseg config, built without reading any weight file."""
    import os

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_ovseg  # noqa: F401  (registers the plugin's modules)
    if not os.path.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    cfg = Config.fromfile(config)
    model_cfg = cfg.model
    _without_pretrained(model_cfg)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(model_cfg)


def state_dict_mismatch(model: nn.Module, state: StateDict) -> Optional[str]:
    """None when ``state`` loads strictly into ``model``; otherwise a message listing every
    missing, unexpected and mis-shaped key (with both shapes), from
    :func:`~mmseg_ovseg.utils.strict_load.compare_state_dict` (exact: no key is excused)."""
    mismatch = compare_state_dict(model, state, allow_missing_bn_counter=False)
    return mismatch.describe(limit=None) if mismatch else None


def check_fits_config(state: StateDict, config: str) -> nn.Module:
    """Build ``config``'s model and load ``state`` into it strictly; return the model.

    Raises:
        ValueError: the keys do not fit (the message lists them all).
    """
    model = build_model_from_config(config)
    problem = state_dict_mismatch(model, state)
    if problem is not None:
        raise ValueError(f'the converted checkpoint does not fit {config}: {problem}')
    model.load_state_dict(state, strict=True)
    return model


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
    parser.add_argument('--config', metavar='CFG',
                        help='mmseg-ovseg config the result must load into strictly (built '
                             'without pretrained files); DST is written only if it fits')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle arbitrary objects in SRC (only for trusted files)')
    parser.add_argument('--debug', action='store_true',
                        help='on an unexpected error, print the full traceback')
    args = parser.parse_args(argv)
    try:
        out = convert(load_checkpoint_state(args.src, args.unsafe_load), args)
        state, note = out if isinstance(out, tuple) else (out, '')
        if args.config is not None:
            check_fits_config(state, args.config)
            note = f'{note}; ' if note else ''
            note += f'loads strictly into {args.config}'
        torch_save_atomic(
            dict(state_dict=state,
                 meta=dict(converted_from=osp.basename(args.src), converter=name)), args.dst)
    except (KeyError, ValueError, FileNotFoundError) as e:
        # KeyError's str() is the repr of its message; show the message itself.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {msg}', file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001  (anything else, e.g. a full disk: one line too)
        from .cli import error_message
        if args.debug:
            traceback.print_exc()
        hint = '' if args.debug else ' (--debug for the traceback)'
        print(f'error: {error_message(e)}{hint}', file=sys.stderr)
        return 1
    print(f'converted {len(state)} tensors -> {args.dst}' + (f'; {note}' if note else ''))
    return 0
