"""A tiny procedural referring-segmentation dataset written in the REFER layout.

Each image shows 2-3 non-overlapping shapes (circle, square, triangle) of distinct colours on
a noisy grey background; each shape is one COCO annotation (a polygon, or optionally a
compressed RLE) and one ref with two expressions, e.g. ``'the red circle'`` and
``'red circle on the left'``. Written files (same layout as RefCOCO, so
:class:`~mmseg_ovseg.datasets.refcoco.RefCOCODataset` reads them unchanged)::

    {data_root}/images/syn_{image_id:06d}.png         RGB, size x size
    {data_root}/refsyn/instances.json                  COCO images/annotations/categories
    {data_root}/refsyn/refs(unc).p                     pickled list of ref dicts

Images are assigned to splits in order: ``splits=dict(train=4, val=2, testA=1, testB=1)``.
Deterministic: image ``i`` depends only on ``(seed, i, size)``.
"""
import json
import os
import os.path as osp
import pickle
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from .coco_mask import mask_to_rle, polygons_to_mask

SHAPES = ('circle', 'square', 'triangle')  # category ids 1, 2, 3
COLORS = dict(red=(220, 40, 40), green=(40, 170, 60), blue=(50, 70, 220),
              yellow=(235, 210, 40))
REFS_FILE = 'refsyn/refs(unc).p'
INSTANCES_FILE = 'refsyn/instances.json'
IMG_DIR = 'images'


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list:
    """Flat ``[x1, y1, ...]`` integer polygon of a shape centred at (cx, cy)."""
    if shape == 'square':
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == 'triangle':
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = list(zip(cx + r * np.cos(a), cy + r * np.sin(a)))
    return [float(round(v)) for p in pts for v in p]


def render_referring_image(seed: int, index: int, size: int = 64):
    """Draw image ``index``.

    Returns:
        tuple: ``img`` uint8 ``(size, size, 3)`` RGB and a list of objects
        ``dict(shape, color, polygon (flat list), mask uint8 (size, size), cx)``, left to
        right. Objects sit in disjoint vertical bands, so they never overlap.
    """
    rng = np.random.default_rng([seed, index, size])
    n = int(rng.integers(2, 4))
    img = rng.normal(120, 8, size=(size, size, 3))
    shapes = rng.choice(len(SHAPES), size=n)
    colors = rng.choice(len(COLORS), size=n, replace=False)  # colour identifies the object
    band = size / n
    objects = []
    for k in range(n):
        r = float(rng.uniform(0.22, 0.4) * band)
        cx = band * (k + 0.5)
        cy = float(rng.uniform(r + 1, size - r - 2))
        shape = SHAPES[int(shapes[k])]
        color = list(COLORS)[int(colors[k])]
        poly = _shape_polygon(shape, cx, cy, r)
        mask = polygons_to_mask([poly], size, size)
        img[mask.astype(bool)] = np.array(COLORS[color]) + rng.normal(0, 4, size=(mask.sum(), 3))
        objects.append(dict(shape=shape, color=color, polygon=poly, mask=mask, cx=cx))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects


def _object_records(obj: dict, k: int, num_objects: int, image_id: int, ref_id: int,
                    split: str, rle: bool) -> Tuple[dict, dict]:
    """The COCO annotation and the REFER ref (two sentences) of object ``k`` of an image."""
    ann_id = image_id * 10 + k
    segm = mask_to_rle(obj['mask']) if rle else [obj['polygon']]
    ys, xs = np.nonzero(obj['mask'])
    ann = dict(
        id=ann_id, image_id=image_id, category_id=SHAPES.index(obj['shape']) + 1,
        segmentation=segm, area=int(obj['mask'].sum()), iscrowd=0,
        bbox=[int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1])
    side = 'left' if k == 0 else 'right' if k == num_objects - 1 else 'middle'
    texts = [f"the {obj['color']} {obj['shape']}",
             f"{obj['color']} {obj['shape']} on the {side}"]
    sentences = [dict(sent_id=ref_id * 2 + j, sent=t, raw=t.capitalize(),
                      tokens=t.split()) for j, t in enumerate(texts)]
    ref = dict(
        ref_id=ref_id, ann_id=ann_id, image_id=image_id,
        category_id=SHAPES.index(obj['shape']) + 1, split=split,
        sentences=sentences, sent_ids=[s['sent_id'] for s in sentences],
        # REFER's per-ref name (with the ann id); not the image file.
        file_name=f'syn_{image_id:06d}_{ann_id}.png')
    return ann, ref


def generate_referring_dataset(data_root: str,
                               splits: Optional[Dict[str, int]] = None,
                               seed: int = 0,
                               size: int = 64,
                               rle: bool = False) -> Dict:
    """Write the dataset (see the module docstring) and return a summary.

    Args:
        data_root (str): output folder (created; existing files are overwritten).
        splits (dict): number of images per REFER split name, in writing order; default
            ``dict(train=4, val=2, testA=1, testB=1)``.
        seed (int): random seed.
        size (int): image side in pixels (>= 32).
        rle (bool): store segmentations as compressed RLE instead of polygons.

    Returns:
        dict: ``data_root``, ``num_refs``, ``num_sentences`` per split and ``masks``
        ``{ann_id: uint8 (size, size) mask}`` (the rasterised target of each annotation).
    """
    if splits is None:
        splits = dict(train=4, val=2, testA=1, testB=1)
    if size < 32:
        raise ValueError(f'generate_referring_dataset: size must be >= 32, got {size}')
    os.makedirs(osp.join(data_root, IMG_DIR), exist_ok=True)
    os.makedirs(osp.dirname(osp.join(data_root, REFS_FILE)), exist_ok=True)
    images, annotations, refs, masks = [], [], [], {}
    num_sentences: Dict[str, int] = {}
    index = 0
    for split, count in splits.items():
        for _ in range(count):
            image_id = index + 1
            img, objects = render_referring_image(seed, index, size)
            file_name = f'syn_{image_id:06d}.png'
            Image.fromarray(img, 'RGB').save(osp.join(data_root, IMG_DIR, file_name))
            images.append(dict(id=image_id, file_name=file_name, height=size, width=size))
            for k, obj in enumerate(objects):
                ann, ref = _object_records(obj, k, len(objects), image_id, len(refs), split,
                                           rle)
                annotations.append(ann)
                refs.append(ref)
                masks[ann['id']] = obj['mask']
                num_sentences[split] = num_sentences.get(split, 0) + len(ref['sentences'])
            index += 1
    categories = [dict(id=i + 1, name=s, supercategory='shape') for i, s in enumerate(SHAPES)]
    with open(osp.join(data_root, INSTANCES_FILE), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    with open(osp.join(data_root, REFS_FILE), 'wb') as f:
        pickle.dump(refs, f, protocol=2)  # protocol 2, like the original Python 2 files
    return dict(data_root=data_root, num_refs=len(refs), num_sentences=num_sentences,
                masks=masks)
