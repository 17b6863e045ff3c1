"""Ref-YouTube-VOS, Ref-DAVIS17 and MeViS readers on files generated in their layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.errors import InputError
from refseg.video.datasets import read_mevis, read_ref_davis, read_ref_youtube_vos


def palette_png(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.save(path)


def jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (90, 90, 90)).save(path)


def ids_map() -> np.ndarray:
    ids = np.zeros((6, 8), np.uint8)
    ids[:3, :4] = 1
    ids[3:, 4:] = 2
    return ids


def test_ref_youtube_vos(tmp_path: Path) -> None:
    meta = {
        "videos": {
            "abc123": {
                "expressions": {
                    "0": {"exp": "a cat on the left", "obj_id": "1"},
                    "1": {"exp": "the dog", "obj_id": "2"},
                },
                "frames": ["00000", "00005"],
            }
        }
    }
    (tmp_path / "meta_expressions/train").mkdir(parents=True)
    (tmp_path / "meta_expressions/train/meta_expressions.json").write_text(json.dumps(meta))
    for name in ("00000", "00005"):
        jpg(tmp_path / f"train/JPEGImages/abc123/{name}.jpg")
    palette_png(tmp_path / "train/Annotations/abc123/00000.png", ids_map())
    items = list(read_ref_youtube_vos(tmp_path, "train"))
    assert [(i.video, i.expression, i.obj_ids) for i in items] == [
        ("abc123", "a cat on the left", [1]),
        ("abc123", "the dog", [2]),
    ]
    assert items[0].frames[1].name == "00005.jpg" and items[0].frames[1].is_file()
    assert items[0].gt(0).sum() == 12 and items[1].gt(0)[5, 7]
    assert items[0].gt(1) is None  # not annotated


def test_ref_davis_text_annotations(tmp_path: Path) -> None:
    davis = tmp_path / "DAVIS"
    for t in range(3):
        jpg(davis / f"JPEGImages/480p/bike-packing/{t:05d}.jpg")
        palette_png(davis / f"Annotations/480p/bike-packing/{t:05d}.png", ids_map())
    text = tmp_path / "Davis17_annot1.txt"
    text.write_text('bike-packing 1 "a black bike"\nbike-packing 2 "a man riding"\n')
    items = list(read_ref_davis(davis, text))
    assert [(i.expression, i.obj_ids, len(i.frames)) for i in items] == [
        ("a black bike", [1], 3),
        ("a man riding", [2], 3),
    ]
    assert items[1].gt(2).sum() == 12
    text.write_text('../etc 1 "escape"\n')
    with pytest.raises(InputError, match="not a plain file name"):
        list(read_ref_davis(davis, text))


def test_mevis_union_of_annotations(tmp_path: Path) -> None:
    meta = {
        "videos": {
            "v1": {
                "expressions": {
                    "0": {"exp": "the two horses moving left", "obj_id": [0, 1], "anno_id": [7, 8]}
                },
                "frames": ["00000", "00001"],
            }
        }
    }
    (tmp_path / "valid_u").mkdir()
    (tmp_path / "valid_u/meta_expressions.json").write_text(json.dumps(meta))
    a, b = ids_map() == 1, ids_map() == 2
    mask_dict = {"7": [masks.encode(a), None], "8": [masks.encode(b), masks.encode(b)]}
    (tmp_path / "valid_u/mask_dict.json").write_text(json.dumps(mask_dict))
    (item,) = read_mevis(tmp_path, "valid_u")
    assert item.obj_ids == [0, 1] and item.expression == "the two horses moving left"
    assert np.array_equal(item.gt(0), a | b) and np.array_equal(item.gt(1), b)
    mask_dict["8"] = [masks.encode(b)]  # one entry short
    (tmp_path / "valid_u/mask_dict.json").write_text(json.dumps(mask_dict))
    with pytest.raises(InputError, match="one entry per frame"):
        list(read_mevis(tmp_path, "valid_u"))


def test_missing_and_malformed_metadata_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_ref_youtube_vos(tmp_path))
    (tmp_path / "valid_u").mkdir()
    (tmp_path / "valid_u/meta_expressions.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r'expected \{"videos"'):
        list(read_mevis(tmp_path, "valid_u"))
