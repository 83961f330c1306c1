"""`lam align CORPUS OUT`: align a corpus (or import its TextGrids) into an aligned-corpus folder."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt

_DEMO_NAMES = ("lam-demo", "demo")

# which backend takes which option (CLI name -> constructor keyword)
_BACKEND_OPTIONS = {
    "textgrid": {"textgrids", "speaker", "words_tier", "phones_tier", "duplicate_tiers"},
    "mfa": {"dictionary", "acoustic_model", "beam", "retry_beam", "single_speaker", "clean"},
    "pocketsphinx": {"dictionary", "padding", "g2p"},
}
_FLAG = {"textgrids": "--textgrids", "speaker": "--speaker", "words_tier": "--words-tier",
         "phones_tier": "--phones-tier", "duplicate_tiers": "--rename-duplicate-tiers",
         "dictionary": "--dictionary", "acoustic_model": "--acoustic-model", "beam": "--beam",
         "retry_beam": "--retry-beam", "single_speaker": "--single-speaker", "clean": "--clean/--no-clean",
         "padding": "--padding", "g2p": "--g2p"}


def _parse_columns(spec: str | None) -> dict | None:
    if not spec:
        return None
    from phonalign.errors import CorpusError

    out = {}
    for item in spec.split(","):
        if "=" not in item:
            raise CorpusError(f"bad --columns item {item!r}", hint="write FIELD=COLUMN pairs, e.g. "
                              "--columns utt_id=id,audio_path=file,text=transcript")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _check_path(path: Path | None, what: str, *, directory: bool | None = None) -> None:
    from phonalign.errors import LamError

    if path is None:
        return
    if not path.exists():
        raise LamError(f"{what} not found", path=path, hint="check the path")
    if directory is True and not path.is_dir():
        raise LamError(f"{what} must be a folder", path=path)
    if directory is False and path.is_dir():
        raise LamError(f"{what} must be a file", path=path)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".dict", ".txt", ".zip")) or Path(value).exists()


def _aligners() -> tuple[str, ...]:
    from phonalign.align import ALIGNERS

    return tuple(ALIGNERS)


def _presets() -> tuple[str, ...]:
    from phonalign.corpus import PRESETS

    return tuple(PRESETS)


_ALIGNER = opt.choice(_aligners)
_PRESET = opt.choice(_presets)
_LANGUAGE = opt.choice(opt.languages)
_PHONE_SET = opt.choice(opt.phone_sets)
_G2P = opt.choice(("espeak",))
_CLASS = {name: opt.class_option(name) for name in ("trap", "strut", "u_umlaut", "rhotic", "diphthong")}


def register(app: typer.Typer) -> None:
    """Add ``lam align`` to the ``lam`` app."""
    @app.command("align")
    def align(
        corpus: str = typer.Argument(..., help="Corpus folder (MFA style: speaker/utt.wav + utt.lab), a "
                                     "CSV/TSV manifest, or 'lam-demo' for the bundled demo corpus."),
        out: Path = typer.Argument(..., help="Output folder (created; an earlier run there is resumed)."),
        aligner: str = typer.Option("textgrid", "--aligner", "-a", callback=_ALIGNER,
                                    help="Backend: textgrid (import existing TextGrids), mfa, pocketsphinx."),
        manifest: Path | None = typer.Option(None, "--manifest", help="CSV/TSV manifest (relative to CORPUS)."),
        preset: str | None = typer.Option(None, "--preset", callback=_PRESET,
                                             help="Corpus layout: msp-podcast, esd or lam-demo."),
        columns: str | None = typer.Option(None, "--columns",
                                              help="Manifest column mapping FIELD=COLUMN,... "
                                              "(fields: utt_id, audio_path, text, language, speaker, emotion, split)."),
        language: str | None = typer.Option(None, "--language", callback=_LANGUAGE,
                                               help="Language of the corpus: en or zh."),
        speaker_pattern: str | None = typer.Option(
            None, "--speaker-pattern", callback=opt.regex,
            help="Regex for the speaker in flat folders' file names "
            "(group 'speaker' or group 1; default: stem up to the first _ or -)."),
        encoding: str = typer.Option("utf-8", "--encoding", callback=opt.text_encoding,
                                     help="Encoding of transcripts and manifests without a BOM."),
        textgrids: Path | None = typer.Option(None, "--textgrids",
                                                 help="textgrid: folder of <utt_id>.TextGrid (default: beside each audio file)."),
        speaker: str | None = typer.Option(None, "--speaker", help="textgrid: speaker of MFA multi-speaker tiers."),
        phones_tier: str | None = typer.Option(None, "--phones-tier", help="textgrid: name of the phone tier."),
        words_tier: str | None = typer.Option(None, "--words-tier", help="textgrid: name of the word tier."),
        rename_duplicate_tiers: bool = typer.Option(False, "--rename-duplicate-tiers",
                                                    help="textgrid: read tiers sharing a name as NAME, NAME_2, ..."),
        phone_set: str | None = typer.Option(
            None, "--phone-set", callback=_PHONE_SET,
            help="Phone set of the labels (arpabet, mfa_english_ipa, mfa_mandarin_ipa, "
            "pinyin, espeak_en, espeak_cmn); default: detected per language."),
        trap: str = typer.Option("A", "--trap", callback=_CLASS["trap"],
                                 help="Class of English TRAP (æ, AE): A or E."),
        strut: str = typer.Option("@", "--strut", callback=_CLASS["strut"],
                                  help="Class of English STRUT (ʌ, AH1): @ or A."),
        u_umlaut: str = typer.Option("i", "--u-umlaut", callback=_CLASS["u_umlaut"],
                                     help="Class of Mandarin ü [y]: i, u or exclude."),
        rhotic: str = typer.Option("@", "--rhotic", callback=_CLASS["rhotic"],
                                   help="Rhotic vowels (ɚ, ER, er): @ or exclude."),
        diphthong: str = typer.Option("nucleus", "--diphthong", callback=_CLASS["diphthong"],
                                      help="Diphthongs: class of their nucleus (nucleus) or exclude."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Parallel processes for the backend."),
        strict: bool = typer.Option(False, "--strict", help="Stop at the first failing utterance."),
        dictionary: str | None = typer.Option(None, "--dictionary", help="mfa/pocketsphinx: pronunciation dictionary (path or MFA model name)."),
        acoustic_model: str | None = typer.Option(None, "--acoustic-model", help="mfa: acoustic model (path or MFA model name)."),
        beam: int | None = typer.Option(None, "--beam", min=1, help="mfa: beam width (MFA default 10)."),
        retry_beam: int | None = typer.Option(None, "--retry-beam", min=1,
                                                 help="mfa: retry beam width (MFA default 40)."),
        single_speaker: bool | None = typer.Option(None, "--single-speaker", help="mfa: no speaker adaptation."),
        clean: bool | None = typer.Option(None, "--clean/--no-clean", help="mfa: remove MFA's temporary files first."),
        padding: float | None = typer.Option(
            None, "--padding", min=0.0, help="pocketsphinx: silence added at both ends of the audio before "
            "decoding (removed from the times), seconds; default 0.4."),
        g2p: str | None = typer.Option(
            None, "--g2p", callback=_G2P, help="pocketsphinx: pronounce out-of-vocabulary words with this "
            "grapheme-to-phoneme fallback (espeak); without it OOV utterances fail and are listed in the report."),
        chunk_size: int = typer.Option(2000, "--chunk-size", min=1,
                                       help="Utterances per saved chunk: the most an interruption can lose."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        force: bool = typer.Option(False, "--force", help="Accept an OUT made with other settings or holding "
                                   "another corpus: utterances made with the old settings are realigned, the "
                                   "other corpus' utterances dropped (default: such an OUT is refused)."),
    ) -> None:
        """Align a corpus, or import its TextGrids, into OUT: textgrids/<utt>.TextGrid (words, phones,
        vowel_class), segments.parquet, utterances.parquet, report.json, config.yaml.

        Examples:

          lam align corpus/ out/ --aligner textgrid --language en

          lam align MSP-Podcast/ out/ --preset msp-podcast --aligner mfa --dictionary english_us_arpa --acoustic-model english_us_arpa

          lam align lam-demo out/ --aligner textgrid
        """
        from rich.console import Console

        from phonalign.align import ALIGNERS, get_aligner
        from phonalign.align.run import align_corpus
        from phonalign.corpus import demo_corpus_dir, read_corpus
        from phonalign.errors import AlignerError, LamError
        from phonalign.phonesets import PHONE_SETS, ClassOptions

        if aligner not in ALIGNERS:
            raise AlignerError(f"unknown aligner {aligner!r}", hint=f"choose one of {', '.join(ALIGNERS)}")
        if phone_set is not None and phone_set not in PHONE_SETS:
            raise LamError(f"unknown phone set {phone_set!r}", hint=f"choose one of {', '.join(PHONE_SETS)}")
        options = ClassOptions.from_dict(dict(trap=trap, strut=strut, u_umlaut=u_umlaut, rhotic=rhotic,
                                              diphthong=diphthong))

        # ---- paths, checked before any work ------------------------------------------------
        if corpus in _DEMO_NAMES and not Path(corpus).exists():
            corpus_path = demo_corpus_dir()
            preset = preset or "lam-demo"
        else:
            corpus_path = Path(corpus).expanduser()
            _check_path(corpus_path, "corpus")
        if manifest is not None and not manifest.is_absolute() and corpus_path.is_dir():
            manifest = corpus_path / manifest
        _check_path(manifest, "manifest", directory=False)
        _check_path(textgrids, "TextGrid folder", directory=True)
        for value, what in ((dictionary, "dictionary"), (acoustic_model, "acoustic model")):
            if value is not None and _looks_like_path(value):
                _check_path(Path(value).expanduser(), what)
        if out.exists() and not out.is_dir():
            raise LamError("the output path exists and is not a folder", path=out,
                           hint="give a new folder name for OUT")

        # ---- backend options: only those given, and only for the chosen backend ----------------
        given = {
            "textgrids": textgrids, "speaker": speaker, "words_tier": words_tier, "phones_tier": phones_tier,
            "duplicate_tiers": "rename" if rename_duplicate_tiers else None,
            "dictionary": dictionary, "acoustic_model": acoustic_model, "beam": beam, "retry_beam": retry_beam,
            "single_speaker": single_speaker, "clean": clean, "padding": padding, "g2p": g2p,
        }
        given = {k: v for k, v in given.items() if v is not None}
        foreign = [k for k in given if k not in _BACKEND_OPTIONS[aligner]]
        if foreign:
            users = {k: [a for a, opts in _BACKEND_OPTIONS.items() if k in opts] for k in foreign}
            raise AlignerError(
                f"option(s) {', '.join(_FLAG[k] for k in foreign)} do not apply to --aligner {aligner}",
                hint="; ".join(f"{_FLAG[k]} is for {', '.join(v)}" for k, v in users.items()),
            )
        if aligner == "textgrid" and "textgrids" not in given and preset == "lam-demo":
            given["textgrids"] = corpus_path / "textgrids"  # the demo's ground-truth alignments

        utts = read_corpus(corpus_path, manifest=manifest, preset=preset, columns=_parse_columns(columns),
                           language=language, speaker_pattern=speaker_pattern, encoding=encoding,
                           strict=strict)
        backend = get_aligner(aligner, **given)
        report = align_corpus(utts, out, backend, strict=strict, phone_set=phone_set, options=options,
                              jobs=jobs, progress=progress, chunk_size=chunk_size, force=force)

        console = Console(stderr=False)
        c = report["counts"]
        console.print(
            f"aligned {c['ok']} of {c['utterances']} utterances ({c['resumed']} already done), "
            f"{c['failed']} failed, {c['rejected_by_reader']} rejected by the corpus reader; "
            f"{c['segments']} segments"
        )
        vowels = {k: v for k, v in c["by_class"].items() if v}
        if vowels:
            console.print("classes: " + ", ".join(f"{k} {v}" for k, v in vowels.items()))
        if report["phone_sets"]:
            console.print("phone sets: " + ", ".join(f"{k}: {v}" for k, v in report["phone_sets"].items()))
        if report["unknown_labels"]:
            shown = list(report["unknown_labels"].items())[:10]
            console.print("[yellow]unknown labels:[/yellow] " + ", ".join(f"{k!r} x{v}" for k, v in shown))
        if c["errors"]:
            console.print("[yellow]failures by error:[/yellow] "
                          + ", ".join(f"{k} {v}" for k, v in c["errors"].items()))
        skipped = report.get("corpus", {}).get("skipped") or []
        if skipped:
            console.print(f"[yellow]{len(skipped)} file(s) passed over by the corpus reader[/yellow] "
                          f"(e.g. {skipped[0]['path']}: {skipped[0]['reason']}); all are listed in the report")
        if report["dropped_emotions"]:
            console.print("emotions outside the four classes (kept without emotion): "
                          + ", ".join(f"{k} {v}" for k, v in report["dropped_emotions"].items()))
        console.print(f"report: {Path(out) / 'report.json'}")
        console.print(f"segments: {report['outputs']['segments']}")
        if c["ok"] == 0 and c["utterances"] + c["rejected_by_reader"] > 0:
            console.print("[red]no utterance could be aligned[/red]: the reasons are in the report")
            raise typer.Exit(1)
