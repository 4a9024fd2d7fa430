"""mmseg's prediction overlay at bounded memory (what ``OpenVocabInferencer.visualize`` draws).

:func:`draw_sem_seg` returns the picture of ``SegLocalVisualizer._draw_sem_seg`` (mmseg
1.2.2, ``with_labels=True``) without its costs that grow badly with the image: the label
position (``_get_center_loc``) sorted every pixel of a class as a Python list (minutes and
GBs at 12 MP), all present classes' masks were stacked into one ``(L, H, W)`` array, the
blend ran in float64 on the whole image, and the result went through a matplotlib canvas of
the image's size. 4000x3000, tiny SAN: ~100 s and +2.9 GB in mmseg's visualizer.

Also the index-keyed :func:`make_palette` and the earlier fixed-size :func:`draw_legend`
(kept for comparisons; the inferencer draws :mod:`~mmseg_ovseg.apis.overlay`).
"""
import re
from typing import List, Sequence, Tuple

import cv2
import numpy as np

#: Rows blended at a time (float64 temporaries of ~8 MB per 1000 image columns).
_BLEND_ROWS = 256


def label_anchor(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` where mmseg writes a class name: on the first row holding the most pixels
    of ``mask (H, W)`` (bool), its middle pixel (mmseg's ``_get_center_loc``, linear time)."""
    counts = np.count_nonzero(mask, axis=1)
    y = int(counts.argmax())
    xs = np.flatnonzero(mask[y])
    return int(xs[len(xs) // 2]), y


def draw_sem_seg(image: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                 palette: Sequence[Sequence[int]], alpha: float = 0.5,
                 with_labels: bool = True) -> np.ndarray:
    """Blend coloured class regions (and their names) over an RGB image.

    Args:
        image (np.ndarray): ``(H, W, 3)`` uint8 RGB.
        labels (np.ndarray): ``(H, W)`` class indices; indices ``>= len(classes)`` (e.g. an
            ignore value) are not drawn.
        classes (Sequence[str]): class names.
        palette (Sequence[Sequence[int]]): an RGB colour per class.
        alpha (float): opacity of the colours.
        with_labels (bool): write each present class's name in a box of its colour.

    Returns:
        np.ndarray: ``(H, W, 3)`` uint8 RGB, equal to mmseg's ``_draw_sem_seg``.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f'labels {labels.shape} do not match the image {image.shape[:2]}')
    num_classes = len(classes)
    present = np.unique(labels)[::-1]  # mmseg's order: the highest index is drawn first
    present = [int(i) for i in present if 0 <= i < num_classes]
    mask = np.zeros_like(image, dtype=np.uint8)
    anchors = []
    for label in present:
        where = labels == label
        mask[where] = palette[label]
        if with_labels:
            anchors.append(label_anchor(where))
    if with_labels:
        font = cv2.FONT_HERSHEY_SIMPLEX
        font_scale = min(image.shape[0], image.shape[1]) / (25 / 0.05)
        thickness = 1 if image.shape[0] < 300 or image.shape[1] < 300 else 2
        for label, (x, y) in zip(present, anchors):
            text = classes[label]
            (width, height), baseline = cv2.getTextSize(text, font, font_scale, thickness)
            corner = (x + width + baseline, y + height + baseline)
            cv2.rectangle(mask, (x, y), corner, tuple(palette[label]), -1)
            cv2.rectangle(mask, (x, y), corner, (0, 0, 0), thickness)
            cv2.putText(mask, text, (x, y + height), font, font_scale, (255, 255, 255),
                        thickness, 2)
    out = np.empty_like(image, dtype=np.uint8)
    for y0 in range(0, image.shape[0], _BLEND_ROWS):  # mmseg's float64 blend, by bands
        rows = slice(y0, y0 + _BLEND_ROWS)
        out[rows] = (image[rows] * (1 - alpha) + mask[rows] * alpha).astype(np.uint8)
    return out


def make_palette(num_classes: int, seed: int = 0) -> List[List[int]]:
    """A fixed, well-spread RGB colour per class index (golden-ratio hues).

    Index-keyed colours (the colour follows the position in the list); the inferencer's
    pictures use :func:`~mmseg_ovseg.apis.palette.class_palette` (keyed by name) instead.
    """
    rng = np.random.RandomState(seed)
    palette = []
    for i in range(num_classes):
        hue = int(((i * 0.618033988749895) % 1.0) * 180)
        sat, val = 160 + rng.randint(0, 96), 170 + rng.randint(0, 86)
        hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
        palette.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].tolist())
    return palette


def draw_legend(image: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                palette: Sequence[Sequence[int]]) -> np.ndarray:
    """The earlier fixed-size legend (ASCII, 16-pixel rows), kept for
    ``tools/analysis_tools/benchmark.py``'s comparison with the drawing before
    ``apis/draw.py``. The inferencer draws :func:`~mmseg_ovseg.apis.overlay.draw_overlay`."""
    h = image.shape[0]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    row = 16
    names = [re.sub(r'[^\x20-\x7e]', '?', str(classes[i])) for i in labels]
    text_w = max([cv2.getTextSize(n, font, scale, thick)[0][0] for n in names] + [40])
    panel = np.full((max(h, row * len(labels) + 8), text_w + 30, 3), 255, np.uint8)
    for k, (label, name) in enumerate(zip(labels, names)):
        y = 4 + k * row
        color = tuple(int(c) for c in palette[label])
        cv2.rectangle(panel, (4, y), (16, y + 12), color, -1)
        cv2.rectangle(panel, (4, y), (16, y + 12), (0, 0, 0), 1)
        cv2.putText(panel, name, (22, y + 10), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if panel.shape[0] > h:
        image = np.concatenate(
            [image, np.full((panel.shape[0] - h, ) + image.shape[1:], 255, np.uint8)])
    return np.concatenate([image, panel], axis=1)
