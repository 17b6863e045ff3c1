"""One look for every long-running command's progress bar (segment --batch, eval, data)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def new_progress(*, enabled: bool = True, status: bool = False) -> Progress:
    """A rich progress bar: description, bar, done/total, elapsed, remaining.

    ``status`` adds a column showing each task's ``status`` field (set it with
    ``update(task, status=...)``); ``enabled=False`` draws nothing.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, disable=not enabled)
