"""`refseg segment` with box and point prompts, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.cli import main
from tests.conftest import ASSETS

IMAGE = ASSETS / "astronaut.jpg"


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_box_prompts_write_json_mask_and_overlay(tmp_path, capsys, sam):
    out_json, out_mask, out_overlay = tmp_path / "r.json", tmp_path / "m.png", tmp_path / "o.png"
    code, out, err = run(
        [
            "segment",
            str(IMAGE),
            "--box",
            "140,20,320,200",
            "--box",
            "-20,-10,120,600",
            "--json",
            str(out_json),
            "--mask-png",
            str(out_mask),
            "--overlay",
            str(out_overlay),
        ],
        capsys,
    )
    assert code == 0, err
    assert "2 instance(s)" in out
    data = json.loads(out_json.read_text())
    assert data["image"] == {"width": 512, "height": 512}
    assert data["no_target"] is False
    first, second = data["instances"]
    assert first["box"] == [140.0, 20.0, 320.0, 200.0]
    assert second["box"] == [0.0, 0.0, 120.0, 512.0]  # clipped to the image
    face = masks.decode(first["mask"])
    assert face.shape == (512, 512) and 5000 < face.sum() < 180 * 180
    union = masks.from_png(out_mask.read_bytes())
    np.testing.assert_array_equal(union, face | masks.decode(second["mask"]))
    overlay = np.asarray(Image.open(out_overlay))
    assert overlay.shape == (512, 512, 3)
    assert not np.array_equal(overlay, np.asarray(Image.open(IMAGE)))


def test_point_prompt_with_background_point(tmp_path, capsys, sam):
    out_json = tmp_path / "p.json"
    code, _, err = run(
        [
            "segment",
            str(IMAGE),
            "--point",
            "230,110",
            "--point",
            "60,60,0",
            "--json",
            str(out_json),
        ],
        capsys,
    )
    assert code == 0, err
    instance = json.loads(out_json.read_text())["instances"][0]
    assert instance["points"] == [[230.0, 110.0], [60.0, 60.0]]
    assert masks.decode(instance["mask"])[110, 230]


def _has_colour(image: np.ndarray, x: int, y: int, rgb: tuple[int, int, int], r: int = 8) -> bool:
    window = image[y - r : y + r + 1, x - r : x + r + 1]
    return bool((window == np.array(rgb, np.uint8)).all(axis=-1).any())


def test_background_point_keeps_its_label_and_outputs_are_announced(tmp_path, capsys, sam):
    """Issue 10: `--point X,Y,0` came back as a plain point, drawn green like a foreground one,
    and nothing said which files were written."""
    from refseg.render import BACKGROUND, FOREGROUND

    out_json, out_overlay = tmp_path / "p.json", tmp_path / "o.png"
    code, out, err = run(
        ["segment", str(IMAGE), "--point", "230,110", "--point", "330,190,0",
         "--json", str(out_json), "--overlay", str(out_overlay)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    instance = json.loads(out_json.read_text())["instances"][0]
    assert instance["points"] == [[230.0, 110.0], [330.0, 190.0]]  # unchanged for old readers
    assert instance["point_labels"] == [1, 0]
    assert instance["box"] is None  # point-only prompt (documented in the result format)
    overlay = np.asarray(Image.open(out_overlay).convert("RGB"))
    assert _has_colour(overlay, 230, 110, FOREGROUND)
    assert not _has_colour(overlay, 230, 110, BACKGROUND)
    assert _has_colour(overlay, 330, 190, BACKGROUND)
    assert not _has_colour(overlay, 330, 190, FOREGROUND)
    assert f"wrote {out_json}\n" in err and f"wrote {out_overlay}\n" in err
    assert "wrote" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--box", "5,5,1,1"], "inverted"),
        (["--box", "nan,1,2,3"], "finite"),
        (["--box", "1,2,3"], "X1,Y1,X2,Y2"),
        (["--box", "600,600,700,700"], "no area"),
        (["--point", "1,2,7"], "LABEL"),
        (["--point", "9999,1"], "outside"),
        (["--point", "1,1,0"], "foreground"),
        (["--box", "1,1,50,50", "--box", "60,60,90,90", "--point", "10,10"], "ambiguous"),
        ([], "PHRASE"),
    ],
)
def test_bad_prompts_exit_2_with_one_line(args, message, tmp_path, capsys):
    out_json = tmp_path / "never.json"
    code, _, err = run(["segment", str(IMAGE), *args, "--json", str(out_json)], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not out_json.exists()


@pytest.mark.parametrize("content", [b"", b"GIF89a not really", b"\xff\xd8\xff\xe0 truncated"])
def test_bad_image_files_exit_2(content, tmp_path, capsys):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    code, _, err = run(["segment", str(path), "--box", "1,1,5,5"], capsys)
    assert code == 2 and err.startswith("refseg: error:") and err.count("\n") == 1


def test_console_script_prints_no_traceback(tmp_path):
    script = Path(sys.executable).with_name("refseg")
    proc = subprocess.run(
        [str(script), "segment", str(tmp_path / "missing.png"), "--box", "1,1,2,2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"refseg: error: {tmp_path / 'missing.png'}: no such image file"


@pytest.mark.parametrize("args", [["--refine", "99"], ["--no-such-option"]])
def test_usage_errors_exit_2_without_traceback(args, capsys):
    code, _, err = run(["segment", str(IMAGE), "--box", "1,1,40,40", *args], capsys)
    assert code == 2
    assert "Traceback" not in err and "Error:" in err


def test_exit_codes_from_typer_are_returned():
    assert main(["segment", "--help"]) == 0
    assert main([]) in (0, 2)  # no arguments: help, never a crash


def test_output_over_the_input_image_is_refused(tmp_path, capsys):
    photo = tmp_path / "v.jpg"
    photo.write_bytes(IMAGE.read_bytes())
    (tmp_path / "alias.jpg").symlink_to(photo)
    for target in (photo, tmp_path / "alias.jpg"):
        argv = ["segment", str(photo), "--box", "1,1,50,50", "--overlay", str(target)]
        code, _, err = run(argv, capsys)
        assert code == 2 and "input file" in err and err.count("\n") == 1
    assert photo.read_bytes() == IMAGE.read_bytes()


def test_json_dash_is_standard_output(tmp_path, capsys, monkeypatch, sam):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["segment", str(IMAGE), "--box", "140,20,320,200", "--json", "-"], capsys)
    assert code == 0, err
    assert json.loads(out)["image"] == {"width": 512, "height": 512}  # stdout is only the JSON
    assert "1 instance(s)" in err
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("target", [".", "afile/x.json", "/proc/self/x.json"])
def test_unwritable_outputs_exit_2_with_one_line(tmp_path, capsys, monkeypatch, target, sam):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    code, _, err = run(["segment", str(IMAGE), "--box", "1,1,50,50", "--json", target], capsys)
    assert code == 2 and err.startswith("refseg: error: cannot write") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_unwritable_output_fails_before_the_models_load(tmp_path, capsys):
    argv = ["segment", str(IMAGE), "--box", "1,1,5,5", "--segmenter", "onnx:/no/e.onnx,/no/d.onnx"]
    code, _, err = run([*argv, "--json", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err and err.count("\n") == 1


def test_a_linked_output_is_written_through(tmp_path, capsys, sam):
    real, link = tmp_path / "results" / "r.json", tmp_path / "r.json"
    real.parent.mkdir()
    link.symlink_to(real)
    code, _, err = run(["segment", str(IMAGE), "--box", "1,1,50,50", "--json", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and json.loads(real.read_text())["instances"]


@pytest.mark.parametrize(
    "command",
    [["segment"], ["eval"], ["demo"], ["serve"], ["data", "refshapes"], ["train", "check"]],
)
def test_help_at_80_columns_is_whole(command, capsys, monkeypatch):
    """Issue 10: at 80 columns rich's help panels cut long defaults with an ellipsis
    ("qwen3-vl:Qwen/Qwen3-VL-…") and ate "[default: 0.08]" written in a help text."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "scenes ;" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    if command in (["segment"], ["eval"], ["demo"]):
        assert "qwen3-vl:Qwen/Qwen3-VL-2B-Instruct" in out
