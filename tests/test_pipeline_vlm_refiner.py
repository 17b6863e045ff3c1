"""A refiner trained on the VLM's own vision features (``features: vlm:SOURCE``), end to end.

The grounder is a tiny Qwen3-VL taught to answer one outline on the bundled photo (real
generate); the refiner is trained for two steps on those features (real training, cached per
image) and then refines the rasterized outline inside the Pipeline and the CLI with no image
encoder at all. Whether such a refiner is any good is the paths proof's question.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from refseg.cli import main
from refseg.cli.demo import PHRASE
from refseg.errors import InputError
from refseg.grounding import load_grounder
from refseg.paths import rasterize
from refseg.pipeline import Pipeline
from refseg.protocol import format_answer
from refseg.segmentation.base import FeatureReader
from refseg.segmentation.refiners import TorchRefiner, load_refiner, run_refiner
from refseg.testing.tiny_vlm import build_tiny_vlm
from refseg.train import refiner as T
from tests.conftest import ASSETS, taught_tiny_qwen

IMAGE = ASSETS / "astronaut.jpg"
OUTLINE = [[(300, 60), (600, 60), (600, 380), (300, 380)]]
ANSWER = format_answer([((300, 60, 600, 380), [], OUTLINE)])


class NoEncoder:
    """A segmenter that fails if asked for an image embedding: none may be needed."""

    name = "no-encoder"

    def embed(self, image):
        raise AssertionError("the image encoder ran")

    def predict(self, embedding, prompts, *, refine=None):
        raise AssertionError("the segmenter ran")


@pytest.fixture(scope="module")
def taught(tmp_path_factory, astronaut):
    """``(model folder, grounder)``: a tiny Qwen3-VL that answers ANSWER (an outline) for PHRASE."""
    folder = tmp_path_factory.mktemp("taught")
    return taught_tiny_qwen(
        folder, astronaut, PHRASE, ANSWER, answer_kind="path", max_new_tokens=128
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from refseg.data.refshapes import generate_refshapes

    out = tmp_path_factory.mktemp("shapes")
    generate_refshapes(out, {"train": 3}, seed=1)
    return out


def _config(folder, shapes, out, **extra):
    raw = {
        "output_dir": str(out),
        "dataset": f"refshapes:{shapes}:train",
        "features": "vlm:final",
        "model": str(folder),
        "embedding_cache": str(out.parent / "cache"),
        "net": {"channels": 16, "blocks": 1, "box_channel": True},
        "batch_size": 4,
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "synth": {"per_object": 2},
    }
    raw.update(extra)
    return T.config_from_dict(raw)


@pytest.fixture(scope="module")
def checkpoint(taught, shapes, tmp_path_factory):
    folder, grounder = taught
    out = tmp_path_factory.mktemp("refiner") / "run"
    trainer = T.RefinerTrainer(_config(folder, shapes, out), grounder=grounder).train()
    assert trainer.step == 2 and trainer.cache.computed >= 1
    # A second run on the same cache reads every image's features from disk.
    again = T.RefinerTrainer(_config(folder, shapes, out.parent / "again"), grounder=grounder)
    again.train()
    assert again.cache.computed == 0
    return out / "refiner.pt"


def test_the_checkpoint_records_its_features_and_model(taught, checkpoint):
    _, grounder = taught
    refiner = load_refiner(str(checkpoint))
    assert isinstance(refiner, TorchRefiner)
    assert isinstance(refiner, FeatureReader) and not refiner.needs_embedding
    assert refiner.sources == ["final"]
    assert refiner.fingerprint == grounder.feature_fingerprint
    assert refiner.config["feature_dim"] == grounder.model.config.vision_config.out_hidden_size
    from refseg.grounding.features import vision_digest

    assert refiner.config["vision_digest"] == vision_digest(grounder.model)


def test_pipeline_refines_the_outline_on_the_grounders_features(taught, checkpoint, astronaut):
    _, grounder = taught
    refiner = load_refiner(str(checkpoint))
    result = Pipeline(grounder, NoEncoder(), refiner=refiner, refine_iters=2)(astronaut, PHRASE)
    assert result.raw_answer == ANSWER and result.parse_error is None
    (instance,) = result.instances
    assert "embed_s" not in result.timings
    # The mask is the refiner's, twice, on the features of that very grounding.
    (grounding,) = grounder.ground([astronaut], [PHRASE], features=refiner.sources)
    (g,) = grounding.instances
    raster = rasterize(g.polygons, astronaut.shape[1], astronaut.shape[0])
    inputs = refiner.embed_features(astronaut, grounding.features)
    assert inputs.data.shape == (1, refiner.config["feature_dim"], 64, 64)
    expected = run_refiner(refiner, astronaut, inputs, raster, g.box, 2)
    np.testing.assert_array_equal(instance.mask, expected.mask)


def test_another_vlm_or_an_api_grounder_is_refused_in_one_line(checkpoint, tmp_path):
    refiner = load_refiner(str(checkpoint))
    other = build_tiny_vlm(tmp_path / "other", layers=1, vision_depth=1, text_hidden=96)
    with pytest.raises(InputError, match="trained on another VLM config"):
        Pipeline(load_grounder(f"qwen3-vl:{other}"), NoEncoder(), refiner=refiner)
    with pytest.raises(InputError, match="cannot give them"):
        Pipeline(load_grounder("openai:http://127.0.0.1:9/v1#m"), NoEncoder(), refiner=refiner)
    # Same config, other vision weights (the untaught model): its features would be noise.
    same_config = build_tiny_vlm(tmp_path / "untaught", layers=2, vision_depth=1)
    with pytest.raises(InputError, match="vision weights differ"):
        Pipeline(load_grounder(f"qwen3-vl:{same_config}"), NoEncoder(), refiner=refiner)


def test_cli_segment_with_a_vlm_feature_refiner(taught, checkpoint, tmp_path, capsys):
    folder, _ = taught
    out = tmp_path / "r.json"
    argv = ["segment", str(IMAGE), PHRASE, "--grounder", f"qwen3-vl:{folder}", "--answer", "path"]
    code = main([*argv, "--refiner", str(checkpoint), "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    (instance,) = json.loads(out.read_text())["instances"]
    assert instance["path"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"features": "vlm:final", "model": None}, "need model"),
        ({"features": "clip"}, "use onnx-sam or vlm:SOURCE"),
    ],
)
def test_bad_feature_settings_are_one_line(shapes, tmp_path, extra, message):
    with pytest.raises(InputError, match=message):
        _config(tmp_path / "m", shapes, tmp_path / "out", **extra)


def test_an_unknown_vision_source_names_the_real_ones(taught, shapes, tmp_path):
    folder, grounder = taught
    cfg = _config(folder, shapes, tmp_path / "out", features="vlm:deepstack9")
    with pytest.raises(InputError, match=r"has the vision sources .*final"):
        T.RefinerTrainer(cfg, grounder=grounder)
