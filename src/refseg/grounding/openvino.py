"""The Qwen grounders on OpenVINO: ``qwen3-vl:ID;engine=openvino;weights=int8|int4|fp16|fp32``.

Users of this field run small VLMs on CPUs through OpenVINO or llama.cpp, not eager PyTorch: at
Qwen3-VL-2B size on two cores, OpenVINO GenAI's int4 ``VLMPipeline`` took a third of eager
fp32's time a token and a sixth of its first-token time (``benchmarks/bench_cpu_grounder.py``;
the README has the figures). The checkpoint is exported
once into the cache (:mod:`refseg.grounding.ov_export`); everything else is refseg's, exactly as
on the transformers engine (:class:`~refseg.grounding.qwen.QwenGrounder`, which this class
extends): the prompt is rendered by refseg's templates in the model's chat template and handed
to the pipeline as is (``apply_chat_template=False``; the image goes where the template put
``<|vision_start|><|image_pad|><|vision_end|>``), answers are read by refseg's parser, and
coordinates converted by refseg's conventions. For Qwen2.5-VL, whose answers are pixels of its
own resized input, each call checks that the pipeline's image-token count is the one of the
frame the conversion assumes (OpenVINO's preprocessor resizes with the same rule and bounds,
read from the same ``preprocessor_config.json``).

What the engine cannot do is refused in one line: the VLM's own features (``boxdec:``, refiners
on ``vlm:`` features) live in PyTorch tensors the exported graph does not expose; resize bounds
other than the checkpoint's would need another export. A warm-up call at load keeps the first
user's answer from paying OpenVINO's lazy compilation.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refseg.errors import InputError, ModelError
from refseg.grounding.coords import smart_resize
from refseg.grounding.ov_export import WEIGHT_FORMATS, export_model
from refseg.grounding.qwen import (
    DEFAULT_MAX_NEW_TOKENS,
    QwenGrounder,
    _as_pil,
    _check_family,
    checkpoint_folder,
    load_processor,
)
from refseg.hub import first_line

__all__ = ["OpenVINOGrounder", "image_tensor", "ov_device"]

#: The image refseg warms a pipeline up with (small: compiles the graphs, costs little).
_WARMUP_SIZE = (64, 64)


def ov_device(device: str | None) -> str:
    """An OpenVINO device name for refseg's ``--device`` (``cpu`` -> ``CPU``, ``gpu`` ->
    ``GPU``); CUDA devices are the transformers engine's."""
    if device is None:
        return "CPU"
    name = str(device).strip()
    if name.lower().startswith("cuda"):
        raise InputError(
            f"device {device!r} is a CUDA device: the openvino engine runs on CPU (or an Intel "
            "GPU, device gpu); use engine=transformers for CUDA"
        )
    if name.lower() in ("cpu", "gpu", "npu", "auto") or name.lower().startswith("gpu."):
        return name.upper()
    raise InputError(f"device {device!r}: use cpu or gpu with engine=openvino")


def image_tensor(pixels: np.ndarray) -> Any:
    """``uint8 (1, H, W, 3)`` pixels as the OpenVINO tensor the pipeline takes."""
    import openvino as ov

    return ov.Tensor(np.ascontiguousarray(pixels))


class OpenVINOGrounder(QwenGrounder):
    """A Qwen3-VL / Qwen2.5-VL checkpoint exported to OpenVINO, grounding through GenAI's
    ``VLMPipeline``. One pair at a time (the pipeline holds one KV cache); calls from several
    threads are serialised."""

    #: The exported graph does not expose vision features (``boxdec:``, ``vlm:`` refiners).
    supports_features = False

    def __init__(
        self,
        pipeline: Any,
        processor: Any,
        *,
        family: str,
        name: str,
        export: Path,
        weights: str,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        prompt_template: str | None = None,
    ) -> None:
        super().__init__(
            None,  # type: ignore[arg-type]  # no torch model: generate() is the pipeline's
            processor,
            family=family,
            name=name,
            max_new_tokens=max_new_tokens,
            prompt_template=prompt_template,
            batch_size=1,
        )
        # OpenVINO's preprocessor rounds halfway sides up (transformers: to even); Qwen2.5-VL's
        # pixel answers are in that frame.
        self.convention = dataclasses.replace(self.convention, half_up=True)
        self.pipeline = pipeline
        self.export = export
        self.weights = weights
        self._lock = threading.Lock()
        #: Timings of the last call (first token, per token, tokens in and out), for benchmarks.
        self.last_metrics: dict[str, float] = {}

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        model_id_or_folder: str | Path,
        *,
        family: str = "qwen3-vl",
        weights: str = "int8",
        device: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        local_files_only: bool | None = None,
        revision: str | None = None,
        prompt_template: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        warmup: bool = True,
        **unused: Any,
    ) -> OpenVINOGrounder:
        """Export (once) and load a checkpoint; ``unused`` are transformers-engine options
        (``dtype``, ``batch_size``...) that mean nothing here."""
        _check_family(family)
        if weights not in WEIGHT_FORMATS:
            raise InputError(f"weights={weights!r}: use {' or '.join(WEIGHT_FORMATS)}")
        if min_pixels is not None or max_pixels is not None:
            raise InputError(
                "min_pixels/max_pixels with engine=openvino: the export fixes the resize bounds "
                "(use engine=transformers, or resize the images)"
            )
        if unused.get("do_sample") or unused.get("temperature"):
            raise InputError("engine=openvino answers greedily: drop temperature/do_sample")
        target = ov_device(device)
        try:
            import openvino_genai
        except ImportError as exc:
            raise ModelError(
                "engine=openvino needs openvino-genai: pip install 'refseg[openvino]'"
            ) from exc
        folder, prompt_template = checkpoint_folder(
            model_id_or_folder, family, local_files_only, revision, prompt_template
        )
        export = export_model(folder, weights)
        processor = load_processor(folder, family=family)
        from refseg.threads import thread_budget

        properties = {"INFERENCE_NUM_THREADS": thread_budget()} if target == "CPU" else {}
        try:
            pipeline = openvino_genai.VLMPipeline(str(export), target, **properties)
        except RuntimeError as exc:
            raise ModelError(
                f"{family}:{model_id_or_folder}: OpenVINO cannot load the export in {export} "
                f"({first_line(exc)})"
            ) from exc
        grounder = cls(
            pipeline,
            processor,
            family=family,
            name=f"{family}:{model_id_or_folder};engine=openvino;weights={weights}",
            export=export,
            weights=weights,
            max_new_tokens=max_new_tokens,
            prompt_template=prompt_template,
        )
        if warmup:
            grounder.generate([np.zeros((*_WARMUP_SIZE, 3), np.uint8)], ["object"], tokens=1)
        return grounder

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the image as OpenVINO's preprocessor resizes it."""
        h, w = smart_resize(
            height, width, self.factor, self.min_pixels, self.max_pixels, half_up=True
        )
        return w, h

    @property
    def device(self) -> str:  # type: ignore[override]
        return "openvino"

    @property
    def feature_fingerprint(self) -> str:
        raise InputError(f"grounder {self.name} cannot give its features (engine=openvino)")

    def _generation_config(self, tokens: int | None = None) -> Any:  # type: ignore[override]
        config = self.pipeline.get_generation_config()
        config.max_new_tokens = tokens or self.max_new_tokens
        config.do_sample = False
        config.apply_chat_template = False  # the prompt is refseg's, already in the template
        return config

    def _generate(self, images: Sequence[Any], phrases: Sequence[str], **kwargs: Any) -> Any:
        if kwargs.get("sources"):
            raise InputError(
                f"grounder {self.name} cannot give its features to a box decoder or a "
                "vlm: refiner (engine=openvino); use engine=transformers"
            )
        return self.generate(images, phrases, think=kwargs.get("think", False),
                             answer=kwargs.get("answer")), None  # fmt: skip

    def prompt(self, phrase: str, *, think: bool = False, answer: str | None = None) -> str:
        """The full prompt text the pipeline gets for one pair (chat template applied)."""
        return self.processor.apply_chat_template(
            self.build_messages(None, phrase, think=think, answer=answer),
            tokenize=False,
            add_generation_prompt=True,
        )

    def generate(  # type: ignore[override]
        self,
        images: Sequence[Any],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
        tokens: int | None = None,
    ) -> list[str]:
        """The raw answers for (image, phrase) pairs, one pipeline call each."""
        if len(images) != len(phrases):
            raise InputError(f"got {len(images)} images but {len(phrases)} phrases")
        answers = []
        for i, (image, phrase) in enumerate(zip(images, phrases)):
            if not isinstance(phrase, str) or not phrase.strip():
                raise InputError(f"phrase {i} is empty")
            pil = _as_pil(image, i)
            frame = self.resized_size(*pil.size)  # refuses extreme aspect ratios in one line
            prompt = self.prompt(phrase, think=think, answer=answer)
            pixels = np.ascontiguousarray(np.asarray(pil, dtype=np.uint8)[None])
            start = time.perf_counter()
            with self._lock:
                result = self.pipeline.generate(
                    prompt,
                    images=[image_tensor(pixels)],
                    generation_config=self._generation_config(tokens),
                )
            self._check_frame(i, pil.size, frame, prompt, result)
            metrics = result.perf_metrics
            self.last_metrics = {
                "seconds": time.perf_counter() - start,
                "first_token_s": metrics.get_ttft().mean / 1000.0,
                "per_token_s": metrics.get_tpot().mean / 1000.0,
                "input_tokens": float(metrics.get_num_input_tokens()),
                "output_tokens": float(metrics.get_num_generated_tokens()),
            }
            answers.append(result.texts[0])
        return answers

    def _check_frame(
        self, index: int, size: tuple[int, int], frame: tuple[int, int], prompt: str, result: Any
    ) -> None:
        """The pipeline's input tokens must be the prompt's plus the frame's image tokens;
        otherwise its resize differs from the one the coordinates assume (Qwen2.5-VL answers in
        pixels of that frame)."""
        if self.convention.kind != "resized":
            return
        text = len(self.processor.tokenizer(prompt).input_ids) - 1  # <|image_pad|> expands
        expected = text + (frame[0] // self.factor) * (frame[1] // self.factor)
        actual = int(result.perf_metrics.get_num_input_tokens())
        if actual != expected:
            raise ModelError(
                f"image {index} ({size[0]}x{size[1]}): OpenVINO's preprocessor made {actual} "
                f"input tokens, but the coordinate conversion assumes a {frame[0]}x{frame[1]} "
                f"frame ({expected} tokens); this is a bug, please report it"
            )
