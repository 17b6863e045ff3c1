"""Errors a user can act on.

Every exception refseg raises on purpose derives from :class:`RefsegError`; its message is one
line that says what went wrong and what to do. The CLI prints that line and exits 2, so users
never see a traceback for their own mistakes. Anything else reaching the CLI is a bug.
"""

from __future__ import annotations


class RefsegError(Exception):
    """Base class: a one-line, user-facing message."""


class InputError(RefsegError, ValueError):
    """Bad input from the user: an unreadable image, an invalid box, an empty phrase."""


class WeightsError(RefsegError):
    """Model weights cannot be found, fetched or verified."""


class ModelError(RefsegError):
    """A model could not be loaded or failed while running."""
