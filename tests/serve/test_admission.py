"""The body budget's accounting (the server-level behaviour is in tests/hostile)."""

from __future__ import annotations

import pytest

from refseg.errors import InputError
from refseg.serve.admission import BodyBudget


def test_bytes_are_taken_until_the_budget_and_given_back():
    budget = BodyBudget(100)
    assert budget.take(60) and budget.take(40)
    assert not budget.fits(1)
    assert not budget.take(1)  # refused: nothing counted
    assert budget.stats() == {"max_bytes": 100, "held": 100, "refused": 1}
    budget.give(60)
    assert budget.fits(60) and not budget.fits(61)


def test_an_empty_budget_is_refused():
    with pytest.raises(InputError, match="at least 1 byte"):
        BodyBudget(0)


def test_a_budget_below_one_body_is_refused_at_start():
    from refseg.serve import create_app

    with pytest.raises(InputError, match="could never be read"):
        create_app(segmenter=object(), max_body_bytes=1000, max_bodies_bytes=999, api_key="")
