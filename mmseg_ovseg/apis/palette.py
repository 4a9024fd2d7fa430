"""Colours keyed by class name: ``'cat'`` has the same colour whatever the vocabulary's order.

A colour is drawn from the SHA-1 of the name (stripped, case-folded): hue anywhere, saturation
0.55-0.95, value 0.65-1.0, so every colour is clearly visible over a photo and white text
reads on it. Within one palette a colour closer than :data:`MIN_DISTANCE` (RGB Euclidean) to
one already given (names taken in sorted order, so the list order does not matter) is drawn
again from ``'<name>#1'``, ``'<name>#2'``, ...: a class keeps its colour unless another class
of the same vocabulary would look alike.
"""
import colorsys
import hashlib
from typing import List, Sequence

__all__ = ['MIN_DISTANCE', 'name_color', 'class_palette']

#: Smallest RGB distance between two colours of one palette (when 64 attempts allow it).
MIN_DISTANCE = 48.0
_ATTEMPTS = 64


def _key(name: str) -> str:
    return str(name).strip().casefold()


def name_color(name: str, salt: int = 0) -> List[int]:
    """``[r, g, b]`` (0-255) of a class name; ``salt`` > 0 gives the name's next colours."""
    text = _key(name) if salt == 0 else f'{_key(name)}#{salt}'
    digest = hashlib.sha1(text.encode('utf-8')).digest()
    hue = int.from_bytes(digest[:2], 'big') / 65536.0
    sat = 0.55 + 0.40 * digest[2] / 255.0
    val = 0.65 + 0.35 * digest[3] / 255.0
    return [int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val)]


def _distance(a: Sequence[int], b: Sequence[int]) -> float:
    return sum((x - y)**2 for x, y in zip(a, b))**0.5


def class_palette(classes: Sequence[str]) -> List[List[int]]:
    """One ``[r, g, b]`` per class, in ``classes`` order, keyed by name (module docstring).

    Equal names (after stripping and case folding) share a colour.
    """
    chosen = {}
    for key in sorted({_key(c) for c in classes}):
        color = name_color(key)
        for salt in range(1, _ATTEMPTS):
            if all(_distance(color, c) >= MIN_DISTANCE for c in chosen.values()):
                break
            color = name_color(key, salt)
        chosen[key] = color
    return [list(chosen[_key(c)]) for c in classes]
