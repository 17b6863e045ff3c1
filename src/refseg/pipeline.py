"""Text to masks: grounder -> prompts -> segmenter -> :class:`~refseg.types.Result`.

:class:`PipelineOptions` holds what shapes the masks beyond the choice of models, and
:func:`load_pipeline` is the one assembly of models + options that every entry point calls (the
CLI's segment, batch, eval and demo, the server, the Python API): a new knob is a field here,
its handling in :class:`Pipeline`, and one option declaration per front end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from refseg.errors import InputError
from refseg.image import ImageLike, image_digest, load_image
from refseg.limits import check_prompts
from refseg.segmentation.base import FeatureReader
from refseg.types import Prompt, Result

if TYPE_CHECKING:
    from refseg.grounding.base import Grounder, Grounding
    from refseg.segmentation.base import Embedding, Segmenter
    from refseg.segmentation.refiners import Refiner

#: Bounds of the numeric options (the CLI and the server declare the same).
MAX_REFINE = 8
MAX_REFINE_ITERS = 16


@dataclass(frozen=True)
class PipelineOptions:
    """What shapes a phrase's masks beyond the choice of models; checked when made.

    Attributes:
        answer: what the grounder is asked for: ``box`` (a box and interior points per
            instance) or ``path`` (an outline); ``None`` asks the grounder's own default (box;
            ``moondream:`` always answers paths). Per call, never grounder state.
        think: let the grounder reason in ``<think>`` first.
        refine: rounds of the promptable segmenter's own mask refinement (its low-res mask fed
            back into its decoder); ``None`` is the segmenter's default (1 for the SAM family).
        refiner: what refines the raster of a path answer: ``none``, ``sam`` (gated, the
            default), ``sam-raw`` or a trained ``CHECKPOINT.pt``.
        refine_iters: iterations of that refiner (``None``: 1).
        min_score: instances whose :attr:`~refseg.types.Instance.score` is below it are
            dropped; an answer left with none is "no target" (``None``: keep all).
    """

    answer: str | None = None
    think: bool = False
    refine: int | None = None
    refiner: str = "sam"
    refine_iters: int | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        from refseg.protocol import ANSWERS

        if self.answer is not None and self.answer not in ANSWERS:
            raise InputError(f"unknown answer kind {self.answer!r}; use {' or '.join(ANSWERS)}")
        for name, value, top in (
            ("refine", self.refine, MAX_REFINE),
            ("refine_iters", self.refine_iters, MAX_REFINE_ITERS),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top
            ):
                raise InputError(f"{name} must be an integer from 0 to {top}, got {value!r}")
        if self.min_score is not None and (
            isinstance(self.min_score, bool)
            or not isinstance(self.min_score, (int, float))
            or not 0.0 <= self.min_score <= 1.0
        ):
            raise InputError(f"min_score must be a number from 0 to 1, got {self.min_score!r}")
        if not isinstance(self.refiner, str) or not self.refiner.strip():
            raise InputError("the refiner must be none, sam, sam-raw or a CHECKPOINT.pt path")

    def resolved(self, grounder: str | None = None) -> PipelineOptions:
        """These options with their defaults made explicit, as a run records them: the answer
        the grounder spec gives, the refiner iterations, a checkpoint refiner as an absolute
        path (so a run resumed from another folder matches; the checkpoint is read here, so a
        bad one fails before any other work)."""
        from refseg.grounding import DEFAULT_GROUNDER, default_answer
        from refseg.segmentation.refiners import DEFAULT_ITERATIONS, REFINER_NAMES, load_refiner

        refiner = self.refiner.strip()
        if refiner not in REFINER_NAMES:
            load_refiner(refiner)  # an unknown name or a bad checkpoint: one line, now
            refiner = os.path.abspath(refiner)
        return dataclasses.replace(
            self,
            answer=self.answer or default_answer(grounder or DEFAULT_GROUNDER),
            refiner=refiner,
            refine_iters=DEFAULT_ITERATIONS if self.refine_iters is None else self.refine_iters,
        )

    def path_options(self) -> dict[str, Any]:
        """What batch and eval records carry: the options that change path answers' masks
        (and the score threshold, where one is set)."""
        recorded: dict[str, Any] = {
            "answer": self.answer,
            "refiner": self.refiner,
            "refine_iters": self.refine_iters,
        }
        if self.min_score is not None:
            recorded["min_score"] = self.min_score
        return recorded


def check_answer(grounder: Grounder, answer: str | None) -> None:
    """Refuse, with one line, an answer kind the grounder cannot give (a fixed API)."""
    fixed = getattr(grounder, "fixed_answer", None)
    if answer is not None and fixed is not None and fixed != answer:
        raise InputError(f"grounder {grounder.name} always answers with a {fixed}")


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
    grounder: the outline is rasterized (:mod:`refseg.paths`) and refined by
    ``refiner`` (:mod:`refseg.segmentation.refiners`; None is the default gated ``sam``
    refiner on ``segmenter``) ``refine_iters`` times, on the same shared embedding. Box
    answers go to the segmenter as before; one answer may mix both.
    """

    def __init__(
        self,
        grounder: Grounder,
        segmenter: Segmenter,
        *,
        options: PipelineOptions | None = None,
        think: bool | None = None,
        refine: int | None = None,
        refiner: Refiner | str | None = None,
        refine_iters: int | None = None,
    ) -> None:
        """``options`` says how (:class:`PipelineOptions`); the keywords ``think``, ``refine``,
        ``refine_iters`` and ``refiner`` (a spec or a ready :class:`Refiner`) override it."""
        from refseg.segmentation.refiners import load_refiner

        options = options or PipelineOptions()
        changes = {"think": think, "refine": refine, "refine_iters": refine_iters}
        if isinstance(refiner, str):
            changes["refiner"] = refiner
        options = dataclasses.replace(
            options, **{k: v for k, v in changes.items() if v is not None}
        )
        check_answer(grounder, options.answer)
        self.grounder = grounder
        self.segmenter = segmenter
        self.options = options
        #: A box decoder (``boxdec:``) and a refiner trained on VLM features read the grounder's
        #: own features: asked for per call, turned into a per-pair input, dropped once used;
        #: SAM refiners do not apply to a box decoder.
        self.feature_sources: list[str] = []
        chosen = None if isinstance(refiner, str) else refiner
        if isinstance(segmenter, FeatureReader):
            segmenter.check_grounder(grounder)
            self.feature_sources = list(segmenter.sources)
            if chosen is None or chosen.needs_embedding:
                chosen = load_refiner("none")
        self.refiner: Refiner = (
            chosen if chosen is not None else load_refiner(options.refiner, segmenter)
        )
        if isinstance(self.refiner, FeatureReader):
            self.refiner.check_grounder(grounder)
            for source in self.refiner.sources:
                if source not in self.feature_sources:
                    self.feature_sources.append(source)

    @property
    def think(self) -> bool:
        return self.options.think

    @property
    def refine(self) -> int | None:
        return self.options.refine

    @property
    def refine_iters(self) -> int:
        from refseg.segmentation.refiners import DEFAULT_ITERATIONS

        iters = self.options.refine_iters
        return DEFAULT_ITERATIONS if iters is None else iters

    @property
    def answer(self) -> str:
        """The answer kind asked for when a call names none."""
        return (
            self.options.answer
            or getattr(self.grounder, "fixed_answer", None)
            or getattr(self.grounder, "answer", None)
            or "box"
        )

    def __call__(
        self, image: ImageLike, phrase: str, *, think: bool | None = None, answer: str | None = None
    ) -> Result:
        return self.run([(image, phrase)], think=think, answer=answer)[0]

    def run(
        self,
        pairs: Sequence[tuple[ImageLike, str]],
        *,
        think: bool | None = None,
        answer: str | None = None,
        embeddings: dict[str, Embedding] | None = None,
    ) -> list[Result]:
        """Segment many (image, phrase) pairs: one grounder batch, one embedding per image.

        ``think`` and ``answer`` override the options for this call (concurrent calls with
        different answers do not interfere: the answer is an argument, not grounder state).
        ``embeddings`` may pass a cache (content hash -> embedding) that outlives the call.
        """
        think = self.think if think is None else think
        if answer is not None:
            PipelineOptions(answer=answer)  # a known kind
            check_answer(self.grounder, answer)
        answer = answer or self.options.answer
        images = [load_image(image) for image, _ in pairs]
        phrases = [check_phrase(phrase) for _, phrase in pairs]
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if self.feature_sources:
            extra["features"] = self.feature_sources
        if answer is not None:  # only when asked: grounders written before it still work
            extra["answer"] = answer
        groundings = self.grounder.ground(images, phrases, think=think, **extra)
        ground_s = (time.perf_counter() - start) / max(1, len(pairs))
        cache = {} if embeddings is None else embeddings
        results = []
        for image, phrase, grounding in zip(images, phrases, groundings):
            refiner_input = None
            if self.feature_sources:  # per pair (the answer state is the phrase's), not cached
                features, grounding.features = grounding.features, None
                if isinstance(self.segmenter, FeatureReader):
                    embedding = self.segmenter.embed_features(image, features)
                    cache = {image_digest(image): embedding}
                    del embedding
                outlines = any(g.polygons for g in grounding.instances)
                if outlines and isinstance(self.refiner, FeatureReader):
                    refiner_input = self.refiner.embed_features(image, features)
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
            for instance, grounded in zip(result.instances, grounding.instances):  # one each
                instance.set_scores(grounder=grounded.score)
        result.no_target = grounding.no_target and not prompts
        result.no_target_score = grounding.no_target_score
        result.raw_answer = grounding.raw_answer
        result.reasoning = grounding.reasoning
        result.parse_error = grounding.parse_error or result.parse_error
        threshold = self.options.min_score
        if threshold is not None and result.instances:
            result.instances = [i for i in result.instances if i.score >= threshold]
            result.no_target = not result.instances  # every instance below the threshold
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
        from refseg.paths import PathError, format_path, rasterize, trace
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
            instance = Instance.from_mask(out.mask, box=g.box, points=g.points)
            instance.set_scores(segmenter=out.score)
            # The outline the mask has: the model's own where the raster was kept, else the
            # refined mask traced back (what a user editing outlines wants to start from).
            rings = g.polygons if np.array_equal(out.mask, raster) else trace(out.mask, 64)
            instance.path = format_path(rings, decimals=1)
            instances[i] = instance
        for i, instance in instances.items():
            instance.set_scores(grounder=grounding.instances[i].score)
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


def load_pipeline(
    grounder: str | Grounder | None = None,
    segmenter: str | Segmenter = "onnx-sam",
    options: PipelineOptions | None = None,
    *,
    device: str | None = None,
    **grounder_options: Any,
) -> Pipeline:
    """The one assembly of a pipeline from specs (or ready models) and options.

    ``grounder`` is a spec (``qwen3-vl:ID``, ``openai:URL#MODEL``, ``moondream:URL``; ``None`` is
    the default grounder) or a ready grounder; ``segmenter`` likewise (``onnx-sam``,
    ``boxdec:PATH``...). Everything that can be checked without models is checked first (the
    options, the specs, a trained refiner's checkpoint), so a mistake costs no model load.
    ``grounder_options`` go to :func:`refseg.grounding.load_grounder` (``max_new_tokens``...).
    """
    from refseg.grounding import (
        DEFAULT_GROUNDER,
        default_grounder,
        load_grounder,
        parse_grounder_spec,
    )
    from refseg.segmentation import check_segmenter_spec, load_segmenter
    from refseg.segmentation.refiners import REFINER_NAMES, load_refiner

    options = options or PipelineOptions()
    if isinstance(grounder, str) or grounder is None:
        parse_grounder_spec(grounder or DEFAULT_GROUNDER)
    if isinstance(segmenter, str):
        check_segmenter_spec(segmenter)
    # A checkpoint refiner is read before any model loads (it needs no segmenter).
    refiner = None if options.refiner in REFINER_NAMES else load_refiner(options.refiner)
    if isinstance(segmenter, str):
        segmenter = load_segmenter(segmenter, device=device)
    refiner = refiner or load_refiner(options.refiner, segmenter)
    if isinstance(grounder, str) or grounder is None:
        if grounder is None:  # the default follows the machine and the heads' needs
            features = isinstance(segmenter, FeatureReader) or isinstance(refiner, FeatureReader)
            grounder = default_grounder(device, features=features, options=grounder_options)
        grounder = load_grounder(grounder, device=device, **grounder_options)
    return Pipeline(grounder, segmenter, options=options, refiner=refiner)
