"""`lam similarity SOURCE_STORE TARGET_STORE --out DIR`: layer x unit similarity, rankings, selections."""

from __future__ import annotations

from pathlib import Path

import typer

from analysis.defaults import (
    CI_LEVEL,
    DEFAULT_METRIC,
    DEFAULT_RESAMPLE,
    MAX_ROWS,
    N_BOOTSTRAP,
    N_HALVES,
    N_PERMUTATIONS,
    RESAMPLE_MODES,
    SEED,
    TOP_K,
)

from . import _options as opt


def _metrics() -> tuple[str, ...]:
    from analysis.defaults import METRICS

    return tuple(METRICS)


def _units() -> tuple[str, ...]:
    from analysis.defaults import UNITS

    return tuple(UNITS)


_METRICS = opt.choices(_metrics)
_UNITS = opt.choices(_units, split=True)
_LANGUAGE = opt.choice(opt.languages)
_RESAMPLE = opt.choice(RESAMPLE_MODES)


def register(app: typer.Typer) -> None:
    """Add ``lam similarity`` to the ``lam`` app."""
    @app.command("similarity")
    def similarity(
        source: Path = typer.Argument(..., help="Feature store of the source corpus (`lam features`)."),
        target: Path = typer.Argument(..., help="Feature store of the target corpus, same model."),
        out: Path = typer.Option(..., "--out", help="Output directory (rankings.json, scores.parquet, ...)."),
        metrics: list[str] | None = typer.Option(
            None, "--metric", callback=_METRICS,
            help=f"{DEFAULT_METRIC} (default), pairwise_cosine, standardized_cosine (phone units only), coral "
            "(relative, scale-free), mmd; repeat for several. The first one drives rankings.json."),
        units: list[str] | None = typer.Option(
            None, "--units", callback=_UNITS,
            help="Utt Vowl Cons A E @ i O u (default: all); repeat or comma-separate."),
        k: int = typer.Option(TOP_K, "--k", min=1,
                              help="Layers in the GL / WL / RL selections and the top-k stability."),
        n_bootstrap: int = typer.Option(N_BOOTSTRAP, "--bootstrap", min=0,
                                        help="Bootstrap draws resampling speakers (or utterances, see --resample); "
                                        "0: no intervals, ties unknown. (n_bootstrap of run_similarity and "
                                        "run configs.)"),
        resample: str = typer.Option(DEFAULT_RESAMPLE, "--resample", callback=_RESAMPLE,
                                     help="What the draws resample: auto (speakers when both sides have >= 2, "
                                     "else utterances with a warning), speaker, utterance."),
        n_permutations: int = typer.Option(N_PERMUTATIONS, "--permutations", min=0,
                                           help="Null control: permutations of the language labels across "
                                           "speakers; gives a null profile and p_null per layer. "
                                           "(n_permutations of run_similarity and run configs.)"),
        seed: int = typer.Option(SEED, "--seed", min=0,
                                 help="Seed of draws, half splits, permutations and random layers."),
        by_emotion: bool = typer.Option(False, "--by-emotion", help="Score per emotion and rank on the average."),
        ci_level: float = typer.Option(CI_LEVEL, "--ci-level", callback=opt.open_unit_interval,
                                       help="Level of the intervals (re-centred percentile, containing their "
                                       "estimate) and of the joint tie test (between 0 and 1)."),
        n_halves: int = typer.Option(N_HALVES, "--halves", min=0,
                                     help="Random speaker-disjoint half splits for the within-language reference "
                                     "(n_halves of run_similarity)."),
        max_rows: int = typer.Option(MAX_ROWS, "--max-rows", min=2,
                                     help="Rows per unit and corpus for coral / mmd (at least 2)."),
        match_duration: bool = typer.Option(False, "--match-duration", help="Subsample both sides to the same "
                                            "utterance-duration distribution first."),
        allow_different: list[str] | None = typer.Option(
            None, "--allow-different", help="A store setting allowed to differ on purpose (e.g. weights, to "
            "compare a --random-init store with a trained one); repeat for several."),
        source_language: str | None = typer.Option(None, "--source-language", callback=_LANGUAGE,
                                                      help="Keep only source rows of "
                                                      "this language (one store may hold both corpora)."),
        target_language: str | None = typer.Option(None, "--target-language", callback=_LANGUAGE,
                                                      help="Keep only target rows of "
                                                      "this language."),
        vowel_map: bool = typer.Option(False, "--vowel-map", help="Also the cross-language vowel map of every "
                                       "metric: per layer, each source vowel class against each target class "
                                       "with intervals from the same draws, and the diagonal advantage (same-class "
                                       "minus different-class similarity) -> vowel_map.parquet, "
                                       "diagonal_advantage.parquet, vowel_map.json."),
        progress: bool = typer.Option(True, "--progress/--no-progress",
                                      help="Show a progress bar (on a terminal; otherwise a line per step)."),
    ) -> None:
        """Compare two feature stores layer by layer for every unit: scores with speaker-level intervals,
        a within-language reference and the language gap, the layers tied with the best, (with
        --permutations) a null profile, and (with --vowel-map) the 6 x 6 vowel map of every layer.
        """
        from analysis.similarity import run_similarity

        for p, name in ((source, "SOURCE_STORE"), (target, "TARGET_STORE")):
            if not p.is_dir():
                raise typer.BadParameter(f"{p} is not a directory", param_hint=name)
        # an option not given leaves the library's default (None: all units, the default metric);
        # the library logs its warnings (the `lam` handler prints them on stderr)
        given = {k: v for k, v in (("metrics", metrics), ("units", units)) if v}
        out_info = run_similarity(source, target, out, **given, k=k, n_bootstrap=n_bootstrap, seed=seed,
                                  by_emotion=by_emotion, ci_level=ci_level, n_halves=n_halves,
                                  max_rows=max_rows, source_language=source_language,
                                  target_language=target_language, resample=resample,
                                  n_permutations=n_permutations, match_duration=match_duration,
                                  allow_different=allow_different or (), vowel_map=vowel_map,
                                  progress=progress)
        for line in out_info.summary:
            typer.echo(line)
        typer.echo(f"rankings -> {out_info.rankings}; scores -> {out_info.scores}"
                   + (f"; vowel map -> {out_info.vowel_map}" if out_info.vowel_map else ""))
