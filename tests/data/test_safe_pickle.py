"""The data-only unpickler under hostile input: bounded work, one-line refusals."""

from __future__ import annotations

import pickle
import time

import pytest

from refseg.data import safe_pickle
from refseg.data.safe_pickle import loads_data_pickle
from refseg.errors import InputError
from tests.data import hostile_files


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (hostile_files.shared_dag_pickle, "expands to more than"),
        (hostile_files.nested_pickle, "nest more than"),
        (hostile_files.cyclic_pickle, "nest more than"),
        (hostile_files.huge_length_pickle, "declares 68719476736 bytes"),
        (hostile_files.huge_memo_pickle, "memo index"),
        (hostile_files.huge_text_memo_pickle, "memo index"),
        (lambda: b"", "without a STOP"),
        (lambda: b"\xff", "unknown opcode"),
        (lambda: b"\x80\x02]q", "without a STOP"),
        (lambda: b"\x80\x02X\x05\x00\x00\x00ab.", "declares 5 bytes"),
        (lambda: b"(lp0\nVunterminated", "unterminated"),
    ],
)
def test_hostile_pickles_are_refused_fast(build, message):
    start = time.perf_counter()
    with pytest.raises(InputError, match=message) as info:
        loads_data_pickle(build(), name="refs.p")
    assert time.perf_counter() - start < 5
    assert str(info.value).startswith("refs.p: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_plain_data_round_trips_in_every_protocol(protocol):
    data = [
        {"ref_id": 1, "sentences": [{"sent": "a man", "tokens": ["a", "man"]}], "x": 1.5},
        (1, None, True),
        {"nested": [[[]]], "big": 2**70, "neg": -3},
    ]
    assert loads_data_pickle(pickle.dumps(data, protocol=protocol)) == data


def test_modest_sharing_is_still_read():
    """A pickler shares equal objects through the memo; small sharing stays acceptable."""
    shared = ["a", "b"]
    data = [{"tokens": shared} for _ in range(100)]
    assert loads_data_pickle(pickle.dumps(data, protocol=2)) == data


def test_the_budget_scales_with_the_file():
    """A big honest file (one node per opcode or so) fits its budget; the same nodes reached
    through sharing from a small file do not."""
    honest = [[str(i), i] for i in range(200_000)]
    assert len(loads_data_pickle(pickle.dumps(honest, protocol=2))) == 200_000
    assert safe_pickle._MIN_NODE_BUDGET < 3 * 200_000
