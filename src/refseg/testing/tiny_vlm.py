"""Tiny, randomly initialised Qwen-VL checkpoints of the real architectures, built offline.

Tests and the training proof need a model that goes through exactly the code a real checkpoint
goes through (``from_pretrained``, the processor's image-placeholder expansion, M-RoPE, the
vision tower, ``generate``) but loads in a second and trains on two CPU cores. The hub is not
reachable from tests, so everything is made here: a byte-level BPE tokenizer trained on a small
corpus of the answer protocol (with the Qwen special tokens at the end of the vocabulary), a
Qwen-style chat template, the PIL image processor, and a randomly initialised
``Qwen3VLForConditionalGeneration`` or ``Qwen2_5_VLForConditionalGeneration``.

The saved folder has the same files a hub checkpoint has, so ``QwenGrounder.from_pretrained``,
``AutoModelForImageTextToText.from_pretrained`` and
:func:`refseg.grounding.qwen.load_processor` read it like any other checkpoint.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

from refseg.errors import InputError

__all__ = ["FAMILY_DEFAULTS", "build_tiny_vlm", "chat_template", "tokenizer_corpus"]

#: Per-family facts of the real checkpoints that the tiny ones keep: vision patch size, the
#: image normalisation, the rope base, and whether the chat template adds a default system turn.
FAMILY_DEFAULTS: dict[str, dict] = {
    "qwen3-vl": {
        "patch_size": 16,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rope_theta": 5_000_000.0,
        "default_system": None,
    },
    "qwen2.5-vl": {
        "patch_size": 14,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "rope_theta": 1_000_000.0,
        "default_system": "You are a helpful assistant.",
    },
}

# The Qwen special tokens, in the order the real vocabularies have them, then the reasoning and
# answer tags (added, not special, so ``skip_special_tokens`` decoding keeps them, as in Qwen3).
_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2's pre-tokenisation split: digits are single tokens, as in the real models.
_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple", "grey", "pink"]
_SHAPES = ["circle", "square", "triangle", "rectangle", "star", "disk", "box", "ring"]
_WORD_TEXT = (
    "the a an of on in at to left right top bottom middle center small large big biggest "
    "smallest near next behind front person man woman dog cat car bus tree chair table cup "
    "bottle image picture object objects there is are it this that which one two three first "
    "second nothing matches no match I see look find located position above below corner edge "
    "so answer"
)
_WORDS = _WORD_TEXT.split()


def tokenizer_corpus(extra: tuple[str, ...] = ()) -> list[str]:
    """The deterministic text the tiny tokenizer is trained on.

    It covers the prompt (:func:`refseg.protocol.build_prompt` in every mode), canonical answers
    with random coordinates, short reasoning, and colour/shape phrases, so that answers encode
    to few tokens; any other text still encodes (byte-level BPE), only less compactly.
    """
    from refseg.protocol import build_prompt, format_answer

    rng = random.Random(1234)
    lines: list[str] = ["You are a helpful assistant.", "system", "user", "assistant"]
    phrases = [f"the {c} {s}" for c in _COLOURS for s in _SHAPES]
    for i, phrase in enumerate(phrases):
        coords = "norm1000" if i % 2 else "pixels"
        lines.append(build_prompt(phrase, think=bool(i % 3 == 0), coords=coords))
    for _ in range(300):
        n = rng.choice([0, 1, 1, 1, 2, 3])
        instances = []
        for _ in range(n):
            x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
            x2, y2 = rng.randint(x1 + 1, 1000), rng.randint(y1 + 1, 1000)
            instances.append(((x1, y1, x2, y2), [((x1 + x2) // 2, (y1 + y2) // 2)]))
        reasoning = None
        if rng.random() < 0.5:
            words = rng.sample(_WORDS, 8)
            reasoning = f"{rng.choice(phrases)} is {' '.join(words)}."
        lines.append(format_answer(instances, reasoning=reasoning))
    lines.extend(" ".join(rng.sample(_WORDS, 10)) for _ in range(100))
    lines.extend(extra)
    return lines


@functools.lru_cache(maxsize=8)
def _trained_bpe(vocab_size: int, extra: tuple[str, ...]) -> tuple[dict[str, int], list]:
    """Train the byte-level BPE once per process (it is deterministic for a given corpus)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(extra), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _build_tokenizer(vocab_size: int, extra: tuple[str, ...]):
    from transformers import Qwen2Tokenizer

    vocab, merges = _trained_bpe(vocab_size, extra)
    vocab = dict(vocab)
    for token in _SPECIAL + _TAGS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _SPECIAL})
    tokenizer.add_tokens(_TAGS)
    ids = tokenizer.convert_tokens_to_ids(_SPECIAL + _TAGS)
    if ids != [vocab[t] for t in _SPECIAL + _TAGS]:  # guards the placement above
        raise RuntimeError(f"special tokens were renumbered: {ids}")
    return tokenizer


def chat_template(default_system: str | None) -> str:
    """A Qwen-style chat template (images as ``<|vision_start|><|image_pad|><|vision_end|>``).

    Content may be a string or a list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}``
    parts, as in the real Qwen-VL templates; Qwen2.5-VL adds a default system turn, Qwen3-VL
    does not.
    """
    system = ""
    if default_system is not None:
        system = (
            "{%- if messages and messages[0]['role'] != 'system' -%}"
            "{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' -}}"
            "{%- endif -%}"
        )
    return (
        system + "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
        "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
        "{%- elif part['type'] == 'video' or 'video' in part -%}"
        "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
        "{%- elif 'text' in part -%}{{- part['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def build_tiny_vlm(
    folder: str | Path,
    *,
    family: str = "qwen3-vl",
    seed: int = 0,
    text_hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 32,
    intermediate: int | None = None,
    vision_hidden: int = 128,
    vision_depth: int = 2,
    vision_heads: int = 4,
    patch_size: int | None = None,
    merge: int = 2,
    vocab_size: int = 1024,
    extra_corpus: tuple[str, ...] = (),
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Path:
    """Build and save a tiny randomly initialised Qwen-VL checkpoint in ``folder``; return it.

    Args:
        family: ``qwen3-vl`` (patch 16, interleaved M-RoPE, DeepStack) or ``qwen2.5-vl``
            (patch 14, windowed vision attention, pixel-space answers).
        seed: the weights' seed; the tokenizer does not depend on it.
        text_hidden, layers, heads, kv_heads, head_dim, intermediate: the language model
            (``intermediate`` defaults to ``4 * text_hidden``). ``head_dim`` must be a multiple
            of 8 (M-RoPE splits half of it over time, height and width).
        vision_hidden, vision_depth, vision_heads, patch_size, merge: the vision tower
            (``patch_size`` defaults to the family's real one: 16 or 14).
        vocab_size: BPE merges budget before the special tokens are added; the trained
            vocabulary is smaller when the corpus runs out of pairs.
        extra_corpus: more lines for the tokenizer to learn (e.g. a training set's phrases).
        min_pixels, max_pixels: the image processor's resize bounds; the defaults keep an image
            between 4 and 64 visual tokens so tests stay fast.

    The folder then holds ``config.json``, ``model.safetensors``, ``generation_config.json``,
    the tokenizer files, ``chat_template.jinja``, ``preprocessor_config.json`` and
    ``processor_config.json`` naming the stock processor class of the family.
    """
    if family not in FAMILY_DEFAULTS:
        raise InputError(f"unknown tiny VLM family {family!r}; use qwen3-vl or qwen2.5-vl")
    if head_dim % 8:
        raise InputError(f"head_dim must be a multiple of 8 for M-RoPE, got {head_dim}")
    if heads % kv_heads:
        raise InputError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")

    import torch
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from refseg.grounding.qwen import processor_class

    facts = FAMILY_DEFAULTS[family]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    patch = patch_size or facts["patch_size"]
    factor = patch * merge
    min_pixels = min_pixels if min_pixels is not None else 4 * factor * factor
    max_pixels = max_pixels if max_pixels is not None else 64 * factor * factor

    tokenizer = _build_tokenizer(vocab_size, tuple(extra_corpus))
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=2,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        image_mean=facts["image_mean"],
        image_std=facts["image_std"],
    )
    processor = processor_class(family)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template(facts["default_system"]),
    )

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIAL}
    config = _model_config(
        family,
        vocab=len(tokenizer),
        text_hidden=text_hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate or 4 * text_hidden,
        vision_hidden=vision_hidden,
        vision_depth=vision_depth,
        vision_heads=vision_heads,
        patch=patch,
        merge=merge,
        ids=ids,
    )
    save_random_model(folder, config, processor, ids, family, seed=seed, dtype=torch.float32)
    return folder


def save_random_model(
    folder: Path,
    config: Any,
    processor: Any,
    ids: dict[str, int],
    family: str,
    *,
    seed: int,
    dtype: Any,
) -> None:
    """Save a randomly initialised model of ``config`` with greedy generation settings and
    ``processor`` into ``folder``, named like a hub checkpoint (tiny and real-size folders)."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    _name_stock_processor(folder, family)


def _model_config(
    family: str,
    *,
    vocab: int,
    text_hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    vision_hidden: int,
    vision_depth: int,
    vision_heads: int,
    patch: int,
    merge: int,
    ids: dict[str, int],
):
    """The family's real config class with tiny sizes (M-RoPE sections scaled to ``head_dim``)."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    facts = FAMILY_DEFAULTS[family]
    half = head_dim // 2
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    text = {
        "vocab_size": vocab,
        "hidden_size": text_hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    vision = {
        "depth": vision_depth,
        "hidden_size": vision_hidden,
        "intermediate_size": 4 * vision_hidden,
        "num_heads": vision_heads,
        "patch_size": patch,
        "spatial_merge_size": merge,
        "temporal_patch_size": 2,
        "out_hidden_size": text_hidden,
    }
    if family == "qwen3-vl":
        # Real Qwen3-VL: sections [24, 20, 20] of a 64-wide half head, interleaved.
        t = half - 2 * (half * 20 // 64)
        section = [t, (half - t) // 2, (half - t) // 2]
        text.update(
            head_dim=head_dim,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": facts["rope_theta"],
                "mrope_section": section,
                "mrope_interleaved": True,
            },
        )
        vision.update(
            hidden_act="gelu_pytorch_tanh",
            num_position_embeddings=256,
            deepstack_visual_indexes=[vision_depth - 1],
        )
        return Qwen3VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=True, **token_ids
        )
    if text_hidden != heads * head_dim:
        raise InputError(
            f"qwen2.5-vl needs text_hidden == heads * head_dim ({heads} * {head_dim}), "
            f"got {text_hidden}"
        )
    # Real Qwen2.5-VL: sections [16, 24, 24] of a 64-wide half head.
    t = half // 4
    section = [t, (half - t) // 2, half - t - (half - t) // 2]
    text.update(
        rope_parameters={
            "rope_type": "default",
            "rope_theta": facts["rope_theta"],
            "mrope_section": section,
        }
    )
    vision.update(
        hidden_act="silu",
        window_size=patch * merge * 4,
        fullatt_block_indexes=[vision_depth - 1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True, **token_ids
    )


def _name_stock_processor(folder: Path, family: str) -> None:
    """Record the stock processor class, as a hub checkpoint does.

    The folder is saved through refseg's image-only processor; naming the stock class keeps
    the folder interchangeable with a real checkpoint (``AutoProcessor`` on a machine with
    torchvision builds the stock processor from it).
    """
    stock = {"qwen3-vl": "Qwen3VLProcessor", "qwen2.5-vl": "Qwen2_5_VLProcessor"}[family]
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if "processor_class" in data or name == "processor_config.json":
            data["processor_class"] = stock
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def teach_answer(grounder: Any, image: Any, phrase: str, answer: str, *, steps: int = 300) -> float:
    """Overfit a (tiny) grounder to answer ``answer`` for ``(image, phrase)``; returns the loss.

    Tests use this to get a model that *really* emits a known answer through the real generate,
    parse and conversion path, instead of patching any of it. Stops early once the loss is below
    0.01. The grounder's model is left in eval mode, ready to ``save_pretrained``.
    """
    import torch

    batch = grounder.prepare([image], [phrase])
    tokenizer = grounder.processor.tokenizer
    target = tokenizer(answer + "<|im_end|>", add_special_tokens=False, return_tensors="pt")
    ids = torch.cat([batch["input_ids"], target.input_ids], dim=1)
    inputs = dict(batch)
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    # transformers 5: M-RoPE needs mm_token_type_ids for every position; answer tokens are text.
    inputs["mm_token_type_ids"] = torch.cat(
        [batch["mm_token_type_ids"], torch.zeros_like(target.input_ids)], dim=1
    )
    labels = ids.clone()
    labels[:, : batch["input_ids"].shape[1]] = -100
    model = grounder.model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_value = float("inf")
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss_value = loss.item()
        if loss_value < 0.01:
            break
    model.eval()
    return loss_value
