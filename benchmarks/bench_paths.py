"""Round trip mask -> path (at most K vertices) -> mask on the COCO sample, printed as JSON.

For each of the 36 non-crowd COCO-sample instances of at least 400 pixels, the ground-truth mask
is traced to an outline of at most K vertices (:func:`refseg.paths.trace`), written
as path data with integer pixel coordinates (what a model writing pixels would write) and read
back, rasterized (:func:`~refseg.paths.rasterize`, nonzero, 2x supersampling), and
compared with the original: mean IoU and mean boundary IoU (boundary width 2% of the image
diagonal, :mod:`refseg.eval.metrics`). ``K = null`` is the untruncated trace (the tracer's own
error). It tells how many vertices a path answer needs before the vector format, not the model,
limits mask quality.

Usage: python benchmarks/bench_paths.py [--k 8 16 32 64]
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from refseg.masks import boundary, boundary_width
from refseg.paths import format_path, parse_path, rasterize, trace
from refseg.testing.coco_sample import load_objects


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def boundary_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    d = boundary_width(*gt.shape)
    return iou(boundary(gt, d), boundary(pred, d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()
    objects = load_objects()
    rows = []
    for k in [*args.k, None]:
        ious, bious, vertices = [], [], []
        for obj in objects:
            height, width = obj.mask.shape
            rings = parse_path(format_path(trace(obj.mask, k)))
            back = rasterize(rings, width, height)
            ious.append(iou(obj.mask, back))
            bious.append(boundary_iou(obj.mask, back))
            vertices.append(sum(len(r) for r in rings))
        rows.append(
            {
                "K": k,
                "mean_iou": round(statistics.fmean(ious), 4),
                "min_iou": round(min(ious), 4),
                "mean_boundary_iou": round(statistics.fmean(bious), 4),
                "mean_vertices": round(statistics.fmean(vertices), 1),
            }
        )
    print(json.dumps({"instances": len(objects), "round_trip": rows}, indent=1))


if __name__ == "__main__":
    main()
