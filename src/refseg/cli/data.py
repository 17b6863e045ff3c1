"""`refseg data`: generate RefShapes, convert datasets to the JSONL interchange format, inspect."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

#: RefShapes' default share of one-object scenes, here so ``--help`` can show it without
#: importing the generator (a test keeps it equal to ``refseg.data.refshapes.SINGLE_FRACTION``).
SINGLE_FRACTION = 0.08


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    data = typer.Typer(
        help="Datasets: RefShapes generation, conversion to JSONL, statistics.",
        no_args_is_help=True,
    )

    @data.command("refshapes")
    def refshapes(
        out: Path = typer.Option(..., "--out", help="Output folder (created; resumable)."),
        n: int = typer.Option(
            1000,
            "--n",
            min=0,
            help="Samples in EACH split (4 splits by default: --n 1000 writes 4000); "
            "--splits train=N sets one split's count.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed: same seed, same bytes."),
        size: int = typer.Option(224, "--size", min=128, max=2048, help="Image side in pixels."),
        splits: str = typer.Option(
            "train,val,test,ood",
            "--splits",
            help="Splits, e.g. train,val,ood or train=5000,val=500.",
        ),
        single_fraction: float = typer.Option(
            SINGLE_FRACTION,
            "--single-fraction",
            min=0.0,
            max=1.0,
            help="Share of one-object scenes; raise it (up to 1) for an easy curriculum set.",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a RefShapes set made with other settings."
        ),
    ) -> None:
        """Generate the RefShapes benchmark (PNG images, one SPLIT.jsonl per split)."""
        import time

        from refseg.data.refshapes import generate_refshapes, parse_splits
        from refseg.progress import new_progress

        counts = parse_splits(splits, n)
        start = time.perf_counter()
        with new_progress() as bar:
            tasks = {name: bar.add_task(name, total=count) for name, count in counts.items()}
            reported = []

            def advance(split: str, done: int) -> None:
                reported.append(done)
                bar.advance(tasks[split], done)

            manifest = generate_refshapes(
                out,
                counts,
                seed=seed,
                size=size,
                single_fraction=single_fraction,
                overwrite=overwrite,
                progress=advance,
            )
        seconds = time.perf_counter() - start
        total = sum(counts.values())
        if total and not reported:
            typer.echo(f"{out} already holds this RefShapes set; nothing to do")
        else:
            typer.echo(f"wrote {total} samples to {out} in {seconds:.1f} s")
        for split, stats in manifest.get("statistics", {}).items():
            kinds = ", ".join(f"{k} {v}" for k, v in stats["kinds"].items())
            levels = ", ".join(f"{k} {v}" for k, v in stats["difficulty"].items())
            typer.echo(f"  {split}: {stats['samples']} samples; {kinds}; {levels}")

    @data.command("export")
    def export(
        dataset: str = typer.Option(
            ..., "--dataset", help="KIND:PATH[:SPLIT], e.g. refcocog:data/refcocog:val"
        ),
        out: Path = typer.Option(..., "--out", help="Output JSONL file (written atomically)."),
        images: Path | None = typer.Option(
            None, "--images", help="Image folder (COCO train2014 for the REFER kinds)."
        ),
        limit: int | None = typer.Option(None, "--limit", min=0, help="At most this many samples."),
    ) -> None:
        """Convert any supported dataset to the JSONL interchange format."""
        from refseg.data.base import open_dataset
        from refseg.data.jsonl import export_jsonl

        options: dict = {"limit": limit}
        if images is not None:
            options["images_dir"] = images
        samples = open_dataset(dataset, **options)
        count = export_jsonl(samples, out)
        typer.echo(f"wrote {count} samples to {out}")

    @data.command("coco")
    def coco(
        instances: Path = typer.Option(..., "--instances", help="COCO instances JSON."),
        images: Path = typer.Option(..., "--images", help="Folder of the images it names."),
        out: Path = typer.Option(..., "--out", help="Output JSONL file."),
        per_instance: bool = typer.Option(
            False,
            "--per-instance",
            help="One sample per non-crowd instance (its mask alone) instead of one per "
            "(image, category) with every instance of it.",
        ),
        min_area: int = typer.Option(
            0, "--min-area", min=0, help="With --per-instance: leave out smaller instances (px)."
        ),
    ) -> None:
        """COCO instances -> JSONL with category names as phrases (crowd regions skipped).

        The same samples as the dataset spec coco:DIR (DIR holding instances.json and images/),
        which reads them per category.
        """
        from refseg.data.coco import coco_instances_to_samples, ensure_images_exist
        from refseg.data.jsonl import export_jsonl

        samples = coco_instances_to_samples(
            instances, images, per_instance=per_instance, min_area=min_area
        )
        ensure_images_exist(samples, images)
        count = export_jsonl(samples, out)
        typer.echo(f"wrote {count} samples to {out}")

    @data.command("info")
    def info(
        positional: str | None = typer.Argument(
            None, metavar="[DATASET]", help="KIND:PATH[:SPLIT] (older form of --dataset)."
        ),
        dataset_option: str | None = typer.Option(
            None, "--dataset", help="KIND:PATH[:SPLIT], as in export and eval."
        ),
        images: Path | None = typer.Option(None, "--images", help="Image folder override."),
    ) -> None:
        """Counts of a dataset: samples, images, no-target and multi-target shares, kinds."""
        from refseg.data.base import open_dataset
        from refseg.errors import InputError

        if positional is not None and dataset_option is not None:
            raise InputError("give the dataset once: --dataset KIND:PATH[:SPLIT]")
        dataset = dataset_option or positional
        if dataset is None:
            raise InputError("give --dataset KIND:PATH[:SPLIT]")

        options: dict = {"check_images": False}
        if images is not None:
            options["images_dir"] = images
        samples = open_dataset(dataset, **options)
        total = len(samples)
        typer.echo(f"{dataset}: {total} samples, {len({s.image for s in samples})} images")
        if not total:
            return
        no_target = sum(s.no_target for s in samples)
        multi = sum(len(s.masks) > 1 for s in samples)
        typer.echo(
            f"  no-target {no_target} ({no_target / total:.1%}), "
            f"multi-target {multi} ({multi / total:.1%})"
        )
        for key in ("kind", "difficulty", "split"):
            counts = Counter(str(s.meta[key]) for s in samples if key in s.meta)
            if counts:
                typer.echo(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    app.add_typer(data, name="data")
