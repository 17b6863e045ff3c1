"""`refseg segment VIDEO --box ...` end to end on a real H.264 file, with the real weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from refseg.cli import main
from refseg.video import FrameSource
from tests.video.conftest import moving_square, write_video

ROOT = Path(__file__).resolve().parents[2]


def test_segment_a_video_file_with_a_first_frame_box(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_square(3, width=96, height=64, step=3))
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "refseg.cli",
            "segment",
            str(video),
            "--box",
            "3,15,21,33",
            "--out",
            str(out),
            "--overlay-video",
            str(overlay),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "3 frames (3 this run" in run.stdout and "IDs [0]" in run.stdout
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    for t, record in enumerate(records):  # the square, found where it moved
        (instance,) = record["instances"]
        assert instance["track_id"] == 0
        from refseg import masks

        mask = masks.decode(instance["mask"])
        cols = mask.any(axis=0).nonzero()[0]
        assert abs(cols.min() - (4 + 3 * t)) <= 2 and abs(cols.max() - (19 + 3 * t)) <= 2
    assert len(list(FrameSource(overlay).frames())) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--box", "1,1,9,9", "--json", "x.json"], "--json goes with one image"),
        (["--box", "1,1,9,9"], "needs --out DIR"),
        (["the square", "--box", "1,1,9,9", "--out", "o"], "either a PHRASE or --box"),
        (["--box", "1,1,9,9", "--out", "o", "--reground", "5"], "--reground goes with a PHRASE"),
        (["--box", "1,1,9,9", "--out", "o", "--overlay-video", "o.gif"], "name it with one of"),
        (["--box", "1,1,9,9", "--out", "o", "--grounder", "x"], "--grounder goes with a PHRASE"),
    ],
)
def test_video_options_refused_in_one_line(tmp_path, capsys, monkeypatch, extra, message):
    video = write_video(tmp_path / "clip.mp4", moving_square(2))
    monkeypatch.chdir(tmp_path)
    assert main(["segment", str(video), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_video_options_on_an_image_are_refused(tmp_path, capsys) -> None:
    from PIL import Image

    Image.fromarray(moving_square(1)[0]).save(tmp_path / "a.png")
    assert main(["segment", str(tmp_path / "a.png"), "--box", "1,1,9,9", "--reground", "3"]) == 2
    assert "--reground goes with a video input" in capsys.readouterr().err


def test_segment_a_video_by_phrase_regrounds_every_n_frames(tmp_path, capsys) -> None:
    """The PHRASE path end to end: an OpenAI-style grounder (a local test server that answers
    with the red square's box in the frame it is sent) on every frame, the track kept."""
    import numpy as np

    from refseg.protocol import format_answer
    from tests.grounding.chat_server import ChatServer

    def answer(request) -> str:
        red = (request.image[..., 0] > 160) & (request.image[..., 1] < 100)
        ys, xs = np.nonzero(red)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        return format_answer([(box, [])])

    video = write_video(tmp_path / "clip.mp4", moving_square(2, width=96, height=64, step=3))
    out = tmp_path / "out"
    with ChatServer(answer) as server:
        code = main(
            [
                "segment",
                str(video),
                "the red square",
                "--out",
                str(out),
                "--reground",
                "1",
                "--grounder",
                f"openai:{server.url}#m;coords=pixels",
            ]
        )
        requests = len(server.requests)
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["grounded"] for r in records] == [True, True] and requests == 2
    assert [r["track_ids"] for r in records] == [[0], [0]]  # matched, not a new object
    assert all(r["phrase"] == "the red square" for r in records)
