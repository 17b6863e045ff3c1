"""Qwen-VL grounders on transformers (work in progress: processor loading first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from refseg.errors import InputError

FAMILIES = ("qwen3-vl", "qwen2.5-vl")


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """:class:`Qwen3VLProcessor` without a video processor.

    The stock class requires a video processor, and merely type-checking one needs torchvision;
    refseg only ever sends images, so this keeps the exact image/text behaviour (placeholder
    expansion, ``mm_token_type_ids``) and drops the video half.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """:class:`Qwen2_5_VLProcessor` without a video processor (see the Qwen3-VL one)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


_PROCESSORS = {"qwen3-vl": ImageOnlyQwen3VLProcessor, "qwen2.5-vl": ImageOnlyQwen2_5_VLProcessor}


def processor_class(family: str) -> type:
    """The image-only processor class for ``family``."""
    return _PROCESSORS[family]


def load_processor(
    source: str | Path,
    *,
    family: str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    **hub: Any,
):
    """The image-only processor of a Qwen-VL checkpoint (hub id or folder).

    Assembled from the checkpoint's tokenizer, its image processor settings read through the
    PIL image processor (no torchvision needed) and its chat template. ``min_pixels`` /
    ``max_pixels`` override the checkpoint's resize bounds. ``hub`` goes to ``from_pretrained``
    (``local_files_only``, ``revision``, ``cache_dir``).
    """
    if family not in _PROCESSORS:
        raise InputError(f"unknown Qwen-VL family {family!r}; use {' or '.join(FAMILIES)}")
    tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    overrides: dict[str, int] = {}
    if min_pixels is not None:
        overrides["min_pixels"] = int(min_pixels)
    if max_pixels is not None:
        overrides["max_pixels"] = int(max_pixels)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(source, **overrides, **hub)
    return _PROCESSORS[family](
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=getattr(tokenizer, "chat_template", None),
    )
