"""Estimators of the similarity metrics on clustered rows, one score per draw of cluster weights.

Pure functions on arrays (no stores, no layers): the data of a group of rows arrive aggregated
per **cluster** (a speaker, or an utterance when speakers are unknown) and a family of draws is a
weight array ``w`` of shape ``(R, K)`` (:mod:`analysis.resampling`); a row weighs what its cluster
weighs. Any two groups can be compared (two languages, two halves of one language, two phone
classes), which is how the vowel map and the report reuse them.

Why U-statistics over pairs of *different* clusters
---------------------------------------------------
Every metric has *within-group pair terms*: the squared norm of a centroid
``||m||^2 = sum_ij w_i w_j x_i.x_j / W^2``, MMD's ``mean k(x, x')``, CORAL's
``tr(C^2) = E[((x - mu).(x' - mu))^2]``. Written over all pairs (a V-statistic) they include each
row paired with itself and with the other rows of its speaker, which share the speaker's offset;
under resampling with replacement a drawn speaker's copies are paired with each other too. Those
pairs add positive mass that has nothing to do with the population quantity: ``||m||^2`` estimates
``||mu||^2 + tr(Cov(m))``, and in 512-1280 dimensions ``tr(Cov(m))`` is large, so the plain
centroid cosine is pulled towards 0 by an amount that grows with the noise (more for noisy layers,
more in bootstrap draws than in the estimate), which is why its intervals missed their estimate.
Here every within-group pair term is averaged over pairs of rows from **different clusters** only:
such rows are independent draws from the population, so the term is unbiased, whatever the number
of rows per speaker or the number of copies a draw holds. Cross-group terms (source x target,
half x half) pair disjoint clusters and need no correction.

Metrics (``higher`` = larger is more similar)
---------------------------------------------
``centroid_cosine`` (higher): ``m_a . m_b / sqrt(U_a U_b)`` with ``U`` the U-statistic of
``||mu||^2``. Estimates ``cos(mu_a, mu_b)``; being a ratio of unbiased parts it can leave
``[-1, 1]`` by sampling error when the truth is near +-1 (e.g. two halves of one language).
``pairwise_cosine`` (higher): ``n_a . n_b``, ``n`` the mean of unit-normalised rows; equals the
mean cosine over all source x target pairs. Cross terms only.
``standardized_cosine`` (higher): cosine of the *deviations* ``m_unit - m_phones`` of each group
(its unit's centroid minus the mean of all its phone rows), in the metric of a fixed per-dimension
scale; the squared norms as U-statistics (see :func:`deviation_parts`).
``coral`` (lower): relative CORAL ``||C_a - C_b||_F^2 / (||C_a||_F^2 + ||C_b||_F^2)
= 1 - 2 tr(C_a C_b) / (tr C_a^2 + tr C_b^2)``, in ``[0, 1]`` for the population (0: equal
covariances, 1: orthogonal supports); scale-free, so a layer's activation variance does not set its
rank. ``tr C^2`` and ``tr(C_a C_b)`` as U-statistics of ``((x1 - x2).(x3 - x4))^2 / 4`` over rows
of different clusters, which needs no centring (centring each draw on its own mean biases the
traces by an amount that grows with the dimension and doubles under resampling); 4 clusters per
group. Callers may shift the rows by a fixed vector first (the traces do not change; the
estimates' noise does, see :func:`cov_trace_within`).
``mmd`` (lower): unbiased MMD^2 with ``k(x, y) = exp(-||x - y||^2 / h)``, ``h`` fixed once from
the full sample; within-group kernel means from different-cluster pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "GramBlock",
    "centroid_cosine",
    "cluster_sums",
    "cosine",
    "cov_trace_cross",
    "cov_trace_within",
    "deviation_parts",
    "group_means",
    "kernel_cross",
    "kernel_within",
    "norm2_u",
    "one_hot",
    "rowdot",
]


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of two ``(R, H)`` arrays -> ``(R,)``."""
    return np.einsum("rh,rh->r", a, b)


def one_hot(clusters: np.ndarray, n_clusters: int) -> sp.csr_matrix:
    """``(m, K)`` indicator of each row's cluster (``clusters`` int array of length m)."""
    m = clusters.size
    return sp.csr_matrix((np.ones(m), (np.arange(m), clusters)), shape=(m, n_clusters))


def cluster_sums(x: np.ndarray, clusters: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and row counts of rows ``x`` ``(m, H)`` -> ``((K, H), (K,))``."""
    m = one_hot(np.asarray(clusters, np.int64), n_clusters)
    return np.asarray(m.T @ np.asarray(x, np.float64)), np.asarray(m.sum(0)).ravel()


# --------------------------------------------------------------------------- sums (cosines)
def group_means(sums: np.ndarray, counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean of a group's rows in every draw.

    Parameters
    ----------
    sums : ndarray, shape (K, H)
        Sum of the rows of each cluster.
    counts : ndarray, shape (K,)
        Rows of each cluster.
    w : ndarray, shape (R, K)
        Cluster weights of R draws.

    Returns
    -------
    ndarray, shape (R, H)
        NaN in draws that give the group no row.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ sums) / (w @ counts)[:, None]


def norm2_u(sums: np.ndarray, counts: np.ndarray, self_dots: np.ndarray, w: np.ndarray,
            totals: np.ndarray | None = None) -> np.ndarray:
    """Unbiased ``||E x||^2``: the mean of ``x_i . x_j`` over pairs of rows in different clusters.

    ``sum_{c != c'} w_c w_c' S_c . S_c' / sum_{c != c'} w_c w_c' N_c N_c'`` with ``S_c`` the
    cluster sums: pairs inside a cluster (and between copies of a drawn cluster) are left out.

    Parameters
    ----------
    sums : ndarray, shape (K, H)
    counts : ndarray, shape (K,)
    self_dots : ndarray, shape (K,)
        ``S_c . S_c`` (in the metric used).
    w : ndarray, shape (R, K)
    totals : ndarray, shape (R, H), optional
        ``w @ sums`` if already computed.

    Returns
    -------
    ndarray, shape (R,)
        NaN where fewer than two clusters with rows have weight.
    """
    tot = w @ sums if totals is None else totals
    w2 = w * w
    num = rowdot(tot, tot) - w2 @ self_dots
    den = (w @ counts) ** 2 - w2 @ (counts * counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-9 * np.maximum((w @ counts) ** 2, 1e-300), num / den, np.nan)


def cosine(num: np.ndarray, norm2_a: np.ndarray, norm2_b: np.ndarray) -> np.ndarray:
    """``num / sqrt(norm2_a * norm2_b)``; NaN where a squared norm is not positive."""
    with np.errstate(invalid="ignore", divide="ignore"):
        prod = norm2_a * norm2_b
        return np.where((norm2_a > 0) & (norm2_b > 0), num / np.sqrt(np.where(prod > 0, prod, 1.0)), np.nan)


def centroid_cosine(sums_a: np.ndarray, counts_a: np.ndarray, w_a: np.ndarray,
                    sums_b: np.ndarray, counts_b: np.ndarray, w_b: np.ndarray) -> np.ndarray:
    """Centroid cosine of two groups per draw, squared norms as different-cluster U-statistics.

    Parameters
    ----------
    sums_a, sums_b : ndarray, shape (K_a, H), (K_b, H)
        Per-cluster row sums of each group.
    counts_a, counts_b : ndarray, shape (K_a,), (K_b,)
    w_a, w_b : ndarray, shape (R, K_a), (R, K_b)
        Draws; the two groups must not share a cluster with weight in the same draw.

    Returns
    -------
    ndarray, shape (R,)
    """
    ta, tb = w_a @ sums_a, w_b @ sums_b
    with np.errstate(invalid="ignore", divide="ignore"):
        num = rowdot(ta, tb) / ((w_a @ counts_a) * (w_b @ counts_b))
    ua = norm2_u(sums_a, counts_a, rowdot(sums_a, sums_a), w_a, ta)
    ub = norm2_u(sums_b, counts_b, rowdot(sums_b, sums_b), w_b, tb)
    return cosine(num, ua, ub)


def deviation_parts(unit_sums: np.ndarray, unit_counts: np.ndarray, ref_sums: np.ndarray, ref_counts: np.ndarray,
                    w: np.ndarray, *, norm: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """A group's deviation ``m_unit - m_ref`` per draw and an unbiased estimate of its squared norm.

    With cluster means ``x_c`` (unit rows) and ``y_c`` (reference rows) and the draw's shares
    ``a_c = w_c N_unit,c / N_unit`` and ``p_c = w_c N_ref,c / N_ref``, the deviation is
    ``d = sum_c z_c``, ``z_c = a_c x_c - p_c y_c``. Leaving out the ``c = c'`` products,
    ``sum_{c != c'} z_c . z_c'`` has expectation ``|delta|^2 - sum_c |a_c mu_u - p_c mu_r|^2``; the
    subtracted term is put back with U-statistics of ``|mu_u|^2``, ``mu_u . mu_r`` and ``|mu_r|^2``
    (pairs of different clusters), so the estimate is unbiased whatever each speaker's share of
    unit rows. (When the shares differ, a speaker carries the features' large common mean into
    ``z_c``; a normalisation by ``1 - sum a_c^2`` alone would then subtract ``|mean|^2 sum (a_c -
    p_c)^2``, which on raw transformer features swamps the deviation.) Rows must already be in the
    metric wanted (divided by the scale).

    Parameters
    ----------
    unit_sums, ref_sums : ndarray, shape (K, H)
        Per-cluster sums of the unit's rows and of the reference rows (all phone rows, unit included).
    unit_counts, ref_counts : ndarray, shape (K,)
    w : ndarray, shape (R, K)
    norm : bool
        Also return the squared-norm estimate.

    Returns
    -------
    (deviation (R, H), norm2 (R,) or None)
        ``norm2`` is NaN with fewer than two clusters holding rows.
    """
    nu, nr = w @ unit_counts, w @ ref_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        m_u = (w @ unit_sums) / nu[:, None]
        m_r = (w @ ref_sums) / nr[:, None]
        dev = m_u - m_r
        if not norm:
            return dev, None
        w2 = w * w
        v_u = (w2 @ rowdot(unit_sums, unit_sums)) / nu ** 2          # sum a_c^2 |x_c|^2
        v_r = (w2 @ rowdot(ref_sums, ref_sums)) / nr ** 2            # sum p_c^2 |y_c|^2
        v_ur = (w2 @ rowdot(unit_sums, ref_sums)) / (nu * nr)        # sum a_c p_c x_c . y_c
        a2 = (w2 @ (unit_counts * unit_counts)) / nu ** 2
        p2 = (w2 @ (ref_counts * ref_counts)) / nr ** 2
        ap = (w2 @ (unit_counts * ref_counts)) / (nu * nr)
        u_uu = (rowdot(m_u, m_u) - v_u) / (1 - a2)
        u_rr = (rowdot(m_r, m_r) - v_r) / (1 - p2)
        u_ur = (rowdot(m_u, m_r) - v_ur) / (1 - ap)
        n2 = rowdot(dev, dev) - (v_u - 2 * v_ur + v_r) + a2 * u_uu - 2 * ap * u_ur + p2 * u_rr
        n2 = np.where((1 - a2 > 1e-9) & (1 - p2 > 1e-9) & (1 - ap > 1e-9), n2, np.nan)
    return dev, n2


# --------------------------------------------------------------------------- Gram (MMD, CORAL)
@dataclass(frozen=True)
class GramBlock:
    """A block of a Gram (or kernel) matrix between row groups ``a`` and ``b``, cluster-aggregated.

    Every quantity the draws need is precomputed once per block, so that a family of R draws costs
    ``O(R K^2 + R m K)`` instead of ``O(R m^2)``.

    Attributes
    ----------
    g : ndarray, shape (m_a, m_b)
        ``x_i . y_j`` (linear Gram, for CORAL) or ``k(x_i, y_j)`` (kernel, for MMD).
    clusters_a, clusters_b : ndarray of int, shape (m_a,), (m_b,)
    n_a, n_b : ndarray, shape (K_a,), (K_b,)
        Rows per cluster.
    c1 : ndarray, shape (K_a, K_b)
        ``sum_{i in c, j in c'} g_ij``.
    c2 : ndarray, shape (K_a, K_b) or None
        Same for ``g_ij^2`` (CORAL only).
    gm_b : ndarray, shape (m_a, K_b) or None
        ``sum_{j in c'} g_ij`` (CORAL only).
    gm_a : ndarray, shape (m_b, K_a) or None
        ``sum_{i in c} g_ij`` (CORAL only).
    """

    g: np.ndarray
    clusters_a: np.ndarray
    clusters_b: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    c1: np.ndarray
    c2: np.ndarray | None
    gm_b: np.ndarray | None
    gm_a: np.ndarray | None

    @classmethod
    def build(cls, g: np.ndarray, clusters_a: np.ndarray, k_a: int, clusters_b: np.ndarray, k_b: int, *,
              squares: bool) -> GramBlock:
        """Aggregate ``g`` over clusters; ``squares`` also for CORAL's squared terms."""
        ma, mb = one_hot(clusters_a, k_a), one_hot(clusters_b, k_b)
        gm_b = np.asarray((mb.T @ g.T).T)                  # (m_a, K_b)
        c1 = np.asarray(ma.T @ gm_b)                        # (K_a, K_b)
        c2: np.ndarray | None = None
        gm_a: np.ndarray | None = None
        if squares:
            c2 = np.asarray(ma.T @ np.asarray((mb.T @ (g * g).T).T))
            gm_a = np.asarray((ma.T @ g).T)                 # (m_b, K_a)
        return cls(g, np.asarray(clusters_a), np.asarray(clusters_b), np.asarray(ma.sum(0)).ravel(),
                   np.asarray(mb.sum(0)).ravel(), c1, c2, gm_b if squares else None, gm_a)

    def squares(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(c2, gm_b, gm_a)``, which CORAL needs; an error for a block built without them."""
        if self.c2 is None or self.gm_b is None or self.gm_a is None:
            raise ValueError("this GramBlock was built with squares=False (MMD); CORAL needs squares=True")
        return self.c2, self.gm_b, self.gm_a


def kernel_within(block: GramBlock, w: np.ndarray) -> np.ndarray:
    """Mean of ``g(x_i, x_j)`` over pairs of rows in different clusters of one group, per draw.

    ``block`` is the group's block with itself. Returns ``(R,)``, NaN with fewer than two clusters.
    """
    n = block.n_a
    w2 = w * w
    num = rowdot(w @ block.c1, w) - w2 @ np.diag(block.c1)
    den = (w @ n) ** 2 - w2 @ (n * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def kernel_cross(block: GramBlock, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
    """Mean of ``g(x_i, y_j)`` over all pairs of the two groups, per draw -> ``(R,)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return rowdot(w_a @ block.c1, w_b) / ((w_a @ block.n_a) * (w_b @ block.n_b))


def _agg(v: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """Per-draw sums of row values over clusters: ``(R, m) -> (R, K)``."""
    return np.asarray((one_hot(clusters, k).T @ v.T).T)


def _pairs_distinct(w: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``sum_{c != c'} w_c w_c' n_c n_c'`` per draw: ``(R,)``."""
    return (w @ n) ** 2 - (w * w) @ (n * n)


def _fourth_moment_terms(block: GramBlock, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three U-statistics of ``tr(C^2) = A - 2B + C`` for one group (``block`` with itself).

    ``A = E[(x1.x2)^2]``, ``B = E[(x1.x2)(x1.x3)] = mu'(C + mu mu')mu``, ``C = E[(x1.x2)(x3.x4)]
    = (mu'mu)^2``, each averaged over tuples of rows from pairwise different clusters.
    """
    n = block.n_a
    w2 = w * w
    wn = w @ n
    qn = w2 @ (n * n)
    c2, gm, _ = block.squares()
    # A: pairs from different clusters
    a_num = rowdot(w @ c2, w) - w2 @ np.diag(c2)
    # B: row i with rows j, k of two other clusters, different from each other
    cl = block.clusters_a                                  # gm (m, K): v_ic = sum_{j in c} G_ij
    own = gm[np.arange(cl.size), cl]                       # v_{i, c(i)}
    wc = w[:, cl]                                          # (R, m): weight of row i's cluster
    s = w @ gm.T - wc * own[None]
    q = w2 @ (gm * gm).T - wc * wc * (own * own)[None]
    b_num = rowdot(_agg(s * s - q, cl, n.size), w)
    wn_c = w * n[None]                                      # (R, K)
    b_den = rowdot(wn_c, (wn[:, None] - wn_c) ** 2 - (qn[:, None] - wn_c * wn_c))
    # C: two pairs, four different clusters (inclusion-exclusion on the cluster-level sums)
    c1 = block.c1 - np.diag(np.diag(block.c1))
    tot = rowdot(w @ c1, w)
    r = w * (w @ c1)
    c_num = tot * tot - 4 * (r * r).sum(1) + 2 * rowdot(w2 @ (c1 * c1), w2)
    pn = wn * wn - qn
    rn = wn_c * (wn[:, None] - wn_c)
    c_den = pn * pn - 4 * (rn * rn).sum(1) + 2 * (qn * qn - (w2 * w2) @ n ** 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(pn > 0, a_num / pn, np.nan)
        b = np.where(b_den > 0, b_num / b_den, np.nan)
        c = np.where(c_den > 0, c_num / c_den, np.nan)
    return a, b, c


def cov_trace_within(block: GramBlock, w: np.ndarray) -> np.ndarray:
    """Unbiased ``tr(C^2)`` of one group: ``A - 2B + C`` (see :func:`_fourth_moment_terms`).

    No centring: ``tr(C^2) = E[((x1 - x2).(x3 - x4))^2] / 4`` over four independent rows expands into
    the three moments, each estimated over rows of pairwise different clusters, so the estimate is
    unbiased whatever the speakers' offsets and whatever copies a draw holds (centring on the
    draw's own mean is not: its error correlates with the rows and grows with the dimension).
    ``block`` is the group's block with itself (linear Gram, ``squares=True``).

    Returns ``(R,)``; NaN where fewer than four clusters have weight.
    """
    a, b, c = _fourth_moment_terms(block, w)
    return a - 2 * b + c


def cov_trace_cross(block: GramBlock, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
    """Unbiased ``tr(C_a C_b) = A - B_a - B_b + C`` of two groups with no cluster in common.

    ``A = E[(x.y)^2]``, ``B_a = E[(x.y1)(x.y2)]``, ``B_b = E[(x1.y)(x2.y)]``,
    ``C = E[(x1.y1)(x2.y2)] = (mu_a.mu_b)^2``, from ``((x1 - x2).(y1 - y2))^2 / 4``; rows of one
    group in a term come from different clusters. Returns ``(R,)``; NaN where a group has fewer
    than two clusters with weight.
    """
    na, nb = block.n_a, block.n_b
    c2, gm_b, gm_a = block.squares()
    wan, wbn = w_a @ na, w_b @ nb
    pa, pb = _pairs_distinct(w_a, na), _pairs_distinct(w_b, nb)
    a_num = rowdot(w_a @ c2, w_b)
    # B_a: row i of a with rows of two different b clusters
    s = w_b @ gm_b.T
    q = (w_b * w_b) @ (gm_b * gm_b).T
    ba_num = rowdot(_agg(s * s - q, block.clusters_a, na.size), w_a)
    s = w_a @ gm_a.T
    q = (w_a * w_a) @ (gm_a * gm_a).T
    bb_num = rowdot(_agg(s * s - q, block.clusters_b, nb.size), w_b)
    c1 = block.c1
    u = w_a @ c1                                           # (R, K_b)
    v = w_b @ c1.T                                         # (R, K_a)
    tot = rowdot(u, w_b)
    c_num = (tot * tot - rowdot(w_a * w_a, v * v) - rowdot(w_b * w_b, u * u)
             + rowdot((w_a * w_a) @ (c1 * c1), w_b * w_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        a = a_num / (wan * wbn)
        ba = np.where(pb > 0, ba_num / (wan * pb), np.nan)
        bb = np.where(pa > 0, bb_num / (wbn * pa), np.nan)
        c = np.where((pa > 0) & (pb > 0), c_num / (pa * pb), np.nan)
    return a - ba - bb + c
