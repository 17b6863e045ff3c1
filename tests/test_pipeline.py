"""The text-to-mask pipeline and the resumable batch mode, with the real segmenter.

The grounder here is a scripted stand-in (fixed answers per phrase, run through the real parser
and coordinate conversion), because the pipeline, not the VLM, is what these tests exercise.
"""

import json

import numpy as np
import pytest

from refseg.batch import finished_ids, read_pairs, run_pairs
from refseg.errors import InputError
from refseg.grounding.coords import to_grounding
from refseg.pipeline import MAX_PHRASE_CHARS, Pipeline, check_phrase, segment_prompts
from refseg.protocol import parse_answer
from refseg.types import Prompt
from tests.conftest import ASSETS

FACE = '<answer>[{"bbox_2d": [273, 39, 625, 390], "point_2d": [449, 215]}]</answer>'
ANSWERS = {
    "the face": FACE,
    "the face and the rocket": (
        '<think>two things</think><answer>[{"bbox_2d": [273, 39, 625, 390], '
        '"point_2d": [449, 215]}, {"bbox_2d": [684, 0, 898, 215]}]</answer>'
    ),
    "a purple giraffe": "<answer>[]</answer>",
    "gibberish": "I think it is somewhere",
}


class ScriptedGrounder:
    name = "scripted"

    def __init__(self):
        self.calls = 0

    def ground(self, images, phrases, *, think=False):
        self.calls += 1
        out = []
        for image, phrase in zip(images, phrases):
            parsed = parse_answer(ANSWERS.get(phrase, FACE))
            out.append(to_grounding(parsed, "norm1000", image.shape[1], image.shape[0]))
        return out


class CountingSegmenter:
    """Delegates to the real segmenter, counting encoder passes."""

    def __init__(self, inner):
        self.inner, self.name, self.embeds = inner, inner.name, 0

    def embed(self, image):
        self.embeds += 1
        return self.inner.embed(image)

    def predict(self, embedding, prompts, *, refine=None):
        return self.inner.predict(embedding, prompts, refine=refine)


@pytest.fixture
def pipe(sam):
    return Pipeline(ScriptedGrounder(), CountingSegmenter(sam))


def test_phrase_to_mask(pipe, astronaut):
    result = pipe(astronaut, "the face")
    assert not result.no_target and result.parse_error is None
    (face,) = result.instances
    assert face.box == pytest.approx([139.776, 19.968, 320.0, 199.68])
    assert face.mask[110, 230] and face.mask.sum() > 5000
    assert result.raw_answer == FACE and result.phrase == "the face"


def test_several_instances_and_union(pipe, astronaut):
    result = pipe(astronaut, "the face and the rocket")
    assert len(result.instances) == 2 and result.reasoning == "two things"
    union = result.union_mask()
    np.testing.assert_array_equal(union, result.instances[0].mask | result.instances[1].mask)


def test_no_target_and_parse_failure_carry_no_masks(pipe, astronaut):
    none = pipe(astronaut, "a purple giraffe")
    assert none.no_target and none.instances == [] and none.parse_error is None
    bad = pipe(astronaut, "gibberish")
    assert not bad.no_target and bad.instances == [] and bad.parse_error
    assert bad.raw_answer == "I think it is somewhere"
    assert pipe.segmenter.embeds == 0  # nothing to segment: no encoder pass spent


def test_one_embedding_per_distinct_image(pipe, astronaut):
    flipped = astronaut[:, ::-1].copy()
    pairs = [(astronaut, "the face"), (flipped, "the face"), (astronaut, "the face and the rocket")]
    pairs += [(ASSETS / "astronaut.jpg", "the face")]  # same pixels through a path
    results = pipe.run(pairs)
    assert len(results) == 4 and pipe.grounder.calls == 1
    assert pipe.segmenter.embeds == 2


@pytest.mark.parametrize("phrase", ["", "   ", "x" * (MAX_PHRASE_CHARS + 1)])
def test_bad_phrases_are_refused(pipe, astronaut, phrase):
    with pytest.raises(InputError):
        pipe(astronaut, phrase)


def write_pairs(path, pairs):
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))


def test_batch_resumes_without_redoing_pairs(pipe, tmp_path):
    (tmp_path / "img.jpg").write_bytes((ASSETS / "astronaut.jpg").read_bytes())
    phrases = ["the face", "a purple giraffe", "gibberish", "the face and the rocket", "the face"]
    pairs_file = tmp_path / "pairs.jsonl"
    write_pairs(pairs_file, [{"image": "img.jpg", "phrase": p} for p in phrases])
    write_pairs(tmp_path / "missing.jsonl", [{"image": "nope.jpg", "phrase": "the face"}])
    pairs = read_pairs(pairs_file)
    out = tmp_path / "out"

    first = run_pairs(pipe, pairs[:2], out, think=False, progress=False)
    assert first["done"] == 2
    with open(out / "results.jsonl", "a") as handle:  # a run killed mid-line
        handle.write('{"id": "3", "image": "img.jp')
    second = run_pairs(pipe, pairs, out, think=False, progress=False)
    counts = {k: second[k] for k in ("total", "skipped", "done", "errors")}
    assert counts == {"total": 5, "skipped": 2, "done": 3, "errors": 0}
    assert second["images"] == 1 and second["seconds"] > 0  # one distinct image decoded
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["1", "2", "3", "4", "5"]
    assert lines[1]["no_target"] is True and lines[2]["parse_error"]
    assert len(lines[3]["instances"]) == 2
    assert finished_ids(out / "results.jsonl") == {"1", "2", "3", "4", "5"}
    assert run_pairs(pipe, pairs, out, think=False, progress=False)["done"] == 0

    bad = run_pairs(
        pipe, read_pairs(tmp_path / "missing.jsonl"), tmp_path / "o2", think=False, progress=False
    )
    assert bad["errors"] == 1
    record = json.loads((tmp_path / "o2" / "results.jsonl").read_text())
    assert "no such image" in record["error"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json}\n", "not JSON"),
        ('{"phrase": "x"}\n', "image"),
        ('{"image": "a.jpg"}\n', "phrase"),
        (
            '{"image": "a", "phrase": "b", "id": 1}\n{"image": "a", "phrase": "b", "id": 1}\n',
            "duplicate",
        ),
    ],
)
def test_batch_input_is_validated_first(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_pairs(path)


def test_two_batch_runs_on_one_folder_are_refused(pipe, tmp_path):
    from refseg.records import RecordWriter

    pairs_file = tmp_path / "pairs.jsonl"
    write_pairs(pairs_file, [{"image": str(ASSETS / "astronaut.jpg"), "phrase": "the face"}])
    out = tmp_path / "out"
    out.mkdir()
    with (
        RecordWriter(out / "results.jsonl", owner="refseg segment --batch"),
        pytest.raises(InputError, match="another refseg segment --batch"),
    ):
        run_pairs(pipe, read_pairs(pairs_file), out, think=False, progress=False)


# --- limits and unencodable phrases -----------------------------------------------------------


@pytest.mark.parametrize("phrase", ["bad \ud800", "\udcff tail", "a\udfffb"])
def test_unencodable_phrases_are_refused_in_one_line(pipe, astronaut, phrase):
    with pytest.raises(InputError, match="surrogate") as info:
        pipe(astronaut, phrase)
    assert "\n" not in str(info.value)
    assert check_phrase("  ok — ünïcödé 😀  ") == "ok — ünïcödé 😀"


def test_segment_prompts_refuses_over_the_limits_before_encoding(sam, astronaut, monkeypatch):
    counting = CountingSegmenter(sam)
    many_points = Prompt(points=[(10.0 + i, 10.0) for i in range(33)])
    with pytest.raises(InputError, match="33 points"):
        segment_prompts(counting, astronaut, [many_points])
    with pytest.raises(InputError, match="101 prompts"):
        segment_prompts(counting, astronaut, [Prompt(box=(1, 1, 50, 50))] * 101)
    monkeypatch.setenv("REFSEG_MAX_PROMPT_PIXELS", str(512 * 512))
    with pytest.raises(InputError, match="pixels x prompts"):
        segment_prompts(counting, astronaut, [Prompt(box=(1, 1, 50, 50))] * 2)
    assert counting.embeds == 0


def test_a_grounded_answer_over_the_limits_is_a_parse_error(pipe, astronaut, monkeypatch):
    monkeypatch.setenv("REFSEG_MAX_PROMPTS", "1")
    result = pipe(astronaut, "the face and the rocket")  # two instances
    assert result.parse_error and "2 prompts" in result.parse_error
    assert result.instances == [] and not result.no_target and result.raw_answer
    assert pipe.segmenter.embeds == 0
    assert len(pipe(astronaut, "the face").instances) == 1  # within the limit: segmented


def test_segment_prompts_takes_what_the_pipeline_takes(sam, astronaut, tmp_path):
    """Issue 19: ``refseg.segment_prompts(seg, "photo.jpg", ...)`` was an AttributeError
    traceback. A path (str or Path), a PIL image and an array now give the same masks, and an
    unreadable file is a one-line InputError before any encoder pass."""
    from PIL import Image

    import refseg

    prompts = [Prompt(box=(140, 20, 320, 200)), Prompt(points=[(230, 110), (5, 5)], labels=[1, 0])]
    path = ASSETS / "astronaut.jpg"
    with Image.open(path) as pil:
        sources = [astronaut, str(path), path, pil]
        results = [refseg.segment_prompts(sam, source, prompts) for source in sources]
    first = results[0]
    assert (first.width, first.height) == (512, 512) and len(first.instances) == 2
    assert first.instances[0].mask[110, 230] and first.instances[1].point_labels == [1, 0]
    for other in results[1:]:
        for a, b in zip(first.instances, other.instances, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)
            assert a.score == pytest.approx(b.score)
    counting = CountingSegmenter(sam)
    broken = tmp_path / "photo.jpg"
    broken.write_bytes(b"not a jpeg")
    for source, message in [
        (tmp_path / "missing.jpg", "missing.jpg: no such image file"),
        (str(broken), "photo.jpg: not a readable image"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            segment_prompts(counting, source, prompts)
        assert "\n" not in str(info.value)
    assert counting.embeds == 0


# ---------------------------------------------------------------------------------------------
# Options and the one assembly


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, None),
        ({"answer": "path", "think": True, "refine": 2, "refiner": "none"}, None),
        ({"answer": "contour"}, "unknown answer kind 'contour'"),
        ({"refine": 9}, "refine must be an integer from 0 to 8"),
        ({"refine_iters": -1}, "refine_iters must be an integer from 0 to 16"),
        ({"refine_iters": True}, "refine_iters must be an integer"),
        ({"refiner": " "}, "the refiner must be"),
    ],
)
def test_pipeline_options_are_checked_when_made(fields, error) -> None:
    from refseg.pipeline import PipelineOptions

    if error is None:
        assert PipelineOptions(**fields).refine_iters is None
    else:
        with pytest.raises(InputError, match=error):
            PipelineOptions(**fields)


def test_resolved_options_are_what_a_run_records(tmp_path) -> None:
    from refseg.pipeline import PipelineOptions

    plain = PipelineOptions().resolved("qwen3-vl:x")
    assert plain.path_options() == {"answer": "box", "refiner": "sam", "refine_iters": 1}
    assert PipelineOptions().resolved("moondream:http://h").answer == "path"
    with pytest.raises(InputError, match="unknown refiner 'bogus'"):
        PipelineOptions(refiner="bogus").resolved()
    with pytest.raises(InputError, match="not a file"):
        PipelineOptions(refiner=str(tmp_path / "missing.pt")).resolved()


class AnswerRecordingGrounder(ScriptedGrounder):
    """Records the answer kind of each call; answers an outline when asked for a path."""

    def __init__(self):
        super().__init__()
        self.answers: list[str | None] = []

    def ground(self, images, phrases, *, think=False, answer=None):
        self.answers.append(answer)
        if answer != "path":
            return super().ground(images, phrases, think=think)
        path = '<answer>[{"bbox_2d": [300, 60, 600, 380], "path": "M 300 60 L 600 60 L 450 380 Z"}]'
        return [
            to_grounding(parse_answer(path + "</answer>"), "norm1000", i.shape[1], i.shape[0])
            for i in images
        ]


def test_the_answer_kind_is_an_argument_of_each_call(sam, astronaut) -> None:
    from refseg.pipeline import PipelineOptions, load_pipeline

    grounder = AnswerRecordingGrounder()
    pipe = load_pipeline(grounder, sam, PipelineOptions(refiner="none"))
    boxed = pipe(astronaut, "the face")
    outlined = pipe(astronaut, "the face", answer="path")
    assert grounder.answers == [None, "path"]  # nothing asked: the grounder's own default
    assert outlined.instances[0].path and not boxed.instances[0].path
    # a pipeline made for paths asks for them on every call, without touching the grounder
    paths = load_pipeline(grounder, sam, PipelineOptions(answer="path", refiner="none"))
    paths(astronaut, "the face")
    assert grounder.answers[-1] == "path" and not hasattr(grounder, "answer")
    with pytest.raises(InputError, match="unknown answer kind"):
        pipe(astronaut, "the face", answer="contour")


def test_a_fixed_answer_grounder_refuses_the_other_kind(sam) -> None:
    from refseg.pipeline import PipelineOptions, load_pipeline

    class PathsOnly(ScriptedGrounder):
        fixed_answer = "path"

    with pytest.raises(InputError, match="always answers with a path"):
        load_pipeline(PathsOnly(), sam, PipelineOptions(answer="box"))


def test_load_pipeline_checks_specs_before_loading_anything(monkeypatch) -> None:
    import refseg.grounding
    import refseg.segmentation
    from refseg.pipeline import load_pipeline

    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(refseg.segmentation, "load_segmenter", fail)
    monkeypatch.setattr(refseg.grounding, "load_grounder", fail)
    with pytest.raises(InputError):
        load_pipeline("nope:xyz", "onnx-sam")
    with pytest.raises(InputError):
        load_pipeline("qwen3-vl:x", "nope:xyz")


@pytest.mark.parametrize("reads_features", [False, True])
def test_the_default_grounder_follows_the_heads(sam, monkeypatch, reads_features) -> None:
    """No grounder named, on a CPU with OpenVINO installed: the OpenVINO default, unless a head
    reads the VLM's own features (which that engine cannot give)."""
    import importlib.util

    import refseg.grounding
    from refseg.grounding import DEFAULT_CPU_GROUNDER, DEFAULT_GROUNDER
    from refseg.pipeline import PipelineOptions, load_pipeline

    real = importlib.util.find_spec
    monkeypatch.setattr(
        "refseg.grounding.importlib.util.find_spec",
        lambda name, *a: real("refseg") if name == "openvino_genai" else real(name, *a),
    )
    loaded: list[str] = []

    def record(spec, **options):
        loaded.append(spec)
        return ScriptedGrounder()

    monkeypatch.setattr(refseg.grounding, "load_grounder", record)

    class FeatureSegmenter(CountingSegmenter):
        sources = ("merged",)

        def check_grounder(self, grounder) -> None:
            pass

        def embed_features(self, image, features):
            return None

    segmenter = FeatureSegmenter(sam) if reads_features else sam
    load_pipeline(None, segmenter, PipelineOptions(refiner="none"), device="cpu")
    assert loaded == [DEFAULT_GROUNDER if reads_features else DEFAULT_CPU_GROUNDER]
