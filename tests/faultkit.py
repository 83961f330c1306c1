"""Helpers of the fault, lock and resume tests: small real corpora, tiny model folders, running
`lam` in this process (so that faults can be injected) and checking its one-line errors.

Corpora are MFA-style folders ``ROOT/<speaker>/<utt>.wav`` with a ``.lab`` transcript and a
``.TextGrid`` (words + ARPAbet phones every 0.1 s, written by the toolkit's own writer), audio as
32-bit float WAV noise so that a file can hold NaN like a damaged float recording does.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
PHONES = ["K", "AE1", "T", "IY1", "S", "UW1", "M", "AA1", "N", "AO1", "AH0", "EH1"]


def write_utterance(folder: Path, utt_id: str, *, seconds: float, seed: int, nan: bool = False,
                    textgrid_seconds: float | None = None, phones: Sequence[str] | None = None) -> Path:
    """``folder/<utt_id>.wav`` (float32 noise), ``.lab`` and ``.TextGrid``; returns the wav path."""
    from phonalign.records import Alignment, Interval
    from phonalign.textgrid_io import write_alignment

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    wave = (rng.standard_normal(int(round(seconds * SR))) * 0.1).astype(np.float32)
    if nan:
        wave[len(wave) // 3] = np.nan
    wav = folder / f"{utt_id}.wav"
    sf.write(wav, wave, SR, subtype="FLOAT")
    (folder / f"{utt_id}.lab").write_text("cat sat\n", encoding="utf-8")
    span = seconds if textgrid_seconds is None else textgrid_seconds
    edges = np.round(np.arange(0.0, span + 1e-9, 0.1), 6)
    labels = list(phones) if phones is not None else [PHONES[(seed + k) % len(PHONES)] for k in range(len(edges) - 1)]
    ivs = tuple(Interval(float(a), float(b), lab) for a, b, lab in zip(edges[:-1], edges[1:], labels, strict=False))
    mid = round(float(edges[len(edges) // 2]), 6)
    words = (Interval(0.0, mid, "cat"), Interval(mid, float(edges[-1]), "sat")) if ivs else ()
    write_alignment(folder / f"{utt_id}.TextGrid", Alignment(words=words, phones=ivs, xmin=0.0, xmax=float(edges[-1])))
    return wav


def edit_first_phone(textgrid: Path, label: str) -> None:
    """Give the first interval of the phones tier another label (the rest of the file unchanged)."""
    text = textgrid.read_text(encoding="utf-8")
    tier = text.index('name = "phones"')
    start = text.index('text = "', tier) + len('text = "')
    end = text.index('"', start)
    textgrid.write_text(text[:start] + label + text[end:], encoding="utf-8")


def make_corpus(root: Path, n: int, *, seed: int = 0, nan: Iterable[str] = (), prefix: str = "u",
                speakers: int = 4) -> Path:
    """A corpus of ``n`` utterances ``<prefix>000..`` over ``speakers`` speaker folders (0.6-1.2 s each);
    the ids in ``nan`` get a NaN sample."""
    nan = set(nan)
    rng = np.random.default_rng(seed)
    for i in range(n):
        utt = f"{prefix}{i:03d}"
        write_utterance(root / f"spk{i % speakers}", utt, seconds=float(rng.choice([0.6, 0.8, 1.0, 1.2])),
                        seed=seed * 1000 + i, nan=utt in nan)
    return root


def tiny_model_dir(root: Path, arch: str = "wavlm", seed: int = 0) -> Path:
    """A randomly initialised 2-layer model of a real architecture saved as a local model folder."""
    from analysis.testing import random_model

    root.mkdir(parents=True, exist_ok=True)
    random_model(arch, seed=seed).save_pretrained(root)
    return root


def lam(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``lam ARGS`` in this process through its real entry point; (exit code, stdout, stderr)."""
    from lam_train.cli import main

    argv = sys.argv
    sys.argv = ["lam", *[str(a) for a in args]]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *names: str, code: int | None = None, exit_code: int | None = None) -> str:
    """The toolkit's error format: one ``error:`` line (plus at most an indented ``hint:`` line) that
    ends stderr, no traceback, naming every one of ``names``. Returns the error line.

    What comes before it are the run's own messages (``lam`` logs each step on stderr)."""
    assert "Traceback" not in err, err
    # progress bars (tqdm, also transformers' own while loading weights) are not messages
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    assert len(errors) == 1, err
    rest = lines[errors[0] + 1:]
    assert all(ln.startswith("  hint:") for ln in rest) and len(rest) <= 1, err
    errors = [lines[errors[0]]]
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def assert_usage_error(err: str, option: str) -> None:
    """click's usage error for a bad option value: names the option, no traceback."""
    assert "Traceback" not in err, err
    flat = " ".join(err.replace("│", " ").split())
    assert "Invalid value" in flat and option in flat, err


def snapshot(folder: Path, *, skip: Sequence[str] = (".lam.lock",)) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (lock files left out)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(tuple(skip)):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def env_one_thread() -> dict[str, str]:
    """Environment for child `lam` processes on a shared machine."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


EMOTIONS = ["Neutral", "Happiness", "Anger", "Sadness"]


def synthetic_store(path: Path, *, language: str, seed: int = 0, n_per_class: int = 6, hidden: int = 8,
                    n_layers: int = 2, digest: str = "sha256:synthetic", model_id: str = "synthetic") -> Path:
    """A feature store of utterance rows (train/dev/test splits, four emotions) written through
    the store's own API, for training and similarity tests that need no audio."""
    from analysis.store import FeatureStore, index_table

    rng = np.random.default_rng(seed)
    means = rng.normal(size=(4, hidden)) * 1.5
    rows: dict[str, list] = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "language",
                                             "split", "emotion", "speaker", "start", "end")}
    vecs: list[np.ndarray] = []
    for split, k in (("train", n_per_class), ("dev", max(2, n_per_class // 2)), ("test", max(2, n_per_class // 2))):
        for c in range(4):
            for i in range(k):
                uid = f"{language}_{split}_{c}_{i}"
                for key, value in (("unit_id", uid), ("kind", "utt"), ("utt_id", uid), ("seg_index", -1),
                                   ("unit_class", "utterance"), ("language", language), ("split", split),
                                   ("emotion", EMOTIONS[c]), ("speaker", f"s{i % 3}"), ("start", 0.0),
                                   ("end", 1.0)):
                    rows[key].append(value)
                vecs.append(means[c] + rng.normal(size=hidden))
    base = np.array(vecs, np.float32)
    layers = np.stack([base * (layer + 1) + rng.normal(size=base.shape).astype(np.float32)
                       for layer in range(n_layers + 1)])
    store = FeatureStore.create(path, model_id=model_id, revision=None, n_layers=n_layers, hidden_size=hidden,
                                settings={"pooling": "mean", "input": "utterances"},
                                model={"digest": digest, "kind": "tensors"})
    store.append(index_table(rows), layers)
    return path


def write_train_config(path: Path, *, source: Path, target: Path, output: Path, rankings: Path | None = None,
                       strategies: Sequence[str] = ("final",), seeds: Sequence[int] = (0,), epochs: int = 2) -> Path:
    """A tiny `lam train` config on two stores (CPU, small classifier)."""
    import yaml

    cfg = {"name": "faults", "output": str(output), "unit": "Utt", "strategies": list(strategies),
           "seeds": list(seeds), "coral_ablation": False,
           "data": {"source_store": str(source), "target_store": str(target), "source_language": "en",
                    "target_language": "zh"},
           "model": {"width": 8, "head_hidden": [8, 8, 8]},
           "train": {"epochs": epochs, "batch_size": 4, "device": "cpu", "progress": False}}
    if rankings is not None:
        cfg["rankings"] = str(rankings)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path
