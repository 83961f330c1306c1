"""TIMIT: hand-labelled ``.PHN``/``.WRD`` files as alignments, the raw corpus layout as a corpus, and the
usual folding of TIMIT's 61 phones onto CMUdict's ARPAbet for comparing aligners with it.

* **Label files** (:func:`read_timit_labels`): ``.PHN`` and ``.WRD`` hold one ``START END LABEL`` line
  per segment, in samples at 16 kHz. :func:`phonalign.textgrid_io.read_alignment` reads a ``.PHN``
  (with the ``.WRD`` beside it) directly, so ``lam align-eval`` and the ``textgrid`` backend take them
  like TextGrids.
* **Corpus layout** (:func:`read_timit_dir`, preset ``timit``): ``TIMIT/{TRAIN,TEST}/DR*/<speaker>/<utt>.WAV``
  (NIST SPHERE audio, which libsndfile reads) with ``<utt>.TXT`` (``START END text``), names in any
  case. Utterance ids are ``<speaker>_<utt>`` (``FCJF0_SA1``: the SA sentences repeat across speakers);
  the split is ``train``/``test`` from the top folder.
* **Folding** (:func:`fold_timit`, ``lam align-eval --common timit``): a stop closure (``bcl dcl gcl
  pcl tcl kcl``) and the release after it become one stop starting at the closure (as aligners
  place stops); a closure without release becomes the stop; ``ax ix ux axr`` -> ``AH IH UW ER``,
  ``ax-h`` -> ``AH``, ``hv`` -> ``HH``; ``h# pau epi`` are pauses. Everything else is upper-cased and
  left as it is (``el``, ``en``, ``dx``, ``nx``, ``q`` have no CMUdict counterpart and count as
  mismatches, as they should).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CorpusError, TextGridError
from .records import Alignment, Interval

__all__ = ["read_timit_labels", "read_timit_alignment", "fold_timit", "fold_timit_label", "TIMIT_RATE",
           "read_timit_dir", "CLOSURES"]

#: TIMIT's sampling rate: label files count samples at this rate.
TIMIT_RATE = 16000
#: closure -> the stop it belongs to
CLOSURES: dict[str, str] = {"bcl": "b", "dcl": "d", "gcl": "g", "pcl": "p", "tcl": "t", "kcl": "k"}
_VOWEL_FOLD = {"ax": "AH", "ax-h": "AH", "ix": "IH", "ux": "UW", "axr": "ER", "hv": "HH"}
_PAUSES = frozenset({"h#", "pau", "epi"})


def read_timit_labels(path: str | Path, *, rate: int = TIMIT_RATE) -> list[Interval]:
    """Segments of a ``.PHN`` or ``.WRD`` file, times in seconds.

    Raises
    ------
    TextGridError
        Missing file, or a line that is not ``START END LABEL`` with integer samples (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise TextGridError("TIMIT label file not found", path=path) from None
    except UnicodeDecodeError as err:
        raise TextGridError(f"not a TIMIT label file (not text: {err.reason})", path=path) from None
    out: list[Interval] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise TextGridError(f"expected 'START END LABEL' (samples), found {line.strip()[:60]!r}", path=path,
                                line=lineno, hint="TIMIT .PHN/.WRD lines are two sample numbers and a label")
        start, end = int(parts[0]) / rate, int(parts[1]) / rate
        if end < start:
            raise TextGridError(f"segment ends at sample {parts[1]} before it starts at {parts[0]}", path=path,
                                line=lineno)
        out.append(Interval(start, end, parts[2]))
    return out


def _find_case(path: Path, suffix: str) -> Path | None:
    for s in (suffix.upper(), suffix.lower(), suffix.capitalize()):
        p = path.with_suffix(s)
        if p.is_file():
            return p
    return None


def read_timit_alignment(phn: str | Path) -> Alignment:
    """A ``.PHN`` file (and the ``.WRD`` beside it, when there is one) as an :class:`Alignment`.

    Phone labels are TIMIT's, upper-cased as ARPAbet is written (``H#``, ``BCL``, ``IX``);
    :func:`fold_timit` maps them for comparison. Gaps between words are left empty, as in TIMIT.
    """
    phn = Path(phn)
    # upper case, as ARPAbet is written everywhere else (and as phone-set detection expects)
    phones = [Interval(p.start, p.end, p.label.upper()) for p in read_timit_labels(phn)]
    wrd = _find_case(phn, ".wrd")
    words = read_timit_labels(wrd) if wrd is not None else []
    xmax = max([p.end for p in phones] + [w.end for w in words] + [0.0])
    return Alignment(words=tuple(words), phones=tuple(phones), xmin=0.0, xmax=xmax, source=str(phn),
                     extra={"format": "timit", "words_file": None if wrd is None else str(wrd)})


def fold_timit_label(label: str) -> str:
    """One TIMIT label in CMUdict's ARPAbet (upper case); pauses become ``""``."""
    low = label.strip().lower()
    if low in _PAUSES:
        return ""
    if low in CLOSURES:
        return CLOSURES[low].upper()
    return _VOWEL_FOLD.get(low, low.upper())


def fold_timit(alignment: Alignment) -> Alignment:
    """``alignment`` with TIMIT's labels folded (see the module docstring): closures merged with their
    release into one stop that starts at the closure."""
    out: list[Interval] = []
    phones = alignment.phones
    i = 0
    while i < len(phones):
        p = phones[i]
        low = p.label.strip().lower()
        nxt = phones[i + 1].label.strip().lower() if i + 1 < len(phones) else None
        if low in CLOSURES and nxt == CLOSURES[low] and abs(phones[i + 1].start - p.end) < 1e-9:
            out.append(Interval(p.start, phones[i + 1].end, CLOSURES[low].upper()))
            i += 2
            continue
        out.append(Interval(p.start, p.end, fold_timit_label(p.label)))
        i += 1
    return Alignment(words=alignment.words, phones=tuple(out), xmin=alignment.xmin, xmax=alignment.xmax,
                     source=alignment.source, extra={**alignment.extra, "folded": "timit"})


_TXT_LINE = re.compile(r"^\s*\d+\s+\d+\s+(?P<text>.*)$", re.S)


def read_timit_dir(root: Path, col, *, corpus: str) -> None:
    """Add the utterances of a raw TIMIT tree under ``root`` to the corpus collector ``col``
    (:mod:`phonalign.corpus`); every file passed over goes to its ``skipped`` list."""
    from .corpus import _walk  # the folder walk of every reader (linked folders, no loops)

    files = []
    for p in _walk(root):
        if p.is_file():
            files.append(p)
        else:
            col.skip(p, "not a regular file (a FIFO, device or broken link): not read")
    audio = [p for p in files if p.suffix.lower() == ".wav"]
    if not audio:
        raise CorpusError("no TIMIT audio found (expected {TRAIN,TEST}/DR*/<speaker>/<utt>.WAV)", path=root,
                          hint="point CORPUS at the TIMIT folder that holds TRAIN/ and TEST/")
    used = set()
    for wav in audio:
        rel = wav.relative_to(root).parts
        speaker = rel[-2] if len(rel) >= 2 else ""
        split = next((x.lower() for x in rel[:-1] if x.lower() in ("train", "test")), None)
        txt = _find_case(wav, ".txt")
        text = ""
        if txt is None:
            col.missing_transcripts += 1
        else:
            m = _TXT_LINE.match(txt.read_text(encoding="utf-8", errors="replace"))
            text = (m.group("text") if m else txt.read_text(encoding="utf-8", errors="replace")).strip()
            used.add(txt)
        for suffix in (".phn", ".wrd"):
            found = _find_case(wav, suffix)
            if found is not None:
                used.add(found)
        from .records import Utterance

        col.add(Utterance(utt_id=f"{speaker}_{wav.stem}".upper() if speaker else wav.stem.upper(),
                          audio_path=str(wav.resolve()), text=text, language="en", speaker=speaker.upper(),
                          corpus=corpus, split=split), source=wav)
    for p in files:
        if p.suffix.lower() != ".wav" and p not in used:
            col.skip(p, "not part of a TIMIT utterance (<utt>.WAV with .TXT/.PHN/.WRD)")
