"""Promptable segmenters and the spec strings that name them."""

from __future__ import annotations

import os

from refseg.errors import InputError, ModelError
from refseg.segmentation.base import Embedding, MaskPrediction, Segmenter, segment

DEFAULT_SEGMENTER = "onnx-sam"

__all__ = [
    "DEFAULT_SEGMENTER",
    "Embedding",
    "MaskPrediction",
    "Segmenter",
    "load_segmenter",
    "segment",
]


def load_segmenter(
    spec: str = DEFAULT_SEGMENTER,
    *,
    device: str | None = None,
    refine: int | None = None,
    threads: int | None = None,
    **options,
) -> Segmenter:
    """Build a segmenter from a spec string.

    Specs: ``onnx-sam`` (embedded default weights), ``onnx-sam:int8`` (the same with the
    encoder statically quantized to int8, built once into the cache; see
    :mod:`refseg.segmentation.quantize`), ``onnx:ENCODER.onnx,DECODER.onnx``, ``sam:ID`` and
    ``sam2:ID`` (transformers; ``ID`` is a hub id or a local folder). ``threads``: CPU threads
    for this model's calls (default: the thread budget, :mod:`refseg.threads`).
    ``options`` go to the transformers backends (``dtype``, ``multimask``).
    """
    kind, _, rest = spec.partition(":")
    extra = {} if refine is None else {"refine": refine}
    onnx_options: dict = {"providers": _onnx_providers(device)} if device else {}
    if threads is not None:
        onnx_options["threads"] = threads
    if spec == "onnx-sam":
        from refseg.segmentation.onnx_sam import OnnxSam

        return OnnxSam.default(**extra, **onnx_options)
    if spec == "onnx-sam:int8":
        from refseg.segmentation.onnx_sam import OnnxSam
        from refseg.segmentation.quantize import int8_sam_onnx

        encoder, decoder = int8_sam_onnx()
        return OnnxSam(encoder, decoder, name=spec, **extra, **onnx_options)
    if kind == "onnx":
        from refseg.segmentation.onnx_sam import OnnxSam

        parts = [p for p in rest.split(",") if p]
        if len(parts) != 2:
            raise InputError(f"segmenter spec {spec!r}: expected onnx:ENCODER.onnx,DECODER.onnx")
        for part in parts:
            if not os.path.isfile(part):
                raise InputError(f"segmenter spec {spec!r}: {part} is not a file")
        return OnnxSam(parts[0], parts[1], name=f"onnx:{rest}", **extra, **onnx_options)
    if kind in ("sam", "sam2"):
        if not rest:
            raise InputError(f"segmenter spec {spec!r}: expected {kind}:HUB_ID_OR_FOLDER")
        from refseg.segmentation.hf_sam import HFSam
        from refseg.threads import apply_torch

        if threads is not None:
            apply_torch(threads)
        return HFSam.from_pretrained(rest, family=kind, device=device, **extra, **options)
    if kind == "boxdec":
        # boxdec:FOLDER: a box decoder checkpoint, masks from the Qwen grounder's own features
        # (refseg.segmentation.boxdec); it works only inside a Pipeline with that grounder.
        if not rest:
            raise InputError(f"segmenter spec {spec!r}: expected boxdec:CHECKPOINT_FOLDER")
        from refseg.segmentation.boxdec import BoxDecSegmenter

        return BoxDecSegmenter.load(rest, device=device)
    raise InputError(
        f"unknown segmenter {spec!r}; use onnx-sam, onnx-sam:int8, onnx:ENCODER,DECODER, "
        "sam:ID, sam2:ID or boxdec:CHECKPOINT"
    )


def _onnx_providers(device: str) -> list:
    """onnxruntime providers for a device name: ``cpu``, ``cuda`` or ``cuda:N``."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        import onnxruntime as ort

        if index and not index.isdigit():
            raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelError(
                f"device {device!r} was asked for but this onnxruntime has no CUDA provider; "
                "install onnxruntime-gpu, or use device cpu"
            )
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
