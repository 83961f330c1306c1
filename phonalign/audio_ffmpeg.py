"""Audio that libsndfile cannot decode (AAC in .m4a/.mp4, WMA, some .opus/.webm), through ffmpeg.

:func:`phonalign.audio.load_audio` and :func:`phonalign.audio.audio_duration` try soundfile first and
come here only when it fails. ffmpeg is a system program (``scripts/setup.sh`` installs it; ``apt-get
install ffmpeg``), found on PATH; without it these files fail with an :class:`AudioError` that says
so, never silently.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from .errors import AudioError

__all__ = ["ffmpeg_available", "ffmpeg_decode"]

_TIMEOUT = 600  # seconds: a long podcast episode decodes in far less


def ffmpeg_available() -> bool:
    """True when ``ffmpeg`` is on PATH."""
    return shutil.which("ffmpeg") is not None


def _missing(path: Path, why: str) -> AudioError:
    return AudioError(f"cannot read audio ({why}); this format needs ffmpeg, which is not installed", path=path,
                      hint="install ffmpeg (apt-get install ffmpeg; scripts/setup.sh does it), or convert the "
                      "file: ffmpeg -i INPUT -ac 1 -ar 16000 OUTPUT.wav")


def ffmpeg_decode(path: Path, *, sr: int, why: str) -> np.ndarray:
    """Decode ``path`` with ffmpeg to mono float32 at ``sr`` Hz (channels averaged by ffmpeg).

    ``why`` is soundfile's complaint, repeated in errors. Returns ``(n_samples,)`` float32.
    """
    if not ffmpeg_available():
        raise _missing(path, why)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-acodec", "pcm_f32le",
           "-ac", "1", "-ar", str(int(sr)), "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise AudioError(f"cannot read audio: neither libsndfile ({why}) nor ffmpeg "
                         f"({msg[-1] if msg else 'exit code ' + str(proc.returncode)}) decodes it", path=path,
                         hint="check the file (it may be damaged or not audio at all); if it plays elsewhere, "
                         "convert it: ffmpeg -i INPUT -ac 1 -ar 16000 OUTPUT.wav")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
