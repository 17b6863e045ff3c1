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

from refseg.cli.batch import (
    RESULTS_FILE,
    BatchRun,
    _Prefetch,
    folder_pairs,
    merge_results,
    rank_file,
)
from refseg.errors import InputError
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
            stack.enter_context(BatchRun(pairs, tmp_path, rank=rank, world_size=3))
            for rank in range(3)
        ]
        shards = [[p["id"] for p in run.todo] for run in runs]
        assert all(len(run.todo_all) == 7 for run in runs)
        for run in runs:
            with RecordWriter(run.sink) as sink:
                for pair in reversed(run.todo):  # written out of order on purpose
                    sink.write({"id": pair["id"], "options": run.options, "instances": []})
    assert shards == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert (tmp_path / rank_file(2)).is_file()
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
    from refseg.cli.batch import PREFETCH_CHUNKS

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
