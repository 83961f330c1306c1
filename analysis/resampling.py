"""Resampling of clusters, intervals that contain their estimate, ties with the best layer, and
permutation p-values: small pure functions on arrays, for any pair of row groups.

Everything here works on **cluster weights**: a draw is a vector ``w`` of shape ``(K,)`` saying
how many times each cluster (a speaker, or an utterance when speakers are unknown) takes part;
a family of draws is an array ``(R, K)``. A row of the data weighs what its cluster weighs, so a
segment weighs through its utterance and an utterance through its speaker. The estimators of
:mod:`analysis.estimators` take such weights and return one score per draw; the functions below
turn those per-draw scores into intervals, ties and p-values. Nothing here knows about stores,
layers or units, so that other callers (the vowel map, the HTML report) reuse it on arbitrary
pairs of row groups.

Intervals
---------
:func:`recentred_interval` is the **percentile interval re-centred on the estimate**: with
``q_lo, med, q_hi`` the ``(1 - level) / 2``, ``0.5`` and ``(1 + level) / 2`` quantiles of the
draws, the interval is ``[est - (med - q_lo), est + (q_hi - med)]``. It keeps the percentile
interval's width and asymmetry but moves it so that the bootstrap median sits on the estimate.
**Guarantee**: ``ci_low <= estimate <= ci_high`` whenever the estimate and at least one draw are
finite (``med - q_lo >= 0`` and ``q_hi - med >= 0`` hold exactly in floating point, since
quantiles are monotone). Neither the plain percentile nor the ``basic`` interval guarantees it: both
exclude the estimate when the draws sit more than half an interval away from it, which is what a
biased estimator (a V-statistic fed duplicated rows) does. Containment does not make a biased
estimator right: the estimators are chosen to be (nearly) unbiased, and the coverage of the
resulting intervals is checked by simulation against a known truth (``tests/test_statistics.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Ties",
    "bootstrap_weights",
    "half_splits",
    "permutation_p",
    "permutation_weights",
    "recentred_interval",
    "simultaneous_level",
    "small_sample_widening",
    "split_draws",
    "ties_with_best",
]


# ------------------------------------------------------------------------------------- weights
def bootstrap_weights(n_clusters: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster bootstrap: ``n_draws`` draws of ``n_clusters`` clusters with replacement.

    Parameters
    ----------
    n_clusters : int
        K, clusters of one side (speakers or utterances).
    n_draws : int
        B.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, float64, shape (B, K)
        How many times each cluster was drawn; each row sums to K.
    """
    if n_clusters == 0 or n_draws == 0:
        return np.zeros((n_draws, n_clusters))
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_draws).astype(np.float64)


def half_splits(active: np.ndarray, n_splits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random splits of the active clusters into two disjoint halves.

    Parameters
    ----------
    active : ndarray of bool, shape (K,)
        Clusters that hold rows of the unit compared (only those are dealt out, so that both
        halves get some whenever two exist).
    n_splits : int
    rng : numpy.random.Generator

    Returns
    -------
    (first, second) : ndarray, float64, shape (n_splits, K) each
        0/1 weights; ``first`` holds ``floor(n / 2)`` of the ``n`` active clusters, ``second``
        the rest; inactive clusters are in neither.
    """
    k = active.size
    first, second = np.zeros((n_splits, k)), np.zeros((n_splits, k))
    idx = np.flatnonzero(active)
    for s in range(n_splits):
        perm = rng.permutation(idx)
        first[s, perm[: idx.size // 2]] = 1.0
        second[s, perm[idx.size // 2:]] = 1.0
    return first, second


def split_draws(weights: np.ndarray, active: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split each bootstrap draw's *distinct* active clusters into two halves, copies kept together.

    A cluster drawn twice goes wholly to one half, so that the two halves never share a speaker:
    comparing them measures the difference between disjoint groups, as the estimate's speaker-
    disjoint halves do, and no duplicated row is ever paired with itself.

    Parameters
    ----------
    weights : ndarray, shape (B, K)
        Draws of :func:`bootstrap_weights`.
    active : ndarray of bool, shape (K,)
    rng : numpy.random.Generator

    Returns
    -------
    (first, second) : ndarray, float64, shape (B, K) each
        ``first + second == weights * active``.
    """
    w = weights * active[None, :]
    keys = rng.random(w.shape)
    keys[w <= 0] = np.inf
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    n_distinct = (w > 0).sum(1, keepdims=True)
    in_first = rank < n_distinct // 2
    first = np.where(in_first, w, 0.0)
    return first, w - first


def permutation_weights(n_a: int, n_b: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Language labels exchanged across clusters: the pooled ``n_a + n_b`` clusters re-dealt.

    Returns
    -------
    (a, b) : ndarray, float64, shape (n_perm, n_a + n_b) each
        0/1 weights of the pseudo-source (``n_a`` clusters) and pseudo-target (the other ``n_b``).
    """
    k = n_a + n_b
    a = np.zeros((n_perm, k))
    for p in range(n_perm):
        a[p, rng.permutation(k)[:n_a]] = 1.0
    return a, 1.0 - a


# ------------------------------------------------------------------------------------ intervals
def _clean(draws: np.ndarray) -> np.ndarray:
    d = np.array(draws, dtype=np.float64, copy=True)
    d[~np.isfinite(d)] = np.nan
    return d


def small_sample_widening(n_clusters: int, *, level: float = 0.95) -> float:
    """Widening of a cluster-bootstrap interval for few clusters: ``t_{K-1} / z * sqrt(K / (K-1))``.

    With K clusters the bootstrap variance of a mean is ``(K - 1) / K`` times the usual unbiased
    one, and an interval from an estimated variance should use Student's ``t`` with ``K - 1``
    degrees of freedom rather than the normal quantile (the advice for few clusters of Cameron,
    Gelbach and Miller, 2008). The factor multiplies the distances from the estimate to the ends
    of the re-centred interval; it is 1.08 at K = 24, 1.29 at K = 8 and tends to 1. K is the
    smaller side's number of clusters.

    Returns
    -------
    float
        ``>= 1``; ``inf`` for fewer than 2 clusters (no interval can be had).
    """
    from scipy.stats import norm, t

    k = int(n_clusters)
    if k < 2:
        return float("inf")
    q = 1.0 - (1.0 - level) / 2.0
    return float(t.ppf(q, k - 1) / norm.ppf(q) * np.sqrt(k / (k - 1.0)))


def recentred_interval(estimate: np.ndarray | float, draws: np.ndarray, *, level: float = 0.95,
                       widen: float | np.ndarray = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the draws, moved so that their median sits on the estimate.

    Parameters
    ----------
    estimate : float or ndarray, shape (...)
        Point estimates (e.g. one per layer).
    draws : ndarray, shape (B, ...)
        Bootstrap replicates of each estimate; NaN / inf draws are left out.
    level : float
        Nominal coverage, e.g. 0.95.
    widen : float or ndarray broadcastable to (...)
        Factor (``>= 1``) on both distances from the estimate, e.g. :func:`small_sample_widening`.

    Returns
    -------
    (low, high) : ndarray, shape (...)
        NaN where the estimate or every draw is undefined. Otherwise ``low <= estimate <= high``
        exactly (see the module docstring).
    """
    est = np.asarray(estimate, dtype=np.float64)
    d = _clean(draws)
    if d.shape[0] == 0:
        nan = np.full(est.shape, np.nan)
        return nan, nan
    tail = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as wanted
        q_lo, med, q_hi = np.nanquantile(d, [tail, 0.5, 1.0 - tail], axis=0)
    f = np.maximum(np.asarray(widen, dtype=np.float64), 1.0)
    low = est - f * (med - q_lo)
    high = est + f * (q_hi - med)
    bad = ~np.isfinite(est)
    low = np.where(bad, np.nan, low)
    high = np.where(bad, np.nan, high)
    return low, high


def simultaneous_level(draws: np.ndarray, *, level: float = 0.95) -> float:
    """Per-column level at which the columns' percentile intervals hold *jointly* at ``level``.

    With many layers compared with the best, per-comparison 95% intervals declare some layer
    "different" on a profile that is truly flat far more often than 5% of the time (the best of 12
    noisy layers beats the worst by about 2.3 standard errors of a difference). Calibrating on the
    draws themselves (the fraction of draws lying inside every column's interval at once) gives
    intervals with joint coverage ``level`` that adapt to how correlated the columns are.

    Parameters
    ----------
    draws : ndarray, shape (B, C)
        Bootstrap replicates of C quantities (NaN left out per column).
    level : float

    Returns
    -------
    float
        A per-column level in ``[level, 1]``.
    """
    d = _clean(draws)
    ok = np.isfinite(d)
    if d.ndim != 2 or d.shape[1] <= 1 or d.shape[0] < 2:
        return float(level)
    n = ok.sum(0).astype(np.float64)
    # mid-rank percentile of each draw within its column, two-sided tail
    ranks = np.argsort(np.argsort(np.where(ok, d, np.inf), axis=0, kind="stable"), axis=0, kind="stable")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (ranks + 0.5) / n[None, :]
    tail = np.where(ok, np.minimum(p, 1.0 - p), np.inf)
    joint = tail.min(1)                       # how far out the draw's most extreme column lies
    joint = joint[np.isfinite(joint)]
    if joint.size == 0:
        return float(level)
    a = float(np.quantile(joint, 1.0 - level, method="lower"))   # per-side tail keeping `level` of draws inside
    return float(min(1.0, max(level, 1.0 - 2.0 * a)))


@dataclass(frozen=True)
class Ties:
    """Which layers the data cannot tell apart from the best one.

    Attributes
    ----------
    best : int
        Layer with the best estimate among the ranked layers (-1 when none is defined).
    tied : ndarray of bool, shape (C,)
        The confidence set for the best layer: True where no other layer is shown to be better
        (the best itself always; unranked and undefined columns are False).
    diff_low, diff_high : ndarray, shape (C,)
        Simultaneous interval of ``best - layer`` (oriented so that larger = worse than the best).
    p_best : ndarray, shape (C,)
        Share of draws in which the column ranks first (NaN for unranked columns).
    critical : float
        The simultaneous critical value ``c`` (see :func:`ties_with_best`).
    flat : bool
        Every ranked layer is tied with the best: the data cannot show which layer is best.
    """

    best: int
    tied: np.ndarray
    diff_low: np.ndarray
    diff_high: np.ndarray
    p_best: np.ndarray
    critical: float
    flat: bool


def ties_with_best(estimate: np.ndarray, draws: np.ndarray, *, higher_is_better: bool = True,
                   level: float = 0.95, ranked: Sequence[int] | np.ndarray | None = None,
                   n_clusters: int | None = None) -> Ties:
    """Layers tied with the best: a confidence set for the best layer from paired draw-wise differences.

    For every ordered pair of ranked layers ``(j, l)`` the difference ``d_jl = s_j - s_l`` (``s``
    oriented so that larger is better) is computed in every draw (the draws are shared by all
    layers, so the differences are paired). Its interval is ``d_jl -+ f * c * sd_jl``: centred
    on the estimate (so it contains it), ``sd_jl`` the draws' standard deviation, and ``c`` the
    ``level`` quantile over draws of ``max_jl |d*_jl - median(d*_jl)| / sd_jl`` (a max-t
    critical value), so that the intervals of *all* pairs hold jointly at ``level``; ``f`` is
    :func:`small_sample_widening` at the tail depth of one of the ``m`` pairs (level
    ``1 - (1 - level) / m``), because the bootstrap's tails are normal where, with few clusters,
    the studentized differences' tails are Student's. A layer is
    *tied with the best* when no other layer's interval shows it better (``d_jl``'s lower end
    above 0 for no ``j``); the set of tied layers then contains the truly best layer with
    probability about ``level``, and a truly flat profile is reported flat about ``level`` of the
    time.

    Why not a per-comparison interval of "best minus layer": the best is picked by the data, so
    it is biased upwards (the winner's curse), and 11 comparisons at 95% each call some layer of
    a flat 12-layer profile "different" most of the time (simulated, 12 layers, 20 speakers: a
    flat profile was reported flat in 63% of data sets with simultaneous best-minus-layer
    percentile intervals; 93-95% here).

    Parameters
    ----------
    estimate : ndarray, shape (C,)
        One score per column (layer).
    draws : ndarray, shape (B, C)
        Bootstrap scores, the same draws for every column.
    higher_is_better : bool
        False for distances.
    level : float
    ranked : sequence of int, optional
        Columns that take part (default all; layer 0 is left out by the callers).
    n_clusters : int, optional
        Clusters of the smaller side, for the small-sample widening (none when not given).

    Returns
    -------
    Ties
    """
    est = np.asarray(estimate, dtype=np.float64)
    d = _clean(draws)
    c_all = est.size
    cols = np.arange(c_all) if ranked is None else np.asarray(ranked, dtype=np.int64)
    sign = 1.0 if higher_is_better else -1.0
    nan = np.full(c_all, np.nan)
    tied = np.zeros(c_all, bool)
    p_best = nan.copy()
    ok_est = np.isfinite(est[cols])
    if not ok_est.any():
        return Ties(-1, tied, nan, nan.copy(), p_best, float("nan"), False)
    key = np.where(ok_est, sign * est[cols], -np.inf)
    best = int(cols[int(np.argmax(key))])
    live = cols[ok_est]
    if d.shape[0] == 0:
        # no draws: nothing can be shown, every defined layer counts as tied
        tied[live] = True
        return Ties(best, tied, nan, nan.copy(), p_best, float("nan"), True)
    sub = sign * d[:, cols]
    valid_rows = np.isfinite(sub).any(1)
    winners = np.argmax(np.where(np.isfinite(sub), sub, -np.inf)[valid_rows], axis=1)
    p_best[cols] = np.bincount(winners, minlength=cols.size) / max(int(valid_rows.sum()), 1)
    s = sign * est[live]
    sd_ = sign * d[:, live]
    dhat = s[:, None] - s[None, :]                          # (C, C): d_jl = s_j - s_l
    dd = sd_[:, :, None] - sd_[:, None, :]                  # (B, C, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(dd, axis=0)
        sig = np.nanstd(dd, axis=0)
        off = ~np.eye(live.size, dtype=bool) & (sig > 0)
        t = np.where(off[None], np.abs(dd - med[None]) / np.where(sig > 0, sig, 1.0)[None], np.nan)
        t_max = np.nanmax(t.reshape(t.shape[0], -1), axis=1) if off.any() else np.zeros(1)
    t_max = t_max[np.isfinite(t_max)]
    crit = float(np.quantile(t_max, level)) if t_max.size else 0.0
    n_pairs = max(live.size * (live.size - 1) // 2, 1)
    widen = small_sample_widening(n_clusters, level=1.0 - (1.0 - level) / n_pairs) if n_clusters else 1.0
    with np.errstate(invalid="ignore"):
        margin = widen * crit * sig
    margin = np.where(np.isfinite(margin), margin, np.inf)   # an undefined spread shows no difference
    lower = dhat - margin                                    # NaN-free: undefined spreads never "show" a difference
    np.fill_diagonal(lower, -np.inf)
    shown_better = (lower > 0).any(axis=0)                   # some j is shown better than l
    tied[live] = ~shown_better
    tied[best] = True
    b = int(np.flatnonzero(live == best)[0])
    diff_low, diff_high = nan.copy(), nan.copy()
    diff_low[live] = dhat[b] - margin[b]
    diff_high[live] = dhat[b] + margin[b]
    diff_low[best] = diff_high[best] = 0.0
    return Ties(best, tied, diff_low, diff_high, p_best, crit, bool(np.all(tied[live])))


def permutation_p(observed: np.ndarray, null: np.ndarray, *, higher_is_more_similar: bool = True) -> np.ndarray:
    """One-sided permutation p-value that the sides differ more than exchangeable labels allow.

    ``p = (1 + #{null at least as extreme as observed}) / (1 + P)``, with "extreme" meaning as
    dissimilar (lower similarity, higher distance). The +1 counts the observed labelling as one of
    the permutations, so ``p`` is never 0 and the test is valid at any P (Phipson and Smyth, 2010).

    Parameters
    ----------
    observed : ndarray, shape (C,)
    null : ndarray, shape (P, C)
        Scores under permuted labels (NaN left out per column).

    Returns
    -------
    ndarray, shape (C,)
        NaN where the observed score is undefined or there is no valid permutation.
    """
    obs = np.asarray(observed, dtype=np.float64)
    nd = _clean(null)
    if nd.shape[0] == 0:
        return np.full(obs.shape, np.nan)
    ok = np.isfinite(nd)
    extreme = (nd <= obs[None]) if higher_is_more_similar else (nd >= obs[None])
    n_ext = (extreme & ok).sum(0)
    n_ok = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (1.0 + n_ext) / (1.0 + n_ok)
    return np.where(np.isfinite(obs) & (n_ok > 0), p, np.nan)
