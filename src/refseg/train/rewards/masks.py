"""Mask rewards: score the mask an answer produces, not its numbers.

* :class:`SegmenterReward` (GenSeg-R1-G) runs the real segmenter on the predicted prompts and
  scores mask IoU, embedding each image once per rollout group (a cache keyed by image digest).

Path answers (``answer: path``, the path mask head) are scored on the mask they rasterize to,
not on their vertices: many vertex sequences draw nearly the same mask, so token-level path
supervision is ambiguous, and an RL reward on the raster (Moondream Segmentation's argument) is
what the path SFT cannot give:

* ``mask_iou``: Hungarian matching of rasterized instance masks to GT instance masks on mask
  IoU, summed and divided by ``max(#pred, #gt)`` (as ``accuracy`` is).
* ``boundary_iou``: the same matching, scored by boundary IoU (Cheng et al.), which rewards an
  outline that follows the object's edge rather than one that only covers its bulk.

The mask geometry (pair IoUs, boundaries, resizing) is :mod:`refseg.masks`'s. GT masks arrive as
RLE dicts (or their bare ``counts`` strings, of the row's size):

>>> import numpy as np
>>> from refseg import masks
>>> def outline(x1, y1, x2, y2):  # a rectangle on the 0-1000 grid, answered as a path
...     path = f"M {x1} {y1} L {x2} {y1} L {x2} {y2} L {x1} {y2} Z"
...     return f'<answer>[{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "path": "{path}"}}]</answer>'
>>> gt = np.zeros((100, 200), dtype=bool)
>>> gt[20:60, 20:60] = True  # pixels of a 200 x 100 image: (100, 200)-(300, 600) on the grid
>>> cols = {"width": [200] * 3, "height": [100] * 3, "gt_masks": [[masks.encode(gt)]] * 3}
>>> answers = [outline(100, 200, 300, 600), outline(100, 200, 200, 600), "<answer>[]</answer>"]
>>> [round(s, 2) for s in mask_iou_reward(None, answers, **cols)]
[1.0, 0.5, 0.0]
>>> [round(s, 2) for s in boundary_iou_reward(None, answers, **cols)]
[1.0, 0.41, 0.0]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refseg import masks
from refseg.grounding.base import GroundedInstance, Grounding
from refseg.train.rewards.common import RewardCache, _columns, _gt_masks, _read_all

#: Boundary width of ``boundary_iou`` as a fraction of the image diagonal.
BOUNDARY_RATIO = 0.02


class SegmenterReward:
    """GenSeg-R1-G reward: segment the predicted prompts, score mask IoU against the GT union.

    All rollouts of one prompt share its image, so the image embedding (the segmenter's dominant
    cost) is computed once per group and reused: embeddings are cached by
    :func:`refseg.image.image_digest` in a small LRU (``cache_size`` images). On a no-target
    sample an empty answer scores 1 and any instance 0; an unreadable answer scores 0.

    Needs columns ``width``, ``height``, ``gt_masks`` and the image as ``image`` (PIL/array) or
    ``image_path``. ``cache`` is the :class:`~refseg.train.rewards.common.RewardCache` shared
    with the run's other rewards (None: the default one).
    """

    __name__ = "segmenter_iou"

    def __init__(
        self,
        segmenter: Any,
        *,
        convention: Any = None,
        cache_size: int = 64,
        refine: int | None = None,
        cache: RewardCache | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.convention = convention
        self.cache_size = int(cache_size)
        self.refine = refine
        self.reward_cache = cache
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.embed_calls = 0

    def embedding(self, image: np.ndarray) -> Any:
        """The (cached) segmenter embedding of ``image``."""
        from refseg.image import image_digest

        key = image_digest(image)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        emb = self.segmenter.embed(image)
        self.embed_calls += 1
        self._cache[key] = emb
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return emb

    def score(self, grounding: Grounding, image: np.ndarray, gt_union: np.ndarray) -> float:
        """Mask IoU of the segmented prediction against ``gt_union`` (empty = no target)."""
        from refseg.types import Prompt

        if grounding.parse_error:
            return 0.0
        if not gt_union.any():
            return 1.0 if not grounding.instances else 0.0
        if not grounding.instances:
            return 0.0
        prompts = [Prompt(box=i.box, points=list(i.points)) for i in grounding.instances]
        preds = self.segmenter.predict(self.embedding(image), prompts, refine=self.refine)
        pred = np.zeros_like(gt_union)
        for p in preds:
            pred |= np.asarray(p.mask, dtype=bool)
        union = np.logical_or(pred, gt_union).sum()
        return float(np.logical_and(pred, gt_union).sum() / union) if union else 1.0

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        from refseg.image import load_image

        n = len(completions)
        reads = _read_all(completions, kwargs, self.convention, self.reward_cache)
        images = (
            kwargs.get("image") if kwargs.get("image") is not None else kwargs.get("image_path")
        )
        images = _columns(n, "image", images)
        mask_col = _columns(n, "gt_masks", kwargs.get("gt_masks"))
        scores = []
        loaded: dict[int, np.ndarray] = {}
        for r, image, w, h, gt_m in zip(reads, images, kwargs["width"], kwargs["height"], mask_col):
            key = id(image)
            if key not in loaded:
                loaded[key] = load_image(image)
            array = loaded[key]
            gt = np.zeros((int(h), int(w)), dtype=bool)
            for m in _gt_masks(gt_m, int(h), int(w)):
                if m is not None:
                    gt |= m
            scores.append(self.score(r.grounding, array, gt))
        return scores


# --------------------------------------------------------------------------------------------
# Path answers: rasterized-mask rewards


def instance_mask(
    inst: GroundedInstance, width: int, height: int, scale: float = 1.0
) -> np.ndarray:
    """An instance's mask at ``scale`` of the image size: its rasterized outline, or its box
    filled when it has none (so a box answer is still scored on what it covers)."""
    from refseg.paths import rasterize

    w, h = _scaled(width, height, scale)
    sx, sy = w / width, h / height
    if inst.polygons:
        rings = [np.asarray(r, dtype=np.float64) * (sx, sy) for r in inst.polygons]
        return rasterize(rings, w, h)
    x1, y1, x2, y2 = inst.box
    box = np.array([[x1 * sx, y1 * sy], [x2 * sx, y1 * sy], [x2 * sx, y2 * sy], [x1 * sx, y2 * sy]])
    return rasterize([box], w, h)


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    if scale >= 1.0:
        return int(width), int(height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class MaskMatch:
    """Scores of one answer's rasterized instances against the GT instances."""

    iou: float
    boundary_iou: float
    pairs: list[tuple[int, int]]


def mask_match_score(
    grounding: Grounding,
    gt_masks: Sequence[np.ndarray],
    width: int,
    height: int,
    *,
    scale: float = 1.0,
    boundary_ratio: float = BOUNDARY_RATIO,
) -> MaskMatch:
    """Hungarian-matched mask IoU and boundary IoU, each summed over the matched pairs and
    divided by ``max(#pred, #gt)``.

    Matching maximises the summed mask IoU one-to-one (a greedy best-first pairing can lock a
    prediction onto the wrong object and lose the better total, see the tests). A no-target
    sample scores 1 for an empty answer and 0 for any instance; an unreadable answer 0. With
    ``scale`` < 1 both sides are compared at that fraction of the image size (the GT by area
    averaging, thresholded at half): the error this costs is measured in
    ``benchmarks/bench_path_rewards.py``.
    """
    from scipy.optimize import linear_sum_assignment

    if grounding.parse_error:
        return MaskMatch(0.0, 0.0, [])
    preds = grounding.instances
    if not len(gt_masks):
        score = 1.0 if not preds else 0.0
        return MaskMatch(score, score, [])
    if not preds:
        return MaskMatch(0.0, 0.0, [])
    w, h = _scaled(width, height, scale)
    gts = [masks.resize_mask(np.asarray(m, dtype=bool), w, h) for m in gt_masks]
    pred_masks = [instance_mask(p, width, height, scale) for p in preds]
    ious = masks.pair_ious(pred_masks, gts)
    rows, cols = linear_sum_assignment(-ious)
    norm = max(len(preds), len(gts))
    d = masks.boundary_width(h, w, boundary_ratio)
    biou = sum(masks.boundary_iou(pred_masks[i], gts[j], d) for i, j in zip(rows, cols))
    return MaskMatch(
        iou=float(ious[rows, cols].sum() / norm),
        boundary_iou=float(biou / norm),
        pairs=[(int(i), int(j)) for i, j in zip(rows, cols)],
    )


def _mask_matches(
    completions: Sequence[Any],
    kwargs: dict[str, Any],
    convention: Any,
    scale: float,
    boundary_ratio: float,
    cache: RewardCache | None = None,
) -> list[MaskMatch]:
    """Matches of one batch, computed once for ``mask_iou`` and ``boundary_iou`` together
    (kept in ``cache.last_match``, keyed by the batch read and its GT)."""
    from refseg.train.rewards.common import DEFAULT_CACHE

    cache = DEFAULT_CACHE if cache is None else cache
    n = len(completions)
    reads = cache.read_all(completions, kwargs, convention)
    mask_col = _columns(n, "gt_masks", kwargs.get("gt_masks"))
    key = (id(reads), tuple(map(repr, mask_col)), scale, boundary_ratio)
    last = cache.last_match
    if last is not None and last[0] == key and last[1] is reads:
        return last[2]
    out = []
    for r, w, h, gt_m in zip(reads, kwargs["width"], kwargs["height"], mask_col):
        gts = cache.gt.get(gt_m, int(h), int(w))
        out.append(
            mask_match_score(
                r.grounding, gts, int(w), int(h), scale=scale, boundary_ratio=boundary_ratio
            )
        )
    cache.last_match = (key, reads, out)
    return out


def mask_iou_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    scale: float = 1.0,
    boundary_ratio: float = BOUNDARY_RATIO,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """Hungarian-matched rasterized mask IoU (:func:`mask_match_score`; columns ``width``,
    ``height``, ``gt_masks``)."""
    matches = _mask_matches(completions, kwargs, convention, scale, boundary_ratio, cache)
    return [m.iou for m in matches]


def boundary_iou_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    scale: float = 1.0,
    boundary_ratio: float = BOUNDARY_RATIO,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """Hungarian-matched boundary IoU of the rasterized instances (see :func:`mask_match_score`)."""
    matches = _mask_matches(completions, kwargs, convention, scale, boundary_ratio, cache)
    return [m.boundary_iou for m in matches]
