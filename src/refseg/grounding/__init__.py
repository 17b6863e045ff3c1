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
    "default_answer",
    "load_grounder",
    "set_answer",
]


def default_answer(spec: str | None) -> str:
    """The answer kind a grounder spec gives when ``--answer`` is not set: ``path`` for
    ``moondream:`` (its API only answers outlines), ``box`` for the others. Lets the CLI record
    what a run really asks for before the grounder is loaded."""
    return "path" if isinstance(spec, str) and spec.startswith("moondream:") else "box"


def set_answer(grounder: Grounder, answer: str | None) -> None:
    """Make ``grounder`` ask for ``box`` or ``path`` answers (``--answer``; None keeps the
    grounder's own default).

    Every grounder reads path answers whatever it asked for; this only changes the prompt.
    Grounders that always answer one way (a fixed API) refuse the other with one line.
    """
    from refseg.protocol import ANSWERS

    if answer is None:
        return
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
    folder), ``openai:URL#MODEL[;coords=CONVENTION][;timeout=S][;retries=N]`` (an
    OpenAI-compatible chat-completions endpoint; ``coords`` is ``norm1000`` (default),
    ``pixels`` or ``resized[:min_pixels=N,max_pixels=N]`` for Qwen2.5-VL servers) and
    ``moondream:URL[;frame=box|image][;timeout=S][;retries=N]`` (Moondream's segment API,
    :mod:`refseg.grounding.moondream`; it takes none of ``options``).
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
    if kind == "moondream" and rest:
        from refseg.grounding.moondream import MoondreamGrounder

        url, *pairs = rest.split(";")
        chosen: dict = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or key not in _MOONDREAM_OPTIONS:
                raise InputError(
                    f"grounder spec {spec!r}: unknown option {pair!r}; "
                    f"use {', '.join(k + '=...' for k in _MOONDREAM_OPTIONS)}"
                )
            try:
                chosen[key] = _MOONDREAM_OPTIONS[key](value)
            except ValueError:
                raise InputError(f"grounder spec {spec!r}: {key} needs a number") from None
        return MoondreamGrounder(url, **chosen)
    raise InputError(
        f"unknown grounder {spec!r}; use qwen3-vl:ID, qwen2.5-vl:ID, openai:URL#MODEL or "
        "moondream:URL"
    )


#: Options of ``moondream:URL;frame=box;timeout=30;retries=3;concurrency=4;model=NAME``; the
#: in-process options callers pass (device, dtype, ...) mean nothing to the API and are dropped.
_MOONDREAM_OPTIONS = {
    "frame": str,
    "timeout": float,
    "retries": int,
    "concurrency": int,
    "model": str,
}
