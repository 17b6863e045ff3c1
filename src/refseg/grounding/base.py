"""The grounder protocol: (image, phrase) -> boxes and interior points in image pixels.

A grounder wraps a vision-language model. It renders the prompt with :mod:`refseg.protocol`,
generates an answer, parses it with the one parser there, and converts the model's coordinates
(each grounder declares its :class:`~refseg.grounding.coords.Convention`) to pixels of the
displayed image. It never raises on an unreadable answer: that becomes ``parse_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from refseg.errors import InputError
from refseg.types import Box, Point


@dataclass
class GroundedInstance:
    """One referred object in pixels of the displayed image.

    ``polygons`` is the outline of a path answer (``float64 (N, 2)`` rings, clipped to the
    image; see :mod:`refseg.paths`), empty for a box answer: the pipeline then
    rasterizes and refines it instead of prompting the segmenter with the box alone.
    """

    box: Box
    points: list[Point] = field(default_factory=list)
    polygons: list[np.ndarray] = field(default_factory=list)
    #: The grounder's own confidence in [0, 1] (token probabilities), None when it has none.
    score: float | None = None


@dataclass
class Grounding:
    """A grounder's answer for one (image, phrase) pair.

    ``no_target`` is true only for an explicit empty answer. When the answer cannot be read,
    ``parse_error`` says why and ``instances`` is empty. ``invalid`` counts instances dropped
    for degenerate boxes or points outside their box.
    """

    instances: list[GroundedInstance] = field(default_factory=list)
    no_target: bool = False
    raw_answer: str = ""
    reasoning: str | None = None
    parse_error: str | None = None
    invalid: int = 0
    #: How likely the grounder found an empty answer at the step that decided it (token
    #: probabilities, :func:`refseg.protocol.confidence.no_target_score`); None without them.
    no_target_score: float | None = None
    #: The VLM's own features for the box decoder (:class:`~refseg.grounding.features.VLMFeatures`),
    #: only when asked for; the pipeline drops them once the masks are decoded.
    features: Any = None


@runtime_checkable
class Grounder(Protocol):
    """What every grounding backend provides."""

    name: str

    def ground(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
    ) -> list[Grounding]:
        """Ground ``phrases[i]`` in ``images[i]`` (``uint8`` RGB), batched where possible.

        ``answer`` asks for ``box`` or ``path`` answers in this call; ``None`` is the grounder's
        own default. The pipeline passes it only when one was asked for, so a grounder written
        without the argument keeps working for box answers.
        """
        ...


def check_rgb(image: object, index: int) -> np.ndarray:
    """Refuse anything but a non-empty ``uint8`` RGB ``(H, W, 3)`` array (grounders' input)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(
            f"image {index}: expected a uint8 RGB array (H, W, 3), got {array.dtype} "
            f"{tuple(array.shape)}; load it with refseg.image.load_image"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(f"image {index} is empty ({array.shape[1]}x{array.shape[0]})")
    return np.ascontiguousarray(array)
