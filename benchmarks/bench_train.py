"""Training throughput: the toolkit's loop (`run_training`) vs a plain PyTorch loop, same data.

Both train the same classifier (3 anchored layers of a 768-wide model, CORAL on) for the same
number of epochs on the same synthetic pooled features; the toolkit's time includes everything
it does besides the steps (per-epoch source-dev evaluation, safetensors checkpoint, final
evaluation and CORAL distances). The plain loop is a DataLoader over a TensorDataset with a
per-layer CORAL loop. Prints utterances/s for both, on CPU and (where available) CUDA, and the
ratio toolkit / plain as the last line (higher is better; 1.0 = no overhead).

    python benchmarks/bench_train.py [--n 4000] [--epochs 5] [--hidden 768]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa
import torch

from lam_train.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lam_train.coral import coral_loss
from lam_train.data import ArrayFeatures
from lam_train.model import EmotionClassifier
from lam_train.train import run_training

EMO = ["Neutral", "Happiness", "Anger", "Sadness"]
LAYERS = [4, 5, 6]  # GL-like: three anchored layers


def make_features(n: int, hidden: int, n_layers: int = 12, seed: int = 0) -> ArrayFeatures:
    rng = np.random.default_rng(seed)
    rows = []
    for lang in ("en", "zh"):
        for split, k in (("train", n), ("dev", n // 10), ("test", n // 10)):
            for i in range(k):
                rows.append({"unit_id": f"{lang}{split}{i}", "kind": "utt", "utt_id": f"{lang}{split}{i}",
                             "language": lang, "split": split, "emotion": EMO[i % 4]})
    m = len(rows)
    layers = {layer: rng.normal(size=(m, hidden)).astype(np.float32) if layer in LAYERS or layer == n_layers
              else np.zeros((m, hidden), np.float32) for layer in range(n_layers + 1)}
    return ArrayFeatures(pa.Table.from_pylist(rows), layers)


def plain_loop(f: ArrayFeatures, cfg: RunConfig, device: torch.device) -> float:
    """The textbook loop: DataLoader, model, CE + lambda * sum of per-layer CORAL, Adam."""
    idx = f.index
    lang = np.array(idx["language"].to_pylist())
    split = np.array(idx["split"].to_pylist())
    y_all = np.array([EMO.index(e) for e in idx["emotion"].to_pylist()])
    src = np.flatnonzero((lang == "en") & (split == "train"))
    tgt = np.flatnonzero((lang == "zh") & (split == "train"))
    xs = torch.from_numpy(np.stack([f.read_layer(layer)[src] for layer in LAYERS], axis=1))  # (n, layers, hidden)
    xt = torch.from_numpy(np.stack([f.read_layer(layer)[tgt] for layer in LAYERS], axis=1))
    ys = torch.from_numpy(y_all[src])
    torch.manual_seed(0)
    m = cfg.model
    model = EmotionClassifier(n_layers=len(LAYERS), in_dim=xs.shape[-1], width=m.width, head_hidden=m.head_hidden,
                              dropout=m.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    bs = cfg.train.batch_size
    src_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=bs, shuffle=True,
                                             drop_last=True)
    tgt_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt), batch_size=bs, shuffle=True,
                                             drop_last=True)
    ce = torch.nn.CrossEntropyLoss()
    n_seen = 0
    t0 = time.perf_counter()
    for _ in range(cfg.train.epochs):
        for (x, y), (x2,) in zip(src_loader, tgt_loader, strict=True):  # both domains hold n utterances
            x, y, x2 = x.to(device), y.to(device), x2.to(device)
            logits, a_s = model(x.transpose(0, 1))
            _, a_t = model(x2.transpose(0, 1))
            loss = ce(logits, y) + cfg.train.lambda_coral * sum(coral_loss(a_s[k], a_t[k]) for k in range(len(LAYERS)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_seen / (time.perf_counter() - t0)


def toolkit_loop(f: ArrayFeatures, cfg: RunConfig) -> float:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        m = run_training(cfg, strategy="GL", seed=0, out_dir=tmp, source=f,
                         selections={"GL": LAYERS, "final": [12]})
    seconds = time.perf_counter() - t0
    n_train = m.source_train_n
    steps_per_epoch = n_train // cfg.train.batch_size
    return m.epochs_run * steps_per_epoch * cfg.train.batch_size / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="source (and target) training utterances")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    f = make_features(args.n, args.hidden)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ratio = None
    for dev in devices:
        cfg = RunConfig(data=DataConfig(source_language="en", target_language="zh"),
                        model=ModelConfig(width=128, head_hidden=(128, 64, 32)),
                        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1,
                                          progress=False, device=dev, lambda_coral=1.0))
        plain_loop(f, cfg, torch.device(dev))  # warm-up (allocator, kernels)
        default_threads = torch.get_num_threads()
        plain_default = plain_loop(f, cfg, torch.device(dev))
        if dev == "cpu":  # the toolkit trains pooled input on 1 thread (train.cpu_threads: auto)
            torch.set_num_threads(1)
            plain_same = plain_loop(f, cfg, torch.device(dev))
            torch.set_num_threads(default_threads)
        else:
            plain_same = plain_default
        ours = toolkit_loop(f, cfg)
        print(f"{dev}: toolkit {ours:,.0f} utt/s (incl. per-epoch dev evaluation and checkpoints); plain loop "
              f"{plain_same:,.0f} utt/s with the toolkit's thread count, {plain_default:,.0f} utt/s with torch's "
              f"default {default_threads} threads  [{args.n} utts x {args.epochs} epochs, {len(LAYERS)} layers x "
              f"{args.hidden} dims]")
        if dev == "cpu":
            ratio = ours / plain_same
    print(f"ratio toolkit/plain throughput on cpu (same threads): {ratio:.2f}")


if __name__ == "__main__":
    main()
