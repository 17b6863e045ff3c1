"""Text to masks: grounder -> prompts -> segmenter -> :class:`~refseg.types.Result`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from refseg.errors import InputError
from refseg.image import ImageLike, image_digest, load_image
from refseg.limits import check_prompts
from refseg.types import Prompt, Result

if TYPE_CHECKING:
    from refseg.grounding.base import Grounder, Grounding
    from refseg.segmentation.base import Embedding, Segmenter
    from refseg.segmentation.refiners import Refiner

#: Phrases longer than this (characters) are refused: longer inputs are almost always a mistake
#: (a file pasted as text) and would blow the model's context.
MAX_PHRASE_CHARS = 1000


def check_phrase(phrase: str) -> str:
    """Strip ``phrase`` and refuse unusable ones with a one-line :class:`InputError`.

    The one phrase validation of the CLI, the server, batch files, datasets and the API: empty,
    overlong, and text that cannot be written as UTF-8 (a lone surrogate such as ``"\\ud800"``,
    which JSON escapes and Python's ``surrogateescape`` decoding can produce). Such text would
    pass the models and only fail later, when a record or response is written.
    """
    if not isinstance(phrase, str):
        raise InputError("the phrase must be a string")
    text = phrase.strip()
    if not text:
        raise InputError("the phrase is empty")
    if len(text) > MAX_PHRASE_CHARS:
        raise InputError(f"the phrase has {len(text)} characters; the limit is {MAX_PHRASE_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        raise InputError(
            f"the phrase has a character that is not valid text (U+{bad:04X} at position "
            f"{exc.start}, a lone surrogate): send UTF-8"
        ) from exc
    return text


def segment_prompts(
    segmenter: Segmenter,
    image: ImageLike,
    prompts: Sequence[Prompt],
    *,
    embedding: Embedding | None = None,
    refine: int | None = None,
) -> Result:
    """Segment explicit prompts (boxes/points) without a grounder.

    ``image`` is anything :class:`Pipeline` takes (a path, encoded bytes, a PIL image or an
    array), read by the same :func:`~refseg.image.load_image`, so the two entry points agree on
    orientation, colour and the pixel limit, and an unreadable file is a one-line
    :class:`InputError` rather than a traceback. A contiguous RGB ``uint8`` array is used as is.
    Raises :class:`InputError` before any model work when the prompts are over the limits of
    :mod:`refseg.limits` (count, points per prompt, pixels x prompts).
    """
    image = load_image(image)
    height, width = image.shape[:2]
    check_prompts(prompts, width, height)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if embedding is None:
        embedding = segmenter.embed(image)
        timings["embed_s"] = time.perf_counter() - start
    start = time.perf_counter()
    predictions = segmenter.predict(embedding, prompts, refine=refine)
    timings["predict_s"] = time.perf_counter() - start
    instances = [p.to_instance(q) for p, q in zip(predictions, prompts)]
    return Result(width=width, height=height, instances=instances, timings=timings)


class Pipeline:
    """A grounder and a segmenter joined: ``pipe(image, phrase) -> Result``.

    Images are embedded once per distinct image (by content hash) however many phrases ask
    about them, so a batch of ten phrases on one photo costs one encoder pass.

    Path answers (an outline per instance, see :mod:`refseg.protocol`) are handled whatever the
    grounder: the outline is rasterized (:mod:`refseg.segmentation.paths`) and refined by
    ``refiner`` (:mod:`refseg.segmentation.refiners`; None is the default gated ``sam``
    refiner on ``segmenter``) ``refine_iters`` times, on the same shared embedding. Box
    answers go to the segmenter as before; one answer may mix both.
    """

    def __init__(
        self,
        grounder: Grounder,
        segmenter: Segmenter,
        *,
        think: bool = False,
        refine: int | None = None,
        refiner: Refiner | None = None,
        refine_iters: int | None = None,
    ) -> None:
        from refseg.segmentation.refiners import DEFAULT_ITERATIONS, load_refiner

        self.grounder = grounder
        self.segmenter = segmenter
        self.think = think
        self.refine = refine
        #: A box decoder (``boxdec:``) and a refiner trained on VLM features read the grounder's
        #: own features: asked for per call, turned into a per-pair input, dropped once used;
        #: SAM refiners do not apply to a box decoder.
        self.feature_sources: list[str] = []
        if getattr(segmenter, "needs_vlm_features", False):
            segmenter.check_grounder(grounder)  # type: ignore[attr-defined]
            self.feature_sources = list(segmenter.sources)  # type: ignore[attr-defined]
            if refiner is None or getattr(refiner, "needs_embedding", False):
                refiner = load_refiner("none")
        self.refiner = refiner if refiner is not None else load_refiner("sam", segmenter)
        if getattr(self.refiner, "needs_vlm_features", False):
            self.refiner.check_grounder(grounder)  # type: ignore[attr-defined]
            for source in self.refiner.sources:  # type: ignore[attr-defined]
                if source not in self.feature_sources:
                    self.feature_sources.append(source)
        self.refine_iters = DEFAULT_ITERATIONS if refine_iters is None else refine_iters

    def __call__(self, image: ImageLike, phrase: str, *, think: bool | None = None) -> Result:
        return self.run([(image, phrase)], think=think)[0]

    def run(
        self,
        pairs: Sequence[tuple[ImageLike, str]],
        *,
        think: bool | None = None,
        embeddings: dict[str, Embedding] | None = None,
    ) -> list[Result]:
        """Segment many (image, phrase) pairs: one grounder batch, one embedding per image.

        ``embeddings`` may pass a cache (content hash -> embedding) that outlives the call.
        """
        think = self.think if think is None else think
        images = [load_image(image) for image, _ in pairs]
        phrases = [check_phrase(phrase) for _, phrase in pairs]
        start = time.perf_counter()
        if self.feature_sources:
            groundings = self.grounder.ground(
                images, phrases, think=think, features=self.feature_sources
            )
        else:
            groundings = self.grounder.ground(images, phrases, think=think)
        ground_s = (time.perf_counter() - start) / max(1, len(pairs))
        cache = {} if embeddings is None else embeddings
        results = []
        for image, phrase, grounding in zip(images, phrases, groundings):
            refiner_input = None
            if self.feature_sources:  # per pair (the answer state is the phrase's), not cached
                features, grounding.features = grounding.features, None
                if getattr(self.segmenter, "needs_vlm_features", False):
                    embedding = self.segmenter.embed_features(image, features)  # type: ignore[attr-defined]
                    cache = {image_digest(image): embedding}
                    del embedding
                outlines = any(g.polygons for g in grounding.instances)
                if outlines and getattr(self.refiner, "needs_vlm_features", False):
                    refiner_input = self.refiner.embed_features(image, features)  # type: ignore[attr-defined]
                del features
            result = self._segment(image, grounding, cache, refiner_input)
            result.phrase = phrase
            result.timings["ground_s"] = ground_s
            results.append(result)
        return results

    def _segment(
        self, image: np.ndarray, grounding: Grounding, cache: dict, refiner_input: Any = None
    ) -> Result:
        height, width = image.shape[:2]
        prompts = [Prompt(box=g.box, points=list(g.points)) for g in grounding.instances]
        try:
            check_prompts(prompts, width, height)
        except InputError as exc:
            # A model answer, not the caller's input: reported like any unusable answer.
            result = Result(width=width, height=height, raw_answer=grounding.raw_answer)
            result.reasoning = grounding.reasoning
            result.parse_error = f"the answer is over the limits: {exc}"
            return result
        if not prompts:
            result = Result(width=width, height=height)
        elif any(g.polygons for g in grounding.instances):
            result = self._segment_paths(image, grounding, prompts, cache, refiner_input)
        else:
            key = image_digest(image)
            timings = {}
            if key not in cache:
                start = time.perf_counter()
                cache[key] = self.segmenter.embed(image)
                timings["embed_s"] = time.perf_counter() - start
            result = segment_prompts(
                self.segmenter, image, prompts, embedding=cache[key], refine=self.refine
            )
            result.timings.update(timings)
        result.no_target = grounding.no_target and not prompts
        result.raw_answer = grounding.raw_answer
        result.reasoning = grounding.reasoning
        result.parse_error = grounding.parse_error or result.parse_error
        return result

    def _embedding(self, image: np.ndarray, cache: dict, timings: dict) -> Embedding:
        key = image_digest(image)
        if key not in cache:
            start = time.perf_counter()
            cache[key] = self.segmenter.embed(image)
            timings["embed_s"] = time.perf_counter() - start
        return cache[key]

    def _segment_paths(
        self,
        image: np.ndarray,
        grounding: Grounding,
        prompts: list[Prompt],
        cache: dict,
        refiner_input: Any = None,
    ) -> Result:
        """An answer with outlines: rasterize + refine those, segment the box-only ones.

        ``refiner_input`` is what a refiner on VLM features reads (from the grounding pass);
        other refiners read the segmenter's embedding of the image.
        """
        from refseg.segmentation.paths import PathError, format_path, rasterize, trace
        from refseg.segmentation.refiners import run_refiner
        from refseg.types import Instance

        height, width = image.shape[:2]
        timings: dict[str, float] = {}
        boxes_only = [i for i, g in enumerate(grounding.instances) if not g.polygons]
        embedding = None
        if boxes_only or self.refiner.needs_embedding:
            embedding = self._embedding(image, cache, timings)
        instances: dict[int, Instance] = {}
        start = time.perf_counter()
        if boxes_only:
            chosen = [prompts[i] for i in boxes_only]
            predictions = self.segmenter.predict(embedding, chosen, refine=self.refine)
            for i, prediction, prompt in zip(boxes_only, predictions, chosen):
                instances[i] = prediction.to_instance(prompt)
        dropped: list[str] = []
        for i, g in enumerate(grounding.instances):
            if not g.polygons:
                continue
            try:
                raster = rasterize(g.polygons, width, height)
            except PathError as exc:  # a model answer too complex to draw: that instance only
                dropped.append(str(exc))
                continue
            out = run_refiner(
                self.refiner,
                image,
                embedding if refiner_input is None else refiner_input,
                raster,
                g.box,
                self.refine_iters,
            )
            instance = Instance.from_mask(
                out.mask,
                box=g.box,
                points=g.points,
                score=1.0 if out.score is None else out.score,
            )
            # The outline the mask has: the model's own where the raster was kept, else the
            # refined mask traced back (what a user editing outlines wants to start from).
            rings = g.polygons if np.array_equal(out.mask, raster) else trace(out.mask, 64)
            instance.path = format_path(rings, decimals=1)
            instances[i] = instance
        timings["predict_s"] = time.perf_counter() - start
        result = Result(
            width=width,
            height=height,
            instances=[instances[i] for i in sorted(instances)],
            timings=timings,
        )
        if dropped and not instances:
            result.parse_error = f"all {len(dropped)} instances invalid (first: {dropped[0]})"
        return result
