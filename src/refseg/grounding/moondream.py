"""A grounder behind Moondream's segment API (Moondream Cloud, or a local Moondream server).

Moondream Segmentation answers a phrase with one object's **box and outline**: the model writes
a box, then an SVG path relative to it (the path mask head of :mod:`refseg.protocol`). This
adapter sends Moondream's documented ``segment`` request and turns its answer into refseg's
:class:`~refseg.grounding.base.Grounding`, so users who run Moondream can score it with refseg's
dataset readers and metrics (``refseg eval --grounder moondream:URL``) and refine its outlines
with refseg's refiners.

The request and response, as Moondream documents them (see the README's "Moondream" section for
what was and was not confirmed, and where):

* ``POST {URL}/segment`` (``URL`` such as ``https://api.moondream.ai/v1`` or a local server's
  ``http://localhost:2020/v1``), JSON body ``{"image_url": "data:image/jpeg;base64,...",
  "object": PHRASE, "stream": false}``, the key in the ``X-Moondream-Auth`` header (taken from
  the environment variable ``MOONDREAM_API_KEY`` when set; a local server needs none);
* answer ``{"path": "M 0 0.76 L ...", "bbox": {"x_min", "y_min", "x_max", "y_max"}}``: the box
  normalized to the image (0-1), the path in unit coordinates **of the box** (0 is the box's
  left/top edge, 1 its right/bottom: Moondream's 960-unit box-relative viewbox divided by 960).
  ``frame=image`` reads the path as normalized to the whole image instead, for a server that
  answers that way.

The answer becomes a :class:`~refseg.protocol.ParsedAnswer` in Qwen3-VL's 0-1000 frame and goes
through :func:`~refseg.grounding.coords.to_grounding`, the conversion every grounder's answers
take (scaling, clipping to the image, invalid-instance rules). An answer without a path and a box
is "no target"; a box without a path is a box-only instance (the segmenter draws its mask); an
unreadable path is that answer's ``parse_error``. HTTP is the standard library's, with the
timeouts and retries of :mod:`refseg.grounding.openai_api`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from refseg.errors import InputError, ModelError
from refseg.grounding.base import Grounding, check_rgb
from refseg.grounding.coords import to_grounding
from refseg.grounding.http import (
    count_option,
    deadline_opener,
    endpoint_url,
    excerpt,
    json_object,
    number_option,
    post_with_retries,
)
from refseg.grounding.openai_api import image_data_url
from refseg.protocol import MAX_ANSWER_VERTICES, ParsedAnswer, ParsedInstance

__all__ = ["FRAMES", "MoondreamGrounder", "segment_url"]

#: How the answer's path coordinates are read: relative to the box (documented) or the image.
FRAMES = ("box", "image")
#: The frame refseg converts the answer into (any frame works; this one is exact for norm1000).
_FRAME = 1000.0


def segment_url(url: str) -> str:
    """The segment address for a server URL given with or without ``/v1`` or ``/segment``."""
    return endpoint_url(url, "segment", grounder="moondream", example="http://localhost:2020/v1")


class MoondreamGrounder:
    """Ground phrases through Moondream's ``/segment`` endpoint (box + SVG path per phrase).

    Args:
        url: the server (``https://api.moondream.ai/v1``, ``http://localhost:2020/v1``).
        api_key_env: the environment variable holding the key sent as ``X-Moondream-Auth``
            (none is sent when it is unset or None).
        frame: ``box`` (default, documented) or ``image``: what the path's 0-1 coordinates span.
        timeout, retries, backoff, concurrency: as for
            :class:`~refseg.grounding.openai_api.OpenAIGrounder`.
        model: sent as ``model`` when given (the cloud client's optional model name).

    Moondream always answers with a path: ``fixed_answer`` makes ``--answer box`` a one-line
    error. ``think`` is ignored (the endpoint has no reasoning mode).
    """

    #: What this grounder always answers with (``answer="box"`` is refused in one line).
    fixed_answer = "path"

    def __init__(
        self,
        url: str,
        *,
        api_key_env: str | None = "MOONDREAM_API_KEY",
        frame: str = "box",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        concurrency: int = 4,
        model: str | None = None,
    ) -> None:
        self.endpoint = segment_url(url)
        if frame not in FRAMES:
            raise InputError(f"frame must be {' or '.join(FRAMES)}, got {frame!r}")
        self.frame = frame
        self.name = f"moondream:{url}"
        self.api_key_env = api_key_env
        self.timeout = number_option(timeout, "timeout", low=0.0, strict=True)
        self.retries = count_option(retries, "retries")
        self.backoff = number_option(backoff, "backoff", low=0.0)
        self.concurrency = count_option(concurrency, "concurrency")
        self.model = model
        self._opener = deadline_opener()

    def __repr__(self) -> str:
        return f"MoondreamGrounder({self.endpoint!r}, frame={self.frame!r})"

    # -- requests -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["X-Moondream-Auth"] = key
        return headers

    def request(self, image: np.ndarray, phrase: str) -> dict[str, Any]:
        """POST one segment request; the response object (retrying transient failures)."""
        payload: dict[str, Any] = {
            "image_url": image_data_url(image, "jpeg", 95),
            "object": phrase,
            "stream": False,
        }
        if self.model:
            payload["model"] = self.model
        body = json.dumps(payload).encode("utf-8")
        data = post_with_retries(
            self._opener,
            self.endpoint,
            body,
            self._headers,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
        )
        return self._response_object(data)

    def _response_object(self, data: bytes) -> dict[str, Any]:
        value = json_object(data, self.endpoint)
        if not isinstance(value, dict):
            raise ModelError(
                f"endpoint {self.endpoint} returned {type(value).__name__}, not an object"
            )
        if "error" in value and "path" not in value:
            raise ModelError(
                f"endpoint {self.endpoint} returned an error: {excerpt(value['error'])}"
            )
        return value

    # -- the answer -----------------------------------------------------------------------------

    def parse(self, response: dict[str, Any]) -> ParsedAnswer:
        """A segment response as a parsed answer in the 0-1000 frame (never raises)."""
        raw = json.dumps(response)[:4000]
        if "objects" in response and "path" not in response and "bbox" not in response:
            return _detections(response["objects"], raw)
        try:
            instance = self._instance(response)
        except ValueError as exc:
            return ParsedAnswer(error=str(exc), raw=raw)
        if instance is None:
            return ParsedAnswer(no_target=True, raw=raw)
        return ParsedAnswer(instances=[instance], raw=raw)

    def _instance(self, response: dict[str, Any]) -> ParsedInstance | None:
        from refseg.paths import PathError, parse_path

        path, bbox = response.get("path"), response.get("bbox")
        if bbox is None and (path is None or (isinstance(path, str) and not path.strip())):
            return None
        box = _bbox(bbox) if bbox is not None else None
        rings: list[list[tuple[float, float]]] = []
        if isinstance(path, str) and path.strip():
            try:
                arrays = parse_path(path, max_vertices=MAX_ANSWER_VERTICES)
            except PathError as exc:
                raise ValueError(f"bad path: {exc}") from None
            if self.frame == "box":
                if box is None:
                    raise ValueError("a box-relative path came without its bbox")
                x1, y1, x2, y2 = box
                origin, scale = np.array([x1, y1]), np.array([x2 - x1, y2 - y1])
            else:
                origin, scale = np.zeros(2), np.full(2, _FRAME)
            rings = [[(float(x), float(y)) for x, y in a * scale + origin] for a in arrays]
            if not rings:
                raise ValueError("the path encloses no area")
        elif path is not None and not isinstance(path, str):
            raise ValueError(f"path is {type(path).__name__}, not SVG path data")
        if box is None:
            xs = [x for ring in rings for x, _ in ring]
            ys = [y for ring in rings for _, y in ring]
            return ParsedInstance(
                box=(min(xs), min(ys), max(xs), max(ys)), polygons=rings, box_derived=True
            )
        return ParsedInstance(box=box, polygons=rings)

    # -- the grounder protocol ------------------------------------------------------------------

    def ground(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
    ) -> list[Grounding]:
        """One segment request per pair, up to ``concurrency`` at a time.

        ``answer`` may only be ``path`` (or None): the API answers outlines. Bad inputs raise
        :class:`InputError` before any request; an endpoint that stays
        unreachable or answers garbage raises :class:`ModelError`; an answer that cannot be
        read (a malformed path or box) is that pair's ``parse_error``.
        """
        if answer not in (None, self.fixed_answer):
            raise InputError(f"grounder {self.name} always answers with a {self.fixed_answer}")
        if len(images) != len(phrases):
            raise InputError(f"got {len(images)} images but {len(phrases)} phrases")
        arrays = [check_rgb(image, i) for i, image in enumerate(images)]
        for i, phrase in enumerate(phrases):
            if not isinstance(phrase, str) or not phrase.strip():
                raise InputError(f"phrase {i} is empty")

        def one(index: int) -> Grounding:
            image = arrays[index]
            parsed = self.parse(self.request(image, phrases[index].strip()))
            height, width = image.shape[:2]
            return to_grounding(parsed, "norm1000", width, height)

        if len(arrays) <= 1 or self.concurrency == 1:
            return [one(i) for i in range(len(arrays))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(arrays))) as pool:
            return list(pool.map(one, range(len(arrays))))


#: Most boxes read from one ``/detect``-shaped reply (far above any real scene).
MAX_DETECTIONS = 1000


def _detections(objects: Any, raw: str) -> ParsedAnswer:
    """A ``/detect``-shaped reply (``{"objects": [{x_min, y_min, x_max, y_max}, ...]}``), as an
    endpoint behind a proxy or an older server may answer: read as boxes (no outline), an empty
    list as "no target", rather than silently as nothing."""
    if not isinstance(objects, list):
        return ParsedAnswer(error="objects is not a list of boxes", raw=raw)
    if len(objects) > MAX_DETECTIONS:
        return ParsedAnswer(error=f"{len(objects)} objects (at most {MAX_DETECTIONS})", raw=raw)
    try:
        instances = [ParsedInstance(box=_bbox(o)) for o in objects]
    except ValueError as exc:
        return ParsedAnswer(error=f"objects: {exc}", raw=raw)
    return ParsedAnswer(instances=instances, no_target=not instances, raw=raw)


def _bbox(value: Any) -> tuple[float, float, float, float]:
    """``{"x_min", "y_min", "x_max", "y_max"}`` (0-1 of the image) -> a 0-1000 box."""
    if not isinstance(value, dict):
        raise ValueError("bbox is not an object with x_min, y_min, x_max, y_max")
    from refseg.paths import MAX_ABS_COORD

    numbers = []
    for key in ("x_min", "y_min", "x_max", "y_max"):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"bbox {key} is not a finite number")
        if abs(v) * _FRAME > MAX_ABS_COORD:  # the bound the protocol's parser puts on numbers
            raise ValueError(f"bbox {key} is out of range ({v!r})")
        numbers.append(float(v) * _FRAME)
    x1, y1, x2, y2 = numbers
    return (x1, y1, x2, y2)
