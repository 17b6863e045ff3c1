"""What a response carries besides the result JSON, within a memory bound per request.

A request at every limit (a 49-megapixel image, 10 boxes, ``overlay`` and ``mask_png``) peaked
at about 2.4 GB over the server's idle size: ten full-size dense masks held side by side
(490 MB), and :func:`refseg.render.overlay` blending in ``float32`` at full size (1.3 GB, 16 s).
So the server keeps masks as RLE once predicted (:meth:`refseg.types.Instance.release_mask`,
:func:`predict_lean`) and draws the overlay at most :data:`OVERLAY_MAX_PIXELS`
(:func:`overlay_png`): it is a picture for people; the masks themselves stay full size in the
JSON and in ``mask_png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from refseg import masks
from refseg.pipeline import segment_prompts
from refseg.types import Instance, Prompt, Result

if TYPE_CHECKING:
    from refseg.segmentation.base import Embedding, Segmenter

#: The overlay PNG's largest size (pixels); larger images are scaled down for it, aspect kept.
OVERLAY_MAX_PIXELS = 2048 * 2048
#: Pixels of dense masks one model call may return: prompts go to the segmenter in groups this
#: large (whole requests on ordinary images; one prompt at a time on 50-megapixel ones).
DENSE_MASK_PIXELS = 64_000_000


def predict_lean(
    segmenter: Segmenter,
    image: np.ndarray,
    prompts: Sequence[Prompt],
    *,
    embedding: Embedding,
    refine: int | None = None,
) -> Result:
    """:func:`refseg.pipeline.segment_prompts` on groups of prompts, each group's masks
    encoded to RLE and let go before the next group is predicted.

    The caller checks ``prompts`` against the limits as a whole first; the result is the same
    as one call's, with ``predict_s`` summed over the groups.
    """
    height, width = image.shape[:2]
    group = max(1, DENSE_MASK_PIXELS // max(1, width * height))
    instances: list[Instance] = []
    predict_s = 0.0
    for start in range(0, len(prompts), group):
        part = segment_prompts(
            segmenter, image, prompts[start : start + group], embedding=embedding, refine=refine
        )
        instances += [i.release_mask() for i in part.instances]
        predict_s += part.timings.get("predict_s", 0.0)
    return Result(width=width, height=height, instances=instances, timings={"predict_s": predict_s})


def overlay_png(image: np.ndarray, result: Result, max_pixels: int = OVERLAY_MAX_PIXELS) -> bytes:
    """:func:`refseg.render.overlay_png`, drawn on ``image`` scaled down to at most
    ``max_pixels`` (each mask decoded and sampled down in turn, boxes and points scaled alike)."""
    from refseg.render import overlay_png as draw

    height, width = image.shape[:2]
    if width * height <= max_pixels:
        return draw(image, result)
    scale = math.sqrt(max_pixels / (width * height))
    small_w, small_h = max(1, int(width * scale)), max(1, int(height * scale))
    sx, sy = small_w / width, small_h / height
    small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    # Nearest-neighbour sampling by index: no full-size copy of a mask (pycocotools decodes
    # in column-major order, which cv2 would first copy into row-major).
    rows = np.minimum(((np.arange(small_h) + 0.5) / sy).astype(np.intp), height - 1)
    cols = np.minimum(((np.arange(small_w) + 0.5) / sx).astype(np.intp), width - 1)
    instances = []
    for instance in result.instances:
        shrunk = masks.decode(instance.rle)[np.ix_(rows, cols)]
        box = instance.box
        instances.append(
            Instance.from_mask(
                shrunk,
                box=None if box is None else [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy],
                points=[(x * sx, y * sy) for x, y in instance.points],
                point_labels=instance.point_labels,
                score=instance.score,
            )
        )
    return draw(small, Result(width=small_w, height=small_h, instances=instances))
