"""The ``refseg`` command line: thin wrappers that parse arguments and call the API.

Each sub-command lives in its own module with a ``register(app)`` function. Errors derived from
:class:`~refseg.errors.RefsegError` become one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from refseg.errors import RefsegError

app = typer.Typer(
    name="refseg",
    help="Language-guided image segmentation: phrase -> boxes and points -> masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMANDS = ("segment", "demo", "weights", "data", "eval", "train", "serve")
for _name in _COMMANDS:
    importlib.import_module(f"refseg.cli.{_name}").register(app)


def fail(message: str) -> None:
    """Print one error line and exit 2."""
    typer.echo(f"refseg: error: {message}", err=True)
    raise typer.Exit(2)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        code = app(args=argv, standalone_mode=False)
    except RefsegError as exc:
        typer.echo(f"refseg: error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("refseg: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("refseg: interrupted", err=True)
        return 130
    except Exception as exc:  # usage errors: typer ships its own click, so check both
        import click

        if isinstance(exc, (click.ClickException, typer.TyperException)) and hasattr(exc, "show"):
            exc.show()
            return 2
        raise
    # Without standalone mode click returns (not raises) the code of typer.Exit and Ctrl-C.
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
