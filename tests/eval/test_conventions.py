"""The scoring conventions, edge case by edge case: one table per convention on generated masks.

Each table row is one edge case (both empty, a listed target covering no pixel, a failure, a
no-target sample answered with a mask, ignore pixels, ...) with the per-sample IoU, cIoU terms
and target count that project's evaluation code gives. Beside the tables, small reference
scorers written from each code's formulas (LISA's ``intersectionAndUnionGPU`` + ``validate``,
ReLA's ``ReferEvaluator.evaluate``) check whole sets, set-level edge cases included.
"""

from __future__ import annotations

import numpy as np
import pytest

from refseg import masks
from refseg.errors import InputError
from refseg.eval.conventions import CONVENTIONS, get_convention
from refseg.eval.metrics import aggregate, score_sample, target_group

H, W = 12, 10


def dense(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Union of ``(y0, y1, x0, x1)`` rectangles."""
    out = np.zeros((H, W), dtype=bool)
    for y0, y1, x0, x1 in boxes:
        out[y0:y1, x0:x1] = True
    return out


EMPTY = dense()
BIG = dense((0, 6, 0, 6))  # 36 px
SMALL = dense((2, 5, 2, 5))  # 9 px inside BIG
APART = dense((8, 12, 6, 10))  # 16 px, disjoint from BIG
BAND = dense((0, 6, 6, 8))  # 12 px beside BIG: an ignore band


def rles(*arrays: np.ndarray) -> list[dict]:
    return [masks.encode(a) for a in arrays]


# One row per edge case: (id, listed target masks, prediction (None = failure), dataset flag
# "has a target" (None: whether a mask is listed), ignore, expected IoU, expected I, expected
# U, counted as a target sample).
Row = tuple[str, list, list | None, bool | None, np.ndarray | None, float, int, int, bool]

COMMON: list[Row] = [
    ("ordinary", [BIG], [SMALL], None, None, 9 / 36, 9, 36, True),
    ("target/answered-empty", [BIG], [], None, None, 0.0, 0, 36, True),
    ("target/failure", [BIG], None, None, None, 0.0, 0, 36, True),
    ("no-target/answered-mask", [], [APART], None, None, 0.0, 0, 16, False),
]

REFSEG_TABLE: list[Row] = [
    *COMMON,
    ("both-empty", [], [], None, None, 1.0, 0, 0, False),
    # a listed target whose mask covers no pixel: still a target; nothing can hit it
    ("empty-gt-with-annotation/answered-empty", [EMPTY], [], None, None, 0.0, 0, 0, True),
    ("empty-gt-with-annotation/answered-mask", [EMPTY], [SMALL], None, None, 0.0, 0, 9, True),
    # the dataset's flag wins over the list (gRefCOCO's no_target)
    ("flag-no-target", [], [], False, None, 1.0, 0, 0, False),
    ("no-target/failure", [], None, None, None, 0.0, 0, 0, False),
    # ignore pixels leave G and P: the spill onto the band costs nothing
    ("ignore/spill", [BIG], [BIG | BAND], None, BAND, 1.0, 36, 36, True),
]

LISA_TABLE: list[Row] = [
    *COMMON,
    ("both-empty", [], [], None, None, 1.0, 0, 0, False),
    # the pixels decide: an empty ground truth is "no target", whatever was listed
    ("empty-gt-with-annotation/answered-empty", [EMPTY], [], None, None, 1.0, 0, 0, False),
    ("empty-gt-with-annotation/answered-mask", [EMPTY], [SMALL], None, None, 0.0, 0, 9, False),
    ("flag-no-target", [], [], False, None, 1.0, 0, 0, False),
    ("ignore/spill", [BIG], [BIG | BAND], None, BAND, 1.0, 36, 36, True),
    # a target that is all ignore leaves nothing: an empty answer scores 1
    ("ignore/all-of-target", [BAND], [], None, BAND, 1.0, 0, 0, False),
]

RELA_TABLE: list[Row] = [
    *COMMON,
    ("both-empty", [], [], None, None, 1.0, 0, 0, False),
    ("empty-gt-with-annotation/answered-empty", [EMPTY], [], None, None, 0.0, 0, 0, True),
    ("empty-gt-with-annotation/answered-mask", [EMPTY], [SMALL], None, None, 0.0, 0, 9, True),
    ("flag-no-target", [], [], False, None, 1.0, 0, 0, False),
    # no ignore label in ReLA's code: the band is background, the spill counts in U
    ("ignore/spill", [BIG], [BIG | BAND], None, BAND, 36 / 48, 36, 48, True),
]

VISIONREASONER_TABLE: list[Row] = [
    *COMMON,
    # an empty union scores 0, a correct "no target" included
    ("both-empty", [], [], None, None, 0.0, 0, 0, False),
    ("empty-gt-with-annotation/answered-empty", [EMPTY], [], None, None, 0.0, 0, 0, False),
    ("empty-gt-with-annotation/answered-mask", [EMPTY], [SMALL], None, None, 0.0, 0, 9, False),
    # ignore pixels are target pixels in its ReasonSeg data
    ("ignore/spill", [BIG], [BIG | BAND], None, BAND, 1.0, 48, 48, True),
    ("ignore/missed", [BIG], [BIG], None, BAND, 36 / 48, 36, 48, True),
    ("ignore/only", [], [], None, BAND, 0.0, 0, 12, True),
]

SEGZERO_TABLE: list[Row] = [
    *COMMON,
    ("ignore/spill", [BIG], [BIG | BAND], None, BAND, 1.0, 48, 48, True),
    ("ignore/missed", [BIG], [BIG], None, BAND, 36 / 48, 36, 48, True),
]

#: Seg-Zero leaves a sample whose ground truth and answer are both empty out of the set.
SEGZERO_SKIPPED = [
    pytest.param([], [], None, id="both-empty"),
    pytest.param([EMPTY], [], None, id="empty-gt-with-annotation/answered-empty"),
    pytest.param([], [], False, id="flag-no-target"),
]

TABLES = {
    "refseg": REFSEG_TABLE,
    "lisa": LISA_TABLE,
    "rela": RELA_TABLE,
    "visionreasoner": VISIONREASONER_TABLE,
    "segzero": SEGZERO_TABLE,
}


def _score(name: str, row: Row):
    _, gt, pred, target, ignore, *_ = row
    return score_sample(
        rles(*gt),
        None if pred is None else rles(*pred),
        H,
        W,
        ignore=None if ignore is None else masks.encode(ignore),
        target=target,
        convention=name,
    )


def _check(name: str, row: Row) -> None:
    *_, iou, inter, union, counted = row
    score = _score(name, row)
    # LISA divides by U + 1e-5: equal to the exact ratio within that epsilon
    assert score.iou == pytest.approx(iou, abs=1e-6)
    assert (score.inter, score.union) == (inter, union)
    assert (not score.gt_empty) == counted
    record = {**score.to_record(), "n_gt": len(row[1])}
    # one rule: the breakdown by number of targets agrees with what scoring counted
    assert (target_group(record) != "none") == counted
    metrics = aggregate([record], convention=name)
    assert metrics["n_target"] == int(counted)
    if counted:  # counted in Pr@X and T-acc
        assert metrics["Pr@0.5"] == float(score.iou >= 0.5)
        answered = float(not score.failed and not score.pred_empty)
        alone = get_convention(name).acc_without_no_target  # ReLA: 0 without no-target samples
        assert metrics["T-acc"] == (answered if alone is None else alone)


@pytest.mark.parametrize("row", REFSEG_TABLE, ids=[r[0] for r in REFSEG_TABLE])
def test_refseg_convention(row: Row) -> None:
    _check("refseg", row)


@pytest.mark.parametrize("row", LISA_TABLE, ids=[r[0] for r in LISA_TABLE])
def test_lisa_convention(row: Row) -> None:
    _check("lisa", row)


@pytest.mark.parametrize("row", RELA_TABLE, ids=[r[0] for r in RELA_TABLE])
def test_rela_convention(row: Row) -> None:
    _check("rela", row)


@pytest.mark.parametrize("row", VISIONREASONER_TABLE, ids=[r[0] for r in VISIONREASONER_TABLE])
def test_visionreasoner_convention(row: Row) -> None:
    _check("visionreasoner", row)


@pytest.mark.parametrize("row", SEGZERO_TABLE, ids=[r[0] for r in SEGZERO_TABLE])
def test_segzero_convention(row: Row) -> None:
    _check("segzero", row)


@pytest.mark.parametrize(("gt", "pred", "target"), SEGZERO_SKIPPED)
def test_segzero_leaves_both_empty_samples_out(gt, pred, target) -> None:
    skipped = score_sample(rles(*gt), rles(*pred), H, W, target=target, convention="segzero")
    assert skipped.skipped
    kept = score_sample(rles(BIG), rles(SMALL), H, W, convention="segzero")
    metrics = aggregate([skipped.to_record(), kept.to_record()], convention="segzero")
    assert metrics["n"] == 1 and metrics["gIoU"] == pytest.approx(9 / 36)


def test_a_listed_target_without_pixels_is_a_target_by_default() -> None:
    """Before: scored as a correct "no target" (IoU 1, N-acc) while target_group said "one"."""
    score = score_sample([masks.empty(H, W)], [], H, W)
    record = {**score.to_record(), "n_gt": 1}
    assert score.iou == 0.0 and not score.gt_empty
    assert target_group(record) == "one"
    metrics = aggregate([record])
    assert metrics["n_target"] == 1 and metrics["N-acc"] is None and metrics["T-acc"] == 0.0


# --------------------------------------------------------------------------------------------
# Whole sets against reference scorers written from each code's formulas


def lisa_reference(cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """LISA: target 1, ignore 255, prediction 0/1; I and U from a 2-bin histogram of the
    labels in [0, 1] after copying 255 onto the prediction; gIoU the mean of I / (U + 1e-5)
    (+1 when U = 0), cIoU ΣI / (ΣU + 1e-10)."""
    ious, inters, unions = [], [], []
    for g, p, ign in cases:
        target = np.where(ign, 255, g.astype(np.int64))
        output = np.where(target == 255, 255, p.astype(np.int64))
        inter = int(np.count_nonzero((output == target) & (output == 1)))
        union = int(np.count_nonzero(output == 1) + np.count_nonzero(target == 1)) - inter
        ious.append(inter / (union + 1e-5) + (1.0 if union == 0 else 0.0))
        inters.append(inter)
        unions.append(union)
    return {"gIoU": float(np.mean(ious)), "cIoU": sum(inters) / (sum(unions) + 1e-10)}


def rela_reference(cases: list[tuple[bool, np.ndarray, np.ndarray]]) -> dict[str, float | None]:
    """ReLA: ``gt_nt`` is the dataset's flag, ``pred_nt`` the answer's (an empty answer here);
    no-target: IoU 1 if answered so, else 0 with U = |P ∪ G|; target: an answer of "no target"
    zeroes I, IoU = I / U (0 when U = 0), Pr@X over targets; cIoU undefined on ΣU = 0;
    N-acc and T-acc 0 when the set has no no-target sample."""
    iou_sum = inter_sum = union_sum = 0.0
    n_target = tp = fn = tn = fp = hits = 0
    for gt_nt, g, p in cases:
        pred_nt = not p.any()
        inter = int(np.count_nonzero(g & p))
        union = int(np.count_nonzero(g | p))
        if gt_nt:
            if pred_nt:
                tp += 1
                iou_sum += 1
            else:
                fn += 1
                union_sum += union
        else:
            if pred_nt:
                fp += 1
                inter = 0
            else:
                tn += 1
            iou = 0.0 if union == 0 else inter / union
            iou_sum += iou
            inter_sum += inter
            union_sum += union
            n_target += 1
            hits += iou >= 0.7
    n = len(cases)
    empty = tp + fn
    return {
        "gIoU": iou_sum / n,
        "cIoU": inter_sum / union_sum if union_sum else None,
        "Pr@0.7": hits / n_target if n_target else None,
        "T-acc": tn / (tn + fp) if empty else 0.0,
        "N-acc": tp / (tp + fn) if empty else 0.0,
    }


def reasoner_reference(
    cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, skip_empty: bool
) -> dict[str, float]:
    """VisionReasoner (and Seg-Zero, ``skip_empty``): the ground truth is the target and ignore
    pixels together; I and U by logical and/or; a sample with U = 0 scores 0 (Seg-Zero: left
    out); gIoU the mean, cIoU ΣI / ΣU (0 when ΣU = 0)."""
    ious, inters, unions = [], [], []
    for g, p, ign in cases:
        truth = g | ign
        inter = int(np.count_nonzero(truth & p))
        union = int(np.count_nonzero(truth | p))
        if union == 0 and skip_empty:
            continue
        ious.append(inter / union if union > 0 else 0.0)
        inters.append(inter)
        unions.append(union)
    total = sum(unions)
    return {"gIoU": float(np.mean(ious)), "cIoU": sum(inters) / total if total > 0 else 0.0}


def _random_set(seed: int, n: int = 24) -> list[tuple[bool, np.ndarray, np.ndarray, np.ndarray]]:
    """``(has_target, G, P, ignore)`` cases mixing every edge case at random."""
    rng = np.random.default_rng(seed)

    def box() -> np.ndarray:
        y0, x0 = rng.integers(0, H - 2), rng.integers(0, W - 2)
        return dense((y0, rng.integers(y0 + 1, H + 1), x0, rng.integers(x0 + 1, W + 1)))

    out = []
    for _ in range(n):
        kind = rng.integers(0, 4)
        has_target = kind != 0
        g = box() if kind in (1, 2) else EMPTY  # kind 3: a listed target with no pixel
        p = box() if rng.random() < 0.7 else EMPTY
        ignore = box() & ~g if rng.random() < 0.3 else EMPTY
        out.append((has_target, g, p, ignore))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_lisa_convention_matches_lisa_formulas_on_sets(seed: int) -> None:
    cases = _random_set(seed)
    records = [
        score_sample(
            rles(g) if has else [],
            rles(p) if p.any() else [],
            H,
            W,
            ignore=masks.encode(ign) if ign.any() else None,
            convention="lisa",
        ).to_record()
        for has, g, p, ign in cases
    ]
    got = aggregate(records, convention="lisa")
    want = lisa_reference([(g, p, ign) for _, g, p, ign in cases])
    assert got["gIoU"] == pytest.approx(want["gIoU"], abs=1e-9)
    assert got["cIoU"] == pytest.approx(want["cIoU"], abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_rela_convention_matches_rela_formulas_on_sets(seed: int) -> None:
    cases = _random_set(seed)
    records = [
        score_sample(
            rles(g) if has else [], rles(p) if p.any() else [], H, W, convention="rela"
        ).to_record()
        for has, g, p, _ in cases
    ]
    got = aggregate(records, convention="rela")
    want = rela_reference([(not has, g, p) for has, g, p, _ in cases])
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize(
    ("name", "ciou", "n_acc", "t_acc"),
    [
        # cIoU with a zero total union (only empty ground truths answered empty)
        ("refseg", 1.0, 1.0, None),
        ("lisa", 0.0, 1.0, None),
        ("rela", None, 1.0, None),
    ],
)
def test_set_of_only_correct_no_target_answers(name, ciou, n_acc, t_acc) -> None:
    records = [score_sample([], [], H, W, convention=name).to_record()] * 3
    got = aggregate(records, convention=name)
    assert (got["gIoU"], got["cIoU"], got["N-acc"], got["T-acc"]) == (1.0, ciou, n_acc, t_acc)


@pytest.mark.parametrize(("name", "acc"), [("refseg", (None, 1.0)), ("lisa", (None, 1.0)),
                                           ("rela", (0.0, 0.0))])  # fmt: skip
def test_accuracies_without_no_target_samples(name, acc) -> None:
    records = [score_sample(rles(BIG), rles(SMALL), H, W, convention=name).to_record()]
    got = aggregate(records, convention=name)
    assert (got["N-acc"], got["T-acc"]) == acc


def test_unknown_convention_is_one_line() -> None:
    with pytest.raises(InputError, match="unknown convention 'deeplab'; choose one of"):
        get_convention("deeplab")
    assert set(CONVENTIONS) == set(TABLES)


@pytest.mark.parametrize("name", ["visionreasoner", "segzero"])
@pytest.mark.parametrize("seed", range(4))
def test_reasoner_conventions_match_their_formulas_on_sets(name: str, seed: int) -> None:
    cases = _random_set(seed)
    records = [
        score_sample(
            rles(g) if has else [],
            rles(p) if p.any() else [],
            H,
            W,
            ignore=masks.encode(ign) if ign.any() else None,
            convention=name,
        ).to_record()
        for has, g, p, ign in cases
    ]
    got = aggregate(records, convention=name)
    want = reasoner_reference([(g, p, ign) for _, g, p, ign in cases], skip_empty=name == "segzero")
    assert got["gIoU"] == pytest.approx(want["gIoU"], abs=1e-9)
    assert got["cIoU"] == pytest.approx(want["cIoU"], abs=1e-9)
