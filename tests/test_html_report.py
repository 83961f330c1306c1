"""`lam report`: one self-contained HTML page that opens offline, renders in Chromium, and shows what a
run folder holds (old and new rankings, acoustics, geometry, a vowel map when present)."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from html_checks import CHROMIUM, assert_not_blank, check_references, screenshot
from test_pipeline import _tiny_config
from test_similarity import TRUTH, make_store
from typer.testing import CliRunner

from analysis.similarity import run_similarity
from lam_train.config import load_config
from lam_train.errors import TrainError
from lam_train.html_report import write_html_report
from lam_train.pipeline import run_pipeline


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_whisper_dir):
    """A tiny `lam run` (random 2-layer Whisper, a few demo utterances) with the vowel views on."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(_tiny_config(tmp, tiny_whisper_dir, strategies=["final", "BL"],
                                   analyses=["acoustics", "geometry"],
                                   similarity={"n_bootstrap": 20, "vowel_map": True}))
    res = run_pipeline(cfg, progress=False)
    return tmp / "out", res


def test_lam_run_writes_an_html_page_with_every_section_and_nothing_unresolved(tiny_run):
    out, res = tiny_run
    page = out / "report" / "index.html"
    assert res.report is not None and res.report.html == str(page) and page.is_file()
    assert (out / "report" / "report.md").is_file()  # the markdown report stays
    text = page.read_text(encoding="utf-8")
    for anchor in ("similarity", "geometry", "acoustics", "report", "provenance"):
        assert f'id="{anchor}"' in text, anchor
    for words in ("Layer selections per unit", "95% interval", "balanced accuracy", "F1 (Hz)", "target UAR",
                  "config.yaml", "versions.json", "torch", "Cross-language vowel map", "diagonal advantage"):
        assert words in text, words
    # the vowel map was written by the similarity step and drawn by its plots
    assert (out / "similarity" / "vowel_map.parquet").is_file()
    assert (out / "similarity" / "figures" / "vowel_map_layers.png").is_file()
    n_img, n_links = check_references(page)
    # every figure of the run folder is embedded once
    figures = [p for p in out.rglob("*.png") if p.parent.name == "figures"]
    assert n_img == len(figures) >= 10 and n_links >= 8
    # acoustics of both sides were joined, geometry has both languages
    acoustics = pq.read_table(out / "acoustics" / "acoustics.parquet")
    assert set(acoustics["language"].to_pylist()) == {"en", "zh"}
    # the tiny run keeps one speaker per language: no speaker-disjoint folds, so no per-language
    # probe score, and the page says why
    geo = json.loads((out / "geometry" / "geometry.json").read_text())
    assert {(r["train_language"], r["test_language"]) for r in geo["probe"]} == {("en", "zh"), ("zh", "en")}
    assert len(geo["notes"]) == 2 and "one speaker only" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_headless_chromium_renders_the_page_with_text_and_figures(tiny_run, tmp_path):
    out, _ = tiny_run
    img = screenshot(out / "report" / "index.html", tmp_path / "shot.png", profile=tmp_path / "profile")
    assert img.shape[0] >= 2000 and img.shape[1] == 1280
    assert_not_blank(img)
    # a blank page really is caught by the check
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    with pytest.raises(AssertionError):
        assert_not_blank(screenshot(blank, tmp_path / "blank.png", profile=tmp_path / "profile2", height=600))


def _similarity_dir(tmp_path):
    make_store(tmp_path / "s", cosines=TRUTH, n_utt=20, side="source", seed=0)
    make_store(tmp_path / "t", cosines=TRUTH, n_utt=20, side="target", seed=0)
    run_similarity(tmp_path / "s", tmp_path / "t", tmp_path / "run" / "similarity", n_bootstrap=10, progress=False)
    return tmp_path / "run"


def test_rankings_uncertainty_is_rendered_and_old_rankings_still_are(tmp_path):
    run = _similarity_dir(tmp_path)
    path = run / "similarity" / "rankings.json"
    doc = json.loads(path.read_text())
    doc["units"]["Cons"]["flat"] = True
    path.write_text(json.dumps(doc))
    new = write_html_report(run).path.read_text()
    for words in ("p_best", "tied with best", "flat: the data cannot tell the layers apart", "gap_ci_low",
                  "reference_source", "resampling", "utterance", "tie_critical", "95% interval"):
        assert words in new, words
    tied = sum(len(e["tied_with_best"]) - 1 for e in doc["units"].values())
    assert new.count('class="tied"') == tied
    check_references(run / "report" / "index.html")
    # a rankings file of the previous release (no ties, gap, null or resampling) still renders
    new_keys = ("p_best", "tied_with_best", "flat", "tie_critical", "gap", "gap_ci_low", "gap_ci_high",
                "as_similar_as_within", "cross_half", "reference_split", "clusters", "defined_draws")
    for e in doc["units"].values():
        for k in new_keys:
            e.pop(k, None)
    for k in ("resampling", "duration_s", "ci_method", "warnings", "untrained", "n_permutations"):
        doc.pop(k, None)
    path.write_text(json.dumps(doc))
    old = write_html_report(run).path.read_text()
    assert "Layer selections per unit" in old and "tied with best" not in old and "flat" not in old
    check_references(run / "report" / "index.html")


def test_a_vowel_map_and_its_figures_are_shown_when_present(tmp_path):
    from test_vowel_map import SHARED, vowel_store

    from analysis.plots import plot_results

    src = vowel_store(tmp_path / "en", language="en", shared_layers=SHARED, seed=3)
    tgt = vowel_store(tmp_path / "zh", language="zh", shared_layers=SHARED, seed=3)
    sim = tmp_path / "run" / "similarity"
    run_similarity(src.path, tgt.path, sim, units=["Vowl"], n_bootstrap=50, vowel_map=True, progress=False)
    plot_results(sim)
    rep = write_html_report(tmp_path / "run")
    text = rep.path.read_text()
    for words in ("Cross-language vowel map", "diagonal advantage", "The map at the peak layer", "vs the peak",
                  "speaker (10 / 10 clusters)"):
        assert words in text, words
    assert text.count('class="best"') >= 2  # the peak row of the advantage table and the best Vowl layer
    for name in ("vowel_map_layers.png", "diagonal_advantage.png"):
        assert sim / "figures" / name in rep.figures
    assert "<h3>vowel map</h3>" not in text  # not shown a second time as a plain table
    check_references(rep.path)


def test_a_folder_of_lam_acoustics_alone_gets_a_page(tmp_path):
    from analysis.acoustics import AcousticSettings, measure_corpus
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir, read_corpus

    utts = [u for u in read_corpus(None, preset="lam-demo") if u.utt_id.endswith("s00_neu")]
    align_corpus(utts, tmp_path / "aligned", get_aligner("textgrid", textgrids=str(demo_corpus_dir() / "textgrids")),
                 progress=False)
    measure_corpus(tmp_path / "aligned", tmp_path / "ac", settings=AcousticSettings(ceiling="5000"), progress=False)
    rep = write_html_report(tmp_path / "ac")
    text = rep.path.read_text()
    assert "F1 (Hz)" in text and "Emotion (all vowels" in text and len(rep.figures) >= 3
    check_references(rep.path)


def test_lam_report_command_and_an_empty_folder(tmp_path):
    from lam_train.cli import app

    run = _similarity_dir(tmp_path)
    shutil.rmtree(run / "report", ignore_errors=True)
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    assert "index.html" in res.output and (run / "report" / "index.html").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="nothing to report"):
        write_html_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report").exists()  # refused before anything was written
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert bad.exit_code != 0


def test_the_page_folder_is_locked_and_never_mixed_with_foreign_files(tmp_path):
    from phonalign.errors import OutputFolderError, OutputLockedError
    from phonalign.outdir import output_folder

    run = _similarity_dir(tmp_path)
    with output_folder(run / "report", step="report"), pytest.raises(OutputLockedError, match="in use by"):
        write_html_report(run)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>someone's page</p>")
    (tmp_path / "site" / "style.css").write_text("p{}")
    with pytest.raises(OutputFolderError, match="files lam did not write"):
        write_html_report(run, out_dir=tmp_path / "site")
    assert (tmp_path / "site" / "index.html").read_text() == "<p>someone's page</p>"
