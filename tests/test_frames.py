"""Frame <-> time: the conv arithmetic, the centre rule, and its invariants (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analysis.errors import FrameError
from analysis.frames import conv_frame_spec, frame_spec_for, frames_for_segment, frames_for_segments, whisper_frame_spec
from analysis.models import load_encoder
from analysis.testing import random_model

WAV2VEC = conv_frame_spec((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
WHISPER = whisper_frame_spec()
SPECS = st.sampled_from([WAV2VEC, WHISPER])


def test_wav2vec_style_stack_has_25_ms_field_and_20_ms_shift():
    assert WAV2VEC.receptive_field == pytest.approx(0.025)
    assert WAV2VEC.shift == pytest.approx(0.02)
    assert WAV2VEC.first_centre == pytest.approx(0.0125)
    assert WAV2VEC.n_frames(16000) == 49 and WAV2VEC.n_frames(399) == 0 and WAV2VEC.n_frames(400) == 1


def test_whisper_frames_are_20_ms_centred_on_even_mel_frames():
    assert WHISPER.shift == pytest.approx(0.02)
    assert WHISPER.receptive_field == pytest.approx(0.065)
    assert WHISPER.first_centre == pytest.approx(0.0)
    assert WHISPER.n_frames(48000) == 150 and WHISPER.n_frames(480000) == 1500
    # past one 30 s window the frames go on on the same grid (long inputs run as stitched windows)
    assert WHISPER.n_frames(10 * 480000) == 15000


def test_segment_takes_frames_whose_centre_lies_inside():
    # centres 12.5, 32.5, 52.5, 72.5 ms ...
    assert frames_for_segment(0.03, 0.075, spec=WAV2VEC, n_frames=49) == (1, 4)
    assert frames_for_segment(0.0325, 0.0725, spec=WAV2VEC, n_frames=49) == (1, 3)  # start inclusive, end exclusive


def test_short_segment_gets_the_nearest_frame():
    assert frames_for_segment(0.040, 0.045, spec=WAV2VEC, n_frames=49) == (1, 2)
    assert frames_for_segment(0.0, 0.0, spec=WAV2VEC, n_frames=49) == (0, 1)


def test_segment_past_the_audio_is_clipped_to_the_last_frame():
    assert frames_for_segment(5.0, 6.0, spec=WAV2VEC, n_frames=49) == (48, 49)
    assert frames_for_segment(0.9, 6.0, spec=WAV2VEC, n_frames=49) == (45, 49)


def test_frames_raise_on_reversed_segment_or_no_frames():
    with pytest.raises(FrameError, match="before start"):
        frames_for_segment(0.5, 0.4, spec=WAV2VEC, n_frames=49)
    with pytest.raises(FrameError, match="no frames"):
        frames_for_segment(0.0, 0.4, spec=WAV2VEC, n_frames=0)


def test_frame_spec_for_unknown_config_raises():
    class Cfg:
        model_type = "bert"

    with pytest.raises(FrameError, match="bert"):
        frame_spec_for(Cfg())


times = st.floats(min_value=0.0, max_value=12.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(spec=SPECS, a=times, b=times, n=st.integers(1, 800))
@example(spec=WHISPER, a=1.0, b=8.17e-09, n=2)  # found by hypothesis: a start inside the tolerance of centre 0
def test_frames_are_within_bounds_and_never_empty(spec, a, b, n):
    start, end = min(a, b), max(a, b)
    first, stop = frames_for_segment(start, end, spec=spec, n_frames=n)
    assert 0 <= first < stop <= n
    centres = spec.centres(n)[first:stop]
    if stop - first > 1:  # more than the nearest-frame fallback: every centre lies in the segment
        # within the module's documented tolerance of 1e-6 frame (a centre 8 ns before the start counts as inside)
        tol = 1e-6 * spec.shift
        assert np.all(centres >= start - tol) and np.all(centres < end + tol)


@settings(max_examples=200, deadline=None)
@given(spec=SPECS, starts=st.lists(times, min_size=2, max_size=30), dur=st.floats(0.0, 0.5), n=st.integers(1, 700))
def test_frames_are_monotonic_in_time(spec, starts, dur, n):
    starts = np.sort(np.array(starts))
    first, stop = frames_for_segments(starts, starts + dur, spec=spec, n_frames=n)
    assert np.all(np.diff(first) >= 0) and np.all(np.diff(stop) >= 0)


@settings(max_examples=200, deadline=None)
@given(spec=SPECS, start=st.floats(0.0, 10.0), dur=st.floats(0.02, 2.0))
@example(spec=WHISPER, start=3.907390718257338e-09, dur=1.0)  # found by hypothesis: a centre 4 ns before the end
def test_every_frame_centre_in_a_long_segment_is_taken(spec, start, dur):
    n = 600
    first, stop = frames_for_segment(start, start + dur, spec=spec, n_frames=n)
    c = spec.centres(n)
    # centres clearly inside, by the module's documented tolerance of 1e-6 frame (a centre within it of
    # the end counts as outside)
    tol = 1e-6 * spec.shift
    inside = np.flatnonzero((c >= start + tol) & (c < start + dur - tol))
    assert set(inside) <= set(range(first, stop))


@pytest.mark.parametrize("arch", ["wav2vec2", "whisper"])
@settings(max_examples=12, deadline=None)
@given(n_samples=st.integers(400, 24000))
def test_n_frames_equals_the_real_model_output(arch, n_samples):
    enc = _ENCODERS[arch]
    x = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    with torch.inference_mode():
        if arch == "whisper":
            mel = enc._mel([x], sampling_rate=16000, return_tensors="pt", padding="longest").input_features
            real = enc.whisper_hidden_states(mel).shape[2]
        else:
            real = enc.model(torch.from_numpy(x)[None], output_hidden_states=True).hidden_states[0].shape[1]
    assert enc.frame_spec.n_frames(n_samples) == real


_ENCODERS = {"wav2vec2": load_encoder(random_model("wav2vec2"), device="cpu"),
             "whisper": load_encoder(random_model("whisper"), device="cpu", whisper_mode="trim")}
