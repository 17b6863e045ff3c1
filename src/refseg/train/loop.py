"""The loop refseg's own trainers share (box decoder, refiner): step, log, save, resume.

SFT and GRPO run in TRL's trainers; the box decoder and the refiner are small networks on frozen
features and run this plain loop. A trainer (:class:`StepTrainer`) owns its model, data and
optimizer and provides ``train_step() -> record``, ``save(folder, final=)`` and
``resume(folder)``; :func:`run_loop` does the rest, the same way for both:

* resume from the newest complete ``checkpoint-N`` of ``output_dir``
  (:func:`~refseg.train.common.last_checkpoint`), then drop the ``log.jsonl`` lines past the
  resumed step (:func:`trim_log`): the steps a killed run took after its last checkpoint are
  redone, and logged once;
* one JSON line every ``logging_steps`` steps (and at the last step), with ``time_s``;
* ``checkpoint-N`` every ``save_steps``, pruned to ``save_total_limit``;
* the final save into ``output_dir``.

The run fields it reads are :class:`~refseg.train.config.RunConfig`'s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from refseg.train.config import RunConfig

#: The step log of a run, in its ``output_dir``.
LOG_NAME = "log.jsonl"


class StepTrainer(Protocol):
    """What :func:`run_loop` needs of a trainer."""

    config: RunConfig
    #: Optimizer steps done (restored by :meth:`resume`).
    step: int

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (``step`` advances by one); returns the step's log record."""
        ...

    def save(self, folder: Path, *, final: bool = False) -> Any:
        """A checkpoint into ``folder`` (``trainer_state.json`` written last), or with
        ``final`` the trained model alone."""
        ...

    def resume(self, folder: str) -> None:
        """Load a checkpoint written by :meth:`save` (``step`` included)."""
        ...


def trim_log(log_path: Path, step: int) -> None:
    """Drop log lines past ``step`` (the killed run's steps are redone) and unreadable ones."""
    if not log_path.is_file():
        return
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    tmp = log_path.with_name(f"{log_path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, log_path)


def run_loop(
    trainer: StepTrainer,
    total_steps: int,
    *,
    log_fields: Callable[[], dict[str, Any]] | None = None,
) -> Path:
    """Run ``trainer`` to ``total_steps`` from its newest checkpoint (if any) and save it.

    ``log_fields`` adds fields to each logged record (after ``time_s``). Returns the run's
    ``output_dir``.
    """
    from refseg.train.common import last_checkpoint, prune_checkpoints

    config = trainer.config
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    previous = last_checkpoint(output)
    if previous is not None:
        trainer.resume(previous)
    log_path = output / LOG_NAME
    trim_log(log_path, trainer.step)
    start = time.time()
    while trainer.step < total_steps:
        record = trainer.train_step()
        if trainer.step % config.logging_steps == 0 or trainer.step == total_steps:
            record["time_s"] = round(time.time() - start, 3)
            if log_fields is not None:
                record.update(log_fields())
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if trainer.step % config.save_steps == 0:
            trainer.save(output / f"checkpoint-{trainer.step}")
            prune_checkpoints(output, config.save_total_limit)
    trainer.save(output, final=True)
    return output
