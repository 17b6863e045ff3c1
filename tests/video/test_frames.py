"""Decoding: video files (PyAV), GIFs (Pillow) and frame folders, streamed and bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg.errors import InputError
from refseg.video.frames import FrameSource, is_video
from tests.video.conftest import moving_square, write_video


def test_mp4_frames_stream_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_square(5))
    source = FrameSource(video)
    assert (source.info.width, source.info.height, source.info.kind) == (64, 48, "video")
    frames = list(source.frames())
    assert [i for i, _ in frames] == [0, 1, 2, 3, 4]
    # The red square moved right by 4 px a frame (lossy codec: compare its red column centre).
    centres = [np.nonzero(f[..., 0] > 170)[1].mean() for _, f in frames]
    assert np.allclose(np.diff(centres), 4, atol=1.0)
    assert [i for i, _ in source.frames(start=3)] == [3, 4]


def test_video_detected_by_suffix_header_and_gif_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_square(2))
    odd = tmp_path / "clip.bin"
    odd.write_bytes(video.read_bytes())
    still, moving = tmp_path / "still.gif", tmp_path / "moving.gif"
    frames = [Image.fromarray(f) for f in moving_square(3)]
    frames[0].save(still)
    frames[0].save(moving, save_all=True, append_images=frames[1:], duration=100)
    photo = tmp_path / "photo.png"
    frames[0].save(photo)
    assert is_video(video) and is_video(odd) and is_video(moving) and is_video(tmp_path)
    assert not is_video(still) and not is_video(photo)
    gif = FrameSource(moving)
    assert gif.info.frames == 3 and gif.info.fps == pytest.approx(10)
    assert [f.shape for _, f in gif.frames()] == [(48, 64, 3)] * 3


def test_folder_in_natural_order(tmp_path: Path) -> None:
    for t, frame in enumerate(moving_square(11)):
        Image.fromarray(frame).save(tmp_path / f"f{t}.png")
    source = FrameSource(tmp_path)
    firsts = [int(np.nonzero(f[..., 0] > 170)[1].min()) for _, f in source.frames()]
    assert firsts == [4 + 4 * t for t in range(11)]  # f10 after f9, not after f1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.joinpath("x.mp4").write_text("not a video") and p / "x.mp4", "not a readable"),
        (lambda p: p / "missing.mp4", "no such video"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no frames"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        list(FrameSource(make(tmp_path)).frames())
    assert "\n" not in str(info.value)


def test_frame_count_and_size_limits(tmp_path: Path, monkeypatch) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_square(4))
    monkeypatch.setenv("REFSEG_MAX_FRAMES", "3")
    with pytest.raises(InputError, match=r"over the limit of 3|more than 3 frames"):
        list(FrameSource(video).frames())
    monkeypatch.delenv("REFSEG_MAX_FRAMES")
    monkeypatch.setenv("REFSEG_MAX_PIXELS", "1000")
    with pytest.raises(InputError, match="over the limit of 1000 pixels"):
        FrameSource(video)
    monkeypatch.delenv("REFSEG_MAX_PIXELS")
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(moving_square(1)[0]).save(folder / "0.png")
    Image.fromarray(moving_square(1, width=32)[0]).save(folder / "1.png")
    with pytest.raises(InputError, match="share a size"):
        list(FrameSource(folder).frames())
