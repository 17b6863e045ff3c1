"""Hostile prompt templates: format bombs and attribute walks in model cards and run configs.

A template is ``str.format`` input from someone else (a model folder's ``refseg.json``, a run
file). Only ``{phrase}`` may be filled in: ``{phrase:>3000000000}`` would pad to 3 GB and
``{phrase.__class__.__mro__}`` walks the interpreter's objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refseg.errors import InputError
from refseg.protocol.templates import build_prompt
from tests.conftest import ASSETS
from tests.hostile.harness import run_cli_cases

IMAGE = str(ASSETS / "astronaut.jpg")

BOMB = "{phrase} {phrase:>3000000000}"  # a 3 GB pad: only ever in a limited child
HOSTILE = [
    "{phrase.__class__.__mro__}",
    "{phrase:>30}",
    "{phrase} {phrase[0]}",
    "{phrase!r}",
    "{phrase} {0}",
    "{phrase} {}",
    "{phrase} {other}",
    "{phrase} {phrase:{phrase}}",
    "no field at all",
    "{phrase} {",
    "{phrase}" * 9,
    "{phrase}" + "x" * 20_000,
]


@pytest.mark.parametrize(
    "template",
    ["{phrase}", 'Find "{phrase}" in the picture.', "{{json}} {phrase} {{", "{phrase}" * 8],
)
def test_documented_templates_still_work(template):
    assert "the dog" in build_prompt("the dog", think=False, template=template)


@pytest.mark.parametrize("template", HOSTILE)
def test_build_prompt_refuses(template):
    with pytest.raises(InputError) as info:
        build_prompt("the dog", think=False, template=template)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def _model_folder(tmp_path: Path, template: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    (folder / "refseg.json").write_text(json.dumps({"prompt_template": template}))
    return folder


_CARDS = {"card-bomb": BOMB, "card-mro": HOSTILE[0]}
_KEYS = ["prompt_template", "sft.reasoning_template"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every CLI case in one limited child."""
    root = tmp_path_factory.mktemp("templates")
    cases = {}
    for name, template in _CARDS.items():
        (root / name).mkdir()
        folder = _model_folder(root / name, template)
        cases[name] = ["segment", IMAGE, "the astronaut", "--grounder", f"qwen3-vl:{folder}"]
    (root / "d").mkdir()
    run = root / "run.yaml"
    run.write_text(f"model: m\ndataset: refshapes:{root / 'd'}:train\noutput_dir: out\n")
    for key in _KEYS:
        cases[key] = ["train", "check", "--config", str(run), "--set", f"{key}='{BOMB}'"]
    return run_cli_cases(cases)


@pytest.mark.parametrize("name", list(_CARDS))
def test_model_card_template_is_refused_before_the_model_loads(outcomes, name):
    out = outcomes[name]
    assert out.one_line_error, out.stderr[-2000:]
    assert "refseg.json" in out.stderr and "{phrase" in out.stderr


@pytest.mark.parametrize("key", _KEYS)
def test_train_check_refuses_a_template_training_would_write_into_the_card(outcomes, key):
    out = outcomes[key]
    assert out.one_line_error, out.stderr[-2000:]
    assert key in out.stderr
