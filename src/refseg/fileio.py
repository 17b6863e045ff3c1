"""Output files: written whole or not at all, and a bad output path is one line, not a traceback.

Every file refseg writes goes through :func:`atomic_open` (or the two helpers on top of it):

* the data goes to a temporary file beside the target, which is fsynced and renamed over the
  target only when everything was written, so a killed run, a full disk or Ctrl-C never leaves a
  half-written output (nor a stray temporary file);
* any failure to write (no such folder, a parent that is a file, a directory as the target,
  ``/proc`` paths, a read-only or full file system) is a one-line :class:`WriteError`, which the
  CLI prints and exits 2 on;
* ``-`` means standard output, as on most command lines;
* a symbolic link is written *through*: its target file is replaced and the link stays, so a
  link into a shared results folder keeps pointing there;
* an existing target that is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is
  written to as a stream: renaming a file over a device node would replace the device.

:func:`refuse_overwriting_inputs` stops a command from writing its output over one of its own
inputs (``refseg segment photo.jpg --overlay photo.jpg``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from refseg.errors import RefsegError

#: The output path that means standard output.
STDOUT = "-"

#: errno values that say "the file system refused the data" (as opposed to a bug in the caller):
#: raised inside an :func:`atomic_open` block they become a :class:`WriteError` too.
_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}
)


class WriteError(RefsegError):
    """An output cannot be written (bad path, permissions, full or read-only disk)."""


def describe_os_error(path: str | os.PathLike[str], exc: OSError) -> str:
    """``cannot write PATH: REASON`` in one line (the reason without errno numbers)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return f"cannot write {os.fspath(path)}: {reason}"


def is_stdout(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is ``-`` (standard output)."""
    return path is not None and os.fspath(path) == STDOUT


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` (and its parents); :class:`WriteError` when impossible."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"cannot write into {folder}: it exists and is not a folder") from None
    except NotADirectoryError:
        raise WriteError(
            f"cannot write into {folder}: part of that path is a file, not a folder"
        ) from None
    except OSError as exc:
        raise WriteError(describe_os_error(folder, exc)) from None
    return folder


def check_writable(path: str | os.PathLike[str] | None) -> None:
    """Fail now (:class:`WriteError`) on an output path that can never be written, instead of
    after minutes of model work: a folder as the target, a file where a folder should be, a
    folder that refuses new files (``/proc``, read-only mounts). Creates nothing that stays;
    a full disk can still fail the real write later (and is one line too)."""
    if path is None or is_stdout(path):
        return
    shown = Path(path)
    target = Path(os.path.realpath(shown))
    if target.is_dir():
        raise WriteError(f"cannot write {shown}: it is a folder; give a file name")
    if _is_stream(target):
        return
    folder = target.parent
    while not folder.exists() and folder != folder.parent:  # bounded by the path's depth
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(f"cannot write {shown}: {folder} is a file, not a folder")
    if folder != target.parent:  # the missing folders will be created: can they be?
        if not os.access(folder, os.W_OK | os.X_OK):
            raise WriteError(f"cannot write {shown}: {folder} is not writable")
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".refseg-probe.", dir=folder)
    except OSError as exc:
        raise WriteError(describe_os_error(shown, exc)) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _is_stream(path: Path) -> bool:
    """An existing target that is not a regular file or a folder (a device, FIFO, socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic on
    POSIX file systems. On any exception the temporary file is removed and ``path`` is untouched.
    Errors of the file system (opening, writing, syncing, renaming) are :class:`WriteError`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes new files: mode 'w' or 'wb', not {mode!r}")
    encoding = None if "b" in mode else "utf-8"
    if is_stdout(path):
        yield from _write_stdout(mode)
        return
    shown = Path(path)
    # Write through a symbolic link: replace the file it points to, keep the link.
    target = Path(os.path.realpath(shown))
    if target.is_dir():
        raise WriteError(f"cannot write {shown}: it is a folder; give a file name")
    if _is_stream(target):
        yield from _write_stream(shown, target, mode, encoding)
        return
    ensure_dir(target.parent)
    try:
        # A short prefix: the temporary name must fit NAME_MAX even for a long target name.
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name[:64]}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise WriteError(describe_os_error(shown, exc)) from None
    try:
        os.fchmod(fd, _new_mode(target))
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            try:
                yield handle
            except OSError as exc:
                if exc.errno in _WRITE_ERRNOS:
                    raise WriteError(describe_os_error(shown, exc)) from None
                raise
            except UnicodeEncodeError as exc:
                raise WriteError(
                    f"cannot write {shown}: the text is not valid Unicode ({exc.reason})"
                ) from None
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(describe_os_error(shown, exc)) from None
        raise


def _new_mode(target: Path) -> int:
    """The replaced file's permissions, or those ``open()`` would give a new file (mkstemp
    makes it owner-only, 0600)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_stdout(mode: str) -> Iterator[IO]:
    """Standard output as the target: text or bytes, flushed, never closed."""
    handle = sys.stdout.buffer if "b" in mode else sys.stdout
    try:
        yield handle
        handle.flush()
    except OSError as exc:  # a closed pipe, a full disk behind a redirect
        raise WriteError(describe_os_error("standard output", exc)) from None


def _write_stream(shown: Path, target: Path, mode: str, encoding: str | None) -> Iterator[IO]:
    """A device or FIFO as the target: write to it in place (there is nothing to rename)."""
    try:
        with open(target, mode, encoding=encoding) as handle:
            yield handle
    except OSError as exc:
        raise WriteError(describe_os_error(shown, exc)) from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``-``: standard output)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``-``: standard output)."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would land
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwriting_inputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str]],
) -> None:
    """Refuse (:class:`WriteError`) an output that is one of the inputs, or two outputs that are
    one file: a careless ``--overlay photo.jpg`` would otherwise replace the photo.

    ``outputs`` maps an option name (``--overlay``) to its path or None; links, relative paths
    and hard links are seen through (:func:`os.path.samefile`). More than one ``-`` is refused
    too: two outputs cannot share standard output.
    """
    sources = [Path(p) for p in inputs]
    seen: dict[str, Path] = {}
    to_stdout: str | None = None
    for name, value in outputs.items():
        if value is None:
            continue
        if is_stdout(value):
            if to_stdout is not None:
                raise WriteError(f"{to_stdout} and {name} cannot both be '-' (standard output)")
            to_stdout = name
            continue
        path = Path(value)
        for source in sources:
            if _same_file(path, source):
                raise WriteError(
                    f"{name} {path} is the input file {source}; refusing to overwrite it"
                )
        for other_name, other in seen.items():
            if _same_file(path, other):
                raise WriteError(f"{other_name} and {name} both write {path}; give two names")
        seen[name] = path
