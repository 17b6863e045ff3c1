"""The box-guided mask decoder: sizes from the real Qwen3-VL configs, forward/backward, stages."""

from __future__ import annotations

import pytest
import torch

from refseg.errors import InputError
from refseg.segmentation.boxdec import (
    BoxDecConfig,
    BoxDecoder,
    box_gate,
    count_parameters,
    vision_sources,
    vlm_fingerprint,
)

# The fields of the published Qwen3-VL-{2B,4B,8B}-Instruct config.json files the decoder reads.
_QWEN3_VL = {
    "2B": {"text": 2048, "layers": 28, "depth": 24, "vh": 1024, "deep": [5, 11, 17]},
    "4B": {"text": 2560, "layers": 36, "depth": 24, "vh": 1024, "deep": [5, 11, 17]},
    "8B": {"text": 4096, "layers": 36, "depth": 27, "vh": 1152, "deep": [8, 16, 24]},
}


def _real_config(size: str) -> dict:
    f = _QWEN3_VL[size]
    return {
        "model_type": "qwen3_vl",
        "text_config": {
            "hidden_size": f["text"],
            "num_hidden_layers": f["layers"],
            "vocab_size": 151936,
        },
        "vision_config": {
            "depth": f["depth"],
            "hidden_size": f["vh"],
            "out_hidden_size": f["text"],
            "patch_size": 16,
            "spatial_merge_size": 2,
            "deepstack_visual_indexes": f["deep"],
        },
    }


def _meta_count(vlm_config: dict, **overrides) -> int:
    with torch.device("meta"):
        return count_parameters(BoxDecoder(BoxDecConfig.from_vlm_config(vlm_config, **overrides)))


def test_parameter_counts_of_the_real_configs():
    counts = {size: _meta_count(_real_config(size)) for size in _QWEN3_VL}
    # The paper: 17M on the 4B base (~0.4%); the defaults are sized for that.
    assert 15e6 < counts["4B"] < 19e6, counts
    assert abs(counts["4B"] / 4.4e9 - 0.004) < 0.001
    # Only the projections from the text width grow with the model.
    assert counts["2B"] < counts["4B"] < counts["8B"] < 25e6, counts


def test_width_and_depth_set_the_size():
    base = _meta_count(_real_config("4B"))
    assert (
        _meta_count(_real_config("4B"), depth=1) < base < _meta_count(_real_config("4B"), depth=4)
    )
    assert _meta_count(_real_config("4B"), width=256) < base
    assert _meta_count(_real_config("4B"), sources=["final"]) < base


def test_sources_of_each_family():
    assert [n for n, _ in vision_sources(_real_config("4B"))] == [
        "deepstack0",
        "deepstack1",
        "deepstack2",
        "final",
    ]
    qwen25 = {
        "model_type": "qwen2_5_vl",
        "text_config": {"hidden_size": 2048},
        "vision_config": {
            "hidden_size": 1280,
            "out_hidden_size": 2048,
            "spatial_merge_size": 2,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "patch_size": 14,
        },
    }
    assert vision_sources(qwen25) == [
        ("block7", 5120),
        ("block15", 5120),
        ("block23", 5120),
        ("final", 2048),
    ]
    assert BoxDecConfig.from_vlm_config(qwen25).patch == 28
    with pytest.raises(InputError, match=r"Qwen3-VL or Qwen2\.5-VL"):
        vision_sources({"model_type": "llava", "text_config": {}, "vision_config": {}})
    with pytest.raises(InputError, match="unknown vision source"):
        BoxDecConfig.from_vlm_config(_real_config("2B"), sources=["deepstack7"])


def test_fingerprint_tells_configs_apart():
    assert vlm_fingerprint(_real_config("2B")) == vlm_fingerprint(_real_config("2B"))
    assert vlm_fingerprint(_real_config("2B")) != vlm_fingerprint(_real_config("4B"))


def _tiny(**overrides) -> BoxDecConfig:
    settings = dict(width=32, depth=1, heads=4, mlp_ratio=2.0, pixel_channels=16, fourier=4)
    settings.update(overrides)
    return BoxDecConfig(sources=["d0", "final"], source_dims=[24, 40], text_dim=20, **settings)


def _inputs(batch: int = 2, h: int = 3, w: int = 4):
    torch.manual_seed(0)
    feats = [torch.randn(batch, 24, h, w), torch.randn(batch, 40, h, w)]
    image = torch.randn(batch, 3, h * 32, w * 32)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.5, 0.0, 1.0, 0.4]])[:batch]
    return feats, image, boxes, torch.randn(batch, 20)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"multiscale": False}, {"pixel_fusion": False}, {"refine_rounds": 0}, {"depth": 2}],
)
def test_forward_backward_on_a_tiny_config(overrides):
    decoder = BoxDecoder(_tiny(**overrides))
    feats, image, boxes, hidden = _inputs()
    logits, iou = decoder(feats, image, boxes, hidden)
    assert logits.shape == (2, 1, 24, 32)  # a quarter of the 96x128 input
    assert iou.shape == (2,) and bool(((iou > 0) & (iou < 1)).all())
    (logits.mean() + iou.sum()).backward()
    grads = {n: p.grad for n, p in decoder.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    # Every stage that is on receives gradient (the injection weights of unused sources aside).
    for name in ("query.text.weight", "mask_mlp.0.weight", "blocks.0.mlp.0.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    if overrides.get("pixel_fusion", True):
        assert grads["pixel.net.0.weight"].abs().sum() > 0
    if overrides.get("multiscale", True):
        assert grads["inject.proj.0.weight"].abs().sum() > 0
    else:
        assert grads["inject.proj.0.weight"] is None


def test_the_box_and_the_answer_state_change_the_mask():
    decoder = BoxDecoder(_tiny()).eval()
    feats, image, boxes, hidden = _inputs()
    with torch.no_grad():
        base = decoder(feats, image, boxes, hidden)[0]
        moved = decoder(feats, image, boxes.flip(0), hidden)[0]
        other = decoder(feats, image, boxes, hidden.flip(0))[0]
    assert not torch.allclose(base, moved)
    assert not torch.allclose(base, other)


def test_it_learns_a_mask_inside_the_box():
    """A few Adam steps fit one target: the stages are wired so that the loss can fall."""
    decoder = BoxDecoder(_tiny())
    feats, image, boxes, hidden = _inputs()
    target = (box_gate(boxes, 24, 32, 0.0, 200.0) > 0.5).float()
    optimiser = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        logits, _ = decoder(feats, image, boxes, hidden)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_box_gate_is_one_inside_and_falls_off_outside():
    gate = box_gate(torch.tensor([[0.25, 0.25, 0.75, 0.75]]), 40, 40, 0.15, 20.0)[0, 0]
    assert gate[20, 20] > 0.95
    assert gate[0, 0] < 0.1
    # The box grown by 15% per side: the edge (gate 0.5) lies 0.075 of the image outside.
    row = gate[20]
    edge = (row > 0.5).nonzero()
    assert abs(edge.min().item() / 40 - (0.25 - 0.075)) < 0.05


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"width": 30}, "multiple of 8"),
        ({"heads": 0}, "heads"),
        ({"refine_rounds": 9}, r"0\.\.8"),
        ({"width": 10**9}, "4096"),
        ({"mlp_ratio": "x"}, "number"),
    ],
)
def test_bad_configs_are_one_line_errors(overrides, message):
    with pytest.raises(InputError, match=message):
        _tiny(**overrides)
