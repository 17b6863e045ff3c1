"""`refseg serve` checks its specs before it listens (issue 19, item 6).

``serve --grounder nope:xyz`` printed "listening on ..." and loaded SAM before it failed, and
``serve --help`` left ``moondream:`` out of the grounder forms. A malformed spec must now be one
line and exit 2 with no socket bound and no model loaded, and every command's help must show the
same spec forms (one constant each).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from refseg.cli import app, main
from refseg.grounding import GROUNDER_SPECS
from refseg.segmentation import SEGMENTER_SPECS

pytest.importorskip("fastapi")


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding a socket or loading a model fails the test: the checks come before both."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"started: {args}")

    monkeypatch.setattr("refseg.serve.server.bind", refuse)
    monkeypatch.setattr("refseg.segmentation.load_segmenter", refuse)
    monkeypatch.setattr("refseg.grounding.load_grounder", refuse)


CASES = [
    (["--grounder", "nope:xyz"], "unknown grounder 'nope:xyz'; use " + GROUNDER_SPECS),
    (["--grounder", "qwen3-vl:"], "unknown grounder 'qwen3-vl:'"),
    (["--grounder", "openai:http://127.0.0.1:9"], "expected openai:URL#MODEL"),
    (["--grounder", "openai:http://127.0.0.1:9#m;speed=2"], "unknown option 'speed=2'"),
    (["--grounder", "openai:http://127.0.0.1:9#m;timeout=soon"], "timeout needs a number"),
    (["--grounder", "openai:http://127.0.0.1:9#m;coords=zz"], "coordinate convention 'zz'"),
    (["--grounder", "moondream:http://127.0.0.1:9;frame=page"], "frame must be box or image"),
    (["--grounder", "moondream:;frame=box"], "expected moondream:URL"),
    (["--grounder", "moondream:ftp://h"], "must start with http:// or https://"),
    (["--grounder", "openai:gpu-box:8000#m"], "must start with http:// or https://"),
    (["--segmenter", "bogus"], "unknown segmenter 'bogus'"),
    (["--segmenter", "onnx:only-one.onnx"], "expected onnx:ENCODER.onnx,DECODER.onnx"),
    (["--segmenter", "onnx:/no/e.onnx,/no/d.onnx"], "/no/e.onnx is not a file"),
    (["--segmenter", "boxdec:"], "expected boxdec:CHECKPOINT_FOLDER"),
    (["--max-new-tokens", "64"], "--max-new-tokens goes with --grounder"),
    (["--log-level", "loud"], "--log-level 'loud'"),
]


@pytest.mark.parametrize(("extra", "expected"), CASES)
def test_bad_startup_options_are_one_line_before_listening(
    extra: list[str], expected: str, nothing_starts: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--port", "0", *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("refseg: error: "), err
    assert expected in lines[0]


def test_the_real_command_prints_no_listening_line() -> None:
    """Through the console entry point, as the issue ran it."""
    done = subprocess.run(
        [sys.executable, "-m", "refseg.cli", "serve", "--port", "0", "--grounder", "nope:xyz"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REFSEG_API_KEY": ""},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"refseg: error: unknown grounder 'nope:xyz'; use {GROUNDER_SPECS}"
    ]


def _help(command: str) -> str:
    """A command's help with all whitespace removed (click wraps lines, and may break at
    hyphens), so a constant's words can be looked for whatever the terminal width."""
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    return "".join(result.output.split())


@pytest.mark.parametrize("command", ["segment", "serve", "eval"])
def test_every_command_shows_the_same_spec_forms(command: str) -> None:
    text = _help(command)
    assert "".join(GROUNDER_SPECS.split()) in text
    assert "".join(SEGMENTER_SPECS.split()) in text
    assert "moondream:URL" in text


def test_the_spec_forms_name_every_kind_the_loaders_take() -> None:
    """The constants are what the loaders accept: each form named parses."""
    from refseg.grounding import parse_grounder_spec
    from refseg.segmentation import check_segmenter_spec

    for spec in ("qwen3-vl:a/b", "qwen2.5-vl:a/b", "openai:http://h/v1#m", "moondream:http://h"):
        assert spec.split(":")[0] + ":" in GROUNDER_SPECS
        parse_grounder_spec(spec)
    for spec in ("onnx-sam", "onnx-sam:int8", "sam:a/b", "sam2:a/b", "boxdec:folder"):
        assert spec.split(":")[0] in SEGMENTER_SPECS
        check_segmenter_spec(spec)
