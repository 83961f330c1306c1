"""`lam geometry SOURCE_STORE [TARGET_STORE] --out DIR`: PCA of vowel vectors per layer, linear-probe separability."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt

_LANGUAGES = opt.choices(opt.languages)


def register(app: typer.Typer) -> None:
    """Add ``lam geometry`` to the ``lam`` app."""
    @app.command("geometry")
    def geometry(
        source: Path = typer.Argument(..., help="Feature store (`lam features`); may hold both languages."),
        target: Path | None = typer.Argument(None, help="A second feature store (the other language), same model."),
        out: Path = typer.Option(..., "--out", help="Output folder (projection.parquet, probe.parquet, "
                                 "geometry.json, figures/); locked while written, replaced by a rerun."),
        languages: list[str] | None = typer.Option(None, "--language", callback=_LANGUAGES,
                                                   help="Only these languages (repeat)."),
        n_folds: int = typer.Option(5, "--folds", min=2, help="Most folds of the per-language GroupKFold by speaker."),
        max_points: int = typer.Option(300, "--max-points", min=10, help="Vectors per language and class in the "
                                       "PCA figure (seeded subsample)."),
        max_per_class: int = typer.Option(1000, "--max-per-class", min=10, help="Vectors per language and class "
                                          "for the probe (seeded subsample)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of the subsamples and the probe."),
    ) -> None:
        """Per layer: vowel segment vectors projected by PCA (both languages together) and the
        cross-validated accuracy of a linear vowel-class probe, within and across languages."""
        from analysis.geometry import probe_summary, run_geometry

        for p, name in ((source, "SOURCE_STORE"), (target, "TARGET_STORE")):
            if p is not None and not p.is_dir():
                raise typer.BadParameter(f"{p} is not a directory", param_hint=name)
        res = run_geometry(source, target, out, languages=languages or None, n_folds=n_folds, max_points=max_points,
                           max_per_class=max_per_class, seed=seed)
        for row in probe_summary(res.probe):
            if row.layer == res.projection.layers[-1]:
                typer.echo(f"layer {row.layer} probe {row.train_language} -> {row.test_language}: "
                           f"balanced accuracy {row.balanced_accuracy:.2f} (chance {row.chance:.2f})")
        typer.echo(f"geometry -> {out} ({res.seconds:.0f} s)")
