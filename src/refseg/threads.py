"""The CPU thread budget: how many threads refseg's model code may use at once.

One setting, ``REFSEG_THREADS`` (or ``refseg --threads N``), default: the cores this process may
run on (``os.sched_getaffinity``, which honours ``taskset`` and container CPU sets, unlike
``os.cpu_count``). Under a launcher that starts several processes on one machine
(``accelerate launch``, ``torchrun``: ``LOCAL_WORLD_SIZE`` set) each process gets an equal share.

Why: onnxruntime and torch each size their pools to the whole machine by default. Two concurrent
server requests, or two data-parallel ranks, then run twice as many busy threads as there are
cores, and the threads preempt one another; splitting one budget keeps the sum at the cores.
Consumers: :class:`refseg.segmentation.onnx_sam.OnnxSam` sessions (intra-op threads), torch
(``torch.set_num_threads`` and ``OMP_NUM_THREADS`` for torch imported later), and the server,
which gives each of its ``--max-concurrency`` model calls ``budget // max_concurrency``.
"""

from __future__ import annotations

import os
import sys

from refseg.errors import InputError

ENV = "REFSEG_THREADS"
#: More cores than machines refseg runs on have; a larger value is a typo (and would start that
#: many threads per onnxruntime session).
MAX_THREADS = 1024


def allowed_cores() -> int:
    """Cores this process may run on (``os.cpu_count`` where affinity is not available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_threads(value: str | int, source: str = ENV) -> int:
    """A thread count from text; a bad one is a one-line :class:`InputError` naming ``source``."""
    try:
        threads = int(str(value).strip())
    except ValueError:
        raise InputError(f"{source}={value!r}: expected a whole number of threads") from None
    if not 1 <= threads <= MAX_THREADS:
        raise InputError(f"{source}={value!r}: expected 1 to {MAX_THREADS} threads")
    return threads


def thread_budget() -> int:
    """Threads refseg may use in this process.

    ``REFSEG_THREADS`` when set; otherwise the allowed cores divided among the local processes
    of a data-parallel launch (``LOCAL_WORLD_SIZE``), at least 1.
    """
    value = os.environ.get(ENV, "").strip()
    if value:
        return parse_threads(value)
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    processes = int(local) if local.isdigit() and int(local) > 0 else 1
    return max(1, allowed_cores() // processes)


def share(parts: int) -> int:
    """Threads for each of ``parts`` concurrent model calls: an equal share, at least 1."""
    return max(1, thread_budget() // max(1, parts))


def apply_torch(threads: int) -> None:
    """Make torch use ``threads`` intra-op threads, now if it is imported, else when it is.

    ``OMP_NUM_THREADS`` is what torch reads when it is first imported; launchers set it to 1
    for multi-process runs, which would leave each rank's share unused, so it is overwritten.
    """
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)


def set_thread_budget(threads: int | None) -> int:
    """Fix the budget for this process and its children (``--threads``); returns it.

    ``None`` keeps ``REFSEG_THREADS`` or the default. The value is put in the environment so
    data-parallel workers and server worker threads see the same budget.
    """
    if threads is not None:
        os.environ[ENV] = str(parse_threads(threads, "--threads"))
    budget = thread_budget()
    apply_torch(budget)
    return budget
