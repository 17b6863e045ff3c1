"""Video input: a video file (PyAV), an animated GIF (Pillow) or a folder of frames, streamed.

Frames come out one at a time as ``uint8`` RGB arrays, so a two-hour film costs one frame of
memory, not the film. Bad input is refused with a one-line :class:`InputError`: an unreadable
container, no video stream, no frames, a frame over the pixel limit, or more frames than
``REFSEG_MAX_FRAMES`` (checked as frames arrive: container headers can lie about their length).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refseg.errors import InputError
from refseg.image import ALLOWED_FORMATS, load_image
from refseg.limits import env_limit, max_pixels

#: Container suffixes read as video (anything PyAV/FFmpeg opens is tried by its header too).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")
#: Image suffixes a folder of frames may hold (the still-image formats refseg reads).
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

MAX_FRAMES_ENV = "REFSEG_MAX_FRAMES"
#: Most frames read from one input (about 55 minutes at 30 frames/s).
DEFAULT_MAX_FRAMES = 100_000

#: Leading bytes of the containers FFmpeg writes most (ISO-BMFF ``ftyp`` at offset 4,
#: Matroska/WebM EBML, RIFF AVI, MPEG-PS/TS): a video under an odd name is still a video.
_MAGIC = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "), (0, b"\x00\x00\x01\xba"))


def max_frames() -> int:
    """The frame limit in force (``REFSEG_MAX_FRAMES``)."""
    return env_limit(MAX_FRAMES_ENV, DEFAULT_MAX_FRAMES)


def is_video(path: str | Path) -> bool:
    """Whether ``path`` is video input rather than one image: a folder (of frames), a video
    container (by suffix or header), or a GIF with more than one frame. A still GIF stays an
    image, as it always was."""
    path = Path(path)
    if path.is_dir():
        return True
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if not path.is_file():
        return False
    if suffix == ".gif":
        return _gif_frames(path) > 1
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return any(head[at : at + len(magic)] == magic for at, magic in _MAGIC)


def _gif_frames(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path, formats=["GIF"]) as image:
            return int(getattr(image, "n_frames", 1))
    except Exception:  # not a readable GIF: the image loader says why
        return 0


@dataclass
class VideoInfo:
    """What the header says: size, frame rate, and the frame count when it is known (0 if not)."""

    width: int
    height: int
    fps: float
    frames: int
    kind: str


class FrameSource:
    """Frames of one input, streamed: ``for index, frame in source.frames(): ...``.

    Opening reads the header (and the first frame's size) only; :meth:`frames` decodes as it is
    iterated and can be called again for a second pass (the overlay video).
    """

    def __init__(self, path: str | Path, *, limit: int | None = None) -> None:
        self.path = Path(path)
        self.limit = max_frames() if limit is None else limit
        self.pixel_limit = max_pixels()
        if not self.path.exists():
            raise InputError(f"{self.path}: no such video file or folder")
        if self.path.is_dir():
            self._files = _frame_files(self.path)
            first = load_image(self._files[0])
            height, width = first.shape[:2]
            self.info = VideoInfo(width, height, 0.0, len(self._files), "folder")
        elif self.path.suffix.lower() == ".gif":
            self.info = self._gif_info()
        else:
            self.info = self._av_info()
        if self.info.frames > self.limit:  # known from the header: refused before decoding
            raise InputError(
                f"{self.path}: {self.info.frames} frames, over the limit of {self.limit} "
                f"(set {MAX_FRAMES_ENV} to raise it)"
            )

    def frames(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, RGB frame)`` from frame 0 on; frames before ``start`` are decoded (codecs
        need them) but not converted, so resuming late in a film is cheap."""
        if self.info.kind == "folder":
            source = self._folder_frames(start)
        elif self.info.kind == "gif":
            source = self._gif_frames(start)
        else:
            source = self._av_frames(start)
        for index, frame in source:
            if index >= self.limit:
                raise InputError(
                    f"{self.path}: more than {self.limit} frames (set {MAX_FRAMES_ENV} "
                    "to raise the limit)"
                )
            yield index, frame

    # -- folder ----------------------------------------------------------------------------
    def _folder_frames(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        for index, file in enumerate(self._files):
            if index >= start:
                frame = load_image(file)
                if frame.shape[:2] != (self.info.height, self.info.width):
                    raise InputError(
                        f"{file}: {frame.shape[1]}x{frame.shape[0]}, but the first frame is "
                        f"{self.info.width}x{self.info.height}; frames of a video share a size"
                    )
                yield index, frame

    # -- GIF -------------------------------------------------------------------------------
    def _gif_info(self) -> VideoInfo:
        from PIL import Image

        try:
            with Image.open(self.path, formats=["GIF"]) as image:
                width, height = image.size
                count = int(getattr(image, "n_frames", 1))
                duration = float(image.info.get("duration") or 0)
        except Exception as exc:
            raise InputError(f"{self.path}: not a readable GIF ({type(exc).__name__})") from None
        self._check_size(width, height)
        fps = 1000.0 / duration if duration > 0 else 10.0
        return VideoInfo(width, height, fps, count, "gif")

    def _gif_frames(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        from PIL import Image, ImageSequence

        try:
            with Image.open(self.path, formats=["GIF"]) as image:
                for index, frame in enumerate(ImageSequence.Iterator(image)):
                    if index >= start:
                        yield index, np.asarray(frame.convert("RGB"))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{self.path}: GIF frame unreadable ({type(exc).__name__})") from None

    # -- PyAV ------------------------------------------------------------------------------
    def _open_av(self):
        import av

        try:
            container = av.open(str(self.path), mode="r")
        except Exception as exc:
            detail = " ".join(str(exc).split())[:160]
            raise InputError(f"{self.path}: not a readable video ({detail})") from None
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.path}: has no video stream")
        return container

    def _av_info(self) -> VideoInfo:
        container = self._open_av()
        with container:
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            frames = int(stream.frames or 0)
        if width <= 0 or height <= 0:
            raise InputError(f"{self.path}: the video stream has no frame size")
        self._check_size(width, height)
        return VideoInfo(width, height, fps or 25.0, frames, "video")

    def _av_frames(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        container = self._open_av()
        index = -1
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for frame in container.decode(stream):
                        index += 1
                        if index < start:
                            continue
                        self._check_size(frame.width, frame.height)
                        yield index, frame.to_ndarray(format="rgb24")
            except InputError:
                raise
            except Exception as exc:  # av.error.* for corrupt or truncated streams
                detail = " ".join(str(exc).split())[:160]
                raise InputError(
                    f"{self.path}: video unreadable at frame {index + 1} ({detail})"
                ) from None
        if index < 0:
            raise InputError(f"{self.path}: the video has no frames")

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.pixel_limit:
            raise InputError(
                f"{self.path}: frames of {width}x{height} are over the limit of "
                f"{self.pixel_limit} pixels (set REFSEG_MAX_PIXELS to raise it)"
            )


def _natural_key(name: str) -> list:
    """``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise InputError(
            f"{folder}: no frames (image files {', '.join(ALLOWED_FORMATS)}) in the folder"
        )
    return files


def open_frames(path: str | Path, *, limit: int | None = None) -> FrameSource:
    """Open video input for streaming (:class:`FrameSource`)."""
    return FrameSource(path, limit=limit)
