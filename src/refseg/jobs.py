"""Jobs over many inputs, by one process or several: what ``refseg eval`` and batch share.

Both write one record per input into a run folder, resume from what is there, and run
data-parallel under ``accelerate launch`` / ``torchrun``: rank R takes every N-th input and
appends to its own file (``records.rank{R}.jsonl``, ``results.rank{R}.jsonl``), and rank 0, which
holds the folder's lock (:func:`refseg.records.run_lock`), folds the rank files into the one
records file when every rank is done. The pieces of that (the ranks and their barrier, the GPU
of a local rank, the rank files, the merge) are here once, so the two jobs cannot drift apart.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refseg.errors import InputError
from refseg.fileio import atomic_write_bytes
from refseg.records import encode_record, read_records

__all__ = [
    "Ranks",
    "load_run_records",
    "merge_rank_files",
    "rank_device",
    "rank_file",
    "ranks",
    "run_files",
]


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run, and the barrier that joins the ranks."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = field(default=lambda: None, compare=False)

    @property
    def main(self) -> bool:
        """Rank 0: holds the run folder, merges, reports."""
        return self.rank == 0

    def share(self, items: Iterable[Any]) -> list[Any]:
        """This rank's items: every ``world_size``-th, starting at ``rank``."""
        return [x for i, x in enumerate(items) if i % self.world_size == self.rank]


def env_int(name: str, default: int) -> int:
    """A launcher's whole-number variable (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one line
    naming it if it is set to anything else."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or len(value) > 9:
        raise InputError(f"{name} must be a whole number, got {value[:40]!r}")
    return int(value)


def ranks(rank: int | None = None, world_size: int | None = None) -> Ranks:
    """Rank and world size from the arguments or the launcher's environment (``RANK``,
    ``WORLD_SIZE``), with a barrier: torch.distributed's (gloo, initialised here unless the
    caller already did) when there are several processes."""
    if world_size is None:
        world_size = env_int("WORLD_SIZE", 1)
    if rank is None:
        rank = env_int("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"bad data-parallel setup: rank {rank} of world size {world_size}")
    if world_size == 1:
        return Ranks()
    try:
        import torch.distributed as dist
    except ImportError as exc:
        raise InputError("data-parallel runs need torch (pip install refseg[vlm])") from exc

    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise InputError(
                "WORLD_SIZE > 1 but no MASTER_ADDR: start data-parallel runs with "
                "accelerate launch or torchrun"
            )
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(hours=72)
        )
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise InputError("the process group disagrees with RANK / WORLD_SIZE")
    return Ranks(rank, world_size, dist.barrier)


def rank_device() -> str | None:
    """Under a data-parallel launcher with GPUs, the GPU of this process's local rank
    (otherwise every process would load its models on the first GPU); else ``None``."""
    if env_int("WORLD_SIZE", 1) <= 1 or "LOCAL_RANK" not in os.environ:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return f"cuda:{env_int('LOCAL_RANK', 0) % torch.cuda.device_count()}"


def rank_file(name: str, rank: int) -> str:
    """The file a rank appends to instead of ``name``.

    >>> rank_file("records.jsonl", 3)
    'records.rank3.jsonl'
    """
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.rank{rank}{dot}{suffix}"


def run_files(out_dir: Path, name: str) -> list[Path]:
    """``out_dir/name`` first (present or not), then every rank's file present, in rank order."""
    stem, _, suffix = name.rpartition(".")
    ranked = []
    for path in out_dir.glob(f"{stem}.rank*.{suffix}"):
        number = path.name[len(stem) + len(".rank") : -len(suffix) - 1]
        if number.isdigit():
            ranked.append((int(number), path))
    return [out_dir / name, *(path for _, path in sorted(ranked))]


def load_run_records(out_dir: Path, name: str) -> dict[str, dict[str, Any]]:
    """Every record of a run folder by id; where an id has several records (a crash between a
    merge's write and its clean-up), the first one wins."""
    records: dict[str, dict[str, Any]] = {}
    for path in run_files(out_dir, name):
        for record in read_records(path):
            records.setdefault(str(record["id"]), record)
    return records


def merge_rank_files(
    out_dir: Path, name: str, order: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Fold the rank files into ``out_dir/name`` (rank 0, once every rank is done) and return
    every record by id.

    Records are written in ``order`` of ids (records of other ids last), else as read. The file is
    replaced atomically before the rank files are deleted, so a crash in between leaves
    duplicates that the next merge drops. Without rank files nothing is rewritten.
    """
    files = run_files(out_dir, name)
    records = load_run_records(out_dir, name)
    ranked = [p for p in files[1:] if p.is_file()]
    if not ranked:
        return records
    chosen = list(records.values())
    if order is not None:
        place = {key: i for i, key in enumerate(order)}
        chosen.sort(key=lambda r: place.get(str(r["id"]), len(place)))
    atomic_write_bytes(out_dir / name, b"".join(encode_record(r) for r in chosen))
    for path in ranked:
        path.unlink(missing_ok=True)
    return records
