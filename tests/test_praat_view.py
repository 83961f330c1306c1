"""The Praat-like utterance view: spectrogram numbers, tiers read from real TextGrids, the figure."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest

from phonalign.corpus import demo_corpus_dir, read_corpus
from phonalign.praat_view import (
    PraatViewError,
    alignment_tiers,
    plot_textgrid,
    plot_utterance,
    spectrogram_db,
    textgrid_tiers,
)
from phonalign.records import VOWEL_CLASSES
from phonalign.textgrid_io import read_alignment

SR = 16000


@pytest.fixture(scope="module")
def aligned_two_utterances(tmp_path_factory):
    """Two demo utterances (one per language) through the real `lam align` runner (textgrid backend)."""
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus

    utts = [u for u in read_corpus(None, preset="lam-demo") if u.utt_id in ("en_m1_s00_neu", "zh_m1_s00_neu")]
    assert len(utts) == 2
    out = tmp_path_factory.mktemp("aligned")
    align_corpus(utts, out, get_aligner("textgrid", textgrids=str(demo_corpus_dir() / "textgrids")), progress=False)
    return out


def test_spectrogram_of_a_tone_peaks_at_its_frequency_and_is_relative_to_its_maximum():
    t = np.arange(int(0.3 * SR)) / SR
    tone = np.sin(2 * np.pi * 1000.0 * t)
    times, freqs, power = spectrogram_db(tone, sr=SR, pre_emphasis_from=0.0)
    assert power.shape == (freqs.size, times.size)
    assert freqs[-1] <= 5000.0 and freqs[0] == 0.0
    assert times[1] - times[0] == pytest.approx(0.002)
    assert power.max() == pytest.approx(0.0)
    middle = power[:, times.size // 2]
    assert abs(freqs[np.argmax(middle)] - 1000.0) <= freqs[1] - freqs[0]
    # a 5 ms Gaussian window is broadband: energy 2 kHz away is far below the peak
    assert middle[np.argmin(np.abs(freqs - 3000.0))] < -40.0


def test_spectrogram_raises_on_empty_audio():
    with pytest.raises(PraatViewError, match="empty audio"):
        spectrogram_db(np.zeros(0), sr=SR)


def test_textgrid_tiers_reads_words_phones_and_vowel_classes_written_by_lam_align(aligned_two_utterances):
    tiers = textgrid_tiers(aligned_two_utterances / "textgrids" / "en_m1_s00_neu.TextGrid")
    assert list(tiers) == ["words", "phones", "vowel_class"]
    words = [lab for _, _, lab in tiers["words"] if lab]
    assert words == "The black cat sat on a warm mat".split()
    assert len(tiers["vowel_class"]) == len(tiers["phones"])
    classes = {lab for _, _, lab in tiers["vowel_class"] if lab}
    assert classes <= set(VOWEL_CLASSES) and "A" in classes  # the TRAP vowels of black, cat, sat, mat
    only = textgrid_tiers(aligned_two_utterances / "textgrids" / "en_m1_s00_neu.TextGrid", tiers=["phones", "nope"])
    assert list(only) == ["phones"]


def test_plot_textgrid_draws_waveform_spectrogram_and_one_row_per_tier(aligned_two_utterances):
    backend = matplotlib.get_backend()
    audio = demo_corpus_dir() / "audio" / "zh_m1_s00_neu.flac"
    fig = plot_textgrid(audio, aligned_two_utterances / "textgrids" / "zh_m1_s00_neu.TextGrid")
    assert matplotlib.get_backend() == backend  # a notebook keeps its inline backend
    axes = fig.get_axes()
    assert len(axes) == 2 + 3
    assert [ax.get_ylabel() for ax in axes[2:]] == ["words", "phones", "vowel_class"]
    assert axes[1].get_ylabel() == "frequency (Hz)" and axes[-1].get_xlabel() == "time (s)"
    phone_labels = {t.get_text() for t in axes[3].texts}
    grid = read_alignment(aligned_two_utterances / "textgrids" / "zh_m1_s00_neu.TextGrid")
    assert phone_labels == {p.label for p in grid.phones if p.label.strip()}
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_utterance_draws_only_the_requested_window():
    wave = np.random.default_rng(0).normal(size=SR).astype(np.float32)
    tiers = {"phones": [(0.0, 0.4, "a"), (0.4, 0.7, "b"), (0.7, 1.0, "c")]}
    fig = plot_utterance(wave, tiers, sr=SR, start=0.5, end=0.9)
    ax_wave, tier_ax = fig.get_axes()[0], fig.get_axes()[-1]
    assert ax_wave.get_xlim() == pytest.approx((0.5, 0.9))
    assert {t.get_text() for t in tier_ax.texts} == {"b", "c"}


def test_plot_utterance_raises_without_tiers_or_with_an_empty_window():
    wave = np.zeros(SR, dtype=np.float32)
    with pytest.raises(PraatViewError, match="no tier"):
        plot_utterance(wave, {}, sr=SR)
    with pytest.raises(PraatViewError, match="empty time window"):
        plot_utterance(wave, {"phones": [(0.0, 1.0, "a")]}, sr=SR, start=2.0)


def test_alignment_tiers_labels_only_vowel_classes_and_checks_their_number(aligned_two_utterances):
    grid = read_alignment(aligned_two_utterances / "textgrids" / "en_m1_s00_neu.TextGrid")
    classes = ["A" if k % 2 else "consonant" for k in range(len(grid.phones))]
    tiers = alignment_tiers(grid, vowel_classes=classes)
    assert [lab for _, _, lab in tiers["vowel_class"]] == ["A" if k % 2 else "" for k in range(len(grid.phones))]
    with pytest.raises(PraatViewError, match="vowel classes for"):
        alignment_tiers(grid, vowel_classes=classes[:-1])
