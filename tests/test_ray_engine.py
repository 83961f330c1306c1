"""The Ray engine on a real cluster: a head on a loopback address plus a second node joined with
`ray start --address`, one CPU each, started once for this module and stopped afterwards (no Ray
process may be left).

What "the same results" means here (``assert_same_aligned``, ``assert_same_store``):

* aligned corpus: every ``textgrids/*.TextGrid`` byte for byte; ``segments.parquet`` and
  ``utterances.parquet`` equal as tables (schema, values, row order), and byte for byte when both
  runs went through uninterrupted (a resumed run assembles the same rows from more parts, so its
  Parquet row groups differ); ``report.json``'s per-utterance items (status, reason, error, hint,
  phone set, backend facts) equal;
* feature store: the index table equal in row order, every stored layer array-equal
  (``np.array_equal``, no tolerance), same layers, dtype and settings in ``meta.json``.

CPU reductions in torch depend on the number of threads, so local extraction runs here with one
thread, as every Ray actor does (``--cpus-per-worker 1``); see docs/scale.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'lam-toolkit[ray]')")

from analysis.extract import extract_features  # noqa: E402
from analysis.store import FeatureStore  # noqa: E402
from analysis.testing import random_model  # noqa: E402
from phonalign.align import get_aligner  # noqa: E402
from phonalign.align.run import align_corpus  # noqa: E402
from phonalign.corpus import read_corpus  # noqa: E402
from phonalign.engine import EngineConfig  # noqa: E402

#: generous: other jobs share this machine's two cores
TIMEOUT = 900


# ---------------------------------------------------------------------------------------------
# the cluster and the local references


@pytest.fixture(scope="module")
def cluster():
    """A real two-node local Ray cluster; the driver environment (auth token) is set meanwhile."""
    from phonalign.ray_cluster import LocalCluster

    # workers at the suite's own niceness: at Ray's default (15) they would wait behind every other
    # process of a busy CI machine, and the kill and restart tests would time out instead of test
    c = LocalCluster(n_nodes=2, cpus_per_node=1, object_store_mb=200, timeout=300, worker_niceness=os.nice(0))
    saved = dict(os.environ)
    try:
        c.start()
        os.environ.update(c.env)
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()
        os.environ.clear()
        os.environ.update(saved)
    left = c.processes()
    assert not left, f"Ray processes left behind: {[p.pid for p in left]}"


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread, like every actor (results of CPU reductions depend on the threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_aligned(tmp_path_factory):
    """The demo corpus aligned by pocketsphinx with the local engine (the reference)."""
    out = tmp_path_factory.mktemp("local-align") / "out"
    align_corpus(read_corpus(None, preset="lam-demo"), out, get_aligner("pocketsphinx"), jobs=1, progress=False,
                 chunk_size=20)
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A small randomly initialised WavLM saved as a local model folder (nothing downloaded)."""
    path = tmp_path_factory.mktemp("tiny-wavlm") / "model"
    random_model("wavlm").save_pretrained(path)
    return path


FEATURE_OPTS = {"batch_seconds": 6.0, "chunk_rows": 400}


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, demo_aligned, tiny_model_dir, one_thread):
    """Features of the demo corpus from the local engine (the reference)."""
    out = tmp_path_factory.mktemp("local-store") / "store"
    extract_features(demo_aligned, out, model=str(tiny_model_dir), device="cpu", progress=False, **FEATURE_OPTS)
    return out


def _lam(*args: str) -> list[str]:
    return [sys.executable, "-m", "lam_train.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _align_cmd(out: Path, *extra: str) -> list[str]:
    return _lam("align", "lam-demo", str(out), "--aligner", "pocketsphinx", "--chunk-size", "20", "--no-progress",
                *extra)


def _features_cmd(aligned: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return _lam("features", str(aligned), str(out), "--model", str(model), "--device", "cpu", "--batch-seconds",
                str(FEATURE_OPTS["batch_seconds"]), "--chunk-rows", str(FEATURE_OPTS["chunk_rows"]), "--no-progress",
                *extra)


def assert_same_aligned(a: Path, b: Path, *, same_bytes: bool = False) -> None:
    """Two aligned-corpus folders hold the same results (see the module docstring)."""
    names_a = sorted(p.name for p in (a / "textgrids").iterdir())
    names_b = sorted(p.name for p in (b / "textgrids").iterdir())
    assert names_a == names_b and len(names_a) > 50  # no temporary files left in either
    for name in names_a:
        assert (a / "textgrids" / name).read_bytes() == (b / "textgrids" / name).read_bytes(), name
    for table in ("segments.parquet", "utterances.parquet"):
        assert pq.read_table(a / table).equals(pq.read_table(b / table)), table
        if same_bytes:
            assert (a / table).read_bytes() == (b / table).read_bytes(), table
    ra = json.loads((a / "report.json").read_text(encoding="utf-8"))
    rb = json.loads((b / "report.json").read_text(encoding="utf-8"))
    assert ra["utterances"] == rb["utterances"]
    for key in ("utterances", "ok", "failed", "segments", "by_class", "errors"):
        assert ra["counts"][key] == rb["counts"][key], key


def assert_same_store(a: Path, b: Path, *, min_rows: int = 1000) -> None:
    """Two feature stores hold the same rows and vectors (see the module docstring)."""
    sa, sb = FeatureStore.open(a), FeatureStore.open(b)
    for key in ("model_id", "n_layers", "hidden_size", "layers", "dtype", "settings", "model"):
        assert sa.meta[key] == sb.meta[key], key
    assert len(sa) > min_rows
    assert sa.index.equals(sb.index)
    for layer in sa.layers:
        assert np.array_equal(sa.read_layer(layer), sb.read_layer(layer)), layer


def _wait_for(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}: {out[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


class _WorkerKiller(threading.Thread):
    """Kills the first Ray worker process found running ``title`` (once), while the run goes on."""

    def __init__(self, cluster, title: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.title, self.killed, self.stop = cluster, title, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and not self.killed:
            for p in self.cluster.worker_processes(self.title):
                try:
                    p.kill()
                except Exception:  # noqa: BLE001 - it ended meanwhile; look again
                    continue
                self.killed.append(p.pid)
                return
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# the same results as the local engine


def test_the_cluster_workers_run_at_the_niceness_asked_for(cluster):
    # a driver of its own: Ray reads the cluster's authentication settings when it is imported
    code = ("import os, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(ray.get(ray.remote(lambda: os.nice(0)).remote()))")
    done = subprocess.run([sys.executable, "-c", code, cluster.address], env={**os.environ, **cluster.env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == os.nice(0) != 15  # 15: what Ray gives its workers when not asked


def test_lam_align_on_the_ray_cluster_equals_the_local_run(cluster, local_aligned, tmp_path):
    out = tmp_path / "ray"
    _run(_align_cmd(out, "--engine", "ray", "--ray-address", cluster.address))
    assert_same_aligned(out, local_aligned, same_bytes=True)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["ok"] == 120  # the English half; pocketsphinx refuses Mandarin per utterance
    assert yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["engine"]["name"] == "ray"


def test_lam_features_on_the_ray_cluster_equal_the_local_run(cluster, demo_aligned, tiny_model_dir, local_store,
                                                             tmp_path):
    out = tmp_path / "ray"
    _run(_features_cmd(demo_aligned, out, tiny_model_dir, "--engine", "ray", "--ray-address", cluster.address))
    assert_same_store(out, local_store)
    # chunks are committed in the planned order, so even the chunk files are the same
    assert FeatureStore.open(out).chunks == FeatureStore.open(local_store).chunks


# ---------------------------------------------------------------------------------------------
# faults


def _run_while_killing(cluster, cmd: list[str], title: str) -> list[int]:
    """Run ``cmd`` to the end while killing the first Ray worker seen running ``title``."""
    killer = _WorkerKiller(cluster, title)
    killer.start()
    try:
        _run(cmd)
    finally:
        killer.stop.set()
        killer.join()
    return killer.killed


def test_a_killed_alignment_worker_is_replaced_and_its_chunk_retried(cluster, local_aligned, tmp_path):
    out = tmp_path / "ray"
    killed = _run_while_killing(cluster, _align_cmd(out, "--engine", "ray", "--ray-address", cluster.address),
                                "ray::lam_align_chunk")
    assert killed, "no alignment task was seen running: the fault was not injected"
    assert_same_aligned(out, local_aligned)


def test_a_killed_extraction_actor_is_restarted_and_its_unit_retried(cluster, demo_aligned, tiny_model_dir,
                                                                     local_store, tmp_path):
    out = tmp_path / "ray"
    killed = _run_while_killing(cluster, _features_cmd(demo_aligned, out, tiny_model_dir, "--engine", "ray",
                                                       "--ray-address", cluster.address),
                                "ray::LamExtractWorker.run")
    assert killed, "no actor was seen running a unit: the fault was not injected"
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["failed"] == {}
    assert_same_store(out, local_store)


_DYING_ALIGNER = """
import os, sys
from phonalign.align import get_aligner
from phonalign.align.base import Aligner
from phonalign.align.run import align_corpus
from phonalign.corpus import demo_corpus_dir, read_corpus
from phonalign.engine import EngineConfig


class DyingAligner(Aligner):
    \"\"\"The demo's own TextGrids as alignments, but the worker process exits on one utterance.\"\"\"

    name = "dying"

    def __init__(self, deadly):
        self.deadly = deadly
        self.inner = get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids")
        # what the runner asks of a backend, as the importer it wraps answers it
        self.phone_set = self.inner.phone_set
        self.aligns_audio = self.inner.aligns_audio
        self.min_phone_duration = self.inner.min_phone_duration

    def check_available(self):
        self.inner.check_available()

    def input_fingerprint(self, utterance):
        return self.inner.input_fingerprint(utterance)

    def align(self, utterances, workdir, *, jobs=1):
        for u in utterances:
            if u.utt_id == self.deadly:
                os._exit(3)
        yield from self.inner.align(utterances, workdir, jobs=jobs)


utts = read_corpus(None, preset="lam-demo")[:4]
align_corpus(utts, sys.argv[1], DyingAligner(utts[1].utt_id), progress=False,
             engine=EngineConfig("ray", address=sys.argv[2], max_retries=1, chunk_seconds=1.0))
"""


def test_a_chunk_whose_worker_keeps_dying_is_reported_per_utterance_and_the_run_goes_on(cluster, tmp_path):
    script = tmp_path / "dying.py"
    script.write_text(_DYING_ALIGNER, encoding="utf-8")
    _run([sys.executable, str(script), str(tmp_path / "ray"), cluster.address])
    items = json.loads((tmp_path / "ray" / "report.json").read_text(encoding="utf-8"))["utterances"]
    assert [i["status"] for i in items] == ["ok", "failed", "ok", "ok"]
    assert "failed 2 times" in items[1]["reason"] and "WorkerCrashedError" in items[1]["reason"]


_DYING_ENCODER = """
import os, sys
from analysis.extract import extract_features
from analysis.models import SpeechEncoder, load_encoder
from analysis.testing import random_model
from phonalign.audio import load_audio
from phonalign.engine import EngineConfig


class DyingEncoder(SpeechEncoder):
    \"\"\"A small WavLM whose worker process exits when it is given one utterance's audio.\"\"\"

    def forward(self, waves, lengths=None, *, grad=False):
        if any(len(w) == self.deadly for w in waves):
            os._exit(3)
        return super().forward(waves, lengths, grad=grad)


aligned, out, address, deadly_audio = sys.argv[1:5]
enc = load_encoder(random_model("wavlm"), device="cpu")
enc.__class__ = DyingEncoder
enc.deadly = len(load_audio(deadly_audio))
extract_features(aligned, out, model=enc, progress=False, batch_seconds=1.0,
                 engine=EngineConfig("ray", address=address, max_retries=1, chunk_seconds=1.0))
"""


def test_a_unit_whose_actor_keeps_dying_is_reported_per_utterance_and_the_run_goes_on(cluster, tmp_path):
    from phonalign.corpus import demo_corpus_dir

    utts = read_corpus(None, preset="lam-demo")[:6]
    aligned = tmp_path / "aligned"
    align_corpus(utts, aligned, get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    script = tmp_path / "dying.py"
    script.write_text(_DYING_ENCODER, encoding="utf-8")
    _run([sys.executable, str(script), str(aligned), str(tmp_path / "st"), cluster.address, str(utts[2].audio_path)])
    report = json.loads((tmp_path / "st" / "report.json").read_text(encoding="utf-8"))
    assert list(report["failed"]) == [utts[2].utt_id] and report["ok"] == 5
    assert "failed 2 times" in report["failed"][utts[2].utt_id]["message"]
    assert FeatureStore.open(tmp_path / "st").done_utt_ids() == {u.utt_id for u in utts} - {utts[2].utt_id}


def test_a_killed_alignment_driver_resumes_on_rerun(cluster, local_aligned, tmp_path):
    out = tmp_path / "ray"
    proc = _start(_align_cmd(out, "--engine", "ray", "--ray-address", cluster.address))
    _wait_for(lambda: len(list((out / "parts").glob("status-*.parquet"))) >= 2, "two committed chunks", proc)
    _kill(proc)
    assert not (out / "report.json").exists()  # it was killed mid-run
    _run(_align_cmd(out, "--engine", "ray", "--ray-address", cluster.address))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["resumed"] >= 2
    assert_same_aligned(out, local_aligned)


def test_a_killed_extraction_driver_resumes_on_rerun(cluster, demo_aligned, tiny_model_dir, local_store, tmp_path):
    out = tmp_path / "ray"
    proc = _start(_features_cmd(demo_aligned, out, tiny_model_dir, "--engine", "ray", "--ray-address",
                                cluster.address))
    _wait_for(lambda: len(list((out / "index").glob("part-*.parquet"))) >= 1, "a committed chunk", proc)
    _kill(proc)
    n_done = len(FeatureStore.open(out).done_utt_ids())
    assert 0 < n_done < 240  # killed mid-run
    res = _run(_features_cmd(demo_aligned, out, tiny_model_dir, "--engine", "ray", "--ray-address",
                             cluster.address))
    assert f"{n_done} already done" in res.stdout
    assert_same_store(out, local_store)


def test_switching_engines_half_way_gives_the_same_alignment(cluster, local_aligned, tmp_path):
    out = tmp_path / "switched"
    proc = _start(_align_cmd(out))  # local, one process
    _wait_for(lambda: len(list((out / "parts").glob("status-*.parquet"))) >= 2, "two committed chunks", proc)
    _kill(proc)
    assert not (out / "report.json").exists()
    _run(_align_cmd(out, "--engine", "ray", "--ray-address", cluster.address))
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["counts"]["resumed"] >= 2
    assert_same_aligned(out, local_aligned)


def test_switching_engines_half_way_gives_the_same_store(cluster, demo_aligned, tiny_model_dir, local_store,
                                                         tmp_path):
    out = tmp_path / "switched"
    proc = _start(_features_cmd(demo_aligned, out, tiny_model_dir))  # local
    _wait_for(lambda: len(list((out / "index").glob("part-*.parquet"))) >= 1, "a committed chunk", proc)
    _kill(proc)
    n_done = len(FeatureStore.open(out).done_utt_ids())
    assert 0 < n_done < 240
    _run(_features_cmd(demo_aligned, out, tiny_model_dir, "--engine", "ray", "--ray-address", cluster.address))
    assert_same_store(out, local_store)
    # and back: a store finished on Ray takes a local rerun as done
    res = _run(_features_cmd(demo_aligned, out, tiny_model_dir))
    assert "0 utterances pooled" in res.stdout and "240 already done" in res.stdout


# ---------------------------------------------------------------------------------------------
# the output folder's lock and the fingerprints hold for Ray runs as for local ones

_HOLD = """
import sys, time
from phonalign.outdir import output_folder
with output_folder(sys.argv[1], step=sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("step", ["align", "features"])
def test_a_ray_run_into_a_folder_another_run_holds_is_refused_before_any_work(cluster, demo_aligned,
                                                                              tiny_model_dir, tmp_path, step):
    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), step], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        cmd = (_align_cmd(out, "--engine", "ray", "--ray-address", cluster.address) if step == "align" else
               _features_cmd(demo_aligned, out, tiny_model_dir, "--engine", "ray", "--ray-address", cluster.address))
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    finally:
        holder.kill()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"pid {holder.pid}" in res.stderr, res.stderr[-2000:]
    assert not cluster.worker_processes("ray::LamExtractWorker") and not cluster.worker_processes(
        "ray::lam_align_chunk")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".lam")) == []


def test_a_ray_rerun_redoes_the_utterance_whose_segments_changed_as_a_local_rerun_does(cluster, tiny_model_dir,
                                                                                      tmp_path):
    from phonalign.corpus import demo_corpus_dir

    aligned = tmp_path / "aligned"
    align_corpus(read_corpus(None, preset="lam-demo")[:40], aligned,
                 get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    _run(_features_cmd(aligned, tmp_path / "base", tiny_model_dir))
    # re-aligned: one utterance's third segment now ends 20 ms earlier
    segs = pq.read_table(aligned / "segments.parquet")
    changed = segs.column("utt_id")[0].as_py()
    end = segs.column("end").to_numpy().copy()
    row = [i for i, u in enumerate(segs.column("utt_id").to_pylist()) if u == changed][2]
    end[row] -= 0.02
    pq.write_table(segs.set_column(segs.schema.get_field_index("end"), "end", pa.array(end)),
                   aligned / "segments.parquet")
    for name, extra in (("local", ()), ("ray", ("--engine", "ray", "--ray-address", cluster.address))):
        shutil.copytree(tmp_path / "base", tmp_path / name)
        _run(_features_cmd(aligned, tmp_path / name, tiny_model_dir, *extra))
        rep = json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))
        assert (rep["ok"], rep["redone"], rep["skipped_done"], rep["n_failed"]) == (1, 1, 39, 0), (name, rep)
    assert_same_store(tmp_path / "ray", tmp_path / "local", min_rows=400)
    ends = FeatureStore.open(tmp_path / "ray").index.to_pydict()
    assert end[row] in [e for u, e in zip(ends["utt_id"], ends["end"], strict=True) if u == changed]


def test_the_untrained_control_on_ray_equals_the_local_one(cluster, tiny_model_dir, tmp_path):
    """--random-init weights are drawn from the seed on the driver and sent to the actors: the
    store (its settings, its model digest, its vectors) is the local run's."""
    from phonalign.corpus import demo_corpus_dir

    aligned = tmp_path / "aligned"
    align_corpus(read_corpus(None, preset="lam-demo")[:40], aligned,
                 get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    control = ("--random-init", "--init-seed", "3")
    _run(_features_cmd(aligned, tmp_path / "local", tiny_model_dir, *control))
    _run(_features_cmd(aligned, tmp_path / "ray", tiny_model_dir, *control, "--engine", "ray", "--ray-address",
                       cluster.address))
    assert_same_store(tmp_path / "ray", tmp_path / "local", min_rows=400)
    meta = FeatureStore.open(tmp_path / "ray").meta
    assert meta["settings"]["weights"] == "random-init" and meta["revision"] is None


# ---------------------------------------------------------------------------------------------
# settings and errors


def test_engine_settings_are_checked_before_any_work(tmp_path):
    from phonalign.engine import EngineError, resolve_engine

    with pytest.raises(EngineError, match="for --engine ray"):
        resolve_engine("local", address="auto")
    with pytest.raises(EngineError, match="unknown engine"):
        resolve_engine("spark")
    with pytest.raises(EngineError, match="-j/--jobs is for --engine local"):
        align_corpus(read_corpus(None, preset="lam-demo")[:2], tmp_path / "x", get_aligner("pocketsphinx"),
                     jobs=2, progress=False, engine="ray")


def test_a_cluster_that_cannot_be_reached_is_a_clear_error(tmp_path, demo_aligned, tiny_model_dir):
    from phonalign.engine import EngineError
    from phonalign.ray_cluster import _free_port

    with pytest.raises(EngineError, match="could not join the Ray cluster"):
        extract_features(demo_aligned, tmp_path / "st", model=str(tiny_model_dir), device="cpu", progress=False,
                         engine=EngineConfig("ray", address=f"127.0.0.2:{_free_port()}"))


def test_float16_extraction_on_cpu_actors_is_refused_as_locally(cluster, demo_aligned, tiny_model_dir, tmp_path):
    res = subprocess.run(_features_cmd(demo_aligned, tmp_path / "st", tiny_model_dir, "--dtype", "float16",
                                       "--engine", "ray", "--ray-address", cluster.address),
                         capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert res.returncode == 2 and "only offered on CUDA" in res.stderr, res.stderr[-2000:]


def test_without_an_address_a_ray_instance_is_started_for_the_run_and_stopped_after(tmp_path):
    import psutil

    from phonalign.corpus import demo_corpus_dir

    demo = demo_corpus_dir()
    manifest = tmp_path / "six.csv"
    lines = (demo / "manifest.csv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [r.split(",") for r in lines[1:] if r.startswith("en_")][:6]
    col = header.split(",").index("audio_path")
    for r in rows:
        r[col] = str(demo / r[col])
    manifest.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    token = tmp_path / "token"
    token.write_text("0" * 64, encoding="utf-8")
    # this machine's network address is not for tests: the instance stays on loopback, in its own
    # temporary folder, with its own token (nothing written to ~/.ray)
    ray_tmp = Path(tempfile.mkdtemp(prefix="lr-", dir="/tmp"))
    env = {**_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        for out, extra in (("ray", ["--engine", "ray"]), ("local", [])):
            res = subprocess.run(_lam("align", str(demo), str(tmp_path / out), "--manifest", str(manifest),
                                      "--preset", "lam-demo", "--aligner", "pocketsphinx", "--no-progress", *extra),
                                 capture_output=True, text=True, timeout=TIMEOUT, env=env)
            assert res.returncode == 0, res.stderr[-3000:]
        assert pq.read_table(tmp_path / "ray" / "segments.parquet").equals(
            pq.read_table(tmp_path / "local" / "segments.parquet"))
        assert yaml.safe_load((tmp_path / "ray" / "config.yaml").read_text())["engine"]["address"] is None
        left = [p.pid for p in psutil.process_iter(["cmdline"])
                if any(str(ray_tmp) in part for part in (p.info["cmdline"] or []))]
        assert not left, f"processes of the run's Ray instance are left: {left}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the extraction scheduler against scripted actor faults (no cluster: Ray's calls are played by
# stand-ins that answer as a restarting actor does, so the timing is the test's, not the machine's)


class _Call:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class _ScriptedActor:
    """Dies while running the units in ``kills`` (each time, or once), then needs ``restart_pings``
    pings before it answers again (-1: Ray cannot restart it, it stays dead); calls reaching it
    meanwhile fail as Ray's do."""

    def __init__(self, kills: dict[int, int], restart_pings: int):
        self.kills, self.restart_pings, self.restarting = dict(kills), restart_pings, 0
        self.units_run: list[int] = []
        actor = self

        class _Method:
            def __init__(self, fn):
                self.remote = fn

        self.run = _Method(actor._run)
        self.facts = _Method(actor._ping)

    def _unavailable(self) -> _Call:
        return _Call(error=ray.exceptions.ActorUnavailableError("The actor is restarting", b"\0" * 16))

    def _run(self, batches, layers) -> _Call:
        if self.restarting < 0:
            return _Call(error=ray.exceptions.ActorDiedError())
        if self.restarting:
            return self._unavailable()
        unit = batches[0][0].unit
        if self.kills.get(unit, 0):
            self.kills[unit] -= 1
            self.restarting = self.restart_pings
            return _Call(error=ray.exceptions.ActorDiedError())
        self.units_run.append(unit)
        return _Call([SimpleNamespace(audio_seconds=sum(w.seconds for w in b), unit=unit) for b in batches])

    def _ping(self) -> _Call:
        if self.restarting < 0:
            return _Call(error=ray.exceptions.ActorDiedError())
        if self.restarting:
            self.restarting -= 1
            return self._unavailable()
        return _Call("facts")


class _ScriptedRay:
    exceptions = ray.exceptions

    @staticmethod
    def wait(refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    @staticmethod
    def get(ref):
        if ref.error is not None:
            raise ref.error
        return ref.value


def _scripted_pool(actors, max_retries: int):
    from analysis.ray_extract import RayExtractPool

    pool = RayExtractPool(EngineConfig("ray", max_retries=max_retries, chunk_seconds=1.0), model="unused",
                          device="cpu", dtype="float32", whisper_mode="crop", model_id=None)
    pool.ray, pool.actors, pool.facts = _ScriptedRay(), actors, SimpleNamespace(hidden_size=4)
    return pool


def _units_of_work(n: int):
    # one batch per unit (1 s each, chunk_seconds=1), one utterance per batch; `unit` tells the
    # scripted actor which unit a call carries
    return [[SimpleNamespace(pos=i, utt_id=f"u{i}", audio_path=f"u{i}.wav", seconds=1.0,
                             seg_start=np.zeros(0), unit=i)] for i in range(n)]


def test_a_slowly_restarting_actor_does_not_use_up_the_retries_of_the_unit_it_gets_next(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the scheduler's pause between pings
    # actor 0 dies once, on unit 0, and then answers "restarting" to 50 calls: with one retry
    # allowed, the unit must still be done (the calls that reach a restarting actor are not its fault)
    actors = [_ScriptedActor({0: 1}, restart_pings=50), _ScriptedActor({}, restart_pings=0)]
    results = list(_scripted_pool(actors, max_retries=1).run(_units_of_work(8), layers=[0]))
    assert [r.unit for r in results] == list(range(8))  # every unit, in planned order
    assert sorted(actors[0].units_run + actors[1].units_run) == list(range(8))


def test_a_unit_that_kills_its_actor_every_time_fails_after_its_retries_and_the_rest_go_on(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the scheduler's pause between pings
    actors = [_ScriptedActor({3: 99}, restart_pings=5), _ScriptedActor({3: 99}, restart_pings=5)]
    results = list(_scripted_pool(actors, max_retries=2).run(_units_of_work(6), layers=[0]))
    failed = [r for r in results if getattr(r, "failed", ())]
    assert len(results) == 6 and len(failed) == 1
    (pos, err), = failed[0].failed
    assert pos == 3 and "failed 3 times" in str(err) and "ActorDiedError" in str(err)
    assert sum(a.kills[3] for a in actors) == 2 * 99 - 3  # 1 + max_retries attempts, no more


def test_an_actor_ray_cannot_restart_is_given_up_and_the_others_finish_the_run(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    # actor 0 dies on unit 1 and never comes back (its constructor fails on the new process): the
    # unit is retried on actor 1, and actor 1 does the rest
    actors = [_ScriptedActor({1: 1}, restart_pings=-1), _ScriptedActor({}, restart_pings=0)]
    results = list(_scripted_pool(actors, max_retries=1).run(_units_of_work(8), layers=[0]))
    assert [r.unit for r in results] == list(range(8))
    assert 1 in actors[1].units_run


def test_when_no_actor_can_be_restarted_the_run_stops_with_one_clear_error(monkeypatch):
    from phonalign.engine import EngineError

    monkeypatch.setattr(time, "sleep", lambda s: None)
    actors = [_ScriptedActor({0: 1, 1: 1}, restart_pings=-1), _ScriptedActor({0: 1, 1: 1}, restart_pings=-1)]
    with pytest.raises(EngineError, match="every Ray extraction worker was lost and none could be restarted"):
        list(_scripted_pool(actors, max_retries=3).run(_units_of_work(4), layers=[0]))
