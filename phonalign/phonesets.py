"""Phone sets and the six shared vowel classes: the one place that knows what a phone label means.

Everything phonetic lives in one reviewed table, ``phonalign/data/phones.tsv`` (one row per phone
set and phone: unit class, diphthong / rhotic / syllabic flags, the *role* a named option may change,
the closest ARPAbet phone, notes); this module only reads it and applies the rules of
``PHONESETS.md`` that need more than one label:

* **Normalisation** (:func:`normalise`): Unicode NFC; ARPAbet stress digits, Chao tone letters,
  espeak tone numbers and pinyin tone digits are stripped and kept as ``stress`` / ``tone``;
  IPA and espeak stress marks are dropped. Length marks stay in the phone but never change its
  class.
* **Options** (:class:`ClassOptions`): TRAP, STRUT, Mandarin ü, rhotic vowels and diphthongs,
  named and recorded in every output's configuration.
* **Context** (:func:`classify`): MFA Mandarin writes pinyin *e* [ɤ] as ``o``, so its class depends
  on the neighbours; the pinyin phone set needs the initial to tell apical *-i* and *ü* apart; and
  when the pinyin syllable of each phone is known, vowels take the class of the pinyin final
  (syllables are parsed by :mod:`phonalign.pinyin`).

Silence and noise are recognised before the table (:data:`SILENCE_LABELS`, :data:`NOISE_LABELS`,
bracketed markers) and are never consonants; a label the table does not know is ``unknown``, never
silently a consonant (:func:`unknown_labels` lists them).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .defaults import UNIT_CLASSES, VOWEL_CLASSES
from .errors import PhoneSetError
from .pinyin import APICAL_INITIALS, PALATAL_INITIALS, pinyin_final, split_tone

__all__ = [
    "PHONE_SETS",
    "OPTION_CHOICES",
    "SILENCE_LABELS",
    "NOISE_LABELS",
    "ClassOptions",
    "PhoneInfo",
    "PhoneEntry",
    "normalise",
    "classify",
    "detect_phone_set",
    "phone_set_scores",
    "inventory",
    "unknown_labels",
    "to_arpabet",
    "load_table",
]

#: The phone sets the table covers, in the order detection reports them.
PHONE_SETS: tuple[str, ...] = (
    "arpabet",
    "mfa_english_ipa",
    "mfa_mandarin_ipa",
    "pinyin",
    "espeak_en",
    "espeak_cmn",
)

#: Phone sets whose rows carry an ARPAbet counterpart (:func:`to_arpabet`).
ARPABET_SETS: tuple[str, ...] = ("arpabet", "mfa_english_ipa", "espeak_en")

#: Valid values of each :class:`ClassOptions` field; the first is the default.
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "trap": ("A", "E"),
    "strut": ("@", "A"),
    "u_umlaut": ("i", "u", "exclude"),
    "rhotic": ("@", "exclude"),
    "diphthong": ("nucleus", "exclude"),
    "vowel_segments": ("all", "simple"),
}

#: Pinyin finals that are one vowel (no medial glide, no coda, no second vowel): what
#: ``vowel_segments="simple"`` keeps of phone sets whose vowel segments are whole finals.
SIMPLE_FINALS: frozenset[str] = frozenset({"a", "o", "e", "ê", "i", "u", "ü", "v", "er"})
#: Phone sets whose vowel segments may be whole finals (medial and coda inside the segment).
FINAL_SEGMENT_SETS: tuple[str, ...] = ("pinyin", "espeak_cmn")

#: Labels that mean "no speech", compared after NFC, stripping and lower-casing. espeak-ng's pause
#: mnemonics (``_``, ``_:``, ``_|``, ``_!``) are here because its phoneme events report pauses.
SILENCE_LABELS: frozenset[str] = frozenset(
    {"", "sil", "sp", "h#", "pau", "epi", "<eps>", "<sil>", "<s>", "</s>", "silence", "#",
     "_", "_:", "_|", "_!", "_!!", "_;"}
)

#: Labels that mark speech or noise the aligner could not transcribe (compared lower-cased).
#: Any other label wrapped in ``<>``, ``[]``, ``{}`` or ``++`` is treated the same way.
NOISE_LABELS: frozenset[str] = frozenset(
    {"spn", "<unk>", "<spn>", "<noise>", "<laugh>", "<breath>", "<cough>", "unk", "nsn", "noise",
     "+nsn+", "+spn+", "+breath+", "+cough+", "+laugh+", "+um+", "+uh+", "lg", "ns", "gbg"}
)

#: Words inside brackets that mean a pause ([SIL], <pause>, {SL}, [silence]).
_BRACKETED_SILENCE: frozenset[str] = frozenset({"sl", "pause", "sil", "silence", "sp", "eps", "blank", "s", "/s"})

_ROLES = frozenset({"", "trap", "strut", "strut_stressed", "u_umlaut", "rhotic", "mandarin_o", "apical"})
_TABLE_COLUMNS = ("phone_set", "phone", "unit_class", "diphthong", "rhotic", "syllabic", "role",
                  "arpabet", "arpabet_seq", "notes")
_BRACKETED = re.compile(r"^(<[^<>]*>|\[[^\[\]]*\]|\{[^{}]*\}|\+[^+]*\+)$")

# Chao tone letters, and the contours that are standard Mandarin tones. MFA writes tone 1 as ˥,
# tone 3 as ˨˩˦ or (half third) ˩, the neutral tone as ˧; older models used ˥˥ and ˨˩.
_TONE_LETTERS = "˥˦˧˨˩"
_TONE_LETTER_DIGIT = {"˥": "5", "˦": "4", "˧": "3", "˨": "2", "˩": "1"}
_CHAO_TONES: dict[str, int] = {
    "5": 1, "55": 1, "44": 1,
    "35": 2, "25": 2, "24": 2, "325": 2,
    "214": 3, "213": 3, "21": 3, "211": 3, "1": 3, "11": 3,
    "51": 4, "53": 4, "52": 4, "41": 4,
    "3": 5, "2": 5, "4": 5, "22": 5, "33": 5,
}
# espeak-ng (cmn-latn-pinyin) writes tones as Chao numbers after the vowel: 55 35 214/21 51, and
# the neutral tone as a level pitch that depends on the preceding tone.
_ESPEAK_TONES: dict[str, int] = {"55": 1, "35": 2, "214": 3, "21": 3, "51": 4, "53": 4,
                                 "11": 5, "22": 5, "33": 5, "44": 5}
_TRAILING_TONE_LETTERS = re.compile(f"[{_TONE_LETTERS}]+$")
_ARPABET_STRESS = re.compile(r"^([A-Za-z]+)([0-2])$")
_ESPEAK_CMN_TONE = re.compile(r"^(.*?[^0-9])([1-5]{2,3})$")
_IPA_STRESS = "ˈˌ"
_ESPEAK_STRESS = "',%="
_LENGTH_MARKS = "ːˑ"
_TIE_BARS = "\u0361\u035c"


# --------------------------------------------------------------------------------------------
# Options and records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassOptions:
    """Named choices of the vowel-class mapping (PHONESETS.md), recorded with every output.

    Parameters
    ----------
    trap : {"A", "E"}
        Class of English TRAP (ARPAbet ``AE``, IPA ``æ``, espeak ``a``/``aa``). Default ``"A"``.
    strut : {"@", "A"}
        Class of English STRUT (``AH1``/``AH2``, ``ʌ``, ``ɐ``, espeak ``V``). ``AH0`` and ``AH``
        without a stress digit stay ``@``. Default ``"@"``.
    u_umlaut : {"i", "u", "exclude"}
        Class of Mandarin ü [y] (finals ü, ün). ``"exclude"`` gives ``unit_class="excluded"``.
        Default ``"i"``.
    rhotic : {"@", "exclude"}
        ``"@"``: rhotic vowels (ER, ɚ, ɝ, Mandarin er) are ``@`` with ``rhotic=True``, other
        r-coloured vowels (espeak ``A@`` START, ``o@`` FORCE) keep their nucleus' class with
        ``rhotic=True``. ``"exclude"``: every vowel with ``rhotic=True`` is ``excluded``.
        Default ``"@"``.
    diphthong : {"nucleus", "exclude"}
        ``"nucleus"``: diphthongs take the class of their nucleus (``diphthong=True``);
        ``"exclude"``: every vowel with ``diphthong=True`` is ``excluded``. Default ``"nucleus"``.
    vowel_segments : {"all", "simple"}
        For phone sets whose vowel segment is a whole pinyin final (``pinyin``, e.g. Charsiu's
        ``iang2``; ``espeak_cmn``), which cannot split medial and coda off the nucleus:
        ``"all"`` keeps every final in the class of its nucleus; ``"simple"`` keeps only finals
        that are a single vowel (:data:`SIMPLE_FINALS`: a o e ê i u ü er) and makes the others
        (``ia``, ``ang``, ``uei``, ...) ``excluded``, so that a vowel segment holds no glide or
        nasal, as in English. Phone sets with separate medial and coda phones (MFA) are not
        affected. Default ``"all"``.

    Apical vowels (Mandarin -i after z c s zh ch sh r) are always consonants with
    ``syllabic=True``; no option maps them to ``i``.
    """

    trap: str = "A"
    strut: str = "@"
    u_umlaut: str = "i"
    rhotic: str = "@"
    diphthong: str = "nucleus"
    vowel_segments: str = "all"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            valid = OPTION_CHOICES[f.name]
            if value not in valid:
                raise PhoneSetError(
                    f"invalid value {value!r} for vowel-class option {f.name!r}",
                    hint=f"valid values of {f.name}: {', '.join(map(repr, valid))}",
                )

    def to_dict(self) -> dict[str, str]:
        """The options as a plain dict (what ``config.yaml`` stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, str] | None) -> ClassOptions:
        """Options from a plain dict (e.g. a ``config.yaml`` section); missing keys get defaults.

        Raises
        ------
        PhoneSetError
            For a key that is not an option or a value that is not valid, naming the valid ones.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise PhoneSetError(
                f"vowel-class options must be a mapping, not {type(data).__name__}",
                hint=f"e.g. {{'trap': 'A', 'strut': '@'}}; options: {', '.join(OPTION_CHOICES)}",
            )
        unknown = sorted(set(data) - set(OPTION_CHOICES))
        if unknown:
            raise PhoneSetError(
                f"unknown vowel-class option(s): {', '.join(map(repr, unknown))}",
                hint="valid options: " + "; ".join(
                    f"{k} ({' | '.join(v)})" for k, v in OPTION_CHOICES.items()),
            )
        return cls(**{k: data[k] for k in data})


@dataclass(frozen=True)
class PhoneInfo:
    """What one phone label means.

    Attributes
    ----------
    label : str
        The label as the aligner / TextGrid wrote it.
    phone : str
        Normalised base phone (NFC; stress digits, tone letters/digits and stress marks removed).
    unit_class : str
        One of :data:`phonalign.records.UNIT_CLASSES`.
    diphthong, rhotic, syllabic : bool
        Flags from the table (and the context rules).
    stress : int or None
        ARPAbet stress 0/1/2; None where the phone set has none.
    tone : int or None
        Mandarin tone 1-5 (5 = neutral); None where unknown.
    """

    label: str
    phone: str
    unit_class: str
    diphthong: bool = False
    rhotic: bool = False
    syllabic: bool = False
    stress: int | None = None
    tone: int | None = None

    @property
    def is_vowel(self) -> bool:
        """True for the six shared vowel classes."""
        return self.unit_class in VOWEL_CLASSES


@dataclass(frozen=True)
class PhoneEntry:
    """One row of ``phones.tsv``: a phone of a phone set and its default class and flags.

    ``role`` names the option or context rule that may change the class (``trap``, ``strut``,
    ``strut_stressed``, ``u_umlaut``, ``rhotic``, ``mandarin_o``, ``apical`` or ``""``);
    ``arpabet`` is the closest single ARPAbet phone (English sets; None where there is none) and
    ``arpabet_seq`` the phones CMUdict spells it with (``("AA", "R")`` for espeak ``A@``; the
    single phone where the column is empty).
    """

    phone_set: str
    phone: str
    unit_class: str
    diphthong: bool
    rhotic: bool
    syllabic: bool
    role: str
    arpabet: str | None
    arpabet_seq: tuple[str, ...] | None
    notes: str
    line: int


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _default_table_path() -> Path:
    return Path(str(resources.files("phonalign") / "data" / "phones.tsv"))


def _parse_bool(value: str, path: Path, line: int, column: str) -> bool:
    if value not in ("0", "1"):
        raise PhoneSetError(f"column {column!r} must be 0 or 1, not {value!r}", path=path, line=line,
                            hint="write 1 for true and 0 for false")
    return value == "1"


@lru_cache(maxsize=4)
def load_table(path: str | Path | None = None) -> dict[str, dict[str, PhoneEntry]]:
    """Read and check the phone table.

    Parameters
    ----------
    path : str or Path, optional
        A TSV with the columns of ``phonalign/data/phones.tsv``; default: that file.

    Returns
    -------
    dict
        phone set -> (phone -> :class:`PhoneEntry`), rows in file order.

    Raises
    ------
    PhoneSetError
        Naming the file and line of a malformed row, an unknown phone set / class / role, a phone
        that is not NFC, or a repeated (phone set, phone).
    """
    path = _default_table_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PhoneSetError(f"cannot read the phone table: {exc}", path=path,
                            hint="reinstall the package or pass a valid UTF-8 TSV") from exc
    table: dict[str, dict[str, PhoneEntry]] = {ps: {} for ps in PHONE_SETS}
    header_seen = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split("\t")
        if not header_seen:
            if tuple(cols) != _TABLE_COLUMNS:
                raise PhoneSetError(f"unexpected header {cols!r}", path=path, line=lineno,
                                    hint="columns: " + "\t".join(_TABLE_COLUMNS))
            header_seen = True
            continue
        if len(cols) != len(_TABLE_COLUMNS):
            raise PhoneSetError(f"expected {len(_TABLE_COLUMNS)} tab-separated columns, found {len(cols)}",
                                path=path, line=lineno, hint="columns: " + " ".join(_TABLE_COLUMNS))
        ps, phone, cls, dip, rho, syl, role, arpa, arpa_seq, notes = cols
        if (arpa or arpa_seq) and ps not in ARPABET_SETS:
            raise PhoneSetError(f"{ps} rows have no ARPAbet counterpart", path=path, line=lineno,
                                hint=f"fill the arpabet columns only for {', '.join(ARPABET_SETS)}")
        if ps not in table:
            raise PhoneSetError(f"unknown phone set {ps!r}", path=path, line=lineno,
                                hint=f"valid phone sets: {', '.join(PHONE_SETS)}")
        if cls not in UNIT_CLASSES or cls in ("silence", "unknown", "excluded"):
            raise PhoneSetError(f"invalid unit class {cls!r} for phone {phone!r}", path=path, line=lineno,
                                hint="a table row is one of A E @ i O u consonant; silence and noise "
                                     "are recognised before the table")
        if role not in _ROLES:
            raise PhoneSetError(f"unknown role {role!r}", path=path, line=lineno,
                                hint=f"valid roles: {', '.join(sorted(r for r in _ROLES if r))} or empty")
        if unicodedata.normalize("NFC", phone) != phone or not phone or phone != phone.strip():
            raise PhoneSetError(f"phone {phone!r} is empty, padded or not in Unicode NFC", path=path,
                                line=lineno, hint="write the phone in NFC without spaces")
        if phone in table[ps]:
            raise PhoneSetError(f"phone {phone!r} of {ps} is listed twice (line {table[ps][phone].line})",
                                path=path, line=lineno, hint="keep one row per (phone_set, phone)")
        table[ps][phone] = PhoneEntry(
            phone_set=ps, phone=phone, unit_class=cls,
            diphthong=_parse_bool(dip, path, lineno, "diphthong"),
            rhotic=_parse_bool(rho, path, lineno, "rhotic"),
            syllabic=_parse_bool(syl, path, lineno, "syllabic"),
            role=role, arpabet=arpa or None,
            arpabet_seq=tuple(arpa_seq.split()) if arpa_seq else ((arpa,) if arpa else None),
            notes=notes, line=lineno,
        )
    if not header_seen:
        raise PhoneSetError("the phone table has no header", path=path,
                            hint="columns: " + "\t".join(_TABLE_COLUMNS))
    for ps in ARPABET_SETS:
        for entry in table[ps].values():
            for code in (entry.arpabet,) + (entry.arpabet_seq or ()):
                if code is not None and code not in table["arpabet"]:
                    raise PhoneSetError(f"{code!r} (ARPAbet of {entry.phone!r}) is not an ARPAbet phone "
                                        "of the table", path=path, line=entry.line,
                                        hint="use a phone of the arpabet rows, without stress digit")
    return table


def _check_phone_set(phone_set: str) -> dict[str, PhoneEntry]:
    if phone_set not in PHONE_SETS:
        raise PhoneSetError(f"unknown phone set {phone_set!r}",
                            hint=f"valid phone sets: {', '.join(PHONE_SETS)}")
    return load_table()[phone_set]


def inventory(phone_set: str) -> list[str]:
    """The phones of ``phone_set`` listed in the table (normalised form), in table order."""
    return list(_check_phone_set(phone_set))


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


def _special_class(label: str) -> str | None:
    """``silence`` / ``unknown`` for pause and noise labels, else None. ``label`` is NFC+stripped."""
    low = label.lower()
    if low in SILENCE_LABELS:
        return "silence"
    if _BRACKETED.match(low):
        # a bracketed pause ([SIL] of Charsiu, <sil>, {SL}, +pause+) is silence; any other marker noise
        inner = low[1:-1].strip()
        return "silence" if inner in SILENCE_LABELS or inner in _BRACKETED_SILENCE else "unknown"
    if low in NOISE_LABELS:
        return "unknown"
    return None


def normalise(label: str, *, phone_set: str) -> tuple[str, int | None, int | None]:
    """Split a phone label into its base phone, stress and tone.

    Parameters
    ----------
    label : str
        The label as written (e.g. ``"AH1"``, ``"a˧˥"``, ``"ao3"``, ``"'i35"``).
    phone_set : str
        One of :data:`PHONE_SETS`.

    Returns
    -------
    phone : str
        NFC, stripped of surrounding white space; ARPAbet stress digits, Chao tone letters
        (Mandarin IPA), espeak tone numbers (espeak_cmn), pinyin tone digits or tone marks and IPA /
        espeak stress marks removed; IPA tie bars removed. Length marks are kept (they never
        change the class, see :func:`classify`).
    stress : int or None
        0, 1 or 2 for ARPAbet labels with a stress digit, else None.
    tone : int or None
        1-5 where the stripped tone is a standard Mandarin tone (5 = neutral), else None.
    """
    if phone_set not in PHONE_SETS:
        _check_phone_set(phone_set)
    if not isinstance(label, str):
        raise PhoneSetError(f"phone labels must be strings, not {type(label).__name__} ({label!r})",
                            hint="pass the labels of the phone tier as str")
    phone = unicodedata.normalize("NFC", label).strip()
    stress = tone = None
    if _special_class(phone) is not None:
        return phone, None, None
    if phone_set == "arpabet":
        m = _ARPABET_STRESS.match(phone)
        if m:
            phone, stress = m.group(1), int(m.group(2))
    elif phone_set in ("mfa_english_ipa", "mfa_mandarin_ipa"):
        phone = phone.strip(_IPA_STRESS)
        for tie in _TIE_BARS:
            phone = phone.replace(tie, "")
        if phone_set == "mfa_mandarin_ipa":
            m = _TRAILING_TONE_LETTERS.search(phone)
            if m and m.start() > 0:
                contour = "".join(_TONE_LETTER_DIGIT[c] for c in m.group(0))
                phone, tone = phone[: m.start()], _CHAO_TONES.get(contour)
    elif phone_set == "pinyin":
        phone, tone = split_tone(phone)
    else:  # espeak mnemonics
        phone = phone.strip(_ESPEAK_STRESS) or phone
        if phone_set == "espeak_cmn":
            m = _ESPEAK_CMN_TONE.match(phone)
            if m:
                phone, tone = m.group(1), _ESPEAK_TONES.get(m.group(2))
            phone = phone.strip(_ESPEAK_STRESS) or phone
    return phone, stress, tone


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def _lookup(phone: str, phone_set: str, table: dict[str, PhoneEntry]) -> PhoneEntry | None:
    entry = table.get(phone)
    if entry is not None:
        return entry
    if phone_set in ("mfa_english_ipa", "mfa_mandarin_ipa", "espeak_en", "espeak_cmn"):
        # Length marks do not change the class: ɪː is classified as ɪ, espeak "I:" as "I".
        bare = phone.rstrip(_LENGTH_MARKS + ":") if phone_set.startswith("espeak") else \
            "".join(c for c in phone if c not in _LENGTH_MARKS)
        if bare and bare != phone:
            return table.get(bare)
    elif phone_set == "arpabet" and phone.isascii() and phone.islower():
        return table.get(phone.upper())  # Buckeye/TIMIT-style lower-case ARPAbet
    elif phone_set == "pinyin" and not phone.islower():
        return table.get(phone.lower())  # "ZH", "Ao3": pinyin is written in lower case
    return None


def _class_for(entry_class: str, role: str, diphthong: bool, rhotic: bool, stress: int | None,
               options: ClassOptions) -> str:
    """Apply the named options to a table class."""
    cls = entry_class
    if role == "trap" and options.trap != "A":
        cls = options.trap
    elif role == "strut" and options.strut != "@":
        cls = options.strut
    elif role == "strut_stressed" and options.strut != "@" and stress in (1, 2):
        cls = options.strut
    elif role == "u_umlaut":
        cls = "excluded" if options.u_umlaut == "exclude" else options.u_umlaut
    if cls in VOWEL_CLASSES:
        if rhotic and options.rhotic == "exclude":
            cls = "excluded"
        elif diphthong and options.diphthong == "exclude":
            cls = "excluded"
    return cls


def _resolve(label, phone_set: str, options: ClassOptions) -> PhoneInfo:
    """Context-free meaning of one label (cached by :func:`classify`)."""
    if label is None:
        label = ""
    if not isinstance(label, str):
        raise PhoneSetError(f"phone labels must be strings, not {type(label).__name__} ({label!r})",
                            hint="pass the labels of the phone tier as str")
    stripped = unicodedata.normalize("NFC", label).strip()
    special = _special_class(stripped)
    if special is not None:
        return PhoneInfo(label, stripped, special)
    phone, stress, tone = normalise(label, phone_set=phone_set)
    entry = _lookup(phone, phone_set, load_table()[phone_set])
    if entry is None:
        return PhoneInfo(label, phone, "unknown", stress=stress, tone=tone)
    cls = _class_for(entry.unit_class, entry.role, entry.diphthong, entry.rhotic, stress, options)
    return PhoneInfo(label, entry.phone, cls, entry.diphthong, entry.rhotic, entry.syllabic, stress, tone)


# One label -> PhoneInfo dict per (phone set, options): classify() is called on millions of phones,
# and the context-free meaning of a label never changes, so each label is resolved once.
_CACHES: dict[tuple[str, ClassOptions], dict] = {}
_CACHE_LIMIT = 200_000


def _cache_for(phone_set: str, options: ClassOptions) -> dict:
    key = (phone_set, options)
    cache = _CACHES.get(key)
    if cache is None or len(cache) > _CACHE_LIMIT:
        cache = _CACHES[key] = {}
    return cache


def classify(
    labels: Sequence[str],
    *,
    phone_set: str,
    options: ClassOptions = ClassOptions(),
    context: Sequence[str | None] | None = None,
) -> list[PhoneInfo]:
    """Classify a whole utterance's phone labels, in order.

    Parameters
    ----------
    labels : sequence of str, length n
        The phone labels of one utterance in time order (pauses included: their neighbours matter
        for the Mandarin ``o`` rule). ``None`` is read as an empty label (silence).
    phone_set : str
        One of :data:`PHONE_SETS` (see :func:`detect_phone_set`).
    options : ClassOptions
        Named options of the mapping.
    context : sequence of (str or None), length n, optional
        The pinyin syllable (``"ge4"``, ``"zhong1"``, ``"lüe4"``) each phone belongs to, or None for
        phones without one (pauses, English). Where given, the vowel of a Mandarin syllable takes the
        class of its pinyin final (PHONESETS.md), apical -i becomes a syllabic consonant, and a
        missing tone is taken from the syllable. Only for the Mandarin phone sets.

    Returns
    -------
    list of PhoneInfo, length n

    Raises
    ------
    PhoneSetError
        Unknown phone set, non-string label, context of the wrong length or an unparseable pinyin
        syllable. Labels the table does not know are not errors: they come back ``unknown``.
    """
    table = _check_phone_set(phone_set)
    if not isinstance(options, ClassOptions):
        raise PhoneSetError(f"options must be a ClassOptions, not {type(options).__name__}",
                            hint="use ClassOptions.from_dict(...) to build one from a config")
    if not isinstance(labels, (list, tuple)):
        labels = list(labels)
    cache = _cache_for(phone_set, options)
    try:
        out = [cache[lab] for lab in labels]
    except (KeyError, TypeError):
        for lab in labels:
            if lab is not None and not isinstance(lab, str):
                raise PhoneSetError(f"phone labels must be strings, not {type(lab).__name__} ({lab!r})",
                                    hint="pass the labels of the phone tier as str") from None
            if lab not in cache:
                cache[lab] = _resolve(lab, phone_set, options)
        out = [cache[lab] for lab in labels]
    if phone_set == "mfa_mandarin_ipa":
        _mandarin_ipa_context(out, options)
    elif phone_set == "pinyin":
        _pinyin_label_context(out, options)
    if context is not None:
        _apply_pinyin_context(out, context, phone_set, table, options)
    if options.vowel_segments == "simple" and phone_set in FINAL_SEGMENT_SETS:
        for i, info in enumerate(out):
            if info.unit_class in VOWEL_CLASSES and not _simple_final(info.phone, phone_set, table):
                out[i] = PhoneInfo(info.label, info.phone, "excluded", info.diphthong, info.rhotic,
                                   info.syllabic, info.stress, info.tone)
    return out


def _simple_final(phone: str, phone_set: str, table: dict[str, PhoneEntry]) -> bool:
    """Is this vowel segment a single vowel (no glide, coda or second vowel inside it)?"""
    if phone_set == "pinyin":
        return phone.lower() in SIMPLE_FINALS
    entry = table.get(phone)  # espeak_cmn: compound vowels are the table's diphthongs; ong holds its nasal
    return entry is not None and not entry.diphthong and phone != "ong"


def _replace(info: PhoneInfo, entry_class: str, role: str, options: ClassOptions, *,
             rhotic: bool | None = None, syllabic: bool | None = None,
             diphthong: bool | None = None, tone: int | None = None) -> PhoneInfo:
    rh = info.rhotic if rhotic is None else rhotic
    dp = info.diphthong if diphthong is None else diphthong
    cls = _class_for(entry_class, role, dp, rh, info.stress, options)
    return PhoneInfo(info.label, info.phone, cls, dp, rh,
                     info.syllabic if syllabic is None else syllabic, info.stress,
                     info.tone if tone is None else tone)


def _mandarin_ipa_context(out: list[PhoneInfo], options: ClassOptions) -> None:
    """MFA Mandarin: ``o`` is [o] after w or a labialised onset, [ɤ] (``@``) otherwise; ``@``
    vowels before ``ɻ`` (er) are rhotic."""
    n = len(out)
    cache = _cache_for("mfa_mandarin_ipa+o", options)
    for i, info in enumerate(out):
        phone = info.phone
        if phone != "o" and phone != "ə":
            continue
        nxt = out[i + 1].phone if i + 1 < n else ""
        if nxt == "ɻ":
            rule = "rhotic"
        elif phone == "ə":
            continue
        elif nxt == "ŋ":
            continue  # the table's default, @
        elif i > 0 and (out[i - 1].phone == "w" or out[i - 1].phone.endswith("ʷ")):
            rule = "O"
        else:
            continue  # the table's default, @
        key = (info.label, rule)
        new = cache.get(key)
        if new is None:
            new = cache[key] = (_replace(info, "@", "", options, rhotic=True) if rule == "rhotic"
                                else _replace(info, "O", "", options))
        out[i] = new


def _pinyin_label_context(out: list[PhoneInfo], options: ClassOptions) -> None:
    """Pinyin initial/final labels: the initial tells apical -i and ü apart, and MFA's pinyin
    lexicon splits nasal codas off (``o ng`` = ong, ``ia n`` = ian, ``u n`` after j = ün)."""
    table = load_table()["pinyin"]
    n = len(out)
    for i, info in enumerate(out):
        phone = info.phone
        if phone not in ("i", "u", "un", "uan", "ue", "o", "io", "ia", "ü", "v"):
            continue
        prev = out[i - 1].phone if i > 0 else ""
        nxt = out[i + 1].phone if i + 1 < n else ""
        final = phone
        if phone == "i" and prev in APICAL_INITIALS:
            final = "iii" if prev in ("zh", "ch", "sh", "r") else "ii"
        elif prev in PALATAL_INITIALS and phone in ("u", "un", "uan", "ue"):
            final = {"u": "ün" if nxt == "n" else "ü", "un": "ün", "uan": "üan", "ue": "üe"}[phone]
        elif phone in ("ü", "v") and nxt == "n":
            final = "ün"
        elif phone in ("o", "io") and nxt == "ng":
            final = "iong" if phone == "io" else "ong"
        elif phone == "ia" and nxt == "n":
            final = "ian"
        if final != phone:
            e = table[final]
            out[i] = _replace(info, e.unit_class, e.role, options, rhotic=e.rhotic or info.rhotic,
                              syllabic=e.syllabic, diphthong=e.diphthong)


def _apply_pinyin_context(out: list[PhoneInfo], context: Sequence[str | None], phone_set: str,
                          table: dict[str, PhoneEntry], options: ClassOptions) -> None:
    if phone_set not in ("mfa_mandarin_ipa", "pinyin", "espeak_cmn"):
        raise PhoneSetError(f"pinyin context applies to Mandarin phone sets, not {phone_set!r}",
                            hint="pass context=None for English phone sets")
    context = list(context)
    if len(context) != len(out):
        raise PhoneSetError(f"context has {len(context)} syllables for {len(out)} phone labels",
                            hint="give one pinyin syllable (or None) per phone label")
    # The result for a phone depends only on its label and its syllable: cache it, so that a corpus
    # of a few thousand distinct (label, syllable) pairs costs one dict lookup per phone.
    cache = _cache_for(phone_set + "+pinyin", options)
    missing = object()
    for i, syl in enumerate(context):
        if syl is None or syl == "":
            continue
        key = (out[i].label, syl)
        new = cache.get(key, missing)
        if new is missing:
            new = cache[key] = _with_syllable(out[i], syl, phone_set, table, options)
        if new is not None:
            out[i] = new


def _with_syllable(info: PhoneInfo, syl: str, phone_set: str, table: dict[str, PhoneEntry],
                   options: ClassOptions) -> PhoneInfo | None:
    """``info`` re-classified from the final of its pinyin syllable, or None to keep it."""
    if not isinstance(syl, str):
        raise PhoneSetError(f"context syllables must be strings or None, not {type(syl).__name__}",
                            hint="give one pinyin syllable (or None) per phone label")
    if info.unit_class in ("silence", "unknown"):
        return None
    entry = _lookup(info.phone, phone_set, table)
    if entry is None:
        return None
    final, tone, erhua = pinyin_final(syl)
    if not (entry.unit_class in VOWEL_CLASSES or entry.role == "apical"):
        if info.tone is None and tone is not None and entry.syllabic:
            return _replace(info, entry.unit_class, entry.role, options, tone=tone)
        return None
    finals = load_table()["pinyin"]
    if final is None or final not in finals:
        return None  # syllabic nasal interjections (m, n, ng): keep the phone's own class
    f = finals[final]
    return _replace(info, f.unit_class, f.role, options, rhotic=f.rhotic or erhua, syllabic=f.syllabic,
                    tone=info.tone if info.tone is not None else tone)


# --------------------------------------------------------------------------------------------
# Inventory checks, ARPAbet, detection
# --------------------------------------------------------------------------------------------


def unknown_labels(labels: Iterable[str], phone_set: str) -> set[str]:
    """Labels that are neither pause, noise marker nor a phone of ``phone_set``'s table.

    These are the gaps to fix (a wrong ``--phone-set``, or a phone to add to ``phones.tsv``);
    noise markers such as ``spn`` are expected and not listed.
    """
    _check_phone_set(phone_set)
    distinct = set(labels)
    infos = classify(sorted(distinct, key=str), phone_set=phone_set)
    # noise markers come back with their stripped label as phone; table misses are what is left
    return {i.label for i in infos if i.unit_class == "unknown" and _special_class(i.phone) is None}


def to_arpabet(phones: Sequence[str], *, phone_set: str, expand: bool = False) -> list[str | None]:
    """The closest ARPAbet phone (no stress digit) of each English phone label.

    Parameters
    ----------
    phones : sequence of str, length n
        Phone labels of ``phone_set`` (stress/length marks allowed).
    phone_set : {"arpabet", "mfa_english_ipa", "espeak_en"}
    expand : bool
        False (default): one ARPAbet phone per label, for comparing phone segments one to one
        (espeak ``A@`` -> ``"AA"``). True: the phones CMUdict spells the label with, joined by
        spaces (``A@`` -> ``"AA R"``, ``@L`` -> ``"AH L"``), for pronunciations.

    Returns
    -------
    list of (str or None), length n
        None for pauses, noise, unknown labels and phones with no ARPAbet counterpart (espeak
        ``r-``, the r-colouring after ``3`` that ARPAbet folds into ``ER``, and ``;``, a palatal
        glide CMUdict does not write).

    Raises
    ------
    PhoneSetError
        For a phone set without an ARPAbet column (Mandarin).
    """
    table = _check_phone_set(phone_set)
    if phone_set not in ARPABET_SETS:
        raise PhoneSetError(f"phone set {phone_set!r} has no ARPAbet mapping",
                            hint=f"to_arpabet works for {', '.join(ARPABET_SETS)}")
    out: list[str | None] = []
    for info in classify(phones, phone_set=phone_set):
        entry = None if info.unit_class in ("silence", "unknown") else _lookup(info.phone, phone_set, table)
        if entry is None or entry.arpabet is None:
            out.append(None)
        else:
            out.append(" ".join(entry.arpabet_seq or (entry.arpabet,)) if expand else entry.arpabet)
    return out


def _recognised(label: str, phone_set: str, table: dict[str, PhoneEntry]) -> bool:
    phone, _, _ = normalise(label, phone_set=phone_set)
    entry = table.get(phone)
    if entry is None and phone_set in ("mfa_english_ipa", "mfa_mandarin_ipa"):
        entry = table.get("".join(c for c in phone if c not in _LENGTH_MARKS))
    return entry is not None


def phone_set_scores(labels: Iterable[str]) -> dict[str, float]:
    """For each phone set, the share of distinct speech labels its table recognises.

    Pauses and noise markers are left out. Matching is exact after :func:`normalise` (ARPAbet is
    upper case; tone letters count only for Mandarin IPA), so the scores separate the sets.

    Returns
    -------
    dict
        phone set -> score in [0, 1], in :data:`PHONE_SETS` order; all 0 when no speech label.
    """
    distinct = _speech_labels(labels)
    table = load_table()
    if not distinct:
        return {ps: 0.0 for ps in PHONE_SETS}
    return {ps: sum(_recognised(lab, ps, table[ps]) for lab in distinct) / len(distinct)
            for ps in PHONE_SETS}


def _speech_labels(labels: Iterable[str]) -> set[str]:
    out = set()
    for lab in Counter(labels):
        if not isinstance(lab, str):
            continue
        norm = unicodedata.normalize("NFC", lab).strip()
        if _special_class(norm) is None:
            out.add(norm)
    return out


#: Detection needs the best phone set to recognise this share of the distinct labels ...
DETECT_MIN_SCORE = 0.6
#: ... and to beat the runner-up by this margin, or else be the only close candidate that
#: recognises labels no other close candidate does.
DETECT_MARGIN = 0.1


def detect_phone_set(labels: Iterable[str]) -> str:
    """Guess the phone set of a collection of phone labels (a TextGrid's, or a corpus').

    Parameters
    ----------
    labels : iterable of str
        Phone labels; pauses and noise markers are ignored.

    Returns
    -------
    str
        One of :data:`PHONE_SETS`.

    Raises
    ------
    PhoneSetError
        When no set recognises enough labels, or two sets explain them equally well; the message
        carries every set's score and the hint ``--phone-set NAME``.
    """
    labels = list(labels)
    distinct = _speech_labels(labels)
    scores = phone_set_scores(distinct)
    ranked = sorted(PHONE_SETS, key=lambda ps: -scores[ps])
    shown = ", ".join(f"{ps}={scores[ps]:.2f}" for ps in ranked)
    hint = f"name the phone set with --phone-set NAME (one of: {', '.join(PHONE_SETS)})"
    if not distinct:
        raise PhoneSetError("cannot detect the phone set: no phone labels besides pauses and noise",
                            hint=hint)
    best = ranked[0]
    if scores[best] < DETECT_MIN_SCORE:
        examples = sorted(distinct)[:12]
        raise PhoneSetError(f"cannot detect the phone set: no table recognises enough of the labels "
                            f"(scores: {shown}; labels such as {examples})", hint=hint)
    close = [ps for ps in ranked if scores[best] - scores[ps] < DETECT_MARGIN]
    if len(close) == 1:
        return best
    table = load_table()
    known = {ps: {lab for lab in distinct if _recognised(lab, ps, table[ps])} for ps in close}
    exclusive = {ps: known[ps] - set().union(*(known[o] for o in close if o != ps)) for ps in close}
    with_evidence = [ps for ps in close if exclusive[ps]]
    if len(with_evidence) == 1 and scores[with_evidence[0]] >= DETECT_MIN_SCORE:
        return with_evidence[0]
    raise PhoneSetError(f"the phone set is ambiguous between {', '.join(close)} (scores: {shown})",
                        hint=hint)
