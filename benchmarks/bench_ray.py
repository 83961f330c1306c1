"""Benchmark the Ray engine against the local engine on the demo corpus, same data, one process.

Starts a real local Ray cluster (two nodes with one CPU each, as the tests do; not timed) and
times, for the same step on the same data:

* **align**: ``lam align`` with pocketsphinx on the 240 demo utterances (the 120 English ones
  align; pocketsphinx refuses Mandarin per utterance): local ``-j 1`` and ``-j 2`` against Ray
  with 1 and 2 workers.
* **features**: ``lam features`` on the demo corpus (aligned from its ground-truth TextGrids)
  with a randomly initialised model of WavLM base's geometry (hidden 768, 12 layers; ``--size
  tiny`` for a quick run): local with 1 and 2 torch threads against Ray with 1 and 2 actors of
  one thread each.

Ray times include joining the cluster and, for features, the actors loading the model; local
times include loading the model too. Ray's workers run at this process's niceness (Ray's default,
15, would put them behind the local runs on a machine with other work). Each configuration runs
``--repeat`` times and the best is kept. Outputs are checked to be equal to the local run's
(tables, TextGrids, store arrays).

Goals (issue 13): Ray time / local time at the same worker count <= 1.2; Ray 2 workers over 1
worker >= 1.6 on two idle cores. Other jobs on the machine change the figures: the load average
is printed before and after. Run it alone, e.g.::

    flock /tmp/lam-heavy.lock .venv/bin/python benchmarks/bench_ray.py
    .venv/bin/python benchmarks/bench_ray.py --steps align --repeat 1
    .venv/bin/python benchmarks/bench_ray.py --steps align --copies 4   # the corpus 4 times over
    .venv/bin/python benchmarks/bench_ray.py --steps features --size tiny

The last line printed holds the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def _ray_import_line() -> str:
    """What every Ray worker process pays before its first task: ``import ray`` in a fresh
    interpreter of this environment, and whether that pulled in rfc3987-syntax (a Jupyter server's
    jsonschema format checkers build an IRI grammar at import time: about 1 s more per worker)."""
    import subprocess

    probe = ("import sys, time; t = time.perf_counter(); import ray; "
             "print(f'{time.perf_counter() - t:.2f}', 'rfc3987_syntax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    slow = out[1] == "True"
    return (f"a fresh interpreter imports ray in {out[0]} s, as every Ray worker does at start"
            + ("; rfc3987_syntax was imported with it (JupyterLab or another Jupyter server is installed "
               "here: see docs/scale.md)" if slow else ""))


def _best(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_align(tmp: Path, address: str, repeat: int, copies: int = 1) -> dict[str, float]:
    import dataclasses

    import pyarrow.parquet as pq

    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import read_corpus
    from phonalign.engine import EngineConfig

    demo = read_corpus(None, preset="lam-demo")
    # --copies K: the corpus K times over (ids made unique), to see which costs are per run
    utts = [dataclasses.replace(u, utt_id=f"{u.utt_id}_c{k}" if k else u.utt_id) for k in range(copies)
            for u in demo]
    runs: dict[str, tuple[dict, dict]] = {
        "local-1": ({"jobs": 1}, {}), "local-2": ({"jobs": 2}, {}),
        "ray-1": ({}, {"workers": 1}), "ray-2": ({}, {"workers": 2}),
    }
    times = {}
    for name, (kw, eng) in runs.items():
        def run(name: str = name, kw: dict = kw, eng: dict = eng) -> None:
            out = tmp / f"align-{name}"
            shutil.rmtree(out, ignore_errors=True)  # every repeat from scratch, not a resume
            engine = EngineConfig("ray", address=address, **eng) if eng else None
            align_corpus(utts, out, get_aligner("pocketsphinx"), progress=False, engine=engine, **kw)

        times[name] = _best(run, repeat)
        print(f"  align {name}: {times[name]:.2f} s", flush=True)
    ref = pq.read_table(tmp / "align-local-1" / "segments.parquet")
    for name in runs:
        assert pq.read_table(tmp / f"align-{name}" / "segments.parquet").equals(ref), name
    return times


def bench_features(tmp: Path, address: str, repeat: int, size: str) -> dict[str, float]:
    import numpy as np
    import torch

    from analysis.extract import extract_features
    from analysis.store import FeatureStore
    from analysis.testing import random_model
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir, read_corpus
    from phonalign.engine import EngineConfig

    aligned = tmp / "aligned-textgrid"
    align_corpus(read_corpus(None, preset="lam-demo"), aligned,
                 get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    model_dir = tmp / f"wavlm-{size}"
    random_model("wavlm", size=size).save_pretrained(model_dir)
    runs = {"local-1": (1, None), "local-2": (2, None), "ray-1": (1, 1), "ray-2": (1, 2)}
    times = {}
    before = torch.get_num_threads()
    try:
        for name, (threads, workers) in runs.items():
            def run(name: str = name, threads: int = threads, workers: int | None = workers) -> None:
                out = tmp / f"features-{name}"
                shutil.rmtree(out, ignore_errors=True)
                torch.set_num_threads(threads)
                engine = EngineConfig("ray", address=address, workers=workers) if workers else None
                rep = extract_features(aligned, out, model=str(model_dir), device="cpu", progress=False,
                                       engine=engine)
                assert rep.n_failed == 0, rep.failed

            times[name] = _best(run, repeat)
            print(f"  features {name}: {times[name]:.2f} s", flush=True)
    finally:
        torch.set_num_threads(before)
    ref = FeatureStore.open(tmp / "features-local-1")
    for name in ("ray-1", "ray-2"):  # one thread each, like local-1: the same arrays
        other = FeatureStore.open(tmp / f"features-{name}")
        assert other.index.equals(ref.index), name
        assert all(np.array_equal(other.read_layer(layer), ref.read_layer(layer)) for layer in ref.layers), name
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="align,features", help="align, features or both (comma-separated)")
    parser.add_argument("--size", default="base", choices=("tiny", "base"), help="model geometry for features")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration (the best is kept)")
    parser.add_argument("--copies", type=int, default=1,
                        help="align the demo corpus this many times over in one run (fixed costs per run shrink)")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]

    from phonalign.ray_cluster import LocalCluster

    print(f"before: {_load()}", flush=True)
    print(_ray_import_line(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    results: dict[str, dict[str, float]] = {}
    try:
        # Ray's workers would run at niceness 15, below the local engine's processes (this one's):
        # on a machine with other work that alone would make Ray look slower
        niceness = os.nice(0)
        with LocalCluster(n_nodes=2, cpus_per_node=1, object_store_mb=256, worker_niceness=niceness) as cluster:
            os.environ.update(cluster.env)  # before ray is imported: it reads its auth settings then
            print(f"cluster: 2 nodes x 1 CPU at {cluster.address}, workers at niceness {niceness} "
                  "(as the local runs)", flush=True)
            if "align" in steps:
                results["align"] = bench_align(tmp, cluster.address, args.repeat, args.copies)
            if "features" in steps:
                results["features"] = bench_features(tmp, cluster.address, args.repeat, args.size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"after: {_load()}")
    summary = []
    for step, t in results.items():
        r1, r2 = t["ray-1"] / t["local-1"], t["ray-2"] / t["local-2"]
        speedup = t["ray-1"] / t["ray-2"]
        print(f"{step}: ray/local 1 worker {r1:.3f}, 2 workers {r2:.3f} (goal <= 1.2); "
              f"ray 2-worker speedup {speedup:.2f} (goal >= 1.6); local -j2/threads speedup "
              f"{t['local-1'] / t['local-2']:.2f}")
        summary.append(f"{step} ray/local {max(r1, r2):.3f} speedup {speedup:.2f}")
    print("; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
