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

Folder input: ``--batch FOLDER --phrases PHRASES.txt`` segments every image file directly in the
folder with every phrase of the list (:func:`folder_pairs`; ids ``NAME#K``).

Scale: images are decoded in a background thread while the models work (:class:`_Prefetch`,
bounded), and the summary reports images/s. Under ``accelerate launch`` / ``torchrun``
(``RANK``/``WORLD_SIZE``) the run is data-parallel exactly as ``refseg eval``: rank R takes the
pairs whose index i has ``i % WORLD_SIZE == R`` and appends to ``results.rank{R}.jsonl``; rank 0
holds the folder's lock and, once every rank is done, merges all of them into ``results.jsonl``
in the pairs file's order (:func:`merge_results`), so N processes write the records one would.
A run stopped part-way resumes with any number of processes: done pairs are read from every
file. Each local process gets its share of the CPU thread budget (:mod:`refseg.threads`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from refseg.errors import InputError
from refseg.fileio import (
    atomic_write_bytes,
    check_writable,
    ensure_dir,
    refuse_overwriting_inputs,
)
from refseg.records import RecordWriter, drop_records, encode_record, read_records, run_lock

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


#: Image files a folder batch takes (by suffix, any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: Bounds on a folder batch: entries scanned in the folder, and phrases in the list.
MAX_FOLDER_ENTRIES = 1_000_000
MAX_PHRASES = 10_000


def folder_pairs(folder: Path, phrases_file: Path) -> list[dict[str, Any]]:
    """Every image file directly in ``folder`` (sorted by name) with every phrase of
    ``phrases_file`` (one a line, UTF-8; blank lines skipped), as pairs with ids ``NAME#K``
    (K: the phrase's 1-based place in the list), so a rerun resumes like a pairs file."""
    from refseg.pipeline import check_phrase

    if not phrases_file.is_file():
        raise InputError(f"{phrases_file}: no such file")
    try:
        text = phrases_file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{phrases_file}: not UTF-8 text (byte {exc.start + 1})") from None
    except OSError as exc:
        raise InputError(f"{phrases_file}: cannot read it ({exc.strerror})") from None
    phrases = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(phrases) >= MAX_PHRASES:
            raise InputError(f"{phrases_file}: more than {MAX_PHRASES} phrases")
        try:
            phrases.append(check_phrase(line))
        except InputError as exc:
            raise InputError(f"{phrases_file}: line {number}: {exc}") from None
    if not phrases:
        raise InputError(f"{phrases_file}: no phrases (one a line)")
    names = []
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_FOLDER_ENTRIES:
                    raise InputError(f"{folder}: more than {MAX_FOLDER_ENTRIES} entries")
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                    names.append(entry.name)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list it ({exc.strerror})") from None
    if not names:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    base = Path(os.path.abspath(folder))
    return [
        {"id": f"{name}#{k}", "image": str(base / name), "phrase": phrase}
        for name in sorted(names)
        for k, phrase in enumerate(phrases, start=1)
    ]


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
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] = lambda: None,
    ):
        self.pairs = pairs
        self.options = dict(DEFAULT_OPTIONS if options is None else options)
        self.out_dir = out_dir
        self.results = out_dir / RESULTS_FILE
        self.fresh = fresh
        self.todo: list[dict[str, Any]] = []
        #: Pairs to do in every shard (the same on every rank; ``todo`` is this rank's share).
        self.todo_all: list[dict[str, Any]] = []
        self.retried = 0
        self.rank, self.world_size, self.barrier = rank, world_size, barrier
        #: Where this process appends: ``results.jsonl``, or its own file in a data-parallel
        #: run (merged into ``results.jsonl`` by rank 0 at the end, see :func:`merge_results`).
        self.sink = self.results if world_size == 1 else out_dir / rank_file(rank)

    def __enter__(self) -> BatchRun:
        ensure_dir(self.out_dir)
        check_writable(self.sink)  # before the models load
        # Rank 0 holds the folder (as eval does); the other ranks wait for it at the barrier.
        self._held = run_lock(self.out_dir, OWNER) if self.rank == 0 else contextlib.nullcontext()
        self._held.__enter__()
        try:
            if self.fresh and self.rank == 0:
                for path in run_files(self.out_dir):
                    path.unlink(missing_ok=True)
            self.barrier()
            self._plan()
        except BaseException:
            self._held.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._held.__exit__(None, None, None)

    def _plan(self) -> None:
        by_id = {p["id"]: p for p in self.pairs}
        files = run_files(self.out_dir)
        records = [r for path in files for r in read_records(path)]
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
        # Every rank checked the same files above (a bad folder fails on all of them alike);
        # rank 0 alone rewrites them, and the others read them after the barrier.
        if self.rank == 0:
            self.retried = sum(drop_records(path, lambda r: "error" in r) for path in files)
        self.barrier()
        done = {i for path in run_files(self.out_dir) for i in finished_ids(path)}
        self.todo_all = [p for p in self.pairs if p["id"] not in done]
        self.todo = [
            p
            for index, p in enumerate(self.pairs)
            if index % self.world_size == self.rank and p["id"] not in done
        ]

    @property
    def skipped(self) -> int:
        return len(self.pairs) - len(self.todo_all)

    def run(self, pipeline, *, think: bool, progress: bool = True) -> dict[str, Any]:
        """Segment this rank's pairs to do; returns ``{"total", "skipped", "done", "errors",
        "images", "seconds"}`` (``images``: distinct image files segmented).

        Images are decoded ahead of the model by :class:`_Prefetch` (a background thread, at
        most :data:`PREFETCH_CHUNKS` chunks ahead), so decoding overlaps model work.
        """
        from refseg.progress import new_progress

        counts: dict[str, Any] = {
            "total": len(self.pairs),
            "skipped": self.skipped,
            "done": 0,
            "errors": 0,
            "images": 0,
        }
        embeddings: dict = {}
        start = time.perf_counter()
        with (
            RecordWriter(self.sink, owner=OWNER) as sink,
            new_progress(enabled=progress) as bar,
            _Prefetch(list(_chunks(self.todo, CHUNK))) as chunks,
        ):
            task = bar.add_task("segmenting", total=len(self.todo))
            for chunk, decoded in chunks:
                if len(embeddings) > 4:  # keep only recent images' embeddings in memory
                    embeddings.clear()
                counts["images"] += len({p["image"] for p in chunk})
                try:
                    outputs = pipeline.run(
                        [(decoded.get(p["image"], p["image"]), p["phrase"]) for p in chunk],
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
        counts["seconds"] = time.perf_counter() - start
        return counts


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: Chunks decoded ahead of the model: enough to hide decoding behind model work, few enough
#: that the decoded images waiting in memory stay bounded (2 x CHUNK images at most).
PREFETCH_CHUNKS = 2


class _Prefetch:
    """Iterate ``(chunk, {image path: decoded array})`` while a daemon thread decodes ahead.

    A file that fails to decode is left out of the mapping: the pipeline is then given the path
    and fails that pair with the usual one-line error. Leaving the ``with`` block early (an
    error, Ctrl-C) stops the thread at its next step.
    """

    def __init__(self, chunks: list[list[dict[str, Any]]]) -> None:
        self.chunks = chunks
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="refseg-decode", daemon=True)

    def _work(self) -> None:
        from refseg.image import load_image

        for chunk in self.chunks:
            decoded: dict[str, Any] = {}
            for path in dict.fromkeys(p["image"] for p in chunk):
                if self._stop.is_set():
                    return
                try:
                    decoded[path] = load_image(path)
                except Exception:  # the pipeline reports it for this pair
                    pass
            while not self._stop.is_set():
                try:
                    self._queue.put((chunk, decoded), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __enter__(self) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        for _ in self.chunks:
            while True:
                try:
                    item = self._queue.get(timeout=0.5)
                    break
                except queue.Empty:
                    if not self._thread.is_alive() and self._queue.empty():
                        raise RuntimeError("the image decoding thread stopped") from None
            yield item

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def rank_file(rank: int) -> str:
    """The records file of one rank of a data-parallel batch."""
    return f"results.rank{rank}.jsonl"


def run_files(out_dir: Path) -> list[Path]:
    """``results.jsonl`` and every rank's file present, in rank order."""
    ranked = []
    for path in out_dir.glob("results.rank*.jsonl"):
        number = path.name[len("results.rank") : -len(".jsonl")]
        if number.isdigit():
            ranked.append((int(number), path))
    return [out_dir / RESULTS_FILE, *(path for _, path in sorted(ranked))]


def merge_results(out_dir: Path, pairs: list[dict[str, Any]]) -> None:
    """Fold the rank files into ``results.jsonl``, in the order of the pairs file (rank 0,
    after every rank finished; also after a resumed run left rank files of an earlier one).

    ``results.jsonl`` is replaced atomically before the rank files are deleted, so a crash in
    between leaves duplicates that the next merge drops (a pair keeps its first record).
    """
    files = run_files(out_dir)
    if len(files) == 1:
        return
    by_id: dict[str, dict[str, Any]] = {}
    for path in files:
        for record in read_records(path):
            by_id.setdefault(str(record["id"]), record)
    order = {p["id"]: i for i, p in enumerate(pairs)}
    records = sorted(by_id.values(), key=lambda r: order.get(str(r["id"]), len(order)))
    atomic_write_bytes(out_dir / RESULTS_FILE, b"".join(encode_record(r) for r in records))
    for path in files[1:]:
        path.unlink(missing_ok=True)


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
    answer: str | None = None,
    refiner: str = "sam",
    refine_iters: int | None = None,
    phrases: Path | None = None,
) -> None:
    """The CLI entry: validate input, load models once, run, print a one-line summary.

    ``batch`` is a pairs JSONL, or a folder of images segmented with every phrase of
    ``phrases`` (:func:`folder_pairs`). Under ``accelerate launch`` / ``torchrun`` each rank
    takes every ``WORLD_SIZE``-th pair, as ``refseg eval`` does (see :class:`BatchRun`).
    """
    import typer

    from refseg.grounding import DEFAULT_GROUNDER, default_answer, load_grounder, set_answer
    from refseg.pipeline import Pipeline
    from refseg.protocol import ANSWERS
    from refseg.segmentation import load_segmenter
    from refseg.segmentation.refiners import REFINER_NAMES, load_refiner

    answer = answer or default_answer(grounder or DEFAULT_GROUNDER)
    if answer not in ANSWERS:  # before the folder is touched or a model loads
        raise InputError(f"unknown answer kind {answer!r}; use {' or '.join(ANSWERS)}")
    # A bad refiner name or checkpoint fails here, before any model loads.
    trained = None if refiner in REFINER_NAMES else load_refiner(refiner)
    if batch.is_dir():
        if phrases is None:
            raise InputError(f"--batch {batch} is a folder: give its phrases with --phrases FILE")
        pairs = folder_pairs(batch, phrases)
        inputs = [phrases]
    else:
        if phrases is not None:
            raise InputError("--phrases goes with a folder of images as --batch")
        pairs = read_pairs(batch)
        inputs = [batch]
    results = out / RESULTS_FILE
    refuse_overwriting_inputs({"--out": results}, inputs)
    options = batch_options(answer, refiner, refine_iters)
    from refseg.eval.runner import _distributed

    dist = _distributed(None, None)  # RANK / WORLD_SIZE of accelerate launch or torchrun
    if dist.world_size > 1 and device is None:
        from refseg.cli.eval import _rank_device

        device = _rank_device()  # each rank on its local GPU, not all on the first
    main = dist.rank == 0
    with BatchRun(
        pairs,
        out,
        fresh=fresh,
        options=options,
        rank=dist.rank,
        world_size=dist.world_size,
        barrier=dist.barrier,
    ) as run:
        retried = f", {run.retried} failed before and tried again" if run.retried else ""
        if not run.todo_all:  # the same answer on every rank: all of them stop here
            if main:
                merge_results(out, pairs)
                typer.echo(f"all {len(pairs)} pairs already done in {results}")
            return
        if not run.todo:  # this rank's share is done; wait for the others, then merge
            dist.barrier()
            if main:
                merge_results(out, pairs)
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
            started = time.perf_counter()  # models loaded: as the one-process figure
            counts = run.run(pipeline, think=think, progress=main)
        except KeyboardInterrupt:
            typer.echo(
                f"refseg: interrupted; finished pairs are kept in {run.sink}: "
                "rerun the same command to resume",
                err=True,
            )
            raise typer.Exit(130) from None
        dist.barrier()  # every rank has written its share
        if main:
            merge_results(out, pairs)
    if dist.world_size > 1:
        typer.echo(
            f"rank {dist.rank}: {counts['done']} pairs, {counts['images']} images in "
            f"{counts['seconds']:.1f} s ({counts['images'] / max(counts['seconds'], 1e-9):.2f} "
            "images/s)",
            err=True,
        )
        if not main:
            return
        # All ranks' pairs over rank 0's time from its models being ready to the last rank done.
        elapsed = time.perf_counter() - started
        done = len(run.todo_all)
        images = len({p["image"] for p in run.todo_all})
        errors = sum("error" in r for r in read_records(results))
    else:
        elapsed, done, images = counts["seconds"], counts["done"], counts["images"]
        errors = counts["errors"]
    typer.echo(
        f"{done} pairs segmented ({counts['skipped']} already done{retried}, "
        f"{errors} failed) -> {results}; {images / max(elapsed, 1e-9):.2f} images/s, "
        f"{done / max(elapsed, 1e-9):.2f} pairs/s over {dist.world_size} process"
        f"{'es' if dist.world_size > 1 else ''}"
    )
