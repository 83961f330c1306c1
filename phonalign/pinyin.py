"""Pinyin spelling: tones, initials and finals of Hanyu Pinyin syllables.

What a pinyin *syllable* is made of, independent of any phone table: the tone (a digit 1-5 or a
tone mark), the initial, and the final in full notation (``iou`` for written ``iu``, ``uei`` for
``ui``, ``ü`` for ``u`` after j q x y; ``ii`` / ``iii`` for the apical vowels after z c s and
zh ch sh r). :mod:`phonalign.phonesets` uses it to classify Mandarin phones from their syllable
(the class of each final is in its table, ``phonalign/data/phones.tsv``, set ``pinyin``).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .errors import PhoneSetError

__all__ = ["APICAL_INITIALS", "FINALS", "INITIALS", "PALATAL_INITIALS", "pinyin_final", "split_tone",
           "strip_tone_marks"]

#: Initials, longest first so that ``zh`` is tried before ``z`` (``y`` and ``w`` are spelling initials).
INITIALS: tuple[str, ...] = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q",
                             "x", "r", "z", "c", "s", "y", "w")
#: Initials after which written ``i`` is the apical vowel (-i), not [i].
APICAL_INITIALS: frozenset[str] = frozenset({"z", "c", "s", "zh", "ch", "sh", "r"})
#: Initials after which written ``u`` is ü [y].
PALATAL_INITIALS: frozenset[str] = frozenset({"j", "q", "x", "y"})
#: Every final :func:`pinyin_final` may return, in full notation (``ii``: apical -i after z c s;
#: ``iii``: after zh ch sh r). Each has a row in the ``pinyin`` set of the phone table (tested).
FINALS: frozenset[str] = frozenset(
    "a o e ê er ai ei ao ou an en ang eng ong i ia ie iao iou ian in iang ing iong io "
    "u ua uo uai uei uan uen uang ueng ü üe üan ün ii iii".split()
)

_TONE_DIGIT = re.compile(r"^(.*?[^0-9])([1-5])$")
_TONE_MARKS = {"\u0304": 1, "\u0301": 2, "\u030c": 3, "\u0300": 4}  # combining macron, acute, caron, grave
_Y_FINALS = {"a": "ia", "o": "io", "e": "ie", "ao": "iao", "ou": "iou", "an": "ian", "ang": "iang",
             "ong": "iong", "u": "ü", "ue": "üe", "uan": "üan", "un": "ün", "ü": "ü", "üe": "üe",
             "üan": "üan", "ün": "ün"}
_W_FINALS = {"u": "u", "a": "ua", "o": "uo", "ai": "uai", "ei": "uei", "an": "uan", "en": "uen",
             "ang": "uang", "eng": "ueng"}
_SYLLABIC_NASALS = frozenset({"m", "n", "ng", "hm", "hng", "ň", "ǹg"})


def strip_tone_marks(text: str) -> tuple[str, int | None]:
    """Remove pinyin tone marks (keeping ü); return the bare text (NFC) and the tone (1-4, or None)."""
    tone = None
    out = []
    for ch in unicodedata.normalize("NFD", text):
        if ch in _TONE_MARKS:
            tone = _TONE_MARKS[ch]
        else:
            out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)), tone


def split_tone(label: str) -> tuple[str, int | None]:
    """A pinyin label without its tone: a trailing digit 1-5 (``ao3``) or a tone mark (``ǎo``).

    Returns the label (``u:`` written as ``ü``) and the tone, None where none is written.
    """
    m = _TONE_DIGIT.match(label)
    tone = None
    if m:
        label, tone = m.group(1), int(m.group(2))
    elif not label.isascii():
        label, tone = strip_tone_marks(label)
    return label.replace("u:", "ü"), tone


@lru_cache(maxsize=4096)
def pinyin_final(syllable: str) -> tuple[str | None, int | None, bool]:
    """The canonical final of a pinyin syllable.

    Parameters
    ----------
    syllable : str
        One pinyin syllable with a tone digit or tone mark or none (``"zhong1"``, ``"lǜ"``,
        ``"nv3"``, ``"huar1"``); case-insensitive.

    Returns
    -------
    final : str or None
        The final in full notation (``"ong"``, ``"ü"``, ``"uei"``, ``"iou"``, ``"uen"``; ``"ii"``
        for apical -i after z c s and ``"iii"`` after zh ch sh r), or None for the syllabic nasal
        interjections (m, n, ng, hm, hng).
    tone : int or None
        1-5, None where no tone is written.
    erhua : bool
        True for an r-suffixed syllable (``huar``), whose final is that of the base syllable.

    Raises
    ------
    PhoneSetError
        If the text is not a pinyin syllable.

    Examples
    --------
    >>> pinyin_final("zhong1"), pinyin_final("lǜ"), pinyin_final("shi4")
    (('ong', 1, False), ('ü', 4, False), ('iii', 4, False))
    """
    s = unicodedata.normalize("NFC", str(syllable)).strip().lower()
    tone = None
    if s and s[-1] in "12345":
        s, tone = s[:-1], int(s[-1])
    elif not s.isascii():
        s, tone = strip_tone_marks(s)
    s = s.replace("u:", "ü").replace("v", "ü")
    if s in _SYLLABIC_NASALS:
        return None, tone, False
    erhua = False
    if s.endswith("r") and s != "er" and len(s) > 1:
        s, erhua = s[:-1], True
    initial = next((i for i in INITIALS if s.startswith(i) and len(s) > len(i)), "")
    rest = s[len(initial):]
    final: str | None
    if initial == "y":
        final = rest if rest in ("i", "in", "ing") else _Y_FINALS.get(rest)
    elif initial == "w":
        final = _W_FINALS.get(rest)
    elif initial in ("j", "q", "x"):
        final = {"u": "ü", "ue": "üe", "uan": "üan", "un": "ün", "iu": "iou"}.get(rest, rest)
    elif initial in APICAL_INITIALS and rest == "i":
        final = "iii" if initial in ("zh", "ch", "sh", "r") else "ii"
    else:
        final = {"iu": "iou", "ui": "uei", "un": "uen", "ue": "üe"}.get(rest, rest)
    if final is not None and initial in ("j", "q", "x") and final[0] not in "iü":
        final = None  # j q x combine only with i- and ü- finals
    elif final is not None and final[0] == "ü" and initial not in ("", "n", "l", "j", "q", "x", "y"):
        final = None
    if final is None or final not in FINALS:
        raise PhoneSetError(f"{syllable!r} is not a pinyin syllable",
                            hint="context takes one pinyin syllable per phone, e.g. 'zhong1', 'lü4', "
                                 "or None for pauses")
    return final, tone, erhua
