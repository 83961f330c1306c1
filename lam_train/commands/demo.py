"""`lam demo`: the whole pipeline on the bundled bilingual demo corpus, English -> Mandarin."""

from __future__ import annotations

from pathlib import Path

import typer

from analysis.defaults import DEFAULT_MODEL
from lam_train.pipeline import DEMO_OUTPUT


def register(app: typer.Typer) -> None:
    """Add `lam demo` to the ``lam`` app."""
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path(DEMO_OUTPUT), "--out", help="Output folder."),
        model: str | None = typer.Option(None, "--model",
                                         help=f"Speech model: a hub id or a local folder (default: {DEFAULT_MODEL}, "
                                         "offline)."),
        seeds: int | None = typer.Option(None, "--seeds", min=1,
                                         help="Seeds per strategy, 0..N-1 (default: the demo config's seeds)."),
        progress: bool = typer.Option(True, "--progress/--no-progress",
                                      help="Show progress bars (on a terminal; otherwise a line per step)."),
    ) -> None:
        """Align, extract, rank layers, train every strategy over seeds, and report.

        Uses the demo corpus in phonalign/demo_data (espeak-ng speech, four emotions carried by
        prosody) with English as labelled source and Mandarin as unlabelled target. Prints where
        the report is; a rerun with the same --out skips what is done.
        """
        from lam_train.pipeline import run_demo

        res = run_demo(out=out, model=model, seeds=seeds, progress=progress)
        if res.report is None:  # the demo corpus is labelled: only a changed corpus stops early
            raise typer.Exit(3)
        typer.echo(f"Report: {res.report.markdown} (HTML, opens offline: {res.report.html})  "
                   f"({res.seconds or 0.0:.0f} s)")
