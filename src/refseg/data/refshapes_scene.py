"""RefShapes scenes: shapes, their placement with controlled occlusion, and rendering.

The masks are exact by construction: each object's full silhouette is rasterised once, objects
are painted in z-order, and an object's *visible* mask is its silhouette minus everything painted
later; the image is painted from those very silhouettes, so a pixel's colour always comes from
the object whose visible mask holds it. A one-pixel darker rim (inside the silhouette) keeps
touching shapes of one colour apart to the eye.

Placement rejects layouts where any object is less than :data:`MIN_VISIBLE` visible, so every
object in a scene is plainly there (and counts when the language side checks uniqueness).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

#: Shape colours: saturated and far apart in hue, against desaturated backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "orange": (245, 133, 24),
    "yellow": (238, 212, 32),
    "green": (40, 158, 58),
    "blue": (36, 92, 214),
    "purple": (140, 62, 178),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")
#: Size classes as a fraction of the image side (the shape's "radius"). Neighbouring classes
#: differ by a factor of about 1.45 in radius (2.1 in area), so "larger" is never a close call.
SIZES: dict[str, float] = {"small": 0.055, "medium": 0.08, "large": 0.115}

#: Every object keeps at least this fraction of its silhouette visible.
MIN_VISIBLE = 0.45
#: Largest fraction of a newly placed (overlapping) object's area that may cover others.
MAX_COVER = 0.35


@dataclass
class ObjectSpec:
    """What to place: appearance, plus an optional placement hint for relations."""

    shape: str
    colour: str
    size: str
    may_overlap: bool = False
    #: ``(index of an earlier object, direction)`` to place this one beside it.
    near: tuple[int, str] | None = None

    @property
    def combo(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass
class SceneObject:
    """A placed object with its silhouette and (after occlusion) visible mask."""

    spec: ObjectSpec
    cx: float
    cy: float
    radius: float
    angle: float
    full: np.ndarray
    visible: np.ndarray = field(init=False)
    full_area: int = field(init=False)
    _stats: tuple | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.visible = self.full.copy()
        self.full_area = int(self.full.sum())

    @property
    def shape(self) -> str:
        return self.spec.shape

    @property
    def colour(self) -> str:
        return self.spec.colour

    @property
    def size(self) -> str:
        return self.spec.size

    @property
    def combo(self) -> tuple[str, str]:
        return self.spec.combo

    def finalize(self) -> None:
        """Cache the visible-mask statistics once occlusion is settled (end of layout)."""
        ys, xs = np.nonzero(self.visible)
        area = len(xs)
        self._stats = (
            area,
            (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
            (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
        )

    def _cached(self) -> tuple[int, tuple[float, float, float, float], tuple[float, float]]:
        if getattr(self, "_stats", None) is None:
            self.finalize()
        return self._stats

    def visible_fraction(self) -> float:
        return self._cached()[0] / max(self.full_area, 1)

    def visible_area(self) -> int:
        return self._cached()[0]

    def visible_box(self) -> tuple[float, float, float, float]:
        """Pixel-edge box ``(x1, y1, x2, y2)`` of the visible mask."""
        return self._cached()[1]

    def visible_centre(self) -> tuple[float, float]:
        return self._cached()[2]


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices ``(N, 2)`` of a shape centred at ``(cx, cy)``, size ``r``, rotated ``angle`` deg."""
    if shape == "circle":
        t = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
        points = np.stack([np.cos(t), np.sin(t)], axis=1) * r
    elif shape == "square":
        h = 0.82 * r
        points = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif shape == "diamond":  # a rhombus taller than wide: never mistaken for a tilted square
        points = np.array([[0, -1.12 * r], [0.72 * r, 0], [0, 1.12 * r], [-0.72 * r, 0]])
    elif shape == "triangle":  # equilateral, pointing up, centroid at the centre
        t = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        points = np.stack([np.cos(t), np.sin(t)], axis=1) * 1.12 * r
        points[:, 1] += 0.12 * r  # optical centring: shift the heavy base up a little
    elif shape == "star":
        t = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.18 * r, 0.5 * r)
        points = np.stack([np.cos(t), np.sin(t)], axis=1) * radii[:, None]
    elif shape == "hexagon":
        t = np.arange(6) * math.pi / 3
        points = np.stack([np.cos(t), np.sin(t)], axis=1) * 0.98 * r
    else:
        raise ValueError(f"unknown shape {shape!r}")
    if angle:
        a = math.radians(angle)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        points = points @ rot.T
    return points + np.array([cx, cy])


#: Rotation ranges (degrees) that keep every shape recognisable (squares and diamonds stay
#: upright so a tilted square never looks like a diamond).
_ROTATION = {
    "circle": 0.0,
    "square": 0.0,
    "diamond": 0.0,
    "triangle": 8.0,
    "star": 15.0,
    "hexagon": 10.0,
}


def rasterize(points: np.ndarray, size: int) -> np.ndarray:
    """Fill a polygon with 1/16-pixel vertex precision; returns a boolean ``(size, size)`` mask."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def _extent(points: np.ndarray, cx: float, cy: float) -> float:
    return float(np.max(np.hypot(points[:, 0] - cx, points[:, 1] - cy)))


_DIRECTIONS = {"above": (0.0, -1.0), "below": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}


def layout(
    specs: list[ObjectSpec], rng: np.random.Generator, size: int, *, tries: int = 60
) -> list[SceneObject] | None:
    """Place ``specs`` in order (later ones on top); ``None`` when some object does not fit."""
    placed: list[SceneObject] = []
    occupied = np.zeros((size, size), dtype=bool)  # union of silhouettes, grown by a margin
    kernel = np.ones((5, 5), dtype=np.uint8)
    margin = 2.0
    for spec in specs:
        radius = SIZES[spec.size] * size * float(rng.uniform(0.94, 1.06))
        limit = _ROTATION[spec.shape]
        angle = float(rng.uniform(-limit, limit)) if limit else 0.0
        template = shape_polygon(spec.shape, 0.0, 0.0, radius, angle)
        extent = _extent(template, 0.0, 0.0)
        low, high = extent + margin, size - extent - margin
        if high <= low:
            return None
        for _ in range(tries):
            if spec.near is not None:
                anchor = placed[spec.near[0]]
                dx, dy = _DIRECTIONS[spec.near[1]]
                turn = math.radians(float(rng.uniform(-22, 22)))
                ux = dx * math.cos(turn) - dy * math.sin(turn)
                uy = dx * math.sin(turn) + dy * math.cos(turn)
                anchor_extent = anchor.radius * 1.2
                distance = anchor_extent + extent + float(rng.uniform(0.03, 0.2)) * size
                cx, cy = anchor.cx + ux * distance, anchor.cy + uy * distance
                if not (low <= cx <= high and low <= cy <= high):
                    continue
            else:
                cx, cy = float(rng.uniform(low, high)), float(rng.uniform(low, high))
            full = rasterize(template + np.array([cx, cy]), size)
            area = int(full.sum())
            if area == 0:
                continue
            if spec.may_overlap:
                if int((full & occupied).sum()) > MAX_COVER * area:
                    continue
                if any(int((o.visible & ~full).sum()) < MIN_VISIBLE * o.full_area for o in placed):
                    continue
            elif (full & occupied).any():
                continue
            obj = SceneObject(spec, cx, cy, radius, angle, full)
            for other in placed:
                other.visible &= ~full
                other._stats = None
            placed.append(obj)
            occupied |= cv2.dilate(full.astype(np.uint8), kernel).astype(bool)
            break
        else:
            return None
    for obj in placed:
        obj.finalize()
    return placed


# ------------------------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A desaturated background colour (greys, beiges, slate): never mistaken for a shape."""
    h = float(rng.uniform(0, 1))
    s = float(rng.uniform(0.0, 0.18))
    v = float(rng.uniform(0.38, 0.9))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A textured or noisy background ``(size, size, 3)`` float32 and its kind."""
    xs, ys = _grid(size)
    kind = ("flat", "gradient", "blotches", "stripes", "checker")[int(rng.integers(0, 5))]
    base = _muted(rng)
    if kind == "gradient":
        other = _muted(rng)
        theta = float(rng.uniform(0, 2 * math.pi))
        t = (xs * math.cos(theta) + ys * math.sin(theta)) / size
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = base[None, None] * (1 - t[..., None]) + other[None, None] * t[..., None]
    elif kind == "blotches":
        cells = int(rng.integers(3, 9))
        low = np.stack([_muted(rng) for _ in range(cells * cells)]).reshape(cells, cells, 3)
        image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        image = 0.5 * image + 0.5 * base[None, None]
    elif kind == "stripes":
        theta = float(rng.uniform(0, math.pi))
        period = float(rng.uniform(8, 30))
        wave = np.sin(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / period)
        image = base[None, None] + float(rng.uniform(6, 16)) * wave[..., None]
    elif kind == "checker":
        cell = int(rng.integers(8, 29))
        board = ((xs // cell + ys // cell) % 2) * 2 - 1
        image = base[None, None] + float(rng.uniform(6, 14)) * board[..., None]
    else:
        image = np.broadcast_to(base[None, None], (size, size, 3)).copy()
    sigma = float(rng.choice([1.5, 3.0, 5.0]))
    image = image + rng.normal(0.0, sigma, size=(size, size, 1)).astype(np.float32)
    return np.asarray(image, dtype=np.float32), kind


def render(objects: list[SceneObject], rng: np.random.Generator, size: int) -> np.ndarray:
    """The scene as ``uint8`` RGB: background, then each object (shaded, rimmed) in z-order."""
    image, _ = background(rng, size)
    xs, ys = _grid(size)
    kernel = np.ones((3, 3), dtype=np.uint8)
    for obj in objects:
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
        colour = colour + rng.normal(0.0, 7.0, size=3).astype(np.float32)
        theta = float(rng.uniform(0, 2 * math.pi))
        region = obj.full
        # A gentle linear shading across the shape (+-12 %) so fills are not flat colour.
        proj = (xs[region] - obj.cx) * math.cos(theta) + (ys[region] - obj.cy) * math.sin(theta)
        shade = 1.0 + 0.12 * proj / max(obj.radius, 1.0)
        image[region] = colour[None, :] * shade[:, None]
        rim = region & ~cv2.erode(region.astype(np.uint8), kernel).astype(bool)
        image[rim] = image[rim] * 0.55
    image += rng.normal(0.0, 1.0, size=(size, size, 1)).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
