"""The ``refseg`` command line: thin wrappers that parse arguments and call the API.

Each sub-command lives in its own module with a ``register(app)`` function. Errors derived from
:class:`~refseg.errors.RefsegError` become one line on stderr and exit status 2, and so does a
missing optional dependency (it names the extra to install): the base install must give users
one actionable line, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from refseg.errors import RefsegError

#: Top-level modules of the optional dependencies, and the extra that installs each.
_EXTRA_OF_MODULE = {
    "torch": "vlm",
    "transformers": "vlm",
    "tokenizers": "vlm",
    "safetensors": "vlm",
    "onnx": "int8",
    "trl": "train",
    "peft": "train",
    "accelerate": "train",
    "datasets": "train",
    "fastapi": "serve",
    "starlette": "serve",
    "anyio": "serve",
    "pydantic": "serve",
    "uvicorn": "serve",
    "h11": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "httpx": "serve",
}
#: The extra a sub-command needs, for a missing module not named above.
_EXTRA_OF_COMMAND = {"serve": "serve", "train": "train"}

app = typer.Typer(
    name="refseg",
    help="Language-guided image segmentation: phrase -> boxes and points -> masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's panels cut long defaults (hub ids) with an ellipsis at 80
    # columns and read "[default: ...]" in help text as markup, deleting it.
    rich_markup_mode=None,
)


@app.callback()
def _global_options(
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads refseg may use (default: REFSEG_THREADS, else the cores it may run "
        "on); the server splits them across its concurrent requests.",
    ),
) -> None:
    """Language-guided image segmentation: phrase -> boxes and points -> masks."""
    from refseg.threads import set_thread_budget

    set_thread_budget(threads)


_COMMANDS = ("segment", "demo", "weights", "data", "eval", "train", "serve")
for _name in _COMMANDS:
    importlib.import_module(f"refseg.cli.{_name}").register(app)


def fail(message: str) -> None:
    """Print one error line and exit 2."""
    typer.echo(f"refseg: error: {message}", err=True)
    raise typer.Exit(2)


def _is_usage_error(exc: Exception) -> bool:
    """A click usage error, from typer's bundled click or from click itself.

    typer >= 0.29 bundles its own click (its exceptions derive from ``typer.TyperException``)
    and installs none, so ``click`` is imported only if some other package brought it.
    """
    if isinstance(exc, typer.TyperException) and hasattr(exc, "show"):
        return True
    click = sys.modules.get("click")
    return click is not None and isinstance(exc, click.ClickException)


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
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if not top or top == "refseg":
            raise
        args = sys.argv[1:] if argv is None else argv
        command = next((a for a in args if not a.startswith("-")), "")
        extra = _EXTRA_OF_MODULE.get(top) or _EXTRA_OF_COMMAND.get(command, "vlm,train,serve")
        typer.echo(
            f"refseg: error: this needs the '{extra}' extra (no module named '{exc.name}'):"
            f" pip install 'refseg[{extra}]'",
            err=True,
        )
        return 2
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            return 2
        raise
    # Without standalone mode click returns (not raises) the code of typer.Exit and Ctrl-C.
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
