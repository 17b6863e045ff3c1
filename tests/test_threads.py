"""The CPU thread budget: one setting, honoured by onnxruntime sessions, torch and the server."""

from __future__ import annotations

import os

import pytest

from refseg import threads
from refseg.errors import InputError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No budget in the environment; torch's thread count put back for the other tests."""
    import sys

    for name in (threads.ENV, "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None:
        torch.set_num_threads(before)


def test_default_is_the_allowed_cores() -> None:
    assert threads.thread_budget() == len(os.sched_getaffinity(0))


def test_env_sets_it_and_bad_values_are_one_line(monkeypatch) -> None:
    monkeypatch.setenv(threads.ENV, " 3 ")
    assert threads.thread_budget() == 3
    for bad in ("abc", "0", "-2", "1e9", "1025"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(InputError, match="REFSEG_THREADS") as info:
            threads.thread_budget()
        assert "\n" not in str(info.value)


def test_local_processes_share_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.thread_budget() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.thread_budget() == 1  # never 0
    monkeypatch.setenv(threads.ENV, "6")  # an explicit budget wins
    assert threads.thread_budget() == 6


def test_share_splits_the_budget(monkeypatch) -> None:
    monkeypatch.setenv(threads.ENV, "8")
    assert [threads.share(n) for n in (1, 2, 3, 8, 20)] == [8, 4, 2, 1, 1]


def test_set_thread_budget_reaches_torch_and_children(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert threads.set_thread_budget(1) == 1
        assert torch.get_num_threads() == 1
        assert os.environ[threads.ENV] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    with pytest.raises(InputError, match="--threads"):
        threads.set_thread_budget(0)


def test_onnx_sessions_honour_the_budget(sam, monkeypatch) -> None:
    """The intra-op pool is sized by the budget (or an explicit share), not by onnxruntime."""
    from refseg.segmentation import load_segmenter

    monkeypatch.setenv(threads.ENV, "3")
    model = load_segmenter("onnx-sam")
    assert model.encoder.get_session_options().intra_op_num_threads == 3
    assert model.decoder.get_session_options().intra_op_num_threads == 3
    shared = load_segmenter("onnx-sam", threads=1)
    assert shared.encoder.get_session_options().intra_op_num_threads == 1


def test_cli_option_and_bad_env(monkeypatch, capsys) -> None:
    from refseg.cli import main

    monkeypatch.setenv(threads.ENV, "zero")
    assert main(["weights", "path"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refseg: error: REFSEG_THREADS") and "\n" not in err
    assert main(["--threads", "1", "weights", "path"]) == 0  # the option overrides the env
    assert os.environ[threads.ENV] == "1"


def test_training_takes_its_share(monkeypatch) -> None:
    """Under a launcher (OMP_NUM_THREADS=1, as torchrun sets it) a rank still gets its share."""
    torch = pytest.importorskip("torch")
    from refseg.train.common import set_threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        set_threads()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
