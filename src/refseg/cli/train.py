"""`refseg train`: registered by its own issue's module (see the README)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `train` commands to ``app`` (none yet)."""
