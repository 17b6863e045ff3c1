"""The bundled COCO sample's instances as (image, mask, box) objects, for benchmarks and tests.

``data/coco-sample`` in the repository (see its ``ATTRIBUTION.md``) holds two COCO val2017 photos
and their instance masks; it is test data, not part of the wheel. The path head's measurements
(round trip of traced outlines, refiners by noise level) and real-image tests all read the same
selection through :func:`load_objects`: the non-crowd instances of at least ``min_area`` pixels
(36 of the 43 at the default 400).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: ``data/coco-sample`` of the checkout (``src/refseg/testing`` -> three levels up), or wherever
#: ``REFSEG_COCO_SAMPLE`` points (an installed refseg has no checkout around it).
DEFAULT_FOLDER = Path(
    os.environ.get("REFSEG_COCO_SAMPLE")
    or Path(__file__).resolve().parents[3] / "data" / "coco-sample"
)


@dataclass
class CocoObject:
    """One ground-truth instance: its image file, dense mask and ``[x1, y1, x2, y2]`` box."""

    image_id: int
    image_path: Path
    mask: np.ndarray
    box: tuple[float, float, float, float]
    category: str


def load_objects(folder: Path | None = None, *, min_area: int = 400) -> list[CocoObject]:
    """Non-crowd instances of at least ``min_area`` pixels, in file order."""
    from pycocotools import mask as mask_utils

    folder = Path(folder or DEFAULT_FOLDER)
    data = json.loads((folder / "instances.json").read_text())
    images = {image["id"]: image for image in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    out = []
    for ann in data["annotations"]:
        if ann.get("iscrowd") or ann["area"] < min_area:
            continue
        image = images[ann["image_id"]]
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        x, y, w, h = ann["bbox"]
        out.append(
            CocoObject(
                image_id=ann["image_id"],
                image_path=folder / "images" / image["file_name"],
                mask=mask,
                box=(float(x), float(y), float(x + w), float(y + h)),
                category=names.get(ann["category_id"], "?"),
            )
        )
    return out
