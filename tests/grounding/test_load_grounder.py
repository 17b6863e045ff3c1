import pytest

from refseg.errors import InputError
from refseg.grounding import load_grounder


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
