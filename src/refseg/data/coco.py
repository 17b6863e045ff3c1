"""COCO ``instances.json`` helpers shared by the COCO-based readers, and COCO -> samples.

RefCOCO, RefCOCO+, RefCOCOg and gRefCOCO all ship their masks as a COCO-style
``instances.json`` (``images``, ``annotations``, ``categories``) beside the expression files, and
their images are COCO ``train2014``. This module validates that file once (one-line errors that
name the file), converts annotation segmentations (polygons, uncompressed or compressed RLE) to
the project's canonical RLE, and finds the image folder.

:func:`coco_instances_to_samples` turns a plain COCO instance file into samples whose phrase is a
category name (the ``coco:PATH`` kind, e.g. the bundled ``data/coco-sample``): category names are
the simplest referring expressions with real masks, which makes them a useful smoke benchmark.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.data.base import (
    DatasetSpec,
    Sample,
    limit_samples,
    need_box,
    need_dict,
    need_int,
    need_str,
    record_error,
)
from refseg.errors import InputError

#: Environment variable naming the COCO ``train2014`` image folder for the REFER-style readers.
COCO_IMAGES_ENV = "REFSEG_COCO_IMAGES"
#: Largest JSON annotation file read whole (bytes). COCO's instances_train2017.json is 450 MB
#: and LVIS's 1.1 GB; parsing takes ~8x the file size in memory, so past this the process would
#: be killed rather than finish.
MAX_JSON_BYTES = 4 << 30


def load_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; missing or malformed files become one-line :class:`InputError`."""
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InputError(f"{path}: {size} bytes is over the {MAX_JSON_BYTES}-byte limit")
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: bad JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InputError(f"{path}: bad JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"{path}: bad JSON (nested too deeply)") from None
    except MemoryError:
        raise InputError(f"{path}: too large to load into memory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def xywh_to_xyxy(box: Any) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` (``ValueError`` unless 4 finite numbers)."""
    return need_box(box, "bbox", xywh=True)


#: Largest coordinate magnitude (pixels) handed to pycocotools unclipped: its polygon
#: rasteriser scales by 5 into C ``int`` and subtracts neighbours, so 10^8 keeps every value
#: far inside 32 bits. Real annotations stay within a few pixels of the image.
SAFE_POLYGON_COORDINATE = 1e8


def polygons_to_rle(polygons: list[list[Any]], height: int, width: int) -> masks.RLE:
    """COCO polygons drawn exactly as the REFER API's ``getMask`` (and COCO's ``annToMask``)
    draws them: pycocotools on the polygons *as given*, parts united.

    Clipping a polygon to the image first is not neutral: pycocotools walks each edge from its
    rounded end points, so an edge cut at the border is walked from a different point and 2-3
    edge pixels inside the image change (69 of 200 random polygons reaching 400 px outside).
    So the polygons go unclipped whenever that is safe for pycocotools' C code (coordinates
    within :data:`SAFE_POLYGON_COORDINATE`, outlines within
    :data:`refseg.masks.MAX_POLYGON_PERIMETER`, which bounds its memory); only beyond that are
    they clipped (:func:`refseg.masks.from_polygons`), which REFER could not draw at all.

    A part of fewer than 3 vertices covers no pixel and is dropped. As a *first* part REFER
    cannot read it (pycocotools takes a first part of 4 numbers for a box and raises); refseg
    draws the other parts, which is what pycocotools draws for the same part in any later
    position.
    """
    parts = masks.check_polygons(polygons, height, width)  # types, finiteness, vertex count
    if not parts:
        return masks.empty(height, width)
    raw = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    raw = [p for p in raw if len(p) >= 3]
    perimeter = sum(float(np.abs(np.roll(p, -1, axis=0) - p).max(axis=1).sum()) for p in raw)
    largest = max(float(np.abs(p).max()) for p in raw)
    if largest > SAFE_POLYGON_COORDINATE or perimeter > masks.MAX_POLYGON_PERIMETER:
        return masks.from_polygons(polygons, height, width)
    rles = mask_utils.frPyObjects([p.reshape(-1).tolist() for p in raw], height, width)
    merged = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    return {"size": [height, width], "counts": merged["counts"].decode()}


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> masks.RLE:
    """A COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) as canonical RLE.

    Polygons are drawn as REFER draws them (:func:`polygons_to_rle`). Raises
    :class:`ValueError` (the caller adds the file name) when the value is none of those or an
    RLE's size disagrees with the image.
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) % 2 == 0]
        if len(polygons) != len(segmentation):
            raise ValueError("polygon segmentation must be lists of x,y coordinates")
        return polygons_to_rle(polygons, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        rle = masks.validate(segmentation)
        if rle["size"] != [height, width]:
            raise ValueError(
                f"RLE size {rle['size']} differs from the image size {[height, width]}"
            )
        return rle
    raise ValueError("segmentation is neither polygons nor an RLE")


@dataclass
class CocoIndex:
    """The parts of an ``instances.json`` the readers need, indexed by id."""

    path: Path
    images: dict[int, dict[str, Any]]
    annotations: dict[int, dict[str, Any]]
    categories: dict[int, dict[str, Any]]
    #: Every annotation in file order. Ids are not always unique (panoptic conversions reuse
    #: segment ids across images), so whole-file walks use this list, not ``annotations``.
    annotation_list: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> CocoIndex:
        """Read and check ``instances.json``: every field the readers use, in every record
        (``FILE: images record N: problem``); segmentations are checked when first used."""
        data = load_json(path, "COCO instances file")
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object with images/annotations/categories")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise InputError(f"{path}: missing the {key!r} list of a COCO instances file")
        parsed: dict[str, list[dict[str, Any]]] = {}
        for key, parse in (
            ("images", parse_image),
            ("annotations", parse_annotation),
            ("categories", parse_category),
        ):
            out = parsed[key] = []
            for number, record in enumerate(data[key]):
                try:
                    out.append(parse(record))
                except ValueError as exc:
                    raise record_error(path, f"{key} record {number}", exc) from None
        images = {i["id"]: i for i in parsed["images"]}
        annotations = {a["id"]: a for a in parsed["annotations"]}
        categories = {c["id"]: c for c in parsed["categories"]}
        return cls(path, images, annotations, categories, parsed["annotations"])

    def image(self, image_id: int) -> dict[str, Any]:
        entry = self.images.get(image_id) if isinstance(image_id, int) else None
        if entry is None:
            raise InputError(f"{self.path}: no image with id {image_id!r:.40}")
        return entry

    def annotation(self, ann_id: int) -> dict[str, Any]:
        entry = self.annotations.get(ann_id) if isinstance(ann_id, int) else None
        if entry is None:
            raise InputError(f"{self.path}: no annotation with id {ann_id!r:.40}")
        return entry

    def category_name(self, category_id: int | None) -> str | None:
        if not isinstance(category_id, int):
            return None
        entry = self.categories.get(category_id)
        return None if entry is None else str(entry.get("name"))

    def mask(self, ann: dict[str, Any], cache: dict[int, masks.RLE] | None = None) -> masks.RLE:
        """The annotation's mask as canonical RLE (memoised in ``cache`` by annotation id)."""
        ann_id = int(ann["id"])
        if cache is not None and ann_id in cache:
            return cache[ann_id]
        image = self.image(ann["image_id"])
        try:
            rle = segmentation_to_rle(ann.get("segmentation"), image["height"], image["width"])
        except (ValueError, TypeError) as exc:
            raise InputError(f"{self.path}: annotation {ann_id}: {exc}") from None
        if cache is not None:
            cache[ann_id] = rle
        return rle


def image_file_name(image: dict[str, Any], prefix: str = "COCO_train2014_") -> str:
    """The image's file name (``file_name`` when given, else ``PREFIX%012d.jpg``)."""
    name = image.get("file_name")
    return str(name) if name else f"{prefix}{int(image['id']):012d}.jpg"


def _relative_name(value: Any, what: str) -> str:
    """A file name that stays inside the image folder: relative, no ``..``, no NUL."""
    name = need_str(value, what)
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or "\x00" in name:
        raise ValueError(f"{what} {name[:60]!r} must be a path inside the image folder")
    return name


def parse_image(record: Any) -> dict[str, Any]:
    """One ``images`` entry: integer ``id``, a size within the pixel limit, ``file_name``."""
    record = need_dict(record, "an image")
    if "id" not in record or "width" not in record or "height" not in record:
        raise ValueError("an image needs id, width and height")
    height = need_int(record["height"], "height")
    width = need_int(record["width"], "width")
    height, width = masks.check_size(height, width, "image")
    out = {**record, "id": need_int(record["id"], "id"), "width": width, "height": height}
    if record.get("file_name") is not None:
        out["file_name"] = _relative_name(record["file_name"], "file_name")
    return out


def parse_annotation(record: Any) -> dict[str, Any]:
    """One ``annotations`` entry: integer ids, a 0/1 ``iscrowd``, a finite ``bbox``."""
    record = need_dict(record, "an annotation")
    for key in ("id", "image_id"):
        if key not in record:
            raise ValueError(f"an annotation lacks {key!r}")
    out = {
        **record,
        "id": need_int(record["id"], "id"),
        "image_id": need_int(record["image_id"], "image_id"),
    }
    if record.get("category_id") is not None:
        out["category_id"] = need_int(record["category_id"], "category_id")
    crowd = record.get("iscrowd", 0)
    if crowd not in (0, 1) or not isinstance(crowd, (int, bool)):
        raise ValueError(f"iscrowd must be 0 or 1, got {crowd!r:.40}")
    if "bbox" in record:
        need_box(record["bbox"], "bbox")
    return out


def parse_category(record: Any) -> dict[str, Any]:
    """One ``categories`` entry: integer ``id``, string ``name``."""
    record = need_dict(record, "a category")
    if "id" not in record:
        raise ValueError("a category lacks 'id'")
    out = {**record, "id": need_int(record["id"], "id")}
    if record.get("name") is not None:
        need_str(record["name"], "name")
    return out


def resolve_coco_images(root: Path, images_dir: str | os.PathLike[str] | None) -> Path:
    """The COCO ``train2014`` folder for a REFER-style dataset folder ``root``.

    Order: the ``images_dir`` option, then ``$REFSEG_COCO_IMAGES``, then the first existing
    of ``ROOT/images``, ``ROOT/train2014``, ``ROOT/../images/mscoco/images/train2014`` (the
    REFER repository's own layout), ``ROOT/../images/train2014`` (gRefCOCO/ReLA's layout) and
    ``ROOT/../train2014``. When none exists the first candidate is returned and the image
    check reports what is missing.
    """
    if images_dir is not None:
        return Path(images_dir).expanduser()
    env = os.environ.get(COCO_IMAGES_ENV)
    if env:
        return Path(env).expanduser()
    candidates = [
        root / "images",
        root / "train2014",
        root.parent / "images" / "mscoco" / "images" / "train2014",
        root.parent / "images" / "train2014",
        root.parent / "train2014",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def ensure_images_exist(samples: list[Sample], images_dir: Path, *, hint: str = "") -> None:
    """Fail with one line when sample images are missing (checks each distinct file once)."""
    paths = sorted({s.image for s in samples})
    missing = [p for p in paths if not p.is_file()]
    if missing:
        where = "" if images_dir.is_dir() else " (the folder does not exist)"
        raise InputError(
            f"{len(missing)} of {len(paths)} images are missing under {images_dir}{where}, "
            f"e.g. {missing[0].name}{hint}"
        )


def coco_instances_to_samples(
    instances_json: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    per_instance: bool = False,
    include_crowd_only: bool = False,
    min_area: int = 0,
) -> list[Sample]:
    """Samples from a COCO instance file, phrased by category name.

    By default one sample per (image, category present): the phrase is the category name and
    the masks are *every* non-crowd instance of it, because "person" refers to all people in the
    picture; scoring one instance against it would punish correct answers. With
    ``per_instance=True`` there is one sample per non-crowd instance instead
    (``meta.ambiguous`` marks instances whose category occurs more than once).

    Crowd regions (``iscrowd=1``) are never targets: their ids are recorded in
    ``meta.crowd_ann_ids``. A per-category sample also carries their union in ``meta.ignore``
    (``refseg eval`` excludes it from scoring: crowd pixels count in neither I nor U) and
    ``meta.iscrowd`` says the category has crowd regions on that image. A per-instance sample's
    ``meta.iscrowd`` is its own annotation's flag (always false: crowd regions are not targets),
    and it carries no ``meta.ignore``: the same crowd mask on every instance line of the image
    would bloat the file for nothing (``crowd_ann_ids`` names the regions in the instance file).
    A category present only as crowd regions gets no sample unless ``include_crowd_only``.
    ``min_area`` (per instance only) leaves out instances with fewer mask pixels: tiny objects
    measure the segmenter's resolution more than its prompting (the README's refinement table
    uses 400). Ids are ``coco:<image_id>:<category_id>`` (``coco:<image_id>:ann<ann_id>`` per
    instance).
    """
    path = Path(instances_json).expanduser()
    folder = Path(images_dir).expanduser()
    if min_area and not per_instance:
        # A category's sample must hold every instance of it, or right answers would score
        # as false positives.
        raise InputError("a minimum area (--min-area) applies to per-instance samples only")
    index = CocoIndex.load(path)
    by_image: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for ann in index.annotation_list:
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise InputError(f"{path}: an annotation lacks image_id or category_id")
        by_image[int(ann["image_id"])][int(ann["category_id"])].append(ann)
    samples: list[Sample] = []
    for image_id in sorted(by_image):
        image = index.image(image_id)
        height, width = image["height"], image["width"]
        image_path = folder / image_file_name(image, prefix="")
        for category_id in sorted(by_image[image_id]):
            anns = by_image[image_id][category_id]
            name = index.category_name(category_id) or f"category {category_id}"
            crowd = [a for a in anns if a.get("iscrowd")]
            solid = [a for a in anns if not a.get("iscrowd")]
            if not solid and not include_crowd_only:
                continue
            meta: dict[str, Any] = {
                "image_id": image_id,
                "category_id": category_id,
                "category": name,
                "iscrowd": bool(crowd),
            }
            if crowd:
                meta["crowd_ann_ids"] = [int(a["id"]) for a in crowd]
            if per_instance:
                for ann in solid:
                    if min_area and int(masks.area([index.mask(ann)])[0]) < min_area:
                        continue
                    samples.append(
                        Sample(
                            id=f"coco:{image_id}:ann{int(ann['id'])}",
                            image=image_path,
                            phrase=name,
                            masks=[index.mask(ann)],
                            width=width,
                            height=height,
                            boxes=[xywh_to_xyxy(ann["bbox"])] if "bbox" in ann else [],
                            meta={
                                **meta,
                                "iscrowd": bool(ann.get("iscrowd")),
                                "ann_ids": [int(ann["id"])],
                                "ambiguous": len(solid) > 1,
                            },
                        )
                    )
                continue
            if crowd:
                meta["ignore"] = masks.union([index.mask(a) for a in crowd], height, width)
            boxes = [xywh_to_xyxy(a["bbox"]) for a in solid if "bbox" in a]
            samples.append(
                Sample(
                    id=f"coco:{image_id}:{category_id}",
                    image=image_path,
                    phrase=name,
                    masks=[index.mask(a) for a in solid],
                    width=width,
                    height=height,
                    boxes=boxes if len(boxes) == len(solid) else [],
                    meta={**meta, "ann_ids": [int(a["id"]) for a in solid]},
                )
            )
    return samples


def read_coco_spec(
    spec: DatasetSpec,
    *,
    images_dir: str | os.PathLike[str] | None = None,
    per_instance: bool = False,
    limit: int | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """``coco:PATH``: PATH is an ``instances.json`` or a folder holding one (and ``images/``).

    The split part, if any, must be empty: a COCO instance file is one split.
    """
    path = spec.path
    json_path = path / "instances.json" if path.is_dir() else path
    if spec.split:
        raise InputError(f"coco:{path}: a COCO instance file has no splits (got {spec.split!r})")
    folder = Path(images_dir).expanduser() if images_dir else json_path.parent / "images"
    samples = limit_samples(
        coco_instances_to_samples(json_path, folder, per_instance=per_instance), limit
    )
    if check_images:
        ensure_images_exist(samples, folder)
    return samples
