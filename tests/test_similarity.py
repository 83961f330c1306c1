"""`lam similarity` on stores: streamed scores equal the array formulas, planted structure is recovered,
speakers are resampled (or the fallback is said), references and the gap, ties and flatness, the
permutation null, duration confounds, store compatibility, per-emotion averaging, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis.errors import SimilarityError
from analysis.rankings import load_selection_info, load_selections, rank_layers
from analysis.similarity import METRICS, compare_stores, result_rankings, similarity
from analysis.store import FeatureStore, index_table

CLASSES = ["A", "E", "@", "i", "O", "u", "consonant", "silence"]


def make_store(path, *, cosines, n_utt=60, seg_per_utt=8, hidden=8, side="source", seed=0, utt_sd=0.5,
               noise_sd=1.0, scale=3.0, chunk_utts=17, model_id="synthetic", emotions=("Neutral", "Anger"),
               n_speakers=0, spk_sd=0.0, class_sd=0.0, heavy=False, durations=None, settings=None,
               classes_per_speaker=None):
    """A store whose population centroids of every unit have cosine ``cosines[l]`` between the
    source and target side in layer ``l`` (same for every unit when ``class_sd`` is 0): the truth of
    a planted test.

    ``n_speakers`` labels utterance ``u`` with speaker ``u % n_speakers`` (0: no speaker labels),
    whose offset (sd ``spk_sd``, fresh per layer) all its rows share. ``class_sd`` gives every unit
    class its own offset (the same on both sides). ``heavy`` draws Student-t noise (3 df).
    ``durations`` (seconds per utterance) set the utterance rows' spans. ``classes_per_speaker``
    maps a speaker index to the only classes its segments may have (others become consonants).
    """
    rng = np.random.default_rng([seed, 0 if side == "source" else 1])
    n_l = len(cosines)
    store = FeatureStore.create(path, model_id=model_id, revision=None, n_layers=n_l - 1, hidden_size=hidden,
                                settings=settings or {"synthetic": True})
    theta = np.arccos(np.asarray(cosines))
    spk_eff = rng.standard_normal((n_l, max(n_speakers, 1), hidden)) * spk_sd
    cls_eff = np.random.default_rng([seed, 7]).standard_normal((n_l, len(CLASSES) + 1, hidden)) * class_sd
    for lo in range(0, n_utt, chunk_utts):
        cols = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "start", "end", "emotion",
                                "speaker", "language")}
        per_row_utt, per_row_spk, per_row_cls = [], [], []
        for u in range(lo, min(lo + chunk_utts, n_utt)):
            uid = f"{side}{u:04d}"
            emo = emotions[u % len(emotions)] if emotions else None
            spk = u % n_speakers if n_speakers else 0
            dur = 1.0 if durations is None else float(durations[u])
            for s in range(-1, seg_per_utt):
                cls = "utterance" if s < 0 else CLASSES[(s + u) % len(CLASSES)]
                if s >= 0 and classes_per_speaker is not None and cls not in classes_per_speaker.get(spk, CLASSES):
                    cls = "consonant"
                cols["unit_id"].append(uid if s < 0 else f"{uid}#{s}")
                cols["kind"].append("utt" if s < 0 else "segment")
                cols["utt_id"].append(uid)
                cols["seg_index"].append(s)
                cols["unit_class"].append(cls)
                cols["start"].append(0.0)
                cols["end"].append(dur)
                cols["emotion"].append(emo)
                cols["speaker"].append(f"{side}_s{spk}" if n_speakers else None)
                cols["language"].append("en" if side == "source" else "zh")
                per_row_utt.append(u - lo)
                per_row_spk.append(spk)
                per_row_cls.append(len(CLASSES) if s < 0 else CLASSES.index(cls))
        n = len(per_row_utt)
        layers = np.empty((n_l, n, hidden), np.float32)
        for layer in range(n_l):
            mean = np.zeros(hidden)
            if side == "source":
                mean[0] = scale
            else:
                mean[0], mean[1] = scale * np.cos(theta[layer]), scale * np.sin(theta[layer])
            utt_eff = rng.standard_normal((chunk_utts, hidden)) * utt_sd
            noise = rng.standard_t(3, (n, hidden)) / np.sqrt(3) if heavy else rng.standard_normal((n, hidden))
            layers[layer] = (mean + utt_eff[per_row_utt] + spk_eff[layer][per_row_spk] + cls_eff[layer][per_row_cls]
                             + noise * noise_sd)
        store.append(index_table(cols), layers)
    return FeatureStore.open(path)


TRUTH = [0.95, 0.2, 0.6, 0.9, 0.4, 0.75]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    kw = dict(cosines=TRUTH, n_utt=400, seed=1, n_speakers=40, spk_sd=0.3)
    return make_store(root / "src", side="source", **kw), make_store(root / "tgt", side="target", **kw)


def test_planted_structure_ranking_is_recovered_and_intervals_cover_the_truth(planted):
    src, tgt = planted
    res = compare_stores(src, tgt, metrics=["centroid_cosine"], n_bootstrap=300, seed=0)
    assert res.resampling.unit == "speaker" and res.resampling.clusters_source == 40
    covered, total = 0, 0
    for unit in ("Utt", "Vowl", "Cons", "A", "u"):
        r = res.results["all"][unit]["centroid_cosine"]
        lo, hi = r.ci(0.95)
        assert rank_layers(r.score) == [3, 5, 2, 4, 1], unit
        covered += int(np.sum((lo <= TRUTH) & (np.asarray(TRUTH) <= hi)))
        total += len(TRUTH)
        assert np.all(hi - lo < 0.3) and np.all((lo <= r.score) & (r.score <= hi))
    assert covered / total >= 0.9, (covered, total)


def test_same_language_reference_is_one_and_the_gap_is_the_distance_from_it(planted):
    src, tgt = planted
    res = compare_stores(src, tgt, metrics=["centroid_cosine"], units=["Vowl"], n_bootstrap=100, seed=0)
    r = res.results["all"]["Vowl"]["centroid_cosine"]
    # unbiased estimators: one language against itself scores 1 at any sample size
    np.testing.assert_allclose(r.ref_source, 1.0, atol=0.03)
    np.testing.assert_allclose(r.ref_target, 1.0, atol=0.03)
    np.testing.assert_allclose(r.gap, 1.0 - np.asarray(TRUTH), atol=0.06)
    glo, ghi = r.gap_ci(0.95)
    assert glo[0] <= 0.05 and np.all(glo[1:] > 0)    # only layer 0 (cos 0.95) is near "same language"
    assert np.all((glo <= r.gap) & (r.gap <= ghi))


def test_streamed_scores_equal_the_array_formulas(tmp_path):
    kw = dict(cosines=[0.9, 0.5, 0.1], n_speakers=7, spk_sd=0.4, class_sd=0.8, hidden=6)
    src = make_store(tmp_path / "s", n_utt=25, side="source", chunk_utts=4, **kw)
    tgt = make_store(tmp_path / "t", n_utt=20, side="target", chunk_utts=7, **kw)
    res = compare_stores(src, tgt, metrics=list(METRICS), n_bootstrap=3, max_rows=10_000)

    def rows(store, classes, layer):
        idx = store.index
        cls = np.asarray(idx.column("unit_class").to_pylist())
        pick = np.flatnonzero(np.isin(cls, classes))
        spk = np.asarray(idx.column("speaker").to_pylist())[pick]
        return store.read_layer(layer, rows=pick).astype(np.float64), spk

    phones = ["A", "E", "@", "i", "O", "u", "consonant"]
    for unit, classes in (("Utt", ["utterance"]), ("Vowl", phones[:6]), ("Cons", ["consonant"]), ("O", ["O"])):
        (a, ca), (b, cb) = rows(src, classes, 1), rows(tgt, classes, 1)
        (pa, pca), (pb, pcb) = rows(src, phones, 1), rows(tgt, phones, 1)
        for metric in METRICS:
            got = res.results["all"][unit][metric].score[1]
            if metric == "standardized_cosine" and unit == "Utt":
                assert res.results["all"][unit][metric].skip_reason and np.isnan(got)
                continue
            want = similarity(a, b, metric=metric, clusters_a=ca, clusters_b=cb, phones_a=pa, phones_b=pb,
                              phone_clusters_a=pca, phone_clusters_b=pcb)
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (unit, metric)


def test_sum_metrics_stream_chunks_and_never_load_a_whole_layer(tmp_path, monkeypatch):
    kw = dict(cosines=[0.9, 0.5], n_utt=10, chunk_utts=3, n_speakers=3, class_sd=0.5)
    src, tgt = make_store(tmp_path / "s", side="source", **kw), make_store(tmp_path / "t", side="target", **kw)

    def refuse(*args, **kwargs):
        raise AssertionError("read_layer loads a whole layer; the sum metrics must stream chunks")

    monkeypatch.setattr(FeatureStore, "read_layer", refuse)
    res = compare_stores(src, tgt, metrics=["centroid_cosine", "pairwise_cosine", "standardized_cosine"], n_bootstrap=5)
    assert np.isfinite(res.results["all"]["Vowl"]["centroid_cosine"].score).all()


def test_by_emotion_average_is_the_mean_of_emotions(tmp_path):
    kw = dict(cosines=[0.9, 0.5, 0.2], n_utt=30, n_speakers=5)
    src, tgt = make_store(tmp_path / "s", side="source", **kw), make_store(tmp_path / "t", side="target", **kw)
    res = compare_stores(src, tgt, units=["Vowl"], n_bootstrap=10, by_emotion=True, n_permutations=4)
    assert set(res.results) == {"all", "Neutral", "Anger", "averaged"}
    r = {s: res.results[s]["Vowl"]["centroid_cosine"] for s in res.results}
    for key in ("score", "boot", "ref_source", "cross_half_boot", "null"):
        mean = (getattr(r["Neutral"], key) + getattr(r["Anger"], key)) / 2
        np.testing.assert_allclose(getattr(r["averaged"], key), mean)
    assert np.isfinite(r["Neutral"].score).all() and not np.allclose(r["Neutral"].score, r["Anger"].score)


def test_by_emotion_raises_without_shared_labels(tmp_path):
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5], n_utt=6, side="source", emotions=())
    tgt = make_store(tmp_path / "t", cosines=[0.9, 0.5], n_utt=6, side="target")
    with pytest.raises(SimilarityError, match="emotion labels"):
        compare_stores(src, tgt, by_emotion=True)


def test_compatibility_errors_name_the_setting_that_differs(tmp_path):
    base = {"model_type": "whisper", "whisper_mode": "crop", "input": "segments"}
    src = make_store(tmp_path / "s", cosines=[0.9, 0.5], n_utt=6, side="source", settings=base)
    other_model = make_store(tmp_path / "m", cosines=[0.9, 0.5], n_utt=6, side="target", model_id="other",
                             settings=base)
    trim = make_store(tmp_path / "w", cosines=[0.9, 0.5], n_utt=6, side="target",
                      settings={**base, "whisper_mode": "trim"})
    plain = make_store(tmp_path / "p", cosines=[0.9, 0.5], n_utt=6, side="target",
                       settings={**base, "input": "utterances"})
    untrained = make_store(tmp_path / "r", cosines=[0.9, 0.5], n_utt=6, side="target",
                           settings={**base, "weights": "random-init", "init_seed": 3})
    with pytest.raises(SimilarityError, match="'model_id' is 'synthetic' in the source store and 'other'"):
        compare_stores(src, other_model)
    with pytest.raises(SimilarityError, match="'whisper_mode' is 'crop' in the source store and 'trim'"):
        compare_stores(src, trim)
    with pytest.raises(SimilarityError, match="'weights' is None in the source store and 'random-init'") as err:
        compare_stores(src, untrained)
    assert "--allow-different weights" in err.value.hint
    res = compare_stores(src, untrained, allow_different=["weights", "init_seed"], n_bootstrap=0)
    assert any("allowed on purpose" in w for w in res.warnings)
    res = compare_stores(src, plain, units=["Utt"], n_bootstrap=0)      # input may differ: Utt is pooled alike
    assert any(w.startswith("input differs") for w in res.warnings)
    with pytest.raises(SimilarityError, match="unknown metric"):
        compare_stores(src, src, metrics=["euclid"])


def test_lam_similarity_writes_rankings_that_training_can_load(tmp_path):
    from lam_train.cli import app

    kw = dict(cosines=TRUTH, n_utt=48, n_speakers=12, spk_sd=0.2)
    make_store(tmp_path / "s", side="source", **kw)
    make_store(tmp_path / "t", side="target", durations=np.linspace(1, 4, 48), **kw)
    res = CliRunner().invoke(app, ["similarity", str(tmp_path / "s"), str(tmp_path / "t"),
                                   "--out", str(tmp_path / "sim"), "--metric", "centroid_cosine", "--metric", "coral",
                                   "--k", "2", "--bootstrap", "20",
                                   "--permutations", "9", "--seed", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "median utterance durations differ 2.50x" in res.output and "Vowl: best layer 3" in res.output
    doc = json.loads((tmp_path / "sim" / "rankings.json").read_text())
    assert doc["metric"] == "centroid_cosine" and doc["n_layers"] == 5 and doc["k"] == 2
    assert doc["resampling"] == {"unit": "speaker", "requested": "auto", "clusters": {"source": 12, "target": 12},
                                 "reason": None}
    assert doc["duration_s"]["source"] == [1.0, 1.0, 1.0] and doc["duration_s"]["target"][1] == pytest.approx(2.5)
    vowl = doc["units"]["Vowl"]
    for key in ("score", "ci_low", "ci_high", "reference_source", "reference_target", "gap", "gap_ci_low",
                "gap_ci_high", "p_best", "p_null"):
        assert len(vowl[key]) == 6, key
    assert vowl["reference_split"] == "speaker" and vowl["flat"] is False and vowl["tied_with_best"][0] == 3
    assert vowl["p_best"][0] is None and sum(vowl["p_best"][1:]) == pytest.approx(1.0)
    assert min(vowl["p_null"]) == pytest.approx(0.1)      # (1 + 0) / (1 + 9): every permutation is more similar
    assert vowl["ranking"][0] == 3 and vowl["layers"] == list(range(6))
    assert sum(vowl["top_k_frequency"][1:]) == pytest.approx(2.0)
    sel = load_selections(tmp_path / "sim", unit="Vowl")
    assert sel["BL"] == [3] and sel["final"] == [5] and sel["GL"] == [3, 5]
    assert load_selection_info(tmp_path / "sim", unit="Vowl").flat is False
    coral = json.loads((tmp_path / "sim" / "rankings_coral.json").read_text())
    assert coral["higher_is_more_similar"] is False and "coral_raw" in coral["units"]["Vowl"]
    assert (tmp_path / "sim" / "scores.parquet").is_file() and (tmp_path / "sim" / "config.yaml").is_file()


def test_memory_does_not_grow_with_the_number_of_segments(tmp_path):
    import tracemalloc

    peaks = []
    for seg_per_utt, chunk_utts in ((8, 16), (64, 2)):  # 8x the segments, same rows per chunk
        kw = dict(cosines=[0.9, 0.5, 0.2], n_utt=48, seg_per_utt=seg_per_utt, hidden=64, chunk_utts=chunk_utts,
                  n_speakers=12)
        src = make_store(tmp_path / f"s{seg_per_utt}", side="source", **kw)
        tgt = make_store(tmp_path / f"t{seg_per_utt}", side="target", **kw)
        _ = src.index, tgt.index  # index tables are per row by design; measure the layer streaming
        tracemalloc.start()
        compare_stores(src, tgt, n_bootstrap=20, n_permutations=20)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2.0 * peaks[0], peaks


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
    kw = dict(units=["Utt", "Cons"], n_bootstrap=0, metrics=["centroid_cosine", "pairwise_cosine"],
              resample="utterance")
    one = compare_stores(both, both, source_language="en", target_language="zh", **kw)
    two = compare_stores(FeatureStore.open(tmp_path / "en"), FeatureStore.open(tmp_path / "zh"), **kw)
    for unit in ("Utt", "Cons"):
        for m in ("centroid_cosine", "pairwise_cosine"):
            np.testing.assert_allclose(one.results["all"][unit][m].score, two.results["all"][unit][m].score, rtol=1e-5)
    with pytest.raises(SimilarityError, match="no utterance of language 'fr'"):
        compare_stores(both, both, source_language="fr")


def test_aligned_store_and_plain_folder_store_compare_for_utt(tmp_path):
    from test_extract import UTTS, make_aligned_dir

    from analysis.extract import extract_features
    from analysis.testing import random_model

    aligned = make_aligned_dir(tmp_path / "al", {**UTTS, "u4": 0.8, "u5": 0.9})
    plain = tmp_path / "plain"
    import pyarrow.parquet as pq

    utts = pq.read_table(aligned / "utterances.parquet").to_pylist()
    for u in utts:  # the same audio as a plain MFA-style folder (no alignment)
        d = plain / (u["speaker"] or "spk")
        d.mkdir(parents=True, exist_ok=True)
        src_audio = aligned / u["audio_path"] if not str(u["audio_path"]).startswith("/") else u["audio_path"]
        (d / f"{u['utt_id']}.wav").write_bytes(open(src_audio, "rb").read())
        (d / f"{u['utt_id']}.lab").write_text(u["text"] or "a", encoding="utf-8")
    model = random_model("hubert")
    extract_features(aligned, tmp_path / "st_al", model=model, device="cpu", progress=False)
    extract_features(plain, tmp_path / "st_plain", model=model, device="cpu", progress=False, language="zh")
    a, p = FeatureStore.open(tmp_path / "st_al"), FeatureStore.open(tmp_path / "st_plain")
    assert a.meta["settings"]["input"] == "segments" and p.meta["settings"]["input"] == "utterances"
    res = compare_stores(a, p, n_bootstrap=5, resample="utterance")
    doc = result_rankings(res, metric="centroid_cosine", k=1)
    assert list(doc["units"]) == ["Utt"] and "0 target rows" in doc["skipped_units"]["Vowl"]
    # the utterance vectors themselves are identical whichever way the store was made
    ids_a = a.index.column("utt_id").to_pylist()
    kind_a = a.index.column("kind").to_pylist()
    ids_p = p.index.column("utt_id").to_pylist()
    for uid in ids_p:
        ra = [i for i, (x, k) in enumerate(zip(ids_a, kind_a, strict=True)) if x == uid and k == "utt"][0]
        np.testing.assert_allclose(a.read_layer(1, rows=[ra]), p.read_layer(1, rows=[ids_p.index(uid)]), rtol=1e-5)


def test_unit_missing_from_one_corpus_is_skipped_with_a_reason(tmp_path):
    kw = dict(cosines=[0.9, 0.5, 0.2], n_utt=12, n_speakers=6)
    src = make_store(tmp_path / "s", side="source", **kw)
    tgt = make_store(tmp_path / "t", side="target", classes_per_speaker={k: CLASSES[:4] for k in range(6)}, **kw)
    res = compare_stores(src, tgt, units=["Vowl", "O"], n_bootstrap=5, metrics=["coral"])
    doc = result_rankings(res, metric="coral", k=1)
    assert list(doc["units"]) == ["Vowl"] and "0 target rows" in doc["skipped_units"]["O"]


def test_speakers_are_resampled_by_default_and_utterances_with_a_warning_otherwise(tmp_path, caplog):
    kw = dict(cosines=[0.9, 0.5, 0.2], n_utt=12)
    src = make_store(tmp_path / "s", side="source", n_speakers=4, **kw)
    tgt = make_store(tmp_path / "t", side="target", n_speakers=3, **kw)
    one = make_store(tmp_path / "one", side="target", n_speakers=1, **kw)
    res = compare_stores(src, tgt, n_bootstrap=5)
    assert (res.resampling.unit, res.resampling.clusters_source, res.resampling.clusters_target) == ("speaker", 4, 3)
    with caplog.at_level("WARNING", logger="analysis.similarity"):
        res = compare_stores(src, one, n_bootstrap=5)
    assert res.resampling.unit == "utterance" and res.resampling.clusters_target == 12
    assert "the target store has 1 speaker(s)" in caplog.text and res.warnings
    doc = result_rankings(res, metric="centroid_cosine", k=1)
    assert doc["resampling"]["unit"] == "utterance" and doc["units"]["Vowl"]["reference_split"] == "utterance"
    with pytest.raises(SimilarityError, match="--resample speaker needs .* the target store has 1 speaker"):
        compare_stores(src, one, resample="speaker")
    assert compare_stores(src, tgt, resample="utterance", n_bootstrap=2).resampling.unit == "utterance"


def test_unit_with_rows_from_too_few_speakers_is_skipped_with_the_reason(tmp_path):
    kw = dict(cosines=[0.9, 0.5, 0.2], n_utt=24, n_speakers=4)
    src = make_store(tmp_path / "s", side="source", **kw)
    # in the target only speaker 0 says 'O'
    tgt = make_store(tmp_path / "t", side="target", classes_per_speaker={1: CLASSES[:4], 2: CLASSES[:4],
                                                                        3: CLASSES[:4]}, **kw)
    res = compare_stores(src, tgt, units=["Vowl", "O"], metrics=["centroid_cosine", "coral"], n_bootstrap=5)
    cos = result_rankings(res, metric="centroid_cosine", k=1)
    assert "rows from 1 speaker(s) on the target side" in cos["skipped_units"]["O"]
    assert cos["units"]["Vowl"]["clusters"] == {"source": 4, "target": 4}
    coral = result_rankings(res, metric="coral", k=1)
    assert "O" in coral["skipped_units"] and "Vowl" in coral["units"]   # coral needs 4 speakers per side


def test_standardized_cosine_refuses_utt_and_is_defined_for_phones(tmp_path):
    kw = dict(cosines=[0.9, 0.5, 0.2], n_utt=20, n_speakers=5, class_sd=1.0)
    src, tgt = make_store(tmp_path / "s", side="source", **kw), make_store(tmp_path / "t", side="target", **kw)
    with pytest.raises(SimilarityError, match="undefined for Utt"):
        compare_stores(src, tgt, metrics=["standardized_cosine"], units=["Utt"])
    res = compare_stores(src, tgt, metrics=["standardized_cosine"], units=["Utt", "Vowl", "A"], n_bootstrap=10)
    doc = result_rankings(res, metric="standardized_cosine", k=1)
    assert "undefined for Utt" in doc["skipped_units"]["Utt"] and set(doc["units"]) == {"Vowl", "A"}
    # both sides share the class offsets: deviations from the average phone point the same way
    assert all(x > 0.5 for x in doc["units"]["A"]["score"])


def test_duration_quartiles_warning_and_matching(tmp_path):
    kw = dict(cosines=[0.9, 0.5], n_utt=60, n_speakers=6)
    src = make_store(tmp_path / "s", side="source", durations=np.linspace(1, 5, 60), **kw)
    tgt = make_store(tmp_path / "t", side="target", durations=np.linspace(3, 15, 60), **kw)
    res = compare_stores(src, tgt, n_bootstrap=0)
    assert res.durations.source[1] == pytest.approx(3.0) and res.durations.target[1] == pytest.approx(9.0)
    assert any("median utterance durations differ 3.00x" in w for w in res.warnings)
    matched = compare_stores(src, tgt, n_bootstrap=0, match_duration=True)
    q_s, q_t = matched.durations.source, matched.durations.target
    assert max(q_s[1], q_t[1]) / min(q_s[1], q_t[1]) < 1.25
    assert matched.durations.before_matching.target[1] == pytest.approx(9.0)
    assert not any("durations differ" in w for w in matched.warnings)
    n = matched.durations.matched_utterances
    assert n["source"] == n["target"] and 5 <= n["source"] < 60


def test_permutation_null_separates_different_languages_from_the_same_one(tmp_path):
    kw = dict(n_utt=60, n_speakers=20, spk_sd=0.3)
    src = make_store(tmp_path / "s", cosines=[0.6, 0.99], side="source", **kw)
    tgt = make_store(tmp_path / "t", cosines=[0.6, 0.99], side="target", **kw)
    res = compare_stores(src, tgt, units=["Vowl"], n_bootstrap=20, n_permutations=99)
    e = result_rankings(res, metric="centroid_cosine", k=1)["units"]["Vowl"]
    assert e["p_null"][0] == pytest.approx(0.01)        # cos 0.6: no permutation is as dissimilar
    assert e["null_score"][0] > 0.9 and e["null_low"][0] < e["null_score"][0] < e["null_high"][0]
    # layer 1 barely differs; the null cannot always tell, but it is never below the +1 floor
    assert e["p_null"][1] >= 0.01


def test_planted_flat_and_peaked_profiles_at_the_store_level(tmp_path):
    kw = dict(n_utt=80, n_speakers=20, spk_sd=0.3, hidden=6)
    flat = [0.8] * 8
    peaked = [0.8, 0.2, 0.4, 0.6, 0.95, 0.6, 0.4, 0.2]
    out = {}
    for name, cos in (("flat", flat), ("peaked", peaked)):
        s = make_store(tmp_path / f"s{name}", cosines=cos, side="source", **kw)
        t = make_store(tmp_path / f"t{name}", cosines=cos, side="target", **kw)
        res = compare_stores(s, t, units=["Vowl", "Utt"], n_bootstrap=200)
        out[name] = result_rankings(res, metric="centroid_cosine", k=1)["units"]
    assert out["flat"]["Vowl"]["flat"] is True and out["flat"]["Utt"]["flat"] is True
    assert out["peaked"]["Vowl"]["flat"] is False and out["peaked"]["Vowl"]["tied_with_best"] == [4]
    assert out["peaked"]["Vowl"]["p_best"][4] > 0.9


def _subset_copy(store, path, layers, *, dtype="float32"):
    """The same rows as ``store`` with only ``layers`` kept (as `lam features --layers` would write)."""
    out = FeatureStore.create(path, model_id=store.model_id, revision=None, n_layers=store.n_layers,
                              hidden_size=store.hidden_size, settings=store.meta["settings"], layers=layers,
                              dtype=dtype)
    out.append(store.index, np.stack([store.read_layer(layer) for layer in out.layers]))
    return FeatureStore.open(path)


def test_layer_subset_stores_score_their_layers_and_rank_only_those(tmp_path, planted):
    src, tgt = planted
    full = compare_stores(src, tgt, n_bootstrap=5)
    sub_s = _subset_copy(src, tmp_path / "s", [0, 2, 3, 5])
    sub_t = _subset_copy(tgt, tmp_path / "t", [0, 1, 2, 3, 5])  # the stores share layers 0, 2, 3, 5
    part = compare_stores(sub_s, sub_t, n_bootstrap=5)
    assert part.layers == [0, 2, 3, 5]
    for unit in ("Utt", "Vowl"):
        a, b = full.results["all"][unit]["centroid_cosine"], part.results["all"][unit]["centroid_cosine"]
        np.testing.assert_allclose(b.score[[0, 2, 3, 5]], a.score[[0, 2, 3, 5]], rtol=1e-12)
        assert np.isnan(b.score[[1, 4]]).all()
    from analysis.similarity import result_table

    doc = result_rankings(part, metric="centroid_cosine", k=2)
    assert doc["layers_compared"] == [0, 2, 3, 5]
    utt = doc["units"]["Utt"]
    assert sorted(utt["ranking"]) == [2, 3, 5] and utt["selections"]["final"] == [5]
    assert all(set(utt["selections"][k]) <= {2, 3, 5} for k in ("BL", "GL", "WL", "RL1", "RL2", "RL3"))
    assert utt["score"][1] is None and utt["score"][2] is not None
    assert sorted(set(result_table(part).column("layer").to_pylist())) == [0, 2, 3, 5]
    with pytest.raises(SimilarityError, match="share no layer"):
        compare_stores(_subset_copy(src, tmp_path / "s1", [4]), sub_t)
