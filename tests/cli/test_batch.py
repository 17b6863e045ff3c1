"""`refseg segment --batch` at scale: folder input, decode-ahead, data-parallel ranks, merging.

The grounder is a local OpenAI-style server (tests/grounding/chat_server.py) answering one fixed
box, so every process of a data-parallel run sees the same answers and the records can be
compared exactly (timings aside).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from refseg.batch import (
    RESULTS_FILE,
    BatchRun,
    folder_pairs,
    merge_results,
)
from refseg.batch.run import _Prefetch
from refseg.errors import InputError
from refseg.jobs import Ranks, rank_file
from refseg.protocol import format_answer
from refseg.records import RecordWriter, read_records
from tests.conftest import ASSETS

ANSWER = format_answer([((60, 40, 400, 380), [(230, 210)])])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three images (the bundled photo, its mirror, a crop) and a stray non-image file."""
    folder = tmp_path_factory.mktemp("photos")
    base = Image.open(ASSETS / "astronaut.jpg").convert("RGB")
    base.save(folder / "a.jpg")
    ImageOps.mirror(base).save(folder / "b.png")
    base.crop((0, 0, 300, 200)).save(folder / "c.jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def phrase_list(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("phrases") / "phrases.txt"
    path.write_text("the astronaut\n\nthe flag\n")
    return path


@pytest.fixture(scope="module")
def chat():
    from tests.grounding.chat_server import ChatServer

    with ChatServer(lambda request: ANSWER) as server:
        yield server


def test_folder_pairs_every_image_with_every_phrase(photos: Path, phrase_list: Path) -> None:
    pairs = folder_pairs(photos, phrase_list)
    assert [p["id"] for p in pairs] == [
        "a.jpg#1", "a.jpg#2", "b.png#1", "b.png#2", "c.jpeg#1", "c.jpeg#2",
    ]  # fmt: skip
    assert {p["phrase"] for p in pairs} == {"the astronaut", "the flag"}
    assert all(Path(p["image"]).is_absolute() for p in pairs)


def test_folder_pairs_bad_inputs_are_one_line(tmp_path: Path, photos: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    good = tmp_path / "p.txt"
    good.write_text("x\n")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    for folder, phrases, message in [
        (empty, good, "no image files"),
        (photos, blank, "no phrases"),
        (photos, latin, "not UTF-8"),
        (photos, tmp_path / "missing.txt", "no such file"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            folder_pairs(folder, phrases)
        assert "\n" not in str(info.value)


def test_ranks_take_every_nth_pair_and_merge_in_pairs_order(tmp_path: Path) -> None:
    pairs = [{"id": str(i), "image": f"/x/{i}.jpg", "phrase": "p"} for i in range(7)]
    with contextlib.ExitStack() as stack:  # three ranks at once (rank 0 holds the folder)
        runs = [
            stack.enter_context(BatchRun(pairs, tmp_path, ranks=Ranks(rank, 3)))
            for rank in range(3)
        ]
        shards = [[p["id"] for p in run.todo] for run in runs]
        assert all(len(run.todo_all) == 7 for run in runs)
        for run in runs:
            with RecordWriter(run.sink) as sink:
                for pair in reversed(run.todo):  # written out of order on purpose
                    sink.write({"id": pair["id"], "options": run.options, "instances": []})
    assert shards == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert (tmp_path / rank_file(RESULTS_FILE, 2)).is_file()
    with BatchRun(pairs, tmp_path) as run:  # a resumed single process sees every rank's work
        assert run.todo == [] and run.skipped == 7
    merge_results(tmp_path, pairs)
    assert [r["id"] for r in read_records(tmp_path / RESULTS_FILE)] == [str(i) for i in range(7)]
    assert not list(tmp_path.glob("results.rank*.jsonl"))


def test_prefetch_stays_bounded_and_leaves_bad_files_to_the_pipeline(
    tmp_path: Path, monkeypatch
) -> None:
    import time

    import refseg.image
    from refseg.batch import PREFETCH_CHUNKS

    decoded = []
    real = refseg.image.load_image
    monkeypatch.setattr(refseg.image, "load_image", lambda p: decoded.append(p) or real(p))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = str(ASSETS / "astronaut.jpg")
    chunks = [[{"image": good}], [{"image": str(bad)}]] + [[{"image": good}]] * 10
    prefetch = _Prefetch(chunks)
    with prefetch as items:
        _, first = next(items)
        assert first[good].shape == (512, 512, 3)
        time.sleep(1.0)
        # the thread waits for the consumer: the queue's chunks plus the one it holds
        assert len(decoded) <= 1 + PREFETCH_CHUNKS + 1 < len(chunks)
        _, second = next(items)
        assert second == {}  # undecodable: the pipeline gets the path and reports it
        rest = list(items)
    assert len(rest) == len(chunks) - 2 and len(decoded) == len(chunks)
    assert not prefetch._thread.is_alive()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


def test_two_processes_write_exactly_the_records_of_one(
    photos: Path, phrase_list: Path, chat, tmp_path: Path, sam
) -> None:
    from refseg.cli import main

    spec = f"openai:{chat.url}#m"
    args = ["segment", "--batch", str(photos), "--phrases", str(phrase_list), "--grounder", spec]
    single = tmp_path / "single"
    assert main([*args, "--out", str(single)]) == 0
    sharded = tmp_path / "sharded"
    # --multi_gpu selects accelerate's torchrun launcher, which also runs CPU processes (gloo).
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "refseg.cli", *args, "--out", str(sharded),
    ]  # fmt: skip
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(scratch)}
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "6 pairs segmented" in run.stdout and "images/s" in run.stdout
    assert "over 2 processes" in run.stdout
    one = read_records(single / RESULTS_FILE)
    two = read_records(sharded / RESULTS_FILE)
    assert len(one) == 6 and all(r["instances"] for r in one)
    assert _without_timings(two) == _without_timings(one)
    assert not list(sharded.glob("results.rank*.jsonl"))  # merged into results.jsonl
    # and the merged run resumes as done, in one process
    assert main([*args, "--out", str(sharded)]) == 0
    assert json.loads((sharded / RESULTS_FILE).read_text().splitlines()[0])["id"] == "a.jpg#1"


def test_phrases_option_goes_with_a_folder(tmp_path: Path, photos: Path, capsys) -> None:
    from refseg.cli import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"image": str(photos / "a.jpg"), "phrase": "x"}) + "\n")
    phrases = tmp_path / "p.txt"
    phrases.write_text("x\n")
    out = str(tmp_path / "out")
    for argv, message in [
        (["--batch", str(pairs), "--phrases", str(phrases)], "--phrases goes with a folder"),
        (["--batch", str(photos)], "give its phrases with --phrases"),
        ([str(photos / "a.jpg"), "--phrases", str(phrases)], "--phrases goes with --batch"),
    ]:
        assert main(["segment", *argv, "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


# --- prompt-only pairs and the exit status (issue 19, 4.2 and 4.3) ----------------------------

FACE_BOX = [140, 20, 320, 200]


def _write_lines(path: Path, items: list) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return path


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from refseg.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_lines(err: str) -> list[str]:
    """refseg's own lines on stderr (a progress bar may share the stream)."""
    return [line for line in err.splitlines() if line.startswith("refseg:")]


def test_prompt_only_pairs_need_no_grounder_and_match_the_api(
    photos: Path, tmp_path: Path, capsys, monkeypatch, sam
) -> None:
    """Boxes and points in a pairs file, with no VLM weights: the segmenter alone, the masks
    those of ``refseg.segment_prompts`` with the prompts ``refseg segment --box/--point`` builds."""
    import numpy as np

    import refseg
    import refseg.grounding
    from refseg import masks
    from refseg.cli.segment import build_prompts
    from refseg.image import load_image

    def no_grounder(*args, **kwargs):
        raise AssertionError("a prompt-only batch loaded a grounder")

    monkeypatch.setattr(refseg.grounding, "load_grounder", no_grounder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pairs = _write_lines(
        tmp_path / "pairs.jsonl",
        [
            {"image": str(photos / "a.jpg"), "boxes": [FACE_BOX], "id": "face"},
            {
                "image": str(photos / "a.jpg"),
                "points": [[230, 110], [5, 5]],
                "point_labels": [1, 0],
            },
            {"image": str(photos / "a.jpg"), "boxes": [[0, 0, 200, 200], [300, 300, 600, 600]]},
        ],
    )
    out = tmp_path / "run"
    argv = ["segment", "--batch", str(pairs), "--out", str(out)]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    assert "3 pairs segmented (0 already done, 0 failed)" in stdout
    records = read_records(out / RESULTS_FILE)
    assert [r["id"] for r in records] == ["face", "2", "3"]
    assert records[1]["prompts"] == {
        "boxes": [], "points": [[230.0, 110.0], [5.0, 5.0]], "point_labels": [1, 0],
    }  # fmt: skip
    assert "phrase" not in records[0] and [len(r["instances"]) for r in records] == [1, 1, 2]
    assert records[2]["instances"][1]["box"] == [300.0, 300.0, 512.0, 512.0]  # clipped, as --box
    assert [("embed_s" in r["timings"]) for r in records] == [True, False, False]  # one image
    cli_prompts = [
        build_prompts(["140,20,320,200"], [], 512, 512),
        build_prompts([], ["230,110", "5,5,0"], 512, 512),
    ]
    embedding = sam.embed(load_image(photos / "a.jpg"))
    for record, prompts in zip(records, cli_prompts):
        expected = refseg.segment_prompts(sam, photos / "a.jpg", prompts, embedding=embedding)
        (instance,) = record["instances"]
        np.testing.assert_array_equal(masks.decode(instance["mask"]), expected.instances[0].mask)
        assert refseg.Result.from_dict(record).instances[0].point_labels == (
            expected.instances[0].point_labels
        )
    # the same prompts resume as done (JSON's 140 and 140.0 are one number) ...
    lines = pairs.read_text().splitlines()
    lines[0] = lines[0].replace("[140, 20, 320, 200]", "[140.0, 20, 320, 200.0]")
    pairs.write_text("\n".join(lines) + "\n")
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and "all 3 pairs already done" in stdout
    # ... and other prompts under the same id are another pair: refused in one line
    pairs.write_text(pairs.read_text().replace("[140.0, 20, 320, 200.0]", "[141, 20, 320, 200]"))
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "different pair under id 'face'" in err
    assert 'prompts {"boxes":[[140.0,20.0,320.0,200.0]]}' in err and "[[141.0," in err


def test_failed_pairs_exit_1_and_are_not_counted_as_segmented(
    photos: Path, tmp_path: Path, capsys, sam
) -> None:
    """A run with failed pairs keeps its successes but exits 1, and says "1 failed" apart from
    the segmented count; the same command tries the failed pairs again."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    pairs = _write_lines(
        tmp_path / "pairs.jsonl",
        [
            {"image": str(photos / "a.jpg"), "boxes": [FACE_BOX]},
            {"image": str(broken), "boxes": [FACE_BOX]},
            # needs the image to be checked: fails its own pair only, when it runs
            {"image": str(photos / "c.jpeg"), "points": [[310, 100]]},  # c.jpeg is 300x200
        ],
    )
    out = tmp_path / "run"
    results = out / RESULTS_FILE
    argv = ["segment", "--batch", str(pairs), "--out", str(out)]
    code, stdout, err = _run(argv, capsys)
    assert code == 1
    assert f"1 pair segmented, 2 failed: see {results} (0 already done)" in stdout
    assert "segmented (" not in stdout  # no "3 pairs segmented (... 2 failed)"
    (line,) = _error_lines(err)
    assert line.startswith("refseg: 2 of 3 pairs failed") and "rerun the same command" in line
    records = read_records(results)
    assert [("error" in r) for r in records] == [False, True, True]
    assert "not a readable image" in records[1]["error"]
    assert "point (310, 100) is outside the 300x200 image" in records[2]["error"]
    assert records[2]["prompts"]["points"] == [[310.0, 100.0]]  # a failure keeps its prompts
    # a rerun tries the two again: still failing, still exit 1
    code, stdout, _ = _run(argv, capsys)
    assert code == 1
    assert "0 pairs segmented, 2 failed" in stdout
    assert "(1 already done, 2 failed before and tried again)" in stdout
    # once the input is fixed, the rerun finishes: exit 0
    broken.write_bytes((photos / "c.jpeg").read_bytes())
    pairs.write_text(pairs.read_text().replace("[310, 100]", "[290, 100]"))
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    assert "2 pairs segmented (1 already done, 2 failed before and tried again, 0 failed)" in stdout
    assert all("error" not in r for r in read_records(results))


def test_a_grounder_is_loaded_for_the_phrases_of_a_mixed_file(
    photos: Path, chat, tmp_path: Path, capsys, sam
) -> None:
    """Phrase pairs go to the grounder, prompt-only pairs do not; one file, one results file in
    its order, and a failed phrase pair makes the exit status 1 like any other."""
    (tmp_path / "a.jpg").write_bytes((photos / "a.jpg").read_bytes())
    pairs = _write_lines(
        tmp_path / "pairs.jsonl",
        [
            {"image": "a.jpg", "phrase": "the astronaut"},
            {"image": "a.jpg", "boxes": [FACE_BOX]},
            {"image": "missing.jpg", "phrase": "the flag"},
            {"image": "a.jpg", "points": [[230, 110]]},
        ],
    )
    before = len(chat.requests)
    argv = ["segment", "--batch", str(pairs), "--out", str(tmp_path / "run")]
    code, stdout, err = _run([*argv, "--grounder", f"openai:{chat.url}#m"], capsys)
    assert code == 1, err
    assert "3 pairs segmented, 1 failed" in stdout
    records = read_records(tmp_path / "run" / RESULTS_FILE)
    assert [r["id"] for r in records] == ["1", "2", "3", "4"]
    assert records[0]["phrase"] == "the astronaut" and len(records[0]["instances"]) == 1
    assert "prompts" not in records[0] and "phrase" not in records[1]
    assert records[1]["prompts"]["boxes"] == [[140.0, 20.0, 320.0, 200.0]]
    assert records[2]["phrase"] == "the flag" and "no such image" in records[2]["error"]
    assert "error" not in records[3] and len(records[3]["instances"]) == 1
    # one embedding of a.jpg, made for the phrase, shared by the prompt-only pairs
    assert [("embed_s" in r.get("timings", {})) for r in records] == [True, False, False, False]
    # the grounder was asked about the one readable phrase pair, nothing else
    assert len(chat.requests) - before == 1
    assert "the astronaut" in chat.requests[-1].prompt


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, 'needs a "phrase" string, or "boxes"/"points" prompts'),
        ({"phrase": "x", "boxes": [FACE_BOX]}, "not both"),
        ({"boxes": FACE_BOX}, "box 1 (140) must be 4 finite numbers"),
        ({"boxes": "1,2,3,4"}, '"boxes" must be a list of [x1, y1, x2, y2]'),
        ({"boxes": [[1, 2, 3]]}, "box 1 ([1, 2, 3]) must be 4 finite numbers"),
        ('"boxes": [[1, 2, 3, NaN]]', "box 1 ([1, 2, 3, NaN]) must be 4 finite numbers"),
        ({"boxes": [[1, 2, 3, True]]}, "must be 4 finite numbers"),
        ({"boxes": [FACE_BOX, [50, 50, 10, 90]]}, "box 2 ([50, 50, 10, 90]) has no area"),
        ({"points": [[1, "2"]]}, 'point 1 ([1, "2"]) must be 2 finite numbers'),
        ({"points": [[-1, 2]]}, "point 1 ([-1, 2]) is outside the image"),
        ({"points": [[1, 2]], "point_labels": [1, 0]}, "one label per point (2 labels, 1 points)"),
        ({"points": [[1, 2]], "point_labels": [2]}, "point label 1 (2) must be 1 (foreground)"),
        ({"points": [[1, 2]], "point_labels": [True]}, "point label 1 (true)"),
        ({"points": [[1, 2]], "point_labels": [0]}, "at least one foreground point"),
        ({"boxes": [FACE_BOX, FACE_BOX], "points": [[1, 2]]}, "ambiguous"),
        ({"boxes": [], "points": []}, "no prompts"),
        ({"point_labels": [1]}, "no prompts"),
        ({"boxes": [FACE_BOX] * 101}, "101 prompts in one request; the limit is 100"),
        ({"points": [[1, 1]] * 33}, "a prompt has 33 points; the limit is 32"),
        ('"boxes": [[1' + "0" * 5000 + ", 2, 3, 4]]", "not JSON (a number too long"),
        ('"boxes": ' + "[" * 100_000, "not JSON"),
    ],
)  # fmt: skip
def test_prompt_pairs_are_validated_first(tmp_path: Path, fields, message: str) -> None:
    """Every line is checked before any work; errors name the file and line, in one line."""
    from refseg.batch import read_pairs

    if isinstance(fields, str):  # JSON that json.dumps would not write
        line = '{"image": "a.jpg", ' + fields + "}"
    else:
        line = json.dumps({"image": "a.jpg", **fields})
    path = _write_lines(tmp_path / "pairs.jsonl", [{"image": "a.jpg", "phrase": "ok"}, line])
    with pytest.raises(InputError) as info:
        read_pairs(path)
    assert str(info.value).startswith(f"{path}: line 2: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_prompt_limits_follow_refseg_limits_and_bad_lines_exit_2(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("REFSEG_MAX_PROMPTS", "2")
    pairs = _write_lines(tmp_path / "pairs.jsonl", [{"image": "a.jpg", "boxes": [FACE_BOX] * 3}])
    out = tmp_path / "run"
    code, _, err = _run(["segment", "--batch", str(pairs), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert (
        f"{pairs}: line 1: 3 prompts in one request; the limit is 2 (set REFSEG_MAX_PROMPTS)" in err
    )
    assert not (out / RESULTS_FILE).exists()


def test_a_record_of_a_phrase_is_not_the_result_of_prompts(tmp_path: Path) -> None:
    """Resume identity includes the prompts: a phrase record under the id of a prompt-only pair
    (or the other way round) is another pair, refused before any work."""
    from refseg.batch import read_pairs

    image = str(ASSETS / "astronaut.jpg")
    phrased = read_pairs(_write_lines(tmp_path / "a.jsonl", [{"image": image, "phrase": "x"}]))
    prompted = read_pairs(
        _write_lines(tmp_path / "b.jsonl", [{"image": image, "boxes": [FACE_BOX]}])
    )
    box = 'prompts {"boxes":[[140.0,20.0,320.0,200.0]]}'
    for number, (records, pairs, there, now) in enumerate(
        [(phrased, prompted, "'x'", box), (prompted, phrased, box, "'x'")]
    ):
        out = tmp_path / f"out{number}"
        out.mkdir()
        with RecordWriter(out / RESULTS_FILE) as sink:
            record = {"id": "1", "image_path": image, "instances": [], **records[0]}
            record.pop("image")
            sink.write(
                {**record, "options": {"answer": "box", "refiner": "sam", "refine_iters": 1}}
            )
        with pytest.raises(InputError, match="different pair under id '1'") as info:
            BatchRun(pairs, out).__enter__()
        assert f"({there} on {image} there, {now} on {image} now)" in str(info.value)


def test_a_box_decoder_refuses_prompt_only_pairs(tmp_path: Path, capsys, monkeypatch) -> None:
    """A box decoder reads the grounder's features: prompt-only pairs are refused in one line
    before any work, not failed one by one."""
    import refseg.segmentation

    class FeatureDecoder:  # a FeatureReader, as the real box decoder
        name = "boxdec:fake.pt"
        sources = ("final",)

        def check_grounder(self, grounder) -> None: ...

        def embed_features(self, image, features) -> None: ...

    monkeypatch.setattr(refseg.segmentation, "load_segmenter", lambda *a, **k: FeatureDecoder())
    pairs = _write_lines(tmp_path / "pairs.jsonl", [{"image": "a.jpg", "boxes": [FACE_BOX]}])
    out = tmp_path / "run"
    code, _, err = _run(["segment", "--batch", str(pairs), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "1 pair to do with box/point prompts, which segmenter boxdec:fake.pt cannot" in err
    assert read_records(out / RESULTS_FILE) == []
