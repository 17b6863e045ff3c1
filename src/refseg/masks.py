"""Mask representations and conversions.

refseg holds masks as COCO run-length encodings (the ``{"size": [H, W], "counts": str}`` dicts
pycocotools reads and writes): compact enough to keep thousands of predictions in memory and to
store in JSON, and fast to score (IoU, area) without decoding. Dense boolean arrays are made only
when a caller asks for them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from refseg.errors import InputError

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


def _coco(rle: RLE) -> dict[str, Any]:
    """The form pycocotools wants: compressed ``bytes`` counts (uncompressed lists converted)."""
    counts = rle["counts"]
    size = [int(rle["size"][0]), int(rle["size"][1])]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
    if isinstance(counts, str):
        counts = counts.encode()
    return {"size": size, "counts": counts}


def normalize(rle: RLE) -> RLE:
    """Any COCO RLE (compressed or uncompressed counts) as the canonical ``str``-counts form."""
    coco = _coco(rle)
    return {"size": list(coco["size"]), "counts": coco["counts"].decode()}


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


def union(rles: Sequence[RLE], height: int, width: int) -> RLE:
    """The union of several masks; an empty list gives an empty mask of the given size."""
    if not rles:
        return empty(height, width)
    merged = mask_utils.merge([_coco(r) for r in rles], intersect=False)
    return {"size": list(merged["size"]), "counts": merged["counts"].decode()}


def intersection_area(a: RLE, b: RLE) -> int:
    """Pixels in both ``a`` and ``b``."""
    merged = mask_utils.merge([_coco(a), _coco(b)], intersect=True)
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


def from_polygons(polygons: Iterable[Sequence[float]], height: int, width: int) -> RLE:
    """Rasterise COCO-style polygons (flat ``[x1, y1, x2, y2, ...]`` lists) to one RLE."""
    polys = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polys:
        return empty(height, width)
    rles = mask_utils.frPyObjects(polys, height, width)
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
