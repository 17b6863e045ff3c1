"""Referring-segmentation metrics, defined once here and used by every caller.

The definitions follow the corrected generalised-RefCOCO (gRefCOCO) semantics, in which
*every* sample counts, including samples whose phrase refers to nothing ("no-target") and samples
for which the model produced no readable answer.

Per sample
    G is the union of the ground-truth masks (empty for a no-target sample) and P the union of the
    predicted instance masks (empty when the model answered "no target" or its instances cover
    no pixel). ``I = |G ∩ P|``, ``U = |G ∪ P|``.

    * **Target or not** is the dataset's word, not the pixels': its ``no_target`` flag where it
      has one (gRefCOCO), else whether it lists a mask. A listed target whose mask covers no
      pixel is a target sample that no answer can hit (IoU 0, counted in Pr@X and T-acc), as in
      ReLA's gRefCOCO evaluator; :func:`target_group` uses the same rule.
    * **Ignore regions** (a reader's ``meta.ignore``: ReasonSeg's ignore shapes, COCO's crowd
      regions) are taken out of G and P first: they count in neither I nor U, as in LISA's
      ReasonSeg evaluation (its ignore index 255).
    * **IoU** = I / U. A no-target sample answered empty: IoU = 1 and I = U = 0 (a correct
      "no target" adds nothing to the cumulative sums). A prediction on a no-target sample:
      IoU = 0 and U = |P|.
    * **Failure** (an unreadable grounder answer, a segmenter or grounder error, a missing or
      invalid prediction): IoU = 0, I = 0, U = |G|, whatever the sample. A failure is neither an
      empty nor a non-empty answer: it counts against N-acc and T-acc alike.
    * **Boundary IoU** (Cheng et al., CVPR 2021): the boundary region of a mask M is
      ``M_d ∩ M = M \\ erode(M, d)``, the mask pixels within distance d of its contour, where the
      erosion uses a (2d+1)×(2d+1) square and treats pixels outside the image as background (so the
      image border is a contour too), and ``d = max(1, round(ratio × image diagonal))`` (Python's
      ``round``, as the reference implementation). BIoU = |∂G ∩ ∂P| / |∂G ∪ ∂P| with the same
      conventions as IoU for empty masks and failures. ``ratio`` is 0.02 by default (the paper's
      choice); RefCOCO-M reports it with 0.05.

Over a set of samples (fractions in [0, 1]; tables show percentages)
    * **gIoU** = mean per-sample IoU over all samples.
    * **cIoU** = ΣI / ΣU over all samples (1.0 when ΣU = 0, i.e. only correct "no target"
      answers). It weighs large objects more; gIoU weighs every sample equally.
    * **mBIoU** = mean per-sample boundary IoU over all samples.
    * **Pr@X** for X in 0.5 … 0.9 = fraction of *target* samples (non-empty G) with IoU ≥ X.
    * **N-acc** = no-target samples answered with an empty prediction / all no-target samples.
    * **T-acc** = target samples answered with a non-empty prediction / all target samples.

    A metric whose denominator is zero is reported as ``None`` (e.g. N-acc on a dataset without
    no-target samples).

Other projects settle some of these edge cases differently; :mod:`refseg.eval.conventions`
holds their choices, and ``score_sample(..., convention="lisa")`` / ``aggregate(...,
convention="lisa")`` reproduce them (``refseg eval --convention``).

Everything set-level is computed from per-sample *records* (plain dicts, see
:meth:`SampleScore.to_record`) by :func:`aggregate`, which is order-independent (integer sums and
:func:`math.fsum`), so a resumed, sharded or re-scored run gives bit-identical numbers.

Speed: areas and intersections come from the COCO run-length encodings through pycocotools
(no decoding). Boundary IoU needs dense masks, but only inside the bounding box of ``G ∪ P``:
outside it both masks are background, so eroding the crop with a background border is exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.errors import InputError
from refseg.eval.conventions import Convention, get_convention
from refseg.masks import DEFAULT_BOUNDARY_RATIO, boundary, boundary_width

#: IoU thresholds of the Pr@X metrics.
PR_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
#: The ratio RefCOCO-M reports boundary IoU with.
REFCOCOM_BOUNDARY_RATIO = 0.05

#: Metric names in the order tables show them.
METRIC_NAMES: tuple[str, ...] = (
    "gIoU",
    "cIoU",
    "mBIoU",
    *(f"Pr@{t:g}" for t in PR_THRESHOLDS),
    "N-acc",
    "T-acc",
)


@dataclass(frozen=True)
class SampleScore:
    """The score of one sample; integers so that set-level sums are exact.

    Attributes:
        iou, biou: the per-sample IoU and boundary IoU (see the module docstring).
        inter, union: ``|G ∩ P|`` and ``|G ∪ P|`` as they enter the cIoU sums.
        gt_area, pred_area: ``|G|`` and ``|P|`` (``pred_area`` is 0 for a failure).
        b_inter, b_union: the boundary intersection and union.
        gt_empty: the sample is a no-target sample.
        pred_empty: the answer was an empty prediction (false for a failure).
        failed: the sample failed (no usable prediction); ``iou`` is 0.
        skipped: the convention leaves this sample out of every metric (Seg-Zero drops
            samples whose ground truth and answer are both empty).
    """

    iou: float
    biou: float
    inter: int
    union: int
    gt_area: int
    pred_area: int
    b_inter: int
    b_union: int
    gt_empty: bool
    pred_empty: bool
    failed: bool
    skipped: bool = False

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready fields :func:`aggregate` reads back (``skipped`` only when true, so
        records of every other convention keep their layout)."""
        record = asdict(self)
        if not self.skipped:
            del record["skipped"]
        return record


def _bbox(rle: dict[str, Any]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` integer pixel bounds (exclusive end) of a non-empty mask."""
    x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
    return x, y, x + w, y + h


@functools.lru_cache(maxsize=64)
def _empty_counts(height: int, width: int) -> bytes:
    # One run of background: no need to build and encode a dense array.
    return mask_utils.frPyObjects(
        {"size": [height, width], "counts": [height * width]}, height, width
    )["counts"]


def _empty(height: int, width: int) -> dict[str, Any]:
    return {"size": [height, width], "counts": _empty_counts(height, width)}


def _union_coco(rles: Sequence[masks.RLE], height: int, width: int) -> dict[str, Any]:
    """Union of RLEs in pycocotools' bytes form, checking every size against the image."""
    coco = []
    for rle in rles:
        size = [int(v) for v in rle["size"]]
        if size != [height, width]:
            raise InputError(f"a mask of size {size} does not match the {height}x{width} image")
        coco.append(masks._coco(rle))
    if not coco:
        return _empty(height, width)
    if len(coco) == 1:
        return coco[0]
    return mask_utils.merge(coco, intersect=False)


def _without(
    ignore: masks.RLE,
    gt_masks: Sequence[masks.RLE],
    pred_masks: Sequence[masks.RLE] | None,
    height: int,
    width: int,
) -> tuple[list[masks.RLE], list[masks.RLE] | None]:
    """G and P (each as one mask) with the ignore region taken out (dense, at image size: only
    the few samples with an ignore region pay for it)."""
    keep = ~masks.decode(masks.validate(ignore)).astype(bool)
    if keep.shape != (height, width):
        raise InputError(f"the ignore mask {list(keep.shape)} does not match the image")

    def cut(rles: Sequence[masks.RLE]) -> list[masks.RLE]:
        union = mask_utils.decode(_union_coco(rles, height, width)).astype(bool)
        return [masks.encode(union & keep)]

    return cut(gt_masks), None if pred_masks is None else cut(pred_masks)


def score_sample(
    gt_masks: Sequence[masks.RLE],
    pred_masks: Sequence[masks.RLE] | None,
    height: int,
    width: int,
    *,
    boundary_ratio: float = DEFAULT_BOUNDARY_RATIO,
    ignore: masks.RLE | None = None,
    target: bool | None = None,
    convention: Convention | str | None = None,
) -> SampleScore:
    """Score one sample.

    Args:
        gt_masks: the ground-truth masks (their union is G; none for a no-target sample).
        pred_masks: the predicted instance masks (their union is P; none for an empty
            prediction), or ``None`` when the sample failed (no readable answer, an error, a
            missing prediction).
        height, width: the image size; every mask must have it.
        boundary_ratio: the boundary width as a fraction of the image diagonal.
        ignore: pixels excluded from scoring (a dataset's ``meta.ignore``: ReasonSeg's ignore
            shapes, COCO's crowd regions). They are removed from G and from P before anything
            is counted, so they add to neither I nor U, as LISA's evaluation does (its ignore
            index 255).
        target: whether the sample has a target, as the dataset says (its ``no_target`` flag,
            :attr:`refseg.data.base.Sample.no_target`); ``None``: whether it lists a mask. A
            listed target that covers no pixel stays a target sample (IoU 0, counted in Pr@X
            and T-acc), so the count of target samples is the dataset's, not the pixels'.
        convention: whose edge-case choices to follow (:mod:`refseg.eval.conventions`).
    """
    rules = get_convention(convention)
    listed = bool(gt_masks) if target is None else bool(target)
    d = boundary_width(height, width, boundary_ratio)
    if ignore is not None and rules.ignore == "exclude":
        gt_masks, pred_masks = _without(ignore, gt_masks, pred_masks, height, width)
    elif ignore is not None and rules.ignore == "target":
        gt_masks = [*gt_masks, masks.validate(ignore)]
    gt = _union_coco(gt_masks, height, width)
    gt_area = int(mask_utils.area(gt))
    has_target = gt_area > 0 if rules.target_by_area else listed
    if pred_masks is None:
        # A failure: nothing predicted, the ground truth stays in the union.
        b_union = 0
        if gt_area:
            x0, y0, x1, y1 = _bbox(gt)
            crop = mask_utils.decode(gt)[y0:y1, x0:x1]
            b_union = int(np.count_nonzero(boundary(crop, d)))
        return SampleScore(
            0.0, 0.0, 0, gt_area, gt_area, 0, 0, b_union, not has_target, False, True
        )
    pred = _union_coco(pred_masks, height, width)
    pred_area = int(mask_utils.area(pred))
    if not has_target and pred_area == 0:
        # A correct "no target"; with a listed no-target flag, whatever G holds.
        hit = rules.no_target_hit_iou
        score = 0.0 if hit is None else hit
        return SampleScore(score, score, 0, 0, gt_area, 0, 0, 0, True, True, False, hit is None)
    if has_target and gt_area == 0 and pred_area == 0:
        # A listed target that covers no pixel, answered empty: nothing to find, IoU 0.
        return SampleScore(0.0, 0.0, 0, 0, 0, 0, 0, 0, False, True, False)
    inter = 0
    if gt_area and pred_area:
        inter = int(mask_utils.area(mask_utils.merge([gt, pred], intersect=True)))
    union = gt_area + pred_area - inter
    b_inter, b_union = _boundary_counts(gt, gt_area, pred, pred_area, d)
    if not has_target:  # a prediction on a no-target sample: nothing it found is right
        inter = b_inter = 0
    return SampleScore(
        iou=inter / (union + rules.iou_epsilon),
        biou=b_inter / b_union if b_union else 0.0,
        inter=inter,
        union=union,
        gt_area=gt_area,
        pred_area=pred_area,
        b_inter=b_inter,
        b_union=b_union,
        gt_empty=not has_target,
        pred_empty=pred_area == 0,
        failed=False,
    )


def _boundary_counts(
    gt: dict[str, Any], gt_area: int, pred: dict[str, Any], pred_area: int, d: int
) -> tuple[int, int]:
    """Boundary intersection and union, decoding only the bounding box of ``G ∪ P``."""
    boxes = [_bbox(r) for r, a in ((gt, gt_area), (pred, pred_area)) if a]
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[2] for b in boxes)
    y1 = max(b[3] for b in boxes)
    g = boundary(mask_utils.decode(gt)[y0:y1, x0:x1], d) if gt_area else None
    p = boundary(mask_utils.decode(pred)[y0:y1, x0:x1], d) if pred_area else None
    if g is None or p is None:
        only = g if p is None else p
        return 0, int(np.count_nonzero(only))
    b_inter = int(np.count_nonzero(g & p))
    return b_inter, int(np.count_nonzero(g)) + int(np.count_nonzero(p)) - b_inter


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def aggregate(
    records: Iterable[Mapping[str, Any]], *, convention: Convention | str | None = None
) -> dict[str, Any]:
    """Set-level metrics from per-sample records (the fields of :class:`SampleScore`).

    Order-independent and exact: a resumed or sharded run gives the same numbers as one pass.
    Returns every name in :data:`METRIC_NAMES` (``None`` where undefined) plus the counts
    ``n``, ``n_target``, ``n_no_target`` and ``n_failed``. ``convention`` settles the set-level
    edge cases (a zero total union, no no-target sample) as that code does; the per-sample
    choices are already in the records, and records a convention marked ``skipped`` are left
    out.
    """
    rules = get_convention(convention)
    records = [r for r in records if not r.get("skipped")]
    ious: list[float] = []
    bious: list[float] = []
    inter_sum = union_sum = 0
    n_target = n_failed = n_hits = n_non_empty_on_target = 0
    above = [0] * len(PR_THRESHOLDS)
    for record in records:
        iou, biou = float(record["iou"]), float(record["biou"])
        ious.append(iou)
        bious.append(biou)
        inter_sum += int(record["inter"])
        union_sum += int(record["union"])
        failed = bool(record["failed"])
        n_failed += failed
        if record["gt_empty"]:
            n_hits += (not failed) and bool(record["pred_empty"])
        else:
            n_target += 1
            n_non_empty_on_target += (not failed) and not record["pred_empty"]
            for k, threshold in enumerate(PR_THRESHOLDS):
                above[k] += iou >= threshold
    n = len(ious)
    n_no_target = n - n_target
    out: dict[str, Any] = {
        "gIoU": math.fsum(ious) / n if n else None,
        "cIoU": (
            (inter_sum / (union_sum + rules.ciou_epsilon) if union_sum else rules.ciou_if_no_union)
            if n
            else None
        ),
        "mBIoU": math.fsum(bious) / n if n else None,
    }
    for threshold, count in zip(PR_THRESHOLDS, above):
        out[f"Pr@{threshold:g}"] = _ratio(count, n_target)
    out["N-acc"] = _ratio(n_hits, n_no_target)
    out["T-acc"] = _ratio(n_non_empty_on_target, n_target)
    if n and not n_no_target and rules.acc_without_no_target is not None:
        out["N-acc"] = out["T-acc"] = rules.acc_without_no_target
    out.update(n=n, n_target=n_target, n_no_target=n_no_target, n_failed=n_failed)
    return out


def target_group(record: Mapping[str, Any]) -> str:
    """``"none"``, ``"one"`` or ``"multiple"`` referred objects.

    The same rule as scoring: a record scored as a no-target sample (``gt_empty``) is "none",
    any other has at least one target, and several listed ground-truth masks make "multiple".
    (``meta.n_objects`` is not used: RefShapes records the number of objects in the *scene*
    there, which the ``scene_objects`` breakdown reports.)"""
    if record.get("gt_empty"):
        return "none"
    count = record.get("n_gt")
    try:
        count = int(count)
    except (TypeError, ValueError):
        count = 1
    return "multiple" if count > 1 else "one"


def breakdown(
    records: Iterable[Mapping[str, Any]],
    key: Callable[[Mapping[str, Any]], Any],
    *,
    convention: Convention | str | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`aggregate` per group, ``key(record)`` naming the group (``None`` skips the record).

    Groups are returned sorted by name so the output does not depend on record order.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        name = key(record)
        if name is not None:
            groups.setdefault(str(name), []).append(record)
    return {name: aggregate(groups[name], convention=convention) for name in sorted(groups)}


#: Sample ``meta`` fields that get a breakdown when records carry them.
BREAKDOWN_FIELDS: tuple[str, ...] = ("difficulty", "kind")


def breakdowns(
    records: Sequence[Mapping[str, Any]], *, convention: Convention | str | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every breakdown the records support: per ``meta`` field of :data:`BREAKDOWN_FIELDS`
    present on some record, and by number of referred objects when samples differ in it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in BREAKDOWN_FIELDS:
        if any(name in (r.get("meta") or {}) for r in records):
            out[name] = breakdown(
                records, lambda r, n=name: (r.get("meta") or {}).get(n), convention=convention
            )
    by_targets = breakdown(records, target_group, convention=convention)
    if len(by_targets) > 1:
        out["targets"] = by_targets
    if any("n_objects" in (r.get("meta") or {}) for r in records):
        out["scene_objects"] = breakdown(records, _scene_group, convention=convention)
    return out


def _scene_group(record: Mapping[str, Any]) -> str | None:
    """``"one-object scene"`` / ``"several objects"`` from ``meta.n_objects`` (RefShapes)."""
    count = (record.get("meta") or {}).get("n_objects")
    if count is None:
        return None
    return "one-object scene" if int(count) == 1 else "several objects"
