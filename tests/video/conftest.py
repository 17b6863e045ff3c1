"""Helpers for the video tests: tiny videos written with PyAV, and a fast stand-in segmenter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refseg.segmentation.base import Embedding, MaskPrediction


def write_video(path: Path, frames: list[np.ndarray], *, rate: int = 10) -> Path:
    """Encode RGB frames (even sides) as H.264 in the container the suffix names."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_square(count: int, width: int = 64, height: int = 48, step: int = 4) -> list[np.ndarray]:
    """A red 16x16 square moving right on grey."""
    out = []
    for t in range(count):
        frame = np.full((height, width, 3), 128, np.uint8)
        frame[16:32, 4 + step * t : 20 + step * t] = (220, 30, 30)
        out.append(frame)
    return out


class RedSegmenter:
    """A deterministic stand-in for SAM: the red pixels inside the prompt's box. Fast, so a
    test can run many frames (and kill the run part-way) in a fraction of a second each."""

    name = "red"

    def embed(self, image: np.ndarray) -> Embedding:
        red = (image[..., 0] > 160) & (image[..., 1] < 100)
        return Embedding(image.shape[0], image.shape[1], red, self.name)

    def predict(self, embedding, prompts, *, refine=None):
        out = []
        for prompt in prompts:
            mask = np.zeros_like(embedding.data)
            x1, y1, x2, y2 = (round(v) for v in prompt.box)
            mask[y1:y2, x1:x2] = embedding.data[y1:y2, x1:x2]
            out.append(MaskPrediction(mask=mask, score=0.9 if mask.any() else 0.0))
        return out
