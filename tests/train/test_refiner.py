"""refseg train refiner: coarse masks, rollout pairing, real (small) training, resume, reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refseg import masks
from refseg.errors import InputError
from refseg.train import refiner as T


def disc(h=120, w=160, cx=80, cy=60, r=30) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r**2


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("kind", T.SYNTH_KINDS)
def test_every_perturbation_is_coarse_but_related(kind):
    gt = disc()
    synth = T.SynthSection(kinds=[kind])
    rng = np.random.default_rng(0)
    ious = []
    for _ in range(6):
        coarse, name = T.perturb(gt, rng, synth)
        assert name == kind and coarse.shape == gt.shape
        ious.append(iou(coarse, gt))
    assert min(ious) > 0.3 and max(ious) < 1.0  # changed, but still the same object
    if kind == "box":
        assert coarse[32, 52] and not gt[32, 52]  # the box's corner is not on the disc
    if kind == "dilate":
        assert (coarse | gt).sum() == coarse.sum()  # grown, never shrunk


def _record(path: Path, image: str, preds, gts, h=120, w=160) -> None:
    record = {
        "step": 0,
        "index": 0,
        "image": image,
        "width": w,
        "height": h,
        "masks": [masks.encode(m) for m in preds],
        "boxes": [None] * len(preds),
        "gt_masks": [masks.encode(g)["counts"] for g in gts],
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def test_rollout_instances_pair_with_the_gt_they_match(tmp_path):
    a, b = disc(cx=40, r=20), disc(cx=120, r=20)
    pred_b = disc(cx=118, r=22)
    stray = np.zeros_like(a)
    stray[0:5, 0:5] = True  # overlaps no GT object: skipped
    _record(tmp_path / "rollouts.jsonl", "img.png", [pred_b, stray], [a, b])
    with open(tmp_path / "rollouts.jsonl", "a") as handle:
        handle.write('{"step": 0, "masks": "garbage", "image": "x"}\n{"step": 1, "ind')
    cfg = T.config_from_dict({"output_dir": str(tmp_path / "o"), "rollouts": str(tmp_path)})
    (example,) = T.rollout_examples(cfg)
    from refseg.segmentation.refiners import mask_to_low_res

    assert np.allclose(example.target, (mask_to_low_res(b, 1.0) + 1) / 2, atol=1e-3)
    assert example.source == "rollout" and example.coarse.shape == (256, 256)


def test_config_errors_are_one_line(tmp_path):
    out = str(tmp_path / "o")
    with pytest.raises(InputError, match="give rollouts"):
        T.config_from_dict({"output_dir": out})
    with pytest.raises(InputError, match="use onnx-sam or vlm:SOURCE"):
        T.config_from_dict({"output_dir": out, "dataset": "x", "features": "vlm"})
    with pytest.raises(InputError, match=r"synth\.kinds"):
        T.config_from_dict({"output_dir": out, "dataset": "x", "synth": {"kinds": ["blur"]}})
    with pytest.raises(InputError, match="net:"):
        T.config_from_dict({"output_dir": out, "dataset": "x", "net": {"channels": 0}})


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from refseg.data.refshapes import generate_refshapes

    out = tmp_path_factory.mktemp("refshapes-refiner")
    generate_refshapes(out, {"train": 2}, seed=3)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


def _cfg(shapes: Path, cache: Path, out: Path, **extra) -> T.RefinerTrainConfig:
    raw = {
        "output_dir": str(out),
        "dataset": f"refshapes:{shapes}:train",
        "embedding_cache": str(cache),
        "net": {"channels": 16, "blocks": 1, "box_channel": True},
        "batch_size": 4,
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "synth": {"per_object": 2},
    }
    raw.update(extra)
    return T.config_from_dict(raw)


def test_train_a_few_steps_resume_exactly_and_reload_for_inference(shapes, cache, tmp_path, sam):
    from refseg.image import load_image
    from refseg.segmentation.refiners import TorchRefiner, load_refiner, run_refiner

    straight = T.RefinerTrainer(_cfg(shapes, cache, tmp_path / "a"), segmenter=sam).train()
    assert straight.step == 4 and straight.cache.computed <= 2  # one embedding per image
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["ms_per_step"] > 0 and "quality_2" in r for r in log)  # 2 unrolled passes

    first = T.RefinerTrainer(_cfg(shapes, cache, tmp_path / "b", max_steps=3), segmenter=sam)
    first.train()  # checkpoint-2 saved, step 3 done, then "killed" (its final save discarded)
    (tmp_path / "b" / "refiner.pt").unlink()
    resumed = T.RefinerTrainer(_cfg(shapes, cache, tmp_path / "b"), segmenter=sam).train()
    assert resumed.step == 4 and resumed.cache.computed == 0  # embeddings read from disk
    for (name, x), (_, y) in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().items()
    ):
        assert np.allclose(x.numpy(), y.numpy(), atol=1e-6), name
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # step 3 of the killed run was redone, not logged twice

    refiner = load_refiner(str(tmp_path / "a" / "refiner.pt"))
    assert isinstance(refiner, TorchRefiner) and refiner.config["box_channel"] is True
    from refseg.data.base import open_dataset

    sample = next(iter(open_dataset(f"refshapes:{shapes}:train")))
    image = load_image(sample.image)
    gt = masks.decode(sample.masks[0])
    out = run_refiner(refiner, image, sam.embed(image), gt, T._mask_box(gt), iterations=2)
    assert out.mask.shape == gt.shape and out.score is not None and 0 <= out.score <= 1


def test_the_loss_falls_on_a_fixed_batch(shapes, cache, tmp_path, sam):
    cfg = _cfg(
        shapes,
        cache,
        tmp_path / "c",
        batch_size=16,
        max_steps=20,
        save_steps=100,
        learning_rate=3e-3,
    )
    trainer = T.RefinerTrainer(cfg, segmenter=sam)
    assert len(trainer.examples) <= 16  # every step sees the same batch
    losses = [trainer.train_step()["loss"] for _ in range(20)]
    assert losses[-1] < 0.85 * losses[0]


def test_cli_trains_and_refuses_a_bad_config_in_one_line(shapes, cache, tmp_path, capsys):
    import yaml

    from refseg.cli import main

    path = tmp_path / "refiner.yaml"
    raw = {
        "output_dir": str(tmp_path / "cli"),
        "dataset": f"refshapes:{shapes}:train",
        "embedding_cache": str(cache),
        "net": {"channels": 8, "blocks": 0},
        "max_steps": 1,
    }
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "refiner", "--config", str(path)]) == 0
    assert "refiner saved to" in capsys.readouterr().out
    assert (tmp_path / "cli" / "refiner.pt").is_file()
    path.write_text(yaml.safe_dump({**raw, "iterations": 99}))
    assert main(["train", "refiner", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "iterations must be 1 to 8" in err and "\n" not in err
