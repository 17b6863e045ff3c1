"""Config files: every shipped config parses and builds its TRL arguments (no model loading)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from refseg.errors import InputError
from refseg.train.config import describe, grpo_args, load_config, sft_args

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "refseg" / "train" / "configs"
RUN_FILES = sorted(CONFIGS.glob("*.yaml"))
ACCELERATE_FILES = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def test_there_are_configs_for_each_family_and_dataset():
    names = " ".join(p.name for p in RUN_FILES)
    for part in ("qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b", "qwen2.5vl-3b", "qwen2.5vl-7b"):
        assert part in names
    for part in ("refcocog", "grefcoco", "reasonseg"):
        assert part in names
    assert len(ACCELERATE_FILES) >= 4


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_run_config_builds_trainer_arguments(path):
    config = load_config(path)
    args = sft_args(config) if path.stem.endswith("_sft") else grpo_args(config)
    assert args.output_dir == config.output_dir
    assert args.learning_rate == config.learning_rate
    assert args.save_steps == config.save_steps
    assert args.remove_unused_columns is False  # reward columns must reach the rewards
    if not path.stem.endswith("_sft"):
        assert args.num_generations == config.grpo.num_generations
        assert args.beta == config.grpo.beta
        assert args.use_vllm == (config.grpo.generation_backend == "vllm")
        # the per-device batch must hold whole groups
        assert args.generation_batch_size % args.num_generations == 0
    if "qwen2.5" in path.name:
        assert config.coords == "resized"


@pytest.mark.parametrize("path", ACCELERATE_FILES, ids=lambda p: p.name)
def test_accelerate_files_are_consistent(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("MULTI_GPU", "DEEPSPEED")
    assert data["num_processes"] >= data["num_machines"] >= 1
    if data["distributed_type"] == "DEEPSPEED":
        assert data["deepspeed_config"]["zero_stage"] in (2, 3)
    if data["num_machines"] > 1:
        assert data["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"
        assert "main_process_ip" in data


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


BASE = "model: m\ndataset: refshapes:d:train\noutput_dir: o\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("lerning_rate: 1\n", "unknown key 'lerning_rate'"),
        ("grpo: {num_gens: 4}\n", "grpo: unknown key 'num_gens'"),
        ("grpo: {rewards: {weights: {acc: 1}}}\n", "unknown reward 'acc'"),
        ("grpo: {num_generations: 1}\n", "num_generations must be at least 2"),
        ("grpo: {rewards: {weights: {format: high}}}\n", "must be a number"),
        ("learning_rate: fast\n", "expected a number"),
        ("coords: inches\n", "unknown coordinate convention"),
        ("lora: null\ntrain_vision: true\nsave_steps: x\n", "save_steps"),
        ("trainer_extra: {no_such_field: 1}\n", "not a GRPOConfig field"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, extra, message):
    with pytest.raises(InputError, match=message) as info:
        grpo_args(load_config(write(tmp_path, BASE + extra)))
    assert "\n" not in str(info.value)


def test_missing_required_key_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="missing required key 'output_dir'"):
        load_config(write(tmp_path, "model: m\ndataset: d\n"))
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_and_full_fine_tuning(tmp_path):
    config = load_config(write(tmp_path, BASE), {"grpo.beta": 0.04, "lora": None, "max_steps": 7})
    assert config.grpo.beta == 0.04 and config.lora is None
    args = grpo_args(config)
    assert args.beta == 0.04 and args.max_steps == 7


def test_trainer_extra_reaches_trl(tmp_path):
    config = load_config(write(tmp_path, BASE + "trainer_extra: {max_grad_norm: 0.5}\n"))
    assert grpo_args(config).max_grad_norm == 0.5


def test_every_key_has_help():
    rows = describe()
    assert {"model", "grpo.num_generations", "grpo.rewards.weights", "lora.r"} <= {
        r[0] for r in rows
    }
    assert all(help_text for _, _, help_text in rows)


def test_train_check_fails_on_a_missing_dataset_path(tmp_path, monkeypatch, capsys):
    """Issue 10: `train check` said ok for a dataset folder that does not exist."""
    from refseg.cli import main

    monkeypatch.chdir(tmp_path)
    config = write(tmp_path, BASE)  # dataset refshapes:d:train, relative to the current folder
    assert main(["train", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset refshapes:d:train" in err and "does not exist" in err
    (tmp_path / "d").mkdir()
    assert main(["train", "check", "--config", str(config)]) == 0
    assert ": ok (model m, dataset refshapes:d:train)" in capsys.readouterr().out


def test_train_help_names_the_installed_config_folder(capsys):
    from refseg.cli import main
    from refseg.cli.train import CONFIGS

    assert sorted(CONFIGS.glob("*.yaml"))  # the folder the help names holds the examples
    assert main(["train", "check", "--help"]) == 0
    # the help is wrapped to the terminal, and a long path may be broken anywhere in it
    assert str(CONFIGS) in "".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"model: \xff\xfe bad\n", "not UTF-8 text"),
        (b"- a\n- b\n", "expected a mapping"),
        (b"# " + b"x" * (1024 * 1024 + 1), "over 1024 KiB"),
    ],
)
def test_unreadable_configs_are_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem):
        load_config(path)


# --- RunConfig: the run fields of the decoder and refiner trainers -------------------------

RUN_FIELDS = {
    "output_dir",
    "max_steps",
    "learning_rate",
    "weight_decay",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "seed",
}
#: The YAML keys of the two run files before RunConfig (they must not change).
DECODER_KEYS = RUN_FIELDS | {
    "model", "dataset", "family", "prompt_template", "max_pixels", "min_pixels", "max_samples",
    "boxes", "jitter", "match_iou", "decoder", "loss", "lora", "warmup_steps", "num_train_epochs",
    "per_device_train_batch_size", "device", "dtype",
}  # fmt: skip
REFINER_KEYS = RUN_FIELDS | {
    "rollouts", "dataset", "max_samples", "features", "segmenter", "model", "family",
    "embedding_cache", "net", "iterations", "batch_size", "loss", "synth",
}  # fmt: skip


def test_decoder_and_refiner_share_the_run_fields_and_keep_their_keys():
    import dataclasses
    import inspect

    from refseg.train.config import RunConfig
    from refseg.train.decoder import DecoderTrainConfig
    from refseg.train.refiner import RefinerTrainConfig

    assert {f.name for f in dataclasses.fields(RunConfig)} == RUN_FIELDS
    base = {f.name: f for f in dataclasses.fields(RunConfig)}
    for cls, keys in ((DecoderTrainConfig, DECODER_KEYS), (RefinerTrainConfig, REFINER_KEYS)):
        assert issubclass(cls, RunConfig)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(fields) == keys
        # declared once: only a default may differ (and then the help says so, or is the base's)
        redeclared = RUN_FIELDS & set(inspect.get_annotations(cls))
        for name in RUN_FIELDS - redeclared:
            assert fields[name] is base[name] or fields[name].metadata == base[name].metadata


def test_trainer_defaults_are_unchanged():
    from refseg.train import decoder, refiner

    d = decoder.config_from_dict({"model": "m", "dataset": "d", "output_dir": "o"})
    assert (d.max_steps, d.learning_rate, d.weight_decay) == (-1, 1e-4, 0.01)
    assert (d.save_steps, d.save_total_limit, d.logging_steps, d.seed) == (500, 3, 10, 0)
    r = refiner.config_from_dict({"output_dir": "o", "dataset": "d"})
    assert (r.max_steps, r.learning_rate, r.weight_decay) == (500, 1e-3, 0.0)
    assert (r.save_steps, r.save_total_limit, r.logging_steps, r.seed) == (100, 2, 10, 0)
    with pytest.raises(InputError, match="missing required key 'model'"):
        decoder.config_from_dict({})  # the trainer's own keys are named first
    with pytest.raises(InputError, match="save_steps must be at least 1"):
        refiner.config_from_dict({"output_dir": "o", "dataset": "d", "save_steps": 0})
