"""Promptable segmenters and the spec strings that name them."""

from __future__ import annotations

import os

from refseg.errors import InputError, ModelError
from refseg.segmentation.base import Embedding, MaskPrediction, Segmenter, segment

DEFAULT_SEGMENTER = "onnx-sam"
#: The segmenter spec forms, for every command's help: one constant, so the commands agree.
SEGMENTER_SPECS = "onnx-sam | onnx-sam:int8 | onnx:ENC,DEC | sam:ID | sam2:ID | boxdec:PATH"

__all__ = [
    "DEFAULT_SEGMENTER",
    "SEGMENTER_SPECS",
    "Embedding",
    "MaskPrediction",
    "Segmenter",
    "check_segmenter_spec",
    "load_segmenter",
    "segment",
]


def check_segmenter_spec(spec: str) -> None:
    """Refuse a malformed segmenter spec (the forms: :data:`SEGMENTER_SPECS`) in one line.

    Only the syntax and the named ONNX files are checked; no model library is imported and
    nothing is loaded, so a command can refuse a typo before it starts a server or loads a
    grounder. A spec that passes can still fail to load (a missing hub id, a corrupt file).
    """
    if not isinstance(spec, str):
        raise InputError(f"a segmenter spec is a string, got {type(spec).__name__}")
    kind, _, rest = spec.partition(":")
    if spec in ("onnx-sam", "onnx-sam:int8"):
        return
    if kind == "onnx":
        parts = [p for p in rest.split(",") if p]
        if len(parts) != 2:
            raise InputError(f"segmenter spec {spec!r}: expected onnx:ENCODER.onnx,DECODER.onnx")
        for part in parts:
            if not os.path.isfile(part):
                raise InputError(f"segmenter spec {spec!r}: {part} is not a file")
        return
    if kind in ("sam", "sam2"):
        if not rest:
            raise InputError(f"segmenter spec {spec!r}: expected {kind}:HUB_ID_OR_FOLDER")
        return
    if kind == "boxdec":
        if not rest:
            raise InputError(f"segmenter spec {spec!r}: expected boxdec:CHECKPOINT_FOLDER")
        return
    raise InputError(
        f"unknown segmenter {spec!r}; use onnx-sam, onnx-sam:int8, onnx:ENCODER,DECODER, "
        "sam:ID, sam2:ID or boxdec:CHECKPOINT"
    )


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
    The spec is checked by :func:`check_segmenter_spec` first.
    """
    check_segmenter_spec(spec)
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

        encoder, decoder = (p for p in rest.split(",") if p)
        return OnnxSam(encoder, decoder, name=f"onnx:{rest}", **extra, **onnx_options)
    if kind in ("sam", "sam2"):
        from refseg.segmentation.hf_sam import HFSam
        from refseg.threads import apply_torch

        if threads is not None:
            apply_torch(threads)
        return HFSam.from_pretrained(rest, family=kind, device=device, **extra, **options)
    # boxdec:FOLDER: a box decoder checkpoint, masks from the Qwen grounder's own features
    # (refseg.segmentation.boxdec); it works only inside a Pipeline with that grounder.
    from refseg.segmentation.boxdec import BoxDecSegmenter

    return BoxDecSegmenter.load(rest, device=device)


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
