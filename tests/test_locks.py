"""One writer per output folder, shown with real processes: a second run is refused naming the
holder's pid and host, a SIGKILLed holder's lock is taken over by the next run, and shards of one
feature store run side by side with their reports merged (issue 12)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from faultkit import env_one_thread, make_corpus, tiny_model_dir

from analysis.store import FeatureStore

_HOLD = """
import sys, time
from phonalign.outdir import output_folder
shard = tuple(int(x) for x in sys.argv[3].split("/")) if len(sys.argv) > 3 else None
with output_folder(sys.argv[1], step=sys.argv[2], shard=shard):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(out: Path, step: str, shard: str | None = None) -> subprocess.Popen:
    """A real process holding ``out`` as ``lam <step>`` does; returns once it holds it."""
    args = [sys.executable, "-c", _HOLD, str(out), step] + ([shard] if shard else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_one_thread())
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc


def _lam(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lam_train.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env_one_thread())


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def aligned(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("locks")
    corpus = make_corpus(root / "corpus", 16, seed=21)
    res = _lam("align", corpus, root / "aligned", "--language", "en", "--no-progress")
    assert res.returncode == 0, res.stderr
    return root / "aligned"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-wavlm"))


def _features(aligned: Path, out: Path, model: Path, *extra) -> subprocess.CompletedProcess:
    return _lam("features", aligned, out, "--model", model, "--device", "cpu", "--no-progress", *extra)


def test_second_lam_features_into_a_held_store_is_refused_naming_the_holder(tmp_path, aligned, model_dir):
    store = tmp_path / "store"
    assert _features(aligned, store, model_dir).returncode == 0
    before = {p: p.read_bytes() for p in store.rglob("*.npy")}
    holder = _hold(store, "features")
    try:
        res = _features(aligned, store, model_dir)
    finally:
        _stop(holder)
    assert res.returncode == 2, res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "Traceback" not in res.stderr
    assert f"pid {holder.pid} on host {socket.gethostname()}" in line[0] and str(store) in line[0]
    assert {p: p.read_bytes() for p in store.rglob("*.npy")} == before


def test_second_lam_align_into_a_held_out_is_refused_naming_the_holder(tmp_path, aligned):
    corpus = aligned.parent / "corpus"
    out = tmp_path / "out"
    holder = _hold(out, "align")
    try:
        res = _lam("align", corpus, out, "--language", "en", "--no-progress")
    finally:
        _stop(holder)
    assert res.returncode == 2
    assert f"pid {holder.pid} on host {socket.gethostname()}" in res.stderr and "lam align" in res.stderr
    assert not (out / "parts").exists()  # the refused run wrote nothing


def test_two_lam_features_at_once_never_duplicate_rows(tmp_path, aligned, model_dir):
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-m", "lam_train.cli", "features", str(aligned), str(store), "--model",
                               str(model_dir), "--device", "cpu", "--no-progress"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env_one_thread()) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for (code, _, err), other in zip(results, procs[::-1], strict=True):
        if code == 2:  # refused while the other held the store: it says who
            assert f"pid {other.pid} on host" in err, err
    st = FeatureStore.open(store)
    ids = st.index.column("unit_id").to_pylist()
    assert len(ids) == len(set(ids)) and st.done_utt_ids() == {f"u{i:03d}" for i in range(16)}


def test_a_sigkilled_holder_is_recovered_by_the_next_run(tmp_path, aligned, model_dir):
    store = tmp_path / "store"
    holder = _hold(store, "features")
    _stop(holder, signal.SIGKILL)  # no clean-up ran: its holder file is still there
    assert json.loads((store / ".lam.lock.json").read_text())["pid"] == holder.pid
    res = _features(aligned, store, model_dir)
    assert res.returncode == 0, res.stderr
    assert not (store / ".lam.lock.json").exists()  # the run that took over left nothing behind


def test_a_sigkilled_lam_features_resumes_to_the_fresh_store(tmp_path, aligned, model_dir):
    store = tmp_path / "store"
    args = [sys.executable, "-m", "lam_train.cli", "features", str(aligned), str(store), "--model", str(model_dir),
            "--device", "cpu", "--no-progress", "--chunk-rows", "6", "--batch-seconds", "0.5"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_one_thread())
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((store / "index").glob("part-*.parquet"))) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert 2 <= len(FeatureStore.open(store).done_utt_ids()) < 16, "not killed in the middle of the work"
    res = _features(aligned, store, model_dir, "--chunk-rows", "6", "--batch-seconds", "0.5")
    assert res.returncode == 0, res.stderr
    fresh = tmp_path / "fresh"
    assert _features(aligned, fresh, model_dir, "--chunk-rows", "6", "--batch-seconds", "0.5").returncode == 0
    a, b = FeatureStore.open(store), FeatureStore.open(fresh)
    ia, ib = a.index.column("unit_id").to_pylist(), b.index.column("unit_id").to_pylist()
    assert sorted(ia) == sorted(ib) and len(set(ia)) == len(ia)
    oa, ob = np.argsort(ia), np.argsort(ib)
    for layer in range(a.n_layers + 1):
        np.testing.assert_allclose(a.read_layer(layer)[oa], b.read_layer(layer)[ob], rtol=1e-5, atol=1e-6)


def test_shards_run_side_by_side_and_their_reports_are_merged(tmp_path, aligned, model_dir):
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-m", "lam_train.cli", "features", str(aligned), str(store), "--model",
                               str(model_dir), "--device", "cpu", "--no-progress", "--shard", f"{i}/2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_one_thread())
             for i in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
        p.stdout.close()
        p.stderr.close()
    for i in range(2):
        rep = json.loads((store / "shards" / f"s{i:04d}of0002" / "report.json").read_text())
        assert rep["shard"] == f"{i}/2" and (store / "shards" / f"s{i:04d}of0002" / "config.yaml").is_file()
    merged = json.loads((store / "report.json").read_text())
    assert merged["complete"] and merged["n_shards"] == 2 and merged["ok"] == 16
    assert sorted(merged["shards"]) == ["s0000of0002", "s0001of0002"]
    fresh = tmp_path / "fresh"
    assert _features(aligned, fresh, model_dir).returncode == 0
    a, b = FeatureStore.open(store), FeatureStore.open(fresh)
    assert sorted(a.index.column("unit_id").to_pylist()) == sorted(b.index.column("unit_id").to_pylist())


def test_a_held_shard_an_unsharded_run_and_another_split_are_refused(tmp_path, aligned, model_dir):
    store = tmp_path / "store"
    holder = _hold(store, "features", "0/2")
    try:
        same = _features(aligned, store, model_dir, "--shard", "0/2")
        whole = _features(aligned, store, model_dir)
        other_split = _features(aligned, store, model_dir, "--shard", "1/3")
        other_shard = _features(aligned, store, model_dir, "--shard", "1/2")
    finally:
        _stop(holder)
    for res in (same, whole, other_split):
        assert res.returncode == 2 and f"pid {holder.pid}" in res.stderr and "Traceback" not in res.stderr
    assert "3 shards" in other_split.stderr or "this run asks for 3" in other_split.stderr
    assert other_shard.returncode == 0, other_shard.stderr
    rep = json.loads((store / "report.json").read_text())
    assert rep["complete"] is False and rep["shards_missing"] == ["s0000of0002"]
