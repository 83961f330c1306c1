"""Figures of vowels as phoneticians draw them, and of their geometry inside a speech model.

Every function draws with matplotlib's object API into an ``ax=`` (one panel) or ``fig=`` (small
multiples) it is given, or into a new :class:`matplotlib.figure.Figure`, and returns the Figure;
none selects a backend, so notebooks show them inline and scripts save them with
``fig.savefig``. Colours are the Okabe-Ito hues of :mod:`analysis.plots` (the same class keeps the
same colour and marker in every figure), and the two languages differ by line style and marker
fill, so that colour is never the only cue.

- :func:`vowel_chart`: the classic F1/F2 chart (F2 on a reversed x axis, F1 on a reversed y axis),
  tokens, class means, ellipses at one standard deviation;
- :func:`vowel_chart_panels`: the chart as small multiples, one panel per language or per emotion;
- :func:`emotion_measures`: F0, intensity and duration per vowel class and emotion, one panel per
  measure and language;
- :func:`pca_small_multiples`: per layer, vowel vectors projected on two principal components,
  coloured by class, marked by language;
- :func:`probe_curve`: linear-probe balanced accuracy per layer, within and across languages, with
  chance.

- :func:`vowel_map_small_multiples`: the cross-language vowel map (``lam similarity --vowel-map``,
  :mod:`analysis.vowel_map`), one 6 x 6 panel per layer, the closest target class of each source
  class marked;
- :func:`diagonal_advantage_curve`: the diagonal advantage per layer with its interval, 0, the
  peak and the layers tied with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Rectangle

from phonalign.fsutil import atomic_path
from phonalign.records import EMOTIONS, VOWEL_CLASSES

from .acoustics import emotion_summary
from .geometry import ProbeScore, Projection, probe_summary

#: Okabe & Ito (2008); the same class -> colour / marker mapping as analysis.plots.
CLASS_COLOURS = {"A": "#E69F00", "E": "#56B4E9", "@": "#CC79A7", "i": "#000000", "O": "#0072B2", "u": "#009E73"}
CLASS_MARKERS = {"A": "s", "E": "^", "@": "D", "i": "v", "O": "P", "u": "X"}
LANGUAGE_STYLES = {"en": "-", "zh": "--"}
LANGUAGE_NAMES = {"en": "English", "zh": "Mandarin"}
EMOTION_COLOURS = {"Neutral": "#999999", "Happiness": "#E69F00", "Anger": "#D55E00", "Sadness": "#0072B2"}
MEASURE_LABELS = {"f0": "mean F0 (Hz)", "intensity": "mean intensity (dB)", "duration": "duration (ms)"}


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.get_figure()
        assert isinstance(fig, Figure)  # an Axes always belongs to a Figure (SubFigure is not used here)
        return fig, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table[name].to_pylist(), dtype=object if name in ("unit_class", "language", "emotion",
                                                                           "speaker", "status") else float)


def _sd_ellipse(x: np.ndarray, y: np.ndarray, **kwargs) -> Ellipse | None:
    """Ellipse at one standard deviation of the (x, y) cloud (its covariance's eigen-axes)."""
    if len(x) < 3:
        return None
    cov = np.cov(np.vstack([x, y]))
    vals, vecs = np.linalg.eigh(cov)
    vals = vals.clip(min=0)
    angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
    return Ellipse((float(x.mean()), float(y.mean())), 2 * np.sqrt(vals[1]), 2 * np.sqrt(vals[0]), angle=angle,
                   **kwargs)


def vowel_chart(table: pa.Table, *, ax: Axes | None = None, languages: Sequence[str] | None = None,
                emotion: str | None = None, normalised: bool = False, points: bool = True,
                ellipses: bool = True, title: str | None = None) -> Figure:
    """The F1/F2 vowel chart: F2 on a reversed x axis, F1 on a reversed y axis (front-close top left).

    Parameters
    ----------
    table : acoustics table (``lam acoustics``), one row per vowel segment.
    ax : draw here (default: a new Figure).
    languages : languages to draw, overlaid (default: every language in the table).
    emotion : only segments of this emotion.
    normalised : plot the Lobanov ``F1_50_z`` / ``F2_50_z`` columns (unitless) instead of Hz.
    points : draw every token (small, translucent).
    ellipses : one-standard-deviation ellipse per class and language.

    Midpoint values (``F1_50``, ``F2_50``) of segments measured ``ok`` or ``no_voicing``.
    """
    fig, ax = _new_axes(ax, (6.0, 5.0))
    suffix = "_z" if normalised else ""
    f1, f2 = _column(table, f"F1_50{suffix}"), _column(table, f"F2_50{suffix}")
    cls, lang, status = _column(table, "unit_class"), _column(table, "language"), _column(table, "status")
    ok = np.isin(status, ["ok", "no_voicing"]) & np.isfinite(f1) & np.isfinite(f2)
    if emotion is not None:
        ok &= _column(table, "emotion") == emotion
    langs = list(languages) if languages is not None else sorted(set(lang[ok]))
    for li, lg in enumerate(langs):
        style = LANGUAGE_STYLES.get(lg, [":", "-."][li % 2])
        for c in VOWEL_CLASSES:
            m = ok & (lang == lg) & (cls == c)
            if not m.any():
                continue
            colour = CLASS_COLOURS[c]
            if points:
                ax.scatter(f2[m], f1[m], s=6, color=colour, alpha=0.18, lw=0, marker=CLASS_MARKERS[c])
            if ellipses:
                e = _sd_ellipse(f2[m], f1[m], fill=False, ec=colour, lw=1.4, ls=style)
                if e is not None:
                    ax.add_patch(e)
            ax.plot([f2[m].mean()], [f1[m].mean()], marker=CLASS_MARKERS[c], ms=9, color=colour,
                    mfc=colour if li == 0 else "white", mec=colour, mew=1.6, ls="none")
            ax.annotate(c, (f2[m].mean(), f1[m].mean()), xytext=(6, 4), textcoords="offset points", fontsize=9,
                        color=colour, fontweight="bold")
    # shared axes (small multiples) are inverted once, by the first panel drawn
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    unit = "Lobanov z" if normalised else "Hz"
    ax.set_xlabel(f"F2 ({unit}), midpoint")
    ax.set_ylabel(f"F1 ({unit}), midpoint")
    ax.grid(alpha=0.25)
    handles = [Line2D([], [], color="0.3", ls=LANGUAGE_STYLES.get(lg, ":"), marker="o",
                      mfc="0.3" if i == 0 else "white", label=LANGUAGE_NAMES.get(lg, lg)) for i, lg in enumerate(langs)]
    if handles:
        ax.legend(handles=handles, fontsize=8, frameon=False, loc="lower left",
                  title="ellipses: 1 SD" if ellipses else None, title_fontsize=8)
    ax.set_title(title if title is not None else
                 " / ".join(LANGUAGE_NAMES.get(lg, lg) for lg in langs) + (f", {emotion}" if emotion else ""),
                 fontsize=10)
    return fig


def vowel_chart_panels(table: pa.Table, *, fig: Figure | None = None, by: str = "language",
                       normalised: bool = False, points: bool = True) -> Figure:
    """The vowel chart as small multiples: ``by="language"`` (one panel each) or ``"emotion"``.

    With ``by="emotion"`` each panel is one emotion, both languages overlaid (class means and
    ellipses; tokens off by default in that view would hide the shift, so ``points`` applies too).
    Panels share their axes so that positions compare across panels.
    """
    if by not in ("language", "emotion"):
        raise ValueError(f"by={by!r}: use 'language' or 'emotion'")
    if by == "language":
        keys = sorted(set(_column(table, "language")))
    else:
        present = set(e for e in _column(table, "emotion") if e)
        keys = [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))
    n = max(len(keys), 1)
    ncol = min(n, 4 if by == "emotion" else 2)
    nrow = -(-n // ncol)
    if fig is None:
        fig = Figure(figsize=(4.6 * ncol, 4.0 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys, strict=False):
        if by == "language":
            vowel_chart(table, ax=ax, languages=[key], normalised=normalised, points=points,
                        title=LANGUAGE_NAMES.get(key, key))
        else:
            vowel_chart(table, ax=ax, emotion=key, normalised=normalised, points=points, title=key)
    return fig


def emotion_measures(table: pa.Table, *, fig: Figure | None = None,
                     measures: Sequence[str] = ("f0", "intensity", "duration")) -> Figure:
    """F0, intensity and duration per vowel class and emotion: rows = measures, columns = languages.

    Markers are the mean over speakers of each speaker's mean; the bar through each marker spans
    the lowest to the highest speaker mean (the speaker is the independent unit).
    """
    cells = emotion_summary(table)
    langs = sorted({c.language for c in cells})
    emotions = [e for e in EMOTIONS if any(c.emotion == e for c in cells)]
    if fig is None:
        fig = Figure(figsize=(5.2 * max(len(langs), 1), 2.8 * len(measures)), layout="constrained")
    axes = fig.subplots(len(measures), max(len(langs), 1), squeeze=False, sharex=True)
    width = 0.8 / max(len(emotions), 1)
    for j, lg in enumerate(langs):
        for i, meas in enumerate(measures):
            ax = axes[i, j]
            scale = 1000.0 if meas == "duration" else 1.0
            for k, emo in enumerate(emotions):
                xs, ys, lo, hi = [], [], [], []
                for ci, c in enumerate(VOWEL_CLASSES):
                    cell = next((x for x in cells if (x.language, x.unit_class, x.emotion) == (lg, c, emo)), None)
                    if cell is None:
                        continue
                    v, (a, b) = getattr(cell, meas), getattr(cell, f"{meas}_range")
                    xs.append(ci + (k - (len(emotions) - 1) / 2) * width)
                    ys.append(v * scale)
                    lo.append((v - a) * scale)
                    hi.append((b - v) * scale)
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=4, color=EMOTION_COLOURS.get(emo, "0.2"), capsize=2,
                            lw=1, label=emo)
            ax.set_xticks(range(len(VOWEL_CLASSES)), list(VOWEL_CLASSES))
            ax.set_ylabel(MEASURE_LABELS.get(meas, meas), fontsize=8)
            ax.grid(axis="y", alpha=0.25)
            if i == 0:
                ax.set_title(LANGUAGE_NAMES.get(lg, lg), fontsize=10)
            if i == len(measures) - 1:
                ax.set_xlabel("vowel class")
    if langs:
        axes[0, -1].legend(fontsize=7, frameon=False, title="mean of speaker means; bar: speaker range",
                           title_fontsize=7)
    return fig


def pca_small_multiples(proj: Projection, *, fig: Figure | None = None, layers: Sequence[int] | None = None,
                        ncol: int = 4) -> Figure:
    """Per layer, vowel vectors on their first two principal components (both languages fitted together).

    Colour and marker = vowel class; filled = first language, hollow = second; the class means are
    drawn large. Axis titles give the explained-variance ratio of PC1 and PC2.
    """
    layers = list(proj.layers) if layers is None else list(layers)
    n = len(layers)
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    if fig is None:
        fig = Figure(figsize=(2.9 * ncol, 2.7 * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    langs = sorted(set(proj.language))
    for ax, layer in zip(axes.flat, layers, strict=False):
        li = proj.layers.index(layer)
        xy = proj.coords[li]
        for k, lg in enumerate(langs):
            for c in VOWEL_CLASSES:
                m = (proj.language == lg) & (proj.unit_class == c)
                if not m.any():
                    continue
                colour = CLASS_COLOURS[c]
                ax.scatter(xy[m, 0], xy[m, 1], s=5, marker=CLASS_MARKERS[c], color=colour if k == 0 else "none",
                           edgecolors=colour, linewidths=0.5, alpha=0.35)
                ax.plot([xy[m, 0].mean()], [xy[m, 1].mean()], marker=CLASS_MARKERS[c], ms=8, color=colour,
                        mfc=colour if k == 0 else "white", mec="black" if k == 0 else colour, mew=1.0, ls="none")
        ev = proj.explained[li]
        ax.set_title(f"layer {layer} (PC1 {100 * ev[0]:.0f}%, PC2 {100 * ev[1]:.0f}%)", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker=CLASS_MARKERS[c], color=CLASS_COLOURS[c], ls="none", label=c)
               for c in VOWEL_CLASSES if (proj.unit_class == c).any()]
    handles += [Line2D([], [], marker="o", color="0.3", mfc="0.3" if k == 0 else "white", ls="none",
                       label=LANGUAGE_NAMES.get(lg, lg)) for k, lg in enumerate(langs)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle("Vowel segment vectors per layer, PCA fitted on both languages (large: class means)", fontsize=9)
    return fig


def probe_curve(scores: Sequence[ProbeScore], *, ax: Axes | None = None) -> Figure:
    """Balanced accuracy of the vowel-class probe against layer, with fold range and chance.

    One line per (train -> test) language pair: the same language (GroupKFold by speaker) solid,
    across languages dashed; the band spans the lowest to highest fold (or test speaker); the grey
    dotted line is chance (1 / number of classes).
    """
    fig, ax = _new_axes(ax, (6.0, 3.8))
    summary = probe_summary(scores)
    pairs = sorted({(s.train_language, s.test_language) for s in summary})
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7"]
    for k, (a, b) in enumerate(pairs):
        rows = sorted((s for s in summary if (s.train_language, s.test_language) == (a, b)), key=lambda s: s.layer)
        x = np.array([s.layer for s in rows])
        y = np.array([s.balanced_accuracy for s in rows])
        lo = np.array([s.fold_min for s in rows])
        hi = np.array([s.fold_max for s in rows])
        label = (f"{LANGUAGE_NAMES.get(a, a)} (speaker-disjoint folds)" if a == b
                 else f"{LANGUAGE_NAMES.get(a, a)} -> {LANGUAGE_NAMES.get(b, b)}")
        ax.plot(x, y, "-" if a == b else "--", marker="o", ms=3, color=colours[k % len(colours)], label=label)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=colours[k % len(colours)], alpha=0.15, lw=0)
    chance = sorted({s.chance for s in summary})
    for c in chance:
        ax.axhline(c, color="0.5", ls=":", lw=1)
    if chance:
        ax.text(ax.get_xlim()[0], chance[-1], f" chance {', '.join(f'{c:.2f}' for c in chance)}", fontsize=7,
                color="0.4", va="bottom")
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer (0 = before the first transformer layer)")
    ax.set_ylabel("vowel-class probe balanced accuracy (0-1)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, frameon=False, title="band: lowest to highest fold / test speaker", title_fontsize=7)
    return fig


def _metric_rows(table: pa.Table, metric: str | None) -> tuple[str, list[dict]]:
    rows = table.to_pylist()
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    if not metrics:
        raise ValueError("the vowel map table is empty")
    m = metric or metrics[0]
    if m not in metrics:
        raise ValueError(f"metric {m!r} is not in the vowel map (it has {', '.join(metrics)})")
    return m, [r for r in rows if r["metric"] == m]


def vowel_map_small_multiples(table: pa.Table, *, metric: str | None = None, layers: Sequence[int] | None = None,
                              advantage: pa.Table | None = None, fig: Figure | None = None,
                              ncols: int = 4) -> Figure:
    """The cross-language vowel map as small multiples: one 6 x 6 panel per layer.

    Rows are the source language's vowel classes, columns the target's; the colour is the score
    (one scale for every panel; for distances the scale is reversed, so that brighter is always
    more similar); a dot marks the closest target class of each source class, so that dots on the
    diagonal mean class identity is shared.

    Parameters
    ----------
    table : ``vowel_map.parquet`` (:func:`analysis.vowel_map.read_vowel_map`).
    metric : which metric (default: the table's first).
    layers : which layers (default: all).
    advantage : ``diagonal_advantage.parquet``; when given, each panel's title has the layer's
        diagonal advantage with its interval, and the peak is starred.
    fig : draw here (default: a new Figure).
    ncols : panels per row.
    """
    from .plots import METRIC_LABELS

    m, rows = _metric_rows(table, metric)
    higher = bool(rows[0]["higher_is_more_similar"])
    all_layers = sorted({r["layer"] for r in rows})
    shown = [layer for layer in (layers if layers is not None else all_layers) if layer in all_layers]
    c = len(VOWEL_CLASSES)
    grid = {layer: np.full((c, c), np.nan) for layer in shown}
    for r in rows:
        if r["layer"] in grid and r["score"] is not None:
            i, j = VOWEL_CLASSES.index(r["source_class"]), VOWEL_CLASSES.index(r["target_class"])
            grid[r["layer"]][i, j] = r["score"]
    adv = {}
    if advantage is not None:
        adv = {r["layer"]: r for r in advantage.to_pylist() if r["metric"] == m}
    values = np.concatenate([g[np.isfinite(g)] for g in grid.values()]) if grid else np.zeros(0)
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    ncols = max(1, min(ncols, len(shown)))
    nrows = int(np.ceil(len(shown) / ncols))
    if fig is None:
        fig = Figure(figsize=(2.55 * ncols + 0.9, 2.55 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    src_lang, tgt_lang = rows[0].get("source_language") or "source", rows[0].get("target_language") or "target"
    image = None
    for ax, layer in zip(axes, shown, strict=False):
        g = grid[layer]
        image = ax.imshow(g, cmap="viridis" if higher else "viridis_r", vmin=vmin, vmax=vmax)
        closest = np.full(c, -1)
        for i in range(c):
            if np.isfinite(g[i]).any():
                closest[i] = int(np.nanargmax(g[i]) if higher else np.nanargmin(g[i]))
                ax.plot([closest[i]], [i], "o", ms=4.5, color="white", mec="black", mew=0.6)
        for k in range(c):  # the diagonal: same class in both languages
            ax.add_patch(Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, ec="white", lw=0.8, ls=":"))
        ax.set_xticks(range(c), VOWEL_CLASSES, fontsize=7)
        ax.set_yticks(range(c), VOWEL_CLASSES, fontsize=7)
        title = f"layer {layer}"
        a = adv.get(layer)
        if a is not None and a["advantage"] is not None:
            interval = "" if a["ci_low"] is None else f" [{a['ci_low']:.2g}, {a['ci_high']:.2g}]"
            title += ("  \u2605" if a["is_peak"] else "") + f"\nadvantage {a['advantage']:.2g}{interval}"
        ax.set_title(title, fontsize=8)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    for k, ax in enumerate(axes[:len(shown)]):  # axis names once per row and column
        if k + ncols >= len(shown):
            ax.set_xlabel(f"{LANGUAGE_NAMES.get(tgt_lang, tgt_lang)} vowel class", fontsize=7)
        if k % ncols == 0:
            ax.set_ylabel(f"{LANGUAGE_NAMES.get(src_lang, src_lang)} vowel class", fontsize=7)
    if image is not None:
        cb = fig.colorbar(image, ax=list(axes[:len(shown)]), shrink=0.8)
        cb.set_label(METRIC_LABELS.get(m, m), fontsize=8)
    fig.suptitle(f"Cross-language vowel map ({m}); dot: closest {LANGUAGE_NAMES.get(tgt_lang, tgt_lang)} class "
                 f"of each {LANGUAGE_NAMES.get(src_lang, src_lang)} class", fontsize=9)
    return fig


def diagonal_advantage_curve(advantage: pa.Table, *, metric: str | None = None, ax: Axes | None = None) -> Figure:
    """The diagonal advantage per layer with its interval (``diagonal_advantage.parquet``).

    Positive: a vowel class is more similar to the same class of the other language than to the
    other classes; an interval reaching 0 is a tie (no shared class identity the data can show).
    The peak layer is starred, the layers tied with it ringed.
    """
    from .plots import LAYER_LABEL

    m, rows = _metric_rows(advantage, metric)
    rows = sorted(rows, key=lambda r: r["layer"])
    fig, ax = _new_axes(ax, (6.0, 3.8))
    x = np.asarray([r["layer"] for r in rows])

    def col(name: str) -> np.ndarray:
        return np.asarray([np.nan if r[name] is None else r[name] for r in rows], dtype=float)

    y, lo, hi = col("advantage"), col("ci_low"), col("ci_high")
    colour = "#D55E00"
    ax.axhline(0.0, color="#7f7f7f", lw=1.0, ls="--")
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=colour, alpha=0.22, lw=0, label="interval")
    ax.plot(x, y, "-o", color=colour, ms=3.5, lw=1.8, label="diagonal advantage")
    for r, yy in zip(rows, y, strict=True):
        if r["is_peak"]:
            ax.plot([r["layer"]], [yy], "*", color=colour, ms=12, mec="black", mew=0.6, label="peak")
        elif r["tied_with_peak"]:
            ax.plot([r["layer"]], [yy], "o", mfc="none", mec=colour, ms=9, mew=1.1)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=colour, ms=8, label="tied with the peak"))
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="best")
    ax.set_xticks(x)
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel("same-class minus different-class\n(" + ("similarity" if m in ("centroid_cosine",
                  "pairwise_cosine", "standardized_cosine") else "distance, sign flipped") + ")", fontsize=8)
    ax.set_title(f"Diagonal advantage of the vowel map ({m})", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


# ------------------------------------------------------------------------------------------ saving


def save_figure(fig: Figure, stem: Path, *, formats: Sequence[str] = ("png", "svg"), dpi: int = 120) -> list[Path]:
    """Save ``fig`` as ``stem.<format>`` for each format (atomic writes); return the paths."""
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(path)
    return out


def save_acoustic_figures(table: pa.Table, out_dir: str | Path) -> list[Path]:
    """The vowel chart per language, per emotion (both languages), Lobanov-normalised if present, and
    the emotion measures, as PNG + SVG under ``out_dir``."""
    out = Path(out_dir)
    paths = save_figure(vowel_chart_panels(table, by="language"), out / "vowel_chart")
    paths += save_figure(vowel_chart(table, points=False, title="English and Mandarin overlaid"),
                         out / "vowel_chart_overlaid")
    if "F1_50_z" in table.column_names:
        paths += save_figure(vowel_chart_panels(table, by="language", normalised=True), out / "vowel_chart_lobanov")
    if any(_column(table, "emotion")):
        paths += save_figure(vowel_chart_panels(table, by="emotion", points=False), out / "vowel_chart_by_emotion")
        paths += save_figure(emotion_measures(table), out / "emotion_measures")
    return paths


def save_geometry_figures(proj: Projection, scores: Sequence[ProbeScore], out_dir: str | Path) -> list[Path]:
    """PCA small multiples and the probe curve as PNG + SVG under ``out_dir``."""
    out = Path(out_dir)
    return save_figure(pca_small_multiples(proj), out / "pca_layers") + save_figure(probe_curve(scores),
                                                                                      out / "probe_accuracy")


def save_vowel_map_figures(table: pa.Table, advantage: pa.Table, out_dir: str | Path, *,
                           metric: str | None = None) -> list[Path]:
    """The vowel map's small multiples and the diagonal-advantage curve as PNG + SVG under ``out_dir``."""
    out = Path(out_dir)
    return (save_figure(vowel_map_small_multiples(table, metric=metric, advantage=advantage), out / "vowel_map_layers")
            + save_figure(diagonal_advantage_curve(advantage, metric=metric), out / "diagonal_advantage"))
