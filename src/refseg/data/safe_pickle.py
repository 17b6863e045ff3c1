"""Load data-only pickles (the REFER ``refs(...).p`` files) without running any code.

A pickle is a program: ``pickle.load`` on a downloaded file can import any callable and call it
(``os.system`` via ``__reduce__``). The REFER annotation pickles hold only dicts, lists, strings
and numbers, which the pickle opcodes build directly, so refusing *every* global lookup costs
nothing for them and makes a tampered file harmless: :func:`load_data_pickle` fails with one line
instead of executing anything.

Python 2 pickles store byte strings; they are read as bytes and decoded as UTF-8 (Latin-1 when
that fails), keys included, so the result looks like what Python 2 code saw.

Refusing globals is not enough for a file from outside: a pickle can also make a tiny file cost
unbounded work. The memo lets one object appear many times, so 60 levels of "a list holding the
previous list twice" is 1 KB on disk and 2**60 leaves to a recursive walk; a memo index of 2**32
makes the C unpickler allocate (and clear) a 64 GB table; a declared length of 2**36 bytes is
allocated before it is found missing; 200,000 nested lists overflow any recursive walk. So the
bytes are first scanned opcode by opcode (:func:`_scan`: lengths must fit in the file, memo
indices must be ones a pickler could have written), and the result is walked without recursion
limits of its own but with a budget: at most :data:`MAX_DEPTH` levels and a node count
proportional to the opcodes (a shared container is counted each time it is reached). Each
refusal is one :class:`InputError` line.
"""

from __future__ import annotations

import io
import pickle
import pickletools
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


#: Largest pickle file read (bytes). REFER's largest ``refs(*).p`` is ~40 MB.
MAX_PICKLE_BYTES = 1 << 30
#: Deepest nesting of containers accepted; REFER refs nest 5 levels (list, ref, sentences,
#: sentence, tokens).
MAX_DEPTH = 100
#: Nodes the result may have per opcode of the pickle, plus a floor. Without shared containers
#: there is at most one node per opcode (every reference is at least a GET); the slack admits
#: modest sharing and nothing exponential.
_NODES_PER_OPCODE = 4
_MIN_NODE_BUDGET = 100_000

#: Argument layouts that need more than "skip N bytes" (negative, to tell them from N >= 0).
_COUNTED1, _COUNTED4, _COUNTED8, _LINE, _TWO_LINES = -1, -4, -8, -2, -3
_LONG_BINPUT, _PUT, _STOP, _UNKNOWN = -5, -6, -7, -9
#: Longest newline-terminated argument (protocol 0 strings, GLOBAL names).
_MAX_LINE = 1 << 20


def _opcode_table() -> list[int]:
    """Per opcode byte: how many argument bytes follow (>= 0), or one of the layouts above.

    Built from :mod:`pickletools`' own descriptions of every opcode.
    """
    counted = {
        pickletools.TAKEN_FROM_ARGUMENT1: _COUNTED1,
        pickletools.TAKEN_FROM_ARGUMENT4: _COUNTED4,
        pickletools.TAKEN_FROM_ARGUMENT4U: _COUNTED4,
        pickletools.TAKEN_FROM_ARGUMENT8U: _COUNTED8,
    }
    table = [_UNKNOWN] * 256
    for op in pickletools.opcodes:
        code, arg = op.code.encode("latin-1")[0], op.arg
        if op.name == "LONG_BINPUT":
            table[code] = _LONG_BINPUT
        elif op.name == "PUT":
            table[code] = _PUT
        elif op.name == "STOP":
            table[code] = _STOP
        elif arg is None:
            table[code] = 0
        elif arg.n >= 0:
            table[code] = arg.n
        elif arg.name == "stringnl_noescape_pair":  # GLOBAL, INST: module\nname\n
            table[code] = _TWO_LINES
        elif arg.n == pickletools.UP_TO_NEWLINE:
            table[code] = _LINE
        else:
            table[code] = counted[arg.n]
    return table


_OPCODES = _opcode_table()


def _scan(data: bytes) -> int:
    """Walk the opcodes without building anything; the opcode count, or ``ValueError``.

    A linear pass that refuses what would make the C unpickler allocate far more than the
    file's size: declared lengths past the end of the data, and memo indices beyond the number
    of opcodes (a pickler numbers its memo from 0; BINPUT's one-byte index is harmless).
    """
    end, pos, ops, find, table = len(data), 0, 0, data.find, _OPCODES
    while pos < end:
        layout = table[data[pos]]
        ops += 1
        if layout >= 0:
            pos += 1 + layout
            continue
        at, pos = pos, pos + 1
        if layout in (_COUNTED1, _COUNTED4, _COUNTED8):
            size = -layout
            length = int.from_bytes(data[pos : pos + size], "little", signed=size == 4)
            pos += size + length
            if length < 0 or pos > end:
                raise ValueError(f"byte {at} declares {length} bytes; the data is shorter")
        elif layout == _LONG_BINPUT:
            index = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
            if index > ops:
                raise ValueError(f"memo index {index} at byte {at} is out of range")
        elif layout in (_LINE, _TWO_LINES, _PUT):
            for _ in range(2 if layout == _TWO_LINES else 1):
                newline = find(b"\n", pos, pos + _MAX_LINE)
                if newline < 0:
                    raise ValueError(f"unterminated or overlong argument at byte {at}")
                if layout == _PUT and int(data[pos : min(newline, pos + 21)]) > ops:
                    raise ValueError(f"memo index at byte {at} is out of range")
                pos = newline + 1
        elif layout == _STOP:
            return ops
        else:
            raise ValueError(f"unknown opcode {data[at]:#04x} at byte {at}")
    raise ValueError("the data ends without a STOP opcode")


def _decode_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _decode_bytes(value: Any, budget: int) -> Any:
    """Turn Python 2 byte strings (read with ``encoding='bytes'``) into ``str``, all the way
    down, in at most ``budget`` nodes and :data:`MAX_DEPTH` levels (``ValueError`` past them).

    Shared containers are copied, so the result is a tree whatever the pickle's memo did; the
    budget is what keeps that copy (and every later walk over it) small.
    """
    remaining = budget

    def convert(item: Any, depth: int) -> Any:
        nonlocal remaining
        remaining -= 1
        if remaining < 0:
            raise ValueError(f"it expands to more than {budget} values (shared containers)")
        if isinstance(item, bytes):
            return _decode_text(item)
        if item is None or isinstance(item, (str, int, float, complex)):
            return item
        if depth >= MAX_DEPTH:
            raise ValueError(f"containers nest more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            return {convert(k, depth + 1): convert(v, depth + 1) for k, v in item.items()}
        if isinstance(item, list):
            return [convert(v, depth + 1) for v in item]
        if isinstance(item, (tuple, set, frozenset, bytearray)):
            return type(item)(convert(v, depth + 1) for v in item)
        raise ValueError(f"it holds a {type(item).__name__}")

    return convert(value, 0)


def loads_data_pickle(data: bytes, *, name: str = "pickle") -> Any:
    """Unpickle plain data (dict/list/tuple/str/bytes/int/float/bool/None) from ``data``.

    Bounded: see the module docstring. Every failure is one :class:`InputError` line.
    """
    try:
        opcodes = _scan(data)
    except ValueError as exc:
        raise InputError(f"{name}: not a readable pickle ({exc})") from None
    try:
        value = DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise InputError(
            f"{name}: refused to load: the pickle references {exc}, but annotation pickles "
            "hold only plain data (the file may be tampered with)"
        ) from None
    except RecursionError:
        raise InputError(f"{name}: not a readable pickle (nested too deeply)") from None
    except MemoryError:
        raise InputError(
            f"{name}: not a readable pickle (it asks for more memory than exists)"
        ) from None
    except Exception as exc:  # bytes from outside: opcodes applied to the wrong
        # objects fail inside the unpickler with any builtin error (APPEND to a dict is an
        # AttributeError, a bad LONG an OverflowError...); all mean "not a readable pickle".
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"{name}: not a readable pickle ({type(exc).__name__}: {text})") from None
    try:
        return _decode_bytes(value, max(_MIN_NODE_BUDGET, _NODES_PER_OPCODE * opcodes))
    except ValueError as exc:
        raise InputError(f"{name}: refused: {exc}") from None


def load_data_pickle(path: str | Path) -> Any:
    """Read a data-only pickle file; see :func:`loads_data_pickle`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise InputError(
                f"{path}: {size} bytes is more than an annotation pickle holds "
                f"(limit {MAX_PICKLE_BYTES})"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return loads_data_pickle(data, name=str(path))
