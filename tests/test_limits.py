"""The request limits: defaults, environment overrides, and what the refusals say."""

from __future__ import annotations

import pytest

from refseg import limits
from refseg.errors import InputError
from refseg.types import Prompt, build_prompts


def test_counts_at_and_over_the_limits():
    limits.check_prompt_counts(limits.DEFAULT_MAX_PROMPTS, [limits.DEFAULT_MAX_POINTS])
    with pytest.raises(InputError, match="REFSEG_MAX_PROMPTS"):
        limits.check_prompt_counts(limits.DEFAULT_MAX_PROMPTS + 1)
    with pytest.raises(InputError, match="REFSEG_MAX_POINTS"):
        limits.check_prompt_counts(1, [1, limits.DEFAULT_MAX_POINTS + 1])


def test_pixels_times_prompts_names_what_fits():
    limits.check_prompt_pixels(125, 2000, 2000)  # exactly the 500 M default
    with pytest.raises(InputError, match="at most 125 prompts") as info:
        limits.check_prompt_pixels(600, 2000, 2000)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1e9", "9" * 5000])
def test_malformed_environment_values_are_errors(monkeypatch, value):
    monkeypatch.setenv("REFSEG_MAX_PROMPTS", value)
    with pytest.raises(InputError, match="REFSEG_MAX_PROMPTS must be a positive integer"):
        limits.max_prompts()


def test_environment_moves_the_limits(monkeypatch):
    monkeypatch.setenv("REFSEG_MAX_POINTS", "2")
    prompt = Prompt(points=[(1.0, 1.0)] * 3)
    with pytest.raises(InputError, match="3 points"):
        limits.check_prompts([prompt], 10, 10)
    monkeypatch.setenv("REFSEG_MAX_POINTS", "3")
    limits.check_prompts([prompt], 10, 10)


def test_build_prompts_applies_them_before_reading_a_coordinate():
    """CLI and server rules: refused on count alone, even with unusable boxes."""
    with pytest.raises(InputError, match="prompts"):
        build_prompts([[float("nan")] * 4] * 101, [], 100, 100)
    with pytest.raises(InputError, match="points"):
        build_prompts([], [(1.0, 1.0, 1)] * 33, 100, 100)
