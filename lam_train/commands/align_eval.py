"""`lam align-eval HYP REF`: alignment accuracy of one set of TextGrids against another."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt


def _common_sets() -> tuple[str, ...]:
    from phonalign.align_eval import COMMON_SETS

    return tuple(COMMON_SETS)


def register(app: typer.Typer) -> None:
    """Add ``lam align-eval`` to the ``lam`` app."""
    @app.command("align-eval")
    def align_eval(
        hyp: Path = typer.Argument(..., help="Folder of hypothesis TextGrids (<utt_id>.TextGrid, searched "
                                   "recursively), e.g. OUT/textgrids of `lam align`."),
        ref: Path = typer.Argument(..., help="Folder of reference TextGrids or TIMIT .PHN files (read with "
                                   "the .WRD beside them), e.g. the demo corpus's ground truth "
                                   "(phonalign/demo_data/textgrids)."),
        manifest: Path | None = typer.Option(None, "--manifest",
                                                help="CSV/TSV with utt_id and language columns, or an "
                                                "utterances.parquet: languages for the per-language table "
                                                "(default: from the reference's phone set)."),
        language: str | None = typer.Option(None, "--language", callback=opt.choice(opt.languages),
                                               help="Only utterances of this language."),
        common: str = typer.Option("auto", "--common", callback=opt.choice(_common_sets),
                                   help="Common phone set: auto, arpabet (English sets via to_arpabet), "
                                   "timit (TIMIT labels folded onto CMUdict's: closures into their stop, "
                                   "AX IX UX AXR -> AH IH UW ER, HV -> HH, AX-H -> AH), label (same phone set "
                                   "both sides), class (unit classes)."),
        hyp_phone_set: str | None = typer.Option(None, "--hyp-phone-set", callback=opt.choice(opt.phone_sets),
                                                    help="Phone set of HYP (default: detected)."),
        ref_phone_set: str | None = typer.Option(None, "--ref-phone-set", callback=opt.choice(opt.phone_sets),
                                                    help="Phone set of REF (default: detected)."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the full report as JSON here."),
    ) -> None:
        """Compare HYP with REF: phone-sequence agreement, and for boundaries between matching phones
        the mean and median absolute error and the share within 10, 20, 25 and 50 ms, per language,
        per phone class, and for utterance edges (first and last speech boundary) against interior
        boundaries.

        Example (pocketsphinx on the English half of the demo corpus):

          lam align lam-demo out/ps --aligner pocketsphinx -j 2

          lam align-eval out/ps/textgrids phonalign/demo_data/textgrids --language en
        """
        from phonalign.align_eval import evaluate_dirs, print_report, read_languages
        from phonalign.fsutil import atomic_write_json

        languages = read_languages(manifest) if manifest else None
        utt_ids = None
        if language is not None:
            if languages is None:
                # without a manifest, the reference's own manifest (if it is the demo corpus) tells
                candidate = ref.parent / "manifest.csv"
                languages = read_languages(candidate) if candidate.is_file() else None
            if languages is None:
                from phonalign.align_eval import AlignEvalError

                raise AlignEvalError("--language needs to know each utterance's language",
                                     hint="pass --manifest (CSV with utt_id, language, or utterances.parquet)")
            utt_ids = [u for u, lang in languages.items() if lang == language]
        report = evaluate_dirs(hyp, ref, languages=languages, common=common, hyp_phone_set=hyp_phone_set,
                               ref_phone_set=ref_phone_set, utt_ids=utt_ids)
        from rich.console import Console

        # the 11-column table needs ~100 characters; rich assumes 80 when output is piped
        print_report(report, console=Console(width=max(Console().width, 110)))
        if json_out is not None:
            atomic_write_json(json_out, report.to_dict())
            typer.echo(f"report written to {json_out}")
