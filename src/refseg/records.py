"""Append-only JSONL record logs: how long runs survive a crash, ``kill -9`` or Ctrl-C.

``refseg eval`` and ``refseg segment --batch`` write one JSON record per finished item (each with
an ``"id"``) through :class:`RecordWriter`, and on restart read what is there with
:func:`read_records` and skip those ids. A writer holds an exclusive lock on its file and cuts a
torn last line before appending, so a rerun ends with exactly one record per item.

A run folder as a whole is guarded by :func:`run_lock`, taken before anything in it is read,
deleted or rewritten (``--fresh``, retrying failed items with :func:`drop_records`): the lock on a
records file alone cannot guard a file that is about to be deleted or replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from refseg.errors import InputError
from refseg.fileio import WriteError, atomic_write_bytes, describe_os_error

#: The lock file of a run folder (see :func:`run_lock`); it stays behind, empty, when a run ends.
LOCK_FILE = ".refseg.lock"


#: Longest record line read or written (bytes), the same bound as a JSONL dataset line. An
#: eval record holds one RLE mask and a batch record its instances' masks: kilobytes for real
#: data. Files are read a line at a time, so a huge or corrupted file (a 3 GiB sparse file
#: without a newline) costs at most this much memory before its one-line error.
MAX_RECORD_BYTES = 64 << 20


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one JSONL file, one line at a time; a last line without its newline
    (a torn write) is ignored.

    Any other unreadable line (not JSON, not a record, longer than :data:`MAX_RECORD_BYTES`)
    means the file was edited or corrupted: a one-line :class:`InputError`.
    """
    if not path.is_file():
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        number = 0
        while True:
            try:
                line = handle.readline(MAX_RECORD_BYTES + 1)
            except OSError as exc:
                raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
            if not line:
                return
            number += 1
            if len(line) > MAX_RECORD_BYTES:
                raise InputError(
                    f"{path}: line {number} is longer than {MAX_RECORD_BYTES} bytes; "
                    "not a record file"
                )
            if not line.endswith(b"\n"):
                return  # the torn tail of a killed writer
            if line.strip():
                yield _parse_record(line, path, number)


def _parse_record(line: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:  # also bad UTF-8 (UnicodeDecodeError is a ValueError)
        raise InputError(f"{path}: line {number} is not a JSON record ({exc})") from None
    except RecursionError:
        raise InputError(f"{path}: line {number} is nested too deeply to be a record") from None
    if not isinstance(record, dict) or "id" not in record:
        raise InputError(f'{path}: line {number} is not a record (no "id")')
    return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of one JSONL file (:func:`iter_records`)."""
    return list(iter_records(path))


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One record as one UTF-8 JSON line. Text that UTF-8 cannot hold (a lone surrogate from a
    JSON ``\\ud800`` escape) is kept as JSON escapes instead of crashing the writer."""
    try:
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


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
        try:
            # Unbuffered: a record is on its way to the disk when write() returns, and a failed
            # write leaves nothing in a buffer to be flushed later behind the cut.
            self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        except IsADirectoryError:
            raise WriteError(f"cannot write {path}: it is a folder") from None
        except OSError as exc:
            raise WriteError(describe_os_error(path, exc)) from None
        _lock(self._handle, path, owner)
        try:
            _cut_torn_tail(path)
            self._size = os.fstat(self._handle.fileno()).st_size
        except OSError as exc:
            self._handle.close()
            raise WriteError(describe_os_error(path, exc)) from None

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line; on a write error (disk full) the file is cut back to
        its last whole record and :class:`~refseg.fileio.WriteError` raised."""
        data = encode_record(record)
        if len(data) > MAX_RECORD_BYTES:  # it could never be read back to resume
            raise WriteError(
                f"cannot write {self.path}: a record of {len(data)} bytes is over the "
                f"{MAX_RECORD_BYTES}-byte limit (record {str(record.get('id'))[:80]!r})"
            )
        try:
            view = memoryview(data)
            while view:
                view = view[self._handle.write(view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._handle.fileno(), self._size)
            raise WriteError(describe_os_error(self.path, exc)) from None
        self._size += len(data)
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            try:
                os.fsync(self._handle.fileno())
            except OSError as exc:
                raise WriteError(describe_os_error(self.path, exc)) from None
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self.sync()
            finally:
                self._handle.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def run_lock(folder: Path, owner: str) -> Iterator[None]:
    """Hold the run folder ``folder`` for one process: a second ``owner`` started on the same
    folder is refused with a one-line :class:`InputError` before it reads, deletes or rewrites
    anything there. The kernel drops the lock when the process dies (``kill -9`` included)."""
    path = folder / LOCK_FILE
    try:
        handle = open(path, "ab")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise WriteError(describe_os_error(path, exc)) from None
    try:
        _lock(handle, folder, owner)
        yield
    finally:
        handle.close()


def drop_records(path: Path, drop: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite ``path`` without the records ``drop`` selects (and without a torn last line);
    return how many were dropped. The file is replaced atomically, so call it only while
    holding :func:`run_lock` and with no :class:`RecordWriter` open on it."""
    records = read_records(path)
    kept = [r for r in records if not drop(r)]
    if len(kept) == len(records):
        return 0
    atomic_write_bytes(path, b"".join(encode_record(r) for r in kept))
    return len(records) - len(kept)


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
