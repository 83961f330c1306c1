"""Fault injection (issue 12): every case of "wrong results with exit code 0" and every OS fault,
one test each. Each asserts the exit code, that the message is one line naming the file or the
utterance, and that what was committed before the fault is unchanged.

Full disks, read-only folders, permission errors and too many open files are injected (an OSError
with that errno raised by the writer at the chosen moment): the tests run as root, which no
permission bit stops, and must not depend on mounting file systems. One test also fills a real
1 MiB tmpfs where mounting is allowed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from faultkit import (
    PHONES,
    assert_one_line_error,
    assert_usage_error,
    env_one_thread,
    lam,
    make_corpus,
    snapshot,
    synthetic_store,
    tiny_model_dir,
    write_train_config,
    write_utterance,
)

from analysis.store import FeatureStore

# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-wavlm"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus", 6, seed=4)


def _align(capsys, corpus: Path, out: Path, *extra):
    return lam(capsys, "align", corpus, out, "--language", "en", "--no-progress", *extra)


def _features(capsys, src: Path, out: Path, model: Path, *extra):
    return lam(capsys, "features", src, out, "--model", model, "--device", "cpu", "--no-progress", *extra)


@pytest.fixture
def aligned(tmp_path, corpus, capsys) -> Path:
    out = tmp_path / "aligned"
    assert _align(capsys, corpus, out)[0] == 0
    return out


@pytest.fixture
def stores(tmp_path) -> tuple[Path, Path]:
    return (synthetic_store(tmp_path / "src", language="en", seed=1),
            synthetic_store(tmp_path / "tgt", language="zh", seed=2))


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _failed(report: dict) -> dict[str, dict]:
    return {u["utt_id"]: u for u in report["utterances"] if u["status"] != "ok"}


def _fault(real, error: BaseException, *, after: int = 0, when=lambda *a, **k: True):
    """``real`` (a function or method), except that after ``after`` calls that pass ``when`` it
    raises ``error``: a fault at the chosen moment."""
    calls = [0]

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            calls[0] += 1
            if calls[0] > after:
                raise error
        return real(*args, **kwargs)

    return wrapper


def _oserror(num: int, path: str = "") -> OSError:
    return OSError(num, os.strerror(num), path or None)


def _deny_writes_under(monkeypatch, folder: Path, num: int) -> None:
    """Every open-for-writing and mkdir under ``folder`` fails with ``num`` (EROFS, EACCES ...)."""
    real_open, real_mkdir = os.open, os.mkdir
    root = str(folder)

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise _oserror(num, str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if str(path).startswith(root):
            raise _oserror(num, str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


_RESULTS = ("layers", "index", "meta.json", "parts", "textgrids", "segments.parquet", "utterances.parquet",
            "scores.parquet", "scores.csv", "rankings.json", "runs")


def _committed(folder: Path) -> dict[str, str]:
    """Snapshot of a folder's results (not its provenance files, which every run rewrites first)."""
    return {k: v for k, v in snapshot(folder).items() if k.split("/")[0] in _RESULTS or k.startswith("rankings")}


# ================================================================================= 1. non-finite audio


def test_nan_audio_is_a_failed_utterance_of_lam_align(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", 4, seed=1, nan={"u002"})
    code, stdout, _ = _align(capsys, corpus, tmp_path / "out")
    assert code == 0 and "aligned 3 of 4" in stdout and "1 failed" in stdout
    bad = _failed(_report(tmp_path / "out"))
    assert list(bad) == ["u002"] and "non-finite" in bad["u002"]["reason"] and bad["u002"]["path"].endswith("u002.wav")
    assert not (tmp_path / "out" / "textgrids" / "u002.TextGrid").exists()


def test_infinite_audio_is_a_failed_utterance_of_lam_features(tmp_path, model_dir, capsys):
    corpus = make_corpus(tmp_path / "corpus", 3, seed=2)
    wav = corpus / "spk1" / "u001.wav"
    data, sr = sf.read(wav, dtype="float32")
    data[10] = np.inf
    sf.write(wav, data, sr, subtype="FLOAT")
    code, stdout, _ = _features(capsys, corpus, tmp_path / "st", model_dir, "--language", "en")
    assert code == 0 and "2 utterances pooled" in stdout and "1 failed" in stdout
    failed = _report(tmp_path / "st")["failed"]
    assert list(failed) == ["u001"] and "non-finite" in failed["u001"]["message"]
    assert failed["u001"]["path"].endswith("u001.wav")


def test_non_finite_model_output_is_a_failed_utterance_and_never_stored(tmp_path, aligned, model_dir, monkeypatch):
    from analysis import extract
    from analysis.models import SpeechEncoder, load_encoder

    enc = load_encoder(str(model_dir), device="cpu")
    real = SpeechEncoder.forward
    calls = []

    def forward(self, waves, *args, **kwargs):
        hidden, valid = real(self, waves, *args, **kwargs)
        calls.append(len(waves))
        if len(calls) == 2:  # the second batch (one utterance: each is longer than the cap) overflows
            hidden[1, 0, 0, 0] = float("inf")
        return hidden, valid

    monkeypatch.setattr(SpeechEncoder, "forward", forward)
    report = extract.extract_features(aligned, tmp_path / "st", model=enc, batch_seconds=0.5, progress=False)
    lengths = {r["utt_id"]: r for r in pq.read_table(aligned / "utterances.parquet").to_pylist()}
    assert calls[:2] == [1, 1] and len(report.failed) == 1
    expected = {f.utt_id for f in report.failed}
    assert all("NaN or infinite" in f.message for f in report.failed)
    store = FeatureStore.open(tmp_path / "st")
    assert store.done_utt_ids() == set(lengths) - expected
    assert all(np.isfinite(store.read_layer(i)).all() for i in range(store.n_layers + 1))


def test_a_store_refuses_non_finite_vectors_naming_the_utterance(tmp_path):
    from analysis.errors import StoreError
    from analysis.store import index_table

    store = FeatureStore.create(tmp_path / "s", model_id="m", revision=None, n_layers=1, hidden_size=2,
                                settings={"pooling": "mean"})
    layers = np.zeros((2, 3, 2), np.float32)
    layers[1, 2, 0] = np.nan
    rows = index_table({"unit_id": ["a", "b", "b#0"], "kind": ["utt", "utt", "segment"], "utt_id": ["a", "b", "b"]})
    with pytest.raises(StoreError, match="utterance\\(s\\) 'b'") as err:
        store.append(rows, layers)
    assert "layer 1" in err.value.message
    assert len(FeatureStore.open(tmp_path / "s")) == 0 and not list((tmp_path / "s").rglob("*.npy"))


def _poison(store: Path, row: int = 0, layer: int = 1) -> str:
    """Write NaN into one row of a committed chunk directly (as a store written before the check was)."""
    st = FeatureStore.open(store)
    cid = st.chunks[0]
    f = store / "layers" / f"layer_{layer:02d}" / f"chunk-{cid}.npy"
    arr = np.load(f)
    arr[row, 0] = np.nan
    with open(f, "wb") as fh:
        np.save(fh, arr)
    return st.index.column("utt_id")[row].as_py()


def test_lam_similarity_refuses_a_store_holding_nan_naming_the_utterance(tmp_path, stores, capsys):
    src, tgt = stores
    utt = _poison(src, row=3)
    code, _, err = lam(capsys, "similarity", src, tgt, "--out", tmp_path / "sim", "--units", "Utt", "--k", "1",
                       "--bootstrap", "0", "--no-progress")
    assert code == 2
    assert_one_line_error(err, str(src), repr(utt), "NaN or infinite")
    assert not (tmp_path / "sim").exists()


def test_lam_train_refuses_nan_features_naming_the_utterance(tmp_path, stores, capsys):
    src, tgt = stores
    utt = _poison(src, row=0, layer=2)  # the last layer: what strategy `final` reads
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=tmp_path / "out")
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(src), repr(utt), "NaN or infinite")
    assert not list((tmp_path / "out").rglob("*.safetensors"))


# ================================================================================= 4. models


def test_a_model_folder_with_missing_weights_is_refused_naming_them(tmp_path, aligned, model_dir, capsys):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if ".layers.1." not in k}, broken / "model.safetensors",
              metadata={"format": "pt"})
    code, _, err = _features(capsys, aligned, tmp_path / "st", broken)
    assert code == 2
    assert_one_line_error(err, str(broken), "missing", "encoder.layers.1.")
    assert "--allow-missing" in err and not (tmp_path / "st" / "meta.json").exists()
    code, _, err = _features(capsys, aligned, tmp_path / "st", broken, "--allow-missing")
    assert code == 0, err
    missing = FeatureStore.open(tmp_path / "st").meta["model"]["missing_keys"]
    assert missing and all(".layers.1." in k for k in missing)


def test_a_truncated_safetensors_file_is_a_one_line_error(tmp_path, aligned, model_dir, capsys):
    cut = tmp_path / "cut"
    shutil.copytree(model_dir, cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = _features(capsys, aligned, tmp_path / "st", cut)
    assert code == 2
    assert_one_line_error(err, str(cut / "model.safetensors"), "cannot load")


def test_an_unsafe_pickle_weight_file_is_a_one_line_error(tmp_path, aligned, model_dir, capsys):
    import pickle

    evil = tmp_path / "evil"
    shutil.copytree(model_dir, evil)
    (evil / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))
    code, _, err = _features(capsys, aligned, tmp_path / "st", evil)
    assert code == 2
    assert_one_line_error(err, str(evil / "pytorch_model.bin"), "cannot load")
    assert not (tmp_path / "pwned").exists()


def test_two_models_passed_under_one_name_are_not_compared(tmp_path, aligned, capsys, monkeypatch):
    for side, seed in (("a", 0), ("b", 1)):
        tiny_model_dir(tmp_path / side / "m", seed=seed)
    for side in ("a", "b"):
        monkeypatch.chdir(tmp_path / side)
        assert _features(capsys, aligned, tmp_path / f"st_{side}", Path("m"))[0] == 0
    code, _, err = lam(capsys, "similarity", tmp_path / "st_a", tmp_path / "st_b", "--out", tmp_path / "sim",
                       "--k", "1", "--bootstrap", "0", "--no-progress")
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "st_b"), "different models", "digest")


def test_the_same_model_by_another_path_resumes_its_store(tmp_path, aligned, model_dir, capsys):
    assert _features(capsys, aligned, tmp_path / "st", model_dir)[0] == 0
    other = tmp_path / "elsewhere"
    shutil.copytree(model_dir, other)  # the same files in another folder
    code, stdout, err = _features(capsys, aligned, tmp_path / "st", other)
    assert code == 0, err
    assert "6 already done" in stdout and "0 redone" in stdout


def test_lam_train_refuses_rankings_made_with_another_model(tmp_path, stores, capsys):
    src, tgt = stores
    other_src = synthetic_store(tmp_path / "o_src", language="en", seed=1, digest="sha256:other")
    other_tgt = synthetic_store(tmp_path / "o_tgt", language="zh", seed=2, digest="sha256:other")
    assert lam(capsys, "similarity", other_src, other_tgt, "--out", tmp_path / "rank", "--units", "Utt", "--k", "1",
               "--bootstrap", "0", "--no-progress")[0] == 0
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=tmp_path / "out",
                                rankings=tmp_path / "rank" / "rankings.json", strategies=("BL",))
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "rank" / "rankings.json"), "another model")
    assert not (tmp_path / "out" / "runs").exists()


# ================================================================================= 5. out-of-range segments


def test_segments_past_the_end_of_the_audio_fail_the_utterance(tmp_path, aligned, corpus, model_dir, capsys):
    wav = corpus / "spk2" / "u002.wav"
    data, sr = sf.read(wav, dtype="float32")
    sf.write(wav, data[: len(data) // 2], sr, subtype="FLOAT")  # cut after `lam align`
    code, stdout, _ = _features(capsys, aligned, tmp_path / "st", model_dir)
    assert code == 0 and "1 failed" in stdout
    failed = _report(tmp_path / "st")["failed"]
    assert list(failed) == ["u002"] and "past the end of the audio" in failed["u002"]["message"]
    assert "u002" not in FeatureStore.open(tmp_path / "st").done_utt_ids()


# ================================================================================= 6. OS faults


@pytest.mark.parametrize("num", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EMFILE])
def test_os_fault_while_lam_features_writes_keeps_committed_chunks(tmp_path, aligned, model_dir, capsys, monkeypatch,
                                                                    num):
    store = tmp_path / "st"
    real = np.save
    # the second chunk's first layer file: the first chunk (one utterance) is committed by then
    monkeypatch.setattr(np, "save", _fault(real, _oserror(num), after=3))
    code, _, err = _features(capsys, aligned, store, model_dir, "--chunk-rows", "2", "--batch-seconds", "0.5")
    monkeypatch.setattr(np, "save", real)
    assert code == 2
    line = assert_one_line_error(err, str(store / "layers" / "layer_00"), "cannot write")
    assert os.strerror(num).lower().split()[0] in line.lower() or {
        errno.ENOSPC: "no space", errno.EMFILE: "too many open files"}.get(num, "@") in line
    committed = _committed(store)
    assert len(FeatureStore.open(store).done_utt_ids()) == 1
    assert _features(capsys, aligned, store, model_dir, "--chunk-rows", "2", "--batch-seconds", "0.5")[0] == 0
    after = _committed(store)
    assert all(after[k] == v for k, v in committed.items() if k.startswith("index/"))  # kept as they were
    assert len(FeatureStore.open(store).done_utt_ids()) == 6


def test_read_only_store_folder_is_a_one_line_error_and_untouched(tmp_path, aligned, model_dir, capsys, monkeypatch):
    store = tmp_path / "st"
    assert _features(capsys, aligned, store, model_dir)[0] == 0
    before = snapshot(store)
    _deny_writes_under(monkeypatch, store, errno.EROFS)
    code, _, err = _features(capsys, aligned, store, model_dir)
    assert code == 2
    assert_one_line_error(err, str(store), "read-only")
    monkeypatch.undo()
    assert snapshot(store) == before


@pytest.mark.parametrize("num", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EMFILE])
def test_os_fault_while_lam_align_writes_textgrids_keeps_committed_chunks(tmp_path, corpus, capsys, monkeypatch,
                                                                          num):
    out = tmp_path / "out"
    real = Path.write_bytes
    fault = _fault(real, _oserror(num), after=3, when=lambda self, data: ".TextGrid" in self.name)
    monkeypatch.setattr(Path, "write_bytes", fault)
    code, _, err = _align(capsys, corpus, out, "--chunk-size", "2")
    monkeypatch.setattr(Path, "write_bytes", real)
    assert code == 2
    # corpus order is spk0/u000, spk0/u004, spk1/u001, spk1/u005, ...: the fourth grid fails after
    # the first chunk (u000, u004) was committed; u001, finished before the fault, is committed too
    assert_one_line_error(err, str(out / "textgrids" / "u005.TextGrid"), "cannot write")
    parts = _committed(out)
    assert sorted(k for k in parts if k.startswith("parts/status")) == ["parts/status-00001.parquet",
                                                                         "parts/status-00002.parquet"]
    code, stdout, _ = _align(capsys, corpus, out, "--chunk-size", "2")
    assert code == 0 and "(3 already done)" in stdout
    assert all(_committed(out)[k] == v for k, v in parts.items() if k.startswith("parts/"))


def test_read_only_align_output_folder_is_a_one_line_error(tmp_path, corpus, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _align(capsys, corpus, out)[0] == 0
    before = snapshot(out)
    _deny_writes_under(monkeypatch, out, errno.EROFS)
    code, _, err = _align(capsys, corpus, out)
    assert code == 2
    assert_one_line_error(err, str(out), "read-only")
    monkeypatch.undo()
    assert snapshot(out) == before


@pytest.mark.parametrize("num", [errno.ENOSPC, errno.EROFS])
def test_os_fault_while_lam_similarity_writes_keeps_the_earlier_results(tmp_path, stores, capsys, monkeypatch, num):
    import pyarrow.parquet as pqm

    src, tgt = stores
    args = ("similarity", src, tgt, "--out", tmp_path / "sim", "--units", "Utt", "--k", "1", "--bootstrap", "0",
            "--no-progress")
    assert lam(capsys, *args)[0] == 0
    before = _committed(tmp_path / "sim")
    monkeypatch.setattr(pqm, "write_table", _fault(pqm.write_table, _oserror(num)))
    code, _, err = lam(capsys, *args)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "sim" / "scores.parquet"), "cannot write")
    monkeypatch.undo()
    assert _committed(tmp_path / "sim") == before and before


@pytest.mark.parametrize("num", [errno.ENOSPC, errno.EROFS])
def test_os_fault_while_lam_train_writes_keeps_the_finished_runs(tmp_path, stores, capsys, monkeypatch, num):
    from lam_train import checkpoint as checkpoint_module  # writes checkpoints and model files

    src, tgt = stores
    out = tmp_path / "out"
    assert lam(capsys, "train", write_train_config(tmp_path / "c0.yaml", source=src, target=tgt, output=out))[0] == 0
    before = _committed(out)
    # what safetensors raises on a full disk: its own type, with the OS error in the text
    fault = RuntimeError(f"Error while serializing: I/O error: {os.strerror(num)} (os error {num})")
    monkeypatch.setattr(checkpoint_module, "save_file", _fault(checkpoint_module.save_file, fault))
    config = write_train_config(tmp_path / "c1.yaml", source=src, target=tgt, output=out, seeds=(0, 1))
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(out / "runs" / "final" / "seed1" / "checkpoint.safetensors"), "cannot write")
    assert all(_committed(out).get(k) == v for k, v in before.items())
    assert not (out / "runs" / "final" / "seed1" / "metrics.json").exists()


def test_read_only_train_output_folder_is_a_one_line_error(tmp_path, stores, capsys, monkeypatch):
    src, tgt = stores
    out = tmp_path / "out"
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=out)
    assert lam(capsys, "train", config)[0] == 0
    before = snapshot(out)
    _deny_writes_under(monkeypatch, out, errno.EROFS)
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(out), "read-only")
    monkeypatch.undo()
    assert snapshot(out) == before


def test_a_really_full_tmpfs_is_a_one_line_error(tmp_path, corpus):
    mount = tmp_path / "tiny"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (the injected faults above cover the case)")
    try:
        res = subprocess.run([sys.executable, "-m", "lam_train.cli", "align", str(corpus), str(mount / "out"),
                              "--language", "en", "--no-progress", "--chunk-size", "2"], capture_output=True,
                             text=True, timeout=300, env=env_one_thread())
        assert res.returncode == 2, "64 KiB should not hold this corpus's alignment; the case was not exercised"
        assert_one_line_error(res.stderr, str(mount / "out"), "no space left")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_damaged_segments_table_is_a_one_line_error_of_lam_features(tmp_path, aligned, model_dir, capsys):
    seg = aligned / "segments.parquet"
    seg.write_bytes(seg.read_bytes()[:100])
    code, _, err = _features(capsys, aligned, tmp_path / "st", model_dir)
    assert code == 2
    assert_one_line_error(err, str(seg), "cannot be read")


def test_damaged_index_part_is_a_one_line_error_of_features_and_similarity(tmp_path, aligned, model_dir, stores,
                                                                           capsys):
    store = tmp_path / "st"
    assert _features(capsys, aligned, store, model_dir)[0] == 0
    part = next((store / "index").glob("part-*.parquet"))
    part.write_bytes(b"PAR1 not really")
    before = snapshot(store)
    code, _, err = _features(capsys, aligned, store, model_dir)
    assert code == 2
    assert_one_line_error(err, str(part), "index part cannot be read")
    code, _, err = lam(capsys, "similarity", store, store, "--out", tmp_path / "sim", "--no-progress")
    assert code == 2
    assert_one_line_error(err, str(part), "index part cannot be read")
    assert snapshot(store) == before


@pytest.mark.parametrize("damage", ["meta.json", "chunk"])
def test_damaged_store_files_are_one_line_errors_of_lam_similarity(tmp_path, stores, capsys, damage):
    src, tgt = stores
    if damage == "meta.json":
        bad = src / "meta.json"
        bad.write_text('{"format": "lam-feature-store/1", "n_layers": ', encoding="utf-8")
    else:
        bad = next((src / "layers" / "layer_01").glob("chunk-*.npy"))
        bad.write_bytes(bad.read_bytes()[:60])
    code, _, err = lam(capsys, "similarity", src, tgt, "--out", tmp_path / "sim", "--units", "Utt", "--k", "1",
                       "--bootstrap", "0", "--no-progress")
    assert code == 2
    assert_one_line_error(err, str(bad), "cannot be read")


@pytest.mark.parametrize("damage", ["state.json", "status part"])
def test_damaged_resume_state_is_a_one_line_error_of_an_align_rerun(tmp_path, corpus, capsys, damage):
    out = tmp_path / "out"
    assert _align(capsys, corpus, out)[0] == 0
    bad = out / "parts" / ("state.json" if damage == "state.json" else "status-00001.parquet")
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    before = _committed(out)
    code, _, err = _align(capsys, corpus, out)
    assert code == 2
    assert_one_line_error(err, str(bad), "damaged" if damage == "state.json" else "cannot be read")
    assert _committed(out) == before


def test_damaged_checkpoint_is_a_one_line_error_of_lam_train(tmp_path, stores, capsys):
    src, tgt = stores
    out = tmp_path / "out"
    ckpt = out / "runs" / "final" / "seed0" / "checkpoint.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=out)
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(ckpt), "checkpoint cannot be read")
    assert not (ckpt.parent / "metrics.json").exists()


def test_lam_train_with_stores_of_different_widths_stops_before_the_first_epoch(tmp_path, capsys):
    src = synthetic_store(tmp_path / "src", language="en", hidden=8)
    tgt = synthetic_store(tmp_path / "tgt", language="zh", hidden=12)
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=tmp_path / "out",
                                strategies=("final+coral",))
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(tgt), "different models", "width 8", "width 12")
    assert not list((tmp_path / "out").rglob("*.safetensors"))


BAD_OPTIONS = [
    (("similarity", "S", "T", "--out", "O", "--bootstrap", "-5"), "--bootstrap"),
    (("similarity", "S", "T", "--out", "O", "--ci-level", "2"), "--ci-level"),
    (("similarity", "S", "T", "--out", "O", "--ci-level", "0"), "--ci-level"),
    (("similarity", "S", "T", "--out", "O", "--max-rows", "0"), "--max-rows"),
    (("similarity", "S", "T", "--out", "O", "--k", "0"), "--k"),
    (("similarity", "S", "T", "--out", "O", "--seed", "-1"), "--seed"),
    (("similarity", "S", "T", "--out", "O", "--halves", "-2"), "--halves"),
    (("similarity", "S", "T", "--out", "O", "--metric", "euclid"), "--metric"),
    (("similarity", "S", "T", "--out", "O", "--units", "Utt,Z"), "--units"),
    (("similarity", "S", "T", "--out", "O", "--source-language", "fr"), "--source-language"),
    (("train", "C", "--seed", "-1"), "--seed"),
    (("train", "C", "--epochs", "0"), "--epochs"),
    (("train", "C", "--device", "tpu"), "--device"),
    (("train", "C", "--strategy", "XL"), "--strategy"),
    (("align", "C", "O", "--encoding", "klingon"), "--encoding"),
    (("align", "C", "O", "--trap", "O"), "--trap"),
    (("align", "C", "O", "--language", "fr"), "--language"),
    (("align", "C", "O", "--speaker-pattern", "(unclosed"), "--speaker-pattern"),
    (("align", "C", "O", "--preset", "buckeye"), "--preset"),
    (("align", "C", "O", "--aligner", "htk"), "--aligner"),
    (("align", "C", "O", "--jobs", "0"), "--jobs"),
    (("align", "C", "O", "--chunk-size", "0"), "--chunk-size"),
    (("align", "C", "O", "--aligner", "mfa", "--beam", "0"), "--beam"),
    (("align", "C", "O", "--aligner", "pocketsphinx", "--padding", "-1"), "--padding"),
    (("align", "C", "O", "--aligner", "pocketsphinx", "--g2p", "festival"), "--g2p"),
    (("features", "A", "O", "--model", "m", "--batch-seconds", "0"), "--batch-seconds"),
    (("features", "A", "O", "--model", "m", "--chunk-rows", "0"), "--chunk-rows"),
    (("features", "A", "O", "--model", "m", "--whisper-mode", "half"), "--whisper-mode"),
    (("features", "A", "O", "--model", "m", "--dtype", "int8"), "--dtype"),
    (("features", "A", "O", "--model", "m", "--device", "gpu"), "--device"),
    (("features", "A", "O", "--model", "m", "--shard", "2/2"), "--shard"),
    (("features", "A", "O", "--model", "m", "--language", "fr"), "--language"),
    (("features", "A", "O", "--model", "m", "--store-dtype", "int8"), "--store-dtype"),
    (("features", "A", "O", "--model", "m", "--layers", "3-1"), "--layers"),
    (("features", "A", "O", "--model", "m", "--layers", "six"), "--layers"),
    (("features", "A", "O", "--model", "m", "--engine", "spark"), "--engine"),
    (("features", "A", "O", "--model", "m", "--engine", "ray", "--workers", "0"), "--workers"),
    (("features", "A", "O", "--model", "m", "--engine", "ray", "--gpus-per-worker", "-1"), "--gpus-per-worker"),
    (("features", "A", "O", "--model", "m", "--engine", "ray", "--cpus-per-worker", "0"), "--cpus-per-worker"),
    (("align", "C", "O", "--engine", "spark"), "--engine"),
    (("align", "C", "O", "--engine", "ray", "--workers", "0"), "--workers"),
    (("inventory", "O", "--top", "0"), "--top"),
    (("plot", "D", "--metric", "euclid"), "--metric"),
    (("align-eval", "H", "R", "--common", "ipa"), "--common"),
    (("align-eval", "H", "R", "--hyp-phone-set", "sampa"), "--hyp-phone-set"),
    (("demo", "--seeds", "0"), "--seeds"),
]


@pytest.mark.parametrize(("args", "option"), BAD_OPTIONS, ids=[f"{a[0]} {o}" for a, o in BAD_OPTIONS])
def test_bad_option_values_are_refused_by_the_command_line(tmp_path, capsys, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)  # nothing may be created: checked below
    code, _, err = lam(capsys, *args)
    assert code == 2
    assert_usage_error(err, option)
    assert list(tmp_path.iterdir()) == []


def test_out_of_range_config_values_are_refused_naming_the_config(tmp_path, stores, capsys):
    import yaml

    src, tgt = stores
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=tmp_path / "out")
    raw = yaml.safe_load(config.read_text())
    raw["seeds"] = [-1]
    config.write_text(yaml.safe_dump(raw))
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(config), "seeds must be >= 0")
    assert not (tmp_path / "out").exists()


# ================================================================================= 7. operator surprises


def test_sharded_runs_keep_their_own_reports_and_a_merge_combines_them(tmp_path, corpus, model_dir, capsys):
    from analysis.extract import shard_of

    out = tmp_path / "aligned"
    assert _align(capsys, corpus, out)[0] == 0
    ids = [r["utt_id"] for r in pq.read_table(out / "utterances.parquet").to_pylist()]
    # one failing utterance in each shard: the merged report must keep both
    bad = {s: next(u for u in ids if shard_of(u, 2) == s) for s in (0, 1)}
    for u in bad.values():
        path = next(corpus.rglob(f"{u}.wav"))
        path.write_bytes(b"RIFF not audio")
    for s in (0, 1):
        code, _, err = _features(capsys, out, tmp_path / "st", model_dir, "--shard", f"{s}/2")
        assert code == 0, err
    reports = {s: _report(tmp_path / "st" / "shards" / f"s{s:04d}of0002") for s in (0, 1)}
    assert {s: list(r["failed"]) for s, r in reports.items()} == {s: [u] for s, u in bad.items()}
    merged = _report(tmp_path / "st")
    assert merged["complete"] and sorted(merged["failed"]) == sorted(bad.values()) and merged["ok"] == len(ids) - 2
    assert (tmp_path / "st" / "shards" / "s0001of0002" / "config.yaml").is_file()


@pytest.mark.parametrize("where", ["top", "parts"])
def test_a_folder_holding_user_files_is_refused_not_cleaned(tmp_path, corpus, capsys, where):
    out = tmp_path / "out"
    if where == "top":
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    else:
        assert _align(capsys, corpus, out)[0] == 0
        (out / "parts" / "notes.txt").write_text("my notes")
    before = snapshot(out)
    code, _, err = _align(capsys, corpus, out)
    assert code == 2
    assert_one_line_error(err, str(out), "files lam did not write", "notes.txt")
    assert snapshot(out) == before
    assert (out / ".lam-output.json").exists() == (where == "parts")  # a user's folder gets no marker


def test_a_store_holding_user_files_is_refused_not_cleaned(tmp_path, aligned, model_dir, capsys):
    store = tmp_path / "st"
    assert _features(capsys, aligned, store, model_dir)[0] == 0
    (store / "layers" / "layer_01" / "mine.npy").write_bytes(b"user data")
    before = snapshot(store)
    code, _, err = _features(capsys, aligned, store, model_dir)
    assert code == 2
    assert_one_line_error(err, str(store), "layers/layer_01/mine.npy")
    assert snapshot(store) == before


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_output_files_respect_the_umask(tmp_path, corpus, model_dir, capsys, umask):
    old = os.umask(umask)
    try:
        assert _align(capsys, corpus, tmp_path / "al")[0] == 0
        assert _features(capsys, tmp_path / "al", tmp_path / "st", model_dir)[0] == 0
    finally:
        os.umask(old)
    files = [tmp_path / "al" / "report.json", tmp_path / "al" / "segments.parquet",
             tmp_path / "al" / "textgrids" / "u000.TextGrid", tmp_path / "al" / "parts" / "state.json",
             tmp_path / "st" / "meta.json", next((tmp_path / "st" / "layers" / "layer_00").glob("*.npy")),
             next((tmp_path / "st" / "index").glob("*.parquet")), tmp_path / "st" / "config.yaml"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
    assert stat.S_IMODE((tmp_path / "st" / "layers").stat().st_mode) == 0o777 & ~umask


def test_a_manifest_row_pointing_at_a_fifo_fails_that_utterance_without_hanging(tmp_path):
    good = write_utterance(tmp_path / "audio", "good", seconds=0.6, seed=1)
    fifo = tmp_path / "audio" / "pipe.wav"
    os.mkfifo(fifo)
    shutil.copy(tmp_path / "audio" / "good.TextGrid", tmp_path / "audio" / "pipe.TextGrid")
    (tmp_path / "list.csv").write_text(f"utt_id,audio_path,text,language\ngood,{good},cat sat,en\n"
                                       f"pipe,{fifo},cat sat,en\n", encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "lam_train.cli", "align", str(tmp_path / "list.csv"),
                          str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=300,
                         env=env_one_thread())
    assert res.returncode == 0, res.stderr
    bad = _failed(_report(tmp_path / "out"))
    assert list(bad) == ["pipe"] and "FIFO" in bad["pipe"]["reason"] and bad["pipe"]["path"] == str(fifo)


def test_transcripts_without_audio_unread_formats_and_linked_speaker_folders_are_reported(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", 2, seed=6, speakers=1)
    (corpus / "spk0" / "orphan.lab").write_text("no audio here\n", encoding="utf-8")
    (corpus / "spk0" / "notes.docx").write_bytes(b"PK\x03\x04")
    elsewhere = make_corpus(tmp_path / "elsewhere", 1, seed=7, prefix="x", speakers=1)
    (corpus / "linked").symlink_to(elsewhere / "spk0", target_is_directory=True)
    code, stdout, _ = _align(capsys, corpus, tmp_path / "out")
    assert code == 0 and "aligned 3 of 3" in stdout and "2 file(s) passed over" in stdout
    skipped = {Path(s["path"]).name: s["reason"] for s in _report(tmp_path / "out")["corpus"]["skipped"]}
    assert set(skipped) == {"orphan.lab", "notes.docx"}
    assert "without an audio file" in skipped["orphan.lab"] and "not an audio format" in skipped["notes.docx"]
    rows = pq.read_table(tmp_path / "out" / "utterances.parquet").to_pylist()
    assert {r["utt_id"]: r["speaker"] for r in rows}["x000"] == "linked"


def test_an_empty_phone_tier_fails_the_utterance(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", 2, seed=9, speakers=1)
    write_utterance(corpus / "spk0", "empty", seconds=0.6, seed=3, phones=[""] * 6)  # no labelled interval
    code, stdout, _ = _align(capsys, corpus, tmp_path / "out")
    assert code == 0 and "1 failed" in stdout
    bad = _failed(_report(tmp_path / "out"))
    assert list(bad) == ["empty"] and "no phones" in bad["empty"]["reason"]
    assert bad["empty"]["path"].endswith("empty.TextGrid")


def test_a_textgrid_half_as_long_as_its_audio_fails_the_utterance(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", 2, seed=10, speakers=1)
    write_utterance(corpus / "spk0", "half", seconds=1.2, seed=4, textgrid_seconds=0.6)
    code, stdout, _ = _align(capsys, corpus, tmp_path / "out")
    assert code == 0 and "1 failed" in stdout
    bad = _failed(_report(tmp_path / "out"))
    assert list(bad) == ["half"] and "0.600 s of audio not covered" in bad["half"]["reason"]


def test_the_manifest_speaker_cannot_steer_textgrid_lookup_outside_the_folder(tmp_path, capsys):
    good = write_utterance(tmp_path / "audio", "u1", seconds=0.6, seed=1)
    grids = tmp_path / "grids"
    grids.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tmp_path / "audio" / "u1.TextGrid", outside / "u1.TextGrid")  # only reachable via ../outside
    (tmp_path / "list.csv").write_text(f"utt_id,audio_path,text,language,speaker\nu1,{good},cat sat,en,../outside\n",
                                       encoding="utf-8")
    code, _, _ = lam(capsys, "align", tmp_path / "list.csv", tmp_path / "out", "--textgrids", grids, "--no-progress")
    assert code == 1  # nothing aligned: the only TextGrid lies outside --textgrids
    bad = _failed(_report(tmp_path / "out"))
    assert "no TextGrid" in bad["u1"]["reason"] and "outside" not in bad["u1"]["reason"]


# ================================================================================= 8. messages


def test_a_negative_textgrid_time_is_reported_with_its_sign_and_line(tmp_path, capsys):
    import re

    corpus = make_corpus(tmp_path / "corpus", 1, seed=12, speakers=1)
    tg = corpus / "spk0" / "u000.TextGrid"
    text = tg.read_text()
    tier = text.index('name = "phones"')
    m = re.compile(r"xmin = [0-9.]+").search(text, text.index("intervals [1]", tier))
    tg.write_text(text[:m.start()] + "xmin = -0.05" + text[m.end():])  # praatio read this as +0.05
    line_no = text[:m.start()].count("\n") + 1
    code, _, _ = _align(capsys, corpus, tmp_path / "out")
    assert code == 1
    bad = _failed(_report(tmp_path / "out"))["u000"]
    assert "negative time -0.05 s" in bad["reason"] and bad["line"] == line_no


def test_a_point_tier_named_phones_is_reported_as_a_point_tier(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", 1, seed=13, speakers=1)
    tg = corpus / "spk0" / "u000.TextGrid"
    text = tg.read_text()
    tiers = text.index('name = "phones"')
    head = text[: text.rindex("item [", 0, tiers)]
    point = ('    item [2]:\n        class = "TextTier"\n        name = "phones"\n        xmin = 0\n'
             '        xmax = 0.6\n        points: size = 1\n        points [1]:\n            number = 0.1\n'
             '            mark = "K"\n')
    tg.write_text(head + point)
    code, _, _ = _align(capsys, corpus, tmp_path / "out")
    bad = _failed(_report(tmp_path / "out"))["u000"]
    assert code == 1 and "'phones' is a point tier" in bad["reason"]


def test_a_short_csv_row_is_reported_with_its_field_count(tmp_path, capsys):
    good = write_utterance(tmp_path / "audio", "u1", seconds=0.6, seed=1)
    (tmp_path / "list.csv").write_text(f"utt_id,audio_path,text,language\nu1,{good},cat sat,en\nu2,{good}\n",
                                       encoding="utf-8")
    code, _, _ = lam(capsys, "align", tmp_path / "list.csv", tmp_path / "out", "--no-progress")
    assert code == 0
    rejected = [u for u in _report(tmp_path / "out")["utterances"] if u["status"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["line"] == 3
    assert "the row has 2 field(s), the header has 4 (no value for text, language)" == rejected[0]["reason"]


def test_an_unterminated_csv_quote_is_reported_at_its_line(tmp_path, capsys):
    good = write_utterance(tmp_path / "audio", "u1", seconds=0.6, seed=1)
    (tmp_path / "list.csv").write_text(f'utt_id,audio_path,text,language\nu1,{good},cat sat,en\n'
                                       f'u2,"{good},cat sat,en\nu3,{good},cat sat,en\n', encoding="utf-8")
    code, _, err = lam(capsys, "align", tmp_path / "list.csv", tmp_path / "out", "--no-progress")
    assert code == 2
    assert_one_line_error(err, f"{tmp_path / 'list.csv'}:3", "never closed")
    assert not (tmp_path / "out").exists()


def test_phones_used_by_the_corpora_here_are_arpabet():
    from phonalign.phonesets import detect_phone_set

    assert detect_phone_set(PHONES * 3) == "arpabet"


def test_a_training_loss_that_turns_nan_stops_the_run_naming_it(tmp_path, stores, capsys, monkeypatch):
    from lam_train import train as train_module

    src, tgt = stores
    real = train_module.coral_loss
    calls = [0]

    def coral(a, b):  # a numerical blow-up in the second epoch, as float16 overflow would give
        calls[0] += 1
        out = real(a, b)
        return out * float("nan") if calls[0] > 6 else out

    monkeypatch.setattr(train_module, "coral_loss", coral)
    config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=tmp_path / "out",
                                strategies=("final+coral",), epochs=3)
    code, _, err = lam(capsys, "train", config)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "out" / "runs" / "final+coral" / "seed0"), "NaN or infinite",
                          "epoch 1")
    assert not (tmp_path / "out" / "runs" / "final+coral" / "seed0" / "metrics.json").exists()
