"""``refseg train``: fine-tune a grounder (``sft`` warm start, then ``grpo``) from a YAML config.

Rerunning the same command after an interruption resumes from the newest checkpoint in the
config's ``output_dir``. ``refseg train keys`` lists every config key with its default and help.
"""

from __future__ import annotations

from pathlib import Path

import typer

from refseg.errors import InputError

#: The example configs as installed (the package's own folder, wherever it lives).
CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
_CONFIG = typer.Option(..., "--config", "-c", help=f"YAML run file (examples: {CONFIGS}).")
_SET = typer.Option(
    [],
    "--set",
    help="Override a config key: --set grpo.beta=0.04 (value read as YAML). Repeatable.",
)


def _overrides(pairs: list[str]) -> dict:
    from refseg.train.config import load_yaml, short_repr

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise InputError(f"--set {short_repr(pair)}: expected KEY=VALUE")
        out[key.strip()] = load_yaml(value, f"--set {short_repr(key.strip(), 60)}")
    return out


def _load(config: Path, sets: list[str]):
    from refseg.train.config import load_config

    return load_config(config, _overrides(sets))


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to ``app``."""
    train_app = typer.Typer(
        help="Fine-tune a grounding model: `sft` (format warm start) and `grpo` (RL with rewards); "
        "`decoder` trains the box decoder mask head, `refiner` the path head's refiner.",
        no_args_is_help=True,
    )

    @train_app.command("grpo")
    def grpo_cmd(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
        """GRPO on TRL's GRPOTrainer with refseg's grounding rewards."""
        from refseg.train import grpo

        cfg = _load(config, set_)
        trainer = grpo.train(cfg)
        typer.echo(f"trained {trainer.state.global_step} steps; model saved to {cfg.output_dir}")

    @train_app.command("sft")
    def sft_cmd(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
        """Supervised warm start: GT boxes and interior points in the answer format."""
        from refseg.train import sft

        cfg = _load(config, set_)
        trainer = sft.train(cfg)
        typer.echo(f"trained {trainer.state.global_step} steps; model saved to {cfg.output_dir}")

    @train_app.command("decoder")
    def decoder_cmd(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
        """Train the box decoder (segmenter boxdec:OUTPUT_DIR) on a frozen Qwen-VL's features."""
        from refseg.train import decoder
        from refseg.train.config import check_datasets

        cfg = decoder.load_decoder_config(config, _overrides(set_))
        check_datasets(cfg, where=str(config))  # type: ignore[arg-type]
        trainer = decoder.train(cfg)
        typer.echo(
            f"trained {trainer.step} steps; decoder saved to {cfg.output_dir} "
            f"(use --segmenter boxdec:{cfg.output_dir})"
        )

    @train_app.command("refiner")
    def refiner_cmd(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
        """Train the path head's refiner (--refiner OUTPUT_DIR/refiner.pt) on frozen SAM
        features, from recorded GRPO rollouts and/or perturbed dataset GT."""
        from refseg.train import refiner

        cfg = refiner.load_refiner_config(config, _overrides(set_))
        trainer = refiner.train(cfg)
        typer.echo(
            f"trained {trainer.step} steps on {len(trainer.examples)} pairs; refiner saved to "
            f"{Path(cfg.output_dir) / 'refiner.pt'} (use --refiner that path)"
        )

    @train_app.command("check")
    def check_cmd(config: Path = _CONFIG, set_: list[str] = _SET) -> None:
        """Parse a config, check its dataset paths exist and build its TRL arguments, without
        loading a model."""
        from refseg.train.config import check_datasets, grpo_args, sft_args

        cfg = _load(config, set_)
        check_datasets(cfg, where=str(config))
        grpo_args(cfg)
        sft_args(cfg)
        typer.echo(f"{config}: ok (model {cfg.model}, dataset {', '.join(cfg.datasets())})")

    @train_app.command("keys")
    def keys_cmd() -> None:
        """List every config key with its default and help text."""
        from refseg.train.config import describe

        for key, default, help_text in describe():
            typer.echo(f"{key} = {default}\n    {help_text}")

    app.add_typer(train_app, name="train")
