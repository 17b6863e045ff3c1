"""The tiny offline Qwen-VL checkpoints load and run through the real transformers classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from refseg.grounding.qwen import load_processor  # noqa: E402
from refseg.protocol import build_prompt, format_answer  # noqa: E402
from refseg.testing.tiny_vlm import build_tiny_vlm  # noqa: E402

FAMILIES = {
    "qwen3-vl": ("tiny_qwen3_vl_dir", "Qwen3VLForConditionalGeneration", 16),
    "qwen2.5-vl": ("tiny_qwen25_vl_dir", "Qwen2_5_VLForConditionalGeneration", 14),
}


@pytest.fixture(params=sorted(FAMILIES))
def tiny(request) -> tuple[str, Path]:
    family = request.param
    return family, request.getfixturevalue(FAMILIES[family][0])


def _messages(phrase: str) -> list[dict]:
    text = build_prompt(phrase, think=False)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def test_folder_has_the_files_of_a_hub_checkpoint(tiny):
    family, folder = tiny
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    stock = {"qwen3-vl": "Qwen3VLProcessor", "qwen2.5-vl": "Qwen2_5_VLProcessor"}[family]
    assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == stock


def test_model_loads_as_the_real_architecture(tiny):
    family, folder = tiny
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == FAMILIES[family][1]
    assert model.config.vision_config.patch_size == FAMILIES[family][2]
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n < 5_000_000, n


def test_tokenizer_has_qwen_specials_and_single_token_tags(tiny):
    _, folder = tiny
    tok = load_processor(folder, family=tiny[0]).tokenizer
    for tag in ("<|im_start|>", "<|im_end|>", "<|image_pad|>", "<think>", "</answer>"):
        assert tok.tokenize(tag) == [tag]
    answer = format_answer([((10, 20, 300, 400), [(50, 60)])], reasoning="the red circle")
    ids = tok(answer).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == answer  # tags are not special
    assert len(ids) < len(answer) // 2  # the corpus made the protocol compact
    assert len(tok) < 2048


def test_chat_template_renders_images_the_qwen_way(tiny):
    family, folder = tiny
    proc = load_processor(folder, family=family)
    text = proc.apply_chat_template(_messages("red circle"), add_generation_prompt=True)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n") == (family == "qwen2.5-vl")


def test_processor_expands_image_tokens_and_forward_runs(tiny):
    family, folder = tiny
    proc = load_processor(folder, family=family)
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder).eval()
    image = np.random.default_rng(0).integers(0, 255, (90, 170, 3), dtype=np.uint8)
    text = proc.apply_chat_template(_messages("blue square"), add_generation_prompt=True)
    enc = proc(text=[text], images=[image], return_tensors="pt")
    grid = enc["image_grid_thw"][0]
    n_image = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_image == int(grid.prod()) // 4  # merge 2x2
    assert int(enc["mm_token_type_ids"].sum()) == n_image
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == len(proc.tokenizer)
    assert torch.isfinite(logits).all()


def test_seed_controls_weights_but_not_tokenizer(tmp_path):
    a = build_tiny_vlm(tmp_path / "a", seed=0, layers=1, vision_depth=1)
    b = build_tiny_vlm(tmp_path / "b", seed=1, layers=1, vision_depth=1)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa = transformers.AutoModelForImageTextToText.from_pretrained(a).state_dict()
    wb = transformers.AutoModelForImageTextToText.from_pretrained(b).state_dict()
    key = "model.language_model.embed_tokens.weight"
    assert not torch.equal(wa[key], wb[key])
    c = build_tiny_vlm(tmp_path / "c", seed=0, layers=1, vision_depth=1)
    wc = transformers.AutoModelForImageTextToText.from_pretrained(c).state_dict()
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_bad_sizes_are_one_line_errors(tmp_path):
    from refseg.errors import InputError

    with pytest.raises(InputError, match="family"):
        build_tiny_vlm(tmp_path, family="llava")
    with pytest.raises(InputError, match="multiple of 8"):
        build_tiny_vlm(tmp_path, head_dim=20)
