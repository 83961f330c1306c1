"""Synthetic speech with exact phone boundaries: espeak-ng's events turned into ground truth.

This module owns the generator of the bundled demo corpus (:mod:`scripts.make_demo_corpus`; what
the corpus holds is :mod:`phonalign.demo_corpus`). espeak-ng (:mod:`phonalign.espeak`) knows where
every phoneme it produces starts. That gives ground-truth phone boundaries without any aligner,
which is what the alignment-accuracy measurements (:mod:`phonalign.align_eval`) need.

Three corrections turn espeak's events into the boundaries a phonetician (and TIMIT, and every
forced aligner) would draw:

* **Stop closures.** espeak marks a stop or affricate at its *burst*; the closure silence before it
  is left at the end of the previous phone. :func:`move_stop_closures` moves the boundary back to
  the start of the closure, found from the short-time energy of the previous phone. A short pause
  symbol right before a stop (Mandarin ``_|``, about 40 ms) *is* that closure and joins the stop.
* **Pauses.** espeak's pause symbols (``_``, ``_:``, ``_|``, ``_!`` ...) become empty labels
  (silence); adjacent silences merge and zero-length intervals disappear.
* **Sample rate.** Audio is resampled from 22050 Hz to 16 kHz with soxr; times are kept in
  seconds, so boundaries do not move.

Speech and boundaries vary by a few milliseconds between runs of espeak-ng (it is not bit-exact
across builds), so the corpus is generated once and committed; this module is what regenerates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .espeak import ESPEAK_RATE, Prosody, RawSynthesis, SynthError, is_pause, synthesize_raw
from .records import Alignment, Interval

#: rate of the audio this module returns, Hz (what every speech model of the toolkit reads).
OUTPUT_RATE = 16000

#: stops and affricates (espeak mnemonics, English and Mandarin) whose closure precedes the burst.
STOP_PHONES = frozenset(
    {"p", "t", "k", "b", "d", "g", "tS", "dZ", "t#", "d#", "t2", "d2", "k2", "t3",
     "ph", "th", "kh", "ts", "tsh", "ts.", "ts.h", "tS;", "tS;h"}
)
#: a pause at most this long (seconds) right before a stop is taken as the stop's closure.
MAX_CLOSURE_PAUSE = 0.060


@dataclass(frozen=True)
class Synthesis:
    """A synthesised utterance: ``wave`` (n,) float32 in [-1, 1] at ``sample_rate`` Hz, and its
    ground-truth :class:`~phonalign.records.Alignment` (seconds; phones in espeak mnemonics,
    silences as ``""``)."""

    wave: np.ndarray
    sample_rate: int
    alignment: Alignment
    raw: RawSynthesis
    #: phone intervals in samples of ``raw`` (after the closure move), for :func:`build_alignment`
    intervals: tuple[tuple[int, int, str, int], ...] = ()


def phone_intervals(raw: RawSynthesis) -> list[tuple[int, int, str, int]]:
    """Phone intervals in samples from the phoneme events of ``raw``.

    Returns
    -------
    list of (start, end, label, text_position)
        ``start``/``end`` in samples at ``raw.sample_rate``; pauses get the label ``""`` (and
        text position 0); adjacent pauses are merged and zero-length intervals dropped. The first
        interval starts at 0 and the last ends at ``len(raw.samples)``.
    """
    n = len(raw.samples)
    events = sorted(raw.phonemes, key=lambda e: e.sample)  # stable: equal samples keep their order
    out: list[tuple[int, int, str, int]] = []
    bounds = [min(max(e.sample, 0), n) for e in events] + [n]
    if events and bounds[0] > 0:
        out.append((0, bounds[0], "", 0))
    for ev, start, end in zip(events, bounds[:-1], bounds[1:], strict=True):
        if end <= start:
            continue
        label = "" if is_pause(ev.label) else ev.label
        pos = 0 if label == "" else ev.text_position
        if out and label == "" and out[-1][2] == "":
            out[-1] = (out[-1][0], end, "", 0)
        else:
            out.append((start, end, label, pos))
    return out


def short_time_energy_db(x: np.ndarray, *, window: int) -> np.ndarray:
    """Energy in dB of a centred moving window at every sample.

    Parameters
    ----------
    x : (n,) float array, amplitude in [-1, 1].
    window : window length in samples.

    Returns
    -------
    (n,) float64, dB relative to full scale (digital silence gives -120 dB).
    """
    x = np.asarray(x, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    half = window // 2
    idx = np.arange(len(x))
    lo = np.clip(idx - half, 0, len(x))
    hi = np.clip(idx + half + 1, 0, len(x))
    mean = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return 10.0 * np.log10(mean + 1e-12)


def move_stop_closures(
    intervals: Sequence[tuple[int, int, str, int]],
    samples: np.ndarray,
    *,
    sample_rate: int = ESPEAK_RATE,
    drop_db: float = 20.0,
    window_s: float = 0.005,
    min_keep_s: float = 0.015,
) -> list[tuple[int, int, str, int]]:
    """Move the start of each stop or affricate back to the start of its closure.

    espeak reports a stop at its burst; the closure (silence, or a weak voice bar for b d g) sits
    at the end of the previous phone. For a stop after a speech phone, the closure is the final
    stretch of that phone whose short-time energy stays more than ``drop_db`` below the phone's
    peak; the boundary moves to its start, leaving the previous phone at least ``min_keep_s``.
    A pause of at most :data:`MAX_CLOSURE_PAUSE` right before a stop is the closure itself and
    joins the stop. Stops after longer pauses keep their start (a closure inside a pause cannot
    be seen).

    Parameters
    ----------
    intervals : as returned by :func:`phone_intervals` (samples).
    samples : (n,) int16 or float audio the intervals index.
    sample_rate : Hz of ``samples``.
    drop_db : how far below the previous phone's peak energy counts as closure, dB.
    window_s : energy window, seconds.
    min_keep_s : the previous phone keeps at least this much, seconds.

    Returns
    -------
    list of (start, end, label, text_position), same length as ``intervals`` unless a pause was
    absorbed by its stop.
    """
    x = np.asarray(samples, dtype=np.float64)
    if np.issubdtype(np.asarray(samples).dtype, np.integer):
        x = x / 32768.0
    window = max(int(round(window_s * sample_rate)), 1)
    min_keep = int(round(min_keep_s * sample_rate))
    max_pause = int(round(MAX_CLOSURE_PAUSE * sample_rate))
    out: list[list[Any]] = [list(iv) for iv in intervals]
    i = 1
    while i < len(out):
        start, end, label, pos = out[i]
        prev = out[i - 1]
        if label in STOP_PHONES:
            if prev[2] == "":
                if prev[1] - prev[0] <= max_pause:
                    out[i][0] = prev[0]
                    if i >= 2:
                        out[i - 2][1] = prev[0]
                    del out[i - 1]
                    continue  # the list shrank: re-examine the same stop at its new index
            else:
                # energy inside the previous phone only, so the burst does not leak into it
                seg = short_time_energy_db(x[prev[0]:start], window=window)
                if len(seg) > min_keep:
                    threshold = seg.max() - drop_db
                    loud = np.flatnonzero(seg >= threshold)
                    # last loud sample of the previous phone: the closure begins after it
                    closure = prev[0] + int(loud[-1]) + 1 if loud.size else prev[0]
                    closure = max(closure, prev[0] + min_keep)
                    if closure < start:
                        out[i - 1][1] = closure
                        out[i][0] = closure
        i += 1
    return [(int(s), int(e), str(lab), int(pos)) for s, e, lab, pos in out]


def _word_spans(raw: RawSynthesis, text: str) -> list[tuple[int, list[str]]]:
    """(text position, words) of each ``espeakEVENT_WORD``. espeak sometimes speaks two words as
    one (``out of``): its word event then covers the text up to the next event, several words."""
    events = sorted(raw.words, key=lambda w: w.text_position)
    out = []
    for k, w in enumerate(events):
        stop = events[k + 1].text_position - 1 if k + 1 < len(events) else len(text)
        span = text[w.text_position - 1:max(stop, w.text_position - 1 + w.length)]
        words = [t for t in (tok.strip(" .,;:!?\"'") for tok in span.split()) if t]
        if words:
            out.append((w.text_position, words))
    return out


def _phone_count(word: str, voice: str) -> int:
    """How many phones espeak gives ``word`` said on its own."""
    raw = synthesize_raw(word, voice=voice)
    return sum(1 for e in raw.phonemes if not is_pause(e.label))


def build_alignment(
    raw: RawSynthesis,
    text: str,
    intervals: Sequence[tuple[int, int, str, int]],
    *,
    voice: str | None = None,
    source: str | None = None,
) -> Alignment:
    """Words and phones in seconds from phone intervals (samples at ``raw.sample_rate``).

    A phone belongs to the word whose ``espeakEVENT_WORD`` has the same text position; a word
    spans its first phone's start to its last phone's end. Gaps between words are empty. Where
    espeak spoke several words as one (``out of``), their phones are shared out by the number of
    phones each word has on its own (needs ``voice``); if the counts do not add up, the words keep
    one interval labelled with all of them.

    Raises
    ------
    SynthError
        If a word of the text got no phones, or phones of one word are not contiguous.
    """
    sr = raw.sample_rate
    n = len(raw.samples)
    phones = tuple(Interval(s / sr, e / sr, lab) for s, e, lab, _ in intervals)
    words: list[Interval] = []
    by_pos: dict[int, list[int]] = {}
    for k, (_, _, lab, pos) in enumerate(intervals):
        if lab:
            by_pos.setdefault(pos, []).append(k)
    for pos, labels in _word_spans(raw, text):
        ks = by_pos.get(pos)
        if not ks:
            raise SynthError(f"espeak-ng produced no phones for {' '.join(labels)!r} of {text!r}",
                             hint="rephrase the sentence or spell the word as it is pronounced")
        if ks != list(range(ks[0], ks[-1] + 1)):
            raise SynthError(f"the phones of {' '.join(labels)!r} are not contiguous in {text!r}")
        counts = [_phone_count(w, voice) for w in labels] if len(labels) > 1 and voice else []
        if counts and sum(counts) == len(ks) and all(counts):
            first = ks[0]
            for word, c in zip(labels, counts, strict=True):
                words.append(Interval(intervals[first][0] / sr, intervals[first + c - 1][1] / sr, word))
                first += c
        else:
            words.append(Interval(intervals[ks[0]][0] / sr, intervals[ks[-1]][1] / sr, " ".join(labels)))
    # Fill the gaps with empty intervals so the tier covers the grid, as Praat expects.
    tier: list[Interval] = []
    cursor = 0.0
    for w in words:
        if w.start > cursor:
            tier.append(Interval(cursor, w.start, ""))
        tier.append(w)
        cursor = w.end
    if cursor < n / sr:
        tier.append(Interval(cursor, n / sr, ""))
    return Alignment(words=tuple(tier), phones=phones, xmin=0.0, xmax=n / sr, source=source)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (n,) audio from ``sr_in`` to ``sr_out`` Hz with soxr (high quality); float32."""
    import soxr

    x = np.asarray(x)
    x = x.astype(np.float32) / 32768.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def spoken_text(text: str) -> str:
    """``text`` with a final full stop if it has no final punctuation (sentence intonation)."""
    return text if text.rstrip()[-1:] in {".", "!", "?"} else text.rstrip() + "."


def synthesize(
    text: str,
    *,
    voice: str,
    prosody: Prosody = Prosody(),
    sample_rate: int = OUTPUT_RATE,
    move_closures: bool = True,
    split_words: bool = True,
) -> Synthesis:
    """Synthesise ``text`` and return 16 kHz audio with its ground-truth alignment.

    Parameters
    ----------
    text : str
        Words separated by spaces (pinyin with tone digits for ``cmn-latn-pinyin``); a final
        full stop is added for sentence intonation if the text has no final punctuation.
    voice : str
        espeak-ng voice, e.g. ``"en-us+f2"``, ``"cmn-latn-pinyin+m3"``.
    prosody : Prosody
        Rate, pitch, range, volume.
    sample_rate : int
        Output rate, Hz (boundaries are in seconds and do not depend on it).
    move_closures : bool
        Apply :func:`move_stop_closures` (the ground truth of the demo corpus does).
    split_words : bool
        Share out the phones of words espeak spoke as one (``out of``) by synthesising each word
        alone. espeak-ng keeps state between calls, so these extra calls can shift the timing of
        the *next* synthesis by a few ms; the corpus script therefore splits words only after
        all audio is made (``split_words=False``, then :func:`build_alignment` with ``voice``).

    Returns
    -------
    Synthesis
        ``wave`` (n,) float32 at ``sample_rate``; alignment with phones in espeak mnemonics.
    """
    spoken = spoken_text(text)
    raw = synthesize_raw(spoken, voice=voice, prosody=prosody)
    if len(raw.samples) == 0 or not raw.phonemes:
        raise SynthError(f"espeak-ng produced no speech for {text!r} with voice {voice!r}")
    intervals = phone_intervals(raw)
    if move_closures:
        intervals = move_stop_closures(intervals, raw.samples, sample_rate=raw.sample_rate)
    alignment = build_alignment(raw, spoken, intervals, voice=voice if split_words else None)
    wave = resample(raw.samples.astype(np.float32) / 32768.0, raw.sample_rate, sample_rate)
    return Synthesis(wave=wave, sample_rate=sample_rate, alignment=alignment, raw=raw,
                     intervals=tuple(intervals))

