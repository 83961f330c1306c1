"""Transcript words as an aligner needs them: markup set apart, numbers spelled out, compounds split.

Corpus transcripts carry more than words: MFA-style markup (``[laughter]``, ``<unk>``, ``{cough}``),
digits (``1995``, ``3rd``, ``2.5``) and hyphenated compounds (``ex-convict``). Looked up as words,
they are out-of-vocabulary, and with a grapheme-to-phoneme fallback markup would be aligned as if it
were spoken. This module turns a transcript into :class:`Token`\\ s:

* **markup** (``[...]``, ``<...>``, ``{...}``): ``kind="silence"`` when it names a pause
  (``[sil]``, ``<pause>``, ``{sl}`` ...), else ``kind="noise"``; never a word;
* **words**: lower-case, punctuation removed (apostrophes and inner hyphens kept).

:func:`spell_number` spells English numbers (cardinals, years read in pairs, ordinals, decimals);
:func:`expand_word` splits a hyphenated compound or spells a number when the word itself has no
pronunciation, so that only what is truly unknown counts as OOV.

:func:`normalize_words` is the plain word list (markup read as words) that the MFA backend stages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Token", "tokenize", "spell_number", "expand_word", "normalize_words", "MARKUP"]

#: MFA-style markup: bracketed, angled or braced stretches.
MARKUP = re.compile(r"\[[^\[\]]*\]|<[^<>]*>|\{[^{}]*\}")
_SILENCE_MARKUP = frozenset({"sil", "silence", "sp", "pause", "sl", "eps", "blank", "s", "/s"})
_WORD = re.compile(r"[a-z0-9]+(?:['\-.][a-z0-9]+)*'?")


@dataclass(frozen=True)
class Token:
    """One item of a transcript: ``kind`` is ``"word"``, ``"noise"`` or ``"silence"``."""

    text: str
    kind: str


def tokenize(text: str) -> list[Token]:
    """Words and markup of a transcript, in order.

    Words are lower-cased with punctuation removed (``don't``, ``well-known``, ``2.5`` kept whole);
    markup becomes ``noise`` or ``silence`` tokens holding the markup as written.
    """
    text = (text or "").replace("\u2019", "'").replace("\u2018", "'")
    out: list[Token] = []
    pos = 0
    for m in MARKUP.finditer(text):
        out.extend(Token(w.rstrip("'") or w, "word") for w in _WORD.findall(text[pos:m.start()].lower()))
        inner = m.group(0)[1:-1].strip().lower()
        out.append(Token(m.group(0), "silence" if inner in _SILENCE_MARKUP else "noise"))
        pos = m.end()
    out.extend(Token(w.rstrip("'") or w, "word") for w in _WORD.findall(text[pos:].lower()))
    return out


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}


def _cardinal(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_cardinal(n % 100) if n % 100 else [])
    for value, name in _SCALES:
        if n >= value:
            return _cardinal(n // value) + [name] + (_cardinal(n % value) if n % value else [])
    raise ValueError(n)  # unreachable: every n >= 1000 has a scale


def _year(n: int) -> list[str]:
    """1995 -> nineteen ninety five; 1900 -> nineteen hundred; 1905 -> nineteen oh five."""
    hi, lo = divmod(n, 100)
    if lo == 0:
        return _cardinal(hi) + ["hundred"]
    return _cardinal(hi) + (["oh", _ONES[lo]] if lo < 10 else _cardinal(lo))


def spell_number(token: str) -> list[str] | None:
    """English words for a number token, or None when ``token`` is not one.

    Cardinals up to 999 999 999 999 (``42`` -> forty two); four-digit numbers from 1100 to 1999 and
    2010 to 2099 read as years (``1995`` -> nineteen ninety five); ordinals (``3rd`` -> third,
    ``21st`` -> twenty first); decimals digit by digit after "point" (``2.5`` -> two point five).
    """
    t = token.lower().replace(",", "")
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)", t)
    if m:
        words = _cardinal(int(m.group(1)))
        last = words[-1]
        words[-1] = _ORDINAL.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
        return words
    m = re.fullmatch(r"(\d+)\.(\d+)", t)
    if m:
        return _cardinal(int(m.group(1))) + ["point"] + [_ONES[int(d)] for d in m.group(2)]
    if not t.isdigit() or len(t) > 12:
        return None
    n = int(t)
    if len(t) == 4 and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        return _year(n)
    return _cardinal(n)


def expand_word(word: str, known: Callable[[str], bool]) -> list[str] | None:
    """Words to align in place of ``word`` when ``known(word)`` is False: a number spelled out, or a
    hyphenated compound split into its parts; None when neither applies (a true OOV).

    The replacement is only returned when every resulting word is ``known`` (a spelled number always
    is returned: its words are English words).
    """
    spelled = spell_number(word)
    if spelled is not None:
        return spelled
    if "-" in word:
        parts = [p for p in word.split("-") if p]
        expanded: list[str] = []
        for p in parts:
            if known(p):
                expanded.append(p)
                continue
            sub = spell_number(p)
            if sub is None:
                return None
            expanded.extend(sub)
        return expanded or None
    return None


def normalize_words(text: str) -> list[str]:
    """Lower-case word tokens of a transcript, punctuation removed (apostrophes and hyphens
    inside words kept: ``don't``, ``well-known``).

    Examples
    --------
    >>> normalize_words("Don't stop, Well-Known friends!")
    ["don't", 'stop', 'well-known', 'friends']
    """
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return [t.rstrip("'") or t for t in _WORD.findall(text)]
