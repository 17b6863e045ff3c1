"""The batch engine: one run on an output folder (resume, ranks, records), the models' loop
with images decoded ahead, and the whole run with its summary; see :mod:`refseg.batch`."""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refseg.batch.pairs import _build_prompts, folder_pairs, read_pairs
from refseg.errors import InputError
from refseg.fileio import check_writable, ensure_dir, refuse_overwriting_inputs
from refseg.jobs import Ranks, merge_rank_files, rank_device, rank_file, ranks, run_files
from refseg.pipeline import Pipeline
from refseg.records import RecordWriter, drop_records, read_records, run_lock

if TYPE_CHECKING:
    from refseg.pipeline import PipelineOptions
    from refseg.segmentation.base import Segmenter

#: Pairs grounded together (one generate batch); consecutive pairs on the same image share
#: one embedding.
CHUNK = 8
RESULTS_FILE = "results.jsonl"
OWNER = "refseg segment --batch"
#: The options of a run that recorded none (box answers, the gated sam refiner, 1 iteration).
DEFAULT_OPTIONS: dict[str, Any] = {"answer": "box", "refiner": "sam", "refine_iters": 1}


def finished_ids(results: Path) -> set[str]:
    """Ids with a result (failed pairs are not finished: a rerun tries them again)."""
    return {str(r["id"]) for r in read_records(results) if "error" not in r}


def _record_pair(record: dict[str, Any]) -> tuple[str | None, str | None, Any]:
    """(image path, phrase, prompts) a record was made for; None where it has none (prompts:
    a phrase pair; phrase: a prompt-only pair, or an older record that lacks it)."""
    image = record.get("image_path")
    if image is None and isinstance(record.get("image"), str):  # records before image_path
        image = record["image"]
    return image, record.get("phrase"), record.get("prompts")


def _same_request(phrase: str | None, prompts: Any, pair: dict[str, Any]) -> bool:
    """Whether a record's phrase/prompts are what ``pair`` asks for (the image aside).

    A prompt-only pair matches only a record of the same prompts (normalized by
    :func:`pair_prompts`, so JSON's ``1`` and ``1.0`` are one number); a phrase pair matches a
    record without prompts whose phrase is the same, or absent (records before phrases were kept).
    """
    if "prompts" in pair:
        return phrase is None and prompts == pair["prompts"]
    return prompts is None and (phrase is None or phrase == pair["phrase"])


def _request_text(phrase: str | None, prompts: Any) -> str:
    """A pair's phrase or prompts for a one-line message (empty prompt lists left out)."""
    if prompts is None:
        return repr(phrase)
    if isinstance(prompts, dict):
        prompts = {key: value for key, value in prompts.items() if value}
    text = json.dumps(prompts, separators=(",", ":"))
    return f"prompts {text if len(text) <= 100 else text[:97] + '...'}"


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
        ranks: Ranks | None = None,
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
        self.ranks = ranks or Ranks()
        self.rank, self.world_size, self.barrier = (
            self.ranks.rank,
            self.ranks.world_size,
            self.ranks.barrier,
        )
        #: Where this process appends: ``results.jsonl``, or its own file in a data-parallel
        #: run (merged into ``results.jsonl`` by rank 0 at the end, see :func:`merge_results`).
        self.sink = (
            self.results if self.world_size == 1 else out_dir / rank_file(RESULTS_FILE, self.rank)
        )

    def __enter__(self) -> BatchRun:
        ensure_dir(self.out_dir)
        check_writable(self.sink)  # before the models load
        # Rank 0 holds the folder (as eval does); the other ranks wait for it at the barrier.
        self._held = run_lock(self.out_dir, OWNER) if self.rank == 0 else contextlib.nullcontext()
        self._held.__enter__()
        try:
            if self.fresh and self.rank == 0:
                for path in run_files(self.out_dir, RESULTS_FILE):
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
        files = run_files(self.out_dir, RESULTS_FILE)
        records = [r for path in files for r in read_records(path)]
        for record in records:
            key = str(record["id"])
            pair = by_id.get(key)
            if pair is None:
                raise InputError(
                    f"{self.results} holds results of another pairs file (id {key!r} is not in "
                    "this one); use a new --out, or --fresh to start over"
                )
            image, phrase, prompts = _record_pair(record)
            # A failed record binds nothing: it is dropped below and its pair tried again, as
            # the file now says (a user fixing a point outside the image is not refused).
            if "error" not in record and (
                (image is not None and image != pair["image"])
                or not _same_request(phrase, prompts, pair)
            ):
                there = _request_text(phrase, prompts)
                now = _request_text(pair.get("phrase"), pair.get("prompts"))
                raise InputError(
                    f"{self.results} holds a different pair under id {key!r} ({there} on "
                    f"{image} there, {now} on {pair['image']} now); "
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
        done = {i for path in run_files(self.out_dir, RESULTS_FILE) for i in finished_ids(path)}
        self.todo_all = [p for p in self.pairs if p["id"] not in done]
        self.todo = [p for p in self.ranks.share(self.pairs) if p["id"] not in done]

    @property
    def skipped(self) -> int:
        return len(self.pairs) - len(self.todo_all)

    def run(
        self,
        pipeline: Pipeline | None,
        *,
        think: bool | None = None,
        progress: bool = True,
        segmenter: Segmenter | None = None,
        refine: int | None = None,
    ) -> dict[str, Any]:
        """Segment this rank's pairs to do; returns ``{"total", "skipped", "done", "errors",
        "images", "seconds"}`` (``done``: records written, failed ones included; ``images``:
        distinct image files segmented).

        Phrase pairs go through ``pipeline`` (``think`` overrides its options); prompt-only pairs
        straight to ``segmenter`` (default: the pipeline's) with ``refine`` (default: the
        pipeline's), so a file of
        prompt-only pairs needs no pipeline, hence no grounder. Both kinds share one embedding
        per image. Images are decoded ahead of the model by :class:`_Prefetch` (a background
        thread, at most :data:`PREFETCH_CHUNKS` chunks ahead), so decoding overlaps model work.
        """
        from refseg.progress import new_progress

        if pipeline is not None:
            segmenter = pipeline.segmenter if segmenter is None else segmenter
            refine = pipeline.refine if refine is None else refine
        if pipeline is None and any("prompts" not in p for p in self.todo):
            raise ValueError("phrase pairs need a pipeline (a grounder)")
        if segmenter is None and any("prompts" in p for p in self.todo):
            raise ValueError("prompt-only pairs need a segmenter")

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
                by_index: dict[int, dict[str, Any]] = {}
                phrased = [(i, p) for i, p in enumerate(chunk) if "prompts" not in p]
                if phrased:
                    assert pipeline is not None  # checked above
                    try:
                        outputs = pipeline.run(
                            [
                                (decoded.get(p["image"], p["image"]), p["phrase"])
                                for _, p in phrased
                            ],
                            think=think,
                            embeddings=embeddings,
                        )
                        records = [_success(p, r) for (_, p), r in zip(phrased, outputs)]
                    except Exception:
                        records = [_one(pipeline, p, think, embeddings) for _, p in phrased]
                    by_index.update((i, r) for (i, _), r in zip(phrased, records))
                for i, pair in enumerate(chunk):
                    if "prompts" in pair:
                        assert segmenter is not None  # checked above
                        image = decoded.get(pair["image"], pair["image"])
                        by_index[i] = _prompted(segmenter, pair, image, embeddings, refine)
                for record in (by_index[i] for i in range(len(chunk))):
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


def merge_results(out_dir: Path, pairs: list[dict[str, Any]]) -> None:
    """Fold the rank files into ``results.jsonl``, in the order of the pairs file (rank 0,
    after every rank finished; also after a resumed run left rank files of an earlier one)."""
    merge_rank_files(out_dir, RESULTS_FILE, (p["id"] for p in pairs))


def _request(pair: dict[str, Any]) -> dict[str, Any]:
    """What a record keeps of the pair's request, for resuming: its prompts (a prompt-only
    pair; a phrase pair's result carries its phrase)."""
    return {"prompts": pair["prompts"]} if "prompts" in pair else {}


def _success(pair: dict[str, Any], result) -> dict[str, Any]:
    # "image" of the result JSON is the image's size; the file is "image_path".
    return {
        "id": pair["id"],
        "image_path": pair["image"],
        **_request(pair),
        **result.to_dict(timings=True),
    }


def _failure(pair: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    from refseg.errors import RefsegError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, RefsegError):  # a model's own exception (CUDA out of memory, ...)
        text = f"{type(exc).__name__}: {text}".rstrip(": ")
    request = _request(pair) or {"phrase": pair["phrase"]}
    return {"id": pair["id"], "image_path": pair["image"], **request, "error": text}


def _prompted(
    segmenter: Segmenter, pair: dict[str, Any], image: Any, embeddings: dict, refine: int | None
) -> dict[str, Any]:
    """One prompt-only pair's record: its prompts built on the image (what needs the image size
    is checked here, failing this pair only), segmented on the image's shared embedding."""
    from refseg.image import image_digest, load_image
    from refseg.pipeline import segment_prompts

    try:
        pixels = load_image(image)  # the decoded array as is, or the path the prefetch missed
        height, width = pixels.shape[:2]
        prompts = _build_prompts(pair, width, height)
        key = image_digest(pixels)
        timings: dict[str, float] = {}
        if key not in embeddings:
            start = time.perf_counter()
            embeddings[key] = segmenter.embed(pixels)
            timings["embed_s"] = time.perf_counter() - start
        result = segment_prompts(
            segmenter, pixels, prompts, embedding=embeddings[key], refine=refine
        )
        result.timings.update(timings)
    except Exception as exc:
        return _failure(pair, exc)
    return _success(pair, result)


def _one(pipeline, pair: dict[str, Any], think: bool | None, embeddings: dict) -> dict[str, Any]:
    """Retry one pair alone so a bad image fails only its own line."""
    try:
        result = pipeline.run(
            [(pair["image"], pair["phrase"])], think=think, embeddings=embeddings
        )[0]
    except Exception as exc:
        return _failure(pair, exc)
    return _success(pair, result)


def run_pairs(
    pipeline: Pipeline | None,
    pairs: list[dict[str, Any]],
    out_dir: Path,
    *,
    think: bool | None = None,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    segmenter: Segmenter | None = None,
    refine: int | None = None,
) -> dict[str, int]:
    """Segment ``pairs`` with ``pipeline`` into ``out_dir/results.jsonl``: done pairs are
    skipped, failed ones tried again (see :class:`BatchRun`; ``options`` as recorded there).
    Prompt-only pairs need only ``segmenter`` (:meth:`BatchRun.run`)."""
    with BatchRun(pairs, out_dir, options=options) as batch:
        return batch.run(
            pipeline, think=think, progress=progress, segmenter=segmenter, refine=refine
        )


@dataclass
class BatchSummary:
    """What one process of a batch run did, for the caller to report.

    ``main`` is rank 0, which reports the whole run; other ranks only say their own share.
    Counts are of this run (``done``: records written, failed ones included; ``images``:
    distinct image files), over every rank on rank 0.
    """

    results: Path
    total: int
    skipped: int = 0
    retried: int = 0
    done: int = 0
    errors: int = 0
    images: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    #: Nothing was left to do when the run started (every rank stopped at once).
    nothing_to_do: bool = False
    #: This rank had nothing left to do and only waited for the others.
    waited: bool = False
    #: This rank's own share (data-parallel runs): done, images, seconds.
    own: dict[str, float] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.rank == 0


def run_batch(
    batch: Path,
    out: Path,
    *,
    grounder: str | None,
    segmenter: str,
    options: PipelineOptions | None = None,
    device: str | None = None,
    fresh: bool = False,
    phrases: Path | None = None,
    coco_results: Path | None = None,
) -> BatchSummary:
    """A whole batch run: validate input, load models once, run this rank's share, merge.

    ``batch`` is a pairs JSONL, or a folder of images segmented with every phrase of
    ``phrases`` (:func:`folder_pairs`). Under ``accelerate launch`` / ``torchrun`` each rank
    takes every ``WORLD_SIZE``-th pair, as ``refseg eval`` does (see :class:`BatchRun`). The
    grounder is loaded only when a pair still to do has a phrase. Raises
    :class:`KeyboardInterrupt` as it came (finished pairs are kept); failed pairs are counted in
    the summary and their records say why. ``coco_results`` also writes the whole
    ``results.jsonl`` as a COCO ``segm`` results file (:mod:`refseg.interop.coco`) once it is
    merged, on every run, so a rerun with nothing left to do still writes it.
    """
    from refseg.pipeline import PipelineOptions, load_pipeline
    from refseg.segmentation import load_segmenter
    from refseg.segmentation.base import FeatureReader

    # Resolved (a bad refiner checkpoint fails here) before the folder is touched.
    options = (options or PipelineOptions()).resolved(grounder)
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
    if coco_results is not None:
        refuse_overwriting_inputs({"--coco-results": coco_results}, [*inputs, results])
        check_writable(coco_results)  # before the models load
    dist = ranks()  # RANK / WORLD_SIZE of accelerate launch or torchrun
    device = device or rank_device()  # each rank on its local GPU, not all on the first
    summary = BatchSummary(results, len(pairs), rank=dist.rank, world_size=dist.world_size)
    with BatchRun(pairs, out, fresh=fresh, options=options.path_options(), ranks=dist) as run:
        summary.retried, summary.skipped = run.retried, run.skipped
        if not run.todo_all:  # the same answer on every rank: all of them stop here
            if dist.main:
                _finish(out, pairs, coco_results)
            summary.nothing_to_do = True
            return summary
        if not run.todo:  # this rank's share is done; wait for the others, then merge
            dist.barrier()
            if dist.main:
                _finish(out, pairs, coco_results)
                records = read_records(results)
                summary.done, summary.errors = len(records), sum("error" in r for r in records)
            summary.waited = True
            return summary
        chosen_segmenter = load_segmenter(segmenter, device=device)
        # Counted over every rank's pairs, so that all ranks refuse alike (none waits for one
        # that stopped here).
        prompted = sum("prompts" in p for p in run.todo_all)
        if prompted and isinstance(chosen_segmenter, FeatureReader):
            raise InputError(
                f"{batch}: {_count(prompted, 'pair')} to do with box/point prompts, which "
                f"segmenter {chosen_segmenter.name} cannot segment (it decodes from the "
                "grounder's features): give them a phrase, or use another --segmenter"
            )
        pipeline = None
        if any("prompts" not in p for p in run.todo):  # a phrase to ground: only then a grounder
            pipeline = load_pipeline(grounder, chosen_segmenter, options, device=device)
        started = time.perf_counter()  # models loaded: as the one-process figure
        counts = run.run(
            pipeline, progress=dist.main, segmenter=chosen_segmenter, refine=options.refine
        )
        dist.barrier()  # every rank has written its share
        if dist.main:
            _finish(out, pairs, coco_results)
    summary.own = {k: counts[k] for k in ("done", "images", "seconds")}
    if dist.world_size > 1:
        if not dist.main:
            return summary
        # All ranks' pairs over rank 0's time from its models being ready to the last rank done.
        summary.seconds = time.perf_counter() - started
        summary.done = len(run.todo_all)
        summary.images = len({p["image"] for p in run.todo_all})
        summary.errors = sum("error" in r for r in read_records(results))
    else:
        summary.seconds, summary.done = counts["seconds"], counts["done"]
        summary.images, summary.errors = counts["images"], counts["errors"]
    return summary


def _finish(out: Path, pairs: list[dict[str, Any]], coco_results: Path | None) -> None:
    """Rank 0 at the end: merge the ranks' records, then write the COCO results file."""
    merge_results(out, pairs)
    if coco_results is not None:
        from refseg.fileio import is_stdout
        from refseg.interop.coco import batch_coco_results, write_coco_results

        entries = batch_coco_results(read_records(out / RESULTS_FILE))
        count = write_coco_results(coco_results, entries)
        if not is_stdout(coco_results):
            print(f"wrote {coco_results} ({_count(count, 'detection')})", file=sys.stderr)


def _count(number: int, noun: str) -> str:
    """``1 pair``, ``2 pairs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
