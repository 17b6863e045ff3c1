"""Hostile rollout files for ``refseg train refiner``: FIFOs, size bombs, inconsistent records.

A rollout file is JSONL that a GRPO run wrote, or that someone sent. Its ``image`` may name a
FIFO (hashing it waits forever) or ``/dev/zero`` (hashing it never ends); 16 KB of RLE can
declare 60 masks of 7000x7000 (3 GB decoded); masks of another size or a box that is a string
end in a traceback. Each must be one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from refseg import masks
from tests.hostile.harness import run_cli, run_python


def _disc(h: int = 40, w: int = 40) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return (ys - h / 2) ** 2 + (xs - w / 2) ** 2 < (min(h, w) / 3) ** 2


def _config(tmp_path: Path, records: list[dict]) -> Path:
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tmp_path / "refiner.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'out'}\nrollouts: {rollouts}\nmax_steps: 1\nbatch_size: 1\n"
        "net: {channels: 8, blocks: 0}\n"
    )
    return config


def _record(image: str, h: int = 40, w: int = 40, **changes: object) -> dict:
    mask = _disc(h, w)
    record = {
        "step": 0,
        "index": 0,
        "image": image,
        "width": w,
        "height": h,
        "masks": [masks.encode(mask)],
        "boxes": [[5.0, 5.0, 35.0, 35.0]],
        "gt_masks": [masks.encode(mask)["counts"]],
    }
    return {**record, **changes}


def _train(config: Path):
    return run_cli("train", "refiner", "--config", str(config), timeout=30)


def test_a_fifo_image_is_one_line(tmp_path):
    image = tmp_path / "image.png"
    os.mkfifo(image)  # hashing it would wait for a writer forever
    out = _train(_config(tmp_path, [_record(str(image))]))
    assert out.one_line_error, out.stderr[-2000:]
    assert "not a regular file" in out.stderr


CASES = {
    "size": {"masks": [masks.encode(np.ones((20, 30), dtype=bool))]},
    "box-string": {"boxes": ["1, 2, 3, 4"]},
    "box-dict": {"boxes": [{"x1": 1}]},
    "box-three": {"boxes": [[1, 2, 3]]},
    "box-nan": {"boxes": [[1, 2, 3, float("nan")]]},
    "boxes-string": {"boxes": "abcd"},
    "height": {"height": "40"},
    "many": {"masks": [masks.encode(_disc())] * 101},
}
#: 60 masks (and 60 GT) of 7000x7000 in a few KB of RLE: 5.9 GB once decoded.
_BIG = masks.encode(np.zeros((7000, 7000), dtype=bool))
CASES["pixels"] = {
    "height": 7000,
    "width": 7000,
    "masks": [_BIG] * 60,
    "gt_masks": [_BIG["counts"]] * 60,
    "boxes": [[1.0, 1.0, 2.0, 2.0]] * 60,
}


def test_inconsistent_records_and_odd_images_are_one_line(tmp_path):
    """Every case in one child (each is a line of its own rollout file): the message it ends in."""
    assert len(json.dumps(CASES["pixels"])) < 20_000
    for name, changes in CASES.items():
        (tmp_path / name).mkdir()
        _config(tmp_path / name, [_record("x.png", **changes)])
    (tmp_path / "folder.png").mkdir()
    code = f"""
        import json, sys
        from pathlib import Path
        from refseg.errors import RefsegError
        from refseg.train import refiner as T
        root = Path({str(tmp_path)!r})
        out = {{}}
        for name in {list(CASES)!r}:
            cfg = T.load_refiner_config(root / name / "refiner.yaml")
            try:
                T.rollout_examples(cfg)
                out[name] = "accepted"
            except RefsegError as exc:
                out[name] = str(exc)
        for image in ["/dev/zero", str(root / "folder.png"), str(root / "missing.png")]:
            try:
                T.open_regular(image).close()
                out[image] = "accepted"
            except RefsegError as exc:
                out[image] = str(exc)
        print(json.dumps(out))
    """
    done = run_python(code, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    messages = json.loads(done.stdout)
    for name, message in messages.items():
        assert message != "accepted" and "\n" not in message and len(message) < 400, name
    for name in CASES:
        expect = "box" if name.startswith("box") else {"size": "size", "height": "height"}
        expect = expect if isinstance(expect, str) else expect.get(name, "masks")
        expect = "pixels" if name == "pixels" else expect
        assert expect in messages[name], (name, messages[name])
    assert "not a regular file" in messages["/dev/zero"]
    assert "not a regular file" in messages[str(tmp_path / "folder.png")]
