"""Coordinate conventions: which space a model's boxes and points are written in.

A grounder's answer is only meaningful with its convention:

* ``norm1000`` (Qwen3-VL, Qwen2-VL): integers on a 0-1000 scale relative to the image, whatever
  its size or the model's internal resize. ``x_pixels = x / 1000 * width``.
* ``resized`` (Qwen2.5-VL): absolute pixels of the model's own *resized* input. The processor
  resizes each image with :func:`smart_resize` (sides multiples of ``factor``, area within
  ``[min_pixels, max_pixels]``), so ``x_pixels = x * width / resized_width``. Using the wrong
  pixel budget here shifts every box, which is why the budget is part of the convention.
* ``pixels``: absolute pixels of the original image (a model or server that answers in them).

Specs: ``norm1000``, ``pixels``, ``resized`` or ``resized:min_pixels=N,max_pixels=N,factor=N``
(any subset; missing keys take the defaults below).

:func:`to_grounding` turns a :class:`~refseg.protocol.ParsedAnswer` into a
:class:`~refseg.grounding.base.Grounding` in pixels of the displayed image and is where
geometric validity is judged; :func:`from_pixels` is the inverse used to write SFT targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refseg.errors import InputError
from refseg.grounding.base import GroundedInstance, Grounding
from refseg.paths import bounds, clip_polygons
from refseg.protocol import ParsedAnswer, ParsedInstance
from refseg.types import clip_box

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "Convention",
    "from_pixels",
    "path_from_pixels",
    "smart_resize",
    "to_grounding",
]

#: Qwen2.5-VL's resize granularity: 14-pixel patches merged 2x2.
DEFAULT_FACTOR = 28
#: The released Qwen2.5-VL checkpoints' processor configuration: 4 to 16384 visual tokens of
#: 28x28 pixels (3,136 to 12,845,056 pixels). Note that transformers' image-processor class
#: default is smaller (``max_pixels = 28*28*1280``); a server started with other limits needs a
#: ``resized:...`` spec that says so.
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
#: The longest/shortest side ratio the Qwen processors accept.
MAX_ASPECT_RATIO = 200

_KINDS = ("norm1000", "resized", "pixels")


def smart_resize(
    height: int,
    width: int,
    factor: int = DEFAULT_FACTOR,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    half_up: bool = False,
) -> tuple[int, int]:
    """The ``(height, width)`` a Qwen2.5-VL processor resizes an image to.

    Follows Qwen2.5-VL's documented rule: round each side to the nearest multiple of
    ``factor``; if the area then exceeds ``max_pixels``, scale both sides down by
    ``sqrt(h*w/max_pixels)`` and floor to multiples of ``factor``; if it falls below
    ``min_pixels``, scale up by ``sqrt(min_pixels/(h*w))`` and ceil. Sides never go below
    ``factor``. Python's ``round`` (half to even) matches the reference processors. This is the
    transformers processor's rule (what our Qwen grounder and most servers run); some client-side
    helpers also clamp the first rounding to ``factor``, which differs only for images with a side
    under 14 pixels. ``half_up`` rounds a side exactly halfway between two multiples up, as
    OpenVINO GenAI's preprocessor does (C++ ``std::round``): a 294-pixel side is 280 for
    transformers and 308 for OpenVINO at factor 28.
    """
    if height <= 0 or width <= 0:
        raise InputError(f"image size {width}x{height} must be positive")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InputError(
            f"image {width}x{height} is too elongated for the model: "
            f"the aspect ratio must stay under {MAX_ASPECT_RATIO}"
        )
    nearest = (lambda v: math.floor(v + 0.5)) if half_up else round
    h_bar = nearest(height / factor) * factor  # a side under factor/2 rounds to 0: the area is
    w_bar = nearest(width / factor) * factor  # then below min_pixels and is scaled up below
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Convention:
    """A coordinate convention (see the module docstring). Build with :meth:`parse`."""

    kind: str = "norm1000"
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    factor: int = DEFAULT_FACTOR
    #: Round sides halfway between multiples up (OpenVINO's preprocessor), not to even.
    half_up: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(
                f"unknown coordinate convention {self.kind!r}; use {', '.join(_KINDS)}"
            )
        if self.factor < 1 or self.min_pixels < 1 or self.max_pixels < self.min_pixels:
            raise InputError(
                f"resized convention needs factor >= 1 and 1 <= min_pixels <= max_pixels, got "
                f"factor={self.factor}, min_pixels={self.min_pixels}, max_pixels={self.max_pixels}"
            )

    @classmethod
    def parse(cls, spec: str | Convention) -> Convention:
        """Read ``norm1000``, ``pixels``, ``resized`` or ``resized:key=value,...``."""
        if isinstance(spec, Convention):
            return spec
        if not isinstance(spec, str):
            raise InputError(f"a coordinate convention is a string, got {type(spec).__name__}")
        kind, sep, rest = spec.strip().partition(":")
        if kind not in _KINDS:
            raise InputError(
                f"unknown coordinate convention {spec!r}; use norm1000, pixels or "
                "resized[:min_pixels=N,max_pixels=N,factor=N]"
            )
        if kind != "resized":
            if sep:
                raise InputError(f"coordinate convention {kind} takes no options: {spec!r}")
            return cls(kind)
        options: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            key = key.strip()
            if not eq or key not in ("min_pixels", "max_pixels", "factor"):
                raise InputError(
                    f"bad option {part!r} in {spec!r}; use min_pixels=N, max_pixels=N, factor=N"
                )
            try:
                options[key] = int(value.strip())
            except ValueError:
                raise InputError(f"option {key} in {spec!r} needs an integer") from None
        return cls("resized", **options)

    def __str__(self) -> str:
        if self.kind != "resized":
            return self.kind
        return (
            f"resized:min_pixels={self.min_pixels},max_pixels={self.max_pixels},"
            f"factor={self.factor}" + (",half_up" if self.half_up else "")
        )

    @property
    def prompt_coords(self) -> str:
        """The wording :func:`refseg.protocol.build_prompt` should use for this convention."""
        return "norm1000" if self.kind == "norm1000" else "pixels"

    def frame(self, width: int, height: int) -> tuple[int, int]:
        """``(frame_width, frame_height)``: the model-space size that maps onto the image."""
        _check_size(width, height)
        if self.kind == "norm1000":
            return 1000, 1000
        if self.kind == "resized":
            h, w = smart_resize(
                height,
                width,
                self.factor,
                self.min_pixels,
                self.max_pixels,
                half_up=self.half_up,
            )
            return w, h
        return width, height


def _check_size(width: int, height: int) -> None:
    if isinstance(width, bool) or isinstance(height, bool):
        raise InputError("image size must be integers")
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise InputError(f"image size {width}x{height} must be positive integers")


# Points may sit on their box's border; allow for float noise in the conversion.
_EPS = 1e-6
#: How far past its box's edge a point may lie and still be kept (clamped onto the edge), as a
#: fraction of the image side: 1% is 10 units of Qwen3-VL's 0-1000 grid.
POINT_TOLERANCE = 0.01


def _convert(
    instance: ParsedInstance, frame: tuple[int, int], width: int, height: int
) -> GroundedInstance | str:
    """The instance in pixels, or why it is invalid."""
    sx, sy = width / frame[0], height / frame[1]
    x1, y1, x2, y2 = instance.box
    if not all(math.isfinite(v) for v in instance.box):
        return "non-finite box"
    if x2 < x1 or y2 < y1:
        return "inverted box"
    polygons: list[np.ndarray] = []
    if instance.polygons:
        scale = np.array([sx, sy])
        rings = [np.asarray(ring, dtype=np.float64) * scale for ring in instance.polygons]
        if not all(np.isfinite(ring).all() for ring in rings):
            return "non-finite path"
        polygons = clip_polygons(rings, 0.0, 0.0, float(width), float(height))
        if not polygons:
            return "path has no area inside the image"
        if instance.box_derived:
            x1, y1, x2, y2 = bounds(polygons)  # type: ignore[misc]
            sx = sy = 1.0  # already pixels
    bx1, bx2 = min(max(x1 * sx, 0.0), width), min(max(x2 * sx, 0.0), width)
    by1, by2 = min(max(y1 * sy, 0.0), height), min(max(y2 * sy, 0.0), height)
    if bx2 - bx1 <= 0 or by2 - by1 <= 0:
        return "box has no area inside the image"
    points = []
    psx, psy = width / frame[0], height / frame[1]
    for px, py in instance.points:
        if not (math.isfinite(px) and math.isfinite(py)):
            return "non-finite point"
        x, y = px * psx, py * psy
        # A point on or just past its box edge is the model's rounding, not a wrong answer:
        # within POINT_TOLERANCE of the image side it is clamped into the box.
        tol_x = max(_EPS * max(1.0, abs(x)), POINT_TOLERANCE * width)
        tol_y = max(_EPS * max(1.0, abs(y)), POINT_TOLERANCE * height)
        if not (bx1 - tol_x <= x <= bx2 + tol_x and by1 - tol_y <= y <= by2 + tol_y):
            return "point outside its box"
        points.append((min(max(x, bx1), bx2), min(max(y, by1), by2)))
    return GroundedInstance(
        box=(bx1, by1, bx2, by2), points=points, polygons=polygons, score=instance.score
    )


def to_grounding(
    parsed: ParsedAnswer, convention: str | Convention, width: int, height: int
) -> Grounding:
    """Convert a parsed answer to pixels of the displayed ``width`` x ``height`` image.

    Boxes are clipped to the image. An instance is invalid (dropped and counted in
    ``Grounding.invalid``) when its box is non-finite, inverted (``x2 < x1`` or ``y2 < y1``;
    never silently swapped) or has no area inside the image, or when one of its points lies
    outside its clipped box by more than :data:`POINT_TOLERANCE` of the image side (a point just
    past the edge is clamped onto it). Instances without points are valid (box only).

    Outlines of path answers are scaled exactly like boxes and clipped to the image (a path
    partly outside keeps its inside part; one wholly outside makes the instance invalid, "path
    has no area inside the image"). When the answer gave no box, the box is the clipped
    outline's bounding box.

    When *every* instance is invalid the answer is neither a detection nor "no target": the
    grounding has no instances, ``no_target`` false, ``invalid`` = N and
    ``parse_error = "all N instances invalid (first: REASON)"``, so evaluation counts it like an
    unreadable answer. An unreadable answer keeps the parser's ``error`` as ``parse_error``.
    """
    conv = Convention.parse(convention)
    frame_w, frame_h = conv.frame(width, height)
    base = {"raw_answer": parsed.raw, "reasoning": parsed.reasoning}
    if parsed.error is not None:
        return Grounding(parse_error=parsed.error, **base)
    if parsed.no_target or not parsed.instances:
        return Grounding(no_target=True, **base)
    valid: list[GroundedInstance] = []
    reasons: list[str] = []
    for instance in parsed.instances:
        converted = _convert(instance, (frame_w, frame_h), width, height)
        if isinstance(converted, str):
            reasons.append(converted)
        else:
            valid.append(converted)
    error = None
    if not valid:
        error = f"all {len(reasons)} instances invalid (first: {reasons[0]})"
    return Grounding(instances=valid, invalid=len(reasons), parse_error=error, **base)


def from_pixels(
    box: Sequence[float],
    points: Sequence[Sequence[float]],
    convention: str | Convention,
    width: int,
    height: int,
) -> tuple[tuple[int, int, int, int], list[tuple[int, int]]]:
    """A pixel-space box and points in the model's integer coordinates (for SFT targets).

    The box is validated and clipped like any user box (:func:`refseg.types.clip_box`: inverted,
    non-finite or area-less boxes raise :class:`InputError`); points must lie inside it. Values
    are rounded to the nearest integer and clamped to the model's frame. A box that would
    round to zero width or height (an object narrower than one model unit) is widened to one unit,
    so that every target is a valid answer for :func:`to_grounding`. Points are clamped into the
    (rounded) box. Round trip: ``to_grounding`` recovers each coordinate within half a model unit
    (``width / 2000`` pixels for ``norm1000``); an end moved by the one-unit widening within one
    unit.
    """
    conv = Convention.parse(convention)
    frame_w, frame_h = conv.frame(width, height)
    x1, y1, x2, y2 = clip_box(box, width, height)
    sx, sy = frame_w / width, frame_h / height
    mx1, mx2 = _span(x1 * sx, x2 * sx, frame_w)
    my1, my2 = _span(y1 * sy, y2 * sy, frame_h)
    out_points = []
    for p in points:
        if len(p) != 2 or not all(math.isfinite(float(v)) for v in p):
            raise InputError(f"point {list(p)} needs 2 finite numbers")
        x, y = float(p[0]), float(p[1])
        if not (x1 - _EPS <= x <= x2 + _EPS and y1 - _EPS <= y <= y2 + _EPS):
            raise InputError(f"point ({x}, {y}) lies outside its box {list(box)}")
        px = min(max(round(x * sx), mx1), mx2)
        py = min(max(round(y * sy), my1), my2)
        out_points.append((px, py))
    return (mx1, my1, mx2, my2), out_points


def _span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Round ``[lo, hi]`` to integers in ``[0, size]``, keeping at least one unit.

    A span thinner than one unit that rounds to a single value ``r`` becomes ``[r-1, r]`` or
    ``[r, r+1]``, whichever side its middle lies on, so no end moves by more than one unit.
    """
    a = min(max(round(lo), 0), size)
    b = min(max(round(hi), 0), size)
    if b <= a:
        if (a > 0 and (lo + hi) / 2 < a) or a >= size:
            a -= 1
        else:
            b = a + 1
    return a, b


def path_from_pixels(
    polygons: Sequence[np.ndarray], convention: str | Convention, width: int, height: int
) -> list[np.ndarray]:
    """Pixel-space outline rings in the model's coordinates (for SFT targets and fakes).

    The inverse of the scaling :func:`to_grounding` applies to paths; rings are clipped to the
    image first and left as floats (:func:`refseg.protocol.format_answer` rounds them).
    """
    conv = Convention.parse(convention)
    frame_w, frame_h = conv.frame(width, height)
    rings = clip_polygons(polygons, 0.0, 0.0, float(width), float(height))
    scale = np.array([frame_w / width, frame_h / height])
    return [ring * scale for ring in rings]
