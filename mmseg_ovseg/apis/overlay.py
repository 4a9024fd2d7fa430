"""The inference picture: class colours over the image, names on the regions, a legend.

:func:`draw_overlay` draws it at any image size:

- text (region names and legend) is sized from the image, ``max(12, 0.025 * max(H, W))``
  pixels, so it reads the same when the picture is shown scaled to a screen;
- names are drawn with a TrueType font through Pillow, so non-ASCII names render when a font
  has their glyphs (:func:`font_for`); characters no available font has are drawn as ``?``
  (the names are never dropped) and :func:`font_for` says which;
- colours are the caller's palette, by default keyed by class name
  (:func:`~mmseg_ovseg.apis.palette.class_palette`);
- ``opacity`` sets the blend, and classes named in ``background`` can be left unpainted
  (``draw_background=False``: the image shows through, and the class is left out of the
  labels and the legend).

Fonts: ``$OVSEG_FONT`` (a font file) first, then the fonts fontconfig lists for
``sans-serif`` in its order of preference (``fc-match -s``), then the DejaVu Sans that ships
with matplotlib; a font is used for a name only if its character map covers every
character (read with fontTools). Without any TrueType font, Pillow's built-in font draws
ASCII.
"""
import functools
import os
import os.path as osp
import re
import shutil
import subprocess
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ['draw_overlay', 'font_for', 'text_size_for', 'DEFAULT_BACKGROUND']

#: Class names treated as background by ``draw_background=False``.
DEFAULT_BACKGROUND = ('background', )
_BLEND_ROWS = 256
_MAX_FONTS = 40


def text_size_for(height: int, width: int) -> int:
    """Font size in pixels for an ``height x width`` picture (module docstring)."""
    return max(12, int(round(0.025 * max(height, width))))


@functools.lru_cache(maxsize=1)
def _font_files() -> Tuple[str, ...]:
    files = []
    env = os.environ.get('OVSEG_FONT')
    if env:
        if osp.isfile(env):
            files.append(env)
        else:
            warnings.warn(f'OVSEG_FONT={env} is not a file; ignored')
    if shutil.which('fc-match'):
        try:
            out = subprocess.run(['fc-match', '-s', '--format', '%{file}\n', 'sans-serif'],
                                 capture_output=True, text=True, timeout=10).stdout
            files += [f for f in out.splitlines()
                      if f.lower().endswith(('.ttf', '.otf', '.ttc')) and osp.isfile(f)]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import matplotlib
        mpl = osp.join(osp.dirname(matplotlib.__file__), 'mpl-data', 'fonts', 'ttf',
                       'DejaVuSans.ttf')
        if osp.isfile(mpl):
            files.append(mpl)
    except ImportError:
        pass
    return tuple(dict.fromkeys(files))[:_MAX_FONTS]


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset:
    try:
        from fontTools.ttLib import TTFont
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or {})
    except Exception:  # noqa: BLE001  (unreadable font: not a candidate)
        return frozenset()


@functools.lru_cache(maxsize=256)
def font_for(text: str) -> Tuple[Optional[str], str]:
    """``(font file, text as drawn)`` for a name: the first candidate font covering every
    character; otherwise the one covering most, with the characters it lacks replaced by
    ``?`` (a warning names them). ``(None, ascii text)`` when no TrueType font exists."""
    files = _font_files()
    codes = {ord(c) for c in text}
    best, best_cover = None, -1
    for path in files:
        cmap = _charmap(path)
        if not cmap:
            continue
        cover = len(codes & cmap)
        if cover == len(codes):
            return path, text
        if cover > best_cover:
            best, best_cover = path, cover
    if best is None:
        drawn = re.sub(r'[^\x20-\x7e]', '?', text)
        if drawn != text:
            warnings.warn(f'no TrueType font found: {text!r} is drawn as {drawn!r} (set '
                          'OVSEG_FONT to a font file with these characters)')
        return None, drawn
    cmap = _charmap(best)
    drawn = ''.join(c if ord(c) in cmap else '?' for c in text)
    missing = sorted({c for c in text if ord(c) not in cmap})
    warnings.warn(f'no available font has the characters {"".join(missing)!r} of {text!r}; '
                  f'drawn as {drawn!r} with {osp.basename(best)} (install a font with them, '
                  'e.g. Noto Sans CJK, or set OVSEG_FONT to its file)')
    return best, drawn


@functools.lru_cache(maxsize=64)
def _load_font(path: Optional[str], size: int):
    if path is None:
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()
    return ImageFont.truetype(path, size=size)


def _text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill) -> None:
    path, drawn = font_for(str(text))
    draw.text(xy, drawn, font=_load_font(path, size), fill=fill)


def _text_box(text: str, size: int) -> Tuple[int, int]:
    path, drawn = font_for(str(text))
    left, top, right, bottom = _load_font(path, size).getbbox(drawn)
    return right, max(bottom, size)


def _anchor(mask: np.ndarray) -> Tuple[int, int]:
    """Where a region's name goes: the middle pixel of its widest row (linear time)."""
    counts = np.count_nonzero(mask, axis=1)
    y = int(counts.argmax())
    xs = np.flatnonzero(mask[y])
    return int(xs[len(xs) // 2]), y


def draw_overlay(image: np.ndarray,
                 labels: np.ndarray,
                 classes: Sequence[str],
                 palette: Sequence[Sequence[int]],
                 opacity: float = 0.5,
                 with_labels: bool = True,
                 legend: bool = True,
                 draw_background: bool = True,
                 background: Sequence[str] = DEFAULT_BACKGROUND) -> np.ndarray:
    """The prediction over an RGB image (module docstring).

    Args:
        image (np.ndarray): ``(H, W, 3)`` uint8 RGB.
        labels (np.ndarray): ``(H, W)`` class indices; values outside ``[0, len(classes))``
            (an ignore index) are not painted.
        classes (Sequence[str]): class names (any Unicode).
        palette (Sequence[Sequence[int]]): ``[r, g, b]`` per class.
        opacity (float): colour weight in ``[0, 1]``.
        with_labels (bool): write each painted class's name on its region.
        legend (bool): append a white panel on the right listing the painted classes.
        draw_background (bool): False leaves the classes named in ``background`` unpainted
            and out of the labels and the legend.
        background (Sequence[str]): names of background classes (case-insensitive).

    Returns:
        np.ndarray: ``(H', W', 3)`` uint8 RGB; ``W' > W`` with the legend, ``H' > H`` only
        when the legend needs more rows than the image is high.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8, got {image.shape} {image.dtype}')
    if labels.shape != image.shape[:2]:
        raise ValueError(f'labels {labels.shape} do not match the image {image.shape[:2]}')
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f'opacity must be in [0, 1], got {opacity}')
    if len(palette) < len(classes):
        raise ValueError(f'palette has {len(palette)} colours for {len(classes)} classes')
    num = len(classes)
    skip = {str(b).strip().casefold() for b in background} if not draw_background else set()
    painted = np.array([str(c).strip().casefold() not in skip for c in classes] + [False])
    present = np.unique(labels)
    present = [int(i) for i in present if 0 <= i < num and painted[int(i)]]

    index = np.where((labels >= 0) & (labels < num), labels, num).astype(np.int64)
    out = _blend(image, index, palette, np.where(painted, np.float32(opacity), np.float32(0)))
    size = text_size_for(*image.shape[:2])
    if with_labels and present:
        out = _draw_labels(out, index, present, classes, palette, size)
    if legend and present:
        out = _append_legend(out, present, classes, palette, size)
    return out


def _blend(image: np.ndarray, index: np.ndarray, palette: Sequence[Sequence[int]],
           alpha: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blended with the colour of each pixel's class ``index``
    (H, W) in ``[0, num]`` at the class's ``alpha`` ((num + 1,); the last entry, for
    unpainted pixels, is 0), by bands of rows."""
    num = len(alpha) - 1
    # an (num + 1)-entry colour table, the last entry for unpainted pixels
    lut = np.zeros((num + 1, 3), np.float32)
    lut[:num] = np.asarray(palette[:num], np.float32).reshape(num, 3)
    out = np.empty_like(image)
    for y0 in range(0, image.shape[0], _BLEND_ROWS):
        rows = slice(y0, y0 + _BLEND_ROWS)
        a = alpha[index[rows]][..., None]
        blended = image[rows].astype(np.float32) * (1 - a) + lut[index[rows]] * a
        out[rows] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _draw_labels(out: np.ndarray, index: np.ndarray, present: List[int],
                 classes: Sequence[str], palette: Sequence[Sequence[int]],
                 size: int) -> np.ndarray:
    """Each ``present`` class's name in a box of its colour on its region (where one fits
    clear of the others), largest regions first."""
    h, w = out.shape[:2]
    pad = max(2, size // 5)
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    boxes = []
    # largest regions first: they get their preferred place
    areas = np.bincount(index.ravel(), minlength=len(classes) + 1)
    for label in sorted(present, key=lambda i: -areas[i]):
        box = _place_label(index == label, _text_box(classes[label], size), pad, boxes,
                           (h, w))
        if box is None:  # no free place: the legend still names it
            continue
        boxes.append(box)
        color = tuple(int(c) for c in palette[label])
        draw.rectangle(box, fill=color, outline=(0, 0, 0), width=max(1, size // 12))
        _text(draw, (box[0] + pad, box[1] + pad), classes[label], size, _ink(color))
    return np.asarray(canvas)


def _place_label(mask: np.ndarray, text_wh: Tuple[int, int], pad: int, taken: list,
                 hw: Tuple[int, int]) -> Optional[list]:
    """``[x0, y0, x1, y1]`` of a region's name box: centred on the region's widest row, or
    moved up/down by box heights (staying on the region's rows) when it would cover a box
    already drawn; None when every try overlaps."""
    h, w = hw
    tw, th = text_wh
    bw, bh = tw + 2 * pad, th + 2 * pad
    x, y = _anchor(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    x0 = min(max(0, x - bw // 2), max(0, w - bw))
    for shift in (0, 1, -1, 2, -2, 3, -3):
        cy = y + shift * bh
        if shift and not rows[0] <= cy <= rows[-1]:
            continue
        y0 = min(max(0, cy - bh // 2), max(0, h - bh))
        box = [x0, y0, x0 + bw, y0 + bh]
        if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                   for b in taken):
            return box
    return None


def _ink(color) -> Tuple[int, int, int]:
    """Black or white text, whichever reads better on ``color`` (relative luminance)."""
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _append_legend(image: np.ndarray, labels: List[int], classes: Sequence[str],
                   palette: Sequence[Sequence[int]], size: int) -> np.ndarray:
    """A white panel on the right: a swatch of each class's colour and its name."""
    h = image.shape[0]
    pad = max(2, size // 4)
    row = size + 2 * pad
    swatch = size
    text_w = max(_text_box(classes[i], size)[0] for i in labels)
    panel_w = 3 * pad + swatch + text_w + 2 * pad
    panel_h = max(h, row * len(labels) + 2 * pad)
    panel = Image.new('RGB', (panel_w, panel_h), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for k, label in enumerate(labels):
        y = pad + k * row
        color = tuple(int(c) for c in palette[label])
        draw.rectangle([pad, y + pad, pad + swatch, y + pad + swatch], fill=color,
                       outline=(0, 0, 0), width=max(1, size // 12))
        _text(draw, (3 * pad + swatch, y + pad), classes[label], size, (0, 0, 0))
    if panel_h > h:  # more classes than rows fit: pad the picture below
        image = np.concatenate(
            [image, np.full((panel_h - h, ) + image.shape[1:], 255, np.uint8)])
    return np.concatenate([image, np.asarray(panel)], axis=1)
