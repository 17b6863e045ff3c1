"""Path-head training with the tiny Qwen3-VL: path SFT targets, path GRPO, rollout recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refseg.train.config import config_from_dict

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def path_config(model: Path, data: Path, out: Path, **extra) -> dict:
    cfg = {
        "model": str(model),
        "dataset": f"refshapes:{data}:train",
        "output_dir": str(out),
        "answer": "path",
        "path_vertices": 12,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "gradient_checkpointing": False,
        "save_steps": 1,
        "lora": None,
        "grpo": {"num_generations": 4, "max_completion_length": 24},
    }
    cfg.update(extra)
    return cfg


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# SFT targets


def _sample(mask_list, width=200, height=100):
    from refseg import masks
    from refseg.data.base import Sample

    return Sample(
        id="s",
        image=Path("unused.png"),
        phrase="the thing",
        masks=[masks.encode(m) for m in mask_list],
        width=width,
        height=height,
    )


def _raster_of_target(text: str, width: int, height: int) -> list[np.ndarray]:
    from refseg.grounding.coords import to_grounding
    from refseg.paths import rasterize
    from refseg.protocol import parse_answer

    grounding = to_grounding(parse_answer(text), "norm1000", width, height)
    assert grounding.parse_error is None
    return [rasterize(i.polygons, width, height) for i in grounding.instances]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_path_target_draws_the_gt_mask_with_its_hole_and_parts():
    from refseg.train.data import target_text

    h, w = 100, 200
    ring = np.zeros((h, w), dtype=bool)
    ring[10:90, 10:90] = True
    ring[35:65, 35:65] = False  # a hole
    parts = np.zeros((h, w), dtype=bool)
    parts[20:50, 110:140] = True
    parts[60:90, 160:195] = True  # a second part of the same object
    text = target_text(_sample([ring, parts]), convention="norm1000", answer="path")
    assert '"path": "M' in text and '"point_2d"' not in text
    drawn = _raster_of_target(text, w, h)
    assert len(drawn) == 2
    assert not drawn[0][50, 50] and drawn[0][20, 20]  # the hole stays a hole
    assert drawn[1][30, 120] and drawn[1][75, 175]  # both parts are drawn
    assert _iou(drawn[0], ring) > 0.95 and _iou(drawn[1], parts) > 0.95


def test_path_vertex_budget_is_kept_and_coarser_budgets_draw_worse():
    from refseg.protocol import parse_answer
    from refseg.train.data import target_text

    h, w = 100, 200
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 100) ** 2 + (yy - 50) ** 2 < 40**2
    ious = {}
    for budget in (4, 8, 32):
        text = target_text(
            _sample([disc]), convention="norm1000", answer="path", path_vertices=budget
        )
        (inst,) = parse_answer(text).instances
        assert sum(len(r) for r in inst.polygons) <= budget
        ious[budget] = _iou(_raster_of_target(text, w, h)[0], disc)
    assert ious[4] < ious[8] < ious[32] and ious[32] > 0.95


def test_a_sliver_too_thin_for_the_frame_falls_back_to_its_box():
    from refseg.train.data import target_text

    h, w = 100, 4000  # one 0-1000 unit is 4 pixels wide
    sliver = np.zeros((h, w), dtype=bool)
    sliver[10:90, 1001:1003] = True
    text = target_text(_sample([sliver], width=w, height=h), convention="norm1000", answer="path")
    (drawn,) = _raster_of_target(text, w, h)
    assert drawn[50, 1002]  # still an object, not a parse error or an empty answer


def test_path_config_defaults_to_the_path_rewards_and_refuses_bad_kinds(tiny_vlm, tmp_path):
    from refseg.errors import InputError

    cfg = config_from_dict(path_config(tiny_vlm, tmp_path, tmp_path / "o"))
    assert "mask_iou" in cfg.grpo.rewards.weights and "accuracy" not in cfg.grpo.rewards.weights
    box = config_from_dict(path_config(tiny_vlm, tmp_path, tmp_path / "o", answer="box"))
    assert "accuracy" in box.grpo.rewards.weights
    with pytest.raises(InputError, match="answer must be box or path"):
        config_from_dict(path_config(tiny_vlm, tmp_path, tmp_path / "o", answer="mask"))
    with pytest.raises(InputError, match="path_vertices"):
        config_from_dict(path_config(tiny_vlm, tmp_path, tmp_path / "o", path_vertices=2))


# ---------------------------------------------------------------------------------------------
# Real (tiny) runs


def test_path_sft_two_steps_on_path_targets(tiny_vlm, tiny_refshapes, tmp_path):
    from refseg.data.base import open_dataset
    from refseg.train import sft

    out = tmp_path / "sft"
    trainer = sft.build_trainer(config_from_dict(path_config(tiny_vlm, tiny_refshapes, out)))
    samples = {s.phrase: s for s in open_dataset(f"refshapes:{tiny_refshapes}:train")}
    row = trainer.train_dataset[0]
    prompt = row["prompt"][-1]["content"]
    assert "SVG path" in (prompt if isinstance(prompt, str) else json.dumps(prompt))
    text = row["completion"][0]["content"]
    phrase = (prompt if isinstance(prompt, str) else prompt[-1]["text"]).split('"')[1]
    sample = samples[phrase]
    drawn = _raster_of_target(text, sample.width, sample.height)
    from refseg import masks

    gts = [masks.decode(m) for m in sample.masks]
    assert len(drawn) == len(gts)
    for d, g in zip(drawn, gts):
        assert _iou(d, g) > 0.6  # a 12-vertex outline on the 0-1000 grid
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def _rollouts(folder: Path) -> list[dict]:
    from refseg.train.rollouts import read_rollouts

    return read_rollouts(folder / "rollouts.jsonl")


def test_path_grpo_two_steps_records_every_rollout(tiny_vlm, tiny_refshapes, tmp_path):
    from refseg import masks
    from refseg.train import grpo

    out, rec = tmp_path / "grpo", tmp_path / "rollouts"
    raw = path_config(tiny_vlm, tiny_refshapes, out)
    raw["grpo"]["record_rollouts"] = str(rec)
    trainer = grpo.train(config_from_dict(raw))
    assert trainer.state.global_step == 2
    steps = [r for r in read_log(out) if "loss" in r]
    for name in ("format", "path_validity", "mask_iou", "boundary_iou", "no_target"):
        assert f"rewards/{name}/mean" in steps[0]
    records = _rollouts(rec)
    assert len(records) == 2 * 4  # 2 steps x 4 completions
    assert sorted((r["step"], r["index"]) for r in records) == [
        (s, i) for s in (0, 1) for i in range(4)
    ]
    for r in records:
        assert r["gt_masks"] and len(r["gt_boxes"]) == len(r["gt_masks"])
        assert Path(r["image"]).is_file() and r["sample_id"]
        gt = masks.decode({"size": [r["height"], r["width"]], "counts": r["gt_masks"][0]})
        assert gt.any()
        assert set(r["rewards"]) == {
            "format", "path_validity", "mask_iou", "boundary_iou", "no_target"
        }  # fmt: skip
        weights = {"format": 0.5, "path_validity": 0.25, "mask_iou": 1.0}
        weights.update(boundary_iou=0.5, no_target=0.5)
        total = sum(weights[k] * v for k, v in r["rewards"].items())
        assert r["reward"] == pytest.approx(total)
        assert len(r["masks"]) == len(r["paths"]) == len(r["boxes"])


def test_recorded_rollouts_have_no_duplicates_after_a_kill_and_resume(
    tiny_vlm, tiny_refshapes, tmp_path
):
    from transformers import TrainerCallback

    from refseg.train import grpo

    out, rec = tmp_path / "grpo", tmp_path / "rollouts"
    raw = path_config(tiny_vlm, tiny_refshapes, out, max_steps=3)
    raw["grpo"]["record_rollouts"] = str(rec)
    cfg = config_from_dict(raw)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:  # step 2's rollouts are recorded, its checkpoint is not
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grpo.train(cfg, callbacks=[Kill()])
    assert (out / "checkpoint-1").is_dir() and not (out / "checkpoint-2").exists()
    assert {r["step"] for r in _rollouts(rec)} == {0, 1}
    with open(rec / "rollouts.jsonl", "a") as handle:
        handle.write('{"step": 1, "index": 9, "compl')  # a line cut short by the kill
    trainer = grpo.train(cfg)
    assert trainer.state.global_step == 3
    keys = [(r["step"], r["index"]) for r in _rollouts(rec)]
    assert sorted(keys) == [(s, i) for s in (0, 1, 2) for i in range(4)]
    assert len(set(keys)) == len(keys)


def test_rollout_reader_skips_damaged_and_overlong_lines(tmp_path, monkeypatch):
    from refseg.train import rollouts

    monkeypatch.setattr(rollouts, "MAX_LINE_BYTES", 100)
    path = tmp_path / "rollouts.jsonl"
    good = json.dumps({"step": 0, "index": 0}) + "\n"
    long = json.dumps({"step": 0, "index": 1, "pad": "x" * 500}) + "\n"
    path.write_text(good + long + "not json\n" + '{"index": 2}\n' + good + '{"step": 1, "ind')
    assert [r["index"] for r in rollouts.read_rollouts(path)] == [0, 0]
