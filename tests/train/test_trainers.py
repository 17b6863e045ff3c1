"""Real (tiny) training runs through TRL: GRPO, SFT, resume, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refseg.train.config import config_from_dict

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def base_config(model: Path, data: Path, out: Path, **extra) -> dict:
    cfg = {
        "model": str(model),
        "dataset": f"refshapes:{data}:train",
        "output_dir": str(out),
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


def test_grpo_two_steps_logs_every_reward(tiny_vlm, tiny_refshapes, tmp_path):
    from refseg.train import grpo

    out = tmp_path / "grpo"
    weights = {"format": 0.5, "validity": 0.25, "accuracy": 1.0, "no_target": 0.5}
    cfg = config_from_dict(
        base_config(
            tiny_vlm,
            tiny_refshapes,
            out,
            grpo={
                "num_generations": 4,
                "max_completion_length": 24,
                "rewards": {"weights": weights},
            },
        )
    )
    trainer = grpo.train(cfg)
    assert trainer.state.global_step == 2
    steps = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for name in ("format", "validity", "accuracy", "no_target"):
        assert f"rewards/{name}_reward/mean" in steps[0]
    assert 0.0 <= steps[0]["format_rate"] <= 1.0
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2").is_dir()


def test_a_trained_model_is_asked_with_the_prompt_it_was_trained_on(
    tiny_vlm, tiny_refshapes, tmp_path
):
    from refseg.grounding import load_grounder
    from refseg.train import sft

    out = tmp_path / "sft-template"
    template = 'Find: "{phrase}"'
    sft.train(
        config_from_dict(
            base_config(tiny_vlm, tiny_refshapes, out, max_steps=1, prompt_template=template)
        )
    )
    grounder = load_grounder(f"qwen3-vl:{out}")
    assert grounder.prompt_template == template
    (message,) = grounder.build_messages(None, "the red box")
    assert message["content"][1]["text"] == 'Find: "the red box"'
    # An explicit template still wins; the base model (no card) keeps the protocol's prompt.
    assert (
        load_grounder(f"qwen3-vl:{out}", prompt_template="{phrase}?").prompt_template == "{phrase}?"
    )
    assert load_grounder(f"qwen3-vl:{tiny_vlm}").prompt_template is None


def test_grpo_lora_with_kl_reference(tiny_vlm, tiny_refshapes, tmp_path):
    """LoRA plus beta > 0: the reference is the adapter-disabled base model."""
    from refseg.train import grpo

    out = tmp_path / "lora"
    raw = base_config(tiny_vlm, tiny_refshapes, out, max_steps=1, lora={"r": 4, "alpha": 8})
    raw["grpo"]["beta"] = 0.1
    trainer = grpo.train(config_from_dict(raw))
    assert trainer.state.global_step == 1
    assert "kl" in read_log(out)[0]
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)


def test_sft_two_steps_trains_on_the_formatted_ground_truth(tiny_vlm, tiny_refshapes, tmp_path):
    from refseg.data.base import open_dataset
    from refseg.grounding.coords import to_grounding
    from refseg.protocol import parse_answer
    from refseg.train import sft

    out = tmp_path / "sft"
    cfg = config_from_dict(base_config(tiny_vlm, tiny_refshapes, out))
    trainer = sft.build_trainer(cfg)
    # The targets the trainer sees parse back to the GT boxes (within one 0-1000 unit).
    samples = {s.phrase: s for s in open_dataset(f"refshapes:{tiny_refshapes}:train")}
    row = trainer.train_dataset[0] if "completion" in trainer.train_dataset.column_names else None
    if row is not None:
        text = row["completion"][0]["content"]
        phrase = row["prompt"][-1]["content"].split('"')[1]
        sample = samples[phrase]
        grounding = to_grounding(parse_answer(text), "norm1000", sample.width, sample.height)
        assert len(grounding.instances) == len(sample.masks)
        for inst, box in zip(grounding.instances, sample.gt_boxes()):
            assert max(abs(a - b) for a, b in zip(inst.box, box)) <= sample.width / 1000 + 1e-6
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_interrupted_run_resumes_and_the_step_counter_continues(tiny_vlm, tiny_refshapes, tmp_path):
    from transformers import TrainerCallback

    from refseg.train import grpo

    out = tmp_path / "resume"
    cfg = config_from_dict(base_config(tiny_vlm, tiny_refshapes, out, max_steps=3))

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grpo.train(cfg, callbacks=[Interrupt()])
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (out / "checkpoint-2").exists()
    trainer = grpo.train(cfg)
    assert trainer.state.global_step == 3
    steps = [r["step"] for r in read_log(out) if "loss" in r]
    assert steps == [1, 2, 3]  # step 1 from the first run, 2-3 after resuming


def test_cli_runs_grpo_from_yaml_and_refuses_bad_keys(tiny_vlm, tiny_refshapes, tmp_path, capsys):
    import yaml

    from refseg.cli import main

    out = tmp_path / "cli"
    raw = base_config(tiny_vlm, tiny_refshapes, out, max_steps=1)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "grpo", "--config", str(path), "--set", "grpo.temperature=0.7"]) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    path.write_text(yaml.safe_dump({**raw, "learnig_rate": 1}))
    assert main(["train", "grpo", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'learnig_rate'" in err and "\n" not in err


def test_training_prompt_renders_like_the_grounders(tiny_vlm):
    """TRL builds the multimodal prompt from our rows; it must equal inference's prompt."""
    from PIL import Image
    from trl.data_utils import prepare_multimodal_messages

    from refseg.grounding.qwen import build_messages, load_processor
    from refseg.train.data import prompt_messages

    processor = load_processor(tiny_vlm, family="qwen3-vl")
    image = Image.new("RGB", (64, 64))

    def render(messages):
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    for think in (False, True):
        train = prepare_multimodal_messages(
            prompt_messages("the red circle", think=think, coords="norm1000"), images=[image]
        )
        infer = build_messages(image, "the red circle", think=think, coords="norm1000")
        assert render(train) == render(infer)
