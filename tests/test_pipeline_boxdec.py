"""VLM -> box -> box decoder (``boxdec:``) through the Pipeline, the CLI, batch, eval and server.

The grounder is a tiny Qwen3-VL taught to answer one box on the bundled photo (real generate),
and the decoder a small random one saved as a checkpoint: these tests are about the hand-off,
the Result and the refusals; whether the decoder is any good is the training proof's question.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from refseg import masks
from refseg.cli import main
from refseg.cli.demo import PHRASE
from refseg.errors import InputError
from refseg.grounding import load_grounder
from refseg.pipeline import Pipeline
from refseg.protocol import format_answer
from refseg.segmentation import load_segmenter
from refseg.segmentation.boxdec import BoxDecConfig, BoxDecoder, save_checkpoint
from tests.conftest import ASSETS, taught_tiny_qwen

IMAGE = ASSETS / "astronaut.jpg"
ANSWER = format_answer([((273, 39, 625, 390), [(449, 215)])])
TINY = dict(width=32, depth=1, heads=4, mlp_ratio=2.0, pixel_channels=16, fourier=4)


@pytest.fixture(scope="module")
def taught(tmp_path_factory, astronaut):
    """``(model folder, grounder)``: a tiny Qwen3-VL that answers ANSWER for PHRASE."""
    folder = tmp_path_factory.mktemp("taught")
    return taught_tiny_qwen(folder, astronaut, PHRASE, ANSWER, max_new_tokens=48)


@pytest.fixture(scope="module")
def checkpoint(taught, tmp_path_factory):
    import torch

    _, grounder = taught
    torch.manual_seed(0)
    decoder = BoxDecoder(BoxDecConfig.from_vlm_config(grounder.model.config, **TINY))
    folder = tmp_path_factory.mktemp("boxdec")
    save_checkpoint(folder, decoder, grounder.feature_fingerprint)
    return folder


def test_pipeline_decodes_the_grounded_box_from_the_grounders_features(
    taught, checkpoint, astronaut
):
    _, grounder = taught
    segmenter = load_segmenter(f"boxdec:{checkpoint}")
    result = Pipeline(grounder, segmenter)(astronaut, PHRASE)
    assert result.raw_answer == ANSWER and result.parse_error is None
    (instance,) = result.instances
    assert instance.box == pytest.approx((139.776, 19.968, 320.0, 199.68))
    assert instance.mask.shape == (512, 512)
    assert "embed_s" not in result.timings  # no image encoder ran
    # The mask is the decoder's on the features of that very grounding.
    grounding = grounder.ground([astronaut], [PHRASE], features=segmenter.sources)[0]
    embedding = segmenter.embed_features(astronaut, grounding.features)
    from refseg.types import Prompt

    (expected,) = segmenter.predict(embedding, [Prompt(box=instance.box)])
    np.testing.assert_array_equal(instance.mask, expected.mask)
    # its score: the decoder's IoU head times the grounder's token probability
    assert instance.scores["segmenter"] == pytest.approx(expected.score)
    assert instance.score == pytest.approx(expected.score * instance.scores["grounder"])


def test_features_are_not_kept_after_decoding(taught, checkpoint, astronaut, monkeypatch):
    _, grounder = taught
    pipe = Pipeline(grounder, load_segmenter(f"boxdec:{checkpoint}"))
    seen = []
    real = grounder.ground

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.extend(out)
        return out

    monkeypatch.setattr(grounder, "ground", spy)
    pipe(astronaut, PHRASE)
    assert seen and all(g.features is None for g in seen)


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_segment_with_boxdec(taught, checkpoint, tmp_path, capsys):
    folder, _ = taught
    out = tmp_path / "r.json"
    code, _, err = run(
        [
            "segment",
            str(IMAGE),
            PHRASE,
            "--grounder",
            f"qwen3-vl:{folder}",
            "--segmenter",
            f"boxdec:{checkpoint}",
            "--json",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["raw_answer"] == ANSWER
    (instance,) = data["instances"]
    assert masks.decode(instance["mask"]).shape == (512, 512)


def test_cli_batch_with_boxdec(taught, checkpoint, tmp_path, capsys):
    folder, _ = taught
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"image": str(IMAGE), "phrase": PHRASE, "id": f"p{i}"}) + "\n"
            for i in range(2)
        )
    )
    code, _, err = run(
        [
            "segment",
            "--batch",
            str(pairs),
            "--out",
            str(tmp_path / "run"),
            "--grounder",
            f"qwen3-vl:{folder}",
            "--segmenter",
            f"boxdec:{checkpoint}",
        ],
        capsys,
    )
    assert code == 0, err
    records = [json.loads(x) for x in (tmp_path / "run/results.jsonl").read_text().splitlines()]
    assert [r["raw_answer"] for r in records] == [ANSWER, ANSWER]
    assert all(len(r["instances"]) == 1 for r in records)


def test_box_prompts_alone_are_refused_in_one_line(checkpoint, capsys):
    code, _, err = run(
        ["segment", str(IMAGE), "--box", "10,10,100,100", "--segmenter", f"boxdec:{checkpoint}"],
        capsys,
    )
    assert code == 2
    assert err.count("\n") == 1 and "give a phrase" in err


def test_an_openai_grounder_is_refused(checkpoint):
    grounder = load_grounder("openai:http://127.0.0.1:9/v1#model")
    with pytest.raises(InputError, match="cannot give them"):
        Pipeline(grounder, load_segmenter(f"boxdec:{checkpoint}"))


def test_a_decoder_of_another_vlm_config_is_refused(checkpoint, tiny_qwen25_vl_dir, capsys):
    code, _, err = run(
        [
            "segment",
            str(IMAGE),
            "x",
            "--grounder",
            f"qwen2.5-vl:{tiny_qwen25_vl_dir}",
            "--segmenter",
            f"boxdec:{checkpoint}",
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err
    assert "another VLM config" in err.strip().splitlines()[-1]  # after the loading bars


@pytest.mark.parametrize(
    "content, message",
    [(None, "not a box decoder checkpoint"), ("{", "unreadable"), ('{"format": 1}', "not a")],
)
def test_bad_checkpoints_are_one_line_errors(tmp_path, content, message):
    if content is not None:
        (tmp_path / "boxdec.json").write_text(content)
    with pytest.raises(InputError, match=message):
        load_segmenter(f"boxdec:{tmp_path}")


def test_the_servers_grounder_wrapper_hands_features_on(taught, checkpoint, astronaut):
    """The server serialises grounder calls through a wrapper; features must pass through it."""
    import threading

    from refseg.serve.engine import _Serialized

    _, grounder = taught
    wrapped = _Serialized(grounder, threading.Lock())
    pipe = Pipeline(wrapped, load_segmenter(f"boxdec:{checkpoint}"))
    result = pipe.run([(astronaut, PHRASE)], answer="box")
    assert len(result[0].instances) == 1


def test_cli_eval_with_boxdec(taught, checkpoint, tmp_path, capsys):
    folder, _ = taught
    mask = np.zeros((512, 512), bool)
    mask[20:200, 140:320] = True
    rle = masks.normalize(masks.encode(mask))
    record = {"image": str(IMAGE), "phrase": PHRASE, "masks": [rle], "width": 512, "height": 512}
    (tmp_path / "set.jsonl").write_text(
        "".join(json.dumps({**record, "id": f"s{i}"}) + "\n" for i in range(2))
    )
    out = tmp_path / "eval"
    code, _, err = run(
        [
            "eval",
            "--dataset",
            f"jsonl:{tmp_path / 'set.jsonl'}",
            "--out",
            str(out),
            "--grounder",
            f"qwen3-vl:{folder}",
            "--segmenter",
            f"boxdec:{checkpoint}",
            "--no-report",
        ],
        capsys,
    )
    assert code == 0, err
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(not r["failed"] for r in records)
    assert "boxdec:" in (out / "config.json").read_text()
    # --max-new-tokens bounds the answer (cut here: nothing readable) and is part of the run's
    # configuration: resuming the first run with it is refused in one line.
    base = ["eval", "--dataset", f"jsonl:{tmp_path / 'set.jsonl'}", "--no-report"]
    base += ["--grounder", f"qwen3-vl:{folder}", "--segmenter", f"boxdec:{checkpoint}"]
    short = tmp_path / "short"
    code, _, err = run([*base, "--out", str(short), "--max-new-tokens", "6"], capsys)
    assert code == 0, err
    records = [json.loads(x) for x in (short / "records.jsonl").read_text().splitlines()]
    assert all(r["iou"] == 0 and len(r["raw_answer"]) < len(ANSWER) for r in records)
    assert json.loads((short / "config.json").read_text())["identity"]["max_new_tokens"] == 6
    code, _, err = run([*base, "--out", str(out), "--max-new-tokens", "6"], capsys)
    assert code != 0 and "different configuration (max_new_tokens" in err.strip().splitlines()[-1]
