"""Refusing options given where they play no part, in one wording for every command."""

from __future__ import annotations

from collections.abc import Sequence

from refseg.errors import InputError


def refuse_given(names: Sequence[str], where: str) -> None:
    """Raise a one-line :class:`InputError` when any option in ``names`` was given:
    ``"--a goes with WHERE"`` / ``"--a, --b and --c go with WHERE"``. An option that would be
    dropped without a word is worse than an error."""
    if not names:
        return
    named = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    raise InputError(f"{named} {'goes' if len(names) == 1 else 'go'} with {where}")
