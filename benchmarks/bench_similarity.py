"""Benchmark `lam similarity` on a large store pair: peak memory (in a subprocess) and speedup over a
plain numpy loop, same stores, same work, one run.

Data: two feature stores on disk with ``--segments`` segment rows in total (half per corpus; default
200,000), ``--layers`` layers (default 13 = 12 transformer layers + layer 0) of ``--hidden`` float32
dimensions (default 768), ``--seg-per-utt`` segments per utterance (plus one utterance row each),
unit classes cycling over the six vowels and consonants. At full size that is 8 GB on disk; the
stores are kept in ``--workdir`` and reused by later runs (``--clean`` removes them).

Work (both sides): centroid cosine for the 9 units (Utt, Vowl, Cons, A E @ i O u) in every layer,
``--bootstrap`` utterance-resampling draws, ``--halves`` within-language half splits per corpus.

* toolkit: ``lam similarity`` as a subprocess; its peak resident memory is read with
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (target: under 2 GB).
* baseline: a plain numpy loop: each layer loaded whole per corpus, rows gathered per drawn
  utterance with Python lists, ``X[idx].mean(0)`` per unit, draw and half split.

The last line printed is the speedup.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from analysis.store import FeatureStore, index_table

UNIT_CLASSES = {"Utt": ["utterance"], "Vowl": ["A", "E", "@", "i", "O", "u"], "Cons": ["consonant"],
                **{v: [v] for v in ("A", "E", "@", "i", "O", "u")}}
CYCLE = ["A", "consonant", "E", "consonant", "@", "i", "consonant", "O", "u", "consonant"]


def make_store(path: Path, *, n_seg: int, n_layers: int, hidden: int, seg_per_utt: int, side: int,
               chunk_rows: int = 8192) -> FeatureStore:
    if (path / "meta.json").is_file():
        st = FeatureStore.open(path)
        if len(st) >= n_seg:
            return st
        shutil.rmtree(path)
    rng = np.random.default_rng(side)
    st = FeatureStore.create(path, model_id="bench-random", revision=None, n_layers=n_layers - 1, hidden_size=hidden,
                             settings={"bench": True})
    direction = rng.standard_normal((n_layers, hidden)).astype(np.float32)
    n_utt = n_seg // seg_per_utt
    per_chunk = max(1, chunk_rows // (seg_per_utt + 1))
    for lo in range(0, n_utt, per_chunk):
        cols = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "start", "end")}
        for u in range(lo, min(lo + per_chunk, n_utt)):
            uid = f"c{side}u{u:06d}"
            for s in range(-1, seg_per_utt):
                cols["unit_id"].append(uid if s < 0 else f"{uid}#{s}")
                cols["kind"].append("utt" if s < 0 else "segment")
                cols["utt_id"].append(uid)
                cols["seg_index"].append(s)
                cols["unit_class"].append("utterance" if s < 0 else CYCLE[(s + u) % len(CYCLE)])
                cols["start"].append(0.0)
                cols["end"].append(1.0)
        n = len(cols["unit_id"])
        layers = rng.standard_normal((n_layers, n, hidden), dtype=np.float32)
        layers += direction[:, None, :] * 3
        st.append(index_table(cols), layers)
    return FeatureStore.open(path)


def plain_loop(src: FeatureStore, tgt: FeatureStore, *, n_boot: int, n_halves: int, seed: int) -> np.ndarray:
    """The obvious numpy implementation; returns scores (units, layers)."""
    rng = np.random.default_rng(seed)
    groups = []
    for st in (src, tgt):
        idx = st.index
        utt = idx.column("utt_id").to_pylist()
        cls = idx.column("unit_class").to_pylist()
        by_unit = {}
        for unit, classes in UNIT_CLASSES.items():
            rows: dict[str, list[int]] = {}
            for i, (u, c) in enumerate(zip(utt, cls)):
                if c in classes:
                    rows.setdefault(u, []).append(i)
            by_unit[unit] = [np.array(r) for r in rows.values()]
        groups.append(by_unit)
    scores = np.zeros((len(UNIT_CLASSES), src.n_layers + 1))
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731
    for layer in range(src.n_layers + 1):
        xs, xt = src.read_layer(layer), tgt.read_layer(layer)
        for k, unit in enumerate(UNIT_CLASSES):
            gs, gt = groups[0][unit], groups[1][unit]
            cent = lambda x, g, pick: x[np.concatenate([g[i] for i in pick])].mean(0)  # noqa: E731
            scores[k, layer] = cos(cent(xs, gs, range(len(gs))), cent(xt, gt, range(len(gt))))
            for _ in range(n_boot):
                cos(cent(xs, gs, rng.integers(0, len(gs), len(gs))), cent(xt, gt, rng.integers(0, len(gt), len(gt))))
            for x, g in ((xs, gs), (xt, gt)):
                for _ in range(n_halves):
                    perm = rng.permutation(len(g))
                    cos(cent(x, g, perm[: len(g) // 2]), cent(x, g, perm[len(g) // 2:]))
        del xs, xt
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=200_000, help="segment rows in total (both corpora)")
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--seg-per-utt", type=int, default=25)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--halves", type=int, default=10)
    ap.add_argument("--workdir", default="/tmp/lam_bench_similarity")
    ap.add_argument("--clean", action="store_true", help="delete the stores afterwards")
    args = ap.parse_args()
    work = Path(args.workdir) / f"{args.segments}x{args.layers}x{args.hidden}"
    t = time.perf_counter()
    src = make_store(work / "src", n_seg=args.segments // 2, n_layers=args.layers, hidden=args.hidden,
                     seg_per_utt=args.seg_per_utt, side=0)
    tgt = make_store(work / "tgt", n_seg=args.segments // 2, n_layers=args.layers, hidden=args.hidden,
                     seg_per_utt=args.seg_per_utt, side=1)
    gb = sum(f.stat().st_size for f in work.rglob("*.npy")) / 1e9
    print(f"stores: {len(src)} + {len(tgt)} rows ({args.segments} segments) x {args.layers} layers x {args.hidden} "
          f"float32 = {gb:.2f} GB on disk (ready in {time.perf_counter() - t:.0f} s)")
    out = work / "sim"
    cmd = [sys.executable, "-c", "from lam_train.cli import main; main()", "similarity", str(work / "src"),
           str(work / "tgt"), "--out", str(out), "--metric", "centroid_cosine", "--bootstrap", str(args.bootstrap),
           "--halves", str(args.halves), "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    tool = time.perf_counter() - t
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    print(f"lam similarity: {tool:.1f} s, peak RSS {peak_gb:.2f} GB (limit 2 GB: {'ok' if peak_gb < 2 else 'EXCEEDED'})")
    t = time.perf_counter()
    scores = plain_loop(src, tgt, n_boot=args.bootstrap, n_halves=args.halves, seed=0)
    base = time.perf_counter() - t
    doc = json.loads((out / "rankings.json").read_text())
    got = np.array([doc["units"][u]["score"] for u in UNIT_CLASSES])
    print(f"plain numpy loop: {base:.1f} s; max |score difference| {np.abs(got - scores).max():.2e}")
    if args.clean:
        shutil.rmtree(work)
    print(f"speedup plain_loop/lam_similarity = {base / tool:.2f} (peak {peak_gb:.2f} GB)")


if __name__ == "__main__":
    main()
