"""onnxruntime options on the embedded SAM (TinyViT encoder + prompt decoder), printed as JSON.

For every option: the encoder's median time on one COCO photo (bare session, pre-processed
tensor), its ratio to the fp32 default *measured in the same run*: each option's run sits right
beside an fp32 run (A B, then B A), and the median of those paired ratios is reported, so that
load from other processes hits both sides of each ratio alike; and the COCO-sample
mean IoU (the 36 non-crowd instances of >= 400 px, :mod:`refseg.testing.coco_sample`) with the
exact ground-truth boxes and with boxes jittered by up to +-10 % of their size (fixed seed).
Decoder options are timed per prompt (default refinement) on a shared embedding.

Options: graph optimisation level (disabled / basic / extended / all), intra-op threads (1, all)
and inter-op threads with the parallel executor, dynamic int8 (per-channel weights), static int8
QDQ per-channel and per-tensor on every node, static QDQ per-channel with the first convolution,
the neck and the attention products left in float (the recipe of ``onnx-sam:int8``; all static
variants are calibrated on the bundled photo and RefShapes scenes, never on the COCO photos), and
fp16 (weights and activations, fp32 inputs/outputs). The machine load (``os.getloadavg``) is
recorded before and after: on a shared machine absolute times move with it, ratios much less.

Usage: python benchmarks/bench_encoder_options.py [--repeats 7] [--work DIR] [--skip-iou]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from refseg.image import load_image
from refseg.segmentation.onnx_sam import OnnxSam, preprocess
from refseg.segmentation.quantize import FLOAT_NODES, calibration_images, quantize_encoder
from refseg.segmentation.weights import default_sam_onnx
from refseg.testing.coco_sample import load_objects
from refseg.types import Prompt

JITTER = 0.10
SEED = 0


def session(path: Path, *, level: str = "all", intra: int = 0, inter: int = 0):
    """A CPU session with the given optimisation level and thread counts (0: onnxruntime's)."""
    import onnxruntime as ort

    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.intra_op_num_threads = intra
    if inter:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = inter
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_variants(encoder: Path, decoder: Path, work: Path) -> dict[str, Path]:
    """The quantized / fp16 model files (built once into ``work``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    files = {}
    dynamic = work / "encoder.dynamic.onnx"
    if not dynamic.exists():
        quantize_dynamic(str(encoder), str(dynamic), weight_type=QuantType.QInt8, per_channel=True)
    files["enc_dynamic"] = dynamic
    calib = calibration_images()
    variants = {  # tag: (per-channel, nodes kept in float)
        "enc_qdq_recipe": (True, FLOAT_NODES),
        "enc_qdq": (True, ()),
        "enc_qdq_tensor": (False, ()),
    }
    for tag, (per_channel, exclude) in variants.items():
        path = work / f"encoder.{tag}.onnx"
        if not path.exists():
            quantize_encoder(encoder, path, calib, per_channel=per_channel, exclude=exclude)
        files[tag] = path
    dec_dynamic = work / "decoder.dynamic.onnx"
    if not dec_dynamic.exists():
        quantize_dynamic(str(decoder), str(dec_dynamic), weight_type=QuantType.QInt8)
    files["dec_dynamic"] = dec_dynamic
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        fp16 = work / "encoder.fp16.onnx"
        if not fp16.exists():
            model = convert_float_to_float16(onnx.load(str(encoder)), keep_io_types=True)
            onnx.save(model, str(fp16))
        files["enc_fp16"] = fp16
    except Exception as exc:  # reported; the rest of the table still stands
        print(json.dumps({"fp16": f"not built: {type(exc).__name__}: {exc}"[:200]}))
    return files


def jittered(box: tuple[float, ...], width: int, height: int, rng: np.random.Generator):
    """``box`` with each side moved by up to +-JITTER of the box's size, kept in the image."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    dx = rng.uniform(-JITTER, JITTER, 2) * w
    dy = rng.uniform(-JITTER, JITTER, 2) * h
    nx1, nx2 = np.clip([x1 + dx[0], x2 + dx[1]], 0, width)
    ny1, ny2 = np.clip([y1 + dy[0], y2 + dy[1]], 0, height)
    if nx2 - nx1 < 1 or ny2 - ny1 < 1:
        return box
    return (float(nx1), float(ny1), float(nx2), float(ny2))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def coco_iou(sam: OnnxSam, objects: list, jitter_boxes: list) -> tuple[float, float]:
    """Mean IoU over the COCO sample with exact and jittered ground-truth boxes."""
    exact, noisy = [], []
    by_image: dict[Path, list[int]] = {}
    for index, obj in enumerate(objects):
        by_image.setdefault(obj.image_path, []).append(index)
    for path, indices in by_image.items():
        embedding = sam.embed(load_image(path))
        for index in indices:
            obj = objects[index]
            for boxes, out in ((obj.box, exact), (jitter_boxes[index], noisy)):
                mask = sam.predict(embedding, [Prompt(box=boxes)])[0].mask
                out.append(iou(mask, obj.mask))
    return float(np.mean(exact)), float(np.mean(noisy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="keep built variants here")
    parser.add_argument("--skip-iou", action="store_true")
    args = parser.parse_args()

    load_before = [round(x, 2) for x in os.getloadavg()]
    encoder, decoder = default_sam_onnx()
    work = args.work or Path(tempfile.mkdtemp(prefix="refseg-bench-enc-"))
    work.mkdir(parents=True, exist_ok=True)
    built_start = time.perf_counter()
    files = build_variants(encoder, decoder, work)
    build_s = time.perf_counter() - built_start

    cores = len(os.sched_getaffinity(0))
    encoders = {
        "fp32 (all, default threads)": session(encoder),
        "fp32 opt disabled": session(encoder, level="disabled"),
        "fp32 opt basic": session(encoder, level="basic"),
        "fp32 opt extended": session(encoder, level="extended"),
        "fp32 intra 1": session(encoder, intra=1),
        f"fp32 intra {cores}": session(encoder, intra=cores),
        f"fp32 parallel, inter {cores}": session(encoder, inter=cores),
        "int8 dynamic per-channel": session(files["enc_dynamic"]),
        "int8 static QDQ per-channel, every node": session(files["enc_qdq"]),
        "int8 static QDQ per-tensor, every node": session(files["enc_qdq_tensor"]),
        "int8 static QDQ per-channel, edges+attention float (onnx-sam:int8)": session(
            files["enc_qdq_recipe"]
        ),
        "onnx-sam:int8, intra 1": session(files["enc_qdq_recipe"], intra=1),
    }
    if "enc_fp16" in files:
        encoders["fp16"] = session(files["enc_fp16"])
    objects = load_objects()
    image = load_image(objects[0].image_path)
    tensor = preprocess(image)
    feed_name = encoders["fp32 (all, default threads)"].get_inputs()[0].name
    for sess in encoders.values():  # warm-up: the first run allocates and optimises
        sess.run(None, {feed_name: tensor})
    # Each option is timed right beside an fp32 run (order alternating between repeats), so the
    # ratio compares two runs a few seconds apart, under nearly the same load.
    baseline = "fp32 (all, default threads)"
    times: dict[str, list[float]] = {name: [] for name in encoders}
    ratios: dict[str, list[float]] = {name: [] for name in encoders}

    def run(name: str) -> float:
        start = time.perf_counter()
        encoders[name].run(None, {feed_name: tensor})
        return time.perf_counter() - start

    for repeat in range(args.repeats):
        for name in encoders:
            if name == baseline:
                continue
            if repeat % 2:
                option, base_s = run(name), run(baseline)
            else:
                base_s, option = run(baseline), run(name)
            times[name].append(option)
            times[baseline].append(base_s)
            ratios[name].append(option / base_s)
    ratios[baseline] = [1.0]

    # Decoder: ms per prompt on one embedding (default refinement), fp32 vs dynamic int8.
    decoders = {
        "decoder fp32": session(decoder),
        "decoder int8 dynamic": session(files["dec_dynamic"]),
    }
    sam = OnnxSam(encoder, decoder)
    embedding = sam.embed(image)
    prompts = [Prompt(box=obj.box) for obj in objects if obj.image_path == objects[0].image_path]
    dec_times: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(args.repeats):
        for name, sess in decoders.items():
            sam.decoder = sess
            start = time.perf_counter()
            sam.predict(embedding, prompts)
            dec_times[name].append((time.perf_counter() - start) / len(prompts))

    rng = np.random.default_rng(SEED)
    jitter_boxes = []
    for obj in objects:
        height, width = obj.mask.shape
        jitter_boxes.append(jittered(obj.box, width, height, rng))

    median = statistics.median
    rows = []
    for name, sess in encoders.items():
        row = {
            "option": name,
            "encode_ms": round(1000 * median(times[name]), 1),
            # the median of the ratios to the fp32 run beside each measurement
            "ratio_to_fp32": round(median(ratios[name]), 3),
            "ratio_min_max": [round(min(ratios[name]), 3), round(max(ratios[name]), 3)],
        }
        if not args.skip_iou:
            sam.encoder, sam.decoder = sess, decoders["decoder fp32"]
            row["coco_iou_exact"], row["coco_iou_jitter10"] = (
                round(v, 4) for v in coco_iou(sam, objects, jitter_boxes)
            )
        rows.append(row)
    dec_base = median(dec_times["decoder fp32"])
    for name, sess in decoders.items():
        row = {
            "option": name,
            "ms_per_prompt": round(1000 * median(dec_times[name]), 2),
            "ratio_to_fp32": round(median(dec_times[name]) / dec_base, 3),
        }
        if not args.skip_iou:
            sam.encoder, sam.decoder = encoders["fp32 (all, default threads)"], sess
            row["coco_iou_exact"], row["coco_iou_jitter10"] = (
                round(v, 4) for v in coco_iou(sam, objects, jitter_boxes)
            )
        rows.append(row)
    print(
        json.dumps(
            {
                "image": objects[0].image_path.name,
                "repeats": args.repeats,
                "cores": cores,
                "coco_instances": len(objects),
                "jitter": f"+-{int(JITTER * 100)}% of box size per side, seed {SEED}",
                "calibration": "astronaut.jpg + 7 RefShapes train scenes (not COCO)",
                "build_s": round(build_s, 1),
                "loadavg_before": load_before,
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
