"""Qwen3-VL and Qwen2.5-VL grounders on transformers, from a hub id or a local folder.

:class:`QwenGrounder` renders the one prompt of :mod:`refseg.protocol` in the model's chat
template (image first, then the instruction), generates left-padded batches, decodes only the
new tokens, parses them with :func:`refseg.protocol.parse_answer` and converts the model's
coordinates with :mod:`refseg.grounding.coords`:

* Qwen3-VL answers on a 0-1000 grid relative to the image (``norm1000``);
* Qwen2.5-VL answers in pixels of its own *resized* input, so the convention carries the
  processor's real ``min_pixels``/``max_pixels``/``factor``, and every batch checks that the
  size the processor produced (``image_grid_thw``) is the size the conversion assumes.

Training reuses :func:`build_messages`, :func:`load_processor` and the grounder's ``model``,
``processor`` and ``convention``, so a trained model is asked exactly what inference asks.

Loading never hangs on the network: a hub id is looked up in the local cache first (no network),
``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` stop there, and a download gets a short
timeout; every failure is one line naming the id and how to pass a local folder instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen3VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from refseg.errors import InputError, ModelError
from refseg.grounding.base import Grounding, check_rgb
from refseg.grounding.chat_template import MAX_TEMPLATE_BYTES, check_chat_template
from refseg.grounding.coords import Convention, smart_resize, to_grounding
from refseg.hub import first_line, resolve_device, resolve_dtype, resolve_source
from refseg.protocol import SYSTEM_PROMPT, build_prompt, parse_answer
from refseg.protocol.confidence import instance_scores, no_target_score
from refseg.protocol.templates import check_template

__all__ = [
    "FAMILIES",
    "ImageOnlyQwen2_5_VLProcessor",
    "ImageOnlyQwen3VLProcessor",
    "QwenGrounder",
    "build_messages",
    "load_processor",
    "processor_class",
    "resolve_device",
    "resolve_dtype",
    "resolve_source",
]

FAMILIES = ("qwen3-vl", "qwen2.5-vl")

#: The ``model_type`` values each family accepts (Qwen3-VL MoE checkpoints share the processor
#: and the 0-1000 convention).
_MODEL_TYPES = {"qwen3-vl": ("qwen3_vl", "qwen3_vl_moe"), "qwen2.5-vl": ("qwen2_5_vl",)}

#: Long enough for a reasoning trace plus a multi-instance answer; generation stops at the end
#: of turn, so short answers do not pay for it.
DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_BATCH_SIZE = 8

#: How a model refseg trained must be asked, written beside its weights (see
#: :func:`write_model_card`); small by construction, so a larger file is refused unread.
MODEL_CARD = "refseg.json"
_MODEL_CARD_BYTES = 64 * 1024

#: Files a Qwen-VL checkpoint needs (weights, configs, tokenizer, chat template).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """:class:`Qwen3VLProcessor` without a video processor.

    The stock class requires a video processor, and merely type-checking one needs torchvision;
    refseg only ever sends images, so this keeps the exact image/text behaviour (placeholder
    expansion, ``mm_token_type_ids``) and drops the video half. The processor's attributes
    come from this ``__init__``'s signature, so the ``None`` passed for the video processor is
    never stored or type-checked (covered by the tiny-model tests).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """:class:`Qwen2_5_VLProcessor` without a video processor (see the Qwen3-VL one)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


_PROCESSORS = {"qwen3-vl": ImageOnlyQwen3VLProcessor, "qwen2.5-vl": ImageOnlyQwen2_5_VLProcessor}


def processor_class(family: str) -> type:
    """The image-only processor class for ``family`` (to build one from parts)."""
    _check_family(family)
    return _PROCESSORS[family]


def load_processor(
    source: str | Path,
    *,
    family: str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    local_files_only: bool | None = None,
    revision: str | None = None,
) -> ProcessorMixin:
    """The image-only processor of a Qwen-VL checkpoint (hub id or folder), left-padding.

    Assembled from the checkpoint's tokenizer, its image-processor settings read through the
    PIL image processor (so torchvision is not needed) and its chat template
    (``chat_template.jinja``, ``chat_template.json`` or the tokenizer's). ``min_pixels`` /
    ``max_pixels`` override the checkpoint's resize bounds. Padding is on the left because
    every user (batched generation, GRPO rollouts) appends generated tokens on the right.
    """
    _check_family(family)
    folder = resolve_source(
        source, family, patterns=_HUB_PATTERNS, local_files_only=local_files_only, revision=revision
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        overrides: dict[str, int] = {}
        if min_pixels is not None:
            overrides["min_pixels"] = _positive_int(min_pixels, "min_pixels")
        if max_pixels is not None:
            overrides["max_pixels"] = _positive_int(max_pixels, "max_pixels")
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder, **overrides)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{family}:{source}: cannot load the processor ({first_line(exc)})"
        ) from exc
    size = image_processor.size
    if size["shortest_edge"] > size["longest_edge"]:
        raise InputError(
            f"min_pixels ({size['shortest_edge']}) is larger than max_pixels "
            f"({size['longest_edge']})"
        )
    tokenizer.padding_side = "left"
    return _PROCESSORS[family](
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_chat_template(folder, tokenizer),
    )


def _chat_template(folder: Path, tokenizer: Any) -> str:
    """The checkpoint's multimodal chat template, wherever this checkpoint keeps it."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        if jinja.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ModelError(f"{jinja}: the chat template is over {MAX_TEMPLATE_BYTES // 1024} KiB")
        try:
            text = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{jinja}: unreadable chat template ({first_line(exc)})") from None
        return check_chat_template(text, str(jinja))
    legacy = folder / "chat_template.json"
    if legacy.is_file():
        try:
            template = json.loads(legacy.read_text(encoding="utf-8")).get("chat_template")
        except ValueError as exc:
            raise ModelError(f"{legacy}: unreadable chat template ({exc})") from exc
        if isinstance(template, str):
            return check_chat_template(template, str(legacy))
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        raise ModelError(f"{folder}: the checkpoint has no chat template")
    return check_chat_template(template, str(folder / "tokenizer_config.json"))


# ---------------------------------------------------------------------------------------------
# Resolving where the model comes from, and on what it runs


def write_model_card(folder: str | Path, *, prompt_template: str | None, answer: str) -> None:
    """Record beside a trained model how it must be asked: its prompt template (None: the
    protocol's own prompt) and its answer kind (``box`` or ``path``, for the reader's benefit:
    the template alone fixes the prompt, and every grounder parses either kind)."""
    from refseg.fileio import atomic_write_text

    if prompt_template is not None:
        check_template(prompt_template, "prompt_template")  # never write a card no one can read
    card = {"prompt_template": prompt_template, "answer": answer}
    atomic_write_text(Path(folder) / MODEL_CARD, json.dumps(card, indent=2) + "\n")


def read_model_card(folder: Path) -> dict[str, Any]:
    """The model card of a folder refseg trained (``{}`` when there is none), validated."""
    path = folder / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > _MODEL_CARD_BYTES:
            raise ValueError(f"larger than {_MODEL_CARD_BYTES} bytes")
        card = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(card, dict):
            raise ValueError("not a JSON object")
        template = card.get("prompt_template")
        if template is not None:
            check_template(template, "prompt_template")  # an InputError is a ValueError
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model card ({first_line(exc)})") from exc
    return card


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise InputError(f"unknown Qwen-VL family {family!r}; use {' or '.join(FAMILIES)}")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise InputError(f"{what} must be an integer, got {value!r}")
    if value < 1:
        raise InputError(f"{what} must be at least 1, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Prompting


def build_messages(
    image: Any,
    phrase: str,
    *,
    think: bool = False,
    coords: str = "norm1000",
    template: str | None = None,
    answer: str = "box",
) -> list[dict]:
    """The chat messages asking to ground ``phrase``: one user turn, the image then the prompt.

    ``image`` goes into the image part when given (so ``apply_chat_template`` can load it);
    ``None`` leaves a bare ``{"type": "image"}`` placeholder for callers that pass images to
    the processor separately (batched inference, TRL datasets). ``coords`` is the convention's
    prompt wording (:attr:`Convention.prompt_coords`); ``template`` replaces the prompt text
    (see :func:`refseg.protocol.build_prompt`).
    """
    part: dict[str, Any] = {"type": "image"}
    if image is not None:
        part["image"] = image
    messages: list[dict] = []
    if SYSTEM_PROMPT is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]})
    text = build_prompt(phrase, think=think, coords=coords, template=template, answer=answer)
    messages.append({"role": "user", "content": [part, {"type": "text", "text": text}]})
    return messages


def _as_pil(image: Any, index: int) -> Image.Image:
    """A ``uint8`` RGB ``(H, W, 3)`` array (or PIL image) as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(check_rgb(image, index))


# ---------------------------------------------------------------------------------------------
# The grounder


class QwenGrounder:
    """A Qwen3-VL / Qwen2.5-VL model that grounds phrases (see the module docstring).

    Build with :meth:`from_pretrained`, or directly from a loaded ``model`` and a processor
    from :func:`load_processor` (what training does with the model it trains).

    Attributes:
        model, processor: the transformers objects, shared with training.
        family: ``qwen3-vl`` or ``qwen2.5-vl``.
        convention: the coordinate convention the model answers in.
        name: ``family:source``, as in the grounder spec.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        *,
        family: str,
        name: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        top_p: float | None = None,
        do_sample: bool | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        prompt_template: str | None = None,
    ) -> None:
        _check_family(family)
        self.prompt_template = prompt_template
        #: What the prompt asks for: ``box`` or ``path`` (see :func:`refseg.protocol.build_prompt`).
        self.answer = "box"
        self.model = model
        self.processor = processor
        self.family = family
        self.name = name or f"{family}:{getattr(model, 'name_or_path', '') or 'model'}"
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise InputError(f"temperature must be a number, got {temperature!r}")
        if not 0.0 <= float(temperature) <= 100.0:
            raise InputError(f"temperature must be between 0 and 100, got {temperature}")
        if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
            raise InputError(f"top_p must be in (0, 1], got {top_p!r}")
        self.temperature = float(temperature)
        self.top_p = None if top_p is None else float(top_p)
        self.do_sample = self.temperature > 0 if do_sample is None else bool(do_sample)
        if self.do_sample and self.temperature == 0:
            raise InputError("sampling needs a temperature above 0 (temperature 0 is greedy)")
        ip = processor.image_processor
        self.patch_size = int(ip.patch_size)
        self.factor = self.patch_size * int(ip.merge_size)
        self.min_pixels = int(ip.size["shortest_edge"])
        self.max_pixels = int(ip.size["longest_edge"])
        if family == "qwen3-vl":
            self.convention = Convention("norm1000")
        else:
            self.convention = Convention(
                "resized",
                min_pixels=self.min_pixels,
                max_pixels=self.max_pixels,
                factor=self.factor,
            )

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_folder: str | Path,
        *,
        family: str = "qwen3-vl",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        top_p: float | None = None,
        do_sample: bool | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        attn_implementation: str | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        prompt_template: str | None = None,
    ) -> QwenGrounder:
        """Load a checkpoint (hub id or local folder) for grounding.

        ``prompt_template`` defaults to the one the model was trained with when refseg trained
        it (its ``refseg.json``, :func:`write_model_card`), else the protocol's prompt.

        ``device``/``dtype`` default to CUDA + bfloat16 when a GPU is visible, else CPU +
        float32. ``min_pixels``/``max_pixels`` bound the processor's resize (fewer pixels:
        faster, coarser); for Qwen2.5-VL they also define the coordinate frame, which is
        why the grounder reads them back from the processor rather than trusting defaults.
        ``attn_implementation`` goes to transformers (``sdpa``, ``flash_attention_2``, ...).
        """
        _check_family(family)
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        folder, prompt_template = checkpoint_folder(
            model_id_or_folder, family, local_files_only, revision, prompt_template
        )
        processor = load_processor(
            folder, family=family, min_pixels=min_pixels, max_pixels=max_pixels
        )
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": True}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        if target.type == "cuda":
            kwargs["device_map"] = str(target)
        try:
            model = AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
        except (OSError, ValueError, ImportError) as exc:
            raise ModelError(
                f"{family}:{model_id_or_folder}: cannot load the model ({first_line(exc)})"
            ) from exc
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelError(
                f"{family}:{model_id_or_folder}: out of GPU memory while loading; use a smaller "
                "model or dtype bfloat16"
            ) from exc
        if target.type != "cuda":
            model.to(target)
        model.eval()
        return cls(
            model,
            processor,
            family=family,
            name=f"{family}:{model_id_or_folder}",
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            do_sample=do_sample,
            batch_size=batch_size,
            prompt_template=prompt_template,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def build_messages(
        self, image: Any, phrase: str, *, think: bool = False, answer: str | None = None
    ) -> list[dict]:
        """This model's chat messages for one pair (see :func:`build_messages`); ``answer``
        (``box``/``path``) defaults to the grounder's :attr:`answer`."""
        return build_messages(
            image,
            phrase,
            think=think,
            coords=self.convention.prompt_coords,
            template=self.prompt_template,
            answer=answer or self.answer,
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the image as the processor resizes it for the model."""
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return w, h

    def prepare(
        self,
        images: Sequence[Any],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
    ) -> Any:
        """The processor batch (left-padded, on the model's device) for (image, phrase) pairs."""
        if len(images) != len(phrases):
            raise InputError(f"got {len(images)} images but {len(phrases)} phrases")
        pil = [_as_pil(image, i) for i, image in enumerate(images)]
        for i, image in enumerate(pil):
            self.resized_size(*image.size)  # refuses extreme aspect ratios with one line
            if not isinstance(phrases[i], str) or not phrases[i].strip():
                raise InputError(f"phrase {i} is empty")
        texts = [
            self.processor.apply_chat_template(
                self.build_messages(None, phrase, think=think, answer=answer),
                tokenize=False,
                add_generation_prompt=True,
            )
            for phrase in phrases
        ]
        batch = self.processor(text=texts, images=pil, padding=True, return_tensors="pt")
        self._check_frames(pil, batch["image_grid_thw"])
        batch = batch.to(self.device)
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    def _check_frames(self, images: Sequence[Image.Image], grid_thw: torch.Tensor) -> None:
        """The processor's resize must be the one the coordinate conversion assumes."""
        for i, (image, (_, gh, gw)) in enumerate(zip(images, grid_thw.tolist())):
            actual = (gw * self.patch_size, gh * self.patch_size)
            expected = self.resized_size(*image.size)
            if actual != expected:
                raise ModelError(
                    f"image {i} ({image.size[0]}x{image.size[1]}): the processor resized it to "
                    f"{actual[0]}x{actual[1]} but the coordinate conversion assumes "
                    f"{expected[0]}x{expected[1]}; this is a bug, please report it"
                )

    def _generation_config(self) -> GenerationConfig:
        config = GenerationConfig.from_dict(self.model.generation_config.to_dict())
        tokenizer = self.processor.tokenizer
        config.max_new_tokens = self.max_new_tokens
        config.num_return_sequences = 1
        config.do_sample = self.do_sample
        if self.do_sample:
            config.temperature = self.temperature
            if self.top_p is not None:
                config.top_p = self.top_p
        else:  # the checkpoint's sampling defaults would only draw warnings
            config.temperature = None
            config.top_p = None
            config.top_k = None
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
        return config

    @torch.inference_mode()
    def generate(
        self,
        images: Sequence[Any],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
    ) -> list[str]:
        """The raw answers (new tokens only, special tokens dropped) for one batch of pairs."""
        return self._generate(images, phrases, think=think, answer=answer)[0]

    #: Answers come with token probabilities (instance and no-target scores).
    supports_scores = True

    #: This grounder can hand its own features to the box decoder (``ground(features=...)``).
    supports_features = True

    @property
    def feature_fingerprint(self) -> str:
        """The fingerprint of this model's feature layout (:func:`~.boxdec.vlm_fingerprint`)."""
        from refseg.vlm_features import vlm_fingerprint

        return vlm_fingerprint(self.model.config)

    @torch.inference_mode()
    def _generate(
        self,
        images: Sequence[Any],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
        sources: Sequence[str] = (),
    ) -> tuple[list[str], list[Any] | None, list[Any]]:
        """Answers, with ``sources`` the :class:`VLMFeatures` of each pair from the same
        generate pass (hooks, no second forward; see :mod:`refseg.grounding.features`), and
        each answer's :class:`~refseg.protocol.confidence.TokenTrace` (None where unreadable)."""
        import contextlib

        from transformers import LogitsProcessorList

        from refseg.grounding.features import FeatureCapture
        from refseg.grounding.traces import TraceRecorder, build_traces, trace_decoder

        batch = self.prepare(images, phrases, think=think, answer=answer)
        capture = FeatureCapture(self.model, list(sources)) if sources else None
        recorder = TraceRecorder()
        try:
            with capture if capture is not None else contextlib.nullcontext():
                out = self.model.generate(
                    **batch,
                    generation_config=self._generation_config(),
                    logits_processor=LogitsProcessorList([recorder]),
                )
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelError(
                f"out of GPU memory generating {len(phrases)} answers; lower batch_size "
                f"(now {self.batch_size}) or max_pixels (now {self.max_pixels})"
            ) from exc
        new = out[:, batch["input_ids"].shape[1] :]
        answers = self.processor.batch_decode(
            new, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        recorder.finish(new)
        traces = build_traces(recorder, new, trace_decoder(self.processor.tokenizer))
        if capture is None:
            return answers, None, traces
        return answers, self._features(capture, new), traces

    def _features(self, capture: Any, new: torch.Tensor) -> list[Any]:
        from refseg.grounding.features import stop_ids
        from refseg.vlm_features import VLMFeatures

        states = capture.answer_states(new, stop_ids(self))
        fingerprint = self.feature_fingerprint
        out = []
        for (maps, (gh, gw)), hidden in zip(capture.vision_maps(), states):
            size = (gw * self.factor, gh * self.factor)
            out.append(VLMFeatures(capture.sources, maps, hidden, size, fingerprint))
        return out

    def ground(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
        features: Sequence[str] = (),
    ) -> list[Grounding]:
        """Ground ``phrases[i]`` in ``images[i]``; batches of ``batch_size`` pairs.

        Unreadable answers become ``parse_error`` (never an exception); bad inputs (length
        mismatch, non-RGB arrays, empty phrases) raise :class:`InputError`. ``answer`` asks for
        ``box`` or ``path`` answers in this call (default: :attr:`answer`). ``features`` names
        vision sources (:func:`refseg.vlm_features.vision_sources`) to return, with the
        answer state, in each grounding's ``features`` (for the box decoder).
        """
        asked = {"answer": answer} if answer is not None else {}
        if len(images) != len(phrases):
            raise InputError(f"got {len(images)} images but {len(phrases)} phrases")
        results: list[Grounding] = []
        for start in range(0, len(images), self.batch_size):
            chunk_images = list(images[start : start + self.batch_size])
            chunk_phrases = list(phrases[start : start + self.batch_size])
            feats = traces = None
            if features or self._own_generate():
                answers, feats, traces = self._generate(
                    chunk_images, chunk_phrases, think=think, sources=features, **asked
                )
            else:  # through generate(), which subclasses override (without token scores)
                answers = self.generate(chunk_images, chunk_phrases, think=think, **asked)
            for i, (image, answer) in enumerate(zip(chunk_images, answers)):
                width, height = _size(image)
                parsed = parse_answer(answer)
                trace = traces[i] if traces is not None else None
                for instance, score in zip(parsed.instances, instance_scores(trace, parsed)):
                    instance.score = score
                grounding = to_grounding(parsed, self.convention, width, height)
                grounding.no_target_score = no_target_score(trace, parsed)
                if feats is not None:
                    grounding.features = feats[i]
                results.append(grounding)
        return results

    def _own_generate(self) -> bool:
        """True unless a subclass (or the instance) replaced :meth:`generate`."""
        return type(self).generate is QwenGrounder.generate and "generate" not in vars(self)


def _size(image: Any) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.size
    height, width = np.asarray(image).shape[:2]
    return int(width), int(height)


def checkpoint_folder(
    source: str | Path,
    family: str,
    local_files_only: bool | None = None,
    revision: str | None = None,
    prompt_template: str | None = None,
) -> tuple[Path, str | None]:
    """The local folder of a hub id or folder (checked to hold ``family``), and the prompt
    template to ask it with: ``prompt_template``, else its model card's (refseg-trained)."""
    folder = resolve_source(
        source,
        family,
        patterns=_HUB_PATTERNS,
        local_files_only=local_files_only,
        revision=revision,
    )
    _check_model_type(folder, family, source)
    if prompt_template is None:
        prompt_template = read_model_card(folder).get("prompt_template")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.pt")
        )
        found = f" ({pickles[0]} is a pickle, which refseg never loads)" if pickles else ""
        raise ModelError(f"{family}:{source}: no *.safetensors weights in {folder}{found}")
    return folder, prompt_template


def _check_model_type(folder: Path, family: str, source: Any) -> None:
    """Refuse a checkpoint of another family: its coordinates would be misread silently."""
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder / 'config.json'}: unreadable model config ({exc})") from exc
    if model_type not in _MODEL_TYPES[family]:
        other = next((f for f, types in _MODEL_TYPES.items() if model_type in types), None)
        hint = f"; use the spec {other}:{source}" if other else ""
        raise ModelError(
            f"{family}:{source} is a {model_type or 'unknown'!s} checkpoint, not {family}{hint}"
        )
