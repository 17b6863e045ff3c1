"""Segmenter speed on the embedded default (SAM ONNX, TinyViT encoder), printed as JSON.

(a) per-image encode end to end (file decoded -> embedding) divided by the bare ONNX encoder
    session time on the same pre-processed tensor: the cost of refseg's own pre-processing
    (goal <= 1.15);
(b) 8 box prompts on one image: embed once + one predict call, versus 8 x (encode + decode),
    the cost without embedding reuse (goal >= 5x faster); measured with a single decoder pass
    per prompt (the comparison as defined) and with the default refinement (two passes);
(c) milliseconds per prompt on a shared embedding (both settings).

Ratios are measured within one run, interleaving repetitions, so machine load affects both sides.
Usage: python benchmarks/bench_segmenter.py [--repeats 5] [--image PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from refseg.image import load_image
from refseg.segmentation import load_segmenter
from refseg.segmentation.onnx_sam import preprocess
from refseg.types import Prompt

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "data/coco-sample/images/000000142238.jpg"


def boxes_for(width: int, height: int, n: int = 8) -> list[Prompt]:
    """n boxes spread over the image (sizes 1/4 to 1/2 of each side)."""
    prompts = []
    for i in range(n):
        fx, fy = (i % 4) / 4, (i // 4) / 2
        x1, y1 = fx * width * 0.75, fy * height * 0.5
        prompts.append(Prompt(box=(x1, y1, x1 + width / 4 + i * 5, y1 + height / 3 + i * 5)))
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    args = parser.parse_args()

    sam = load_segmenter("onnx-sam")
    image = load_image(args.image)
    tensor = preprocess(image)
    prompts = boxes_for(image.shape[1], image.shape[0])
    sam.embed(image)  # warm-up: first runs allocate and optimise
    sam.predict(sam.embed(image), prompts[:1])

    end_to_end, bare = [], []
    reuse: dict[int, list[float]] = {0: [], sam.refine: []}
    no_reuse: dict[int, list[float]] = {0: [], sam.refine: []}
    per_prompt: dict[int, list[float]] = {0: [], sam.refine: []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        sam.embed(load_image(args.image))
        end_to_end.append(time.perf_counter() - start)

        start = time.perf_counter()
        sam.encode_tensor(tensor)
        bare.append(time.perf_counter() - start)

        for rounds in reuse:
            start = time.perf_counter()
            embedding = sam.embed(load_image(args.image))
            predict_start = time.perf_counter()
            sam.predict(embedding, prompts, refine=rounds)
            done = time.perf_counter()
            reuse[rounds].append(done - start)
            per_prompt[rounds].append((done - predict_start) / len(prompts))

    # Without reuse: 8 x (encode + decode); measured on fewer repeats, it is the slow side.
    for _ in range(max(1, args.repeats // 2)):
        for rounds in no_reuse:
            start = time.perf_counter()
            for prompt in prompts:
                sam.predict(sam.embed(load_image(args.image)), [prompt], refine=rounds)
            no_reuse[rounds].append(time.perf_counter() - start)

    median = statistics.median
    figures = {
        "image": args.image.name,
        "image_size": list(image.shape[:2]),
        "encode_end_to_end_s": round(median(end_to_end), 4),
        "encode_bare_onnx_s": round(median(bare), 4),
        "a_end_to_end_over_bare": round(median(end_to_end) / median(bare), 3),
    }
    for rounds in reuse:
        tag = f"refine{rounds}"
        figures[f"b_{tag}_8_prompts_embed_once_s"] = round(median(reuse[rounds]), 4)
        figures[f"b_{tag}_8_prompts_reencode_each_s"] = round(median(no_reuse[rounds]), 4)
        figures[f"b_{tag}_speedup"] = round(median(no_reuse[rounds]) / median(reuse[rounds]), 2)
        figures[f"c_{tag}_ms_per_prompt"] = round(1000 * median(per_prompt[rounds]), 2)
    figures["default_refine_rounds"] = sam.refine
    figures["repeats"] = args.repeats
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
