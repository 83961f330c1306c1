"""Corpora as tables: read a corpus directory or manifest into :class:`~phonalign.records.Utterance` rows.

Three ways in:

**An MFA-style directory** (``read_corpus(DIR)``): ``DIR/<speaker>/<utt>.wav`` with the transcript in
``<utt>.lab`` or ``<utt>.txt`` beside it (the layout the Montreal Forced Aligner reads). The
speaker is the folder the audio lies in. Files directly in ``DIR`` (a *flat* corpus) take their
speaker from ``speaker_pattern`` -- a regular expression searched in the file stem whose group
``speaker`` (or first group) is the speaker -- or, by default, from the stem up to its first
``_`` or ``-`` (``spk01_0003.wav`` -> ``spk01``; a stem without either is its own speaker). The
utterance id is the file stem. Audio extensions: ``.wav .flac .ogg .mp3 .aiff .aif``.

**A CSV/TSV manifest** (``read_corpus(DIR, manifest="list.tsv")`` or ``read_corpus("list.csv")``):
one row per utterance; ``columns`` maps our fields (``utt_id, audio_path, text, language, speaker,
emotion, split``) to the manifest's column names (default: the same names). Relative audio paths
are relative to the manifest's folder. Without an ``utt_id`` column the id is the audio stem; a
``text`` column may be absent (empty transcripts, fine for importing TextGrids).

**A preset** for a published corpus:

``msp-podcast``
    ``DIR/Labels/labels_consensus.csv`` (columns ``FileName, EmoClass, SpkrID, Split_Set, ...``),
    audio in ``DIR/Audios/<FileName>``, transcripts (if present) in ``DIR/Transcripts/<stem>.txt``.
    ``EmoClass`` N/H/A/S -> Neutral/Happiness/Anger/Sadness (U, C, D, F, O, X dropped);
    ``Split_Set`` Train/Development/Test1 -> train/dev/test (Test2, Test3 -> test2, test3). English.
``esd``
    The Emotional Speech Dataset: ``DIR/<spk>/<spk>.txt`` with lines
    ``utt_id<TAB>text<TAB>emotion`` and audio in ``DIR/<spk>/<Emotion>/[train|evaluation|test/]<utt>.wav``.
    Speakers 0001-0010 are Mandarin (``zh``), 0011-0020 English (``en``). Neutral/Happy/Angry/Sad
    (or 中立/快乐/生气/伤心) -> Neutral/Happiness/Anger/Sadness; Surprise (惊喜) dropped. The split is
    the audio's ``train``/``evaluation``/``test`` folder (-> train/dev/test) where there is one.
``timit``
    The raw TIMIT layout (:mod:`phonalign.timit`): ``{TRAIN,TEST}/DR*/<speaker>/<utt>.WAV`` (NIST
    SPHERE) + ``.TXT``, any case; utterance ids ``<speaker>_<utt>``; English; split from the folder.
``lam-demo``
    The bundled demo corpus (:func:`demo_corpus_dir`): ``manifest.csv`` with the columns of
    :data:`~phonalign.records.UTTERANCE_SCHEMA`, audio paths relative to its folder.

Emotions are mapped to the four classes of :data:`~phonalign.records.EMOTIONS`; any other label
becomes ``None`` (the utterance stays in the corpus, e.g. for alignment and similarity analysis)
and is counted in the corpus report. Rows that cannot be used -- an unsafe utterance id, a missing
or undecodable transcript -- are skipped and listed in the report, or raise with ``strict=True``.
The report is the ``report`` attribute of the returned :class:`Corpus` (a :class:`CorpusReport`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import pyarrow as pa

from .defaults import DEMO_CORPUS, RETIRED_DEMO_TOKENS
from .errors import CorpusError, LamError
from .fsutil import check_utt_id
from .records import EMOTIONS, LANGUAGES, UTTERANCE_SCHEMA, Utterance

__all__ = [
    "read_corpus",
    "map_emotion",
    "utterances_to_table",
    "table_to_utterances",
    "demo_corpus_dir",
    "locate_corpus",
    "Corpus",
    "CorpusReport",
    "RejectedRow",
    "SkippedFile",
    "PRESETS",
    "AUDIO_EXTENSIONS",
    "read_transcript",
]

PRESETS: tuple[str, ...] = ("msp-podcast", "esd", "lam-demo", "timit")
#: Audio the readers take: what libsndfile decodes, and (through ffmpeg, when it is installed) the rest.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".sph", ".m4a",
                                     ".mp4", ".aac", ".wma", ".webm", ".amr", ".3gp", ".wv", ".ape")
#: Files that belong to an audio file of the same stem (its transcript or alignment), any case.
COMPANION_EXTENSIONS: tuple[str, ...] = (".lab", ".txt", ".textgrid", ".wrd", ".phn")
_FIELDS = ("utt_id", "audio_path", "text", "language", "speaker", "emotion", "split", "corpus", "start", "end")

#: Emotion labels of each preset (and of plain manifests, ``None``) -> the four classes.
#: Labels not listed are dropped (emotion None) and counted.
_EMOTION_MAPS: dict[str | None, dict[str, str]] = {
    None: {
        "neutral": "Neutral", "neu": "Neutral",
        "happiness": "Happiness", "happy": "Happiness", "hap": "Happiness", "joy": "Happiness",
        "anger": "Anger", "angry": "Anger", "ang": "Anger",
        "sadness": "Sadness", "sad": "Sadness",
    },
    "msp-podcast": {"n": "Neutral", "h": "Happiness", "a": "Anger", "s": "Sadness",
                    "neutral": "Neutral", "happy": "Happiness", "angry": "Anger", "sad": "Sadness"},
    "esd": {"neutral": "Neutral", "happy": "Happiness", "angry": "Anger", "sad": "Sadness",
            "中立": "Neutral", "快乐": "Happiness", "生气": "Anger", "伤心": "Sadness"},
}
_EMOTION_MAPS["lam-demo"] = _EMOTION_MAPS[None]

_SPLITS = {
    "train": "train", "training": "train",
    "dev": "dev", "development": "dev", "valid": "dev", "validation": "dev", "evaluation": "dev",
    "test": "test", "test1": "test", "test2": "test2", "test3": "test3",
}


@dataclass(frozen=True)
class RejectedRow:
    """An utterance (or row, or file) the reader could not use, with the error that says why."""

    utt_id: str | None
    error: str  # the error's type name, e.g. "CorpusError"
    message: str
    path: str | None
    line: int | None
    hint: str | None

    @classmethod
    def of(cls, err: LamError) -> RejectedRow:
        """The row for an error raised (or, without ``strict``, recorded) while reading."""
        rep = err.to_report()
        return cls(utt_id=err.utt_id, error=rep["error"], message=rep["message"], path=rep["path"],
                   line=rep["line"], hint=rep["hint"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keys in the order of ``report.json``."""
        return {"utt_id": self.utt_id, "error": self.error, "message": self.message, "path": self.path,
                "line": self.line, "hint": self.hint}


@dataclass(frozen=True)
class SkippedFile:
    """A file the reader passed over (never silently), and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class CorpusReport:
    """What :func:`read_corpus` found besides the utterances; merged into alignment reports."""

    source: str  # the corpus folder or manifest read
    preset: str | None
    n_utterances: int
    dropped_emotions: Mapping[str, int]  # label outside the four classes -> utterances (emotion None)
    rejected: tuple[RejectedRow, ...]
    skipped: tuple[SkippedFile, ...]
    missing_transcripts: int  # audio without a transcript (read with an empty text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"source", "preset", "n_utterances", "dropped_emotions", "rejected",
        "skipped", "missing_transcripts"}``."""
        return {"source": self.source, "preset": self.preset, "n_utterances": self.n_utterances,
                "dropped_emotions": dict(self.dropped_emotions), "rejected": [r.to_dict() for r in self.rejected],
                "skipped": [s.to_dict() for s in self.skipped], "missing_transcripts": self.missing_transcripts}


@dataclass(frozen=True)
class Corpus(Sequence[Utterance]):
    """Utterances as :func:`read_corpus` read them, in a stable order, with its :class:`CorpusReport`.

    A sequence: ``len``, iteration and indexing work as on a list; a slice is a plain list of
    utterances (the report describes the whole corpus, not the slice).
    """

    utterances: tuple[Utterance, ...]
    report: CorpusReport

    def __len__(self) -> int:
        return len(self.utterances)

    @overload
    def __getitem__(self, index: int) -> Utterance: ...

    @overload
    def __getitem__(self, index: slice) -> list[Utterance]: ...

    def __getitem__(self, index: int | slice) -> Utterance | list[Utterance]:
        if isinstance(index, slice):
            return list(self.utterances[index])
        return self.utterances[index]

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)


def demo_corpus_dir() -> Path:
    """Folder of the bundled bilingual demo corpus (``manifest.csv``, audio, ``textgrids/``)."""
    return Path(__file__).resolve().parent / "demo_data"


def locate_corpus(path: str | Path) -> tuple[Path, str | None]:
    """Where a corpus named by a user is, and the preset it implies: ``(path, preset or None)``.

    :data:`~phonalign.defaults.DEMO_CORPUS` (``"lam-demo"``) is the bundled demo corpus
    (:func:`demo_corpus_dir`, preset ``lam-demo``); anything else is a path (``~`` expanded; a folder
    that happens to be called ``lam-demo`` is written ``./lam-demo``). The demo corpus' earlier name
    (``@demo``) is refused with a hint. The path is not checked here (:func:`read_corpus` does).
    """
    text = str(path)
    if text == DEMO_CORPUS:
        return demo_corpus_dir(), DEMO_CORPUS
    if text in RETIRED_DEMO_TOKENS:
        raise CorpusError(f"{text!r} no longer names the demo corpus", hint=f"write {DEMO_CORPUS!r}")
    return Path(text).expanduser(), None


def map_emotion(label: str | None, preset: str | None = None) -> str | None:
    """Map a corpus's emotion label to one of :data:`~phonalign.records.EMOTIONS`, or None.

    Parameters
    ----------
    label : str or None
        As written in the corpus (case and surrounding spaces are ignored).
    preset : str, optional
        Which corpus's labels (``msp-podcast`` uses single letters N/H/A/S); None for the
        English names and common abbreviations (neutral, happy, angry, sad, ...).

    Returns
    -------
    str or None
        The class name, or None for labels outside the four classes (and for empty labels).
    """
    if label is None:
        return None
    key = str(label).strip()
    if not key:
        return None
    if key in EMOTIONS:
        return key
    table = _EMOTION_MAPS.get(preset, _EMOTION_MAPS[None])
    return table.get(key.lower(), table.get(key))


def _map_split(value: str | None) -> str | None:
    if value is None or not str(value).strip():
        return None
    key = str(value).strip().lower()
    return _SPLITS.get(key, key)


def read_transcript(path: Path, *, encoding: str = "utf-8") -> str:
    """Read a transcript file (``.lab``/``.txt``): BOMs honoured, otherwise ``encoding``.

    Raises
    ------
    CorpusError
        If the bytes are not valid in ``encoding`` (naming the file, line and the option to change).
    """
    data = path.read_bytes()
    return _decode(data, path=path, encoding=encoding).strip()


def _decode(data: bytes, *, path: Path, encoding: str) -> str:
    # a byte-order mark names the encoding, whatever was asked for; its bytes must then be valid
    # too (a BOM on a file that is not UTF-16 gets the same error as any bad transcript)
    if data[:3] == b"\xef\xbb\xbf":
        encoding, data = "utf-8", data[3:]
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CorpusError(
            f"transcript is not valid {encoding} (byte 0x{data[err.start]:02x} at offset {err.start})",
            path=path, line=line,
            hint="convert the file to UTF-8, or name its encoding with --encoding "
            "(encoding= in Python), e.g. --encoding gbk or --encoding latin-1",
        ) from None
    except LookupError:
        raise CorpusError(f"unknown text encoding {encoding!r}", path=path,
                          hint="use a Python codec name such as utf-8, gbk, big5, latin-1") from None


class _Collector:
    """Accumulates utterances and the corpus report; enforces unique, safe ids."""

    def __init__(self, *, source: Path, preset: str | None, strict: bool) -> None:
        self.utts: list[Utterance] = []
        self.ids: dict[str, str] = {}
        self.strict = strict
        self.dropped: Counter[str] = Counter()
        self.rejected: list[RejectedRow] = []
        self.skipped: list[SkippedFile] = []  # files the reader passed over, with the reason
        self.missing_transcripts = 0
        self.source = source
        self.preset = preset

    def skip(self, path: Path, reason: str) -> None:
        """Record a file the reader passes over (listed in the report, never silently ignored)."""
        self.skipped.append(SkippedFile(path=str(path), reason=reason))

    def reject(self, err: LamError) -> None:
        if self.strict:
            raise err
        self.rejected.append(RejectedRow.of(err))

    def emotion(self, raw: str | None, preset: str | None) -> str | None:
        mapped = map_emotion(raw, preset)
        if mapped is None and raw is not None and str(raw).strip():
            self.dropped[str(raw).strip()] += 1
        return mapped

    def add(self, utt: Utterance, *, source: Path, line: int | None = None) -> None:
        try:
            check_utt_id(utt.utt_id, source=source)
        except LamError as err:
            err.line = line
            self.reject(err)
            return
        if utt.utt_id in self.ids:
            self.reject(CorpusError(
                f"utterance id {utt.utt_id!r} appears twice (also {self.ids[utt.utt_id]})",
                path=source, line=line, utt_id=utt.utt_id,
                hint="utterance ids must be unique across the corpus: rename one of the files "
                "(MFA-style folders use the file name as the id)",
            ))
            return
        if utt.language not in LANGUAGES:
            self.reject(CorpusError(
                f"language {utt.language!r} is not one of {list(LANGUAGES)}",
                path=source, line=line, utt_id=utt.utt_id,
                hint="pass --language en or --language zh (language= in Python), or fix the language column",
            ))
            return
        self.ids[utt.utt_id] = str(source) if line is None else f"{source}:{line}"
        self.utts.append(utt)

    def result(self) -> Corpus:
        """The utterances read, with the report."""
        report = CorpusReport(source=str(self.source), preset=self.preset, n_utterances=len(self.utts),
                              dropped_emotions=dict(sorted(self.dropped.items())), rejected=tuple(self.rejected),
                              skipped=tuple(self.skipped), missing_transcripts=self.missing_transcripts)
        return Corpus(tuple(self.utts), report)


def _need_language(language: str | None, source: Path) -> str:
    if language is None:
        raise CorpusError(
            "the corpus has no language column and no language was given",
            path=source, hint="pass --language en or --language zh (language= in Python)",
        )
    return language


# --------------------------------------------------------------------------------------------
# MFA-style directories


def _stem_speaker(stem: str, pattern: re.Pattern | None, source: Path) -> str:
    if pattern is not None:
        m = pattern.search(stem)
        if not m:
            raise CorpusError(f"speaker pattern {pattern.pattern!r} does not match the file name {stem!r}",
                              path=source, hint="fix --speaker-pattern (a regular expression with a group)")
        if "speaker" in m.groupdict():
            return m.group("speaker")
        return m.group(1) if m.groups() else m.group(0)
    m = re.match(r"^([^_\-]+)[_\-]", stem)
    return m.group(1) if m else stem


def _walk(root: Path) -> list[Path]:
    """Every entry under ``root`` that is not a folder, following symbolic links to folders (a
    speaker folder linked in from elsewhere is part of the corpus) but never around a loop."""
    out: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in filenames)
    return sorted(out)


def _intervals_of(wav: Path, tier: str, col: _Collector, *, language: str, speaker: str,
                  corpus: str) -> None:
    """The transcribed intervals of a long recording: one utterance per non-empty interval of ``tier``
    in the TextGrid beside ``wav`` (``"auto"``: its only interval tier), on the recording's timeline."""
    from .textgrid_io import read_tiers

    grid = next((wav.with_suffix(s) for s in (".TextGrid", ".textgrid", ".TEXTGRID", ".Textgrid")
                 if wav.with_suffix(s).is_file()), None)
    if grid is None:
        col.reject(CorpusError("no TextGrid of transcribed intervals beside this recording", path=wav,
                               utt_id=wav.stem, hint=f"put {wav.stem}.TextGrid (a tier of transcribed intervals) "
                               "beside it, or read the corpus without --intervals"))
        return
    try:
        _, _, tiers, _ = read_tiers(grid)
    except LamError as err:
        err.utt_id = wav.stem
        col.reject(err)
        return
    interval_tiers = [t for t in tiers if t["class"] == "IntervalTier"]
    names = [t["name"] for t in interval_tiers]
    if tier == "auto":
        chosen = interval_tiers[0] if len(interval_tiers) == 1 else None
    else:
        chosen = next((t for t in interval_tiers if t["name"] == tier), None)
    if chosen is None:
        col.reject(CorpusError(
            f"no interval tier {tier!r} of transcribed intervals" if tier != "auto"
            else f"{len(names)} interval tiers, which one holds the transcribed intervals?",
            path=grid, utt_id=wav.stem, hint=f"name the tier with --intervals (the tiers are {names})"))
        return
    k = 0
    for start, end, label in chosen["entries"]:
        text = " ".join(str(label).split())
        if not text:
            continue
        k += 1
        col.add(Utterance(utt_id=f"{wav.stem}_{k:04d}", audio_path=str(wav.resolve()), text=text, language=language,
                          speaker=speaker, corpus=corpus, start=float(start), end=float(end)), source=grid)


def _read_directory(root: Path, col: _Collector, *, language: str | None, corpus: str,
                    speaker_pattern: str | None, encoding: str, intervals: str | None = None) -> None:
    pattern = re.compile(speaker_pattern) if speaker_pattern else None
    entries = _walk(root)
    audio = []
    audio_stems = set()
    for p in entries:
        if p.suffix.lower() in AUDIO_EXTENSIONS:
            if p.is_file():
                audio.append(p)
                audio_stems.add(p.with_suffix(""))
            else:
                col.skip(p, "not a regular file (a FIFO, device or broken link): not read")
    for p in entries:
        suffix = p.suffix.lower()
        if suffix in AUDIO_EXTENSIONS:
            continue
        if suffix in COMPANION_EXTENSIONS:
            if p.with_suffix("") not in audio_stems:
                col.skip(p, f"a {p.suffix} file without an audio file of the same name "
                         f"({', '.join(AUDIO_EXTENSIONS)}): not used")
            continue
        col.skip(p, f"not an audio format the reader takes ({p.suffix or 'no extension'}; "
                 f"audio: {', '.join(AUDIO_EXTENSIONS)})")
    if not audio:
        raise CorpusError(
            "no audio files found in the corpus directory",
            path=root,
            hint=f"expected <speaker>/<utt>{{{','.join(AUDIO_EXTENSIONS)}}} files, or give a "
            "manifest with --manifest",
        )
    lang = _need_language(language, root)
    for wav in audio:
        rel = wav.relative_to(root)
        speaker = rel.parts[-2] if len(rel.parts) > 1 else _stem_speaker(wav.stem, pattern, wav)
        if intervals is not None:
            _intervals_of(wav, intervals, col, language=lang, speaker=speaker, corpus=corpus)
            continue
        text: str | None = ""
        for ext in (".lab", ".LAB", ".Lab", ".txt", ".TXT", ".Txt"):
            tpath = wav.with_suffix(ext)
            if tpath.exists() and not tpath.is_file():
                col.skip(tpath, "not a regular file (a FIFO or device): not read")
                continue
            if tpath.is_file():
                try:
                    text = read_transcript(tpath, encoding=encoding)
                except CorpusError as err:
                    err.utt_id = wav.stem
                    col.reject(err)
                    text = None
                break
        else:
            col.missing_transcripts += 1
        if text is None:
            continue
        col.add(Utterance(utt_id=wav.stem, audio_path=str(wav.resolve()), text=text, language=lang,
                          speaker=speaker, corpus=corpus), source=wav)


# --------------------------------------------------------------------------------------------
# manifests


def _read_manifest_rows(path: Path, *, encoding: str
                        ) -> tuple[list[str], list[tuple[int, dict]], list[tuple[int, str]]]:
    """Rows of a CSV/TSV file with their 1-based line numbers; delimiter from the suffix or sniffed.

    Returns the header, the rows, and ``(line, reason)`` of rows whose number of fields differs
    from the header's (an unquoted delimiter in a field, a row cut short): those would put values
    into the wrong columns, so they are left out and reported.

    Raises
    ------
    CorpusError
        The file is missing, empty, or malformed as CSV (an unterminated quote swallows every row
        after it; the line where the record starts is named).
    """
    if not path.is_file():
        raise CorpusError("manifest not found", path=path, hint="check the --manifest path")
    text = _decode(path.read_bytes(), path=path, encoding=encoding)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        delim = "\t"
    elif suffix == ".csv":
        delim = ","
    else:
        first = text.split("\n", 1)[0]
        delim = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim, strict=True)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as err:
        raise CorpusError(f"the header is not valid CSV ({err})", path=path, line=1) from None
    if not fieldnames:
        raise CorpusError("manifest is empty (no header row)", path=path, line=1)
    header = [h.strip() for h in fieldnames]
    reader.fieldnames = header
    rows: list[tuple[int, dict]] = []
    bad: list[tuple[int, str]] = []
    last = reader.line_num
    try:
        for row in reader:
            start = last + 1
            last = reader.line_num
            extra = row.pop(None, None)
            missing = [k for k, v in row.items() if v is None]
            if missing or extra:
                n = len(header) - len(missing) + len(extra or [])
                why = (f"the row has {n} field(s), the header has {len(header)}"
                       + (f" (no value for {', '.join(missing)})" if missing else "")
                       + ("; quote fields that contain the delimiter" if extra else ""))
                bad.append((start, why))
                continue
            rows.append((start, {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}))
    except csv.Error as err:
        unterminated = "end of data" in str(err)
        raise CorpusError("a quoted field that starts on this line is never closed (unterminated \")"
                          if unterminated else f"malformed CSV ({err})", path=path, line=last + 1,
                          hint="close the quote or remove the stray quote character; inside a quoted field "
                          "write a quote as \"\"") from None
    return header, rows, bad


def _read_manifest(path: Path, col: _Collector, *, columns: Mapping[str, str] | None, language: str | None,
                   corpus: str, preset: str | None, encoding: str) -> None:
    header, rows, bad = _read_manifest_rows(path, encoding=encoding)
    for line, why in bad:
        col.reject(CorpusError(why, path=path, line=line, hint="fix the row (or its quoting) in the manifest"))
    mapping = {f: f for f in _FIELDS}
    if columns:
        unknown = set(columns) - set(_FIELDS)
        if unknown:
            raise CorpusError(f"unknown field(s) in the column mapping: {sorted(unknown)}",
                              hint=f"map any of {list(_FIELDS)} to manifest columns")
        mapping.update(columns)
    for field in ("audio_path",):
        if mapping[field] not in header:
            raise CorpusError(
                f"manifest has no column {mapping[field]!r} for {field}; its columns are {header}",
                path=path, line=1,
                hint=f"map it with columns={{'{field}': 'YourColumn'}} (or --columns {field}=YourColumn)",
            )
    if "language" not in (columns or {}) and mapping["language"] not in header:
        _need_language(language, path)
    base = path.parent
    for line, row in rows:
        def get(field: str, row: Mapping[str, str | None] = row) -> str | None:
            value = row.get(mapping[field])
            return value if value not in (None, "") else None

        audio = get("audio_path")
        if audio is None:
            col.reject(CorpusError("empty audio path", path=path, line=line,
                                   hint="every row needs an audio file"))
            continue
        audio_path = Path(audio)
        if not audio_path.is_absolute():
            audio_path = base / audio_path
        utt_id = get("utt_id") or audio_path.stem
        lang = language or get("language")
        try:
            raw = {k: get(k) for k in ("start", "end")}
            start, end = (None if v is None else float(v) for v in raw.values())
        except ValueError:
            col.reject(CorpusError(f"start/end must be seconds, not {get('start')!r}/{get('end')!r}", path=path,
                                   line=line, utt_id=utt_id, hint="write the interval's times in seconds"))
            continue
        col.add(Utterance(
            utt_id=utt_id,
            audio_path=str(audio_path.resolve()),
            text=get("text") or "",
            language=lang if lang is not None else "",
            speaker=get("speaker") or "",
            corpus=get("corpus") or corpus,
            emotion=col.emotion(get("emotion"), preset),
            split=_map_split(get("split")),
            start=start,
            end=end,
        ), source=path, line=line)


def _read_msp_podcast(root: Path, col: _Collector, *, manifest: Path | None, encoding: str, corpus: str) -> None:
    labels = manifest or root / "Labels" / "labels_consensus.csv"
    if not labels.is_file():
        raise CorpusError(
            "MSP-Podcast labels not found",
            path=labels,
            hint="point CORPUS at the MSP-Podcast release folder (with Labels/ and Audios/), "
            "or give the labels file with --manifest",
        )
    header, rows, bad = _read_manifest_rows(labels, encoding=encoding)
    for line, why in bad:
        col.reject(CorpusError(why, path=labels, line=line, hint="fix the row (or its quoting) in the file"))
    for need in ("FileName", "EmoClass"):
        if need not in header:
            raise CorpusError(f"column {need!r} missing; the columns are {header}", path=labels, line=1,
                              hint="this does not look like labels_consensus.csv")
    audio_dir = root / "Audios"
    transcripts = root / "Transcripts"
    named = {row.get("FileName") for _, row in rows}
    if audio_dir.is_dir():
        for p in sorted(audio_dir.iterdir()):
            if p.is_file() and p.name not in named:
                col.skip(p, f"not named in {labels.name}")
    for line, row in rows:
        name = row["FileName"]
        stem = Path(name).stem
        text = ""
        tpath = transcripts / f"{stem}.txt"
        if tpath.is_file():
            try:
                text = read_transcript(tpath, encoding=encoding)
            except CorpusError as err:
                err.utt_id = stem
                col.reject(err)
                continue
        else:
            col.missing_transcripts += 1
        speaker = row.get("SpkrID") or ""
        col.add(Utterance(
            utt_id=stem,
            audio_path=str((audio_dir / name).resolve()),
            text=text,
            language="en",
            speaker="" if speaker.lower() == "unknown" else speaker,
            corpus=corpus,
            emotion=col.emotion(row.get("EmoClass"), "msp-podcast"),
            split=_map_split(row.get("Split_Set")),
        ), source=labels, line=line)


def _esd_language(speaker: str) -> str | None:
    if speaker.isdigit():
        n = int(speaker)
        if 1 <= n <= 10:
            return "zh"
        if 11 <= n <= 20:
            return "en"
    return None


def _read_esd(root: Path, col: _Collector, *, encoding: str, corpus: str, language: str | None) -> None:
    speakers = sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.txt").is_file())
    if not speakers:
        raise CorpusError(
            "no ESD speaker folders found (expected 0001/0001.txt ... 0020/0020.txt)",
            path=root, hint="point CORPUS at the folder that holds the speaker folders 0001 ... 0020",
        )
    for spk_dir in speakers:
        spk = spk_dir.name
        lang = _esd_language(spk) or language
        if lang is None:
            raise CorpusError(f"ESD speaker {spk!r} is outside 0001-0020; its language is unknown",
                              path=spk_dir, hint="pass --language for such speakers")
        # index the audio once: <Emotion>/[train|evaluation|test/]<utt>.wav
        wavs = {p.stem: p for p in spk_dir.rglob("*.wav")}
        listed: set[str] = set()
        list_file = spk_dir / f"{spk}.txt"
        try:
            text = _decode(list_file.read_bytes(), path=list_file, encoding=encoding)
        except CorpusError as err:
            col.reject(err)
            continue
        for lineno, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            parts = raw.split("\t")
            if len(parts) < 3:
                col.reject(CorpusError(
                    f"expected 'utt_id<TAB>text<TAB>emotion', found {raw[:60]!r}",
                    path=list_file, line=lineno, hint="check the file's tabs"))
                continue
            utt_id, transcript, emotion = parts[0].strip(), parts[1].strip(), parts[-1].strip()
            listed.add(utt_id)
            wav = wavs.get(utt_id)
            if wav is None:
                # report the missing audio at alignment time, where missing files are handled
                wav = spk_dir / (emotion if emotion.isascii() else "") / f"{utt_id}.wav"
            split_dir = wav.parent.name.lower()
            col.add(Utterance(
                utt_id=utt_id,
                audio_path=str(wav.resolve()),
                text=transcript,
                language=lang,
                speaker=spk,
                corpus=corpus,
                emotion=col.emotion(emotion, "esd"),
                split=_map_split(split_dir) if split_dir in ("train", "evaluation", "test") else None,
            ), source=list_file, line=lineno)
        for stem in sorted(set(wavs) - listed):
            col.skip(wavs[stem], f"not listed in {list_file.name}")


# --------------------------------------------------------------------------------------------


def read_corpus(
    path: str | Path | None,
    *,
    manifest: str | Path | None = None,
    preset: str | None = None,
    columns: Mapping[str, str] | None = None,
    language: str | None = None,
    corpus: str | None = None,
    speaker_pattern: str | None = None,
    encoding: str = "utf-8",
    strict: bool = False,
    intervals: str | None = None,
) -> Corpus:
    """Read a corpus into utterances (see the module docstring for the layouts).

    Parameters
    ----------
    path : str or Path or None
        Corpus directory, or a CSV/TSV manifest file; ``"lam-demo"`` (or None with
        ``preset="lam-demo"``) is the bundled demo corpus (:func:`locate_corpus`).
    manifest : str or Path, optional
        A manifest file (relative to ``path`` if not absolute).
    preset : {"msp-podcast", "esd", "lam-demo", "timit"}, optional
        A published corpus layout.
    columns : mapping, optional
        Our field -> manifest column name, for manifests.
    language : {"en", "zh"}, optional
        Language of every utterance (overrides a language column); required when the corpus
        says nothing about it.
    corpus : str, optional
        Value of the ``corpus`` column (default: the preset, or the directory's name).
    speaker_pattern : str, optional
        Regular expression for speakers of flat directories (group ``speaker`` or group 1).
    encoding : str
        Encoding of transcripts and manifests without a byte-order mark.
    strict : bool
        Raise on the first unusable row instead of skipping it and listing it in the report.
    intervals : str, optional
        For folders of long recordings (fieldwork, podcasts): the name of the TextGrid tier, in
        ``<recording>.TextGrid`` beside each recording, whose non-empty intervals are the transcribed
        utterances (as MFA reads long files); ``"auto"`` takes the file's only interval tier. Each
        interval becomes an utterance ``<recording>_<k>`` with ``start``/``end`` on the recording's
        timeline.

    Returns
    -------
    Corpus
        Utterances in a stable order (file order), with ``.report`` (a :class:`CorpusReport`).

    Raises
    ------
    CorpusError
        The corpus or manifest cannot be read as asked (the message names file, line and fix).

    Examples
    --------
    >>> from phonalign.corpus import read_corpus
    >>> utts = read_corpus(None, preset="lam-demo")
    >>> len(utts), sorted({u.language for u in utts})
    (240, ['en', 'zh'])
    >>> utts[0].utt_id, utts[0].emotion, utts[0].split
    ('en_m1_s00_neu', 'Neutral', 'train')
    """
    _check_names(preset=preset, language=language)
    root, manifest, preset = _locate(path, manifest=manifest, preset=preset, intervals=intervals)
    col = _Collector(source=manifest or root, preset=preset, strict=strict)
    _read_layout(root, col, manifest=manifest, preset=preset, columns=columns, language=language, corpus=corpus,
                 speaker_pattern=speaker_pattern, encoding=encoding, intervals=intervals)
    return col.result()


def _check_names(*, preset: str | None, language: str | None) -> None:
    """Refuse a preset or language the reader does not know, naming the ones it does."""
    if preset is not None and preset not in PRESETS:
        raise CorpusError(f"unknown corpus preset {preset!r}", hint=f"choose one of {list(PRESETS)}")
    if language is not None and language not in LANGUAGES:
        raise CorpusError(f"unknown language {language!r}", hint=f"choose one of {list(LANGUAGES)}")


def _locate(path: str | Path | None, *, manifest: str | Path | None, preset: str | None,
            intervals: str | None) -> tuple[Path, Path | None, str | None]:
    """``(root, manifest, preset)`` of the corpus named by the user: the folder it lies in, its
    manifest file if any (a path to a file is its manifest; a relative ``manifest`` is under the
    folder), and the preset, given or implied (the demo corpus)."""
    if path is None:
        if preset != DEMO_CORPUS:
            raise CorpusError("no corpus path given", hint="give the corpus directory or manifest")
        path = demo_corpus_dir()
    root, implied = locate_corpus(path)
    preset = preset or implied
    if not root.exists():
        raise CorpusError("corpus path not found", path=root, hint="check the path")
    man: Path | None = None
    if manifest is not None:
        man = Path(manifest).expanduser()
        if not man.is_absolute() and root.is_dir():
            man = root / man
    elif root.is_file():
        man, root = root, root.parent
    if intervals is not None and (preset is not None or man is not None):
        raise CorpusError("intervals= reads corpus folders of long recordings, not manifests or presets",
                          hint="give the intervals as start and end columns of the manifest instead")
    return root, man, preset


def _read_layout(root: Path, col: _Collector, *, manifest: Path | None, preset: str | None,
                 columns: Mapping[str, str] | None, language: str | None, corpus: str | None,
                 speaker_pattern: str | None, encoding: str, intervals: str | None) -> None:
    """Read the utterances of the corpus' layout (a preset, a manifest or a folder) into ``col``."""
    corpus_name = corpus or preset or root.resolve().name
    if preset == "msp-podcast":
        _read_msp_podcast(root, col, manifest=manifest, encoding=encoding, corpus=corpus_name)
    elif preset == "esd":
        _read_esd(root, col, encoding=encoding, corpus=corpus_name, language=language)
    elif preset == "lam-demo":
        man = manifest or root / "manifest.csv"
        if not man.is_file():
            raise CorpusError("the demo corpus manifest is missing", path=man,
                              hint="reinstall the toolkit, or regenerate the demo corpus")
        _read_manifest(man, col, columns=columns, language=language, corpus=corpus or "lam-demo",
                       preset="lam-demo", encoding=encoding)
    elif preset == "timit":
        from .timit import read_timit_dir

        read_timit_dir(root, col, corpus=corpus or "timit")
    elif manifest is not None:
        _read_manifest(manifest, col, columns=columns, language=language, corpus=corpus_name,
                       preset=None, encoding=encoding)
    else:
        if not root.is_dir():
            raise CorpusError("expected a corpus directory or a .csv/.tsv manifest", path=root)
        _read_directory(root, col, language=language, corpus=corpus_name,
                        speaker_pattern=speaker_pattern, encoding=encoding, intervals=intervals)

def utterances_to_table(utterances: Sequence[Utterance]) -> pa.Table:
    """Utterances -> a pyarrow table with :data:`~phonalign.records.UTTERANCE_SCHEMA`."""
    names = UTTERANCE_SCHEMA.names
    cols = {n: [getattr(u, n) for u in utterances] for n in names}
    return pa.table(cols, schema=UTTERANCE_SCHEMA)


def table_to_utterances(table: pa.Table) -> list[Utterance]:
    """A table with the columns of :data:`~phonalign.records.UTTERANCE_SCHEMA` -> utterances
    (``start``/``end`` may be absent: tables written before intervals existed)."""
    for name in ("start", "end"):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float64()))
    missing = [n for n in UTTERANCE_SCHEMA.names if n not in table.column_names]
    if missing:
        raise CorpusError(f"utterance table lacks columns {missing}",
                          hint="it must have the columns of phonalign.records.UTTERANCE_SCHEMA")
    cols = {n: table.column(n).to_pylist() for n in UTTERANCE_SCHEMA.names}
    return [Utterance(**{n: cols[n][i] for n in UTTERANCE_SCHEMA.names}) for i in range(table.num_rows)]
