"""The prompt, the image tokens and the answers with the real Qwen3 tokenizer and the real image
processor settings: what tiny models (a 700-token vocabulary, 4-64 image tokens) cannot check.

No weights are needed here (the tokenizer and the processor are the whole question); the
real-size models themselves run in ``tests/realsize/`` (``scripts/test_engines.sh``).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from refseg.grounding.coords import Convention, from_pixels, smart_resize, to_grounding
from refseg.grounding.qwen import build_messages
from refseg.protocol import format_answer, parse_answer
from refseg.testing.real_size import MODELS, SPECIAL_IDS, real_processor, real_tokenizer

FAMILIES = {"qwen3-vl-2b": "norm1000", "qwen2.5-vl-3b": "resized"}


@pytest.fixture(scope="module")
def tokenizer():
    return real_tokenizer()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def processor(request):
    return request.param, real_processor(request.param)


def test_special_tokens_are_single_ids(tokenizer) -> None:
    for token, expected in SPECIAL_IDS.items():
        assert tokenizer(token, add_special_tokens=False).input_ids == [expected], token
    # Qwen writes one token per digit: what makes coordinates expensive
    assert len(tokenizer("1000", add_special_tokens=False).input_ids) == 4


def _prompt(processor, answer: str = "box", think: bool = False) -> str:
    messages = build_messages(None, "the man in red", think=think, coords="norm1000", answer=answer)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (2400, 100), (90, 1300)])
def test_image_tokens_are_the_grid_over_four(processor, size) -> None:
    name, proc = processor
    facts = MODELS[name]["processor"]
    factor = facts["patch_size"] * 2
    batch = proc(text=[_prompt(proc)], images=[Image.new("RGB", size)], return_tensors="np")
    (t, gh, gw) = batch["image_grid_thw"][0]
    image_tokens = int((batch["input_ids"] == SPECIAL_IDS["<|image_pad|>"]).sum())
    assert t == 1 and image_tokens == gh * gw // 4
    # the frame refseg's coordinate conversion assumes is the one the processor made
    h, w = smart_resize(size[1], size[0], factor, facts["min_pixels"], facts["max_pixels"])
    assert (gw * facts["patch_size"], gh * facts["patch_size"]) == (w, h)
    assert facts["min_pixels"] <= w * h <= facts["max_pixels"]
    if size == (640, 480) and name == "qwen3-vl-2b":
        assert image_tokens == 300  # the figure the README's timings are for


@pytest.mark.parametrize("bounds", [(256 * 28 * 28, 512 * 28 * 28), (4 * 32 * 32, 64 * 32 * 32)])
def test_pixel_bounds_are_respected(bounds) -> None:
    low, high = bounds
    proc = real_processor("qwen2.5-vl-3b", min_pixels=low, max_pixels=high)
    for size in [(4000, 3000), (20, 20), (640, 480)]:
        batch = proc(text=[_prompt(proc)], images=[Image.new("RGB", size)], return_tensors="np")
        _, gh, gw = batch["image_grid_thw"][0]
        assert low <= gh * gw * 14 * 14 <= high


def test_special_tokens_of_the_prompt_survive_the_template(processor) -> None:
    name, proc = processor
    ids = proc.tokenizer(_prompt(proc, think=True)).input_ids
    for token in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"):
        assert ids.count(SPECIAL_IDS[token]) == 1, token
    turns = 3 if MODELS[name]["default_system"] else 2  # (system,) user, the assistant's start
    assert ids.count(SPECIAL_IDS["<|im_start|>"]) == turns


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (333, 1201)])
def test_a_real_answer_maps_back_to_its_pixels(tokenizer, name, size) -> None:
    """A GT box and point, written as the model writes them (its own coordinates), tokenized
    and decoded by the real tokenizer, read by the parser and converted back: the pixels come
    back within the model's rounding, in both conventions."""
    width, height = size
    facts = MODELS[name]["processor"]
    kind = FAMILIES[name]
    convention = (
        Convention("norm1000")
        if kind == "norm1000"
        else Convention(
            "resized", facts["min_pixels"], facts["max_pixels"], facts["patch_size"] * 2
        )
    )
    rng = np.random.default_rng(sum(size))
    for _ in range(20):
        x1, x2 = sorted(rng.uniform(0, width, 2))
        y1, y2 = sorted(rng.uniform(0, height, 2))
        if x2 - x1 < 4 or y2 - y1 < 4:
            continue
        point = ((x1 + x2) / 2, (y1 + y2) / 2)
        box, points = from_pixels((x1, y1, x2, y2), [point], convention, width, height)
        text = format_answer([(box, points)])
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert 20 <= len(ids) <= 60  # a box + point answer: tens of tokens, one per digit
        back = tokenizer.decode(ids)
        grounding = to_grounding(parse_answer(back), convention, width, height)
        (instance,) = grounding.instances
        frame_w, frame_h = convention.frame(width, height)
        unit = max(width / frame_w, height / frame_h)  # one model unit in pixels
        assert instance.box == pytest.approx((x1, y1, x2, y2), abs=unit)
        assert instance.points[0] == pytest.approx(point, abs=unit)
