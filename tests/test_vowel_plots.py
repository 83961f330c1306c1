"""Every figure of `analysis.vowel_plots` draws on the demo corpus, into the axes or figure it is given,
and returns that Figure; the vowel chart is oriented as phoneticians draw it."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from analysis.acoustics import AcousticSettings, lobanov, measure_corpus, read_acoustics
from analysis.geometry import probe_layers, project_layers, vowel_vectors
from analysis.vowel_plots import (
    diagonal_advantage_curve,
    emotion_measures,
    pca_small_multiples,
    probe_curve,
    save_acoustic_figures,
    vowel_chart,
    vowel_chart_panels,
    vowel_map_small_multiples,
)
from phonalign.align import get_aligner
from phonalign.align.run import align_corpus
from phonalign.corpus import demo_corpus_dir, read_corpus


def _pixels(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    buf.seek(0)
    return mpimg.imread(buf)


def _drawn(fig: Figure) -> None:
    img = _pixels(fig)
    assert img.shape[0] > 100 and img[..., :3].std() > 0.05, "blank figure"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Two sentences of every demo speaker in every emotion: aligned per language, measured (a given
    ceiling keeps it quick), and pooled by a small random Whisper."""
    from analysis.extract import extract_features
    from analysis.models import load_encoder
    from analysis.testing import random_model

    tmp = tmp_path_factory.mktemp("vowel_plots")
    utts = [u for u in read_corpus(None, preset="lam-demo") if u.utt_id.split("_")[2] in ("s00", "s05")]
    tg = get_aligner("textgrid", textgrids=str(demo_corpus_dir() / "textgrids"))
    align_corpus(utts, tmp / "aligned", tg, progress=False)
    table = read_acoustics(measure_corpus(tmp / "aligned", tmp / "ac", settings=AcousticSettings(ceiling="5250"),
                                          progress=False, figures=False).table)
    encoder = load_encoder(random_model("whisper", size="tiny", seed=0, n_layers=3), whisper_mode="trim",
                           model_id="random-whisper-tiny")
    stores = []
    for lang in ("en", "zh"):
        align_corpus([u for u in utts if u.language == lang], tmp / f"aligned_{lang}", tg, progress=False)
        extract_features(tmp / f"aligned_{lang}", tmp / f"features_{lang}", model=encoder, progress=False)
        stores.append(tmp / f"features_{lang}")
    return tmp, table, vowel_vectors(stores)


@pytest.fixture(scope="module")
def demo_vowel_map(demo):
    """The demo stores' vowel map (lam similarity --vowel-map): cells and diagonal advantage."""
    from analysis.similarity import run_similarity
    from analysis.vowel_map import read_diagonal_advantage, read_vowel_map

    tmp, _, _ = demo
    run_similarity(tmp / "features_en", tmp / "features_zh", tmp / "sim", units=["Vowl"], n_bootstrap=30,
                   vowel_map=True, progress=False)
    return read_vowel_map(tmp / "sim"), read_diagonal_advantage(tmp / "sim")


def test_vowel_chart_draws_into_the_given_axes_with_reversed_formant_axes(demo):
    _, table, _ = demo
    fig = Figure()
    ax = fig.add_subplot()
    assert vowel_chart(table, ax=ax) is fig
    lo, hi = ax.get_xlim()
    assert lo > hi, "F2 must grow to the left"
    lo, hi = ax.get_ylim()
    assert lo > hi, "F1 must grow downwards"
    assert "F2 (Hz)" in ax.get_xlabel() and "F1 (Hz)" in ax.get_ylabel()
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    # one ellipse (one standard deviation) per language and class with at least three tokens
    from collections import Counter

    groups = Counter((r["language"], r["unit_class"]) for r in table.to_pylist() if r["status"] == "ok")
    assert len(ellipses) == sum(n >= 3 for n in groups.values()) >= 9
    _drawn(fig)
    # /i/ drawn top left of /a/: larger F2 (further left) and smaller F1 (higher)
    means = {t.get_text(): t.xy for t in ax.texts}
    assert means["i"][0] > means["A"][0] and means["i"][1] < means["A"][1]


def test_vowel_chart_lobanov_and_new_figure(demo):
    _, table, _ = demo
    fig = vowel_chart(lobanov(table), normalised=True, languages=["zh"], points=False)
    assert isinstance(fig, Figure) and "Lobanov z" in fig.axes[0].get_xlabel()
    _drawn(fig)


@pytest.mark.parametrize("by, panels", [("language", 2), ("emotion", 4)])
def test_vowel_chart_panels_draw_one_panel_per_language_or_emotion(demo, by, panels):
    _, table, _ = demo
    fig = Figure(figsize=(10, 4))
    assert vowel_chart_panels(table, fig=fig, by=by) is fig
    used = [ax for ax in fig.axes if ax.axison]
    assert len(used) == panels
    assert all(ax.get_xlim()[0] > ax.get_xlim()[1] for ax in used)
    _drawn(fig)


def test_emotion_measures_draw_f0_intensity_and_duration_per_language(demo):
    _, table, _ = demo
    fig = Figure(figsize=(9, 7))
    assert emotion_measures(table, fig=fig) is fig
    labels = {ax.get_ylabel() for ax in fig.axes}
    assert {"mean F0 (Hz)", "mean intensity (dB)", "duration (ms)"} <= labels
    assert {ax.get_title() for ax in fig.axes} >= {"English", "Mandarin"}
    _drawn(fig)


def test_pca_small_multiples_draw_one_panel_per_layer(demo):
    _, _, vectors = demo
    proj = project_layers(vectors)
    fig = Figure(figsize=(10, 6))
    assert pca_small_multiples(proj, fig=fig) is fig
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split(" (")[0] for t in titles] == [f"layer {k}" for k in range(4)]
    assert all("PC1" in t for t in titles)
    _drawn(fig)


def test_probe_curve_draws_within_and_across_languages_with_chance(demo):
    _, _, vectors = demo
    scores = probe_layers(vectors, n_folds=3)
    fig = Figure()
    ax = fig.add_subplot()
    assert probe_curve(scores, ax=ax) is fig
    labels = [line.get_label() for line in ax.get_lines()]
    assert any("speaker-disjoint" in lab for lab in labels) and any("->" in lab for lab in labels)
    assert any(abs(line.get_ydata()[0] - 1 / 6) < 1e-9 for line in ax.get_lines() if len(line.get_ydata()) == 2)
    _drawn(fig)


def test_save_acoustic_figures_writes_png_and_svg(demo):
    tmp, table, _ = demo
    paths = save_acoustic_figures(lobanov(table), tmp / "figs")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{n}.{e}" for n in ("vowel_chart", "vowel_chart_overlaid", "vowel_chart_lobanov",
                                                "vowel_chart_by_emotion", "emotion_measures") for e in ("png", "svg"))


def test_vowel_map_small_multiples_draw_one_6x6_panel_per_layer_on_the_demo_corpus(demo_vowel_map):
    table, advantage = demo_vowel_map
    fig = Figure(figsize=(10, 6))
    assert vowel_map_small_multiples(table, advantage=advantage, fig=fig) is fig
    panels = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    assert [ax.get_title().split("\n")[0].rstrip(" \u2605") for ax in panels] == [f"layer {k}" for k in range(4)]
    assert all("advantage" in ax.get_title() for ax in panels)
    assert sum("\u2605" in ax.get_title() for ax in panels) == 1  # the peak
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "E", "@", "i", "O", "u"]
        assert ax.images[0].get_array().shape == (6, 6)
    assert "Mandarin vowel class" in panels[-1].get_xlabel() and "English vowel class" in panels[0].get_ylabel()
    _drawn(fig)
    assert isinstance(vowel_map_small_multiples(table, layers=[1, 2]), Figure)


def test_diagonal_advantage_curve_draws_into_the_given_axes_on_the_demo_corpus(demo_vowel_map):
    _, advantage = demo_vowel_map
    fig = Figure()
    ax = fig.add_subplot()
    assert diagonal_advantage_curve(advantage, ax=ax) is fig
    line = next(line for line in ax.get_lines() if line.get_label() == "diagonal advantage")
    rows = advantage.to_pylist()
    assert np.allclose(line.get_ydata(), [r["advantage"] for r in rows])
    assert ax.collections, "the interval band"
    _drawn(fig)
