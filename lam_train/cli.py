"""The ``lam`` command: one sub-command per pipeline step, each a thin wrapper over library code.

Each verb lives in its own module under :mod:`lam_train.commands` and exposes
``register(app: typer.Typer) -> None``. Heavy imports (torch, transformers) happen inside the
command functions so that ``lam --help`` stays instant.

The library only logs (``logging.getLogger(__name__)``); this module decides what the user sees:
:func:`configure_logging` attaches one handler to the toolkit's loggers (rich on a terminal, plain
lines otherwise), at INFO by default, DEBUG with ``--verbose``, WARNING with ``--quiet``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import TextIO

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


#: The loggers of the toolkit's packages; third-party libraries keep Python's default (warnings only).
LOGGERS = ("phonalign", "analysis", "lam_train")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (as logging's last
    resort does), so that a test runner swapping stderr never leaves it writing to a closed stream."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _PlainFormatter(logging.Formatter):
    """``message`` for information, ``LEVEL: message`` for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def configure_logging(*, verbose: bool = False, quiet: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Show the toolkit's log records on stderr: one handler on :data:`LOGGERS` (replacing the
    one an earlier call attached), rich when stderr is a terminal, plain lines otherwise.

    Without a terminal, progress bars (the toolkit's and the Hugging Face libraries') are replaced
    by plain lines or switched off, so that a log file holds lines, not carriage returns.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    stream = stream or sys.stderr
    handler: logging.Handler
    if getattr(stream, "isatty", lambda: False)():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                              markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _Stderr()
        handler.setFormatter(_PlainFormatter("%(message)s"))
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
    handler.set_name("lam")
    for name in LOGGERS:
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if h.get_name() == "lam"]:
            log.removeHandler(old)
        log.addHandler(handler)
        log.setLevel(level)
    return handler


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lam {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the toolkit version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show debug messages (e.g. each "
                                 "training epoch when output is not a terminal)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Show only warnings and errors (results are "
                               "still printed)."),
) -> None:
    """Cross-lingual speech analysis and emotion transfer with layer anchoring (LAM).

    Messages go to stderr, results to stdout. On a terminal long steps draw progress bars;
    redirected to a file, each step writes plain lines instead.
    """
    configure_logging(verbose=verbose, quiet=quiet)


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
