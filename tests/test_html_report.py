"""`lam report`: one self-contained HTML page that opens offline, renders in Chromium, and shows what a
run folder holds (old and new rankings, acoustics, geometry, a vowel map when present)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from html_checks import CHROMIUM, assert_not_blank, check_references, screenshot
from matplotlib.figure import Figure
from test_pipeline import _tiny_config, tiny_whisper_dir  # noqa: F401 -- the fixture is used by name
from test_similarity import TRUTH, make_store
from typer.testing import CliRunner

from analysis.similarity import run_similarity
from lam_train.config import load_config
from lam_train.errors import TrainError
from lam_train.html_report import write_html_report
from lam_train.pipeline import run_pipeline


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_whisper_dir):  # noqa: F811
    """A tiny `lam run` (random 2-layer Whisper, a few demo utterances) with the vowel views on."""
    tmp = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(_tiny_config(tmp, tiny_whisper_dir, strategies=["final", "BL"],
                                   analyses=["acoustics", "geometry"]))
    res = run_pipeline(cfg, progress=False, log=lambda s: None)
    return tmp / "out", res


def test_lam_run_writes_an_html_page_with_every_section_and_nothing_unresolved(tiny_run):
    out, res = tiny_run
    page = out / "report" / "index.html"
    assert res["html"] == str(page) and page.is_file()
    assert (out / "report" / "report.md").is_file()  # the markdown report stays
    text = page.read_text(encoding="utf-8")
    for anchor in ("similarity", "geometry", "acoustics", "report", "provenance"):
        assert f'id="{anchor}"' in text, anchor
    for words in ("Layer selections per unit", "95% interval", "balanced accuracy", "F1 (Hz)", "target UAR",
                  "config.yaml", "versions.json", "torch"):
        assert words in text, words
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


def test_new_rankings_fields_are_rendered_and_old_rankings_still_are(tmp_path):
    run = _similarity_dir(tmp_path)
    old = write_html_report(run)
    old_text = old.path.read_text()
    assert "Layer selections per unit" in old_text and "tied with best" not in old_text
    path = run / "similarity" / "rankings.json"
    doc = json.loads(path.read_text())
    doc["resampling"] = "speakers"
    doc["duration_s"] = 12.5
    for unit, e in doc["units"].items():
        n = len(e["layers"])
        e["p_best"] = [round(1.0 / n, 3)] * n
        e["tied_with_best"] = [1, 3]
        e["flat"] = unit == "Cons"
        e["gap"] = {"value": 0.01, "ci_low": -0.002, "ci_high": 0.03}
        e["reference_split"] = "speaker-disjoint halves"
        e["p_null"] = [0.5] * n
    path.write_text(json.dumps(doc))
    new = write_html_report(run).path.read_text()
    for words in ("p_best", "p_null", "tied with best", "flat: the data cannot tell the layers apart",
                  "speaker-disjoint halves", "resampling", "speakers", "12.500", "ci_low"):
        assert words in new, words
    assert new.count('class="tied"') >= 2
    check_references(run / "report" / "index.html")


def test_a_vowel_map_and_its_figures_are_picked_up_when_present(tmp_path):
    run = _similarity_dir(tmp_path)
    rows = [{"layer": layer, "source_class": a, "target_class": b, "score": float(layer == 2 and a == b),
             "ci_low": 0.0, "ci_high": 1.0} for layer in range(6) for a in "AEi" for b in "AEi"]
    pq.write_table(pa.Table.from_pylist(rows), run / "similarity" / "vowel_map.parquet")
    fig = Figure(figsize=(3, 3))
    fig.add_subplot().imshow(np.eye(3))
    (run / "similarity" / "figures").mkdir()
    fig.savefig(run / "similarity" / "figures" / "vowel_map_layers.png")
    rep = write_html_report(run)
    text = rep.path.read_text()
    assert "vowel map" in text and "source_class" in text
    assert run / "similarity" / "figures" / "vowel_map_layers.png" in rep.figures
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
