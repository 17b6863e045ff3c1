"""Grounders: vision-language models that turn a phrase into boxes and points."""

from __future__ import annotations

from refseg.errors import InputError
from refseg.grounding.base import GroundedInstance, Grounder, Grounding

DEFAULT_GROUNDER = "qwen3-vl:Qwen/Qwen3-VL-2B-Instruct"

__all__ = [
    "DEFAULT_GROUNDER",
    "GroundedInstance",
    "Grounder",
    "Grounding",
    "load_grounder",
    "set_answer",
]


def set_answer(grounder: Grounder, answer: str) -> None:
    """Make ``grounder`` ask for ``box`` or ``path`` answers (``--answer``).

    Every grounder reads path answers whatever it asked for; this only changes the prompt.
    Grounders that always answer one way (a fixed API) refuse the other with one line.
    """
    from refseg.protocol import ANSWERS

    if answer not in ANSWERS:
        raise InputError(f"unknown answer kind {answer!r}; use {' or '.join(ANSWERS)}")
    fixed = getattr(grounder, "fixed_answer", None)
    if fixed is not None and fixed != answer:
        raise InputError(f"grounder {grounder.name} always answers with a {fixed}")
    if hasattr(grounder, "answer"):
        grounder.answer = answer


#: Options the transformers backends take that mean nothing to a remote endpoint; callers such
#: as the CLI pass them regardless of the backend, so the openai grounder drops them.
_LOCAL_ONLY = (
    "device",
    "dtype",
    "batch_size",
    "top_p",
    "do_sample",
    "attn_implementation",
    "local_files_only",
    "revision",
    "min_pixels",
    "max_pixels",
)
#: Endpoint options that may ride in the spec string: ``openai:URL#MODEL;coords=pixels;timeout=30``.
_SPEC_OPTIONS = {
    "coords": ("convention", str),
    "timeout": ("timeout", float),
    "retries": ("retries", int),
    "max_tokens": ("max_tokens", int),
    "concurrency": ("concurrency", int),
}


def load_grounder(spec: str = DEFAULT_GROUNDER, **options) -> Grounder:
    """Build a grounder from a spec string.

    Specs: ``qwen3-vl:ID``, ``qwen2.5-vl:ID`` (transformers; ``ID`` is a hub id or a local
    folder) and ``openai:URL#MODEL[;coords=CONVENTION][;timeout=S][;retries=N]`` (an
    OpenAI-compatible chat-completions endpoint; ``coords`` is ``norm1000`` (default),
    ``pixels`` or ``resized[:min_pixels=N,max_pixels=N]`` for Qwen2.5-VL servers).
    ``options`` go to the backend (``device``, ``dtype``, ``max_new_tokens``, ...).
    """
    kind, _, rest = spec.partition(":")
    if kind in ("qwen3-vl", "qwen2.5-vl") and rest:
        from refseg.grounding.qwen import QwenGrounder

        return QwenGrounder.from_pretrained(rest, family=kind, **options)
    if kind == "openai" and rest:
        from refseg.grounding.openai_api import OpenAIGrounder

        url, _, fragment = rest.partition("#")
        model, *pairs = fragment.split(";")
        if not model:
            raise InputError(f"grounder spec {spec!r}: expected openai:URL#MODEL")
        for key in _LOCAL_ONLY:
            options.pop(key, None)
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or key not in _SPEC_OPTIONS:
                raise InputError(
                    f"grounder spec {spec!r}: unknown option {pair!r}; "
                    f"use {', '.join(k + '=...' for k in _SPEC_OPTIONS)}"
                )
            name, cast = _SPEC_OPTIONS[key]
            try:
                options[name] = cast(value)
            except ValueError:
                raise InputError(f"grounder spec {spec!r}: {key} needs a number") from None
        return OpenAIGrounder(url, model, **options)
    raise InputError(
        f"unknown grounder {spec!r}; use qwen3-vl:ID, qwen2.5-vl:ID or openai:URL#MODEL"
    )
