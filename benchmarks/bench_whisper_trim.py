"""Whisper `trim` mode: speed over the full 30 s window on 3-second utterances, and how much it
changes features and layer rankings (issue 4 (d)).

Model: the real OpenAI Whisper base (``whisper-base``, resolved offline by
``analysis.model_sources``) when it can be loaded, else a random model with whisper-base's geometry
(said in the output). Audio: utterances of the bundled demo corpus (real speech, espeak-ng),
cut or zero-padded to exactly 3.0 s for the timing.

Parts (all by default):

* timing: ``SpeechEncoder.forward`` on ``--n`` 3-second utterances in ``crop`` mode (padded to 30 s,
  output cropped) and in ``trim`` mode (encoder on the real length, positional embeddings sliced);
  the best of ``--repeats`` runs each.
* effect (``--effect``): the demo corpus' English and Mandarin utterances (``--per-language`` each)
  are extracted in both modes with their ground-truth segments; reported per layer: the mean
  cosine between crop and trim vectors (utterances and segments), and for the units Utt, Vowl and
  Cons the Spearman correlation of the layer scores of `lam similarity` (centroid cosine, en vs
  zh) and whether the best layer and the top-3 group agree.

The last line printed is the speedup crop/trim.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from analysis.models import load_encoder
from analysis.testing import random_model
from phonalign.audio import load_audio
from phonalign.errors import LamError


def demo_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "phonalign" / "demo_data"


def demo_rows(per_language: int) -> list[dict]:
    import csv

    with open(demo_dir() / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for lang in ("en", "zh"):
        out += [r for r in rows if r["language"] == lang][:per_language]
    return out


def aligned_dir(rows: list[dict], root: Path) -> Path:
    """An aligned-corpus directory from the demo corpus' ground-truth TextGrids."""
    from phonalign.phonesets import detect_phone_set
    from phonalign.records import UTTERANCE_SCHEMA
    from phonalign.segments import segments_from_alignment
    from phonalign.textgrid_io import read_alignment

    root.mkdir(parents=True)
    utts, segs = [], []
    for r in rows:
        al = read_alignment(demo_dir() / "textgrids" / f"{r['utt_id']}.TextGrid")
        segs.append(segments_from_alignment(r["utt_id"], al, phone_set=detect_phone_set([p.label for p in al.phones])))
        utts.append({**{k: r.get(k) or None for k in UTTERANCE_SCHEMA.names},
                     "audio_path": str(demo_dir() / r["audio_path"])})
    pq.write_table(pa.Table.from_pylist(utts, schema=UTTERANCE_SCHEMA), root / "utterances.parquet")
    pq.write_table(pa.concat_tables(segs), root / "segments.parquet")
    return root


def get_model(name: str):
    try:
        enc = load_encoder(name, device="cpu")
        return enc.model, f"{enc.model_id} (revision {str(enc.revision)[:12]}), real pretrained weights"
    except LamError as err:
        return random_model("whisper", size="base"), f"random whisper-base geometry ({err.message})"


def timing(model, rows, n: int, repeats: int) -> tuple[float, float]:
    waves = []
    for r in (rows * n)[:n]:
        w = load_audio(demo_dir() / r["audio_path"])[:48000]
        waves.append(np.pad(w, (0, 48000 - len(w))))
    out = {}
    for mode in ("crop", "trim"):
        enc = load_encoder(model, device="cpu", whisper_mode=mode)
        enc.forward(waves[:1])  # warm-up
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            enc.forward(waves)
            best = min(best, time.perf_counter() - t)
        out[mode] = best
    return out["crop"], out["trim"]


def effect(model, rows, work: Path) -> None:
    from scipy.stats import spearmanr

    from analysis.extract import extract_features
    from analysis.similarity import run_similarity
    from analysis.store import FeatureStore

    stores = {}
    for lang in ("en", "zh"):
        al = aligned_dir([r for r in rows if r["language"] == lang], work / f"aligned_{lang}")
        for mode in ("crop", "trim"):
            enc = load_encoder(model, device="cpu", whisper_mode=mode)
            extract_features(al, work / f"{lang}_{mode}", model=enc, batch_seconds=60, progress=False)
            stores[lang, mode] = work / f"{lang}_{mode}"
    crop, trim = FeatureStore.open(stores["en", "crop"]), FeatureStore.open(stores["en", "trim"])
    kind = np.asarray(crop.index.column("kind").to_pylist())
    assert crop.index.column("unit_id").to_pylist() == trim.index.column("unit_id").to_pylist()
    print("layer  cos(crop,trim) utterances  segments")
    for layer in range(crop.n_layers + 1):
        a, b = crop.read_layer(layer), trim.read_layer(layer)
        c = np.einsum("nh,nh->n", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"{layer:5d}  {c[kind == 'utt'].mean():24.3f}  {c[kind == 'segment'].mean():8.3f}")
    docs = {}
    for mode in ("crop", "trim"):
        run_similarity(stores["en", mode], stores["zh", mode], work / f"sim_{mode}", n_bootstrap=100, progress=False,
                       units=["Utt", "Vowl", "Cons"])
        import json

        docs[mode] = json.loads((work / f"sim_{mode}" / "rankings.json").read_text())
    print("unit  spearman(layer scores)  best layer crop/trim  top-3 crop / trim")
    for u in ("Utt", "Vowl", "Cons"):
        sc, st = docs["crop"]["units"][u], docs["trim"]["units"][u]
        rho = spearmanr(sc["score"][1:], st["score"][1:]).statistic
        print(f"{u:5s} {rho:22.3f}  {sc['selections']['BL'][0]:>10d} / {st['selections']['BL'][0]:<6d}  "
              f"{sc['selections']['GL']} / {st['selections']['GL']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--n", type=int, default=8, help="3-second utterances timed")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--effect", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--per-language", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, desc = get_model(args.model)
    print(f"model: {desc}; torch threads {args.threads}")
    rows = demo_rows(args.per_language)
    work = Path(tempfile.mkdtemp(prefix="bench_trim_"))
    try:
        if args.effect:
            effect(model, rows, work)
        crop, trim = timing(model, rows, args.n, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.n} x 3.0 s utterances: crop (30 s window) {crop:.2f} s, trim {trim:.2f} s")
    print(f"speedup crop/trim = {crop / trim:.2f}")


if __name__ == "__main__":
    main()
