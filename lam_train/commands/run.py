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
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Run every step into one output folder; a rerun skips the steps already done."""
        from lam_train.config import load_config
        from lam_train.pipeline import run_pipeline

        cfg = load_config(config, overrides={"output": str(out.resolve())} if out is not None else None)
        run_pipeline(cfg, progress=not no_progress, log=typer.echo)
