"""Results across strategies and seeds: tables (CSV, Markdown), figures, the CORAL ablation.

Reads the ``metrics.json`` of every run under ``RUNS/<strategy>/seed<k>/`` and writes:

* ``results.csv`` / ``results.md``: one row per strategy, target-test UAR mean +- std over seeds
  (sample std), per-seed values, per-class recall, source-dev UAR, layers, lambda -- like the
  paper's tables;
* ``coral.csv`` / part of ``results.md``: CORAL distance between source and target test
  representations at the anchored layers, with anchoring and with lambda = 0 on the same layers
  (the ``-nocoral`` twin), and their ratio;
* ``figures/uar.{png,svg}`` and ``figures/confusion.{png,svg}`` (one panel per strategy, counts
  summed over seeds, colour = row share, i.e. recall): :func:`uar_figure` and
  :func:`confusion_figure` return the matplotlib ``Figure`` (no backend is chosen here);
  :func:`write_report` saves them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phonalign.fsutil import atomic_path, atomic_write_text
from phonalign.records import EMOTIONS

from .config import twin_of
from .evaluate import mean_std

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def collect(runs_dir: str | Path) -> dict[str, list[dict]]:
    """``{strategy: [metrics of each seed, by seed]}`` from ``runs_dir/<strategy>/seed*/metrics.json``."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(runs_dir).glob("*/seed*/metrics.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        out.setdefault(m["strategy"], []).append(m)
    for runs in out.values():
        runs.sort(key=lambda m: m["seed"])
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.2f}"


def summarise(runs: dict[str, list[dict]], order: Sequence[str] | None = None) -> list[dict]:
    """One row per strategy (in ``order``, then the rest): UAR mean/std and the rest, as numbers."""
    names = [s for s in (order or []) if s in runs] + sorted(s for s in runs if s not in (order or []))
    rows = []
    for name in names:
        ms = runs[name]
        scored = [m for m in ms if m.get("target_test")]
        uars = [m["target_test"]["uar"] for m in scored]
        mean, std = mean_std(uars)
        dev_mean, dev_std = mean_std(m["source_dev"]["uar"] for m in ms)
        recall = {}
        for e in EMOTIONS:
            vals = [m["target_test"]["recall"][e] for m in scored if m["target_test"]["recall"][e] is not None]
            recall[e] = mean_std(vals)[0] if vals else None
        coral = [float(np.mean(m["coral_distance"]["adapted"])) for m in scored if m.get("coral_distance")]
        rows.append({
            "strategy": name, "layers": ms[0]["layers"], "coral": ms[0]["coral"], "lambda": ms[0]["lambda"],
            "n_seeds": len(ms), "seeds": [m["seed"] for m in ms], "uar_mean": mean, "uar_std": std,
            "uar_per_seed": uars, "source_dev_uar_mean": dev_mean, "source_dev_uar_std": dev_std,
            "recall": recall, "coral_distance_mean": mean_std(coral)[0] if coral else None,
            "oracle": any(m.get("oracle") for m in ms),
            "best_epoch_mean": float(np.mean([m["best_epoch"] for m in ms])),
        })
    return rows


def coral_ablation(runs: dict[str, list[dict]], order: Sequence[str] | None = None) -> list[dict]:
    """Anchored strategies next to their lambda = 0 twins: CORAL at the anchored layers.

    Distances are averaged over the anchored layers, then over seeds; ``ratio`` is
    anchored / not anchored (below 0.5 = anchoring at least halves the distance).
    ``input_distance`` is the same measure on the (standardised) model features the adapters
    read, which no training changes. ``relative_*`` is the scale-free CORAL
    (:func:`~lam_train.coral.coral_relative`): an adapter that only shrank its output would lower
    the Deep CORAL distance but not this one.
    """
    out = []
    for name in [s for s in (order or runs) if s in runs]:
        twin = twin_of(name)
        if twin is None or twin not in runs:
            continue
        a = [float(np.mean(m["coral_distance"]["adapted"])) for m in runs[name] if m.get("coral_distance")]
        b = [float(np.mean(m["coral_distance"]["adapted"])) for m in runs[twin] if m.get("coral_distance")]
        inp = [float(np.mean(m["coral_distance"]["input"])) for m in runs[name] if m.get("coral_distance")]
        rel_a = [float(np.mean(m["coral_distance"].get("adapted_relative", [np.nan]))) for m in runs[name]
                 if m.get("coral_distance")]
        rel_b = [float(np.mean(m["coral_distance"].get("adapted_relative", [np.nan]))) for m in runs[twin]
                 if m.get("coral_distance")]
        if not a or not b:
            continue
        am, bm = float(np.mean(a)), float(np.mean(b))
        out.append({"strategy": name, "twin": twin, "layers": runs[name][0]["layers"],
                    "lambda": runs[name][0]["lambda"], "anchored": am, "not_anchored": bm,
                    "ratio": am / bm if bm > 0 else float("nan"), "input_distance": float(np.mean(inp)),
                    "relative_anchored": float(np.mean(rel_a)), "relative_not_anchored": float(np.mean(rel_b)),
                    "n_seeds": min(len(a), len(b))})
    return out


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([json.dumps(r[c]) if isinstance(r[c], (list, dict)) else r[c] for c in columns])
    return buf.getvalue()


def markdown(rows: list[dict], ablation: list[dict], *, title: str = "Results") -> str:
    """The results as Markdown tables (UAR in %, mean +- std over seeds)."""
    lines = [f"# {title}", "", "Target-test UAR (%), mean ± std over seeds (sample std); model selection on "
             + ("**target dev (oracle)**" if any(r["oracle"] for r in rows) else "source-dev UAR") + ".", "",
             "| strategy | layers | CORAL λ | target UAR | per seed | source-dev UAR | "
             + " | ".join(f"{e} recall" for e in EMOTIONS) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(EMOTIONS)]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {','.join(map(str, r['layers']))} | {r['lambda']:g} | "
            f"{_pct(r['uar_mean'])} ± {_pct(r['uar_std'])} | {' '.join(_pct(u) for u in r['uar_per_seed'])} | "
            f"{_pct(r['source_dev_uar_mean'])} ± {_pct(r['source_dev_uar_std'])} | "
            + " | ".join(_pct(r["recall"][e]) for e in EMOTIONS) + " |")
    if ablation:
        lines += ["", "## CORAL distance at the anchored layers (source test vs target test)", "",
                  "Deep CORAL distance ||C_s − C_t||²_F / 4d² of the adapted features, mean over the anchored "
                  "layers and seeds, with anchoring and with λ = 0 on the same layers; the scale-free version "
                  "||C_s − C_t||²_F / (||C_s||²_F + ||C_t||²_F) (unchanged if an adapter only shrinks its "
                  "output); and the Deep CORAL distance of the model features the adapters read.", "",
                  "| strategy | layers | anchored | λ = 0 | ratio | scale-free anchored | scale-free λ = 0 "
                  "| model features |", "|---|---|---|---|---|---|---|---|"]
        for a in ablation:
            lines.append(f"| {a['strategy']} | {','.join(map(str, a['layers']))} | {a['anchored']:.3g} | "
                         f"{a['not_anchored']:.3g} | {a['ratio']:.3f} | {a['relative_anchored']:.3f} | "
                         f"{a['relative_not_anchored']:.3f} | {a['input_distance']:.3g} |")
    return "\n".join(lines) + "\n"


def save_figure(fig: Figure, stem: str | Path) -> list[str]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` (atomically); return the two paths."""
    stem = Path(stem)
    out = []
    for ext in ("png", "svg"):
        with atomic_path(stem.with_suffix(f".{ext}")) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        out.append(str(stem.with_suffix(f".{ext}")))
    return out


def uar_figure(rows: Sequence[dict], *, ax: Axes | None = None) -> Figure | None:
    """Target-test UAR per strategy: bars (mean +- std over seeds), dots (seeds), chance line.

    ``rows`` are :func:`summarise`'s; strategies without a target score are left out (None when
    none has one). Draws into ``ax`` when given, else into a new figure; returns the figure.
    """
    from matplotlib.figure import Figure

    scored = [r for r in rows if r["uar_per_seed"]]
    if not scored:
        return None
    if ax is None:
        ax = Figure(figsize=(max(4, 0.8 * len(scored) + 2), 3.5), layout="constrained").add_subplot()
    x = np.arange(len(scored))
    colours = ["#0072B2" if r["coral"] else "#999999" for r in scored]  # Okabe-Ito blue / grey
    ax.bar(x, [100 * r["uar_mean"] for r in scored], yerr=[100 * r["uar_std"] for r in scored],
           color=colours, capsize=3)
    for i, r in enumerate(scored):
        ax.plot([i] * len(r["uar_per_seed"]), [100 * u for u in r["uar_per_seed"]], "k.", ms=4)
    ax.axhline(100 / len(EMOTIONS), color="#D55E00", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [r["strategy"] for r in scored], rotation=30, ha="right")
    ax.set_ylabel("target-test UAR (%)")
    ax.set_ylim(0, 100)
    ax.set_title("UAR by strategy (bars: mean ± std over seeds; dots: seeds; blue: CORAL)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    return ax.figure  # type: ignore[return-value]


def confusion_figure(runs: dict[str, list[dict]], rows: Sequence[dict], *, fig: Figure | None = None
                     ) -> Figure | None:
    """Target-test confusion matrices, one panel per strategy (counts summed over seeds; colour =
    row share, i.e. recall), in the order of ``rows``; None when no run has a target score.

    One grid rather than a figure per strategy: matplotlib's drawing dominates the report's time,
    and one page is easier to compare at a glance. Draws into ``fig`` when given.
    """
    from matplotlib.figure import Figure

    panels = [(name, [m for m in ms if m.get("target_test")]) for name, ms in runs.items()]
    panels = [(n, ms) for n, ms in panels if ms]
    if not panels:
        return None
    order = {r["strategy"]: i for i, r in enumerate(rows)}
    panels.sort(key=lambda p: order.get(p[0], len(order)))
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    if fig is None:
        fig = Figure(figsize=(3.0 * ncol, 2.9 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    short = [e[:3] for e in EMOTIONS]
    for ax, (name, ms) in zip(axes.flat, panels, strict=False):  # the grid may have spare cells
        cm = np.sum([np.array(m["target_test"]["confusion"]) for m in ms], axis=0)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
        for i in range(len(EMOTIONS)):
            for j in range(len(EMOTIONS)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="black" if norm[i, j] > 0.5 else "white")
        ax.set_xticks(range(len(EMOTIONS)), short, fontsize=7)
        ax.set_yticks(range(len(EMOTIONS)), short, fontsize=7)
        ax.set_title(f"{name} ({len(ms)} seed{'s' if len(ms) > 1 else ''})", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("reference", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("predicted", fontsize=8)
    fig.suptitle("Target-test confusion matrices (counts summed over seeds; colour = row share, 0-1)",
                 fontsize=9)
    return fig


def figures(runs: dict[str, list[dict]], rows: Sequence[dict]) -> dict[str, Figure]:
    """The report's figures by file stem: ``uar`` and ``confusion`` (those there is data for).

    Nothing is written and no backend is chosen: the caller shows the figures (a notebook) or
    saves them (:func:`write_report`, with :func:`save_figure`).
    """
    made = {"uar": uar_figure(rows), "confusion": confusion_figure(runs, rows)}
    return {stem: fig for stem, fig in made.items() if fig is not None}


def write_report(runs_dir: str | Path, out_dir: str | Path, *, order: Sequence[str] | None = None,
                 title: str = "Results", figures_too: bool = True) -> dict:
    """Write results.csv, results.md, coral.csv, results.json and figures; return the summary."""
    out_dir = Path(out_dir)
    runs = collect(runs_dir)
    rows = summarise(runs, order)
    abl = coral_ablation(runs, order)
    cols = ["strategy", "layers", "coral", "lambda", "n_seeds", "uar_mean", "uar_std", "uar_per_seed",
            "source_dev_uar_mean", "source_dev_uar_std", "recall", "coral_distance_mean", "oracle", "best_epoch_mean"]
    atomic_write_text(out_dir / "results.csv", _csv_text(rows, cols))
    if abl:
        atomic_write_text(out_dir / "coral.csv", _csv_text(abl, list(abl[0])))
    atomic_write_text(out_dir / "results.md", markdown(rows, abl, title=title))
    from phonalign.fsutil import atomic_write_json

    summary: dict[str, Any] = {"strategies": rows, "coral_ablation": abl}
    atomic_write_json(out_dir / "results.json", summary)
    if figures_too:
        summary["figures"] = [path for stem, fig in figures(runs, rows).items()
                              for path in save_figure(fig, out_dir / "figures" / stem)]
    return summary
