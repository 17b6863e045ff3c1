"""Turning an HTTP request into a segmentation job, with errors a client can act on.

Two request forms carry the same fields: ``multipart/form-data`` (what ``curl -F`` and browser
forms send: an ``image`` file part) and JSON (the image as base64 or a ``data:`` URL). Both end
as one :class:`Job`; everything the server refuses is an :class:`HTTPError` whose status says
who must act: 413 too large, 415 wrong media type, 422 unusable content.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from refseg.errors import InputError
from refseg.image import ImageTooLarge, image_size, load_image
from refseg.limits import check_prompt_counts
from refseg.pipeline import PipelineOptions, check_phrase
from refseg.protocol import ANSWERS


class HTTPError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (and optional headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


#: Request options of the path mask head (``answer``, ``refiner``): the values a client may
#: choose. Trained refiner checkpoints are files on the server, so a client cannot name one.
ANSWER_KINDS = ANSWERS
SERVER_REFINERS = ("none", "sam", "sam-raw")
MAX_REFINE_ITERS = 16


class SegmentRequest(BaseModel):
    """JSON body of ``POST /v1/segment``: an image and either a phrase or boxes/points."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="The image file's bytes as base64, or a data URL (data:image/png;base64,...)."
    )
    phrase: str | None = Field(
        None, description="What to segment, in words (needs a server started with a grounder)."
    )
    boxes: list[list[float]] | None = Field(
        None, description="Box prompts [[x1, y1, x2, y2], ...] in pixels of the displayed image."
    )
    points: list[list[float]] | None = Field(
        None,
        description="Point prompts [[x, y] or [x, y, label], ...]; label 1 foreground (default), "
        "0 background. With one box they refine it; alone they form one prompt.",
    )
    think: bool = Field(False, description="Let the grounder reason before answering.")
    refine: int | None = Field(None, ge=0, le=8, description="Decoder refinement rounds.")
    answer: Literal["box", "path", "outline"] | None = Field(
        None,
        description="What the grounder is asked for: box (+point) or path (an outline per "
        "instance; each result instance then carries 'path', SVG path data in image pixels). "
        "Default: the grounder's own (box, or path for moondream:).",
    )
    refiner: Literal["none", "sam", "sam-raw"] | None = Field(
        None,
        description="What refines path answers' rasters: none, sam (gated: keeps a precise "
        "outline, repairs a poor one; the default) or sam-raw.",
    )
    refine_iters: int | None = Field(
        None, ge=0, le=MAX_REFINE_ITERS, description="Refiner iterations (default 1)."
    )
    min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Drop instances whose score (grounder token probability x segmenter IoU) "
        "is below it; an answer left with none is no_target.",
    )
    overlay: bool = Field(False, description="Also return an overlay PNG (base64).")
    mask_png: bool = Field(False, description="Also return the union mask as a PNG (base64).")


#: Multipart text fields and what they hold; ``box``/``point`` take the CLI's syntax and repeat.
MULTIPART_FIELDS = {
    "phrase": "what to segment, in words",
    "box": "X1,Y1,X2,Y2 (repeatable)",
    "point": "X,Y[,LABEL] (repeatable)",
    "boxes": "JSON [[x1,y1,x2,y2], ...]",
    "points": "JSON [[x,y(,label)], ...]",
    "think": "true/false",
    "refine": "0-8",
    "answer": "box, path or outline (path and outline answers carry an outline per instance)",
    "refiner": "none, sam (gated, default) or sam-raw: refines path answers",
    "refine_iters": f"0-{MAX_REFINE_ITERS}: refiner iterations (default 1)",
    "min_score": "0-1: drop instances scoring below it (none left: no_target)",
    "overlay": "true/false",
    "mask_png": "true/false",
}


@dataclass
class Job:
    """One request, parsed: the encoded image, the prompts or phrase, and the options."""

    image: bytes
    phrase: str | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    points: list[tuple[float, float, int]] = field(default_factory=list)
    think: bool = False
    refine: int | None = None
    overlay: bool = False
    mask_png: bool = False
    answer: str | None = None
    refiner: str | None = None
    refine_iters: int | None = None
    min_score: float | None = None

    def pipeline_options(self) -> PipelineOptions:
        """The request's pipeline options (the engine passes them on without reading them)."""
        return PipelineOptions(
            answer=self.answer,
            think=self.think,
            refine=self.refine,
            refiner=self.refiner or "sam",
            refine_iters=self.refine_iters,
            min_score=self.min_score,
        )

    def check(self, *, have_grounder: bool) -> Job:
        """Refuse a job that asks for both or neither of phrase and prompts, or for more
        prompts or points than :mod:`refseg.limits` allows (422), before any image work."""
        prompts = bool(self.boxes or self.points)
        if self.phrase is not None and prompts:
            raise HTTPError(422, "give either a phrase or boxes/points, not both")
        if self.phrase is None and not prompts:
            raise HTTPError(422, "give a phrase, or boxes/points prompts")
        chosen = [
            n
            for n in ("answer", "refiner", "refine_iters", "min_score")
            if getattr(self, n) is not None
        ]
        if chosen and self.phrase is None:
            raise HTTPError(
                422, f"{chosen[0]} goes with a phrase (it shapes the grounder's answer)"
            )
        if prompts:
            try:
                check_prompt_counts(len(self.boxes) or 1, [len(self.points)])
            except InputError as exc:
                raise HTTPError(422, str(exc)) from exc
        if self.phrase is not None:
            try:
                self.phrase = check_phrase(self.phrase)
            except InputError as exc:
                raise HTTPError(422, str(exc)) from exc
            if not have_grounder:
                raise HTTPError(
                    422,
                    "this server has no grounder, so it cannot take a phrase: send boxes or "
                    "points, or restart it with --grounder SPEC",
                )
        return self


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    # A client's own key names are shown as Python would quote them: a key holding a line
    # break (or any control character) must not break the one-line message.
    parts = [str(p) if str(p).isprintable() else repr(str(p)) for p in first.get("loc", ())]
    where = ".".join(parts)[:200] or "body"
    count = exc.error_count()
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


_DATA_URL = re.compile(r"^data:([\w.+/-]*)(;[\w=.+-]+)*;base64,", re.IGNORECASE)


def decode_base64_image(text: str) -> bytes:
    """Base64 (standard or URL-safe, whitespace allowed) or a base64 data URL -> bytes."""
    match = _DATA_URL.match(text)
    if match:
        media = match.group(1).lower()
        if media and not media.startswith("image/") and media != "application/octet-stream":
            raise HTTPError(415, f"image: a data URL of type {media!r} is not an image")
        text = text[match.end() :]
    elif text.startswith("data:"):
        raise HTTPError(422, "image: only base64 data URLs are accepted (data:...;base64,...)")
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPError(422, "image: not valid base64") from exc
    if not data:
        raise HTTPError(422, "image: empty")
    return data


def _box(values: Sequence[Any], where: str) -> tuple[float, float, float, float]:
    if len(values) != 4:
        raise HTTPError(422, f"{where}: a box needs 4 numbers x1,y1,x2,y2, got {len(values)}")
    box = tuple(_number(v, where) for v in values)
    return box  # type: ignore[return-value]


def _point(values: Sequence[Any], where: str) -> tuple[float, float, int]:
    if len(values) not in (2, 3):
        raise HTTPError(422, f"{where}: a point is x,y or x,y,label, got {len(values)} numbers")
    x, y = _number(values[0], where), _number(values[1], where)
    label = _number(values[2], where) if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise HTTPError(422, f"{where}: label must be 1 (foreground) or 0 (background)")
    return x, y, int(label)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise HTTPError(422, f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise HTTPError(422, f"{where}: expected a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise HTTPError(422, f"{where}: coordinates must be finite numbers")
    return number


def _loads(text: bytes | str, name: str) -> Any:
    """``json.loads`` with every way it fails on outside text answered as 422.

    Besides malformed JSON: a number of over 4,300 digits (Python's integer conversion limit,
    a ``ValueError``), nesting deeper than the recursion limit (``RecursionError``), and bytes
    that are not UTF-8.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPError(422, f"{name}: not valid JSON ({exc})") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else _short(exc)
        raise HTTPError(422, f"{name}: not usable JSON ({reason})") from exc


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_from_json(body: bytes) -> Job:
    """Parse a JSON request body (see :class:`SegmentRequest`)."""
    data = _loads(body, "body")
    if not isinstance(data, dict):
        raise HTTPError(422, "body must be a JSON object")
    try:
        request = SegmentRequest.model_validate(data)
    except ValidationError as exc:
        raise HTTPError(422, _validation_message(exc)) from exc
    return Job(
        image=decode_base64_image(request.image),
        phrase=request.phrase,
        boxes=[_box(b, f"boxes[{i}]") for i, b in enumerate(request.boxes or [])],
        points=[_point(p, f"points[{i}]") for i, p in enumerate(request.points or [])],
        think=request.think,
        refine=request.refine,
        overlay=request.overlay,
        mask_png=request.mask_png,
        answer=request.answer,
        refiner=request.refiner,
        refine_iters=request.refine_iters,
        min_score=request.min_score,
    )


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise HTTPError(422, f"{name}: expected true or false, got {value!r}")


def _json_list(value: str, name: str) -> list[Any]:
    data = _loads(value, name)
    if not isinstance(data, list) or not all(isinstance(v, list) for v in data):
        raise HTTPError(422, f"{name}: expected a JSON list of lists")
    return data


def job_from_form(fields: list[tuple[str, str]], image: bytes | None) -> Job:
    """Build a job from multipart text fields (in order, repeats kept) and the image part."""
    if image is None:
        raise HTTPError(422, "multipart body has no 'image' file part")
    job = Job(image=image)
    for name, value in fields:
        if name == "phrase":
            if job.phrase is not None:
                raise HTTPError(422, "give one phrase per request")
            job.phrase = value
        elif name == "box":
            job.boxes.append(_box(value.split(","), f"box {value!r}"))
        elif name == "point":
            job.points.append(_point(value.split(","), f"point {value!r}"))
        elif name == "boxes":
            job.boxes += [_box(b, f"boxes[{i}]") for i, b in enumerate(_json_list(value, name))]
        elif name == "points":
            job.points += [_point(p, f"points[{i}]") for i, p in enumerate(_json_list(value, name))]
        elif name in ("think", "overlay", "mask_png"):
            setattr(job, name, _flag(value, name))
        elif name == "refine":
            try:
                job.refine = int(value)
            except ValueError as exc:
                raise HTTPError(422, f"refine: expected an integer, got {value!r}") from exc
            if not 0 <= job.refine <= 8:
                raise HTTPError(422, "refine: must be between 0 and 8")
        elif name in ("answer", "refiner"):
            allowed = ANSWER_KINDS if name == "answer" else SERVER_REFINERS
            if value not in allowed:
                raise HTTPError(422, f"{name}: expected {' or '.join(allowed)}, got {value!r}")
            setattr(job, name, value)
        elif name == "refine_iters":
            try:
                job.refine_iters = int(value)
            except ValueError as exc:
                raise HTTPError(422, f"refine_iters: expected an integer, got {value!r}") from exc
            if not 0 <= job.refine_iters <= MAX_REFINE_ITERS:
                raise HTTPError(422, f"refine_iters: must be between 0 and {MAX_REFINE_ITERS}")
        elif name == "min_score":
            try:
                job.min_score = float(value)
            except ValueError as exc:
                raise HTTPError(422, f"min_score: expected a number, got {value!r}") from exc
            if not 0.0 <= job.min_score <= 1.0:  # NaN fails this too
                raise HTTPError(422, "min_score: must be between 0 and 1")
        else:
            known = ", ".join(["image", *MULTIPART_FIELDS])
            raise HTTPError(422, f"unknown field {name!r}; fields are {known}")
    return job


def probe_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the image header; 413 over ``max_pixels``, 422 if unreadable.

    Decodes no pixels, so an oversized image (or too much work for its size) is refused first.
    """
    try:
        width, height = image_size(data, name="image", limit=max_pixels)
    except ImageTooLarge as exc:
        raise HTTPError(413, str(exc)) from exc
    except InputError as exc:
        raise HTTPError(422, str(exc)) from exc
    if width * height > max_pixels:
        raise HTTPError(
            413,
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        )
    return width, height


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> RGB array; 413 over ``max_pixels``, 422 if unreadable.

    Only the decoders of :data:`refseg.image.ALLOWED_FORMATS` are used; the header is read
    first, so an oversized image is refused before any pixel is decoded.
    """
    probe_size(data, max_pixels)
    try:
        return load_image(data, limit=max_pixels)
    except ImageTooLarge as exc:
        raise HTTPError(413, str(exc)) from exc
    except InputError as exc:
        raise HTTPError(422, str(exc)) from exc
