"""The OpenVINO engine's rules that need no export: specs, devices, the export cache's keys and
its manifest check, and the refusals made before anything loads. The engine itself (a real
export, answers equal to transformers') runs in ``tests/engines/`` (scripts/test_engines.sh)."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import pytest

from refseg.errors import InputError, ModelError
from refseg.grounding import ov_export, parse_grounder_spec
from refseg.grounding.openvino import OpenVINOGrounder, ov_device


@pytest.mark.parametrize(
    ("spec", "options", "raises"),
    [
        ("qwen3-vl:Qwen/Qwen3-VL-2B-Instruct", {}, does_not_raise()),
        ("qwen3-vl:/m/q;engine=openvino", {"engine": "openvino"}, does_not_raise()),
        (
            "qwen2.5-vl:/m/q;engine=openvino;weights=int4",
            {"engine": "openvino", "weights": "int4"},
            does_not_raise(),
        ),
        ("qwen3-vl:/m/q;engine=transformers", {"engine": "transformers"}, does_not_raise()),
        ("qwen3-vl:/m/q;engine=onnx", None, pytest.raises(InputError, match="engine must be")),
        ("qwen3-vl:/m/q;weights=int4", None, pytest.raises(InputError, match="goes with engine")),
        (
            "qwen3-vl:/m/q;engine=openvino;weights=int3",
            None,
            pytest.raises(InputError, match="weights must be fp32 or fp16 or int8 or int4"),
        ),
        ("qwen3-vl:/m/q;dtype=bf16", None, pytest.raises(InputError, match="unknown option")),
        (
            "qwen3-vl:;engine=openvino",
            None,
            pytest.raises(InputError, match="expected qwen3-vl:ID"),
        ),
    ],
)
def test_engine_specs(spec, options, raises) -> None:
    with raises:
        parsed = parse_grounder_spec(spec)
        assert parsed.options == options and ";" not in parsed.target


@pytest.mark.parametrize(
    ("device", "expected", "raises"),
    [
        (None, "CPU", does_not_raise()),
        ("cpu", "CPU", does_not_raise()),
        ("gpu", "GPU", does_not_raise()),
        ("gpu.1", "GPU.1", does_not_raise()),
        ("cuda", None, pytest.raises(InputError, match="CUDA device")),
        ("cuda:1", None, pytest.raises(InputError, match="engine=transformers")),
        ("tpu", None, pytest.raises(InputError, match="use cpu or gpu")),
    ],
)
def test_devices(device, expected, raises) -> None:
    with raises:
        assert ov_device(device) == expected


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("REFSEG_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen3_vl"}')
    (folder / "model.safetensors").write_bytes(b"0" * 64)
    return folder


def test_an_export_is_keyed_by_source_files_and_weights(checkpoint: Path) -> None:
    int8 = ov_export.export_dir(checkpoint, "int8")
    assert int8 == ov_export.export_dir(checkpoint, "int8")  # stable
    assert int8 != ov_export.export_dir(checkpoint, "int4")
    weights = checkpoint / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a retrained checkpoint
    assert ov_export.export_dir(checkpoint, "int8") != int8
    with pytest.raises(InputError, match="weights='int2'"):
        ov_export.export_dir(checkpoint, "int2")
    (checkpoint / "config.json").unlink()
    with pytest.raises(InputError, match=r"no config\.json"):
        ov_export.export_dir(checkpoint, "int8")


def _fake_export(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "openvino_language_model.bin").write_bytes(b"weights" * 100)
    (folder / "config.json").write_text("{}")
    files = {p.name: ov_export.sha256_file(p) for p in folder.iterdir()}
    (folder / ov_export.MANIFEST).write_text(json.dumps({"format": 1, "files": files}))


def test_a_corrupted_export_is_refused_in_one_line(checkpoint: Path, monkeypatch) -> None:
    target = ov_export.export_dir(checkpoint, "int8")
    _fake_export(target)
    monkeypatch.setattr(ov_export, "export_environment", lambda **_: pytest.fail("re-exported"))
    assert ov_export.export_model(checkpoint, "int8") == target  # verified, not made again
    data = bytearray((target / "openvino_language_model.bin").read_bytes())
    data[10] ^= 0xFF
    (target / "openvino_language_model.bin").write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        ov_export.export_model(checkpoint, "int8")
    message = str(info.value)
    assert "openvino_language_model.bin fails its sha256" in message and "delete" in message
    assert "\n" not in message
    (target / ov_export.MANIFEST).write_text("{not json")
    with pytest.raises(ModelError, match="no readable manifest"):
        ov_export.verify_export(target)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_pixels": 1000}, "min_pixels/max_pixels with engine=openvino"),
        ({"temperature": 0.7}, "answers greedily"),
        ({"device": "cuda"}, "CUDA device"),
        ({"weights": "int3"}, "weights='int3'"),
        ({"family": "qwen4"}, "qwen4"),
    ],
)
def test_refusals_come_before_any_export(checkpoint: Path, monkeypatch, options, message) -> None:
    monkeypatch.setattr(ov_export, "export_environment", lambda **_: pytest.fail("exported"))
    with pytest.raises(InputError, match=message):
        OpenVINOGrounder.from_pretrained(checkpoint, **options)
