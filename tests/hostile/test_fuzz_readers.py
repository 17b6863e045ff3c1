"""Property-based fuzzing of every reader's record parser and of the mask validators.

The contract: for any input, a parser returns well-formed data or raises the one error type
its reader turns into a one-line message (``ValueError`` from record parsers, which readers wrap
as ``FILE: record N: problem``; :class:`InputError` from the mask validators and the pickle
loader) -- never another exception, never a hang (each example has a deadline). Inputs are valid
fixtures with one field replaced by arbitrary JSON-like data, plus fully random values.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refseg import masks
from refseg.data import coco, jsonl, reasonseg, refcocom, refer
from refseg.data.base import Sample
from refseg.data.safe_pickle import loads_data_pickle
from refseg.errors import InputError
from tests.data.helpers import coco_instances, grefs, refs

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NUMBERS = (
    st.integers(-(2**40), 2**40)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, -1, 2**31, 2**63, 1e300, -0.0])
)
SCALARS = st.none() | st.booleans() | NUMBERS | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a JSON-like value (the places one corruption can go)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def mutated(base: Any, data: st.DataObject, rounds: int = 3) -> Any:
    """``base`` with up to ``rounds`` values (anywhere in it) replaced or removed."""
    value = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(0, rounds))):
        paths = [p for p in _paths(value) if p]
        if not paths:
            return data.draw(JSON)
        path = data.draw(st.sampled_from(paths))
        holder = value
        for key in path[:-1]:
            holder = holder[key]
        if isinstance(holder, dict) and data.draw(st.booleans()):
            del holder[path[-1]]
        else:
            holder[path[-1]] = data.draw(JSON)
    return value


# ---------------------------------------------------------------------------------------------
# Mask validators


def _check_rle(rle: masks.RLE) -> None:
    height, width = rle["size"]
    dense = masks.decode(rle)
    assert dense.shape == (height, width)
    assert masks.area([rle])[0] == dense.sum()


COUNT_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=130), max_size=12)
SIZES = st.lists(st.integers(-2, 12) | SCALARS, min_size=0, max_size=3)
COUNTS = st.lists(st.integers(-3, 150) | SCALARS, max_size=12) | COUNT_TEXT | JSON


@FUZZ
@given(st.fixed_dictionaries({"size": SIZES, "counts": COUNTS}) | JSON)
def test_rle_validator(rle: Any) -> None:
    try:
        valid = masks.validate(rle)
    except InputError:
        return
    _check_rle(valid)


@FUZZ
@given(st.integers(1, 9), st.integers(1, 9), st.data())
def test_rle_validator_near_valid_counts(height: int, width: int, data: st.DataObject) -> None:
    """Counts that almost add up (the dangerous kind): right total +-1, zeros, negatives."""
    total = height * width
    cuts = sorted(data.draw(st.lists(st.integers(0, total), max_size=8)))
    runs = np.diff([0, *cuts, total]).tolist()
    if data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(runs) - 1))
        runs[index] += data.draw(st.sampled_from([-1, 1, -runs[index] - 1]))
    rle = {"size": [height, width], "counts": runs}
    if data.draw(st.booleans()):  # as a compressed string, when pycocotools can write one
        try:
            rle = masks.validate(rle)
        except InputError:
            pass
    try:
        valid = masks.validate(rle)
    except InputError:
        assert sum(runs) != total or min(runs) < 0
        return
    _check_rle(valid)
    other = masks.encode(data.draw(st.just(np.ones((height, width), bool))))
    assert masks.intersection_area(valid, other) == masks.area([valid])[0]


COORDS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**12), 10**12) | SCALARS


@FUZZ
@given(
    st.lists(st.lists(COORDS, max_size=14), max_size=4) | JSON,
    st.integers(-1, 40) | SCALARS,
    st.integers(-1, 40) | SCALARS,
)
def test_polygon_validator(polygons: Any, height: Any, width: Any) -> None:
    try:
        rle = masks.from_polygons(polygons, height, width)
    except InputError:
        return
    assert rle["size"] == [height, width]
    _check_rle(rle)


# ---------------------------------------------------------------------------------------------
# Record parsers


@FUZZ
@given(st.data(), st.booleans())
def test_refer_and_grefcoco_refs(data: st.DataObject, multi: bool) -> None:
    base = data.draw(st.sampled_from(grefs() if multi else refs()))
    ref = mutated(base, data)
    try:
        parsed = refer.parse_ref(ref, multi=multi)
    except ValueError:
        return
    assert all(isinstance(a, int) for a in parsed["ann_ids"])
    assert all(isinstance(s[0], int) and isinstance(s[1], str) for s in parsed["sentences"])
    assert isinstance(parsed["split"], str) and isinstance(parsed["image_id"], int)


@FUZZ
@given(st.data())
def test_refs_file_level(data: st.DataObject) -> None:
    """The whole list, as a reader sees it: only InputError comes out."""
    value = mutated(refs(), data, rounds=4)
    try:
        refer._parse_refs(value, Path("refs(umd).p"), multi=False)
    except InputError as exc:
        assert str(exc).startswith("refs(umd).p: ") and "\n" not in str(exc)


@FUZZ
@given(st.data())
def test_coco_instances_records(data: st.DataObject) -> None:
    instances = coco_instances()
    key = data.draw(st.sampled_from(["images", "annotations", "categories"]))
    parse = {"images": coco.parse_image, "annotations": coco.parse_annotation}.get(
        key, coco.parse_category
    )
    record = mutated(data.draw(st.sampled_from(instances[key])), data)
    try:
        parsed = parse(record)
    except ValueError:
        return
    assert isinstance(parsed["id"], int)
    if key == "images":
        masks.check_size(parsed["height"], parsed["width"])
    if key == "annotations":
        try:
            rle = coco.segmentation_to_rle(parsed.get("segmentation"), 48, 64)
        except ValueError:
            return
        _check_rle(rle)


JSONL_RECORD = {
    "id": "a",
    "image": "a.png",
    "phrase": "the thing",
    "masks": [{"size": [8, 10], "counts": [20, 10, 50]}, {"polygons": [[1, 1, 5, 1, 5, 5]]}],
    "width": 10,
    "height": 8,
    "boxes": [[0, 0, 5, 5], [1, 1, 5, 5]],
    "meta": {"split": "val"},
}


@FUZZ
@given(st.data())
def test_jsonl_records(data: st.DataObject) -> None:
    record = mutated(JSONL_RECORD, data)
    try:
        sample = jsonl.record_to_sample(record, Path("/data"))
    except ValueError:
        return
    assert isinstance(sample, Sample)
    for rle in sample.masks:
        assert rle["size"] == [sample.height, sample.width]
        _check_rle(rle)


LABELME = {
    "text": ["what is it?", "the cup"],
    "is_sentence": True,
    "shapes": [
        {"label": "target", "points": [[1, 1], [8, 1], [8, 6]]},
        {"label": "ignore", "points": [[2, 2], [4, 2], [4, 4], [2, 4]]},
    ],
}


@FUZZ
@given(st.data())
def test_reasonseg_annotations(data: st.DataObject) -> None:
    annotation = mutated(LABELME, data, rounds=4)
    try:
        parsed = reasonseg.parse_annotation(annotation)
        target, ignore = reasonseg.rasterize(parsed["shapes"], 8, 10, Path("x.json"))
    except ValueError:  # InputError included: rasterize names the file itself
        return
    assert target.shape == ignore.shape == (8, 10)
    assert all(isinstance(t, str) for t in parsed["text"])


@FUZZ
@given(
    st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=2),
        min_size=3,
        max_size=8,
    )
)
def test_reasonseg_area_on_a_bounding_canvas(points: list[list[float]]) -> None:
    """The bounding-box canvas counts the same pixels as LISA's full-image canvas."""
    import cv2

    shapes = [{"label": "target", "points": points}]
    target, _ = reasonseg.rasterize(shapes, 30, 40, Path("x.json"))
    checked = masks.check_polygons([[v for p in points for v in p]], 30, 40)
    full = np.zeros((30, 40), np.uint8)
    if checked:
        polygon = checked[0].astype(np.int32)
        cv2.polylines(full, [polygon], True, 1, 1)
        cv2.fillPoly(full, [polygon], 1)
    np.testing.assert_array_equal(target, full == 1)


REFCOCOM_ROW = {
    "image": {"bytes": b"\xff\xd8", "path": None},
    "image_id": 5,
    "file_name": "COCO_train2014_000000000005.jpg",
    "samples": [
        {
            "id": 77,
            "category": "dog",
            "supercategory": "animal",
            "label": "dog",
            "sentences": ["brown dog"],
            "bbox": [1.0, 1.0, 3.0, 3.0],
            "mask": {"counts": masks.encode(np.eye(6, 8, dtype=bool))["counts"], "size": [6, 8]},
        }
    ],
}


@FUZZ
@given(st.data())
def test_refcocom_rows(data: st.DataObject) -> None:
    row = mutated(REFCOCOM_ROW, data)
    try:
        parsed = refcocom.parse_row(row)
    except ValueError:
        return
    assert isinstance(parsed["image_id"], int)
    for instance in parsed["instances"]:
        _check_rle(instance["rle"])


# ---------------------------------------------------------------------------------------------
# Pickles

PICKLED = pickle.dumps(refs()[:2], protocol=2)


@FUZZ
@given(st.data())
def test_pickle_loader(data: st.DataObject) -> None:
    """Random bytes, and a real refs pickle with bytes flipped, cut or inserted."""
    if data.draw(st.booleans()):
        blob = data.draw(st.binary(max_size=64))
    else:
        blob = bytearray(PICKLED)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(blob) - 1))
            action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip":
                blob[at] = data.draw(st.integers(0, 255))
            elif action == "cut":
                del blob[at:]
                if not blob:
                    break
            else:
                blob[at:at] = data.draw(st.binary(min_size=1, max_size=5))
        blob = bytes(blob)
    try:
        loads_data_pickle(blob, name="refs.p")
    except InputError as exc:
        assert str(exc).startswith("refs.p: ") and "\n" not in str(exc)


@pytest.mark.parametrize("protocol", [0, 2])
def test_fuzz_base_pickle_is_valid(protocol: int) -> None:
    """The mutation base itself loads (so the fuzzing above starts from a real pickle)."""
    assert loads_data_pickle(pickle.dumps(refs()[:2], protocol=protocol)) == refs()[:2]
