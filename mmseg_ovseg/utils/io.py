"""File helpers shared by converters and caches."""
import os
import os.path as osp
import tempfile

import torch


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
