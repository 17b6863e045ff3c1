"""`refseg segment --batch`: the command's side of :mod:`refseg.batch` (it prints and exits;
the engine runs the pairs)."""

from __future__ import annotations

from pathlib import Path

import typer

from refseg.batch import BatchSummary, run_batch
from refseg.pipeline import PipelineOptions


def batch_command(
    batch: Path,
    out: Path,
    *,
    grounder: str | None,
    segmenter: str,
    options: PipelineOptions,
    device: str | None,
    fresh: bool,
    phrases: Path | None,
    coco_results: Path | None = None,
) -> None:
    """Run the batch and print a one-line summary (rank 0; each rank of a data-parallel run
    says its own share on stderr). Exits 1 after the summary when any pair failed, so a script
    notices without parsing it, and 130 when interrupted (finished pairs are kept)."""
    try:
        summary = run_batch(
            batch,
            out,
            grounder=grounder,
            segmenter=segmenter,
            options=options,
            device=device,
            fresh=fresh,
            phrases=phrases,
            coco_results=coco_results,
        )
    except KeyboardInterrupt:
        typer.echo(
            f"refseg: interrupted; finished pairs are kept in {out}: "
            "rerun the same command to resume",
            err=True,
        )
        raise typer.Exit(130) from None
    report(summary)


def report(summary: BatchSummary) -> None:
    """The summary line(s) of a batch run, and exit 1 if any pair failed."""
    if summary.nothing_to_do:
        if summary.main:
            typer.echo(f"all {summary.total} pairs already done in {summary.results}")
        return
    if summary.world_size > 1 and summary.own:
        own = summary.own
        typer.echo(
            f"rank {summary.rank}: {own['done']} pairs, {own['images']} images in "
            f"{own['seconds']:.1f} s ({own['images'] / max(own['seconds'], 1e-9):.2f} images/s)",
            err=True,
        )
    if not summary.main:
        return
    if summary.waited:
        _exit_if_failed(summary)
        return
    elapsed = max(summary.seconds, 1e-9)
    rates = (
        f"{summary.images / elapsed:.2f} images/s, {summary.done / elapsed:.2f} pairs/s over "
        f"{_count(summary.world_size, 'process', 'es')}"
    )
    retried = f", {summary.retried} failed before and tried again" if summary.retried else ""
    segmented = _count(summary.done - summary.errors, "pair")
    if not summary.errors:
        typer.echo(
            f"{segmented} segmented ({summary.skipped} already done{retried}, 0 failed) -> "
            f"{summary.results}; {rates}"
        )
        return
    # Failed pairs are not segmented: counted apart, and the exit status says so.
    typer.echo(
        f"{segmented} segmented, {summary.errors} failed: see {summary.results} "
        f"({summary.skipped} already done{retried}); {rates}"
    )
    _exit_if_failed(summary)


def _exit_if_failed(summary: BatchSummary) -> None:
    """Exit 1 with one line on stderr when pairs failed.

    1, not 2: the run finished and kept its successes, but not every pair has a result (2 stays
    "bad input, nothing done"); ``refseg eval`` exits 0 instead because it scores failures.
    """
    errors = summary.errors
    if not errors:
        return
    its, it = ("its", "it") if errors == 1 else ("their", "them")
    typer.echo(
        f'refseg: {errors} of {_count(summary.done, "pair")} failed ({its} "error" in '
        f"{summary.results} says why); rerun the same command to try {it} again",
        err=True,
    )
    raise typer.Exit(1)


def _count(number: int, noun: str, plural: str = "s") -> str:
    """``1 pair``, ``2 pairs``."""
    return f"{number} {noun}{'' if number == 1 else plural}"
