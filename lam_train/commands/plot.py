"""`lam plot DIR [--compare DIR2] [--control DIR3]`: figures of `lam similarity` results."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt


def _metrics() -> tuple[str, ...]:
    from analysis.defaults import METRICS

    return tuple(METRICS)


_METRIC = opt.choice(_metrics)


def register(app: typer.Typer) -> None:
    """Add ``lam plot`` to the ``lam`` app."""
    @app.command("plot")
    def plot(
        results: Path = typer.Argument(..., help="Output directory of `lam similarity`."),
        compare: Path | None = typer.Option(None, "--compare", help="A second result directory (e.g. another "
                                               "model), drawn side by side."),
        control: Path | None = typer.Option(None, "--control", help="A control result directory (e.g. stores "
                                               "made with `lam features --random-init`), overlaid in grey."),
        out: Path | None = typer.Option(None, "--out", help="Figure directory (default: RESULTS/figures)."),
        metric: str | None = typer.Option(None, "--metric", callback=_METRIC,
                                             help="Draw rankings_<metric>.json instead of "
                                             "rankings.json."),
    ) -> None:
        """Similarity vs layer with intervals, reference band, language gap, ties and null; layer x unit
        heatmap; rank stability; with a vowel map (lam similarity --vowel-map) its small multiples over
        layers and the diagonal-advantage curve (PNG + SVG). Compared panels share their y limits."""
        from analysis.plots import plot_results

        paths = plot_results(results, out, compare=compare, control=control, metric=metric)
        typer.echo(f"{len(paths)} figures -> {paths[0].parent}")
