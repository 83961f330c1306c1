"""Audio input: any format libsndfile reads, as float32 mono at the analysis rate.

Decoding is soundfile's (libsndfile: WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...); resampling is soxr's
(the "HQ" quality preset); multi-channel files are averaged to mono with a warning, because a
stereo podcast with one speaker per channel would silently mix two voices. Missing, unreadable
and empty files raise :class:`~phonalign.errors.AudioError` naming the file and the fix.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from .errors import AudioError

__all__ = ["load_audio", "audio_duration", "AudioError"]

_CONVERT_HINT = "convert it to WAV or FLAC, e.g. ffmpeg -i INPUT -ac 1 -ar 16000 OUTPUT.wav"


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError("audio file not found", path=path,
                         hint="check the corpus directory or the manifest's audio_path column")
    if path.is_dir():
        raise AudioError("expected an audio file, found a directory", path=path)
    if path.stat().st_size == 0:
        raise AudioError("audio file is empty (0 bytes)", path=path,
                         hint="the file was probably truncated while copying; copy it again")


def _unreadable(path: Path, err: Exception) -> AudioError:
    return AudioError(f"cannot read audio ({err})", path=path, hint=_CONVERT_HINT)


def load_audio(path: str | Path, *, sr: int = 16000) -> np.ndarray:
    """Read an audio file as mono float32 samples at ``sr`` Hz.

    Parameters
    ----------
    path : str or Path
        Any format soundfile (libsndfile) reads.
    sr : int
        Target sampling rate, Hz. Files at another rate are resampled with soxr (HQ).

    Returns
    -------
    np.ndarray
        ``(n_samples,)``, float32, nominally in [-1, 1]; ``n_samples = round(duration * sr)``.

    Raises
    ------
    AudioError
        The file is missing, not decodable, or holds no samples.

    Warns
    -----
    UserWarning
        When the file has more than one channel (they are averaged).
    """
    import soundfile as sf

    path = Path(path)
    _check_exists(path)
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise _unreadable(path, err) from None
    if data.shape[0] == 0:
        raise AudioError("audio file has no samples", path=path,
                         hint="the recording is empty; remove it from the corpus or re-export it")
    if data.shape[1] > 1:
        warnings.warn(
            f"{path}: {data.shape[1]} channels averaged to mono; if each channel is a different "
            "speaker, split them first (sox IN.wav OUT.wav remix 1)",
            UserWarning,
            stacklevel=2,
        )
        wave = data.mean(axis=1, dtype=np.float32)
    else:
        wave = data[:, 0]
    if file_sr != sr:
        import soxr

        wave = soxr.resample(wave, file_sr, sr, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _wav_header_duration(path: Path) -> float | None:
    """Duration of a RIFF/WAVE file from its ``fmt``/``data`` chunk headers, or None.

    Reading a few dozen bytes with :mod:`struct` is ~10x cheaper than opening the file through
    libsndfile, which matters when a batch job checks 10^5 files. Anything unusual (RF64,
    compressed formats, a data chunk size that disagrees with the file size) returns None and
    the caller falls back to soundfile.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, 512)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    byte_rate = block = None
    fmt_tag = None
    while pos + 8 <= len(head):
        cid, clen = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt " and body + 16 <= len(head):
            fmt_tag, _ch, _rate, byte_rate, block = struct.unpack_from("<HHIIH", head, body)
        elif cid == b"data":
            if byte_rate is None or not byte_rate or not block or fmt_tag not in (1, 3, 0xFFFE):
                return None
            # a truncated file (or a streaming writer's 0/0xFFFFFFFF size) -> use what is there
            n_bytes = min(clen, size - body)
            return (n_bytes // block) * block / byte_rate
        pos = body + clen + (clen & 1)
    return None


def _flac_header_duration(path: Path) -> float | None:
    """Duration of a FLAC file from its STREAMINFO block (sample rate, total samples), or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, 42)
        finally:
            os.close(fd)
    except OSError:
        return None
    # "fLaC", then the first metadata block must be STREAMINFO (type 0, 34 bytes)
    if len(head) < 42 or head[:4] != b"fLaC" or (head[4] & 0x7F) != 0:
        return None
    info = int.from_bytes(head[18:26], "big")  # rate:20 channels-1:3 bits-1:5 total:36
    rate = info >> 44
    total = info & ((1 << 36) - 1)
    if not rate or not total:  # total 0 means "unknown": ask libsndfile
        return None
    return total / rate


def audio_duration(path: str | Path) -> float:
    """Duration of an audio file in seconds, from its header (the samples are not decoded).

    Raises
    ------
    AudioError
        The file is missing, unreadable, or holds no samples.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    duration = (_wav_header_duration(path) if suffix == ".wav"
                else _flac_header_duration(path) if suffix == ".flac" else None)
    if duration is None:
        import soundfile as sf

        _check_exists(path)
        try:
            with sf.SoundFile(str(path)) as fh:
                frames, rate = fh.frames, fh.samplerate
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise _unreadable(path, err) from None
        duration = frames / rate if rate else 0.0
    if duration <= 0.0:
        _check_exists(path)
        raise AudioError("audio file has no samples", path=path,
                         hint="the recording is empty; remove it from the corpus or re-export it")
    return float(duration)
