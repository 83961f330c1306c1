"""Cross-language vowel maps per layer: how similar each source vowel class is to each target class.

For every layer ``l``, the 6 x 6 matrix ``S[l, i, j]``: the similarity between the source corpus'
segments of vowel class ``i`` and the target corpus' segments of class ``j`` (``A E @ i O u``), with
the metrics, estimators, resampling and intervals of ``lam similarity``:

* **metrics**: any of :data:`analysis.similarity.METRICS`, computed by the same code
  (:class:`analysis.similarity._SumsUnit` / ``_GramUnit`` over :mod:`analysis.estimators`), so
  the diagonal cell ``(A, A)`` is exactly ``lam similarity``'s unit ``A``. All of them are
  scale-free. Two settings are the map's own: ``mmd`` uses one kernel bandwidth per layer for all
  36 cells (the median pairwise squared distance of a seeded sample of at most ``max_rows`` vowel
  rows per side), so that the cells of a layer are comparable; ``coral`` and ``mmd`` sample at
  most ``max_rows`` rows per class and side (seeded, the same rows in every layer).
* **resampling**: the same rows, clusters and bootstrap draws as ``lam similarity``
  (:func:`analysis.similarity.prepare_sides`; speakers when both sides have at least two,
  utterances otherwise, said in the warnings). One family of draws serves all 36 cells and every
  layer, so the cells' draws are paired and the diagonal advantage has draws of its own.
* **intervals**: the re-centred percentile interval of :func:`analysis.resampling.recentred_interval`,
  widened for few clusters by :func:`analysis.resampling.small_sample_widening` of the smaller
  side's clusters holding the two classes; every interval contains its estimate.

The **diagonal advantage** of a layer is how much more similar same-class pairs are than
different-class pairs::

    advantage[l] = sign * (mean_i S[l, i, i] - mean_{i != j} S[l, i, j])

over the classes present on both sides (``sign`` = -1 for the distances ``coral`` and ``mmd``, so
that a positive advantage always means "a vowel class is closest to the same class in the other
language"). It is 0 when class identity is not shared across the languages (whatever structure
each language has on its own), positive when it is. Its interval comes from the same draws (each
draw's advantage, the cells averaged the same way), widened for the clusters holding any vowel of
those classes; where it contains 0 the layer shows no shared class identity the data can vouch for.
The **peak** is the transformer layer (1..L) with the largest advantage, and the layers the data
cannot tell from it are ``tied_with_peak`` (:func:`analysis.resampling.ties_with_best`, the
simultaneous test ``lam similarity`` uses for the best layer); all tied is ``flat``.

Output of :func:`write_vowel_maps` (``lam similarity --vowel-map``):

``vowel_map.parquet`` (+ ``.csv``), one row per metric, layer, source class and target class
    ``metric`` (str), ``higher_is_more_similar`` (bool), ``layer`` (int; 0 = before the first
    transformer layer), ``source_class``, ``target_class`` (str, ``A E @ i O u``),
    ``same_class`` (bool), ``score`` (float; null where undefined), ``ci_low``, ``ci_high``
    (float; the interval at ``ci_level``; null without draws), ``n_source``, ``n_target`` (int;
    segments of the classes), ``clusters_source``, ``clusters_target`` (int; speakers, or
    utterances, holding them), ``source_language``, ``target_language`` (str).
``diagonal_advantage.parquet`` (+ ``.csv``), one row per metric and layer
    ``metric``, ``layer``, ``advantage`` (float), ``ci_low``, ``ci_high``, ``mean_same_class``,
    ``mean_different_class`` (the two means of ``S`` it compares, unsigned), ``n_classes`` (int;
    classes present on both sides), ``is_peak``, ``tied_with_peak`` (bool; false for layer 0,
    which is not ranked), ``p_peak`` (float; share of draws in which the layer has the largest
    advantage; null for layer 0).
``vowel_map.json``
    per metric: the peak, the layers tied with it, ``flat``, the classes used, cells skipped and
    why, the resampling, the number of draws and the level.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from phonalign.progress import track
from phonalign.records import VOWEL_CLASSES

from . import estimators as est
from .defaults import CI_LEVEL, DEFAULT_METRIC, DEFAULT_RESAMPLE, MAX_ROWS, N_BOOTSTRAP, SEED
from .errors import SimilarityError
from .resampling import bootstrap_weights, recentred_interval, small_sample_widening, ties_with_best
from .similarity import (
    METRICS,
    MIN_CLUSTERS,
    Resampling,
    Sides,
    _GramUnit,
    _pooled_sd,
    _read_rows,
    _sample_rows,
    _sqdist,
    _stream,
    _sum_sides,
    _SumsUnit,
    _to_clusters,
    _View,
    prepare_sides,
    shared_layers,
)
from .store import FeatureStore

logger = logging.getLogger(__name__)

__all__ = ["ADVANTAGE_SCHEMA", "OUTPUT_FILES", "DiagonalAdvantage", "VOWEL_MAP_SCHEMA", "VowelMap", "advantage_table",
           "diagonal_advantage", "read_diagonal_advantage", "read_vowel_map", "summary_lines", "vowel_map_table",
           "vowel_maps", "write_vowel_maps", "VowelMapFiles"]

VOWEL_MAP_SCHEMA = pa.schema([
    ("metric", pa.string()), ("higher_is_more_similar", pa.bool_()), ("layer", pa.int32()),
    ("source_class", pa.string()), ("target_class", pa.string()), ("same_class", pa.bool_()),
    ("score", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n_source", pa.int64()), ("n_target", pa.int64()), ("clusters_source", pa.int64()),
    ("clusters_target", pa.int64()), ("source_language", pa.string()), ("target_language", pa.string()),
])
ADVANTAGE_SCHEMA = pa.schema([
    ("metric", pa.string()), ("layer", pa.int32()), ("advantage", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("mean_same_class", pa.float64()), ("mean_different_class", pa.float64()),
    ("n_classes", pa.int64()), ("is_peak", pa.bool_()), ("tied_with_peak", pa.bool_()), ("p_peak", pa.float64()),
])
_SUM_METRICS = ("centroid_cosine", "pairwise_cosine", "standardized_cosine")
#: Files :func:`write_vowel_maps` writes into a `lam similarity` folder.
OUTPUT_FILES: tuple[str, ...] = ("vowel_map.parquet", "vowel_map.csv", "diagonal_advantage.parquet",
                                 "diagonal_advantage.csv", "vowel_map.json")
#: storage class index of vowel class k (0 is the utterance class of :mod:`analysis.similarity`)
_CLS = {c: 1 + k for k, c in enumerate(VOWEL_CLASSES)}


# ------------------------------------------------------------------------------- the advantage
@dataclass(frozen=True)
class DiagonalAdvantage:
    """The diagonal advantage of one map over layers 0..L.

    Attributes
    ----------
    classes : tuple of str
        Classes present on both sides (the advantage averages over them; needs at least 2).
    estimate : ndarray, shape (L+1,)
        ``sign * (mean same-class score - mean different-class score)`` (see the module docstring).
    boot : ndarray, shape (B, L+1)
        The same in every draw.
    ci_low, ci_high : ndarray, shape (L+1,)
        Re-centred, widened interval at the map's level (NaN without draws).
    mean_same, mean_different : ndarray, shape (L+1,)
        The two means of the scores (unsigned).
    peak : int
        Transformer layer (1..L) with the largest advantage (-1 when undefined).
    tied : ndarray of bool, shape (L+1,)
        Layers the data cannot tell from the peak (layer 0 never; without draws every defined layer).
    p_peak : ndarray, shape (L+1,)
        Share of draws in which the layer's advantage is the largest (NaN for layer 0 and without draws).
    flat : bool
        Every ranked layer tied with the peak.
    """

    classes: tuple[str, ...]
    estimate: np.ndarray
    boot: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean_same: np.ndarray
    mean_different: np.ndarray
    peak: int
    tied: np.ndarray
    p_peak: np.ndarray
    flat: bool


def _quiet_nanmean(x: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN draw gives NaN, as wanted
        return np.nanmean(x, axis=axis)


def _means(s: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the diagonal and of the off-diagonal cells over ``keep`` classes: ``(..., C, C) -> (...)``."""
    sub = s[..., keep, :][..., :, keep]
    c = keep.size
    eye = np.eye(c, dtype=bool)
    diag = sub[..., eye]                       # (..., c)
    off = sub[..., ~eye]                       # (..., c * (c - 1))
    return _quiet_nanmean(diag, axis=-1), _quiet_nanmean(off, axis=-1)


def diagonal_advantage(score: np.ndarray, boot: np.ndarray, *, higher_is_more_similar: bool = True,
                       classes: Sequence[str] = VOWEL_CLASSES, present: np.ndarray | None = None,
                       level: float = 0.95, n_clusters: int | None = None) -> DiagonalAdvantage:
    """The diagonal advantage per layer with its interval, peak and ties (pure function on arrays).

    Parameters
    ----------
    score : ndarray, shape (L+1, C, C)
        ``score[l, i, j]``: similarity (or distance) of source class i and target class j in layer l.
    boot : ndarray, shape (B, L+1, C, C)
        The same in B bootstrap draws (NaN where a draw leaves a class without rows).
    higher_is_more_similar : bool
        False for distances: the advantage is then mean different-class minus mean same-class.
    classes : sequence of str, length C
    present : ndarray of bool, shape (C,), optional
        Classes defined on both sides (default: those whose diagonal cell is finite in some layer).
    level : float
    n_clusters : int, optional
        Clusters of the smaller side, for the small-sample widening (none when not given).

    Returns
    -------
    DiagonalAdvantage
    """
    score = np.asarray(score, np.float64)
    boot = np.asarray(boot, np.float64)
    n_l, c = score.shape[0], score.shape[-1]
    if present is None:
        present = np.isfinite(score[:, np.arange(c), np.arange(c)]).any(0)
    keep = np.flatnonzero(np.asarray(present, bool))
    nan = np.full(n_l, np.nan)
    if keep.size < 2:
        return DiagonalAdvantage(tuple(classes[int(k)] for k in keep), nan, np.full((boot.shape[0], n_l), np.nan),
                                 nan.copy(), nan.copy(), nan.copy(), nan.copy(), -1, np.zeros(n_l, bool),
                                 nan.copy(), False)
    sign = 1.0 if higher_is_more_similar else -1.0
    same, diff = _means(score, keep)
    adv = sign * (same - diff)
    b_same, b_diff = _means(boot, keep) if boot.shape[0] else (np.zeros((0, n_l)), np.zeros((0, n_l)))
    adv_boot = sign * (b_same - b_diff)
    widen = small_sample_widening(n_clusters, level=level) if n_clusters else 1.0
    lo, hi = recentred_interval(adv, adv_boot, level=level, widen=widen) if adv_boot.shape[0] else (nan, nan.copy())
    ranked = range(1, n_l) if n_l > 1 else range(n_l)
    ties = ties_with_best(adv, adv_boot, higher_is_better=True, level=level, ranked=ranked, n_clusters=n_clusters)
    return DiagonalAdvantage(tuple(classes[int(k)] for k in keep), adv, adv_boot, np.asarray(lo), np.asarray(hi), same,
                             diff, ties.best, ties.tied, ties.p_best, bool(ties.flat))


# ----------------------------------------------------------------------------------- the maps
@dataclass(frozen=True)
class VowelMap:
    """One metric's vowel map over layers 0..L (rows: source classes, columns: target classes).

    Attributes
    ----------
    metric : str
    higher_is_more_similar : bool
    classes : tuple of str
        ``A E @ i O u``, the order of both matrix axes.
    score : ndarray, shape (L+1, 6, 6)
        NaN in cells that cannot be scored (see ``skipped``).
    boot : ndarray, shape (B, L+1, 6, 6)
        Bootstrap draws of every cell (one family of draws for all cells and layers).
    n_source, n_target : ndarray of int, shape (6,)
        Segments of each class on each side.
    clusters_source, clusters_target : ndarray of int, shape (6,)
        Clusters (speakers, or utterances) holding each class.
    clusters : tuple of int
        Clusters holding any vowel on the source and the target side.
    resampling : Resampling
    ci_level : float
    skipped : dict of str to str
        ``"source O"`` / ``"target O"`` -> why that class has no cells.
    source_language, target_language : str
        The languages of the rows compared (``+``-joined when a side holds several).
    warnings : tuple of str
        Notes owed to the user (resampling fallback, duration mismatch, allowed differences).
    """

    metric: str
    higher_is_more_similar: bool
    classes: tuple[str, ...]
    score: np.ndarray
    boot: np.ndarray
    n_source: np.ndarray
    n_target: np.ndarray
    clusters_source: np.ndarray
    clusters_target: np.ndarray
    clusters: tuple[int, int]
    resampling: Resampling
    ci_level: float
    skipped: dict[str, str] = field(default_factory=dict)
    source_language: str = ""
    target_language: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def n_layers(self) -> int:
        """L (the map has L+1 layers, 0 being the output before the first transformer layer)."""
        return int(self.score.shape[0]) - 1

    def ci(self) -> tuple[np.ndarray, np.ndarray]:
        """Interval of every cell at ``ci_level``: ``(low, high)``, each ``(L+1, 6, 6)`` (NaN without draws)."""
        k = np.minimum(self.clusters_source[:, None], self.clusters_target[None, :])
        widen = np.vectorize(lambda x: small_sample_widening(int(x), level=self.ci_level))(k)
        widen = np.where(np.isfinite(widen), widen, 1.0)  # cells of classes with < 2 clusters have no score
        if self.boot.shape[0] == 0:
            nan = np.full(self.score.shape, np.nan)
            return nan, nan.copy()
        lo, hi = recentred_interval(self.score, self.boot, level=self.ci_level, widen=widen[None])
        return np.asarray(lo), np.asarray(hi)

    def advantage(self) -> DiagonalAdvantage:
        """The diagonal advantage of this map (see :func:`diagonal_advantage`)."""
        need = MIN_CLUSTERS[self.metric]
        present = (self.clusters_source >= need) & (self.clusters_target >= need)
        return diagonal_advantage(self.score, self.boot, higher_is_more_similar=self.higher_is_more_similar,
                                  classes=self.classes, present=present, level=self.ci_level,
                                  n_clusters=min(self.clusters))


def _languages(v: _View) -> str:
    langs = np.asarray(v.store.index.column("language").to_pylist(), dtype=object)[v.row_keep]
    return "+".join(sorted({str(x) for x in langs if x not in (None, "")}))


def vowel_maps(source: FeatureStore, target: FeatureStore, *, metrics: Sequence[str] = (DEFAULT_METRIC,),
               n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED, ci_level: float = CI_LEVEL,
               max_rows: int = MAX_ROWS, source_language: str | None = None, target_language: str | None = None,
               resample: str = DEFAULT_RESAMPLE, match_duration: bool = False, allow_different: Sequence[str] = (),
               progress: bool = True) -> dict[str, VowelMap]:
    """Per layer, the 6 x 6 similarity of every source vowel class with every target vowel class.

    One streamed pass over both stores per layer (the cosine metrics use every row; ``coral`` and
    ``mmd`` at most ``max_rows`` rows per class and side). Parameters as
    :func:`analysis.similarity.compare_stores`, whose rows, clusters and bootstrap draws (for the
    same ``seed``) are used.

    Returns
    -------
    dict of str to VowelMap
        One map per metric, in the order given. Only the layers both stores hold are scored (every
        layer unless a store was made with ``lam features --layers``); the others' cells are NaN.

    Raises
    ------
    SimilarityError
        Unknown metric, incompatible stores, no vowel segment on a side.
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise SimilarityError(f"unknown metric(s) {bad}" if bad else "no metric given",
                              hint=f"use {', '.join(METRICS)}")
    sides = prepare_sides(source, target, source_language=source_language, target_language=target_language,
                          match_duration=match_duration, seed=seed, resample=resample,
                          allow_different=allow_different)
    layers = shared_layers(source, target)
    run = _MapRun(sides, metrics=metrics, n_l=source.n_layers + 1, n_bootstrap=int(n_bootstrap), seed=seed,
                  max_rows=max_rows)
    for layer in track(layers, desc="vowel map", item="layer", progress=progress):
        if run.sum_metrics:
            run.score_sums(layer, source.hidden_size)
        if run.row_metrics:
            run.score_rows(layer)
    skipped = run.skipped(sides.resampling.unit)
    src, tgt = sides.source, sides.target
    any_s, any_t = int(run.act_s.any(0).sum()), int(run.act_t.any(0).sum())
    langs = (_languages(src), _languages(tgt))
    return {m: VowelMap(m, METRICS[m], VOWEL_CLASSES, run.score[m], run.boot[m], run.cnt_s.sum(1).astype(np.int64),
                        run.cnt_t.sum(1).astype(np.int64), run.k_s.astype(np.int64), run.k_t.astype(np.int64),
                        (any_s, any_t), sides.resampling, float(ci_level), skipped[m], langs[0], langs[1],
                        sides.warnings)
            for m in metrics}


def _class_counts(v: _View, scope: sp.csr_matrix) -> np.ndarray:
    """Rows per vowel class and cluster of one side, ``(6, K)``; an error when it has no vowel row."""
    cnt = np.asarray(scope @ v.counts.T).T[[_CLS[c] for c in VOWEL_CLASSES]]
    if cnt.sum() == 0:
        raise SimilarityError(f"the {v.name} store has no vowel segment", path=v.store.path,
                              hint="extract features from an aligned corpus (`lam align` then `lam features`), "
                              "not from a plain folder of recordings")
    return cnt


class _MapRun:
    """The state of one :func:`vowel_maps` run: each class's clusters and draw weights, the rows the
    row metrics read, and the maps (``score`` (L+1, 6, 6), ``boot`` (B, L+1, 6, 6) per metric),
    filled one layer at a time."""

    def __init__(self, sides: Sides, *, metrics: Sequence[str], n_l: int, n_bootstrap: int, seed: int,
                 max_rows: int) -> None:
        self.src, self.tgt = src, tgt = sides.source, sides.target
        self.metrics = metrics
        self.ms, self.mt = ms, mt = src.scope_matrix(None), tgt.scope_matrix(None)
        self.cnt_s, self.cnt_t = _class_counts(src, ms), _class_counts(tgt, mt)  # (6, K) rows per class, cluster
        self.act_s, self.act_t = self.cnt_s > 0, self.cnt_t > 0
        self.k_s, self.k_t = self.act_s.sum(1), self.act_t.sum(1)  # clusters holding each class
        b = n_bootstrap
        boot_s = bootstrap_weights(src.n_clusters, b, np.random.default_rng([seed, 1, 0]))  # lam similarity's draws
        boot_t = bootstrap_weights(tgt.n_clusters, b, np.random.default_rng([seed, 1, 1]))
        self.ws = [np.vstack([a[None].astype(float), boot_s * a[None]]) for a in self.act_s]  # per class (B+1, K_s)
        self.wt = [np.vstack([a[None].astype(float), boot_t * a[None]]) for a in self.act_t]
        self.row_metrics = [m for m in metrics if m not in _SUM_METRICS]
        self.sum_metrics = [m for m in metrics if m in _SUM_METRICS]
        idx = [_CLS[c] for c in VOWEL_CLASSES]
        rows = self.row_metrics
        self.rows_s = [_sample_rows(src, [i], ms, max_rows, [seed, 6, 0, i]) for i in idx] if rows else []
        self.rows_t = [_sample_rows(tgt, [i], mt, max_rows, [seed, 6, 1, i]) for i in idx] if rows else []
        self.union_s = np.unique(np.concatenate(self.rows_s)) if rows else np.zeros(0, np.int64)
        self.union_t = np.unique(np.concatenate(self.rows_t)) if rows else np.zeros(0, np.int64)
        self.bw_rows = [_bandwidth_rows(u, max_rows, [seed, 7, side])
                        for side, u in enumerate((self.union_s, self.union_t))]
        c = len(VOWEL_CLASSES)
        self.score = {m: np.full((n_l, c, c), np.nan) for m in metrics}
        self.boot = {m: np.full((b, n_l, c, c), np.nan) for m in metrics}
        self.need = {m: MIN_CLUSTERS[m] for m in metrics}

    def score_sums(self, layer: int, h: int) -> None:
        """Every cell of the cosine metrics at ``layer`` (``h``: hidden size), from per-cluster sums."""
        src, tgt, ms, mt = self.src, self.tgt, self.ms, self.mt
        streams = {v.name: _stream(v, layer, h, "pairwise_cosine" in self.sum_metrics) for v in (src, tgt)}
        sd = _pooled_sd(streams, src, tgt) if "standardized_cosine" in self.sum_metrics else None
        agg = {v.name: {**{k: _to_clusters(mm, arr) for k, arr in streams[v.name].items() if k in ("S", "SN")},
                        "N": np.asarray(mm @ v.counts.T).T} for v, mm in ((src, ms), (tgt, mt))}
        c = len(VOWEL_CLASSES)
        for m in self.sum_metrics:
            # one engine holds every class of both sides (s0..s5, t0..t5), so that each class's
            # centroid and squared norm are computed once per draw family, not once per cell
            groups: dict[str, dict[str, np.ndarray]] = {}
            for i, cl in enumerate(VOWEL_CLASSES):
                per_class = _sum_sides(m, agg, cl, sd, False)
                groups[f"s{i}"], groups[f"t{i}"] = per_class["s"], per_class["t"]
            eng = _SumsUnit(m, groups)
            for i in range(c):
                for j in range(c):
                    if self.k_s[i] >= self.need[m] and self.k_t[j] >= self.need[m]:
                        _cell(eng, f"s{i}", f"t{j}", self.ws[i], self.wt[j], self.score[m], self.boot[m], layer, i, j)

    def score_rows(self, layer: int) -> None:
        """Every cell of the row metrics (coral, mmd) at ``layer``, from the sampled rows."""
        src, tgt, union_s, union_t = self.src, self.tgt, self.union_s, self.union_t
        xs_all, xt_all = _read_rows(src, union_s, layer), _read_rows(tgt, union_t, layer)
        xs = [xs_all[np.searchsorted(union_s, r)] for r in self.rows_s]
        xt = [xt_all[np.searchsorted(union_t, r)] for r in self.rows_t]
        cs = [src.cell_cluster[src.row_cell[r]] for r in self.rows_s]
        ct = [tgt.cell_cluster[tgt.row_cell[r]] for r in self.rows_t]
        for m in self.row_metrics:
            blocks = _class_blocks(m, xs, cs, src.n_clusters, xt, ct, tgt.n_clusters,
                                   xs_all[np.searchsorted(union_s, self.bw_rows[0])],
                                   xt_all[np.searchsorted(union_t, self.bw_rows[1])], self.k_s, self.k_t, self.need[m])
            for (i, j), blk in blocks.items():
                _cell(_GramUnit(m, blk), "s", "t", self.ws[i], self.wt[j], self.score[m], self.boot[m], layer, i, j)

    def skipped(self, unit: str) -> dict[str, dict[str, str]]:
        """Metric -> "side class" -> why the class has no cells (too few clusters; ``unit``: the resampling's)."""
        skipped: dict[str, dict[str, str]] = {m: {} for m in self.metrics}
        what = "speaker(s)" if unit == "speaker" else "utterance(s)"
        for m in self.metrics:
            need = self.need[m]
            for side, k, cnt in (("source", self.k_s, self.cnt_s), ("target", self.k_t, self.cnt_t)):
                for i, cl in enumerate(VOWEL_CLASSES):
                    if k[i] < need:
                        skipped[m][f"{side} {cl}"] = (f"{int(cnt[i].sum())} segment(s) from {int(k[i])} {what}; "
                                                      f"{m} needs {need} {what} per side")
        return skipped


def _cell(eng: _SumsUnit | _GramUnit, sa: str, sb: str, ws: np.ndarray, wt: np.ndarray, score: np.ndarray,
          boot: np.ndarray, layer: int, i: int, j: int) -> None:
    """Score one cell in the estimate (row 0 of the weights) and every draw, as ``lam similarity`` does
    (``sa``, ``sb``: the engine's names of the source and target class)."""
    val = eng.combine(eng.cross(sa, "main", ws, sb, "main", wt), eng.within(sa, "main", ws),
                      eng.within(sb, "main", wt))
    score[layer, i, j] = val[0]
    boot[:, layer, i, j] = val[1:]


def _bandwidth_rows(union: np.ndarray, max_rows: int, seed: list[int]) -> np.ndarray:
    """A seeded sample of at most ``max_rows`` of a side's sampled vowel rows (the MMD bandwidth's)."""
    if union.size <= max_rows:
        return union
    return np.sort(np.random.default_rng(seed).choice(union, size=max_rows, replace=False))


def _class_blocks(metric: str, xs: list[np.ndarray], cs: list[np.ndarray], ks: int, xt: list[np.ndarray],
                  ct: list[np.ndarray], kt: int, bw_s: np.ndarray, bw_t: np.ndarray, k_s: np.ndarray,
                  k_t: np.ndarray, need: int) -> dict[tuple[int, int], dict[str, est.GramBlock]]:
    """Gram (CORAL) or kernel (MMD) blocks of every scorable class pair; within-side blocks built once per class."""
    squares = metric == "coral"  # CORAL's fourth-moment terms need the squared Gram entries
    if metric == "mmd":
        from .similarity import median_bandwidth

        bw = median_bandwidth(bw_s, bw_t)  # one kernel for the whole layer: cells stay comparable

        def gram(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return np.exp(-_sqdist(x, y) / bw)
    else:
        # CORAL's traces do not change under a shift; centring each class on its own mean keeps the
        # large common direction out of the fourth-moment terms (as lam similarity does per unit)
        xs = [x - x.mean(0) if len(x) else x for x in xs]
        xt = [x - x.mean(0) if len(x) else x for x in xt]

        def gram(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return x @ y.T
    ok_s = [i for i in range(len(xs)) if k_s[i] >= need]
    ok_t = [j for j in range(len(xt)) if k_t[j] >= need]
    ss = {i: est.GramBlock.build(gram(xs[i], xs[i]), cs[i], ks, cs[i], ks, squares=squares) for i in ok_s}
    tt = {j: est.GramBlock.build(gram(xt[j], xt[j]), ct[j], kt, ct[j], kt, squares=squares) for j in ok_t}
    return {(i, j): {"ss": ss[i], "tt": tt[j],
                     "st": est.GramBlock.build(gram(xs[i], xt[j]), cs[i], ks, ct[j], kt, squares=squares)}
            for i in ok_s for j in ok_t}


# ------------------------------------------------------------------------------------- output
def _none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def vowel_map_table(maps: Mapping[str, VowelMap]) -> pa.Table:
    """``vowel_map.parquet`` as a table (:data:`VOWEL_MAP_SCHEMA`; see the module docstring)."""
    rows: list[dict[str, Any]] = []
    for m, vm in maps.items():
        lo, hi = vm.ci()
        for layer in range(vm.n_layers + 1):
            for i, a in enumerate(vm.classes):
                for j, b in enumerate(vm.classes):
                    rows.append({"metric": m, "higher_is_more_similar": vm.higher_is_more_similar, "layer": layer,
                                 "source_class": a, "target_class": b, "same_class": a == b,
                                 "score": _none(vm.score[layer, i, j]), "ci_low": _none(lo[layer, i, j]),
                                 "ci_high": _none(hi[layer, i, j]), "n_source": int(vm.n_source[i]),
                                 "n_target": int(vm.n_target[j]), "clusters_source": int(vm.clusters_source[i]),
                                 "clusters_target": int(vm.clusters_target[j]),
                                 "source_language": vm.source_language, "target_language": vm.target_language})
    return pa.Table.from_pylist(rows, schema=VOWEL_MAP_SCHEMA)


def advantage_table(maps: Mapping[str, VowelMap]) -> pa.Table:
    """``diagonal_advantage.parquet`` as a table (:data:`ADVANTAGE_SCHEMA`; see the module docstring)."""
    rows: list[dict[str, Any]] = []
    for m, vm in maps.items():
        adv = vm.advantage()
        for layer in range(vm.n_layers + 1):
            rows.append({"metric": m, "layer": layer, "advantage": _none(adv.estimate[layer]),
                         "ci_low": _none(adv.ci_low[layer]), "ci_high": _none(adv.ci_high[layer]),
                         "mean_same_class": _none(adv.mean_same[layer]),
                         "mean_different_class": _none(adv.mean_different[layer]), "n_classes": len(adv.classes),
                         "is_peak": layer == adv.peak, "tied_with_peak": bool(adv.tied[layer]),
                         "p_peak": _none(adv.p_peak[layer])})
    return pa.Table.from_pylist(rows, schema=ADVANTAGE_SCHEMA)


def _summary(vm: VowelMap, n_bootstrap: int) -> dict[str, Any]:
    adv = vm.advantage()
    has_draws = vm.boot.shape[0] > 0
    return {"metric": vm.metric, "higher_is_more_similar": vm.higher_is_more_similar, "classes": list(adv.classes),
            "peak": adv.peak if adv.peak >= 0 else None,
            "tied_with_peak": [int(x) for x in np.flatnonzero(adv.tied)] if has_draws else None,
            "flat": adv.flat if has_draws else None,
            "advantage_at_peak": _none(adv.estimate[adv.peak]) if adv.peak >= 0 else None,
            "ci_at_peak": [_none(adv.ci_low[adv.peak]), _none(adv.ci_high[adv.peak])] if adv.peak >= 0 else None,
            "skipped": vm.skipped, "source_language": vm.source_language, "target_language": vm.target_language,
            "resampling": {"unit": vm.resampling.unit, "requested": vm.resampling.requested,
                           "clusters": {"source": vm.clusters[0], "target": vm.clusters[1]},
                           "reason": vm.resampling.reason},
            "n_bootstrap": n_bootstrap, "ci_level": vm.ci_level, "warnings": list(vm.warnings)}


def summary_lines(maps: Mapping[str, VowelMap]) -> list[str]:
    """One line per metric: where the diagonal advantage peaks, its interval, the layers tied with it."""
    lines = []
    for m, vm in maps.items():
        adv = vm.advantage()
        if adv.peak < 0:
            lines.append(f"vowel map ({m}): no diagonal advantage (fewer than 2 classes on both sides)")
            continue
        p = adv.peak
        head = (f"vowel map ({m}): diagonal advantage peaks at layer {p} ({adv.estimate[p]:.3g} "
                f"[{adv.ci_low[p]:.3g}, {adv.ci_high[p]:.3g}])")
        if vm.boot.shape[0] == 0:
            lines.append(head + "; no draws: ties unknown")
            continue
        excl = [int(x) for x in np.flatnonzero(adv.ci_low > 0)]
        tied = ",".join(str(x) for x in np.flatnonzero(adv.tied))
        lines.append(f"{head}; tied with it: {tied}; {'FLAT' if adv.flat else 'not flat'}; interval above 0 at "
                     f"layers {','.join(map(str, excl)) or 'none'}")
    return lines


@dataclass(frozen=True)
class VowelMapFiles:
    """Where :func:`write_vowel_maps` wrote the vowel map (each table also as ``.csv`` beside it)."""

    vowel_map: Path  # vowel_map.parquet
    diagonal_advantage: Path  # diagonal_advantage.parquet
    summary: Path  # vowel_map.json

    def to_dict(self) -> dict[str, Path]:
        """``{"vowel_map": ..., "diagonal_advantage": ..., "summary": ...}``."""
        return {"vowel_map": self.vowel_map, "diagonal_advantage": self.diagonal_advantage, "summary": self.summary}


def write_vowel_maps(maps: Mapping[str, VowelMap], out_dir: str | Path, *, n_bootstrap: int) -> VowelMapFiles:
    """Write ``vowel_map.parquet``/``.csv``, ``diagonal_advantage.parquet``/``.csv`` and ``vowel_map.json``.

    The caller holds ``out_dir`` (``lam similarity`` writes them into its own output folder).

    Returns
    -------
    VowelMapFiles
        The paths of ``vowel_map.parquet``, ``diagonal_advantage.parquet`` and ``vowel_map.json``.
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from phonalign.fsutil import atomic_path, atomic_write_json

    out = Path(out_dir)
    for name, table in (("vowel_map", vowel_map_table(maps)), ("diagonal_advantage", advantage_table(maps))):
        with atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp)
        with atomic_path(out / f"{name}.csv") as tmp:
            pcsv.write_csv(table, tmp)
    atomic_write_json(out / "vowel_map.json", {m: _summary(vm, n_bootstrap) for m, vm in maps.items()})
    return VowelMapFiles(out / "vowel_map.parquet", out / "diagonal_advantage.parquet", out / "vowel_map.json")


def _read(path: str | Path, name: str) -> pa.Table:
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.is_file():
        raise SimilarityError(f"{name} not found", path=p, hint="run `lam similarity ... --vowel-map` first")
    return pq.read_table(p)


def read_vowel_map(path: str | Path) -> pa.Table:
    """``vowel_map.parquet`` (``path``: the file or the `lam similarity` folder holding it)."""
    return _read(path, "vowel_map.parquet")


def read_diagonal_advantage(path: str | Path) -> pa.Table:
    """``diagonal_advantage.parquet`` (``path``: the file or the folder holding it)."""
    return _read(path, "diagonal_advantage.parquet")
