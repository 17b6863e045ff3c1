"""GRPO rewards for grounding: small pure functions in TRL's reward signature.

Every reward here is ``f(prompts, completions, **columns) -> list[float]``: TRL's
:class:`~trl.GRPOTrainer` passes the dataset's extra columns (``width``, ``height``,
``gt_boxes``, ``gt_masks``, ``image``, ...) as keyword lists aligned with ``completions``.
Completions may be plain strings or TRL's conversational form (a list of messages whose last
``content`` is a string or a list of typed parts); :func:`completion_text` reads both.

The scoring cores (:func:`match_score`, :func:`no_target_score`, :func:`repetition_score`) take a
:class:`~refseg.grounding.base.Grounding` in image pixels, and :func:`validity_score` the parsed
answer in the model's own frame, so they are testable without a model. Answers are read with the
project's one parser (:func:`refseg.protocol.parse_answer`) and converted with
:func:`refseg.grounding.coords.to_grounding`, exactly as inference does: a reward that parsed
differently from the grounder would teach a format the grounder cannot read.

Why these rewards (following Seg-Zero / GenSeg-R1 style recipes):

* ``format`` keeps the ``<think>``/``<answer>`` structure (or a bare answer when reasoning is off).
* ``validity`` rewards answers the segmenter can use: known keys, 4-number boxes inside the
  image, points inside their own box.
* ``accuracy`` matches predicted to ground-truth instances with the Hungarian algorithm and
  normalises by ``max(#pred, #gt)``, so both an extra and a missing instance cost.
* ``no_target`` rewards the right abstention decision (gRefCOCO-style empty targets).
* ``non_repetition`` penalises degenerate loops in the reasoning and duplicated instances.
* :class:`SegmenterReward` (GenSeg-R1-G) runs the real segmenter on the predicted prompts and
  scores mask IoU, embedding each image once per rollout group (a cache keyed by image digest).

Path answers (``answer: path``, the path mask head) are scored on the mask they rasterize to,
not on their vertices: many vertex sequences draw nearly the same mask, so token-level path
supervision is ambiguous, and an RL reward on the raster (Moondream Segmentation's argument) is
what the path SFT cannot give:

* ``path_validity``: every instance has an outline, each ring has at least 3 distinct vertices,
  every vertex lies inside the model's frame and the answer keeps the vertex budget.
* ``mask_iou``: Hungarian matching of rasterized instance masks to GT instance masks on mask
  IoU, summed and divided by ``max(#pred, #gt)`` (as ``accuracy`` is).
* ``boundary_iou``: the same matching, scored by boundary IoU (Cheng et al.), which rewards an
  outline that follows the object's edge rather than one that only covers its bulk.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refseg import masks
from refseg.grounding.base import GroundedInstance, Grounding

RewardFunc = Callable[..., list[float]]

#: Default thresholds of the accuracy reward (per matched pair, each criterion counts 1/3).
IOU_THRESHOLD = 0.5
#: Mean absolute corner error as a fraction of the image side (0.02 = 20 units on the 0-1000 grid).
L1_THRESHOLD = 0.02


# --------------------------------------------------------------------------------------------
# Reading completions


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's conversational list of messages.

    A conversational completion is ``[{"role": "assistant", "content": ...}]`` where content is
    a string or a list of ``{"type": "text", "text": ...}`` parts; the assistant messages' texts
    are joined.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        if not isinstance(message, dict):
            parts.append(str(message))
            continue
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return "".join(parts)


@dataclass
class ReadAnswer:
    """One completion, parsed and converted to pixels."""

    text: str
    parsed: Any  # refseg.protocol.ParsedAnswer
    grounding: Grounding


def read_answer(completion: Any, width: int, height: int, convention: Any = None) -> ReadAnswer:
    """Parse a completion with the project's parser and convert it to pixels.

    ``convention`` is a :class:`refseg.grounding.coords.Convention` (or its name); ``None`` means
    the protocol's default 0-1000 grid.
    """
    from refseg.grounding.coords import to_grounding
    from refseg.protocol import parse_answer

    text = completion_text(completion)
    parsed = parse_answer(text)
    grounding = to_grounding(parsed, _convention(convention), int(width), int(height))
    if not grounding.raw_answer:
        grounding.raw_answer = text
    return ReadAnswer(text=text, parsed=parsed, grounding=grounding)


def _convention(convention: Any) -> Any:
    from refseg.grounding.coords import Convention

    return Convention.parse("norm1000" if convention is None else convention)


def _columns(n: int, name: str, values: Any) -> list[Any]:
    """A per-completion column from TRL's kwargs, checked for length."""
    if values is None:
        raise KeyError(f"reward needs the dataset column {name!r}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _log(kwargs: dict[str, Any], name: str, value: float) -> None:
    """Log a scalar through TRL's ``log_metric`` hook when the trainer provides one."""
    hook = kwargs.get("log_metric")
    if hook is not None and math.isfinite(value):
        hook(name, float(value))


# --------------------------------------------------------------------------------------------
# Scoring cores (pixels in, numbers out)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (0 for degenerate ones)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def box_l1(a: Sequence[float], b: Sequence[float], width: int, height: int) -> float:
    """Mean absolute corner difference as a fraction of the image side (x by width, y by height)."""
    scale = (width, height, width, height)
    return float(sum(abs(a[i] - b[i]) / max(1, scale[i]) for i in range(4)) / 4)


def points_inside(points: Sequence[Sequence[float]], mask: np.ndarray) -> float:
    """Fraction of ``points`` (pixel ``x, y``) that fall on foreground of ``mask``; 0 if none."""
    if not points:
        return 0.0
    h, w = mask.shape
    hits = 0
    for x, y in points:
        col, row = math.floor(x), math.floor(y)
        if 0 <= row < h and 0 <= col < w and mask[row, col]:
            hits += 1
    return hits / len(points)


def pair_score(
    pred: GroundedInstance,
    gt_box: Sequence[float],
    gt_mask: np.ndarray | None,
    width: int,
    height: int,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
) -> float:
    """Score of one predicted instance against one ground-truth object, in ``[0, 1]``.

    Three criteria count a third each: box IoU above ``iou_threshold``, box L1 below
    ``l1_threshold``, and the fraction of predicted points inside the GT mask. Thresholded terms
    (rather than raw IoU) follow Seg-Zero: they give GRPO's group-relative advantage clear steps.
    Without a GT mask the point term uses the GT box.
    """
    iou_hit = 1.0 if box_iou(pred.box, gt_box) > iou_threshold else 0.0
    l1_hit = 1.0 if box_l1(pred.box, gt_box, width, height) < l1_threshold else 0.0
    if gt_mask is not None:
        point_hit = points_inside(pred.points, gt_mask)
    else:
        x1, y1, x2, y2 = gt_box
        pts = pred.points
        point_hit = (
            sum(1 for x, y in pts if x1 <= x <= x2 and y1 <= y <= y2) / len(pts) if pts else 0.0
        )
    return (iou_hit + l1_hit + point_hit) / 3.0


def match_score(
    grounding: Grounding,
    gt_boxes: Sequence[Sequence[float]],
    gt_masks: Sequence[np.ndarray | None],
    width: int,
    height: int,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
) -> float:
    """Hungarian-matched accuracy of a grounding against the ground truth, in ``[0, 1]``.

    Predictions and GT objects are matched one-to-one maximising the summed :func:`pair_score`
    (box IoU breaks ties so near misses still pair sensibly); the sum is divided by
    ``max(#pred, #gt)``, so an extra instance costs as much as a missing one. On a no-target
    sample (no GT) the score is 1 for an explicit empty answer and 0 otherwise; an unreadable
    answer scores 0 everywhere.
    """
    if grounding.parse_error:
        return 0.0
    preds = grounding.instances
    if not gt_boxes:
        return 1.0 if (grounding.no_target or not preds) and not grounding.parse_error else 0.0
    if not preds:
        return 0.0
    from scipy.optimize import linear_sum_assignment

    scores = np.zeros((len(preds), len(gt_boxes)))
    ious = np.zeros_like(scores)
    for i, pred in enumerate(preds):
        for j, gt_box in enumerate(gt_boxes):
            mask = gt_masks[j] if j < len(gt_masks) else None
            scores[i, j] = pair_score(
                pred,
                gt_box,
                mask,
                width,
                height,
                iou_threshold=iou_threshold,
                l1_threshold=l1_threshold,
            )
            ious[i, j] = box_iou(pred.box, gt_box)
    rows, cols = linear_sum_assignment(-(scores + 1e-3 * ious))
    return float(scores[rows, cols].sum() / max(len(preds), len(gt_boxes)))


def validity_score(parsed: Any, frame: tuple[int, int]) -> float:
    """1.0 when every instance is usable as written, partial credit otherwise.

    Judged on the answer as the model wrote it (``parsed``, a
    :class:`~refseg.protocol.ParsedAnswer`) in its own coordinate frame (``frame`` = the
    convention's ``(width, height)``, e.g. ``(1000, 1000)``), because conversion to pixels clips
    boxes and would hide an out-of-image box. An unreadable answer scores 0; an explicit empty
    answer is valid. Otherwise the score is the fraction of instances whose box has 4 finite
    numbers with ``x1 < x2``, ``y1 < y2``, inside ``[0, frame]``, and whose points (at least one)
    lie inside their own box.
    """
    if getattr(parsed, "error", None):
        return 0.0
    instances = list(parsed.instances)
    if not instances:
        return 1.0 if parsed.no_target else 0.0
    fw, fh = frame
    good = 0
    for inst in instances:
        x1, y1, x2, y2 = inst.box
        finite = all(math.isfinite(v) for v in inst.box)
        inside = finite and 0 <= x1 < x2 <= fw and 0 <= y1 < y2 <= fh
        pts_ok = bool(inst.points) and all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in inst.points)
        good += int(inside and pts_ok)
    return good / len(instances)


def no_target_score(grounding: Grounding, is_no_target: bool) -> float:
    """Was the abstention decision right? Unreadable answers are wrong either way."""
    if grounding.parse_error:
        return 0.0
    answered_empty = grounding.no_target or not grounding.instances
    return 1.0 if answered_empty == bool(is_no_target) else 0.0


def repetition_score(text: str, grounding: Grounding | None = None, *, n: int = 4) -> float:
    """``1 - (repeated fraction)``: of word ``n``-grams in the text and of duplicate instances.

    Degenerate sampling loops ("the red the red the red ...") and the same box answered twice
    are the two failure modes GRPO tends to amplify; the worse of the two sets the score.
    """
    words = re.findall(r"\w+", text.lower())
    ngram_rep = 0.0
    if len(words) >= n + 1:
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        ngram_rep = sum(c - 1 for c in counts.values()) / len(grams)
    dup_rep = 0.0
    if grounding is not None and len(grounding.instances) > 1:
        boxes = [i.box for i in grounding.instances]
        dups = sum(
            1
            for i in range(1, len(boxes))
            if any(box_iou(boxes[i], boxes[j]) > 0.9 for j in range(i))
        )
        dup_rep = dups / len(boxes)
    return float(1.0 - max(ngram_rep, dup_rep))


# --------------------------------------------------------------------------------------------
# TRL reward functions


def _gt_masks(values: Any, height: int, width: int) -> list[np.ndarray | None]:
    """Decode one row's ``gt_masks`` (RLE dicts, or bare ``counts`` strings of size h x w)."""
    out: list[np.ndarray | None] = []
    for value in values or []:
        if value is None:
            out.append(None)
            continue
        rle = value if isinstance(value, dict) else {"size": [height, width], "counts": value}
        out.append(masks.decode(masks.normalize(rle)))
    return out


#: The last batch read, keyed by its texts, sizes and convention: TRL calls every reward
#: function on the same batch in turn, and parsing path answers is the largest cost they share.
_LAST_READ: list[Any] = [None, None]


def _read_all(
    completions: Sequence[Any], kwargs: dict[str, Any], convention: Any
) -> list[ReadAnswer]:
    n = len(completions)
    widths = _columns(n, "width", kwargs.get("width"))
    heights = _columns(n, "height", kwargs.get("height"))
    texts = tuple(completion_text(c) for c in completions)
    key = (texts, tuple(map(int, widths)), tuple(map(int, heights)), str(convention))
    if _LAST_READ[0] == key:
        return _LAST_READ[1]
    reads = [read_answer(t, int(w), int(h), convention) for t, w, h in zip(texts, widths, heights)]
    _LAST_READ[0], _LAST_READ[1] = key, reads
    return reads


def format_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    think: bool = True,
    strict: bool = False,
    **kwargs: Any,
) -> list[float]:
    """1.0 when the completion has the expected structure, else 0.0.

    With ``think`` the answer must be ``<think>...</think>`` followed by ``<answer>...</answer>``;
    without it, a readable answer with no ``<think>`` block. Logs ``format_rate``.
    """
    from refseg.protocol import parse_answer

    scores = []
    for completion in completions:
        parsed = parse_answer(completion_text(completion))
        scores.append(1.0 if format_ok(parsed, think=think, strict=strict) else 0.0)
    if scores:
        _log(kwargs, "format_rate", sum(scores) / len(scores))
    return scores


def format_ok(parsed: Any, *, think: bool, strict: bool = False) -> bool:
    """Whether a parsed answer has the structure the prompt asked for.

    Readable, inside a closed ``<answer>`` block with nothing outside the tags, with a complete
    ``<think>`` block before it exactly when ``think``. ``strict`` also refuses any repaired
    surface noise (single quotes, trailing commas, ...): the canonical form only.
    """
    if not parsed.ok or not parsed.has_answer_tags or not parsed.answer_closed:
        return False
    if "text_outside_tags" in parsed.repairs or "unclosed_think" in parsed.repairs:
        return False
    if strict and not parsed.canonical:
        return False
    return parsed.has_think == bool(think)


def validity_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    **kwargs: Any,
) -> list[float]:
    """:func:`validity_score` of each completion (needs ``width``/``height`` columns)."""
    reads = _read_all(completions, kwargs, convention)
    conv = _convention(convention)
    return [
        validity_score(r.parsed, conv.frame(int(w), int(h)))
        for r, w, h in zip(reads, kwargs["width"], kwargs["height"])
    ]


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
    **kwargs: Any,
) -> list[float]:
    """Hungarian-matched :func:`match_score` (columns ``width``, ``height``, ``gt_boxes``,
    optional ``gt_masks``). Logs ``no_target_accuracy`` over the batch's no-target rows."""
    n = len(completions)
    reads = _read_all(completions, kwargs, convention)
    boxes = _columns(n, "gt_boxes", kwargs.get("gt_boxes"))
    mask_col = kwargs.get("gt_masks")
    mask_col = _columns(n, "gt_masks", mask_col) if mask_col is not None else [None] * n
    scores = []
    for r, w, h, gt_b, gt_m in zip(reads, kwargs["width"], kwargs["height"], boxes, mask_col):
        decoded = _gt_masks(gt_m, int(h), int(w)) if gt_m else []
        scores.append(
            match_score(
                r.grounding,
                list(gt_b or []),
                decoded,
                int(w),
                int(h),
                iou_threshold=iou_threshold,
                l1_threshold=l1_threshold,
            )
        )
    empty = [s for s, b in zip(scores, boxes) if not b]
    if empty:
        _log(kwargs, "no_target_accuracy", sum(empty) / len(empty))
    return scores


def no_target_reward(
    prompts: Sequence[Any], completions: Sequence[Any], *, convention: Any = None, **kwargs: Any
) -> list[float]:
    """:func:`no_target_score`: a row is a no-target sample when its ``gt_boxes`` is empty."""
    n = len(completions)
    reads = _read_all(completions, kwargs, convention)
    boxes = _columns(n, "gt_boxes", kwargs.get("gt_boxes"))
    return [no_target_score(r.grounding, not b) for r, b in zip(reads, boxes)]


def non_repetition_reward(
    prompts: Sequence[Any], completions: Sequence[Any], *, convention: Any = None, **kwargs: Any
) -> list[float]:
    """:func:`repetition_score` of each completion (reasoning loops and duplicate instances)."""
    if kwargs.get("width") is None or kwargs.get("height") is None:
        return [repetition_score(completion_text(c)) for c in completions]
    reads = _read_all(completions, kwargs, convention)
    return [repetition_score(r.text, r.grounding) for r in reads]


class SegmenterReward:
    """GenSeg-R1-G reward: segment the predicted prompts, score mask IoU against the GT union.

    All rollouts of one prompt share its image, so the image embedding (the segmenter's dominant
    cost) is computed once per group and reused: embeddings are cached by
    :func:`refseg.image.image_digest` in a small LRU (``cache_size`` images). On a no-target
    sample an empty answer scores 1 and any instance 0; an unreadable answer scores 0.

    Needs columns ``width``, ``height``, ``gt_masks`` and the image as ``image`` (PIL/array) or
    ``image_path``.
    """

    __name__ = "segmenter_iou"

    def __init__(
        self,
        segmenter: Any,
        *,
        convention: Any = None,
        cache_size: int = 64,
        refine: int | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.convention = convention
        self.cache_size = int(cache_size)
        self.refine = refine
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
        reads = _read_all(completions, kwargs, self.convention)
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

#: Default vertex budget of ``path_validity`` (the SFT targets' default ``path_vertices``).
PATH_VERTEX_BUDGET = 32
#: Boundary width of ``boundary_iou`` as a fraction of the image diagonal.
BOUNDARY_RATIO = 0.02


def path_validity_score(parsed: Any, frame: tuple[int, int], max_vertices: int) -> float:
    """Fraction of instances whose outline is usable as written; 0 unreadable, 1 explicit ``[]``.

    Judged in the model's own frame (conversion to pixels clips outlines and would hide a path
    that runs off the image). An instance counts when it has an outline whose every ring has at
    least 3 distinct vertices, every vertex inside ``[0, frame]``, and at most ``max_vertices``
    vertices in all; a box-only instance does not count (the path head was asked for outlines).
    """
    if getattr(parsed, "error", None):
        return 0.0
    instances = list(parsed.instances)
    if not instances:
        return 1.0 if parsed.no_target else 0.0
    fw, fh = frame
    good = 0
    for inst in instances:
        rings = inst.polygons
        if not rings or sum(len(r) for r in rings) > max_vertices:
            continue
        ok = all(
            len(set(ring)) >= 3 and all(0 <= x <= fw and 0 <= y <= fh for x, y in ring)
            for ring in rings
        )
        good += int(ok)
    return good / len(instances)


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


class _GTCache:
    """Decoded GT masks of recent rows: a group's 8-16 rollouts share one sample's GT."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()

    def get(self, values: Any, height: int, width: int) -> list[np.ndarray]:
        key = (height, width, tuple(v if isinstance(v, str) else repr(v) for v in values or []))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        decoded = [m for m in _gt_masks(values, height, width) if m is not None]
        self._items[key] = decoded
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return decoded


_GT_CACHE = _GTCache()


_LAST_MATCH: list[Any] = [None, None]


def _mask_matches(
    completions: Sequence[Any],
    kwargs: dict[str, Any],
    convention: Any,
    scale: float,
    boundary_ratio: float,
) -> list[MaskMatch]:
    """Matches of one batch, computed once for ``mask_iou`` and ``boundary_iou`` together."""
    n = len(completions)
    reads = _read_all(completions, kwargs, convention)
    mask_col = _columns(n, "gt_masks", kwargs.get("gt_masks"))
    key = (id(reads), tuple(map(repr, mask_col)), scale, boundary_ratio)
    if _LAST_MATCH[0] == key and _LAST_MATCH[1][0] is reads:
        return _LAST_MATCH[1][1]
    out = []
    for r, w, h, gt_m in zip(reads, kwargs["width"], kwargs["height"], mask_col):
        gts = _GT_CACHE.get(gt_m, int(h), int(w))
        out.append(
            mask_match_score(
                r.grounding, gts, int(w), int(h), scale=scale, boundary_ratio=boundary_ratio
            )
        )
    _LAST_MATCH[0], _LAST_MATCH[1] = key, (reads, out)
    return out


def path_validity_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    max_vertices: int = PATH_VERTEX_BUDGET,
    **kwargs: Any,
) -> list[float]:
    """:func:`path_validity_score` of each completion (needs ``width``/``height`` columns)."""
    reads = _read_all(completions, kwargs, convention)
    conv = _convention(convention)
    return [
        path_validity_score(r.parsed, conv.frame(int(w), int(h)), max_vertices)
        for r, w, h in zip(reads, kwargs["width"], kwargs["height"])
    ]


def mask_iou_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    scale: float = 1.0,
    boundary_ratio: float = BOUNDARY_RATIO,
    **kwargs: Any,
) -> list[float]:
    """Hungarian-matched rasterized mask IoU (:func:`mask_match_score`; columns ``width``,
    ``height``, ``gt_masks``)."""
    matches = _mask_matches(completions, kwargs, convention, scale, boundary_ratio)
    return [m.iou for m in matches]


def boundary_iou_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    scale: float = 1.0,
    boundary_ratio: float = BOUNDARY_RATIO,
    **kwargs: Any,
) -> list[float]:
    """Hungarian-matched boundary IoU of the rasterized instances (see :func:`mask_match_score`)."""
    matches = _mask_matches(completions, kwargs, convention, scale, boundary_ratio)
    return [m.boundary_iou for m in matches]


# --------------------------------------------------------------------------------------------
# Building the configured set

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
) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and weights named in ``weights`` (zero weights are dropped).

    ``segmenter`` is a :class:`~refseg.segmentation.base.Segmenter` or a spec string; it is only
    loaded when ``segmenter_iou`` has a weight. ``max_path_vertices``, ``raster_scale`` and
    ``boundary_ratio`` configure the path rewards.
    """
    from functools import partial, update_wrapper

    from refseg.errors import InputError

    unknown = sorted(set(weights) - set(REWARD_NAMES))
    if unknown:
        raise InputError(f"unknown reward {unknown[0]!r}; known: {', '.join(REWARD_NAMES)}")
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
            func = partial(validity_reward, convention=convention)
        elif name == "accuracy":
            func = partial(
                accuracy_reward,
                convention=convention,
                iou_threshold=iou_threshold,
                l1_threshold=l1_threshold,
            )
        elif name == "no_target":
            func = partial(no_target_reward, convention=convention)
        elif name == "non_repetition":
            func = partial(non_repetition_reward, convention=convention)
        elif name == "path_validity":
            func = partial(
                path_validity_reward, convention=convention, max_vertices=max_path_vertices
            )
        elif name in ("mask_iou", "boundary_iou"):
            func = partial(
                mask_iou_reward if name == "mask_iou" else boundary_iou_reward,
                convention=convention,
                scale=raster_scale,
                boundary_ratio=boundary_ratio,
            )
        else:
            if segmenter is None or isinstance(segmenter, str):
                from refseg.segmentation import load_segmenter

                segmenter = load_segmenter(segmenter or "onnx-sam")
            func = SegmenterReward(segmenter, convention=convention)
        if isinstance(func, partial):
            update_wrapper(func, func.func)
            func.__name__ = name  # type: ignore[attr-defined]
        funcs.append(func)
        out_weights.append(weight)
    if not funcs:
        raise InputError("all reward weights are zero: give at least one a weight")
    return funcs, out_weights
