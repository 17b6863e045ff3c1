"""Grounders: vision-language models that turn a phrase into boxes and points."""

from __future__ import annotations

from refseg.errors import InputError
from refseg.grounding.base import GroundedInstance, Grounder, Grounding

DEFAULT_GROUNDER = "qwen3-vl:Qwen/Qwen3-VL-2B-Instruct"

__all__ = ["DEFAULT_GROUNDER", "GroundedInstance", "Grounder", "Grounding", "load_grounder"]


def load_grounder(spec: str = DEFAULT_GROUNDER, **options) -> Grounder:
    """Build a grounder from a spec string.

    Specs: ``qwen3-vl:ID``, ``qwen2.5-vl:ID`` (transformers; ``ID`` is a hub id or a local
    folder) and ``openai:URL#MODEL`` (an OpenAI-compatible chat-completions endpoint).
    ``options`` go to the backend (``device``, ``dtype``, ``max_new_tokens``, ...).
    """
    kind, _, rest = spec.partition(":")
    if kind in ("qwen3-vl", "qwen2.5-vl") and rest:
        from refseg.grounding.qwen import QwenGrounder

        return QwenGrounder.from_pretrained(rest, family=kind, **options)
    if kind == "openai" and rest:
        from refseg.grounding.openai_api import OpenAIGrounder

        url, _, model = rest.partition("#")
        if not model:
            raise InputError(f"grounder spec {spec!r}: expected openai:URL#MODEL")
        options.pop("device", None)
        return OpenAIGrounder(url, model, **options)
    raise InputError(
        f"unknown grounder {spec!r}; use qwen3-vl:ID, qwen2.5-vl:ID or openai:URL#MODEL"
    )
