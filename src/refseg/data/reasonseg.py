"""Reader for ReasonSeg (LISA), the reasoning-segmentation benchmark.

Published layout::

    PATH/train/<name>.jpg + <name>.json
    PATH/val/...
    PATH/test/...

Each JSON is labelme-style: ``shapes`` is a list of ``{"label", "points": [[x, y], ...]}``
polygons, ``text`` the list of queries (short phrases or whole sentences) and ``is_sentence``
says which. A label containing ``ignore`` marks a region excluded from scoring; ``flag`` labels
are deprecated leftovers and skipped.

The ground truth is rasterised exactly as LISA's own ``get_mask_from_json`` does, so scores are
comparable with published numbers: polygons are filled largest first (a smaller polygon drawn
later wins where they overlap) with OpenCV, outline included, at integer coordinates; target
pixels form the mask and ignore pixels go to ``meta.ignore`` (an RLE). The targets of an image
are one union mask. LISA's evaluation asks only the *first* query of each image, so by default
one sample is made per image from ``text[0]`` (published numbers are comparable);
``all_queries=True`` makes one per query (e.g. for training). Ids are
``reasonseg:<split>:<name>:<i>`` with ``i`` the query's index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from refseg import masks
from refseg.data.base import DatasetSpec, Sample, limit_samples, need_list, need_str
from refseg.errors import InputError

SPLITS = ("train", "val", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
#: Largest annotation JSON read (bytes): labelme files are a few KB (a few MB with an embedded
#: image).
MAX_JSON_BYTES = 64 << 20
#: Shapes per image: LISA's have a handful; each costs a pass over its bounding box.
MAX_SHAPES = 1000


def displayed_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed (EXIF rotation applied), header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # PIL raises many types for unreadable files
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _load(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(f"{path}: {size} bytes is over the {MAX_JSON_BYTES}-byte limit")
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # some files are Windows-1252 (as LISA)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: bad JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InputError(f"{path}: bad JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"{path}: bad JSON (nested too deeply)") from None
    try:
        return parse_annotation(data)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def parse_annotation(data: Any) -> dict[str, Any]:
    """Check one labelme JSON's fields: ``text`` (a string or strings), ``shapes`` (at most
    :data:`MAX_SHAPES` objects with ``points`` and a string ``label``), ``is_sentence`` (bool).

    Returns the data with ``text`` as a list; raises ``ValueError`` naming the problem.
    """
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    for key in ("shapes", "text"):
        if key not in data:
            raise ValueError(f"missing {key!r}")
    if not isinstance(data["shapes"], list):
        raise ValueError("'shapes' must be a list")
    if len(data["shapes"]) > MAX_SHAPES:
        raise ValueError(f"{len(data['shapes'])} shapes; the limit is {MAX_SHAPES}")
    for number, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or "points" not in shape:
            raise ValueError(f"shape #{number} lacks 'points'")
        need_list(shape["points"], f"shape #{number} points")
        if shape.get("label") is not None:
            need_str(shape["label"], f"shape #{number} label")
    texts = data["text"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("'text' must be a list of strings")
    if not isinstance(data.get("is_sentence", False), bool):
        raise ValueError("'is_sentence' must be true or false")
    return {**data, "text": texts}


def rasterize(
    shapes: list[Any], height: int, width: int, source: Path
) -> tuple[np.ndarray, np.ndarray]:
    """``(target, ignore)`` boolean masks from labelme shapes, drawn the way LISA draws them.

    Points are checked like any polygon (:func:`refseg.masks.check_polygons`: finite, bounded
    in number, clipped when far outside the image, which keeps OpenCV's fixed-point arithmetic
    in range). A shape's area is counted on a canvas the size of its bounding box, not of the
    image, so many small shapes on a large image stay cheap.
    """
    height, width = masks.check_size(height, width, "image")
    polygons: list[tuple[int, np.ndarray, bool]] = []
    vertices = 0
    for number, shape in enumerate(shapes):
        if not isinstance(shape, dict) or "points" not in shape:
            raise InputError(f"{source}: shape #{number} lacks 'points'")
        label = str(shape.get("label", "target")).lower()
        if label == "flag":
            continue
        points = shape["points"]
        if not isinstance(points, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in points
        ):
            raise InputError(f"{source}: shape #{number}: points must be [x, y] pairs")
        if len(points) < 3:
            raise InputError(f"{source}: shape #{number}: need at least 3 [x, y] points")
        vertices += len(points)
        if vertices > masks.MAX_POLYGON_VERTICES:
            raise InputError(f"{source}: more than {masks.MAX_POLYGON_VERTICES} points in all")
        try:
            flat = [v for p in points for v in p]
            checked = masks.check_polygons([flat], height, width)
        except InputError as exc:
            raise InputError(f"{source}: shape #{number}: {exc}") from None
        if not checked:
            continue  # entirely outside the image
        polygon = checked[0].astype(np.int32)
        x0, y0 = np.clip(polygon.min(axis=0), 0, [width, height])
        x1, y1 = np.clip(polygon.max(axis=0) + 2, 0, [width, height])
        scratch = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.uint8)
        shifted = polygon - np.asarray([x0, y0], dtype=np.int32)
        if scratch.size:
            cv2.polylines(scratch, [shifted], True, 1, 1)
            cv2.fillPoly(scratch, [shifted], 1)
        polygons.append((int(scratch.sum()), polygon, "ignore" in label))
    # Largest first, with LISA's own tie order (numpy argsort, reversed).
    order = np.argsort(np.asarray([p[0] for p in polygons], dtype=np.int64))[::-1]
    canvas = np.zeros((height, width), dtype=np.uint8)
    for i in order:
        _, polygon, ignore = polygons[i]
        value = 255 if ignore else 1
        cv2.polylines(canvas, [polygon], True, value, 1)
        cv2.fillPoly(canvas, [polygon], value)
    return canvas == 1, canvas == 255


def _find_image(json_path: Path) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        candidate = json_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise InputError(f"{json_path}: no image beside it ({json_path.stem}.jpg)")


def read_reasonseg(
    spec: DatasetSpec,
    *,
    all_queries: bool = False,
    limit: int | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """ReasonSeg samples of one split (``reasonseg:PATH:val``), first query per image by default."""
    del check_images  # every sample's image is opened for its size anyway
    root = spec.path
    if not root.is_dir():
        raise InputError(f"reasonseg:{root}: no such folder")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if spec.split is None:
        raise InputError(f"reasonseg:{root}: name a split ({', '.join(present) or 'none found'})")
    if spec.split not in SPLITS:
        raise InputError(f"reasonseg: unknown split {spec.split!r}; expected one of {SPLITS}")
    folder = root / spec.split
    if not folder.is_dir():
        raise InputError(f"{folder}: no such split folder (found: {', '.join(present) or 'none'})")
    samples: list[Sample] = []
    for json_path in sorted(folder.glob("*.json")):
        if limit is not None and len(samples) >= limit:
            break
        data = _load(json_path)
        texts = data["text"]
        image_path = _find_image(json_path)
        width, height = displayed_size(image_path)
        try:
            masks.check_size(height, width, "image")
        except InputError as exc:
            raise InputError(f"{image_path}: {exc}") from None
        target, ignore = rasterize(data["shapes"], height, width, json_path)
        rles = [masks.encode(target)] if target.any() else []
        meta: dict[str, Any] = {
            "dataset": "reasonseg",
            "split": spec.split,
            "is_sentence": data.get("is_sentence", False),
            "name": json_path.stem,
        }
        if ignore.any():
            meta["ignore"] = masks.encode(ignore)
        queries = [(number, text) for number, text in enumerate(texts) if text.strip()]
        for number, text in queries if all_queries else queries[:1]:
            samples.append(
                Sample(
                    id=f"reasonseg:{spec.split}:{json_path.stem}:{number}",
                    image=image_path,
                    phrase=text.strip(),
                    masks=list(rles),
                    width=width,
                    height=height,
                    meta=dict(meta, query_index=number),
                )
            )
    if not samples and not any(folder.glob("*.json")):
        raise InputError(f"{folder}: no *.json annotation files")
    return limit_samples(samples, limit)
