"""Mask rewards (:mod:`refseg.train.rewards.masks`): the segmenter in the loop, and the
Hungarian-matched rasterized mask IoU and boundary IoU of path answers."""

from __future__ import annotations

import numpy as np
import pytest

from refseg import masks
from refseg.segmentation.base import Embedding, MaskPrediction
from refseg.train import rewards as R
from tests.train.rewards.helpers import (
    GT_A,
    H,
    W,
    answer,
    columns,
    inst,
    iou,
    path_inst,
    rect_mask,
)


class BoxSegmenter:
    """A stand-in segmenter: the mask of a prompt is its box (counts embeddings)."""

    name = "box"

    def __init__(self):
        self.embeds = 0

    def embed(self, image):
        self.embeds += 1
        return Embedding(height=image.shape[0], width=image.shape[1], data=None, backend="box")

    def predict(self, embedding, prompts, *, refine=None):
        out = []
        for p in prompts:
            m = np.zeros((embedding.height, embedding.width), dtype=bool)
            x1, y1, x2, y2 = (round(v) for v in p.box)
            m[y1:y2, x1:x2] = True
            out.append(MaskPrediction(mask=m, score=1.0))
        return out


def test_segmenter_reward_scores_iou_and_embeds_once_per_image():
    seg = BoxSegmenter()
    reward = R.SegmenterReward(seg)
    image_a = np.zeros((H, W, 3), dtype=np.uint8)
    image_b = np.full((H, W, 3), 7, dtype=np.uint8)
    half = (20, 20, 40, 60)  # half of GT_A
    texts = [answer([inst(GT_A)]), answer([inst(half, point=(30, 40))]), answer([]), "junk"]
    cols = columns([[GT_A]] * 4)
    out = reward(None, texts, image=[image_a] * 4, **cols)
    assert out[0] == pytest.approx(1.0, abs=0.03)
    assert out[1] == pytest.approx(0.5, abs=0.03)
    assert out[2:] == [0.0, 0.0]
    assert seg.embeds == 1
    # a second group on the same image reuses the cached embedding; a new image embeds once
    reward(None, texts[:1], image=[image_a], **columns([[GT_A]]))
    reward(None, texts[:2], image=[image_b] * 2, **columns([[GT_A]] * 2))
    assert seg.embeds == 2


def test_segmenter_reward_no_target():
    reward = R.SegmenterReward(BoxSegmenter())
    image = np.zeros((H, W, 3), dtype=np.uint8)
    out = reward(None, [answer([]), answer([inst(GT_A)])], image=[image] * 2, **columns([[], []]))
    assert out == [1.0, 0.0]


def test_segmenter_reward_with_real_sam(sam, coco_sample, coco_instances):
    """GenSeg-R1-G with the real ONNX SAM: a GT box answer scores a high mask IoU."""
    from refseg.image import load_image

    # the largest single (non-crowd) object; crowd annotations cover many people at once
    ann = max(
        (a for a in coco_instances["annotations"] if not a.get("iscrowd")), key=lambda a: a["area"]
    )
    image_info = next(i for i in coco_instances["images"] if i["id"] == ann["image_id"])
    image = load_image(coco_sample / "images" / image_info["file_name"])
    h, w = image.shape[:2]
    seg = ann["segmentation"]
    rle = masks.normalize(seg) if isinstance(seg, dict) else masks.from_polygons(seg, h, w)
    x, y, bw, bh = ann["bbox"]
    box = [x, y, x + bw, y + bh]
    from refseg.train.data import interior_point

    px, py = interior_point(masks.decode(rle))
    item = {
        "bbox_2d": [
            round(box[0] * 1000 / w),
            round(box[1] * 1000 / h),
            round(box[2] * 1000 / w),
            round(box[3] * 1000 / h),
        ],
        "point_2d": [round(px * 1000 / w), round(py * 1000 / h)],
    }
    wrong = {"bbox_2d": [0, 0, 50, 50], "point_2d": [25, 25]}
    reward = R.SegmenterReward(sam)
    cols = {"width": [w] * 2, "height": [h] * 2, "gt_masks": [[rle], [rle]]}
    out = reward(None, [answer([item]), answer([wrong])], image=[image] * 2, **cols)
    assert out[0] > 0.6
    assert out[1] < 0.1
    assert reward.embed_calls == 1


# --- path answers: rasterized masks ------------------------------------------------------------


def test_exact_outline_scores_one_and_extra_instances_are_normalised_by_max():
    gt = (20, 20, 60, 60)
    exact = answer([path_inst(*gt)])
    extra = answer([path_inst(*gt), path_inst(120, 10, 180, 90)])
    scores = R.mask_iou_reward([None] * 2, [exact, extra], **columns([[gt], [gt]]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.5)  # one perfect match over max(2 preds, 1 gt)
    missing = R.mask_iou_reward([None], [exact], **columns([[gt, (120, 10, 180, 90)]]))
    assert missing[0] == pytest.approx(0.5)


def test_hungarian_beats_greedy_best_first_pairing():
    # GT a and b side by side; pred P spans both (its best overlap is with b), pred Q lies
    # inside b only. Best-first pairing takes P-b, leaving Q-a = 0; the optimum is P-a + Q-b.
    a, b = (0, 0, 80, 50), (80, 0, 200, 50)
    p, q = (0, 0, 190, 50), (80, 0, 140, 50)
    gts = [rect_mask(*a), rect_mask(*b)]
    preds = [rect_mask(*p), rect_mask(*q)]
    m = np.array([[iou(x, g) for g in gts] for x in preds])
    greedy_first = np.unravel_index(np.argmax(m), m.shape)
    greedy = m[greedy_first] + m[1 - greedy_first[0], 1 - greedy_first[1]]
    best = max(m[0, 0] + m[1, 1], m[0, 1] + m[1, 0])
    assert best > greedy + 0.2  # the case is one where the two differ
    both = answer([path_inst(*p), path_inst(*q)])
    (score,) = R.mask_iou_reward([None], [both], **columns([[a, b]]))
    assert score == pytest.approx(best / 2, abs=0.02)
    assert score > greedy / 2 + 0.1


def test_boundary_iou_separates_outlines_that_mask_iou_barely_does():
    # Two predictions with similar mask IoU on a big object: one shrunk evenly by 2 px all
    # round (its edge misses the band), one exact but with a notch: boundary IoU tells them apart.
    gt = (20, 10, 180, 90)
    shrunk = answer([path_inst(23, 13, 177, 87)])
    exact = answer([path_inst(*gt)])
    c = columns([[gt], [gt]])
    m = R.mask_iou_reward([None] * 2, [shrunk, exact], **c)
    b = R.boundary_iou_reward([None] * 2, [shrunk, exact], boundary_ratio=0.01, **c)
    assert m[0] > 0.85
    assert b[1] == pytest.approx(1.0) and b[0] < 0.5


def test_no_target_and_unreadable_answers():
    gt = (20, 20, 60, 60)
    c = columns([[], [], [gt]])
    comps = [answer([]), answer([path_inst(*gt)]), "nonsense"]
    assert R.mask_iou_reward([None] * 3, comps, **c) == [1.0, 0.0, 0.0]
    assert R.boundary_iou_reward([None] * 3, comps, **c) == [1.0, 0.0, 0.0]
    assert R.no_target_reward([None] * 3, comps, **c) == [1.0, 0.0, 0.0]


def test_reduced_raster_scale_stays_close_to_full_resolution():
    rng = np.random.default_rng(0)
    gt = (40, 20, 150, 80)
    comps = []
    for _ in range(8):
        jit = rng.integers(-8, 9, size=4)
        comps.append(answer([path_inst(*(np.array(gt) + jit).tolist())]))
    c = columns([[gt]] * 8)
    full = R.mask_iou_reward([None] * 8, comps, **c)
    half = R.mask_iou_reward([None] * 8, comps, scale=0.5, **c)
    assert max(abs(a - b) for a, b in zip(full, half)) < 0.03
    assert len(set(np.round(full, 3))) > 1  # the jitter does change the score
