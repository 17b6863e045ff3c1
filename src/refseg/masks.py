"""Mask representations and conversions.

refseg holds masks as COCO run-length encodings (the ``{"size": [H, W], "counts": str}`` dicts
pycocotools reads and writes): compact enough to keep thousands of predictions in memory and to
store in JSON, and fast to score (IoU, area) without decoding. Dense boolean arrays are made only
when a caller asks for them.

Mask geometry is here too, once for evaluation, training rewards and refiners: the boundary
region of Boundary IoU (:func:`boundary`, :func:`boundary_width`) and IoU / boundary IoU of dense
masks computed inside the masks' own windows (:func:`pair_ious`, :func:`boundary_iou`).

pycocotools trusts its input completely: run lengths that do not add up to ``H x W`` make
``merge`` loop for ever or write past its buffers, a zero-length run in the middle corrupts the
heap, and a polygon vertex at 1e9 or NaN overflows the rasteriser's integer arithmetic
(segmentation fault, or a 24 GB allocation). RLEs and polygons come from dataset files and
prediction files, so every one is checked here before pycocotools sees it
(:func:`validate` / :func:`check_polygons`); a bad one is one :class:`InputError` line. The
checks are linear in the size of the encoding (a string is decoded with numpy, not a loop).
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from refseg.errors import InputError
from refseg.limits import max_pixels

RLE = dict[str, Any]

#: pycocotools' ``area``/``iou`` overflow internal counters on more than 255 RLEs per call with
#: numpy 2; every batched call goes through chunks of this size.
_CHUNK = 255


def encode(mask: np.ndarray) -> RLE:
    """Encode a 2-D boolean (or 0/1) array as a COCO RLE with a ``str`` ``counts``."""
    if mask.ndim != 2:
        raise InputError(f"mask must be 2-D, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


#: The most characters of one value pycocotools' string decoder reads right: it shifts a C
#: ``int`` by 5 bits per character, so a 7th character overflows. 6 characters hold +-2**29.
_MAX_CHARS_PER_COUNT = 6
#: Hard ceiling on ``H x W`` whatever ``REFSEG_MAX_PIXELS`` says: a larger mask's run lengths
#: could need a 7th character (see above), and pycocotools' sizes are 32-bit.
_HARD_MAX_PIXELS = 2**29
#: Vertices in the polygons of one mask. A COCO or LVIS outline has tens to a few thousand.
MAX_POLYGON_VERTICES = 100_000
#: Summed edge lengths (Chebyshev, in pixels) of the polygons of one mask after clipping.
#: pycocotools allocates ~100 bytes per pixel of outline (it walks every edge at 5x scale);
#: this keeps one mask under ~200 MB while allowing outlines far longer than any real object's.
MAX_POLYGON_PERIMETER = 2_000_000
#: Vertices may lie this far outside the image before a polygon is clipped (the clip changes
#: nothing inside the image, but sane data never pays for it).
_CLIP_MARGIN = 64.0


def pixel_limit() -> int:
    """The most pixels a mask may have: the image pixel limit (a mask bigger than any image
    refseg would load is an error, not work to do)."""
    return min(max_pixels(), _HARD_MAX_PIXELS)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_size(height: Any, width: Any, what: str = "mask") -> tuple[int, int]:
    """``(height, width)`` as ints, or :class:`InputError`: positive and within the pixel limit."""
    if not (_is_int(height) and _is_int(width)):
        raise InputError(f"{what} size must be two integers, got {[height, width]!r:.80}")
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise InputError(f"{what} size {[height, width]} must be positive")
    limit = pixel_limit()
    if height * width > limit:
        hint = "the most pycocotools holds" if limit == _HARD_MAX_PIXELS else "REFSEG_MAX_PIXELS"
        raise InputError(
            f"{what} size {height}x{width} is over the limit of {limit} pixels ({hint})"
        )
    return height, width


def _string_runs(counts: bytes) -> np.ndarray:
    """Run lengths of pycocotools' compressed ``counts`` string, decoded with numpy.

    The format: each value is 5-bit chunks (low first) in characters ``chr(48 + chunk)``, bit
    0x20 meaning "more chunks follow" and bit 0x10 of the last chunk the sign; values after the
    second are deltas from the value two before. Anything outside that grammar is refused, since
    pycocotools' own decoder reads past the end of a string that stops mid-value.
    """
    if not counts:
        return np.zeros(0, dtype=np.int64)
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.min() < 0 or chars.max() > 63:
        raise InputError("RLE counts string holds characters outside the COCO alphabet")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise InputError("RLE counts string ends in the middle of a value")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_CHARS_PER_COUNT:
        raise InputError("RLE counts string holds a value too large for any mask")
    shift = 5 * (np.arange(len(chars)) - np.repeat(starts, lengths))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def _canonical_runs(runs: np.ndarray) -> np.ndarray:
    """The same mask with no zero-length run after the first (pycocotools' ``merge`` corrupts
    its heap on those): zero runs are dropped and the neighbours they separated joined."""
    keep = runs > 0
    keep[0] = True
    kept, values = runs[keep], (np.flatnonzero(keep) & 1)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return np.add.reduceat(kept, starts)


def _coco(rle: Any) -> dict[str, Any]:
    """The validated form pycocotools wants: canonical compressed ``bytes`` counts.

    Every RLE from outside refseg passes here before any pycocotools call; see the module
    docstring for what an unchecked one does.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError("an RLE must be an object with 'size' and 'counts'")
    size = rle["size"]
    if not isinstance(size, (list, tuple, np.ndarray)) or len(size) != 2:
        raise InputError(f"RLE size must be [height, width], got {size!r:.80}")
    height, width = check_size(size[0], size[1], "RLE")
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InputError("RLE counts string holds non-ASCII characters") from None
    if isinstance(counts, bytes):
        runs = _string_runs(counts)
    elif isinstance(counts, (list, tuple)):
        if not all(_is_int(c) for c in counts):
            raise InputError("RLE counts must be integers")
        try:
            runs = np.asarray(counts, dtype=np.int64)
        except OverflowError:
            raise InputError("RLE counts hold a value too large for any mask") from None
    else:
        raise InputError(
            f"RLE counts must be a string or a list of integers, not {type(counts).__name__}"
        )
    total = height * width
    if runs.size == 0:
        raise InputError(f"RLE counts are empty (a {height}x{width} mask needs {total} pixels)")
    if runs.min() < 0:
        raise InputError("RLE counts must not be negative")
    if runs.max() > total or int(runs.sum()) != total:
        raise InputError(
            f"RLE counts add up to {int(runs.clip(0, total + 1).sum())} pixels, "
            f"but size {height}x{width} has {total}"
        )
    if isinstance(counts, bytes) and not (runs[1:] == 0).any():
        return {"size": [height, width], "counts": counts}
    canonical = _canonical_runs(runs).tolist()
    return mask_utils.frPyObjects({"size": [height, width], "counts": canonical}, height, width)


def validate(rle: Any) -> RLE:
    """A COCO RLE from outside (compressed or uncompressed) checked and made canonical.

    Raises :class:`InputError` (one line) unless the size is two positive integers within the
    pixel limit and the run lengths are non-negative integers adding up to ``H x W``.
    """
    coco = _coco(rle)
    return {"size": list(coco["size"]), "counts": coco["counts"].decode()}


def normalize(rle: RLE) -> RLE:
    """Any COCO RLE (compressed or uncompressed counts) as the canonical ``str``-counts form
    (validated: see :func:`validate`)."""
    return validate(rle)


def decode(rle: RLE) -> np.ndarray:
    """Decode a COCO RLE to a boolean ``(H, W)`` array."""
    return mask_utils.decode(_coco(rle)).astype(bool)


def empty(height: int, width: int) -> RLE:
    """The RLE of an all-false mask."""
    return encode(np.zeros((height, width), dtype=bool))


def area(rles: Sequence[RLE]) -> np.ndarray:
    """Foreground pixel counts of many RLEs (chunked: see :data:`_CHUNK`)."""
    out = np.zeros(len(rles), dtype=np.int64)
    for start in range(0, len(rles), _CHUNK):
        chunk = [_coco(r) for r in rles[start : start + _CHUNK]]
        if chunk:
            out[start : start + len(chunk)] = np.asarray(mask_utils.area(chunk), dtype=np.int64)
    return out


def _same_size(coco: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pycocotools merges masks of different sizes into a 0x0 "mask" without a word."""
    sizes = {tuple(c["size"]) for c in coco}
    if len(sizes) > 1:
        raise InputError(f"cannot combine masks of different sizes: {sorted(sizes)}")
    return coco


def union(rles: Sequence[RLE], height: int, width: int) -> RLE:
    """The union of several masks; an empty list gives an empty mask of the given size."""
    if not rles:
        return empty(height, width)
    coco = _same_size([_coco(r) for r in rles])
    if coco[0]["size"] != [height, width]:
        raise InputError(f"mask size {coco[0]['size']} differs from {[height, width]}")
    merged = mask_utils.merge(coco, intersect=False)
    return {"size": list(merged["size"]), "counts": merged["counts"].decode()}


def intersection_area(a: RLE, b: RLE) -> int:
    """Pixels in both ``a`` and ``b``."""
    merged = mask_utils.merge(_same_size([_coco(a), _coco(b)]), intersect=True)
    return int(mask_utils.area(merged))


def iou(a: RLE, b: RLE) -> float:
    """Intersection over union of two masks; two empty masks give 1.0 by convention."""
    inter = intersection_area(a, b)
    total = int(area([a, b]).sum()) - inter
    return 1.0 if total == 0 else inter / total


def to_bbox(rle: RLE) -> list[float] | None:
    """Tight ``[x1, y1, x2, y2]`` box (pixel edges) of a mask, or ``None`` if it is empty."""
    coco = _coco(rle)
    if int(mask_utils.area(coco)) == 0:
        return None
    x, y, w, h = (float(v) for v in mask_utils.toBbox(coco))
    return [x, y, x + w, y + h]


def _clip_half_plane(points: np.ndarray, axis: int, bound: float, keep_below: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: the part of a closed polygon on one side of a line."""
    following = np.roll(points, -1, axis=0)
    a, b = points[:, axis], following[:, axis]
    inside_a = a <= bound if keep_below else a >= bound
    inside_b = b <= bound if keep_below else b >= bound
    crossing = inside_a != inside_b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crossing, (bound - a) / np.where(crossing, b - a, 1.0), 0.0)
    meeting = points + t[:, None] * (following - points)
    meeting[:, axis] = bound
    # Per edge i -> i+1: vertex i if inside, then the crossing point if the edge crosses.
    candidates = np.stack([points, meeting], axis=1).reshape(-1, 2)
    return candidates[np.stack([inside_a, crossing], axis=1).reshape(-1)]


def clip_polygon(points: np.ndarray, x_max: float, y_max: float, margin: float) -> np.ndarray:
    """A polygon (``(N, 2)`` x, y) clipped to ``[-margin, max + margin]`` on both axes.

    The fill inside the box is unchanged; what is cut away lies outside the image. Rasterisers
    do integer arithmetic on scaled coordinates, so this keeps them in range.
    """
    for axis, low, high in ((0, -margin, x_max + margin), (1, -margin, y_max + margin)):
        for bound, keep_below in ((high, True), (low, False)):
            if len(points) == 0:
                return points
            points = _clip_half_plane(points, axis, bound, keep_below)
    return points


def check_polygons(
    polygons: Any, height: int, width: int, *, min_vertices: int = 3
) -> list[np.ndarray]:
    """Outside polygons (flat ``[x1, y1, x2, y2, ...]`` lists) as ``(N, 2)`` float arrays, ready
    to rasterise, or :class:`InputError`.

    Coordinates must be finite numbers, at most :data:`MAX_POLYGON_VERTICES` vertices in all;
    polygons reaching more than a margin outside the image are clipped to it, and the clipped
    outlines may total at most :data:`MAX_POLYGON_PERIMETER` pixels. Polygons with fewer than
    ``min_vertices`` vertices are dropped (COCO has a few two-vertex "polygons").
    """
    height, width = check_size(height, width, "image")
    if not isinstance(polygons, (list, tuple)):
        raise InputError("polygons must be a list of [x1, y1, x2, y2, ...] lists")
    total = 0
    out: list[np.ndarray] = []
    for number, polygon in enumerate(polygons):
        if not isinstance(polygon, (list, tuple, np.ndarray)):
            raise InputError(f"polygon {number} is not a list of coordinates")
        total += len(polygon) // 2
        if total > MAX_POLYGON_VERTICES:
            raise InputError(f"polygons have more than {MAX_POLYGON_VERTICES} vertices in all")
        if len(polygon) % 2:
            raise InputError(f"polygon {number} has an odd number of coordinates")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in polygon):
            raise InputError(f"polygon {number}: coordinates must be numbers")
        try:
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        except (OverflowError, ValueError):
            raise InputError(f"polygon {number}: coordinates must be numbers") from None
        if not np.isfinite(points).all():
            raise InputError(f"polygon {number} has a coordinate that is not a finite number")
        if len(points) < min_vertices:
            continue
        if (
            points.min() < -_CLIP_MARGIN
            or points[:, 0].max() > width + _CLIP_MARGIN
            or points[:, 1].max() > height + _CLIP_MARGIN
        ):
            points = clip_polygon(points, width, height, _CLIP_MARGIN)
            if len(points) < min_vertices:
                continue
        out.append(points)
    perimeter = sum(float(np.abs(np.roll(p, -1, axis=0) - p).max(axis=1).sum()) for p in out)
    if perimeter > MAX_POLYGON_PERIMETER:
        raise InputError(
            f"polygon outlines total {perimeter:.0f} pixels inside the image; "
            f"the limit is {MAX_POLYGON_PERIMETER}"
        )
    return out


def from_polygons(polygons: Iterable[Sequence[float]], height: int, width: int) -> RLE:
    """Rasterise COCO-style polygons (flat ``[x1, y1, x2, y2, ...]`` lists) to one RLE.

    The polygons are checked first (:func:`check_polygons`); polygons of fewer than 3 vertices
    are dropped.
    """
    if isinstance(polygons, Iterator):  # a generator from a caller; files give lists
        polygons = list(polygons)
    checked = check_polygons(polygons, height, width)
    if not checked:
        return empty(height, width)
    rles = mask_utils.frPyObjects([p.reshape(-1).tolist() for p in checked], height, width)
    merged = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    return {"size": [height, width], "counts": merged["counts"].decode()}


def to_polygons(mask: np.ndarray | RLE, *, tolerance: float = 0.0) -> list[list[float]]:
    """Outer contours of a mask as flat COCO polygons (holes are not represented).

    ``tolerance`` > 0 simplifies each contour with Douglas-Peucker (in pixels).
    """
    dense = decode(mask) if isinstance(mask, dict) else np.asarray(mask, dtype=bool)
    contours, _ = cv2.findContours(
        dense.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance, True)
        if len(contour) >= 3:
            polygons.append(contour.reshape(-1).astype(float).tolist())
    return polygons


def to_png(mask: np.ndarray | RLE) -> bytes:
    """Encode a mask as a single-channel 8-bit PNG (0 background, 255 foreground)."""
    dense = decode(mask) if isinstance(mask, dict) else np.asarray(mask, dtype=bool)
    buffer = io.BytesIO()
    Image.fromarray(dense.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def label_png(masks: Sequence[np.ndarray | RLE], height: int, width: int) -> bytes:
    """One PNG with instance ``i`` painted as value ``i + 1`` (later instances on top)."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for index, mask in enumerate(masks[:255]):
        dense = decode(mask) if isinstance(mask, dict) else np.asarray(mask, dtype=bool)
        labels[dense] = index + 1
    buffer = io.BytesIO()
    Image.fromarray(labels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """Read a mask PNG: any non-zero pixel is foreground."""
    image = Image.open(io.BytesIO(data))
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].max(axis=2) if array.shape[2] >= 3 else array[..., 0]
    return array > 0


# --------------------------------------------------------------------------------------------
# Geometry of dense masks: boundaries, windows, IoU and boundary IoU

#: Boundary width as a fraction of the image diagonal (Cheng et al.'s default).
DEFAULT_BOUNDARY_RATIO = 0.02


def boundary_width(height: int, width: int, ratio: float = DEFAULT_BOUNDARY_RATIO) -> int:
    """The boundary width ``d`` in pixels for an image of this size (at least 1).

    ``round(ratio x diagonal)`` with Python's ``round``, as the Boundary IoU reference code.

    >>> boundary_width(480, 640)
    16
    """
    if not (ratio > 0 and math.isfinite(ratio)):
        raise InputError(f"the boundary ratio must be a positive number, got {ratio}")
    return max(1, round(float(ratio) * math.hypot(height, width)))


def boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """The boundary region of a boolean mask: its pixels within ``d`` of a contour.

    ``mask`` minus its erosion by a ``(2d+1)``-square, pixels outside the array being background
    (so the image border is a contour too).

    >>> int(boundary(np.ones((5, 5), bool), 1).sum())  # all but the 3x3 interior
    16
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask_u8.size == 0:
        return mask_u8.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * d + 1, 2 * d + 1))
    eroded = cv2.erode(mask_u8, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (mask_u8 > eroded).astype(bool)


def mask_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(row0, row1, col0, col1)`` of the mask's non-zero pixels (end exclusive), or ``None``
    for an empty mask: where all of a mask's IoU work happens."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def pair_ious(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> np.ndarray:
    """Mask IoU of every ``(pred, gt)`` pair of dense masks (0 where either is empty), computed
    inside each pair's joint window so that its cost follows the objects, not the image.

    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> pair_ious([a], [a, ~a]).tolist()
    [[1.0, 0.0]]
    """
    out = np.zeros((len(preds), len(gts)))
    p_boxes = [mask_window(m) for m in preds]
    g_boxes = [mask_window(m) for m in gts]
    for i, (pm, pb) in enumerate(zip(preds, p_boxes)):
        for j, (gm, gb) in enumerate(zip(gts, g_boxes)):
            if pb is None or gb is None:
                continue
            r0, r1 = min(pb[0], gb[0]), max(pb[1], gb[1])
            c0, c1 = min(pb[2], gb[2]), max(pb[3], gb[3])
            a, b = pm[r0:r1, c0:c1], gm[r0:r1, c0:c1]
            union = np.count_nonzero(a | b)
            out[i, j] = np.count_nonzero(a & b) / union if union else 0.0
    return out


def boundary_iou(a: np.ndarray, b: np.ndarray, d: int) -> float:
    """Boundary IoU of two dense masks (1 when both are empty, 0 when one is).

    Computed inside the pair's joint window grown by ``d`` (the boundary band of a mask never
    leaves it), so its cost follows the objects, not the image.
    """
    wa, wb = mask_window(a), mask_window(b)
    if wa is None or wb is None:
        return 1.0 if wa is None and wb is None else 0.0
    h, w = a.shape
    r0, r1 = max(0, min(wa[0], wb[0]) - d), min(h, max(wa[1], wb[1]) + d)
    c0, c1 = max(0, min(wa[2], wb[2]) - d), min(w, max(wa[3], wb[3]) + d)
    ba, bb = boundary(a[r0:r1, c0:c1], d), boundary(b[r0:r1, c0:c1], d)
    union = np.count_nonzero(ba | bb)
    return np.count_nonzero(ba & bb) / union if union else 0.0


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A boolean mask at ``width x height`` by area averaging, thresholded at half."""
    if mask.shape == (height, width):
        return mask
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return small >= 0.5
