"""Similarity: streamed scores equal the array formulas, planted structure is recovered with
covering intervals, weighted kernel formulas equal repeated rows, per-emotion averaging, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis.errors import SimilarityError
from analysis.rankings import load_selections
from analysis.similarity import (
    METRICS,
    _coral_from_grams,
    _mmd_from_kernels,
    _sqdist,
    compare_stores,
    coral_distance,
    mmd_rbf,
    similarity,
)
from analysis.store import FeatureStore, index_table

CLASSES = ["A", "E", "@", "i", "O", "u", "consonant", "silence"]


def make_store(path, *, cosines, n_utt=60, seg_per_utt=8, hidden=8, side="source", seed=0, utt_sd=0.5,
               noise_sd=1.0, scale=3.0, chunk_utts=17, model_id="synthetic", emotions=("Neutral", "Anger")):
    """A store whose population centroids of every unit have cosine ``cosines[l]`` between the
    source and target side in layer ``l`` (same for every unit): the truth of a planted test."""
    rng = np.random.default_rng([seed, 0 if side == "source" else 1])
    n_l = len(cosines)
    store = FeatureStore.create(path, model_id=model_id, revision=None, n_layers=n_l - 1, hidden_size=hidden,
                                settings={"synthetic": True})
    theta = np.arccos(np.asarray(cosines))
    for lo in range(0, n_utt, chunk_utts):
        cols = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "start", "end", "emotion")}
        per_row_utt = []
        for u in range(lo, min(lo + chunk_utts, n_utt)):
            uid = f"{side}{u:04d}"
            emo = emotions[u % len(emotions)] if emotions else None
            for s in range(-1, seg_per_utt):
                cols["unit_id"].append(uid if s < 0 else f"{uid}#{s}")
                cols["kind"].append("utt" if s < 0 else "segment")
                cols["utt_id"].append(uid)
                cols["seg_index"].append(s)
                cols["unit_class"].append("utterance" if s < 0 else CLASSES[(s + u) % len(CLASSES)])
                cols["start"].append(0.0)
                cols["end"].append(1.0)
                cols["emotion"].append(emo)
                per_row_utt.append(u - lo)
        n = len(per_row_utt)
        layers = np.empty((n_l, n, hidden), np.float32)
        for layer in range(n_l):
            mean = np.zeros(hidden)
            if side == "source":
                mean[0] = scale
            else:
                mean[0], mean[1] = scale * np.cos(theta[layer]), scale * np.sin(theta[layer])
            utt_eff = rng.standard_normal((chunk_utts, hidden)) * utt_sd
            layers[layer] = mean + utt_eff[per_row_utt] + rng.standard_normal((n, hidden)) * noise_sd
        store.append(index_table(cols), layers)
    return FeatureStore.open(path)


TRUTH = [0.95, 0.2, 0.6, 0.9, 0.4, 0.75]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    src = make_store(root / "src", cosines=TRUTH, n_utt=400, side="source", seed=1)
    tgt = make_store(root / "tgt", cosines=TRUTH, n_utt=400, side="target", seed=1)
    return src, tgt


def test_planted_structure_ranking_is_recovered_and_intervals_cover_the_truth(planted):
    src, tgt = planted
    res = compare_stores(src, tgt, metrics=["centroid_cosine"], n_bootstrap=300, seed=0)
    covered, total = 0, 0
    for unit in ("Utt", "Vowl", "Cons", "A", "u"):
        r = res.results["all"][unit]["centroid_cosine"]
        lo, hi = r.ci(0.95)
        from analysis.rankings import rank_layers

        assert rank_layers(r.score) == [3, 5, 2, 4, 1], unit
        covered += int(np.sum((lo <= TRUTH) & (np.asarray(TRUTH) <= hi)))
        total += len(TRUTH)
        assert np.all(hi - lo < 0.3)
    assert covered / total >= 0.9, (covered, total)


def test_within_language_reference_is_near_one_for_one_population(planted):
    src, tgt = planted
    res = compare_stores(src, tgt, metrics=["centroid_cosine"], units=["Vowl"], n_bootstrap=0, seed=0)
    r = res.results["all"]["Vowl"]["centroid_cosine"]
    assert np.all(r.ref_source > 0.95) and np.all(r.ref_target > 0.95)


def test_streamed_scores_equal_the_array_formulas(tmp_path):
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5, 0.1], n_utt=25, side="source", chunk_utts=4)
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5, 0.1], n_utt=20, side="target", chunk_utts=7)
    res = compare_stores(src, tgt, metrics=list(METRICS), n_bootstrap=3, max_rows=10_000)

    def rows(store, unit, layer):
        cls = np.asarray(store.index.column("unit_class").to_pylist())
        want = {"Vowl": ["A", "E", "@", "i", "O", "u"], "Cons": ["consonant"], "Utt": ["utterance"]}.get(unit, [unit])
        return store.read_layer(layer, rows=np.flatnonzero(np.isin(cls, want))).astype(np.float64)

    all_s = src.read_layer(1).astype(np.float64)
    all_t = tgt.read_layer(1).astype(np.float64)
    mu = (all_s.mean(0) + all_t.mean(0)) / 2
    sd = np.sqrt(((all_s ** 2).mean(0) + (all_t ** 2).mean(0)) / 2 - mu ** 2) + 1e-12
    for unit in ("Utt", "Vowl", "Cons", "O"):
        a, b = rows(src, unit, 1), rows(tgt, unit, 1)
        for metric in METRICS:
            want = similarity(a, b, metric=metric, standardize_with=(mu, sd) if metric == "standardized_cosine" else None)
            got = res.results["all"][unit][metric].score[1]
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (unit, metric)


def test_weighted_kernel_formulas_equal_repeated_rows():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((12, 5)), rng.standard_normal((9, 5)) + 0.5
    wa, wb = rng.integers(0, 3, (2, 12)).astype(float), rng.integers(0, 3, (2, 9)).astype(float)
    got = _coral_from_grams(a @ a.T, b @ b.T, a @ b.T, wa, wb, 5)
    for r in range(2):
        ra, rb = np.repeat(a, wa[r].astype(int), 0), np.repeat(b, wb[r].astype(int), 0)
        assert got[r] == pytest.approx(coral_distance(ra, rb), rel=1e-9)
        bw = 3.0
        k = lambda x, y: np.exp(-_sqdist((x * x).sum(1), (y * y).sum(1), x @ y.T) / bw)  # noqa: E731
        m = _mmd_from_kernels(k(a, a), k(b, b), k(a, b), wa[r:r + 1], wb[r:r + 1])[0]
        assert m == pytest.approx(mmd_rbf(ra, rb, bandwidth=bw), rel=1e-9)


def test_coral_equals_definition_on_random_inputs():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((40, 4)) * 2
    ca, cb = np.cov(a.T), np.cov(b.T)
    assert coral_distance(a, b) == pytest.approx(((ca - cb) ** 2).sum() / 64)
    assert mmd_rbf(a, a) == pytest.approx(0.0, abs=1e-12) and mmd_rbf(a, b) > 0


def test_sum_metrics_stream_chunks_and_never_load_a_whole_layer(tmp_path, monkeypatch):
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5], n_utt=10, side="source", chunk_utts=3)
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5], n_utt=10, side="target", chunk_utts=3)

    def refuse(*args, **kwargs):
        raise AssertionError("read_layer loads a whole layer; the sum metrics must stream chunks")

    monkeypatch.setattr(FeatureStore, "read_layer", refuse)
    res = compare_stores(src, tgt, metrics=["centroid_cosine", "pairwise_cosine", "standardized_cosine"], n_bootstrap=5)
    assert np.isfinite(res.results["all"]["Vowl"]["centroid_cosine"].score).all()


def test_by_emotion_average_is_the_mean_of_emotions(tmp_path):
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5, 0.2], n_utt=30, side="source")
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5, 0.2], n_utt=30, side="target")
    res = compare_stores(src, tgt, units=["Vowl"], n_bootstrap=10, by_emotion=True)
    assert set(res.results) == {"all", "Neutral", "Anger", "averaged"}
    r = {s: res.results[s]["Vowl"]["centroid_cosine"] for s in res.results}
    np.testing.assert_allclose(r["averaged"].score, (r["Neutral"].score + r["Anger"].score) / 2)
    np.testing.assert_allclose(r["averaged"].boot, (r["Neutral"].boot + r["Anger"].boot) / 2)


def test_by_emotion_raises_without_shared_labels(tmp_path):
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5], n_utt=6, side="source", emotions=())
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5], n_utt=6, side="target")
    with pytest.raises(SimilarityError, match="emotion labels"):
        compare_stores(src, tgt, by_emotion=True)


def test_compare_raises_when_models_differ(tmp_path):
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5], n_utt=4, side="source")
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5], n_utt=4, side="target", model_id="other")
    with pytest.raises(SimilarityError, match="same model"):
        compare_stores(src, tgt)
    with pytest.raises(SimilarityError, match="unknown metric"):
        compare_stores(src, src, metrics=["euclid"])


def test_lam_similarity_writes_rankings_that_training_can_load(tmp_path):
    from lam_train.cli import app

    make_store(tmp_path / "s", cosines=TRUTH, n_utt=40, side="source")
    make_store(tmp_path / "t", cosines=TRUTH, n_utt=40, side="target")
    res = CliRunner().invoke(app, ["similarity", str(tmp_path / "s"), str(tmp_path / "t"), "--out", str(tmp_path / "sim"),
                                   "--metric", "centroid_cosine", "--metric", "coral", "--k", "2", "--bootstrap", "20",
                                   "--seed", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "sim" / "rankings.json").read_text())
    assert doc["metric"] == "centroid_cosine" and doc["n_layers"] == 5 and doc["k"] == 2
    vowl = doc["units"]["Vowl"]
    assert vowl["ranking"][0] == 3 and vowl["layers"] == list(range(6))
    assert sum(vowl["top_k_frequency"][1:]) == pytest.approx(2.0)
    sel = load_selections(tmp_path / "sim", unit="Vowl")
    assert sel["BL"] == [3] and sel["final"] == [5] and sel["GL"] == [3, 5]
    coral = json.loads((tmp_path / "sim" / "rankings_coral.json").read_text())
    assert coral["higher_is_more_similar"] is False
    assert (tmp_path / "sim" / "scores.parquet").is_file() and (tmp_path / "sim" / "config.yaml").is_file()


def test_memory_does_not_grow_with_the_number_of_segments(tmp_path):
    import tracemalloc

    peaks = []
    for seg_per_utt, chunk_utts in ((8, 16), (64, 2)):  # 8x the segments, same rows per chunk
        src = make_store(tmp_path / f"s{seg_per_utt}", cosines=[0.9, 0.5, 0.2], n_utt=48, seg_per_utt=seg_per_utt,
                         hidden=64, side="source", chunk_utts=chunk_utts)
        tgt = make_store(tmp_path / f"t{seg_per_utt}", cosines=[0.9, 0.5, 0.2], n_utt=48, seg_per_utt=seg_per_utt,
                         hidden=64, side="target", chunk_utts=chunk_utts)
        src.index, tgt.index  # index tables are per row by design; measure the layer streaming
        tracemalloc.start()
        compare_stores(src, tgt, n_bootstrap=20)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    rows_ratio = 8.0
    assert peaks[1] < 2.0 * peaks[0] < rows_ratio * peaks[0], peaks


def test_one_store_with_both_languages_equals_two_stores(tmp_path):
    from test_extract import UTTS, make_aligned_dir

    from analysis.extract import extract_features
    from analysis.testing import random_model

    aligned = make_aligned_dir(tmp_path / "al", {**UTTS, "u4": 0.8, "u5": 0.9})
    model = random_model("hubert")
    extract_features(aligned, tmp_path / "both", model=model, device="cpu", progress=False)
    for lang in ("en", "zh"):
        extract_features(aligned, tmp_path / lang, model=model, device="cpu", progress=False, language=lang)
    both = FeatureStore.open(tmp_path / "both")
    one = compare_stores(both, both, source_language="en", target_language="zh", units=["Utt", "Cons"],
                         n_bootstrap=0, metrics=["centroid_cosine", "standardized_cosine"])
    two = compare_stores(FeatureStore.open(tmp_path / "en"), FeatureStore.open(tmp_path / "zh"), units=["Utt", "Cons"],
                         n_bootstrap=0, metrics=["centroid_cosine", "standardized_cosine"])
    for unit in ("Utt", "Cons"):
        for m in ("centroid_cosine", "standardized_cosine"):
            np.testing.assert_allclose(one.results["all"][unit][m].score, two.results["all"][unit][m].score, rtol=1e-5)
    with pytest.raises(SimilarityError, match="no utterance of language 'fr'"):
        compare_stores(both, both, source_language="fr")


def test_unit_missing_from_one_corpus_is_skipped_with_a_reason(tmp_path):
    from analysis.similarity import result_rankings

    src = make_store(tmp_path / "s", cosines=[0.9, 0.5, 0.2], n_utt=6, side="source")
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5, 0.2], n_utt=6, side="target")
    res = compare_stores(src, tgt, units=["Vowl", "O"], n_bootstrap=5, metrics=["coral"])
    res.results["all"]["O"]["coral"].n_target = 0  # as if the target had no 'O' vowel
    doc = result_rankings(res, metric="coral", k=1)
    assert list(doc["units"]) == ["Vowl"] and "0 target rows" in doc["skipped_units"]["O"]
