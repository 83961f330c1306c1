"""`lam plot`: every figure in PNG and SVG, labelled axes, colour-blind-safe colours, side by side."""

from __future__ import annotations

import matplotlib.image as mpimg
from test_similarity import TRUTH, make_store
from typer.testing import CliRunner

from analysis.errors import RankingsError
from analysis.plots import OKABE_ITO, plot_results
from analysis.similarity import run_similarity


def _results(tmp_path, name, seed, *, settings=None, cosines=TRUTH, permutations=0):
    kw = dict(cosines=cosines, n_utt=30, seed=seed, model_id=name, n_speakers=6, settings=settings)
    make_store(tmp_path / f"{name}s", side="source", **kw)
    make_store(tmp_path / f"{name}t", side="target", **kw)
    run_similarity(tmp_path / f"{name}s", tmp_path / f"{name}t", tmp_path / f"{name}_sim", n_bootstrap=20,
                   n_permutations=permutations, progress=False)
    return tmp_path / f"{name}_sim"


def test_plot_writes_png_and_svg_with_labelled_axes_and_safe_colours(tmp_path):
    a = _results(tmp_path, "wavlm", 0)
    paths = plot_results(a)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{n}.{f}" for n in ("similarity_vs_layer", "heatmap", "rank_stability")
                           for f in ("png", "svg"))
    for p in paths:
        if p.suffix == ".png":
            img = mpimg.imread(p)
            assert img.shape[0] > 200 and img.std() > 0.01  # a real drawing, not a blank canvas
    svg = (a / "figures" / "similarity_vs_layer.svg").read_text()
    assert "before the first transformer layer" in svg and "unitless" in svg
    assert OKABE_ITO["vermillion"].lower() in svg.lower() and OKABE_ITO["blue"].lower() in svg.lower()
    assert (a / "figures" / "config.yaml").is_file()


def test_lam_plot_draws_two_models_side_by_side(tmp_path):
    from lam_train.cli import app

    a, b = _results(tmp_path, "wavlm", 0), _results(tmp_path, "whisper", 1)
    res = CliRunner().invoke(app, ["plot", str(a), "--compare", str(b), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    svg = (tmp_path / "fig" / "similarity_vs_layer.svg").read_text()
    assert "wavlm" in svg and "whisper" in svg
    wide = mpimg.imread(tmp_path / "fig" / "heatmap.png")
    single = mpimg.imread(plot_results(a, tmp_path / "one")[2])
    assert wide.shape[1] > 1.6 * single.shape[1]


def test_plot_raises_when_rankings_are_missing(tmp_path):
    import pytest

    with pytest.raises(RankingsError, match="not found"):
        plot_results(tmp_path)


def test_every_unit_of_the_heatmap_has_its_own_colour_and_marker_style():
    from analysis.plots import HEATMAP_UNITS, UNIT_COLOURS, UNIT_MARKERS, UNIT_STYLES

    vowels = ("A", "E", "@", "i", "O", "u")
    assert all(u in UNIT_COLOURS and u in UNIT_STYLES for u in HEATMAP_UNITS)
    # within the vowel panel no two classes look the same
    looks = {(UNIT_COLOURS[v], UNIT_STYLES[v], UNIT_MARKERS[v]) for v in vowels}
    assert len({UNIT_COLOURS[v] for v in vowels}) == 6 and len(looks) == 6


def test_plot_functions_draw_into_a_given_axes_and_return_its_figure(tmp_path):
    from matplotlib.figure import Figure

    from analysis.plots import plot_gap, plot_heatmap, plot_profile, plot_rank_stability
    from analysis.rankings import read_rankings

    doc = read_rankings(_results(tmp_path, "wavlm", 0))
    fig = Figure()
    axes = fig.subplots(1, 4)
    for fn, ax in zip((plot_profile, plot_gap, plot_heatmap, plot_rank_stability), axes, strict=True):
        assert fn(doc, ax=ax) is fig
    assert isinstance(plot_profile(doc), Figure)


def test_plots_module_leaves_the_backend_alone():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import analysis.plots; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_profile_draws_reference_band_null_control_and_shares_y_limits(tmp_path):
    from matplotlib.collections import PolyCollection

    from analysis.plots import describe, plot_profile
    from analysis.rankings import read_rankings

    whisper = {"model_type": "whisper", "whisper_mode": "trim"}
    a = _results(tmp_path, "whisper", 0, settings=whisper, permutations=9)
    b = _results(tmp_path, "crop", 1, settings={**whisper, "whisper_mode": "crop"}, cosines=[0.1] * 6)
    ctrl = _results(tmp_path, "rand", 2, settings={**whisper, "weights": "random-init", "init_seed": 4})
    doc, ctrl_doc = read_rankings(a), read_rankings(ctrl)
    title = describe(doc)
    assert "Whisper trim" in title and "centroid_cosine" in title and "speakers resampled (6/6)" in title
    assert "random-init seed 4" in describe(ctrl_doc)
    fig = plot_profile(doc, control=ctrl_doc)
    ax = fig.axes[0]
    hatched = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_hatch()]
    assert len(hatched) == 3                     # one within-language reference band per unit
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "within-language reference (2 sides)" in labels and "permutation null" in labels
    assert any(t.startswith("control: rand") for t in labels)
    paths = plot_results(a, tmp_path / "fig", compare=b, control=ctrl, formats=("svg",))
    svg = paths[0].read_text()
    assert "Whisper trim" in svg and "Whisper crop" in svg and "language gap" in svg
    # compared panels share y limits although their profiles sit far apart
    from analysis.plots import plot_comparison

    fig = plot_comparison([read_rankings(a), read_rankings(b)])
    top = [ax for ax in fig.axes if "similarity" in ax.get_ylabel()]
    gaps = [ax for ax in fig.axes if "gap" in ax.get_ylabel()]
    assert len(top) == 2 and top[0].get_ylim() == top[1].get_ylim() and gaps[0].get_ylim() == gaps[1].get_ylim()
    assert top[0].get_ylim()[0] < 0.2 and top[0].get_ylim()[1] > 0.9
