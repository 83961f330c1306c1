"""`lam plot`: every figure in PNG and SVG, labelled axes, colour-blind-safe colours, side by side."""

from __future__ import annotations

import matplotlib.image as mpimg
from test_similarity import TRUTH, make_store
from typer.testing import CliRunner

from analysis.errors import RankingsError
from analysis.plots import OKABE_ITO, plot_results
from analysis.similarity import run_similarity


def _results(tmp_path, name, seed):
    make_store(tmp_path / f"{name}s", cosines=TRUTH, n_utt=30, side="source", seed=seed, model_id=name)
    make_store(tmp_path / f"{name}t", cosines=TRUTH, n_utt=30, side="target", seed=seed, model_id=name)
    run_similarity(tmp_path / f"{name}s", tmp_path / f"{name}t", tmp_path / f"{name}_sim", n_bootstrap=20,
                   progress=False)
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
