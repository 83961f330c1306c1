"""Alignment accuracy: compare hypothesis TextGrids with reference TextGrids (``lam align-eval``).

Two measures, computed per utterance and pooled per language and per phone class:

* **Phone-sequence agreement.** Both phone tiers are mapped to one common phone set and aligned
  as sequences (:class:`difflib.SequenceMatcher`, no junk heuristic). ``agreement`` is the share
  of reference phones matched by an identical hypothesis phone; ``per`` is the phone error rate
  (Levenshtein distance / number of reference phones).
* **Boundary error.** For a reference phone matched to a hypothesis phone whose predecessors are
  matched to each other too (or which are both the first phone), the boundary between the two is
  compared: the onset of the phone, ``hyp - ref`` seconds. The end of the last phone counts when
  the last phones match. Reported: mean and median absolute error and the share within 10, 20, 25
  and 50 ms. The per-class table files a boundary under the unit class of the phone that starts there.
* **Utterance edges.** The first speech boundary (onset of the first phone, when the first phones
  match) and the last (end of the last phone, when the last phones match) are the utterance's
  *edges*; every other scored boundary is *interior*. ``edges`` and ``interior`` pool them apart,
  since aligners place speech onset and offset against silence of unknown length.

Common phone set (``common``):

* ``"arpabet"``: both sides through :func:`phonalign.phonesets.to_arpabet` (English: ``arpabet``,
  ``espeak_en``, ``mfa_english_ipa``), with ``expand=True`` so that an espeak ``A@`` becomes ``AA R``
  as pocketsphinx and MFA's ARPAbet model write it; the boundary *inside* such an expanded phone
  is unknown and never scored. A phone with no ARPAbet counterpart (espeak ``;``) stays in the
  sequence as a token that matches nothing.
* ``"timit"``: ``arpabet`` after folding TIMIT's labels (:func:`phonalign.timit.fold_timit`: closures
  merged into their stop, ``AX IX UX AXR`` -> ``AH IH UW ER``, ``AX-H`` -> ``AH``, ``HV`` -> ``HH``,
  ``h# pau epi`` pauses) on both sides; ``auto`` chooses it when either side is a TIMIT ``.PHN``.
* ``"label"``: the labels as written (both sides in the same phone set, e.g. Mandarin espeak vs
  espeak).
* ``"class"``: the unit classes (``A E @ i O u consonant``), the coarsest common ground between
  any two phone sets.
* ``"auto"`` (default): ``arpabet`` where both sides are English phone sets with an ARPAbet
  mapping, else ``label`` when both use the same phone set, else ``class``.

Silences (empty labels, ``sil``, ``sp`` ...) are left out of both sequences.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import LamError, PhonalignError, UtteranceFailure
from .records import Alignment

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

#: Thresholds of the "share within" columns, seconds (25 ms is the figure MFA publishes).
WITHIN = (0.010, 0.020, 0.025, 0.050)
COMMON_SETS = ("auto", "arpabet", "timit", "label", "class")
_ARPABET_SETS = ("arpabet", "espeak_en", "mfa_english_ipa")
_ZH_SETS = ("espeak_cmn", "mfa_mandarin_ipa", "pinyin")


class AlignEvalError(PhonalignError):
    """Two sets of TextGrids cannot be compared as asked."""


@dataclass(frozen=True)
class Token:
    """One phone of a sequence in the common phone set.

    ``start``/``end`` are None where the boundary is unknown (inside an expanded phone).
    """

    token: str
    start: float | None
    end: float | None
    label: str
    unit_class: str


@dataclass(frozen=True)
class UttResult:
    """Comparison of one utterance."""

    utt_id: str
    language: str
    common: str
    n_ref: int
    n_hyp: int
    n_match: int
    edits: int
    errors: np.ndarray = field(repr=False)  # (n_boundaries,) float64, hyp - ref, seconds
    classes: list[str] = field(repr=False)  # (n_boundaries,) unit class of the phone starting there
    edges: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))  # (n_boundaries,) bool

    @property
    def agreement(self) -> float:
        """Share of reference phones matched by an identical hypothesis phone (0..1)."""
        return self.n_match / self.n_ref if self.n_ref else float("nan")


def _phone_set_of(alignment: Alignment, phone_set: str | None) -> str:
    from .phonesets import detect_phone_set

    if phone_set:
        return phone_set
    return detect_phone_set([p.label for p in alignment.phones])


def tokens(alignment: Alignment, *, phone_set: str, common: str) -> list[Token]:
    """The speech phones of ``alignment`` as tokens of the ``common`` phone set.

    Parameters
    ----------
    alignment : Alignment
    phone_set : str
        Phone set of its labels.
    common : {"arpabet", "label", "class"}
    """
    from .phonesets import classify, to_arpabet

    labels = [p.label for p in alignment.phones]
    infos = classify(labels, phone_set=phone_set)
    arpa = to_arpabet(labels, phone_set=phone_set, expand=True) if common == "arpabet" else None
    out: list[Token] = []
    for k, (iv, info) in enumerate(zip(alignment.phones, infos, strict=True)):
        if info.unit_class == "silence":
            continue
        if arpa is not None:  # common == "arpabet"
            mapped = arpa[k]
            parts = mapped.split() if mapped else [f"<{iv.label}>"]
        elif common == "class":
            parts = [info.unit_class]
        else:
            parts = [info.phone]
        n = len(parts)
        for j, part in enumerate(parts):
            out.append(Token(part, iv.start if j == 0 else None, iv.end if j == n - 1 else None,
                             iv.label, info.unit_class))
    return out


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (one row of the table at a time)."""
    if not a:
        return len(b)
    prev = np.arange(len(b) + 1)
    b_arr = np.array(b, dtype=object)
    for i, tok in enumerate(a, 1):
        sub = prev[:-1] + (b_arr != tok)
        cur = np.empty_like(prev)
        cur[0] = i
        # insertion needs the running minimum along the row; deletion and substitution do not
        cur[1:] = np.minimum(prev[1:] + 1, sub)
        cur = np.minimum.accumulate(cur - np.arange(len(cur))) + np.arange(len(cur))
        prev = cur
    return int(prev[-1])


def compare_alignments(
    hyp: Alignment,
    ref: Alignment,
    *,
    utt_id: str = "",
    language: str = "unknown",
    hyp_phone_set: str | None = None,
    ref_phone_set: str | None = None,
    common: str = "auto",
) -> UttResult:
    """Compare one hypothesis alignment with its reference (see the module docstring)."""
    if common not in COMMON_SETS:
        raise AlignEvalError(f"unknown common phone set {common!r}", hint=f"use one of {', '.join(COMMON_SETS)}")
    timit = common == "timit" or (common == "auto" and "timit" in (hyp.extra.get("format"),
                                                                    ref.extra.get("format")))
    hset = "arpabet" if hyp.extra.get("format") == "timit" else _phone_set_of(hyp, hyp_phone_set)
    rset = "arpabet" if ref.extra.get("format") == "timit" else _phone_set_of(ref, ref_phone_set)
    if timit:
        # TIMIT's labels are ARPAbet with extras: fold every ARPAbet side (the other sets map to
        # CMUdict's ARPAbet through the phone table already)
        from .timit import fold_timit

        hyp = fold_timit(hyp) if hset == "arpabet" else hyp
        ref = fold_timit(ref) if rset == "arpabet" else ref
        if not (hset in _ARPABET_SETS and rset in _ARPABET_SETS):
            raise AlignEvalError(f"{utt_id}: TIMIT folding needs English phone sets on both sides, not "
                                 f"{hset!r} and {rset!r}", utt_id=utt_id or None, hint="use --common class")
        common = "arpabet"
    if common == "auto":
        if hset in _ARPABET_SETS and rset in _ARPABET_SETS:
            common = "arpabet"
        elif hset == rset:
            common = "label"
        else:
            common = "class"
    elif common == "arpabet" and not (hset in _ARPABET_SETS and rset in _ARPABET_SETS):
        raise AlignEvalError(f"{utt_id}: phone sets {hset!r} and {rset!r} cannot both be mapped to ARPAbet",
                             utt_id=utt_id or None, hint="use --common class (or label for the same phone set)")
    h = tokens(hyp, phone_set=hset, common=common)
    r = tokens(ref, phone_set=rset, common=common)
    ht, rt = [t.token for t in h], [t.token for t in r]
    matcher = difflib.SequenceMatcher(None, rt, ht, autojunk=False)
    pairs: dict[int, int] = {}
    for a, b, n in matcher.get_matching_blocks():
        for k in range(n):
            pairs[a + k] = b + k
    errors, classes, edges = [], [], []
    for i, j in pairs.items():
        first = i == 0 and j == 0
        chained = i > 0 and pairs.get(i - 1) == j - 1
        r_start, h_start = r[i].start, h[j].start
        if (first or chained) and r_start is not None and h_start is not None:
            errors.append(h_start - r_start)
            classes.append(r[i].unit_class)
            edges.append(first)  # speech onset
    r_end, h_end = (r[-1].end, h[-1].end) if r and h else (None, None)
    if pairs.get(len(r) - 1) == len(h) - 1 and r_end is not None and h_end is not None:
        errors.append(h_end - r_end)
        classes.append("silence")  # the boundary into the final pause
        edges.append(True)  # speech offset
    if timit:
        common = "timit"
    return UttResult(utt_id=utt_id, language=language, common=common, n_ref=len(r), n_hyp=len(h),
                     n_match=len(pairs), edits=edit_distance(rt, ht),
                     errors=np.asarray(errors, dtype=np.float64), classes=classes,
                     edges=np.asarray(edges, dtype=bool))


@dataclass(frozen=True)
class BoundaryStats:
    """Pooled boundary errors and phone agreement of a set of utterances (or of boundaries only:
    then the phone counts are 0 and ``agreement``/``per`` None). Times in milliseconds; ``None``
    where there is nothing to pool."""

    utterances: int
    ref_phones: int
    matched_phones: int
    agreement: float | None  # matched / reference phones
    per: float | None  # phone error rate: edits / reference phones
    boundaries: int
    mean_abs_ms: float | None
    median_abs_ms: float | None
    mean_signed_ms: float | None  # hyp - ref
    within_10ms: float | None  # share of boundaries within 10 ms (the thresholds of WITHIN)
    within_20ms: float | None
    within_25ms: float | None
    within_50ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """The statistics as the JSON report writes them."""
        return asdict(self)


def summarize(errors: np.ndarray, *, n_ref: int = 0, n_match: int = 0, edits: int = 0,
              n_utts: int = 0) -> BoundaryStats:
    """Pooled statistics of boundary errors (``(n,)`` seconds, hyp - ref) and phone agreement counts."""
    abs_err = np.abs(np.asarray(errors, dtype=np.float64))
    some = bool(abs_err.size)
    w10, w20, w25, w50 = (float(np.mean(abs_err <= w)) if some else None for w in WITHIN)
    return BoundaryStats(
        utterances=n_utts,
        ref_phones=n_ref,
        matched_phones=n_match,
        agreement=(n_match / n_ref) if n_ref else None,
        per=(edits / n_ref) if n_ref else None,
        boundaries=int(abs_err.size),
        mean_abs_ms=float(abs_err.mean() * 1000) if some else None,
        median_abs_ms=float(np.median(abs_err) * 1000) if some else None,
        mean_signed_ms=float(np.mean(errors) * 1000) if some else None,
        within_10ms=w10, within_20ms=w20, within_25ms=w25, within_50ms=w50,
    )


@dataclass(frozen=True)
class UttSummary:
    """One utterance's line of the report."""

    utt_id: str
    language: str
    common: str  # the common phone set it was compared in
    ref_phones: int
    hyp_phones: int
    agreement: float  # NaN without reference phones
    boundaries: int
    mean_abs_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """The line as the JSON report writes it."""
        return asdict(self)


@dataclass(frozen=True)
class AlignEvalReport:
    """What :func:`evaluate_dirs` found (``lam align-eval``; :meth:`to_dict` is its ``--json``)."""

    hyp: str
    ref: str
    common_phone_set: tuple[str, ...]  # the common phone sets used (one per kind of utterance pair)
    edges: BoundaryStats  # first and last speech boundary of each utterance
    interior: BoundaryStats  # every other scored boundary
    within_thresholds_ms: tuple[int, ...]
    overall: BoundaryStats
    by_language: Mapping[str, BoundaryStats]
    by_class: Mapping[str, Mapping[str, BoundaryStats]]  # language -> class of the phone starting there
    utterances: tuple[UttSummary, ...]
    failed: tuple[UtteranceFailure, ...]  # utterances whose TextGrids could not be compared
    missing_hyp: tuple[str, ...]  # utterances with a reference and no hypothesis
    missing_ref: tuple[str, ...]

    @property
    def edge_to_interior(self) -> float | None:
        """Mean absolute error at utterance edges over the interior's (None without both)."""
        e, i = self.edges.mean_abs_ms, self.interior.mean_abs_ms
        return e / i if e is not None and i else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "hyp": self.hyp,
            "ref": self.ref,
            "common_phone_set": list(self.common_phone_set),
            "edges": self.edges.to_dict(),
            "interior": self.interior.to_dict(),
            "within_thresholds_ms": list(self.within_thresholds_ms),
            "overall": self.overall.to_dict(),
            "by_language": {lang: st.to_dict() for lang, st in self.by_language.items()},
            "by_class": {lang: {c: st.to_dict() for c, st in classes.items()}
                         for lang, classes in self.by_class.items()},
            "utterances": [u.to_dict() for u in self.utterances],
            "failed": [{"utt_id": f.utt_id, **f.to_dict()} for f in self.failed],
            "missing_hyp": list(self.missing_hyp),
            "missing_ref": list(self.missing_ref),
        }


def _collect(dir_: Path, what: str) -> dict[str, Path]:
    if not dir_.is_dir():
        raise AlignEvalError(f"{what} folder not found", path=dir_, hint="pass a folder of <utt_id>.TextGrid files")
    out: dict[str, Path] = {}
    for path in sorted(dir_.rglob("*")):
        if path.suffix.lower() not in (".textgrid", ".phn") or not path.is_file():
            continue
        if path.stem in out:
            raise AlignEvalError(f"two {what} TextGrids for utterance {path.stem!r}: {out[path.stem]} and {path}",
                                 path=path, hint="keep one TextGrid per utterance id")
        out[path.stem] = path
    return out


def read_languages(manifest: str | Path) -> dict[str, str]:
    """utt_id -> language from a CSV/TSV manifest or an ``utterances.parquet``."""
    path = Path(manifest)
    if not path.is_file():
        raise AlignEvalError("manifest not found", path=path,
                             hint="pass a CSV/TSV with utt_id and language columns, or utterances.parquet")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["utt_id", "language"])
        return dict(zip(table.column("utt_id").to_pylist(), table.column("language").to_pylist(), strict=True))
    with open(path, newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        reader = csv.DictReader(fh, dialect=csv.Sniffer().sniff(sample, delimiters=",\t;"))
        if not reader.fieldnames or "utt_id" not in reader.fieldnames or "language" not in reader.fieldnames:
            raise AlignEvalError("manifest needs the columns utt_id and language", path=path, line=1,
                                 hint=f"its columns are: {', '.join(reader.fieldnames or [])}")
        return {row["utt_id"]: row["language"] for row in reader}


def _language_from_set(phone_set: str) -> str:
    return "zh" if phone_set in _ZH_SETS else "en"


def evaluate_dirs(
    hyp_dir: str | Path,
    ref_dir: str | Path,
    *,
    languages: Mapping[str, str] | None = None,
    common: str = "auto",
    hyp_phone_set: str | None = None,
    ref_phone_set: str | None = None,
    utt_ids: Iterable[str] | None = None,
) -> AlignEvalReport:
    """Compare every utterance present in both folders.

    Parameters
    ----------
    hyp_dir, ref_dir : folders of ``<utt_id>.TextGrid`` or TIMIT ``<utt_id>.PHN`` (searched
        recursively; MFA's speaker sub-folders are fine).
    languages : utt_id -> language; default: from the reference's phone set (Mandarin sets ->
        ``zh``, others ``en``).
    common : see the module docstring.
    hyp_phone_set, ref_phone_set : phone sets, default detected per file.
    utt_ids : restrict to these utterances.

    Returns
    -------
    AlignEvalReport
        ``overall``, ``by_language`` and ``by_class`` (language -> class -> stats), ``edges`` and
        ``interior``, ``utterances`` (per-utterance agreement and errors), ``missing_hyp``/
        ``missing_ref`` and ``failed`` (utterances whose TextGrid could not be read, with the
        reason); :meth:`AlignEvalReport.to_dict` is the JSON report.
    """
    from .textgrid_io import read_alignment

    hyp = _collect(Path(hyp_dir), "hypothesis")
    ref = _collect(Path(ref_dir), "reference")
    wanted = set(utt_ids) if utt_ids is not None else None
    ids = sorted(set(hyp) & set(ref))
    if wanted is not None:
        ids = [u for u in ids if u in wanted]
    if not ids:
        raise AlignEvalError("no utterance has a TextGrid in both folders", path=hyp_dir,
                             hint=f"hypothesis has {len(hyp)} TextGrids, reference {len(ref)}; "
                             "file names must be <utt_id>.TextGrid on both sides")
    results: list[UttResult] = []
    failed: list[UtteranceFailure] = []
    for utt in ids:
        try:
            h = read_alignment(hyp[utt])
            r = read_alignment(ref[utt])
            lang = (languages or {}).get(utt)
            if lang is None:
                lang = "en" if r.extra.get("format") == "timit" else _language_from_set(_phone_set_of(r, ref_phone_set))
            results.append(compare_alignments(h, r, utt_id=utt, language=lang, hyp_phone_set=hyp_phone_set,
                                              ref_phone_set=ref_phone_set, common=common))
        except LamError as err:
            failed.append(UtteranceFailure.from_error(utt, err))
    scope = (lambda ids_: ids_ & wanted) if wanted is not None else (lambda ids_: ids_)
    return _report(results, failed, hyp_only=sorted(scope(set(hyp) - set(ref))),
                   ref_only=sorted(scope(set(ref) - set(hyp))),
                   hyp_dir=str(hyp_dir), ref_dir=str(ref_dir))


def _pool(results: Sequence[UttResult]) -> BoundaryStats:
    errs = np.concatenate([r.errors for r in results]) if results else np.zeros(0)
    return summarize(errs, n_ref=sum(r.n_ref for r in results), n_match=sum(r.n_match for r in results),
                     edits=sum(r.edits for r in results), n_utts=len(results))


def _report(results: list[UttResult], failed: list[UtteranceFailure], *, hyp_only: list[str], ref_only: list[str],
            hyp_dir: str, ref_dir: str) -> AlignEvalReport:
    by_lang: dict[str, list[UttResult]] = {}
    for r in results:
        by_lang.setdefault(r.language, []).append(r)
    by_class: dict[str, dict[str, BoundaryStats]] = {}
    for lang, rs in sorted(by_lang.items()):
        errs = np.concatenate([r.errors for r in rs]) if rs else np.zeros(0)
        classes = np.array([c for r in rs for c in r.classes], dtype=object)
        by_class[lang] = {str(c): summarize(errs[classes == c]) for c in sorted(set(classes.tolist()))}
    all_errs = np.concatenate([r.errors for r in results]) if results else np.zeros(0)
    all_edges = np.concatenate([r.edges for r in results]) if results else np.zeros(0, bool)
    return AlignEvalReport(
        hyp=hyp_dir,
        ref=ref_dir,
        common_phone_set=tuple(sorted({r.common for r in results})),
        # first and last speech boundaries of each utterance against all the others
        edges=summarize(all_errs[all_edges]),
        interior=summarize(all_errs[~all_edges]),
        within_thresholds_ms=tuple(int(round(w * 1000)) for w in WITHIN),
        overall=_pool(results),
        by_language={lang: _pool(rs) for lang, rs in sorted(by_lang.items())},
        by_class=by_class,
        utterances=tuple(
            UttSummary(utt_id=r.utt_id, language=r.language, common=r.common, ref_phones=r.n_ref,
                       hyp_phones=r.n_hyp, agreement=r.agreement, boundaries=int(r.errors.size),
                       mean_abs_ms=float(np.abs(r.errors).mean() * 1000) if r.errors.size else None)
            for r in results),
        failed=tuple(failed),
        missing_hyp=tuple(ref_only),
        missing_ref=tuple(hyp_only),
    )


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:.1f}"


_COLUMNS = ["utts", "phones", "agree", "PER", "bounds", "mean", "median", "<=10", "<=20", "<=25", "<=50"]


def _row(stats: BoundaryStats, utts: bool = True) -> list[str]:
    """A table row; without ``utts``, only the boundary columns (from "bounds" on)."""
    head = [str(stats.utterances), str(stats.ref_phones), _fmt(stats.agreement, True), _fmt(stats.per, True)]
    return (head if utts else []) + [
        str(stats.boundaries), _fmt(stats.mean_abs_ms), _fmt(stats.median_abs_ms), _fmt(stats.within_10ms, True),
        _fmt(stats.within_20ms, True), _fmt(stats.within_25ms, True), _fmt(stats.within_50ms, True)]


def _table(title: str, first: str, columns: Sequence[str]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    table.add_column(first)
    for c in columns:
        table.add_column(c, justify="right")
    return table


def print_report(report: AlignEvalReport, *, console: Console) -> None:
    """The report as rich tables on the caller's ``console`` (``lam align-eval`` prints to stdout):
    per language, then per language and phone class. The library itself prints nothing."""
    table = _table(f"Alignment accuracy (common phone set: {', '.join(report.common_phone_set)}; "
                   "boundary errors in ms)", "lang", _COLUMNS)
    for lang, stats in report.by_language.items():
        table.add_row(lang, *_row(stats))
    table.add_row("all", *_row(report.overall), style="bold")
    console.print(table)
    if report.edges.boundaries:
        t = _table("utterance edges (first and last speech boundary) vs interior boundaries", "boundaries",
                   [*_COLUMNS[4:], "signed mean"])
        for name, st in (("edges", report.edges), ("interior", report.interior)):
            t.add_row(name, *_row(st, utts=False), _fmt(st.mean_signed_ms))
        console.print(t)
        if report.edge_to_interior is not None:
            console.print(f"edge / interior mean absolute error: {report.edge_to_interior:.2f}")
    for lang, classes in report.by_class.items():
        t = _table(f"{lang}: boundaries by class of the phone that starts there", "class", _COLUMNS[4:])
        for cls, stats in classes.items():
            t.add_row(cls, *_row(stats, utts=False))
        console.print(t)
    if report.failed:
        console.print(f"[yellow]{len(report.failed)} utterance(s) could not be compared:[/yellow]")
        for f in report.failed[:10]:
            console.print(f"  {f.utt_id}: {f.message}")
    for missing, what in ((report.missing_hyp, "no hypothesis"), (report.missing_ref, "no reference")):
        if missing:
            console.print(f"{len(missing)} utterance(s) with {what}: {', '.join(missing[:8])}"
                          + (" ..." if len(missing) > 8 else ""))
