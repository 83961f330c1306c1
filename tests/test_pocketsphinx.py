"""pocketsphinx backend on the bundled demo corpus: real alignments, OOVs, bad input, -j N.

Every test runs the real decoder (the pocketsphinx wheel ships its US-English model), on a few
utterances of the committed demo corpus, so the file takes seconds.
"""

from __future__ import annotations

import csv
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from phonalign.align import get_aligner
from phonalign.align.pocketsphinx_backend import (
    ARPABET_PHONES,
    PocketsphinxAligner,
    _tile,
    read_cmudict,
)
from phonalign.corpus import demo_corpus_dir
from phonalign.errors import AlignerError
from phonalign.records import Utterance
from phonalign.text_norm import normalize_words

DEMO = demo_corpus_dir()


def _demo(language: str, n: int, step: int = 1) -> list[Utterance]:
    with open(DEMO / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["language"] == language]
    return [Utterance(r["utt_id"], str(DEMO / r["audio_path"]), r["text"], r["language"], r["speaker"],
                      r["corpus"], r["emotion"], r["split"]) for r in rows[::step][:n]]


@pytest.fixture(scope="module")
def aligner() -> PocketsphinxAligner:
    a = PocketsphinxAligner()
    a.check_available()
    return a


@pytest.fixture(scope="module")
def english_results(aligner, tmp_path_factory):
    utts = _demo("en", 4, step=29)
    return utts, {r.utt_id: r for r in aligner.align(utts, tmp_path_factory.mktemp("ps"), jobs=1)}


def test_english_demo_utterances_align_to_words_and_stressless_arpabet(english_results):
    utts, results = english_results
    for u in utts:
        r = results[u.utt_id]
        assert r.ok, r.error
        assert [w.label for w in r.alignment.words if w.label] == normalize_words(u.text)
        labels = {p.label for p in r.alignment.phones if p.label}
        assert labels <= ARPABET_PHONES  # no stress digits, no SIL: silences are ""


def test_padding_is_removed_and_tiers_cover_the_audio_without_gaps(english_results):
    utts, results = english_results
    for u in utts:
        al = results[u.utt_id].alignment
        duration = sf.info(u.audio_path).frames / sf.info(u.audio_path).samplerate
        assert al.xmax == pytest.approx(duration, abs=1e-6)
        for tier in (al.words, al.phones):
            assert tier[0].start == 0.0 and tier[-1].end == pytest.approx(duration, abs=1e-9)
            assert all(a.end == b.start for a, b in pairwise(tier))
            assert all(iv.end > iv.start for iv in tier)


def test_first_consonant_starts_near_the_espeak_ground_truth(english_results):
    from phonalign.textgrid_io import read_alignment

    utts, results = english_results
    for u in utts:
        ref = read_alignment(DEMO / "textgrids" / f"{u.utt_id}.TextGrid")
        first_ref = next(p for p in ref.phones if p.label)
        first_hyp = next(p for p in results[u.utt_id].alignment.phones if p.label)
        assert abs(first_hyp.start - first_ref.start) < 0.03


def test_jobs_two_gives_exactly_the_alignments_of_jobs_one(aligner, english_results, tmp_path):
    utts, results = english_results
    parallel = {r.utt_id: r for r in aligner.align(utts, tmp_path, jobs=2)}
    assert parallel.keys() == results.keys()
    for utt_id, r in results.items():
        assert parallel[utt_id].alignment.phones == r.alignment.phones


def test_mandarin_utterance_fails_with_a_clear_reason(aligner, tmp_path):
    (result,) = list(aligner.align(_demo("zh", 1), tmp_path))
    assert not result.ok
    assert "English only" in result.error.message and "mandarin_mfa" in result.error.hint


def test_transcript_in_the_wrong_language_is_reported_as_not_english(aligner, tmp_path):
    zh = _demo("zh", 1)[0]
    wrong = Utterance("wrong_lang", zh.audio_path, zh.text, "en", "s", "c")
    (result,) = list(aligner.align([wrong], tmp_path))
    assert not result.ok and "does not look like English" in result.error.message
    assert set(result.info["oov"]) == set(normalize_words(zh.text))


def test_oov_word_is_listed_and_a_dictionary_file_supplies_it(tmp_path):
    en = _demo("en", 1)[0]  # "The black cat sat on a warm mat"
    text = en.text.replace("black", "blarck")
    utt = Utterance("oov", en.audio_path, text, "en", "s", "c")
    (result,) = list(PocketsphinxAligner().align([utt], tmp_path))
    assert not result.ok and result.info["oov"] == ["blarck"] and "--dictionary" in result.error.hint
    extra = tmp_path / "extra.dict"
    extra.write_text(";;; our additions\nBLARCK  B L AE1 K\n", encoding="utf-8")
    aligner = get_aligner("pocketsphinx", dictionary=str(extra), padding=0.4)
    (result,) = list(aligner.align([utt], tmp_path))
    assert result.ok, result.error
    assert "blarck" in [w.label for w in result.alignment.words]


@pytest.mark.espeak
def test_espeak_g2p_fallback_pronounces_unknown_words(tmp_path):
    from phonalign.espeak import espeak_available

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed")
    en = _demo("en", 1)[0]
    utt = Utterance("g2p", en.audio_path, en.text.replace("black", "blarck"), "en", "s", "c")
    (result,) = list(PocketsphinxAligner(g2p="espeak").align([utt], tmp_path))
    assert result.ok, result.error
    assert result.info["g2p"] == ["blarck"]


def test_dictionary_with_an_unknown_phone_names_its_line(tmp_path):
    bad = tmp_path / "bad.dict"
    bad.write_text("HELLO  HH AH L OW\nWORLD  W ER L DX2 Q9\n", encoding="utf-8")
    with pytest.raises(AlignerError) as err:
        read_cmudict(bad)
    assert err.value.line == 2 and "Q9" in err.value.message
    with pytest.raises(AlignerError):
        PocketsphinxAligner(dictionary=bad).check_available()


def test_cmudict_variants_and_stress_are_read(tmp_path):
    path = tmp_path / "v.dict"
    path.write_text("TOMATO  T AH0 M EY1 T OW2\nTOMATO(2)  T AH0 M AA1 T OW2\n", encoding="utf-8")
    assert read_cmudict(path) == {"tomato": [["T", "AH", "M", "EY", "T", "OW"], ["T", "AH", "M", "AA", "T", "OW"]]}


def _bad_inputs(tmp_path: Path) -> list[Utterance]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    en = _demo("en", 1)[0]
    wave, sr = sf.read(en.audio_path)
    sf.write(str(tmp_path / "short.wav"), wave[: int(0.3 * sr)], sr)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(sr), sr)
    (tmp_path / "empty.wav").write_bytes(b"")
    long_text = " ".join([en.text] * 4)
    return [
        en,
        Utterance("too_short", str(tmp_path / "short.wav"), long_text, "en", "s", "c"),
        Utterance("silent", str(tmp_path / "silent.wav"), "the cat", "en", "s", "c"),
        Utterance("empty", str(tmp_path / "empty.wav"), "the cat", "en", "s", "c"),
        Utterance("oov_word", en.audio_path, en.text.replace("warm", "wxrmq"), "en", "s", "c"),
        Utterance("pinyin_as_en", _demo("zh", 1)[0].audio_path, _demo("zh", 1)[0].text, "en", "s", "c"),
        _demo("zh", 1)[0],
    ]


def test_bad_inputs_each_get_a_reason_and_the_batch_goes_on(tmp_path):
    utts = _bad_inputs(tmp_path)
    results = {r.utt_id: r for r in PocketsphinxAligner().align(utts, tmp_path, jobs=2)}
    assert results[utts[0].utt_id].ok
    reasons = {k: r.error.message for k, r in results.items() if not r.ok}
    assert "no alignment" in reasons["too_short"]
    assert "silent" in reasons["silent"]
    assert "empty" in reasons["empty"]
    assert "wxrmq" in reasons["oov_word"] and results["oov_word"].info["oov"] == ["wxrmq"]
    assert "does not look like English" in reasons["pinyin_as_en"]
    assert "English only" in reasons[utts[-1].utt_id]


def test_align_corpus_writes_the_good_one_and_reports_every_bad_one(tmp_path):
    from phonalign.align.run import align_corpus

    utts = _bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    align_corpus(utts, out, PocketsphinxAligner(), jobs=1, progress=False)
    assert (out / "textgrids" / f"{utts[0].utt_id}.TextGrid").is_file()
    text = json.dumps(json.loads((out / "report.json").read_text(encoding="utf-8")))
    for utt in utts[1:]:
        assert utt.utt_id in text
    for reason in ("no alignment", "silent", "empty", "wxrmq", "does not look like English", "English only"):
        assert reason in text


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.5, 3.0), st.floats(0.0, 0.4), st.sampled_from(["", "AH", "K"])),
                max_size=12),
       st.floats(0.5, 3.0))
def test_intervals_are_tiled_over_the_audio_whatever_the_decoder_returns(raw, duration):
    # clipped, overlapping, zero-length and out-of-range intervals all become a clean tiling
    intervals = [[max(0.0, min(s, duration)), max(0.0, min(s + d, duration)), lab] for s, d, lab in raw]
    tiled = _tile(intervals, duration)
    assert tiled[0][0] == 0.0 and tiled[-1][1] == pytest.approx(duration)
    assert all(a[1] == b[0] for a, b in pairwise(tiled))
    assert all(e > s for s, e, _ in tiled)
    assert not any(a[2] == "" and b[2] == "" for a, b in pairwise(tiled))


def test_a_worker_that_dies_is_replaced_and_its_utterance_reported(monkeypatch, tmp_path, worker_targets):
    from phonalign.align import pocketsphinx_backend as backend

    # the workers run the real decoder, exiting with code 3 on the utterance "crash": what a
    # segfault inside pocketsphinx looks like from outside
    monkeypatch.setattr(backend, "WORKER_TARGET", f"{worker_targets}:pocketsphinx_dying_on_crash")
    good = _demo("en", 3)
    crash = Utterance("crash", good[0].audio_path, good[0].text, "en", "s", "c")
    results = list(PocketsphinxAligner().align([good[0], crash, good[1], good[2]], tmp_path, jobs=2))
    assert [r.utt_id for r in results] == [good[0].utt_id, "crash", good[1].utt_id, good[2].utt_id]
    by_id = {r.utt_id: r for r in results}
    assert not by_id["crash"].ok and "died (exit code 3)" in by_id["crash"].error.message
    assert all(by_id[u.utt_id].ok for u in good)


@pytest.mark.espeak
def test_lam_align_reports_oov_words_and_g2p_pronunciations(tmp_path):
    """The backend's facts reach report.json: OOV words of failed utterances without --g2p, and
    the words the espeak fallback pronounced when it is given."""
    from typer.testing import CliRunner

    from lam_train.cli import app
    from phonalign.espeak import espeak_available

    en = _demo("en", 1)[0]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["utt_id", "audio_path", "text", "language", "speaker", "corpus", "emotion", "split"])
        w.writerow(["oov1", en.audio_path, en.text.replace("black", "blarck"), "en", "s", "c", "", ""])
    runner = CliRunner()

    res = runner.invoke(app, ["align", str(tmp_path), str(tmp_path / "plain"), "--manifest", str(manifest),
                              "--aligner", "pocketsphinx", "--no-progress"])
    report = json.loads((tmp_path / "plain" / "report.json").read_text(encoding="utf-8"))
    assert report["oov_words"] == {"blarck": 1}, res.output
    (item,) = report["utterances"]
    assert item["status"] == "failed" and item["info"]["oov"] == ["blarck"]

    if not espeak_available():
        pytest.skip("libespeak-ng is not installed (the --g2p espeak half of this test needs it)")
    res = runner.invoke(app, ["align", str(tmp_path), str(tmp_path / "g2p"), "--manifest", str(manifest),
                              "--aligner", "pocketsphinx", "--g2p", "espeak", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "g2p" / "report.json").read_text(encoding="utf-8"))
    (item,) = report["utterances"]
    assert item["status"] == "ok" and item["info"]["g2p"] == ["blarck"]
