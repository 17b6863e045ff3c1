"""``Result.to_supervision()`` and ``from_supervision`` against the real supervision package."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.errors import InputError
from refseg.types import Instance, Prompt, Result

sv = pytest.importorskip("supervision")

from refseg.interop.supervision import from_supervision, to_supervision  # noqa: E402


def _two_instances() -> Result:
    first = np.zeros((30, 40), dtype=bool)
    first[2:10, 3:12] = True
    second = np.zeros((30, 40), dtype=bool)
    second[15:28, 20:39] = True
    a = Instance.from_mask(first, box=[3, 2, 12, 10], points=[[7, 6]], score=0.9)
    b = Instance.from_mask(second, box=None, points=[[25, 20]], score=0.4, label="right cup")
    b.path = "M20 15L39 15L39 28L20 28Z"
    return Result(width=40, height=30, instances=[a, b], phrase="the cups")


def test_two_instances_become_two_detections_and_their_boxes_come_back() -> None:
    result = _two_instances()
    detections = result.to_supervision()
    assert isinstance(detections, sv.Detections) and len(detections) == 2
    assert detections.mask.shape == (2, 30, 40) and detections.mask.dtype == bool
    np.testing.assert_array_equal(detections.mask[0], result.instances[0].mask)
    np.testing.assert_array_equal(detections.mask[1], result.instances[1].mask)
    # the given box, and for the points-only instance the mask's tight box in pixel edges
    np.testing.assert_allclose(detections.xyxy, [[3, 2, 12, 10], [20, 15, 39, 28]])
    np.testing.assert_allclose(detections.confidence, [0.9, 0.4], rtol=1e-6)
    assert detections.class_id.tolist() == [0, 0]
    assert detections.data["class_name"].tolist() == ["the cups", "right cup"]
    assert detections.data["phrase"].tolist() == ["the cups", "the cups"]
    assert detections.data["path"].tolist() == [None, "M20 15L39 15L39 28L20 28Z"]
    assert detections.metadata == {
        "width": 40, "height": 30, "phrase": "the cups", "no_target": False,
    }  # fmt: skip
    # supervision's own operations keep refseg's data aligned (indexing, area)
    assert detections[1:].data["path"].tolist() == ["M20 15L39 15L39 28L20 28Z"]
    assert detections.area.tolist() == [72, 247]
    # ... and an annotator draws them
    drawn = sv.MaskAnnotator().annotate(np.zeros((30, 40, 3), np.uint8), detections)
    assert drawn[5, 5].any() and not drawn[0, 0].any()

    prompts = from_supervision(detections)
    assert [p.box for p in prompts] == [(3.0, 2.0, 12.0, 10.0), (20.0, 15.0, 39.0, 28.0)]
    assert all(isinstance(p, Prompt) and not p.points for p in prompts)
    assert to_supervision(result).xyxy.tolist() == detections.xyxy.tolist()


def test_empty_results_are_empty_detections_with_the_image_size() -> None:
    for result in (
        Result(width=40, height=30, no_target=True, phrase="a unicorn"),
        Result(width=7, height=5),
    ):
        detections = result.to_supervision(class_id=3)
        assert len(detections) == 0
        assert detections.mask.shape == (0, result.height, result.width)
        assert detections.mask.dtype == bool
        assert detections.xyxy.shape == (0, 4) and detections.confidence.shape == (0,)
        assert detections.metadata["no_target"] is result.no_target
        assert "path" not in detections.data
        assert from_supervision(detections) == []


def test_from_supervision_clips_to_the_image_and_refuses_bad_boxes() -> None:
    detections = sv.Detections(xyxy=np.array([[-5.0, 2.0, 50.0, 20.0]]))
    (prompt,) = from_supervision(detections, width=40, height=30)
    assert prompt.box == (0.0, 2.0, 40.0, 20.0)
    with pytest.raises(InputError, match="no area inside the 40x30 image"):
        from_supervision(sv.Detections(xyxy=np.array([[50.0, 2, 60, 20]])), width=40, height=30)
    with pytest.raises(InputError, match=r"detection 1: box .* inverted"):
        from_supervision(sv.Detections(xyxy=np.array([[0.0, 0, 5, 5], [9, 9, 3, 12]])))
    infinite = sv.Detections(xyxy=np.array([[0.0, 0, 5, 5]]))
    infinite.xyxy = np.array([[0.0, 0, np.inf, 5]])  # supervision checks only at construction
    with pytest.raises(InputError, match="non-finite"):
        from_supervision(infinite)
    with pytest.raises(InputError, match="both width and height"):
        from_supervision(detections, width=40)
    with pytest.raises(InputError, match=r"expected supervision\.Detections"):
        from_supervision([[0, 0, 5, 5]])


def test_more_boxes_than_the_prompt_limit_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("REFSEG_MAX_PROMPTS", "2")
    boxes = sv.Detections(xyxy=np.array([[0.0, 0, 5, 5]] * 3))
    with pytest.raises(InputError, match="3 prompts"):
        from_supervision(boxes)
