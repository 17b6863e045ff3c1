"""Text to masks: grounder -> prompts -> segmenter -> :class:`~refseg.types.Result`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from refseg.errors import InputError
from refseg.image import ImageLike, image_digest, load_image
from refseg.limits import check_prompts
from refseg.types import Prompt, Result

if TYPE_CHECKING:
    from refseg.grounding.base import Grounder, Grounding
    from refseg.segmentation.base import Embedding, Segmenter

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
    image: np.ndarray,
    prompts: Sequence[Prompt],
    *,
    embedding: Embedding | None = None,
    refine: int | None = None,
) -> Result:
    """Segment explicit prompts (boxes/points) without a grounder.

    Raises :class:`InputError` before any model work when the prompts are over the limits of
    :mod:`refseg.limits` (count, points per prompt, pixels x prompts).
    """
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
    """

    def __init__(
        self,
        grounder: Grounder,
        segmenter: Segmenter,
        *,
        think: bool = False,
        refine: int | None = None,
    ) -> None:
        self.grounder = grounder
        self.segmenter = segmenter
        self.think = think
        self.refine = refine

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
        groundings = self.grounder.ground(images, phrases, think=think)
        ground_s = (time.perf_counter() - start) / max(1, len(pairs))
        cache = {} if embeddings is None else embeddings
        results = []
        for image, phrase, grounding in zip(images, phrases, groundings):
            result = self._segment(image, grounding, cache)
            result.phrase = phrase
            result.timings["ground_s"] = ground_s
            results.append(result)
        return results

    def _segment(self, image: np.ndarray, grounding: Grounding, cache: dict) -> Result:
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
        result.parse_error = grounding.parse_error
        return result
