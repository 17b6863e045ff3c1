"""The server's models and the blocking work of one request, apart from HTTP.

:class:`Engine` owns the segmenter, the optional grounder and the embedding cache. The web app
calls :meth:`Engine.segment` in a worker thread; keeping it free of HTTP types lets tests and
other front ends drive it directly.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from refseg.errors import InputError
from refseg.image import image_digest, max_pixels
from refseg.limits import check_prompt_pixels, check_prompts
from refseg.pipeline import Pipeline
from refseg.serve.cache import EmbeddingCache, RequestEmbeddings
from refseg.serve.inputs import HTTPError, Job, decode_image, probe_size
from refseg.serve.outputs import overlay_png, predict_lean
from refseg.types import build_prompts

if TYPE_CHECKING:
    from refseg.grounding.base import Grounder
    from refseg.segmentation.base import Segmenter

log = logging.getLogger("refseg.serve")

#: A URL (``scheme://...``) up to a delimiter that specs and messages put after one.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s#;,'\"()<>]*")


def public_text(text: str) -> str:
    """``text`` with URLs replaced by ``<hidden>``, for anything a client can read.

    A grounder spec such as ``openai:http://gpu-box:8000/v1#MODEL`` names a machine inside the
    operator's network; ``/healthz`` (unauthenticated) and error answers must not hand it out.
    The log keeps the full text.
    """
    return _URL.sub("<hidden>", text)


class Engine:
    """Models (given, or loaded from specs by :meth:`load`) plus the shared embedding cache.

    ``status`` is ``"loading"`` until both models are in memory, then ``"ready"``, or
    ``"failed"`` with ``error`` set to the one-line reason.
    """

    def __init__(
        self,
        *,
        segmenter: Segmenter | None = None,
        grounder: Grounder | None = None,
        segmenter_spec: str | None = None,
        grounder_spec: str | None = None,
        device: str | None = None,
        grounder_options: dict[str, Any] | None = None,
        cache: EmbeddingCache | None = None,
        max_pixels: int | None = None,
        threads: int | None = None,
    ) -> None:
        if segmenter is None and segmenter_spec is None:
            segmenter_spec = "onnx-sam"
        self.segmenter = segmenter
        self.grounder = grounder
        self.segmenter_spec = segmenter_spec or getattr(segmenter, "name", "custom")
        self.grounder_spec = grounder_spec or (
            getattr(grounder, "name", "custom") if grounder is not None else None
        )
        self.device = device
        self.grounder_options = dict(grounder_options or {})
        self.cache = cache if cache is not None else EmbeddingCache()
        self.max_pixels = max_pixels if max_pixels is not None else _default_max_pixels()
        self.error: str | None = None
        #: CPU threads each model call may use (the server's share of the thread budget; None:
        #: the whole budget). Applied to models loaded from specs.
        self.threads = threads
        # One grounder call at a time: generation in transformers is not documented as
        # thread-safe, and two concurrent VLM calls would only split the same device. The
        # segmenter (onnxruntime sessions are thread-safe) runs beside it.
        self._ground_lock = threading.Lock()
        self._ready = threading.Event()
        self._needs_load = (segmenter is None) or (grounder is None and grounder_spec is not None)
        if not self._needs_load:
            self._ready.set()

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "ready" if self._ready.is_set() else "loading"

    @property
    def needs_load(self) -> bool:
        return self._needs_load and not self._ready.is_set() and self.error is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loading has finished (either way); True when the models are ready."""
        self._ready.wait(timeout)
        return self.status == "ready"

    def load(self, on_failure: Callable[[str], None] | None = None) -> None:
        """Load the models named by the specs (blocking). Failures are recorded, not raised."""
        from refseg.errors import RefsegError

        start = time.perf_counter()
        try:
            if self.segmenter is None:
                from refseg.segmentation import load_segmenter

                log.info("loading segmenter %s", self.segmenter_spec)
                self.segmenter = load_segmenter(
                    self.segmenter_spec, device=self.device, threads=self.threads
                )
            if self.grounder is None and self.grounder_spec is not None:
                from refseg.grounding import load_grounder

                log.info("loading grounder %s", self.grounder_spec)
                if self.threads is not None:
                    from refseg.threads import apply_torch

                    apply_torch(self.threads)
                self.grounder = load_grounder(
                    self.grounder_spec, device=self.device, **self.grounder_options
                )
        except RefsegError as exc:
            self.error = str(exc)
        except Exception as exc:  # a backend's own error: keep it to one line for the client
            self.error = f"cannot load models: {type(exc).__name__}: {exc}"
            log.exception("model loading failed")
        finally:
            self._ready.set()
        if self.error is not None:
            if on_failure is not None:
                on_failure(self.error)  # the caller reports it (the CLI: one line, exit 2)
            else:
                log.error("model loading failed: %s", self.error)
        else:
            log.info("models ready in %.1f s", time.perf_counter() - start)

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` reports about the models."""
        prompts = ["box", "point"] + (["phrase"] if self.grounder_spec is not None else [])
        return {
            "status": self.status,
            "ready": self.status == "ready",
            "error": public_text(self.error) if self.error is not None else None,
            "segmenter": public_text(self.segmenter_spec),
            "grounder": public_text(self.grounder_spec) if self.grounder_spec else None,
            "prompts": prompts,
        }

    def segment(self, job: Job) -> dict[str, Any]:
        """Decode, segment and format one job; the response body (blocking, thread-safe).

        Raises :class:`HTTPError` for input the client must fix; any other exception is a
        failure of this request only (the app answers 500).
        """
        segmenter = self.segmenter
        if segmenter is None:
            raise HTTPError(503, "models are not loaded", {"Retry-After": "5"})
        start = time.perf_counter()
        # The header first: the pixel limit and pixels x prompts are refused before decoding.
        width, height = probe_size(job.image, self.max_pixels)
        if job.phrase is None:
            count = len(job.boxes) if job.boxes else 1
            try:
                check_prompt_pixels(count, width, height)
            except InputError as exc:
                raise HTTPError(422, str(exc)) from exc
        image = decode_image(job.image, self.max_pixels)
        height, width = image.shape[:2]
        decode_s = time.perf_counter() - start
        try:
            if job.phrase is not None:
                if self.grounder is None:
                    raise HTTPError(422, "this server has no grounder: send boxes or points")
                view = RequestEmbeddings(self.cache)
                grounder = _Serialized(self.grounder, self._ground_lock)
                pipeline = Pipeline(grounder, segmenter, options=job.pipeline_options())
                result = pipeline.run([(image, job.phrase)], embeddings=view)[0]
                cached = bool(result.instances) and view.computed == 0
                result.instances = [i.release_mask() for i in result.instances]
            else:
                prompts = build_prompts(job.boxes, job.points, width, height)
                check_prompts(prompts, width, height)  # all of them, before any model work
                embed_start = time.perf_counter()
                embedding, cached = self.cache.get_or_compute(
                    image_digest(image), lambda: segmenter.embed(image)
                )
                embed_s = time.perf_counter() - embed_start
                # Masks are kept as RLE once predicted: full-size dense ones add up to ~1 byte
                # per pixel per prompt (490 MB for 10 prompts on 49 megapixels).
                result = predict_lean(
                    segmenter, image, prompts, embedding=embedding, refine=job.refine
                )
                if not cached:
                    result.timings["embed_s"] = embed_s
        except InputError as exc:
            raise HTTPError(422, str(exc)) from exc
        body = result.to_dict(timings=True)
        timings = body.setdefault("timings", {})
        timings["decode_s"] = round(decode_s, 6)
        body["embedding_cached"] = cached
        render_start = time.perf_counter()
        if job.overlay:
            # At most OVERLAY_MAX_PIXELS: drawn full size, a 49-megapixel overlay took 1.3 GB.
            body["overlay_png"] = base64.b64encode(overlay_png(image, result)).decode()
        if job.mask_png:
            from refseg import masks

            body["mask_png"] = base64.b64encode(masks.to_png(result.union_rle())).decode()
        if job.overlay or job.mask_png:
            timings["render_s"] = round(time.perf_counter() - render_start, 6)
        return body


class _Serialized:
    """A grounder whose ``ground`` calls hold ``lock`` (see ``Engine._ground_lock``). A request's
    answer kind is an argument of the call (:class:`~refseg.pipeline.PipelineOptions`), so
    concurrent requests asking for different answers share the grounder without racing."""

    def __init__(self, grounder: Grounder, lock: threading.Lock):
        self.grounder = grounder
        self.name = grounder.name
        self.lock = lock
        self.fixed_answer = getattr(grounder, "fixed_answer", None)

    @property
    def supports_features(self) -> bool:
        """Whether the grounder can hand its features to a box decoder (``boxdec:``)."""
        return bool(getattr(self.grounder, "supports_features", False))

    @property
    def feature_fingerprint(self) -> str:
        return self.grounder.feature_fingerprint  # type: ignore[attr-defined]

    def ground(self, images: Any, phrases: Any, *, think: bool = False, **options: Any) -> Any:
        with self.lock:
            return self.grounder.ground(images, phrases, think=think, **options)


def _default_max_pixels() -> int:
    """``REFSEG_MAX_PIXELS`` (or the library default); a bad value is reported at start-up."""
    return max_pixels()
