"""`lam align CORPUS OUT`: align a corpus (or import its TextGrids) into an aligned-corpus folder."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from phonalign.defaults import DEMO_CORPUS
from phonalign.phonesets import ClassOptions

from . import _options as opt

if TYPE_CHECKING:
    from phonalign.align.report import AlignCounts, AlignReport


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


def _backend_values(aligner: str, values: dict[str, Any]) -> dict[str, Any]:
    """The backend flags given on the command line, checked against ``aligner``'s declaration and
    converted to the declared types."""
    from phonalign.align.options import DECLARED, cli_options, convert_options
    from phonalign.errors import AlignerError

    by_name = {o.name: o for o in cli_options()}
    given: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or (value is False and by_name[name].is_flag):
            continue
        sets = next((o.flag_sets for opts in DECLARED.values() for o in opts
                     if o.name == name and o.flag_sets is not None), None)
        given[name] = sets if (sets is not None and value is True) else value
    foreign = [k for k in given if aligner not in by_name[k].backends]
    if foreign:
        raise AlignerError(
            f"option(s) {', '.join(by_name[k].flag for k in foreign)} do not apply to --aligner {aligner}",
            hint="; ".join(f"{by_name[k].flag} is for {', '.join(by_name[k].backends)}" for k in foreign),
        )
    return convert_options(aligner, given, flags=True)


def _backend_check(name: str, backends: tuple[str, ...]) -> Callable[[Any], Any]:
    """A callback that refuses a backend flag's value the way the command line refuses any bad value
    (click's usage error naming the flag), when no backend offering the flag accepts it: wrong type,
    a value outside the declared choices or below the declared minimum. Which backend the value is
    for is checked later, against ``--aligner``."""

    def check(value: Any) -> Any:
        from phonalign.align.options import convert_options
        from phonalign.errors import AlignerError

        if value is None or isinstance(value, bool):
            return value
        errors = []
        for backend in backends:
            try:
                convert_options(backend, {name: value}, flags=True)
                return value
            except AlignerError as err:
                errors.append(err.message)
        raise typer.BadParameter("; ".join(dict.fromkeys(errors)))

    return check


def _with_backend_flags(fn: Callable[..., None]) -> Callable[..., None]:
    """Give ``fn`` (which takes ``**backend``) one typer option per declared backend flag, built from
    :data:`phonalign.align.options.DECLARED` so that the flags and the run configs read one declaration."""
    from phonalign.align.options import cli_options

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    annotations = {k: v for k, v in fn.__annotations__.items() if k != "backend"}
    for o in cli_options():
        ann: Any
        if o.bool_pair:
            decl, ann, default = f"{o.flag}/--no-{o.flag[2:]}", bool | None, None
        elif o.is_flag:  # not given: None, so that the backend's own default applies
            decl, ann, default = o.flag, bool | None, None
        else:
            decl, ann, default = o.flag, str | None, None
        option = typer.Option(default, decl, help=o.help + ".", callback=_backend_check(o.name, o.backends))
        params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=ann))
        annotations[o.name] = ann
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    return fn


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
_CLASS = {name: opt.class_option(name) for name in ("trap", "strut", "u_umlaut", "rhotic", "diphthong",
                                                    "vowel_segments")}
_CLASS_DEFAULTS = ClassOptions()


# The options of `lam align`, by what they set (the command's signature lists them in this order).
# Corpus reading:
_CORPUS = typer.Argument(..., help="Corpus folder (MFA style: speaker/utt.wav + utt.lab), a CSV/TSV manifest, or "
                         f"{DEMO_CORPUS} for the bundled demo corpus (a folder of that name: ./{DEMO_CORPUS}).")
_OUT = typer.Argument(..., help="Output folder (created; an earlier run there is resumed).")
_MANIFEST = typer.Option(None, "--manifest", help="CSV/TSV manifest (relative to CORPUS).")
_PRESET_OPTION = typer.Option(None, "--preset", callback=_PRESET,
                              help="Corpus layout: msp-podcast, esd, timit (raw TIMIT tree) or lam-demo.")
_COLUMNS = typer.Option(None, "--columns", help="Manifest column mapping FIELD=COLUMN,... "
                        "(fields: utt_id, audio_path, text, language, speaker, emotion, split).")
_LANGUAGE_OPTION = typer.Option(None, "--language", callback=_LANGUAGE, help="Language of the corpus: en or zh.")
_SPEAKER_PATTERN = typer.Option(None, "--speaker-pattern", callback=opt.regex,
                                help="Regex for the speaker in flat folders' file names "
                                "(group 'speaker' or group 1; default: stem up to the first _ or -).")
_ENCODING = typer.Option("utf-8", "--encoding", callback=opt.text_encoding,
                         help="Encoding of transcripts and manifests without a BOM.")
_INTERVALS = typer.Option(None, "--intervals",
                          help="Long recordings: the tier of <recording>.TextGrid (beside each recording) whose "
                          "non-empty intervals are the transcribed utterances, or 'auto' for its only interval "
                          "tier; each interval is aligned as an utterance on the recording's timeline (as MFA "
                          "reads long files).")
# The backend and the phone classes:
_ALIGNER_OPTION = typer.Option("textgrid", "--aligner", "-a", callback=_ALIGNER,
                               help="Backend: textgrid (import existing TextGrids), mfa, pocketsphinx.")
_PHONE_SET_OPTION = typer.Option(None, "--phone-set", callback=_PHONE_SET,
                                 help="Phone set of the labels (arpabet, mfa_english_ipa, mfa_mandarin_ipa, "
                                 "pinyin, espeak_en, espeak_cmn); default: detected per language.")
_TRAP = typer.Option(_CLASS_DEFAULTS.trap, "--trap", callback=_CLASS["trap"],
                     help="Class of English TRAP (æ, AE): A or E.")
_STRUT = typer.Option(_CLASS_DEFAULTS.strut, "--strut", callback=_CLASS["strut"],
                      help="Class of English STRUT (ʌ, AH1): @ or A.")
_U_UMLAUT = typer.Option(_CLASS_DEFAULTS.u_umlaut, "--u-umlaut", callback=_CLASS["u_umlaut"],
                         help="Class of Mandarin ü [y]: i, u or exclude.")
_RHOTIC = typer.Option(_CLASS_DEFAULTS.rhotic, "--rhotic", callback=_CLASS["rhotic"],
                       help="Rhotic vowels (ɚ, ER, er): @ or exclude.")
_DIPHTHONG = typer.Option(_CLASS_DEFAULTS.diphthong, "--diphthong", callback=_CLASS["diphthong"],
                          help="Diphthongs: class of their nucleus (nucleus) or exclude.")
_VOWEL_SEGMENTS = typer.Option(_CLASS_DEFAULTS.vowel_segments, "--vowel-segments", callback=_CLASS["vowel_segments"],
                               help="Phone sets whose vowel segment is a whole pinyin final (Charsiu's iang2, "
                               "espeak cmn): all (every final, class of its nucleus) or simple (only single-vowel "
                               "finals a o e ê i u ü er; finals with a medial or coda are excluded and counted by "
                               "lam inventory).")
# Where the backend runs:
_JOBS = typer.Option(1, "--jobs", "-j", min=1, help="Parallel processes for the backend (--engine local).")
_ENGINE = typer.Option("local", "--engine", callback=opt.choice(opt.engines),
                       help="Where the backend runs: local (this machine, -j processes) or ray (chunks of "
                       "utterances as tasks on a Ray cluster; pip install 'lam-toolkit[ray]'). Same outputs; a "
                       "run can be resumed with the other engine.")
_RAY_ADDRESS = typer.Option(None, "--ray-address", help="ray: the cluster to join, auto or HOST:PORT of its head; "
                            "default: start a Ray instance on this machine for the run.")
_WORKERS = typer.Option(None, "--workers", min=1, help="ray: chunks aligned at once (default: the cluster's CPUs).")
# The run:
_STRICT = typer.Option(False, "--strict", help="Stop at the first failing utterance.")
_CHUNK_SIZE = typer.Option(2000, "--chunk-size", min=1,
                           help="Utterances per saved chunk: the most an interruption can lose.")
_PROGRESS = typer.Option(True, "--progress/--no-progress",
                         help="Show progress bars (on a terminal; otherwise a line per step).")
_FORCE = typer.Option(False, "--force", help="Accept an OUT made with other settings or holding another corpus: "
                      "utterances made with the old settings are realigned, the other corpus' utterances dropped "
                      "(default: such an OUT is refused).")
_DROP_SUSPECT = typer.Option(False, "--drop-suspect",
                             help="Leave utterances flagged as suspect alignments (wrong, truncated or placeholder "
                             "transcripts) out of segments.parquet; they stay in utterances.parquet and "
                             "report.json with their reason.")


def _checked_paths(corpus: str, out: Path, manifest: Path | None, preset: str | None, aligner: str,
                   given: dict[str, Any]) -> tuple[Path, Path | None, str | None]:
    """The corpus folder or manifest, the manifest and the preset, every path checked before any
    work (``given``: the backend options; the demo corpus' TextGrids are added for ``textgrid``)."""
    from phonalign.align.options import options_of
    from phonalign.corpus import locate_corpus
    from phonalign.errors import LamError

    corpus_path, implied_preset = locate_corpus(corpus)
    preset = preset or implied_preset
    _check_path(corpus_path, "corpus")
    if manifest is not None and not manifest.is_absolute() and corpus_path.is_dir():
        manifest = corpus_path / manifest
    _check_path(manifest, "manifest", directory=False)
    textgrids = Path(given["textgrids"]).expanduser() if "textgrids" in given else None
    _check_path(textgrids, "TextGrid folder", directory=True)
    for o in options_of(aligner):
        value = given.get(o.name)
        if o.name != "textgrids" and value is not None and (
                o.type == "path" or (o.type == "model" and _looks_like_path(value))):
            _check_path(Path(value).expanduser(), o.name.replace("_", " "))
    if out.exists() and not out.is_dir():
        raise LamError("the output path exists and is not a folder", path=out, hint="give a new folder name for OUT")
    if aligner == "textgrid" and "textgrids" not in given and preset == DEMO_CORPUS:
        given["textgrids"] = corpus_path / "textgrids"  # the demo's ground-truth alignments
    return corpus_path, manifest, preset


def _print_summary(report: AlignReport, *, out: Path, drop_suspect: bool) -> None:
    """What `lam align` says when it is done (the report itself is in OUT/report.json)."""
    from rich.console import Console

    console = Console(stderr=False)
    c = report.counts
    console.print(f"aligned {c.ok} of {c.utterances} utterances ({c.resumed} already done), {c.failed} failed, "
                  f"{c.rejected_by_reader} rejected by the corpus reader; {c.segments} segments")
    if c.suspect:
        console.print(f"[yellow]{c.suspect} suspect alignment(s)[/yellow]"
                      + (" left out of segments.parquet" if drop_suspect else " (--drop-suspect leaves them out)")
                      + ": " + "; ".join(f"{u.utt_id}: {u.suspect_reason}" for u in report.suspects)[:600])
    vowels = {k: v for k, v in c.by_class.items() if v}
    if vowels:
        console.print("classes: " + ", ".join(f"{k} {v}" for k, v in vowels.items()))
    if report.phone_sets:
        console.print("phone sets: " + ", ".join(f"{k}: {v}" for k, v in report.phone_sets.items()))
    if report.unknown_labels:
        shown = list(report.unknown_labels.items())[:10]
        console.print("[yellow]unknown labels:[/yellow] " + ", ".join(f"{k!r} x{v}" for k, v in shown))
    if c.errors:
        console.print("[yellow]failures by error:[/yellow] " + ", ".join(f"{k} {v}" for k, v in c.errors.items()))
    skipped = report.corpus.get("skipped") or []
    if skipped:
        console.print(f"[yellow]{len(skipped)} file(s) passed over by the corpus reader[/yellow] "
                      f"(e.g. {skipped[0]['path']}: {skipped[0]['reason']}); all are listed in the report "
                      "(corpus.skipped)")
    if report.dropped_emotions:
        console.print("emotions outside the four classes (kept without emotion): "
                      + ", ".join(f"{k} {v}" for k, v in report.dropped_emotions.items()))
    console.print(f"report: {Path(out) / 'report.json'}")
    console.print(f"segments: {report.outputs.segments}")
    if _nothing_aligned(c):
        console.print("[red]no utterance could be aligned[/red]: the reasons are in the report")


def _nothing_aligned(c: AlignCounts) -> bool:
    """No utterance aligned out of some (`lam align` then exits with 1)."""
    return c.ok == 0 and c.utterances + c.rejected_by_reader > 0


def register(app: typer.Typer) -> None:
    """Add ``lam align`` to the ``lam`` app."""
    @app.command("align")
    @_with_backend_flags
    def align(
        corpus: str = _CORPUS,
        out: Path = _OUT,
        aligner: str = _ALIGNER_OPTION,
        manifest: Path | None = _MANIFEST,
        preset: str | None = _PRESET_OPTION,
        columns: str | None = _COLUMNS,
        language: str | None = _LANGUAGE_OPTION,
        speaker_pattern: str | None = _SPEAKER_PATTERN,
        encoding: str = _ENCODING,
        intervals: str | None = _INTERVALS,
        phone_set: str | None = _PHONE_SET_OPTION,
        trap: str = _TRAP,
        strut: str = _STRUT,
        u_umlaut: str = _U_UMLAUT,
        rhotic: str = _RHOTIC,
        diphthong: str = _DIPHTHONG,
        vowel_segments: str = _VOWEL_SEGMENTS,
        jobs: int = _JOBS,
        engine: str = _ENGINE,
        ray_address: str | None = _RAY_ADDRESS,
        workers: int | None = _WORKERS,
        strict: bool = _STRICT,
        chunk_size: int = _CHUNK_SIZE,
        progress: bool = _PROGRESS,
        force: bool = _FORCE,
        drop_suspect: bool = _DROP_SUSPECT,
        **backend: Any,
    ) -> None:
        """Align a corpus, or import its TextGrids, into OUT: textgrids/<utt>.TextGrid (words, phones,
        vowel_class), segments.parquet, utterances.parquet, report.json, config.yaml.

        Examples:

          lam align corpus/ out/ --aligner textgrid --language en

          lam align MSP/ out/ --preset msp-podcast -a mfa --dictionary english_us_arpa --acoustic-model english_us_arpa

          lam align lam-demo out/ --aligner textgrid
        """
        from phonalign.align import get_aligner
        from phonalign.align.run import align_corpus
        from phonalign.corpus import read_corpus
        from phonalign.engine import resolve_engine

        # the aligner and phone-set names were checked by their options' callbacks, against the
        # library's own lists (get_aligner and align_corpus check them again for library callers)
        given = _backend_values(aligner, backend)
        options = ClassOptions.from_dict(dict(trap=trap, strut=strut, u_umlaut=u_umlaut, rhotic=rhotic,
                                              diphthong=diphthong, vowel_segments=vowel_segments))
        engine_cfg = resolve_engine(engine, address=ray_address, workers=workers)
        corpus_path, manifest, preset = _checked_paths(corpus, out, manifest, preset, aligner, given)
        utts = read_corpus(corpus_path, manifest=manifest, preset=preset, columns=_parse_columns(columns),
                           language=language, speaker_pattern=speaker_pattern, encoding=encoding,
                           strict=strict, intervals=intervals)
        report = align_corpus(utts, out, get_aligner(aligner, **given), strict=strict, phone_set=phone_set,
                              options=options, jobs=jobs, progress=progress, chunk_size=chunk_size, force=force,
                              drop_suspect=drop_suspect, engine=engine_cfg)
        _print_summary(report, out=out, drop_suspect=drop_suspect)
        if _nothing_aligned(report.counts):
            raise typer.Exit(1)
