"""Every bound refseg puts on the size of a request, in one place.

Work grows with what a caller sends: each prompt is a decoder pass and a full-resolution mask
(held as one byte per pixel), each point is a token the decoder attends over. Without bounds, a
request of 10,000 points took 41 s and 13.6 GB, and 600 boxes on a 2000x2000 image 71 s. So the
Python API (:func:`refseg.pipeline.segment_prompts`, :class:`refseg.pipeline.Pipeline`), the CLI
and the server all call :func:`check_prompts` (or its two halves, when the image size is not
known yet) *before* any model work, and all refuse with the same one-line
:class:`~refseg.errors.InputError` (CLI exit 2, HTTP 422).

Each limit has an environment variable so a deployment can move it; a malformed value is an
error, never a silent default. The README's "Limits" table lists these and the server's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Protocol

from refseg.errors import InputError


class _HasPoints(Protocol):
    """What :func:`check_prompts` reads of a prompt (:class:`refseg.types.Prompt` has it); a
    protocol, so that the limits sit below the types that use them."""

    points: Sequence[object]


#: Images with more pixels than this are refused before decoding (decompression bombs).
DEFAULT_MAX_PIXELS = 50_000_000
#: Prompts (masks) one request may ask for: far above what one photo needs (the grounder's
#: "all the horses" rarely passes 30), far below what ties a worker up for minutes.
DEFAULT_MAX_PROMPTS = 100
#: Points in one prompt: SAM was trained with a handful; more only cost decoder memory.
DEFAULT_MAX_POINTS = 32
#: Image pixels times prompts: each prompt makes a full-resolution mask, so this bounds a
#: request's mask memory (~1 byte per unit: 500 MB) and time (~15 s on 2 CPU cores).
#: A 12-megapixel photo takes 41 prompts, a 2000x2000 image 125, a 50-megapixel one 10.
DEFAULT_MAX_PROMPT_PIXELS = 500_000_000

PIXELS_ENV = "REFSEG_MAX_PIXELS"
PROMPTS_ENV = "REFSEG_MAX_PROMPTS"
POINTS_ENV = "REFSEG_MAX_POINTS"
PROMPT_PIXELS_ENV = "REFSEG_MAX_PROMPT_PIXELS"


def env_limit(name: str, default: int) -> int:
    """The positive integer in ``$name``, or ``default`` when unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1 or len(value) > 30:
        raise InputError(f"{name} must be a positive integer, got {value[:40]!r}")
    return number


def max_pixels() -> int:
    """The image pixel limit in force (``REFSEG_MAX_PIXELS``)."""
    return env_limit(PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_prompts() -> int:
    """Prompts per request (``REFSEG_MAX_PROMPTS``)."""
    return env_limit(PROMPTS_ENV, DEFAULT_MAX_PROMPTS)


def max_points() -> int:
    """Points per prompt (``REFSEG_MAX_POINTS``)."""
    return env_limit(POINTS_ENV, DEFAULT_MAX_POINTS)


def max_prompt_pixels() -> int:
    """Image pixels times prompts per request (``REFSEG_MAX_PROMPT_PIXELS``)."""
    return env_limit(PROMPT_PIXELS_ENV, DEFAULT_MAX_PROMPT_PIXELS)


def check_prompt_counts(prompts: int, points: Iterable[int] = ()) -> None:
    """Refuse more than :func:`max_prompts` prompts or :func:`max_points` points in one.

    Needs no image, so the server calls it before it decodes one.
    """
    limit = max_prompts()
    if prompts > limit:
        raise InputError(
            f"{prompts} prompts in one request; the limit is {limit} (set {PROMPTS_ENV})"
        )
    point_limit = max_points()
    most = max(points, default=0)
    if most > point_limit:
        raise InputError(
            f"a prompt has {most} points; the limit is {point_limit} per prompt (set {POINTS_ENV})"
        )


def check_prompt_pixels(prompts: int, width: int, height: int) -> None:
    """Refuse ``prompts`` full-resolution masks of a ``width x height`` image past the budget."""
    budget = max_prompt_pixels()
    if prompts > 0 and prompts * width * height > budget:
        fit = max(1, budget // max(1, width * height))
        raise InputError(
            f"{prompts} prompts on a {width}x{height} image is over the limit of {budget} "
            f"pixels x prompts (at most {fit} prompts at this size; set {PROMPT_PIXELS_ENV})"
        )


def check_prompts(prompts: Sequence[_HasPoints], width: int, height: int) -> None:
    """Both checks for ready-made prompts on a ``width x height`` image (before any work)."""
    check_prompt_counts(len(prompts), (len(p.points) for p in prompts))
    check_prompt_pixels(len(prompts), width, height)
