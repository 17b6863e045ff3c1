"""`refseg demo`: the README's main job on the bundled sample image."""

from __future__ import annotations

from pathlib import Path

import typer

from refseg.errors import RefsegError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"
PHRASE = "the astronaut's face"
#: A box around the face in the bundled image, for when no grounder can be loaded.
FALLBACK_BOX = (140.0, 20.0, 320.0, 200.0)
#: What the fallback box holds, said when it is used (the output is otherwise unexplained).
FALLBACK_TARGET = "the astronaut's face"
#: Shown in --help; kept equal to ``refseg.grounding.DEFAULT_GROUNDER`` by a test (importing
#: the grounding package here would slow every ``refseg`` command's start).
DEFAULT_GROUNDER_SPEC = "qwen3-vl:Qwen/Qwen3-VL-2B-Instruct"


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("out"), help="Folder for demo.json, mask.png, overlay.png."),
        grounder: str | None = typer.Option(
            None,
            help=f"Grounder spec (default: {DEFAULT_GROUNDER_SPEC}; through OpenVINO int8 on a "
            "CPU with refseg[openvino] installed).",
        ),
        segmenter: str = typer.Option("onnx-sam", help="Segmenter spec."),
    ) -> None:
        """Segment the bundled photo by phrase (or by box when no grounder weights exist)."""
        from refseg.cli.segment import summary, write_outputs
        from refseg.grounding import default_grounder, load_grounder
        from refseg.image import load_image
        from refseg.pipeline import load_pipeline, segment_prompts
        from refseg.segmentation import load_segmenter
        from refseg.types import Prompt

        image = load_image(ASSET)
        seg = load_segmenter(segmenter)
        spec = grounder or default_grounder()
        try:
            ground = load_grounder(spec)
        except RefsegError as exc:
            box = ",".join(f"{v:g}" for v in FALLBACK_BOX)
            typer.echo(
                f"phrase grounding skipped: {exc}. Box-prompted segmentation of the bundled "
                "image follows; for phrases, pass --grounder 'qwen3-vl:/path/to/local/model' (on a "
                "CPU add ';engine=openvino')."
            )
            typer.echo(f"segmenting {ASSET.name} inside the box {box} ({FALLBACK_TARGET})")
            result = segment_prompts(seg, image, [Prompt(box=FALLBACK_BOX)])
        else:
            typer.echo(f"segmenting {ASSET.name} for {PHRASE!r} with {spec}")
            result = load_pipeline(ground, seg)(image, PHRASE)
        write_outputs(
            result,
            image,
            json_out=out / "demo.json",
            mask_png=out / "mask.png",
            overlay_out=out / "overlay.png",
        )
        typer.echo(summary(result))
        typer.echo(f"wrote {out / 'demo.json'}, {out / 'mask.png'}, {out / 'overlay.png'}")
