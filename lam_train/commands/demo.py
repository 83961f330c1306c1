"""`lam demo`: the whole pipeline on the bundled bilingual demo corpus, English -> Mandarin."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `lam demo` to the ``lam`` app."""
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("lam_demo"), "--out", help="Output folder."),
        model: str = typer.Option("whisper-base", "--model",
                                  help="Speech model: whisper-base (offline), a hub id or a local folder."),
        seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per strategy (0..N-1)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Align, extract, rank layers, train every strategy over seeds, and report.

        Uses the demo corpus in phonalign/demo_data (espeak-ng speech, four emotions carried by
        prosody) with English as labelled source and Mandarin as unlabelled target. Prints where
        the report is; a rerun with the same --out skips what is done.
        """
        from lam_train.pipeline import run_demo

        res = run_demo(out=out, model=model, seeds=seeds, progress=not no_progress, log=typer.echo)
        typer.echo(f"Report: {res['report']} (HTML, opens offline: {res['html']})  ({res['seconds']:.0f} s)")
