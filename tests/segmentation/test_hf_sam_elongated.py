"""``sam:``/``sam2:`` on images more elongated than twice the model input (the short side of
SAM's resize rounds to 0 there), with the tiny models of ``test_hf_sam``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from refseg.segmentation import load_segmenter
from refseg.types import Prompt
from tests.segmentation.test_hf_sam import SIZE, folders  # noqa: F401


@pytest.mark.parametrize("family", ["sam", "sam2"])
@pytest.mark.parametrize("shape", [(1, 2 * SIZE + 1), (4 * SIZE, 1)])
def test_elongated_images_segment(folders, family, shape):  # noqa: F811
    segmenter = load_segmenter(f"{family}:{folders[family]}", device="cpu")
    height, width = shape
    image = np.full((height, width, 3), 120, np.uint8)
    embedding = segmenter.embed(image)
    prompts = [Prompt(box=(0.0, 0.0, float(width), float(height))), Prompt(points=[(0.0, 0.0)])]
    predictions = segmenter.predict(embedding, prompts)
    assert [p.mask.shape for p in predictions] == [(height, width)] * 2
