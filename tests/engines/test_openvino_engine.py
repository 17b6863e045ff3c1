"""The OpenVINO engine end to end on tiny taught models: a real export (in refseg's isolated
export environment), answers equal to the transformers engine's, the CLI, the refusals."""

from __future__ import annotations

import json

import pytest

from refseg.cli import main
from refseg.errors import InputError
from refseg.grounding import load_grounder
from refseg.image import load_image
from tests.engines.common import ANSWERS, ASTRONAUT, PHRASE


@pytest.fixture(scope="module")
def image():
    return load_image(ASTRONAUT)


@pytest.mark.parametrize("family", sorted(ANSWERS))
def test_greedy_answers_equal_the_transformers_engine(taught_models, image, family) -> None:
    folder = taught_models[family]
    eager = load_grounder(f"{family}:{folder}")
    engine = load_grounder(f"{family}:{folder};engine=openvino;weights=fp32")
    assert eager.generate([image], [PHRASE]) == [ANSWERS[family]]
    assert engine.generate([image], [PHRASE]) == [ANSWERS[family]]
    ours, theirs = engine.ground([image], [PHRASE])[0], eager.ground([image], [PHRASE])[0]
    assert ours.parse_error is None and len(ours.instances) == 1
    assert ours.instances[0].box == pytest.approx(theirs.instances[0].box)
    assert ours.instances[0].points[0] == pytest.approx(theirs.instances[0].points[0])
    # a path answer is asked per call, through the same prompt code
    assert '"path"' in engine.prompt(PHRASE, answer="path")
    assert engine.last_metrics["output_tokens"] >= 1


def test_int8_export_loads_and_answers(taught_models, image) -> None:
    """int8 weights on a 2-layer model may change a digit; the answer still parses."""
    folder = taught_models["qwen3-vl"]
    engine = load_grounder(f"qwen3-vl:{folder};engine=openvino;weights=int8")
    (grounding,) = engine.ground([image], [PHRASE])
    assert grounding.raw_answer.startswith("<answer>")


def test_cli_segment_with_the_engine(taught_models, tmp_path, capsys) -> None:
    folder = taught_models["qwen3-vl"]
    out = tmp_path / "r.json"
    spec = f"qwen3-vl:{folder};engine=openvino;weights=fp32"
    code = main(["segment", str(ASTRONAUT), PHRASE, "--grounder", spec, "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    (instance,) = json.loads(out.read_text())["instances"]
    x1, y1, x2, y2 = instance["box"]  # 273/1000 of 512 px, ...
    assert (x1, y1, x2, y2) == pytest.approx((139.8, 20.0, 320.0, 199.7), abs=1.0)
    assert instance["mask"]["size"] == [512, 512]


def test_heads_that_read_vlm_features_are_refused(taught_models) -> None:
    from refseg.vlm_features import check_feature_grounder

    folder = taught_models["qwen3-vl"]
    engine = load_grounder(f"qwen3-vl:{folder};engine=openvino;weights=fp32")
    with pytest.raises(InputError, match="cannot give them"):
        check_feature_grounder("box decoder x", "fingerprint", engine)
    with pytest.raises(InputError, match="engine=openvino"):
        engine.ground([load_image(ASTRONAUT)], [PHRASE], features=["final"])


def test_qwen25_frames_follow_openvinos_rounding(taught_models) -> None:
    """294 px is 10.5 patches of 28: transformers rounds to even (280), OpenVINO up (308). The
    engine's pixel answers must be read in OpenVINO's frame (its token count is checked)."""
    import numpy as np

    folder = taught_models["qwen2.5-vl"]
    engine = load_grounder(f"qwen2.5-vl:{folder};engine=openvino;weights=fp32")
    image = np.full((140, 294, 3), 128, np.uint8)
    assert engine.resized_size(294, 140) == (308, 140)
    engine.ground([image], [PHRASE])  # raises if the frame were not OpenVINO's
    assert engine.last_metrics["input_tokens"] > 0


def test_the_default_grounder_on_a_cpu_is_the_engine(taught_models, tmp_path, monkeypatch):
    """No --grounder, device cpu: the default hub id, found in the local Hugging Face cache,
    runs through OpenVINO (int8) and answers as the explicit engine spec does."""
    import shutil

    from refseg.grounding import DEFAULT_CPU_GROUNDER, DEFAULT_GROUNDER

    repo = DEFAULT_GROUNDER.split(":", 1)[1]
    cache = tmp_path / "hf" / "hub" / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    shutil.copytree(taught_models["qwen3-vl"], cache / "snapshots" / commit)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(commit)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from refseg.pipeline import load_pipeline

    pipe = load_pipeline(None, "onnx-sam", device="cpu")
    assert pipe.grounder.name == DEFAULT_CPU_GROUNDER
    (instance,) = pipe(load_image(ASTRONAUT), PHRASE).instances
    assert instance.box == pytest.approx((139.8, 20.0, 320.0, 199.7), abs=3.0)
    out = tmp_path / "r.json"
    code = main(["segment", str(ASTRONAUT), PHRASE, "--device", "cpu", "--json", str(out)])
    assert code == 0
    (answer,) = json.loads(out.read_text())["instances"]
    assert answer["box"] == pytest.approx(list(instance.box), abs=0.01)
