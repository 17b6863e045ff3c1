"""Append-only JSONL record logs: how long runs survive a crash, ``kill -9`` or Ctrl-C.

``refseg eval`` and ``refseg segment --batch`` write one JSON record per finished item (each with
an ``"id"``) through :class:`RecordWriter`, and on restart read what is there with
:func:`read_records` and skip those ids. A writer holds an exclusive lock on its file and cuts a
torn last line before appending, so a rerun ends with exactly one record per item.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refseg.errors import InputError


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of one JSONL file; a last line without its newline (a torn write) is ignored.

    Any other unreadable line means the file was edited or corrupted: :class:`InputError`.
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    out = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}: line {number} is not a JSON record ({exc})") from exc
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{path}: line {number} is not an evaluation record")
        out.append(record)
    return out


class RecordWriter:
    """Appends records to a JSONL file so that a killed process loses at most the sample in
    flight: each record is one ``write`` of a full line, flushed at once, and fsynced (at most
    every ``sync_every`` seconds, and on close). ``owner`` names the command in the message a
    second writer gets."""

    def __init__(self, path: Path, *, sync_every: float = 0.0, owner: str = "refseg eval") -> None:
        self.path = path
        self.sync_every = sync_every
        self._last_sync = time.monotonic()
        self._dirty = False
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        _lock(self._handle, path, owner)
        _cut_torn_tail(path)

    def write(self, record: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._handle.flush()
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._handle.fileno())
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
            self._handle.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(handle: Any, path: Path, owner: str) -> None:
    """Take an exclusive lock on the records file for the life of the writer, so that two
    processes started on one run folder cannot interleave their records (the kernel drops the
    lock when the process dies, ``kill -9`` included)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection, as before
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise InputError(
            f"{path} is being written by another {owner}; wait for it or stop it first"
        ) from exc


def _cut_torn_tail(path: Path) -> None:
    """Remove a partial last line so the next append starts on a fresh line."""
    if not path.is_file():
        return
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # Scan back for the last newline (records are small; read the tail in blocks).
        position = size
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            block = handle.read(position - start)
            index = block.rfind(b"\n")
            if index >= 0:
                handle.truncate(start + index + 1)
                return
            position = start
        handle.truncate(0)
