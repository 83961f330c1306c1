"""A Praat-like picture of one utterance: waveform, broadband spectrogram and interval tiers beneath.

Phoneticians check an alignment by looking at it the way Praat's TextGrid editor shows it: the
waveform on top, a grey-scale broadband spectrogram (0-5 kHz) under it, then one row per interval
tier (``words``, ``phones``, ``vowel_class``) with the boundaries drawn through the signal panels.
This module draws that picture for notebooks and reports.

Figures are built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`, no
``pyplot``), so drawing neither needs a display nor changes the backend of the caller's session
(a Jupyter kernel keeps its inline backend); save them with ``fig.savefig``.

The spectrogram follows Praat's default "broadband" settings: Gaussian window of 5 ms effective
length (physical length twice that), 2 ms time step, pre-emphasis of 6 dB/octave above 50 Hz,
50 dB dynamic range below the maximum. The numbers are close to Praat's, not bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PhonalignError
from .records import VOWEL_CLASSES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Tiers drawn by default, top to bottom (those a grid lacks are skipped).
DEFAULT_TIERS: tuple[str, ...] = ("words", "phones", "vowel_class")

#: Okabe & Ito (2008) colour-blind-safe palette, one colour per shared vowel class.
VOWEL_COLOURS: dict[str, str] = dict(zip(VOWEL_CLASSES, (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#CC79A7"), strict=True))

Tier = Sequence[tuple[float, float, str]]


class PraatViewError(PhonalignError):
    """Bad input to the utterance view (empty audio, no tier to draw, an unknown tier name)."""


def spectrogram_db(wave: np.ndarray, *, sr: int = 16000, window: float = 0.005, step: float = 0.002,
                   max_freq: float = 5000.0, pre_emphasis_from: float = 50.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadband power spectrogram in dB, as Praat computes it by default.

    Parameters
    ----------
    wave : np.ndarray
        ``(n_samples,)`` float, mono; any scale.
    sr : int
        Sample rate of ``wave``, Hz.
    window : float
        Effective length of the Gaussian window, seconds (Praat: physical length = 2 x this).
    step : float
        Time step between frames, seconds.
    max_freq : float
        Highest frequency kept, Hz (clipped to the Nyquist frequency).
    pre_emphasis_from : float
        Frequency above which a 6 dB/octave pre-emphasis lifts the spectrum, Hz (0: none).

    Returns
    -------
    times : np.ndarray
        ``(n_frames,)`` float64, centre of each frame, seconds from the start of ``wave``.
    freqs : np.ndarray
        ``(n_bins,)`` float64, Hz, from 0 to ``max_freq``.
    power_db : np.ndarray
        ``(n_bins, n_frames)`` float64, dB relative to the largest bin (so the maximum is 0).
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise PraatViewError("cannot draw the spectrogram of empty audio", hint="check the audio file")
    if pre_emphasis_from > 0:
        # first-order pre-emphasis y[n] = x[n] - a x[n-1], the filter Praat applies before the FFT
        a = np.exp(-2.0 * np.pi * pre_emphasis_from / sr)
        x = np.concatenate([x[:1], x[1:] - a * x[:-1]])
    n_win = max(int(round(2 * window * sr)), 8)
    hop = max(int(round(step * sr)), 1)
    n_fft = int(2 ** np.ceil(np.log2(n_win)))
    # pad so the first and last frames are centred on the first and last samples
    padded = np.pad(x, (n_win // 2, n_win - n_win // 2))
    n_frames = 1 + max(padded.size - n_win, 0) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_win)[::hop][:n_frames]
    # Praat's Gaussian window: exp(-12 (t/T - 1/2)^2) over the physical length T
    t = (np.arange(n_win) + 0.5) / n_win
    win = np.exp(-12.0 * (t - 0.5) ** 2)
    spec = np.abs(np.fft.rfft(frames * win, n=n_fft, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    keep = freqs <= min(max_freq, sr / 2)
    power = spec[:, keep].T
    power_db = 10.0 * np.log10(np.maximum(power, 1e-30))
    power_db -= power_db.max()
    times = np.arange(n_frames) * hop / sr
    return times, freqs[keep], power_db


def textgrid_tiers(path: str | Path, *, tiers: Sequence[str] | None = None
                   ) -> dict[str, list[tuple[float, float, str]]]:
    """The interval tiers of a TextGrid as ``{name: [(start, end, label), ...]}`` (seconds).

    Parameters
    ----------
    path : str or Path
        A TextGrid in any format :func:`phonalign.textgrid_io.read_tiers` reads.
    tiers : sequence of str, optional
        Names of the tiers to keep, in this order; tiers the grid lacks are left out. Default:
        every interval tier in the grid's order.
    """
    from .textgrid_io import read_tiers

    _, _, grid_tiers, _ = read_tiers(path, duplicate_tiers="rename")
    found = {t["name"]: [(float(s), float(e), str(lab)) for s, e, lab in t["entries"]]
             for t in grid_tiers if t["class"] == "IntervalTier"}
    if tiers is None:
        return found
    return {n: found[n] for n in tiers if n in found}


def alignment_tiers(alignment, *, vowel_classes: Sequence[str | None] | None = None
                    ) -> dict[str, list[tuple[float, float, str]]]:
    """``words``, ``phones`` (and ``vowel_class``) tiers of a :class:`phonalign.records.Alignment`.

    ``vowel_classes`` holds one unit class per phone interval (e.g. the ``unit_class`` column of
    the segments table); only the six vowel classes get a label, as in the written TextGrids.
    """
    tiers = {"words": [(w.start, w.end, w.label) for w in alignment.words],
             "phones": [(p.start, p.end, p.label) for p in alignment.phones]}
    if vowel_classes is not None:
        if len(vowel_classes) != len(alignment.phones):
            raise PraatViewError(f"{len(vowel_classes)} vowel classes for {len(alignment.phones)} phones",
                                 hint="give one unit class per phone interval")
        tiers["vowel_class"] = [(p.start, p.end, c if c in VOWEL_CLASSES else "")
                                for p, c in zip(alignment.phones, vowel_classes, strict=True)]
    return tiers


def plot_utterance(wave: np.ndarray, tiers: Mapping[str, Tier], *, sr: int = 16000,
                   start: float | None = None, end: float | None = None, max_freq: float = 5000.0,
                   dynamic_range: float = 50.0, title: str | None = None, boundaries_from: str | None = "phones",
                   figure_width: float = 11.0) -> Figure:
    """Draw waveform, spectrogram and tiers of one utterance as Praat's TextGrid editor shows them.

    Parameters
    ----------
    wave : np.ndarray
        ``(n_samples,)`` float, mono, at ``sr``; time 0 is its first sample.
    tiers : mapping of str to sequence of (start, end, label)
        Interval tiers drawn beneath, top to bottom in the mapping's order (seconds). A tier named
        ``vowel_class`` has its cells coloured by vowel class (colour-blind-safe palette).
    sr : int
        Sample rate, Hz.
    start, end : float, optional
        Time window to draw, seconds (default: the whole signal).
    max_freq : float
        Top of the spectrogram, Hz.
    dynamic_range : float
        dB below the maximum drawn as white.
    title : str, optional
        Figure title (e.g. the utterance id and its text).
    boundaries_from : str or None
        Tier whose boundaries are drawn as dotted lines through the waveform and spectrogram.
    figure_width : float
        Figure width, inches.

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot; save it with ``fig.savefig(path)``.
    """
    from matplotlib.figure import Figure

    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise PraatViewError("cannot draw empty audio", hint="check the audio file")
    if not tiers:
        raise PraatViewError("no tier to draw", hint="pass e.g. textgrid_tiers(path) or alignment_tiers(alignment)")
    if boundaries_from is not None and boundaries_from not in tiers:
        boundaries_from = None
    total = x.size / sr
    t0 = 0.0 if start is None else max(0.0, float(start))
    t1 = total if end is None else min(total, float(end))
    if not t1 > t0:
        raise PraatViewError(f"empty time window {t0:.3f}-{t1:.3f} s", hint=f"the audio lasts {total:.3f} s")
    i0, i1 = int(np.floor(t0 * sr)), int(np.ceil(t1 * sr))
    seg = x[i0:i1]

    n_tiers = len(tiers)
    fig = Figure(figsize=(figure_width, 2.0 + 2.2 + 0.45 * n_tiers), layout="constrained")
    gs = fig.add_gridspec(2 + n_tiers, 1, height_ratios=[1.6, 2.2] + [0.45] * n_tiers)
    ax_w = fig.add_subplot(gs[0])
    ax_s = fig.add_subplot(gs[1], sharex=ax_w)
    tier_axes = [fig.add_subplot(gs[2 + k], sharex=ax_w) for k in range(n_tiers)]

    tw = t0 + np.arange(seg.size) / sr
    ax_w.plot(tw, seg, color="black", lw=0.5)
    peak = float(np.max(np.abs(seg))) or 1.0
    ax_w.set_ylim(-1.05 * peak, 1.05 * peak)
    ax_w.set_ylabel("amplitude\n(full scale)")
    ax_w.axhline(0.0, color="0.6", lw=0.5)

    times, freqs, power_db = spectrogram_db(seg, sr=sr, max_freq=max_freq)
    ax_s.imshow(power_db, origin="lower", aspect="auto", cmap="Greys", vmin=-dynamic_range, vmax=0.0,
                extent=(t0 + times[0], t0 + times[-1] + (times[1] - times[0] if times.size > 1 else 0.0),
                        freqs[0], freqs[-1]), interpolation="bilinear")
    ax_s.set_ylabel("frequency (Hz)")
    ax_s.set_ylim(0, freqs[-1])

    if boundaries_from is not None:
        edges = sorted({b for s, e, _ in tiers[boundaries_from] for b in (s, e) if t0 < b < t1})
        for ax in (ax_w, ax_s):
            for b in edges:
                ax.axvline(b, color="#0072B2", lw=0.6, ls=":")

    for ax, (name, entries) in zip(tier_axes, tiers.items(), strict=True):
        ax.set_yticks([])
        ax.set_ylim(0, 1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for s, e, label in entries:
            if e <= t0 or s >= t1:
                continue
            s_, e_ = max(s, t0), min(e, t1)
            if name == "vowel_class" and label in VOWEL_COLOURS:
                ax.axvspan(s_, e_, color=VOWEL_COLOURS[label], alpha=0.55, lw=0)
            for b in (s, e):
                if t0 < b < t1:
                    ax.axvline(b, color="black", lw=0.8)
            if label.strip():
                ax.text((s_ + e_) / 2, 0.5, label, ha="center", va="center", fontsize=8, clip_on=True)
    for ax in [ax_w, ax_s] + tier_axes[:-1]:
        ax.tick_params(labelbottom=False)
    tier_axes[-1].set_xlabel("time (s)")
    ax_w.set_xlim(t0, t1)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_textgrid(audio_path: str | Path, textgrid_path: str | Path, *, tiers: Sequence[str] = DEFAULT_TIERS,
                  title: str | None = None, **options: Any) -> Figure:
    """:func:`plot_utterance` of an audio file and its TextGrid (the tiers named in ``tiers``).

    The audio is read with :func:`phonalign.audio.load_audio` (16 kHz mono). ``options`` are those
    of :func:`plot_utterance` (``start``, ``end``, ``max_freq``, ...).
    """
    from .audio import load_audio

    found = textgrid_tiers(textgrid_path, tiers=tiers)
    if not found:
        raise PraatViewError(f"none of the tiers {', '.join(tiers)} is in the TextGrid", path=textgrid_path,
                             hint="name the tiers to draw with tiers=(...)")
    wave = load_audio(audio_path, sr=16000)
    return plot_utterance(wave, found, sr=16000, title=title or Path(textgrid_path).stem, **options)
