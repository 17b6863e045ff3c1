"""The per-frame loop: ground, track, match, record; resumable after a kill.

Each frame is embedded once. Live tracks are carried into it by the tracker; on the first frame,
every ``reground`` frames and on a scene change the grounder looks again and its objects are
matched to the tracks (:mod:`refseg.video.matching`): same object, same ID; a new object, a new
ID; a tracked object the grounder no longer finds, an ended track. With prompts instead of a
phrase (``boxes``), the prompts seed the tracks on the first frame and nothing re-grounds.

With ``out``, every frame's record (the result JSON of README "Result format", each instance with
its ``track_id``) is appended to ``out/frames.jsonl`` and fsynced before the next frame starts, so
a killed run loses at most the frame in flight; run it again and it continues after the last
recorded frame, its tracks restored from that record (a record holds a track's whole state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from refseg import masks
from refseg.errors import InputError
from refseg.types import Instance, Prompt, Result
from refseg.video.frames import FrameSource
from refseg.video.matching import DEFAULT_MIN_IOU, match
from refseg.video.tracker import Observation, PromptTracker, Tracker, TrackState, updated_velocity

RECORDS = "frames.jsonl"
META = "run.json"


@dataclass
class TrackOptions:
    """How the loop grounds and keeps IDs.

    Attributes:
        reground: ground again every this many frames (0: the first frame only).
        scene_change: also ground again when the mean absolute difference of two consecutive
            32x32 grey thumbnails exceeds this fraction of full scale (None: never).
        min_iou: a detection and a track below this mask IoU are different objects.
        end_unmatched: a track the re-grounding does not find ends (else it carries on).
    """

    reground: int = 0
    scene_change: float | None = 0.3
    min_iou: float = DEFAULT_MIN_IOU
    end_unmatched: bool = True

    def __post_init__(self) -> None:
        if self.reground < 0:
            raise InputError(f"reground must be 0 (first frame only) or more, got {self.reground}")


@dataclass
class FrameResult:
    """One frame's tracks: ``result.instances[i]`` is track ``track_ids[i]``."""

    index: int
    result: Result
    track_ids: list[int]
    new_tracks: list[int] = field(default_factory=list)
    ended_tracks: list[int] = field(default_factory=list)
    grounded: bool = False
    velocities: list[tuple[float, float]] = field(default_factory=list)
    next_id: int = 0

    def to_record(self) -> dict[str, Any]:
        """The JSONL record: the result JSON plus track IDs (and what resuming needs)."""
        data = self.result.to_dict()
        for instance, track_id, velocity in zip(data["instances"], self.track_ids, self.velocities):
            instance["track_id"] = track_id
            instance["velocity"] = [velocity[0], velocity[1]]  # unrounded: resume is exact
        return {
            "id": self.index,
            "frame": self.index,
            **data,
            "track_ids": self.track_ids,
            "new_tracks": self.new_tracks,
            "ended_tracks": self.ended_tracks,
            "grounded": self.grounded,
            "next_id": self.next_id,
        }


class TrackBook:
    """Track IDs over a video: carries the tracks, matches detections, starts and ends tracks."""

    def __init__(self, tracker: Tracker, *, min_iou: float = DEFAULT_MIN_IOU) -> None:
        self.tracker = tracker
        self.min_iou = min_iou
        self.states: list[TrackState] = []
        self.next_id = 0

    def restore(self, states: list[TrackState], next_id: int) -> None:
        self.states = states
        self.next_id = next_id

    def step(
        self,
        embedding: Any,
        detections: Sequence[Observation] | None = None,
        *,
        end_unmatched: bool = True,
    ) -> tuple[list[TrackState], list[Observation], list[int], list[int]]:
        """Advance one frame: ``(states, observations, new IDs, ended IDs)``."""
        observed = self.tracker.propagate(embedding, self.states) if self.states else []
        ended = [s.track_id for s, o in zip(self.states, observed) if o is None]
        live = [(s, o) for s, o in zip(self.states, observed) if o is not None]
        new: list[int] = []
        if detections is not None:
            matching = match(
                [o.mask for _, o in live], [d.mask for d in detections], min_iou=self.min_iou
            )
            pairs = dict(matching.pairs)
            kept = []
            for index, (state, observation) in enumerate(live):
                if index in pairs:  # the fresh detection replaces the carried mask (no drift)
                    kept.append((state, detections[pairs[index]]))
                elif end_unmatched:
                    ended.append(state.track_id)
                else:
                    kept.append((state, observation))
            live = kept
            for index in matching.unmatched_detections:
                state = TrackState(self.next_id, detections[index].mask)
                new.append(self.next_id)
                self.next_id += 1
                live.append((state, detections[index]))
        states = []
        for state, observation in live:
            velocity = (
                state.velocity
                if state.track_id in new
                else updated_velocity(state.mask, observation.mask, state.velocity)
            )
            states.append(TrackState(state.track_id, observation.mask, observation.score, velocity))
        self.states = states
        self.tracker.commit(embedding, states, [o for _, o in live])
        return states, [o for _, o in live], new, sorted(ended)


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _ground(grounder: Any, frame: np.ndarray, phrase: str, think: bool) -> list[Prompt] | None:
    """The grounder's objects in ``frame`` as prompts; None when its answer was unreadable
    (the tracks then carry on rather than end on a model hiccup)."""
    from refseg.limits import check_prompts

    grounding = grounder.ground([frame], [phrase], think=think)[0]
    if grounding.parse_error:
        return None
    prompts = [Prompt(box=g.box, points=list(g.points)) for g in grounding.instances]
    try:
        check_prompts(prompts, frame.shape[1], frame.shape[0])
    except InputError:
        return None
    return prompts


def _meta(
    source: FrameSource,
    phrase: str | None,
    prompts: Sequence[Prompt],
    options: TrackOptions,
    tracker: Tracker,
) -> dict[str, Any]:
    return {
        "video": str(source.path.resolve()),
        "frames": source.info.frames,
        "width": source.info.width,
        "height": source.info.height,
        "phrase": phrase,
        "prompts": [
            {
                "box": list(p.box) if p.box else None,
                "points": [list(q) for q in p.points],
                "labels": list(p.labels),
            }
            for p in prompts
        ],
        "options": asdict(options),
        "tracker": tracker.name,
    }


def _resume_state(path: Path) -> tuple[int, dict[str, Any] | None]:
    """``(frames done, last record)`` of a records file (read a line at a time)."""
    from refseg.records import iter_records

    done, last = 0, None
    for record in iter_records(path):
        if record.get("frame") != done:
            raise InputError(
                f"{path}: frame {done} expected, found {record.get('frame')!r}; "
                "not this run's records (use --fresh to start over)"
            )
        done, last = done + 1, record
    return done, last


def _restore(record: dict[str, Any]) -> tuple[list[TrackState], int]:
    states = []
    for instance in record.get("instances", []):
        mask = masks.decode(masks.normalize(instance["mask"]))
        vx, vy = instance.get("velocity") or (0.0, 0.0)
        states.append(
            TrackState(
                int(instance["track_id"]),
                mask,
                float(instance.get("score", 1.0)),
                (float(vx), float(vy)),
            )
        )
    return states, int(record.get("next_id", 0))


def track(
    video: str | Path | FrameSource,
    phrase: str | None = None,
    *,
    boxes: Sequence[Prompt] = (),
    grounder: Any = None,
    tracker: Tracker | None = None,
    segmenter: Any = "onnx-sam",
    options: TrackOptions | None = None,
    out: str | Path | None = None,
    fresh: bool = False,
    think: bool = False,
) -> Iterator[FrameResult]:
    """Track a phrase's objects (or first-frame prompts) through a video, frame by frame.

    Args:
        video: a video file, animated GIF, folder of frames, or an open :class:`FrameSource`.
        phrase: what to follow, in words (needs ``grounder``: a grounder or a spec string).
        boxes: first-frame prompts instead of a phrase (:class:`~refseg.types.Prompt`).
        tracker: the tracker (default: :class:`PromptTracker` on ``segmenter``).
        segmenter: a segmenter or spec for the default tracker.
        options: re-grounding and matching (:class:`TrackOptions`).
        out: a folder for ``frames.jsonl`` (resumable; see the module docstring).
        fresh: with ``out``, discard its records and start over.

    Yields the frames this call processes (after a resume: those not recorded before).
    """
    options = options or TrackOptions()
    source = video if isinstance(video, FrameSource) else FrameSource(video)
    if (phrase is None) == (not boxes):
        raise InputError("give a phrase or first-frame prompts (boxes), not both or neither")
    if phrase is not None:
        from refseg.pipeline import check_phrase

        phrase = check_phrase(phrase)
        if grounder is None:
            raise InputError("a phrase needs a grounder (a spec or a loaded grounder)")
        if isinstance(grounder, str):
            from refseg.grounding import load_grounder

            grounder = load_grounder(grounder)
    if tracker is None:
        if isinstance(segmenter, str):
            from refseg.segmentation import load_segmenter

            segmenter = load_segmenter(segmenter)
        tracker = PromptTracker(segmenter)
    if out is None:
        yield from _loop(source, phrase, list(boxes), grounder, tracker, options, None, think)
        return
    from refseg.fileio import atomic_write_text, ensure_dir
    from refseg.records import RecordWriter, run_lock

    folder = ensure_dir(out)
    with run_lock(folder, "refseg video run"):
        records, meta_path = folder / RECORDS, folder / META
        meta = _meta(source, phrase, boxes, options, tracker)
        if fresh:
            records.unlink(missing_ok=True)
        elif meta_path.is_file() and records.is_file():
            try:
                old = json.loads(meta_path.read_text())
            except ValueError:
                old = None
            if old != meta:
                raise InputError(
                    f"{folder} holds a run of another video, phrase, prompts or options; "
                    "use a new --out, or --fresh to start over"
                )
        atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
        done, last = _resume_state(records)
        with RecordWriter(records, owner="refseg video run") as writer:
            resume = (done, last) if last is not None else None
            for frame_result in _loop(
                source, phrase, list(boxes), grounder, tracker, options, resume, think
            ):
                writer.write(frame_result.to_record())  # flushed and fsynced per frame
                yield frame_result


def _loop(
    source: FrameSource,
    phrase: str | None,
    prompts: list[Prompt],
    grounder: Any,
    tracker: Tracker,
    options: TrackOptions,
    resume: tuple[int, dict[str, Any]] | None,
    think: bool,
) -> Iterator[FrameResult]:
    book = TrackBook(tracker, min_iou=options.min_iou)
    start = 0
    if resume is not None:
        start = resume[0]
        book.restore(*_restore(resume[1]))
    previous = None
    for index, frame in source.frames(start):
        began = time.perf_counter()
        height, width = frame.shape[:2]
        thumb = _thumbnail(frame) if options.scene_change is not None else None
        embedding = tracker.embed(frame)
        detections = None
        due = index == 0 or (options.reground and index % options.reground == 0)
        if (
            not due
            and thumb is not None
            and previous is not None
            and float(np.abs(thumb - previous).mean()) > options.scene_change
        ):
            due = True
        previous = thumb
        if phrase is not None and due:
            grounded = _ground(grounder, frame, phrase, think)
            if grounded is not None:
                detections = tracker.detect(embedding, grounded)
        elif phrase is None and index == 0:
            detections = tracker.detect(embedding, prompts)
        states, observations, new, ended = book.step(
            embedding, detections, end_unmatched=options.end_unmatched
        )
        del embedding
        instances = []
        for observation in observations:
            prompt = observation.prompt
            # The RLE only: a long video holds no dense masks beyond the tracks' own.
            instance = Instance(
                masks.encode(observation.mask),
                box=prompt.box if prompt is not None else None,
                points=prompt.points if prompt is not None else (),
                point_labels=prompt.labels if prompt is not None else None,
                score=observation.score,
                scores={"segmenter": observation.score},
                label=phrase,
            )
            instances.append(instance)
        result = Result(width=width, height=height, instances=instances, phrase=phrase)
        result.timings["frame_s"] = time.perf_counter() - began
        yield FrameResult(
            index=index,
            result=result,
            track_ids=[s.track_id for s in states],
            new_tracks=new,
            ended_tracks=ended,
            grounded=detections is not None,
            velocities=[s.velocity for s in states],
            next_id=book.next_id,
        )


def iter_frame_records(out: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a run folder, in frame order, one at a time."""
    from refseg.records import iter_records

    return iter_records(Path(out) / RECORDS)
