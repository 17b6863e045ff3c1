import json
import math

import numpy as np
import pytest

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
