"""Figures of `lam similarity` results.

* :func:`plot_profile`: similarity against layer, one line per unit with its interval, the
  within-language reference band (between the two languages' speaker-disjoint-half references),
  the permutation null band when the null control ran, the best layer starred and the layers tied
  with it ringed; optionally a control profile (e.g. the same model with random weights) overlaid.
* :func:`plot_gap`: the language gap (reference minus cross-language at the same size) with its
  interval; where the interval reaches 0 the languages are as similar as one language is.
* :func:`plot_heatmap`: layer x unit; :func:`plot_rank_stability`: share of draws in which each
  layer ranks first (``p_best``), tied layers marked.
* :func:`plot_results` (``lam plot``): all of them for one or two result folders side by side,
  compared panels sharing their y limits, PNG and SVG; and the cross-language vowel map's small
  multiples and diagonal-advantage curve (:mod:`analysis.vowel_plots`) when the folder holds one.

Every plot function takes ``ax=`` (draws into it) and returns the matplotlib ``Figure``; nothing
here selects a backend or touches pyplot's global state (figures are made with
``matplotlib.figure.Figure``, which renders files with Agg and shows inline in notebooks). Titles
and legends say the model, the Whisper mode, whether the weights are trained, the metric and the
resampling unit. Okabe-Ito colours plus line styles and markers (colour-blind-safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from phonalign.provenance import write_run_info

from .errors import AnalysisError
from .rankings import read_rankings

#: Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = {"orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000"}
UNIT_COLOURS = {"Utt": OKABE_ITO["blue"], "Vowl": OKABE_ITO["vermillion"], "Cons": OKABE_ITO["green"],
                # the six vowel classes share a panel of their own: the remaining Okabe-Ito hues,
                # each with its own marker so that colour is never the only cue
                "A": OKABE_ITO["orange"], "E": OKABE_ITO["sky"], "@": OKABE_ITO["purple"],
                "i": OKABE_ITO["black"], "O": OKABE_ITO["blue"], "u": OKABE_ITO["green"]}
UNIT_STYLES = {"Utt": "-", "Vowl": "--", "Cons": ":", "A": "-", "E": "--", "@": "-.", "i": ":",
               "O": "-", "u": "--"}
UNIT_MARKERS = {"A": "s", "E": "^", "@": "D", "i": "v", "O": "P", "u": "X"}
HEATMAP_UNITS = ("Utt", "Cons", "A", "E", "@", "i", "O", "u", "Vowl")
METRIC_LABELS = {
    "centroid_cosine": "centroid cosine similarity (unitless, -1..1)",
    "pairwise_cosine": "mean pairwise cosine (unitless, -1..1)",
    "standardized_cosine": "standardised centroid cosine (unitless, -1..1)",
    "coral": "relative CORAL distance (unitless, 0..1, lower = closer)",
    "mmd": "RBF-kernel MMD² (unitless, lower = closer)",
}
GREY = "#7f7f7f"
FORMATS = ("png", "svg")
LAYER_LABEL = "layer (0 = before the first transformer layer)"


def _arr(x: Sequence | None) -> np.ndarray:
    if x is None:
        return np.array([], dtype=float)
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def _axes(ax: Axes | None, size: tuple[float, float] = (5.2, 3.8)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax  # type: ignore[return-value]
    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def describe(doc: Mapping[str, Any]) -> str:
    """``model (Whisper mode, weights) · metric · resampling`` for titles."""
    settings = (doc.get("settings") or {}).get("source") or {}
    bits = []
    if settings.get("whisper_mode"):
        bits.append(f"Whisper {settings['whisper_mode']}")
    if doc.get("untrained") or settings.get("weights") == "random-init":
        bits.append(f"random-init seed {settings.get('init_seed', '?')}")
    model = doc.get("model", "?") + (f" ({', '.join(bits)})" if bits else "")
    rs = doc.get("resampling") or {}
    if rs:
        cl = rs.get("clusters") or {}
        what = "speakers" if rs.get("unit") == "speaker" else "utterances"
        res = f"{what} resampled ({cl.get('source', '?')}/{cl.get('target', '?')})"
    else:
        res = "utterances resampled"
    scope = ", emotion-averaged" if doc.get("emotion") == "averaged" else ""
    return f"{model}{scope}\n{doc.get('metric', '?')} · {res}"


def _ylimits(values: list[np.ndarray]) -> tuple[float, float] | None:
    v = np.concatenate([x[np.isfinite(x)] for x in values if x.size]) if values else np.array([])
    v = v[np.isfinite(v)] if v.size else v
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def _profile_values(doc: Mapping[str, Any], units: Sequence[str], keys: Sequence[str]) -> list[np.ndarray]:
    return [_arr(doc["units"][u].get(k)) for u in units if u in doc["units"] for k in keys]


def plot_profile(doc: Mapping[str, Any], *, ax: Axes | None = None, units: Sequence[str] = ("Utt", "Vowl", "Cons"),
                 control: Mapping[str, Any] | None = None, ylim: tuple[float, float] | None = None) -> Figure:
    """Similarity against layer for one result (see the module docstring).

    Parameters
    ----------
    doc : Mapping
        A rankings document (:func:`analysis.rankings.read_rankings`).
    ax : matplotlib Axes, optional
    units : sequence of str
    control : Mapping, optional
        Rankings of a control (same metric), drawn grey and dashed under the main profile.
    ylim : (float, float), optional
        Shared limits when panels are compared.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes(ax)
    for u in units:
        if u not in doc["units"]:
            continue
        e = doc["units"][u]
        colour = UNIT_COLOURS.get(u, OKABE_ITO["black"])
        x, y = np.asarray(e["layers"]), _arr(e["score"])
        lo, hi = _arr(e.get("ci_low")), _arr(e.get("ci_high"))
        rs, rt = _arr(e.get("reference_source")), _arr(e.get("reference_target"))
        if rs.size and np.isfinite(rs).any():
            ax.fill_between(x, np.fmin(rs, rt), np.fmax(rs, rt), color=colour, alpha=0.12, lw=0, hatch="///",
                            edgecolor=colour)
            ax.plot(x, (rs + rt) / 2, ":", color=colour, lw=1.0)
        if "null_low" in e:
            ax.fill_between(x, _arr(e["null_low"]), _arr(e["null_high"]), color=GREY, alpha=0.18, lw=0)
        if control is not None and u in control.get("units", {}):
            c = control["units"][u]
            ax.plot(x, _arr(c["score"]), "--", color=GREY, lw=1.4, marker="o", ms=2.5)
            if np.isfinite(_arr(c.get("ci_low"))).any():
                ax.fill_between(x, _arr(c["ci_low"]), _arr(c["ci_high"]), color=GREY, alpha=0.15, lw=0)
        ax.plot(x, y, UNIT_STYLES.get(u, "-"), color=colour, marker=UNIT_MARKERS.get(u, "o"), ms=3, lw=1.8,
                label=f"{u} (n={e['n_source']}/{e['n_target']})" + (" FLAT" if e.get("flat") else ""))
        if lo.size and np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=colour, alpha=0.22, lw=0)
        best = e["selections"]["BL"][0]
        ax.plot([best], [y[best]], "*", color=colour, ms=11, mec="black", mew=0.6)
        for t in e.get("tied_with_best") or []:
            if t != best:
                ax.plot([t], [y[t]], "o", mfc="none", mec=colour, ms=8, mew=1.0)
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(METRIC_LABELS.get(doc["metric"], doc["metric"]))
    ax.set_title(describe(doc), fontsize=9)
    ax.grid(alpha=0.3)
    first = next(iter(doc["units"]), None)
    if first is not None:
        ax.set_xticks(np.asarray(doc["units"][first]["layers"]))
    if ylim is not None:
        ax.set_ylim(*ylim)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(facecolor="none", edgecolor=GREY, hatch="///", label="within-language reference (2 sides)"),
                Line2D([], [], ls="", marker="*", color=GREY, mec="black", ms=9, label="best layer"),
                Line2D([], [], ls="", marker="o", mfc="none", mec=GREY, ms=7, label="tied with the best")]
    if any("null_low" in e for e in doc["units"].values()):
        handles.append(Patch(facecolor=GREY, alpha=0.3, label="permutation null"))
    if control is not None:
        handles.append(Line2D([], [], ls="--", color=GREY, marker="o", ms=2.5,
                              label="control: " + describe(control).splitlines()[0]))
    ax.legend(handles=handles, fontsize=6.5, frameon=False, loc="best",
              title=f"{int(round(doc['ci_level'] * 100))}% intervals", title_fontsize=7)
    return fig


def plot_gap(doc: Mapping[str, Any], *, ax: Axes | None = None, units: Sequence[str] = ("Utt", "Vowl", "Cons"),
             ylim: tuple[float, float] | None = None) -> Figure:
    """The language gap per layer with its interval; > 0: the languages differ more than one language does."""
    fig, ax = _axes(ax, (5.2, 2.8))
    ax.axhline(0.0, color="black", lw=0.8)
    for u in units:
        if u not in doc["units"] or "gap" not in doc["units"][u]:
            continue
        e = doc["units"][u]
        colour = UNIT_COLOURS.get(u, OKABE_ITO["black"])
        x, g = np.asarray(e["layers"]), _arr(e["gap"])
        ax.plot(x, g, UNIT_STYLES.get(u, "-"), color=colour, marker=UNIT_MARKERS.get(u, "o"), ms=3, lw=1.5, label=u)
        lo, hi = _arr(e.get("gap_ci_low")), _arr(e.get("gap_ci_high"))
        if lo.size and np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel("language gap (> 0: languages differ)", fontsize=8)
    ax.grid(alpha=0.3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, frameon=False, title="reference minus cross, same sample size", title_fontsize=7)
    return fig


def plot_heatmap(doc: Mapping[str, Any], *, ax: Axes | None = None, vlim: tuple[float, float] | None = None) -> Figure:
    """Layer x unit heatmap (utterances, consonants, the six vowels, all vowels) of one result."""
    fig, ax = _axes(ax, (5.8, 4.2))
    units = [u for u in HEATMAP_UNITS if u in doc["units"]]
    if not units:
        raise AnalysisError("the rankings hold no unit to draw", hint="rerun `lam similarity`")
    layers = doc["units"][units[0]]["layers"]
    m = np.array([_arr(doc["units"][u]["score"]) for u in units])
    kw: dict[str, Any] = {} if vlim is None else {"vmin": vlim[0], "vmax": vlim[1]}
    im = ax.imshow(m, aspect="auto", cmap="viridis" if doc["higher_is_more_similar"] else "viridis_r",
                   interpolation="nearest", **kw)
    ax.set_yticks(range(len(units)), units)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel("unit")
    ax.set_title(describe(doc), fontsize=9)
    for r, u in enumerate(units):  # each unit's best layer; tied layers get a dot
        e = doc["units"][u]
        best = e["selections"]["BL"][0]
        for t in e.get("tied_with_best") or []:
            if t != best:
                ax.text(t, r, "·", ha="center", va="center", color="white", fontsize=14, fontweight="bold")
        ax.text(best, r, "*", ha="center", va="center", color="black", fontsize=13, fontweight="bold",
                path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(METRIC_LABELS.get(doc["metric"], doc["metric"]), fontsize=8)
    return fig


def plot_rank_stability(doc: Mapping[str, Any], *, ax: Axes | None = None,
                        units: Sequence[str] = ("Utt", "Vowl", "Cons")) -> Figure:
    """Share of draws in which each layer ranks first (``p_best``; ``top_k_frequency`` for older files)."""
    fig, ax = _axes(ax, (5.2, 3.6))
    present = [u for u in units if u in doc["units"]]
    width = 0.8 / max(len(present), 1)
    older = not any(doc["units"][u].get("p_best") for u in present)
    for j, u in enumerate(present):
        e = doc["units"][u]
        f = _arr(e["top_k_frequency"] if older else e.get("p_best"))[1:]
        x = np.arange(1, len(f) + 1)
        tied = set(e.get("tied_with_best") or [])
        ax.bar(x + (j - (len(present) - 1) / 2) * width, np.nan_to_num(f), width, color=UNIT_COLOURS.get(u),
               label=u + (" (flat)" if e.get("flat") else ""), edgecolor=["black" if i in tied else "none" for i in x],
               lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("transformer layer")
    what = f"in top {doc['k']}" if older else "ranked first (p_best)"
    ax.set_ylabel(f"share of {doc['n_bootstrap']} draws {what}", fontsize=8)
    ax.set_title(describe(doc), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, title="outlined: tied with the best", title_fontsize=7)
    return fig


def plot_comparison(docs: Sequence[Mapping[str, Any]], *, control: Mapping[str, Any] | None = None,
                    units: Sequence[str] = ("Utt", "Vowl", "Cons")) -> Figure:
    """Profiles (top row) and language gaps (bottom row) of one or more results side by side.

    Panels of one row share their y limits when the results use the same metric, so that
    side-by-side profiles (two models, crop vs trim) can be compared by eye. ``control`` is
    overlaid on the first panel.
    """
    n = len(docs)
    ylim = gap_lim = None
    if len({d["metric"] for d in docs}) == 1:
        vals = [v for d in docs for v in _profile_values(d, units, ("score", "ci_low", "ci_high", "reference_source",
                                                                    "reference_target", "null_low", "null_high"))]
        if control is not None:
            vals += _profile_values(control, units, ("score", "ci_low", "ci_high"))
        ylim = _ylimits(vals)
        gap_lim = _ylimits([v for d in docs for v in _profile_values(d, units, ("gap", "gap_ci_low", "gap_ci_high"))]
                           + [np.zeros(1)])
    has_gap = any("gap" in e for d in docs for e in d["units"].values())
    fig = Figure(figsize=(5.6 * n, 6.6 if has_gap else 4.0))
    axes = fig.subplots(2 if has_gap else 1, n, squeeze=False,
                        gridspec_kw={"height_ratios": [3, 2]} if has_gap else None)
    for j, doc in enumerate(docs):
        plot_profile(doc, ax=axes[0, j], units=units, control=control if j == 0 else None, ylim=ylim)
        if has_gap:
            plot_gap(doc, ax=axes[1, j], units=units, ylim=gap_lim)
    fig.suptitle("Source vs target similarity per layer", fontsize=11)
    fig.set_layout_engine("constrained")
    return fig


def _save(fig: Figure, out: Path, name: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        p = out / f"{name}.{fmt}"
        fig.savefig(p, dpi=150, bbox_inches="tight")
        paths.append(p)
    return paths


def result_figures(result_dir: str | Path, *, compare: str | Path | None = None, control: str | Path | None = None,
                   metric: str | None = None) -> dict[str, Figure]:
    """The figures of one (or two, side by side) `lam similarity` output directories, not saved.

    Parameters as :func:`plot_results`. Returns ``{"similarity_vs_layer": Figure, "heatmap":
    Figure, "rank_stability": Figure}``, plus ``vowel_map_layers`` and ``diagonal_advantage`` when the
    first folder holds a vowel map; a notebook shows them (``display(fig)``), :func:`plot_results`
    saves them.
    """
    dirs = [Path(result_dir)] + ([Path(compare)] if compare else [])
    name = f"rankings_{metric}.json" if metric else "rankings.json"
    docs = [read_rankings(d / name) for d in dirs]
    ctrl = read_rankings(Path(control) / name) if control else None
    for d, doc in zip(dirs, docs, strict=True):
        if not doc["units"]:
            raise AnalysisError("the rankings hold no unit to draw", path=d / name, hint="rerun `lam similarity`")
    if ctrl is not None and ctrl.get("metric") != docs[0].get("metric"):
        raise AnalysisError(f"the control's metric ({ctrl.get('metric')}) is not the result's "
                            f"({docs[0].get('metric')})", path=Path(control or "") / name,
                            hint="run `lam similarity` on the control with the same --metric")
    n = len(docs)
    vlim = None
    if len({d["metric"] for d in docs}) == 1:
        vlim = _ylimits([v for d in docs for v in _profile_values(d, HEATMAP_UNITS, ("score",))])
    figures = {"similarity_vs_layer": plot_comparison(docs, control=ctrl)}
    fig = Figure(figsize=(5.8 * n, 4.2), layout="constrained")
    for j, ax in enumerate(fig.subplots(1, n, squeeze=False)[0]):
        plot_heatmap(docs[j], ax=ax, vlim=vlim)
    figures["heatmap"] = fig
    fig = Figure(figsize=(5.2 * n, 3.6), layout="constrained")
    for j, ax in enumerate(fig.subplots(1, n, squeeze=False)[0]):
        plot_rank_stability(docs[j], ax=ax)
    figures["rank_stability"] = fig
    if (dirs[0] / "vowel_map.parquet").is_file():
        figures.update(_vowel_map_figures(dirs[0], metric or docs[0]["metric"]))
    return figures


def plot_results(result_dir: str | Path, out_dir: str | Path | None = None, *, compare: str | Path | None = None,
                 control: str | Path | None = None, metric: str | None = None,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """`lam plot`: every figure of one (or two, side by side) `lam similarity` output directories.

    Parameters
    ----------
    result_dir : str or Path
        Output of `lam similarity`.
    out_dir : str or Path, optional
        Where figures go (default ``result_dir/figures``).
    compare : str or Path, optional
        A second result directory (e.g. another model or Whisper mode), drawn beside the first
        with the same y limits.
    control : str or Path, optional
        A control result (e.g. `lam features --random-init` stores compared the same way), overlaid
        on the first result's profile in grey.
    metric : str, optional
        Which ``rankings_<metric>.json`` to draw (default: ``rankings.json``).

    Returns
    -------
    list of Path
        ``similarity_vs_layer``, ``heatmap``, ``rank_stability`` in each format; and when the first
        folder holds a vowel map (``lam similarity --vowel-map``), ``vowel_map_layers`` and
        ``diagonal_advantage`` of the metric drawn (the figures of :func:`result_figures`).
    """
    figures = result_figures(result_dir, compare=compare, control=control, metric=metric)
    out = Path(out_dir) if out_dir else Path(result_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = [p for name, fig in figures.items() for p in _save(fig, out, name, formats)]
    dirs = [Path(result_dir)] + ([Path(compare)] if compare else [])
    write_run_info(out, step="plot", config={"results": [str(d) for d in dirs], "control": str(control or ""),
                                              "rankings": f"rankings_{metric}.json" if metric else "rankings.json",
                                              "formats": list(formats)})
    return paths


def _vowel_map_figures(result_dir: Path, metric: str) -> dict[str, Figure]:
    from .vowel_map import read_diagonal_advantage, read_vowel_map
    from .vowel_plots import diagonal_advantage_curve, vowel_map_small_multiples

    table, adv = read_vowel_map(result_dir), read_diagonal_advantage(result_dir)
    if metric not in set(table["metric"].to_pylist()):
        return {}
    return {"vowel_map_layers": vowel_map_small_multiples(table, metric=metric, advantage=adv),
            "diagonal_advantage": diagonal_advantage_curve(adv, metric=metric)}


def plot_dir(result_dir: str | Path, out_dir: str | Path | None = None, **kwargs: Any) -> list[Path]:
    """Alias of :func:`plot_results` (the pipeline's name for it)."""
    return plot_results(result_dir, out_dir, **kwargs)
