"""The VLM's own features handed to the box decoder from the grounding pass (real tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg.grounding.features import (
    FeatureCapture,
    answer_length,
    feature_bytes,
    stop_ids,
    teacher_forced,
)
from refseg.grounding.qwen import QwenGrounder

IMAGE = (np.random.default_rng(0).random((100, 150, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_vl_dir):
    return QwenGrounder.from_pretrained(tiny_qwen3_vl_dir, family="qwen3-vl", max_new_tokens=6)


@pytest.fixture(scope="module")
def qwen25(tiny_qwen25_vl_dir):
    return QwenGrounder.from_pretrained(tiny_qwen25_vl_dir, family="qwen2.5-vl", max_new_tokens=6)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_features_come_from_the_one_generate_pass(qwen3):
    visual = qwen3.model.model.visual
    calls = _count_calls(visual)
    small = IMAGE[:60, :90]
    groundings = qwen3.ground([IMAGE, small], ["the red circle", "a box"], features=["final"])
    assert calls[0] == 1  # one batch, one vision pass: no second forward for the features
    for image, grounding in zip([IMAGE, small], groundings):
        f = grounding.features
        width, height = qwen3.resized_size(image.shape[1], image.shape[0])
        assert f.input_size == (width, height)
        assert f.maps[0].shape == (128, height // 32, width // 32)
        assert f.hidden.shape == (128,) and bool(torch.isfinite(f.hidden).all())
        assert f.fingerprint == qwen3.feature_fingerprint
        assert f.nbytes == sum(m.numel() * 4 for m in f.maps) + 128 * 4
    # Two different phrases on two images: two different answer states.
    assert not torch.allclose(groundings[0].features.hidden, groundings[1].features.hidden)


def test_nothing_is_kept_unless_asked(qwen3):
    grounding = qwen3.ground([IMAGE], ["the red circle"])[0]
    assert grounding.features is None
    # The hooks are gone after a features pass: a later plain pass records nothing.
    capture = FeatureCapture(qwen3.model, ["final"])
    with capture:
        pass
    qwen3.ground([IMAGE], ["the red circle"])
    assert capture.prefill is None and not capture.steps


def test_qwen3_block_taps_are_in_raster_order(qwen3):
    """The tapped block output, merged by the model's own DeepStack merger, is the DeepStack
    feature: the per-token reshape of the tap keeps the model's token order."""
    f = qwen3.ground([IMAGE], ["x"], features=["block1", "deepstack0", "final"])[0].features
    visual = qwen3.model.model.visual
    tokens = f.maps[0].flatten(1).T  # (h * w, 4 * vision hidden)
    with torch.no_grad():
        merged = visual.deepstack_merger_list[0](tokens.reshape(-1, 128))
        final = visual.merger(tokens.reshape(-1, 128))
    assert torch.allclose(merged.T.reshape(f.maps[1].shape), f.maps[1], atol=1e-5)
    assert torch.allclose(final.T.reshape(f.maps[2].shape), f.maps[2], atol=1e-5)


def test_qwen25_block_taps_are_put_back_in_raster_order(qwen25):
    """Qwen2.5-VL's blocks run in window order; merging the reordered tap must give the final
    (raster-order) output. The 150x100 image spans two attention windows, so a missing
    reorder fails this."""
    f = qwen25.ground([IMAGE], ["x"], features=["block1", "final"])[0].features
    assert f.maps[1].shape[-1] * 28 > 112  # more than one window across
    visual = qwen25.model.model.visual
    tokens = f.maps[0].flatten(1).T
    with torch.no_grad():
        final = visual.merger(tokens.reshape(-1, 128))
    assert torch.allclose(final.T.reshape(f.maps[1].shape), f.maps[1], atol=1e-5)


def test_teacher_forcing_gives_the_generate_pass_answer_state(qwen3):
    """Training reads features with the answer forced; they must equal what generation gave."""
    batch = qwen3.prepare([IMAGE], ["the red circle"])
    with torch.inference_mode():
        out = qwen3.model.generate(**batch, generation_config=qwen3._generation_config())
    new = out[0, batch["input_ids"].shape[1] :].tolist()
    n = answer_length(new, stop_ids(qwen3))
    generated = qwen3.ground([IMAGE], ["the red circle"], features=["deepstack0", "final"])[0]
    forced = teacher_forced(qwen3, [IMAGE], ["the red circle"], [new[:n]], ["deepstack0", "final"])
    assert torch.allclose(forced[0].hidden, generated.features.hidden, atol=1e-4)
    for a, b in zip(forced[0].maps, generated.features.maps):
        assert torch.allclose(a, b, atol=1e-5)


def test_answer_length():
    assert answer_length([5, 6, 2, 7], {2}) == 2
    assert answer_length([5, 6, 7], {2}) == 2  # cut by the token limit: the last is not fed back
    assert answer_length([2], {2}) == 0


def test_memory_per_image_from_the_real_2b_shapes(qwen3):
    real_2b = {
        "model_type": "qwen3_vl",
        "text_config": {"hidden_size": 2048},
        "vision_config": {
            "out_hidden_size": 2048,
            "hidden_size": 1024,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "deepstack_visual_indexes": [5, 11, 17],
        },
    }
    # 1024x1024 -> 32x32 merged tokens x 4 sources x 2048 channels, bfloat16: 16 MiB (+ 4 KiB).
    assert feature_bytes(real_2b, 1024, 1024) == (4 * 2048 * 32 * 32 + 2048) * 2
    # The same formula on the tiny model agrees with what it really holds.
    width, height = qwen3.resized_size(150, 100)
    f = qwen3.ground([IMAGE], ["x"], features=["deepstack0", "final"])[0].features
    assert feature_bytes(qwen3.model.config, width, height, 4) == f.nbytes
