"""Cross-language vowel maps: planted class identity shared at chosen layers gives a positive diagonal
advantage there and a tie elsewhere (by simulation against the known truth), the diagonal equals
`lam similarity`'s vowel-class units, and `lam similarity --vowel-map` / `lam plot` write it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from analysis.similarity import compare_stores, result_rankings, run_similarity
from analysis.store import FeatureStore, index_table
from analysis.vowel_map import (
    ADVANTAGE_SCHEMA,
    OUTPUT_FILES,
    VOWEL_MAP_SCHEMA,
    diagonal_advantage,
    read_diagonal_advantage,
    read_vowel_map,
    vowel_maps,
)
from phonalign.records import VOWEL_CLASSES

SCALE, CLASS_SCALE = 3.0, 1.5
#: centroid cosine of two classes with the same (orthogonal) effect minus that of two different
#: ones, in the population of :func:`vowel_store`: a^2 / (|m|^2 + a^2)
TRUE_ADVANTAGE = CLASS_SCALE ** 2 / (SCALE ** 2 + CLASS_SCALE ** 2)


def vowel_store(path, *, language, shared_layers, n_layers=5, hidden=20, n_speakers=10, utts_per_speaker=4,
                tokens=2, spk_sd=0.3, noise_sd=1.0, seed=0, missing=(), model_id="synthetic"):
    """Vowel segments (``tokens`` per class and utterance) and consonants of one language.

    Every row is the common mean ``SCALE * e_0`` plus its class's effect, its speaker's offset (sd
    ``spk_sd``, fresh per layer) and noise. The effect of vowel class k is ``CLASS_SCALE * e_{1+k}``
    in the source language (``en``) in every layer, and in the target language (``zh``) at
    ``shared_layers``; elsewhere the target's class k has ``CLASS_SCALE * e_{7+k}``, orthogonal to
    every source effect: both languages have vowel classes, but no class identity is shared, and the
    population diagonal advantage is exactly 0 (``TRUE_ADVANTAGE`` where shared). Consonants have
    ``CLASS_SCALE * e_13``. ``missing`` classes get no segments.
    """
    rng = np.random.default_rng([seed, 0 if language == "en" else 1])
    n_l = n_layers + 1
    store = FeatureStore.create(path, model_id=model_id, revision=None, n_layers=n_layers, hidden_size=hidden,
                                settings={"synthetic": True})
    classes = [c for c in VOWEL_CLASSES if c not in missing]
    cols = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "start", "end", "speaker",
                            "language")}
    spk_of_row, cls_of_row = [], []
    for spk in range(n_speakers):
        for u in range(utts_per_speaker):
            uid = f"{language}_s{spk:02d}_u{u}"
            labels = ["utterance"] + [c for c in classes for _ in range(tokens)] + ["consonant"] * 2
            for s, cls in enumerate(labels, start=-1):
                cols["unit_id"].append(uid if s < 0 else f"{uid}#{s}")
                cols["kind"].append("utt" if s < 0 else "segment")
                cols["utt_id"].append(uid)
                cols["seg_index"].append(s)
                cols["unit_class"].append(cls)
                cols["start"].append(0.0 if s < 0 else 0.1 * s)
                cols["end"].append(3.0 if s < 0 else 0.1 * s + 0.08)
                cols["speaker"].append(f"{language}{spk}")
                cols["language"].append(language)
                spk_of_row.append(spk)
                cls_of_row.append(cls)
    n = len(spk_of_row)
    layers = np.empty((n_l, n, hidden), np.float32)
    for layer in range(n_l):
        effect = np.zeros((n, hidden))
        effect[:, 0] = SCALE
        for r, cls in enumerate(cls_of_row):
            if cls in VOWEL_CLASSES:
                k = VOWEL_CLASSES.index(cls)
                dim = 1 + k if (language == "en" or layer in shared_layers) else 7 + k
                effect[r, dim] += CLASS_SCALE
            elif cls == "consonant":
                effect[r, 13] += CLASS_SCALE
        offsets = rng.standard_normal((n_speakers, hidden)) * spk_sd
        layers[layer] = effect + offsets[spk_of_row] + rng.standard_normal((n, hidden)) * noise_sd
    store.append(index_table(cols), layers)
    return FeatureStore.open(path)


SHARED = (2, 4)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("vowel_map")
    return (vowel_store(root / "en", language="en", shared_layers=SHARED, seed=3),
            vowel_store(root / "zh", language="zh", shared_layers=SHARED, seed=3))


@pytest.mark.parametrize("metric", ["centroid_cosine", "standardized_cosine", "pairwise_cosine", "mmd"])
def test_planted_shared_class_identity_gives_a_clear_advantage_only_where_planted(planted, metric):
    vm = vowel_maps(*planted, metrics=[metric], n_bootstrap=200, seed=1)[metric]
    assert vm.resampling.unit == "speaker" and vm.clusters == (10, 10)
    adv = vm.advantage()
    assert adv.classes == VOWEL_CLASSES
    for layer in range(6):
        assert adv.ci_low[layer] <= adv.estimate[layer] <= adv.ci_high[layer]
        if layer in SHARED:  # a clear positive advantage whose interval excludes 0
            assert adv.ci_low[layer] > 0, (metric, layer, adv.estimate[layer], adv.ci_low[layer])
        else:  # no shared class identity: a tie with 0
            assert adv.ci_low[layer] <= 0 <= adv.ci_high[layer], (metric, layer, adv.ci_low[layer], adv.ci_high[layer])
    assert adv.peak in SHARED and set(np.flatnonzero(adv.tied)) <= set(SHARED) and not adv.flat
    # where shared, every source class is closest to the same class of the other language
    best = np.argmax(vm.score[list(SHARED)], axis=2) if vm.higher_is_more_similar else \
        np.argmin(vm.score[list(SHARED)], axis=2)
    assert (best == np.arange(6)).all()


def test_coral_sees_no_class_identity_when_only_the_means_differ(planted):
    # CORAL compares covariances, and the planted classes differ only in their means: a tie everywhere
    vm = vowel_maps(*planted, metrics=["coral"], n_bootstrap=100, seed=1, max_rows=200)["coral"]
    adv = vm.advantage()
    # every class has the same covariance in both languages: the true relative CORAL distance of
    # every cell is 0 (the unbiased estimate scatters around it, on both sides)
    assert np.isfinite(vm.score).all() and np.abs(vm.score).max() < 0.1
    assert all(adv.ci_low[layer] <= 0 <= adv.ci_high[layer] for layer in range(6)), (adv.ci_low, adv.ci_high)


def test_intervals_cover_the_true_advantage_by_simulation(tmp_path):
    # 60 data sets drawn from the planted population: layer 1 shares class identity (true advantage
    # TRUE_ADVANTAGE), layer 0 does not (true advantage 0); 8 speakers per side. Measured over 200
    # sets: coverage 0.975 (layer 0) and 0.97 (layer 1), power 1.0
    hits = {0: 0, 1: 0}
    power = 0
    n_sets = 60
    for k in range(n_sets):
        kw = dict(shared_layers=(1,), n_layers=1, n_speakers=8, utts_per_speaker=3, seed=100 + k)
        src = vowel_store(tmp_path / f"en{k}", language="en", **kw)
        tgt = vowel_store(tmp_path / f"zh{k}", language="zh", **kw)
        adv = vowel_maps(src, tgt, n_bootstrap=200, seed=k)["centroid_cosine"].advantage()
        for layer, truth in ((0, 0.0), (1, TRUE_ADVANTAGE)):
            hits[layer] += adv.ci_low[layer] <= truth <= adv.ci_high[layer]
        power += adv.ci_low[1] > 0
    # nominal 95 %: at least 54 of 60 (a binomial(60, 0.95) falls below that with probability 0.02)
    assert hits[0] >= 54 and hits[1] >= 54, hits
    assert power >= 57, power


def test_diagonal_cells_are_lam_similaritys_vowel_class_units(planted):
    maps = vowel_maps(*planted, metrics=["centroid_cosine", "standardized_cosine"], n_bootstrap=50, seed=4)
    res = compare_stores(*planted, metrics=["centroid_cosine", "standardized_cosine"], units=list(VOWEL_CLASSES),
                         n_bootstrap=50, seed=4)
    for m, vm in maps.items():
        lo, hi = vm.ci()
        doc = result_rankings(res, metric=m)
        for k, cls in enumerate(VOWEL_CLASSES):
            r = res.results["all"][cls][m]
            np.testing.assert_allclose(vm.score[:, k, k], r.score, rtol=1e-12)
            np.testing.assert_allclose(vm.boot[:, :, k, k], r.boot, rtol=1e-12)  # the same draws
            np.testing.assert_allclose(lo[:, k, k], doc["units"][cls]["ci_low"], rtol=1e-12)
            np.testing.assert_allclose(hi[:, k, k], doc["units"][cls]["ci_high"], rtol=1e-12)


def test_every_cell_interval_contains_its_estimate(planted):
    vm = vowel_maps(*planted, n_bootstrap=30, seed=2)["centroid_cosine"]
    lo, hi = vm.ci()
    assert np.isfinite(lo).all() and (lo <= vm.score).all() and (vm.score <= hi).all()


def test_a_class_missing_on_one_side_is_left_out_with_the_reason(tmp_path):
    src = vowel_store(tmp_path / "en", language="en", shared_layers=(1,), n_layers=2, n_speakers=4)
    tgt = vowel_store(tmp_path / "zh", language="zh", shared_layers=(1,), n_layers=2, n_speakers=4, missing=("O",))
    vm = vowel_maps(src, tgt, n_bootstrap=20)["centroid_cosine"]
    k = VOWEL_CLASSES.index("O")
    assert np.isnan(vm.score[:, :, k]).all() and np.isfinite(np.delete(vm.score, k, axis=2)).all()
    assert "0 segment(s) from 0 speaker(s)" in vm.skipped["target O"]
    assert vm.advantage().classes == tuple(c for c in VOWEL_CLASSES if c != "O")


def test_diagonal_advantage_of_arrays_and_its_sign_for_distances():
    rng = np.random.default_rng(0)
    score = rng.uniform(0.2, 0.4, (3, 6, 6))
    score[2, np.arange(6), np.arange(6)] += 0.5
    boot = score[None] + rng.normal(0, 0.01, (100, 3, 6, 6))
    adv = diagonal_advantage(score, boot)
    off = ~np.eye(6, dtype=bool)
    assert adv.estimate[2] == pytest.approx(np.mean(np.diag(score[2])) - score[2][off].mean())
    assert adv.peak == 2 and adv.tied.tolist() == [False, False, True]
    dist = diagonal_advantage(-score, -boot, higher_is_more_similar=False)
    np.testing.assert_allclose(dist.estimate, adv.estimate)
    none = diagonal_advantage(score, boot[:0])
    assert np.isnan(none.ci_low).all() and none.peak == 2


def test_lam_similarity_vowel_map_writes_the_documented_tables_and_lam_plot_draws_them(tmp_path, planted):
    from lam_train.cli import app

    out = tmp_path / "sim"
    res = CliRunner().invoke(app, ["similarity", str(planted[0].path), str(planted[1].path), "--out", str(out),
                                   "--vowel-map", "--bootstrap", "50", "--units", "Vowl", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "vowel map (centroid_cosine): diagonal advantage peaks at layer" in res.output
    table = read_vowel_map(out)
    assert table.schema.equals(VOWEL_MAP_SCHEMA) and table.num_rows == 6 * 36
    assert read_diagonal_advantage(out).schema.equals(ADVANTAGE_SCHEMA)
    rows = table.to_pylist()
    assert {(r["source_language"], r["target_language"]) for r in rows} == {("en", "zh")}
    assert all(r["ci_low"] <= r["score"] <= r["ci_high"] for r in rows)
    assert sum(r["same_class"] for r in rows) == 6 * 6
    doc = json.loads((out / "vowel_map.json").read_text())["centroid_cosine"]
    assert doc["peak"] in SHARED and doc["resampling"]["unit"] == "speaker" and doc["n_bootstrap"] == 50
    assert (out / "vowel_map.csv").is_file() and (out / "diagonal_advantage.csv").is_file()
    res = CliRunner().invoke(app, ["plot", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("vowel_map_layers", "diagonal_advantage"):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.svg").is_file()


def test_run_similarity_without_vowel_map_writes_none(tmp_path, planted):
    run_similarity(planted[0].path, planted[1].path, tmp_path / "sim", units=["Vowl"], n_bootstrap=0, progress=False)
    assert not (tmp_path / "sim" / "vowel_map.parquet").exists()
    info = run_similarity(planted[0].path, planted[1].path, tmp_path / "sim", units=["Vowl"], n_bootstrap=0,
                          vowel_map=True, progress=False)
    adv = pq.read_table(tmp_path / "sim" / "diagonal_advantage.parquet").to_pylist()
    assert all(r["ci_low"] is None for r in adv)  # no draws, no intervals
    assert any("ties unknown" in line for line in info.summary)
    # a rerun without --vowel-map leaves no stale map beside the new scores
    run_similarity(planted[0].path, planted[1].path, tmp_path / "sim", units=["Vowl"], n_bootstrap=0, progress=False)
    assert not any((tmp_path / "sim" / name).exists() for name in OUTPUT_FILES)


def test_stores_made_with_layers_are_mapped_on_the_layers_both_hold(tmp_path, planted):
    """`lam features --layers` stores: the shared layers get the full stores' cells exactly, the
    others stay empty, and the advantage's peak and ties come from the shared layers only."""

    def subset(store, path, layers):
        out = FeatureStore.create(path, model_id=store.model_id, revision=None, n_layers=store.n_layers,
                                  hidden_size=store.hidden_size, settings=store.meta["settings"], layers=layers)
        out.append(store.index, np.stack([store.read_layer(layer) for layer in out.layers]))
        return FeatureStore.open(path)

    full = vowel_maps(*planted, n_bootstrap=30, seed=2)["centroid_cosine"]
    src, tgt = subset(planted[0], tmp_path / "s", [0, 1, 2, 4]), subset(planted[1], tmp_path / "t", [0, 2, 3, 4, 5])
    part = vowel_maps(src, tgt, n_bootstrap=30, seed=2)["centroid_cosine"]
    for layer in (0, 2, 4):
        np.testing.assert_allclose(part.score[layer], full.score[layer], rtol=1e-12)
    assert np.isnan(part.score[[1, 3, 5]]).all()
    adv = part.advantage()
    assert adv.peak in (2, 4) and set(np.flatnonzero(adv.tied)) <= {2, 4}
