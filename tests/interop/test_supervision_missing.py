"""Without the optional supervision package: one line naming the extra."""

from __future__ import annotations

import sys

import pytest

from refseg.errors import InputError
from refseg.types import Result


def test_a_missing_supervision_is_one_line_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "supervision", None)  # import supervision -> ImportError
    with pytest.raises(InputError) as caught:
        Result(width=4, height=3).to_supervision()
    assert str(caught.value) == "supervision is not installed: pip install 'refseg[supervision]'"
