"""Reward functions: edge cases of every component, in TRL's call signature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refseg import masks
from refseg.errors import InputError
from refseg.segmentation.base import Embedding, MaskPrediction
from refseg.train import rewards as R

W, H = 200, 100


def answer(items, think: str | None = None) -> str:
    body = f"<answer>{json.dumps(items)}</answer>"
    return body if think is None else f"<think>{think}</think>{body}"


def rect_mask(x1, y1, x2, y2, w=W, h=H) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def norm(box):
    """Pixel box -> 0-1000 grid of the W x H image."""
    x1, y1, x2, y2 = box
    return [round(x1 * 1000 / W), round(y1 * 1000 / H), round(x2 * 1000 / W), round(y2 * 1000 / H)]


def norm_pt(x, y):
    return [round(x * 1000 / W), round(y * 1000 / H)]


GT_A = (20, 20, 60, 60)  # pixels
GT_B = (120, 30, 180, 90)


def columns(gt_boxes_per_row, n=None):
    n = n or len(gt_boxes_per_row)
    return {
        "width": [W] * n,
        "height": [H] * n,
        "gt_boxes": [[list(map(float, b)) for b in row] for row in gt_boxes_per_row],
        "gt_masks": [
            [masks.encode(rect_mask(*b))["counts"] for b in row] for row in gt_boxes_per_row
        ],
    }


def inst(box, point=None):
    item = {"bbox_2d": norm(box)}
    cx, cy = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if point is None else point
    item["point_2d"] = norm_pt(cx, cy)
    return item


# --- reading completions -----------------------------------------------------------------


def test_completion_text_reads_strings_and_conversations():
    text = answer([])
    assert R.completion_text(text) == text
    assert R.completion_text([{"role": "assistant", "content": text}]) == text
    parts = [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "<answer>"},
                {"type": "text", "text": "[]</answer>"},
            ],
        }
    ]
    assert R.completion_text(parts) == "<answer>[]</answer>"
    assert R.completion_text(None) == ""


def test_conversational_and_string_completions_score_the_same():
    cols = columns([[GT_A]] * 2)
    good = answer([inst(GT_A)])
    strings = R.accuracy_reward(None, [good, good], **cols)
    convo = R.accuracy_reward(None, [[{"role": "assistant", "content": good}]] * 2, **cols)
    assert strings == convo == [1.0, 1.0]


# --- format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "think", "expected"),
    [
        (answer([]), False, 1.0),
        (answer([], think="look"), True, 1.0),
        (answer([], think="look"), False, 0.0),  # reasoning when told not to
        (answer([]), True, 0.0),  # no reasoning when asked
        ("[]", False, 0.0),  # no tags
        ("<answer>[]", False, 0.0),  # unclosed
        ("sure! " + answer([]), False, 0.0),  # prose outside the tags
        ("<answer>not json</answer>", False, 0.0),
        ("<think>a</think><answer>[{'bbox_2d': [1, 2, 3, 4]}]</answer>", True, 1.0),
    ],
)
def test_format_reward(text, think, expected):
    assert R.format_reward(None, [text], think=think) == [expected]


def test_format_strict_refuses_repairs_and_logs_rate():
    logged = {}
    text = "<answer>[{'bbox_2d': [1, 2, 3, 4]}]</answer>"
    assert R.format_reward(None, [text], think=False) == [1.0]
    out = R.format_reward(
        None, [text, answer([])], think=False, strict=True, log_metric=logged.__setitem__
    )
    assert out == [0.0, 1.0]
    assert logged["format_rate"] == 0.5


# --- validity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], 1.0),
        ([{"bbox_2d": [10, 10, 500, 500], "point_2d": [100, 100]}], 1.0),
        ([{"bbox_2d": [10, 10, 500, 1200], "point_2d": [100, 100]}], 0.0),  # outside the image
        ([{"bbox_2d": [500, 10, 10, 500], "point_2d": [100, 100]}], 0.0),  # inverted
        ([{"bbox_2d": [10, 10, 500, 500], "point_2d": [600, 100]}], 0.0),  # point outside box
        ([{"bbox_2d": [10, 10, 500, 500]}], 0.0),  # no point
        (
            [
                {"bbox_2d": [10, 10, 500, 500], "point_2d": [100, 100]},
                {"bbox_2d": [10, 10, 500, 500], "point_2d": [900, 100]},
            ],
            0.5,
        ),
    ],
)
def test_validity(items, expected):
    assert R.validity_reward(None, [answer(items)], width=[W], height=[H]) == [expected]


def test_validity_of_unreadable_answer_is_zero():
    assert R.validity_reward(None, ["<answer>[{]</answer>"], width=[W], height=[H]) == [0.0]


# --- accuracy ----------------------------------------------------------------------------


def test_accuracy_perfect_and_order_free():
    cols = columns([[GT_A, GT_B]] * 2)
    texts = [answer([inst(GT_A), inst(GT_B)]), answer([inst(GT_B), inst(GT_A)])]
    assert R.accuracy_reward(None, texts, **cols) == [1.0, 1.0]


def test_accuracy_extra_and_missing_both_cost():
    one_gt = columns([[GT_A]])
    two_gt = columns([[GT_A, GT_B]])
    extra = R.accuracy_reward(None, [answer([inst(GT_A), inst(GT_B)])], **one_gt)
    missing = R.accuracy_reward(None, [answer([inst(GT_A)])], **two_gt)
    assert extra == [0.5]
    assert missing == [0.5]


def test_accuracy_criteria_each_count_a_third():
    cols = columns([[GT_A]])
    # point outside the GT mask, box exact
    off_point = R.accuracy_reward(None, [answer([inst(GT_A, point=(21, 21))])], **cols)
    inside = R.accuracy_reward(None, [answer([inst(GT_A, point=(40, 40))])], **cols)
    assert inside == [1.0]
    # (21, 21) is inside the mask; a point in the box corner but outside a smaller mask:
    ring = np.zeros((H, W), dtype=bool)
    ring[20:60, 20:60] = True
    ring[30:50, 30:50] = False
    ring_cols = dict(cols, gt_masks=[[masks.encode(ring)["counts"]]])
    hole = R.accuracy_reward(None, [answer([inst(GT_A, point=(40, 40))])], **ring_cols)
    assert hole == [pytest.approx(2 / 3)]
    assert off_point == [1.0]
    # box shifted: IoU still > 0.5 but L1 too large
    shifted = (26, 26, 66, 66)
    s = R.accuracy_reward(None, [answer([inst(shifted, point=(40, 40))])], **cols)
    assert s == [pytest.approx(2 / 3)]
    # box far away: nothing but nothing
    far = R.accuracy_reward(None, [answer([inst(GT_B)])], **cols)
    assert far == [0.0]


def test_accuracy_no_target_cases_and_metric():
    logged = {}
    cols = columns([[], [], [GT_A]])
    texts = [answer([]), answer([inst(GT_A)]), answer([])]
    out = R.accuracy_reward(None, texts, log_metric=logged.__setitem__, **cols)
    assert out == [1.0, 0.0, 0.0]
    assert logged["no_target_accuracy"] == 0.5


def test_accuracy_unreadable_is_zero_even_on_no_target():
    cols = columns([[], [GT_A]])
    assert R.accuracy_reward(None, ["garbage", "<answer>[</answer>"], **cols) == [0.0, 0.0]


def test_accuracy_without_masks_uses_the_box_for_points():
    cols = columns([[GT_A]])
    del cols["gt_masks"]
    assert R.accuracy_reward(None, [answer([inst(GT_A)])], **cols) == [1.0]


def test_missing_column_is_reported():
    with pytest.raises(KeyError, match="gt_boxes"):
        R.accuracy_reward(None, [answer([])], width=[W], height=[H])


def test_hungarian_beats_greedy():
    # Greedy (first prediction takes its best GT) would pair the wide box with A and leave B
    # unmatched; the optimal assignment scores both.
    a, b = (20, 20, 60, 60), (50, 20, 90, 60)
    wide = (20, 20, 75, 60)  # IoU with a 0.73, with b 0.45
    cols = columns([[a, b]])
    text = answer([inst(wide, point=(55, 40)), inst(a, point=(30, 30))])
    score = R.accuracy_reward(None, [text], **cols)[0]
    # wide -> b (point inside b, box L1 and IoU fail) and a -> a (perfect): (1/3 + 1) / 2
    assert score == pytest.approx((1 / 3 + 1) / 2)


# --- no target, repetition ---------------------------------------------------------------


def test_no_target_reward():
    cols = columns([[], [], [GT_A], [GT_A]])
    texts = [answer([]), answer([inst(GT_A)]), answer([]), answer([inst(GT_B)])]
    assert R.no_target_reward(None, texts, **cols) == [1.0, 0.0, 0.0, 1.0]


def test_non_repetition():
    loop = "<think>" + "the red square " * 30 + "</think>" + answer([inst(GT_A)])
    fine = "<think>the red square is left of the blue circle near the top</think>" + answer(
        [inst(GT_A)]
    )
    dup = answer([inst(GT_A), inst(GT_A)])
    out = R.non_repetition_reward(None, [loop, fine, dup], width=[W] * 3, height=[H] * 3)
    assert out[0] < 0.2
    assert out[1] == 1.0
    assert out[2] == 0.5


# --- segmenter in the loop ----------------------------------------------------------------


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


# --- configuration ------------------------------------------------------------------------


def test_build_rewards_drops_zero_weights_and_names_functions():
    funcs, weights = R.build_rewards({"format": 0.5, "accuracy": 1.0, "validity": 0}, think=False)
    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in funcs] == ["format_reward", "accuracy_reward"]
    assert weights == [0.5, 1.0]


def test_build_rewards_refuses_unknown_and_all_zero():
    with pytest.raises(InputError, match="unknown reward"):
        R.build_rewards({"acuracy": 1.0}, think=False)
    with pytest.raises(InputError, match="zero"):
        R.build_rewards({"format": 0.0}, think=False)
