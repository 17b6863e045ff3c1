import pytest

from refseg.errors import InputError
from refseg.grounding import (
    DEFAULT_CPU_GROUNDER,
    DEFAULT_GROUNDER,
    default_grounder,
    load_grounder,
    parse_grounder_spec,
)


def test_openai_spec_options_and_local_only_options_dropped():
    grounder = load_grounder(
        "openai:http://127.0.0.1:9/v1#Qwen/Qwen2.5-VL-7B;coords=resized:max_pixels=1003520;timeout=5",
        device="cuda",
        dtype="bfloat16",
    )
    assert grounder.model == "Qwen/Qwen2.5-VL-7B"
    assert grounder.convention.kind == "resized" and grounder.convention.max_pixels == 1003520
    assert grounder.timeout == 5.0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("openai:http://x", "openai:URL#MODEL"),
        ("openai:http://x#m;colour=red", "unknown option"),
        ("openai:http://x#m;timeout=soon", "number"),
        ("llava:foo", "unknown grounder"),
        ("qwen3-vl:", "unknown grounder"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InputError, match=message):
        load_grounder(spec)


@pytest.fixture
def openvino_installed(monkeypatch):
    """Say whether ``openvino_genai`` is importable, whatever this environment has."""
    import importlib.util

    real = importlib.util.find_spec

    def installed(flag: bool) -> None:
        monkeypatch.setattr(
            "refseg.grounding.importlib.util.find_spec",
            lambda name, *a: (
                (real("refseg") if flag else None) if name == "openvino_genai" else real(name, *a)
            ),
        )

    return installed


@pytest.mark.parametrize(
    "installed, device, cuda, kwargs, expected",
    [
        (True, None, False, {}, DEFAULT_CPU_GROUNDER),
        (True, "cpu", True, {}, DEFAULT_CPU_GROUNDER),
        (True, "auto", False, {}, DEFAULT_CPU_GROUNDER),
        (True, None, True, {}, DEFAULT_GROUNDER),
        (True, "cuda:1", False, {}, DEFAULT_GROUNDER),
        (False, "cpu", False, {}, DEFAULT_GROUNDER),
        (True, "cpu", False, {"features": True}, DEFAULT_GROUNDER),
        (True, "cpu", False, {"options": {"dtype": "bfloat16"}}, DEFAULT_GROUNDER),
        (True, "cpu", False, {"options": {"max_pixels": 401408}}, DEFAULT_GROUNDER),
        (True, "cpu", False, {"options": {"max_new_tokens": 64}}, DEFAULT_CPU_GROUNDER),
    ],
)
def test_default_grounder_follows_the_machine(
    openvino_installed, monkeypatch, installed, device, cuda, kwargs, expected
):
    """The default runs through OpenVINO where the grounder would run on the CPU and the engine
    is installed; GPUs, feature-reading heads and transformers-only options keep transformers."""
    import torch

    openvino_installed(installed)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert default_grounder(device, **kwargs) == expected
    assert parse_grounder_spec(expected).kind == "qwen3-vl"  # both defaults parse
