"""The resumable evaluation runner behind ``refseg eval`` and :func:`evaluate`.

A run lives in one folder::

    RUN_DIR/
      config.json          what is evaluated (dataset, models, options); a rerun must match it
      records.jsonl        one JSON record per finished sample, appended, flushed and fsynced
      records.rank{R}.jsonl  the same, per process, while a data-parallel run is in progress
      metrics.json         set-level metrics, per-group breakdowns and failure counts (atomic)
      metrics.md           the metrics as a Markdown table
      report.html          a self-contained report with best and worst overlays

Resuming is the normal way to finish an interrupted run: the records already on disk are read
(a torn last line, left by ``kill -9`` mid-write, is ignored and cut off), the samples they cover
are skipped, and the metrics are recomputed from all records, so the numbers equal those of an
uninterrupted run (see :func:`refseg.eval.metrics.aggregate`).

Three modes say where predictions come from:

* a :class:`~refseg.pipeline.Pipeline` (grounder + segmenter): samples are grouped by image so
  each image is embedded once, and phrases on one image go to the grounder as one batch;
* a segmenter alone with the ground-truth boxes as prompts (``--oracle-boxes``, one box prompt per
  ground-truth mask): an upper bound for the grounder, a measure of the segmenter;
* predictions made elsewhere (``--predictions``): result JSON lines as ``refseg segment --json``
  writes them, plus an ``id``; a sample without one scores as a failure.

Data-parallel runs: under ``accelerate launch`` / ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set),
rank R takes the samples whose index i satisfies ``i % WORLD_SIZE == R``, writes
``records.rank{R}.jsonl``, and rank 0 merges everything into ``records.jsonl`` and writes the same
``metrics.json`` a single process would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refseg import masks
from refseg.errors import InputError, RefsegError
from refseg.eval.conventions import DEFAULT_CONVENTION, Convention, get_convention
from refseg.eval.metrics import DEFAULT_BOUNDARY_RATIO, aggregate, breakdowns, score_sample
from refseg.eval.thresholds import match_ious, ranked_ious, threshold_report
from refseg.fileio import atomic_write_text, ensure_dir
from refseg.jobs import load_run_records as jobs_load_run_records
from refseg.jobs import merge_rank_files, rank_file, ranks, run_files
from refseg.npm import sha256_file
from refseg.progress import new_progress
from refseg.records import RecordWriter, drop_records, read_records, run_lock

__all__ = ["RECORDS_FILE", "RecordWriter", "evaluate", "load_run_records", "read_records"]
from refseg.types import Result

if TYPE_CHECKING:
    from refseg.data.base import Sample
    from refseg.pipeline import Pipeline
    from refseg.segmentation.base import Segmenter

CONFIG_FILE = "config.json"
RECORDS_FILE = "records.jsonl"
METRICS_FILE = "metrics.json"
#: Version of the record / config layout; a run folder from another version is refused.
FORMAT_VERSION = 1

#: Failure kinds a record's ``error_kind`` may hold.
FAILURE_KINDS = ("parse", "grounder", "segmenter", "image", "input", "missing", "invalid")

#: Failures of the machinery rather than of the model's answer (an unreachable grounder, a
#: segmenter out of memory, an image file being copied): a rerun tries these samples again.
#: A ``parse`` failure is the model's answer and stays; so do the deterministic others.
RETRIED_KINDS = frozenset({"grounder", "segmenter", "image"})

#: Longest raw grounder answer kept in a record (characters).
MAX_RAW_ANSWER = 4000
#: Instances per sample up to which a record keeps what a score threshold would change
#: (``ranked``, ``match_iou``: one scoring per instance); busier samples keep their own score.
MAX_RANKED = 32


# --------------------------------------------------------------------------------------------
# Records on disk


def rank_records_file(rank: int) -> str:
    return rank_file(RECORDS_FILE, rank)


def run_record_files(out_dir: Path) -> list[Path]:
    """``records.jsonl`` first, then every per-rank file, in rank order."""
    return run_files(out_dir, RECORDS_FILE)


def load_run_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every record of a run folder by sample id (the first one wins if a sample has several)."""
    return jobs_load_run_records(out_dir, RECORDS_FILE)


# --------------------------------------------------------------------------------------------
# Configuration


def _check_config(
    out_dir: Path,
    identity: dict[str, Any],
    notes: dict[str, Any],
    *,
    default_refine: int | None = None,
) -> None:
    """Write ``config.json`` for a new run, or refuse a rerun whose configuration differs.

    ``default_refine``: the segmenter's default rounds, which folders written before defaults
    were resolved recorded as ``refine: None``.
    """
    path = out_dir / CONFIG_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            previous = stored["identity"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise InputError(f"{path} is not a refseg eval config; use a new --out") from None
        if isinstance(previous, dict) and "convention" not in previous:
            previous = {**previous, "convention": DEFAULT_CONVENTION}  # folders from before it
        if isinstance(previous, dict) and previous.get("refine", 0) is None:
            previous = {**previous, "refine": default_refine}
        if isinstance(previous, dict) and previous.get("mode") == "pipeline":
            previous = {**_OPTION_DEFAULTS, **previous}  # folders from before these options
        if previous != identity:
            keys = sorted(set(previous) | set(identity))
            key = next(k for k in keys if previous.get(k) != identity.get(k))
            raise InputError(
                f"{out_dir} holds a run with a different configuration ({key}: "
                f"{previous.get(key)!r} there, {identity.get(key)!r} now); "
                "rerun with --fresh to discard it, or use a new --out"
            )
        return
    text = json.dumps({"identity": identity, "notes": notes}, indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------
# Predictions made elsewhere


def load_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Read ``PREDS.jsonl``: one result JSON per line with an ``id`` (one-line errors).

    Lines are read bounded (:func:`refseg.data.jsonl.iter_json_lines`); each result's masks are
    checked when it is scored, where a bad one makes that sample ``invalid``.
    """
    from refseg.data.jsonl import iter_json_lines

    out: dict[str, dict[str, Any]] = {}
    lines = iter_json_lines(path, "predictions file", where=lambda n: f"{path}: line {n}")
    for number, data in lines:
        if not isinstance(data, dict) or "id" not in data:
            raise InputError(f'{path}: line {number} has no "id"')
        key = str(data["id"])
        if key in out:
            raise InputError(f"{path}: line {number} repeats id {key[:80]!r}")
        check_prediction(data, f"{path}: line {number}")
        out[key] = data
    return out


def check_prediction(data: Mapping[str, Any] | Result, where: str) -> None:
    """Refuse, in one line, a prediction that contradicts itself or costs too much to score.

    * ``"no_target": true`` with instances: the two answers disagree, and which one a reader
      believes decides the score (ReLA reads the flag, an area rule reads the masks), so
      neither wins silently: fix the file.
    * More instances than :func:`refseg.limits.max_prompts`, or instances x image pixels over
      :func:`refseg.limits.max_prompt_pixels`: the same bounds a request to refseg has (1,000
      instances on a 16-megapixel image took a minute to score and 3.3 GB to draw).

    Anything else wrong with a result (bad masks, other sizes) is that sample's ``invalid``.
    """
    from refseg.limits import PROMPT_PIXELS_ENV, PROMPTS_ENV, max_prompt_pixels, max_prompts

    if isinstance(data, Result):
        instances: Any = data.instances
        no_target, width, height = data.no_target, data.width, data.height
    else:
        instances = data.get("instances") or []
        image = data.get("image")
        size = image if isinstance(image, Mapping) else {}
        no_target, width, height = data.get("no_target"), size.get("width"), size.get("height")
    if not isinstance(instances, (list, tuple)):
        return
    if no_target and instances:  # read as Result.from_dict reads it (bool)
        raise InputError(
            f'{where}: "no_target": true with {len(instances)} instance(s); a result is either '
            '"no target" (no instances) or its masks'
        )
    limit = max_prompts()
    if len(instances) > limit:
        raise InputError(
            f"{where}: {len(instances)} instances; at most {limit} per sample (set {PROMPTS_ENV})"
        )
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        budget = max_prompt_pixels()
        if len(instances) * width * height > budget:
            raise InputError(
                f"{where}: {len(instances)} instances on a {width}x{height} image is over the "
                f"limit of {budget} pixels x instances (set {PROMPT_PIXELS_ENV})"
            )


# --------------------------------------------------------------------------------------------
# Producing predictions


@dataclass
class Outcome:
    """What a mode produced for one sample: a result, or a failure."""

    result: Result | None = None
    error_kind: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, RefsegError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def _by_image(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Samples grouped by image file, groups in order of first appearance."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(str(sample.image), []).append(sample)
    return list(groups.values())


def _load_image(sample: Sample):
    from refseg.image import load_image

    image = load_image(sample.image)
    height, width = image.shape[:2]
    if (height, width) != (sample.height, sample.width):
        raise InputError(
            f"{sample.image} is {width}x{height}, "
            f"but the dataset says {sample.width}x{sample.height}"
        )
    return image


def _oracle_outcomes(
    segmenter: Segmenter, samples: Sequence[Sample], refine: int | None
) -> Iterator[tuple[Sample, Outcome]]:
    """Ground-truth boxes as prompts: one box prompt per ground-truth mask, no grounder."""
    from refseg.pipeline import segment_prompts
    from refseg.types import Prompt, clip_box

    for group in _by_image(samples):
        try:
            image = _load_image(group[0])
        except Exception as exc:
            for sample in group:
                yield sample, Outcome(error_kind="image", error=_describe(exc))
            continue
        embedding, embed_s, embed_error = None, 0.0, None
        for sample in group:
            start = time.perf_counter()
            try:
                prompts = [
                    Prompt(box=clip_box(b, sample.width, sample.height)) for b in sample.gt_boxes()
                ]
            except InputError as exc:
                yield sample, Outcome(error_kind="input", error=_describe(exc))
                continue
            if not prompts:  # a no-target sample: the oracle answers "no target"
                result = Result(width=sample.width, height=sample.height, no_target=True)
                yield sample, Outcome(result, timings={"total_s": time.perf_counter() - start})
                continue
            timings: dict[str, float] = {}
            if embedding is None and embed_error is None:
                try:
                    embedding = segmenter.embed(image)
                    embed_s = time.perf_counter() - start
                    timings["embed_s"] = embed_s  # charged to the first sample of the image
                except Exception as exc:
                    embed_error = _describe(exc)
            if embed_error is not None:
                yield sample, Outcome(error_kind="segmenter", error=embed_error)
                continue
            try:
                result = segment_prompts(
                    segmenter, image, prompts, embedding=embedding, refine=refine
                )
            except Exception as exc:
                yield sample, Outcome(error_kind="segmenter", error=_describe(exc))
                continue
            result.timings.update(timings)
            result.timings["total_s"] = time.perf_counter() - start
            yield sample, Outcome(result, timings=result.timings)


def _pipeline_outcomes(
    pipeline: Pipeline, samples: Sequence[Sample], think: bool | None, batch_size: int
) -> Iterator[tuple[Sample, Outcome]]:
    """Grounder + segmenter, in batches of phrases taken image by image.

    Samples are ordered by image, so an image's embedding is made once and dropped from the
    cache as soon as the batches move past that image. A batch that raises is retried one
    sample at a time so a single bad sample costs only itself.
    """
    from refseg.image import image_digest

    ordered = [s for group in _by_image(samples) for s in group]
    images: dict[str, Any] = {}
    digests: dict[str, str] = {}
    embeddings: dict[str, Any] = {}
    for start in range(0, len(ordered), max(1, batch_size)):
        batch = ordered[start : start + batch_size]
        wanted = {str(s.image) for s in batch}
        for key in [k for k in images if k not in wanted]:
            embeddings.pop(digests.pop(key), None)
            del images[key]
        ready: list[Sample] = []
        for sample in batch:
            key = str(sample.image)
            if key not in images:
                try:
                    images[key] = _load_image(sample)
                    digests[key] = image_digest(images[key])
                except Exception as exc:
                    yield sample, Outcome(error_kind="image", error=_describe(exc))
                    continue
            ready.append(sample)
        if not ready:
            continue
        yield from _run_pipeline(pipeline, ready, images, embeddings, think)


def _run_pipeline(
    pipeline: Pipeline,
    batch: list[Sample],
    images: dict[str, Any],
    embeddings: dict[str, Any],
    think: bool | None,
) -> Iterator[tuple[Sample, Outcome]]:
    start = time.perf_counter()
    try:
        results = pipeline.run(
            [(images[str(s.image)], s.phrase) for s in batch], think=think, embeddings=embeddings
        )
    except Exception as exc:
        if len(batch) == 1:
            kind = "input" if isinstance(exc, InputError) else "grounder"
            yield batch[0], Outcome(error_kind=kind, error=_describe(exc))
            return
        for sample in batch:
            yield from _run_pipeline(pipeline, [sample], images, embeddings, think)
        return
    per_sample = (time.perf_counter() - start) / len(batch)
    for sample, result in zip(batch, results):
        result.timings["total_s"] = per_sample
        yield sample, Outcome(result, timings=result.timings)


def _prediction_outcomes(
    predictions: Mapping[str, Any], samples: Sequence[Sample]
) -> Iterator[tuple[Sample, Outcome]]:
    for sample in samples:
        data = predictions.get(sample.id)
        if data is None:
            yield sample, Outcome(error_kind="missing", error="no prediction for this sample")
            continue
        try:
            result = data if isinstance(data, Result) else Result.from_dict(data)
        except RefsegError as exc:
            yield sample, Outcome(error_kind="invalid", error=_describe(exc))
            continue
        odd = [
            i.rle["size"]
            for i in result.instances
            if i.rle["size"] != [sample.height, sample.width]
        ]
        if (result.height, result.width) != (sample.height, sample.width) or odd:
            height, width = odd[0] if odd else (result.height, result.width)
            yield (
                sample,
                Outcome(
                    error_kind="invalid",
                    error=f"prediction{' mask' if odd else ''} is {width}x{height}, "
                    f"the image {sample.width}x{sample.height}",
                ),
            )
            continue
        yield sample, Outcome(result, timings=dict(result.timings))


# --------------------------------------------------------------------------------------------
# Scoring one outcome into a record


def _meta_scalars(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar part of a sample's meta (what breakdowns group by); large values dropped."""
    out = {}
    for key, value in meta.items():
        if (
            isinstance(value, (bool, int, float))
            or value is None
            or (isinstance(value, str) and len(value) <= 200)
        ):
            out[key] = value
    return out


def make_record(
    sample: Sample,
    outcome: Outcome,
    *,
    boundary_ratio: float = DEFAULT_BOUNDARY_RATIO,
    convention: Convention | str | None = None,
) -> dict[str, Any]:
    """Score one sample's outcome and return its JSON record (``convention``: whose edge-case
    choices, :mod:`refseg.eval.conventions`)."""
    result, error_kind, error = outcome.result, outcome.error_kind, outcome.error
    if result is not None and result.parse_error:
        error_kind, error = "parse", result.parse_error
    pred_masks = None
    if result is not None and error_kind is None:
        pred_masks = [i.rle for i in result.instances]
    # Pixels the dataset excludes from scoring (ReasonSeg ignore shapes, COCO crowd regions).
    ignore = sample.meta.get("ignore")
    score_as = functools.partial(
        score_sample,
        sample.masks,
        height=sample.height,
        width=sample.width,
        boundary_ratio=boundary_ratio,
        ignore=ignore,
        target=not sample.no_target,  # the dataset's flag where it has one
        convention=convention,
    )
    try:
        score = score_as(pred_masks)
    except InputError as exc:
        if pred_masks is None:
            raise InputError(f"sample {sample.id}: {exc}") from exc
        error_kind, error, pred_masks = "invalid", _describe(exc), None
        score = score_as(None)
    prediction = None
    instances = result.instances if pred_masks is not None and result is not None else []
    matched: list[float | None] = [None] * len(instances)
    ranked = None
    if pred_masks is not None:
        prediction = masks.normalize(masks.union(pred_masks, sample.height, sample.width))
        if instances and len(instances) <= MAX_RANKED:  # what a score threshold would change
            matched = list(match_ious(sample.masks, pred_masks, sample.height, sample.width))

            def iou_of(kept: list[int]) -> float:  # keeping all is the prediction just scored
                if len(kept) == len(pred_masks):
                    return score.iou
                return score_as([pred_masks[k] for k in kept]).iou

            ranked = ranked_ious([i.score for i in instances], iou_of)
    record: dict[str, Any] = {
        "id": sample.id,
        "phrase": sample.phrase,
        "image": str(sample.image),
        "width": sample.width,
        "height": sample.height,
        "n_gt": len(sample.masks),
        "meta": _meta_scalars(sample.meta),
        **score.to_record(),
        "error_kind": error_kind,
        "error": error,
        "no_target_answer": bool(result.no_target) if result is not None else False,
        "prediction": prediction,
        "instances": [
            {
                "box": i.box,
                "points": i.points,
                "point_labels": i.point_labels,
                "score": round(i.score, 6),
                "scores": {k: None if v is None else round(v, 6) for k, v in i.scores.items()},
                "match_iou": None if m is None else round(m, 6),
            }
            for i, m in zip(instances, matched)
        ],
        "ranked": ranked,
        "no_target_score": (
            None
            if result is None or result.no_target_score is None
            else round(result.no_target_score, 6)
        ),
        "raw_answer": _clip(result.raw_answer if result is not None else None),
        "timings": {k: round(float(v), 6) for k, v in outcome.timings.items()},
    }
    return record


def _clip(text: str | None) -> str | None:
    return text[:MAX_RAW_ANSWER] if text else None


# --------------------------------------------------------------------------------------------
# Distributed helpers


# --------------------------------------------------------------------------------------------
# The runner


@contextlib.contextmanager
def _progress(enabled: bool, total: int, done: int, description: str):
    """A rich progress bar (a no-op when disabled)."""
    if not enabled:
        yield lambda **_: None
        return
    with new_progress(status=True) as bar:
        task = bar.add_task(description, total=total, completed=done, status="")
        yield lambda **kw: bar.update(task, advance=1, **kw)


def _retried(record: Mapping[str, Any], counts: dict[str, int]) -> bool:
    """Whether a stored record is a failure to try again (counted by kind in ``counts``)."""
    kind = record.get("error_kind")
    if kind not in RETRIED_KINDS:
        return False
    counts[kind] = counts.get(kind, 0) + 1
    return True


def _holding_run_lock(func: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``func`` holding the run folder's lock (:func:`refseg.records.run_lock`, rank 0):
    taken before anything is deleted (``resume=False``, ``--fresh``) or rewritten (failed
    samples tried again), so a second run on the folder is refused instead of deleting the
    records of the one in progress."""

    @functools.wraps(func)
    def wrapper(samples: Iterable[Sample], *, out_dir: Any, **kwargs: Any) -> dict[str, Any]:
        rank = kwargs.get("rank")
        if (int(os.environ.get("RANK", "0") or 0) if rank is None else rank) != 0:
            return func(samples, out_dir=out_dir, **kwargs)
        with run_lock(ensure_dir(out_dir), "refseg eval"):
            return func(samples, out_dir=out_dir, **kwargs)

    return wrapper


@_holding_run_lock
def evaluate(
    samples: Iterable[Sample],
    *,
    out_dir: str | os.PathLike[str],
    pipeline: Pipeline | None = None,
    segmenter: Segmenter | None = None,
    predictions: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    limit: int | None = None,
    think: bool | None = None,
    refine: int | None = None,
    batch_size: int = 8,
    boundary_ratio: float = DEFAULT_BOUNDARY_RATIO,
    convention: Convention | str | None = None,
    config: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = False,
    report: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``samples`` and write the run folder; return the ``metrics.json`` document.

    Exactly one source of predictions: ``pipeline`` (grounder + segmenter), ``segmenter``
    (ground-truth boxes as prompts) or ``predictions`` (a ``PREDS.jsonl`` path, or a mapping
    from sample id to :class:`~refseg.types.Result` or its dict).

    Args:
        out_dir: the run folder. An existing run there is resumed when its configuration matches
            (``resume=False`` discards its records instead, e.g. to score a new checkpoint).
        limit: evaluate only the first ``limit`` samples (not part of the configuration, so a
            run may be extended with a larger limit).
        think: let the pipeline's grounder reason (default: the pipeline's own setting).
        refine: decoder refinement rounds in oracle-box mode (a pipeline carries its own).
        batch_size: phrases per grounder call in pipeline mode.
        boundary_ratio: the boundary-IoU width as a fraction of the image diagonal.
        convention: whose edge-case choices to score with (:mod:`refseg.eval.conventions`;
            default refseg's); part of the configuration.
        config: extra identity for ``config.json`` (e.g. ``{"dataset": "refcocog:...:val"}``).
        progress: show a progress bar (rank 0 only).
        report: write ``metrics.md`` and ``report.html`` besides ``metrics.json``.
        rank, world_size: data-parallel shard (default: ``RANK`` / ``WORLD_SIZE``).

    Returns:
        ``{"metrics", "breakdowns", "failures", "n_samples", "config"}``; every process of a
        data-parallel run returns the merged document.
    """
    sources = [x is not None for x in (pipeline, segmenter, predictions)]
    if sum(sources) != 1:
        raise InputError("evaluate needs exactly one of pipeline, segmenter or predictions")
    if pipeline is not None and refine is not None:
        raise InputError("with a pipeline, set refinement on it: Pipeline(..., refine=N)")
    samples = list(samples)
    if limit is not None:
        if limit < 0:
            raise InputError(f"--limit must be >= 0, got {limit}")
        samples = samples[:limit]
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise InputError(f"sample id {sample.id!r} occurs more than once; ids must be unique")
        seen.add(sample.id)
    out = ensure_dir(out_dir)

    rules = get_convention(convention)
    identity: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "boundary_ratio": boundary_ratio,
        "convention": rules.name,
    }
    if pipeline is not None:
        identity.update(
            mode="pipeline",
            grounder=_name(pipeline.grounder),
            segmenter=_name(pipeline.segmenter),
            think=bool(pipeline.think if think is None else think),
            refine=_rounds(pipeline.refine, pipeline.segmenter),
            **pipeline_options(pipeline),
        )
    elif segmenter is not None:
        identity.update(
            mode="oracle-boxes", segmenter=_name(segmenter), refine=_rounds(refine, segmenter)
        )
    else:
        identity["mode"] = "predictions"
        if isinstance(predictions, (str, os.PathLike)):
            path = Path(predictions)
            predictions = load_predictions(path)
            identity["predictions_sha256"] = sha256_file(path)
        else:
            for key, data in predictions.items():
                if isinstance(data, (Mapping, Result)):
                    check_prediction(data, f"prediction {str(key)[:80]!r}")
    identity.update(config or {})
    dist = ranks(rank, world_size)
    if dist.main and not resume:
        for path in run_record_files(out):
            path.unlink(missing_ok=True)
        (out / CONFIG_FILE).unlink(missing_ok=True)
    dist.barrier()
    seg = pipeline.segmenter if pipeline is not None else segmenter
    _check_config(
        out,
        identity,
        {"limit": limit, "n_samples": len(samples)},
        default_refine=_rounds(None, seg),
    )
    # Failed samples are not final: drop their records (rank 0, under the run lock) so this
    # session tries them again; every other record is kept.
    retried: dict[str, int] = {}
    if dist.main:
        for path in run_record_files(out):
            drop_records(path, lambda r: _retried(r, retried))
    dist.barrier()
    if retried and progress:
        from rich.console import Console

        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(retried.items()))
        Console().print(
            f"trying again {sum(retried.values())} samples that failed before ({kinds})"
        )

    done = load_run_records(out)
    shard = dist.share(samples)
    todo = [s for s in shard if s.id not in done]
    shard_total = len(shard)
    if identity["mode"] == "pipeline":
        assert pipeline is not None
        outcomes = _pipeline_outcomes(pipeline, todo, think, batch_size)
    elif identity["mode"] == "oracle-boxes":
        assert segmenter is not None
        outcomes = _oracle_outcomes(segmenter, todo, refine)
    else:
        outcomes = _prediction_outcomes(predictions, todo)  # type: ignore[arg-type]

    name = RECORDS_FILE if dist.world_size == 1 else rank_records_file(dist.rank)
    # Model modes spend ~a second per sample, so an fsync per record is free; scoring stored
    # predictions is fast and cheap to redo, so there a sync per second is enough.
    sync_every = 1.0 if identity["mode"] == "predictions" else 0.0
    ious: list[float] = []
    with (
        RecordWriter(out / name, sync_every=sync_every) as writer,
        _progress(progress and dist.main, shard_total, shard_total - len(todo), "eval") as tick,
    ):
        for sample, outcome in outcomes:
            record = make_record(sample, outcome, boundary_ratio=boundary_ratio, convention=rules)
            writer.write(record)
            ious.append(record["iou"])
            tick(status=f"gIoU {sum(ious) / len(ious):.3f} (this session)")

    dist.barrier()
    if dist.main:
        document = finalize(out, samples, identity, report=report)
    dist.barrier()
    if not dist.main:
        document = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
    return document


#: What a pipeline run recorded before answers and refiners were part of its configuration.
_OPTION_DEFAULTS = {"answer": "box", "refiner": "sam", "refine_iters": 1}


def pipeline_options(pipeline: Pipeline) -> dict[str, Any]:
    """The path-head options of a pipeline run (they change path answers' masks): the answer
    kind the grounder is asked for, the refiner and its iterations; and a score threshold,
    where one is set (it drops instances)."""
    options: dict[str, Any] = {
        "answer": pipeline.answer,
        "refiner": _name(pipeline.refiner),
        "refine_iters": pipeline.refine_iters,
    }
    if pipeline.options.min_score is not None:
        options["min_score"] = pipeline.options.min_score
    return options


def _rounds(refine: int | None, segmenter: Any) -> int | None:
    """The refinement rounds a run really uses: ``None`` means the segmenter's default, which is
    resolved here so that ``--refine 1`` and no ``--refine`` record the same configuration."""
    return refine if refine is not None else getattr(segmenter, "refine", None)


def _name(component: Any) -> str:
    return str(getattr(component, "name", None) or type(component).__name__)


def finalize(
    out_dir: Path,
    samples: Sequence[Sample],
    identity: Mapping[str, Any],
    *,
    report: bool = True,
) -> dict[str, Any]:
    """Merge the run's records, check every sample has one, write metrics and reports."""
    records = merge_rank_files(out_dir, RECORDS_FILE)  # one records.jsonl, whatever the ranks
    missing = [s.id for s in samples if s.id not in records]
    if missing:
        raise RefsegError(
            f"{len(missing)} samples have no record (first: {missing[0]!r}); "
            "a process stopped early: rerun the same command to finish"
        )
    chosen = [records[s.id] for s in samples]
    convention = get_convention(identity.get("convention"))
    failures: dict[str, int] = {}
    for record in chosen:
        if record["error_kind"]:
            failures[record["error_kind"]] = failures.get(record["error_kind"], 0) + 1
    document = {
        "metrics": aggregate(chosen, convention=convention),
        "thresholds": threshold_report(chosen) if any(r.get("ranked") for r in chosen) else None,
        "breakdowns": breakdowns(chosen, convention=convention),
        "failures": dict(sorted(failures.items())),
        "n_samples": len(chosen),
        "config": dict(identity),
    }
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(document, indent=1) + "\n")
    if report:
        from refseg.eval.report import write_reports

        write_reports(out_dir, document, chosen, {s.id: s for s in samples})
    return document
