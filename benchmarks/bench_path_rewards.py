"""Cost of the path rewards per rollout, and the IoU error of rasterizing at reduced size (JSON).

GRPO scores every rollout of a group (8-16 per prompt) with ``path_validity``, ``mask_iou``,
``boundary_iou`` and ``no_target`` (:mod:`refseg.train.rewards`), called as TRL calls them: one
call per reward function with the whole group. The rollouts here are realistic path answers on
the COCO sample (images ~640x480): each object's GT mask traced to ``--vertices`` vertices,
every vertex jittered by a few pixels (a rollout group's spread), written on the 0-1000 grid.
For each raster scale the JSON gives ms per rollout (all path rewards together, median of
``--repeats``) and the largest and mean absolute difference of ``mask_iou`` and
``boundary_iou`` from full resolution over every rollout.

Usage: python benchmarks/bench_path_rewards.py [--group 8 16] [--scales 1 0.5 0.25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import numpy as np

from refseg import masks
from refseg.paths import trace
from refseg.testing.coco_sample import load_objects
from refseg.train import rewards as R


def _answer(rings_per_object: list[list[np.ndarray]], width: int, height: int) -> str:
    items = []
    for rings in rings_per_object:
        scaled = [r * (1000 / width, 1000 / height) for r in rings]
        allpts = np.concatenate(scaled)
        x1, y1 = np.clip(allpts.min(axis=0), 0, 1000)
        x2, y2 = np.clip(allpts.max(axis=0), 0, 1000)
        path = " ".join(
            "M " + " L ".join(f"{x:.0f} {y:.0f}" for x, y in np.clip(r, 0, 1000)) + " Z"
            for r in scaled
        )
        items.append({"bbox_2d": [round(x1), round(y1), round(x2), round(y2)], "path": path})
    return f"<answer>{json.dumps(items)}</answer>"


def build_groups(group: int, vertices: int, jitter: float, seed: int = 0) -> list[dict]:
    """One group per COCO-sample image: its objects' GT and ``group`` jittered path answers."""
    rng = np.random.default_rng(seed)
    by_image: dict = defaultdict(list)
    for obj in load_objects():
        by_image[obj.image_path].append(obj)
    groups = []
    for objects in by_image.values():
        objects = objects[:3]  # a referring phrase names one to a few objects
        height, width = objects[0].mask.shape
        traced = [trace(o.mask, vertices) for o in objects]
        completions = []
        for _ in range(group):
            noisy = [[r + rng.normal(0, jitter, r.shape) for r in rings] for rings in traced]
            completions.append(_answer(noisy, width, height))
        groups.append(
            {
                "completions": completions,
                "width": [width] * group,
                "height": [height] * group,
                "gt_boxes": [[list(o.box) for o in objects]] * group,
                "gt_masks": [[masks.encode(o.mask)["counts"] for o in objects]] * group,
            }
        )
    return groups


def score_group(g: dict, scale: float) -> tuple[list[float], list[float]]:
    cols = {k: g[k] for k in ("width", "height", "gt_boxes", "gt_masks")}
    comps = g["completions"]
    prompts = [None] * len(comps)
    R.path_validity_reward(prompts, comps, max_vertices=10_000, **cols)
    iou = R.mask_iou_reward(prompts, comps, scale=scale, **cols)
    biou = R.boundary_iou_reward(prompts, comps, scale=scale, **cols)
    R.no_target_reward(prompts, comps, **cols)
    return iou, biou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--vertices", type=int, default=32)
    parser.add_argument("--jitter", type=float, default=3.0, help="vertex noise, pixels (sd)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for group in args.group:
        groups = build_groups(group, args.vertices, args.jitter)
        reference = [score_group(g, 1.0) for g in groups]
        for scale in args.scales:
            times, iou_err, biou_err = [], [], []
            for _ in range(args.repeats):
                R.DEFAULT_CACHE.gt.clear()  # each repeat decodes its GT like a new batch
                start = time.perf_counter()
                scored = [score_group(g, scale) for g in groups]
                times.append(time.perf_counter() - start)
            for (ref_i, ref_b), (i, b) in zip(reference, scored):
                iou_err += [abs(x - y) for x, y in zip(ref_i, i)]
                biou_err += [abs(x - y) for x, y in zip(ref_b, b)]
            rollouts = group * len(groups)
            rows.append(
                {
                    "group": group,
                    "scale": scale,
                    "rollouts": rollouts,
                    "ms_per_rollout": round(1000 * statistics.median(times) / rollouts, 3),
                    "mask_iou_abs_err_max": round(max(iou_err), 4),
                    "mask_iou_abs_err_mean": round(statistics.fmean(iou_err), 4),
                    "boundary_iou_abs_err_max": round(max(biou_err), 4),
                    "boundary_iou_abs_err_mean": round(statistics.fmean(biou_err), 4),
                    "mean_mask_iou": round(statistics.fmean(x for r in reference for x in r[0]), 4),
                }
            )
    image_sizes = sorted({(g["width"][0], g["height"][0]) for g in groups})
    print(json.dumps({"images": len(groups), "sizes": image_sizes[:5], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
