"""Several ``refseg eval`` runs side by side (``refseg eval-compare RUN_DIR [RUN_DIR ...]``).

Two tables of numbers from separate runs say little on their own: the runs may cover different
samples (one was stopped early), and a gap of a point of gIoU on a few hundred samples may be
noise. A comparison therefore

* scores every run on the samples present in *every* run (and says how many each run lost),
* gives each metric its 95% bootstrap interval over those samples, and
* gives each run's difference from the first run with a *paired* bootstrap interval (the same
  resampled samples score both runs, so what they share, a hard sample, cancels): the interval
  that says whether one head beats another (:mod:`refseg.eval.bootstrap`).

The same is done per breakdown group (difficulty, kind, number of targets, scene size: the groups
the runner records), with the groups taken from the first run's records so each group holds the
same samples in every run. ``compare.json`` and ``compare.html`` (the samples on which the runs
disagree most: one row per sample, ground truth and each run's overlay side by side, drawn by
:mod:`refseg.eval.report`, and under it a row of crops around the target, :mod:`refseg.eval.crop`)
are written atomically.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refseg.errors import InputError
from refseg.eval.bootstrap import CI_METRICS, bootstrap_difference, bootstrap_metrics
from refseg.eval.metrics import BREAKDOWN_FIELDS, aggregate, target_group
from refseg.eval.runner import CONFIG_FILE, METRICS_FILE, load_run_records, run_record_files
from refseg.fileio import atomic_write_text, ensure_dir

#: Metrics a comparison shows, in table order; each gets an interval.
COMPARED_METRICS = ("gIoU", "cIoU", "mBIoU", "Pr@0.5", "N-acc")
#: Resamples of the bootstrap; fewer on very large runs so that one resampling matrix stays
#: below :data:`MAX_BOOT_CELLS` entries (memory stays bounded whatever the run size).
N_BOOT = 1000
MAX_BOOT_CELLS = 20_000_000
MIN_BOOT = 100
#: Default and largest number of samples whose overlays compare.html shows.
DEFAULT_SAMPLES = 8
MAX_SAMPLES = 200
#: Fields every record must carry to be compared (what the metrics are computed from).
_RECORD_FIELDS = ("iou", "biou", "inter", "union", "failed", "gt_empty", "pred_empty")

COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"


@dataclass
class Run:
    """One run folder as read for a comparison."""

    path: Path
    identity: dict[str, Any]
    records: dict[str, dict[str, Any]]
    planned: int | None  # samples the run set out to score (config.json notes), if recorded
    finished: bool  # metrics.json written and every planned sample has a record

    @property
    def label(self) -> str:
        return describe_run(self.identity, self.path)

    @property
    def dataset(self) -> str | None:
        value = self.identity.get("dataset")
        return None if value is None else str(value)


@dataclass
class Comparison:
    """The numbers of a comparison (what ``compare.json`` holds) plus the runs they came from."""

    runs: list[Run]
    ids: list[str]
    document: dict[str, Any] = field(default_factory=dict)


def describe_run(identity: Mapping[str, Any], path: Path) -> str:
    """A short name for a run: what produced its masks, and its folder."""
    mode = identity.get("mode")
    if mode == "pipeline":
        how = f"{identity.get('grounder')} + {identity.get('segmenter')}"
        if identity.get("answer") == "path":
            how += f" (path, refiner {identity.get('refiner')})"
    elif mode == "oracle-boxes":
        how = f"{identity.get('segmenter')} with ground-truth boxes"
    elif mode == "predictions":
        how = "stored predictions"
    else:
        how = str(mode)
    return f"{path.name}: {how}"


def load_run(path: str | Path) -> Run:
    """Read a finished or partial run folder, or raise a one-line :class:`InputError`."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected a refseg eval run folder)")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{folder}: not a refseg eval run folder (no {CONFIG_FILE})")
    try:
        stored = json.loads(config_path.read_text(encoding="utf-8"))
        identity = stored["identity"]
        notes = stored.get("notes") or {}
        if not isinstance(identity, dict) or not isinstance(notes, dict):
            raise TypeError("not an object")
    except RecursionError:  # json.loads on nesting deeper than the interpreter's stack
        raise InputError(f"{config_path}: nested too deeply; not a refseg eval config") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{config_path}: not a refseg eval config ({exc})") from exc
    try:
        records = load_run_records(folder)
    except RecursionError as exc:  # a line nested too deep for json: not a record
        raise InputError(
            f"{folder}: a record is nested too deeply; not a refseg eval record"
        ) from exc
    # a sample its convention leaves out of every metric (Seg-Zero's both-empty samples)
    records = {k: r for k, r in records.items() if not r.get("skipped")}
    if not records:
        raise InputError(f"{folder}: the run has no finished sample yet")
    for record in records.values():
        missing = [k for k in _RECORD_FIELDS if k not in record]
        bad = [
            k
            for k in ("iou", "biou", "inter", "union")
            if k not in missing and not _is_number(record[k])
        ]
        if missing or bad:
            what = f"lacks {missing[0]!r}" if missing else f"has a non-numeric {bad[0]!r}"
            raise InputError(
                f"{folder}: record {str(record['id'])[:80]!r} {what}; not a refseg eval record"
            )
    planned = notes.get("n_samples")
    planned = planned if isinstance(planned, int) and not isinstance(planned, bool) else None
    rank_files = any(p.is_file() for p in run_record_files(folder)[1:])
    finished = (
        (folder / METRICS_FILE).is_file()
        and not rank_files
        and (planned is None or len(records) >= planned)
    )
    return Run(folder, identity, records, planned, finished)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _n_boot(n: int) -> int:
    return max(MIN_BOOT, min(N_BOOT, MAX_BOOT_CELLS // max(1, n)))


def _pr_intervals(
    columns: Sequence[np.ndarray], targets: np.ndarray, n_boot: int, seed: int
) -> list[float] | None:
    """Percentile interval of Pr@0.5 (``columns``: one run's hit flags) or of the difference of
    two runs' (``columns``: two runs, paired), over samples with a target.

    :mod:`refseg.eval.bootstrap` covers gIoU, cIoU, mBIoU and N-acc; Pr@0.5 is the fraction of
    target samples above IoU 0.5, resampled the same way.
    """
    n = len(targets)
    if n == 0 or not targets.any():
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    t = targets[idx].sum(1)
    values = [c[idx].sum(1) / np.maximum(t, 1) for c in columns]
    stat = values[0] if len(values) == 1 else values[0] - values[1]
    stat = stat[t > 0]
    if not len(stat):
        return None
    lo, hi = np.percentile(stat, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def _pr_hits(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    targets = np.array([not r["gt_empty"] for r in records], dtype=bool)
    hits = np.array(
        [(not r["gt_empty"]) and float(r["iou"]) >= 0.5 for r in records], dtype=np.float64
    )
    return hits, targets


def _round(value: Any) -> Any:
    return round(float(value), 6) if isinstance(value, float) else value


def score_group(
    per_run: Sequence[Sequence[Mapping[str, Any]]], *, n_boot: int, seed: int = 0
) -> dict[str, Any]:
    """Metrics with intervals for each run and paired differences from the first run, all on
    the same samples (``per_run[i][k]`` is run i's record of sample k)."""
    runs = []
    base = per_run[0]
    base_hits, targets = _pr_hits(base)
    for index, records in enumerate(per_run):
        metrics = aggregate(records)
        ci = bootstrap_metrics(records, n_boot=n_boot, seed=seed)
        hits, _ = _pr_hits(records)
        ci["Pr@0.5"] = _pr_intervals([hits], targets, n_boot, seed)
        entry: dict[str, Any] = {
            "metrics": {k: _round(metrics[k]) for k in (*COMPARED_METRICS, "n")},
            "ci": {k: ci.get(k) for k in COMPARED_METRICS},
        }
        if index:
            diff = bootstrap_difference(records, base, n_boot=n_boot, seed=seed)
            delta = {k: diff[k] for k in CI_METRICS}
            point = metrics["Pr@0.5"]
            first = aggregate(base)["Pr@0.5"]
            delta["Pr@0.5"] = {
                "delta": None if point is None or first is None else round(point - first, 4),
                "ci": _pr_intervals([hits, base_hits], targets, n_boot, seed),
            }
            entry["vs_first"] = {k: delta[k] for k in COMPARED_METRICS}
        runs.append(entry)
    return {"n": len(base), "runs": runs}


def _group_keys() -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    """What each breakdown groups by (as :func:`refseg.eval.metrics.breakdowns` does)."""

    def fields(record: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = record.get("meta")
        return meta if isinstance(meta, dict) else {}

    def meta(name: str) -> Callable[[Mapping[str, Any]], Any]:
        return lambda r: fields(r).get(name)

    def scene(record: Mapping[str, Any]) -> str | None:
        count = fields(record).get("n_objects")
        if not isinstance(count, int) or isinstance(count, bool):
            return None
        return "one-object scene" if count == 1 else "several objects"

    keys = {name: meta(name) for name in BREAKDOWN_FIELDS}
    keys["targets"] = target_group
    keys["scene_objects"] = scene
    return keys


def _breakdown_groups(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """Sample positions per group of each breakdown the first run's records support."""
    out: dict[str, dict[str, list[int]]] = {}
    for name, key in _group_keys().items():
        groups: dict[str, list[int]] = {}
        for position, record in enumerate(records):
            value = key(record)
            if value is not None:
                groups.setdefault(str(value), []).append(position)
        if name == "targets" and len(groups) < 2:
            continue  # as the runner: only when samples differ in it
        if groups:
            out[name] = {g: groups[g] for g in sorted(groups)}
    return out


def compare_runs(
    paths: Sequence[str | Path],
    *,
    allow_different_datasets: bool = False,
    seed: int = 0,
) -> Comparison:
    """Read the runs, check they can be compared and score them on their common samples."""
    if len(paths) < 2:
        raise InputError("compare needs at least two run folders")
    runs = [load_run(p) for p in paths]
    datasets = {r.dataset for r in runs}
    if len(datasets) > 1 and not allow_different_datasets:
        other = next(r for r in runs[1:] if r.dataset != runs[0].dataset)
        raise InputError(
            f"{other.path} evaluated {other.dataset or 'an unrecorded dataset'}, "
            f"{runs[0].path} {runs[0].dataset or 'an unrecorded dataset'}; "
            "pass --allow-different-datasets to compare them anyway"
        )
    common = set(runs[0].records)
    for run in runs[1:]:
        common &= set(run.records)
    if not common:
        raise InputError("no sample was scored by every run: nothing to compare")
    ids = sorted(common)  # record order differs between resumed / sharded runs; ids do not
    per_run = [[run.records[i] for i in ids] for run in runs]
    n_boot = _n_boot(len(ids))
    notes = []
    ratios = {r.identity.get("boundary_ratio") for r in runs}
    if len(ratios) > 1:
        notes.append(
            "the runs measured boundary IoU at different widths (boundary_ratio "
            + ", ".join(str(x) for x in sorted(ratios, key=str))
            + "): mBIoU is not comparable across them"
        )
    conventions = {str(r.identity.get("convention", "refseg")) for r in runs}
    if len(conventions) > 1:
        notes.append(
            "the runs were scored under different conventions ("
            + ", ".join(sorted(conventions))
            + "): each record keeps its own per-sample scores, so edge cases (empty targets, "
            "ignore regions) are not scored alike; rescore with one --convention"
        )
    document: dict[str, Any] = {
        "n_common": len(ids),
        "n_boot": n_boot,
        "level": 0.95,
        "runs": [
            {
                "path": str(run.path),
                "label": run.label,
                "dataset": run.dataset,
                "finished": run.finished,
                "n_records": len(run.records),
                "n_planned": run.planned,
                "dropped": len(run.records) - len(ids),
                "config": run.identity,
            }
            for run in runs
        ],
        "notes": notes,
        "all": score_group(per_run, n_boot=n_boot, seed=seed),
        "breakdowns": {
            name: {
                group: score_group(
                    [[records[p] for p in positions] for records in per_run],
                    n_boot=_n_boot(len(positions)),
                    seed=seed,
                )
                for group, positions in groups.items()
            }
            for name, groups in _breakdown_groups(per_run[0]).items()
        },
    }
    return Comparison(runs, ids, document)


def disagreements(comparison: Comparison, count: int) -> list[str]:
    """The ``count`` samples whose gIoU differs most between runs (largest spread first, ties
    by id): where looking at the overlays says the most about how the heads differ."""
    spreads = []
    for sample_id in comparison.ids:
        ious = [float(run.records[sample_id]["iou"]) for run in comparison.runs]
        spreads.append((-(max(ious) - min(ious)), sample_id))
    return [sample_id for _, sample_id in sorted(spreads)[: max(0, count)]]


# --------------------------------------------------------------------------------------------
# Text


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"


def _with_ci(value: Any, ci: Sequence[float] | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{100 * float(value):+.2f}" if signed else _pct(value)
    if ci is None:
        return text
    return f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def table_rows(group: Mapping[str, Any], labels: Sequence[str]) -> list[list[str]]:
    """Rows (label, n, one cell per metric) of a group: the runs' values with intervals, then
    each later run's paired difference from the first."""
    rows = []
    for label, entry in zip(labels, group["runs"]):
        metrics, ci = entry["metrics"], entry["ci"]
        cells = [_with_ci(metrics[m], ci[m]) for m in COMPARED_METRICS]
        rows.append([label, str(metrics["n"]), *cells])
    for label, entry in zip(labels[1:], group["runs"][1:]):
        deltas = entry["vs_first"]
        cells = [
            _with_ci(deltas[m]["delta"], deltas[m]["ci"], signed=True) for m in COMPARED_METRICS
        ]
        rows.append([f"{label} − {labels[0]}", str(group["n"]), *cells])
    return rows


def print_comparison(comparison: Comparison) -> None:
    """The comparison as rich tables on stdout: all samples, then each breakdown group."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a file or a pipe: no wrapped cells (rich's default is 80)
        console = Console(width=200)
    doc = comparison.document
    labels = [f"#{i + 1}" for i in range(len(comparison.runs))]
    for label, run in zip(labels, doc["runs"]):
        state = "finished" if run["finished"] else "partial"
        if run["n_planned"] is not None and not run["finished"]:
            state += f", {run['n_records']} of {run['n_planned']} samples"
        console.print(f"{label} {run['label']} ({state})", markup=False, highlight=False)
    dropped = [(label, r["dropped"]) for label, r in zip(labels, doc["runs"]) if r["dropped"]]
    text = f"{doc['n_common']} samples are in every run"
    if dropped:
        text += "; dropped as not in every run: " + ", ".join(f"{n} of {lb}" for lb, n in dropped)
    console.print(text, markup=False, highlight=False)
    for note in doc["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)

    def show(title: str, group: Mapping[str, Any]) -> None:
        table = Table(title=title)
        for column in ("run", "n", *(f"{m} %" for m in COMPARED_METRICS)):
            table.add_column(column, justify="left" if column == "run" else "right")
        for row in table_rows(group, labels):
            table.add_row(*row)
        console.print(table)

    show(f"all {doc['n_common']} common samples (95% CI, {doc['n_boot']} resamples)", doc["all"])
    for name, groups in doc["breakdowns"].items():
        for group, scored in groups.items():
            show(f"{name} = {group}", scored)
    console.print(
        "differences are later run minus the first, with paired bootstrap intervals",
        markup=False,
        highlight=False,
    )


# --------------------------------------------------------------------------------------------
# Files


def _dataset_samples(runs: Sequence[Run]) -> dict[str, Any]:
    """The first run's dataset, for the ground-truth panels; empty when it cannot be opened
    (the overlays then show the predictions only)."""
    from refseg.data.base import open_dataset

    spec = runs[0].dataset
    if not spec:
        return {}
    try:
        return {s.id: s for s in open_dataset(spec)}
    except Exception:
        return {}


def _html_table(group: Mapping[str, Any], labels: Sequence[str]) -> str:
    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ("run", "n", *(f"{m} %" for m in COMPARED_METRICS))
    )
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(group, labels)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_compare_html(comparison: Comparison, chosen: Sequence[str]) -> str:
    """``compare.html``: the tables, then per chosen sample its ground truth and each run's
    prediction side by side in one row (panels from :mod:`refseg.eval.report`), with a row of
    crops around the target under it (:func:`_sample_row`)."""
    from refseg.eval import report

    doc = comparison.document
    labels = [f"#{i + 1}" for i in range(len(comparison.runs))]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>refseg eval-compare</title><style>{report._STYLE}{_COMPARE_STYLE}</style>"
        "</head><body>",
        "<h1>refseg eval-compare</h1><ul>",
    ]
    for label, run in zip(labels, doc["runs"]):
        state = "finished" if run["finished"] else "partial"
        parts.append(
            f"<li><b>{label}</b> {html.escape(run['label'])} ({state}, "
            f"{run['dropped']} samples dropped) <code>{html.escape(run['path'])}</code></li>"
        )
    parts.append(
        f"</ul><p>{doc['n_common']} samples are in every run; values in %, 95% bootstrap "
        f"intervals ({doc['n_boot']} resamples); differences are paired, vs #1.</p>"
    )
    parts += [f"<p class=muted>note: {html.escape(n)}</p>" for n in doc["notes"]]
    parts += ["<h2>All common samples</h2>", _html_table(doc["all"], labels)]
    for name, groups in doc["breakdowns"].items():
        for group, scored in groups.items():
            parts.append(f"<h3>{html.escape(name)} = {html.escape(group)}</h3>")
            parts.append(_html_table(scored, labels))
    samples = _dataset_samples(comparison.runs) if chosen else {}
    parts.append(
        f"<h2>{len(chosen)} samples where the runs differ most in IoU</h2>"
        "<p class=muted>per sample: ground truth first, then each run's prediction; under them "
        "the same crop around the target (ground truth and every prediction, with a margin) "
        "cut from each. Click a picture for full size.</p>"
    )
    for sample_id in chosen:
        parts.append(_sample_row(comparison, sample_id, samples.get(sample_id), labels))
    parts.append(report._ZOOM + "</body></html>")
    report._image.cache_clear()
    return "\n".join(parts) + "\n"


#: Styles of the comparison's sample rows, after :data:`refseg.eval.report._STYLE`. A row holds
#: ground truth plus one panel per run in equal columns that shrink to fit the page (images at
#: the column's width), so they stay side by side at any window width; only when a column would
#: fall below :data:`_MIN_COLUMN_PX` (many runs, narrow window) does the row scroll sideways.
_MIN_COLUMN_PX = 160
_COMPARE_STYLE = f"""
body{{max-width:none}}
.sample{{margin:0 0 2em}}
.cmp-row{{display:grid;gap:.6em;margin:0 0 .6em;overflow-x:auto;
 grid-template-columns:repeat(var(--cols),minmax({_MIN_COLUMN_PX}px,1fr))}}
.cmp-row .card{{min-width:0;padding:.3em}}
.cmp-row .card img{{width:100%;max-width:100%;height:auto;max-height:80vh;object-fit:contain}}
.cmp-row.crop .card img{{max-height:70vh}}
.cmp-row .noimg{{height:auto;min-height:80px;line-height:1.4;padding:1.5em .5em}}
.cmp-row figcaption{{font-size:90%;overflow-wrap:anywhere}}
"""


def _sample_row(comparison: Comparison, sample_id: str, sample: Any, labels: Sequence[str]) -> str:
    """One sample: a row of whole-photo panels (ground truth, then each run) and, under it, a
    row of crops around the target cut with one window for every panel (:mod:`.crop`), so small
    objects and near misses can be compared; no crop row when nothing is there to crop around
    or the window is the whole photo."""
    from refseg.eval import report

    first = comparison.runs[0].records[sample_id]
    # the image the run read (recorded as a path); the dataset's own path as the fallback
    paths = [first.get("image"), sample.image if sample is not None else None]
    image = next(
        (report._image(str(p)) for p in paths if p and report._image(str(p)) is not None), None
    )
    records = [run.records[sample_id] for run in comparison.runs]
    captions = []
    for label, record in zip(labels, records):
        caption = f"{label}: IoU {_pct(record['iou'])} · BIoU {_pct(record['biou'])}"
        if record.get("error_kind"):
            caption += f" · failed ({record['error_kind']})"
        captions.append(caption)
    cards = []
    if image is None:
        cards.append(_empty_figure("image unavailable", "ground truth"))
    else:
        cards.append(_figure(report.truth_panel(image, sample), "ground truth"))
    for caption, record in zip(captions, records):
        panel = None
        if image is not None:
            try:
                panel = report.prediction_panel(image, record)
            except Exception:  # a hand-edited record's mask: show the numbers only
                panel = None
        cards.append(
            _figure(panel, caption) if panel is not None else _empty_figure("no overlay", caption)
        )
    columns = len(cards)
    rows = [f'<div class="cmp-row full" style="--cols:{columns}">{"".join(cards)}</div>']
    if image is not None:
        crop_row = _crop_row(image, sample, records, labels)
        if crop_row:
            rows.append(f'<div class="cmp-row crop" style="--cols:{columns}">{crop_row}</div>')
    return (
        f'<section class="sample"><h3>{html.escape(str(first.get("phrase", "")))} '
        f"<code>{html.escape(sample_id)}</code></h3>{''.join(rows)}</section>"
    )


def _crop_row(
    image: np.ndarray, sample: Any, records: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> str | None:
    """The crop cards of one sample (ground truth, then each run), or ``None`` when there is no
    window (no ground truth and no prediction) or it covers the whole photo (a copy of the row
    above)."""
    from refseg.eval import crop

    height, width = image.shape[:2]
    boxes = crop.truth_boxes(sample, height, width)
    for record in records:
        boxes += crop.prediction_boxes(record, height, width)
    window = crop.crop_window(boxes, width, height)
    if window is None or window == (0, 0, width, height):
        return None
    x1, y1, x2, y2 = window
    scale = crop.crop_scale(window)
    zoom = f"×{scale:.0f}" if scale >= 1 else f"×{scale:.2f}"
    where = f"crop x {x1}–{x2}, y {y1}–{y2} ({zoom})"
    cards = []
    try:
        gt_crop = crop.crop_panel(image, crop.truth_instances(sample, height, width), window)
        cards.append(_figure(gt_crop, f"ground truth, {where}", crop=True))
    except Exception:  # a ground-truth mask that cannot be drawn: say so, keep the columns
        cards.append(_empty_figure("no crop", f"ground truth, {where}"))
    for label, record in zip(labels, records):
        try:
            instances = crop.prediction_instances(record, height, width)
            empty = not instances or record.get("pred_empty") is True
            caption = f"{label}: no mask" if empty else label
            cards.append(_figure(crop.crop_panel(image, instances, window), caption, crop=True))
        except Exception:  # a hand-edited record's mask, as for its panel
            cards.append(_empty_figure("no crop", label))
    return "".join(cards)


def _figure(panel: np.ndarray, caption: str, *, crop: bool = False) -> str:
    from refseg.eval import report

    kind = "card crop" if crop else "card"
    alt = "crop around the target" if crop else "overlay"
    return (
        f'<figure class="{kind}"><img src="{report._jpeg_data_uri(panel)}" '
        f'width="{panel.shape[1]}" height="{panel.shape[0]}" alt="{alt}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _empty_figure(text: str, caption: str) -> str:
    """A cell without a picture, so every row keeps one column per panel."""
    return (
        f'<figure class="card"><div class="noimg">{html.escape(text)}</div>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def write_comparison(comparison: Comparison, out_dir: str | Path, *, samples: int) -> list[Path]:
    """Write ``compare.json`` and ``compare.html`` (atomically) into ``out_dir``."""
    if not 0 <= samples <= MAX_SAMPLES:
        raise InputError(f"--samples must be between 0 and {MAX_SAMPLES}, got {samples}")
    out = ensure_dir(out_dir)
    chosen = disagreements(comparison, samples)
    document = {
        **comparison.document,
        "overlay_samples": [
            {
                "id": sample_id,
                "iou": [round(float(r.records[sample_id]["iou"]), 6) for r in comparison.runs],
            }
            for sample_id in chosen
        ],
    }
    written = [out / COMPARE_JSON, out / COMPARE_HTML]
    atomic_write_text(written[0], json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(written[1], render_compare_html(comparison, chosen))
    return written
