"""Benchmark half-precision feature stores against float32 on the demo corpus: size and similarity.

For each model (randomly initialised, with the geometry of a real checkpoint; nothing downloaded)
the demo corpus (aligned from its ground-truth TextGrids, both languages) is extracted once into a
float32 store. Its rows are then written into a float16 and a bfloat16 store through
``FeatureStore.append`` (the very conversion ``lam features --store-dtype`` does at write time,
so the stores equal what ``--store-dtype`` extraction writes) and, for each, ``compare_stores``
(English vs Mandarin, every metric and unit, no bootstrap; with the default resampling, which
takes speakers as clusters, and with utterances as clusters, since the demo's three speakers per
language are too few for coral) is compared with the float32 store's: the largest absolute
difference of any score, per metric, over the units and layers where the metric is defined.

Issue 13's claim: float16 within 1e-3 of float32 on the demo corpus, store size halved.

Usage::

    .venv/bin/python benchmarks/bench_store_dtype.py
    .venv/bin/python benchmarks/bench_store_dtype.py --models wavlm-tiny,whisper-tiny

The last line printed is the size ratio and the largest float16 score difference.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

MODELS = {"wavlm-base": ("wavlm", "base"), "whisper-base": ("whisper", "base"),
          "wavlm-tiny": ("wavlm", "tiny"), "whisper-tiny": ("whisper", "tiny")}


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _largest_difference(half: dict, full: dict, metric: str) -> float:
    """Largest |score difference| of ``metric`` over every unit and layer where the float32 store's
    score is defined (a unit a metric skips, e.g. standardized_cosine for Utt, has no score); NaN
    when it is defined nowhere. A score defined for one store only counts as infinitely different."""
    out = []
    for u in full:
        a, b = half[u][metric].score, full[u][metric].score
        defined = np.isfinite(b)
        if defined.any():
            d = np.abs(a[defined] - b[defined])
            out.append(np.where(np.isfinite(d), d, np.inf))
    return float(np.max(np.concatenate(out))) if out else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="wavlm-base,whisper-base", help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args(argv)

    from analysis.extract import extract_features
    from analysis.models import load_encoder
    from analysis.similarity import METRICS, compare_stores
    from analysis.store import FeatureStore
    from analysis.testing import random_model
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir, read_corpus

    tmp = Path(tempfile.mkdtemp(prefix="bench-dtype-"))
    worst16, ratios = 0.0, []
    try:
        aligned = tmp / "aligned"
        align_corpus(read_corpus(None, preset="lam-demo"), aligned,
                     get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            arch, size = MODELS[name]
            enc = load_encoder(random_model(arch, size=size), device="cpu", whisper_mode="trim")
            stores = {"float32": tmp / f"{name}-float32"}
            extract_features(aligned, stores["float32"], model=enc, progress=False)
            ref = FeatureStore.open(stores["float32"])
            for dtype in ("float16", "bfloat16"):
                stores[dtype] = tmp / f"{name}-{dtype}"
                st = FeatureStore.create(stores[dtype], model_id=ref.model_id, revision=ref.meta["revision"],
                                         n_layers=ref.n_layers, hidden_size=ref.hidden_size,
                                         settings=ref.meta["settings"], dtype=dtype)
                index = ref.index
                for start in range(0, index.num_rows, 4096):  # chunks of --chunk-rows' default size
                    rows = np.arange(start, min(start + 4096, index.num_rows))
                    st.append(index.slice(start, len(rows)),
                              np.stack([ref.read_layer(layer, rows=rows) for layer in ref.layers]))
            # the default (speakers resampled: 3 per language in the demo, so coral, which needs 4,
            # is skipped) and utterances resampled (every metric defined), as two sets of units
            scores = {}
            for dtype, path in stores.items():
                st = FeatureStore.open(path)
                scores[dtype] = {}
                for resample in ("auto", "utterance"):
                    res = compare_stores(st, st, metrics=list(METRICS), n_bootstrap=0, source_language="en",
                                         target_language="zh", resample=resample).results["all"]
                    scores[dtype].update({f"{u} ({resample})": r for u, r in res.items()})
            layer_bytes = {d: _bytes(p / "layers") for d, p in stores.items()}
            total = {d: _bytes(p) for d, p in stores.items()}
            print(f"{name}: {ref.n_layers + 1} layers x {ref.hidden_size}, {len(ref)} rows; layer files "
                  + ", ".join(f"{d} {layer_bytes[d] / 1e6:.1f} MB" for d in stores)
                  + f"; whole store float32 {total['float32'] / 1e6:.1f} MB")
            for dtype in ("float16", "bfloat16"):
                ratio = layer_bytes[dtype] / layer_bytes["float32"]
                diffs = {m: _largest_difference(scores[dtype], scores["float32"], m) for m in METRICS}
                print(f"  {dtype}: layer files x{ratio:.4f} (whole store x{total[dtype] / total['float32']:.4f}); "
                      "max |score - float32 score| over the units and layers a metric is defined for: "
                      + ", ".join(f"{m} {d:.1e}" for m, d in diffs.items()))
                if dtype == "float16":
                    worst16 = max(worst16, max(d for d in diffs.values() if np.isfinite(d)))
                    ratios.append(ratio)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"float16/float32 layer bytes = {max(ratios):.4f}; largest float16 score difference = {worst16:.1e} "
          f"(claim: <= 1e-3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
