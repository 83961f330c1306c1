"""The espeak-ng generator and the committed demo corpus.

Tests marked ``espeak`` run libespeak-ng and are skipped only where it cannot be loaded; the rest
check the committed corpus and the pure functions (closure move, resampling, the parameter plan)
without it.
"""

from __future__ import annotations

import csv
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from phonalign.corpus import demo_corpus_dir
from phonalign.demo_corpus import EMOTION_PROSODY, demo_plan, jittered_prosody
from phonalign.espeak import ESPEAK_RATE, PhonemeEvent, Prosody, RawSynthesis, WordEvent, espeak_available
from phonalign.records import EMOTIONS
from phonalign.synth import move_stop_closures, phone_intervals, resample

DEMO = demo_corpus_dir()
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng is not installed")


def _manifest() -> list[dict]:
    with open(DEMO / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- pure functions -----------------------------------------------------------------------------

def _vowel_closure_burst(closure_amp: float) -> np.ndarray:
    """A vowel (0-2000), a closure (2000-3000) of the given amplitude, a burst (3000-3400)."""
    rng = np.random.default_rng(0)
    t = np.arange(2000) / ESPEAK_RATE
    vowel = 0.5 * np.sin(2 * np.pi * 150 * t)
    closure = closure_amp * np.sin(2 * np.pi * 150 * np.arange(1000) / ESPEAK_RATE)
    burst = 0.3 * rng.standard_normal(400)
    return np.concatenate([vowel, closure, burst]).astype(np.float32)


def test_stop_after_a_vowel_starts_at_its_silent_closure():
    x = _vowel_closure_burst(0.0)
    out = move_stop_closures([(0, 3000, "a", 1), (3000, 3400, "t", 1)], x)
    assert abs(out[1][0] - 2000) < 0.003 * ESPEAK_RATE  # within 3 ms of the true closure onset
    assert out[0] == (0, out[1][0], "a", 1) and out[1][1] == 3400


def test_voiced_stop_closure_with_a_weak_voice_bar_is_found_too():
    x = _vowel_closure_burst(0.02)  # voice bar 28 dB below the vowel
    out = move_stop_closures([(0, 3000, "a", 1), (3000, 3400, "d", 1)], x)
    assert abs(out[1][0] - 2000) < 0.003 * ESPEAK_RATE


def test_no_energy_drop_means_no_move_and_non_stops_are_never_moved():
    x = _vowel_closure_burst(0.5)
    assert move_stop_closures([(0, 3000, "n", 1), (3000, 3400, "d", 1)], x)[1][0] == 3000
    x = _vowel_closure_burst(0.0)
    assert move_stop_closures([(0, 3000, "a", 1), (3000, 3400, "s", 1)], x)[1][0] == 3000


def test_short_pause_before_a_stop_is_its_closure_but_a_long_pause_is_not():
    x = np.zeros(8000, dtype=np.float32)
    short = move_stop_closures([(0, 2000, "a", 1), (2000, 2800, "", 0), (2800, 3400, "ph", 2)], x)
    assert [iv[2] for iv in short] == ["a", "ph"] and short[1][0] == 2000  # 36 ms pause joined
    long = move_stop_closures([(0, 2000, "a", 1), (2000, 6000, "", 0), (6000, 6400, "ph", 2)], x)
    assert [iv[:3] for iv in long] == [(0, 2000, "a"), (2000, 6000, ""), (6000, 6400, "ph")]


def test_phone_intervals_merge_pauses_and_drop_zero_length_events():
    raw = RawSynthesis(
        samples=np.zeros(1000, dtype=np.int16), sample_rate=ESPEAK_RATE,
        phonemes=(PhonemeEvent(100, "w", 1), PhonemeEvent(300, "o", 1), PhonemeEvent(500, "_|", 5),
                  PhonemeEvent(500, "m", 5), PhonemeEvent(700, "_:", 7), PhonemeEvent(800, "_", 7),
                  PhonemeEvent(1000, "_", 7)),
        words=(WordEvent(0, 1, 3), WordEvent(500, 5, 4)),
    )
    assert phone_intervals(raw) == [(0, 100, "", 0), (100, 300, "w", 1), (300, 500, "o", 1),
                                     (500, 700, "m", 5), (700, 1000, "", 0)]


def test_resampling_to_16k_keeps_duration_and_frequency():
    sr_in = ESPEAK_RATE
    x = np.sin(2 * np.pi * 1000 * np.arange(sr_in) / sr_in).astype(np.float32)
    y = resample(x, sr_in, 16000)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(y[1000:15000]))
    assert abs(np.argmax(spectrum) * 16000 / 14000 - 1000) < 2
    ints = resample((x * 32767).astype(np.int16), sr_in, 16000)  # int16 input is scaled to [-1, 1]
    assert np.max(np.abs(ints)) <= 1.01 and np.max(np.abs(ints)) > 0.9


def test_parameter_plan_is_deterministic_and_seed_dependent():
    a, b = demo_plan(), demo_plan()
    assert a == b and len(a) == 240
    c = demo_plan(seed=1)
    assert [p.utt_id for p in c] == [p.utt_id for p in a] and [p.prosody for p in c] != [p.prosody for p in a]


def test_emotions_differ_in_the_direction_speech_does_and_keep_some_spread():
    n, s, h, a = (EMOTION_PROSODY[e] for e in ("Neutral", "Sadness", "Happiness", "Anger"))
    assert s.rate < n.rate < a.rate <= h.rate
    assert s.pitch < n.pitch < h.pitch and s.range < n.range < h.range
    assert a.volume > h.volume > n.volume > s.volume and a.range < n.range
    rng = np.random.default_rng(0)
    draws = [jittered_prosody("Happiness", rng) for _ in range(50)]
    assert len({p.rate for p in draws}) > 5 and len({p.pitch for p in draws}) > 5
    assert all(80 <= p.rate <= 450 and 0 <= p.pitch <= 100 and 0 <= p.range <= 100 for p in draws)


# -- the committed corpus -----------------------------------------------------------------------

def test_committed_corpus_is_the_plan_and_fits_in_15_mb():
    rows = _manifest()
    plan = demo_plan()
    assert [(r["utt_id"], r["text"], r["language"], r["speaker"], r["emotion"], r["split"]) for r in rows] == \
        [(p.utt_id, p.text, p.language, p.speaker, p.emotion, p.split) for p in plan]
    with open(DEMO / "synthesis.csv", newline="", encoding="utf-8") as fh:
        synth = {r["utt_id"]: r for r in csv.DictReader(fh)}
    for p in plan:
        row = synth[p.utt_id]
        assert Prosody(int(row["rate"]), int(row["pitch"]), int(row["range"]), int(row["volume"])) == p.prosody
        assert row["voice"] == p.voice
    size = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert size <= 15 * 1024 * 1024


def test_every_split_of_each_language_has_every_emotion_and_no_shared_sentence():
    rows = _manifest()
    for lang in ("en", "zh"):
        texts = {}
        for split in ("train", "dev", "test"):
            sel = [r for r in rows if r["language"] == lang and r["split"] == split]
            assert {r["emotion"] for r in sel} == set(EMOTIONS)
            texts[split] = {r["text"] for r in sel}
        assert not (texts["train"] & texts["test"]) and not (texts["dev"] & texts["test"])


def test_committed_audio_and_textgrids_agree():
    from phonalign.phonesets import unknown_labels
    from phonalign.textgrid_io import read_alignment

    labels = {"en": set(), "zh": set()}
    for r in _manifest()[::7]:
        info = sf.info(str(DEMO / r["audio_path"]))
        assert info.samplerate == 16000 and info.channels == 1
        al = read_alignment(DEMO / "textgrids" / f"{r['utt_id']}.TextGrid")
        assert al.xmax == pytest.approx(info.frames / 16000, abs=2e-3)
        assert [w.label for w in al.words if w.label] == r["text"].split()
        labels[r["language"]].update(p.label for p in al.phones)
    assert not unknown_labels(labels["en"], "espeak_en")
    assert not unknown_labels(labels["zh"], "espeak_cmn")


def test_lam_demo_preset_reads_the_manifest():
    from phonalign.corpus import read_corpus

    utts = read_corpus(DEMO / "manifest.csv", preset="lam-demo")
    assert len(utts) == 240 and all(u.emotion in EMOTIONS for u in utts)


# -- libespeak-ng itself ------------------------------------------------------------------------

@pytest.mark.espeak
@needs_espeak
def test_phone_starts_are_the_phoneme_event_samples():
    from phonalign.synth import synthesize

    syn = synthesize("She sells fish", voice="en-us", move_closures=False)
    ev = syn.raw.phonemes
    # espeak gives some phonemes no duration (the l of "sells" is spoken inside the vowel):
    # they have no interval
    events = [e for e, nxt in pairwise(ev) if not e.label.startswith("_") and nxt.sample > e.sample]
    assert len(events) < len([e for e in ev if not e.label.startswith("_")])
    phones = [p for p in syn.alignment.phones if p.label]
    assert [p.label for p in phones] == [e.label for e in events]
    assert [p.start for p in phones] == [e.sample / ESPEAK_RATE for e in events]
    assert syn.alignment.phones[-1].end == len(syn.raw.samples) / ESPEAK_RATE
    assert abs(len(syn.wave) - len(syn.raw.samples) * 16000 / ESPEAK_RATE) <= 1


@pytest.mark.espeak
@needs_espeak
def test_real_stop_closure_is_silent_after_the_move():
    from phonalign.synth import synthesize

    syn = synthesize("a cat", voice="en-us")
    k = next(p for p in syn.alignment.phones if p.label == "k")
    burst = next(e.sample for e in syn.raw.phonemes if e.label == "k")
    start = int(round(k.start * ESPEAK_RATE))
    assert burst - start > 0.02 * ESPEAK_RATE  # espeak's closure is tens of ms
    closure = syn.raw.samples[start + 60:burst].astype(np.float64) / 32768
    assert np.sqrt(np.mean(closure ** 2)) < 1e-3


@pytest.mark.espeak
@needs_espeak
def test_mandarin_voice_reads_tone_digits_as_syllables():
    from phonalign.synth import synthesize

    syn = synthesize("ni3 hao3", voice="cmn-latn-pinyin")
    assert [w.label for w in syn.alignment.words if w.label] == ["ni3", "hao3"]
    labels = [p.label for p in syn.alignment.phones if p.label]
    assert labels[0] == "n" and len(labels) <= 6  # no English "three" read out


@pytest.mark.espeak
@needs_espeak
def test_regenerating_an_utterance_reproduces_the_committed_boundaries():
    # libespeak-ng keeps state between calls (timings drift with what was synthesised before in
    # the same process), so the regeneration runs in a fresh interpreter, as the generator did:
    # otherwise this test would depend on which espeak-using tests ran before it.
    import json
    import subprocess
    import sys

    from phonalign.textgrid_io import read_alignment

    code = (
        "import json, sys\n"
        "from phonalign.demo_corpus import demo_plan\nfrom phonalign.synth import synthesize\n"
        "ids = sys.argv[1:]\n"
        "plan = {p.utt_id: p for p in demo_plan()}\n"
        "out = {}\n"
        "for u in ids:\n"
        "    p = plan[u]\n"
        "    syn = synthesize(p.text, voice=p.voice, prosody=p.prosody)\n"
        "    out[u] = [[x.label, x.start] for x in syn.alignment.phones]\n"
        "print(json.dumps(out))\n"
    )
    ids = ["en_f2_s03_ang", "zh_m1_s07_sad"]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, *ids], capture_output=True, text=True, cwd=root,
                          check=True)
    regenerated = json.loads(done.stdout.strip().splitlines()[-1])
    for utt_id in ids:
        ref = read_alignment(DEMO / "textgrids" / f"{utt_id}.TextGrid")
        assert [label for label, _ in regenerated[utt_id]] == [x.label for x in ref.phones]
        starts = np.array([start for _, start in regenerated[utt_id]])
        assert np.max(np.abs(starts - [x.start for x in ref.phones])) < 0.015


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.sampled_from(["_", "_:", "_|", "a", "t", "s"]),
                          st.integers(1, 40)), min_size=1, max_size=15))
def test_phone_intervals_tile_the_audio_for_any_event_list(events):
    n = 5000
    raw = RawSynthesis(np.zeros(n, dtype=np.int16), ESPEAK_RATE,
                       tuple(PhonemeEvent(s, lab, pos) for s, lab, pos in events), ())
    ivs = phone_intervals(raw)
    assert ivs[0][0] == 0 and ivs[-1][1] == n
    assert all(a[1] == b[0] for a, b in pairwise(ivs))
    assert all(e > s for s, e, _, _ in ivs)
    assert not any(a[2] == "" and b[2] == "" for a, b in pairwise(ivs))
