"""The ``lam`` command: one sub-command per pipeline step, each a thin wrapper over library code.

Each verb lives in its own module under :mod:`lam_train.commands` and exposes
``register(app: typer.Typer) -> None``. Heavy imports (torch, transformers) happen inside the
command functions so that ``lam --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

from phonalign import __version__
from phonalign.errors import LamError

# Order is the order shown by `lam --help`: the pipeline's order.
VERBS = ("align", "inventory", "align_eval", "acoustics", "features", "similarity", "geometry", "plot", "train", "run",
         "report", "demo")

app = typer.Typer(
    name="lam",
    help="Cross-lingual speech analysis and emotion transfer with layer anchoring (LAM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lam {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the toolkit version and exit."),
) -> None:
    """Cross-lingual speech analysis and emotion transfer with layer anchoring (LAM)."""


for _verb in VERBS:
    importlib.import_module(f"lam_train.commands.{_verb}").register(app)


def main() -> None:
    """Entry point: run the app; toolkit errors (and OS faults) become one clear message and exit code 2."""
    try:
        app()
    except LamError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as err:
        # a fault no step turned into a LamError (they should): still one line, never a traceback
        from phonalign.fsutil import os_error

        typer.secho(f"error: {os_error(err, action='the operating system refused')}", fg=typer.colors.RED,
                    err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
