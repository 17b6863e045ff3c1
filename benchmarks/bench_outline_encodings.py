"""Tokens against round-trip IoU for outline encodings, with the real Qwen3 tokenizer.

Qwen writes one token per digit, so an outline answer costs mostly digits: a 16-vertex path on
the 0-1000 grid is ~180 tokens, ~3.7x a box + point answer (~48). For each of the 36 non-crowd
COCO-sample instances of at least 400 pixels, the ground-truth mask is traced to at most K
vertices (:func:`refseg.paths.trace`), written in each encoding as a whole answer (box +
outline, in Qwen3-VL's 0-1000 frame of the photo), tokenized with the real tokenizer, read back
through refseg's parser and conversion, rasterized and compared with the mask.

Encodings (all in ``<answer>[{...}]</answer>``):

* ``path``: ``"path": "M x y L x y ... Z"``, absolute 0-1000 (today's path answers);
* ``box_path``: Moondream's box-relative path data on a 0-960 square spanning ``bbox_2d``;
* ``grid100``: ``"outline": "x y x y ..."``: box-relative, 0-99 (two digits at most), spaces;
* ``grid100_packed``: ``"outline": "0512..."``: box-relative 0-99, two digits each, no spaces;
* ``grid10_packed``: box-relative 0-9, one digit each (the coarsest).

Prints JSON: per encoding and K, mean tokens, tokens / box+point tokens, mean IoU with a 95%
bootstrap interval, min IoU.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from refseg.grounding.coords import Convention, from_pixels, to_grounding
from refseg.paths import rasterize, trace
from refseg.protocol import format_answer, parse_answer
from refseg.protocol.formatting import ENCODINGS, encode_outline
from refseg.protocol.outline import read_outline
from refseg.testing.coco_sample import load_objects
from refseg.testing.real_size import real_tokenizer


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def interval(values: list[float], rounds: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    data = np.asarray(values)
    means = data[rng.integers(0, len(data), (rounds, len(data)))].mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()
    tokenizer = real_tokenizer()
    objects = load_objects()
    convention = Convention("norm1000")
    box_point = []
    for obj in objects:
        height, width = obj.mask.shape
        ys, xs = np.nonzero(obj.mask)
        inside = (float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5)
        box, points = from_pixels(obj.box, [inside], convention, width, height)
        box_point.append(len(tokenizer(format_answer([(box, points)])).input_ids))
    base = statistics.fmean(box_point)
    rows = []
    for encoding in ENCODINGS:
        for k in args.k:
            tokens, ious = [], []
            for obj in objects:
                height, width = obj.mask.shape
                box, _ = from_pixels(obj.box, [], convention, width, height)
                scale = np.array([1000.0 / width, 1000.0 / height])
                rings = [ring * scale for ring in trace(obj.mask, k)]
                text = encode_outline(box, rings, encoding)
                tokens.append(len(tokenizer(text).input_ids))
                if encoding == "grid10_packed":  # measured, not in the protocol: read here
                    value = json.loads(text[len("<answer>") : -len("</answer>")])[0]["outline10"]
                    model = read_outline(value, box, 10_000, grid=10)
                    polygons = [np.asarray(r) / scale for r in model]
                else:
                    grounding = to_grounding(parse_answer(text), convention, width, height)
                    polygons = grounding.instances[0].polygons if grounding.instances else []
                back = rasterize(polygons, width, height) if polygons else np.zeros_like(obj.mask)
                ious.append(iou(obj.mask, back))
            rows.append(
                {
                    "encoding": encoding,
                    "K": k,
                    "mean_tokens": round(statistics.fmean(tokens), 1),
                    "x_box_point": round(statistics.fmean(tokens) / base, 2),
                    "mean_iou": round(statistics.fmean(ious), 4),
                    "iou_95ci": interval(ious),
                    "min_iou": round(min(ious), 4),
                }
            )
    document = {
        "instances": len(objects),
        "box_point_tokens": round(base, 1),
        "frame": "qwen3-vl norm1000",
        "rows": rows,
    }
    print(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
