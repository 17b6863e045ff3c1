"""Scoring conventions: how refseg and other projects' evaluation code settle the edge cases.

On ordinary samples every referring-segmentation evaluation computes the same IoU. They part on
the edge cases: a sample whose listed target covers no pixel, pixels the dataset marks "ignore",
a set whose total union is empty. Published numbers are only comparable with refseg's when those
choices match, so each choice is a field here, and ``refseg eval --convention NAME`` scores a run
the way that project's code does (the README's conventions table says what each one does and
where the code is).

* ``refseg`` (the default): the dataset says which samples have a target (gRefCOCO's
  ``no_target`` flag, else whether it lists a mask), so the number of target samples is the
  dataset's, whatever the pixels; ignore regions are excluded as in LISA; undefined set-level
  values are ``None`` instead of a number that could be mistaken for a score.
* ``lisa`` (LISA's ``validate`` and ``intersectionAndUnionGPU``): the pixels decide (an empty
  ground truth is "no target"), ignore pixels (index 255) are excluded, the per-sample IoU is
  ``I / (U + 1e-5)`` with 1 for an empty union and the cIoU ``ΣI / (ΣU + 1e-10)``.
* ``rela`` (ReLA's ``ReferEvaluator``, gRefCOCO's reference): the dataset's ``empty`` flag
  decides, a listed target that covers no pixel scores 0 and counts in Pr@X and T-acc, the code
  has no ignore label (ignore pixels are background), the cIoU of an all-empty set is undefined
  and N-acc/T-acc are 0 on a set without no-target samples.
* ``visionreasoner`` (VisionReasoner's ``evaluation_segmentation.py`` and ``calculate_iou.py``):
  the pixels decide, an empty union scores IoU 0 (a correct "no target" too), ignore pixels are
  target pixels (its ReasonSeg data casts the ignore label 255 to true), cIoU 0 when ΣU = 0.
* ``segzero`` (Seg-Zero's ``evaluation.py`` and ``calculate_iou.py``): as VisionReasoner, but a
  sample whose ground truth and answer are both empty is left out of the set altogether (its
  scorer returns one value where two are unpacked, and the error handler skips the sample).

Failures (no readable answer) score as refseg scores them under every convention: none of these
codes has a failure that is not a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

from refseg.errors import InputError


@dataclass(frozen=True)
class Convention:
    """The choices one evaluation code makes on the edge cases.

    Attributes:
        name: what ``--convention`` calls it.
        target_by_area: a sample has a target when its ground truth has pixels (LISA); otherwise
            the dataset's flag or list of masks decides (refseg, ReLA).
        ignore: what pixels of ``meta.ignore`` are: ``"exclude"``d from G and P before
            counting (refseg, LISA), ``"background"`` as in code without an ignore label (ReLA),
            or ``"target"`` pixels (Seg-Zero's and VisionReasoner's ReasonSeg data).
        no_target_hit_iou: the IoU of a no-target sample answered empty (1 almost everywhere;
            VisionReasoner 0); ``None`` leaves the sample out of every metric (Seg-Zero).
        iou_epsilon: added to each sample's union in its IoU (LISA: 1e-5).
        ciou_epsilon: added to the total union in the cIoU (LISA: 1e-10).
        ciou_if_no_union: the cIoU when the total union is 0 (only empty ground truths answered
            empty); ``None`` for undefined.
        acc_without_no_target: N-acc and T-acc on a set without no-target samples (ReLA reports
            0 for both); ``None`` keeps refseg's definitions (N-acc undefined, T-acc computed).
    """

    name: str
    target_by_area: bool
    ignore: str = "exclude"
    no_target_hit_iou: float | None = 1.0
    iou_epsilon: float = 0.0
    ciou_epsilon: float = 0.0
    ciou_if_no_union: float | None = 1.0
    acc_without_no_target: float | None = None


REFSEG = Convention("refseg", target_by_area=False)
LISA = Convention(
    "lisa",
    target_by_area=True,
    iou_epsilon=1e-5,
    ciou_epsilon=1e-10,
    ciou_if_no_union=0.0,
)
RELA = Convention(
    "rela",
    target_by_area=False,
    ignore="background",
    ciou_if_no_union=None,
    acc_without_no_target=0.0,
)
VISIONREASONER = Convention(
    "visionreasoner",
    target_by_area=True,
    ignore="target",
    no_target_hit_iou=0.0,
    ciou_if_no_union=0.0,
)
SEGZERO = Convention(
    "segzero",
    target_by_area=True,
    ignore="target",
    no_target_hit_iou=None,
    ciou_if_no_union=0.0,
)

#: Every convention by name; ``refseg`` is the default.
CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (REFSEG, LISA, RELA, VISIONREASONER, SEGZERO)
}
DEFAULT_CONVENTION = REFSEG.name


def get_convention(name: str | Convention | None) -> Convention:
    """The convention called ``name`` (``None``: refseg's), or a one-line :class:`InputError`."""
    if isinstance(name, Convention):
        return name
    if name is None:
        return REFSEG
    found = CONVENTIONS.get(str(name).strip().lower())
    if found is None:
        raise InputError(
            f"unknown convention {str(name)[:40]!r}; choose one of {', '.join(CONVENTIONS)}"
        )
    return found
