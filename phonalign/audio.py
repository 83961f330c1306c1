"""Audio input: any format libsndfile reads (and, through ffmpeg, the rest), as float32 mono at the analysis rate.

Decoding is soundfile's (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, NIST SPHERE, ...); files it
cannot decode (AAC in .m4a, WMA, ...) go through ffmpeg when it is installed
(:mod:`phonalign.audio_ffmpeg`; ffmpeg averages the channels itself); resampling is soxr's
(the "HQ" quality preset); multi-channel files are averaged to mono with a warning, because a
stereo podcast with one speaker per channel would silently mix two voices. Missing, unreadable
and empty files raise :class:`~phonalign.errors.AudioError` naming the file and the fix.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np

from .errors import AudioError

__all__ = ["load_audio", "audio_duration", "AudioError"]

_CONVERT_HINT = "convert it to WAV or FLAC, e.g. ffmpeg -i INPUT -ac 1 -ar 16000 OUTPUT.wav"


def _check_exists(path: Path) -> os.stat_result:
    """The file's status, after checking that it is a non-empty regular file.

    Checked before anything opens the file: opening a FIFO for reading blocks until someone
    writes to it, which would hang a batch job forever.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError("audio file not found", path=path,
                         hint="check the corpus directory or the manifest's audio_path column") from None
    except OSError as err:
        raise AudioError(f"cannot read audio ({err.strerror or err})", path=path,
                         hint="check the file's permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError("expected an audio file, found a directory", path=path)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise AudioError(f"the audio path is {kind}, not a regular file", path=path,
                         hint="point the corpus at audio files (reading a pipe or device would never end)")
    if st.st_size == 0:
        raise AudioError("audio file is empty (0 bytes)", path=path,
                         hint="the file was probably truncated while copying; copy it again")
    return st


def _check_finite(wave: np.ndarray, path: Path, sr: int, offset: int = 0) -> None:
    """Raise :class:`AudioError` if ``wave`` holds NaN or infinite samples (float files can);
    ``offset`` is the sample number of ``wave[0]`` in the file (for the time reported)."""
    finite = np.isfinite(wave)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(wave), -1).all(axis=1))
        raise AudioError(
            "the audio holds non-finite samples (NaN or infinity), the first at "
            f"{(offset + bad[0]) / sr:.3f} s",
            path=path, hint="the recording is damaged (a float WAV written from NaN values); re-export it "
            "or remove it from the corpus")


def _unreadable(path: Path, err: Exception) -> AudioError:
    return AudioError(f"cannot read audio ({err})", path=path, hint=_CONVERT_HINT)


def load_audio(path: str | Path, *, sr: int = 16000, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Read an audio file as mono float32 samples at ``sr`` Hz.

    Parameters
    ----------
    path : str or Path
        Any format soundfile (libsndfile) reads, or ffmpeg where it is installed.
    sr : int
        Target sampling rate, Hz. Files at another rate are resampled with soxr (HQ).
    start, end : float, optional
        Read only this stretch, seconds from the start of the file (an utterance inside a long
        recording): only its frames are decoded, so memory holds the stretch, not the recording.

    Returns
    -------
    np.ndarray
        ``(n_samples,)``, float32, nominally in [-1, 1]; ``n_samples = round(duration * sr)``.

    Raises
    ------
    AudioError
        The file is missing, not a regular file, not decodable, holds no samples, or holds NaN
        or infinite samples.

    Warns
    -----
    UserWarning
        When the file has more than one channel (they are averaged).
    """
    import soundfile as sf

    path = Path(path)
    _check_exists(path)
    try:
        if start is None and end is None:
            data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        else:
            with sf.SoundFile(str(path)) as fh:
                file_sr = fh.samplerate
                first = int(round((start or 0.0) * file_sr))
                stop = fh.frames if end is None else min(int(round(end * file_sr)), fh.frames)
                fh.seek(min(first, fh.frames))
                data = fh.read(max(stop - first, 0), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        # formats libsndfile does not decode (AAC, WMA, ...) go through ffmpeg where it is installed
        from .audio_ffmpeg import ffmpeg_decode

        wave = ffmpeg_decode(path, sr=sr, why=str(err))
        if start is not None or end is not None:
            wave = wave[int(round((start or 0.0) * sr)):None if end is None else int(round(end * sr))]
        if wave.size == 0:
            raise AudioError("audio file has no samples", path=path,
                             hint="the recording is empty; remove it from the corpus or re-export it") from None
        return np.ascontiguousarray(wave, dtype=np.float32)
    if data.shape[0] == 0:
        raise AudioError("audio file has no samples", path=path,
                         hint="the recording is empty; remove it from the corpus or re-export it")
    _check_finite(data, path, file_sr)
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


def _wav_header_duration(path: Path, size: int) -> tuple[float, bool] | None:
    """Duration of a RIFF/WAVE file from its ``fmt``/``data`` chunk headers, and whether its
    samples are floating point; None when the header is not a plain one.

    Reading a few dozen bytes with :mod:`struct` is ~10x cheaper than opening the file through
    libsndfile, which matters when a batch job checks 10^5 files. Anything unusual (RF64,
    compressed formats, a data chunk size that disagrees with the file size) returns None and
    the caller falls back to soundfile.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, 512)
        finally:
            os.close(fd)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    byte_rate = block = None
    fmt_tag = None
    is_float = False
    while pos + 8 <= len(head):
        cid, clen = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt " and body + 16 <= len(head):
            fmt_tag, _ch, _rate, byte_rate, block = struct.unpack_from("<HHIIH", head, body)
            is_float = fmt_tag == 3
            if fmt_tag == 0xFFFE and clen >= 40 and body + 26 <= len(head):
                is_float = struct.unpack_from("<H", head, body + 24)[0] == 3  # the sub-format GUID's tag
        elif cid == b"data":
            if byte_rate is None or not byte_rate or not block or fmt_tag not in (1, 3, 0xFFFE):
                return None
            # a truncated file (or a streaming writer's 0/0xFFFFFFFF size) -> use what is there
            n_bytes = min(clen, size - body)
            return (n_bytes // block) * block / byte_rate, is_float
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


_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def _check_float_samples(path: Path) -> None:
    """Decode a file that stores floating-point samples block by block; raise on NaN or infinity."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as fh:
            sr, done = fh.samplerate, 0
            for block in fh.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                _check_finite(block, path, sr, done)
                done += len(block)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise _unreadable(path, err) from None


def audio_duration(path: str | Path, *, check_samples: bool = False) -> float:
    """Duration of an audio file in seconds, from its header (the samples are not decoded).

    Parameters
    ----------
    path : str or Path
    check_samples : bool
        Also decode files that store floating-point samples (float WAV, AIFF-C, ...) and refuse
        NaN or infinite values. Integer formats (PCM, FLAC) cannot hold them and stay header-only.

    Raises
    ------
    AudioError
        The file is missing, not a regular file (a FIFO would block forever), unreadable, holds
        no samples, or (``check_samples``) holds non-finite samples.
    """
    path = Path(path)
    st = _check_exists(path)
    suffix = path.suffix.lower()
    duration, is_float = None, False
    if suffix == ".wav":
        wav = _wav_header_duration(path, st.st_size)
        if wav is not None:
            duration, is_float = wav
    elif suffix == ".flac":
        duration = _flac_header_duration(path)
    if duration is None:
        import soundfile as sf

        try:
            with sf.SoundFile(str(path)) as fh:
                frames, rate = fh.frames, fh.samplerate
                is_float = fh.subtype in _FLOAT_SUBTYPES
            duration = frames / rate if rate else 0.0
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            # the decoded length, not the container's: codecs with priming samples (AAC) decode to
            # more samples than the container says, and the aligners see the decoded samples
            from .audio_ffmpeg import ffmpeg_decode

            duration = ffmpeg_decode(path, sr=16000, why=str(err)).size / 16000.0
    if duration <= 0.0:
        raise AudioError("audio file has no samples", path=path,
                         hint="the recording is empty; remove it from the corpus or re-export it")
    if check_samples and is_float:
        _check_float_samples(path)
    return float(duration)
