#!/usr/bin/env python
"""Peak memory of aligning long recordings given as transcribed intervals (pocketsphinx).

    flock /tmp/lam-heavy.lock python benchmarks/bench_align_long.py
    python benchmarks/bench_align_long.py --minutes 2.5 5          # fewer lengths

Builds recordings of 2.5, 5 and 10 minutes of real speech by concatenating the English fixtures of
tests/data/real (LibriSpeech, LJSpeech, Common Voice; 0.3 s of near-silence between them), each with
a TextGrid tier of its transcribed intervals, and measures in a fresh subprocess each (peak resident
memory, ``ru_maxrss``):

1. the toolkit: ``read_corpus(..., intervals="words")`` + ``align_corpus`` with pocketsphinx (cutting
   each interval from the recording, aligning it, quality measures, outputs on the recording's
   timeline);
2. the baseline: a plain pocketsphinx loop over the same intervals (read with soundfile, two decoder
   passes), nothing else;
3. one unsegmented utterance of 60 s (the longest the toolkit aligns as one utterance), toolkit.

Prints each peak, the growth of the toolkit's peak per doubling of length (1.0 = flat; 2.0 =
linear), the 60 s case against the 2 GB budget, and, last, the toolkit's peak over the baseline's
at the longest length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_EN = ROOT / "tests" / "data" / "real" / "en"
GAP = 0.3


def build(folder: Path, seconds: float, *, name: str = "session", unsegmented: bool = False) -> Path:
    """A recording of about ``seconds`` of the fixtures back to back, plus its interval TextGrid (or,
    with ``unsegmented``, a transcript of the whole recording as one utterance)."""
    import soundfile as sf

    from phonalign.audio import load_audio
    from phonalign.records import Alignment, Interval
    from phonalign.textgrid_io import write_alignment

    files = sorted(REAL_EN.glob("*/*.flac"))
    rng = np.random.default_rng(0)
    parts, tier, t = [], [], 0.0
    while t < seconds:
        for p in files:
            wave = load_audio(p)
            if t + GAP + len(wave) / 16000 > seconds:
                break
            parts += [(rng.standard_normal(int(GAP * 16000)) * 1e-4).astype(np.float32), wave]
            t += GAP
            tier.append(Interval(t, t + len(wave) / 16000, p.with_suffix(".lab").read_text().strip()))
            t += len(wave) / 16000
        else:
            continue
        break
    audio = np.concatenate(parts)
    spk = folder / "spk"
    spk.mkdir(parents=True, exist_ok=True)
    wav = spk / f"{name}.wav"
    sf.write(str(wav), audio, 16000, subtype="PCM_16")
    if unsegmented:
        (spk / f"{name}.lab").write_text(" ".join(iv.label for iv in tier), encoding="utf-8")
    else:
        ivs = tuple(tier)
        write_alignment(spk / f"{name}.TextGrid", Alignment(words=ivs, phones=ivs, xmax=len(audio) / 16000))
    return folder


def child(kind: str, corpus: Path, out: Path) -> None:
    """Run one measurement in this (fresh) process and print JSON with its peak memory."""
    t0 = time.perf_counter()
    n_ok = n = 0
    if kind == "toolkit" or kind == "unsegmented":
        from phonalign.align import get_aligner
        from phonalign.align.run import align_corpus
        from phonalign.corpus import read_corpus

        utts = read_corpus(corpus, language="en", intervals=None if kind == "unsegmented" else "words")
        report = align_corpus(utts, out, get_aligner("pocketsphinx"), progress=False)
        n, n_ok = report.counts.utterances, report.counts.ok
    else:  # plain pocketsphinx over the same intervals
        import soundfile as sf
        from pocketsphinx import Decoder

        from phonalign.textgrid_io import read_alignment

        wav = next(corpus.glob("*/*.wav"))
        tier = [w for w in read_alignment(wav.with_suffix(".TextGrid")).words if w.label]
        d = Decoder(lm=None, bestpath=False, beam=1e-200, wbeam=1e-200, pbeam=1e-200, maxhmmpf=-1, loglevel="FATAL")
        pad = np.zeros(6400, np.int16)
        for iv in tier:
            x, _ = sf.read(str(wav), start=round(iv.start * 16000), stop=round(iv.end * 16000), dtype="int16")
            pcm = np.concatenate([pad, x, pad]).tobytes()
            words = " ".join(w for w in iv.label.lower().split() if d.lookup_word(w) is not None)
            d.set_align_text(words)
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            n += 1
            n_ok += d.get_alignment() is not None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(json.dumps({"peak_mb": peak_mb, "seconds": time.perf_counter() - t0, "n": n, "ok": n_ok}))


def measure(kind: str, corpus: Path, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(corpus), str(out)], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.5, 5.0, 10.0])
    ap.add_argument("--child", nargs=3, metavar=("KIND", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    peaks: dict[float, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for minutes in args.minutes:
            corpus = build(tmp_path / f"c{minutes}", minutes * 60)
            tk = measure("toolkit", corpus, tmp_path / f"out{minutes}")
            base = measure("plain", corpus, tmp_path / f"plain{minutes}")
            peaks[minutes] = {"toolkit": tk, "plain": base}
            print(f"{minutes:4.1f} min as {tk['n']} intervals: toolkit peak {tk['peak_mb']:7.1f} MB "
                  f"({tk['ok']} aligned, {tk['seconds']:.0f} s); plain pocketsphinx peak {base['peak_mb']:7.1f} MB "
                  f"({base['seconds']:.0f} s)")
        one = build(tmp_path / "u60", 60.0, unsegmented=True)
        single = measure("unsegmented", one, tmp_path / "out60")
        print(f"one unsegmented utterance of 60 s: toolkit peak {single['peak_mb']:.1f} MB "
              f"({'within' if single['peak_mb'] < 2048 else 'OVER'} the 2 GB budget; {single['ok']} aligned)")
    lengths = sorted(peaks)
    for a, b in zip(lengths, lengths[1:], strict=False):
        growth = peaks[b]["toolkit"]["peak_mb"] / peaks[a]["toolkit"]["peak_mb"]
        print(f"toolkit peak {b:g} min / {a:g} min (x{b / a:g} audio; 1.0 flat, {b / a:g} linear): {growth:.2f}")
    last = lengths[-1]
    print(f"toolkit peak over plain pocketsphinx peak at {last:g} min: "
          f"{peaks[last]['toolkit']['peak_mb'] / peaks[last]['plain']['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
