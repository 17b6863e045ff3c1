"""``refseg train decoder``: shipped configs build, a 2-step run on the tiny model, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refseg.errors import InputError
from refseg.segmentation.boxdec import BoxDecConfig, BoxDecoder, count_parameters, load_checkpoint
from refseg.train.decoder import (
    DecoderTrainer,
    config_from_dict,
    decoder_settings,
    jitter_box,
    load_decoder_config,
    mask_losses,
)
from tests.segmentation.test_boxdec import _real_config

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "refseg" / "train" / "configs" / "boxdec"
RUN_FILES = sorted(CONFIGS.glob("*.yaml"))
TINY_DECODER = {"width": 32, "depth": 1, "heads": 4, "mlp_ratio": 2.0, "pixel_channels": 16}


def test_there_are_configs_for_2b_and_4b_on_refcocog_and_grefcoco():
    names = {p.name for p in RUN_FILES}
    for size in ("2b", "4b"):
        for data in ("refcocog", "grefcoco"):
            assert f"qwen3vl-{size}_{data}_boxdec.yaml" in names


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_each_config_builds_its_decoder(path):
    config = load_decoder_config(path)
    size = "4B" if "-4B-" in config.model else "2B"
    with torch.device("meta"):
        decoder = BoxDecoder(
            BoxDecConfig.from_vlm_config(_real_config(size), **decoder_settings(config))
        )
    assert 10e6 < count_parameters(decoder) < 20e6
    assert config.boxes in ("gt", "jitter", "predicted") and config.lora is None


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"boxes": "oracle"}, "boxes must be"),
        ({"decoder": {"widht": 3}}, "unknown key 'widht'"),
        ({"jitter": 2}, "jitter must be"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_bad_configs_are_one_line_errors(extra, message):
    with pytest.raises(InputError, match=message):
        config_from_dict({"model": "m", "dataset": "d", "output_dir": "o", **extra})


def test_jitter_moves_the_box_within_its_bound():
    rng = np.random.default_rng(0)
    boxes = [jitter_box([100, 50, 200, 250], 0.1, rng, 640, 480) for _ in range(50)]
    deltas = np.abs(np.array(boxes) - np.array([100, 50, 200, 250]))
    assert deltas.max(0) == pytest.approx([10, 20, 10, 20], abs=2)  # 10% of 100 x 200
    assert deltas.mean() > 2  # it does move


def test_losses_are_low_for_the_right_mask():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    weights = config_from_dict({"model": "m", "dataset": "d", "output_dir": "o"}).loss
    good = mask_losses((target * 2 - 1) * 8, target, torch.tensor([1.0]), weights)
    bad = mask_losses((1 - target * 2) * 8, target, torch.tensor([1.0]), weights)
    assert good["loss"] < 0.05 < bad["loss"]
    assert good["miou"] == 1 and bad["miou"] == 0


def _config(model, data, out, **extra):
    raw = {
        "model": str(model),
        "dataset": f"refshapes:{data}:train",
        "output_dir": str(out),
        "decoder": TINY_DECODER,
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "boxes": "jitter",
    }
    raw.update(extra)
    return config_from_dict(raw)


def test_two_steps_then_resume_gives_the_uninterrupted_run(tiny_vlm, tiny_refshapes, tmp_path):
    straight = DecoderTrainer(_config(tiny_vlm, tiny_refshapes, tmp_path / "a")).train()
    log = [json.loads(x) for x in (tmp_path / "a/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["instances"] >= 2 and np.isfinite(r["loss"]) for r in log)
    assert (tmp_path / "a/checkpoint-2/trainer_state.json").is_file()
    _, meta = load_checkpoint(tmp_path / "a")
    assert meta["vlm_fingerprint"] == straight.grounder.feature_fingerprint
    assert meta["steps"] == 2

    # Interrupted after one step (the first run stops there), then rerun to two.
    DecoderTrainer(_config(tiny_vlm, tiny_refshapes, tmp_path / "b", max_steps=1)).train()
    resumed = DecoderTrainer(_config(tiny_vlm, tiny_refshapes, tmp_path / "b")).train()
    log_b = [json.loads(x) for x in (tmp_path / "b/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2]  # step 1 was not redone
    assert log_b[1]["loss"] == pytest.approx(log[1]["loss"], rel=1e-4)
    for (name, a), b in zip(
        straight.decoder.state_dict().items(), resumed.decoder.state_dict().values()
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    # The VLM stayed frozen.
    assert not any(p.requires_grad for p in resumed.grounder.model.parameters())


def test_a_resume_after_a_save_logs_each_step_once(tiny_vlm, tiny_refshapes, tmp_path):
    """Killed after checkpoint-2 with step 3 logged: the rerun redoes step 3, logs it once."""
    from refseg.train.common import last_checkpoint

    out = tmp_path / "run"
    config = _config(tiny_vlm, tiny_refshapes, out, max_steps=3, save_steps=2)
    DecoderTrainer(config).train()
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert Path(last_checkpoint(out) or "").name == "checkpoint-2"
    resumed = DecoderTrainer(config).train()  # resumes from checkpoint-2
    again = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert resumed.step == 3
    assert [r["step"] for r in again] == [1, 2, 3]  # no duplicate step line
    assert again[2]["loss"] == pytest.approx(log[2]["loss"], rel=1e-4)  # the same step, redone


def test_the_trained_decoder_runs_as_a_segmenter(tiny_vlm, tiny_refshapes, tmp_path):
    from refseg.grounding import load_grounder
    from refseg.pipeline import Pipeline
    from refseg.segmentation import load_segmenter

    out = tmp_path / "run"
    DecoderTrainer(_config(tiny_vlm, tiny_refshapes, out, max_steps=1, boxes="gt")).train()
    grounder = load_grounder(f"qwen3-vl:{tiny_vlm}", max_new_tokens=8)
    pipe = Pipeline(grounder, load_segmenter(f"boxdec:{out}"))
    assert pipe.feature_sources == ["deepstack0", "final"]


def test_cli_train_decoder(tiny_vlm, tiny_refshapes, tmp_path, capsys):
    import yaml

    from refseg.cli import main

    out = tmp_path / "cli"
    path = tmp_path / "run.yaml"
    cfg = {
        "model": str(tiny_vlm),
        "dataset": f"refshapes:{tiny_refshapes}:train",
        "output_dir": str(out),
        "decoder": TINY_DECODER,
        "per_device_train_batch_size": 1,
        "max_steps": 1,
        "boxes": "predicted",
    }
    path.write_text(yaml.safe_dump(cfg))
    code = main(["train", "decoder", "--config", str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"boxdec:{out}" in captured.out
    assert (out / "boxdec.json").is_file()
    code = main(["train", "decoder", "--config", str(path), "--set", "boxes=oracle"])
    assert code == 2 and "boxes must be" in capsys.readouterr().err


def test_lora_trains_adapters_with_the_decoder(tiny_vlm, tiny_refshapes, tmp_path):
    """Stage 1 of the paper: LoRA on the language model, trained through the decoder loss."""
    out = tmp_path / "lora"
    trainer = DecoderTrainer(
        _config(tiny_vlm, tiny_refshapes, out, max_steps=1, lora={"r": 4, "alpha": 8})
    )
    trainer.train()
    from safetensors.torch import load_file

    adapter = load_file(str(out / "checkpoint-1" / "lora" / "adapter_model.safetensors"))
    trained_b = [n for n, t in adapter.items() if "lora_B" in n and t.abs().sum() > 0]
    assert trained_b and all("visual" not in n for n in adapter)  # B starts at zero
    assert (out / "vlm" / "config.json").is_file()  # the merged VLM to ground with
    assert (out / "checkpoint-1" / "lora").is_dir()
