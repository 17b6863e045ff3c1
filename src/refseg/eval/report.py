"""Human-readable outputs of an evaluation run: ``metrics.md`` and a self-contained ``report.html``.

Both are made from the run's records and ``metrics.json`` document only (plus the images, for the
overlays), so they can be regenerated at any time and never disagree with the numbers. The HTML
embeds everything (styles, base64 JPEG overlays) and can be mailed or attached as one file.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refseg.eval.metrics import METRIC_NAMES
from refseg.fileio import atomic_write_text

if TYPE_CHECKING:
    from refseg.data.base import Sample

#: How many best and worst samples the HTML report shows.
GALLERY_SIZE = 8
#: Widest overlay panel kept in the report (pixels). Panels are only ever shrunk to it, never
#: enlarged, so the report shows masks at (or near) the image's own resolution, where an edge
#: that misses by a few pixels can be seen.
MAX_PANEL_WIDTH = 800
#: JPEG quality of the embedded overlays. With full-resolution colour (no 4:2:0 chroma
#: subsampling) thin coloured outlines stay sharp; a palette PNG would dither the photo instead.
JPEG_QUALITY = 90

_BREAKDOWN_TITLES = {
    "difficulty": "By difficulty (meta.difficulty)",
    "kind": "By kind (meta.kind)",
    "targets": "By number of referred objects",
    "scene_objects": "By number of objects in the scene",
}


def percent(value: float | None) -> str:
    """``0.1234 -> "12.34"``; ``None`` (undefined) -> ``"–"``."""
    return "–" if value is None else f"{100 * value:.2f}"


#: What each timing key measures, in the order the summary shows them.
TIMING_NAMES = {
    "ground_s": "grounder",
    "embed_s": "image encoder",
    "predict_s": "mask decoder",
    "total_s": "wall time",
}


def _timing_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean seconds per sample for each timing key, over *all* records.

    A step that runs once per image (the image encoder: ``embed_s``) is recorded on the first
    sample of that image only. Averaging it over just the records that carry it gave the
    encoder's cost per image next to per-sample decoder and wall times, so the "total" could
    read below one of its parts; dividing every sum by the number of samples keeps the parts
    below the total (``total_s`` is each sample's wall time, encoder included).
    """
    sums: dict[str, list[float]] = {}
    for record in records:
        for key, value in (record.get("timings") or {}).items():
            sums.setdefault(key, []).append(float(value))
    order = {key: index for index, key in enumerate(TIMING_NAMES)}
    keys = sorted(sums, key=lambda k: (order.get(k, len(order)), k))
    return {k: math.fsum(sums[k]) / len(records) for k in keys}


def timing_text(records: Sequence[Mapping[str, Any]]) -> str | None:
    """One sentence on where the time went, or ``None`` when no record has timings."""
    timings = _timing_summary(records)
    if not timings:
        return None
    parts = ", ".join(
        f"{TIMING_NAMES[k]} ({k}) {v:.3f}" if k in TIMING_NAMES else f"{k} {v:.3f}"
        for k, v in timings.items()
    )
    return (
        f"Mean seconds per sample over all {len(records)} samples: {parts}. The image encoder "
        "runs once per image, so its time is shared by that image's samples; the wall time "
        "includes every step."
    )


def _title(document: Mapping[str, Any]) -> str:
    config = document.get("config", {})
    what = config.get("dataset", "samples")
    mode = config.get("mode", "?")
    if mode == "pipeline":
        how = f"{config.get('grounder')} + {config.get('segmenter')}"
        if config.get("think"):
            how += " (think)"
    elif mode == "oracle-boxes":
        how = f"{config.get('segmenter')} with ground-truth boxes"
    else:
        how = "stored predictions"
    return f"{how} on {what}"


def failure_note(document: Mapping[str, Any]) -> str | None:
    """One sentence on failed samples, or ``None`` when there were none."""
    failures = document.get("failures") or {}
    if not failures:
        return None
    total = sum(failures.values())
    parts = ", ".join(f"{n} {kind}" for kind, n in failures.items())
    return f"{total} of {document['n_samples']} samples failed ({parts}); each scores IoU 0."


# --------------------------------------------------------------------------------------------
# Markdown


#: Characters that Markdown would read as syntax (emphasis, links, code, table cells).
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#!"})


def md_text(value: Any) -> str:
    """``value`` as inert Markdown text on one line.

    Group names, the dataset name, failure kinds and timing keys come from the dataset's
    ``meta`` and the records, i.e. from files others wrote: a ``<script>`` or
    ``<img onerror=...>`` there must reach a Markdown viewer (most render inline HTML) as text,
    as it reaches ``report.html``. HTML is escaped, Markdown syntax backslash-escaped, and line
    breaks flattened so a value cannot end a table row or start a heading."""
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).translate(_MD_SPECIAL)


def _md_table(rows: Sequence[tuple[str, Mapping[str, Any]]], first: str) -> list[str]:
    header = [md_text(first), *METRIC_NAMES, "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows:
        cells = [
            md_text(name),
            *(percent(metrics.get(m)) for m in METRIC_NAMES),
            md_text(metrics.get("n", 0)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(document: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    """``metrics.md``: the metrics (percent), breakdowns, failures and mean timings; every
    value that comes from the data is escaped (:func:`md_text`)."""
    lines = [f"# Evaluation: {md_text(_title(document))}", ""]
    lines += _md_table([("all", document["metrics"])], "samples")
    for key, groups in (document.get("breakdowns") or {}).items():
        lines += ["", f"## {md_text(_BREAKDOWN_TITLES.get(key, f'By meta.{key}'))}", ""]
        lines += _md_table(list(groups.items()), key)
    if document.get("thresholds"):
        lines += ["", *threshold_lines(document["thresholds"])]
    note = failure_note(document)
    lines += ["", f"Failures: {md_text(note)}" if note else "Failures: none."]
    timings = timing_text(records)
    if timings:
        lines.append(md_text(timings))
    lines += ["", "Values are percentages; definitions in `refseg.eval.metrics`."]
    return "\n".join(lines) + "\n"


def _with_ci(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:
        return "–"
    if not ci:
        return percent(value)
    return f"{percent(value)} [{percent(ci[0])}, {percent(ci[1])}]"


def threshold_lines(thresholds: Mapping[str, Any]) -> list[str]:
    """What a score threshold buys (:func:`refseg.eval.thresholds.threshold_report`): the
    curve, instance AP and the reliability table, with bootstrap 95% intervals."""
    lines = [
        "## Score thresholds",
        "",
        "Instances below the threshold dropped (none left: no target); "
        "[bootstrap 95% intervals over samples].",
        "",
        "| min score | gIoU | N-acc | T-acc |",
        "|---|---|---|---|",
    ]
    for row in thresholds["curve"]:
        lines.append(
            f"| {row['threshold']:.1f} | {_with_ci(row['gIoU'], row.get('gIoU_ci'))} | "
            f"{_with_ci(row['N-acc'], row.get('N-acc_ci'))} | "
            f"{_with_ci(row['T-acc'], row.get('T-acc_ci'))} |"
        )
    lines += [
        "",
        f"Instance AP (matched IoU >= 0.5, {thresholds['n_instances']} instances): "
        f"{_with_ci(thresholds['AP'], thresholds.get('AP_ci'))}",
        "",
        "| score bin | instances | mean score | right |",
        "|---|---|---|---|",
    ]
    calibration = thresholds["calibration"]
    for row in calibration["table"]:
        if row["n"]:
            lo, hi = row["bin"]
            lines.append(
                f"| {lo:.1f}-{hi:.1f} | {row['n']} | {row['confidence']:.3f} | "
                f"{row['accuracy']:.3f} |"
            )
    ece, ci = calibration["ECE"], thresholds.get("ECE_ci")
    text = "–" if ece is None else f"{ece:.3f}"
    if ece is not None and ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}] (biased upwards on resamples)"
    return [*lines, "", f"Expected calibration error: {text}"]


# --------------------------------------------------------------------------------------------
# HTML


def _jpeg_data_uri(image: np.ndarray) -> str:
    """A base64 JPEG data URI (quality :data:`JPEG_QUALITY`, no chroma subsampling): a
    full-colour photo overlay of about 100-200 kB, with no palette dithering."""
    from PIL import Image

    buffer = io.BytesIO()
    # No optimize=True: with it Pillow fails on large pictures written to memory.
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _shrink(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` scaled down to ``width`` pixels (area-averaged); never enlarged."""
    from PIL import Image

    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BOX))


@functools.lru_cache(maxsize=4)
def _image(path: str) -> np.ndarray | None:
    """An image for the gallery (cached: best and worst samples often share images)."""
    from refseg.image import load_image

    try:
        return load_image(path)
    except Exception:
        return None


def overlay_pair(record: Mapping[str, Any], sample: Sample | None) -> np.ndarray | None:
    """Ground truth (left) and prediction (right) drawn on the image, side by side.

    ``None`` when the image cannot be read (the report then shows the numbers only).
    """
    path = sample.image if sample is not None else record.get("image")
    image = _image(str(path)) if path else None
    if image is None:
        return None
    gt_panel = truth_panel(image, sample)
    pred_panel = prediction_panel(image, record)
    separator = np.full((gt_panel.shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([gt_panel, separator, pred_panel], axis=1)


def truth_panel(image: np.ndarray, sample: Sample | None) -> np.ndarray:
    """The ground truth drawn on ``image`` (shrunk for the report); separate from
    :func:`prediction_panel` so a comparison of several runs draws it once per sample."""
    from refseg.eval.crop import truth_instances
    from refseg.render import draw_instances

    height, width = image.shape[:2]
    return _shrink(draw_instances(image, truth_instances(sample, height, width)), MAX_PANEL_WIDTH)


def prediction_panel(image: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """A record's prediction (its mask, boxes and points) drawn on ``image``, shrunk like
    :func:`truth_panel`."""
    from refseg.eval.crop import prediction_instances
    from refseg.render import draw_instances

    height, width = image.shape[:2]
    instances = prediction_instances(record, height, width)
    return _shrink(draw_instances(image, instances), MAX_PANEL_WIDTH)


def _status(record: Mapping[str, Any]) -> str:
    if record.get("error_kind"):
        return f"failed ({record['error_kind']}): {record.get('error') or ''}"
    if record.get("gt_empty"):
        return "no target; answered " + ("empty (correct)" if record["pred_empty"] else "a mask")
    if record.get("pred_empty"):
        return "answered no target"
    return f"{len(record.get('instances') or [])} predicted instance(s), {record['n_gt']} target(s)"


def _card(record: Mapping[str, Any], sample: Sample | None) -> str:
    pair = overlay_pair(record, sample)
    # width/height attributes are the picture's own pixels; CSS may shrink it, never enlarge it.
    picture = (
        f'<img src="{_jpeg_data_uri(pair)}" width="{pair.shape[1]}" height="{pair.shape[0]}" '
        'alt="overlay" title="click: full size">'
        if pair is not None
        else '<div class="noimg">image unavailable</div>'
    )
    return (
        '<figure class="card">'
        + picture
        + "<figcaption>"
        + f"<b>{html.escape(str(record['phrase']))}</b><br>"
        + f"IoU {percent(record['iou'])} · BIoU {percent(record['biou'])} · "
        + f"<code>{html.escape(str(record['id']))}</code><br>"
        + f"<span class=muted>{html.escape(_status(record))}</span>"
        + "</figcaption></figure>"
    )


def _html_table(rows: Sequence[tuple[str, Mapping[str, Any]]], first: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (first, *METRIC_NAMES, "n"))
    body = []
    for name, metrics in rows:
        cells = [f"<td>{html.escape(str(name))}</td>"]
        cells += [f"<td>{percent(metrics.get(m))}</td>" for m in METRIC_NAMES]
        cells.append(f"<td>{metrics.get('n', 0)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{margin:0;max-width:100%;border:1px solid #ddd;padding:.4em}
.card img{display:block;max-width:min(100%,1000px);height:auto;cursor:zoom-in}
#zoom{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);overflow:auto;
 cursor:zoom-out;z-index:9}
#zoom.on{display:block}
#zoom img{display:block;margin:1em auto;max-width:none}
.noimg{height:80px;background:#eee;text-align:center;line-height:80px;color:#777}
.muted{color:#666}
code{font-size:90%}
"""


#: Click an overlay: it opens at its own pixel size over the page; click again to close.
_ZOOM = (
    '<div id="zoom"><img alt="full-size overlay"></div><script>'
    'const zoom=document.getElementById("zoom");'
    'document.querySelectorAll(".card img").forEach(i=>i.addEventListener("click",()=>{'
    'zoom.firstChild.src=i.src;zoom.classList.add("on");}));'
    'zoom.addEventListener("click",()=>zoom.classList.remove("on"));</script>'
)


def render_html(
    document: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    samples: Mapping[str, Sample],
) -> str:
    """``report.html``: config, metrics, breakdowns, failures, timings and best/worst overlays."""
    title = _title(document)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>refseg eval: {html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>refseg eval</h1><p>{html.escape(title)}</p>",
        "<h2>Metrics (%)</h2>",
        _html_table([("all", document["metrics"])], "samples"),
    ]
    for key, groups in (document.get("breakdowns") or {}).items():
        parts.append(f"<h3>{html.escape(_BREAKDOWN_TITLES.get(key, f'By meta.{key}'))}</h3>")
        parts.append(_html_table(list(groups.items()), key))
    note = failure_note(document)
    parts.append(f"<p><b>Failures:</b> {html.escape(note) if note else 'none'}</p>")
    timings = timing_text(records)
    if timings:
        parts.append(f"<p><b>Timings:</b> {html.escape(timings)}</p>")
    config = document.get("config") or {}
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in config.items()
    )
    parts.append(f"<h2>Configuration</h2><table>{rows}</table>")

    targets = [r for r in records if not r["gt_empty"] and not r["error_kind"]]
    best = sorted(targets, key=lambda r: (-r["iou"], r["id"]))[:GALLERY_SIZE]
    worst = sorted(records, key=lambda r: (r["iou"], -r["union"], r["id"]))[:GALLERY_SIZE]
    for heading, chosen in (("Best", best), ("Worst", worst)):
        parts.append(
            f"<h2>{heading} {len(chosen)} (ground truth left, prediction right)</h2>"
            '<div class="grid">'
        )
        parts += [_card(r, samples.get(str(r["id"]))) for r in chosen]
        parts.append("</div>")
    parts.append(
        "<p class=muted>Definitions: <code>refseg.eval.metrics</code>. Failures (unreadable "
        "answers, errors, missing predictions) score IoU 0. Click an overlay for full size.</p>"
    )
    parts.append(_ZOOM + "</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(
    out_dir: Path,
    document: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    samples: Mapping[str, Sample],
) -> None:
    """Write ``metrics.md`` and ``report.html`` into ``out_dir`` (atomically)."""
    atomic_write_text(out_dir / "metrics.md", render_markdown(document, records))
    atomic_write_text(out_dir / "report.html", render_html(document, records, samples))
    _image.cache_clear()
