"""Procedural "synthetic shapes" segmentation data: the embedded demo and test dataset.

Every image is a textured grey background with 1-4 objects; each of the 7 object classes has
its own colour, shape and texture (``SYNTHETIC_CLASSES``: 'red circle', 'green square', ...),
so a tiny from-scratch CLIP segmentor learns it in minutes on a CPU. Pixels are labelled with
class indices; 0 ('background') is a real class and no pixel is ignored (255).

Generation is deterministic: image ``i`` of a split depends only on ``(seed, split, i, size)``
(numpy ``default_rng``), so the same seed gives byte-identical PNGs, whatever the number of
images asked for.
"""
import json
import os.path as osp
from typing import Dict, Tuple

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..clip.vocabularies import SYNTHETIC_CLASSES
from .generated_dataset import META_FILE, SPLITS, check_counts, generate_atomically, write_split

# Bump when the drawing code changes, so stale data on disk is regenerated.
GENERATOR_VERSION = 1

# Base RGB colour of each class (index = class id); background is a neutral grey.
CLASS_COLORS = ((110, 110, 110), (220, 40, 40), (40, 170, 60), (50, 70, 220), (235, 210, 40),
                (150, 60, 190), (245, 135, 30), (40, 205, 215))
assert len(CLASS_COLORS) == len(SYNTHETIC_CLASSES)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation noise on a random linear brightness gradient, float (H, W, 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gx, gy = rng.uniform(-40, 40, size=2)
    base = rng.uniform(80, 150) + gx * (xx - 0.5) + gy * (yy - 0.5)
    tint = rng.uniform(-12, 12, size=3)  # a slight colour cast, never saturated
    # Coarse blotches (upsampled low-res noise) plus fine per-pixel grain.
    coarse = rng.normal(0, 18, size=(size // 8 + 1, size // 8 + 1))
    coarse = np.kron(coarse, np.ones((8, 8)))[:size, :size]
    grain = rng.normal(0, 10, size=(size, size, 3))
    return base[..., None] + tint + coarse[..., None] + grain


def _shape_mask(cls: int, cx: float, cy: float, r: float, angle: float,
                yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean (H, W) silhouette of one object of class ``cls`` centred at (cx, cy)."""
    dx, dy = xx - cx, yy - cy
    dist = np.sqrt(dx**2 + dy**2)
    if cls in (1, 5):  # red circle; purple dots fill a disc too (the dots are the texture)
        return dist <= r
    if cls == 2:  # green square, axis aligned
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if cls == 3:  # blue triangle, randomly rotated
        inside = np.ones_like(dist, dtype=bool)
        for k in range(3):
            a = angle + 2 * np.pi * k / 3
            # half-plane facing away from the vertex at angle `a`: inradius r/2
            inside &= (dx * np.cos(a + np.pi) + dy * np.sin(a + np.pi)) <= r * 0.5
        return inside
    if cls == 6:  # orange ring
        return (dist <= r) & (dist >= r * 0.55)
    # yellow stripes / cyan checker: rotated rectangles carrying the texture
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (np.abs(u) <= r) & (np.abs(v) <= r * 0.7)


def _texture(cls: int, color: np.ndarray, rng: np.random.Generator, angle: float,
             yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Float (H, W, 3) appearance of class ``cls`` (painted through its mask)."""
    size = yy.shape[0]
    img = np.broadcast_to(color, (size, size, 3)).astype(np.float32)
    period = rng.uniform(6, 10)
    if cls == 4:  # yellow with dark stripes
        u = xx * np.cos(angle) + yy * np.sin(angle)
        dark = (np.floor(u / (period / 2)) % 2) == 1
        img = np.where(dark[..., None], img * 0.35, img)
    elif cls == 5:  # light purple with dark purple dots
        phase = rng.uniform(0, period, size=2)
        fy = ((yy + phase[0]) % period) - period / 2
        fx = ((xx + phase[1]) % period) - period / 2
        dot = fx**2 + fy**2 <= (period * 0.3)**2
        img = np.where(dot[..., None], img * 0.45, np.minimum(img * 1.3 + 30, 255))
    elif cls == 7:  # cyan / white checkerboard
        cell = (np.floor(xx / (period / 2)) + np.floor(yy / (period / 2))) % 2 == 1
        img = np.where(cell[..., None], np.full_like(img, 240), img)
    return img + rng.normal(0, 6, size=(size, size, 3))


def render_sample(seed: int, split: str, index: int, size: int = 128
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its label map.

    Returns:
        tuple: ``img`` uint8 (size, size, 3) RGB and ``label`` uint8 (size, size) with values
        in ``[0, len(SYNTHETIC_CLASSES))``.
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    rng = np.random.default_rng([seed, SPLITS.index(split), index, size])
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    num_classes = len(SYNTHETIC_CLASSES)
    for _ in range(rng.integers(1, 5)):  # 1-4 objects; later ones occlude earlier ones
        cls = int(rng.integers(1, num_classes))
        r = rng.uniform(0.09, 0.25) * size
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        mask = _shape_mask(cls, cx, cy, r, angle, yy, xx)
        color = np.array(CLASS_COLORS[cls], np.float32) + rng.uniform(-20, 20, size=3)
        img = np.where(mask[..., None], _texture(cls, color, rng, angle, yy, xx), img)
        label[mask] = cls
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def generate_synthetic_dataset(data_root: str,
                               num_train: int = 400,
                               num_val: int = 100,
                               seed: int = 0,
                               size: int = 128) -> Dict:
    """Write the synthetic dataset in mmseg layout, atomically; skip it if already there.

    Layout: ``{data_root}/img_dir/{train,val}/NNNNNN.png`` (RGB) and
    ``{data_root}/ann_dir/{train,val}/NNNNNN.png`` (8-bit class indices), plus
    ``meta.json`` recording the parameters. Files are written to a temporary sibling
    directory renamed into place at the end, so an interrupted run never leaves a partial
    dataset. An existing dataset with other parameters is replaced; a non-empty directory
    without our ``meta.json`` is refused rather than deleted.

    Returns:
        dict: ``data_root``, ``params``, ``generated`` (False if skipped) and
        ``class_pixels`` (per-class pixel counts over both splits, only when generated).
    """
    check_counts('generate_synthetic_dataset', num_train, num_val, size)
    data_root = osp.abspath(data_root)
    params = dict(num_train=int(num_train), num_val=int(num_val), seed=int(seed),
                  size=int(size), version=GENERATOR_VERSION)
    class_pixels = np.zeros(len(SYNTHETIC_CLASSES), np.int64)

    def write(tmp):
        for split in SPLITS:
            class_pixels[:] += write_split(tmp, split, params[f'num_{split}'],
                                           lambda i: render_sample(seed, split, i, size),
                                           len(class_pixels))
        with open(osp.join(tmp, META_FILE), 'w') as f:
            json.dump(dict(params=params, classes=list(SYNTHETIC_CLASSES),
                           class_pixels=class_pixels.tolist()), f, indent=2)

    if not generate_atomically(data_root, params, 'synthetic dataset', write):
        return dict(data_root=data_root, params=params, generated=False)
    return dict(data_root=data_root, params=params, generated=True,
                class_pixels=dict(zip(SYNTHETIC_CLASSES, class_pixels.tolist())))


@DATASETS.register_module()
class SyntheticShapesDataset(BaseSegDataset):
    """The procedural shapes dataset written by :func:`generate_synthetic_dataset`.

    Eight classes including a real 'background' (``reduce_zero_label=False``); images and
    labels are both ``.png``. Use ``data_prefix=dict(img_path='img_dir/train',
    seg_map_path='ann_dir/train')`` (or ``val``).
    """
    METAINFO = dict(classes=tuple(SYNTHETIC_CLASSES), palette=[list(c) for c in CLASS_COLORS])

    def __init__(self, img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
