"""`lam similarity SOURCE_STORE TARGET_STORE --out DIR`: layer x unit similarity, rankings, selections."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt


def _metrics() -> tuple[str, ...]:
    from analysis.similarity import METRICS

    return tuple(METRICS)


def _units() -> tuple[str, ...]:
    from analysis.similarity import UNITS

    return tuple(UNITS)


_METRICS = opt.choices(_metrics)
_UNITS = opt.choices(_units, split=True)
_LANGUAGE = opt.choice(opt.languages)


def register(app: typer.Typer) -> None:
    """Add ``lam similarity`` to the ``lam`` app."""
    @app.command("similarity")
    def similarity(
        source: Path = typer.Argument(..., help="Feature store of the source corpus (`lam features`)."),
        target: Path = typer.Argument(..., help="Feature store of the target corpus, same model."),
        out: Path = typer.Option(..., "--out", help="Output directory (rankings.json, scores.parquet, ...)."),
        metric: list[str] | None = typer.Option(
            None, "--metric", callback=_METRICS,
            help="centroid_cosine (default), pairwise_cosine, standardized_cosine, coral, mmd; "
            "repeat for several. The first one drives rankings.json."),
        units: list[str] | None = typer.Option(
            None, "--units", callback=_UNITS,
            help="Utt Vowl Cons A E @ i O u (default: all); repeat or comma-separate."),
        k: int = typer.Option(3, "--k", min=1, help="Layers in the GL / WL / RL selections and the top-k stability."),
        bootstrap: int = typer.Option(200, "--bootstrap", min=0,
                                      help="Bootstrap draws resampling utterances (0: none)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of bootstrap draws, half splits and random layers."),
        by_emotion: bool = typer.Option(False, "--by-emotion", help="Score per emotion and rank on the average."),
        ci_level: float = typer.Option(0.95, "--ci-level", callback=opt.open_unit_interval,
                                       help="Confidence level of the percentile intervals (between 0 and 1)."),
        halves: int = typer.Option(10, "--halves", min=0, help="Random half splits for the within-language reference."),
        max_rows: int = typer.Option(1000, "--max-rows", min=2,
                                     help="Rows per unit and corpus for coral / mmd (at least 2)."),
        source_language: str | None = typer.Option(None, "--source-language", callback=_LANGUAGE,
                                                      help="Keep only source rows of "
                                                      "this language (one store may hold both corpora)."),
        target_language: str | None = typer.Option(None, "--target-language", callback=_LANGUAGE,
                                                      help="Keep only target rows of "
                                                      "this language."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
    ) -> None:
        """Compare two feature stores layer by layer for every unit, with bootstrap intervals."""
        from analysis.similarity import UNITS, run_similarity

        for p, name in ((source, "SOURCE_STORE"), (target, "TARGET_STORE")):
            if not p.is_dir():
                raise typer.BadParameter(f"{p} is not a directory", param_hint=name)
        unit_list = list(units or []) or list(UNITS)
        out_info = run_similarity(source, target, out, metrics=metric or ["centroid_cosine"], units=unit_list, k=k,
                                  n_bootstrap=bootstrap, seed=seed, by_emotion=by_emotion, ci_level=ci_level,
                                  n_halves=halves, max_rows=max_rows, source_language=source_language,
                                  target_language=target_language, progress=progress)
        typer.echo(f"rankings -> {out_info['rankings']}; scores -> {out_info['scores']}")
