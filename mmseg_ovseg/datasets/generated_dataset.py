"""Writing a generated dataset in mmseg layout, atomically: shared by the synthetic shapes
(:mod:`.synthetic`) and the concept benchmark (:mod:`.concept_seg`).

Layout: ``{data_root}/img_dir/{train,val}/NNNNNN.png`` (RGB),
``{data_root}/ann_dir/{train,val}/NNNNNN.png`` (8-bit class indices) and ``meta.json``, whose
``params`` record what was generated. Files are written to a temporary sibling directory
renamed into place at the end, so an interrupted run never leaves a partial dataset.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Optional, Tuple

import numpy as np
from PIL import Image

META_FILE = 'meta.json'
SPLITS = ('train', 'val')


def read_meta(data_root: str) -> Optional[dict]:
    """The dataset's ``meta.json``, or None if it is missing or unreadable."""
    try:
        with open(osp.join(data_root, META_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(data_root: str, params: dict) -> bool:
    """True if ``data_root`` holds a finished dataset generated with ``params``."""
    meta = read_meta(data_root)
    if meta is None or meta.get('params') != params:
        return False
    for split in SPLITS:
        n = params[f'num_{split}']
        for sub in ('img_dir', 'ann_dir'):
            d = osp.join(data_root, sub, split)
            if not osp.isdir(d) or len([f for f in os.listdir(d) if f.endswith('.png')]) != n:
                return False
    return True


def check_counts(func: str, num_train, num_val, size) -> None:
    """``num_train``, ``num_val`` >= 1 and ``size`` >= 32, as ints; the error names ``func``."""
    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 1),
                             ('size', size, 32)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f'{func}: {name} must be an int >= {low}, got {value!r}')


def write_split(root: str, split: str, num: int,
                render: Callable[[int], Tuple[np.ndarray, np.ndarray]],
                num_classes: int) -> np.ndarray:
    """Write ``render(i) -> (uint8 (H, W, 3) RGB, uint8 (H, W) label)`` for ``i < num`` as
    ``img_dir/{split}/NNNNNN.png`` and ``ann_dir/{split}/NNNNNN.png`` under ``root``.

    Returns:
        np.ndarray: int64 ``(num_classes,)`` pixel count of each class over the split.
    """
    img_dir = osp.join(root, 'img_dir', split)
    ann_dir = osp.join(root, 'ann_dir', split)
    os.makedirs(img_dir)
    os.makedirs(ann_dir)
    counts = np.zeros(num_classes, np.int64)
    for i in range(num):
        img, label = render(i)
        counts += np.bincount(label.ravel(), minlength=num_classes)
        Image.fromarray(img, 'RGB').save(osp.join(img_dir, f'{i:06d}.png'))
        Image.fromarray(label, 'L').save(osp.join(ann_dir, f'{i:06d}.png'))
    return counts


def generate_atomically(data_root: str, params: dict, kind: str,
                        write: Callable[[str], None]) -> bool:
    """Have ``write(tmp)`` fill a temporary sibling of ``data_root``, then rename it there.

    Skipped when ``data_root`` already holds a complete dataset with ``params``. An existing
    dataset with other parameters is replaced; a non-empty directory without our
    ``meta.json`` is refused (``FileExistsError`` naming it as not a ``kind``) rather than
    deleted.

    Returns:
        bool: True if generated here, False if it was there already or another process
        finished the same dataset first.
    """
    if is_complete(data_root, params):
        return False
    if osp.isdir(data_root) and os.listdir(data_root) and read_meta(data_root) is None:
        raise FileExistsError(f'{data_root} exists, is not empty and has no {META_FILE}: '
                              f'not a {kind}, refusing to overwrite it')
    parent = osp.dirname(data_root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(data_root)}.tmp-', dir=parent)
    try:
        write(tmp)
        if osp.isdir(data_root):  # stale dataset (other parameters) or an empty dir
            trash = tempfile.mkdtemp(prefix=f'.{osp.basename(data_root)}.old-', dir=parent)
            os.rename(data_root, osp.join(trash, 'old'))
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, data_root)
        except OSError:  # another process finished the same dataset first
            if not is_complete(data_root, params):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
