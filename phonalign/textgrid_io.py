"""Reading and writing Praat TextGrids: the one place that knows the file format.

Reading goes through praatio's parser (long and short text formats, multi-line labels, ``-0``,
doubled quotes), with three things added around it:

* **Encoding.** The bytes are decoded here, from the byte-order mark: UTF-16 (BE or LE) and UTF-8
  with a BOM, otherwise strict UTF-8. A file in any other encoding is an error that names the line
  of the first undecodable byte, instead of a mis-decoded label.
* **One fallback, for one case.** praatio writes times such as ``1e-05`` in the long format and
  then cannot read them back. When praatio fails on a long-format file that contains such a time,
  the file is read with the ``textgrid`` package instead (with full precision); any other failure
  is reported, never retried with a different reader.
* **Errors.** Every parse failure becomes a :class:`~phonalign.errors.TextGridError` with the path,
  the line where it can be located, and a hint.

praatio is called at the level of :func:`praatio.utilities.textgrid_io.parseTextgridStr` (the
parser inside ``praatio.textgrid.openTextgrid(..., includeEmptyIntervals=True)``), not through
``openTextgrid`` itself: we need the decoded text for error locations anyway, and building
praatio's tier objects only to convert them to ours again doubled the cost of importing large
alignment directories. The checks praatio does on those objects (ordering, limits) are done here
in :func:`validate_alignment`, and more strictly (praatio only warns).

Writing produces the long text format in UTF-8 (what Praat writes with "Save as text file"), with
tiers ``words``, ``phones`` and optionally ``vowel_class``; times are written at full double
precision and never in scientific notation, so praatio, the ``textgrid`` package and Praat all read
them back exactly.
"""

from __future__ import annotations

import json
import math
import re
import struct
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import TextGridError
from .fsutil import atomic_path
from .records import TIME_TOL, VOWEL_CLASSES, Alignment, Interval

__all__ = [
    "read_alignment",
    "write_alignment",
    "validate_alignment",
    "decode_textgrid_bytes",
    "read_tiers",
    "WORD_TIER_NAMES",
    "PHONE_TIER_NAMES",
]

#: Tier names recognised as the word tier (compared case-insensitively), in order of preference.
WORD_TIER_NAMES: tuple[str, ...] = ("words", "word", "orthography", "ortho")
#: Tier names recognised as the phone tier (compared case-insensitively), in order of preference.
PHONE_TIER_NAMES: tuple[str, ...] = ("phones", "phone", "phonemes", "phoneme", "segments", "segment")

#: MFA names the tiers of a multi-speaker file "<speaker> - words" and "<speaker> - phones".
_MFA_TIER = re.compile(r"^(?P<speaker>.+) - (?P<kind>words|phones)$")

#: A long-format time written in scientific notation (praatio's own output for tiny times).
# a negative time on a line of its own (short format) or as a long-format value: praatio reads
# "xmin = -0.05" as 0.05, so they are found in the text itself (a rare match: a fast search)
_NEGATIVE_TIME = re.compile(r"^\s*(?:(?:xmin|xmax|number|time)\s*=\s*)?(-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$",
                            re.M)
_NEGATIVE_HINT = re.compile(r"[=\n][ \t]*-[\d.]")
_SCI_TIME = re.compile(r"^\s*(?:xmin|xmax|number)\s*=\s*[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+\s*$", re.M)

_DUPLICATE_MODES = ("error", "rename")


# --------------------------------------------------------------------------------------------
# decoding


def decode_textgrid_bytes(data: bytes, *, path: str | Path | None = None) -> tuple[str, str]:
    """Decode the bytes of a TextGrid file as Praat would.

    Parameters
    ----------
    data : bytes
        The whole file.
    path : str or Path, optional
        For error messages.

    Returns
    -------
    text : str
        The decoded text, without a byte-order mark.
    encoding : str
        ``"utf-16"``, ``"utf-8-sig"`` or ``"utf-8"``.

    Raises
    ------
    TextGridError
        If the file has no BOM and is not valid UTF-8 (the line of the first bad byte is given).
    """
    if data[:2] in (b"\xfe\xff", b"\xff\xfe"):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as err:
            raise TextGridError(
                f"invalid UTF-16 ({err.reason})",
                path=path,
                line=data[: err.start].decode("utf-16", errors="replace").count("\n") + 1,
                hint="re-save the file from Praat (Save as text file)",
            ) from None
    if data[:3] == b"\xef\xbb\xbf":
        encoding, body = "utf-8-sig", data[3:]
    else:
        encoding, body = "utf-8", data
    try:
        return body.decode("utf-8"), encoding
    except UnicodeDecodeError as err:
        line = body.count(b"\n", 0, err.start) + 1
        looks_utf16 = body[:200].count(b"\x00") > 20
        hint = (
            "the file looks like UTF-16 without a byte-order mark; re-save it from Praat, "
            "or convert it: iconv -f UTF-16LE -t UTF-8"
            if looks_utf16
            else "TextGrids must be UTF-8 or UTF-16 with a BOM; convert it, e.g. "
            "iconv -f LATIN1 -t UTF-8 (use the encoding it was written in)"
        )
        raise TextGridError(
            f"not valid UTF-8 (byte 0x{body[err.start]:02x} at byte offset {err.start})",
            path=path, line=line, hint=hint,
        ) from None


# --------------------------------------------------------------------------------------------
# locating a parse error: only used after a reader failed, to tell the user where to look


_TOKEN = re.compile(r'"(?:[^"]|"")*"|[^\s"]+|"')


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _locate_parse_error(text: str) -> tuple[int | None, str | None]:
    """Best-effort (line, description) of the first thing that breaks the TextGrid grammar.

    Walks the file as Praat's text reader does: a sequence of numbers and quoted strings; in the
    long format everything else (``xmin =``, ``item [1]:``) is decoration. Returns ``(None, None)``
    when nothing is found, e.g. when the grammar holds but a reader still refused the file.
    """
    tokens: list[tuple[str, int]] = []
    line = 1
    pos = 0
    for m in _TOKEN.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        tokens.append((m.group(0), line))
    long_format = "item [" in text or "item[" in text
    if long_format:
        # keep only values: the token after "=" (numbers, strings, <exists>) and strings
        values: list[tuple[str, int]] = []
        for i, (tok, ln) in enumerate(tokens):
            if tok.startswith('"'):
                values.append((tok, ln))
            elif i > 0 and tokens[i - 1][0] == "=":
                values.append((tok, ln))
            elif tok in ("<exists>", "<absent>"):
                values.append((tok, ln))
        tokens = values
    else:
        # the short format's header decoration (File type = ..., Object class = ...) holds no values
        quoted = [i for i, (tok, _) in enumerate(tokens[:12]) if tok.startswith('"')][:2]
        if len(quoted) == 2:
            tokens = [tokens[quoted[0]]] + tokens[quoted[1]:]
    it = iter(tokens)

    def take(kind: str) -> tuple[str, int]:
        try:
            tok, ln = next(it)
        except StopIteration:
            raise _Stop(tokens[-1][1] if tokens else 1, f"file ends where {kind} was expected") from None
        if kind == "number" and not _is_number(tok):
            raise _Stop(ln, f"expected a number, found {tok[:40]!r}")
        if kind == "string" and not (tok.startswith('"') and tok.endswith('"') and len(tok) >= 2):
            raise _Stop(ln, f"expected a quoted string, found {tok[:40]!r}")
        return tok, ln

    try:
        take("string")  # "ooTextFile"
        take("string")  # "TextGrid"
        take("number")
        take("number")
        tok, ln = take("flag")
        if tok != "<exists>":
            return None, None
        n_tiers, ln = take("number")
        for _ in range(int(float(n_tiers))):
            cls, ln = take("string")
            take("string")
            take("number")
            take("number")
            n, ln = take("number")
            per = 3 if cls == '"IntervalTier"' else 2
            for _ in range(int(float(n))):
                take("number")
                if per == 3:
                    take("number")
                take("string")
        extra = next(it, None)
        if extra is not None:
            return extra[1], f"unexpected {extra[0][:40]!r} after the last tier"
    except _Stop as stop:
        return stop.line, stop.what
    return None, None


class _Stop(Exception):
    def __init__(self, line: int, what: str) -> None:
        self.line, self.what = line, what


# --------------------------------------------------------------------------------------------
# reading


def _parse_with_praatio(text: str) -> list[dict]:
    """praatio's parser -> ``[{grid_xmin, grid_xmax}, tier dicts {class, name, xmin, xmax, entries}]``.

    Entry times stay the strings praatio found (``"-0"`` included); :func:`_float_entries`
    converts the tiers that are used, so unused tiers (pitch points, notes) cost nothing more.
    """
    from praatio.utilities import textgrid_io as praatio_io

    grid = praatio_io.parseTextgridStr(text, includeEmptyIntervals=True)
    return [{"grid_xmin": float(grid["xmin"]) + 0.0, "grid_xmax": float(grid["xmax"]) + 0.0}, *grid["tiers"]]


def _float_entries(tier: dict) -> list[tuple]:
    """A tier's entries with float times (``+ 0.0`` turns ``-0`` into ``0.0``); ValueError if one
    is not a number."""
    if tier["class"] == "IntervalTier":
        return [(float(s) + 0.0, float(e) + 0.0, lab) for s, e, lab in tier["entries"]]
    return [(float(t) + 0.0, lab) for t, lab in tier["entries"]]


def _parse_with_textgrid_package(path: Path, encoding: str) -> list[dict]:
    """The ``textgrid`` package's reader, at full precision, in the same shape as praatio's."""
    import textgrid as tgpkg

    grid = tgpkg.TextGrid(strict=False)
    # round_digits=17: the package rounds to 5 decimals by default, losing sample precision
    grid.read(str(path), round_digits=17, encoding="utf-16" if encoding == "utf-16" else "utf-8-sig")
    tiers: list[dict] = [{"grid_xmin": float(grid.minTime) + 0.0, "grid_xmax": float(grid.maxTime) + 0.0}]
    for tier in grid.tiers:
        entries: list[tuple[Any, ...]]
        if isinstance(tier, tgpkg.IntervalTier):
            entries = [(float(iv.minTime) + 0.0, float(iv.maxTime) + 0.0, (iv.mark or "").strip())
                       for iv in tier.intervals]
            cls = "IntervalTier"
        else:
            entries = [(float(p.time) + 0.0, (p.mark or "").strip()) for p in tier.points]
            cls = "TextTier"
        tiers.append({"class": cls, "name": tier.name or "", "xmin": float(tier.minTime) + 0.0,
                      "xmax": float(tier.maxTime if tier.maxTime is not None else grid.maxTime) + 0.0,
                      "entries": entries})
    return tiers


def read_tiers(path: str | Path, *, duplicate_tiers: str = "error") -> tuple[float, float, list[dict], dict]:
    """Parse a TextGrid file into its limits and tiers.

    Parameters
    ----------
    path : str or Path
        A ``.TextGrid`` file (long or short text format).
    duplicate_tiers : {"error", "rename"}
        What to do when two tiers share a name: raise, or rename the later ones ``name_2``,
        ``name_3``, ... (as ``praatio.textgrid.openTextgrid(duplicateNamesMode="rename")`` does).

    Returns
    -------
    xmin, xmax : float
        The grid's limits, seconds.
    tiers : list of dict
        ``{"class": "IntervalTier"|"TextTier", "name", "xmin", "xmax", "entries"}`` with entries
        ``(start, end, label)`` or ``(time, label)``, seconds.
    info : dict
        ``{"encoding": ..., "reader": "praatio"|"textgrid"}``.
    """
    path = Path(path)
    text, grid_xmin, grid_xmax, tiers, info = _read_raw(path, duplicate_tiers)
    try:
        for tier in tiers:
            tier["entries"] = _float_entries(tier)
    except ValueError as err:
        raise _parse_error(path, text, err) from None
    return grid_xmin, grid_xmax, tiers, info


def _read_raw(path: Path, duplicate_tiers: str) -> tuple[str, float, float, list[dict], dict]:
    """Decode and parse; tiers with their entries as parsed (see :func:`_parse_with_praatio`)."""
    if duplicate_tiers not in _DUPLICATE_MODES:
        raise ValueError(f"duplicate_tiers must be one of {_DUPLICATE_MODES}, not {duplicate_tiers!r}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextGridError("TextGrid file not found", path=path,
                            hint="check the path, or pass the folder of TextGrids (--textgrids DIR)") from None
    except OSError as err:
        raise TextGridError(f"cannot read the file ({err.strerror})", path=path) from None
    if not data or data.isspace():
        raise TextGridError("the TextGrid file is empty", path=path,
                            hint="re-export it from Praat or the aligner")
    praat_format = None
    if data.startswith(b"ooBinaryFile"):
        praat_format = "binary"
        text, encoding = _via_parselmouth(path, praat_format)
    else:
        text, encoding = decode_textgrid_bytes(data, path=path)
        if text.lstrip().startswith('"Praat chronological TextGrid text file"'):
            praat_format = "chronological"
            text, _ = _via_parselmouth(path, praat_format)
    if "TextGrid" not in text[:200]:
        raise TextGridError("not a TextGrid: the header 'Object class = \"TextGrid\"' is missing",
                            path=path, line=1,
                            hint="open it in Praat to check that it is a TextGrid (text, binary and "
                            "chronological TextGrids are read)")
    reader = "praatio" if praat_format is None else f"parselmouth ({praat_format}) + praatio"
    try:
        parsed = _parse_with_praatio(text)
    except Exception as err:  # praatio raises ParsingError, ValueError, IndexError, ...: all "bad file"
        # praatio cannot read times like 1e-05 in the long format (which it writes itself):
        # exactly that case goes to the textgrid package; anything else is reported.
        long_format = "item [" in text or "item[" in text
        if long_format and _SCI_TIME.search(text):
            try:
                parsed = _parse_with_textgrid_package(path, encoding)
                reader = "textgrid"
            except Exception as err2:  # same: the package raises bare ValueError/TypeError/...
                raise _parse_error(path, text, err2) from None
        else:
            raise _parse_error(path, text, err) from None
    limits, tiers = parsed[0], parsed[1:]
    _check_declared_counts(path, text, tiers)
    _check_duplicates(path, tiers, duplicate_tiers)
    return text, limits["grid_xmin"], limits["grid_xmax"], tiers, {"encoding": encoding, "reader": reader}


def _via_parselmouth(path: Path, fmt: str) -> tuple[str, str]:
    """Praat's binary or chronological TextGrid, read by Praat itself (praat-parselmouth) and
    handed back as the long text format."""
    try:
        import parselmouth
    except ImportError:
        raise TextGridError(f"this is a Praat {fmt} TextGrid; reading it needs praat-parselmouth", path=path,
                            hint="pip install praat-parselmouth (a toolkit dependency), or save it from Praat "
                            "as a text file") from None
    import tempfile

    try:
        obj = parselmouth.read(str(path))
    except parselmouth.PraatError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "Praat could not read it"
        raise TextGridError(f"Praat cannot read this {fmt} file ({first})", path=path,
                            hint="open it in Praat to see the problem; it may be truncated") from None
    if not isinstance(obj, parselmouth.TextGrid):
        raise TextGridError(f"this Praat {fmt} file holds a {type(obj).__name__}, not a TextGrid", path=path,
                            hint="give the TextGrid of the recording")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "converted.TextGrid"
        parselmouth.praat.call(obj, "Save as text file", str(out))
        return decode_textgrid_bytes(out.read_bytes(), path=path)


_DECLARED_TIERS = re.compile(r"^\s*size\s*=\s*(\d+)\s*$", re.M)
_DECLARED_ITEMS = re.compile(r"^\s*(?:intervals|points)\s*:\s*size\s*=\s*(\d+)\s*$", re.M)


def _check_declared_counts(path: Path, text: str, tiers: list[dict]) -> None:
    """The numbers of tiers and of intervals (points) the file declares must be the numbers it holds:
    a file cut short or edited by hand is an error naming the line, never a silently shorter tier."""
    long_format = "item [" in text or "item[" in text
    if not long_format:
        line, what = _locate_parse_error(text)
        if what is not None:
            raise TextGridError(f"the TextGrid does not hold what it declares ({what})", path=path, line=line,
                                hint="the file is truncated or was edited by hand; re-export it from Praat "
                                "or the aligner")
        return
    m = _DECLARED_TIERS.search(text)
    if m is not None and int(m.group(1)) != len(tiers):
        raise TextGridError(
            f"the file declares {m.group(1)} tier(s) but holds {len(tiers)}", path=path,
            line=text.count("\n", 0, m.start()) + 1,
            hint="the file is truncated or was edited by hand; re-export it from Praat or the aligner")
    # (a tier without its size line: the tier count above has failed first)
    for tier, d in zip(tiers, _DECLARED_ITEMS.finditer(text), strict=False):
        declared, held = int(d.group(1)), len(tier["entries"])
        if declared != held:
            kind = "intervals" if tier["class"] == "IntervalTier" else "points"
            raise TextGridError(
                f"tier {tier['name']!r} declares {declared} {kind} but holds {held}", path=path,
                line=text.count("\n", 0, d.start()) + 1,
                hint="the file is truncated or was edited by hand; re-export it from Praat or the aligner")


def _parse_error(path: Path, text: str, err: Exception) -> TextGridError:
    line, what = _locate_parse_error(text)
    detail = what or f"{type(err).__name__}: {err}"
    return TextGridError(
        f"cannot parse the TextGrid ({detail})",
        path=path,
        line=line,
        hint="open the file in Praat (Read from file) to see the problem; times must be plain "
        "numbers and labels double-quoted, with quotes inside labels doubled",
    )


def _check_duplicates(path: Path, tiers: list[dict], mode: str) -> None:
    seen: dict[str, int] = {}
    for i, tier in enumerate(tiers):
        name = tier["name"]
        if name in seen:
            if mode == "error":
                raise TextGridError(
                    f"tiers {seen[name] + 1} and {i + 1} are both named {name!r}",
                    path=path,
                    hint="rename them in Praat, or read them as "
                    f"{name!r}, {name + '_2'!r}, ... with duplicate_tiers='rename' "
                    "(command line: --rename-duplicate-tiers)",
                )
            new, k = name, 2
            while new in seen:
                new = f"{name}_{k}"
                k += 1
            tier["name"] = new
            name = new
        seen[name] = i


def _pick_tiers(
    path: Path,
    tiers: list[dict],
    *,
    speaker: str | None,
    words_tier: str | None,
    phones_tier: str | None,
) -> tuple[dict, dict | None, str | None]:
    """Choose the phone and word tiers: explicit names, MFA speaker tiers, or common names."""
    interval = {t["name"]: t for t in tiers if t["class"] == "IntervalTier"}
    names = [t["name"] for t in tiers]

    def missing(which: str, name: str) -> TextGridError:
        return TextGridError(
            f"no interval tier named {name!r} ({which} tier); the tiers are {names}",
            path=path, hint=f"pass {which}_tier= one of the interval tiers above",
        )

    mfa: dict[str, dict[str, dict]] = {}
    for name, tier in interval.items():
        m = _MFA_TIER.match(name)
        if m:
            mfa.setdefault(m.group("speaker"), {})[m.group("kind")] = tier

    chosen_speaker = None
    if phones_tier is None and mfa:
        speakers = sorted(s for s, kinds in mfa.items() if "phones" in kinds)
        if speaker is not None:
            if speaker not in mfa or "phones" not in mfa[speaker]:
                raise TextGridError(f"no tier {speaker + ' - phones'!r}; speakers in this file: {speakers}",
                                    path=path, hint="pass speaker= one of the speakers listed")
            chosen_speaker = speaker
        elif len(speakers) == 1:
            chosen_speaker = speakers[0]
        elif len(speakers) > 1:
            raise TextGridError(
                f"the file has phone tiers for several speakers: {speakers}",
                path=path, hint="choose one with speaker= (e.g. speaker=" + repr(speakers[0]) + ")",
            )
    elif speaker is not None and phones_tier is None:
        raise TextGridError(
            f"speaker={speaker!r} given, but the file has no MFA speaker tiers ('<speaker> - phones'); "
            f"the tiers are {names}", path=path, hint="leave speaker= unset",
        )

    if chosen_speaker is not None:
        phones = mfa[chosen_speaker]["phones"]
        words = mfa[chosen_speaker].get("words")
        if words_tier is not None:
            if words_tier not in interval:
                raise missing("words", words_tier)
            words = interval[words_tier]
        return phones, words, chosen_speaker

    lower = {name.strip().lower(): name for name in interval}
    if phones_tier is not None:
        if phones_tier not in interval:
            raise missing("phones", phones_tier)
        phones = interval[phones_tier]
    else:
        found = next((lower[n] for n in PHONE_TIER_NAMES if n in lower), None)
        if found is None:
            points = [t["name"] for t in tiers if t["class"] != "IntervalTier"
                      and t["name"].strip().lower() in PHONE_TIER_NAMES]
            if points:
                raise TextGridError(
                    f"the tier {points[0]!r} is a point tier (TextTier), not an interval tier: phones need "
                    f"start and end times; the interval tiers are "
                    f"{[t['name'] for t in tiers if t['class'] == 'IntervalTier']}",
                    path=path, hint="give the phones as an interval tier (Praat: Tier > Add interval tier), or "
                    "name the interval tier that holds them with --phones-tier")
            raise TextGridError(
                f"no phone tier found; the tiers are {names}",
                path=path,
                hint=f"name it one of {list(PHONE_TIER_NAMES)}, or pass phones_tier= "
                "(command line: --phones-tier)",
            )
        phones = interval[found]
    if words_tier is not None:
        if words_tier not in interval:
            raise missing("words", words_tier)
        words = interval[words_tier]
    else:
        found = next((lower[n] for n in WORD_TIER_NAMES if n in lower), None)
        words = interval[found] if found is not None else None
    return phones, words, None


def read_alignment(
    path: str | Path,
    *,
    speaker: str | None = None,
    words_tier: str | None = None,
    phones_tier: str | None = None,
    duplicate_tiers: str = "error",
) -> Alignment:
    """Read the word and phone intervals of a TextGrid.

    Parameters
    ----------
    path : str or Path
        A ``.TextGrid`` in the long or short text format, UTF-8 (with or without BOM) or UTF-16
        with BOM; CRLF line ends, labels with newlines and ``-0`` times are fine. Praat's binary
        and chronological TextGrids are read through praat-parselmouth; a TIMIT ``.PHN`` file (with
        its ``.WRD``) through :mod:`phonalign.timit`.
    speaker : str, optional
        For MFA multi-speaker files (tiers ``"<speaker> - words"``, ``"<speaker> - phones"``): the
        speaker to read. Needed only when the file has several.
    words_tier, phones_tier : str, optional
        Explicit tier names. By default the phone tier is the first interval tier named one of
        :data:`PHONE_TIER_NAMES` (``phones``, ``phone``, ``segments``, ...) and the word tier one of
        :data:`WORD_TIER_NAMES` (``words``, ``word``, ...), case-insensitively. A missing word
        tier is allowed (phones then belong to no word).
    duplicate_tiers : {"error", "rename"}
        Tiers sharing a name are an error unless ``"rename"`` (``phones``, ``phones_2``, ...).

    Returns
    -------
    Alignment
        Intervals as in the file (empty labels kept as ``""``); ``xmin``/``xmax`` are the grid's
        limits, seconds; ``extra`` holds ``tiers`` (all tier names), ``phones_tier``,
        ``words_tier``, ``speaker``, ``encoding`` and ``reader``.

    Raises
    ------
    TextGridError
        Missing, undecodable or unparsable file (with the line where it can be located),
        duplicate tier names, no phone tier, ambiguous speaker, unsorted or overlapping intervals.
    """
    path = Path(path)
    if path.suffix.lower() == ".phn":  # TIMIT's hand labels, read as an alignment
        from .timit import read_timit_alignment

        alignment = read_timit_alignment(path)
        validate_alignment(alignment)
        return alignment
    text, xmin, xmax, tiers, info = _read_raw(path, duplicate_tiers)
    _check_no_negative_time(path, text)
    phones, words, spk = _pick_tiers(path, tiers, speaker=speaker, words_tier=words_tier,
                                     phones_tier=phones_tier)
    try:
        # praatio's time strings -> floats (+ 0.0 turns "-0" into 0.0), straight into Intervals
        phone_ivs = tuple([Interval(float(s) + 0.0, float(e) + 0.0, lab) for s, e, lab in phones["entries"]])
        word_ivs = tuple([Interval(float(s) + 0.0, float(e) + 0.0, lab)
                          for s, e, lab in words["entries"]]) if words else ()
    except ValueError as err:
        raise _parse_error(path, text, err) from None
    alignment = Alignment(
        words=word_ivs,
        phones=phone_ivs,
        xmin=xmin,
        xmax=xmax,
        source=str(path),
        extra={
            "tiers": [t["name"] for t in tiers],
            "phones_tier": phones["name"],
            "words_tier": words["name"] if words else None,
            "speaker": spk,
            **info,
        },
    )
    validate_alignment(alignment)
    return alignment


def _check_no_negative_time(path: Path, text: str) -> None:
    """Raise :class:`TextGridError` at the first negative time (``-0`` is zero and fine)."""
    if not _NEGATIVE_HINT.search(text):  # the usual case, found in one fast scan
        return
    for m in _NEGATIVE_TIME.finditer(text):
        value = float(m.group(1))
        if value < 0:
            line = text.count("\n", 0, m.start()) + 1
            raise TextGridError(f"negative time {m.group(1)} s (times start at 0)", path=path, line=line,
                                hint="fix the time in Praat; a recording's timeline starts at 0 s")


def _check_tier(intervals: Sequence[Interval], tier: str, alignment: Alignment, utt_id: str | None) -> None:
    prev_end = None
    for i, iv in enumerate(intervals):
        if not (iv.end >= iv.start):  # also catches NaN
            raise TextGridError(
                f"{tier} tier, interval {i + 1} ({iv.label!r}) ends at {iv.end} before it starts at {iv.start}",
                path=alignment.source, utt_id=utt_id, hint="fix the interval's times in Praat",
            )
        if prev_end is not None and iv.start < prev_end - TIME_TOL:
            raise TextGridError(
                f"{tier} tier, interval {i + 1} ({iv.label!r}, {iv.start}-{iv.end} s) starts before "
                f"interval {i} ends ({prev_end} s): intervals overlap or are not sorted",
                path=alignment.source, utt_id=utt_id,
                hint="intervals of a tier must be in time order without overlap; fix the tier in Praat",
            )
        prev_end = iv.end
    if intervals and (intervals[0].start < alignment.xmin - TIME_TOL or intervals[-1].end > alignment.xmax + TIME_TOL):
        raise TextGridError(
            f"{tier} tier runs from {intervals[0].start} to {intervals[-1].end} s, outside the grid's "
            f"limits {alignment.xmin}-{alignment.xmax} s",
            path=alignment.source, utt_id=utt_id, hint="fix the grid's xmin/xmax or the tier's times",
        )


def validate_alignment(alignment: Alignment, *, utt_id: str | None = None) -> None:
    """Raise :class:`TextGridError` if a tier's intervals are unsorted, overlap, run backwards or
    leave the grid's limits (tolerance :data:`~phonalign.records.TIME_TOL`)."""
    _check_tier(alignment.phones, "phones", alignment, utt_id)
    _check_tier(alignment.words, "words", alignment, utt_id)


# --------------------------------------------------------------------------------------------
# writing


def _num(x: float) -> str:
    """Full-precision decimal for a time: shortest round-trip repr, never scientific notation."""
    r = repr(float(x) + 0.0)
    if "e" in r or "E" in r or "n" in r:  # 1e-05, inf, nan
        if not math.isfinite(x):
            raise ValueError(f"cannot write a non-finite time ({x}) to a TextGrid")
        import numpy as np

        r = np.format_float_positional(float(x), unique=True, trim="-")
    return r


def _quote(label: str) -> str:
    return '"' + label.replace('"', '""') + '"'


def _filled(intervals: Sequence[tuple[float, float, str]], xmin: float, xmax: float) -> list[tuple[float, float, str]]:
    """Praat requires interval tiers to tile [xmin, xmax]: fill gaps with empty intervals."""
    out: list[tuple[float, float, str]] = []
    t = xmin
    for s, e, lab in intervals:
        if s > t + 1e-12:
            out.append((t, s, ""))
        out.append((s, e, lab))
        t = e
    if t < xmax - 1e-12 or not out:
        out.append((t, xmax, ""))
    return out


_INTERVAL = '        intervals [%d]:\n            xmin = %s \n            xmax = %s \n            text = "%s" \n'
_VOWELS = frozenset(VOWEL_CLASSES)


def _tier_text(parts: list[str], index: int, name: str, xmin: str, xmax: str,
               entries: list[tuple[float, float, str]], text_of: dict[float, str]) -> None:
    n = len(entries)
    parts.append(
        f"    item [{index}]:\n"
        '        class = "IntervalTier" \n'
        f"        name = {_quote(name)} \n"
        f"        xmin = {xmin} \n"
        f"        xmax = {xmax} \n"
        f"        intervals: size = {n} \n"
    )
    # This runs for every phone of every utterance of a corpus: one %-format for the whole tier,
    # with each boundary's digits computed once (text_of) for all three tiers.
    flat: list = []
    add = flat.extend
    for i, (s, e, lab) in enumerate(entries, 1):
        add((i, text_of[s], text_of[e], lab.replace('"', '""') if '"' in lab else lab))
    parts.append((_INTERVAL * n) % tuple(flat))


def grid_limits(alignment: Alignment) -> tuple[float, float]:
    """The (xmin, xmax) a written TextGrid gets: the alignment's limits, widened to hold every
    interval (``Alignment`` defaults ``xmax`` to 0). Raises ValueError if they are not finite or
    leave nothing to write."""
    xmin, xmax = alignment.xmin, alignment.xmax
    for ivs in (alignment.phones, alignment.words):
        if ivs:
            xmin = min(xmin, ivs[0].start)
            xmax = max(xmax, ivs[-1].end)
    xmin, xmax = float(xmin) + 0.0, float(xmax) + 0.0
    if not (math.isfinite(xmin) and math.isfinite(xmax)):
        raise ValueError(f"cannot write non-finite grid limits ({xmin}, {xmax}) to a TextGrid")
    if xmax <= xmin:
        raise ValueError("cannot write an empty alignment (no intervals and xmax <= xmin)")
    return xmin, xmax


def pack_tiers(xmin: float, xmax: float,
               words: tuple[Sequence[float], Sequence[float], Sequence[str]],
               phones: tuple[Sequence[float], Sequence[float], Sequence[str]],
               vowel_classes: Sequence[str] | None = None) -> bytes:
    """A compact byte encoding of the tiers of an output TextGrid, for :func:`textgrid_text_from_packed`.

    ``words`` and ``phones`` are ``(starts, ends, labels)``. Times travel as raw doubles (exact),
    labels as UTF-8 JSON: this hands TextGrids to a writer process without pickle and at a
    fraction of the cost of formatting them.
    """
    n_words, n_phones = len(words[2]), len(phones[2])
    times = array("d", (xmin, xmax))
    times.extend(words[0])
    times.extend(words[1])
    times.extend(phones[0])
    times.extend(phones[1])
    # labels joined with ASCII record separators (5x cheaper than JSON); JSON only for labels that
    # contain a separator themselves
    lists = (words[2], phones[2], vowel_classes if vowel_classes is not None else ())
    joined = [_RS.join(x) for x in lists]
    n_classes = -1 if vowel_classes is None else len(vowel_classes)
    separable = all(j.count(_RS) == max(len(x) - 1, 0) for j, x in zip(joined, lists, strict=True))
    if separable and not any(_US in j for j in joined):
        mode, text = 0, _US.join(joined)
    else:
        mode, text = 1, json.dumps([list(x) for x in lists], ensure_ascii=False)
    return struct.pack("<IIiB", n_words, n_phones, n_classes, mode) + times.tobytes() + text.encode("utf-8")


_RS, _US = "\x1e", "\x1f"


def pack_alignment(alignment: Alignment, vowel_classes: Sequence[str] | None = None) -> bytes:
    """:func:`pack_tiers` of an :class:`Alignment` (limits from :func:`grid_limits`)."""
    xmin, xmax = grid_limits(alignment)
    w, p = alignment.words, alignment.phones
    return pack_tiers(xmin, xmax,
                      ([iv.start for iv in w], [iv.end for iv in w], [iv.label for iv in w]),
                      ([iv.start for iv in p], [iv.end for iv in p], [iv.label for iv in p]),
                      vowel_classes)


def textgrid_text_from_packed(data: bytes) -> str:
    """The TextGrid text of tiers packed by :func:`pack_tiers`."""
    n_words, n_phones, n_classes, mode = struct.unpack_from("<IIiB", data)
    head = struct.calcsize("<IIiB")
    n_times = 2 + 2 * (n_words + n_phones)
    times = array("d")
    times.frombytes(data[head:head + 8 * n_times])
    text = data[head + 8 * n_times:].decode("utf-8")
    if mode == 0:
        word_labels, phone_labels, classes = (x.split(_RS) if n else [] for x, n in
                                              zip(text.split(_US), (n_words, n_phones, n_classes), strict=True))
    else:
        word_labels, phone_labels, classes = json.loads(text)
    t = times.tolist()
    a, b, c = 2 + n_words, 2 + 2 * n_words, 2 + 2 * n_words + n_phones
    words = list(zip(t[2:a], t[a:b], word_labels, strict=True))
    phones = list(zip(t[b:c], t[c:], phone_labels, strict=True))
    return _textgrid_text(t[0], t[1], words, phones, classes if n_classes >= 0 else None)


def _textgrid_text(xmin: float, xmax: float, words: list[tuple[float, float, str]],
                   phones: list[tuple[float, float, str]], vowel_classes: Sequence[str | None] | None) -> str:
    tiers: list[tuple[str, list[tuple[float, float, str]]]] = [
        ("words", _filled(words, xmin, xmax)),
        ("phones", _filled(phones, xmin, xmax)),
    ]
    if vowel_classes is not None:
        if len(vowel_classes) != len(phones):
            raise ValueError(f"vowel_classes has {len(vowel_classes)} entries for {len(phones)} phone intervals")
        marks = [(s, e, c if c in _VOWELS else "") for (s, e, _), c in zip(phones, vowel_classes, strict=True)]
        tiers.append(("vowel_class", _filled(marks, xmin, xmax)))
    # Digits of every boundary, once: repr is the shortest string that reads back to the same
    # double; it switches to scientific notation below 1e-4 (which praatio cannot read) and
    # spells inf/nan, so those few go through _num (positional notation, or an error).
    text_of: dict[float, str] = {}
    for _, entries in tiers:
        for s, e, _lab in entries:
            if s not in text_of:
                text_of[s] = repr(s)
            if e not in text_of:
                text_of[e] = repr(e)
    text_of[xmin] = repr(xmin)
    text_of[xmax] = repr(xmax)
    for t, r in text_of.items():
        if "e" in r or "n" in r:
            text_of[t] = _num(t)
    parts = [
        'File type = "ooTextFile"\n'
        'Object class = "TextGrid"\n'
        "\n"
        f"xmin = {text_of[xmin]} \n"
        f"xmax = {text_of[xmax]} \n"
        "tiers? <exists> \n"
        f"size = {len(tiers)} \n"
        "item []: \n"
    ]
    for k, (name, entries) in enumerate(tiers, 1):
        _tier_text(parts, k, name, text_of[xmin], text_of[xmax], entries, text_of)
    return "".join(parts)


def alignment_to_textgrid_text(alignment: Alignment, *, vowel_classes: Sequence[str | None] | None = None) -> str:
    """The long-format TextGrid text of ``alignment`` (see :func:`write_alignment`)."""
    xmin, xmax = grid_limits(alignment)
    # float(...) + 0.0: plain floats (numpy scalars have another repr) and no "-0.0"
    phones = [(float(iv.start) + 0.0, float(iv.end) + 0.0, iv.label) for iv in alignment.phones]
    words = [(float(iv.start) + 0.0, float(iv.end) + 0.0, iv.label) for iv in alignment.words]
    return _textgrid_text(xmin, xmax, words, phones, vowel_classes)


def write_alignment(
    path: str | Path,
    alignment: Alignment,
    *,
    vowel_classes: Sequence[str | None] | None = None,
) -> Path:
    """Write ``alignment`` as a long-format UTF-8 TextGrid, atomically.

    Parameters
    ----------
    path : str or Path
        Output file; its folder is created.
    alignment : Alignment
        Intervals to write; gaps between intervals (and up to the grid's limits) are filled with
        empty intervals, as Praat requires.
    vowel_classes : sequence of str, optional
        One unit class per phone interval (``len(alignment.phones)``); vowel classes
        (``A E @ i O u``) become the labels of a third tier ``vowel_class``, everything else an
        empty label. Without it only ``words`` and ``phones`` are written.

    Returns
    -------
    Path
        ``path``.
    """
    text = alignment_to_textgrid_text(alignment, vowel_classes=vowel_classes)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return path
