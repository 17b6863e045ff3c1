"""Load data-only pickles (the REFER ``refs(...).p`` files) without running any code.

A pickle is a program: ``pickle.load`` on a downloaded file can import any callable and call it
(``os.system`` via ``__reduce__``). The REFER annotation pickles hold only dicts, lists, strings
and numbers, which the pickle opcodes build directly, so refusing *every* global lookup costs
nothing for them and makes a tampered file harmless: :func:`load_data_pickle` fails with one line
instead of executing anything.

Python 2 pickles store byte strings; they are read as bytes and decoded as UTF-8 (Latin-1 when
that fails), keys included, so the result looks like what Python 2 code saw.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, NoReturn

from refseg.errors import InputError


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a class or function; data-only pickles never do."""


class DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves no globals and no persistent ids."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> NoReturn:
        raise RefusedGlobal(f"persistent id {pid!r}")


def _decode_bytes(value: Any) -> Any:
    """Turn Python 2 byte strings (read with ``encoding='bytes'``) into ``str``, recursively."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, dict):
        return {_decode_bytes(k): _decode_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode_bytes(v) for v in value)
    return value


def loads_data_pickle(data: bytes, *, name: str = "pickle") -> Any:
    """Unpickle plain data (dict/list/tuple/str/bytes/int/float/bool/None) from ``data``."""
    try:
        value = DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise InputError(
            f"{name}: refused to load: the pickle references {exc}, but annotation pickles "
            "hold only plain data (the file may be tampered with)"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{name}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    except RecursionError:
        raise InputError(f"{name}: not a readable pickle (nested too deeply)") from None
    return _decode_bytes(value)


def load_data_pickle(path: str | Path) -> Any:
    """Read a data-only pickle file; see :func:`loads_data_pickle`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return loads_data_pickle(data, name=str(path))
