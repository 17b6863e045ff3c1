"""Samples -> training rows: conversational prompts, SFT targets and GRPO reward columns.

Any refseg dataset reader feeds training (``refseg.data.base.open_dataset`` on a spec string).
Rows keep the image as a path in an ``image`` column cast to :class:`datasets.Image`, so images
are decoded lazily per batch (TRL's trainers read images from an ``image`` column and insert the
placeholder before the user text, the same order the grounder uses at inference).

GRPO rows carry the ground truth the rewards read: ``width``, ``height``, ``gt_boxes`` (pixels,
one per referred object, empty for no-target samples) and ``gt_masks`` (COCO RLE ``counts``
strings of size ``height x width``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from refseg import masks
from refseg.data.base import Sample
from refseg.errors import InputError


def load_samples(
    specs: str | Sequence[str], *, max_samples: int | None = None, seed: int = 0
) -> list[Sample]:
    """Read every sample of one or more dataset specs; ``max_samples`` keeps a seeded subset."""
    from refseg.data.base import open_dataset

    if isinstance(specs, str):
        specs = [specs]
    samples: list[Sample] = []
    for spec in specs:
        samples.extend(open_dataset(spec))
    if not samples:
        raise InputError(f"dataset {', '.join(specs)} has no samples")
    if max_samples is not None and len(samples) > max_samples:
        rng = random.Random(seed)
        samples = rng.sample(samples, max_samples)
    return samples


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """The mask pixel farthest from the background (distance-transform maximum), as ``(x, y)``.

    Unlike a centroid it always lies on the object, even for rings and crescents, and it is the
    point a promptable segmenter is least likely to misread as the neighbouring object.
    Returns the pixel centre; None for an empty mask.
    """
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    padded = np.pad(mask, 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (float(col) + 0.5, float(row) + 0.5)


def pixel_targets(sample: Sample) -> list[tuple[list[float], list[tuple[float, float]]]]:
    """``(box, [point])`` per referred object in image pixels (box from the GT, point inside)."""
    boxes = sample.gt_boxes()
    out = []
    for rle, box in zip(sample.masks, boxes):
        point = interior_point(masks.decode(rle))
        out.append((list(box), [point] if point is not None else []))
    return out


def prompt_messages(
    phrase: str, *, think: bool, coords: str, template: str | None = None, answer: str = "box"
) -> list[dict[str, Any]]:
    """The conversational prompt of one sample (TRL inserts the image before the text).

    By default the user text is :func:`refseg.protocol.build_prompt`, the very prompt the
    grounder sends at inference. ``template`` (``{phrase}`` is filled in) replaces it for
    models trained from scratch, which cannot read instructions and pay for every prompt token;
    such a model must then be prompted with the same template at inference. ``answer`` is the
    answer kind asked for (``box`` or ``path``), as ``--answer`` asks at inference.
    """
    from refseg.protocol import SYSTEM_PROMPT, build_prompt

    messages: list[dict[str, Any]] = []
    if SYSTEM_PROMPT:
        messages.append({"role": "system", "content": SYSTEM_PROMPT})
    text = build_prompt(phrase, think=think, coords=str(coords), template=template, answer=answer)
    messages.append({"role": "user", "content": text})
    return messages


def path_target(
    mask: np.ndarray,
    box: Sequence[float],
    convention: Any,
    width: int,
    height: int,
    *,
    max_vertices: int,
) -> tuple[tuple[int, int, int, int], list[np.ndarray]]:
    """One object's path target: its box and outline rings in the model's coordinates.

    The outline is :func:`refseg.paths.trace` of the GT mask (every part and hole,
    ``max_vertices`` in all), scaled into the model's frame. Integer rounding in a coarse frame
    (0-1000 on a large image) can flatten a small ring to nothing: when no ring with area is
    left, the target falls back to the box's rectangle, so every target is a readable answer
    (an object must never be taught as absent).
    """
    from refseg.grounding.coords import from_pixels, path_from_pixels
    from refseg.paths import signed_area, trace

    model_box, _ = from_pixels(box, [], convention, width, height)
    traced = trace(np.asarray(mask, dtype=bool), max_vertices)
    kept = []
    for ring in path_from_pixels(traced, convention, width, height):
        rounded = np.round(ring)  # what format_answer writes
        if len(np.unique(rounded, axis=0)) >= 3 and abs(signed_area(rounded)) > 0:
            kept.append(ring)
    if not kept:
        x1, y1, x2, y2 = model_box
        kept = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)]
    return model_box, kept


def target_text(
    sample: Sample,
    *,
    convention: Any,
    reasoning: str | None = None,
    answer: str = "box",
    path_vertices: int = 32,
) -> str:
    """The SFT target of ``sample`` in the model's coordinates.

    ``answer="box"``: GT boxes and interior points. ``answer="path"``: GT boxes and outlines
    (:func:`path_target`, at most ``path_vertices`` per object), the form the path head's
    prompt asks for (no points: a path answer's mask comes from its outline); ``"outline"``:
    the same outlines in the compact box-relative encoding (:mod:`refseg.protocol.outline`).
    """
    from refseg.grounding.coords import from_pixels
    from refseg.protocol import format_answer

    instances: list[tuple] = []
    if answer in ("path", "outline"):
        for rle, box in zip(sample.masks, sample.gt_boxes()):
            model_box, rings = path_target(
                masks.decode(rle),
                box,
                convention,
                sample.width,
                sample.height,
                max_vertices=path_vertices,
            )
            instances.append((model_box, [], rings))
        return format_answer(instances, reasoning=reasoning, outline=answer == "outline")
    for box, points in pixel_targets(sample):
        instances.append(from_pixels(box, points, convention, sample.width, sample.height))
    return format_answer(instances, reasoning=reasoning)


def _rle_counts(rle: masks.RLE) -> str:
    return masks.normalize(rle)["counts"]


def grpo_rows(
    samples: Iterable[Sample],
    *,
    think: bool,
    coords: str,
    template: str | None = None,
    answer: str = "box",
) -> list[dict[str, Any]]:
    """Rows for :class:`trl.GRPOTrainer`: prompt, image and the reward columns."""
    rows = []
    for s in samples:
        rows.append(
            {
                "prompt": prompt_messages(
                    s.phrase, think=think, coords=coords, template=template, answer=answer
                ),
                "image": str(s.image),
                "image_path": str(s.image),  # the decoded image column loses its file name
                "sample_id": s.id,
                "width": int(s.width),
                "height": int(s.height),
                "gt_boxes": [[float(v) for v in b] for b in s.gt_boxes()],
                "gt_masks": [_rle_counts(m) for m in s.masks],
            }
        )
    return rows


def sft_rows(
    samples: Iterable[Sample],
    *,
    think: bool,
    coords: str,
    convention: Any,
    reasoning_template: str | None = None,
    template: str | None = None,
    answer: str = "box",
    path_vertices: int = 32,
) -> list[dict[str, Any]]:
    """Rows for :class:`trl.SFTTrainer`: prompt, completion (the formatted GT) and image."""
    rows = []
    for s in samples:
        reasoning = None
        if think:
            reasoning = (reasoning_template or "").format(phrase=s.phrase)
        target = target_text(
            s,
            convention=convention,
            reasoning=reasoning,
            answer=answer,
            path_vertices=path_vertices,
        )
        rows.append(
            {
                "prompt": prompt_messages(
                    s.phrase, think=think, coords=coords, template=template, answer=answer
                ),
                "completion": [{"role": "assistant", "content": target}],
                "image": str(s.image),
            }
        )
    return rows


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A :class:`datasets.Dataset` with the ``image`` column decoded lazily."""
    import datasets

    if not rows:
        raise InputError("no training rows")
    dataset = datasets.Dataset.from_list(rows)
    return dataset.cast_column("image", datasets.Image())
