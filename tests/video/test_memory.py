"""SAM 2 video / SAM 3 tracker through transformers (random weights: shapes, streaming, the
capped memory bank, conditioning frames, resume, loading errors, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from refseg import masks  # noqa: E402
from refseg.errors import InputError, ModelError  # noqa: E402
from refseg.testing.tiny_trackers import save_tracker_model  # noqa: E402
from refseg.types import Prompt  # noqa: E402
from refseg.video import track  # noqa: E402
from refseg.video.memory import MemoryTracker, load_tracker  # noqa: E402
from refseg.video.tracker import TrackState  # noqa: E402
from tests.video.conftest import moving_square  # noqa: E402

FAMILIES = ["sam2-video", "sam3-tracker"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trackers")
    return {family: save_tracker_model(root / family, family) for family in FAMILIES}


@pytest.fixture
def frames() -> list[np.ndarray]:
    return moving_square(24, width=96, height=64, step=1)


def _load(folders, family: str, **options) -> MemoryTracker:
    tracker = load_tracker(f"{family}:{folders[family]}", device="cpu")
    assert isinstance(tracker, MemoryTracker)
    for key, value in options.items():
        setattr(tracker, key, value)
    return tracker


def _session_sizes(session) -> tuple[int, int, int, int]:
    outputs = session.output_dict_per_obj[0]
    return (
        len(outputs["cond_frame_outputs"]),
        len(outputs["non_cond_frame_outputs"]),
        len(session.frames_tracked_per_obj[0]),
        sum(
            t.numel()
            for frame in (
                *outputs["cond_frame_outputs"].values(),
                *outputs["non_cond_frame_outputs"].values(),
            )
            for t in frame.values()
            if isinstance(t, torch.Tensor)
        ),
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_streams_frames_with_a_capped_memory_bank(folders, frames, family) -> None:
    """24 frames, two tracks: masks at the frame's size, one image encoding a frame, nothing of
    past frames kept beyond the model's reach, and the bank's size flat once it is full."""
    tracker = _load(folders, family, min_score=0.0, min_area=0)
    calls = []
    encode = tracker.model.get_image_features
    tracker.model.get_image_features = lambda *a, **k: calls.append(1) or encode(*a, **k)
    sizes = []
    states: list[TrackState] = []
    for index, frame in enumerate(frames):
        embedding = tracker.embed(frame)
        if index == 0:
            prompts = [Prompt(box=(4, 16, 20, 32)), Prompt(box=(40, 30, 90, 60), points=[(60, 45)])]
            observations = tracker.detect(embedding, prompts)
            states = [TrackState(i, o.mask, o.score) for i, o in enumerate(observations)]
        else:
            observed = tracker.propagate(embedding, states)
            assert all(o is not None for o in observed)  # min_score 0: nothing ends
            observations = list(observed)
            states = [TrackState(s.track_id, o.mask, o.score) for s, o in zip(states, observations)]
        for observation in observations:
            assert observation.mask.shape == (64, 96) and observation.mask.dtype == bool
            assert 0.0 <= observation.score <= 1.0
        tracker.commit(embedding, states, observations)
        session = tracker.sessions[0]
        assert session.processed_frames is None and not session.cache._vision_features
        sizes.append(_session_sizes(session))
    assert len(calls) == len(frames)  # the encoder ran once a frame for both tracks
    assert any(s.mask.any() for s in states)  # masks came through, not blanked
    window = tracker.window
    assert window == 16  # max(num_maskmem 7, max_object_pointers_in_encoder 16)
    cond, non_cond, tracked, _ = sizes[-1]
    assert (cond, non_cond, tracked) == (1, window, window)
    assert sizes[window + 2] == sizes[-1]  # full: flat from there on (tensors included)
    assert sizes[5][3] < sizes[-1][3]  # and it did fill up


@pytest.mark.parametrize("family", FAMILIES)
def test_a_regrounding_becomes_a_conditioning_frame(folders, frames, family) -> None:
    tracker = _load(folders, family, min_score=0.0, min_area=0, max_cond_frames=3)
    embedding = tracker.embed(frames[0])
    (first,) = tracker.detect(embedding, [Prompt(box=(4, 16, 20, 32))])
    states = [TrackState(7, first.mask)]
    tracker.commit(embedding, states, [first])
    for index in range(1, 9):
        embedding = tracker.embed(frames[index])
        (observed,) = tracker.propagate(embedding, states)
        if index % 2 == 0:  # a re-grounding matched to track 7 replaces the carried mask
            (observed,) = tracker.detect(embedding, [Prompt(box=(4 + index, 16, 20 + index, 32))])
        states = [TrackState(7, observed.mask)]
        tracker.commit(embedding, states, [observed])
        outputs = tracker.sessions[7].output_dict_per_obj[0]
        if index % 2 == 0:
            assert index in outputs["cond_frame_outputs"]
            assert index not in outputs["non_cond_frame_outputs"]
    # Groundings at 2, 4, 6, 8 plus the first prompt; kept: the first and the latest two.
    assert sorted(tracker.sessions[7].output_dict_per_obj[0]["cond_frame_outputs"]) == [0, 6, 8]
    # An ended track's session is dropped with it.
    tracker.commit(tracker.embed(frames[9]), [], [])
    assert tracker.sessions == {}


def test_an_absent_object_ends_its_track(folders, frames) -> None:
    tracker = _load(folders, "sam2-video", min_area=0)
    embedding = tracker.embed(frames[0])
    (first,) = tracker.detect(embedding, [Prompt(box=(4, 16, 20, 32))])
    states = [TrackState(0, first.mask)]
    tracker.commit(embedding, states, [first])
    tracker.min_score = 1.01  # no presence probability reaches it
    assert tracker.propagate(tracker.embed(frames[1]), states) == [None]


def test_track_and_resume_with_a_memory_tracker(folders, frames, tmp_path) -> None:
    """Through refseg.video.track: records with IDs; a run stopped part-way continues from its
    records (the memory restarts from the last recorded masks, see the module docstring)."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames[:12]):
        Image.fromarray(frame).save(folder / f"{index:03d}.png")
    out = tmp_path / "run"
    prompts = [Prompt(box=(4, 16, 20, 32))]

    def run(limit: int | None) -> list:
        tracker = _load(folders, "sam2-video", min_score=0.0, min_area=0)
        done = []
        for result in track(folder, boxes=prompts, tracker=tracker, out=out):
            done.append(result)
            if limit is not None and len(done) == limit:
                break
        return done

    first = run(5)
    assert [r.index for r in first] == list(range(5))
    rest = run(None)
    assert [r.index for r in rest] == list(range(5, 12))
    assert [r.track_ids for r in first + rest] == [[0]] * 12
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(12))
    assert json.loads((out / "run.json").read_text())["tracker"].startswith("sam2-video:")
    assert masks.decode(records[-1]["instances"][0]["mask"]).shape == (64, 96)


def test_loading_errors_are_one_line(folders, tmp_path) -> None:
    with pytest.raises(InputError, match="unknown tracker 'sam9:x'"):
        load_tracker("sam9:x")
    with pytest.raises(InputError, match="unknown tracker 'prompt:x'"):
        load_tracker("prompt:x")
    with pytest.raises(ModelError, match="holds a sam2_video model, not sam3-tracker") as exc:
        load_tracker(f"sam3-tracker:{folders['sam2-video']}")
    assert "\n" not in str(exc.value) and "load it as sam2-video:" in str(exc.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam2_video"}))
    with pytest.raises(ModelError) as exc:
        load_tracker(f"sam2-video:{tmp_path}")
    assert "\n" not in str(exc.value)


def test_cli_tracks_with_a_memory_tracker_and_writes_svg_frames(folders, tmp_path) -> None:
    from PIL import Image

    from refseg.cli import main

    gif = tmp_path / "clip.gif"
    pictures = [Image.fromarray(f) for f in moving_square(4, width=96, height=64, step=2)]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    out, svgs = tmp_path / "out", tmp_path / "svg"
    args = ["segment", str(gif), "--box", "4,16,20,32", "--out", str(out)]
    args += ["--tracker", f"sam2-video:{folders['sam2-video']}", "--svg-frames", str(svgs)]
    assert main(args) == 0
    names = sorted(p.name for p in svgs.iterdir())
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert names == [f"frame_{r['frame']:06d}.svg" for r in records]
    for record, name in zip(records, names):
        text = (svgs / name).read_text()
        assert text.count("<path ") == len(record["instances"])
        assert all(f'data-track="{i}"' in text for i in record["track_ids"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tracker", "sam9:x"], "unknown tracker 'sam9:x'"),
        (["--tracker", "sam2-video:x", "--refine", "1"], "--refine goes with the prompt tracker"),
        (["--tracker", "prompt"], "--tracker goes with a video input"),
        (["--svg-frames", "d"], "--svg-frames goes with a video input"),
    ],
)
def test_cli_refuses_tracker_options_in_one_line(tmp_path, capsys, extra, message) -> None:
    from PIL import Image

    from refseg.cli import main

    gif = tmp_path / "clip.gif"
    pictures = [Image.fromarray(f) for f in moving_square(2)]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    image = tmp_path / "one.png"
    pictures[0].save(image)
    target = image if "video input" in message else gif
    args = ["segment", str(target), "--box", "4,16,20,32", "--out", str(tmp_path / "o"), *extra]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
