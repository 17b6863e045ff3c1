"""GRPO rewards for grounding: small pure functions in TRL's reward signature, one file a kind.

Every reward here is ``f(prompts, completions, **columns) -> list[float]``: TRL's
:class:`~trl.GRPOTrainer` passes the dataset's extra columns (``width``, ``height``,
``gt_boxes``, ``gt_masks``, ``image``, ...) as keyword lists aligned with ``completions``.

* :mod:`~refseg.train.rewards.common`: reading completions and answers, columns, logging, and
  the :class:`RewardCache` the functions of one run share;
* :mod:`~refseg.train.rewards.format`: ``format``, ``validity``, ``non_repetition``;
* :mod:`~refseg.train.rewards.boxes`: ``accuracy`` (Hungarian-matched box/point score),
  ``no_target``;
* :mod:`~refseg.train.rewards.masks`: ``segmenter_iou`` (:class:`SegmenterReward`),
  ``mask_iou`` and ``boundary_iou`` of rasterized path answers;
* :mod:`~refseg.train.rewards.paths`: ``path_validity``.

The recipes follow Seg-Zero / GenSeg-R1 (box answers) and Moondream Segmentation (path answers
scored on their raster). :func:`build_rewards` turns the configured weights into the functions
TRL calls, named as the config names them:

>>> funcs, weights = build_rewards({"format": 0.5, "accuracy": 1.0, "validity": 0}, think=False)
>>> [f.__name__ for f in funcs], weights
(['format', 'accuracy'], [0.5, 1.0])
>>> funcs[0](None, ["<answer>[]</answer>", "<think>hm</think><answer>[]</answer>"])
[1.0, 0.0]
"""

from __future__ import annotations

from typing import Any

from refseg.train.rewards.boxes import (
    IOU_THRESHOLD,
    L1_THRESHOLD,
    accuracy_reward,
    box_iou,
    box_l1,
    match_score,
    no_target_reward,
    no_target_score,
    pair_score,
    points_inside,
)
from refseg.train.rewards.common import (
    DEFAULT_CACHE,
    GTMaskCache,
    ReadAnswer,
    RewardCache,
    RewardFunc,
    completion_text,
    read_answer,
    reset_caches,
)
from refseg.train.rewards.format import (
    format_ok,
    format_reward,
    non_repetition_reward,
    repetition_score,
    validity_reward,
    validity_score,
)
from refseg.train.rewards.masks import (
    BOUNDARY_RATIO,
    MaskMatch,
    SegmenterReward,
    boundary_iou_reward,
    instance_mask,
    mask_iou_reward,
    mask_match_score,
)
from refseg.train.rewards.paths import (
    PATH_VERTEX_BUDGET,
    path_validity_reward,
    path_validity_score,
)

#: The default cache's decoded GT masks (the name the module-level cache had before the split).
_GT_CACHE = DEFAULT_CACHE.gt
#: The GT-mask cache class under its name before the split.
_GTCache = GTMaskCache

__all__ = [
    "BOUNDARY_RATIO",
    "DEFAULT_CACHE",
    "IOU_THRESHOLD",
    "L1_THRESHOLD",
    "PATH_VERTEX_BUDGET",
    "REWARD_NAMES",
    "GTMaskCache",
    "MaskMatch",
    "ReadAnswer",
    "RewardCache",
    "RewardFunc",
    "SegmenterReward",
    "accuracy_reward",
    "boundary_iou_reward",
    "box_iou",
    "box_l1",
    "build_rewards",
    "completion_text",
    "format_ok",
    "format_reward",
    "instance_mask",
    "mask_iou_reward",
    "mask_match_score",
    "match_score",
    "no_target_reward",
    "no_target_score",
    "non_repetition_reward",
    "pair_score",
    "path_validity_reward",
    "path_validity_score",
    "points_inside",
    "read_answer",
    "repetition_score",
    "reset_caches",
    "validity_reward",
    "validity_score",
]

#: Reward names accepted in configuration, in logging order.
REWARD_NAMES = (
    "format",
    "validity",
    "accuracy",
    "no_target",
    "non_repetition",
    "segmenter_iou",
    "path_validity",
    "mask_iou",
    "boundary_iou",
)


def build_rewards(
    weights: dict[str, float],
    *,
    think: bool,
    convention: Any = None,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
    segmenter: Any = None,
    max_path_vertices: int = PATH_VERTEX_BUDGET,
    raster_scale: float = 1.0,
    boundary_ratio: float = BOUNDARY_RATIO,
    cache: RewardCache | None = None,
) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and weights named in ``weights`` (zero weights are dropped).

    ``segmenter`` is a :class:`~refseg.segmentation.base.Segmenter` or a spec string; it is only
    loaded when ``segmenter_iou`` has a weight. ``max_path_vertices``, ``raster_scale`` and
    ``boundary_ratio`` configure the path rewards. The functions share ``cache`` (None: a new
    :class:`RewardCache` of their own), so a batch is read, and its masks matched, once.
    """
    from functools import partial, update_wrapper

    from refseg.errors import InputError

    unknown = sorted(set(weights) - set(REWARD_NAMES))
    if unknown:
        raise InputError(f"unknown reward {unknown[0]!r}; known: {', '.join(REWARD_NAMES)}")
    cache = RewardCache() if cache is None else cache
    funcs: list[RewardFunc] = []
    out_weights: list[float] = []
    for name in REWARD_NAMES:
        weight = float(weights.get(name, 0.0))
        if weight == 0.0:
            continue
        func: RewardFunc
        if name == "format":
            func = partial(format_reward, think=think)
        elif name == "validity":
            func = partial(validity_reward, convention=convention, cache=cache)
        elif name == "accuracy":
            func = partial(
                accuracy_reward,
                convention=convention,
                iou_threshold=iou_threshold,
                l1_threshold=l1_threshold,
                cache=cache,
            )
        elif name == "no_target":
            func = partial(no_target_reward, convention=convention, cache=cache)
        elif name == "non_repetition":
            func = partial(non_repetition_reward, convention=convention, cache=cache)
        elif name == "path_validity":
            func = partial(
                path_validity_reward,
                convention=convention,
                max_vertices=max_path_vertices,
                cache=cache,
            )
        elif name in ("mask_iou", "boundary_iou"):
            func = partial(
                mask_iou_reward if name == "mask_iou" else boundary_iou_reward,
                convention=convention,
                scale=raster_scale,
                boundary_ratio=boundary_ratio,
                cache=cache,
            )
        else:
            if segmenter is None or isinstance(segmenter, str):
                from refseg.segmentation import load_segmenter

                segmenter = load_segmenter(segmenter or "onnx-sam")
            func = SegmenterReward(segmenter, convention=convention, cache=cache)
        if isinstance(func, partial):
            update_wrapper(func, func.func)
            func.__name__ = name  # type: ignore[attr-defined]
        funcs.append(func)
        out_weights.append(weight)
    if not funcs:
        raise InputError("all reward weights are zero: give at least one a weight")
    return funcs, out_weights
