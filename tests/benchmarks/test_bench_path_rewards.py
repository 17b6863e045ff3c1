"""benchmarks/bench_path_rewards.py runs at toy size and prints the JSON the README quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_path_rewards.py"


def test_prints_timings_and_full_resolution_is_its_own_reference(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--group", "2", "--scales", "1", "0.25", "--repeats", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(run.stdout)["rows"]
    assert [r["scale"] for r in rows] == [1.0, 0.25]
    assert all(r["ms_per_rollout"] > 0 for r in rows)
    assert rows[0]["mask_iou_abs_err_max"] == 0.0
    assert 0.0 < rows[1]["mask_iou_abs_err_max"] < 0.2  # a quarter-size raster is not exact
    assert 0.3 < rows[0]["mean_mask_iou"] < 1.0  # jittered rollouts: neither perfect nor empty
