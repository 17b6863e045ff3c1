"""Fixture writers for the dataset-reader tests: tiny datasets in the exact published layouts."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_image(path: Path, width: int, height: int, *, fmt: str = "JPEG", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def rect_polygon(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def coco_instances() -> dict[str, Any]:
    """Two train2014-style images; annotations as polygons, one as uncompressed RLE, one crowd."""
    images = [
        {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 40, "height": 40},
    ]
    ann_rle = np.zeros((40, 40), dtype=np.uint8)
    ann_rle[5:15, 20:30] = 1
    # Uncompressed RLE: column-major run lengths starting with zeros.
    flat = ann_rle.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    annotations = [
        {
            "id": 10,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [10, 10, 20, 10],
            "area": 200,
            "segmentation": [rect_polygon(10, 10, 30, 20)],
        },
        {
            "id": 11,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [40, 5, 20, 30],
            "area": 600,
            "segmentation": [rect_polygon(40, 5, 60, 35)],
        },
        {
            "id": 12,
            "image_id": 2,
            "category_id": 2,
            "iscrowd": 0,
            "bbox": [20, 5, 10, 10],
            "area": 100,
            "segmentation": {"size": [40, 40], "counts": counts},
        },
        {
            "id": 13,
            "image_id": 1,
            "category_id": 2,
            "iscrowd": 1,
            "bbox": [0, 30, 10, 10],
            "area": 100,
            "segmentation": [rect_polygon(0, 30, 10, 40)],
        },
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def refs() -> list[dict[str, Any]]:
    """REFER refs: two in val (one with two sentences), one in train, one in test."""

    def sentences(*pairs: tuple[int, str]) -> list[dict[str, Any]]:
        return [
            {"sent_id": sid, "sent": text, "raw": text.capitalize() + ".", "tokens": text.split()}
            for sid, text in pairs
        ]

    return [
        {
            "ref_id": 100,
            "ann_id": 10,
            "image_id": 1,
            "category_id": 1,
            "split": "val",
            "file_name": "COCO_train2014_000000000001_10.jpg",
            "sent_ids": [1000, 1001],
            "sentences": sentences((1000, "man on the left"), (1001, "left person")),
        },
        {
            "ref_id": 101,
            "ann_id": 11,
            "image_id": 1,
            "category_id": 1,
            "split": "val",
            "file_name": "COCO_train2014_000000000001_11.jpg",
            "sent_ids": [1002],
            "sentences": sentences((1002, "right guy")),
        },
        {
            "ref_id": 102,
            "ann_id": 12,
            "image_id": 2,
            "category_id": 2,
            "split": "train",
            "file_name": "COCO_train2014_000000000002_12.jpg",
            "sent_ids": [1003],
            "sentences": sentences((1003, "the dog")),
        },
        {
            "ref_id": 103,
            "ann_id": 12,
            "image_id": 2,
            "category_id": 2,
            "split": "test",
            "file_name": "COCO_train2014_000000000002_12.jpg",
            "sent_ids": [1004],
            "sentences": sentences((1004, "small dog")),
        },
    ]


def write_refer(root: Path, split_by: str = "umd", *, with_images: bool = True) -> Path:
    """``root`` = the dataset folder (refs pickle + instances.json); images in ``root/images``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"refs({split_by}).p").write_bytes(pickle.dumps(refs(), protocol=2))
    instances = coco_instances()
    (root / "instances.json").write_text(json.dumps(instances))
    if with_images:
        for image in instances["images"]:
            write_image(root / "images" / image["file_name"], image["width"], image["height"])
    return root


def grefs() -> list[dict[str, Any]]:
    def one(sid: int, text: str) -> list[dict[str, Any]]:
        return [{"sent_id": sid, "sent": text, "raw": text, "tokens": text.split()}]

    return [
        {
            "ref_id": 1,
            "ann_id": [10, 11],
            "category_id": [1, 1],
            "image_id": 1,
            "split": "val",
            "sent_ids": [1],
            "sentences": one(1, "both people"),
            "no_target": False,
        },
        {
            "ref_id": 2,
            "ann_id": [-1],
            "category_id": [-1],
            "image_id": 1,
            "split": "val",
            "sent_ids": [2],
            "sentences": one(2, "the cat"),
            "no_target": True,
        },
        {
            "ref_id": 3,
            "ann_id": 10,
            "category_id": 1,
            "image_id": 1,
            "split": "val",
            "sent_ids": [3],
            "sentences": one(3, "left man"),
        },
        {
            "ref_id": 4,
            "ann_id": [11, 13],
            "category_id": [1, 2],
            "image_id": 1,
            "split": "val",
            "sent_ids": [4],
            "sentences": one(4, "person and crowd"),
        },
        {
            "ref_id": 5,
            "ann_id": [12],
            "category_id": [2],
            "image_id": 2,
            "split": "train",
            "sent_ids": [5],
            "sentences": one(5, "dog"),
        },
    ]


def write_grefcoco(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "grefs(unc).json").write_text(json.dumps(grefs()))
    instances = coco_instances()
    (root / "instances.json").write_text(json.dumps(instances))
    # gRefCOCO/ReLA layout: images in ../images/train2014
    for image in instances["images"]:
        write_image(
            root.parent / "images" / "train2014" / image["file_name"],
            image["width"],
            image["height"],
        )
    return root
