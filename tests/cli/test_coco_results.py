"""``--coco-results`` on ``refseg eval`` and ``refseg segment --batch``: files COCOeval scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refseg.data import open_dataset
from tests.interop.test_coco import coco_ap


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from refseg.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _renumbered(instances: dict, path: Path) -> Path:
    """The sample's ground truth with unique annotation ids (it repeats one, and pycocotools
    keeps one annotation per id)."""
    data = dict(instances)
    data["annotations"] = [
        dict(ann, id=k) for k, ann in enumerate(instances["annotations"], start=1)
    ]
    path.write_text(json.dumps(data))
    return path


def test_eval_writes_the_stored_instances_with_the_samples_coco_ids(
    coco_sample: Path, coco_instances: dict, tmp_path: Path, capsys
) -> None:
    samples = open_dataset(f"coco:{coco_sample}")
    predictions = tmp_path / "preds.jsonl"
    lines = [
        {"id": s.id, "image": {"width": s.width, "height": s.height}, "no_target": False,
         "instances": [{"mask": m, "score": 0.9} for m in s.masks]}
        for s in samples
    ]  # fmt: skip
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out, coco = tmp_path / "run", tmp_path / "coco.json"
    argv = ["eval", "--dataset", f"coco:{coco_sample}", "--predictions", str(predictions),
            "--out", str(out), "--no-report", "--coco-results", str(coco)]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert f"wrote {coco} (40 detections)" in err
    entries = json.loads(coco.read_text())
    assert {e["image_id"] for e in entries} == {142238, 439180}
    assert coco_ap(_renumbered(coco_instances, tmp_path / "gt.json"), coco) == pytest.approx(1.0)
    # an unwritable file is one line before anything runs
    code, _, err = _run([*argv[:-1], str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "is a folder" in err


def test_batch_writes_every_instance_and_cocoeval_scores_the_segmenter(
    coco_sample: Path, coco_instances: dict, tmp_path: Path, capsys
) -> None:
    """Ground-truth boxes of the three largest instances per photo as prompts, the real default
    segmenter: COCO mask AP between chance and perfect (its IoU is about 0.65) against those
    instances, image ids from the COCO file names."""
    names = {i["id"]: i["file_name"] for i in coco_instances["images"]}
    solid = [a for a in coco_instances["annotations"] if not a["iscrowd"]]
    chosen = [
        a
        for image_id in sorted(names)
        for a in sorted((a for a in solid if a["image_id"] == image_id), key=lambda a: -a["area"])[
            :3
        ]
    ]
    pairs = [
        {"image": str(coco_sample / "images" / names[a["image_id"]]), "id": str(k),
         "boxes": [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3]]]}
        for k, a in enumerate(chosen)
    ]  # fmt: skip
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out, coco = tmp_path / "run", tmp_path / "coco.json"
    argv = ["segment", "--batch", str(pairs_file), "--out", str(out), "--coco-results", str(coco)]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    entries = json.loads(coco.read_text())
    assert len(entries) == len(pairs) == 6 and {e["category_id"] for e in entries} == {1}
    assert [e["image_id"] for e in entries] == [142238] * 3 + [439180] * 3
    ground_truth = dict(coco_instances)
    ground_truth["annotations"] = [
        dict(a, id=k, category_id=1)
        for k, a in enumerate(chosen + [a for a in coco_instances["annotations"] if a["iscrowd"]])
    ]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(ground_truth))
    assert 0.2 < coco_ap(gt, coco) < 0.95
    # a rerun with nothing left to do writes it again
    coco.unlink()
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and "already done" in stdout and len(json.loads(coco.read_text())) == 6
    # one image's options are refused with it, in one line
    code, _, err = _run(["segment", pairs[0]["image"], "--box", "1,1,9,9",
                         "--coco-results", str(coco)], capsys)  # fmt: skip
    assert code == 2 and "--coco-results goes with --batch" in err
