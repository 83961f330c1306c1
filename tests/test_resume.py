"""Resume that notices change: a rerun of `lam align` / `lam features` after an edit gives exactly
what a fresh run on the edited input gives, and another corpus or other settings are refused
unless --force. Also the NaN case end to end (issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from faultkit import assert_one_line_error, edit_first_phone, lam, make_corpus, tiny_model_dir, write_utterance

from analysis.store import FeatureStore


def _align(capsys, corpus: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return lam(capsys, "align", corpus, out, "--language", "en", "--no-progress", *extra)


def _same_aligned(a: Path, b: Path) -> None:
    """Tables, per-utterance outcomes and TextGrids of two aligned folders are the same."""
    for name in ("segments.parquet", "utterances.parquet"):
        assert pq.read_table(a / name).equals(pq.read_table(b / name)), name
    ta = {p.name: p.read_bytes() for p in (a / "textgrids").glob("*.TextGrid")}
    tb = {p.name: p.read_bytes() for p in (b / "textgrids").glob("*.TextGrid")}
    assert ta == tb
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    strip = lambda items: [{k: v for k, v in i.items() if k != "info"} for i in items]  # noqa: E731
    assert strip(ra["utterances"]) == strip(rb["utterances"])
    assert {k: v for k, v in ra["counts"].items() if k != "resumed"} == \
        {k: v for k, v in rb["counts"].items() if k != "resumed"}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus", 8, seed=3)


# --------------------------------------------------------------------------------------- align


@pytest.mark.parametrize("phone_set", ["arpabet", None])
def test_align_rerun_after_a_textgrid_is_edited_gives_the_fresh_result(tmp_path, corpus, capsys, phone_set):
    extra = ("--phone-set", phone_set) if phone_set else ()
    out = tmp_path / "out"
    assert _align(capsys, corpus, out, *extra)[0] == 0
    before = (out / "textgrids" / "u002.TextGrid").read_bytes()
    # the corrected TextGrid: another label for its first phone, same times, same audio
    edit_first_phone(corpus / "spk2" / "u002.TextGrid", "OW1")
    code, stdout, _ = _align(capsys, corpus, out, *extra)
    # with the phone set given, only the edited utterance is redone; detected, it was detected
    # from the first 20 utterances, u002 among them: detected again, every utterance redone
    assert code == 0 and f"({7 if phone_set else 0} already done)" in stdout
    assert (out / "textgrids" / "u002.TextGrid").read_bytes() != before
    fresh = tmp_path / "fresh"
    assert _align(capsys, corpus, fresh, *extra)[0] == 0
    _same_aligned(out, fresh)


def test_align_rerun_with_another_option_is_refused_and_force_gives_the_fresh_result(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert _align(capsys, corpus, out)[0] == 0
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".lam.lock")}
    code, _, err = _align(capsys, corpus, out, "--trap", "E")
    assert code == 2
    line = assert_one_line_error(err, str(out), "other settings", "options.trap: 'A', now 'E'")
    assert "--force" in err and line
    assert {p: p.read_bytes() for p in kept} == kept  # nothing touched by the refused run
    code, stdout, _ = _align(capsys, corpus, out, "--trap", "E", "--force")
    assert code == 0 and "(0 already done)" in stdout
    fresh = tmp_path / "fresh"
    assert _align(capsys, corpus, fresh, "--trap", "E")[0] == 0
    _same_aligned(out, fresh)
    seg = pq.read_table(out / "segments.parquet").to_pylist()
    assert {r["unit_class"] for r in seg if r["label"] == "AE1"} == {"E"}


def test_align_rerun_with_an_added_utterance_gives_the_fresh_result(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert _align(capsys, corpus, out)[0] == 0
    write_utterance(corpus / "spk1", "u000a", seconds=0.8, seed=123)  # sorts between u000 and u001
    code, stdout, _ = _align(capsys, corpus, out)
    assert code == 0 and "aligned 9 of 9" in stdout
    fresh = tmp_path / "fresh"
    assert _align(capsys, corpus, fresh)[0] == 0
    _same_aligned(out, fresh)


def test_align_rerun_with_a_removed_utterance_drops_it_and_its_textgrid(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert _align(capsys, corpus, out, "--phone-set", "arpabet")[0] == 0
    for ext in (".wav", ".lab", ".TextGrid"):
        (corpus / "spk3" / f"u003{ext}").unlink()
    code, stdout, _ = _align(capsys, corpus, out, "--phone-set", "arpabet")
    assert code == 0 and "aligned 7 of 7 utterances (7 already done)" in stdout
    assert not (out / "textgrids" / "u003.TextGrid").exists()
    fresh = tmp_path / "fresh"
    assert _align(capsys, corpus, fresh, "--phone-set", "arpabet")[0] == 0
    _same_aligned(out, fresh)


def test_align_of_a_second_corpus_into_an_existing_out_is_refused_unless_forced(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert _align(capsys, corpus, out)[0] == 0
    other = make_corpus(tmp_path / "other" / "corpus", 5, seed=8, prefix="v")
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".lam.lock")}
    code, _, err = _align(capsys, other, out)
    assert code == 2
    assert_one_line_error(err, str(out), "another corpus")
    assert {p: p.read_bytes() for p in kept} == kept
    assert _align(capsys, other, out, "--force")[0] == 0
    fresh = tmp_path / "fresh"
    assert _align(capsys, other, fresh)[0] == 0
    _same_aligned(out, fresh)
    assert not list((out / "textgrids").glob("u*.TextGrid"))  # the first corpus' grids are gone too


# --------------------------------------------------------------------------------------- features


def _store_rows(path: Path) -> dict[str, tuple[dict, list[np.ndarray]]]:
    store = FeatureStore.open(path)
    rows = store.index.to_pylist()
    layers = [store.read_layer(i) for i in range(store.n_layers + 1)]
    return {r["unit_id"]: (r, [layer[k] for layer in layers]) for k, r in enumerate(rows)}


def _same_store(a: Path, b: Path) -> None:
    ra, rb = _store_rows(a), _store_rows(b)
    assert sorted(ra) == sorted(rb)
    for unit, (row, vecs) in ra.items():
        assert row == rb[unit][0], unit
        for x, y in zip(vecs, rb[unit][1], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def _features(capsys, aligned: Path, out: Path, model: Path, *extra: str) -> tuple[int, str, str]:
    return lam(capsys, "features", aligned, out, "--model", model, "--device", "cpu", "--no-progress",
               "--batch-seconds", "0.5", *extra)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-wavlm"))


def test_features_rerun_after_realigning_with_trap_E_gives_the_fresh_store(tmp_path, corpus, model_dir, capsys):
    aligned, store = tmp_path / "aligned", tmp_path / "store"
    assert _align(capsys, corpus, aligned)[0] == 0
    assert _features(capsys, aligned, store, model_dir)[0] == 0
    assert _align(capsys, corpus, aligned, "--trap", "E", "--force")[0] == 0
    code, stdout, _ = _features(capsys, aligned, store, model_dir)
    assert code == 0, stdout
    changed = {r["utt_id"] for r in pq.read_table(aligned / "segments.parquet").to_pylist() if r["label"] == "AE1"}
    assert changed and f"{len(changed)} redone" in stdout
    fresh = tmp_path / "fresh"
    assert _features(capsys, aligned, fresh, model_dir)[0] == 0
    _same_store(store, fresh)
    classes = {r["unit_class"] for r in FeatureStore.open(store).index.to_pylist() if r["phone"] == "AE"}
    assert classes == {"E"}


def test_features_rerun_after_utterances_are_added_and_removed_gives_the_fresh_store(tmp_path, corpus, model_dir,
                                                                                     capsys):
    aligned, store = tmp_path / "aligned", tmp_path / "store"
    assert _align(capsys, corpus, aligned)[0] == 0
    assert _features(capsys, aligned, store, model_dir, "--chunk-rows", "20")[0] == 0
    for ext in (".wav", ".lab", ".TextGrid"):
        (corpus / "spk1" / f"u005{ext}").unlink()
    write_utterance(corpus / "spk0", "u009", seconds=0.6, seed=77)
    assert _align(capsys, corpus, aligned)[0] == 0
    code, stdout, _ = _features(capsys, aligned, store, model_dir, "--chunk-rows", "20")
    assert code == 0 and "1 dropped" in stdout and "7 already done" in stdout
    fresh = tmp_path / "fresh"
    assert _features(capsys, aligned, fresh, model_dir, "--chunk-rows", "20")[0] == 0
    _same_store(store, fresh)
    assert not [p for p in (store / "index").iterdir() if p.name.startswith(".")]


def test_features_of_a_second_corpus_into_an_existing_store_is_refused_unless_forced(tmp_path, corpus, model_dir,
                                                                                     capsys):
    aligned, store = tmp_path / "aligned", tmp_path / "store"
    assert _align(capsys, corpus, aligned)[0] == 0
    assert _features(capsys, aligned, store, model_dir)[0] == 0
    other = tmp_path / "aligned2"
    assert _align(capsys, make_corpus(tmp_path / "c2" / "corpus", 4, seed=5, prefix="w"), other)[0] == 0
    rows_before = len(FeatureStore.open(store))
    code, _, err = _features(capsys, other, store, model_dir)
    assert code == 2
    assert_one_line_error(err, str(store), "another corpus")
    assert len(FeatureStore.open(store)) == rows_before
    assert _features(capsys, other, store, model_dir, "--force")[0] == 0
    fresh = tmp_path / "fresh"
    assert _features(capsys, other, fresh, model_dir)[0] == 0
    _same_store(store, fresh)


def test_features_rerun_after_an_audio_file_changed_redoes_it(tmp_path, corpus, model_dir, capsys):
    aligned, store = tmp_path / "aligned", tmp_path / "store"
    assert _align(capsys, corpus, aligned)[0] == 0
    assert _features(capsys, aligned, store, model_dir)[0] == 0
    wav = corpus / "spk0" / "u004.wav"
    import soundfile as sf

    data, sr = sf.read(wav, dtype="float32")
    sf.write(wav, data[::-1].copy(), sr, subtype="FLOAT")  # same length, other samples
    code, stdout, _ = _features(capsys, aligned, store, model_dir)
    assert code == 0 and "1 redone" in stdout
    fresh = tmp_path / "fresh"
    assert _features(capsys, aligned, fresh, model_dir)[0] == 0
    _same_store(store, fresh)


# --------------------------------------------------------------------------------------- NaN end to end


def test_one_nan_file_in_20_is_failed_and_the_other_19_give_the_same_similarity(tmp_path, model_dir, capsys):
    source = make_corpus(tmp_path / "src" / "corpus", 20, seed=11, nan={"u007"})
    clean = tmp_path / "clean" / "corpus"
    shutil.copytree(source, clean)
    for ext in (".wav", ".lab", ".TextGrid"):
        (clean / "spk3" / f"u007{ext}").unlink()
    target = make_corpus(tmp_path / "tgt" / "corpus", 12, seed=12, prefix="t")
    results = {}
    for name, corpus in (("with_nan", source), ("clean", clean)):
        aligned = tmp_path / name / "aligned"
        code, stdout, _ = _align(capsys, corpus, aligned)
        assert code == 0
        if name == "with_nan":
            assert "aligned 19 of 20" in stdout and "1 failed" in stdout
            bad = [u for u in json.loads((aligned / "report.json").read_text())["utterances"] if u["status"] != "ok"]
            assert [u["utt_id"] for u in bad] == ["u007"] and "non-finite" in bad[0]["reason"]
            assert bad[0]["path"].endswith("u007.wav")
        assert _features(capsys, aligned, tmp_path / name / "store", model_dir)[0] == 0
        results[name] = tmp_path / name
    tgt_aligned = tmp_path / "tgt" / "aligned"
    assert _align(capsys, target, tgt_aligned)[0] == 0
    assert _features(capsys, tgt_aligned, tmp_path / "tgt" / "store", model_dir)[0] == 0
    scores = {}
    for name, folder in results.items():
        code, _, err = lam(capsys, "similarity", folder / "store", tmp_path / "tgt" / "store", "--out",
                           folder / "sim", "--bootstrap", "20", "--k", "1", "--no-progress")
        assert code == 0, err
        scores[name] = pq.read_table(folder / "sim" / "scores.parquet")
    a, b = scores["with_nan"], scores["clean"]
    for col in a.column_names:
        if col in ("score", "ci_low", "ci_high", "reference_source", "reference_target"):
            x = np.array(a.column(col).to_pylist(), dtype=float)
            y = np.array(b.column(col).to_pylist(), dtype=float)
            np.testing.assert_array_equal(x, y, err_msg=col)
            assert np.isfinite(np.array(a.column("score").to_pylist(), dtype=float)).any()
        else:
            assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    # the same file given straight to `lam features` (a plain corpus) is a failure there too
    code, stdout, _ = lam(capsys, "features", source, tmp_path / "plain", "--model", model_dir, "--device", "cpu",
                          "--no-progress", "--language", "en")
    assert code == 0 and "19 utterances pooled" in stdout and "1 failed" in stdout
    failed = json.loads((tmp_path / "plain" / "report.json").read_text())["failed"]
    assert list(failed) == ["u007"] and "non-finite" in failed["u007"]["message"]
