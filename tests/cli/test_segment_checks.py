"""`refseg segment` refuses contradictions before any model loads (issue 19, items 4 and 5).

* Options only a PHRASE reads (``--answer``, ``--think``, ``--grounder``, ``--refiner``,
  ``--refine-iters``) given with ``--box``/``--point`` prompts were dropped without a word.
* ``--mask-png out.jpg`` wrote PNG bytes under a ``.jpg`` name (so did ``--overlay``; ``--svg``
  writes SVG whatever the name).

Each case must be one ``refseg: error:`` line and exit 2 with no model loaded: the loaders are
replaced by functions that fail the test if called.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from refseg.cli import main
from tests.conftest import ASSETS

IMAGE = str(ASSETS / "astronaut.jpg")
BOX = ["segment", IMAGE, "--box", "10,10,60,60"]


@pytest.fixture(autouse=True)
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model is a failure: every check here must fire before one loads."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a model was loaded: {args}")

    monkeypatch.setattr("refseg.segmentation.load_segmenter", refuse)
    monkeypatch.setattr("refseg.grounding.load_grounder", refuse)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("refseg: error: "), err
    assert expected in lines[0], err


PHRASE_ONLY = [
    (["--answer", "path"], "--answer goes with a PHRASE"),
    (["--answer", "box"], "--answer goes with a PHRASE"),
    (["--think"], "--think goes with a PHRASE"),
    (["--grounder", "qwen3-vl:Qwen/Qwen3-VL-2B-Instruct"], "--grounder goes with a PHRASE"),
    (["--refiner", "none"], "--refiner goes with a PHRASE"),
    (["--refiner", "sam"], "--refiner goes with a PHRASE"),  # the default, but given
    (["--refine-iters", "2"], "--refine-iters goes with a PHRASE"),
    (["--min-score", "0.5"], "--min-score goes with a PHRASE"),
    (["--answer", "path", "--think"], "--think and --answer go with a PHRASE"),
    (["--grounder", "x:y", "--refiner", "none", "--refine-iters", "1"], "--grounder, --refiner"),
]


@pytest.mark.parametrize(("extra", "expected"), PHRASE_ONLY)
@pytest.mark.parametrize("prompt", [["--box", "10,10,60,60"], ["--point", "30,30"]])
def test_phrase_only_options_with_prompts_are_refused(
    extra: list[str], expected: str, prompt: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["segment", IMAGE, *prompt, *extra], capsys)
    assert_one_line(code, err, expected)
    assert "--box/--point prompts go straight to the segmenter" in err


OUTPUT_NAMES = [
    ("--mask-png", "out.jpg", "--mask-png {path}: it writes PNG, but the name ends in .jpg"),
    ("--mask-png", "out.JPEG", "it writes PNG, but the name ends in .JPEG; name it out.png"),
    ("--mask-png", "mask.png.tmp", "name ends in .tmp"),
    ("--overlay", "view.jpg", "--overlay {path}: it writes PNG, but the name ends in .jpg"),
    ("--overlay", "view.webp", "name it view.png"),
    ("--svg", "outline.png", "--svg {path}: it writes SVG, but the name ends in .png"),
]


@pytest.mark.parametrize(("option", "name", "expected"), OUTPUT_NAMES)
def test_an_output_name_of_another_format_is_refused(
    option: str,
    name: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / name
    code, err = run([*BOX, option, str(path)], capsys)
    assert_one_line(code, err, expected.format(path=path))
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ("--mask-png", "mask.png"),
        ("--mask-png", "MASK.PNG"),
        ("--mask-png", "mask"),  # no extension: nothing claims another format
        ("--overlay", "view.png"),
        ("--svg", "outline.svg"),
        ("--json", "result.txt"),  # JSON text under any name is left to the user
    ],
)
def test_matching_or_neutral_output_names_pass_the_check(option: str, name: str) -> None:
    from refseg.cli.segment import check_output_names

    check_output_names({option: Path(name)})  # no error


def test_standard_output_has_no_name_to_check() -> None:
    from refseg.cli.segment import check_output_names

    check_output_names({"--mask-png": Path("-"), "--overlay": None})


def test_name_check_comes_before_the_input_image_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image does not exist: the name is still the first thing refused."""
    argv = ["segment", str(tmp_path / "missing.png"), "--box", "1,1,5,5"]
    code, err = run([*argv, "--mask-png", str(tmp_path / "m.jpg")], capsys)
    assert_one_line(code, err, "it writes PNG")


BAD_SPECS = [
    (["--segmenter", "bogus"], "unknown segmenter 'bogus'"),
    (["--segmenter", "onnx:/no/e.onnx,/no/d.onnx"], "/no/e.onnx is not a file"),
    (["--segmenter", "sam:"], "expected sam:HUB_ID_OR_FOLDER"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_SPECS)
def test_a_bad_segmenter_spec_is_refused_before_loading(
    extra: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run([*BOX, *extra], capsys)
    assert_one_line(code, err, expected)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--grounder", "nope:xyz"], "unknown grounder 'nope:xyz'"),
        (["--grounder", "openai:http://127.0.0.1:9#m;coords=zz"], "coordinate convention 'zz'"),
        (["--grounder", "moondream:http://127.0.0.1:9;frame=page"], "frame must be box or image"),
        (["--answer", "mask"], "unknown answer kind 'mask'"),
    ],
)
def test_phrase_mode_specs_are_checked_before_loading(
    extra: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["segment", IMAGE, "the face", *extra], capsys)
    assert_one_line(code, err, expected)
