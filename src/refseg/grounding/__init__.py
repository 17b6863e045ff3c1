"""Grounders: vision-language models that turn a phrase into boxes and points."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from refseg.errors import InputError
from refseg.grounding.base import GroundedInstance, Grounder, Grounding

DEFAULT_GROUNDER = "qwen3-vl:Qwen/Qwen3-VL-2B-Instruct"
#: The default grounder where it runs on a CPU and ``refseg[openvino]`` is installed: the same
#: checkpoint exported once to OpenVINO with int8 weights (:func:`default_grounder`).
DEFAULT_CPU_GROUNDER = DEFAULT_GROUNDER + ";engine=openvino;weights=int8"
#: How every command's help names the default.
DEFAULT_GROUNDER_HELP = (
    f"default {DEFAULT_GROUNDER}; on a CPU with refseg[openvino] installed, through OpenVINO "
    "with int8 weights"
)
#: Grounder options only the transformers engine takes: given one, the default stays there.
_TRANSFORMERS_ONLY = ("dtype", "min_pixels", "max_pixels", "do_sample", "temperature")
#: The grounder spec forms, in the words every command's help and the unknown-grounder error
#: use: one constant, so that no command's help forgets a kind (``serve --help`` once left
#: out ``moondream:``).
GROUNDER_SPECS = (
    "qwen3-vl:ID[;engine=openvino;weights=int8|int4], qwen2.5-vl:ID[;...], openai:URL#MODEL "
    "or moondream:URL"
)

__all__ = [
    "DEFAULT_CPU_GROUNDER",
    "DEFAULT_GROUNDER",
    "DEFAULT_GROUNDER_HELP",
    "GROUNDER_SPECS",
    "GroundedInstance",
    "Grounder",
    "GrounderSpec",
    "Grounding",
    "default_answer",
    "default_grounder",
    "load_grounder",
    "parse_grounder_spec",
    "set_answer",
]


def default_grounder(
    device: str | None = None,
    *,
    features: bool = False,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The grounder spec used when none is named.

    Eager PyTorch is the slow way to run the 2B grounder on a CPU (a box answer ~23 s on two
    cores in fp32; through OpenVINO with int8 weights ~9 s, int4 ~6 s: the README's CPU table),
    so where the grounder would run on the CPU (``device`` cpu, or auto without a CUDA GPU) and
    ``openvino-genai`` is installed, the default is :data:`DEFAULT_CPU_GROUNDER`. int8 rather
    than int4: weight-only int8 is the near-lossless choice, and int4's effect on coordinates
    cannot be measured without trained weights. Everything else keeps :data:`DEFAULT_GROUNDER`
    on transformers: a CUDA device, a head that reads the VLM's own features (``features``,
    which the OpenVINO engine cannot give), and options only transformers takes.
    """
    if features or any((options or {}).get(key) not in (None, False) for key in _TRANSFORMERS_ONLY):
        return DEFAULT_GROUNDER
    if importlib.util.find_spec("openvino_genai") is None:
        return DEFAULT_GROUNDER
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        import torch

        return DEFAULT_GROUNDER if torch.cuda.is_available() else DEFAULT_CPU_GROUNDER
    return DEFAULT_CPU_GROUNDER if name == "cpu" else DEFAULT_GROUNDER


def default_answer(spec: str | None) -> str:
    """The answer kind a grounder spec gives when ``--answer`` is not set: ``path`` for
    ``moondream:`` (its API only answers outlines), ``box`` for the others. Lets the CLI record
    what a run really asks for before the grounder is loaded."""
    return "path" if isinstance(spec, str) and spec.startswith("moondream:") else "box"


def set_answer(grounder: Grounder, answer: str | None) -> None:
    """Make ``box`` or ``path`` the answer ``grounder`` asks for when a call names none (None
    keeps the grounder's own default). Entry points pass the answer per call instead
    (:class:`refseg.pipeline.PipelineOptions`); this sets the default of a grounder used alone.

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
    "logprobs": ("logprobs", int),
}


@dataclass(frozen=True)
class GrounderSpec:
    """A grounder spec string, read but not acted on (see :func:`parse_grounder_spec`)."""

    #: ``qwen3-vl``, ``qwen2.5-vl``, ``openai`` or ``moondream``.
    kind: str
    #: The hub id or folder (transformers kinds), or the endpoint URL (the others).
    target: str
    #: ``openai``: the served model's name; None for the other kinds.
    model: str | None = None
    #: Options written in the spec (``;key=value``), already cast, under the backend's names.
    options: dict[str, Any] = field(default_factory=dict)


def parse_grounder_spec(spec: str) -> GrounderSpec:
    """Read a grounder spec's syntax (the forms: :data:`GROUNDER_SPECS`).

    No model library is imported, nothing is loaded or contacted, so a command can refuse a typo
    in one line before it loads a segmenter, opens a dataset or starts a server; a spec that
    passes can still fail to load (a missing folder, an endpoint that does not answer).
    """
    if not isinstance(spec, str):
        raise InputError(f"a grounder spec is a string, got {type(spec).__name__}")
    kind, _, rest = spec.partition(":")
    if kind in ("qwen3-vl", "qwen2.5-vl") and rest:
        target, *pairs = rest.split(";")
        if not target:
            raise InputError(f"grounder spec {spec!r}: expected {kind}:ID")
        options = _spec_options(spec, pairs, {k: (k, str) for k in _QWEN_OPTIONS})
        engine = options.get("engine", "transformers")
        if engine not in _QWEN_OPTIONS["engine"]:
            raise InputError(
                f"grounder spec {spec!r}: engine must be "
                f"{' or '.join(_QWEN_OPTIONS['engine'])}, got {engine!r}"
            )
        if "weights" in options:
            if engine != "openvino":
                raise InputError(f"grounder spec {spec!r}: weights= goes with engine=openvino")
            if options["weights"] not in _QWEN_OPTIONS["weights"]:
                raise InputError(
                    f"grounder spec {spec!r}: weights must be "
                    f"{' or '.join(_QWEN_OPTIONS['weights'])}, got {options['weights']!r}"
                )
        return GrounderSpec(kind, target, None, options)
    if kind == "openai" and rest:
        url, _, fragment = rest.partition("#")
        model, *pairs = fragment.split(";")
        if not url or not model:
            raise InputError(f"grounder spec {spec!r}: expected openai:URL#MODEL")
        options = _spec_options(spec, pairs, _SPEC_OPTIONS)
        from refseg.grounding.openai_api import chat_completions_url

        chat_completions_url(url)  # an http(s) URL naming a host
        if "convention" in options:  # a bad one is a typo to catch now, not at the first request
            from refseg.grounding.coords import Convention

            try:
                Convention.parse(options["convention"])
            except InputError as exc:
                raise InputError(f"grounder spec {spec!r}: {exc}") from None
        return GrounderSpec(kind, url, model, options)
    if kind == "moondream" and rest:
        url, *pairs = rest.split(";")
        if not url:
            raise InputError(f"grounder spec {spec!r}: expected moondream:URL")
        options = _spec_options(
            spec, pairs, {key: (key, cast) for key, cast in _MOONDREAM_OPTIONS.items()}
        )
        from refseg.grounding.moondream import FRAMES, segment_url

        segment_url(url)  # an http(s) URL naming a host
        if options.get("frame", "box") not in FRAMES:
            raise InputError(
                f"grounder spec {spec!r}: frame must be {' or '.join(FRAMES)}, "
                f"got {options['frame']!r}"
            )
        return GrounderSpec(kind, url, None, options)
    raise InputError(f"unknown grounder {spec!r}; use {GROUNDER_SPECS}")


def _spec_options(spec: str, pairs: list[str], known: dict[str, tuple[str, type]]) -> dict:
    """``key=value`` pairs of a spec -> ``{backend name: cast value}``; unknown keys and values
    that do not cast are one line each."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in known:
            raise InputError(
                f"grounder spec {spec!r}: unknown option {pair!r}; "
                f"use {', '.join(k + '=...' for k in known)}"
            )
        name, cast = known[key]
        try:
            options[name] = cast(value)
        except ValueError:
            raise InputError(f"grounder spec {spec!r}: {key} needs a number") from None
    return options


def load_grounder(spec: str = DEFAULT_GROUNDER, **options: Any) -> Grounder:
    """Build a grounder from a spec string.

    Specs: ``qwen3-vl:ID``, ``qwen2.5-vl:ID`` (``ID`` is a hub id or a local folder; on
    transformers, or with ``;engine=openvino[;weights=int8|int4|fp16|fp32]`` exported once to
    OpenVINO and run by its GenAI pipeline, :mod:`refseg.grounding.openvino`),
    ``openai:URL#MODEL[;coords=CONVENTION][;timeout=S][;retries=N]`` (an OpenAI-compatible
    chat-completions endpoint; ``coords`` is ``norm1000`` (default), ``pixels`` or
    ``resized[:min_pixels=N,max_pixels=N]`` for Qwen2.5-VL servers) and
    ``moondream:URL[;frame=box|image][;timeout=S][;retries=N]`` (Moondream's segment API,
    :mod:`refseg.grounding.moondream`; it takes none of ``options``).
    ``options`` go to the backend (``device``, ``dtype``, ``max_new_tokens``, ...).
    The spec is read by :func:`parse_grounder_spec` first, so a typo is one line.
    """
    parsed = parse_grounder_spec(spec)
    if parsed.kind in ("qwen3-vl", "qwen2.5-vl"):
        if parsed.options.get("engine") == "openvino":
            from refseg.grounding.openvino import OpenVINOGrounder

            weights = parsed.options.get("weights", "int8")
            return OpenVINOGrounder.from_pretrained(
                parsed.target, family=parsed.kind, weights=weights, **options
            )
        from refseg.grounding.qwen import QwenGrounder

        return QwenGrounder.from_pretrained(parsed.target, family=parsed.kind, **options)
    if parsed.kind == "openai":
        from refseg.grounding.openai_api import OpenAIGrounder

        for key in _LOCAL_ONLY:
            options.pop(key, None)
        return OpenAIGrounder(parsed.target, parsed.model, **{**options, **parsed.options})
    from refseg.grounding.moondream import MoondreamGrounder

    return MoondreamGrounder(parsed.target, **parsed.options)


#: Options of ``qwen3-vl:ID;engine=openvino;weights=int4`` and their values (the export formats
#: of :data:`refseg.grounding.ov_export.WEIGHT_FORMATS`).
_QWEN_OPTIONS = {
    "engine": ("transformers", "openvino"),
    "weights": ("fp32", "fp16", "int8", "int4"),
}

#: Options of ``moondream:URL;frame=box;timeout=30;retries=3;concurrency=4;model=NAME``; the
#: in-process options callers pass (device, dtype, ...) mean nothing to the API and are dropped.
_MOONDREAM_OPTIONS = {
    "frame": str,
    "timeout": float,
    "retries": int,
    "concurrency": int,
    "model": str,
}
