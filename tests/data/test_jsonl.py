"""The JSONL interchange format: round trips, polygons, relative paths, errors, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refseg import masks
from refseg.data import Sample, open_dataset
from refseg.data.jsonl import export_jsonl, read_jsonl
from refseg.errors import InputError
from tests.data.helpers import write_image, write_refer


def _sample(tmp_path: Path, index: int, *, targets: int = 1) -> Sample:
    image = write_image(tmp_path / "ds" / "images" / f"{index}.png", 32, 24, fmt="PNG")
    rles = []
    for t in range(targets):
        dense = np.zeros((24, 32), dtype=bool)
        dense[2 + t * 5 : 6 + t * 5, 3 + index : 9 + index] = True
        rles.append(masks.encode(dense))
    return Sample(
        id=f"s{index}",
        image=image,
        phrase=f"thing {index}",
        masks=rles,
        width=32,
        height=24,
        meta={"kind": "test", "tuple": (1, 2), "path": Path("x")},
    )


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    samples = [
        _sample(tmp_path, 0),
        _sample(tmp_path, 1, targets=2),
        _sample(tmp_path, 2, targets=0),
    ]
    out = tmp_path / "ds" / "all.jsonl"
    assert export_jsonl(samples, out) == 3
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["image"] == "images/0.png"  # relative to the JSONL folder
    back = read_jsonl(out)
    assert [s.id for s in back] == ["s0", "s1", "s2"]
    for before, after in zip(samples, back):
        assert after.image == before.image.resolve()
        assert len(after.masks) == len(before.masks)
        for a, b in zip(before.masks, after.masks):
            assert np.array_equal(masks.decode(a), masks.decode(b))
    assert back[2].no_target
    assert back[0].meta == {"kind": "test", "tuple": [1, 2], "path": "x"}
    # Moving the folder keeps the images reachable.
    moved = tmp_path / "moved"
    (tmp_path / "ds").rename(moved)
    assert read_jsonl(moved / "all.jsonl")[1].image.is_file()


def test_images_outside_the_folder_are_absolute(tmp_path: Path) -> None:
    sample = _sample(tmp_path, 0)
    out = tmp_path / "elsewhere" / "x.jsonl"
    export_jsonl([sample], out)
    assert json.loads(out.read_text())["image"] == str(sample.image.resolve())


def test_polygon_masks_and_boxes(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    record = {
        "id": "a",
        "image": "a.png",
        "phrase": "box",
        "width": 20,
        "height": 10,
        "masks": [{"polygons": [[2, 2, 8, 2, 8, 6, 2, 6]]}],
        "boxes": [[2, 2, 8, 6]],
    }
    path.write_text(json.dumps(record) + "\n\n# comment\n")
    (sample,) = read_jsonl(path)
    assert sample.image == tmp_path / "a.png"
    assert masks.to_bbox(sample.masks[0]) == pytest.approx([2, 2, 8, 6], abs=1)
    assert sample.gt_boxes() == [[2.0, 2.0, 8.0, 6.0]]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "bad JSON"),
        ('{"id": "a"}', "missing 'image', 'phrase', 'masks', 'width', 'height'"),
        (
            '{"id":"a","image":"a.png","phrase":"x","masks":[{"size":[5,5],"counts":"25"}],'
            '"width":4,"height":5}',
            "mask size [5, 5] differs from height/width [5, 4]",
        ),
        (
            '{"id":"a","image":"a.png","phrase":" ","masks":[],"width":4,"height":5}',
            "'phrase' must be a non-empty string",
        ),
        (
            '{"id":"a","image":"a.png","phrase":"x","masks":{},"width":4,"height":5}',
            "'masks' must be a list",
        ),
        (
            '{"id":"a","image":"a.png","phrase":"x","masks":[],"width":0,"height":5}',
            "'width' must be a positive integer",
        ),
        (
            '{"id":"a","image":"a.png","phrase":"x","masks":[{"polygons":[[1,2]]}],'
            '"width":4,"height":5}',
            "'polygons' must be lists",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"id":"ok","image":"a.png","phrase":"x","masks":[],"width":4,"height":5}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(InputError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert problem in str(info.value)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    good = '{"id":"ok","image":"a.png","phrase":"x","masks":[],"width":4,"height":5}'
    path.write_text(good + "\n" + good + "\n")
    with pytest.raises(InputError, match=":2: duplicate id 'ok'"):
        read_jsonl(path)


def test_export_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")

    def broken():
        yield _sample(tmp_path, 0)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        export_jsonl(broken(), out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out.jsonl"]


def test_jsonl_and_refshapes_specs(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    export_jsonl([_sample(tmp_path, 0)], folder / "train.jsonl")
    export_jsonl([_sample(tmp_path, 1)], folder / "val.jsonl")
    assert open_dataset(f"refshapes:{folder}:val")[0].id == "s1"
    assert open_dataset(f"jsonl:{folder / 'train.jsonl'}")[0].id == "s0"
    with pytest.raises(InputError, match="unknown split 'ood'; found: train, val"):
        open_dataset(f"refshapes:{folder}:ood")
    with pytest.raises(InputError, match=r"name a split \(train, val\)"):
        open_dataset(f"refshapes:{folder}")
    with pytest.raises(InputError, match="expected a folder"):
        open_dataset(f"refshapes:{folder / 'train.jsonl'}")
    with pytest.raises(
        InputError, match=r"option\(s\) images_dir do not apply to refshapes datasets"
    ):
        open_dataset(f"refshapes:{folder}:val", images_dir=tmp_path)
    with pytest.raises(InputError, match="no such JSONL file"):
        open_dataset(f"jsonl:{tmp_path / 'none.jsonl'}")


def test_readers_export_to_jsonl(tmp_path: Path) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    samples = open_dataset(f"refcoco:{root}:val")
    out = tmp_path / "refcoco-val.jsonl"
    export_jsonl(samples, out)
    back = open_dataset(f"jsonl:{out}")
    assert [(s.id, s.phrase, s.width, s.height) for s in back] == [
        (s.id, s.phrase, s.width, s.height) for s in samples
    ]
    assert all(a.masks == b.masks and a.boxes == b.boxes for a, b in zip(samples, back))
    assert back[0].meta["ref_id"] == samples[0].meta["ref_id"]
