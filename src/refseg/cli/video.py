"""`refseg segment VIDEO PHRASE` / `refseg segment VIDEO --box ...`: track through a video.

Reached from :mod:`refseg.cli.segment` when its input is a video (a container, an animated GIF
or a folder of frames: :func:`refseg.video.is_video`). Writes ``OUT/frames.jsonl`` (one record
per frame, resumable: run the same command again after a kill) and, with ``--overlay-video``, an
overlay video drawn from those records.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from refseg.errors import InputError


def video_command(
    video: Path,
    phrase: str | None,
    *,
    boxes: list[tuple[float, float, float, float]],
    points: list[tuple[float, float, int]],
    grounder: str | None,
    segmenter: str,
    device: str | None,
    refine: int | None,
    think: bool,
    out: Path | None,
    reground: int | None,
    overlay_video: Path | None,
    tracker: str | None,
    svg_frames: Path | None,
    fresh: bool,
    image_only: list[str],
) -> None:
    """Check the options, then run :func:`refseg.video.track` with a progress line.

    ``boxes`` and ``points`` come parsed (:func:`refseg.cli.segment.parse_box`,
    :func:`~refseg.cli.segment.parse_point`), and the options only a phrase reads already
    refused by the caller, so this module needs nothing from ``segment``."""
    from refseg.cli.options import refuse_given
    from refseg.fileio import check_writable, refuse_overwriting_inputs
    from refseg.video import FrameSource, TrackOptions, track
    from refseg.video.memory import check_tracker_spec, load_tracker
    from refseg.video.overlay import check_overlay_name, write_overlay_video, write_svg_frames
    from refseg.video.run import RECORDS, iter_frame_records

    refuse_given(
        image_only, "one image; a video writes --out DIR (frames.jsonl) and --overlay-video FILE"
    )
    if out is None:
        raise InputError("a video needs --out DIR for its per-frame results (frames.jsonl)")
    if phrase is not None and (boxes or points):
        raise InputError("give either a PHRASE or --box/--point prompts, not both")
    if phrase is None and not boxes and not points:
        raise InputError("give a PHRASE, or --box/--point prompts for the first frame")
    if phrase is None and reground:
        raise InputError("--reground goes with a PHRASE (prompts are given on the first frame)")
    kind, _ = check_tracker_spec(tracker or "prompt")
    if refine is not None and not kind.startswith("prompt"):
        raise InputError(f"--refine goes with the prompt tracker, not {kind}")
    if svg_frames is not None:
        refuse_overwriting_inputs({"--svg-frames": svg_frames}, [video])
        if svg_frames.exists() and not svg_frames.is_dir():
            raise InputError(f"--svg-frames {svg_frames}: not a folder")
    if overlay_video is not None:
        check_overlay_name(overlay_video)
        refuse_overwriting_inputs({"--overlay-video": overlay_video}, [video])
        check_writable(overlay_video)
    source = FrameSource(video)
    info = source.info
    prompts = []
    if phrase is None:
        from refseg.types import build_prompts

        prompts = build_prompts(boxes, points, info.width, info.height)
    loaded_grounder = None
    if phrase is not None:
        from refseg.grounding import DEFAULT_GROUNDER, load_grounder
        from refseg.pipeline import check_phrase

        check_phrase(phrase)
        loaded_grounder = load_grounder(grounder or DEFAULT_GROUNDER)
    from refseg.progress import new_progress

    loaded = load_tracker(tracker or "prompt", segmenter=segmenter, device=device, refine=refine)
    options = TrackOptions(reground=reground or 0)
    frames_run, ids = 0, set()
    started = time.perf_counter()
    with new_progress(status=True) as progress:
        task = progress.add_task("tracking", total=info.frames or None, status="")
        for result in track(
            source,
            phrase,
            boxes=prompts,
            grounder=loaded_grounder,
            tracker=loaded,
            options=options,
            out=out,
            fresh=fresh,
            think=think,
        ):
            frames_run += 1
            ids.update(result.track_ids)
            rate = frames_run / max(time.perf_counter() - started, 1e-9)
            progress.update(
                task,
                completed=result.index + 1,
                status=f"{rate:.2f} frames/s, {len(result.track_ids)} track(s)",
            )
    seconds = time.perf_counter() - started
    total = 0
    all_ids: set[int] = set()
    for record in iter_frame_records(out):
        total += 1
        all_ids.update(record.get("track_ids", []))
    typer.echo(f"wrote {out / RECORDS}", err=True)
    if overlay_video is not None:
        written = write_overlay_video(source, iter_frame_records(out), overlay_video)
        typer.echo(f"wrote {overlay_video} ({written} frames)", err=True)
    if svg_frames is not None:
        written = write_svg_frames(iter_frame_records(out), svg_frames)
        typer.echo(f"wrote {written} SVG files to {svg_frames}", err=True)
    rate = f", {frames_run / seconds:.2f} frames/s" if frames_run else ""
    typer.echo(
        f"{total} frames ({frames_run} this run{rate}), {len(all_ids)} track(s): "
        f"IDs {sorted(all_ids)}"
    )
