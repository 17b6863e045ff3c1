"""refseg.records: the append-only record log under a full disk, odd text and concurrent runs."""

import errno
import json
import os

import pytest

from refseg.errors import InputError
from refseg.fileio import WriteError
from refseg.records import RecordWriter, drop_records, read_records, run_lock


def test_full_disk_mid_record_leaves_only_whole_records(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"id": "a", "v": 1})
        real_write = writer._handle.write

        def half_then_full(data):  # the kernel takes part of the line, then the disk is full
            if len(data) > 10:
                real_write(bytes(data[:10]))
                return 10
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(writer._handle, "write", half_then_full, raising=False)
        with pytest.raises(WriteError, match="no space left"):
            writer.write({"id": "b", "v": "x" * 100})
        monkeypatch.undo()
        writer.write({"id": "c", "v": 3})  # space again: the log goes on, uncorrupted
    assert [r["id"] for r in read_records(path)] == ["a", "c"]


def test_lone_surrogates_are_kept_as_escapes(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"id": "s", "phrase": "bad \ud800", "ok": "é"})
    (record,) = read_records(path)
    assert record["phrase"] == "bad \ud800" and record["ok"] == "é"


def test_unopenable_record_files_are_write_errors(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(WriteError, match="folder"):
        RecordWriter(tmp_path / "dir.jsonl")
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError):
        RecordWriter(tmp_path / "file" / "records.jsonl")


def test_run_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with (
        run_lock(tmp_path, "refseg eval"),
        pytest.raises(InputError, match="another refseg eval"),
        run_lock(tmp_path, "refseg eval"),
    ):
        pass
    with run_lock(tmp_path, "refseg eval"):  # released on exit
        pass


def test_drop_records_rewrites_without_the_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [{"id": "1"}, {"id": "2", "error": "x"}, {"id": "3"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": "4", "to')
    assert drop_records(path, lambda r: "error" in r) == 1
    assert path.read_text().splitlines() == ['{"id":"1"}', '{"id":"3"}']  # torn tail gone too
    assert drop_records(path, lambda r: False) == 0


def test_a_deeply_nested_line_is_one_line_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"id": "1"}\n' + b"[" * 200_000 + b"]" * 200_000 + b"\n")
    with pytest.raises(InputError, match="line 2 is nested too deeply"):
        read_records(path)
