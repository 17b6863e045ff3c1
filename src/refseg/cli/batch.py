"""`refseg segment --batch PAIRS.jsonl --out DIR`: many (image, phrase) pairs, resumable.

Input: one JSON object a line, ``{"image": PATH, "phrase": TEXT[, "id": ID]}``; a relative
``image`` is relative to the JSONL file, and ``id`` defaults to the line number. Output:
``DIR/results.jsonl``, one line per finished pair: the result JSON of ``refseg segment --json``
plus ``"id"`` and ``"image"`` (and ``"error"`` when that pair failed), which is also what
``refseg eval --predictions`` reads. Lines go through :class:`refseg.records.RecordWriter`
(flushed and fsynced as written, one writer at a time), so after a crash, ``kill -9`` or Ctrl-C
the same command continues with the pairs not yet done; a torn last line is discarded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refseg.errors import InputError, RefsegError
from refseg.records import RecordWriter, read_records

#: Pairs grounded together (one generate batch); consecutive pairs on the same image share
#: one embedding.
CHUNK = 8


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Read and validate the whole input first, so a typo on line 900 fails before any work."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    pairs, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                raise InputError(f'{path}:{number}: needs an "image" path string')
            if not isinstance(item.get("phrase"), str):
                raise InputError(f'{path}:{number}: needs a "phrase" string')
            pair_id = str(item.get("id", number))
            if pair_id in seen:
                raise InputError(f"{path}:{number}: duplicate id {pair_id!r}")
            seen.add(pair_id)
            image = Path(item["image"])
            if not image.is_absolute():
                image = path.parent / image
            pairs.append({"id": pair_id, "image": str(image), "phrase": item["phrase"]})
    return pairs


def finished_ids(results: Path) -> set[str]:
    """Ids already written (a torn final line is not one: :func:`refseg.records.read_records`)."""
    return {str(r["id"]) for r in read_records(results)}


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_pairs(
    pipeline, pairs: list[dict[str, Any]], out_dir: Path, *, think: bool, progress: bool = True
) -> dict[str, int]:
    """Segment ``pairs`` with ``pipeline`` into ``out_dir/results.jsonl``, skipping done ones."""
    from refseg.progress import new_progress

    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.jsonl"
    done = finished_ids(results)
    todo = [p for p in pairs if p["id"] not in done]
    counts = {"total": len(pairs), "skipped": len(pairs) - len(todo), "done": 0, "errors": 0}
    embeddings: dict = {}
    with (
        RecordWriter(results, owner="refseg segment --batch") as sink,
        new_progress(enabled=progress) as bar,
    ):
        task = bar.add_task("segmenting", total=len(pairs), completed=counts["skipped"])
        for chunk in _chunks(todo, CHUNK):
            if len(embeddings) > 4:  # keep only recent images' embeddings in memory
                embeddings.clear()
            try:
                outputs = pipeline.run(
                    [(p["image"], p["phrase"]) for p in chunk], think=think, embeddings=embeddings
                )
                records = [
                    {"id": p["id"], "image": p["image"], **r.to_dict(timings=True)}
                    for p, r in zip(chunk, outputs)
                ]
            except RefsegError:
                records = [_one(pipeline, p, think, embeddings) for p in chunk]
            for record in records:
                counts["errors"] += "error" in record
                sink.write(record)
                counts["done"] += 1
                bar.advance(task)
    return counts


def _one(pipeline, pair: dict[str, Any], think: bool, embeddings: dict) -> dict[str, Any]:
    """Retry one pair alone so a bad image fails only its own line."""
    try:
        result = pipeline.run(
            [(pair["image"], pair["phrase"])], think=think, embeddings=embeddings
        )[0]
    except RefsegError as exc:
        return {"id": pair["id"], "image": pair["image"], "error": str(exc)}
    return {"id": pair["id"], "image": pair["image"], **result.to_dict(timings=True)}


def run_batch(
    batch: Path,
    out: Path,
    *,
    grounder: str | None,
    segmenter: str,
    think: bool,
    refine: int | None,
    device: str | None,
) -> None:
    """The CLI entry: validate input, load models once, run, print a one-line summary."""
    import typer

    from refseg.grounding import DEFAULT_GROUNDER, load_grounder
    from refseg.pipeline import Pipeline
    from refseg.segmentation import load_segmenter

    pairs = read_pairs(batch)
    if finished_ids(out / "results.jsonl") >= {p["id"] for p in pairs}:
        typer.echo(f"all {len(pairs)} pairs already done in {out / 'results.jsonl'}")
        return
    pipeline = Pipeline(
        load_grounder(grounder or DEFAULT_GROUNDER, device=device),
        load_segmenter(segmenter, device=device),
        refine=refine,
    )
    counts = run_pairs(pipeline, pairs, out, think=think)
    typer.echo(
        f"{counts['done']} pairs segmented ({counts['skipped']} already done, "
        f"{counts['errors']} failed) -> {out / 'results.jsonl'}"
    )
