"""examples/train_paths_proof.py at toy size: step budgets, matched controls, intervals, (a-c)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_paths_proof.py"
TOY = [
    "--n-train", "6", "--n-val", "2", "--n-eval", "3", "--n-single", "4", "--n-warmup", "4",
    "--n-refine-eval", "2", "--warmup-steps", "2", "--single-steps", "1", "--sft-steps", "2",
    "--calibration-steps", "1", "--rl-steps", "1", "--rl-prompts", "2", "--group", "2",
    "--refiner-steps", "2", "--batch", "2", "--max-new-tokens", "12",
]  # fmt: skip


@pytest.fixture(scope="module")
def proof():
    spec = importlib.util.spec_from_file_location("train_paths_proof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_toy_run_of_all_three_experiments(proof, tmp_path: Path, capsys) -> None:
    from refseg import masks
    from refseg.data.base import open_dataset

    work = tmp_path / "w"
    assert proof.main(["--work", str(work), "--parts", "a,b", *TOY]) == 0
    summary = json.loads((work / "results-paths.json").read_text())
    stages = summary["stages"]
    path_steps = [
        stages["sft-path"]["curriculum"][k]["steps"] for k in ("warmup", "single", "refshapes")
    ]
    assert path_steps == [2, 1, 2]  # the path head runs its step budgets exactly
    rate = stages["calibration_box_cpu_s_per_step"]
    stage_names = ("warmup", "single", "refshapes")
    box_steps = [stages["sft-box"]["curriculum"][k]["steps"] for k in stage_names]
    path_cpu = [stages["sft-path"]["curriculum"][k]["cpu_seconds"] for k in stage_names]
    assert box_steps == [max(1, round(c / rate[k])) for c, k in zip(path_cpu, stage_names)]
    grpo = stages["sft-path+grpo"]
    last = stages["sft-path"]["curriculum"]["refshapes"]
    expected = max(1, round(grpo["cpu_seconds"] / (last["cpu_seconds"] / last["steps"])))
    assert grpo["steps"] == 1 and stages["sft-path-continued"]["steps"] == expected
    for name in ("sft-path", "sft-box", "sft-path+grpo", "sft-path-continued"):
        res = summary["results"][name]["test"]
        assert res["ci"]["all"]["gIoU"][0] <= res["all"]["gIoU"] <= res["ci"]["all"]["gIoU"][1]
    assert set(summary["comparisons"]) == {"a: path - box", "b: grpo - sft-continued"}
    recorded = (work / "rollouts" / "rollouts.jsonl").read_text().splitlines()
    assert len(recorded) == 1 * 2 * 2  # steps x prompts x group

    # (c) needs rollouts that rasterize to something; a toy model's rarely do, so add some
    # made from the GT the way a rollout records them (a shifted outline).
    samples = open_dataset(f"refshapes:{work / 'data'}:train")
    with open(work / "rollouts" / "rollouts.jsonl", "a") as handle:
        for s in samples[:2]:
            if not s.masks:
                continue
            gt = masks.decode(s.masks[0])
            coarse = np.roll(gt, 3, axis=1)
            record = {"step": 0, "index": 99, "sample_id": s.id, "image": str(s.image),
                      "width": s.width, "height": s.height, "masks": [masks.encode(coarse)],
                      "boxes": [None], "gt_masks": [m["counts"] for m in s.masks]}  # fmt: skip
            handle.write(json.dumps(record) + "\n")
    assert proof.main(["--work", str(work), "--parts", "c", *TOY]) == 0
    summary = json.loads((work / "results-paths.json").read_text())
    refiner_stages = summary["stages"]
    assert (
        refiner_stages["refiner[rollouts]"]["steps"]
        == refiner_stages["refiner[synthetic]"]["steps"]
        == refiner_stages["refiner[rollouts-vlm]"]["steps"]
        == 2
    )
    labels = {k for k in summary["results"] if "refiner=" in k}
    assert labels == {
        "sft-path refiner=none", "sft-path refiner=sam",
        "sft-path refiner=trained[rollouts]", "sft-path refiner=trained[synthetic]",
        "sft-path refiner=trained[rollouts-vlm]",
    }  # fmt: skip
    assert "c: rollouts - synthetic" in summary["comparisons"]
    assert "a: path - box" in summary["comparisons"]  # the earlier parts' results are kept
    assert "(n=" in capsys.readouterr().out
