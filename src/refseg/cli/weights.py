"""`refseg weights`: fetch and locate the embedded default segmenter weights."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    weights = typer.Typer(
        help="Manage the embedded default segmenter weights.", no_args_is_help=True
    )

    @weights.command("fetch")
    def fetch(
        int8: bool = typer.Option(
            False,
            "--int8",
            help="Also build the int8 encoder of onnx-sam:int8 (about a minute, once).",
        ),
    ) -> None:
        """Obtain and verify the default SAM ONNX pair (a no-op when already cached)."""
        from refseg.segmentation.weights import default_sam_onnx

        encoder, decoder = default_sam_onnx()
        typer.echo(f"encoder: {encoder}\ndecoder: {decoder}")
        if int8:
            from refseg.segmentation.quantize import int8_sam_onnx

            typer.echo(f"int8 encoder: {int8_sam_onnx()[0]}")

    @weights.command("path")
    def path() -> None:
        """Print where the default weights are (exit 2 if they are not there yet)."""
        from refseg.segmentation.weights import default_sam_onnx

        encoder, decoder = default_sam_onnx(fetch=False)
        typer.echo(f"encoder: {encoder}\ndecoder: {decoder}")

    app.add_typer(weights, name="weights")
