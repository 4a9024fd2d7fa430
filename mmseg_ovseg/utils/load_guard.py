"""Checked loading of trained checkpoints: the file must be readable and its weights must fit.

mmengine's ``Runner`` loads ``load_from`` with ``strict=False``, so a checkpoint of another
architecture, or one without weights, used to leave the model randomly initialised and
``tools/test.py`` reported a number for it. The functions here refuse such files with a
:class:`CheckpointError` whose one-line message names the file and the problem:

- the path does not exist, is a directory (a work dir is accepted where its
  ``last_checkpoint`` names a file), is empty (0 bytes), or is not a PyTorch checkpoint;
- the file holds no weights (no tensors in it or in its ``state_dict``);
- keys do not fit the model: missing, unexpected and mis-shaped keys are listed (counted per
  top-level module, with examples) by :func:`mmseg_ovseg.utils.strict_load.compare_state_dict`;
- floating-point weights hold NaN or inf (the tensors are named).

A checkpoint written for the same config holds exactly ``model.state_dict()``: frozen CLIP
weights are parameters and are saved; non-persistent buffers (attention masks, sinusoidal
positions, the data preprocessor's mean/std) are neither saved nor expected. So the keys are
compared with ``model.state_dict()`` exactly, after removing a ``module.`` prefix (DDP), as
mmengine does.

Files are read with ``torch.load(weights_only=True)`` and mmengine's checkpoint types
allow-listed (:mod:`mmseg_ovseg.utils.checkpoint`).
"""
import os.path as osp
import pickle
import zipfile
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from .strict_load import compare_state_dict

__all__ = [
    'CheckpointError', 'resolve_checkpoint_path', 'read_checkpoint', 'checkpoint_state_dict',
    'check_state_dict', 'check_checkpoint_file', 'load_checkpoint_checked', 'unwrap_model'
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


def resolve_checkpoint_path(path: str) -> str:
    """The checkpoint file for ``path``: the file itself, or for a work dir the file named by
    its ``last_checkpoint`` (relative names are taken relative to the work dir).

    Raises:
        CheckpointError: no such path, a directory without (or with an empty or stale)
            ``last_checkpoint``, a path that is neither a file nor a directory.
    """
    path = str(path)
    if not osp.exists(path):
        raise CheckpointNotFoundError(f'checkpoint file not found: {path}')
    if osp.isdir(path):
        marker = osp.join(path, 'last_checkpoint')
        if not osp.isfile(marker):
            raise CheckpointError(f'checkpoint {path} is a directory, not a file (and has no '
                                  'last_checkpoint naming one); pass a .pth file')
        with open(marker) as f:
            target = f.read().strip()
        if not target:
            raise CheckpointError(f'{marker} is empty: it should name the latest checkpoint '
                                  '(the write was probably interrupted); pass a .pth file')
        if not osp.isabs(target) and not osp.exists(target):
            target = osp.join(path, target)
        if not osp.isfile(target):
            raise CheckpointError(f'{marker} names {target}, which does not exist')
        return target
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint {path} is not a regular file')
    return path


def _torch_detail(text: str) -> str:
    """The informative part of torch's (page-long, weights-only) load error."""
    for marker in ('Unsupported global', 'Trying to load unsupported GLOBAL',
                   'WeightsUnpickler error:'):
        idx = text.find(marker)
        if idx >= 0:
            text = text[idx:].replace('WeightsUnpickler error:', '').strip()
            break
    text = text.split(' Check the documentation')[0]
    return text.split('. ')[0].rstrip('.')[:200]  # the first sentence


def _describe_load_error(path: str, err: Exception) -> str:
    text = ' '.join(line.strip() for line in str(err).splitlines() if line.strip())
    detail = f'{type(err).__name__}: {_torch_detail(text)}'
    with open(path, 'rb') as f:
        head = f.read(4)
    refused = 'GLOBAL' in detail or 'Unsupported global' in detail
    if refused and (head[:1] == b'\x80' or zipfile.is_zipfile(path)):
        return (f'checkpoint {path} holds Python objects that safe (weights-only) loading '
                f'refuses ({detail}); only tensors and mmengine metadata are loaded')
    if zipfile.is_zipfile(path):
        kind = 'a zip archive but not a readable PyTorch checkpoint'
    elif head[:2] == b'PK':
        kind = 'a damaged or truncated zip archive'
    elif head[:1] == b'\x80':
        kind = 'a pickle that cannot be read (damaged or truncated)'
    else:
        return f'checkpoint {path} is not a PyTorch checkpoint (starts with bytes {head!r})'
    return f'checkpoint {path} is {kind} ({detail})'


def read_checkpoint(path: str, map_location='cpu'):
    """``torch.load`` the checkpoint at ``path`` (a file or a work dir), weights only.

    Raises:
        CheckpointError: see :func:`resolve_checkpoint_path`; an empty (0 bytes) file; a file
            torch cannot read (random bytes, a truncated zip, refused pickled objects).
    """
    from .checkpoint import register_safe_globals
    path = resolve_checkpoint_path(path)
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint {path} is empty (0 bytes); it was probably cut off '
                              'while being written')
    register_safe_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
            AttributeError, IndexError, UnicodeDecodeError) as e:
        raise CheckpointError(_describe_load_error(path, e)) from e


def checkpoint_state_dict(ckpt, path: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """The weights of a loaded checkpoint: its ``state_dict`` (mmengine) or the dict itself,
    with a ``module.`` prefix removed. Raises :class:`CheckpointError` when it holds none."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {path} holds a {type(ckpt).__name__}, not a dict '
                              'of weights')
    state = ckpt['state_dict'] if 'state_dict' in ckpt else ckpt
    if not isinstance(state, dict):
        raise CheckpointError(f'checkpoint {path}: "state_dict" is a '
                              f'{type(state).__name__}, not a dict of weights')
    tensors = {(k[len('module.'):] if k.startswith('module.') else k): v
               for k, v in state.items() if torch.is_tensor(v)}
    if not tensors:
        what = 'an empty state_dict' if not state else \
            f'no tensors (keys: {_examples(sorted(map(str, state)), 5)})'
        raise CheckpointError(f'checkpoint {path} holds no weights ({what})')
    return tensors


def _examples(keys: Sequence[str], n: int = 3) -> str:
    shown = ', '.join(keys[:n])
    return shown + (f', ... ({len(keys) - n} more)' if len(keys) > n else '')


def _nonfinite(state: Dict[str, torch.Tensor]) -> List[Tuple[str, int, int]]:
    bad = []
    for key, t in state.items():
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(t).sum())
        bad.append((key, nan, int((~finite).sum()) - nan))
    return bad


def unwrap_model(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP / mmengine wrappers and TTA models (what checkpoints hold)."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_state_dict(model: nn.Module, state: Dict[str, torch.Tensor],
                     path: str = 'checkpoint') -> None:
    """Refuse ``state`` unless it has exactly the keys and shapes of ``model.state_dict()``
    and only finite floating-point values.

    Raises:
        CheckpointError: naming the missing / unexpected / mis-shaped keys, or the tensors
            holding NaN/inf.
    """
    model = unwrap_model(model)
    expected = model.state_dict()
    mismatch = compare_state_dict(expected, state, allow_missing_bn_counter=False)
    if mismatch:
        hint = ' (a checkpoint of another model or config?)' if \
            len(mismatch.missing) + len(mismatch.unexpected) > len(expected) // 2 else ''
        raise CheckpointError(f'checkpoint {path} does not fit {type(model).__name__}{hint}: '
                              f'{mismatch.describe(limit=3, one_line=True)}')
    bad = _nonfinite(state)
    if bad:
        shown = ', '.join(f'{k} ({nan} NaN, {inf} inf)' for k, nan, inf in bad[:3])
        more = f', ... ({len(bad) - 3} more)' if len(bad) > 3 else ''
        raise CheckpointError(f'checkpoint {path} has non-finite weights in {len(bad)} '
                              f'tensor(s): {shown}{more}')


def check_checkpoint_file(model: nn.Module, path: str) -> str:
    """Read the checkpoint at ``path`` and :func:`check_state_dict` it against ``model``,
    without loading it; returns the resolved file path."""
    file = resolve_checkpoint_path(path)
    check_state_dict(model, checkpoint_state_dict(read_checkpoint(file), file), file)
    return file


def load_checkpoint_checked(model: nn.Module, path: str, map_location='cpu') -> dict:
    """Read, check (:func:`check_state_dict`) and load the checkpoint into ``model``.

    Returns the loaded checkpoint (with ``meta`` when mmengine wrote it).
    """
    file = resolve_checkpoint_path(path)
    ckpt = read_checkpoint(file, map_location)
    state = checkpoint_state_dict(ckpt, file)
    check_state_dict(model, state, file)
    unwrap_model(model).load_state_dict(state, strict=True)
    return ckpt if isinstance(ckpt, dict) else {}
