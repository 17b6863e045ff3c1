"""The batch engine behind `refseg segment --batch PAIRS.jsonl --out DIR`: many pairs, resumable.

Input: one JSON object a line, UTF-8: ``{"image": PATH, "phrase": TEXT[, "id": ID]}``, or a
prompt-only pair ``{"image": PATH, "boxes": [[X1, Y1, X2, Y2], ...], "points": [[X, Y], ...],
"point_labels": [1, 0, ...][, "id": ID]}`` (boxes and/or points, the rules of ``refseg segment
--box/--point``: :func:`refseg.types.build_prompts`; labels default to 1, foreground). A relative
``image`` is relative to the JSONL file, and ``id`` defaults to the line number. The whole file
is validated first (phrases through :func:`refseg.pipeline.check_phrase`, prompts through
:func:`pair_prompts` and the bounds of :mod:`refseg.limits`), so a bad line 900 fails as
``FILE: line 900: ...`` before any work; what needs the image (boxes clipped to it, points inside
it, pixels x prompts) is checked per pair when it runs, and fails that pair only. Prompt-only
pairs need no grounder: a file of them runs with the segmenter alone, without VLM weights; a
grounder is loaded only when a pair still to do has a phrase.

Output: ``DIR/results.jsonl``, one line per pair: the result JSON of ``refseg segment --json``
plus ``"id"`` and ``"image_path"`` (the image file, absolute), and ``"prompts"`` (``boxes``,
``points``, ``point_labels``) for a prompt-only pair; a pair that failed has ``"id"``,
``"image_path"``, ``"phrase"`` or ``"prompts"``, and ``"error"`` instead of a result. ``refseg
eval --predictions`` reads this file. The command exits 1 when any pair failed (0 when all were
segmented, 2 for bad input before any work, 130 when interrupted). Lines go through
:class:`refseg.records.RecordWriter` (flushed and fsynced as written), and the folder is held by
:func:`refseg.records.run_lock`, so:

* after a crash, ``kill -9`` or Ctrl-C the same command continues with the pairs not yet done
  (a torn last line is discarded), and failed pairs are tried again (a grounder outage is
  usually over by then); successes are kept;
* the results are keyed by content: a pair is "done" only if its record has the same id, image
  and phrase (or the same prompts), and a results file holding other pairs (another pairs file
  into the same ``--out``) is refused, naming the way out (a new ``--out``, or ``--fresh``); a
  failed pair's record is not a result, so its pair may change before it is tried again;
* a second batch on the same folder is refused while the first runs, ``--fresh`` included;
* every record carries ``"options"`` (``answer``, ``refiner``, ``refine_iters``: what changes
  the masks of path answers); a rerun with other options is refused like another pairs file,
  since one results file mixing two configurations would be scored as one. Records written
  before options were recorded count as the defaults (:data:`DEFAULT_OPTIONS`).

Folder input: ``--batch FOLDER --phrases PHRASES.txt`` segments every image file directly in the
folder with every phrase of the list (:func:`folder_pairs`; ids ``NAME#K``).

Scale: images are decoded in a background thread while the models work (bounded:
:class:`refseg.batch.run._Prefetch`), and the summary reports images/s. Under ``accelerate
launch`` / ``torchrun`` (``RANK``/``WORLD_SIZE``) the run is data-parallel exactly as ``refseg
eval``: rank R takes the pairs whose index i has ``i % WORLD_SIZE == R`` and appends to
``results.rank{R}.jsonl``; rank 0 holds the folder's lock and, once every rank is done, merges
all of them into ``results.jsonl`` in the pairs file's order (:func:`merge_results`), so N
processes write the records one would. A run stopped part-way resumes with any number of
processes: done pairs are read from every file. Each local process gets its share of the CPU
thread budget (:mod:`refseg.threads`).
"""

from refseg.batch.pairs import PROMPT_KEYS, folder_pairs, pair_prompts, read_pairs
from refseg.batch.run import (
    CHUNK,
    DEFAULT_OPTIONS,
    PREFETCH_CHUNKS,
    RESULTS_FILE,
    BatchRun,
    BatchSummary,
    finished_ids,
    merge_results,
    run_batch,
    run_pairs,
)

__all__ = [
    "CHUNK",
    "DEFAULT_OPTIONS",
    "PREFETCH_CHUNKS",
    "PROMPT_KEYS",
    "RESULTS_FILE",
    "BatchRun",
    "BatchSummary",
    "finished_ids",
    "folder_pairs",
    "merge_results",
    "pair_prompts",
    "read_pairs",
    "run_batch",
    "run_pairs",
]
