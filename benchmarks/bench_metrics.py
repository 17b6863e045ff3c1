"""Speed of the metrics: RLE + cropped boundaries (``refseg.eval.metrics``) against a plain
dense-numpy implementation of the same definitions (``tests/eval/dense_reference.py``).

Scores N (default 5,000) synthetic predictions at 640x480: ground truth made of 1-3 ellipses or
polygons (10 % no-target), predictions shifted / grown / shrunk copies, plus empty answers,
false positives on no-target samples and failures. Asserts that both implementations give the
same per-sample integers and the same set-level metrics to 1e-9, then prints JSON::

    python benchmarks/bench_metrics.py [--n 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "eval"))

from dense_reference import dense_aggregate, dense_score  # noqa: E402

from refseg import masks  # noqa: E402
from refseg.eval.metrics import METRIC_NAMES, aggregate, score_sample  # noqa: E402

H, W = 480, 640


def shape(rng: np.random.Generator) -> np.ndarray:
    """One object: an ellipse or a random polygon, 10 to 250 pixels across."""
    canvas = np.zeros((H, W), dtype=np.uint8)
    cx, cy = int(rng.integers(0, W)), int(rng.integers(0, H))
    size = int(rng.integers(5, 125))
    if rng.random() < 0.5:
        axes = (size, max(2, int(size * rng.uniform(0.3, 1.0))))
        cv2.ellipse(canvas, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
        radii = size * rng.uniform(0.4, 1.0, angles.size)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [points.astype(np.int32)], 1)
    return canvas.astype(bool)


def perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: shifted, then grown or shrunk by a few pixels."""
    dy, dx = (int(v) for v in rng.integers(-12, 13, 2))
    out = np.roll(mask, (dy, dx), axis=(0, 1))
    k = int(rng.integers(0, 6))
    if k:
        kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        out = op(out.astype(np.uint8), kernel).astype(bool)
    return out


def make_cases(n: int, seed: int) -> list[tuple[list[dict], list[dict] | None]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        objects = [] if rng.random() < 0.1 else [shape(rng) for _ in range(rng.integers(1, 4))]
        gt = [masks.encode(m) for m in objects]
        roll = rng.random()
        if roll < 0.03:
            pred = None  # a failure (unreadable answer)
        elif roll < 0.10:
            pred = []  # "no target"
        elif not objects:
            pred = [masks.encode(shape(rng))]  # a false positive
        else:
            pred = [masks.encode(perturb(m, rng)) for m in objects if rng.random() < 0.9]
        cases.append((gt, pred))
    return cases


def _record(score) -> dict:
    return score.to_record() if hasattr(score, "to_record") else score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = make_cases(args.n, args.seed)

    # Interleave the two implementations chunk by chunk so that both see the same machine load
    # (the CPU may be shared); report wall-clock and process CPU time.
    fast: list[dict] = []
    dense: list[dict] = []
    wall = {"fast": 0.0, "dense": 0.0}
    cpu = {"fast": 0.0, "dense": 0.0}
    for start in range(0, len(cases), 250):
        chunk = cases[start : start + 250]
        for name, function, out in (("fast", score_sample, fast), ("dense", dense_score, dense)):
            t0, c0 = time.perf_counter(), time.process_time()
            out.extend(_record(function(gt, pred, H, W)) for gt, pred in chunk)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    for name, function, out in (("fast", aggregate, fast), ("dense", dense_aggregate, dense)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = function(out)
        wall[name] += time.perf_counter() - t0
        cpu[name] += time.process_time() - c0
        if name == "fast":
            fast_metrics = result
        else:
            dense_metrics = result

    for index, (a, b) in enumerate(zip(fast, dense)):
        assert a == b, f"case {index}: {a} != {b}"
    for name in METRIC_NAMES:
        assert (fast_metrics[name] is None) == (dense_metrics[name] is None), name
        if fast_metrics[name] is not None:
            assert abs(fast_metrics[name] - dense_metrics[name]) <= 1e-9, name

    print(json.dumps({
        "n": args.n,
        "image": [H, W],
        "boundary_width_px": 16,
        "fast_wall_s": round(wall["fast"], 3),
        "dense_wall_s": round(wall["dense"], 3),
        "fast_cpu_s": round(cpu["fast"], 3),
        "dense_cpu_s": round(cpu["dense"], 3),
        "fast_ms_per_sample": round(1000 * wall["fast"] / args.n, 3),
        "dense_ms_per_sample": round(1000 * wall["dense"] / args.n, 3),
        "speedup_wall": round(wall["dense"] / wall["fast"], 2),
        "speedup_cpu": round(cpu["dense"] / cpu["fast"], 2),
        "identical": True,
        "metrics": {k: round(v, 6) if v is not None else None for k, v in fast_metrics.items()},
        "python": platform.python_version(),
        "machine": platform.machine(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
