"""Hostile run files: YAML alias bombs, deep nesting, bad --set values, odd shapes.

A run file is a page of YAML, often copied from someone else. 468 bytes of aliases expand to a
billion leaves (and a validation message that repr'd them would too); 100,000 nested brackets
exhaust the parser's recursion. Each must be one line from ``refseg train check``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.harness import run_cli


def _laughs(levels: int = 9) -> str:
    """A flow list whose anchors build on each other: 10^levels leaves in a few hundred bytes."""
    parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "[" + ", ".join(parts) + "]"


def _run(tmp_path: Path, body: str) -> Path:
    (tmp_path / "d").mkdir(exist_ok=True)
    path = tmp_path / "run.yaml"
    path.write_text(
        f"model: m\ndataset: refshapes:{tmp_path / 'd'}:train\noutput_dir: out\n" + body
    )
    return path


def _check(config: Path, *extra: str):
    return run_cli("train", "check", "--config", str(config), *extra, timeout=30)


def test_billion_laughs_is_refused_at_load(tmp_path):
    body = f"grpo:\n  rewards:\n    weights:\n      format: {_laughs()}\n"
    assert len(body) < 600
    out = _check(_run(tmp_path, body))
    assert out.one_line_error, out.stderr[-2000:]
    assert "alias" in out.stderr


@pytest.mark.parametrize(
    "body, expect",
    [
        ("lora: " + "[" * 100_000 + "]" * 100_000 + "\n", "nest"),
        ("lora: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "nest"),
        ("grpo:\n  rewards:\n    weights:\n      format: [" + "1, " * 200_000 + "1]\n", "list"),
    ],
    ids=["deep-list", "deep-map", "huge-value"],
)
def test_odd_shapes_are_one_short_line(tmp_path, body, expect):
    out = _check(_run(tmp_path, body))
    assert out.one_line_error, out.stderr[-2000:]
    assert expect in out.stderr and len(out.stderr) < 400


def test_dataset_as_a_list_of_non_strings_is_one_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: m\ndataset: [[1, 2], {a: b}]\noutput_dir: out\n")
    out = _check(config)
    assert out.one_line_error, out.stderr[-2000:]
    assert "dataset" in out.stderr


@pytest.mark.parametrize(
    "value", ["grpo.beta={", "grpo.beta=[1", "grpo.beta=*x", "grpo.beta=" + "[" * 5000]
)
def test_set_values_that_are_not_yaml_are_one_line(tmp_path, value):
    out = _check(_run(tmp_path, ""), "--set", value)
    assert out.one_line_error, out.stderr[-2000:]
    assert "--set" in out.stderr


@pytest.mark.parametrize("value", ["abc", ".inf", "[64]", "null", "true", "1e300"])
def test_refiner_run_file_net_types_are_one_line(tmp_path, value):
    from refseg.cli.train import CONFIGS

    source = (CONFIGS / "refiner" / "minisam_refiner.yaml").read_text()
    config = tmp_path / "refiner.yaml"
    config.write_text(source)
    out = run_cli(
        "train", "refiner", "--config", str(config), "--set", f"net.channels={value}", timeout=30
    )
    assert out.one_line_error, out.stderr[-2000:]
    assert "channels" in out.stderr
