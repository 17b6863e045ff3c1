"""`refseg data ...` commands end to end (small sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from refseg.cli import main
from refseg.data import open_dataset
from tests.data.helpers import write_refer


def test_refshapes_command_writes_a_readable_set(tmp_path: Path, capsys) -> None:
    out = tmp_path / "shapes"
    args = ["data", "refshapes", "--out", str(out), "--n", "4", "--seed", "2"]
    args += ["--size", "128", "--splits", "train,ood=3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"wrote 7 samples to {out}" in text and "ood: 3 samples" in text
    assert len(open_dataset(f"refshapes:{out}:train")) == 4
    assert len(open_dataset(f"refshapes:{out}:ood")) == 3
    assert main(args) == 0
    assert "already holds this RefShapes set" in capsys.readouterr().out
    manifest = json.loads((out / "refshapes.json").read_text())
    assert manifest["settings"]["splits"] == {"train": 4, "ood": 3}
    assert manifest["held_out_combos"] and manifest["ood_templates"]


def test_refshapes_command_single_fraction(tmp_path: Path, capsys) -> None:
    out = tmp_path / "easy"
    args = ["data", "refshapes", "--out", str(out), "--splits", "train=5", "--size", "128"]
    assert main([*args, "--single-fraction", "1"]) == 0
    manifest = json.loads((out / "refshapes.json").read_text())
    assert manifest["statistics"]["train"]["n_objects"] == {"1": 5}
    assert main([*args, "--single-fraction", "2"]) == 2  # out of range: a usage error
    assert main(args) == 2  # the default differs from the set in the folder
    assert "other settings" in capsys.readouterr().err


def test_refshapes_command_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code = main(["data", "refshapes", "--out", str(tmp_path / "x"), "--splits", "dev"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("refseg: error: --splits: unknown split 'dev'") and err.count("\n") == 1


def test_export_and_info(tmp_path: Path, capsys) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    out = tmp_path / "val.jsonl"
    assert main(["data", "export", "--dataset", f"refcoco:{root}:val", "--out", str(out)]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    assert [s.id for s in open_dataset(f"jsonl:{out}")] == [
        s.id for s in open_dataset(f"refcoco:{root}:val")
    ]
    assert main(["data", "info", f"jsonl:{out}"]) == 0
    assert "3 samples, 1 images" in capsys.readouterr().out
    assert main(["data", "export", "--dataset", f"refcoco:{root}:testB", "--out", str(out)]) == 2
    assert "unknown split 'testB'" in capsys.readouterr().err


def test_coco_command(coco_sample: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "coco.jsonl"
    code = main(
        [
            "data",
            "coco",
            "--instances",
            str(coco_sample / "instances.json"),
            "--images",
            str(coco_sample / "images"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    samples = open_dataset(f"jsonl:{out}")
    assert samples and all(s.image.is_file() for s in samples)
    assert {s.phrase for s in samples} >= {"person"}


def test_coco_per_instance_output(coco_sample: Path, tmp_path: Path, coco_instances) -> None:
    """Issue 10: --per-instance marked every sample iscrowd and repeated the crowd mask on
    every line. Now each line is one non-crowd instance: its own flag, no copied crowd mask."""
    out = tmp_path / "inst.jsonl"
    args = ["data", "coco", "--instances", str(coco_sample / "instances.json")]
    assert main([*args, "--images", str(coco_sample / "images"), "--out", str(out)]) == 0
    per_category = [json.loads(line) for line in out.read_text().splitlines()]
    assert main([*args, "--images", str(coco_sample / "images"), "--out", str(out),
                 "--per-instance"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    solid = [a for a in coco_instances["annotations"] if not a["iscrowd"]]
    crowd = {a["id"] for a in coco_instances["annotations"] if a["iscrowd"]}
    assert len(lines) == len(solid) and crowd
    for line in lines:
        meta = line["meta"]
        assert meta["iscrowd"] is False and "ignore" not in meta
        assert not set(meta["ann_ids"]) & crowd
        assert set(meta.get("crowd_ann_ids", [])) <= crowd
    assert any(line["meta"].get("crowd_ann_ids") for line in lines)
    # The per-category form still says which categories have crowd regions, with their mask.
    assert any(line["meta"]["iscrowd"] and "ignore" in line["meta"] for line in per_category)


def test_coco_min_area_keeps_the_instances_the_readme_measures(
    coco_sample: Path, tmp_path: Path, coco_instances, capsys
) -> None:
    out = tmp_path / "big.jsonl"
    args = ["data", "coco", "--instances", str(coco_sample / "instances.json"),
            "--images", str(coco_sample / "images"), "--out", str(out)]  # fmt: skip
    assert main([*args, "--per-instance", "--min-area", "400"]) == 0
    kept = sorted((a["image_id"], a["id"]) for a in coco_instances["annotations"]
                  if not a["iscrowd"] and a["area"] >= 400)  # fmt: skip
    lines = [json.loads(line)["meta"] for line in out.read_text().splitlines()]
    assert sorted((m["image_id"], m["ann_ids"][0]) for m in lines) == kept and len(kept) == 36
    capsys.readouterr()
    assert main([*args, "--min-area", "400"]) == 2  # per category it would drop true targets
    assert "--min-area" in capsys.readouterr().err


def test_info_takes_dataset_as_option_and_positional(tmp_path: Path, capsys) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    spec = f"refcoco:{root}:val"
    assert main(["data", "info", "--dataset", spec]) == 0
    assert "3 samples, 1 images" in capsys.readouterr().out
    assert main(["data", "info", spec]) == 0  # the older positional form keeps working
    assert "3 samples, 1 images" in capsys.readouterr().out
    assert main(["data", "info"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["data", "info", spec, "--dataset", spec]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_refshapes_help_shows_the_defaults(capsys) -> None:
    from refseg.cli.data import SINGLE_FRACTION
    from refseg.data import refshapes

    assert SINGLE_FRACTION == refshapes.SINGLE_FRACTION
    assert main(["data", "refshapes", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: {refshapes.SINGLE_FRACTION}" in text
    assert "scenes ;" not in text and "EACH split" in text
