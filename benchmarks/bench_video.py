"""Video tracking measured on sequences with exact ground truth, as JSON.

``--part jf``: J&F per tracker on moving-camera sequences over the COCO sample photos and on
RefShapes video (:mod:`refseg.video.sequences`), with oracle first-frame boxes (the ground-truth
box of each object visible in frame 0) and no re-grounding, so drift over the whole sequence
counts. Beside the trackers, "reprompt-gt" prompts SAM every frame with the ground-truth box of
every visible object: what re-grounding every frame with a perfect grounder gives. Every variant
reads the same embedding of each frame (one encoder pass per frame for all of them). J&F is per
object over all frames (DAVIS's J and boundary F, :mod:`refseg.video.metrics`), with a 95 %
t-interval over the objects of each kind, and split into the first and second half of the
frames to show drift. Objects: the largest ``--objects`` visible in frame 0 (at least 300 px).

``--part speed``: frames/s of ``refseg.video.track`` (decode, embed, track, record) on a
640x480 camera sequence written as an MP4, one and three tracked objects, and the peak RSS
(``ru_maxrss``) sampled along a long run of small frames, with the load average before each.

``--part memory``: the same for the SAM 2 video tracker (``sam2-video:``) at real size, the
SAM 2.1 Hiera-tiny architecture with **random weights** (no checkpoint can be downloaded here;
the cost does not depend on the weight values, the masks do, so no J&F): frames/s through
``track`` with one and three objects, and the bytes of tensors each track's session holds along
the run, with refseg's cap on the memory bank and without it (transformers' session as it
keeps everything it is given). ``--part memory-profile``: where its frame time goes (image
encoder, each object's step, the memory attention within it).

Usage (from the repository root):
    python benchmarks/bench_video.py --part jf [--frames 100] [--camera 2] [--shapes 2] [--start 0]
    python benchmarks/bench_video.py --part speed [--speed-frames 20] [--long-frames 1000]
    python benchmarks/bench_video.py --part memory [--memory-frames 40]
    python benchmarks/bench_video.py --part memory-profile
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from refseg.segmentation import load_segmenter
from refseg.testing.coco_sample import load_objects
from refseg.types import Prompt
from refseg.video.metrics import boundary_f, region_j
from refseg.video.run import TrackBook
from refseg.video.sequences import camera_sequences, shapes_sequence
from refseg.video.tracker import PromptTracker, mask_box


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def t_interval(values: list[float]) -> dict:
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": round(mean, 4), "n": n}
    half = float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return {
        "mean": round(mean, 4),
        "low": round(mean - half, 4),
        "high": round(mean + half, 4),
        "n": n,
    }


def run_sequence(sequence, segmenter, frames: int, max_objects: int) -> dict:
    """Per-object per-frame J and F of each variant on one sequence."""
    image, gts = sequence.frame(0)
    areas = [int(m.sum()) for m in gts]
    chosen = [i for i in sorted(range(len(gts)), key=lambda i: -areas[i]) if areas[i] >= 300]
    chosen = sorted(chosen[:max_objects])
    trackers = {
        "prompt": PromptTracker(segmenter),
        "prompt+mask": PromptTracker(segmenter, mask_prompt=True),
    }
    books = {name: TrackBook(t) for name, t in trackers.items()}
    scores = {name: {k: {"j": [], "f": []} for k in chosen} for name in [*trackers, "reprompt-gt"]}
    started = time.perf_counter()
    for t in range(frames):
        if t:
            image, gts = sequence.frame(t)
        embedding = segmenter.embed(image)
        for name, book in books.items():
            detections = None
            if t == 0:
                prompts = [Prompt(box=mask_box(gts[k])) for k in chosen]
                detections = trackers[name].detect(embedding, prompts)
            states, _, _, _ = book.step(embedding, detections)
            # Without re-grounding a track's ID is its object's place in ``chosen``.
            predicted = {chosen[s.track_id]: s.mask for s in states}
            for k in chosen:
                mask = predicted.get(k, np.zeros_like(gts[k]))
                scores[name][k]["j"].append(region_j(mask, gts[k]))
                scores[name][k]["f"].append(boundary_f(mask, gts[k]))
        visible = [k for k in chosen if gts[k].any()]
        answers = segmenter.predict(embedding, [Prompt(box=mask_box(gts[k])) for k in visible])
        masks = dict(zip(visible, (a.mask for a in answers)))
        for k in chosen:
            mask = masks.get(k, np.zeros_like(gts[k]))
            scores["reprompt-gt"][k]["j"].append(region_j(mask, gts[k]))
            scores["reprompt-gt"][k]["f"].append(boundary_f(mask, gts[k]))
    return {
        "name": sequence.name,
        "objects": [sequence.objects[k].phrase for k in chosen],
        "frames": frames,
        "seconds": round(time.perf_counter() - started, 1),
        "scores": scores,
    }


def summarize(runs: list[dict]) -> dict:
    out = {}
    variants = list(runs[0]["scores"]) if runs else []
    for name in variants:
        per_object = {"jf": [], "j": [], "f": [], "jf_first_half": [], "jf_second_half": []}
        for run in runs:
            for s in run["scores"][name].values():
                j, f = np.array(s["j"]), np.array(s["f"])
                half = len(j) // 2
                per_object["jf"].append(float((j.mean() + f.mean()) / 2))
                per_object["j"].append(float(j.mean()))
                per_object["f"].append(float(f.mean()))
                per_object["jf_first_half"].append(float((j[:half].mean() + f[:half].mean()) / 2))
                per_object["jf_second_half"].append(float((j[half:].mean() + f[half:].mean()) / 2))
        out[name] = {key: t_interval(values) for key, values in per_object.items()}
    return out


def part_jf(args: argparse.Namespace) -> dict:
    segmenter = load_segmenter("onnx-sam")
    kinds = {
        "camera (COCO photos)": camera_sequences(
            load_objects(), count=args.start + args.camera, length=args.frames
        )[args.start :],
        "RefShapes video": [
            shapes_sequence(seed, length=args.frames)
            for seed in range(args.start, args.start + args.shapes)
        ],
    }
    report = {"part": "jf", "load_before": load(), "frames": args.frames, "start": args.start}
    report["kinds"] = {}
    for kind, sequences in kinds.items():
        runs = []
        for sequence in sequences:
            run = run_sequence(sequence, segmenter, args.frames, args.objects)
            runs.append(run)
            print(
                json.dumps(
                    {
                        "sequence": run["name"],
                        "objects": run["objects"],
                        "seconds": run["seconds"],
                        "load": load(),
                    }
                ),
                file=sys.stderr,
                flush=True,
            )
        report["kinds"][kind] = {
            "sequences": [r["name"] for r in runs],
            "objects": sum(len(r["objects"]) for r in runs),
            "summary": summarize(runs),
        }
    report["load_after"] = load()
    return report


def write_mp4(sequence, path: Path, frames: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *sequence.size, "yuv420p"
        for t in range(frames):
            image, _ = sequence.frame(t)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def part_speed(args: argparse.Namespace) -> dict:
    from refseg.video import track

    segmenter = load_segmenter("onnx-sam")
    report = {"part": "speed", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        sequence = camera_sequences(load_objects(), count=1, length=args.speed_frames)[0]
        video = Path(tmp) / "camera.mp4"
        write_mp4(sequence, video, args.speed_frames)
        _, gts = sequence.frame(0)
        order = sorted(range(len(gts)), key=lambda i: -int(gts[i].sum()))
        for count in (1, 3):
            boxes = [Prompt(box=mask_box(gts[k])) for k in order[:count]]
            before = load()
            started = time.perf_counter()
            frames = sum(
                1
                for _ in track(
                    video, boxes=boxes, segmenter=segmenter, out=Path(tmp) / f"out{count}"
                )
            )
            seconds = time.perf_counter() - started
            report[f"640x480, {count} object(s)"] = {
                "frames": frames,
                "seconds": round(seconds, 1),
                "frames_per_s": round(frames / seconds, 3),
                "load_before": before,
                "load_after": load(),
            }
        # A long run of small frames: the RSS should stop growing once the loop is warm.
        long = shapes_sequence(0, length=args.long_frames, size=128)
        folder = Path(tmp) / "long"
        folder.mkdir()
        from PIL import Image

        for t in range(args.long_frames):
            Image.fromarray(long.frame(t)[0]).save(folder / f"{t:05d}.png")
        _, gts = long.frame(0)
        boxes = [Prompt(box=mask_box(m)) for m in gts if m.sum() >= 50]
        samples = {}
        before = load()
        started = time.perf_counter()
        marks = {10, 100, args.long_frames // 2, args.long_frames}
        for result in track(folder, boxes=boxes, segmenter=segmenter, out=Path(tmp) / "outlong"):
            if result.index + 1 in marks:
                kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                samples[result.index + 1] = round(kib / 1024, 1)
        report[f"long run, {args.long_frames} frames of 128x128"] = {
            "objects": len(boxes),
            "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib_after_frames": samples,
            "load_before": before,
            "load_after": load(),
        }
    return report


def session_bytes(session) -> int:
    """Bytes of the tensors a transformers video session holds (frames, outputs, cache)."""
    import torch

    seen: set[int] = set()
    total = 0

    def visit(value) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(session.processed_frames or {})
    visit(session.output_dict_per_obj)
    visit(session.cache._vision_features)
    return total


def part_memory(args: argparse.Namespace) -> dict:
    from refseg.testing.tiny_trackers import save_tracker_model
    from refseg.video import track
    from refseg.video.memory import load_tracker

    frames = args.memory_frames
    report = {
        "part": "memory",
        "model": "sam2-video, SAM 2.1 Hiera-tiny architecture, random weights",
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tracker_model(Path(tmp) / "sam2", "sam2-video", size="real")
        sequence = camera_sequences(load_objects(), count=1, length=frames)[0]
        video = Path(tmp) / "camera.mp4"
        write_mp4(sequence, video, frames)
        _, gts = sequence.frame(0)
        order = sorted(range(len(gts)), key=lambda i: -int(gts[i].sum()))
        marks = sorted({1, 10, 20, frames // 2, frames})
        for count, capped in ((1, True), (3, True), (1, False)):
            tracker = load_tracker(f"sam2-video:{folder}", device="cpu")
            tracker.min_score, tracker.min_area = 0.0, 0  # random weights: keep every track
            if not capped:
                tracker._cap = lambda session, index: None
            boxes = [Prompt(box=mask_box(gts[k])) for k in order[:count]]
            held = {}
            before = load()
            started = time.perf_counter()
            done = 0
            for result in track(
                video, boxes=boxes, tracker=tracker, out=Path(tmp) / f"o{count}{capped}"
            ):
                done += 1
                if result.index + 1 in marks and tracker.sessions:
                    first = tracker.sessions[min(tracker.sessions)]
                    held[result.index + 1] = round(session_bytes(first) / 2**20, 1)
            seconds = time.perf_counter() - started
            report[f"640x480, {count} object(s), {'capped' if capped else 'uncapped'}"] = {
                "frames": done,
                "seconds": round(seconds, 1),
                "frames_per_s": round(done / seconds, 3),
                "session_mib_after_frames": held,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "load_before": before,
                "load_after": load(),
            }
    return report


def part_memory_profile(args: argparse.Namespace) -> dict:
    """Where a frame's time goes in the SAM 2 video tracker at real size (random weights):
    the image encoder (once a frame), each object's step, and within it the memory attention.
    Medians over frames 5-12 of one object on a 640x480 frame."""
    import torch

    from refseg.testing.tiny_trackers import save_tracker_model
    from refseg.video.memory import load_tracker
    from refseg.video.tracker import TrackState

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tracker_model(Path(tmp) / "sam2", "sam2-video", size="real")
        tracker = load_tracker(f"sam2-video:{folder}", device="cpu")
    tracker.min_score, tracker.min_area = 0.0, 0
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    embedding = tracker.embed(frame)
    (first,) = tracker.detect(embedding, [Prompt(box=(100, 100, 300, 300))])
    states = [TrackState(0, first.mask)]
    tracker.commit(embedding, states, [first])
    attention = tracker.model.memory_attention
    forward, spent = attention.forward, []

    def timed(*a, **k):
        started = time.perf_counter()
        out = forward(*a, **k)
        spent.append(time.perf_counter() - started)
        return out

    attention.forward = timed
    encoder, step = [], []
    before = load()
    for _ in range(12):
        started = time.perf_counter()
        embedding = tracker.embed(frame)
        encoder.append(time.perf_counter() - started)
        started = time.perf_counter()
        observed = tracker.propagate(embedding, states)
        step.append(time.perf_counter() - started)
        tracker.commit(embedding, states, observed)
    return {
        "part": "memory-profile",
        "model": "sam2-video, SAM 2.1 Hiera-tiny architecture, random weights",
        "threads": torch.get_num_threads(),
        "image_encoder_s_per_frame": round(float(np.median(encoder[4:])), 3),
        "object_step_s": round(float(np.median(step[4:])), 3),
        "memory_attention_s": round(float(np.median(spent[4:])), 3),
        "load_before": before,
        "load_after": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", choices=("jf", "speed", "memory", "memory-profile"), required=True
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--camera", type=int, default=2)
    parser.add_argument("--shapes", type=int, default=2)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument(
        "--start", type=int, default=0, help="skip this many sequences of each kind (a new set)"
    )
    parser.add_argument("--speed-frames", type=int, default=20)
    parser.add_argument("--long-frames", type=int, default=1000)
    parser.add_argument("--memory-frames", type=int, default=40)
    args = parser.parse_args()
    parts = {
        "jf": part_jf,
        "speed": part_speed,
        "memory": part_memory,
        "memory-profile": part_memory_profile,
    }
    report = parts[args.part](args)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
