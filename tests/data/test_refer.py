"""REFER (RefCOCO/+/g) and gRefCOCO readers on fixtures in the published layout."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from refseg import masks
from refseg.data import open_dataset
from refseg.data.safe_pickle import load_data_pickle, loads_data_pickle
from refseg.errors import InputError
from tests.data.helpers import grefs, refs, write_grefcoco, write_refer


def _rect(height: int, width: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    out = np.zeros((height, width), dtype=bool)
    out[y1:y2, x1:x2] = True
    return out


def test_refcocog_val_one_sample_per_sentence(tmp_path: Path) -> None:
    root = write_refer(tmp_path / "refcocog", "umd")
    samples = open_dataset(f"refcocog:{root}:val")
    expected = [s for r in refs() if r["split"] == "val" for s in r["sentences"]]
    assert [s.phrase for s in samples] == [s["sent"] for s in expected]
    first = samples[0]
    assert first.id == "refcocog-umd:100:1000"
    assert first.image == root / "images" / "COCO_train2014_000000000001.jpg"
    assert (first.width, first.height) == (64, 48)
    assert first.meta["split"] == "val" and first.meta["category"] == "person"
    assert first.meta["raw"] == "Man on the left."
    assert first.boxes == [[10.0, 10.0, 30.0, 20.0]]
    # The polygon rectangle 10..30 x 10..20 rasterises to (almost exactly) that rectangle.
    assert masks.iou(first.masks[0], masks.encode(_rect(48, 64, 10, 10, 30, 20))) > 0.9
    # The two sentences of one ref share one mask; another ref has a different one.
    assert samples[1].masks[0] == first.masks[0]
    assert masks.iou(samples[2].masks[0], first.masks[0]) == 0.0


def test_all_splits_and_rle_annotations(tmp_path: Path) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    samples = open_dataset(f"refcoco:{root}")
    assert len(samples) == sum(len(r["sentences"]) for r in refs())
    dog = next(s for s in samples if s.meta["ref_id"] == 102)
    # Uncompressed-RLE annotation decoded to the exact rectangle.
    assert np.array_equal(masks.decode(dog.masks[0]), _rect(40, 40, 20, 5, 30, 15))
    assert dog.id.startswith("refcoco-unc:")


def test_google_and_plus_kinds_read_their_own_pickles(tmp_path: Path) -> None:
    google = write_refer(tmp_path / "refcocog", "google")
    assert open_dataset(f"refcocog-google:{google}:train")[0].id == "refcocog-google:102:1003"
    with pytest.raises(InputError, match=r"refs\(umd\)\.p: no such file.*refs\(google\)\.p"):
        open_dataset(f"refcocog:{google}:val")
    plus = write_refer(tmp_path / "refcoco+", "unc")
    assert open_dataset(f"refcoco+:{plus}:test")[0].id == "refcoco+-unc:103:1004"


def test_unknown_split_lists_the_available_ones(tmp_path: Path) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    with pytest.raises(InputError, match=r"unknown split 'testA'; this file has: test, train, val"):
        open_dataset(f"refcoco:{root}:testA")


def test_missing_and_broken_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        open_dataset(f"refcoco:{tmp_path / 'nope'}:val")
    root = write_refer(tmp_path / "refcoco", "unc")
    (root / "instances.json").write_text('{"images": [')
    with pytest.raises(InputError) as info:
        open_dataset(f"refcoco:{root}:val")
    assert "instances.json: bad JSON" in str(info.value) and "\n" not in str(info.value)
    (root / "instances.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="missing the 'annotations' list"):
        open_dataset(f"refcoco:{root}:val")
    (root / "refs(unc).p").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"refs\(unc\)\.p: not a readable pickle"):
        open_dataset(f"refcoco:{root}:val")


def test_images_folder_option_env_and_missing_images(tmp_path: Path, monkeypatch) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    elsewhere = tmp_path / "coco" / "train2014"
    shutil.move(str(root / "images"), str(elsewhere))
    monkeypatch.delenv("REFSEG_COCO_IMAGES", raising=False)
    with pytest.raises(InputError, match=r"2 of 2 images are missing under .*REFSEG_COCO_IMAGES"):
        open_dataset(f"refcoco:{root}")
    # Annotations alone can still be read.
    assert open_dataset(f"refcoco:{root}:val", check_images=False)
    samples = open_dataset(f"refcoco:{root}:val", images_dir=elsewhere)
    assert samples[0].image.parent == elsewhere
    monkeypatch.setenv("REFSEG_COCO_IMAGES", str(elsewhere))
    assert open_dataset(f"refcoco:{root}:val")[0].image.parent == elsewhere
    # REFER's own layout: data/images/mscoco/images/train2014 beside data/refcoco.
    monkeypatch.delenv("REFSEG_COCO_IMAGES")
    refer_layout = tmp_path / "images" / "mscoco" / "images" / "train2014"
    refer_layout.parent.mkdir(parents=True)
    shutil.move(str(elsewhere), str(refer_layout))
    assert open_dataset(f"refcoco:{root}:val")[0].image.parent == refer_layout


def test_limit(tmp_path: Path) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    assert len(open_dataset(f"refcoco:{root}", limit=2)) == 2


class _Payload:
    """Pickles to ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_executes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps([{"ref_id": 1, "x": _Payload(marker)}], protocol=2)
    # Control: the payload is live under the standard unpickler.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    root = write_refer(tmp_path / "refcoco", "unc")
    (root / "refs(unc).p").write_bytes(payload)
    with pytest.raises(InputError) as info:
        open_dataset(f"refcoco:{root}:val")
    message = str(info.value)
    assert "refused to load" in message and "system" in message and "\n" not in message
    assert not marker.exists()


def test_python2_pickles_decode_byte_strings() -> None:
    # A protocol-2 pickle as Python 2 writes it: [{'sent': 'caf\xc3\xa9'}] with str = bytes.
    py2 = b"\x80\x02]q\x00}q\x01U\x04sentq\x02U\x05caf\xc3\xa9q\x03sa."
    assert loads_data_pickle(py2) == [{"sent": "café"}]


def test_load_data_pickle_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_data_pickle(tmp_path / "refs(unc).p")


def test_grefcoco_multi_and_no_target(tmp_path: Path) -> None:
    root = write_grefcoco(tmp_path / "grefcoco")
    samples = {s.meta["ref_id"]: s for s in open_dataset(f"grefcoco:{root}:val")}
    assert set(samples) == {r["ref_id"] for r in grefs() if r["split"] == "val"}
    both = samples[1]
    assert len(both.masks) == 2 and not both.no_target and len(both.boxes) == 2
    assert both.meta["ann_ids"] == [10, 11]
    assert samples[2].no_target and samples[2].masks == [] and samples[2].meta["no_target"]
    assert len(samples[3].masks) == 1  # a bare int ann_id
    # The crowd annotation is recorded but not a target.
    assert samples[4].meta["ann_ids"] == [11] and samples[4].meta["crowd_ann_ids"] == [13]
    assert samples[1].image.parent == tmp_path / "images" / "train2014"
    assert samples[1].id == "grefcoco-unc:1:1"


def test_grefcoco_errors(tmp_path: Path) -> None:
    root = write_grefcoco(tmp_path / "grefcoco")
    with pytest.raises(InputError, match=r"unknown split 'testA'; this file has: train, val"):
        open_dataset(f"grefcoco:{root}:testA")
    data = grefs()
    data[0]["ann_id"] = [12]  # an annotation of another image
    (root / "grefs(unc).json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="annotation 12 belongs to image 2, not 1"):
        open_dataset(f"grefcoco:{root}:val")
    (root / "grefs(unc).json").unlink()
    with pytest.raises(InputError, match=r"grefs\(unc\)\.json: no such file"):
        open_dataset(f"grefcoco:{root}:val")


def test_unknown_kind_lists_known_kinds() -> None:
    with pytest.raises(
        InputError, match=r"dataset kind 'refclef' is unknown; known kinds: .*refcoco"
    ):
        open_dataset("refclef:/tmp:val")
