"""The atoms of the concept space and how each looks: colours, shapes, object kinds.

Part of :mod:`mmseg_ovseg.datasets.concepts` (which re-exports everything public here and
builds the classes and scenes on top); each ``draw`` paints one concept into a box.

- ``COLORS``: 8 colours, ``(name, (r, g, b))``.
- ``SHAPES``: 8 shapes/patterns, :class:`Shape` (``name``, ``plural``, ``draw``). ``draw(rng, h,
  w) -> (mask, pattern)``: a bool ``(h, w)`` silhouette filling a box of ``h x w`` pixels and a
  float ``(h, w)`` pattern in ``[-1, 1]`` (0: the colour, ``p < 0``: mixed towards black by
  ``|p|``, ``p > 0``: towards white), deterministic given the numpy ``Generator``. Two of them,
  'stripes' and 'checkerboard', are patterns on a square: the texture is the concept.
- ``OBJECTS``: 6 non-compositional kinds (house, tree, car, face, flower, fish),
  :class:`ObjectKind` (``name``, ``plural``, ``draw``) with ``draw(rng, h, w) -> (mask, rgb)``
  (``rgb`` float ``(h, w, 3)``): each has its own multi-part look, one class id for all parts.
"""
import functools
import math
from typing import Callable, NamedTuple, Tuple

import numpy as np

# ---------------------------------------------------------------------------------- colours
COLORS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ('red', (215, 35, 35)),
    ('orange', (245, 135, 25)),
    ('yellow', (240, 215, 35)),
    ('green', (40, 165, 55)),
    ('cyan', (40, 210, 220)),
    ('blue', (40, 65, 215)),
    ('purple', (140, 50, 185)),
    ('pink', (250, 125, 195)),
)
COLOR_NAMES = tuple(c[0] for c in COLORS)


# ---------------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=512)
def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates normalised to [-1, 1] over the box: (v rows, u cols);
    cached, read-only."""
    v = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    v, u = (np.ascontiguousarray(a) for a in np.meshgrid(v, u, indexing='ij'))
    v.flags.writeable = u.flags.writeable = False
    return v, u


def _rotate(u: np.ndarray, v: np.ndarray, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return u * c + v * s, -u * s + v * c


def _polygon_mask(u: np.ndarray, v: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Inside test of a convex polygon with vertices ``pts`` (either winding) in (u, v)."""
    pts = np.asarray(pts, np.float64)
    area2 = sum(pts[i - 1][0] * pts[i][1] - pts[i][0] * pts[i - 1][1] for i in range(len(pts)))
    if area2 < 0:
        pts = pts[::-1]
    inside = np.ones(u.shape, bool)
    for i in range(len(pts)):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % len(pts)]
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


# ---------------------------------------------------------------------------------- shapes
class Shape(NamedTuple):
    """A shape/pattern concept; ``draw(rng, h, w) -> (bool mask, float pattern)``."""
    name: str
    plural: str
    draw: Callable[[np.random.Generator, int, int], Tuple[np.ndarray, np.ndarray]]


def _plain(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return mask, np.zeros(mask.shape, np.float32)


def _circle(rng, h, w):
    v, u = _grid(h, w)
    return _plain(u**2 + v**2 <= 0.95**2)


def _square(rng, h, w):
    v, u = _grid(h, w)
    u, v = _rotate(u, v, rng.uniform(-0.25, 0.25))  # roughly upright: not a diamond
    return _plain((np.abs(u) <= 0.72) & (np.abs(v) <= 0.72))


def _triangle(rng, h, w):
    v, u = _grid(h, w)
    a0 = -math.pi / 2 + rng.uniform(-0.3, 0.3)  # apex up (v grows downwards), small tilt
    pts = np.array([(math.cos(a0 - 2 * math.pi * k / 3), math.sin(a0 - 2 * math.pi * k / 3))
                    for k in range(3)]) * 1.0
    pts[:, 1] += 0.2  # centre the triangle's bounding box vertically
    return _plain(_polygon_mask(u, v, pts))


def _star(rng, h, w):
    v, u = _grid(h, w)
    u, v = _rotate(u, v, rng.uniform(-0.3, 0.3))
    r = np.sqrt(u**2 + v**2)
    phi = np.arctan2(u, -v)  # 0 at the top point
    alpha = math.pi / 5
    phi = np.mod(phi, 2 * alpha)
    phi = np.where(phi > alpha, 2 * alpha - phi, phi)  # fold onto [0, alpha]
    # Edge from the outer vertex (R, 0) to the inner one (ri, alpha), in polar coordinates.
    big, small = 1.0, 0.42
    p1 = np.array([big, 0.0])
    p2 = np.array([small * math.cos(alpha), small * math.sin(alpha)])
    e = p2 - p1
    cross_p1e = p1[0] * e[1] - p1[1] * e[0]
    denom = np.cos(phi) * e[1] - np.sin(phi) * e[0]
    return _plain(r <= cross_p1e / denom)


def _ring(rng, h, w):
    v, u = _grid(h, w)
    r2 = u**2 + v**2
    return _plain((r2 <= 0.95**2) & (r2 >= 0.55**2))


def _cross(rng, h, w):
    v, u = _grid(h, w)
    u, v = _rotate(u, v, rng.uniform(-0.25, 0.25))  # a plus sign, not an x
    arm = 0.3
    return _plain(((np.abs(u) <= arm) & (np.abs(v) <= 0.95))
                  | ((np.abs(v) <= arm) & (np.abs(u) <= 0.95)))


def _stripes(rng, h, w):
    v, u = _grid(h, w)
    mask = (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(0.45, 0.6)  # 3-4 dark bands across the square
    t = u * math.cos(angle) + v * math.sin(angle) + rng.uniform(0, period)
    dark = np.mod(t, period) < period / 2
    return mask, np.where(dark, -0.75, 0.0).astype(np.float32)


def _checkerboard(rng, h, w):
    v, u = _grid(h, w)
    mask = (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    cell = rng.uniform(0.38, 0.46)
    light = (np.floor((u + 0.85) / cell) + np.floor((v + 0.85) / cell)) % 2 == 1
    return mask, np.where(light, 0.85, 0.0).astype(np.float32)


SHAPES: Tuple[Shape, ...] = (
    Shape('circle', 'circles', _circle),
    Shape('square', 'squares', _square),
    Shape('triangle', 'triangles', _triangle),
    Shape('star', 'stars', _star),
    Shape('ring', 'rings', _ring),
    Shape('cross', 'crosses', _cross),
    Shape('stripes', 'stripes', _stripes),
    Shape('checkerboard', 'checkerboards', _checkerboard),
)
SHAPE_NAMES = tuple(s.name for s in SHAPES)


# ---------------------------------------------------------------------------------- objects
class ObjectKind(NamedTuple):
    """A non-compositional object; ``draw(rng, h, w) -> (bool mask, float rgb (h, w, 3))``."""
    name: str
    plural: str
    draw: Callable[[np.random.Generator, int, int], Tuple[np.ndarray, np.ndarray]]


def _paint(rgb: np.ndarray, mask: np.ndarray, color, rng=None, jitter: float = 0.0):
    col = np.asarray(color, np.float32)
    if rng is not None and jitter:
        col = col + rng.uniform(-jitter, jitter, size=3)
    rgb[mask] = col


def _house(rng, h, w):
    v, u = _grid(h, w)
    rgb = np.zeros((h, w, 3), np.float32)
    body = (np.abs(u) <= 0.72) & (v >= -0.1) & (v <= 0.95)
    roof = _polygon_mask(u, v, [(-0.95, -0.1), (0.95, -0.1), (0.0, -0.95)])
    door = (np.abs(u - 0.25) <= 0.17) & (v >= 0.4) & (v <= 0.95)
    window = (np.abs(u + 0.35) <= 0.17) & (np.abs(v - 0.3) <= 0.17)
    _paint(rgb, body, (225, 200, 150), rng, 15)
    _paint(rgb, roof, (120, 45, 35), rng, 15)
    _paint(rgb, door, (90, 55, 30), rng, 10)
    _paint(rgb, window, (170, 215, 245), rng, 10)
    return body | roof, rgb


def _tree(rng, h, w):
    v, u = _grid(h, w)
    rgb = np.zeros((h, w, 3), np.float32)
    trunk = (np.abs(u) <= 0.16) & (v >= 0.2) & (v <= 0.97)
    canopy = np.zeros((h, w), bool)
    for cu, cv, r in ((0.0, -0.45, 0.52), (-0.38, -0.05, 0.42), (0.38, -0.05, 0.42)):
        canopy |= (u - cu)**2 + (v - cv)**2 <= r**2
    _paint(rgb, trunk, (110, 70, 35), rng, 10)
    _paint(rgb, canopy, (25, 105, 40), rng, 12)
    # leaf texture: darker blotches
    blot = rng.random((h, w)) < 0.18
    rgb[canopy & blot] *= 0.65
    return trunk | canopy, rgb


def _car(rng, h, w):
    v, u = _grid(h, w)
    rgb = np.zeros((h, w, 3), np.float32)
    body = (np.abs(u) <= 0.95) & (v >= -0.05) & (v <= 0.5)
    cabin = _polygon_mask(u, v, np.array([(-0.55, -0.05), (0.55, -0.05), (0.35, -0.5),
                                          (-0.35, -0.5)]))
    glass = _polygon_mask(u, v, np.array([(-0.42, -0.1), (0.42, -0.1), (0.28, -0.42),
                                          (-0.28, -0.42)]))
    wheels = np.zeros((h, w), bool)
    for cu in (-0.55, 0.55):
        wheels |= (u - cu)**2 + (v - 0.5)**2 <= 0.26**2
    # A car's body colour varies (any palette colour or silver): the kind is the silhouette.
    palette = [c for _, c in COLORS] + [(185, 190, 200)]
    _paint(rgb, body | cabin, palette[int(rng.integers(len(palette)))], rng, 15)
    _paint(rgb, glass & cabin, (175, 220, 245), rng, 8)
    _paint(rgb, wheels, (25, 25, 25), rng, 5)
    return body | cabin | wheels, rgb


def _face(rng, h, w):
    v, u = _grid(h, w)
    rgb = np.zeros((h, w, 3), np.float32)
    head = u**2 + v**2 <= 0.95**2
    eyes = ((u + 0.35)**2 + (v + 0.25)**2 <= 0.13**2) | ((u - 0.35)**2 + (v + 0.25)**2
                                                           <= 0.13**2)
    r = np.sqrt(u**2 + (v - 0.05)**2)
    mouth = (r >= 0.42) & (r <= 0.58) & (v > 0.2) & (np.abs(u) <= 0.45)
    _paint(rgb, head, (240, 195, 160), rng, 12)
    _paint(rgb, eyes, (30, 30, 40), rng, 5)
    _paint(rgb, mouth & head, (170, 40, 50), rng, 10)
    return head, rgb


def _flower(rng, h, w):
    v, u = _grid(h, w)
    rgb = np.zeros((h, w, 3), np.float32)
    petals = np.zeros((h, w), bool)
    a0 = rng.uniform(0, 2 * math.pi)
    for k in range(6):
        a = a0 + 2 * math.pi * k / 6
        petals |= (u - 0.55 * math.cos(a))**2 + (v - 0.55 * math.sin(a))**2 <= 0.36**2
    centre = u**2 + v**2 <= 0.3**2
    _paint(rgb, petals, (250, 250, 245), rng, 6)
    _paint(rgb, centre, (240, 200, 30), rng, 10)
    return petals | centre, rgb


def _fish(rng, h, w):
    v, u = _grid(h, w)
    if rng.random() < 0.5:  # swims left or right
        u = -u
    rgb = np.zeros((h, w, 3), np.float32)
    body = ((u + 0.12) / 0.72)**2 + (v / 0.5)**2 <= 1
    tail = _polygon_mask(u, v, [(0.5, 0.0), (0.97, -0.5), (0.97, 0.5)])
    eye = (u + 0.5)**2 + (v + 0.1)**2 <= 0.09**2
    belly = body & (v > 0.12)
    _paint(rgb, body | tail, (70, 125, 165), rng, 12)
    _paint(rgb, belly, (190, 200, 205), rng, 8)
    _paint(rgb, eye, (15, 15, 15))
    return body | tail, rgb


OBJECTS: Tuple[ObjectKind, ...] = (
    ObjectKind('house', 'houses', _house),
    ObjectKind('tree', 'trees', _tree),
    ObjectKind('car', 'cars', _car),
    ObjectKind('face', 'faces', _face),
    ObjectKind('flower', 'flowers', _flower),
    ObjectKind('fish', 'fish', _fish),
)
OBJECT_NAMES = tuple(o.name for o in OBJECTS)
