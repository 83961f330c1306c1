"""Frame <-> time for every speech encoder the toolkit runs: the only module that knows it.

The rule
--------
Every encoder turns a waveform sampled at ``sample_rate`` into frames, one every ``shift``
seconds; frame ``i`` *sees* the samples of its receptive field
``[offset + i * shift, offset + i * shift + receptive_field)`` and is *placed* at the centre of
that field, ``centre(i) = offset + receptive_field / 2 + i * shift``.

A segment ``[start, end)`` (seconds) is pooled over the frames whose **centre lies in the
segment** (``start <= centre < end``). A segment shorter than a frame that contains no centre gets
exactly **one frame: the one whose centre is nearest to the segment's midpoint**. Indices are clipped
to the frames the model really produced, so a segment running past the end of the audio uses the
frames up to the end, and a segment wholly past it the last frame.

Architectures
-------------
* wav2vec 2.0, HuBERT, WavLM (``conv_kernel``/``conv_stride`` in the config): the feature encoder
  is a stack of unpadded 1-D convolutions, so the receptive field and stride follow from the
  kernels and strides: ``receptive_field = k_1 + sum_l (k_l - 1) * prod_{m<l} s_m`` samples and
  ``shift = prod_l s_l`` samples. The default stack gives 400 samples (25 ms) and 320 samples
  (20 ms) at 16 kHz, frame ``i`` covering samples ``[320 i, 320 i + 400)``, centred at
  ``20 i + 12.5`` ms. The number of frames is the conv arithmetic ``n <- (n - k) // s + 1`` per
  layer (0 when the input is shorter than the receptive field).
* Whisper: a log-mel front end with hop ``hop_length`` (160 samples, 10 ms) and window ``n_fft``
  (400 samples) centred on each hop (``n_samples // hop`` mel frames are kept), then two padded
  convolutions of kernel 3 (strides 1 and 2). Encoder frame ``i`` therefore sees mel frames
  ``2i-2 .. 2i+2``: a receptive field of ``4 hop + n_fft`` = 1040 samples (65 ms), centred at
  ``2 i hop`` samples = ``20 i`` ms. ``ceil(n_mel / 2)`` encoder frames are real. One pass holds at
  most ``max_source_positions`` (1500 = 30 s); longer inputs run as overlapping windows stitched on
  this frame grid (:func:`plan_windows`), so their frames continue the same grid.

Long inputs (Whisper)
---------------------
:func:`plan_windows` cuts ``n_frames`` encoder frames into windows of ``window`` frames that overlap
by ``overlap`` frames; each frame is taken from the window in which it lies furthest from an edge
(the overlap is split at its middle), so every kept frame has at least ``overlap / 2`` frames of
context on both sides (except at the input's own ends). Windows start on even mel frames
(``2 a``), so window-local frame ``j`` of the window starting at ``a`` is global frame ``a + j``: the
stitched frames lie exactly on the grid of a single pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FrameError

#: Tolerance of the centre-in-segment test, in frames: a centre within 1e-6 frame of ``start`` is
#: inside, within 1e-6 frame of ``end`` outside, whatever the floating-point rounding.
_EPS_FRAMES = 1e-6


@dataclass(frozen=True)
class FrameSpec:
    """How one architecture places its frames in time.

    Parameters
    ----------
    shift : float
        Seconds between consecutive frames (0.02 for every model we run).
    receptive_field : float
        Seconds of audio one frame sees.
    offset : float
        Start of frame 0's receptive field, seconds (negative when the convolutions are padded).
    sample_rate : int
        Input sample rate, Hz.
    conv : tuple of (kernel, stride)
        The unpadded conv stack, in samples then frames (wav2vec-style models); empty for Whisper.
    hop_length, n_fft : int
        Whisper's mel hop and window, samples (0 for wav2vec-style models).
    max_frames : int or None
        Most frames one pass of the encoder produces (Whisper: ``max_source_positions``), else None.
    """

    shift: float
    receptive_field: float
    offset: float
    sample_rate: int = 16000
    conv: tuple[tuple[int, int], ...] = ()
    hop_length: int = 0
    n_fft: int = 0
    max_frames: int | None = None

    @property
    def first_centre(self) -> float:
        """Centre of frame 0, seconds."""
        return self.offset + self.receptive_field / 2

    def n_frames(self, n_samples):
        """Number of frames the encoder produces for ``n_samples`` samples.

        Parameters
        ----------
        n_samples : int or array of int
            Input lengths, samples at ``sample_rate``.

        Returns
        -------
        int or ndarray of int64
            Frames (0 when the input is shorter than one receptive field of a wav2vec-style model).
            Whisper inputs longer than one window (``max_frames``) keep counting on the same grid:
            they run as stitched windows (:func:`plan_windows`).
        """
        n = np.asarray(n_samples, dtype=np.int64)
        if np.any(n < 0):
            raise FrameError("a sample count is negative", hint="pass lengths in samples, >= 0")
        if self.conv:
            out = n.copy()
            for kernel, stride in self.conv:
                out = np.where(out >= kernel, (out - kernel) // stride + 1, 0)
        else:
            n_mel = n // self.hop_length
            out = (n_mel + 1) // 2  # conv2: kernel 3, stride 2, padding 1 -> ceil(n_mel / 2)
        return int(out) if out.ndim == 0 else out

    def centres(self, n_frames: int) -> np.ndarray:
        """Centre times of frames ``0 .. n_frames-1``, seconds, float64 ``(n_frames,)``."""
        return self.first_centre + self.shift * np.arange(n_frames, dtype=np.float64)

    def to_dict(self) -> dict:
        """JSON-ready form (recorded in a feature store's ``meta.json``)."""
        return {
            "shift": self.shift, "receptive_field": self.receptive_field, "offset": self.offset,
            "sample_rate": self.sample_rate, "conv": [list(c) for c in self.conv],
            "hop_length": self.hop_length, "n_fft": self.n_fft, "max_frames": self.max_frames,
            "rule": "frames whose centre lies in [start, end); else the one nearest the midpoint",
        }


def conv_frame_spec(kernels, strides, *, sample_rate: int = 16000) -> FrameSpec:
    """Frame spec of an unpadded conv stack (wav2vec 2.0 / HuBERT / WavLM feature encoder).

    Parameters
    ----------
    kernels, strides : sequence of int
        Per conv layer, samples for the first layer and frames of the previous layer after that.
    """
    kernels, strides = [int(k) for k in kernels], [int(s) for s in strides]
    if len(kernels) != len(strides) or not kernels:
        raise FrameError(f"conv kernels {kernels} and strides {strides} do not pair up",
                         hint="check conv_kernel and conv_stride in the model config")
    field, jump = kernels[0], strides[0]
    for k, s in zip(kernels[1:], strides[1:], strict=True):
        field += (k - 1) * jump
        jump *= s
    return FrameSpec(shift=jump / sample_rate, receptive_field=field / sample_rate, offset=0.0,
                     sample_rate=sample_rate, conv=tuple(zip(kernels, strides, strict=True)))


def whisper_frame_spec(*, hop_length: int = 160, n_fft: int = 400, max_source_positions: int = 1500,
                       sample_rate: int = 16000) -> FrameSpec:
    """Frame spec of the Whisper encoder (log-mel hop ``hop_length``, window ``n_fft``)."""
    field = 4 * hop_length + n_fft
    return FrameSpec(shift=2 * hop_length / sample_rate, receptive_field=field / sample_rate,
                     offset=-(2 * hop_length + n_fft / 2) / sample_rate, sample_rate=sample_rate,
                     hop_length=hop_length, n_fft=n_fft, max_frames=max_source_positions)


def frame_spec_for(config) -> FrameSpec:
    """The frame spec of a transformers model config (wav2vec 2.0, HuBERT, WavLM, Whisper).

    Parameters
    ----------
    config : transformers.PretrainedConfig
    """
    model_type = getattr(config, "model_type", None)
    if model_type == "whisper":
        return whisper_frame_spec(max_source_positions=int(config.max_source_positions))
    if hasattr(config, "conv_kernel") and hasattr(config, "conv_stride"):
        return conv_frame_spec(config.conv_kernel, config.conv_stride)
    raise FrameError(f"no frame rule for model type {model_type!r}",
                     hint="supported: wav2vec2, hubert, wavlm (conv feature encoder) and whisper")


def frames_for_segments(starts, ends, *, spec: FrameSpec, n_frames):
    """Frame ranges of many segments at once (vectorised; the rule of the module docstring).

    Parameters
    ----------
    starts, ends : array_like of float, shape (n_segments,)
        Segment limits, seconds from the start of the recording.
    spec : FrameSpec
    n_frames : int or array_like of int, shape (n_segments,)
        Frames the model produced for each segment's utterance (>= 1).

    Returns
    -------
    first, stop : ndarray of int64, shape (n_segments,)
        Frames ``first .. stop-1`` are pooled; ``0 <= first < stop <= n_frames`` always.
    """
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n_frames, dtype=np.int64), starts.shape)
    if starts.shape != ends.shape:
        raise FrameError(f"{starts.shape[0]} starts but {ends.shape[0]} ends")
    if np.any(n < 1):
        raise FrameError("an utterance has no frames", hint="the audio is shorter than one frame "
                         f"({spec.receptive_field * 1000:.0f} ms); drop it from the corpus")
    bad = ~(ends >= starts) | ~np.isfinite(starts) | ~np.isfinite(ends)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise FrameError(f"segment {i} has end {ends[i]} before start {starts[i]} (or a non-finite time)",
                         hint="fix the TextGrid / segments table")
    c0, shift = spec.first_centre, spec.shift
    # frames with start <= centre < end: centre_i = c0 + i * shift
    first = np.ceil((starts - c0) / shift - _EPS_FRAMES).astype(np.int64)
    stop = np.ceil((ends - c0) / shift - _EPS_FRAMES).astype(np.int64)
    first = np.clip(first, 0, n)
    stop = np.clip(stop, 0, n)
    empty = stop <= first
    nearest = np.clip(np.rint(((starts + ends) / 2 - c0) / shift).astype(np.int64), 0, n - 1)
    first = np.where(empty, nearest, first)
    stop = np.where(empty, nearest + 1, stop)
    return first, stop


def frames_for_segment(start: float, end: float, *, spec: FrameSpec, n_frames: int) -> tuple[int, int]:
    """Frame range ``(first, stop)`` of one segment; see :func:`frames_for_segments`."""
    first, stop = frames_for_segments([start], [end], spec=spec, n_frames=[n_frames])
    return int(first[0]), int(stop[0])


@dataclass(frozen=True)
class Window:
    """One window of a stitched long input, in encoder frames (global frame numbers).

    The window runs frames ``start .. start + length - 1``; its frames ``keep_from .. keep_to - 1``
    go into the stitched output.
    """

    start: int
    length: int
    keep_from: int
    keep_to: int


def plan_windows(n_frames: int, *, window: int, overlap: int) -> list[Window]:
    """Overlapping windows covering ``n_frames`` encoder frames, and which frames each one keeps.

    Parameters
    ----------
    n_frames : int
        Frames of the whole input (:meth:`FrameSpec.n_frames`).
    window : int
        Frames of one window (Whisper: ``max_source_positions``).
    overlap : int
        Frames two neighbouring windows share (even, ``0 <= overlap < window``); each side keeps half.

    Returns
    -------
    list of Window
        In time order; their kept ranges tile ``0 .. n_frames`` exactly. One window when
        ``n_frames <= window``.
    """
    if window < 1 or not (0 <= overlap < window) or overlap % 2:
        raise FrameError(f"window {window} and overlap {overlap} do not make a window plan",
                         hint="need window >= 1 and an even overlap with 0 <= overlap < window")
    if n_frames <= window:
        return [Window(0, max(int(n_frames), 0), 0, max(int(n_frames), 0))]
    hop = window - overlap
    starts = list(range(0, n_frames - window, hop)) + [n_frames - window]  # the last window ends at the end
    out: list[Window] = []
    for k, a in enumerate(starts):
        keep_from = 0 if k == 0 else out[-1].keep_to
        keep_to = n_frames if k == len(starts) - 1 else (starts[k + 1] + a + window) // 2
        out.append(Window(a, window, keep_from, keep_to))
    return out


def seconds_to_samples(seconds, *, sample_rate: int = 16000):
    """Seconds -> sample counts (rounded to the nearest sample)."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * sample_rate).astype(np.int64)


__all__ = ["FrameSpec", "conv_frame_spec", "whisper_frame_spec", "frame_spec_for",
           "frames_for_segments", "frames_for_segment", "seconds_to_samples", "Window", "plan_windows"]
