"""File helpers shared by converters and caches."""
import os
import os.path as osp
import tempfile
from typing import Dict

import torch

from .checkpoint import register_safe_globals


def torch_save_atomic(obj, dst: str) -> None:
    """``torch.save`` to a temporary file in ``dst``'s folder, then rename it into place.

    Readers never see a half-written ``dst``; an interrupted or failed write leaves no file
    behind, and concurrent writers simply replace each other.
    """
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp_', suffix='.pth', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, dst)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint_state(path: str, unsafe: bool = False) -> Dict[str, torch.Tensor]:
    """Tensors of a checkpoint (``state_dict`` wrapper and ``module.`` prefix removed).

    Loads with ``weights_only=True`` (with the mmengine checkpoint types allow-listed by
    :mod:`mmseg_ovseg.utils.checkpoint`); ``unsafe`` unpickles arbitrary objects (trusted
    files only).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    register_safe_globals()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=not unsafe)
    except Exception as e:  # noqa: BLE001  (pickle errors have many types)
        raise ValueError(f'{path}: cannot be loaded with weights_only=True ({e}); pass '
                         'unsafe=True (--unsafe-load) if you trust the file') from e
    state = ckpt
    for wrapper in ('state_dict', 'model'):  # mmengine / detectron2 checkpoints
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state:
        raise ValueError(f'{path}: expected a state dict or a checkpoint with "state_dict" '
                         'or "model"')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
