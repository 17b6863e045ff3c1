import json
import math

import numpy as np
import pytest

from refseg import masks
from refseg.errors import InputError
from refseg.types import Instance, Prompt, Result, clip_box


def test_clip_box_clips_and_refuses():
    assert clip_box([-5, -5, 50, 20], 40, 30) == (0.0, 0.0, 40.0, 20.0)
    for bad in ([5, 5, 1, 1], [0, 0, math.nan, 3], [50, 50, 60, 60], [3, 3, 3, 9], [1, 2, 3]):
        with pytest.raises(InputError):
            clip_box(bad, 40, 30)


def test_prompt_validation():
    assert Prompt(points=[(1, 2)]).labels == [1]
    with pytest.raises(InputError):
        Prompt()
    with pytest.raises(InputError):
        Prompt(points=[(1, 2)], labels=[1, 0])


def test_result_json_round_trip_and_union():
    a = np.zeros((6, 8), bool)
    a[1:3, 1:4] = True
    b = np.zeros((6, 8), bool)
    b[4:6, 5:8] = True
    result = Result(
        width=8,
        height=6,
        instances=[
            Instance.from_mask(a, box=[1, 1, 4, 3], points=[[2, 2]], score=0.9),
            Instance.from_mask(b, box=[5, 4, 8, 6]),
        ],
        phrase="two things",
        raw_answer="<answer>[]</answer>",
    )
    data = json.loads(result.to_json())
    assert data["image"] == {"width": 8, "height": 6}
    assert isinstance(data["instances"][0]["mask"]["counts"], str)
    back = Result.from_dict(data)
    np.testing.assert_array_equal(back.instances[0].mask, a)
    np.testing.assert_array_equal(back.union_mask(), a | b)
    assert back.phrase == "two things" and back.instances[0].points == [[2.0, 2.0]]
    with pytest.raises(InputError):
        Result.from_dict({"instances": []})


def test_point_labels_travel_beside_points():
    """Background points keep their label in the result JSON; JSON without the key (written
    before it existed) reads as all foreground; a malformed list is a one-line InputError."""
    dense = np.zeros((6, 8), bool)
    dense[1:4, 1:5] = True
    instance = Instance.from_mask(dense, points=[[2, 2], [6, 5]], point_labels=[1, 0])
    data = json.loads(Result(8, 6, [instance]).to_json())
    assert data["instances"][0]["points"] == [[2.0, 2.0], [6.0, 5.0]]
    assert data["instances"][0]["point_labels"] == [1, 0]
    assert Result.from_dict(data).instances[0].point_labels == [1, 0]
    del data["instances"][0]["point_labels"]
    assert Result.from_dict(data).instances[0].point_labels == [1, 1]
    for bad in ([1], [1, 2], "10"):
        data["instances"][0]["point_labels"] = bad
        with pytest.raises(InputError, match="point_labels"):
            Result.from_dict(data)


def test_scores_round_trip_and_keep_the_written_score() -> None:
    """``scores`` holds each source; ``score`` is what the JSON says (results written before
    scores existed have no ``scores``: all sources null)."""
    rle = masks.encode(np.ones((4, 5), bool))
    instance = Instance(rle, box=[0, 0, 5, 4], score=0.7)
    assert instance.scores == {"grounder": None, "segmenter": None}
    back = Instance.from_dict(instance.to_dict())
    assert back.score == pytest.approx(0.7) and back.scores == instance.scores
    instance.set_scores(grounder=0.5, segmenter=0.8)
    assert instance.score == pytest.approx(0.4)  # the product of the sources that exist
    assert Instance(rle, scores={"segmenter": 0.8}).scores["grounder"] is None
    lone = Instance(rle)
    lone.set_scores(grounder=None, segmenter=0.8)
    assert lone.score == pytest.approx(0.8)
    lone.set_scores(segmenter=None)
    assert lone.score == 1.0  # no source at all
    back = Instance.from_dict(instance.to_dict())
    assert back.score == pytest.approx(0.4) and back.scores == {"grounder": 0.5, "segmenter": 0.8}
    instance.set_scores(segmenter=1.02)  # a predicted IoU a little over 1 is clipped
    assert instance.scores["segmenter"] == 1.0
    with pytest.raises(InputError, match="unknown score source"):
        instance.set_scores(detector=0.5)
    with pytest.raises(InputError, match="scores"):
        Result.from_dict(
            {
                "image": {"width": 5, "height": 4},
                "instances": [{**instance.to_dict(), "scores": [0.5]}],
            }
        )
