"""`lam run CONFIG`: the whole pipeline, align -> features -> similarity -> train -> report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `lam run` to the ``lam`` app."""
    @app.command("run")
    def run(
        config: Path = typer.Argument(..., help="YAML run config (see lam_train/configs/ and docs/training.md)."),
        out: Path | None = typer.Option(None, "--out", help="Output folder (default: the config's `output`)."),
        progress: bool = typer.Option(True, "--progress/--no-progress",
                                      help="Show progress bars (on a terminal; otherwise a line per step)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Check the config, read the corpora and print "
                                     "the plan (with the exact `mfa align` commands); run and write nothing."),
    ) -> None:
        """Run every step into one output folder; a rerun skips the steps already done.

        Exit codes: 0 every step done; 2 bad input (config, corpus, ...: one line and a hint);
        3 stopped before training because the source corpus carries no emotion labels
        (alignment, features and similarity are complete and valid in the output folder).
        """
        from lam_train.config import load_config
        from lam_train.pipeline import plan_pipeline, run_pipeline

        cfg = load_config(config, overrides={"output": str(out.resolve())} if out is not None else None)
        if dry_run:
            for line in plan_pipeline(cfg):
                typer.echo(line)
            return
        res = run_pipeline(cfg, progress=progress)
        if res.report is None:  # stopped before training (res.stopped says why; logged)
            raise typer.Exit(3)
        typer.echo(f"Report: {res.report.markdown}")
