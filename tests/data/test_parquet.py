"""RefCOCO-family Parquet repositories: generated shards of each documented layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from refseg import masks
from refseg.data import open_dataset
from refseg.data.parquet import find_shards
from refseg.errors import InputError
from tests.data.helpers import rect_polygon, write_image

# The column types of the dataset cards' dataset_info.
LMMS_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()),
        ("answer", pa.list_(pa.string())),
        ("segmentation", pa.list_(pa.float32())),
        ("bbox", pa.list_(pa.float32())),
        ("iscrowd", pa.int8()),
        ("file_name", pa.string()),
    ]
)
_SENTENCE = pa.struct(
    [("raw", pa.string()), ("sent", pa.string()), ("sent_id", pa.int64()),
     ("tokens", pa.list_(pa.string()))]
)  # fmt: skip
JXU_FIELDS = [
    ("sent_ids", pa.list_(pa.int64())),
    ("file_name", pa.string()),
    ("ann_id", pa.int64()),
    ("ref_id", pa.int64()),
    ("image_id", pa.int64()),
    ("split", pa.string()),
    ("sentences", pa.list_(_SENTENCE)),
    ("category_id", pa.int64()),
    ("raw_anns", pa.string()),
    ("raw_image_info", pa.string()),
    ("raw_sentences", pa.string()),
    ("image_path", pa.string()),
    ("bbox", pa.list_(pa.float64())),
    ("captions", pa.list_(pa.string())),
    ("global_image_id", pa.string()),
    ("anns_id", pa.string()),
]
JXU_SCHEMA = pa.schema(JXU_FIELDS)
# gRefCOCO's fields on the same rows: several annotation ids, an explicit no-target flag.
GREF_SCHEMA = pa.schema(
    [(n, pa.list_(pa.int64()) if n == "ann_id" else t) for n, t in JXU_FIELDS]
    + [("no_target", pa.bool_())]
)


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _lmms_row(question_id: str, answers: list[str], box: tuple, name: str, data: bytes) -> dict:
    x1, y1, x2, y2 = box
    return {
        "question_id": question_id,
        "image": {"bytes": data, "path": None},
        "question": "Please carefully observe the area circled in the image ...",
        "answer": answers,
        "segmentation": rect_polygon(x1, y1, x2, y2),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "iscrowd": 0,
        "file_name": name,
    }


def _jxu_row(ref_id: int, anns: list[dict], sentences: list[str], *, gref: bool = False) -> dict:
    image_id = 9
    info = {"file_name": "COCO_train2014_000000000009.jpg", "height": 40, "width": 64, "id": 9}
    row = {
        "sent_ids": [ref_id * 10 + k for k in range(len(sentences))],
        "file_name": f"COCO_train2014_000000000009_{ref_id}.jpg",
        "ann_id": [a["id"] for a in anns] or [-1] if gref else anns[0]["id"],
        "ref_id": ref_id,
        "image_id": image_id,
        "split": "val",
        "sentences": [
            {"raw": s.upper(), "sent": s, "sent_id": ref_id * 10 + k, "tokens": s.split()}
            for k, s in enumerate(sentences)
        ],
        "category_id": anns[0]["category_id"] if anns else 1,
        "raw_anns": json.dumps(anns if gref else anns[0]),
        "raw_image_info": json.dumps(info),
        "raw_sentences": json.dumps(sentences),
        "image_path": "coco/train2014/COCO_train2014_000000000009.jpg",
        "bbox": anns[0]["bbox"] if anns else [0, 0, 1, 1],
        "captions": sentences,
        "global_image_id": "coco.9",
        "anns_id": "",
    }
    if gref:
        row["no_target"] = not anns
    return row


def _ann(ann_id: int, box: tuple, category: int = 18) -> dict:
    x1, y1, x2, y2 = box
    return {
        "id": ann_id, "image_id": 9, "category_id": category, "iscrowd": 0,
        "segmentation": [rect_polygon(x1, y1, x2, y2)], "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": (x2 - x1) * (y2 - y1),
    }  # fmt: skip


def _rect(box: tuple, height: int, width: int) -> np.ndarray:
    return masks.decode(masks.from_polygons([rect_polygon(*box)], height, width))


def test_lmms_lab_layout_one_sample_per_expression_with_embedded_images(tmp_path: Path) -> None:
    root = tmp_path / "RefCOCO"
    rows = [
        _lmms_row("1001", ["man on left", "guy in red"], (2, 3, 20, 30), "COCO_a.jpg",
                  _jpeg(64, 48)),
        _lmms_row("1002", ["the dog", " "], (30, 10, 60, 40), "COCO_b.jpg", _jpeg(80, 50)),
    ]  # fmt: skip
    _write(root / "data" / "val-00000-of-00002.parquet", rows[:1], LMMS_SCHEMA)
    _write(root / "data" / "val-00001-of-00002.parquet", rows[1:], LMMS_SCHEMA)
    _write(root / "data" / "testA-00000-of-00001.parquet", rows[:1], LMMS_SCHEMA)
    samples = open_dataset(f"refcoco-parquet:{root}:val")
    assert [(s.id, s.phrase) for s in samples] == [
        ("refcoco-parquet:1001:0", "man on left"),
        ("refcoco-parquet:1001:1", "guy in red"),
        ("refcoco-parquet:1002:0", "the dog"),  # a blank expression is no sample
    ]
    first, _, dog = samples
    assert (first.width, first.height, dog.width, dog.height) == (64, 48, 80, 50)
    assert first.image == root / "images" / "COCO_a.jpg" and first.image.is_file()
    np.testing.assert_array_equal(masks.decode(first.masks[0]), _rect((2, 3, 20, 30), 48, 64))
    assert first.boxes == [[2.0, 3.0, 20.0, 30.0]]
    assert dog.meta == {
        "dataset": "refcoco-parquet", "split": "val", "question_id": "1002",
        "file_name": "COCO_b.jpg", "iscrowd": False,
    }  # fmt: skip
    assert len(open_dataset(f"refcoco-parquet:{root}:testA", limit=1)) == 1
    images = tmp_path / "elsewhere"
    assert open_dataset(f"refcoco+-parquet:{root}:val", images_dir=images)[0].image == (
        images / "COCO_a.jpg"
    )


def test_jxu124_layout_reads_coco_images_by_name_and_keeps_coco_ids(tmp_path: Path) -> None:
    root = tmp_path / "refcocog"
    rows = [
        _jxu_row(7, [_ann(501, (4, 4, 30, 20))], ["the cat", "a sleeping cat"]),
        _jxu_row(8, [_ann(502, (32, 10, 60, 38), category=1)], ["person at right"]),
    ]
    _write(root / "data" / "validation-00000-of-00001-db1f654b.parquet", rows, JXU_SCHEMA)
    images = tmp_path / "train2014"
    spec = f"refcocog-parquet:{root}:val"  # val and validation name each other
    with pytest.raises(InputError, match="jxu124 layout holds no images") as caught:
        open_dataset(spec, images_dir=images)
    assert "\n" not in str(caught.value)
    write_image(images / "COCO_train2014_000000000009.jpg", 64, 40)
    samples = open_dataset(spec, images_dir=images)
    assert [(s.id, s.phrase) for s in samples] == [
        ("refcocog-parquet:7:70", "the cat"),
        ("refcocog-parquet:7:71", "a sleeping cat"),
        ("refcocog-parquet:8:80", "person at right"),
    ]
    cat = samples[0]
    assert cat.image == images / "COCO_train2014_000000000009.jpg"
    np.testing.assert_array_equal(masks.decode(cat.masks[0]), _rect((4, 4, 30, 20), 40, 64))
    assert cat.meta["image_id"] == 9 and cat.meta["category_id"] == 18
    assert samples[2].meta["category_id"] == 1 and samples[2].meta["ann_ids"] == [502]


def test_grefcoco_rows_have_several_targets_or_none(tmp_path: Path) -> None:
    root = tmp_path / "grefcoco"
    rows = [
        _jxu_row(1, [_ann(11, (0, 0, 10, 10)), _ann(12, (20, 5, 40, 25))], ["both cats"],
                 gref=True),
        _jxu_row(2, [], ["the giraffe"], gref=True),
    ]  # fmt: skip
    _write(root / "val-00000-of-00001.parquet", rows, GREF_SCHEMA)
    write_image(root / "images" / "COCO_train2014_000000000009.jpg", 64, 40)
    both, none = open_dataset(f"grefcoco-parquet:{root}:val")
    assert len(both.masks) == 2 and both.meta["ann_ids"] == [11, 12] and not both.no_target
    union = masks.decode(both.union_rle())
    assert union.sum() == 10 * 10 + 20 * 20
    assert none.masks == [] and none.no_target and none.meta["no_target"] is True


def test_a_hub_id_is_read_from_the_local_hub_cache(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    repo = cache / "datasets--lmms-lab--RefCOCO"
    revision = "a" * 40
    row = _lmms_row("5", ["the kite"], (1, 1, 9, 9), "COCO_k.jpg", _jpeg(16, 16))
    _write(
        repo / "snapshots" / revision / "data" / "testB-00000-of-00001.parquet", [row], LMMS_SCHEMA
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    (sample,) = open_dataset("refcoco-parquet:lmms-lab/RefCOCO:testB", images_dir=tmp_path / "i")
    assert sample.phrase == "the kite"
    with pytest.raises(InputError, match="no local copy of the hub dataset 'lmms-lab/RefCOCOg'"):
        open_dataset("refcocog-parquet:lmms-lab/RefCOCOg:val")


def _one_line(spec: str, match: str, **options) -> None:
    with pytest.raises(InputError, match=match) as caught:
        open_dataset(spec, **options)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_bad_shards_and_rows_are_one_line(tmp_path: Path, monkeypatch) -> None:
    good = _lmms_row("1", ["x"], (1, 1, 9, 9), "COCO_x.jpg", _jpeg(16, 16))
    shard = tmp_path / "a" / "val-00000-of-00001.parquet"
    cases = [
        ({**good, "image": {"bytes": b"%!PS-Adobe-3.0 EPSF", "path": None}},
         "row 0: embedded image"),
        ({**good, "image": {"bytes": None, "path": "x.jpg"}}, "row 0: the image column holds no"),
        ({**good, "file_name": "../$(reboot).jpg"}, "row 0: unsafe image file name"),
        ({**good, "segmentation": [1.0, float("nan"), 3, 4, 5, 6]}, "row 0: .*finite"),
        ({**good, "bbox": [1.0, 2.0]}, "row 0: bbox must be 4 numbers"),
    ]  # fmt: skip
    for row, message in cases:
        _write(shard, [row], LMMS_SCHEMA)
        _one_line(f"refcoco-parquet:{shard.parent}:val", message)
    _write(shard, [good], LMMS_SCHEMA)
    monkeypatch.setenv("REFSEG_MAX_PIXELS", "100")  # 16x16 = 256 pixels
    _one_line(f"refcoco-parquet:{shard}", "row 0: .*over the limit of 100")
    monkeypatch.delenv("REFSEG_MAX_PIXELS")
    monkeypatch.setattr("refseg.data.parquet.MAX_CELL_BYTES", 100)
    _one_line(f"refcoco-parquet:{shard}", "row 0: embedded image is .* bytes, over the limit")
    monkeypatch.setattr("refseg.data.parquet.MAX_ROWS", 0)
    _one_line(f"refcoco-parquet:{shard}", "more than 0 rows")
    # not Parquet, an unknown layout, a split that is not there
    shard.write_bytes(b"PAR1 not really")
    _one_line(f"refcoco-parquet:{shard}", "not a readable Parquet file")
    pq.write_table(pa.table({"text": ["a"]}), shard)
    _one_line(f"refcoco-parquet:{shard}", "not a known RefCOCO Parquet layout")
    _one_line(f"refcoco-parquet:{shard.parent}:train", "no 'train' shards; splits: val")
    _one_line(f"refcoco-parquet:{shard.parent}", r"give a split \(refcoco-parquet:.*:SPLIT\)")
    _one_line(f"refcoco-parquet:{tmp_path / 'missing'}:val", "no such file or folder")


def test_bad_jxu124_rows_are_one_line(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "COCO_train2014_000000000009.jpg", 64, 40)
    row = _jxu_row(1, [_ann(11, (0, 0, 10, 10))], ["a"])
    gref = _jxu_row(1, [_ann(11, (0, 0, 10, 10))], ["a"], gref=True)
    cases = [
        ({**row, "raw_anns": "{not json"}, JXU_SCHEMA, "row 0: raw_anns is not JSON"),
        ({**row, "raw_image_info": json.dumps({"file_name": "a.jpg", "height": -1, "width": 5})},
         JXU_SCHEMA, "row 0: raw_image_info"),
        ({**row, "raw_anns": json.dumps({"segmentation": {"size": [40, 64], "counts": [5]}})},
         JXU_SCHEMA, "row 0: raw_anns 0: RLE counts add up to 5 pixels"),
        ({**gref, "ann_id": [11, 12]}, GREF_SCHEMA, "row 0: 2 ann_id.*but 1 annotation"),
        ({**gref, "no_target": True}, GREF_SCHEMA, "row 0: no_target is true but"),
    ]  # fmt: skip
    for bad, schema, message in cases:
        _write(tmp_path / "val-00000-of-00001.parquet", [bad], schema)
        _one_line(f"grefcoco-parquet:{tmp_path}:val", message)


def test_find_shards_prefers_the_data_folder(tmp_path: Path) -> None:
    for name in ("data/val-00000-of-00001.parquet", "val-00000-of-00001.parquet"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_shards(tmp_path, "validation", "k") == [
        tmp_path / "data" / "val-00000-of-00001.parquet"
    ]
