"""Long recordings: a recording plus a TextGrid tier of transcribed intervals is aligned interval by
interval on the recording's timeline; a long unsegmented recording gets an error that names that route.

The long recording is built from real speech: the seven English fixtures of tests/data/real
concatenated, each one an interval of the tier with its transcript.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from phonalign.align import get_aligner
from phonalign.align.run import align_corpus
from phonalign.audio import load_audio
from phonalign.corpus import read_corpus
from phonalign.records import Alignment, Interval, Utterance
from phonalign.textgrid_io import read_alignment, write_alignment

REAL = Path(__file__).resolve().parent / "data" / "real"
EN = sorted((REAL / "en").glob("*/*.flac"))
GAP = 0.3  # seconds of near-silence between the concatenated recordings


def build_long_recording(folder: Path, repeats: int = 1, *, name: str = "session") -> tuple[Path, list[tuple]]:
    """``folder/spk/<name>.wav`` + ``<name>.TextGrid`` (tier ``utterances``): the fixtures back to back
    ``repeats`` times. Returns the WAV and ``(start, end, text, source file)`` per interval."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    parts, intervals, t = [], [], 0.0
    for _ in range(repeats):
        for p in EN:
            gap = (rng.standard_normal(int(GAP * 16000)) * 1e-4).astype(np.float32)
            wave = load_audio(p)
            parts += [gap, wave]
            t += GAP
            intervals.append((t, t + len(wave) / 16000, p.with_suffix(".lab").read_text().strip(), p))
            t += len(wave) / 16000
    audio = np.concatenate(parts)
    spk = folder / "spk"
    spk.mkdir(parents=True, exist_ok=True)
    wav = spk / f"{name}.wav"
    sf.write(str(wav), audio, 16000, subtype="PCM_16")
    tier = tuple(Interval(s, e, text) for s, e, text, _ in intervals)
    # the TextGrid writer writes tiers words/phones: the interval tier is the "words" tier here
    write_alignment(spk / f"{name}.TextGrid", Alignment(words=tier, phones=tier, xmax=len(audio) / 16000))
    return wav, intervals


def test_intervals_of_a_long_recording_align_on_its_timeline_like_the_recordings_alone(tmp_path):
    wav, intervals = build_long_recording(tmp_path / "corpus")
    utts = read_corpus(tmp_path / "corpus", language="en", intervals="words")
    assert [u.utt_id for u in utts] == [f"session_{k:04d}" for k in range(1, 8)]
    assert all(u.audio_path == str(wav.resolve()) for u in utts)
    assert [(round(u.start, 6), round(u.end, 6)) for u in utts] == [(round(s, 6), round(e, 6))
                                                                   for s, e, _, _ in intervals]
    report = align_corpus(utts, tmp_path / "out", get_aligner("pocketsphinx"), progress=False)
    assert report.counts.ok == 7 and report.counts.suspect == 0, report.utterances
    assert not list((tmp_path / "out" / "work" / "intervals").glob("*.wav"))  # cuts removed once aligned
    alone = align_corpus([Utterance(p.stem, str(p), text, "en", "s", "real") for _, _, text, p in intervals],
                         tmp_path / "alone", get_aligner("pocketsphinx"), progress=False)
    assert alone.counts.ok == 7
    diffs = []
    for u, (start, end, _, p) in zip(utts, intervals, strict=True):
        long_tg = read_alignment(tmp_path / "out" / "textgrids" / f"{u.utt_id}.TextGrid")
        own = read_alignment(tmp_path / "alone" / "textgrids" / f"{p.stem}.TextGrid")
        # the output TextGrid covers the interval, on the recording's timeline
        assert long_tg.xmin == pytest.approx(start, abs=1e-6) and long_tg.xmax == pytest.approx(end, abs=1e-3)
        assert [x.label for x in long_tg.phones if x.label] == [x.label for x in own.phones if x.label]
        diffs += [a.start - start - b.start for a, b in zip(long_tg.phones, own.phones, strict=True)]
    # same audio, same transcript; only the seeded dither differs (it is seeded by the utterance id)
    assert np.mean(np.abs(diffs)) < 0.005
    seg = pq.read_table(tmp_path / "out" / "segments.parquet").to_pydict()
    assert min(seg["start"]) >= intervals[0][0] and max(seg["end"]) <= intervals[-1][1] + 1e-6
    utab = pq.read_table(tmp_path / "out" / "utterances.parquet").to_pydict()
    assert utab["start"][0] == pytest.approx(intervals[0][0]) and utab["end"][-1] == pytest.approx(intervals[-1][1])


def test_a_long_unsegmented_recording_gets_an_error_naming_the_interval_route(tmp_path):
    wav, intervals = build_long_recording(tmp_path / "corpus", repeats=2)
    text = " ".join(t for _, _, t, _ in intervals)
    report = align_corpus([Utterance("session", str(wav), text, "en", "s", "real")], tmp_path / "out",
                          get_aligner("pocketsphinx"), progress=False)
    (item,) = report.utterances
    assert item.status == "failed" and "too long to align as one utterance" in (item.reason or "")
    assert "--intervals" in (item.hint or "") and "start/end columns" in (item.hint or "")


def test_an_interval_outside_its_recording_is_reported(tmp_path):
    wav, _ = build_long_recording(tmp_path / "corpus")
    u = Utterance("late", str(wav), "no", "en", "s", "real", start=100.0, end=101.0)
    report = align_corpus([u], tmp_path / "out", get_aligner("pocketsphinx"), progress=False)
    assert "is not inside the recording" in (report.utterances[0].reason or "")


def test_the_interval_tier_must_exist(tmp_path):
    build_long_recording(tmp_path / "corpus")
    utts = read_corpus(tmp_path / "corpus", language="en", intervals="utterances")
    assert len(utts) == 0
    (rej,) = utts.report.rejected
    assert "no interval tier 'utterances'" in rej.message and "words" in (rej.hint or "")


def test_features_of_intervals_are_those_of_the_recordings_alone_on_the_recording_timeline(tmp_path):
    from analysis.extract import extract_features
    from analysis.store import FeatureStore
    from analysis.testing import random_model

    wav, intervals = build_long_recording(tmp_path / "corpus")
    utts = read_corpus(tmp_path / "corpus", language="en", intervals="words")[:3]
    align_corpus(utts, tmp_path / "out", get_aligner("pocketsphinx"), progress=False)
    alone = [Utterance(p.stem, str(p), text, "en", "s", "real") for _, _, text, p in intervals[:3]]
    align_corpus(alone, tmp_path / "alone", get_aligner("pocketsphinx"), progress=False)
    model = random_model("hubert")
    extract_features(tmp_path / "out", tmp_path / "f_long", model=model, device="cpu", progress=False)
    extract_features(tmp_path / "alone", tmp_path / "f_alone", model=model, device="cpu", progress=False)
    a, b = FeatureStore.open(tmp_path / "f_long"), FeatureStore.open(tmp_path / "f_alone")
    ia, ib = a.index.to_pydict(), b.index.to_pydict()
    rows_a = [k for k, kind in enumerate(ia["kind"]) if kind == "utt"]
    rows_b = [k for k, kind in enumerate(ib["kind"]) if kind == "utt"]
    order_a = sorted(rows_a, key=lambda k: ia["utt_id"][k])
    order_b = sorted(rows_b, key=lambda k: [p.stem for _, _, _, p in intervals[:3]].index(ib["utt_id"][k]))
    for k, (start, end, _, _) in zip(order_a, intervals[:3], strict=True):
        assert ia["start"][k] == pytest.approx(start) and ia["end"][k] == pytest.approx(end, abs=1e-4)
    # the same samples: the utterance vectors of every layer are the same
    np.testing.assert_allclose(a.read_layer(2)[order_a], b.read_layer(2)[order_b], rtol=1e-5, atol=1e-6)
    seg = [k for k, kind in enumerate(ia["kind"]) if kind == "segment"]
    assert min(ia["start"][k] for k in seg) >= intervals[0][0]  # segments on the recording's timeline
