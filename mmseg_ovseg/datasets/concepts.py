"""The concept space of the generated open-vocabulary data: colours, shapes, object kinds.

This module is the class list plus scene drawing, shared by the tiny-CLIP caption data
(:mod:`mmseg_ovseg.datasets.captions`) and the generated zero-shot segmentation benchmark, so
the words the tiny CLIP learns are exactly the classes the benchmark segments.

Concepts
--------
``COLORS`` (8 colours), ``SHAPES`` (8 shapes/patterns, :class:`Shape`) and ``OBJECTS`` (6
non-compositional kinds, :class:`ObjectKind`), each with its ``draw`` function: see
:mod:`mmseg_ovseg.datasets.concept_glyphs`, where they are defined (re-exported here).

Classes (stable API)
--------------------
``CONCEPT_CLASSES[0] == 'background'``, then every ``'<colour> <shape>'`` (colour-major:
``'red circle', 'red square', ..., 'pink checkerboard'``), then the object kinds. A label
map's value is the index into ``CONCEPT_CLASSES``; ``NUM_COMPOSITIONAL`` = 64 classes are
colour x shape, ``CONCEPT_CLASSES[1 + NUM_COMPOSITIONAL:]`` are the objects.
:func:`describe_class` gives a class's parts (colour, shape, kind, plural).

Drawing (stable API)
--------------------
- :func:`draw_object` ``(canvas, label_map, class_index, box, rng)``: paints one object into a
  uint8 ``(H, W, 3)`` canvas inside ``box = (x0, y0, x1, y1)`` (half-open pixel bounds, clipped
  to the canvas) and writes ``class_index`` into the ``(H, W)`` label map where it painted
  (later objects overwrite earlier ones: occlusion). Returns the bool ``(H, W)`` mask painted.
- :func:`render_scene` ``(rng, size, class_indices, boxes=None, scale=(0.3, 0.55),
  return_boxes=False) -> (image, label_map[, boxes])``: a textured low-saturation background
  (label 0) with the given objects drawn in order, boxes sampled by :func:`sample_boxes` unless
  given. ``size`` is an int or ``(h, w)``; ``image`` uint8 ``(h, w, 3)`` RGB, ``label_map``
  uint8 ``(h, w)``.

Everything is deterministic: the same ``Generator`` state gives byte-identical output.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .concept_glyphs import (
    COLOR_NAMES,
    COLORS,
    OBJECT_NAMES,
    OBJECTS,
    SHAPE_NAMES,
    SHAPES,
    ObjectKind,
    Shape,
    _grid,
)

__all__ = [
    'COLORS', 'COLOR_NAMES', 'SHAPES', 'SHAPE_NAMES', 'OBJECTS', 'OBJECT_NAMES', 'Shape',
    'ObjectKind', 'NUM_COMPOSITIONAL', 'CONCEPT_CLASSES', 'NUM_CLASSES', 'ClassInfo',
    'describe_class', 'class_index', 'draw_object', 'render_background', 'sample_boxes',
    'render_scene'
]

Box = Tuple[int, int, int, int]

# ---------------------------------------------------------------------------------- classes
NUM_COMPOSITIONAL = len(COLORS) * len(SHAPES)
CONCEPT_CLASSES: Tuple[str, ...] = (('background', )
                                    + tuple(f'{c} {s}' for c in COLOR_NAMES
                                            for s in SHAPE_NAMES)
                                    + OBJECT_NAMES)
NUM_CLASSES = len(CONCEPT_CLASSES)


class ClassInfo(NamedTuple):
    """Parts of a concept class: ``color``/``shape`` are None for object kinds."""
    index: int
    name: str
    plural: str
    color: Optional[str]
    shape: Optional[str]
    kind: Optional[str]


def describe_class(class_index: int) -> ClassInfo:
    """The parts of ``CONCEPT_CLASSES[class_index]`` (index >= 1)."""
    if not isinstance(class_index, (int, np.integer)) or not 1 <= class_index < NUM_CLASSES:
        raise ValueError(f'class_index must be an int in [1, {NUM_CLASSES}) (0 is the '
                         f'background, which is not drawn), got {class_index!r}')
    class_index = int(class_index)
    name = CONCEPT_CLASSES[class_index]
    if class_index <= NUM_COMPOSITIONAL:
        ci, si = divmod(class_index - 1, len(SHAPES))
        shape = SHAPES[si]
        return ClassInfo(class_index, name, f'{COLOR_NAMES[ci]} {shape.plural}',
                         COLOR_NAMES[ci], shape.name, None)
    kind = OBJECTS[class_index - 1 - NUM_COMPOSITIONAL]
    return ClassInfo(class_index, name, kind.plural, None, None, kind.name)


def class_index(name: str) -> int:
    """Index of a class name in ``CONCEPT_CLASSES``."""
    try:
        return CONCEPT_CLASSES.index(name)
    except ValueError:
        raise ValueError(f'unknown concept class {name!r}; see CONCEPT_CLASSES') from None


# ---------------------------------------------------------------------------------- drawing
def _clip_box(box: Sequence[int], h: int, w: int) -> Box:
    if len(box) != 4:
        raise ValueError(f'box must be (x0, y0, x1, y1), got {box!r}')
    x0, y0, x1, y1 = (int(round(b)) for b in box)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f'box {tuple(box)} is smaller than 2x2 pixels')
    return x0, y0, x1, y1


def draw_object(canvas: np.ndarray, label_map: np.ndarray, class_index: int,
                box: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Paint one object of ``CONCEPT_CLASSES[class_index]`` in ``box``, in place.

    Args:
        canvas: uint8 ``(H, W, 3)`` RGB image.
        label_map: integer ``(H, W)`` label map; gets ``class_index`` where the object is drawn.
        class_index: index in ``CONCEPT_CLASSES`` (>= 1).
        box: ``(x0, y0, x1, y1)``, half-open pixel bounds; may extend past the canvas (the
            object is cut there).
        rng: numpy ``Generator``; the look (tilt, pattern phase, shade, noise) is drawn from it.

    Returns:
        bool ``(H, W)`` mask of the painted pixels.
    """
    if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
        raise ValueError(f'canvas must be uint8 (H, W, 3), got {canvas.dtype} {canvas.shape}')
    H, W = canvas.shape[:2]
    if label_map.shape != (H, W):
        raise ValueError(f'label_map shape {label_map.shape} != canvas (H, W) {(H, W)}')
    info = describe_class(class_index)
    x0, y0, x1, y1 = _clip_box(box, H, W)
    bh, bw = y1 - y0, x1 - x0
    if info.kind is None:
        mask, pattern = SHAPES[SHAPE_NAMES.index(info.shape)].draw(rng, bh, bw)
        base = np.array(COLORS[COLOR_NAMES.index(info.color)][1], np.float32)
        base = base + rng.uniform(-18, 18, size=3)
        # soft directional lighting so flat colours are not the only cue
        v, u = _grid(bh, bw)
        g = rng.uniform(-0.12, 0.12, size=2)
        rgb = base * (1 + g[0] * u + g[1] * v)[..., None]
        p = pattern[..., None]
        rgb = np.where(p < 0, rgb * (1 + p), rgb + (245 - rgb) * p)
    else:
        mask, rgb = OBJECTS[OBJECT_NAMES.index(info.kind)].draw(rng, bh, bw)
    rgb = rgb + 6 * rng.standard_normal(rgb.shape, dtype=np.float32)
    # Cut the box to the canvas.
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y1, H), min(x1, W)
    full = np.zeros((H, W), bool)
    if cy1 <= cy0 or cx1 <= cx0:
        return full
    sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    m = mask[sl]
    region = canvas[cy0:cy1, cx0:cx1]
    region[m] = np.clip(np.rint(rgb[sl][m]), 0, 255).astype(np.uint8)
    label_map[cy0:cy1, cx0:cx1][m] = class_index
    full[cy0:cy1, cx0:cx1] = m
    return full


def render_background(rng: np.random.Generator, size: Union[int, Tuple[int, int]]
                      ) -> np.ndarray:
    """uint8 ``(h, w, 3)``: grey gradient + coarse blotches + grain, low saturation."""
    h, w = _hw(size)
    yy = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
    xx = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
    gx, gy = rng.uniform(-45, 45, size=2)
    base = np.float32(rng.uniform(75, 160)) + np.float32(gx) * xx + np.float32(gy) * yy
    tint = rng.uniform(-10, 10, size=3).astype(np.float32)
    cell = max(4, min(h, w) // 8)
    coarse = 15 * rng.standard_normal((h // cell + 1, w // cell + 1), dtype=np.float32)
    coarse = coarse.repeat(cell, 0).repeat(cell, 1)[:h, :w]
    grain = 8 * rng.standard_normal((h, w, 3), dtype=np.float32)
    img = (base + coarse)[..., None] + tint + grain
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _hw(size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h < 8 or w < 8:
        raise ValueError(f'size must be >= 8 pixels per side, got {size!r}')
    return h, w


def sample_boxes(rng: np.random.Generator, size: Union[int, Tuple[int, int]], num: int,
                 scale: Tuple[float, float] = (0.3, 0.55),
                 max_overlap: float = 0.3) -> List[Box]:
    """``num`` square-ish boxes, side ``scale`` x the short image side, inside the image,
    each overlapping earlier ones by at most ``max_overlap`` of its area where 30 tries
    allow it (so objects stay mostly visible)."""
    h, w = _hw(size)
    short = min(h, w)
    boxes: List[Box] = []
    for _ in range(num):
        for _try in range(30):
            side = rng.uniform(*scale) * short
            bw = int(round(side * rng.uniform(0.9, 1.1)))
            bh = int(round(side * rng.uniform(0.9, 1.1)))
            bw, bh = max(4, min(bw, w)), max(4, min(bh, h))
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            box = (x0, y0, x0 + bw, y0 + bh)
            worst = max([_overlap(box, b) for b in boxes], default=0.0)
            if worst <= max_overlap:
                break
        boxes.append(box)
    return boxes


def _overlap(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / area


def render_scene(rng: np.random.Generator, size: Union[int, Tuple[int, int]],
                 class_indices: Sequence[int], boxes: Optional[Sequence[Box]] = None,
                 scale: Tuple[float, float] = (0.3, 0.55), return_boxes: bool = False):
    """Draw a textured background and the objects ``class_indices`` in order.

    Returns:
        ``(image, label_map)`` -- uint8 ``(h, w, 3)`` RGB and uint8 ``(h, w)`` class indices
        (0 = background) -- plus the list of boxes when ``return_boxes``.
    """
    h, w = _hw(size)
    class_indices = [int(c) for c in class_indices]
    for c in class_indices:
        describe_class(c)  # validates
    image = render_background(rng, (h, w))
    if boxes is None:
        boxes = sample_boxes(rng, (h, w), len(class_indices), scale)
    elif len(boxes) != len(class_indices):
        raise ValueError(f'{len(boxes)} boxes for {len(class_indices)} objects')
    label = np.zeros((h, w), np.uint8)
    for c, box in zip(class_indices, boxes):
        draw_object(image, label, c, box, rng)
    if return_boxes:
        return image, label, [tuple(int(x) for x in b) for b in boxes]
    return image, label
