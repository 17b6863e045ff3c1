"""Builders of hostile annotation files, assembled byte by byte (no binary fixtures).

Shared by the unit tests (in-process, where the fix makes them cheap) and the hostile suite
(child processes under limits, where a regression hangs or blows memory without harm).
"""

from __future__ import annotations

import pickle
import struct

_PROTO2 = b"\x80\x02"


def shared_dag_pickle(levels: int = 60) -> bytes:
    """``L0 = [b"x"]; Lk = [Lk-1, Lk-1]``: ~10 bytes a level, ``2**levels`` leaves as a tree."""
    out = _PROTO2 + b"]q\x00C\x01xa"  # EMPTY_LIST, BINPUT 0, SHORT_BINBYTES b"x", APPEND
    for level in range(1, levels + 1):
        # EMPTY_LIST, BINPUT level, MARK, BINGET level-1 twice, APPENDS
        out += b"]q" + bytes([level]) + b"(h" + bytes([level - 1]) + b"h" + bytes([level - 1])
        out += b"e"
    return out + b"."


def nested_pickle(depth: int = 200_000) -> bytes:
    """``depth`` lists each inside the previous one (the C unpickler builds it without
    recursion; anything walking it recursively overflows)."""
    return _PROTO2 + b"]" * depth + b"a" * (depth - 1) + b"."


def cyclic_pickle() -> bytes:
    """A list that contains itself."""
    return _PROTO2 + b"]q\x00h\x00a."


def huge_length_pickle() -> bytes:
    """BINBYTES8 declaring 64 GiB (allocated before the short read is noticed)."""
    return b"\x80\x04\x8e" + struct.pack("<Q", 1 << 36) + b"xx."


def huge_memo_pickle() -> bytes:
    """LONG_BINPUT at index 2**32 - 16: the C unpickler sizes its memo table to twice that."""
    return _PROTO2 + b"]r" + struct.pack("<I", 0xFFFFFFF0) + b"."


def huge_text_memo_pickle() -> bytes:
    """Protocol 0 PUT with a 12-digit index."""
    return b"(lp99999999999\n."


def refs_pickle(refs: list) -> bytes:
    return pickle.dumps(refs, protocol=2)


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth
