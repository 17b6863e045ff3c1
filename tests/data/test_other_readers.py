"""ReasonSeg, RefCOCO-M and plain-COCO readers on fixtures in their published layouts."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.data import open_dataset
from refseg.data.coco import coco_instances_to_samples
from refseg.errors import InputError
from tests.data.helpers import write_image


def _square(x1: int, y1: int, x2: int, y2: int) -> list[list[int]]:
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def _reasonseg(root: Path) -> Path:
    val = root / "val"
    write_image(val / "cat_on_sofa.jpg", 60, 40)
    (val / "cat_on_sofa.json").write_text(
        json.dumps(
            {
                "text": ["What would a pet sleep on?", "the sofa"],
                "is_sentence": True,
                "shapes": [
                    {"label": "target", "points": _square(10, 10, 30, 30), "shape_type": "polygon"},
                    {"label": "ignore", "points": _square(15, 15, 20, 20)},
                    {"label": "flag", "points": _square(0, 0, 59, 39)},
                    # a small target inside a larger ignore region: drawn later, so it wins
                    {"label": "ignore", "points": _square(40, 5, 55, 25)},
                    {"label": "target", "points": _square(45, 10, 48, 13)},
                ],
            }
        )
    )
    return root


def test_reasonseg_masks_follow_lisa_rasterisation(tmp_path: Path) -> None:
    root = _reasonseg(tmp_path / "ReasonSeg")
    # LISA's evaluation asks the first query of each image; all_queries gives every one.
    assert [s.phrase for s in open_dataset(f"reasonseg:{root}:val")] == [
        "What would a pet sleep on?"
    ]
    samples = open_dataset(f"reasonseg:{root}:val", all_queries=True)
    assert [s.phrase for s in samples] == ["What would a pet sleep on?", "the sofa"]
    assert samples[1].id == "reasonseg:val:cat_on_sofa:1" and samples[1].masks == samples[0].masks
    first = samples[0]
    assert first.id == "reasonseg:val:cat_on_sofa:0" and first.meta["is_sentence"] is True
    assert (first.width, first.height) == (60, 40)
    # Outline included: 10..30 is 21 px wide; the ignore square 15..20 is 6x6; the small
    # target 45..48 is 4x4 and overrides the 16x21 ignore rectangle.
    assert masks.area(first.masks)[0] == 21 * 21 - 6 * 6 + 4 * 4
    assert masks.area([first.meta["ignore"]])[0] == 6 * 6 + 16 * 21 - 4 * 4
    assert masks.intersection_area(first.masks[0], first.meta["ignore"]) == 0


def test_reasonseg_size_is_the_displayed_one(tmp_path: Path) -> None:
    val = tmp_path / "rs" / "val"
    val.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    Image.new("RGB", (50, 20)).save(val / "r.jpg", exif=exif.tobytes())
    (val / "r.json").write_text(json.dumps({"text": ["x"], "shapes": [], "is_sentence": False}))
    (sample,) = open_dataset(f"reasonseg:{tmp_path / 'rs'}:val")
    assert (sample.width, sample.height) == (20, 50)
    assert sample.no_target


def test_reasonseg_errors(tmp_path: Path) -> None:
    root = _reasonseg(tmp_path / "ReasonSeg")
    with pytest.raises(InputError, match="name a split"):
        open_dataset(f"reasonseg:{root}")
    with pytest.raises(InputError, match="unknown split 'dev'"):
        open_dataset(f"reasonseg:{root}:dev")
    with pytest.raises(InputError, match="no such split folder"):
        open_dataset(f"reasonseg:{root}:test")
    (root / "val" / "cat_on_sofa.jpg").unlink()
    with pytest.raises(InputError, match="no image beside it"):
        open_dataset(f"reasonseg:{root}:val")
    write_image(root / "val" / "cat_on_sofa.jpg", 60, 40)
    (root / "val" / "cat_on_sofa.json").write_text("{")
    with pytest.raises(InputError, match=r"cat_on_sofa\.json: bad JSON"):
        open_dataset(f"reasonseg:{root}:val")
    (root / "val" / "cat_on_sofa.json").write_text(
        json.dumps({"text": ["x"], "shapes": [{"label": "target", "points": [[1, 2]]}]})
    )
    with pytest.raises(InputError, match="need at least 3"):
        open_dataset(f"reasonseg:{root}:val")


def _refcocom(root: Path) -> tuple[Path, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dense = np.zeros((30, 40), dtype=bool)
    dense[5:20, 10:25] = True
    rle = masks.encode(dense)
    image_path = write_image(tmp := root / "src.jpg", 40, 30)
    instance = {
        "id": 77,
        "image_id": 5,
        "category": "dog",
        "supercategory": "animal",
        "label": "dog",
        "sentences": ["brown dog", "dog on left"],
        "bbox": [10.0, 5.0, 15.0, 15.0],
        "mask": {"counts": rle["counts"], "size": [30, 40]},
    }
    row = {
        "image": {"bytes": image_path.read_bytes(), "path": None},
        "image_id": 5,
        "file_name": "COCO_train2014_000000000005.jpg",
        "samples": [instance],
    }
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("image_id", pa.int64()),
            ("file_name", pa.string()),
            (
                "samples",
                pa.list_(
                    pa.struct(
                        [
                            ("id", pa.int64()),
                            ("image_id", pa.int64()),
                            ("category", pa.string()),
                            ("supercategory", pa.string()),
                            ("label", pa.string()),
                            ("sentences", pa.list_(pa.string())),
                            ("bbox", pa.list_(pa.float32())),
                            (
                                "mask",
                                pa.struct(
                                    [("counts", pa.string()), ("size", pa.list_(pa.int32()))]
                                ),
                            ),
                        ]
                    )
                ),
            ),
        ]
    )
    (root / "data").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([row], schema=schema),
        root / "data" / "validation-00000-of-00001.parquet",
    )
    tmp.unlink()
    return root, {"rle": rle, "jpeg": image_path}


def test_refcocom_reads_shards_and_extracts_images(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    root, expected = _refcocom(tmp_path / "refcoco-m")
    samples = open_dataset(f"refcoco-m:{root}:val")
    assert [s.phrase for s in samples] == ["brown dog", "dog on left"]
    assert [s.id for s in samples] == ["refcoco-m:77:0", "refcoco-m:77:1"]
    first = samples[0]
    assert first.image == root / "images" / "COCO_train2014_000000000005.jpg"
    assert first.image.is_file() and (first.width, first.height) == (40, 30)
    assert first.masks == [expected["rle"]]
    assert first.boxes == [[10.0, 5.0, 25.0, 20.0]]
    assert first.meta["category"] == "dog" and first.meta["instance_id"] == 77
    # A second read reuses the extracted image; an images folder holding the file is used as is.
    stamp = first.image.stat().st_mtime_ns
    assert open_dataset(f"refcoco-m:{root}")[0].image.stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="the only one is 'validation'"):
        open_dataset(f"refcoco-m:{root}:test")
    with pytest.raises(InputError, match=r"no validation-\*\.parquet shards"):
        open_dataset(f"refcoco-m:{tmp_path}:val")


def test_coco_sample_one_phrase_per_category(coco_sample: Path, coco_instances: dict) -> None:
    samples = coco_instances_to_samples(coco_sample / "instances.json", coco_sample / "images")
    solid: dict[tuple[int, int], list[int]] = defaultdict(list)
    crowd: dict[tuple[int, int], list[int]] = defaultdict(list)
    for ann in coco_instances["annotations"]:
        key = (ann["image_id"], ann["category_id"])
        (crowd if ann["iscrowd"] else solid)[key].append(ann["id"])
    assert {(s.meta["image_id"], s.meta["category_id"]) for s in samples} == set(solid)
    names = {c["id"]: c["name"] for c in coco_instances["categories"]}
    for sample in samples:
        key = (sample.meta["image_id"], sample.meta["category_id"])
        assert sample.phrase == names[key[1]]
        assert sorted(sample.meta["ann_ids"]) == sorted(solid[key])
        assert len(sample.masks) == len(solid[key]) == len(sample.boxes)
        assert sample.meta["iscrowd"] == bool(crowd.get(key))
        assert sample.image.is_file()
    crowded = [s for s in samples if s.meta["iscrowd"]]
    assert crowded, "the shared sample has a crowd region"
    for sample in crowded:
        assert masks.area([sample.meta["ignore"]])[0] > 0
    per_instance = coco_instances_to_samples(
        coco_sample / "instances.json", coco_sample / "images", per_instance=True
    )
    assert len(per_instance) == sum(len(v) for v in solid.values())
    assert all(len(s.masks) == 1 for s in per_instance)
    assert open_dataset(f"coco:{coco_sample}")[0].id == samples[0].id
