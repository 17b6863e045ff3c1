"""`refseg segment --batch PAIRS.jsonl --out DIR`: many (image, phrase) pairs, resumable.

Input: one JSON object a line, ``{"image": PATH, "phrase": TEXT[, "id": ID]}``, UTF-8; a relative
``image`` is relative to the JSONL file, and ``id`` defaults to the line number. The whole file is
validated first (phrases through :func:`refseg.pipeline.check_phrase`), so a bad line 900 fails
as ``FILE: line 900: ...`` before any work.

Output: ``DIR/results.jsonl``, one line per pair: the result JSON of ``refseg segment --json``
plus ``"id"`` and ``"image_path"`` (the image file, absolute); a pair that failed has
``"id"``, ``"image_path"``, ``"phrase"`` and ``"error"`` instead of a result. ``refseg eval
--predictions`` reads this file. Lines go through :class:`refseg.records.RecordWriter` (flushed
and fsynced as written), and the folder is held by :func:`refseg.records.run_lock`, so:

* after a crash, ``kill -9`` or Ctrl-C the same command continues with the pairs not yet done
  (a torn last line is discarded), and failed pairs are tried again (a grounder outage is
  usually over by then); successes are kept;
* the results are keyed by content: a pair is "done" only if its record has the same id, image
  and phrase, and a results file holding other pairs (another pairs file into the same ``--out``)
  is refused, naming the way out (a new ``--out``, or ``--fresh`` to start over);
* a second batch on the same folder is refused while the first runs, ``--fresh`` included;
* every record carries ``"options"`` (``answer``, ``refiner``, ``refine_iters``: what changes
  the masks of path answers); a rerun with other options is refused like another pairs file,
  since one results file mixing two configurations would be scored as one. Records written
  before options were recorded count as the defaults (:data:`DEFAULT_OPTIONS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refseg.errors import InputError
from refseg.fileio import check_writable, ensure_dir, refuse_overwriting_inputs
from refseg.records import RecordWriter, drop_records, read_records, run_lock

#: Pairs grounded together (one generate batch); consecutive pairs on the same image share
#: one embedding.
CHUNK = 8
RESULTS_FILE = "results.jsonl"
OWNER = "refseg segment --batch"
#: The options of a run that recorded none (box answers, the gated sam refiner, 1 iteration).
DEFAULT_OPTIONS: dict[str, Any] = {"answer": "box", "refiner": "sam", "refine_iters": 1}


def batch_options(answer: str, refiner: str, refine_iters: int | None) -> dict[str, Any]:
    """The options a batch records: ``refine_iters`` resolved to its default and a checkpoint
    refiner made absolute, so the same run started from another folder still matches."""
    from refseg.segmentation.refiners import DEFAULT_ITERATIONS, REFINER_NAMES

    spec = refiner.strip() if isinstance(refiner, str) else refiner
    if isinstance(spec, str) and spec and spec not in REFINER_NAMES:
        spec = os.path.abspath(spec)
    iters = DEFAULT_ITERATIONS if refine_iters is None else refine_iters
    return {"answer": answer, "refiner": spec, "refine_iters": iters}


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Read and validate the whole input first, so a typo on line 900 fails before any work.

    Errors are one line, ``FILE: line N: what is wrong``.
    """
    from refseg.pipeline import check_phrase

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    pairs, seen = [], set()
    folder = Path(os.path.abspath(path.parent))
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path}: line {number}"
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{where}: not UTF-8 text (byte {exc.start + 1} of the line); save it as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise InputError(f'{where}: needs an "image" path string')
        if not item["image"].strip() or "\0" in item["image"]:
            raise InputError(f'{where}: "image" is not a usable path')
        if not isinstance(item.get("phrase"), str):
            raise InputError(f'{where}: needs a "phrase" string')
        try:
            phrase = check_phrase(item["phrase"])
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        raw_id = item.get("id", number)
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise InputError(f'{where}: "id" must be a string or an integer')
        pair_id = str(raw_id)
        if pair_id in seen:
            raise InputError(f"{where}: duplicate id {pair_id!r}")
        seen.add(pair_id)
        try:
            image = str(folder / item["image"])  # an absolute "image" stays as it is
            image.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f'{where}: "image" is not valid text (a lone surrogate)') from None
        pairs.append({"id": pair_id, "image": image, "phrase": phrase})
    return pairs


def finished_ids(results: Path) -> set[str]:
    """Ids with a result (failed pairs are not finished: a rerun tries them again)."""
    return {str(r["id"]) for r in read_records(results) if "error" not in r}


def _record_pair(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(image path, phrase) a record was made for; None where an older record lacks it."""
    image = record.get("image_path")
    if image is None and isinstance(record.get("image"), str):  # records before image_path
        image = record["image"]
    return image, record.get("phrase")


class BatchRun:
    """One batch run on an output folder: holds the folder's lock, sorts the pairs into done and
    to do, drops failed records so they are tried again, and appends the new records.

    Use it as a context manager; ``fresh`` deletes the folder's results first (under the lock).
    """

    def __init__(
        self,
        pairs: list[dict[str, Any]],
        out_dir: Path,
        *,
        fresh: bool = False,
        options: dict[str, Any] | None = None,
    ):
        self.pairs = pairs
        self.options = dict(DEFAULT_OPTIONS if options is None else options)
        self.out_dir = out_dir
        self.results = out_dir / RESULTS_FILE
        self.fresh = fresh
        self.todo: list[dict[str, Any]] = []
        self.retried = 0

    def __enter__(self) -> BatchRun:
        ensure_dir(self.out_dir)
        check_writable(self.results)  # before the models load
        self._held = run_lock(self.out_dir, OWNER)
        self._held.__enter__()
        try:
            if self.fresh:
                self.results.unlink(missing_ok=True)
            self._plan()
        except BaseException:
            self._held.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._held.__exit__(None, None, None)

    def _plan(self) -> None:
        by_id = {p["id"]: p for p in self.pairs}
        records = read_records(self.results)
        for record in records:
            key = str(record["id"])
            pair = by_id.get(key)
            if pair is None:
                raise InputError(
                    f"{self.results} holds results of another pairs file (id {key!r} is not in "
                    "this one); use a new --out, or --fresh to start over"
                )
            image, phrase = _record_pair(record)
            if (image is not None and image != pair["image"]) or (
                phrase is not None and phrase != pair["phrase"]
            ):
                raise InputError(
                    f"{self.results} holds a different pair under id {key!r} ({phrase!r} on "
                    f"{image} there, {pair['phrase']!r} on {pair['image']} now); "
                    "use a new --out, or --fresh to start over"
                )
            stored = record.get("options", DEFAULT_OPTIONS)
            if stored != self.options:
                stored = stored if isinstance(stored, dict) else {}
                key = next(
                    (k for k in sorted(self.options) if stored.get(k) != self.options[k]),
                    "options",
                )
                raise InputError(
                    f"{self.results} holds results made with other options ({key}: "
                    f"{stored.get(key)!r} there, {self.options.get(key)!r} now); "
                    "use a new --out, or --fresh to start over"
                )
        self.retried = drop_records(self.results, lambda r: "error" in r)
        done = finished_ids(self.results)
        self.todo = [p for p in self.pairs if p["id"] not in done]

    @property
    def skipped(self) -> int:
        return len(self.pairs) - len(self.todo)

    def run(self, pipeline, *, think: bool, progress: bool = True) -> dict[str, int]:
        """Segment the pairs to do; returns ``{"total", "skipped", "done", "errors"}``."""
        from refseg.progress import new_progress

        counts = {"total": len(self.pairs), "skipped": self.skipped, "done": 0, "errors": 0}
        embeddings: dict = {}
        with (
            RecordWriter(self.results, owner=OWNER) as sink,
            new_progress(enabled=progress) as bar,
        ):
            task = bar.add_task("segmenting", total=len(self.pairs), completed=counts["skipped"])
            for chunk in _chunks(self.todo, CHUNK):
                if len(embeddings) > 4:  # keep only recent images' embeddings in memory
                    embeddings.clear()
                try:
                    outputs = pipeline.run(
                        [(p["image"], p["phrase"]) for p in chunk],
                        think=think,
                        embeddings=embeddings,
                    )
                    records = [_success(p, r) for p, r in zip(chunk, outputs)]
                except Exception:
                    records = [_one(pipeline, p, think, embeddings) for p in chunk]
                for record in records:
                    record["options"] = self.options
                    counts["errors"] += "error" in record
                    sink.write(record)
                    counts["done"] += 1
                    bar.advance(task)
        return counts


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _success(pair: dict[str, Any], result) -> dict[str, Any]:
    # "image" of the result JSON is the image's size; the file is "image_path".
    return {"id": pair["id"], "image_path": pair["image"], **result.to_dict(timings=True)}


def _failure(pair: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    from refseg.errors import RefsegError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, RefsegError):  # a model's own exception (CUDA out of memory, ...)
        text = f"{type(exc).__name__}: {text}".rstrip(": ")
    return {"id": pair["id"], "image_path": pair["image"], "phrase": pair["phrase"], "error": text}


def _one(pipeline, pair: dict[str, Any], think: bool, embeddings: dict) -> dict[str, Any]:
    """Retry one pair alone so a bad image fails only its own line."""
    try:
        result = pipeline.run(
            [(pair["image"], pair["phrase"])], think=think, embeddings=embeddings
        )[0]
    except Exception as exc:
        return _failure(pair, exc)
    return _success(pair, result)


def run_pairs(
    pipeline,
    pairs: list[dict[str, Any]],
    out_dir: Path,
    *,
    think: bool,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Segment ``pairs`` with ``pipeline`` into ``out_dir/results.jsonl``: done pairs are
    skipped, failed ones tried again (see :class:`BatchRun`; ``options`` as recorded there)."""
    with BatchRun(pairs, out_dir, options=options) as batch:
        return batch.run(pipeline, think=think, progress=progress)


def run_batch(
    batch: Path,
    out: Path,
    *,
    grounder: str | None,
    segmenter: str,
    think: bool,
    refine: int | None,
    device: str | None,
    fresh: bool = False,
    answer: str = "box",
    refiner: str = "sam",
    refine_iters: int | None = None,
) -> None:
    """The CLI entry: validate input, load models once, run, print a one-line summary."""
    import typer

    from refseg.grounding import DEFAULT_GROUNDER, load_grounder, set_answer
    from refseg.pipeline import Pipeline
    from refseg.protocol import ANSWERS
    from refseg.segmentation import load_segmenter
    from refseg.segmentation.refiners import REFINER_NAMES, load_refiner

    if answer not in ANSWERS:  # before the folder is touched or a model loads
        raise InputError(f"unknown answer kind {answer!r}; use {' or '.join(ANSWERS)}")
    # A bad refiner name or checkpoint fails here, before any model loads.
    trained = None if refiner in REFINER_NAMES else load_refiner(refiner)
    pairs = read_pairs(batch)
    results = out / RESULTS_FILE
    refuse_overwriting_inputs({"--out": results}, [batch])
    options = batch_options(answer, refiner, refine_iters)
    with BatchRun(pairs, out, fresh=fresh, options=options) as run:
        retried = f", {run.retried} failed before and tried again" if run.retried else ""
        if not run.todo:
            typer.echo(f"all {len(pairs)} pairs already done in {results}")
            return
        chosen_segmenter = load_segmenter(segmenter, device=device)
        chosen_grounder = load_grounder(grounder or DEFAULT_GROUNDER, device=device)
        set_answer(chosen_grounder, answer)
        pipeline = Pipeline(
            chosen_grounder,
            chosen_segmenter,
            refine=refine,
            refiner=trained or load_refiner(refiner, chosen_segmenter),
            refine_iters=refine_iters,
        )
        try:
            counts = run.run(pipeline, think=think)
        except KeyboardInterrupt:
            typer.echo(
                f"refseg: interrupted; finished pairs are kept in {results}: "
                "rerun the same command to resume",
                err=True,
            )
            raise typer.Exit(130) from None
    typer.echo(
        f"{counts['done']} pairs segmented ({counts['skipped']} already done{retried}, "
        f"{counts['errors']} failed) -> {results}"
    )
