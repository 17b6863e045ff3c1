"""The response's PNGs and masks within a memory bound: the overlay at a capped size, masks
predicted in groups and kept as RLE."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.segmentation.base import Embedding, MaskPrediction
from refseg.serve import outputs
from refseg.types import Instance, Result, build_prompts


class BoxFiller:
    """A segmenter whose mask is its box, recording the size of each call's prompt group."""

    name = "box-filler"

    def __init__(self) -> None:
        self.groups: list[int] = []

    def embed(self, image: np.ndarray) -> Embedding:
        height, width = image.shape[:2]
        return Embedding(height=height, width=width, data=None, backend=self.name)

    def predict(self, embedding, prompts, *, refine=None):
        self.groups.append(len(prompts))
        out = []
        for prompt in prompts:
            mask = np.zeros((embedding.height, embedding.width), bool)
            x1, y1, x2, y2 = (int(v) for v in prompt.box)
            mask[y1:y2, x1:x2] = True
            out.append(MaskPrediction(mask=mask, score=0.5))
        return out


@pytest.mark.parametrize(
    ("size", "boxes", "groups"),
    [
        ((64, 48), 5, [5]),  # small images: one call, as before
        ((4000, 4000), 5, [4, 1]),  # 16 MP: 4 masks (64 MP) a call
    ],
)
def test_predict_lean_groups_prompts_and_keeps_only_rle(size, boxes, groups, monkeypatch):
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    segmenter = BoxFiller()
    prompts = build_prompts([[i, i, i + 10, i + 20] for i in range(boxes)], [], width, height)
    result = outputs.predict_lean(
        segmenter, image, prompts, embedding=segmenter.embed(image), refine=None
    )
    assert segmenter.groups == groups
    assert [i.area for i in result.instances] == [200] * boxes
    assert all(i._dense is None for i in result.instances)  # nothing dense left behind
    assert result.instances[2].box == [2.0, 2.0, 12.0, 22.0]
    assert result.instances[0].score == 0.5
    assert "predict_s" in result.timings


def test_release_mask_keeps_everything_but_the_dense_mask():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    full = Instance.from_mask(
        mask, box=[3, 2, 9, 5], points=[[4, 3], [1, 1]], point_labels=[1, 0], score=0.7, label="x"
    )
    full.path = "M 3 2 L 9 2 L 9 5 Z"
    before = full.to_dict()
    lean = full.release_mask()
    assert lean._dense is None
    assert lean.to_dict() == before
    assert np.array_equal(lean.mask, mask)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_overlay_of_a_small_image_is_full_size():
    image = np.full((40, 60, 3), 90, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 10:40] = True
    result = Result(width=60, height=40, instances=[Instance.from_mask(mask, box=[10, 10, 40, 30])])
    assert _decode(outputs.overlay_png(image, result)).shape == (40, 60, 3)


def test_overlay_of_a_large_image_is_drawn_at_the_cap_with_masks_and_boxes_scaled():
    width, height = 3000, 2000
    image = np.full((height, width, 3), 90, np.uint8)
    mask = np.zeros((height, width), bool)
    mask[500:1500, 1500:2700] = True
    instance = Instance(masks.encode(mask), box=[1500, 500, 2700, 1500], points=[[2000, 1000]])
    result = Result(width=width, height=height, instances=[instance])
    overlay = _decode(outputs.overlay_png(image, result, max_pixels=600 * 400))
    assert overlay.shape == (400, 600, 3)
    tinted = np.abs(overlay.astype(int) - 90).sum(axis=2) > 30
    # The tint covers the scaled mask (300..540 x 100..300) and little outside it.
    inside = tinted[110:290, 310:530].mean()
    outside = tinted[:, :280].mean()
    assert inside > 0.95 and outside < 0.01, (inside, outside)
    assert instance._dense is None  # the full-size mask was decoded for the overlay only
