"""The ``>>>`` examples of every reward file run, and hold (completions in, scores out)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "refseg.train.rewards",
    "refseg.train.rewards.common",
    "refseg.train.rewards.format",
    "refseg.train.rewards.boxes",
    "refseg.train.rewards.masks",
    "refseg.train.rewards.paths",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2, f"{name} has no example"
    assert result.failed == 0, f"{name}: {result.failed} example(s) failed (see the output)"


def test_every_reward_file_is_listed():
    from pathlib import Path

    import refseg.train.rewards as package

    files = {p.stem for p in Path(package.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert {m.rsplit(".", 1)[1] for m in MODULES[1:]} == files
