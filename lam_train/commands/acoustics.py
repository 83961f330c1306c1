"""`lam acoustics ALIGNED OUT`: F1-F3, duration, F0 and intensity of every vowel segment (Praat's algorithms)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt


def register(app: typer.Typer) -> None:
    """Add ``lam acoustics`` to the ``lam`` app."""
    @app.command("acoustics")
    def acoustics(
        aligned: Path = typer.Argument(..., help="Output folder of `lam align` (utterances.parquet + "
                                       "segments.parquet)."),
        out: Path = typer.Argument(..., help="Output folder (acoustics.parquet, ceilings.json, report.json); "
                                   "a rerun resumes: unchanged utterances are kept, changed and new ones "
                                   "measured."),
        ceiling: str = typer.Option("auto", "--ceiling", help="Formant ceiling rule: auto (5000 Hz male, 5500 Hz "
                                    "female where --speakers says, else a per-speaker search), search (always "
                                    "search), or a number of Hz for everyone."),
        speakers: Path | None = typer.Option(None, "--speakers", help="CSV/TSV with columns speaker and sex (or "
                                             "gender): M/F or male/female. A manifest with them will do."),
        normalise: str = typer.Option("none", "--normalise", callback=opt.choice(("none", "lobanov")),
                                      help="none | lobanov (adds per-speaker z-scored F*_z columns)."),
        pitch_floor_hz: float = typer.Option(50.0, "--pitch-floor", callback=opt.positive,
                                             help="Pitch floor of Praat's To Pitch (ac), Hz."),
        pitch_ceiling_hz: float = typer.Option(600.0, "--pitch-ceiling", callback=opt.positive,
                                               help="Pitch ceiling, Hz."),
        min_duration_s: float = typer.Option(0.03, "--min-duration", min=0.0, help="Shorter segments are recorded "
                                             "as too_short and not measured, seconds."),
        language: str | None = typer.Option(None, "--language", callback=opt.choice(opt.languages),
                                            help="Only utterances of this language."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of the token subsample of the ceiling search."),
        strict: bool = typer.Option(False, "--strict", help="Stop at the first segment that cannot be fully "
                                    "measured (default: record it in report.json and go on)."),
        force: bool = typer.Option(False, "--force", help="Accept an OUT measured with other settings and "
                                   "measure every segment again (default: refused, naming the settings that "
                                   "differ)."),
        progress: bool = typer.Option(True, help="Show a progress bar (on a terminal)."),
    ) -> None:
        """Measure every vowel segment with Praat (parselmouth): Burg F1-F3 at 25/50/75 %, duration,
        mean F0 (autocorrelation), mean intensity -> acoustics.parquet, one row per vowel segment."""
        from analysis.acoustics import AcousticSettings, measure_corpus, write_text_summary

        if not aligned.is_dir():
            raise typer.BadParameter(f"{aligned} is not a folder", param_hint="ALIGNED")
        if speakers is not None and not speakers.is_file():
            raise typer.BadParameter(f"{speakers} is not a file", param_hint="--speakers")
        settings = AcousticSettings(ceiling=ceiling, normalise=normalise, pitch_floor_hz=pitch_floor_hz,
                                    pitch_ceiling_hz=pitch_ceiling_hz, min_duration_s=min_duration_s, seed=seed)
        result = measure_corpus(aligned, out, settings=settings, speakers=speakers, language=language,
                                strict=strict, force=force, progress=progress)
        typer.echo(write_text_summary(result))
        if result.n_segments - result.counts.get("ok", 0):
            typer.echo(f"segments not fully measured are listed with their reason in {out / 'report.json'}",
                       err=True)
