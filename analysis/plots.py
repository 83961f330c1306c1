"""Figures of `lam similarity` results: similarity against layer with confidence bands (one line per
unit, one panel per model, as the paper's figure 1 shows WavLM beside Whisper), a layer x unit
heatmap, and rank stability. PNG and SVG; Okabe-Ito colours and viridis (colour-blind-safe);
matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402

from phonalign.provenance import write_run_info  # noqa: E402

from .errors import AnalysisError  # noqa: E402
from .rankings import read_rankings  # noqa: E402

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
    "coral": "CORAL distance ||Cs-Ct||²/4d² (feature units², lower = closer)",
    "mmd": "RBF-kernel MMD² (unitless, lower = closer)",
}
FORMATS = ("png", "svg")


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def _load(path) -> dict:
    return read_rankings(path)


def _save(fig, out: Path, name: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        p = out / f"{name}.{fmt}"
        fig.savefig(p, dpi=150, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def _title(doc: dict) -> str:
    scope = ", emotion-averaged" if doc.get("emotion") == "averaged" else ""
    return f"{doc['model']}{scope}"


def plot_layer_curves(docs: Sequence[dict], out: Path, *, units=("Utt", "Vowl", "Cons"),
                      formats=FORMATS) -> list[Path]:
    """Similarity against layer, CI bands, one line per unit, one panel per model (side by side)."""
    fig, axes = plt.subplots(1, len(docs), figsize=(5.2 * len(docs), 3.8), squeeze=False, sharey=False)
    for ax, doc in zip(axes[0], docs):
        for u in units:
            if u not in doc["units"]:
                continue
            e = doc["units"][u]
            x, y = np.asarray(e["layers"]), _arr(e["score"])
            lo, hi = _arr(e["ci_low"]), _arr(e["ci_high"])
            ax.plot(x, y, UNIT_STYLES.get(u, "-"), color=UNIT_COLOURS.get(u, OKABE_ITO["black"]),
                    marker=UNIT_MARKERS.get(u, "o"), ms=3, lw=1.8, label=f"{u} (n={e['n_source']}/{e['n_target']})")
            if np.isfinite(lo).any():
                ax.fill_between(x, lo, hi, color=UNIT_COLOURS.get(u, OKABE_ITO["black"]), alpha=0.2, lw=0)
            best = e["selections"]["BL"][0]
            ax.plot([best], [y[best]], "*", color=UNIT_COLOURS.get(u), ms=11, mec="black", mew=0.6)
        ax.set_xlabel("layer (0 = before the first transformer layer)")
        ax.set_ylabel(METRIC_LABELS.get(doc["metric"], doc["metric"]))
        ax.set_title(_title(doc), fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xticks(np.asarray(doc["units"][next(iter(doc["units"]))]["layers"]))
        ax.legend(fontsize=8, frameon=False, title=f"{int(doc['ci_level'] * 100)}% CI bands, * = best layer",
                  title_fontsize=8)
    fig.suptitle("Source vs target similarity per layer", fontsize=11)
    return _save(fig, out, "similarity_vs_layer", formats)


def plot_heatmap(docs: Sequence[dict], out: Path, *, formats=FORMATS) -> list[Path]:
    """Layer x unit heatmap (utterances, consonants, the six vowels, all vowels), one per model."""
    fig, axes = plt.subplots(1, len(docs), figsize=(5.8 * len(docs), 4.2), squeeze=False, layout="constrained")
    for ax, doc in zip(axes[0], docs):
        units = [u for u in HEATMAP_UNITS if u in doc["units"]]
        layers = doc["units"][units[0]]["layers"]
        m = np.array([_arr(doc["units"][u]["score"]) for u in units])
        im = ax.imshow(m, aspect="auto", cmap="viridis" if doc["higher_is_more_similar"] else "viridis_r",
                       interpolation="nearest")
        ax.set_yticks(range(len(units)), units)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_xlabel("layer (0 = before the first transformer layer)")
        ax.set_ylabel("unit")
        ax.set_title(_title(doc), fontsize=10)
        for r, u in enumerate(units):  # mark each unit's best layer
            best = doc["units"][u]["selections"]["BL"][0]
            ax.text(best, r, "*", ha="center", va="center", color="black", fontsize=13, fontweight="bold",
                    path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])
        cb = fig.colorbar(im, ax=ax)
        cb.set_label(METRIC_LABELS.get(doc["metric"], doc["metric"]), fontsize=8)
    return _save(fig, out, "heatmap", formats)


def plot_rank_stability(docs: Sequence[dict], out: Path, *, units=("Utt", "Vowl", "Cons"),
                        formats=FORMATS) -> list[Path]:
    """Share of bootstrap draws in which each layer is among the k most similar, per unit."""
    fig, axes = plt.subplots(1, len(docs), figsize=(5.2 * len(docs), 3.6), squeeze=False)
    for ax, doc in zip(axes[0], docs):
        present = [u for u in units if u in doc["units"]]
        width = 0.8 / max(len(present), 1)
        for j, u in enumerate(present):
            f = _arr(doc["units"][u]["top_k_frequency"])[1:]
            x = np.arange(1, len(f) + 1)
            ax.bar(x + (j - (len(present) - 1) / 2) * width, f, width, color=UNIT_COLOURS.get(u), label=u,
                   edgecolor="black", lw=0.3)
        ax.set_ylim(0, 1)
        ax.set_xlabel("transformer layer")
        ax.set_ylabel(f"share of {doc['n_bootstrap']} bootstrap draws in top {doc['k']} (0..1)")
        ax.set_title(_title(doc), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, "rank_stability", formats)


def plot_results(result_dir, out_dir=None, *, compare=None, metric: str | None = None,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """`lam plot`: every figure of one (or two, side by side) `lam similarity` output directories.

    Parameters
    ----------
    result_dir : str or Path
        Output of `lam similarity`.
    out_dir : str or Path, optional
        Where figures go (default ``result_dir/figures``).
    compare : str or Path, optional
        A second result directory (e.g. another model), drawn beside the first.
    metric : str, optional
        Which ``rankings_<metric>.json`` to draw (default: ``rankings.json``).
    """
    dirs = [Path(result_dir)] + ([Path(compare)] if compare else [])
    name = f"rankings_{metric}.json" if metric else "rankings.json"
    docs = [_load(d / name) for d in dirs]
    if not docs[0]["units"]:
        raise AnalysisError("the rankings hold no unit to draw", path=dirs[0] / name, hint="rerun `lam similarity`")
    out = Path(out_dir) if out_dir else dirs[0] / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = plot_layer_curves(docs, out, formats=formats)
    paths += plot_heatmap(docs, out, formats=formats)
    paths += plot_rank_stability(docs, out, formats=formats)
    write_run_info(out, step="plot", config={"results": [str(d) for d in dirs], "rankings": name,
                                              "formats": list(formats)})
    return paths


def plot_dir(result_dir, out_dir=None, **kwargs) -> list[Path]:
    """Alias of :func:`plot_results` (the pipeline's name for it)."""
    return plot_results(result_dir, out_dir, **kwargs)
