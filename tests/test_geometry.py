"""Layer geometry: a planted class structure is found where it was planted, speaker identity does not
flatter the probe, projections are fitted on both languages, and `lam geometry` writes its outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis.geometry import (
    GeometryError,
    probe_layers,
    probe_summary,
    project_layers,
    read_probe,
    read_projection,
    run_geometry,
    vowel_vectors,
)
from analysis.store import FeatureStore, index_table
from phonalign.records import VOWEL_CLASSES


def planted_store(path, *, language, shared_layers, n_layers=4, hidden=12, n_speakers=4, per_class=12,
                  speaker_classes_layers=(), seed=0, class_scale=3.0):
    """Vowel segments whose class means are a fixed direction per class (the same in both languages)
    at ``shared_layers`` and absent elsewhere; at ``speaker_classes_layers`` every *speaker* has its
    own random class means (class identity tied to the speaker, not shared)."""
    rng = np.random.default_rng([seed, 0 if language == "en" else 1])
    shared = np.random.default_rng(123).standard_normal((len(VOWEL_CLASSES), hidden)) * class_scale
    store = FeatureStore.create(path, model_id="planted", revision=None, n_layers=n_layers, hidden_size=hidden,
                                settings={"planted": True})
    cols = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "start", "end", "language",
                            "speaker", "emotion")}
    labels = []
    for s in range(n_speakers):
        for c, cls in enumerate(VOWEL_CLASSES):
            for j in range(per_class):
                utt = f"{language}_s{s}_u{j}"
                cols["unit_id"].append(f"{utt}#{c}")
                cols["kind"].append("segment")
                cols["utt_id"].append(utt)
                cols["seg_index"].append(c)
                cols["unit_class"].append(cls)
                cols["start"].append(0.1 * c)
                cols["end"].append(0.1 * c + 0.08)
                cols["language"].append(language)
                cols["speaker"].append(f"{language}_spk{s}")
                cols["emotion"].append("Neutral")
                labels.append((s, c))
    n = len(labels)
    spk_means = rng.standard_normal((n_speakers, len(VOWEL_CLASSES), hidden)) * class_scale
    spk_offset = rng.standard_normal((n_speakers, hidden)) * 2.0
    layers = np.empty((n_layers + 1, n, hidden), np.float32)
    for layer in range(n_layers + 1):
        x = rng.standard_normal((n, hidden))
        for i, (s, c) in enumerate(labels):
            x[i] += spk_offset[s]
            if layer in shared_layers:
                x[i] += shared[c]
            if layer in speaker_classes_layers:
                x[i] += spk_means[s, c]
        layers[layer] = x
    store.append(index_table(cols), layers)
    return FeatureStore.open(path)


@pytest.fixture
def planted(tmp_path):
    en = planted_store(tmp_path / "en", language="en", shared_layers={2, 3}, speaker_classes_layers={1})
    zh = planted_store(tmp_path / "zh", language="zh", shared_layers={2, 3}, speaker_classes_layers={1})
    return en, zh


def _pooled(scores, layer, a, b):
    return next(s for s in scores if (s.layer, s.train_language, s.test_language, s.fold) == (layer, a, b, -1))


def test_probe_finds_class_identity_at_the_planted_layers_only_within_and_across_languages(planted):
    v = vowel_vectors(planted)
    scores = probe_layers(v, n_folds=4)
    for a, b in (("en", "en"), ("zh", "zh"), ("en", "zh"), ("zh", "en")):
        for layer in (2, 3):
            assert _pooled(scores, layer, a, b).balanced_accuracy > 0.9, (layer, a, b)
        for layer in (0, 4):
            s = _pooled(scores, layer, a, b)
            assert abs(s.balanced_accuracy - s.chance) < 0.12, (layer, a, b, s)
    assert _pooled(scores, 0, "en", "en").chance == pytest.approx(1 / 6)


def test_speaker_disjoint_folds_keep_speaker_specific_classes_at_chance(planted):
    # layer 1: each speaker's classes are separable, but by directions no other speaker shares; a
    # probe tested on seen speakers would score high, one tested on unseen speakers cannot
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from analysis.geometry import _bacc, _probe_model

    v = vowel_vectors(planted)
    scores = probe_layers(v, layers=[1], n_folds=4)
    for lang in ("en", "zh"):
        s = _pooled(scores, 1, lang, lang)
        assert abs(s.balanced_accuracy - s.chance) < 0.12, s
        folds = [x for x in scores if (x.train_language, x.test_language) == (lang, lang) and x.fold >= 0]
        assert len(folds) == 4 and all("," not in f.test_speakers for f in folds)  # one held-out speaker each
    # the same probe with folds that ignore speakers is flattered: the check has teeth
    m = v.language == "en"
    x, y = v.layer(1)[m], v.unit_class[m]
    pred = cross_val_predict(_probe_model(0), x, y, cv=StratifiedKFold(4, shuffle=True, random_state=0))
    assert _bacc(y, pred) > 0.6


def test_pca_is_fitted_on_both_languages_with_equal_weight_and_stable_signs(tmp_path):
    en = planted_store(tmp_path / "en", language="en", shared_layers={1}, per_class=30)
    zh = planted_store(tmp_path / "zh", language="zh", shared_layers={1}, per_class=5)
    v = vowel_vectors([en, zh])
    proj = project_layers(v, max_points=1000)
    assert proj.coords.shape == (5, len(v.language), 2)
    assert set(proj.language) == {"en", "zh"}
    # equal weight: the weighted mean of the projection is 0 with each language weighing one half
    for li in range(5):
        en_mean = proj.coords[li][proj.language == "en"].mean(axis=0)
        zh_mean = proj.coords[li][proj.language == "zh"].mean(axis=0)
        assert np.allclose(0.5 * en_mean + 0.5 * zh_mean, 0, atol=1e-4)
    assert np.all(proj.explained[:, 0] >= proj.explained[:, 1])
    # where classes are planted, the plane shows them: class means spread far more than at layer 0

    def between_share(li):
        xy = proj.coords[li]
        means = np.array([xy[proj.unit_class == c].mean(axis=0) for c in VOWEL_CLASSES])
        return means.var(axis=0).sum() / xy.var(axis=0).sum()

    assert between_share(1) > 0.5 > 0.1 > between_share(0)
    again = project_layers(v, max_points=1000)
    assert np.array_equal(again.coords, proj.coords)


def test_run_geometry_writes_tables_figures_and_config_and_reads_back(tmp_path, planted):
    res = run_geometry(planted[0].path, planted[1].path, tmp_path / "geo", n_folds=4)
    out = tmp_path / "geo"
    for name in ("projection.parquet", "probe.parquet", "geometry.json", "config.yaml", "versions.json",
                 "figures/pca_layers.png", "figures/probe_accuracy.png", "figures/probe_accuracy.svg"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "geometry.json").read_text())
    assert doc["layers"] == [0, 1, 2, 3, 4] and len(doc["probe"]) == 5 * 4
    assert read_probe(out) == list(res.probe)
    back = read_projection(out)
    assert np.allclose(back.coords, res.projection.coords)
    assert list(back.unit_class) == list(res.projection.unit_class)
    import yaml

    assert "GroupKFold by speaker" in yaml.safe_load((out / "config.yaml").read_text())["probe"]


def test_a_held_or_foreign_geometry_folder_is_refused_and_a_rerun_replaces_the_outputs(tmp_path, planted):
    from phonalign.errors import OutputFolderError, OutputLockedError
    from phonalign.outdir import output_folder

    out = tmp_path / "geo"
    with output_folder(out, step="geometry"), pytest.raises(OutputLockedError, match="in use by"):
        run_geometry(planted[0].path, planted[1].path, out, layers=[1], n_folds=2, figures=False)
    first = run_geometry(planted[0].path, planted[1].path, out, layers=[1], n_folds=2, figures=False)
    again = run_geometry(planted[0].path, planted[1].path, out, layers=[1], n_folds=2, figures=False)
    assert read_probe(out) == list(again.probe) == list(first.probe)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not lam's")
    with pytest.raises(OutputFolderError, match="files lam did not write"):
        run_geometry(planted[0].path, planted[1].path, tmp_path / "mine", layers=[1], n_folds=2, figures=False)
    from analysis.acoustics import combine_acoustics

    with pytest.raises(OutputFolderError, match="output of `lam geometry`, not of `lam acoustics`"):
        combine_acoustics([], out)


def test_lam_geometry_command_and_its_errors(tmp_path, planted):
    from lam_train.cli import app

    res = CliRunner().invoke(app, ["geometry", str(planted[0].path), str(planted[1].path), "--out",
                                   str(tmp_path / "geo"), "--folds", "3"])
    assert res.exit_code == 0, res.output
    assert "chance 0.17" in res.output and "en -> zh" in res.output
    bad = CliRunner().invoke(app, ["geometry", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
    with pytest.raises(GeometryError, match="no vowel segment"):
        vowel_vectors([planted[0]], languages=["fr"])


def test_probe_summary_has_fold_ranges_that_contain_nothing_odd(planted):
    rows = probe_summary(probe_layers(vowel_vectors(planted), layers=[2], n_folds=4))
    for r in rows:
        assert r.fold_min <= r.fold_mean <= r.fold_max
        assert 0 <= r.balanced_accuracy <= 1 and r.n_folds == 4
