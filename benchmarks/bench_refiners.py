"""Refiners on the COCO sample: raster vs SAM-refined vs gated, by outline quality, as JSON.

For each of the 36 non-crowd COCO-sample instances of at least 400 pixels, the ground-truth mask
is traced to an outline of at most 16 vertices (what a path-answering model might write), then
degraded: every vertex moved by a uniform random offset of up to ``level`` x the box's width
(x) and height (y) for level 0, 3, 6, 10 and 15%; the GT box alone as the outline ("box");
and the exact outline shifted by 10% of the box ("shift"). Each outline is rasterized
(the coarse mask) and refined with the embedded SAM decoder (coarse mask as ``mask_input`` in
SAM's low-res frame + box + the coarse mask's most interior point; one shared embedding per
image). Reported per condition: mean IoU with the GT of the raster, of the raw SAM refinement
(``sam-raw``), of gates that keep the raster when a signal reaches t and take SAM's mask
otherwise: ``edge@t`` on :func:`~refseg.segmentation.refiners.boundary_agreement` (the share of
the raster's edge near SAM's edge; ``sam``, the default, is ``edge@0.5``) and ``iou@t`` on the
region IoU between raster and SAM's mask; and ``best_of`` (the oracle choice per instance
between raster and SAM, an upper bound for any gate).

Usage: python benchmarks/bench_refiners.py [--seeds 2] [--iterations 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from refseg.image import load_image
from refseg.paths import rasterize, trace
from refseg.segmentation import load_segmenter
from refseg.segmentation.refiners import (
    DEFAULT_GATE,
    SamRefiner,
    boundary_agreement,
    run_refiner,
)
from refseg.testing.coco_sample import load_objects

LEVELS = (0.0, 0.03, 0.06, 0.10, 0.15)
EDGE_GATES = (0.4, 0.5, 0.6)
IOU_GATES = (0.7, 0.8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def outlines(obj, rng: np.random.Generator, seeds: int) -> list[tuple[str, list[np.ndarray]]]:
    """(condition, rings) pairs for one object."""
    rings = trace(obj.mask, 16)
    x1, y1, x2, y2 = obj.box
    size = np.array([x2 - x1, y2 - y1])
    out = []
    for level in LEVELS:
        for _ in range(1 if level == 0 else seeds):
            noisy = [r + rng.uniform(-1, 1, r.shape) * level * size for r in rings]
            out.append((f"noise {round(level * 100)}%", noisy))
    out.append(("box", [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])]))
    out.append(("shift 10%", [r + 0.10 * size for r in rings]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sam = load_segmenter("onnx-sam")
    refiner = SamRefiner(sam)
    objects = load_objects()
    embeddings = {}
    rows: dict[str, list[dict[str, float]]] = {}
    start = time.perf_counter()
    for obj in objects:
        if obj.image_path not in embeddings:
            embeddings[obj.image_path] = sam.embed(load_image(obj.image_path))
        embedding = embeddings[obj.image_path]
        height, width = obj.mask.shape
        for condition, rings in outlines(obj, rng, args.seeds):
            raster = rasterize(rings, width, height)
            refined = run_refiner(refiner, None, embedding, raster, obj.box, args.iterations)
            rows.setdefault(condition, []).append(
                {
                    "raster": iou(raster, obj.mask),
                    "sam": iou(refined.mask, obj.mask),
                    "agree": iou(raster, refined.mask),
                    "edge": boundary_agreement(raster, refined.mask, obj.box),
                }
            )
    table = []
    for condition, cases in rows.items():
        entry: dict[str, object] = {"condition": condition, "cases": len(cases)}
        entry["raster"] = statistics.fmean(c["raster"] for c in cases)
        entry["sam-raw"] = statistics.fmean(c["sam"] for c in cases)
        entry["sam (default)"] = statistics.fmean(
            c["raster"] if c["edge"] >= DEFAULT_GATE else c["sam"] for c in cases
        )
        for gate in EDGE_GATES:
            entry[f"edge@{gate:g}"] = statistics.fmean(
                c["raster"] if c["edge"] >= gate else c["sam"] for c in cases
            )
        for gate in IOU_GATES:
            entry[f"iou@{gate:g}"] = statistics.fmean(
                c["raster"] if c["agree"] >= gate else c["sam"] for c in cases
            )
        entry["best_of"] = statistics.fmean(max(c["raster"], c["sam"]) for c in cases)
        entry["mean_agreement"] = statistics.fmean(c["agree"] for c in cases)
        table.append({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()})
    print(
        json.dumps(
            {
                "instances": len(objects),
                "iterations": args.iterations,
                "default_gate": DEFAULT_GATE,
                "seconds": round(time.perf_counter() - start, 1),
                "table": table,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
