"""`refseg eval`: score a grounder + segmenter, a segmenter alone, or stored predictions.

Thin: parses the options, opens the dataset and the models, and calls
:func:`refseg.eval.runner.evaluate`, which does the work and the resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from refseg.errors import InputError
from refseg.grounding import DEFAULT_GROUNDER, DEFAULT_GROUNDER_HELP, GROUNDER_SPECS
from refseg.jobs import env_int
from refseg.segmentation import SEGMENTER_SPECS


def _dataset_identity(spec: str) -> str:
    """The spec with an absolute path, so a rerun from another folder still matches."""
    from refseg.data.base import DatasetSpec

    parsed = DatasetSpec.parse(spec)
    text = f"{parsed.kind}:{parsed.path.resolve()}"
    return f"{text}:{parsed.split}" if parsed.split else text


def default_boundary_ratio(dataset: str) -> float:
    """The boundary-IoU width a dataset is reported with: RefCOCO-M's paper and Moondream
    Segmentation report BIoU at 5% of the diagonal, so its runs default to that (comparable
    numbers without a flag); every other dataset uses Cheng et al.'s 2%."""
    from refseg.data.base import DatasetSpec
    from refseg.eval.metrics import DEFAULT_BOUNDARY_RATIO, REFCOCOM_BOUNDARY_RATIO

    kind = DatasetSpec.parse(dataset).kind
    return REFCOCOM_BOUNDARY_RATIO if kind in ("refcocom", "refcoco-m") else DEFAULT_BOUNDARY_RATIO


def _print_summary(document: dict, out: Path, *, report: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from refseg.eval.metrics import METRIC_NAMES
    from refseg.eval.report import failure_note, percent

    console = Console()
    metrics = document["metrics"]
    table = Table(title=f"{document['n_samples']} samples")
    table.add_column("metric")
    table.add_column("%", justify="right")
    for name in METRIC_NAMES:
        table.add_row(name, percent(metrics[name]))
    console.print(table)
    missing = document["failures"].get("missing", 0)
    if missing:
        console.print(
            f"[yellow]{missing} samples have no prediction in the predictions file: "
            "scored as failures (IoU 0)[/yellow]"
        )
    note = failure_note(document)
    if note:  # text from the data and the paths given: never read as rich markup
        console.print(note, style="yellow", markup=False)
    written = [out / "metrics.json"] + [p for p in (out / "report.html",) if report and p.is_file()]
    console.print("wrote " + ", ".join(str(p) for p in written), markup=False)


def _refuse_writing_inputs(out: Path, dataset: str, predictions: Path | None) -> None:
    """A run folder's files must not be the dataset or predictions file being read (e.g.
    ``--predictions run/records.jsonl --out run`` would append to its own input)."""
    from refseg.data.base import DatasetSpec
    from refseg.eval.runner import CONFIG_FILE, METRICS_FILE, RECORDS_FILE
    from refseg.fileio import refuse_overwriting_inputs

    inputs = [DatasetSpec.parse(dataset).path, *([predictions] if predictions else [])]
    for name in (RECORDS_FILE, METRICS_FILE, CONFIG_FILE, "metrics.md", "report.html"):
        refuse_overwriting_inputs({"--out": out / name}, inputs)


def _write_coco_results(path: Path, out: Path, predictions: Path | None) -> None:
    """The run's records as a COCO ``segm`` results file (:mod:`refseg.interop.coco`)."""
    from refseg.eval.runner import load_predictions, load_run_records
    from refseg.interop.coco import eval_coco_results, write_coco_results

    given = load_predictions(predictions) if predictions is not None else None
    count = write_coco_results(path, eval_coco_results(load_run_records(out).values(), given))
    typer.echo(f"wrote {path} ({count} detection{'' if count == 1 else 's'})", err=True)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        dataset: str = typer.Option(
            ..., "--dataset", help="KIND:PATH[:SPLIT], e.g. refcocog:data/refcocog:val."
        ),
        out: Path = typer.Option(..., "--out", help="Run folder (rerun the command to resume)."),
        images: Path | None = typer.Option(
            None,
            "--images",
            help="Image folder (COCO train2014 for the REFER kinds; default: "
            "$REFSEG_COCO_IMAGES or beside the dataset).",
        ),
        grounder: str | None = typer.Option(
            None, help=f"Grounder spec: {GROUNDER_SPECS} ({DEFAULT_GROUNDER_HELP})."
        ),
        segmenter: str = typer.Option("onnx-sam", help=SEGMENTER_SPECS),
        oracle_boxes: bool = typer.Option(
            False,
            "--oracle-boxes",
            help="Prompt the segmenter with the ground-truth boxes (no grounder).",
        ),
        predictions: Path | None = typer.Option(
            None,
            "--predictions",
            help="Score stored predictions: JSONL of result JSON (refseg segment --json) + id.",
        ),
        limit: int | None = typer.Option(None, min=0, help="Evaluate the first N samples."),
        think: bool = typer.Option(False, "--think/--no-think", help="Let the grounder reason."),
        refine: int | None = typer.Option(
            None,
            min=0,
            max=8,
            help="Decoder refinement rounds (default: the segmenter's own; 1 for onnx-sam, "
            "sam and sam2).",
        ),
        device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: auto)."),
        batch_size: int = typer.Option(8, min=1, help="Phrases per grounder batch."),
        max_new_tokens: int | None = typer.Option(
            None,
            "--max-new-tokens",
            min=1,
            max=32768,
            help="Longest answer the grounder may generate (default 1024; an API's max_tokens).",
        ),
        boundary_ratio: float | None = typer.Option(
            None,
            help="Boundary-IoU width / image diagonal (default 0.05 for RefCOCO-M, as it "
            "reports it; 0.02 otherwise).",
        ),
        answer: str | None = typer.Option(
            None, "--answer", help="What the grounder is asked for: box (default), path or outline."
        ),
        refiner: str | None = typer.Option(
            None,
            "--refiner",
            help="Refines path answers: none | sam (gated, default) | sam-raw | CHECKPOINT.pt.",
        ),
        refine_iters: int | None = typer.Option(
            None, "--refine-iters", min=0, max=16, help="Refiner iterations (default 1)."
        ),
        min_score: float | None = typer.Option(
            None,
            "--min-score",
            min=0.0,
            max=1.0,
            help="Drop instances scoring below it before scoring (the report's threshold "
            "table shows every threshold from one run without it).",
        ),
        convention: str = typer.Option(
            "refseg",
            "--convention",
            help="Whose edge-case choices to score with: refseg (default), lisa, rela, "
            "visionreasoner or segzero (the README's conventions table).",
        ),
        fresh: bool = typer.Option(
            False, "--fresh", help="Discard the records already in --out instead of resuming."
        ),
        report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report."),
        coco_results: Path | None = typer.Option(
            None,
            "--coco-results",
            help="Also write the predictions as a COCO segm results file (COCOeval reads it).",
        ),
    ) -> None:
        """Evaluate on a dataset; resumable, data-parallel under accelerate launch."""
        from refseg.data.base import open_dataset
        from refseg.eval.runner import evaluate
        from refseg.jobs import rank_device
        from refseg.pipeline import PipelineOptions

        if predictions is not None and (grounder or oracle_boxes or think):
            raise InputError("--predictions scores stored results: drop --grounder/--oracle-boxes")
        if oracle_boxes and (grounder or think):
            raise InputError("--oracle-boxes uses no grounder: drop --grounder/--think")
        path_options = [
            name
            for name, value in (
                ("--answer", answer),
                ("--refiner", refiner),
                ("--refine-iters", refine_iters),
                ("--min-score", min_score),
            )
            if value is not None
        ]
        if path_options and (predictions is not None or oracle_boxes):
            raise InputError(
                f"{path_options[0]} goes with a grounder, not with stored predictions or "
                "--oracle-boxes"
            )
        from refseg.eval.conventions import get_convention

        rules = get_convention(convention)  # a typo is one line before anything is read
        if boundary_ratio is None:
            boundary_ratio = default_boundary_ratio(dataset)
        if not 0 < boundary_ratio < 1:
            raise InputError(f"--boundary-ratio must be in (0, 1), got {boundary_ratio}")
        device = device or rank_device()
        _refuse_writing_inputs(out, dataset, predictions)
        if coco_results is not None:
            from refseg.data.base import DatasetSpec
            from refseg.fileio import check_writable, refuse_overwriting_inputs

            read = [DatasetSpec.parse(dataset).path, *([predictions] if predictions else [])]
            refuse_overwriting_inputs({"--coco-results": coco_results}, read)
            check_writable(coco_results)  # before the models load
        if predictions is None:  # a typo in a spec is one line before the dataset is read
            from refseg.grounding import parse_grounder_spec
            from refseg.segmentation import check_segmenter_spec

            check_segmenter_spec(segmenter)
            if not oracle_boxes:
                parse_grounder_spec(grounder or DEFAULT_GROUNDER)
        options = None
        if predictions is None and not oracle_boxes:  # the pipeline's options, checked early
            options = PipelineOptions(
                answer=answer,
                think=think,
                refine=refine,
                refiner=refiner or "sam",
                refine_iters=refine_iters,
                min_score=min_score,
            ).resolved(grounder)
        samples = open_dataset(dataset, **({} if images is None else {"images_dir": images}))
        config: dict[str, Any] = {"dataset": _dataset_identity(dataset)}
        if max_new_tokens is not None:  # changes answers: part of what a resume must match
            config["max_new_tokens"] = max_new_tokens
        common = dict(
            out_dir=out,
            limit=limit,
            boundary_ratio=boundary_ratio,
            convention=rules,
            config=config,
            resume=not fresh,
            progress=True,
            report=report,
        )
        try:
            if predictions is not None:
                document = evaluate(samples, predictions=predictions, **common)
            elif oracle_boxes:
                from refseg.segmentation import load_segmenter

                seg = load_segmenter(segmenter, device=device)
                document = evaluate(samples, segmenter=seg, refine=refine, **common)
            else:
                from refseg.pipeline import load_pipeline

                limits = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
                pipe = load_pipeline(grounder, segmenter, options, device=device, **limits)
                document = evaluate(samples, pipeline=pipe, batch_size=batch_size, **common)
        except KeyboardInterrupt:
            typer.echo(
                f"refseg: interrupted; finished samples are kept in {out}: "
                "rerun the same command to resume",
                err=True,
            )
            raise typer.Exit(130) from None
        if env_int("RANK", 0) == 0:
            _print_summary(document, out, report=report)
            if coco_results is not None:  # refseg.interop.coco: the writer and its id rules
                _write_coco_results(coco_results, out, predictions)

    # A command of its own: `eval` is a single command whose options (--dataset, --out) are
    # required, so `refseg eval compare` cannot be a sub-command of it without breaking it.
    @app.command("eval-compare")
    def eval_compare_command(
        runs: list[Path] = typer.Argument(
            ..., metavar="RUN_DIR", help="Run folders of refseg eval; the first is the baseline."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Write compare.json and compare.html (with overlays) here."
        ),
        samples: int = typer.Option(
            8,
            "--samples",
            min=0,
            max=200,
            help="Samples shown in compare.html, those whose IoU differs most between runs.",
        ),
        allow_different_datasets: bool = typer.Option(
            False,
            "--allow-different-datasets",
            help="Compare runs over different datasets (on the sample ids they share).",
        ),
    ) -> None:
        """Put several eval runs side by side: metrics with 95% CIs, paired differences."""
        from refseg.eval.compare import compare_runs, print_comparison, write_comparison

        comparison = compare_runs(runs, allow_different_datasets=allow_different_datasets)
        print_comparison(comparison)
        if out is not None:
            written = write_comparison(comparison, out, samples=samples)
            typer.echo("wrote " + ", ".join(str(p) for p in written))
