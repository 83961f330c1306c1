"""The GPU check of issue 13 (item 5): run once on a machine with a CUDA GPU.

Three parts, each printed as it finishes and all written to ``--out`` (JSON):

1. **Extraction precision.** For random-weight models with the geometry of WavLM base, WavLM large
   and Whisper base (and the real Whisper base when the offline package is installed), the hidden
   states of 8 demo utterances on CUDA in float16 and bfloat16 autocast against CPU float32:
   per layer, the mean over frames of the cosine between the two. Passes when every layer of
   every model has mean cosine >= 0.999 (the minimum over frames is printed too). Then the
   pooled vectors ``lam features`` writes (CUDA float16 store against CPU float32 store, the
   whole CUDA path: batching, autocast, pooling on the GPU) on 24 demo utterances: per layer the
   mean row cosine, same threshold.
2. **Training.** One ``final+coral`` run on a pooled store of the demo corpus (Whisper base when
   available, else random WavLM base features), on CPU and on CUDA with autocast in bfloat16 and
   in float16 (gradient scaling), same seed and data. Passes when the mean loss of the first
   epoch agrees within 5 % and the source-dev and target-test UAR within 0.10 of the CPU run
   (the demo's target test has 24 utterances: one is 0.04 of UAR; later epochs drift apart as
   rounding differences change the early-stopping path).
3. **Throughput.** ``lam features`` end to end (decoding, batching, forward, pooling, store
   writes) on CUDA over a synthetic corpus of 3-11 s utterances (MSP-Podcast's range), in audio
   seconds per second, for random-weight WavLM base, WavLM large and Whisper base (crop: every
   input padded to 30 s, as trained; and trim), ``--batch-seconds`` 60, 300 and 1200, float16
   autocast; also the forward pass alone (``forward_seconds`` of the report). Group-norm models
   (WavLM base) run each distinct length on its own (zero padding would change their features),
   so their batches hold one utterance whatever ``--batch-seconds``.

Nothing is downloaded. Usage on the GPU machine (the toolkit installed with a CUDA torch)::

    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --quick          # about a third of the time

``--device cpu`` runs the same script on CPU (bfloat16 only, tiny throughput corpus) to check
the script itself; its figures mean nothing for GPUs. Exit code 1 when a check fails. The last
line printed says which parts passed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SR = 16000
THRESHOLD = 0.999


def _log(msg: str) -> None:
    print(msg, flush=True)


def _demo_waves(n: int) -> tuple[list[np.ndarray], list]:
    from phonalign.audio import load_audio
    from phonalign.corpus import read_corpus

    utts = read_corpus(None, preset="lam-demo")
    # both languages, several speakers
    pick = [utts[i] for i in np.linspace(0, len(utts) - 1, n).astype(int)]
    return [load_audio(u.audio_path, sr=SR) for u in pick], pick


def _layer_cosines(ref: torch.Tensor, other: torch.Tensor, valid: np.ndarray) -> tuple[list[float], list[float]]:
    """Per layer: mean and min over all valid frames of the cosine between ``ref`` and ``other``."""
    means, mins = [], []
    for layer in range(ref.shape[0]):
        cos = torch.cat([torch.nn.functional.cosine_similarity(ref[layer, b, :n].double(),
                                                               other[layer, b, :n].double(), dim=-1)
                         for b, n in enumerate(valid)])
        means.append(float(cos.mean()))
        mins.append(float(cos.min()))
    return means, mins


def _models(quick: bool, device: str) -> list[tuple[str, object]]:
    from analysis.testing import random_model

    if device != "cuda":  # a dry run of the script: small models
        return [("wavlm-tiny (random)", random_model("wavlm")), ("whisper-tiny (random)", random_model("whisper"))]
    out: list[tuple[str, object]] = [("wavlm-base (random)", random_model("wavlm", size="base")),
                                     ("wavlm-large (random)", random_model("wavlm", size="large")),
                                     ("whisper-base (random)", random_model("whisper", size="base"))]
    if not quick:
        try:
            from analysis.model_sources import load_pretrained

            out.append(("whisper-base (OpenAI weights)", load_pretrained("whisper-base")))
        except Exception as err:  # noqa: BLE001 - the offline package is optional here
            _log(f"  (real whisper-base not available: {type(err).__name__}: {err})")
    return out


def check_precision(device: str, dtypes: list[str], quick: bool, tmp: Path) -> dict:
    from analysis.extract import extract_features
    from analysis.models import load_encoder
    from analysis.store import FeatureStore
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir

    waves, _ = _demo_waves(8)
    results, ok = [], True
    for name, model in _models(quick, device):
        ref_enc = load_encoder(model, device="cpu", whisper_mode="crop")
        ref, valid = ref_enc.forward(waves)
        for dtype in dtypes:
            enc = load_encoder(model, device=device, dtype=dtype, whisper_mode="crop")
            out, v = enc.forward(waves)
            means, mins = _layer_cosines(ref, out.cpu(), valid)
            passed = bool(np.array_equal(v, valid) and min(means) >= THRESHOLD)
            ok &= passed
            results.append({"model": name, "dtype": dtype, "what": "frames", "mean_cosine": means,
                            "min_cosine": mins, "passed": passed})
            _log(f"  {name} {dtype} frames: lowest layer mean cosine {min(means):.5f} (layer "
                 f"{int(np.argmin(means))}), lowest frame {min(mins):.4f} -> {'ok' if passed else 'FAIL'}")
            del enc, out
        del ref_enc, ref
        if device == "cuda":
            torch.cuda.empty_cache()

    # the whole lam features path on the GPU: pooled vectors of a CUDA store against a CPU store
    from phonalign.corpus import read_corpus

    utts = read_corpus(None, preset="lam-demo")
    subset = [utts[i] for i in np.linspace(0, len(utts) - 1, 24).astype(int)]
    aligned = tmp / "aligned24"
    align_corpus(subset, aligned, get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"),
                 progress=False)
    name, model = _models(True, device)[0]
    extract_features(aligned, tmp / "store-cpu", model=model, device="cpu", progress=False)
    ref_store = FeatureStore.open(tmp / "store-cpu")
    for dtype in dtypes:
        extract_features(aligned, tmp / f"store-{dtype}", model=model, device=device, dtype=dtype, progress=False)
        st = FeatureStore.open(tmp / f"store-{dtype}")
        assert st.index.equals(ref_store.index)
        means = []
        for layer in ref_store.layers:
            a, b = ref_store.read_layer(layer).astype(np.float64), st.read_layer(layer).astype(np.float64)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            means.append(float(cos.mean()))
        passed = min(means) >= THRESHOLD
        ok &= passed
        results.append({"model": name, "dtype": dtype, "what": "pooled store rows",
                        "mean_cosine": means, "passed": passed})
        _log(f"  lam features {name} {dtype} store vs CPU float32: lowest layer mean row cosine "
             f"{min(means):.5f} -> {'ok' if passed else 'FAIL'}")
    return {"passed": ok, "results": results}


def check_training(device: str, dtypes: list[str], tmp: Path) -> dict:
    from analysis.extract import extract_features
    from analysis.testing import random_model
    from lam_train.config import config_from_dict
    from lam_train.train import run_training
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir, read_corpus

    aligned = tmp / "aligned"
    align_corpus(read_corpus(None, preset="lam-demo"), aligned,
                 get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    store = tmp / "train-store"
    try:
        extract_features(aligned, store, model="whisper-base", device=device, whisper_mode="trim", progress=False)
        features = "whisper-base (OpenAI weights, trim)"
    except Exception as err:  # noqa: BLE001 - without the offline package: random WavLM base features
        _log(f"  (whisper-base not available: {type(err).__name__}; using random WavLM base features)")
        shutil.rmtree(store, ignore_errors=True)
        size = "base" if device == "cuda" else "tiny"
        extract_features(aligned, store, model=random_model("wavlm", size=size), device=device, progress=False)
        features = f"wavlm-{size} (random)"

    def cfg(dev: str, amp_dtype: str | None):
        return config_from_dict({
            "unit": "Utt", "seeds": [0], "strategies": ["final+coral"],
            "data": {"source_store": str(store), "target_store": str(store), "source_language": "en",
                     "target_language": "zh"},
            "model": {"width": 64, "head_hidden": [64, 32, 16]},
            "train": {"device": dev, "amp": amp_dtype is not None, "amp_dtype": amp_dtype or "bfloat16",
                      "epochs": 40, "batch_size": 24, "lambda_coral": 10.0, "patience": 15, "progress": False}})

    runs = {"cpu": run_training(cfg("cpu", None), strategy="final+coral", seed=0, out_dir=tmp / "train-cpu")}
    if device == "cuda":
        for dtype in dtypes:
            runs[f"cuda-{dtype}"] = run_training(cfg("cuda", dtype), strategy="final+coral", seed=0,
                                                 out_dir=tmp / f"train-cuda-{dtype}")
    else:  # a dry run of the script: the same path on this device without autocast
        runs["cpu-again"] = run_training(cfg("cpu", None), strategy="final+coral", seed=0, out_dir=tmp / "train-again")
    ref, ok, rows = runs["cpu"], True, []
    for name, m in runs.items():
        loss0 = m.history[0].loss if m.history else float("nan")
        row = {"run": name, "first_epoch_loss": loss0, "epochs_run": m.epochs_run,
               "source_dev_uar": m.source_dev.uar,
               "target_test_uar": m.target_test.uar if m.target_test is not None else None}
        if name != "cpu":
            ref0 = ref.history[0].loss
            row["passed"] = bool(abs(loss0 - ref0) <= 0.05 * abs(ref0)
                                 and abs(row["source_dev_uar"] - ref.source_dev.uar) <= 0.10
                                 and (row["target_test_uar"] is None
                                      or abs(row["target_test_uar"] - ref.target_test.uar) <= 0.10))
            ok &= row["passed"]
        rows.append(row)
        _log(f"  train {name}: first-epoch loss {loss0:.4f}, source dev UAR {row['source_dev_uar']:.3f}, "
             f"target test UAR {row['target_test_uar']}, epochs {row['epochs_run']}"
             + (f" -> {'ok' if row['passed'] else 'FAIL'}" if "passed" in row else " (reference)"))
    return {"passed": ok, "features": features, "runs": rows}


def _synthetic_corpus(root: Path, seconds: float, seed: int = 0) -> Path:
    """Utterances of 3-11 s (noise; the compute does not depend on the content), one segment per 80 ms."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from phonalign.records import SEGMENT_SCHEMA, UTTERANCE_SCHEMA

    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True)
    urows, srows, total, k = [], [], 0.0, 0
    classes = ["A", "consonant", "i", "consonant", "u", "E", "consonant", "@", "O"]
    while total < seconds:
        sec = float(rng.uniform(3.0, 11.0))
        u = f"syn{k:05d}"
        path = root / "wav" / f"{u}.flac"
        sf.write(path, (rng.standard_normal(int(sec * SR)) * 0.1).astype(np.float32), SR)
        urows.append(dict(utt_id=u, audio_path=str(path), text="x", language="en", speaker=f"s{k % 10}",
                          corpus="synthetic", emotion="Neutral", split="train"))
        edges = np.arange(0.0, sec, 0.08)
        for j, (a, b) in enumerate(zip(edges, np.append(edges[1:], sec), strict=True)):
            c = classes[j % len(classes)]
            srows.append(dict(utt_id=u, index=j, label=c, phone=c, unit_class=c, start=float(a), end=float(b),
                              diphthong=False, rhotic=False, syllabic=False, stress=None, tone=None, word=None,
                              word_index=None, phone_set="arpabet"))
        total += sec
        k += 1
    pq.write_table(pa.Table.from_pylist(urows, schema=UTTERANCE_SCHEMA), root / "utterances.parquet")
    pq.write_table(pa.Table.from_pylist(srows, schema=SEGMENT_SCHEMA), root / "segments.parquet")
    return root


def throughput(device: str, quick: bool, tmp: Path) -> list[dict]:
    from analysis.extract import extract_features
    from analysis.models import load_encoder
    from analysis.testing import random_model

    seconds = 60.0 if device != "cuda" else (1300.0 if quick else 2500.0)
    corpus = _synthetic_corpus(tmp / "synthetic", seconds)
    import pyarrow.parquet as pq
    import soundfile as sf

    audio_s = sum(sf.info(r["audio_path"]).duration for r in pq.read_table(corpus / "utterances.parquet").to_pylist())
    dtype = "float16" if device == "cuda" else "bfloat16"
    size = "tiny" if device != "cuda" else None
    plan = [("wavlm-base", "wavlm", "base", "crop"), ("wavlm-large", "wavlm", "large", "crop"),
            ("whisper-base crop", "whisper", "base", "crop"), ("whisper-base trim", "whisper", "base", "trim")]
    rows = []
    for name, arch, geo, mode in plan:
        enc = load_encoder(random_model(arch, size=size or geo), device=device, dtype=dtype, whisper_mode=mode)
        for batch_seconds in ((60.0, 300.0) if quick else (60.0, 300.0, 1200.0)):
            store = tmp / f"tp-{name}-{batch_seconds:g}".replace(" ", "-")
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            rep = extract_features(corpus, store, model=enc, batch_seconds=batch_seconds, progress=False)
            wall = time.perf_counter() - t
            assert rep.n_failed == 0, rep.failed
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
            label = name if size is None else f"{arch}-{size} {mode}"  # a dry run on CPU: tiny models
            row = {"model": label, "dtype": dtype, "batch_seconds": batch_seconds,
                   "audio_seconds": audio_s, "wall_seconds": wall, "audio_s_per_s": audio_s / wall,
                   "forward_audio_s_per_s": audio_s / max(rep.forward_seconds, 1e-9), "peak_gib": peak,
                   "rows": rep.rows_written}
            rows.append(row)
            _log(f"  {row['model']} {dtype} batch {batch_seconds:g} s: {row['audio_s_per_s']:.0f} audio s/s end to "
                 f"end, {row['forward_audio_s_per_s']:.0f} forward only, peak {peak:.1f} GiB")
            shutil.rmtree(store, ignore_errors=True)
        del enc
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--out", default="gpu_check.json", help="JSON file for every figure")
    parser.add_argument("--quick", action="store_true", help="fewer models, batch sizes and audio")
    parser.add_argument("--parts", default="precision,training,throughput")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        _log("no CUDA device is visible: this check needs a GPU (--device cpu only checks the script)")
        return 2
    parts = [p.strip() for p in args.parts.split(",")]
    dtypes = ["float16", "bfloat16"] if args.device == "cuda" else ["bfloat16"]
    info = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "quick": args.quick}
    _log(f"gpu_check on {info['device']} (torch {info['torch']}, CUDA {info['cuda']})")
    report: dict = {"info": info}
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t0 = time.perf_counter()
    try:
        if "precision" in parts:
            _log("1. extraction precision (CUDA half precision vs CPU float32)")
            report["precision"] = check_precision(args.device, dtypes, args.quick, tmp)
        if "training" in parts:
            _log("2. training (CUDA autocast vs CPU)")
            report["training"] = check_training(args.device, dtypes, tmp)
        if "throughput" in parts:
            _log("3. throughput of lam features")
            report["throughput"] = throughput(args.device, args.quick, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        report["seconds"] = time.perf_counter() - t0
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    verdict = {k: report[k]["passed"] for k in ("precision", "training") if k in report}
    _log(f"written {args.out} in {report['seconds']:.0f} s; "
         + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in verdict.items())
         + (f"; throughput: {len(report.get('throughput', []))} runs" if "throughput" in report else ""))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
