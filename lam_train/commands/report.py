"""`lam report RUN_DIR`: one self-contained HTML page (report/index.html) of everything in a run folder."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``lam report`` to the ``lam`` app."""
    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="Output folder of `lam run` / `lam demo` (or of `lam similarity`, "
                                       "`lam acoustics`, `lam geometry`)."),
        out_dir: Path | None = typer.Option(None, "--out", help="Folder of index.html (default: RUN_DIR/report)."),
        title: str | None = typer.Option(None, "--title", help="Page title (default: the folder's name)."),
    ) -> None:
        """Write RUN_DIR/report/index.html: rankings with their uncertainty, tables, every figure
        (embedded, so the single file opens offline), the configuration and versions."""
        from lam_train.html_report import write_html_report

        if not run_dir.is_dir():
            raise typer.BadParameter(f"{run_dir} is not a folder", param_hint="RUN_DIR")
        res = write_html_report(run_dir, out_dir=out_dir, title=title)
        typer.echo(f"HTML report: {res.path} ({res.size_bytes / 1e6:.1f} MB, {len(res.figures)} figures)")
