"""Train the box decoder on RefShapes with a tiny Qwen3-VL; compare it with SAM on the same boxes.

The CPU-scale proof of refseg's third mask head (:mod:`refseg.segmentation.boxdec`)::

    python examples/train_boxdec_proof.py --work /tmp/refseg-boxdec-proof      # ~30 min, 2 cores

Stages:

1. generate RefShapes (train / test / ood, reused when present), or read ``--data DIR`` (the
   RefShapes folder of ``train_refshapes_proof.py``, so the decoder is trained on the scenes
   its VLM was trained on and tested on the scenes every other head is tested on);
2. the VLM: ``--vlm DIR`` (e.g. the SFT'd tiny Qwen3-VL of ``train_refshapes_proof.py``,
   ``/tmp/refseg-proof/sft``), else a randomly initialised tiny Qwen3-VL of the same shape.
   It is **frozen** either way (not trained jointly): the decoder reads its vision features
   (a block tap, the DeepStack layer, the final merger output) and its answer state;
3. train the decoder (``boxes: jitter``) for ``--steps`` optimizer steps each (steps, not
   minutes, so a rerun on another machine or under load trains as much; each run's wall time
   is recorded): the full decoder and three ablations, each removing one stage (multi-scale
   injection, pixel fusion, query refinement);
4. evaluate on ``test`` (in distribution) and ``ood`` (held-out colour-shape combinations and
   templates), with the ground-truth boxes and with jittered boxes (every side moved by up to
   ``--jitter`` of the box size, seeded per sample), against (a) the box as the mask and (b)
   the embedded SAM (``onnx-sam``) prompted with the same boxes: gIoU / cIoU / mBIoU with
   bootstrap 95% CIs (resampling samples), the paired gIoU difference decoder - SAM, and CPU
   milliseconds per image (decoder forward vs SAM's encode + decode; the VLM pass is paid by
   grounding in both pipelines and is not counted).

Every sample with a target is scored (the decoder needs a box; no-target scenes are left out and
counted). Results go to ``WORK/results.json`` and a markdown table ``WORK/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The tiny Qwen3-VL of train_refshapes_proof.py (so --vlm can take its SFT'd model).
TINY_MODEL = dict(
    family="qwen3-vl",
    text_hidden=128,
    layers=4,
    heads=4,
    kv_heads=2,
    head_dim=32,
    vision_hidden=128,
    vision_depth=2,
    vision_heads=4,
    patch_size=16,
    merge=2,
)
#: That proof's prompt (its models were trained on it; the decoder reads their answer state).
PROMPT = 'Find: "{phrase}"'
#: The decoder variants: the full one and one ablation per stage.
VARIANTS: dict[str, dict[str, Any]] = {
    "boxdec": {},
    "no-multiscale": {"multiscale": False},
    "no-pixel-fusion": {"pixel_fusion": False},
    "no-refinement": {"refine_rounds": 0},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def generate_data(root: Path, counts: dict[str, int], seed: int) -> None:
    from refseg.data.refshapes import generate_refshapes

    if all((root / f"{split}.jsonl").is_file() for split in counts):
        return
    generate_refshapes(root, counts, seed=seed)


def samples_of(root: Path, split: str) -> list:
    from refseg.data.base import open_dataset

    return open_dataset(f"refshapes:{root}:{split}")


def load_vlm(args: argparse.Namespace, phrases: list[str]) -> tuple[Any, str]:
    from refseg.grounding.qwen import QwenGrounder
    from refseg.testing.tiny_vlm import build_tiny_vlm

    if args.vlm is not None:
        folder, origin = args.vlm, f"frozen, from {args.vlm}"
    else:
        folder = args.work / "vlm"
        if not (folder / "model.safetensors").is_file():
            build_tiny_vlm(folder, seed=args.seed, extra_corpus=tuple(phrases), **TINY_MODEL)
        origin = "frozen, randomly initialised (no --vlm given)"
    grounder = QwenGrounder.from_pretrained(
        folder, family="qwen3-vl", device="cpu", prompt_template=PROMPT
    )
    return grounder, origin


def train_variant(
    name: str, overrides: dict, args: argparse.Namespace, grounder: Any, train: list
) -> Any:
    """Train (or reuse) one decoder variant for ``--steps`` optimizer steps."""
    from refseg.segmentation.boxdec import load_checkpoint, save_checkpoint
    from refseg.train.decoder import DecoderTrainer, config_from_dict

    out = args.work / "decoders" / name
    if (out / "boxdec.json").is_file():
        decoder, meta = load_checkpoint(out)
        log(f"{name}: reusing {out} ({meta.get('steps')} steps)")
        return decoder, meta
    config = config_from_dict(
        {
            "model": str(args.vlm or args.work / "vlm"),
            "dataset": "unused",
            "output_dir": str(out),
            "prompt_template": PROMPT,
            "boxes": "jitter",
            "jitter": args.jitter,
            "decoder": {
                "sources": args.sources.split(","),
                "width": args.width,
                "depth": args.depth,
                "heads": 4,
                "mlp_ratio": 4.0,
                "pixel_channels": 32,
                "fourier": 8,
                **overrides,
            },
            "learning_rate": args.lr,
            "warmup_steps": 20,
            "per_device_train_batch_size": args.batch,
            "max_steps": 10**9,
            "seed": args.seed,
        }
    )
    trainer = DecoderTrainer(config, grounder=grounder, samples=train)
    start = time.time()
    losses = []
    while trainer.step < args.steps:
        record = trainer.train_step()
        losses.append(record.get("loss", float("nan")))
        if trainer.step % 50 == 0:
            log(f"{name}: step {trainer.step} loss {np.nanmean(losses[-50:]):.4f}")
    seconds = time.time() - start
    meta = {"steps": trainer.step, "seconds": round(seconds, 1), "final_loss": losses[-1]}
    save_checkpoint(out, trainer.decoder, grounder.feature_fingerprint, extra=meta)
    log(f"{name}: {trainer.step} steps in {seconds:.0f}s, last loss {losses[-1]:.4f}")
    return trainer.decoder.eval(), meta


def sample_boxes(sample: Any, kind: str, jitter: float, seed: int) -> list[list[float]]:
    from refseg.train.decoder import jitter_box

    boxes = [list(b) for b in sample.gt_boxes()]
    if kind == "gt":
        return boxes
    rng = np.random.default_rng([seed, zlib.crc32(sample.id.encode())])
    return [jitter_box(b, jitter, rng, sample.width, sample.height) for b in boxes]


def decode_masks(decoder: Any, features: Any, image: np.ndarray, boxes: list) -> tuple[list, float]:
    """The decoder's masks for ``boxes`` (one batch) and the seconds it took."""
    import torch
    import torch.nn.functional as F

    from refseg.segmentation.boxdec import prepare_image

    height, width = image.shape[:2]
    start = time.perf_counter()
    with torch.inference_mode():
        n = len(boxes)
        feats = [m[None].expand(n, -1, -1, -1) for m in features.maps]
        pix = prepare_image(image, features.input_size).expand(n, -1, -1, -1)
        norm = torch.tensor(
            [[b[0] / width, b[1] / height, b[2] / width, b[3] / height] for b in boxes],
            dtype=torch.float32,
        )
        logits, _ = decoder(feats, pix, norm, features.hidden[None].expand(n, -1))
        full = F.interpolate(logits, size=(height, width), mode="bilinear") > 0
    return [m[0].numpy() for m in full], time.perf_counter() - start


def box_masks(boxes: list, height: int, width: int) -> list[np.ndarray]:
    out = []
    for x1, y1, x2, y2 in boxes:
        mask = np.zeros((height, width), bool)
        mask[round(y1) : round(y2), round(x1) : round(x2)] = True
        out.append(mask)
    return out


def bootstrap(records: list[dict], n: int, seed: int) -> dict[str, Any]:
    """gIoU, cIoU, mBIoU with percentile 95% CIs over ``n`` resamples of the samples."""
    iou = np.array([r["iou"] for r in records])
    biou = np.array([r["biou"] for r in records])
    inter = np.array([r["inter"] for r in records], dtype=float)
    union = np.array([r["union"] for r in records], dtype=float)

    def stats(idx: np.ndarray) -> tuple[float, float, float]:
        return (
            float(iou[idx].mean()),
            float(inter[idx].sum() / max(union[idx].sum(), 1)),
            float(biou[idx].mean()),
        )

    rng = np.random.default_rng(seed)
    full = stats(np.arange(len(records)))
    draws = np.array([stats(rng.integers(0, len(records), len(records))) for _ in range(n)])
    out = {}
    for k, name in enumerate(("gIoU", "cIoU", "mBIoU")):
        low, high = np.percentile(draws[:, k], [2.5, 97.5])
        out[name] = [full[k], float(low), float(high)]
    out["n"] = len(records)
    return out


def paired_difference(a: list[dict], b: list[dict], n: int, seed: int) -> list[float]:
    """Mean per-sample IoU difference a - b with a bootstrap 95% CI (same samples)."""
    diff = np.array([x["iou"] - y["iou"] for x, y in zip(a, b)])
    rng = np.random.default_rng(seed)
    draws = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return [float(diff.mean()), float(low), float(high)]


def evaluate(
    split: str,
    samples: list,
    decoders: dict[str, Any],
    grounder: Any,
    sam: Any,
    sam_cache: dict,
    args: argparse.Namespace,
) -> dict[str, Any]:
    from refseg import masks
    from refseg.eval.metrics import score_sample
    from refseg.grounding.coords import from_pixels
    from refseg.grounding.features import teacher_forced
    from refseg.image import load_image
    from refseg.protocol import format_answer
    from refseg.types import Prompt

    targets = [s for s in samples if s.masks]
    out: dict[str, Any] = {"n_no_target_skipped": len(samples) - len(targets)}
    timings: dict[str, list[float]] = {name: [] for name in decoders}
    timings["onnx-sam"] = []
    for kind in ("gt", "jitter"):
        records: dict[str, list[dict]] = {name: [] for name in [*decoders, "box", "onnx-sam"]}
        for start in range(0, len(targets), args.batch):
            chunk = targets[start : start + args.batch]
            images = [load_image(s.image) for s in chunk]
            boxes = [sample_boxes(s, kind, args.jitter, args.seed) for s in chunk]
            answers = [
                format_answer(
                    [from_pixels(b, [], grounder.convention, s.width, s.height) for b in bs]
                )
                for s, bs in zip(chunk, boxes)
            ]
            sources = grounder_sources(decoders)
            features = teacher_forced(grounder, images, [s.phrase for s in chunk], answers, sources)
            for sample, image, bs, feats in zip(chunk, images, boxes, features):
                h, w = image.shape[:2]

                def score(pred: list[np.ndarray], sample: Any = sample, h: int = h, w: int = w):
                    rles = [masks.encode(m) for m in pred]
                    return score_sample(sample.masks, rles, h, w).to_record()

                for name, decoder in decoders.items():
                    pred, seconds = decode_masks(decoder, feats, image, bs)
                    timings[name].append(seconds)
                    records[name].append(score(pred))
                records["box"].append(score(box_masks(bs, h, w)))
                if sam is not None:
                    t0 = time.perf_counter()
                    if sample.id not in sam_cache:
                        sam_cache[sample.id] = sam.embed(image)
                    embed_s = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    preds = sam.predict(sam_cache[sample.id], [Prompt(box=tuple(b)) for b in bs])
                    if kind == "gt":  # one encode + decode per image, measured once
                        timings["onnx-sam"].append(embed_s + time.perf_counter() - t1)
                    records["onnx-sam"].append(score([p.mask for p in preds]))
        table = {name: bootstrap(r, args.bootstrap, args.seed) for name, r in records.items() if r}
        if sam is not None:
            table["boxdec - onnx-sam (gIoU)"] = paired_difference(
                records["boxdec"], records["onnx-sam"], args.bootstrap, args.seed
            )
        out[kind] = table
        log(
            f"{split} / {kind} boxes: "
            + ", ".join(f"{k} {v['gIoU'][0]:.3f}" for k, v in table.items() if isinstance(v, dict))
        )
    # The first call of each model is its warm-up (allocations, thread pools): not counted.
    out["cpu_ms_per_image"] = {
        k: 1000 * float(np.mean(v[1:] if len(v) > 1 else v)) for k, v in timings.items() if v
    }
    return out


def grounder_sources(decoders: dict[str, Any]) -> list[str]:
    return list(next(iter(decoders.values())).config.sources)


def fmt(entry: list[float]) -> str:
    value, low, high = entry
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"VLM: {results['vlm']}; decoder {results['decoder_params']:,} parameters.", ""]
    for split in ("test", "ood"):
        for kind in ("gt", "jitter"):
            table = results[split][kind]
            lines += [
                f"**{split}, {'ground-truth' if kind == 'gt' else 'jittered'} boxes** "
                f"(n = {next(v['n'] for v in table.values() if isinstance(v, dict))})",
                "",
                "| mask head | gIoU | cIoU | mBIoU |",
                "|---|---|---|---|",
            ]
            for name, v in table.items():
                if isinstance(v, dict):
                    lines.append(
                        f"| {name} | {fmt(v['gIoU'])} | {fmt(v['cIoU'])} | {fmt(v['mBIoU'])} |"
                    )
            for name, v in table.items():
                if not isinstance(v, dict):
                    lines.append(f"| {name} | {fmt(v)} | | |")
            lines.append("")
    ms = results["test"]["cpu_ms_per_image"]
    lines.append(
        "CPU ms per image (test, GT boxes): " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items())
    )
    if "onnx-sam" in ms:
        lines.append(f"boxdec / onnx-sam time: {ms['boxdec'] / ms['onnx-sam']:.1%}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/refseg-boxdec-proof"))
    parser.add_argument("--vlm", type=Path, default=None, help="a tiny Qwen3-VL folder (frozen)")
    parser.add_argument(
        "--data", type=Path, default=None, help="a RefShapes folder to use (default WORK/data)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument(
        "--n-eval", type=int, default=250, help="test and ood samples each (the first N)"
    )
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sources", default="block0,deepstack0,final")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--no-sam", action="store_true", help="skip the onnx-sam baseline")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if "boxdec" not in variants or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants must include boxdec and come from {', '.join(VARIANTS)}")

    import torch

    from refseg.segmentation.boxdec import count_parameters

    torch.manual_seed(args.seed)
    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or args.work / "data"
    generate_data(data, {"train": args.n_train, "test": args.n_eval, "ood": args.n_eval}, args.seed)
    train = [s for s in samples_of(data, "train")[: args.n_train] if s.masks]
    grounder, origin = load_vlm(args, [s.phrase for s in train])
    log(f"VLM: {origin}")
    decoders, training = {}, {}
    for name in variants:
        decoders[name], training[name] = train_variant(name, VARIANTS[name], args, grounder, train)
    sam = None
    if not args.no_sam:
        from refseg.segmentation import load_segmenter

        sam = load_segmenter("onnx-sam")
    results: dict[str, Any] = {
        "vlm": origin,
        "decoder_params": count_parameters(decoders["boxdec"]),
        "training": training,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    sam_cache: dict = {}
    for split in ("test", "ood"):
        samples = samples_of(data, split)[: args.n_eval]
        results[split] = evaluate(split, samples, decoders, grounder, sam, sam_cache, args)
        sam_cache.clear()
    results["wall_s"] = round(time.time() - started, 1)
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.work / "results.md").write_text(text)
    print(text)
    log(f"done in {results['wall_s']:.0f}s; results in {args.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
