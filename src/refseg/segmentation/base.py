"""The segmenter protocol: embed an image once, then prompt it many times.

Image encoding dominates a promptable segmenter's cost (about a second on CPU for SAM's TinyViT,
tens of milliseconds for a prompt), so the protocol separates the two: :meth:`Segmenter.embed`
returns an :class:`Embedding` that callers keep and reuse for every phrase, rollout or request on
the same image, and :meth:`Segmenter.predict` takes many prompts in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from refseg.types import Instance, Prompt


@dataclass
class Embedding:
    """A segmenter's encoding of one image, opaque to callers.

    Attributes:
        height, width: size of the image it was made from (pixels of the displayed image).
        data: backend-specific payload (an array or tensors).
        backend: name of the segmenter that made it, checked on use.
    """

    height: int
    width: int
    data: Any
    backend: str

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for bounded caches."""
        if hasattr(self.data, "nbytes"):
            return int(self.data.nbytes)
        if isinstance(self.data, dict):
            return int(sum(getattr(v, "nbytes", 0) for v in self.data.values()))
        return 0


@dataclass
class MaskPrediction:
    """One mask answer: the full-resolution mask, the model's quality score, and the low-res
    logits that can be fed back as ``Prompt.mask_input`` to refine."""

    mask: np.ndarray
    score: float
    low_res: np.ndarray | None = None

    def to_instance(self, prompt: Prompt) -> Instance:
        return Instance.from_mask(
            self.mask,
            box=prompt.box,
            points=prompt.points,
            point_labels=prompt.labels,
            score=self.score,
            scores={"segmenter": self.score},
        )


@runtime_checkable
class Segmenter(Protocol):
    """What every segmentation backend provides."""

    name: str

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode a ``uint8`` RGB ``(H, W, 3)`` image."""
        ...

    def predict(
        self, embedding: Embedding, prompts: Sequence[Prompt], *, refine: int | None = None
    ) -> list[MaskPrediction]:
        """One mask per prompt, in order. ``refine`` overrides the backend's refinement rounds."""
        ...


@runtime_checkable
class FeatureReader(Protocol):
    """A mask head that reads the grounding VLM's own features (:mod:`refseg.vlm_features`)
    instead of, or besides, an image embedding: the box decoder (``boxdec:``) and a refiner
    trained on ``vlm:SOURCE`` features. The pipeline asks the grounder for ``sources`` during
    the grounding pass and hands each pair's features to :meth:`embed_features`."""

    #: The vision sources to capture (:func:`refseg.vlm_features.vision_sources` names).
    sources: list[str]

    def check_grounder(self, grounder: Any) -> None:
        """Refuse, with one line, a grounder whose features this head cannot read."""
        ...

    def embed_features(self, image: np.ndarray, features: Any) -> Any:
        """This head's input for one pair, from the grounding pass's ``VLMFeatures``."""
        ...


def segment(
    segmenter: Segmenter,
    image: np.ndarray,
    prompts: Sequence[Prompt],
    *,
    refine: int | None = None,
) -> list[Instance]:
    """Convenience: embed ``image`` and return one :class:`Instance` per prompt."""
    embedding = segmenter.embed(image)
    predictions = segmenter.predict(embedding, prompts, refine=refine)
    return [p.to_instance(q) for p, q in zip(predictions, prompts)]
