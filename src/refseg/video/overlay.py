"""The overlay video: each track's mask tinted in its own colour, with its ID, frame by frame.

Drawn after the run from the video and ``frames.jsonl`` read side by side (both streamed), so a
resumed run gets one whole overlay, and the file is written to a temporary name and renamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from refseg import masks
from refseg.errors import InputError
from refseg.render import color
from refseg.video.frames import FrameSource

#: Container format and codec by the overlay's suffix.
FORMATS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx"),
    ".avi": ("avi", "mpeg4"),
}


def check_overlay_name(path: str | Path) -> None:
    """Refuse an overlay name whose suffix is no video container this writes."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"--overlay-video {path}: name it with one of {', '.join(FORMATS)} "
            "(the container is chosen by the suffix)"
        )


def draw(frame: np.ndarray, record: dict[str, Any], alpha: float = 0.5) -> np.ndarray:
    """One frame with its record's tracks drawn on it."""
    canvas = frame.astype(np.float32)
    height, width = frame.shape[:2]
    line = max(1, round(max(height, width) / 300))
    instances = record.get("instances", [])
    decoded = []
    for instance in instances:
        mask = masks.decode(masks.normalize(instance["mask"]))
        rgb = np.array(color(int(instance.get("track_id", 0))), np.float32)
        if mask.shape == (height, width):
            canvas[mask] = canvas[mask] * (1 - alpha) + rgb * alpha
        decoded.append(mask)
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for instance, mask in zip(instances, decoded):
        rgb = color(int(instance.get("track_id", 0)))
        if mask.shape != (height, width) or not mask.any():
            continue
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, rgb, line)
        ys, xs = np.nonzero(mask)
        cv2.putText(
            out,
            str(instance.get("track_id")),
            (int(xs.min()), max(10, int(ys.min()) - 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * line,
            rgb,
            line,
            cv2.LINE_AA,
        )
    return out


def write_overlay_video(
    source: FrameSource, records: Iterator[dict[str, Any]], path: str | Path
) -> int:
    """Encode the overlay of every recorded frame to ``path``; returns the frames written."""
    import av

    from refseg.fileio import atomic_open

    fmt, codec = FORMATS[Path(path).suffix.lower()]
    width, height = source.info.width, source.info.height
    even_w, even_h = width - width % 2, height - height % 2  # yuv420p needs even sides
    if even_w < 2 or even_h < 2:
        raise InputError(f"frames of {width}x{height} are too small for an overlay video")
    rate = max(1, round(source.info.fps or 25))
    written = 0
    with atomic_open(path, "wb") as handle:
        container = av.open(handle, mode="w", format=fmt)
        try:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
            frames = source.frames()
            for record in records:
                index, frame = next(frames, (None, None))
                if frame is None or index != record.get("frame"):
                    break
                picture = draw(frame, record)[:even_h, :even_w]
                for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    container.mux(packet)
                written += 1
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return written


def write_svg_frames(records: Iterator[dict[str, Any]], folder: str | Path) -> int:
    """One SVG of the tracks' outlines per recorded frame, ``folder/frame_000000.svg`` on
    (each written whole, under a temporary name first); returns the files written.

    Each ``<path>`` carries its track's ID (``data-track``), so an editor or a script can
    follow an object across the files."""
    from refseg.fileio import atomic_write_text, ensure_dir
    from refseg.render import result_svg
    from refseg.types import Result

    out = ensure_dir(folder)
    written = 0
    for record in records:
        result = Result.from_dict(record)
        svg = result_svg(result, ids=[int(i) for i in record.get("track_ids", [])])
        atomic_write_text(out / f"frame_{int(record['frame']):06d}.svg", svg)
        written += 1
    return written
