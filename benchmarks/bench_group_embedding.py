"""How much does embedding each image once per GRPO group save in the segmenter reward?

GRPO samples ``G`` rollouts per prompt, and all of them ask about the same image. The
segmenter-in-the-loop reward (:class:`refseg.train.rewards.SegmenterReward`) caches the
segmenter's image embedding by image digest, so a group costs one encoder pass plus ``G``
cheap prompt decodes instead of ``G`` encoder passes. This script measures both on the real
default segmenter (ONNX SAM) with the same reward code, the cache on and off, and prints JSON::

    python benchmarks/bench_group_embedding.py --group 8 --groups 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "data" / "coco-sample"


def scenes() -> list[tuple[np.ndarray, list[float]]]:
    """Real images with one real object box each (the COCO sample, else the astronaut)."""
    from refseg.image import load_image

    out = []
    instances = COCO / "instances.json"
    if instances.is_file():
        data = json.loads(instances.read_text())
        for info in data["images"]:
            anns = [
                a
                for a in data["annotations"]
                if a["image_id"] == info["id"] and not a.get("iscrowd")
            ]
            ann = max(anns, key=lambda a: a["area"])
            x, y, w, h = ann["bbox"]
            out.append((load_image(COCO / "images" / info["file_name"]), [x, y, x + w, y + h]))
    out.append(
        (load_image(ROOT / "src" / "refseg" / "assets" / "astronaut.jpg"), [150, 20, 380, 300])
    )
    return out


def rollouts(box: list[float], width: int, height: int, group: int, rng) -> list[str]:
    """``group`` answers jittered around ``box`` (what sampled rollouts look like)."""
    texts = []
    for _ in range(group):
        jitter = rng.normal(0, 0.05, 4) * [width, height, width, height]
        x1, y1, x2, y2 = np.asarray(box) + jitter
        x1, x2 = sorted((max(0, x1), min(width - 1, x2)))
        y1, y2 = sorted((max(0, y1), min(height - 1, y2)))
        n = [
            round(x1 * 1000 / width),
            round(y1 * 1000 / height),
            round(x2 * 1000 / width),
            round(y2 * 1000 / height),
        ]
        point = [round((n[0] + n[2]) / 2), round((n[1] + n[3]) / 2)]
        texts.append(f'<answer>[{{"bbox_2d": {n}, "point_2d": {point}}}]</answer>')
    return texts


def run(reward, data, group: int) -> dict:
    from refseg import masks

    times = []
    for image, box, texts in data:
        h, w = image.shape[:2]

        gt = np.zeros((h, w), dtype=bool)
        x1, y1, x2, y2 = (int(v) for v in box)
        gt[y1:y2, x1:x2] = True
        cols = {
            "width": [w] * group,
            "height": [h] * group,
            "gt_masks": [[masks.encode(gt)]] * group,
            "image": [image] * group,
        }
        start = time.perf_counter()
        scores = reward(None, texts, **cols)
        times.append(time.perf_counter() - start)
        assert len(scores) == group
    return {
        "group_s": times,
        "mean_group_s": float(np.mean(times)),
        "embed_calls": reward.embed_calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=8, help="rollouts per prompt (GRPO G)")
    parser.add_argument("--segmenter", default="onnx-sam")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from refseg.segmentation import load_segmenter
    from refseg.train.rewards import SegmenterReward
    from refseg.types import Prompt

    segmenter = load_segmenter(args.segmenter)
    rng = np.random.default_rng(args.seed)
    data = [
        (img, box, rollouts(box, img.shape[1], img.shape[0], args.group, rng))
        for img, box in scenes()
    ]
    # warm-up (session initialisation, first-call allocations) on an image not measured
    warm = np.zeros((64, 64, 3), dtype=np.uint8)
    segmenter.predict(segmenter.embed(warm), [Prompt(box=(1, 1, 30, 30))])

    uncached = run(SegmenterReward(segmenter, cache_size=0), data, args.group)
    cached = run(SegmenterReward(segmenter, cache_size=64), data, args.group)
    print(
        json.dumps(
            {
                "benchmark": "segmenter reward, one GRPO group per image",
                "segmenter": args.segmenter,
                "group_size": args.group,
                "groups": len(data),
                "image_sizes": [list(img.shape[:2]) for img, _, _ in data],
                "per_rollout_embedding": uncached,
                "per_group_embedding": cached,
                "speedup": uncached["mean_group_s"] / cached["mean_group_s"],
                "saved_s_per_group": uncached["mean_group_s"] - cached["mean_group_s"],
                "machine": {
                    "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(),
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
