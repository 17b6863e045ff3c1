"""Every reader turns malformed content into one line naming the file and the record.

Each case corrupts one field of a valid fixture in the published layout; before the record
parsers, these were KeyError/TypeError/OverflowError tracebacks or silent coercions.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from refseg.data import open_dataset
from refseg.errors import InputError
from tests.data import hostile_files
from tests.data.helpers import coco_instances, grefs, refs, write_grefcoco, write_refer
from tests.data.test_other_readers import _reasonseg, _refcocom


def _one_line(exc: pytest.ExceptionInfo[InputError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def _set(path: list[Any], value: Any) -> Callable[[Any], None]:
    def apply(data: Any) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return apply


REFER_CASES = [
    (_set([0, "ref_id"], "abc"), "record 0: ref_id must be an integer, got 'abc'"),
    (_set([1, "image_id"], None), "record 1: image_id must be an integer"),
    (_set([0, "ann_id"], [10]), "record 0: ann_id must be an integer"),
    (_set([0, "split"], 3), "record 0: split must be a string"),
    (_set([0, "sentences"], {"a": 1}), "record 0: sentences must be a list"),
    (_set([0, "sentences", 0], "text"), "record 0: sentence 0 must be an object"),
    (_set([0, "sentences", 0, "sent_id"], "x"), "record 0: sentence 0 sent_id must be an integer"),
    (_set([0, "sentences", 0, "sent"], ["a"]), "record 0: sentence 0 sent must be a string"),
    (_set([2, "category_id"], 1.5), "record 2: category_id must be an integer"),
    (lambda data: data.append(7), "record 4: a ref must be an object"),
    (lambda data: data[0].pop("split"), "record 0: lacks 'split'"),
]


@pytest.mark.parametrize(("corrupt", "message"), REFER_CASES)
def test_refer_records(tmp_path: Path, corrupt, message) -> None:
    root = write_refer(tmp_path / "refcocog", with_images=False)
    data = refs()
    corrupt(data)
    (root / "refs(umd).p").write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(InputError) as info:
        open_dataset(f"refcocog:{root}", check_images=False)
    assert _one_line(info).startswith(f"{root / 'refs(umd).p'}: {message}")


GREF_CASES = [
    (_set([0, "ann_id"], "10"), "record 0: ann_id must be an integer, got '10'"),
    (_set([0, "ann_id"], {"a": 1}), "record 0: ann_id must be an integer, got a dict of 1"),
    (_set([2, "ann_id"], 10.0), "record 2: ann_id must be an integer, got 10.0"),
    (_set([0, "ann_id"], [10, None]), "record 0: ann_id must be an integer, got None"),
    (_set([1, "no_target"], "yes"), "record 1: no_target must be true or false"),
    (_set([0, "category_id"], ["1"]), "record 0: category_id must be an integer"),
]


@pytest.mark.parametrize(("corrupt", "message"), GREF_CASES)
def test_grefcoco_records(tmp_path: Path, corrupt, message) -> None:
    root = write_grefcoco(tmp_path / "grefcoco")
    data = grefs()
    corrupt(data)
    (root / "grefs(unc).json").write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        open_dataset(f"grefcoco:{root}:val", check_images=False)
    assert _one_line(info).startswith(f"{root / 'grefs(unc).json'}: {message}")


COCO_CASES = [
    (_set(["images", 0, "width"], "64"), "images record 0: width must be an integer"),
    (_set(["images", 1, "height"], -4), "images record 1: image size [-4, 40] must be positive"),
    (_set(["images", 0, "height"], 10**6), "images record 0: image size 1000000x64 is over"),
    (_set(["images", 0, "id"], [1]), "images record 0: id must be an integer"),
    (_set(["images", 0, "file_name"], "../../etc/x.jpg"), "must be a path inside"),
    (_set(["images", 0, "file_name"], "/etc/x.jpg"), "must be a path inside"),
    (_set(["annotations", 1, "id"], "11"), "annotations record 1: id must be an integer"),
    (_set(["annotations", 0, "bbox"], [1, 2, 3]), "annotations record 0: bbox must be 4 numbers"),
    (_set(["annotations", 0, "iscrowd"], "no"), "annotations record 0: iscrowd must be 0 or 1"),
    (_set(["annotations", 0], []), "annotations record 0: an annotation must be an object"),
    (_set(["categories", 0, "name"], 5), "categories record 0: name must be a string"),
    # Segmentations are checked when used (annotation 10 is the first ref's target).
    (
        _set(["annotations", 0, "segmentation"], {"size": [48, 64], "counts": [5, -1]}),
        "annotation 10: RLE counts must not be negative",
    ),
    (
        _set(["annotations", 0, "segmentation"], {"size": [48, 64], "counts": 3072}),
        "annotation 10: RLE counts must be a string or a list of integers, not int",
    ),
    (
        _set(["annotations", 0, "segmentation"], {"size": [48, 64], "counts": [0, 10]}),
        "annotation 10: RLE counts add up to 10 pixels, but size 48x64 has 3072",
    ),
    (
        _set(["annotations", 0, "segmentation"], [[0, 0, 1e9, 0, 1e9, float("nan")]]),
        "annotation 10: polygon 0 has a coordinate that is not a finite number",
    ),
]


@pytest.mark.parametrize(("corrupt", "message"), COCO_CASES)
def test_instances_records(tmp_path: Path, corrupt, message) -> None:
    root = write_refer(tmp_path / "refcocog", with_images=False)
    data = coco_instances()
    corrupt(data)
    (root / "instances.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        open_dataset(f"refcocog:{root}:val", check_images=False)
    text = _one_line(info)
    assert text.startswith(f"{root / 'instances.json'}: ") and message in text


@pytest.mark.parametrize(
    ("text", "message"),
    [(hostile_files.deep_json(), "nested too deeply"), ("[" + "9" * 5000 + "]", "4300 digits")],
)
def test_json_bombs_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    """Deep nesting (RecursionError) and huge integers (a plain ValueError) in every JSON reader."""
    root = write_refer(tmp_path / "refcocog", with_images=False)
    (root / "instances.json").write_text(text)
    with pytest.raises(InputError, match=message) as info:
        open_dataset(f"refcocog:{root}", check_images=False)
    _one_line(info)
    lines = tmp_path / "x.jsonl"
    lines.write_text("\n" + text + "\n")
    with pytest.raises(InputError, match=f"x.jsonl:2: bad JSON.*{message}") as info:
        open_dataset(f"jsonl:{lines}")
    _one_line(info)
    reasonseg = _reasonseg(tmp_path / "reasonseg")
    (reasonseg / "val" / "cat_on_sofa.json").write_text(text)
    with pytest.raises(InputError, match=message) as info:
        open_dataset(f"reasonseg:{reasonseg}:val")
    _one_line(info)


REASONSEG_CASES = [
    (_set(["text"], 5), "'text' must be a list of strings"),
    (_set(["text"], ["ok", 3]), "'text' must be a list of strings"),
    (_set(["shapes"], {"a": 1}), "'shapes' must be a list"),
    (_set(["shapes", 0, "label"], ["target"]), "shape #0 label must be a string"),
    (_set(["shapes", 0, "points"], "1,2"), "shape #0 points must be a list"),
    (_set(["shapes", 0, "points"], [[1, 2], [3, 4], [5]]), "points must be [x, y] pairs"),
    (_set(["shapes", 0, "points"], [[1, 2], [3, "4"], [5, 6]]), "coordinates must be numbers"),
    (_set(["shapes", 0, "points"], [[1, 2], [3, 1e999], [5, 6]]), "not a finite number"),
    (_set(["is_sentence"], "no"), "'is_sentence' must be true or false"),
    (_set(["shapes"], [{"points": [[0, 0], [1, 0], [1, 1]]}] * 1001), "1001 shapes"),
    (lambda data: data.clear(), "missing 'shapes'"),
]


@pytest.mark.parametrize(("corrupt", "message"), REASONSEG_CASES)
def test_reasonseg_records(tmp_path: Path, corrupt, message) -> None:
    root = _reasonseg(tmp_path / "reasonseg")
    path = root / "val" / "cat_on_sofa.json"
    data = json.loads(path.read_text())
    corrupt(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        open_dataset(f"reasonseg:{root}:val")
    text = _one_line(info)
    assert text.startswith(f"{path}: ") and message in text


def test_reasonseg_far_points_are_clipped_not_fatal(tmp_path: Path) -> None:
    """A vertex at 1e12 wrapped around in the int32 cast; now it is clipped to the image."""
    root = _reasonseg(tmp_path / "reasonseg")
    path = root / "val" / "cat_on_sofa.json"
    data = json.loads(path.read_text())
    data["shapes"] = [{"label": "target", "points": [[0, 0], [1e12, 0], [1e12, 1e12]]}]
    path.write_text(json.dumps(data))
    (sample,) = open_dataset(f"reasonseg:{root}:val")
    from refseg import masks

    dense = masks.decode(sample.masks[0])
    # the triangle above the diagonal x >= y of the 60x40 image
    assert dense[0, 59] and dense[39, 59] and not dense[39, 0]


REFCOCOM_CASES = [
    ({"id": "77"}, "row 0: instance 0 id must be an integer, got '77'"),
    ({"mask": {"counts": "25", "size": [30, 40]}}, "row 0: instance 0 mask: RLE counts add up"),
    (
        {"mask": {"counts": "x", "size": [10**4, 10**4]}},
        "row 0: instance 0 mask: RLE size 10000x10000",
    ),
    ({"bbox": [1.0, 2.0, float("nan"), 1.0]}, "row 0: instance 0 bbox must hold finite"),
    ({"label": 1.5}, "row 0: instance 0 label must be an integer"),
    ({"category": 5}, "row 0: instance 0 category must be a string"),
]


@pytest.mark.parametrize(("change", "message"), REFCOCOM_CASES)
def test_refcocom_rows(tmp_path: Path, change, message) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, _ = _refcocom(tmp_path / "refcoco-m")
    shard = root / "data" / "validation-00000-of-00001.parquet"
    rows = pq.read_table(shard).to_pylist()
    rows[0]["samples"][0].update(change)
    pq.write_table(pa.Table.from_pylist(rows), shard)  # schema inferred from the bad values
    with pytest.raises(InputError) as info:
        open_dataset(f"refcoco-m:{root}")
    assert _one_line(info).startswith(f"{shard}: {message}")
