"""Outlines as vector paths: SVG path data <-> polygons <-> masks, in one place.

The path mask head (a grounder that writes an object's outline as SVG path data, see
:mod:`refseg.protocol`) needs three conversions, and every stage (parser, pipeline, refiners,
SVG output, benchmarks) must agree on them exactly, so they live here:

* :func:`parse_path` / :func:`format_path`: SVG path data <-> polygons (``float64 (N, 2)`` arrays
  of ``x, y``). ``M/L/H/V/Z`` and their relative (lower-case) forms are read exactly; curves
  (``C/S/Q/T``) and elliptical arcs (``A``) are flattened to a fixed number of straight segments
  (:data:`CURVE_SEGMENTS`, up to :data:`ARC_SEGMENTS` for a full turn). Each subpath (each ``M``)
  is one polygon: an object in several parts, or a hole.
* :func:`rasterize`: polygons (image pixels) -> boolean mask at image resolution.
* :func:`trace`: mask -> polygons with at most K vertices in all (outer outlines and holes),
  which :func:`format_path` writes back as path data.

Coordinates are continuous pixel coordinates: pixel ``(row i, column j)`` is the unit square
``[j, j+1) x [i, i+1)``, so a box ``[x1, y1, x2, y2]`` and a path share one convention.

Fill rule. SVG's default, ``nonzero``, is the default here too, so an SVG written by refseg
(``refseg segment --svg``) displays the mask refseg computed: a point is inside when the
outline winds around it a non-zero number of times, so overlapping parts of an object stay
filled and a hole must run opposite to its outline (:func:`trace` writes holes that way).
``evenodd`` (every crossing toggles) makes any subpath inside another a hole whatever its
direction, and overlapping parts cancel where they overlap. Both are exact for
self-intersecting subpaths too (a pentagram's centre is inside under nonzero, outside under
even-odd).

Hostile input is bounded: a path string longer than :data:`MAX_PATH_CHARS`, more than
:data:`MAX_VERTICES` vertices after flattening, more than :data:`MAX_SUBPATHS` subpaths, a
non-finite number or one beyond :data:`MAX_ABS_COORD` is a :class:`PathError` (a ``ValueError``
with a one-line message), raised before any large allocation. Rasterization only computes the
part of the image the polygons cover (after :func:`clip_polygons` to the image), and its work is
bounded by :data:`MAX_CROSSINGS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ARC_SEGMENTS",
    "CURVE_SEGMENTS",
    "FILL_RULES",
    "MAX_ABS_COORD",
    "MAX_PATH_CHARS",
    "MAX_SUBPATHS",
    "MAX_VERTICES",
    "PathError",
    "bounds",
    "clip_polygons",
    "format_path",
    "parse_path",
    "rasterize",
    "signed_area",
    "svg_document",
    "trace",
]

#: Longest path string read (characters): 100k vertices of two 3-digit numbers fit easily.
MAX_PATH_CHARS = 2_000_000
#: Most vertices one path may have after curves are flattened.
MAX_VERTICES = 100_000
#: Most subpaths (``M`` commands) one path may have; each is filled separately.
MAX_SUBPATHS = 1000
#: Largest coordinate magnitude accepted: far beyond any image or model frame, small enough that
#: rasterization's fixed-point arithmetic cannot overflow.
MAX_ABS_COORD = 1e6
#: Straight segments a Bezier curve is flattened into.
CURVE_SEGMENTS = 8
#: Straight segments a full-turn elliptical arc is flattened into (fewer for shorter arcs).
ARC_SEGMENTS = 32
FILL_RULES = ("nonzero", "evenodd")

Polygon = np.ndarray  # float64 (N, 2): x, y


class PathError(ValueError):
    """A path that cannot be read or used; the message is one short line."""


# ---------------------------------------------------------------------------------------------
# Path data -> polygons

_TOKEN_RE = re.compile(
    r"\s*(?:([MmLlHhVvCcSsQqTtAaZz])|([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))\s*,?"
)
_FLAG_RE = re.compile(r"\s*([01])\s*,?")
_ARITY = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}


_FAST_RE = re.compile(r"[MmLlHhVvCcSsQqTtZz]|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[^\s,]")


def _tokens(data: str, max_numbers: int) -> list[str | float]:
    """Commands (str) and numbers (float), arc flags read as single digits (``a1 1 0 01 5 5``).

    At most ``max_numbers`` numbers are read (the caller's vertex bound, converted): past it
    the path is refused before more work is done.
    """
    if "a" not in data and "A" not in data:  # no arc flags: one regex pass does it all
        out_fast: list[str | float] = []
        count = 0
        for token in _FAST_RE.findall(data):
            if token in _ARITY or token.upper() in _ARITY:
                out_fast.append(token)
                continue
            if not (token[0].isdigit() or token[0] in "+-."):
                raise PathError(f"unexpected {token!r} in path data")
            try:
                value = float(token)
            except ValueError:
                raise PathError(f"unexpected {token[:10]!r} in path data") from None
            if not math.isfinite(value) or abs(value) > MAX_ABS_COORD:
                raise PathError(f"number {token[:20]} is out of range")
            count += 1
            if count > max_numbers:
                raise PathError("path has too many numbers")
            out_fast.append(value)
        return out_fast
    out: list[str | float] = []
    pos, n = 0, len(data)
    command = ""
    args = 0  # numbers read since the current command
    while pos < n:
        if data[pos].isspace() or data[pos] == ",":
            pos += 1
            continue
        # Arc flags (4th and 5th argument) may be written without separators: "a5 5 0 105 5".
        if command in "Aa" and command and args % 7 in (3, 4):
            flag = _FLAG_RE.match(data, pos)
            if flag is None:
                raise PathError(f"bad arc flag at character {pos}")
            out.append(float(flag.group(1)))
            args += 1
            pos = flag.end()
            continue
        match = _TOKEN_RE.match(data, pos)
        if match is None or match.end() == pos:
            shown = data[pos : pos + 10]
            raise PathError(f"unexpected {shown!r} at character {pos}")
        if match.group(1):
            command = match.group(1)
            args = 0
            out.append(command)
        else:
            value = float(match.group(2))
            if not math.isfinite(value) or abs(value) > MAX_ABS_COORD:
                raise PathError(f"number {match.group(2)[:20]} is out of range")
            out.append(value)
            args += 1
            if len(out) > 2 * max_numbers:
                raise PathError("path has too many numbers")
        pos = match.end()
    return out


class _Builder:
    """Collects subpaths while bounding the total vertex count."""

    def __init__(self, max_vertices: int) -> None:
        self.max_vertices = max_vertices
        self.count = 0
        self.done: list[list[tuple[float, float]]] = []
        self.current: list[tuple[float, float]] = []

    def add(self, x: float, y: float) -> None:
        if not (math.isfinite(x) and math.isfinite(y)) or max(abs(x), abs(y)) > MAX_ABS_COORD:
            raise PathError("a coordinate is out of range")
        self.count += 1
        if self.count > self.max_vertices:
            raise PathError(f"path has more than {self.max_vertices} vertices")
        self.current.append((x, y))

    def close(self) -> None:
        if self.current:
            self.done.append(self.current)
            if len(self.done) > MAX_SUBPATHS:
                raise PathError(f"path has more than {MAX_SUBPATHS} subpaths")
        self.current = []


def parse_path(data: str, *, max_vertices: int = MAX_VERTICES) -> list[Polygon]:
    """SVG path data -> polygons (one per subpath), in the path's own coordinates.

    Every subpath is treated as closed (a mask outline): ``Z`` is optional. Subpaths with fewer
    than 3 distinct vertices enclose nothing and are dropped. Raises :class:`PathError` on
    malformed data or when a bound of this module is exceeded; never hangs (the work is linear
    in the length of ``data``, which is itself bounded).
    """
    if not isinstance(data, str):
        raise PathError(f"path is {type(data).__name__}, not text")
    if len(data) > MAX_PATH_CHARS:
        raise PathError(f"path is longer than {MAX_PATH_CHARS} characters")
    # Every vertex costs at most 3.5 numbers (an arc: 7 numbers, 2 or more vertices), so more
    # numbers than this cannot make a path within the vertex bound.
    tokens = _tokens(data, 4 * max_vertices + 8)
    if not tokens:
        raise PathError("path is empty")
    if not isinstance(tokens[0], str) or tokens[0] not in "Mm":
        raise PathError("path must start with M")
    build = _Builder(max_vertices)
    cx = cy = 0.0  # current point
    sx = sy = 0.0  # start of the current subpath
    last_ctrl: tuple[str, float, float] | None = None  # ("C"|"Q", x, y) for S/T reflection
    i = 0
    command = ""
    while i < len(tokens):
        token = tokens[i]
        if isinstance(token, str):
            command = token
            i += 1
        elif command in ("M", "m"):  # numbers after M's first pair are implicit L
            command = "L" if command == "M" else "l"
        elif command in ("Z", "z"):
            raise PathError("numbers after Z")
        upper = command.upper()
        arity = _ARITY[upper]
        if upper == "Z":
            build.close()
            cx, cy = sx, sy
            last_ctrl = None
            continue
        args = tokens[i : i + arity]
        if len(args) < arity or any(isinstance(a, str) for a in args):
            raise PathError(f"{command} needs {arity} numbers")
        i += arity
        v = [float(a) for a in args]  # type: ignore[arg-type]
        rel = command.islower()
        ox, oy = (cx, cy) if rel else (0.0, 0.0)
        if upper == "M":
            build.close()
            cx, cy = ox + v[0], oy + v[1]
            sx, sy = cx, cy
            build.add(cx, cy)
            last_ctrl = None
            # implicit lineto for following pairs: handled by the command switch above
            command = "m" if rel else "M"
            continue
        if upper == "L":
            cx, cy = ox + v[0], oy + v[1]
            build.add(cx, cy)
            last_ctrl = None
        elif upper == "H":
            cx = (cx if rel else 0.0) + v[0]
            build.add(cx, cy)
            last_ctrl = None
        elif upper == "V":
            cy = (cy if rel else 0.0) + v[0]
            build.add(cx, cy)
            last_ctrl = None
        elif upper in ("C", "S"):
            if upper == "C":
                c1 = (ox + v[0], oy + v[1])
                c2, end = (ox + v[2], oy + v[3]), (ox + v[4], oy + v[5])
            else:
                c1 = (
                    (2 * cx - last_ctrl[1], 2 * cy - last_ctrl[2])
                    if (last_ctrl and last_ctrl[0] == "C")
                    else (cx, cy)
                )
                c2, end = (ox + v[0], oy + v[1]), (ox + v[2], oy + v[3])
            for t in np.linspace(0, 1, CURVE_SEGMENTS + 1)[1:]:
                u = 1 - t
                build.add(
                    u**3 * cx + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t**3 * end[0],
                    u**3 * cy + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t**3 * end[1],
                )
            cx, cy = end
            last_ctrl = ("C", c2[0], c2[1])
        elif upper in ("Q", "T"):
            if upper == "Q":
                c, end = (ox + v[0], oy + v[1]), (ox + v[2], oy + v[3])
            else:
                c = (
                    (2 * cx - last_ctrl[1], 2 * cy - last_ctrl[2])
                    if (last_ctrl and last_ctrl[0] == "Q")
                    else (cx, cy)
                )
                end = (ox + v[0], oy + v[1])
            for t in np.linspace(0, 1, CURVE_SEGMENTS + 1)[1:]:
                u = 1 - t
                build.add(
                    u * u * cx + 2 * u * t * c[0] + t * t * end[0],
                    u * u * cy + 2 * u * t * c[1] + t * t * end[1],
                )
            cx, cy = end
            last_ctrl = ("Q", c[0], c[1])
        else:  # A
            end = (ox + v[5], oy + v[6])
            for x, y in _arc(cx, cy, v[0], v[1], v[2], v[3] != 0, v[4] != 0, *end):
                build.add(x, y)
            cx, cy = end
            last_ctrl = None
    build.close()
    polygons = []
    for ring in build.done:
        array = np.asarray(ring, dtype=np.float64)
        if len(array) > 1 and np.array_equal(array[0], array[-1]):
            array = array[:-1]  # an explicit return to the start is implied by closing
        if len(np.unique(array, axis=0)) >= 3:
            polygons.append(array)
    return polygons


def _arc(
    x1: float,
    y1: float,
    rx: float,
    ry: float,
    angle: float,
    large: bool,
    sweep: bool,
    x2: float,
    y2: float,
) -> list[tuple[float, float]]:
    """Points along an SVG elliptical arc (endpoint parameterisation, SVG 1.1 appendix F.6)."""
    rx, ry = abs(rx), abs(ry)
    if (x1 == x2 and y1 == y2) or rx == 0 or ry == 0:
        return [(x2, y2)]  # the spec: a degenerate arc is a straight line (or nothing)
    phi = math.radians(angle % 360)
    cos_p, sin_p = math.cos(phi), math.sin(phi)
    dx, dy = (x1 - x2) / 2, (y1 - y2) / 2
    xp, yp = cos_p * dx + sin_p * dy, -sin_p * dx + cos_p * dy
    scale = (xp / rx) ** 2 + (yp / ry) ** 2
    if scale > 1:  # radii too small: scale them up (spec F.6.6)
        rx, ry = rx * math.sqrt(scale), ry * math.sqrt(scale)
    num = rx * rx * ry * ry - rx * rx * yp * yp - ry * ry * xp * xp
    den = rx * rx * yp * yp + ry * ry * xp * xp
    coef = math.sqrt(max(0.0, num / den)) if den else 0.0
    if large == sweep:
        coef = -coef
    cxp, cyp = coef * rx * yp / ry, -coef * ry * xp / rx
    ccx = cos_p * cxp - sin_p * cyp + (x1 + x2) / 2
    ccy = sin_p * cxp + cos_p * cyp + (y1 + y2) / 2
    theta1 = math.atan2((yp - cyp) / ry, (xp - cxp) / rx)
    theta2 = math.atan2((-yp - cyp) / ry, (-xp - cxp) / rx)
    delta = theta2 - theta1
    if sweep and delta < 0:
        delta += 2 * math.pi
    elif not sweep and delta > 0:
        delta -= 2 * math.pi
    steps = max(2, math.ceil(abs(delta) / (2 * math.pi) * ARC_SEGMENTS))
    out = []
    for k in range(1, steps + 1):
        t = theta1 + delta * k / steps
        ex, ey = rx * math.cos(t), ry * math.sin(t)
        out.append((cos_p * ex - sin_p * ey + ccx, sin_p * ex + cos_p * ey + ccy))
    out[-1] = (x2, y2)
    return out


# ---------------------------------------------------------------------------------------------
# Polygons -> path data


def _number(value: float, decimals: int) -> str:
    if decimals <= 0:
        return str(round(float(value)))
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_path(polygons: Sequence[np.ndarray], *, decimals: int = 0) -> str:
    """Polygons -> canonical path data ``"M x y L x y ... Z M ..."`` (absolute, closed).

    ``decimals`` = 0 writes integers (every model coordinate convention is integral); vertices
    that round onto the previous one are written once.
    """
    parts: list[str] = []
    for polygon in polygons:
        ring = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        words: list[str] = []
        previous = None
        for x, y in ring:
            pair = (_number(x, decimals), _number(y, decimals))
            if pair == previous:
                continue
            words.append(("M " if not words else "L ") + f"{pair[0]} {pair[1]}")
            previous = pair
        if len(words) >= 3:
            parts.append(" ".join(words) + " Z")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Polygon helpers


def signed_area(polygon: np.ndarray) -> float:
    """Shoelace area; positive for clockwise rings on screen (y grows downwards)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def bounds(polygons: Sequence[np.ndarray]) -> tuple[float, float, float, float] | None:
    """``(x1, y1, x2, y2)`` around all polygons, or None when there are none."""
    if not polygons:
        return None
    stacked = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polygons])
    x1, y1 = stacked.min(axis=0)
    x2, y2 = stacked.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def _clip_half(ring: np.ndarray, axis: int, limit: float, keep_below: bool) -> np.ndarray:
    """Sutherland-Hodgman against one axis-aligned half-plane, vectorised over the edges."""
    if len(ring) == 0:
        return ring
    coord = ring[:, axis]
    inside = coord <= limit if keep_below else coord >= limit
    if inside.all():
        return ring
    if not inside.any():
        return ring[:0]
    nxt = np.roll(ring, -1, axis=0)
    nxt_inside = np.roll(inside, -1)
    crossing = inside != nxt_inside
    denom = nxt[:, axis] - coord
    t = np.divide(limit - coord, denom, out=np.zeros_like(coord), where=denom != 0)
    cross_pts = ring + t[:, None] * (nxt - ring)
    cross_pts[:, axis] = limit
    # For each edge (p -> q): emit p if inside; then the crossing point if the edge crosses.
    out = np.empty((2 * len(ring), 2))
    keep = np.zeros(2 * len(ring), dtype=bool)
    out[0::2], keep[0::2] = ring, inside
    out[1::2], keep[1::2] = cross_pts, crossing
    return out[keep]


def clip_polygons(
    polygons: Sequence[np.ndarray], x1: float, y1: float, x2: float, y2: float
) -> list[np.ndarray]:
    """Clip every polygon to the rectangle; polygons left with no area are dropped.

    Clipping (rather than refusing) keeps an outline that pokes out of the image, like a box
    that does: the part inside is what the model meant. Rings stay rings, so the fill rule's
    result inside the rectangle is unchanged.
    """
    out = []
    for polygon in polygons:
        ring = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        ring = _clip_half(ring, 0, x1, keep_below=False)
        ring = _clip_half(ring, 0, x2, keep_below=True)
        ring = _clip_half(ring, 1, y1, keep_below=False)
        ring = _clip_half(ring, 1, y2, keep_below=True)
        if len(ring) > 1:  # clipping repeats a vertex where a ring runs along an edge
            ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]
        if len(ring) >= 3 and _encloses(ring):
            out.append(ring)
    return out


def _encloses(ring: np.ndarray) -> bool:
    """Whether a ring has any area: some fan triangle is not flat. Not the net signed area,
    which is 0 for a symmetric self-intersecting ring (a bow tie) that nonzero and even-odd
    fill both draw as two triangles."""
    d = ring[1:] - ring[0]
    return bool(np.any(d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0] != 0))


# ---------------------------------------------------------------------------------------------
# Polygons -> mask

#: Most edge/sample-row crossings one rasterization computes (memory ~16 bytes each). A path
#: past it at the asked supersampling is rasterized at one sample per pixel; one past it even
#: then (a hostile zig-zag of 100k full-height edges) is refused.
MAX_CROSSINGS = 20_000_000
#: Sample rows processed at once: bounds the winding array for a large image.
_CHUNK_SAMPLES = 8_000_000


def _edges(rings: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All ring edges as ``(start, end)`` arrays of shape ``(E, 2)``."""
    starts = np.concatenate([r for r in rings])
    ends = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    return starts, ends


def _crossings(starts: np.ndarray, ends: np.ndarray, s: int, row0: int) -> tuple:
    """Per non-horizontal edge: first and last sample row whose centre it crosses.

    Sample row ``k`` (counted from pixel row ``row0``) has its centre at ``row0 + (k + 0.5)/s``;
    an edge crosses it when the centre lies in ``[min(y), max(y))`` (half-open, so a vertex
    shared by two edges is counted once).
    """
    y_lo = np.minimum(starts[:, 1], ends[:, 1])
    y_hi = np.maximum(starts[:, 1], ends[:, 1])
    first = np.ceil((y_lo - row0) * s - 0.5).astype(np.int64)
    last = np.ceil((y_hi - row0) * s - 0.5).astype(np.int64) - 1
    return first, last


def rasterize(
    polygons: Sequence[np.ndarray],
    width: int,
    height: int,
    *,
    fill_rule: str = "nonzero",
    supersample: int = 2,
) -> np.ndarray:
    """Polygons in image pixels -> boolean ``(height, width)`` mask.

    A pixel is in the mask when at least half of its ``supersample x supersample`` sample points
    (centres of a regular sub-grid; 2 is Moondream's choice, 1 tests the pixel centre only) lie
    inside the outline under ``fill_rule`` (see the module docstring). Sample points are tested
    exactly, by scanlines: every edge's crossings with the sample rows are accumulated into a
    per-row winding count, so a polygon on pixel edges gives exactly those pixels. (OpenCV's
    ``fillPoly`` is not used for this: it also paints every pixel its outline touches, which
    grows a mask by up to a sample all round, about 20% of the area of a small object.)
    Polygons are clipped to the image first, and only their bounding window is computed, in
    bounded row chunks.
    """
    if fill_rule not in FILL_RULES:
        raise ValueError(f"fill_rule must be one of {FILL_RULES}, got {fill_rule!r}")
    if supersample < 1 or supersample > 8:
        raise ValueError("supersample must be 1 to 8")
    mask = np.zeros((height, width), dtype=bool)
    clipped = clip_polygons(polygons, 0.0, 0.0, float(width), float(height))
    box = bounds(clipped)
    if box is None:
        return mask
    c0, r0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    c1, r1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if c1 <= c0 or r1 <= r0:
        return mask
    starts, ends = _edges(clipped)
    keep = starts[:, 1] != ends[:, 1]
    starts, ends = starts[keep], ends[keep]
    s = supersample
    first, last = _crossings(starts, ends, s, r0)
    while s > 1 and int(np.maximum(last - first + 1, 0).sum()) > MAX_CROSSINGS:
        s = 1
        first, last = _crossings(starts, ends, s, r0)
    count = np.maximum(last - first + 1, 0)
    if int(count.sum()) > MAX_CROSSINGS:
        raise PathError("path is too complex to rasterize")
    # Every crossing: its sample row, the column of the first sample centre right of it, and
    # its direction (+1 downwards, -1 upwards; +1 for both under even-odd).
    edge = np.repeat(np.arange(len(starts)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    rows = first[edge] + offset
    y = r0 + (rows + 0.5) / s
    sx, sy, ex, ey = starts[edge, 0], starts[edge, 1], ends[edge, 0], ends[edge, 1]
    x = sx + (y - sy) * (ex - sx) / (ey - sy)
    n_rows, n_cols = (r1 - r0) * s, (c1 - c0) * s
    cols = np.clip(np.ceil((x - c0) * s - 0.5), 0, n_cols).astype(np.int64)
    if fill_rule == "evenodd":
        direction = np.ones(len(rows), dtype=np.int32)
    else:
        direction = np.where(ey > sy, 1, -1).astype(np.int32)
    chunk_rows = max(s, (_CHUNK_SAMPLES // (n_cols + 1)) // s * s)
    order = np.argsort(rows, kind="stable")
    rows, cols, direction = rows[order], cols[order], direction[order]
    for top in range(0, n_rows, chunk_rows):
        bottom = min(n_rows, top + chunk_rows)
        lo, hi = np.searchsorted(rows, [top, bottom])
        winding = np.zeros((bottom - top, n_cols + 1), dtype=np.int32)
        np.add.at(winding, (rows[lo:hi] - top, cols[lo:hi]), direction[lo:hi])
        winding = np.cumsum(winding[:, :n_cols], axis=1)
        inside = (winding % 2 == 1) if fill_rule == "evenodd" else (winding != 0)
        pixel_rows = (bottom - top) // s
        covered = inside.reshape(pixel_rows, s, c1 - c0, s).mean(axis=(1, 3))
        mask[r0 + top // s : r0 + top // s + pixel_rows, c0:c1] = covered >= 0.5
    return mask


# ---------------------------------------------------------------------------------------------
# Mask -> polygons


def _simplify(contour: np.ndarray, budget: int) -> np.ndarray | None:
    """Douglas-Peucker with the smallest tolerance that leaves at most ``budget`` vertices."""
    import cv2

    if budget < 3:
        return None
    curve = contour.reshape(-1, 1, 2).astype(np.float32)
    if len(curve) <= budget:
        return curve.reshape(-1, 2).astype(np.float64)
    lo, hi = 0.0, float(np.ptp(curve.reshape(-1, 2), axis=0).max()) + 1.0
    best = None
    for _ in range(30):  # bisection on the tolerance: bounded, ~1e-9 of the object's size
        mid = (lo + hi) / 2
        approx = cv2.approxPolyDP(curve, mid, True)
        if len(approx) <= budget:
            best, hi = approx, mid
        else:
            lo = mid
        if hi - lo < 1e-3:
            break
    if best is None:
        best = cv2.approxPolyDP(curve, hi, True)
    return best.reshape(-1, 2).astype(np.float64) if len(best) >= 3 else None


def _offset(ring: np.ndarray, distance: float) -> np.ndarray:
    """Move every vertex ``distance`` outwards (mitred), for a ring oriented like :func:`trace`'s.

    The traced vertices are the centres of the boundary half-pixels, a quarter pixel inside the
    mask's edge; pushing them out by a quarter pixel puts them on the pixel edges (integers for
    axis-aligned runs), so integer path coordinates lose nothing there. The normal ``(dy, -dx)``
    of an edge points away from the mask for outlines (positive area) and into the hole for
    holes (negative area), which is outwards from the mask in both cases.
    """
    edges = np.roll(ring, -1, axis=0) - ring
    lengths = np.linalg.norm(edges, axis=1, keepdims=True)
    normals = np.divide(
        np.stack([edges[:, 1], -edges[:, 0]], axis=1),
        lengths,
        out=np.zeros_like(edges),
        where=lengths > 0,
    )
    before, after = np.roll(normals, 1, axis=0), normals
    summed = before + after
    denom = 1.0 + np.sum(before * after, axis=1, keepdims=True)
    # miter = d (n1 + n2) / (1 + n1.n2); capped at 2d where the ring turns back on itself
    miter = np.divide(summed, denom, out=np.zeros_like(summed), where=denom > 0.25)
    return ring + distance * miter


def trace(mask: np.ndarray, max_vertices: int | None = 64, *, min_area: float = 4.0) -> list:
    """Boolean mask -> polygons (outlines and holes) with at most ``max_vertices`` in all.

    Contours are traced with OpenCV on the mask upsampled 2x and moved out by a quarter pixel,
    so outline vertices lie on the pixel edges (not on the centres of the boundary pixels, half a
    pixel inside): the round trip ``rasterize(trace(mask))`` is close to exact for unlimited
    ``max_vertices`` (None), in integer coordinates too. Outer outlines are clockwise on screen
    and holes anticlockwise, so the nonzero and even-odd fills agree. The vertex budget is
    shared between rings in proportion to their perimeter, largest rings first; rings too small
    for three vertices (or under ``min_area`` square pixels) are left out. Douglas-Peucker keeps
    vertices on the outline, so a coarse budget cuts convex bulges (an 8-vertex circle is an
    inscribed octagon, IoU ~0.92).
    """
    import cv2

    binary = np.asarray(mask, dtype=bool)
    if binary.ndim != 2:
        raise ValueError("trace needs a 2-D mask")
    if not binary.any():
        return []
    up = np.repeat(np.repeat(binary.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    rings = []
    for index, contour in enumerate(contours):
        ring = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(ring) < 3:
            continue
        area = abs(signed_area(ring))
        if area < min_area:
            continue
        is_hole = hierarchy[0][index][3] >= 0
        want_positive = not is_hole
        if (signed_area(ring) > 0) != want_positive:
            ring = ring[::-1]
        rings.append((area, _offset(ring, 0.25)))
    rings.sort(key=lambda item: -item[0])
    if max_vertices is None:
        return [ring for _, ring in rings]
    perimeters = [
        float(np.linalg.norm(np.diff(r, axis=0, append=r[:1]), axis=1).sum()) for _, r in rings
    ]
    total = sum(perimeters) or 1.0
    out: list[np.ndarray] = []
    left = max_vertices
    for (_, ring), perimeter in zip(rings, perimeters):
        share = max(3, int(max_vertices * perimeter / total))
        simplified = _simplify(ring, min(share, left))
        if simplified is None:
            continue
        if (signed_area(simplified) > 0) != (signed_area(ring) > 0):
            continue  # simplification turned it inside out: too small to keep
        out.append(simplified)
        left -= len(simplified)
        if left < 3:
            break
    return out


# ---------------------------------------------------------------------------------------------
# SVG documents

_SVG_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6")


def svg_document(
    paths: Sequence[str], width: int, height: int, *, ids: Sequence[int] | None = None
) -> str:
    """An SVG over a ``width`` x ``height`` image with one ``<path>`` per outline.

    The viewBox is the image's pixel grid, so coordinates are image pixels; ``fill-rule`` is
    ``nonzero``, the rule refseg rasterizes with, so the file shows the masks refseg computed.
    Empty outlines are written as empty paths to keep one element per instance (``id``
    ``instance-N``, in result order). With ``ids`` (a video's track IDs, one per path) each
    element is ``track-ID`` with a ``data-track`` attribute and the colour follows the ID, so
    an object keeps its colour from frame to frame.
    """
    from xml.sax.saxutils import quoteattr

    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(width)}" height="{int(height)}" '
        f'viewBox="0 0 {int(width)} {int(height)}">',
    ]
    for index, data in enumerate(paths):
        key = index if ids is None else int(ids[index])
        colour = _SVG_COLOURS[key % len(_SVG_COLOURS)]
        name = f'id="instance-{index}"' if ids is None else f'id="track-{key}" data-track="{key}"'
        lines.append(
            f'  <path {name} d={quoteattr(data or "")} fill="{colour}" '
            f'fill-opacity="0.4" fill-rule="nonzero" stroke="{colour}" stroke-width="2"/>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"
