"""The loop the decoder and refiner trainers share: step, log, save, resume, log trimming."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from refseg.train.config import RunConfig
from refseg.train.loop import run_loop, trim_log


@dataclass
class ToyConfig(RunConfig):
    total: int = 0


class ToyTrainer:
    """A "model" that sums the step numbers; its checkpoints hold the sum."""

    def __init__(self, config: ToyConfig) -> None:
        self.config = config
        self.step = 0
        self.value = 0
        self.resumed_from: str | None = None

    def train_step(self) -> dict:
        self.step += 1
        self.value += self.step
        return {"step": self.step, "value": self.value}

    def save(self, folder: Path, *, final: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text(json.dumps({"value": self.value}))
        if not final:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": self.step}))

    def resume(self, folder: str) -> None:
        self.resumed_from = Path(folder).name
        self.value = json.loads((Path(folder) / "model.json").read_text())["value"]
        self.step = json.loads((Path(folder) / "trainer_state.json").read_text())["global_step"]


def _config(out: Path, **extra) -> ToyConfig:
    return ToyConfig(**{"output_dir": str(out), "save_steps": 2, "logging_steps": 1, **extra})


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]


def test_a_straight_run_logs_saves_prunes_and_writes_the_final_model(tmp_path):
    cfg = _config(tmp_path, save_total_limit=1)
    trainer = ToyTrainer(cfg)
    calls = []
    assert run_loop(trainer, 4, log_fields=lambda: calls.append(1) or {"extra": 1}) == tmp_path
    assert _steps(tmp_path) == [1, 2, 3, 4]
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert list(first) == ["step", "value", "time_s", "extra"]  # extra fields after time_s
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4"]
    assert json.loads((tmp_path / "model.json").read_text())["value"] == 10
    assert len(calls) == 4


def test_logging_steps_and_the_last_step_are_logged(tmp_path):
    trainer = ToyTrainer(_config(tmp_path, logging_steps=3))
    run_loop(trainer, 4)
    assert _steps(tmp_path) == [3, 4]


def test_a_resume_after_a_save_redoes_the_lost_steps_and_logs_each_step_once(tmp_path):
    # Killed at step 3: checkpoint-2 is complete, step 3 was logged, the final save is lost.
    run_loop(ToyTrainer(_config(tmp_path)), 3)
    (tmp_path / "model.json").unlink()
    assert _steps(tmp_path) == [1, 2, 3]
    resumed = ToyTrainer(_config(tmp_path))
    run_loop(resumed, 4)
    assert resumed.resumed_from == "checkpoint-2"
    assert _steps(tmp_path) == [1, 2, 3, 4]  # step 3 redone, logged once
    assert resumed.value == 10  # as the uninterrupted run
    # A rerun of a finished run resumes from its last checkpoint and takes no step.
    again = ToyTrainer(_config(tmp_path))
    run_loop(again, 4)
    assert again.step == 4 and _steps(tmp_path) == [1, 2, 3, 4]


def test_a_fresh_run_drops_an_old_log_without_checkpoints(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    run_loop(ToyTrainer(_config(tmp_path, save_steps=10)), 2)
    assert _steps(tmp_path) == [1, 2]


@pytest.mark.parametrize(
    ("lines", "step", "kept"),
    [
        (['{"step": 1}', '{"step": 2}', '{"step": 3}'], 2, ['{"step": 1}', '{"step": 2}']),
        (['{"step": 1}', "not json", '{"step": 2}'], 5, ['{"step": 1}', '{"step": 2}']),
        (['{"step": 1}', "[1, 2]", '{"loss": 1}', '{"step": 2'], 1, ['{"step": 1}', '{"loss": 1}']),
        (['{"step": 4}'], 0, []),
    ],
)  # fmt: skip
def test_trim_log(tmp_path, lines, step, kept):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(line + "\n" for line in lines))
    trim_log(log, step)
    assert log.read_text().splitlines() == kept
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]  # no temporary file left


def test_trim_log_without_a_log_is_a_no_op(tmp_path):
    trim_log(tmp_path / "log.jsonl", 3)
    assert not (tmp_path / "log.jsonl").exists()
