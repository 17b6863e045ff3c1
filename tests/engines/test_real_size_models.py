"""Qwen3-VL-2B at its published size (random weights, the real tokenizer and image settings):
the transformers grounder answers a 640x480 image through refseg's whole path, and the heads
that read the VLM's own features get maps of the real widths on the real grid."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.grounding import load_grounder
from refseg.testing.real_size import build_real_size
from refseg.vlm_features import vision_sources

PHRASE = "the man in red on the left"


@pytest.fixture(scope="module")
def qwen3_vl_2b(tmp_path_factory):
    folder = build_real_size(tmp_path_factory.mktemp("real") / "qwen3-vl-2b", "qwen3-vl-2b")
    return load_grounder(f"qwen3-vl:{folder}", max_new_tokens=4)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_the_real_size_grounder_answers_through_refseg(qwen3_vl_2b, image) -> None:
    batch = qwen3_vl_2b.prepare([image], [PHRASE])
    assert int((batch["input_ids"] == 151655).sum()) == 300  # 640x480 -> 15 x 20 merged tokens
    assert qwen3_vl_2b.model.num_parameters() > 2_000_000_000
    (grounding,) = qwen3_vl_2b.ground([image], [PHRASE])
    # random weights write noise: read as an answer or as unreadable, never an exception
    assert grounding.parse_error is not None or grounding.no_target or grounding.instances
    assert isinstance(grounding.raw_answer, str)


def test_feature_heads_get_the_real_widths(qwen3_vl_2b, image) -> None:
    import torch

    from refseg.grounding.features import vision_features
    from refseg.segmentation.boxdec import BoxDecConfig, BoxDecoder, count_parameters, prepare_image
    from refseg.segmentation.refiners import vlm_feature_grid

    sources = [name for name, _ in vision_sources(qwen3_vl_2b.model.config)]
    assert sources == ["deepstack0", "deepstack1", "deepstack2", "final"]
    (features,) = vision_features(qwen3_vl_2b, [image], sources)
    assert [tuple(m.shape) for m in features.maps] == [(2048, 15, 20)] * 4
    assert features.input_size == (640, 480)
    decoder = BoxDecoder(BoxDecConfig.from_vlm_config(qwen3_vl_2b.model.config)).eval()
    assert 10_000_000 < count_parameters(decoder) < 25_000_000
    with torch.no_grad():
        logits, iou = decoder(
            [m[None].float() for m in features.maps],
            prepare_image(image, features.input_size),
            torch.tensor([[0.2, 0.2, 0.6, 0.8]]),
            torch.zeros(1, 2048),
        )
    assert logits.shape[0] == 1 and iou.shape == (1,)
    grid = vlm_feature_grid(features.maps[-1], 480, 640)
    assert grid.shape == (1, 2048, 64, 64) and grid[:, :, 48:].max() == 0  # padding rows


def test_qwen25_vl_3b_at_real_size(tmp_path) -> None:
    """Qwen2.5-VL-3B (bf16, random weights): its 28-pixel grid, pixel-frame answers and the
    windowed tower's full-attention blocks as the box decoder's sources."""
    from refseg.grounding.features import vision_features

    folder = build_real_size(tmp_path / "qwen2.5-vl-3b", "qwen2.5-vl-3b")
    grounder = load_grounder(f"qwen2.5-vl:{folder}", dtype="bfloat16", max_new_tokens=4)
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert grounder.convention.kind == "resized" and grounder.factor == 28
    assert grounder.resized_size(640, 480) == (644, 476)
    batch = grounder.prepare([image], [PHRASE])
    assert int((batch["input_ids"] == 151655).sum()) == 23 * 17
    (grounding,) = grounder.ground([image], [PHRASE])
    assert grounding.parse_error is not None or grounding.no_target or grounding.instances
    sources = [name for name, _ in vision_sources(grounder.model.config)]
    assert sources == ["block7", "block15", "block23", "final"]
    (features,) = vision_features(grounder, [image], sources)
    widths = [m.shape[0] for m in features.maps]
    assert widths == [5120, 5120, 5120, 2048] and features.maps[0].shape[1:] == (17, 23)
