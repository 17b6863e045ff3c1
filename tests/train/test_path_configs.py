"""Shipped path-head and refiner configs: each parses and builds its trainer arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from refseg.train.config import grpo_args, load_config, sft_args

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "refseg" / "train" / "configs"
PATH_FILES = sorted(CONFIGS.glob("*_path_*.yaml"))
REFINER_FILES = sorted((CONFIGS / "refiner").glob("*.yaml"))


def test_there_are_path_configs_for_both_sizes_datasets_and_stages():
    names = {p.stem for p in PATH_FILES}
    for size in ("2b", "4b"):
        for data in ("refcocog", "refcocom-style"):
            for stage in ("sft", "grpo"):
                assert f"qwen3vl-{size}_{data}_path_{stage}" in names
    assert REFINER_FILES


@pytest.mark.parametrize("path", PATH_FILES, ids=lambda p: p.name)
def test_path_config_builds_trainer_arguments(path):
    config = load_config(path)
    assert config.answer == "path" and 3 <= config.path_vertices <= 256
    if path.stem.endswith("_sft"):
        args = sft_args(config)
        assert args.completion_only_loss is True
    else:
        args = grpo_args(config)
        weights = config.grpo.rewards.weights
        assert weights.get("mask_iou", 0) > 0 and "accuracy" not in weights
        assert config.grpo.record_rollouts and args.num_generations == config.grpo.num_generations
        assert args.generation_batch_size % args.num_generations == 0
        assert args.max_completion_length >= 512  # room for a 32-vertex outline per object
    assert args.output_dir == config.output_dir
    if "refcocom" in path.name:
        assert ":validation" not in str(config.dataset)  # never train on the evaluation split


@pytest.mark.parametrize("path", REFINER_FILES, ids=lambda p: p.name)
def test_refiner_config_builds_its_network(path):
    from refseg.segmentation.refiners import TorchRefiner
    from refseg.train.refiner import load_refiner_config

    config = load_refiner_config(path)
    net = TorchRefiner.build(config.net)
    assert sum(p.numel() for p in net.parameters()) > 0
    assert config.sources("rollouts")
    assert config.features == "onnx-sam" or (config.features.startswith("vlm:") and config.model)
