"""RefShapes: exact masks, unambiguous expressions, split hygiene, determinism, resumability."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from refseg import masks
from refseg.data import open_dataset
from refseg.data import refshapes as rs
from refseg.data.refshapes_language import TEMPLATES
from refseg.data.refshapes_scene import COLOURS
from refseg.errors import InputError

SIZE = 128
OOD_TEMPLATES = {t[0] for templates in TEMPLATES.values() for t in templates if t[2]}


def _samples(split: str, n: int, seed: int = 5) -> list[tuple[np.ndarray, dict]]:
    return [rs.make_sample(split, i, seed=seed, size=SIZE) for i in range(n)]


@pytest.fixture(scope="module")
def train() -> list[tuple[np.ndarray, dict]]:
    return _samples("train", 260)


@pytest.fixture(scope="module")
def ood() -> list[tuple[np.ndarray, dict]]:
    return _samples("ood", 160)


def _matching(objects: list[dict], descriptor: dict) -> list[int]:
    return [
        i
        for i, o in enumerate(objects)
        if descriptor["colour"] in (None, o["colour"]) and descriptor["shape"] in (None, o["shape"])
    ]


def test_every_kind_and_difficulty_occurs(train) -> None:
    kinds = {r["meta"]["kind"] for _, r in train}
    assert kinds == {"attribute", "position", "relation", "comparison", "multi", "no_target"}
    assert {r["meta"]["difficulty"] for _, r in train} == {"easy", "medium", "hard"}
    assert any(r["meta"]["n_objects"] == 1 for _, r in train)
    assert all(r["meta"]["template"] for _, r in train)


def test_masks_are_the_visible_pixels_of_the_targets(train) -> None:
    for image, record in train:
        meta = record["meta"]
        assert len(record["masks"]) == len(meta["targets"]) == len(record["boxes"])
        dense = [masks.decode(m) for m in record["masks"]]
        for k, (mask, target) in enumerate(zip(dense, meta["targets"])):
            obj = meta["objects"][target]
            assert mask.any()
            assert obj["visible"] >= 0.7  # heavily occluded objects are never targets
            # Box bookkeeping agrees with the mask.
            assert masks.to_bbox(record["masks"][k]) == pytest.approx(obj["box"])
            # The pixels under the mask are painted in the target's colour: inside the (darker)
            # rim, the mean is nearest the named colour.
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            mean = image[inner if inner.any() else mask].astype(float).mean(axis=0)
            distances = {c: np.linalg.norm(mean - np.asarray(v)) for c, v in COLOURS.items()}
            assert min(distances, key=distances.get) == obj["colour"], (record["id"], distances)
        for a in range(len(dense)):
            for b in range(a + 1, len(dense)):
                assert not (dense[a] & dense[b]).any()


def test_expressions_are_unambiguous_against_the_scene(train) -> None:
    for _, record in train:
        meta = record["meta"]
        objects, kind, targets = meta["objects"], meta["kind"], meta["targets"]
        group = _matching(objects, meta["descriptor"])
        if kind == "attribute":
            assert group == targets, record["phrase"]
        elif kind == "no_target":
            assert group == [] and record["masks"] == [], record["phrase"]
        elif kind == "multi":
            assert group == targets and len(targets) >= 2, record["phrase"]
        elif kind == "comparison":
            assert len(group) == 2 and targets[0] in group, record["phrase"]
            other = next(i for i in group if i != targets[0])
            sizes = ["small", "medium", "large"]
            order = sizes.index(objects[targets[0]]["size"]) - sizes.index(objects[other]["size"])
            assert order != 0
            assert (order > 0) == (meta["comparative"] == "larger"), record["phrase"]
        elif kind == "position":
            assert len(group) >= 2 and targets[0] in group
            axis = 0 if meta["direction"] in ("left", "right") else 1
            sign = 1 if meta["direction"] in ("left", "top") else -1

            centre = {
                i: sign * (objects[i]["box"][axis] + objects[i]["box"][axis + 2]) / 2 for i in group
            }
            assert all(centre[targets[0]] < centre[i] for i in group if i != targets[0])
        elif kind == "relation":
            candidates = [i for i in group if i != meta["anchor"]]
            assert len(candidates) >= 2 and targets[0] in candidates
            anchor = objects[meta["anchor"]]
            target = objects[targets[0]]
            a_box, t_box = anchor["box"], target["box"]
            gap = {
                "above": a_box[1] - t_box[3],
                "below": t_box[1] - a_box[3],
                "left": a_box[0] - t_box[2],
                "right": t_box[0] - a_box[2],
            }[meta["direction"]]
            assert gap > 0, record["phrase"]
        # The anchor is named by a phrase matching it alone.
        if "anchor" in meta:
            assert meta["anchor"] not in targets


def test_held_out_combos_and_templates_never_leave_the_ood_split(train, ood) -> None:
    held_out = {tuple(c) for c in rs.HELD_OUT_COMBOS}
    for _, record in train:
        meta = record["meta"]
        assert not any((o["colour"], o["shape"]) in held_out for o in meta["objects"])
        assert (meta["descriptor"]["colour"], meta["descriptor"]["shape"]) not in held_out
        assert meta["template"] not in OOD_TEMPLATES
        assert "ood" not in meta
    reasons = {"combo": 0, "template": 0}
    for _, record in ood:
        meta = record["meta"]
        assert meta["ood"], record["id"]
        involved = meta["targets"] + ([meta["anchor"]] if "anchor" in meta else [])
        combo = any(
            (meta["objects"][i]["colour"], meta["objects"][i]["shape"]) in held_out
            for i in involved
        )
        named = (meta["descriptor"]["colour"], meta["descriptor"]["shape"]) in held_out
        assert ("combo" in meta["ood"]) == (combo or named)
        assert ("template" in meta["ood"]) == (meta["template"] in OOD_TEMPLATES)
        for reason in meta["ood"]:
            reasons[reason] += 1
    assert reasons["combo"] > 20 and reasons["template"] > 20


def test_make_sample_is_a_pure_function_of_its_arguments() -> None:
    a_image, a_record = rs.make_sample("val", 7, seed=11, size=SIZE)
    b_image, b_record = rs.make_sample("val", 7, seed=11, size=SIZE)
    assert np.array_equal(a_image, b_image) and a_record == b_record
    c_image, _ = rs.make_sample("val", 7, seed=12, size=SIZE)
    d_image, _ = rs.make_sample("test", 7, seed=11, size=SIZE)
    assert not np.array_equal(a_image, c_image) and not np.array_equal(a_image, d_image)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        rs.make_sample("dev", 0)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_output(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rs, "CHUNK", 7)
    counts = {"train": 16, "ood": 9}
    first = rs.generate_refshapes(tmp_path / "a", counts, seed=3, size=SIZE)
    rs.generate_refshapes(tmp_path / "b", counts, seed=3, size=SIZE)
    digest = _digest(tmp_path / "a")
    assert digest == _digest(tmp_path / "b")
    assert sorted(digest)[:3] == [
        "images/ood/000000.png",
        "images/ood/000001.png",
        "images/ood/000002.png",
    ]
    assert {"train.jsonl", "ood.jsonl", "refshapes.json"} <= set(digest)
    assert not (tmp_path / "a" / ".parts").exists()
    assert first["statistics"]["train"]["samples"] == 16
    rs.generate_refshapes(tmp_path / "c", counts, seed=4, size=SIZE)
    assert _digest(tmp_path / "c")["train.jsonl"] != digest["train.jsonl"]
    # Read back through the dataset spec the training code uses.
    samples = open_dataset(f"refshapes:{tmp_path / 'a'}:train")
    assert len(samples) == 16 and all(s.image.is_file() for s in samples)
    assert samples[0].width == SIZE and samples[0].meta["split"] == "train"


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rs, "CHUNK", 5)
    counts = {"train": 12, "val": 6}
    rs.generate_refshapes(tmp_path / "fresh", counts, seed=9, size=SIZE)

    calls = []

    def stop_after_two(split: str, done: int) -> None:
        calls.append((split, done))
        if len(calls) == 2:
            raise KeyboardInterrupt

    target = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        rs.generate_refshapes(target, counts, seed=9, size=SIZE, progress=stop_after_two)
    # Nothing half-written: no split JSONL yet, manifest says incomplete.
    assert not (target / "train.jsonl").exists()
    assert json.loads((target / "refshapes.json").read_text())["complete"] is False
    done: list[tuple[str, int]] = []
    rs.generate_refshapes(
        target, counts, seed=9, size=SIZE, progress=lambda s, n: done.append((s, n))
    )
    assert sum(n for _, n in done) == 18  # skipped chunks are reported too
    assert _digest(target) == _digest(tmp_path / "fresh")


def test_output_folder_safety(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty and holds no RefShapes set"):
        rs.generate_refshapes(other, {"train": 2}, size=SIZE)
    made = tmp_path / "made"
    rs.generate_refshapes(made, {"train": 2}, seed=1, size=SIZE)
    with pytest.raises(InputError, match="other settings; use another --out or --overwrite"):
        rs.generate_refshapes(made, {"train": 3}, seed=1, size=SIZE)
    rs.generate_refshapes(made, {"train": 3}, seed=1, size=SIZE, overwrite=True)
    assert len(open_dataset(f"refshapes:{made}:train")) == 3
    # Same settings again: a no-op returning the manifest.
    assert rs.generate_refshapes(made, {"train": 3}, seed=1, size=SIZE)["complete"] is True


def test_single_fraction_makes_a_one_object_curriculum_set(tmp_path: Path) -> None:
    made = rs.generate_refshapes(
        tmp_path / "easy", {"train": 12}, seed=2, size=SIZE, single_fraction=1.0
    )
    assert made["settings"]["single_fraction"] == 1.0
    assert made["statistics"]["train"]["n_objects"] == {"1": 12}
    # The default is not written into the manifest, so earlier sets stay valid.
    default = rs.generate_refshapes(tmp_path / "default", {"train": 12}, seed=2, size=SIZE)
    assert "single_fraction" not in default["settings"]
    assert set(default["statistics"]["train"]["n_objects"]) != {"1"}
    with pytest.raises(InputError, match="other settings"):
        rs.generate_refshapes(tmp_path / "easy", {"train": 12}, seed=2, size=SIZE)
    with pytest.raises(InputError, match="between 0 and 1"):
        rs.generate_refshapes(tmp_path / "bad", {"train": 1}, size=SIZE, single_fraction=1.5)


def test_parse_splits() -> None:
    assert rs.parse_splits("train,val", 10) == {"train": 10, "val": 10}
    assert rs.parse_splits("train=5, ood=2", 10) == {"train": 5, "ood": 2}
    with pytest.raises(InputError, match="unknown split 'dev'"):
        rs.parse_splits("train,dev", 1)
    with pytest.raises(InputError, match="must be an integer"):
        rs.parse_splits("train=x", 1)
