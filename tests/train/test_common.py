"""Checkpoint bookkeeping shared by refseg's own training loops."""

from __future__ import annotations

from pathlib import Path

from refseg.train.common import last_checkpoint, prune_checkpoints


def _checkpoints(root: Path, steps: list[int], *, complete: bool = True) -> None:
    for step in steps:
        folder = root / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")


def test_prune_keeps_the_newest_by_step_not_by_name(tmp_path: Path) -> None:
    _checkpoints(tmp_path, [5, 10, 40, 100])
    (tmp_path / "checkpoint-final").mkdir()  # not numbered: never touched
    prune_checkpoints(tmp_path, 2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint-100", "checkpoint-40", "checkpoint-final"]
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-100")


def test_prune_without_a_limit_keeps_everything(tmp_path: Path) -> None:
    _checkpoints(tmp_path, [1, 2, 3])
    prune_checkpoints(tmp_path, None)
    assert len(list(tmp_path.iterdir())) == 3


def test_an_incomplete_checkpoint_is_not_resumed(tmp_path: Path) -> None:
    _checkpoints(tmp_path, [10])
    _checkpoints(tmp_path, [20], complete=False)  # killed mid-save
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
