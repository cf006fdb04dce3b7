"""The `phmscale` command: a Typer app whose verbs live one group per module.

Thin by rule: parse, call the package, print. A `PhmscaleError` becomes its message on stderr and
its exit code (2 for invalid input), never a traceback; anything else is a bug and shows one.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from phmscale import __version__
from phmscale.errors import PhmscaleError

app = typer.Typer(
    name="phmscale",
    help="Train hypercomplex networks (PHM, PHNN, AlgebraNets) locally or on a Ray cluster.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"phmscale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """phmscale: hypercomplex networks at scale."""


# Verb groups, each a module exposing `register(app)`.
_VERB_MODULES = ["job", "run", "compare", "bench", "data", "jobs", "model", "export", "sweep"]
for _name in _VERB_MODULES:
    importlib.import_module(f"phmscale.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except PhmscaleError as error:
        from phmscale.spec.secrets import mask_values  # no secret, no URI password, ever

        err_console.print(f"[bold red]error:[/] {escape(mask_values(str(error)))}",
                          highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
