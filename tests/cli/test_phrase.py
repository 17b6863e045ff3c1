"""`refseg segment IMAGE "phrase"`, `--batch` and `refseg demo` with a local model folder.

The grounder is a tiny Qwen3-VL taught (in seconds) to answer one phrase on the bundled photo,
so the real from_pretrained -> generate -> parse -> convert -> segment path runs end to end and
the answer it gives is known.
"""

import json

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.cli import main
from refseg.cli.demo import PHRASE
from refseg.protocol import format_answer
from tests.conftest import ASSETS, taught_tiny_qwen

IMAGE = ASSETS / "astronaut.jpg"
ANSWER = format_answer([((273, 39, 625, 390), [(449, 215)])])


@pytest.fixture(scope="module")
def taught_dir(tmp_path_factory, astronaut):
    return taught_tiny_qwen(tmp_path_factory.mktemp("taught"), astronaut, PHRASE, ANSWER)[0]


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_phrase_writes_json_mask_and_overlay(taught_dir, tmp_path, capsys, sam):
    out = tmp_path / "out"
    code, stdout, err = run(
        [
            "segment",
            str(IMAGE),
            PHRASE,
            "--grounder",
            f"qwen3-vl:{taught_dir}",
            "--json",
            str(out / "r.json"),
            "--mask-png",
            str(out / "m.png"),
            "--overlay",
            str(out / "o.png"),
        ],
        capsys,
    )
    assert code == 0, err
    assert "1 instance(s)" in stdout
    data = json.loads((out / "r.json").read_text())
    assert data["phrase"] == PHRASE and data["raw_answer"] == ANSWER
    assert data["parse_error"] is None and data["reasoning"] is None
    assert data["no_target"] is False
    (instance,) = data["instances"]
    # 0-1000 answer -> pixels of the 512x512 image
    assert instance["box"] == pytest.approx([139.776, 19.968, 320.0, 199.68])
    assert instance["points"] == [pytest.approx([229.888, 110.08])]
    face = masks.decode(instance["mask"])
    assert face[110, 230] and face.sum() > 5000
    np.testing.assert_array_equal(masks.from_png((out / "m.png").read_bytes()), face)
    assert np.asarray(Image.open(out / "o.png")).shape == (512, 512, 3)


def test_batch_through_the_cli_resumes(taught_dir, tmp_path, capsys, sam):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"image": str(IMAGE), "phrase": p, "id": f"p{i}"}) + "\n"
            for i, p in enumerate([PHRASE, "something else", PHRASE])
        )
    )
    argv = [
        "segment",
        "--batch",
        str(pairs),
        "--out",
        str(tmp_path / "run"),
        "--grounder",
        f"qwen3-vl:{taught_dir}",
    ]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "3 pairs segmented (0 already done, 0 failed)" in stdout
    records = [json.loads(x) for x in (tmp_path / "run/results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2"]
    assert records[0]["raw_answer"] == ANSWER and len(records[0]["instances"]) == 1
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "already done" in stdout


def test_demo_with_a_local_model(taught_dir, tmp_path, capsys, sam):
    code, _, err = run(
        ["demo", "--out", str(tmp_path), "--grounder", f"qwen3-vl:{taught_dir}"], capsys
    )
    assert code == 0, err
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["phrase"] == PHRASE and len(data["instances"]) == 1
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_demo_without_grounder_weights_falls_back_to_a_box(tmp_path, capsys, monkeypatch, sam):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    code, stdout, err = run(["demo", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    first = stdout.splitlines()[0]
    assert first.startswith("phrase grounding skipped:") and "Qwen/Qwen3-VL-2B-Instruct" in first
    assert "--grounder 'qwen3-vl:/path/to/local/model'" in first and "engine=openvino" in first
    # Issue 10: the fallback did not say what its box targets.
    from refseg.cli.demo import FALLBACK_BOX

    second = stdout.splitlines()[1]
    assert "140,20,320,200" in second and "the astronaut's face" in second
    data = json.loads((tmp_path / "demo.json").read_text())
    assert len(data["instances"]) == 1 and "phrase" not in data
    assert data["instances"][0]["box"] == list(FALLBACK_BOX)
    assert masks.decode(data["instances"][0]["mask"]).sum() > 5000
    assert (tmp_path / "mask.png").exists() and (tmp_path / "overlay.png").exists()


def test_phrase_errors_exit_2(taught_dir, tmp_path, capsys):
    code, _, err = run(
        ["segment", str(IMAGE), "   ", "--grounder", f"qwen3-vl:{taught_dir}"], capsys
    )
    assert code == 2 and "phrase is empty" in err
    code, _, err = run(
        ["segment", str(IMAGE), "x", "--grounder", "qwen3-vl:/no/such/folder"], capsys
    )
    assert code == 2 and "no such model folder" in err and err.count("\n") == 1
    code, _, err = run(
        ["segment", str(IMAGE), "x", "--grounder", f"qwen3-vl:{taught_dir}", "--device", "cuda"],
        capsys,
    )
    assert code == 2 and "CUDA" in err


# --- batch: outages, other inputs, bad lines (issue 11) ---


@pytest.fixture
def flaky_server():
    """An OpenAI-style grounder endpoint that answers 503 while ``down`` is true."""
    from tests.grounding.chat_server import ChatServer

    state = {"down": True}
    fail = lambda n: (503, b'{"error": "down"}') if state["down"] else None  # noqa: E731
    with ChatServer(lambda r: "<answer>[]</answer>", fail=fail) as server:
        server.state = state
        yield server


def batch_argv(pairs, out, server, *extra):
    spec = f"openai:{server.url}#m;retries=1"
    return ["segment", "--batch", str(pairs), "--out", str(out), "--grounder", spec, *extra]


def write_pairs(path, phrases, image=IMAGE):
    path.write_text("".join(json.dumps({"image": str(image), "phrase": p}) + "\n" for p in phrases))


def test_batch_retries_pairs_that_failed_in_an_outage(flaky_server, tmp_path, capsys, sam):
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "run"
    write_pairs(pairs, [f"thing {i}" for i in range(5)])
    code, stdout, err = run(batch_argv(pairs, out, flaky_server), capsys)
    assert code == 1, err  # failures are an exit status a script can see
    assert f"0 pairs segmented, 5 failed: see {out / 'results.jsonl'}" in stdout
    flaky_server.state["down"] = False
    code, stdout, err = run(batch_argv(pairs, out, flaky_server), capsys)
    assert code == 0, err
    assert "5 pairs segmented (0 already done, 5 failed before and tried again, 0 failed)" in stdout
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"]  # one line per pair
    assert all("error" not in r for r in records)
    # the image file and the result's image size, both
    assert records[0]["image_path"] == str(IMAGE)
    assert records[0]["image"] == {"width": 512, "height": 512}
    code, stdout, _ = run(batch_argv(pairs, out, flaky_server), capsys)
    assert code == 0 and "all 5 pairs already done" in stdout


def test_batch_refuses_another_pairs_file_in_the_same_out(flaky_server, tmp_path, capsys, sam):
    flaky_server.state["down"] = False
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "run"
    write_pairs(first, ["the cat", "the dog"])
    write_pairs(second, ["the cup", "the plate"])
    assert run(batch_argv(first, out, flaky_server), capsys)[0] == 0
    before = (out / "results.jsonl").read_bytes()
    code, _, err = run(batch_argv(second, out, flaky_server), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "different pair under id '1'" in err and "--fresh" in err and "new --out" in err
    assert (out / "results.jsonl").read_bytes() == before
    # a longer version of the same file is not another input: only the new pair runs
    write_pairs(first, ["the cat", "the dog", "the bird"])
    code, stdout, err = run(batch_argv(first, out, flaky_server), capsys)
    assert code == 0 and "1 pair segmented (2 already done" in stdout, err
    # a shorter, unrelated file with its own ids
    second.write_text(json.dumps({"image": str(IMAGE), "phrase": "x", "id": "z"}) + "\n")
    code, _, err = run(batch_argv(second, out, flaky_server), capsys)
    assert code == 2 and "another pairs file" in err
    code, stdout, err = run(batch_argv(second, out, flaky_server, "--fresh"), capsys)
    assert code == 0 and "1 pair segmented (0 already done" in stdout, err
    assert [json.loads(x)["phrase"] for x in (out / "results.jsonl").read_text().splitlines()] == [
        "x"
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"image": "a.jpg", "phrase": "ok"}\n{"image": "a.jpg", "phrase": "bad \\ud800"}\n',
         "line 2: the phrase has a character that is not valid text"),
        (b'{"image": "a.jpg", "phrase": "ok"}\n{"image": "a.jpg", "phrase": "caf\xe9"}\n',
         "line 2: not UTF-8 text"),
        (b'{"image": "a.jpg", "phrase": "   "}\n', "line 1: the phrase is empty"),
        (b'{"image": "a.jpg", "phrase": "x", "id": [1]}\n', 'line 1: "id" must be'),
        (b'\xef\xbb\xbf{"image": "a.jpg", "phrase": "x"}\n', None),  # a UTF-8 BOM is fine
    ],
)  # fmt: skip
def test_bad_batch_lines_name_file_and_line(tmp_path, capsys, content, message):
    from refseg.batch import read_pairs

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(content)
    if message is None:
        assert read_pairs(pairs)[0]["phrase"] == "x"
        return
    argv = ["segment", "--batch", str(pairs), "--out", str(tmp_path / "run")]
    code, _, err = run([*argv, "--grounder", "openai:http://127.0.0.1:9#m"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{pairs}: {message}" in err
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_batch_out_cannot_be_its_own_input(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    write_pairs(out / "results.jsonl", ["x"])
    before = (out / "results.jsonl").read_bytes()
    argv = ["segment", "--batch", str(out / "results.jsonl"), "--out", str(out)]
    code, _, err = run([*argv, "--grounder", "openai:http://127.0.0.1:9#m"], capsys)
    assert code == 2 and "input file" in err and (out / "results.jsonl").read_bytes() == before
    argv = ["segment", "--batch", str(out / "results.jsonl"), "--out", str(out / "results.jsonl")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "not a folder" in err and err.count("\n") == 1


def test_demo_help_names_the_default_grounder(capsys):
    """Issue 10: `refseg demo --help` said "default: the default"."""
    from refseg.grounding import DEFAULT_GROUNDER

    code, stdout, _ = run(["demo", "--help"], capsys)
    assert code == 0
    text = " ".join(stdout.split())
    assert f"default: {DEFAULT_GROUNDER}" in text and "the default" not in text
