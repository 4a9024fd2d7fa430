"""COCO instance segmentations (polygons and RLE) to binary masks, without pycocotools.

pycocotools is not a dependency of this package, so the three COCO encodings are decoded here:

- polygons: ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates; the parts of one object
  are merged (union). Rasterised with ``cv2.fillPoly`` on coordinates rounded to the nearest
  integer, boundary included. pycocotools rasterises on a 5x up-sampled grid, so the two may
  differ on boundary pixels (a few per cent of a small object's area, nothing in its inside).
- uncompressed RLE: ``{'size': [h, w], 'counts': [n0, n1, ...]}``, run lengths over the
  column-major (Fortran order) flattened mask, starting with a run of zeros.
- compressed RLE: the same runs as a string (COCO's ``maskApi`` 6-bit character code: 5 data
  bits per character plus a continuation bit, sign-extended, and from the fourth run on each
  value stored as the difference to the run two before).

All functions return ``uint8`` arrays of shape ``(H, W)`` holding 0 and 1.
"""
from typing import List, Sequence, Union

import cv2
import numpy as np

Segmentation = Union[List[List[float]], dict]


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int,
                     source: str = 'polygon') -> np.ndarray:
    """Rasterise and merge COCO polygons into a ``uint8 (height, width)`` 0/1 mask.

    Raises:
        ValueError: a polygon has an odd number of coordinates or fewer than 3 points
            (``source`` names the annotation in the message).
    """
    mask = np.zeros((height, width), np.uint8)
    pts = []
    for i, poly in enumerate(polygons):
        coords = np.asarray(poly, dtype=np.float64).ravel()
        if coords.size % 2 or coords.size < 6:
            raise ValueError(f'{source}: polygon {i} has {coords.size} coordinates; expected '
                             'an even number >= 6 (x1, y1, x2, y2, x3, y3, ...)')
        pts.append(np.rint(coords.reshape(-1, 2)).astype(np.int32))
    if pts:
        # One fillPoly call per part: a single call would apply the even-odd rule across
        # overlapping parts and punch holes where they overlap.
        for p in pts:
            cv2.fillPoly(mask, [p], 1)
    return mask


def decode_rle_string(counts: Union[str, bytes]) -> List[int]:
    """Decode COCO's compressed RLE string into the list of run lengths."""
    if isinstance(counts, bytes):
        counts = counts.decode('ascii')
    runs: List[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise ValueError('compressed RLE string ends inside a number')
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f'invalid character {counts[pos]!r} in compressed RLE string')
            value |= (c & 0x1f) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:  # negative: sign-extend
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_rle_string(runs: Sequence[int]) -> str:
    """Inverse of :func:`decode_rle_string` (used to write RLE test data)."""
    out = []
    for i, run in enumerate(runs):
        x = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        while True:
            c = x & 0x1f
            x >>= 5  # arithmetic shift: -1 stays -1
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(48 + (c | (0x20 if more else 0))))
            if not more:
                break
    return ''.join(out)


def mask_to_rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """Encode a 0/1 ``(H, W)`` mask as COCO RLE (``counts`` a string if ``compressed``)."""
    flat = (np.asarray(mask).ravel(order='F') > 0).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:  # runs start with zeros
        runs = [0] + runs
    h, w = mask.shape
    return dict(size=[int(h), int(w)], counts=encode_rle_string(runs) if compressed else runs)


def rle_to_mask(rle: dict, height: int, width: int, source: str = 'RLE') -> np.ndarray:
    """Decode a COCO RLE dict (compressed or not) into a ``uint8 (height, width)`` 0/1 mask.

    Raises:
        ValueError: missing keys, a ``size`` other than ``[height, width]``, or run lengths
            that do not add up to ``height * width`` (``source`` names the annotation).
    """
    if 'counts' not in rle or 'size' not in rle:
        raise ValueError(f"{source}: RLE needs 'counts' and 'size', got keys {sorted(rle)}")
    h, w = (int(v) for v in rle['size'])
    if (h, w) != (height, width):
        raise ValueError(f'{source}: RLE size {[h, w]} differs from the image size '
                         f'{[height, width]}')
    counts = rle['counts']
    try:
        runs = decode_rle_string(counts) if isinstance(counts, (str, bytes)) else \
            [int(c) for c in counts]
    except ValueError as e:
        raise ValueError(f'{source}: {e}') from e
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise ValueError(f'{source}: RLE runs sum to {sum(runs)} (or are negative); expected '
                         f'{h} * {w} = {h * w}')
    values = np.zeros(len(runs), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape((w, h)).T)


def segmentation_to_mask(segmentation: Segmentation, height: int, width: int,
                         source: str = 'segmentation') -> np.ndarray:
    """Any COCO ``segmentation`` (polygon list, RLE dict, or list of RLE dicts) to a mask.

    Returns:
        np.ndarray: ``uint8 (height, width)``, 1 on the object (union of all its parts).
    """
    if isinstance(segmentation, dict):
        return rle_to_mask(segmentation, height, width, source)
    if isinstance(segmentation, (list, tuple)):
        if segmentation and all(isinstance(s, dict) for s in segmentation):
            mask = np.zeros((height, width), np.uint8)
            for part in segmentation:
                mask |= rle_to_mask(part, height, width, source)
            return mask
        return polygons_to_mask(segmentation, height, width, source)
    raise ValueError(f'{source}: unsupported segmentation type {type(segmentation).__name__}; '
                     'expected a polygon list or an RLE dict')
