"""Hostile run files: YAML alias bombs, deep nesting, bad --set values, odd shapes.

A run file is a page of YAML, often copied from someone else. 468 bytes of aliases expand to a
billion leaves (and a validation message that repr'd them would too); 100,000 nested brackets
exhaust the parser's recursion. Each must be one line from ``refseg train check``.
"""

from __future__ import annotations

import pytest

from tests.hostile.harness import run_cli_cases


def _laughs(levels: int = 9) -> str:
    """A flow list whose anchors build on each other: 10^levels leaves in a few hundred bytes."""
    parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "[" + ", ".join(parts) + "]"


_HEAD = "model: m\ndataset: refshapes:{data}:train\noutput_dir: out\n"
_WEIGHTS = "grpo:\n  rewards:\n    weights:\n      format: "
#: name: (the run file after its head (None: no head), --set values, expected in the message).
CASES = {
    "billion-laughs": (_WEIGHTS + _laughs() + "\n", [], "alias"),
    "deep-list": ("lora: " + "[" * 100_000 + "]" * 100_000 + "\n", [], "nest"),
    "deep-map": ("lora: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", [], "nest"),
    "huge-value": (_WEIGHTS + "[" + "1, " * 20_000 + "1]\n", [], "list"),
    "dataset-list": (None, [], "dataset"),
    "set-brace": ("", ["grpo.beta={"], "--set"),
    "set-open-list": ("", ["grpo.beta=[1"], "--set"),
    "set-alias": ("", ["grpo.beta=*x"], "--set"),
    "set-deep": ("", ["grpo.beta=" + "[" * 5000], "--set"),
}
CHANNELS = ["abc", ".inf", "[64]", "null", "true", "1e300"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case in one limited child (``train check``; ``train refiner`` for net types)."""
    from refseg.cli.train import CONFIGS

    root = tmp_path_factory.mktemp("configs")
    (root / "d").mkdir()
    cases = {}
    for name, (body, sets, _) in CASES.items():
        path = root / f"{name}.yaml"
        if body is None:
            path.write_text("model: m\ndataset: [[1, 2], {a: b}]\noutput_dir: out\n")
        else:
            path.write_text(_HEAD.format(data=root / "d") + body)
        extra = [arg for value in sets for arg in ("--set", value)]
        cases[name] = ["train", "check", "--config", str(path), *extra]
    refiner = root / "refiner.yaml"
    refiner.write_text((CONFIGS / "refiner" / "minisam_refiner.yaml").read_text())
    for value in CHANNELS:
        cases[value] = [
            "train",
            "refiner",
            "--config",
            str(refiner),
            "--set",
            f"net.channels={value}",
        ]
    return run_cli_cases(cases, timeout=60)


def test_billion_laughs_is_small_on_disk():
    assert len(CASES["billion-laughs"][0]) < 600


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_run_files_are_one_short_line(outcomes, name):
    out = outcomes[name]
    assert out.one_line_error, out.stderr[-2000:]
    assert CASES[name][2] in out.stderr and len(out.stderr) < 400


@pytest.mark.parametrize("value", CHANNELS)
def test_refiner_run_file_net_types_are_one_line(outcomes, value):
    out = outcomes[value]
    assert out.one_line_error, out.stderr[-2000:]
    assert "channels" in out.stderr
