#!/usr/bin/env python
"""Speed of the pocketsphinx backend on the English half of the demo corpus.

    python benchmarks/bench_pocketsphinx.py            # all 120 English utterances
    python benchmarks/bench_pocketsphinx.py --n 40

Runs, in one process and on the same utterances:

1. a plain pocketsphinx loop (one decoder, the two alignment passes, nothing else): the baseline;
2. the toolkit's ``PocketsphinxAligner`` with ``jobs=1`` (audio loading, checks, seeded noise,
   feature re-initialisation, interval building): real-time factor on one core (target < 0.1);
3. the same with ``jobs=2``: speedup over ``jobs=1`` (target >= 1.6 on two idle cores).

Prints the real-time factors, the toolkit's overhead over the plain loop, and, as the last line,
the speedup of ``-j 2`` over ``-j 1``. Timings depend on what else runs on the machine: on a shared
machine run it when the cores are idle (``uptime``).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def _utterances(n: int):
    from phonalign.corpus import demo_corpus_dir
    from phonalign.records import Utterance

    demo = demo_corpus_dir()
    with open(demo / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["language"] == "en"][:n]
    return [Utterance(r["utt_id"], str(demo / r["audio_path"]), r["text"], "en", r["speaker"], "lam-demo")
            for r in rows]


def plain_pocketsphinx(utts, padding: float = 0.4) -> tuple[float, float]:
    """Baseline: the documented two-pass alignment with one decoder, no toolkit code.
    Returns (wall seconds, CPU seconds of this process)."""
    from pocketsphinx import Decoder

    t0, c0 = time.perf_counter(), time.process_time()
    d = Decoder(lm=None, dither=True, bestpath=False, beam=1e-200, wbeam=1e-200, pbeam=1e-200, maxhmmpf=-1,
                loglevel="FATAL")
    for u in utts:
        x, _ = sf.read(u.audio_path, dtype="int16")
        pad = np.zeros(int(padding * 16000), dtype=np.int16)
        pcm = np.concatenate([pad, x, pad]).tobytes()
        d.set_align_text(u.text.lower())
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        if d.get_alignment() is None:
            raise RuntimeError(f"baseline failed on {u.utt_id}")
    return time.perf_counter() - t0, time.process_time() - c0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def toolkit(utts, jobs: int, workdir: Path) -> tuple[float, float]:
    """Returns (wall seconds, CPU seconds of this process and of its finished worker processes)."""
    from phonalign.align.pocketsphinx_backend import PocketsphinxAligner

    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    results = list(PocketsphinxAligner().align(utts, workdir, jobs=jobs))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - k0
    failed = [r.utt_id for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"toolkit failed on {failed}")
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="English utterances to align (max 120)")
    ap.add_argument("--repeat", type=int, default=1, help="take the best of this many runs of each")
    args = ap.parse_args()
    utts = _utterances(args.n)
    audio_s = sum(sf.info(u.audio_path).duration for u in utts)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_pocketsphinx"
    print(f"{len(utts)} utterances, {audio_s:.1f} s of audio; cores: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.2f}")
    base, base_cpu = min(plain_pocketsphinx(utts) for _ in range(args.repeat))
    one, one_cpu = min(toolkit(utts, 1, work) for _ in range(args.repeat))
    two, two_cpu = min(toolkit(utts, 2, work) for _ in range(args.repeat))
    # CPU seconds of a single-threaded run are what it would take on one idle core; wall time
    # is what it took on this machine now
    print(f"plain pocketsphinx loop: {base:.2f} s wall, {base_cpu:.2f} s CPU; "
          f"real-time factor {base / audio_s:.3f} wall, {base_cpu / audio_s:.3f} CPU")
    print(f"toolkit -j 1:            {one:.2f} s wall, {one_cpu:.2f} s CPU; "
          f"real-time factor {one / audio_s:.3f} wall, {one_cpu / audio_s:.3f} CPU (target < 0.1)")
    print(f"toolkit -j 2:            {two:.2f} s wall, {two_cpu:.2f} s CPU (all processes); "
          f"real-time factor {two / audio_s:.3f} wall")
    # with idle cores the speedup is bounded by 2 / (CPU of -j 2 / CPU of -j 1): extra work
    # (worker start-up, a second decoder) shows here even on a loaded machine
    print(f"CPU of -j 2 over CPU of -j 1 (1.0 = no parallel overhead): {two_cpu / one_cpu:.2f}")
    print(f"toolkit overhead over the plain loop (CPU, -j 1 / plain): {one_cpu / base_cpu:.2f}")
    print(f"speedup -j 2 over -j 1 (wall; target >= 1.6 on two idle cores): {one / two:.2f}")

if __name__ == "__main__":
    main()
