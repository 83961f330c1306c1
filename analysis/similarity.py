"""Cross-language similarity of pooled representations, layer by layer, with honest uncertainty.

Units
-----
``Utt`` (utterance vectors), ``Vowl`` (segments of the six vowel classes), ``Cons`` (consonant
segments), and each vowel class ``A E @ i O u`` alone. Silence, ``unknown`` and ``excluded``
segments are never used.

Metrics (``higher`` = larger means more similar; estimators in :mod:`analysis.estimators`)
------------------------------------------------------------------------------------------
``centroid_cosine`` (default, as in the paper; higher)
    cosine of the two centroids, squared norms estimated from pairs of rows of different speakers.
``pairwise_cosine`` (higher)
    mean cosine over all source x target pairs (dot product of the mean unit vectors).
``standardized_cosine`` (higher)
    cosine of the unit's *deviation from its own language's average phone*: each corpus is centred
    on the mean of its own phone rows (all vowel and consonant segments) and every dimension is
    divided by the pooled within-corpus standard deviation (average of the two corpora's variances
    over their phone rows, fixed once per layer from the full sample). Raw transformer features
    share one large direction, which pushes every raw centroid cosine towards 1; this removes it
    and compares what is specific to the unit. Undefined for ``Utt`` (utterances are not phones;
    centring utterances on their own corpus mean would leave nothing to compare), so ``Utt`` is
    refused for it.
``coral`` (lower)
    relative CORAL ``||C_s - C_t||_F^2 / (||C_s||_F^2 + ||C_t||_F^2)``, in [0, 1]: scale-free, so
    a layer's activation variance does not decide its rank (the raw Deep CORAL distance, which
    grows with it, is reported unranked as ``coral_raw``). Needs 4 clusters per side.
``mmd`` (lower)
    unbiased squared MMD with ``k(x, y) = exp(-||x - y||^2 / h)``, ``h`` the median pairwise
    squared distance of the pooled sample (fixed once per unit and layer).

The cosine metrics use *every* row, streamed: one pass over each store per layer gathers per
(unit class, cluster) sums, so memory is ``8 x clusters x hidden`` per store whatever the number
of segments. ``coral`` and ``mmd`` use a seeded subsample of at most ``max_rows`` rows per unit and
corpus (the same rows in every layer) and cluster-aggregated Gram matrices.

Resampling (``resample``)
-------------------------
The independent unit is the **speaker**: with ``auto`` (default) draws resample speakers with
replacement whenever both sides carry speaker labels with at least 2 speakers each, otherwise
utterances (with a one-line warning: utterances of one speaker are not independent, so the
intervals are then too narrow). ``speaker`` with too few speakers is an error. A drawn speaker's
utterances and segments all count as often as it was drawn. A unit whose rows come from fewer
clusters than its metric needs on a side (2; 4 for ``coral``) gets no score, and the reason is
recorded.

Intervals, references, gap, ties, null
--------------------------------------
* Intervals: the percentile interval of the draws re-centred on the estimate (its median moved
  onto it), widened for few clusters by ``t_{K-1}/z * sqrt(K/(K-1))``
  (:mod:`analysis.resampling`). Every interval contains its estimate, by construction.
* Within-language reference: each side's clusters split into two disjoint halves (speaker-disjoint
  under speaker resampling; ``n_halves`` random splits averaged), scored against each other; the
  cross-language score at the **same sample size** compares a half of one side with a half of the
  other (the four pairings averaged). Within-side terms (a centroid's squared norm, MMD's and
  CORAL's within-sample terms) come from the whole side in both, so the two differ only in which
  halves meet. ``gap`` = reference minus cross-language score for similarities, cross minus
  reference for distances: positive = the languages differ more than the same language does.
  Every bootstrap draw is split the same way (its distinct clusters dealt into halves, copies kept
  together), which gives the gap its interval.
* Ties: for each layer, the paired draw-wise difference from the best layer, with simultaneous
  re-centred intervals at ``ci_level`` (:func:`analysis.resampling.ties_with_best`); layers whose
  interval contains 0 are tied with the best; all tied = ``flat``. ``p_best`` = share of draws in
  which the layer ranks first.
* Null control (``n_permutations``): the pooled clusters (speakers) of both sides re-dealt at random
  to two sides of the original sizes; per layer, the null profile and the p-value
  ``(1 + #{null <= observed}) / (1 + P)`` (``>=`` for distances).
* ``by_emotion``: every score also per emotion and averaged over the emotions present in both
  (draws averaged the same way).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from phonalign.progress import track
from phonalign.records import EMOTIONS, VOWEL_CLASSES

from . import estimators as est
from .confounds import DurationSummary, duration_warning, match_durations
from .defaults import (
    CI_LEVEL,
    DEFAULT_METRIC,
    DEFAULT_RESAMPLE,
    MAX_ROWS,
    METRICS,
    N_BOOTSTRAP,
    N_HALVES,
    N_PERMUTATIONS,
    RESAMPLE_MODES,
    SEED,
    TOP_K,
    UNITS,
)
from .errors import SimilarityError
from .resampling import (
    bootstrap_weights,
    half_splits,
    permutation_p,
    permutation_weights,
    recentred_interval,
    small_sample_widening,
    split_draws,
    ties_with_best,
)
from .store import FeatureStore, check_finite, describe_layers, model_digest

logger = logging.getLogger(__name__)

#: Clusters a side needs for each metric's within-side terms.
MIN_CLUSTERS: dict[str, int] = {"centroid_cosine": 2, "pairwise_cosine": 2, "standardized_cosine": 2,
                                "coral": 4, "mmd": 2}
#: Store settings that may differ between the two stores: an aligned store and a plain-folder
#: store pool utterances identically (only the aligned one has segment rows).
COMPATIBLE_SETTINGS: tuple[str, ...] = ("input",)
_SUM_METRICS = ("centroid_cosine", "pairwise_cosine", "standardized_cosine")
_ROW_METRICS = ("coral", "mmd")
#: storage classes: 0 utterance, 1..6 vowel classes, 7 consonant
_CLASSES: tuple[str, ...] = ("utterance",) + VOWEL_CLASSES + ("consonant",)
_PHONE_CLASSES: list[int] = list(range(1, 8))
_UNIT_CLASSES: dict[str, list[int]] = {"Utt": [0], "Vowl": [1, 2, 3, 4, 5, 6], "Cons": [7],
                                       **{v: [1 + i] for i, v in enumerate(VOWEL_CLASSES)}}


# ------------------------------------------------------------------------------------ arrays
def median_bandwidth(a: np.ndarray, b: np.ndarray) -> float:
    """Median of the pairwise squared distances of the pooled rows of ``a`` and ``b`` (off-diagonal)."""
    x = np.concatenate([a, b]).astype(np.float64)
    g = x @ x.T
    d = np.maximum(np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g, 0.0)
    iu = np.triu_indices(len(x), 1)
    h = float(np.median(d[iu])) if iu[0].size else 1.0
    return h if h > 0 else 1.0


def coral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Raw Deep CORAL distance ``||C_a - C_b||_F^2 / (4 d^2)`` (covariances with ``1/(n-1)``).

    The quantity the training loss minimises; it grows with the features' variance, so it is
    never used to rank layers (see ``coral`` in :data:`METRICS`).

    Parameters
    ----------
    a, b : ndarray, shape (n_a, d) and (n_b, d)
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(np.sum((ca - cb) ** 2) / (4.0 * a.shape[1] ** 2))


def _own_clusters(n: int, clusters: np.ndarray | None) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    c = np.unique(np.asarray(clusters), return_inverse=True)[1]
    return c, int(c.max()) + 1 if c.size else 0


def mmd_rbf(a: np.ndarray, b: np.ndarray, *, bandwidth: float | None = None,
            clusters_a: np.ndarray | None = None, clusters_b: np.ndarray | None = None) -> float:
    """Unbiased squared MMD with ``k(x, y) = exp(-||x-y||^2 / h)``; ``h`` by the median heuristic.

    Within-sample kernel means are taken over pairs of rows of different clusters (default: every
    row its own cluster, the classical unbiased estimator).
    """
    return similarity(a, b, metric="mmd", clusters_a=clusters_a, clusters_b=clusters_b, bandwidth=bandwidth)


def similarity(a: np.ndarray, b: np.ndarray, *, metric: str = "centroid_cosine",
               clusters_a: np.ndarray | None = None, clusters_b: np.ndarray | None = None,
               phones_a: np.ndarray | None = None, phones_b: np.ndarray | None = None,
               phone_clusters_a: np.ndarray | None = None, phone_clusters_b: np.ndarray | None = None,
               bandwidth: float | None = None) -> float:
    """Similarity of two sets of pooled vectors (librosa-style: arrays in, a number out).

    The same estimators as :func:`compare_stores` (its ``score`` for one unit and layer).

    Parameters
    ----------
    a, b : ndarray, float, shape (n_a, H) and (n_b, H)
        Pooled vectors of one unit in one layer, source and target.
    metric : str
        One of :data:`METRICS` (see the module docstring); ``coral`` and ``mmd`` are distances.
    clusters_a, clusters_b : array of hashable, shape (n_a,), (n_b,), optional
        Speaker (or other cluster) of every row; within-side pair terms use pairs of rows of
        different clusters. Default: every row its own cluster.
    phones_a, phones_b : ndarray, shape (m_a, H), (m_b, H)
        For ``standardized_cosine``: every phone row of each corpus (the unit's rows included),
        which fix the corpus' average phone and the scale; ``phone_clusters_*`` their clusters.
    bandwidth : float, optional
        MMD bandwidth ``h`` (default: :func:`median_bandwidth`).

    Returns
    -------
    float
        NaN where the estimator is undefined (e.g. fewer clusters than the metric needs).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise SimilarityError(f"cannot compare arrays of shapes {a.shape} and {b.shape}",
                              hint="pass two non-empty (n, H) arrays with the same H")
    if metric not in METRICS:
        raise SimilarityError(f"unknown metric {metric!r}", hint=f"use one of {', '.join(METRICS)}")
    ca, ka = _own_clusters(len(a), clusters_a)
    cb, kb = _own_clusters(len(b), clusters_b)
    one_a, one_b = np.ones((1, ka)), np.ones((1, kb))
    if metric in ("centroid_cosine", "pairwise_cosine"):
        if metric == "pairwise_cosine":
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
            sa, na = est.cluster_sums(a, ca, ka)
            sb, nb = est.cluster_sums(b, cb, kb)
            return float(est.rowdot(est.group_means(sa, na, one_a), est.group_means(sb, nb, one_b))[0])
        sa, na = est.cluster_sums(a, ca, ka)
        sb, nb = est.cluster_sums(b, cb, kb)
        return float(est.centroid_cosine(sa, na, one_a, sb, nb, one_b)[0])
    if metric == "standardized_cosine":
        if phones_a is None or phones_b is None:
            raise SimilarityError("standardized_cosine needs every phone row of each corpus",
                                  hint="pass phones_a= and phones_b= (the unit's rows included)")
        pa, pb = np.asarray(phones_a, np.float64), np.asarray(phones_b, np.float64)
        if clusters_a is not None and phone_clusters_a is None or clusters_b is not None and phone_clusters_b is None:
            raise SimilarityError("clusters given for the unit rows but not for the phone rows",
                                  hint="pass phone_clusters_a= and phone_clusters_b= too")
        sd = np.sqrt((pa.var(0) + pb.var(0)) / 2) + 1e-12
        out = []
        for x, p, c, pc in ((a, pa, clusters_a, phone_clusters_a), (b, pb, clusters_b, phone_clusters_b)):
            names = np.unique(np.concatenate([np.asarray(c if c is not None else np.arange(len(x))),
                                              np.asarray(pc if pc is not None else len(x) + np.arange(len(p)))]))
            cu = np.searchsorted(names, np.asarray(c if c is not None else np.arange(len(x))))
            cp = np.searchsorted(names, np.asarray(pc if pc is not None else len(x) + np.arange(len(p))))
            su, nu = est.cluster_sums(x / sd, cu, names.size)
            spp, npp = est.cluster_sums(p / sd, cp, names.size)
            out.append(est.deviation_parts(su, nu, spp, npp, np.ones((1, names.size))))
        (da, ua), (db, ub) = out
        assert ua is not None and ub is not None
        return float(est.cosine(est.rowdot(da, db), ua, ub)[0])
    if metric == "mmd":
        h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
        blocks = _kernel_blocks(a, ca, ka, b, cb, kb, h)
        return float((est.kernel_within(blocks["ss"], one_a) + est.kernel_within(blocks["tt"], one_b)
                      - 2 * est.kernel_cross(blocks["st"], one_a, one_b))[0])
    blocks = _gram_blocks(a - a.mean(0), ca, ka, b - b.mean(0), cb, kb)
    taa = est.cov_trace_within(blocks["ss"], one_a)
    tbb = est.cov_trace_within(blocks["tt"], one_b)
    tab = est.cov_trace_cross(blocks["st"], one_a, one_b)
    return float((1 - 2 * tab / (taa + tbb))[0])


def _sqdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0.0)


def _kernel_blocks(xs: np.ndarray, cs: np.ndarray, ks: int, xt: np.ndarray, ct: np.ndarray, kt: int,
                   h: float) -> dict[str, est.GramBlock]:
    def blk(x, cx, kx, y, cy, ky):
        return est.GramBlock.build(np.exp(-_sqdist(x, y) / h), cx, kx, cy, ky, squares=False)
    return {"ss": blk(xs, cs, ks, xs, cs, ks), "tt": blk(xt, ct, kt, xt, ct, kt), "st": blk(xs, cs, ks, xt, ct, kt)}


def _gram_blocks(xs: np.ndarray, cs: np.ndarray, ks: int, xt: np.ndarray, ct: np.ndarray, kt: int
                 ) -> dict[str, est.GramBlock]:
    return {"ss": est.GramBlock.build(xs @ xs.T, cs, ks, cs, ks, squares=True),
            "tt": est.GramBlock.build(xt @ xt.T, ct, kt, ct, kt, squares=True),
            "st": est.GramBlock.build(xs @ xt.T, cs, ks, ct, kt, squares=True)}


# ------------------------------------------------------------------------------- compatibility
def check_compatible(source: FeatureStore, target: FeatureStore, *, allow_different: Sequence[str] = ()) -> list[str]:
    """Refuse two stores whose numbers cannot be compared; name the setting that differs.

    Shapes (``n_layers``, ``hidden_size``) must agree. ``model_id``, ``revision`` and every
    extraction setting must agree too, except those in :data:`COMPATIBLE_SETTINGS` (``input``: an
    aligned store and a plain-folder store pool utterances the same way) and those named in
    ``allow_different`` (for comparisons made on purpose, e.g. ``allow_different=("weights",)`` for a random-init store
    against a trained one).

    Returns
    -------
    list of str
        Notes on allowed differences (recorded in the rankings).

    Raises
    ------
    SimilarityError
        Naming the first setting that differs, both values, and the fix.
    """
    for key, a, b in (("n_layers", source.n_layers, target.n_layers),
                      ("hidden_size", source.hidden_size, target.hidden_size)):
        if a != b:
            raise SimilarityError(f"the stores hold different models: {key} is {a} in {source.path} and {b} in "
                                  f"{target.path} ({source.model_id} vs {target.model_id})", path=target.path,
                                  hint="extract both corpora with the same --model")
    allowed = set(allow_different)
    notes: list[str] = []
    s_set, t_set = source.meta.get("settings") or {}, target.meta.get("settings") or {}
    # trained vs untrained first: it is the difference that matters most and explains the others.
    # The model is compared by the digest of its weights when both stores record one (one folder
    # may be reached by two paths; two folders of one name may hold different models); untrained
    # weights differ from the trained ones by definition, so an allowed `weights` difference
    # compares the architecture's id instead.
    ds, dt = model_digest(source.meta), model_digest(target.meta)
    by_digest = bool(ds and dt) and not ("weights" in allowed and s_set.get("weights") != t_set.get("weights"))
    pairs: list[tuple[str, Any, Any]] = [("weights", s_set.get("weights"), t_set.get("weights"))]
    if by_digest:
        pairs.append(("model weights digest", ds, dt))
    else:
        pairs += [("model_id", source.model_id, target.model_id),
                  ("revision", source.meta.get("revision"), target.meta.get("revision"))]
    pairs += [(k, s_set.get(k), t_set.get(k)) for k in sorted(set(s_set) | set(t_set)) if k != "weights"]
    for key, a, b in pairs:
        if a == b:
            continue
        if key in COMPATIBLE_SETTINGS:
            notes.append(f"{key} differs ({a} vs {b}): only units present in both stores are compared")
            continue
        if key in allowed:
            notes.append(f"{key} differs ({a} vs {b}), allowed on purpose")
            continue
        hint = f"extract both corpora with the same {key}, or pass --allow-different {key} if you mean it"
        if key == "model weights digest":
            raise SimilarityError(f"the stores were made by different models: {source.model_id} ({str(a)[:19]}) vs "
                                  f"{target.model_id} ({str(b)[:19]}), compared by the digest of their weights "
                                  "(setting 'model weights digest')", path=target.path,
                                  hint="extract both corpora with the same model files")
        if key == "weights":
            hint = ("one store holds an untrained (random-init) model: compare it with a store of the same "
                    "random-init seed, or pass --allow-different weights if you mean to")
        raise SimilarityError(f"the stores were made differently: setting {key!r} is {a!r} in the source store and "
                              f"{b!r} in the target store", path=target.path, hint=hint)
    return notes


def shared_layers(source: FeatureStore, target: FeatureStore) -> list[int]:
    """The layers both stores hold (every layer 0..L unless one was made with ``lam features --layers``).

    Raises
    ------
    SimilarityError
        When they share none, naming each store's layers.
    """
    layers = sorted(set(source.layers) & set(target.layers))
    if not layers:
        raise SimilarityError(f"the stores share no layer (source: {describe_layers(source.layers)}; target: "
                              f"{describe_layers(target.layers)})", path=target.path,
                              hint="extract both corpora with the same --layers")
    return layers


# ------------------------------------------------------------------------------------- stores
def _labels(table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)


class _View:
    """What the analysis needs from one store's index, as integer arrays.

    Rows of another language (one store holding both corpora) and of dropped utterances take no
    part. Utterances map to clusters (speakers or utterances) and, with ``by_emotion``, to cells
    ``(emotion, cluster)``; streamed sums are kept per (class, cell).
    """

    def __init__(self, store: FeatureStore, *, name: str, language: str | None = None,
                 keep_utt: set[str] | None = None) -> None:
        self.store, self.name = store, name
        idx = store.index
        utt = _labels(idx, "utt_id")
        keep = np.ones(len(utt), bool) if language is None else _labels(idx, "language") == language
        if keep_utt is not None:
            keep &= np.isin(utt, np.asarray(sorted(keep_utt), dtype=object))
        self.row_keep = keep
        self.utt_ids, kept_utt = np.unique(utt[keep], return_inverse=True)
        self.row_utt = np.zeros(len(utt), np.int64)
        self.row_utt[keep] = kept_utt
        self.n_utt = len(self.utt_ids)
        kind, ucls = _labels(idx, "kind"), _labels(idx, "unit_class")
        cls = np.full(len(utt), -1, np.int64)
        cls[kind == "utt"] = 0
        seg = kind == "segment"
        for i, name_ in enumerate(_CLASSES[1:], start=1):
            cls[seg & (ucls == name_)] = i
        cls[~keep] = -1
        self.row_cls = cls
        self.utt_emotion = np.full(self.n_utt, None, dtype=object)
        self.utt_emotion[self.row_utt[keep]] = _labels(idx, "emotion")[keep]
        self.utt_speaker = np.full(self.n_utt, None, dtype=object)
        self.utt_speaker[self.row_utt[keep]] = _labels(idx, "speaker")[keep]
        # duration of an utterance = its utterance row's span (seconds)
        start = np.asarray(idx.column("start").to_numpy(zero_copy_only=False), np.float64)
        end = np.asarray(idx.column("end").to_numpy(zero_copy_only=False), np.float64)
        self.utt_duration = np.full(self.n_utt, np.nan)
        urow = keep & (kind == "utt")
        self.utt_duration[self.row_utt[urow]] = (end - start)[urow]
        self.set_cells("utterance", by_emotion=False)

    # speakers -------------------------------------------------------------
    def speakers(self) -> tuple[bool, int]:
        """(every utterance has a speaker label, number of distinct speakers)."""
        spk = [s for s in self.utt_speaker if s not in (None, "")]
        return len(spk) == self.n_utt, len(set(spk))

    def set_cells(self, unit: str, *, by_emotion: bool) -> None:
        """Map utterances to clusters (``speaker`` | ``utterance``) and cells (emotion x cluster)."""
        if unit == "speaker":
            self.cluster_names, self.utt_cluster = np.unique(self.utt_speaker.astype(str), return_inverse=True)
        else:
            self.cluster_names, self.utt_cluster = self.utt_ids, np.arange(self.n_utt)
        self.n_clusters = len(self.cluster_names)
        emo = np.array([EMOTIONS.index(e) + 1 if e in EMOTIONS else 0 for e in self.utt_emotion], np.int64) \
            if by_emotion else np.zeros(self.n_utt, np.int64)
        code = emo * max(self.n_clusters, 1) + self.utt_cluster
        cells, self.utt_cell = np.unique(code, return_inverse=True)
        self.n_cells = len(cells)
        self.cell_cluster = cells % max(self.n_clusters, 1)
        self.cell_emotion = np.array([None] + list(EMOTIONS), dtype=object)[cells // max(self.n_clusters, 1)]
        self.row_cell = np.zeros(len(self.row_cls), np.int64)
        self.row_cell[self.row_keep] = self.utt_cell[self.row_utt[self.row_keep]]
        ok = self.row_cls >= 0
        counts = np.zeros((len(_CLASSES), self.n_cells))
        np.add.at(counts, (self.row_cls[ok], self.row_cell[ok]), 1)
        self.counts = counts  # (8, n_cells)

    def scope_matrix(self, emotion: str | None) -> sp.csr_matrix:
        """``(n_clusters, n_cells)`` sum of the cells of a scope (all, or one emotion) per cluster."""
        mask = np.ones(self.n_cells, bool) if emotion is None else self.cell_emotion == emotion
        cells = np.flatnonzero(mask)
        return sp.csr_matrix((np.ones(cells.size), (self.cell_cluster[cells], cells)),
                             shape=(self.n_clusters, self.n_cells))

    def group_matrix(self, offset: int, n: int) -> tuple[np.ndarray, sp.csr_matrix]:
        """Groups (class * n_cells + cell) touched by rows offset..offset+n and their indicator."""
        cls = self.row_cls[offset:offset + n]
        keep = np.flatnonzero(cls >= 0)
        code = cls[keep] * self.n_cells + self.row_cell[offset:offset + n][keep]
        uniq, inv = np.unique(code, return_inverse=True)
        g = sp.csr_matrix((np.ones(keep.size), (inv, keep)), shape=(uniq.size, n))
        return uniq, g


def _stream(v: _View, layer: int, h: int, need_norm: bool) -> dict[str, np.ndarray]:
    """One pass over a layer: per (class, cell) sums (and of unit-normalised rows), phone-row squares."""
    s = np.zeros((len(_CLASSES) * v.n_cells, h))
    sn = np.zeros_like(s) if need_norm else None
    sq = np.zeros(h)
    for offset, arr in v.store.iter_layer(layer):
        x = np.asarray(arr, dtype=np.float64)
        if not np.isfinite(x).all():  # stores refuse them at write; one written before that did not
            check_finite(x, v.store.index.slice(offset, x.shape[0]), layer=layer, path=v.store.path)
        uniq, g = v.group_matrix(offset, x.shape[0])
        s[uniq] += g @ x
        if sn is not None:
            nrm = np.linalg.norm(x, axis=1, keepdims=True)
            sn[uniq] += g @ (x / np.where(nrm > 0, nrm, 1.0))
        phone = v.row_cls[offset:offset + x.shape[0]] >= 1
        if phone.any():
            sq += np.einsum("nh,nh->h", x[phone], x[phone])
        del x, arr
    out = {"S": s.reshape(len(_CLASSES), v.n_cells, h), "sq": sq}
    if sn is not None:
        out["SN"] = sn.reshape(len(_CLASSES), v.n_cells, h)
    return out


def _read_rows(v: _View, rows: np.ndarray, layer: int) -> np.ndarray:
    """The sampled rows of a layer, float64; a non-finite value is an error naming its utterance."""
    x = v.store.read_layer(layer, rows=rows).astype(np.float64)
    if not np.isfinite(x).all():
        check_finite(x, v.store.index.take(pa.array(rows)), layer=layer, path=v.store.path)
    return x


def _to_clusters(m: sp.csr_matrix, s: np.ndarray) -> np.ndarray:
    """(8, cells, H) -> (8, clusters, H) with the scope matrix ``m``."""
    c, n, h = s.shape
    return np.asarray(m @ s.transpose(1, 0, 2).reshape(n, c * h)).reshape(m.shape[0], c, h).transpose(1, 0, 2)


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Resampling:
    """How draws were made: the cluster unit and each side's number of clusters."""

    unit: str
    requested: str
    clusters_source: int
    clusters_target: int
    reason: str | None = None


@dataclass(frozen=True)
class UnitResult:
    """Scores of one (scope, unit, metric) over layers 0..L; arrays are (L+1,) or (draws, L+1).

    ``boot`` are the full-size bootstrap scores; ``*_boot`` the same draws' split-half quantities;
    ``null`` the permutation scores. ``skip_reason`` says why there is no score (the arrays are
    then NaN). ``clusters_*`` count the clusters that hold rows of the unit on each side.
    """

    score: np.ndarray
    boot: np.ndarray
    ref_source: np.ndarray
    ref_target: np.ndarray
    ref_source_boot: np.ndarray
    ref_target_boot: np.ndarray
    cross_half: np.ndarray
    cross_half_boot: np.ndarray
    null: np.ndarray
    extra: dict = field(default_factory=dict)
    n_source: int = 0
    n_target: int = 0
    n_utt_source: int = 0
    n_utt_target: int = 0
    clusters_source: int = 0
    clusters_target: int = 0
    skip_reason: str | None = None
    higher: bool = True

    @property
    def gap(self) -> np.ndarray:
        """Reference minus cross (similarities) / cross minus reference (distances), per layer."""
        return _gap(self.ref_source, self.ref_target, self.cross_half, self.higher)

    @property
    def gap_boot(self) -> np.ndarray:
        """The gap in every draw, ``(n_bootstrap, L+1)``."""
        return _gap(self.ref_source_boot, self.ref_target_boot, self.cross_half_boot, self.higher)

    @property
    def widen(self) -> float:
        """Small-sample widening of this unit's intervals (from the smaller side's clusters)."""
        return small_sample_widening(min(self.clusters_source, self.clusters_target))

    def ci(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Re-centred percentile interval of ``score`` at ``level``: ``(low, high)``, each ``(L+1,)``."""
        return recentred_interval(self.score, self.boot, level=level, widen=self.widen)

    def gap_ci(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Interval of :attr:`gap` (same method)."""
        return recentred_interval(self.gap, self.gap_boot, level=level, widen=self.widen)


def _gap(ref_s: np.ndarray, ref_t: np.ndarray, cross: np.ndarray, higher: bool) -> np.ndarray:
    ref = (ref_s + ref_t) / 2
    return ref - cross if higher else cross - ref


@dataclass(frozen=True)
class SimilarityConfig:
    """The settings of one comparison (:func:`compare_stores`), as ``config.yaml`` records them."""

    metrics: tuple[str, ...]
    units: tuple[str, ...]
    n_bootstrap: int
    seed: int
    by_emotion: bool
    ci_level: float
    n_halves: int
    max_rows: int
    source_language: str | None
    target_language: str | None
    resample: str
    n_permutations: int
    match_duration: bool
    allow_different: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The settings by name (sequences as lists), as ``config.yaml`` writes them."""
        return {"metrics": list(self.metrics), "units": list(self.units), "n_bootstrap": self.n_bootstrap,
                "seed": self.seed, "by_emotion": self.by_emotion, "ci_level": self.ci_level,
                "n_halves": self.n_halves, "max_rows": self.max_rows, "source_language": self.source_language,
                "target_language": self.target_language, "resample": self.resample,
                "n_permutations": self.n_permutations, "match_duration": self.match_duration,
                "allow_different": list(self.allow_different)}


@dataclass(frozen=True)
class SimilarityResult:
    """Everything `lam similarity` computed. ``results[scope][unit][metric]`` is a :class:`UnitResult`;
    scopes are ``all`` and, with ``by_emotion``, each emotion and ``averaged``."""

    n_layers: int
    source_model: str
    target_model: str
    revision: str | None
    config: SimilarityConfig
    results: dict = field(default_factory=dict)
    resampling: Resampling | None = None
    durations: DurationSummary | None = None
    warnings: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    #: layers scored: those both stores hold (all 0..L unless made with ``lam features --layers``);
    #: the others' scores are NaN
    layers: list = field(default_factory=list)

    @property
    def scored_layers(self) -> list[int]:
        """The layers scored (every layer 0..L for results made before layer subsets)."""
        return list(self.layers) if self.layers else list(range(self.n_layers + 1))


@dataclass
class _Plan:
    """Draw families of one (scope, unit): which clusters hold rows, the halves, the sampled rows."""

    active_s: np.ndarray
    active_t: np.ndarray
    n_rows: tuple[int, int]
    n_utt: tuple[int, int]
    halves_s: tuple[np.ndarray, np.ndarray]
    halves_t: tuple[np.ndarray, np.ndarray]
    boot_first_s: np.ndarray    # (B, K_s) bool: the draw's first half
    boot_first_t: np.ndarray
    rows_s: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rows_t: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _choose_resampling(src: _View, tgt: _View, requested: str) -> Resampling:
    if requested not in RESAMPLE_MODES:
        raise SimilarityError(f"unknown resampling unit {requested!r}", hint=f"use one of {', '.join(RESAMPLE_MODES)}")
    (known_s, n_s), (known_t, n_t) = src.speakers(), tgt.speakers()
    if requested == "utterance":
        return Resampling("utterance", requested, src.n_utt, tgt.n_utt)
    problems = [f"the {v.name} store has {'speaker labels on only some utterances' if not k else f'{n} speaker(s)'}"
                for v, k, n in ((src, known_s, n_s), (tgt, known_t, n_t)) if not k or n < 2]
    if not problems:
        return Resampling("speaker", requested, n_s, n_t)
    if requested == "speaker":
        raise SimilarityError("--resample speaker needs speaker labels with at least 2 speakers on each side; "
                              + "; ".join(problems), path=tgt.store.path,
                              hint="label the speakers (corpus folders or the manifest's speaker column), "
                              "or pass --resample utterance and read the intervals as too narrow")
    reason = ("resampling utterances, not speakers: " + "; ".join(problems)
              + " (utterances of one speaker are not independent: the intervals are too narrow)")
    logger.warning(reason)
    return Resampling("utterance", requested, src.n_utt, tgt.n_utt, reason)


class _SumsUnit:
    """Centroid / pairwise / standardized cosine of one (scope, unit, layer), on cluster sums.

    ``sides`` maps ``s``, ``t`` (and ``p``, both pooled, for permutations) to the unit's cluster sums.
    """

    def __init__(self, metric: str, sides: dict[str, dict[str, np.ndarray]]) -> None:
        self.metric, self.sides = metric, sides
        self._memo: dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]] = {}
        self._tot: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}

    #: families whose weights are another's complement: (family, whole, first part, rows of the whole)
    _COMPLEMENTS = {"est2": ("main", "est1", slice(0, 1)), "boot2": ("main", "boot1", slice(1, None)),
                    "pb": (None, "pa", slice(None))}

    def _totals(self, side: str, name: str, w: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(w @ sums, w @ counts)``; a second half or pseudo-side is the whole minus the first part.

        Halves and permuted sides are complements (``h1 + h2`` = the draw, ``a + b`` = every
        cluster), so one matrix product in three is a subtraction instead.
        """
        memo_key = (side, name, key)
        if memo_key in self._tot:
            return self._tot[memo_key]
        d = self.sides[side]
        rule = self._COMPLEMENTS.get(name)
        whole = None if rule is None else (
            (d[key].sum(0)[None], np.array([d["N"].sum()])) if rule[0] is None
            else self._tot.get((side, rule[0], key)))
        first = None if rule is None else self._tot.get((side, rule[1], key))
        if rule is not None and whole is not None and first is not None:
            out = (whole[0][rule[2]] - first[0], whole[1][rule[2]] - first[1])
        else:
            out = (w @ d[key], w @ d["N"])
        self._tot[memo_key] = out
        return out

    def _parts(self, side: str, name: str, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        key = (side, name)
        if key not in self._memo:
            d = self.sides[side]
            if self.metric in ("centroid_cosine", "pairwise_cosine"):
                tot, cnt = self._totals(side, name, w, "S" if self.metric == "centroid_cosine" else "SN")
                with np.errstate(invalid="ignore", divide="ignore"):
                    vec = tot / cnt[:, None]
                if self.metric == "pairwise_cosine":
                    within: np.ndarray | None = np.ones(w.shape[0])
                elif name == "main" or side == "p":
                    within = est.norm2_u(d["S"], d["N"], d["SS"], w, tot)
                else:
                    within = None
                self._memo[key] = (vec, within)
            else:
                dev, n2 = est.deviation_parts(d["S"], d["N"], d["SP"], d["NP"], w,
                                              norm=name == "main" or side == "p")
                self._memo[key] = (dev, n2)
        return self._memo[key]

    def within(self, side: str, name: str, w: np.ndarray) -> np.ndarray:
        within = self._parts(side, name, w)[1]
        assert within is not None
        return within

    def cross(self, sa: str, na: str, wa: np.ndarray, sb: str, nb: str, wb: np.ndarray) -> np.ndarray:
        return est.rowdot(self._parts(sa, na, wa)[0], self._parts(sb, nb, wb)[0])

    def combine(self, x: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
        if self.metric == "pairwise_cosine":
            return x
        return est.cosine(x, wa, wb)


class _GramUnit:
    """MMD / relative CORAL of one (scope, unit, layer) on cluster-aggregated Gram blocks."""

    def __init__(self, metric: str, blocks: dict[str, est.GramBlock]) -> None:
        self.metric, self.blocks = metric, blocks

    def within(self, side: str, name: str, w: np.ndarray) -> np.ndarray:
        b = self.blocks[side * 2]
        return est.kernel_within(b, w) if self.metric == "mmd" else est.cov_trace_within(b, w)

    def cross(self, sa: str, na: str, wa: np.ndarray, sb: str, nb: str, wb: np.ndarray) -> np.ndarray:
        if sa == sb:
            b = self.blocks[sa * 2]
        else:
            b = self.blocks[sa + sb]
        return est.kernel_cross(b, wa, wb) if self.metric == "mmd" else est.cov_trace_cross(b, wa, wb)

    def combine(self, x: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.metric == "mmd":
                return wa + wb - 2 * x
            return 1 - 2 * x / (wa + wb)


def _quiet_nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _evaluate(eng: _SumsUnit | _GramUnit, plan: _Plan, boot_s: np.ndarray, boot_t: np.ndarray,
              perm: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Score, references, cross-at-half-size and null of one unit in one layer (see module docstring)."""
    ws = np.vstack([plan.active_s[None].astype(float), boot_s * plan.active_s[None]])
    wt = np.vstack([plan.active_t[None].astype(float), boot_t * plan.active_t[None]])
    in_s = eng.within("s", "main", ws)
    in_t = eng.within("t", "main", wt)
    score = eng.combine(eng.cross("s", "main", ws, "t", "main", wt), in_s, in_t)
    out = {"score": score[0], "boot": score[1:]}
    b = boot_s.shape[0]
    # within-language references and cross-language at half size, for the estimate (splits
    # averaged) and for every draw (its own split)
    fam = {}
    if plan.halves_s[0].shape[0]:
        fam["est"] = (plan.halves_s, plan.halves_t, in_s[:1], in_t[:1])
    if b and plan.boot_first_s.size:
        f_s = np.where(plan.boot_first_s, ws[1:], 0.0)
        f_t = np.where(plan.boot_first_t, wt[1:], 0.0)
        fam["boot"] = ((f_s, ws[1:] - f_s), (f_t, wt[1:] - f_t), in_s[1:], in_t[1:])
    for name, ((s1, s2), (t1, t2), i_s, i_t) in fam.items():
        ref_s = eng.combine(eng.cross("s", f"{name}1", s1, "s", f"{name}2", s2), i_s, i_s)
        ref_t = eng.combine(eng.cross("t", f"{name}1", t1, "t", f"{name}2", t2), i_t, i_t)
        cross = np.mean([eng.combine(eng.cross("s", f"{name}{x}", sw, "t", f"{name}{y}", tw), i_s, i_t)
                         for x, sw in ((1, s1), (2, s2)) for y, tw in ((1, t1), (2, t2))], axis=0)
        if name == "est":
            out["ref_source"], out["ref_target"] = _quiet_nanmean(ref_s), _quiet_nanmean(ref_t)
            out["cross_half"] = _quiet_nanmean(cross)
        else:
            out["ref_source_boot"], out["ref_target_boot"], out["cross_half_boot"] = ref_s, ref_t, cross
    if perm is not None:
        pa, pb = perm
        out["null"] = eng.combine(eng.cross("p", "pa", pa, "p", "pb", pb), eng.within("p", "pa", pa),
                                  eng.within("p", "pb", pb))
    return out


@dataclass(frozen=True)
class Sides:
    """The two stores as the analysis sees them, with the resampling chosen (:func:`prepare_sides`).

    ``source`` and ``target`` are the stores' views (rows of the chosen language and, with duration
    matching, of the kept utterances; clusters set to the resampling unit); ``warnings`` the notes
    and warnings owed to the user; ``durations`` the utterance-duration quartiles.
    """

    source: _View
    target: _View
    resampling: Resampling
    warnings: tuple[str, ...]
    durations: DurationSummary


def prepare_sides(source: FeatureStore, target: FeatureStore, *, source_language: str | None = None,
                  target_language: str | None = None, match_duration: bool = False, seed: int = SEED,
                  resample: str = DEFAULT_RESAMPLE, allow_different: Sequence[str] = (),
                  by_emotion: bool = False) -> Sides:
    """Check two stores, select their rows and choose the resampling unit, as :func:`compare_stores` does.

    Shared with the vowel map (:mod:`analysis.vowel_map`), so that both see the same rows and
    resample the same clusters. Parameters as :func:`compare_stores`.
    """
    notes = check_compatible(source, target, allow_different=allow_different)
    src = _View(source, name="source", language=source_language)
    tgt = _View(target, name="target", language=target_language)
    for v, lang in ((src, source_language), (tgt, target_language)):
        if v.n_utt == 0:
            what = "the store is empty" if lang is None else f"the store has no utterance of language {lang!r}"
            raise SimilarityError(what, path=v.store.path, hint="run `lam features` first, or check --*-language")
    warn: list[str] = list(notes)
    for note in notes:  # every warning of the result is also a log record, once
        logger.warning(note)
    durations = DurationSummary.of(src.utt_duration, tgt.utt_duration)
    if match_duration:
        ka, kb = match_durations(src.utt_duration, tgt.utt_duration, seed=seed)
        src = _View(source, name="source", language=source_language, keep_utt=set(src.utt_ids[ka]))
        tgt = _View(target, name="target", language=target_language, keep_utt=set(tgt.utt_ids[kb]))
        if src.n_utt == 0 or tgt.n_utt == 0:
            raise SimilarityError("--match-duration kept no utterance: the two duration ranges do not overlap",
                                  path=target.path, hint="drop --match-duration, or compare corpora of similar lengths")
        matched = DurationSummary.of(src.utt_duration, tgt.utt_duration)
        durations = DurationSummary(matched.source, matched.target, before_matching=durations,
                                    matched_utterances={"source": src.n_utt, "target": tgt.n_utt})
    w_dur = duration_warning(durations.source, durations.target)
    if w_dur:
        warn.append(w_dur)
        logger.warning(w_dur)
    resampling = _choose_resampling(src, tgt, resample)
    if resampling.reason:
        warn.append(resampling.reason)
    for v in (src, tgt):
        v.set_cells(resampling.unit, by_emotion=by_emotion)
    return Sides(src, tgt, resampling, tuple(warn), durations)


def compare_stores(source: FeatureStore, target: FeatureStore, *, metrics: Sequence[str] = (DEFAULT_METRIC,),
                   units: Sequence[str] = UNITS, n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED,
                   by_emotion: bool = False, ci_level: float = CI_LEVEL, n_halves: int = N_HALVES,
                   max_rows: int = MAX_ROWS, source_language: str | None = None,
                   target_language: str | None = None, resample: str = DEFAULT_RESAMPLE,
                   n_permutations: int = N_PERMUTATIONS, match_duration: bool = False,
                   allow_different: Sequence[str] = (), progress: bool = True) -> SimilarityResult:
    """Per-layer similarity of every unit between two feature stores (streamed; see module docstring).

    Parameters
    ----------
    source, target : FeatureStore
        Made by the same model and settings (:func:`check_compatible`).
    metrics : sequence of str
        Names in :data:`METRICS`.
    units : sequence of str
        Names in :data:`UNITS`.
    n_bootstrap : int
        Bootstrap draws (clusters resampled); 0 for no intervals.
    seed : int
        Seeds every draw, split and permutation (each from its own stream, so changing one count
        does not change the others' draws).
    by_emotion : bool
        Also per emotion and averaged over emotions (needs emotion labels in both stores).
    ci_level : float
    n_halves : int
        Random speaker-disjoint half splits for the within-language reference.
    max_rows : int
        Subsample per unit and corpus for ``coral`` and ``mmd``.
    source_language, target_language : str, optional
        Keep only rows of this ``language`` (one store may hold both corpora; pass it as both).
    resample : ``auto`` | ``speaker`` | ``utterance``
        The cluster that draws resample (see the module docstring).
    n_permutations : int
        Permutations of the language labels across clusters for the null control (0: none).
    match_duration : bool
        Subsample both sides to matching utterance-duration distributions first.
    allow_different : sequence of str
        Store settings allowed to differ (see :func:`check_compatible`).

    Returns
    -------
    SimilarityResult
        Scores of the layers both stores hold (:attr:`SimilarityResult.layers`; every layer unless a
        store was made with ``lam features --layers``); the other layers' scores are NaN.
    """
    _check_request(metrics, units)
    sides = prepare_sides(source, target, source_language=source_language, target_language=target_language,
                          match_duration=match_duration, seed=seed, resample=resample,
                          allow_different=allow_different, by_emotion=by_emotion)
    layers = shared_layers(source, target)
    scopes = _scopes(sides, by_emotion=by_emotion, path=target.path)
    n_l = source.n_layers + 1
    b, nh, n_perm = int(n_bootstrap), int(n_halves), int(n_permutations)
    run = _Comparison(sides, scopes, metrics=metrics, units=units, n_l=n_l, n_bootstrap=b, seed=seed,
                      n_halves=nh, n_permutations=n_perm, max_rows=max_rows)
    for layer in track(layers, desc="similarity", item="layer", progress=progress):
        run.score_layer(layer, source.hidden_size)
    res = run.res
    if by_emotion:
        res["averaged"] = _average(res, [s for s in scopes if s != "all"], units, metrics, n_l)
    config = SimilarityConfig(metrics=tuple(metrics), units=tuple(units), n_bootstrap=b, seed=seed,
                              by_emotion=by_emotion, ci_level=ci_level, n_halves=nh, max_rows=max_rows,
                              source_language=source_language, target_language=target_language, resample=resample,
                              n_permutations=n_perm, match_duration=match_duration,
                              allow_different=tuple(allow_different))
    settings = {"source": source.meta.get("settings") or {}, "target": target.meta.get("settings") or {}}
    return SimilarityResult(n_layers=source.n_layers, source_model=source.model_id, target_model=target.model_id,
                            revision=source.meta.get("revision"), config=config, results=res,
                            resampling=sides.resampling, durations=sides.durations, warnings=list(sides.warnings),
                            settings=settings, layers=layers)


def _check_request(metrics: Sequence[str], units: Sequence[str]) -> None:
    """Refuse unknown metrics and units, and standardized_cosine for Utt alone."""
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise SimilarityError(f"unknown metric(s) {bad}", hint=f"use {', '.join(METRICS)}")
    bad = [u for u in units if u not in UNITS]
    if bad:
        raise SimilarityError(f"unknown unit(s) {bad}", hint=f"use {', '.join(UNITS)}")
    if "standardized_cosine" in metrics and list(units) == ["Utt"]:
        raise SimilarityError("standardized_cosine is undefined for Utt: it centres each corpus on its own average "
                              "phone, and utterances are not phones", hint="ask for a phone unit (Vowl, Cons, "
                              "a vowel class) or another metric for Utt")


def _scopes(sides: Sides, *, by_emotion: bool, path: Path) -> dict[str, str | None]:
    """Scope name -> emotion (None: every row): ``all``, and with ``by_emotion`` each emotion both sides hold."""
    scopes: dict[str, str | None] = {"all": None}
    if by_emotion:
        src, tgt = sides.source, sides.target
        present = [e for e in EMOTIONS if np.any(src.utt_emotion == e) and np.any(tgt.utt_emotion == e)]
        if not present:
            raise SimilarityError("--by-emotion needs emotion labels shared by both corpora; none found",
                                  path=path, hint="label the corpora, or drop --by-emotion")
        scopes.update({e: e for e in present})
    return scopes


class _Comparison:
    """The state of one :func:`compare_stores` run: the draws, one :class:`_Plan` and one result per
    (scope, unit, metric), and the rows the row metrics read; :meth:`score_layer` fills the results'
    arrays one layer at a time."""

    def __init__(self, sides: Sides, scopes: dict[str, str | None], *, metrics: Sequence[str],
                 units: Sequence[str], n_l: int, n_bootstrap: int, seed: int, n_halves: int, n_permutations: int,
                 max_rows: int) -> None:
        self.src, self.tgt = src, tgt = sides.source, sides.target
        self.metrics, self.units = metrics, units
        # each family of draws from its own seeded stream, so one count never changes another's draws
        self.boot_s = bootstrap_weights(src.n_clusters, n_bootstrap, np.random.default_rng([seed, 1, 0]))
        self.boot_t = bootstrap_weights(tgt.n_clusters, n_bootstrap, np.random.default_rng([seed, 1, 1]))
        self.perm = permutation_weights(src.n_clusters, tgt.n_clusters, n_permutations,
                                        np.random.default_rng([seed, 2])) if n_permutations else None
        self.sum_metrics = [m for m in metrics if m in _SUM_METRICS]
        self.row_metrics = [m for m in metrics if m in _ROW_METRICS]
        self.mats = {s: (src.scope_matrix(e), tgt.scope_matrix(e)) for s, e in scopes.items()}
        self.plans: dict[tuple[str, str], _Plan] = {}
        self.res: dict[str, dict[str, dict[str, UnitResult]]] = {s: {u: {} for u in units} for s in scopes}
        for si, (s, (ms, mt)) in enumerate(self.mats.items()):
            for ui, u in enumerate(units):
                plan = self._plan(ms, mt, u, rng_key=(seed, si, ui), n_halves=n_halves, max_rows=max_rows)
                self.plans[(s, u)] = plan
                for m in metrics:
                    self.res[s][u][m] = _empty_result(m, n_l, n_bootstrap, n_permutations, plan, sides.resampling, u)
        self.union = {v.name: np.unique(np.concatenate([p.rows_s if v is src else p.rows_t
                                                        for p in self.plans.values()]))
                      for v in (src, tgt)} if self.row_metrics else {}

    def _plan(self, ms: sp.csr_matrix, mt: sp.csr_matrix, unit: str, *, rng_key: tuple[int, int, int],
              n_halves: int, max_rows: int) -> _Plan:
        """The draws of one (scope, unit): active clusters, half splits, draw halves, sampled rows."""
        src, tgt = self.src, self.tgt
        seed, si, ui = rng_key
        cl = _UNIT_CLASSES[unit]
        n_s = np.asarray(ms @ src.counts[cl].sum(0)).ravel()
        n_t = np.asarray(mt @ tgt.counts[cl].sum(0)).ravel()
        act_s, act_t = n_s > 0, n_t > 0
        cell_s = (src.counts[cl].sum(0) > 0) & (np.asarray(ms.sum(0)).ravel() > 0)
        cell_t = (tgt.counts[cl].sum(0) > 0) & (np.asarray(mt.sum(0)).ravel() > 0)
        n_utt = (int(np.isin(src.utt_cell, np.flatnonzero(cell_s)).sum()),
                 int(np.isin(tgt.utt_cell, np.flatnonzero(cell_t)).sum()))
        rng = [np.random.default_rng([seed, 3, side, si, ui]) for side in (0, 1)]
        plan = _Plan(act_s, act_t, (int(n_s.sum()), int(n_t.sum())), n_utt,
                     half_splits(act_s, n_halves, rng[0]), half_splits(act_t, n_halves, rng[1]),
                     split_draws(self.boot_s, act_s, rng[0])[0] > 0, split_draws(self.boot_t, act_t, rng[1])[0] > 0)
        if self.row_metrics:
            plan.rows_s = _sample_rows(src, cl, ms, max_rows, [seed, 5, 0, si, ui])
            plan.rows_t = _sample_rows(tgt, cl, mt, max_rows, [seed, 5, 1, si, ui])
        return plan

    def score_layer(self, layer: int, h: int) -> None:
        """Score every (scope, unit, metric) at ``layer`` (``h``: hidden size) into its result."""
        src, tgt = self.src, self.tgt
        need_norm = "pairwise_cosine" in self.sum_metrics
        streams = {v.name: _stream(v, layer, h, need_norm) for v in (src, tgt)} if self.sum_metrics else {}
        sd = _pooled_sd(streams, src, tgt) if "standardized_cosine" in self.sum_metrics else None
        rows = {v.name: _read_rows(v, self.union[v.name], layer) for v in (src, tgt)} if self.row_metrics else {}
        pooled = self.perm is not None
        for s, (ms, mt) in self.mats.items():
            agg = {name: {**{k: _to_clusters(mm, arr) for k, arr in st.items() if k in ("S", "SN")},
                          "N": np.asarray(mm @ v.counts.T).T}
                   for name, st, mm, v in (("source", streams.get("source"), ms, src),
                                           ("target", streams.get("target"), mt, tgt)) if st is not None}
            for u in self.units:
                plan = self.plans[(s, u)]
                for m in self.metrics:
                    r = self.res[s][u][m]
                    if r.skip_reason:
                        continue
                    if m in _SUM_METRICS:
                        eng: _SumsUnit | _GramUnit = _SumsUnit(m, _sum_sides(m, agg, u, sd, pooled))
                    else:
                        eng = _GramUnit(m, _row_blocks(m, rows, self.union, plan, src, tgt, pooled))
                    _fill(r, _evaluate(eng, plan, self.boot_s, self.boot_t, self.perm), layer)
                    if m == "coral":
                        r.extra["coral_raw"][layer] = _coral_raw(eng, plan, h)


def _empty_result(metric: str, n_l: int, b: int, n_perm: int, plan: _Plan, resampling: Resampling,
                  unit: str) -> UnitResult:
    nan = lambda *shape: np.full(shape, np.nan)  # noqa: E731
    k_s, k_t = int(plan.active_s.sum()), int(plan.active_t.sum())
    reason = None
    what = "speaker(s)" if resampling.unit == "speaker" else "utterance(s)"
    need = MIN_CLUSTERS[metric]
    if metric == "standardized_cosine" and unit == "Utt":
        reason = ("standardized_cosine is undefined for Utt (each corpus is centred on its own average phone; "
                  "utterances are not phones)")
    elif plan.n_rows[0] == 0 or plan.n_rows[1] == 0:
        reason = f"{plan.n_rows[0]} source and {plan.n_rows[1]} target rows"
    elif min(k_s, k_t) < need:
        side = "source" if k_s < need else "target"
        reason = (f"rows from {min(k_s, k_t)} {what} on the {side} side; {metric} needs {need} per side "
                  f"(its within-side terms pair rows of different {what})")
    extra = {"coral_raw": nan(n_l)} if metric == "coral" else {}
    return UnitResult(nan(n_l), nan(b, n_l), nan(n_l), nan(n_l), nan(b, n_l), nan(b, n_l), nan(n_l), nan(b, n_l),
                      nan(n_perm, n_l), extra, plan.n_rows[0], plan.n_rows[1], plan.n_utt[0], plan.n_utt[1], k_s, k_t,
                      reason, METRICS[metric])


def _fill(r: UnitResult, vals: dict[str, np.ndarray], layer: int) -> None:
    r.score[layer] = vals["score"]
    r.boot[:, layer] = vals["boot"]
    for key, arr in (("ref_source", r.ref_source), ("ref_target", r.ref_target), ("cross_half", r.cross_half)):
        if key in vals:
            arr[layer] = vals[key]
    for key, arr in (("ref_source_boot", r.ref_source_boot), ("ref_target_boot", r.ref_target_boot),
                     ("cross_half_boot", r.cross_half_boot), ("null", r.null)):
        if key in vals:
            arr[:, layer] = vals[key]


def _pooled_sd(streams: dict, src: _View, tgt: _View) -> np.ndarray:
    """Per-dimension pooled within-corpus SD over phone rows: ``sqrt((var_s + var_t) / 2)``."""
    var = []
    for v in (src, tgt):
        st = streams[v.name]
        n = v.counts[_PHONE_CLASSES].sum()
        if n == 0:
            return np.full(st["sq"].shape, np.nan)
        mean = st["S"][_PHONE_CLASSES].sum((0, 1)) / n
        var.append(np.maximum(st["sq"] / n - mean * mean, 0.0))
    return np.sqrt((var[0] + var[1]) / 2) + 1e-12


def _sum_sides(metric: str, agg: dict, unit: str, sd: np.ndarray | None,
               pooled: bool) -> dict[str, dict[str, np.ndarray]]:
    """The unit's per-cluster sums of each side (``s``, ``t``; ``p`` = both, for permutations)."""
    cl = _UNIT_CLASSES[unit]
    sides: dict[str, dict[str, np.ndarray]] = {}
    for key, name in (("s", "source"), ("t", "target")):
        a = agg[name]
        d: dict[str, np.ndarray] = {"N": a["N"][cl].sum(0)}
        if metric == "pairwise_cosine":
            d["SN"] = a["SN"][cl].sum(0)
        if metric == "standardized_cosine":
            assert sd is not None
            d["S"] = a["S"][cl].sum(0) / sd
            d["SP"] = a["S"][_PHONE_CLASSES].sum(0) / sd
            d["NP"] = a["N"][_PHONE_CLASSES].sum(0)
        else:
            d["S"] = a["S"][cl].sum(0)
        d["SS"] = est.rowdot(d["S"], d["S"])
        sides[key] = d
    if pooled:
        sides["p"] = {k: np.concatenate([sides["s"][k], sides["t"][k]]) for k in sides["s"]}
    return sides


def _sample_rows(v: _View, classes: list[int], scope: sp.csr_matrix, max_rows: int, seed: list[int]) -> np.ndarray:
    """Seeded subsample (same for every layer) of the rows of a unit inside a scope."""
    in_scope = np.asarray(scope.sum(0)).ravel() > 0
    rows = np.flatnonzero(np.isin(v.row_cls, classes) & in_scope[v.row_cell] & v.row_keep)
    if rows.size > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
    return rows


def _row_blocks(metric: str, rows: dict, union: dict, plan: _Plan, src: _View, tgt: _View,
                pooled: bool) -> dict[str, est.GramBlock]:
    xs = rows["source"][np.searchsorted(union["source"], plan.rows_s)]
    xt = rows["target"][np.searchsorted(union["target"], plan.rows_t)]
    cs = src.cell_cluster[src.row_cell[plan.rows_s]]
    ct = tgt.cell_cluster[tgt.row_cell[plan.rows_t]]
    ks, kt = src.n_clusters, tgt.n_clusters
    if metric == "mmd":
        h = median_bandwidth(xs, xt)
        blocks = _kernel_blocks(xs, cs, ks, xt, ct, kt, h)
        if pooled:
            xp = np.concatenate([xs, xt])
            cp = np.concatenate([cs, ct + ks])
            blocks["pp"] = est.GramBlock.build(np.exp(-_sqdist(xp, xp) / h), cp, ks + kt, cp, ks + kt, squares=False)
        return blocks
    # CORAL: traces are shift-invariant; centring each side on its own (fixed) mean keeps the
    # large common direction out of the fourth-moment terms, whose cancellation it would make noisy
    blocks = _gram_blocks(xs - xs.mean(0), cs, ks, xt - xt.mean(0), ct, kt)
    if pooled:
        xp = np.concatenate([xs, xt])
        xp = xp - xp.mean(0)
        cp = np.concatenate([cs, ct + ks])
        blocks["pp"] = est.GramBlock.build(xp @ xp.T, cp, ks + kt, cp, ks + kt, squares=True)
    return blocks


def _coral_raw(eng: _SumsUnit | _GramUnit, plan: _Plan, h: int) -> float:
    ws, wt = plan.active_s[None].astype(float), plan.active_t[None].astype(float)
    taa, tbb = eng.within("s", "raw", ws), eng.within("t", "raw", wt)
    tab = eng.cross("s", "raw", ws, "t", "raw", wt)
    return float(((taa + tbb - 2 * tab) / (4.0 * h * h))[0])


def _average(res: dict, emos: list[str], units: Sequence[str], metrics: Sequence[str], n_l: int) -> dict:
    out: dict[str, dict[str, UnitResult]] = {}
    for u in units:
        out[u] = {}
        for m in metrics:
            parts = [res[e][u][m] for e in emos]
            skipped = [f"{e}: {p.skip_reason}" for e, p in zip(emos, parts, strict=True) if p.skip_reason]

            def mean(name: str, parts: list[UnitResult] = parts) -> np.ndarray:
                return np.mean([getattr(p, name) for p in parts], 0)

            out[u][m] = UnitResult(
                mean("score"), mean("boot"), mean("ref_source"), mean("ref_target"), mean("ref_source_boot"),
                mean("ref_target_boot"), mean("cross_half"), mean("cross_half_boot"), mean("null"),
                {k: np.mean([p.extra[k] for p in parts], 0) for k in parts[0].extra},
                sum(p.n_source for p in parts), sum(p.n_target for p in parts),
                sum(p.n_utt_source for p in parts), sum(p.n_utt_target for p in parts),
                min(p.clusters_source for p in parts), min(p.clusters_target for p in parts),
                "; ".join(skipped) or None, METRICS[m])
    return out


# ------------------------------------------------------------------------------------- output
CI_METHOD = ("percentile interval of the draws re-centred on the estimate (draws' median moved onto it), "
             "widened by t_{K-1}/z*sqrt(K/(K-1)) for K clusters on the smaller side; contains the estimate")


def _list(x: Any) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64).ravel()]


def _entry(r: UnitResult, *, n_layers: int, level: float, k: int, seed: int, resampling: Resampling,
           full: bool, scored: Sequence[int]) -> dict:
    """One unit of the rankings document (see :mod:`analysis.rankings`); ``scored``: the layers
    both stores hold (the others have null scores and are never ranked)."""
    from .rankings import rank_layers, select_layers, top_k_frequency

    cand = [int(layer) for layer in scored if layer >= 1]

    has_draws = r.boot.shape[0] > 0
    lo, hi = r.ci(level)
    glo, ghi = r.gap_ci(level)
    out: dict[str, Any] = {
        "layers": list(range(n_layers + 1)), "score": _list(r.score), "ci_low": _list(lo), "ci_high": _list(hi),
        "reference_source": _list(r.ref_source), "reference_target": _list(r.ref_target),
        "reference_split": resampling.unit, "cross_half": _list(r.cross_half),
        "gap": _list(r.gap), "gap_ci_low": _list(glo), "gap_ci_high": _list(ghi),
        "as_similar_as_within": [None if not np.isfinite(x) else bool(x <= 0) for x in glo],
        "clusters": {"source": r.clusters_source, "target": r.clusters_target},
        "n_source": r.n_source, "n_target": r.n_target, "n_utt_source": r.n_utt_source,
        "n_utt_target": r.n_utt_target,
    }
    if has_draws:
        defined = np.isfinite(r.boot[:, cand]).mean(0) if cand else np.ones(1)
        out["defined_draws"] = float(defined.min())
    if r.null.shape[0]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["p_null"] = _list(permutation_p(r.score, r.null, higher_is_more_similar=r.higher))
            out["null_score"] = _list(np.nanmean(r.null, 0))
            out["null_low"], out["null_high"] = (_list(q) for q in np.nanquantile(
                r.null, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0))
    if "coral_raw" in r.extra:
        out["coral_raw"] = _list(r.extra["coral_raw"])
    if full:
        ties = ties_with_best(r.score, r.boot, higher_is_better=r.higher, level=level,
                              ranked=cand,
                              n_clusters=min(r.clusters_source, r.clusters_target))
        out["p_best"] = [None] + _list(ties.p_best[1:]) if has_draws else None
        out["tied_with_best"] = [int(x) for x in np.flatnonzero(ties.tied)] if has_draws else None
        out["flat"] = ties.flat if has_draws else None
        out["tie_critical"] = ties.critical if has_draws else None
        out["top_k_frequency"] = top_k_frequency(r.boot, k=k, higher_is_more_similar=r.higher, candidates=cand)
        out["ranking"] = rank_layers(r.score, higher_is_more_similar=r.higher, candidates=cand)
        out["selections"] = select_layers(r.score, k=k, seed=seed, higher_is_more_similar=r.higher,
                                          candidates=cand)
    return out


def result_rankings(result: SimilarityResult, *, metric: str, k: int = TOP_K, scope: str | None = None,
                    source_store: str = "", target_store: str = "") -> dict:
    """The rankings document (see :mod:`analysis.rankings`) of one metric.

    ``scope`` defaults to ``averaged`` when per-emotion scores exist, else ``all``.
    """
    higher = METRICS[metric]
    scope = scope or ("averaged" if "averaged" in result.results else "all")
    level = result.config.ci_level
    seed = result.config.seed
    rs = result.resampling or Resampling("utterance", "utterance", 0, 0)
    scored = result.scored_layers
    kw: dict[str, Any] = dict(n_layers=result.n_layers, level=level, k=k, seed=seed, resampling=rs, scored=scored)
    units, skipped = {}, {}
    for u, by_metric in result.results[scope].items():
        r = by_metric[metric]
        if r.skip_reason:
            skipped[u] = r.skip_reason
        elif np.all(np.isnan(r.score[1:])):
            skipped[u] = f"no score defined with {r.n_source} source and {r.n_target} target rows"
        else:
            units[u] = _entry(r, full=True, **kw)
    settings = result.settings or {}
    untrained = any((settings.get(side) or {}).get("weights") == "random-init" for side in ("source", "target"))
    doc = {"model": result.source_model, "target_model": result.target_model, "revision": result.revision,
           "source_store": source_store, "target_store": target_store, "metric": metric,
           "higher_is_more_similar": higher, "n_layers": result.n_layers, "layers_compared": scored, "k": k,
           "seed": seed, "n_bootstrap": result.config.n_bootstrap, "ci_level": level, "ci_method": CI_METHOD,
           "n_halves": result.config.n_halves, "n_permutations": result.config.n_permutations,
           "resampling": {"unit": rs.unit, "requested": rs.requested,
                          "clusters": {"source": rs.clusters_source, "target": rs.clusters_target},
                          "reason": rs.reason},
           "duration_s": {} if result.durations is None else result.durations.to_dict(),
           "settings": settings, "untrained": untrained,
           "warnings": list(result.warnings),
           "emotion": None if scope == "all" else scope, "units": units, "skipped_units": skipped}
    emos = [s for s in result.results if s not in ("all", "averaged")]
    if emos:
        doc["by_emotion"] = {e: {u: _entry(m[metric], full=False, **kw) for u, m in result.results[e].items()
                                 if not m[metric].skip_reason} for e in emos}
    return doc


def summary_lines(doc: dict) -> list[str]:
    """One line per ranked unit: best layer, its p_best, the layers tied with it, flat or not."""
    lines = []
    for u, e in doc["units"].items():
        best = e["selections"]["BL"][0]
        if e.get("flat") is None:
            lines.append(f"{u}: best layer {best} (no draws: ties unknown)")
            continue
        pb = e["p_best"][best]
        tied = ",".join(str(x) for x in e["tied_with_best"])
        state = "FLAT: the data cannot tell which layer is best" if e["flat"] else "not flat"
        lines.append(f"{u}: best layer {best} (p_best {pb:.2f}); tied with best: {tied}; {state}")
    return lines


def result_table(result: SimilarityResult) -> Any:
    """Long table (pyarrow): scope, unit, metric, layer, score, interval, references, gap, null p, counts."""
    import pyarrow as pa

    names = ("scope", "unit", "metric", "layer", "score", "ci_low", "ci_high", "reference_source",
             "reference_target", "cross_half", "gap", "gap_ci_low", "gap_ci_high", "p_null", "n_source",
             "n_target", "clusters_source", "clusters_target")
    cols: dict[str, list] = {k: [] for k in names}
    level = result.config.ci_level
    for scope, units in result.results.items():
        for u, by_metric in units.items():
            for m, r in by_metric.items():
                scored = result.scored_layers  # the layers the stores hold
                n = len(scored)
                lo, hi = r.ci(level)
                glo, ghi = r.gap_ci(level)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p = permutation_p(r.score, r.null, higher_is_more_similar=r.higher)
                cols["scope"] += [scope] * n
                cols["unit"] += [u] * n
                cols["metric"] += [m] * n
                cols["layer"] += scored
                for key, arr in (("score", r.score), ("ci_low", lo), ("ci_high", hi),
                                 ("reference_source", r.ref_source), ("reference_target", r.ref_target),
                                 ("cross_half", r.cross_half), ("gap", r.gap),
                                 ("gap_ci_low", glo), ("gap_ci_high", ghi), ("p_null", p)):
                    cols[key] += _list(np.asarray(arr, np.float64)[scored])
                for key, val in (("n_source", r.n_source), ("n_target", r.n_target),
                                 ("clusters_source", r.clusters_source), ("clusters_target", r.clusters_target)):
                    cols[key] += [val] * n
    return pa.table(cols)


@dataclass(frozen=True)
class SimilarityReport:
    """What :func:`run_similarity` wrote: the paths of its main outputs and what to tell the user."""

    rankings: str  # rankings.json (the first metric's)
    scores: str  # scores.parquet
    metrics: tuple[str, ...]
    warnings: tuple[str, ...]  # the comparison's notes and warnings (also in rankings.json)
    summary: tuple[str, ...]  # summary_lines of the first metric, then the vowel map's
    vowel_map: str | None = None  # vowel_map.parquet, with --vowel-map

    def to_dict(self) -> dict[str, Any]:
        """The report by name (sequences as lists)."""
        return {"rankings": self.rankings, "scores": self.scores, "metrics": list(self.metrics),
                "warnings": list(self.warnings), "summary": list(self.summary), "vowel_map": self.vowel_map}


def run_similarity(source: str | Path, target: str | Path, out_dir: str | Path, *,
                   metrics: Sequence[str] = (DEFAULT_METRIC,), units: Sequence[str] = UNITS, k: int = TOP_K,
                   n_bootstrap: int = N_BOOTSTRAP, seed: int = SEED, by_emotion: bool = False,
                   ci_level: float = CI_LEVEL, n_halves: int = N_HALVES, max_rows: int = MAX_ROWS,
                   source_language: str | None = None, target_language: str | None = None,
                   resample: str = DEFAULT_RESAMPLE, n_permutations: int = N_PERMUTATIONS,
                   match_duration: bool = False, allow_different: Sequence[str] = (), vowel_map: bool = False,
                   progress: bool = True) -> SimilarityReport:
    """`lam similarity`: compare two stores and write scores, rankings and selections to ``out_dir``.

    Writes ``rankings.json`` (first metric), ``rankings_<metric>.json`` (every metric),
    ``scores.parquet`` + ``scores.csv`` (every scope/unit/metric/layer), ``config.yaml``,
    ``versions.json``. Parameters as :func:`compare_stores`; with ``vowel_map`` also the
    cross-language vowel map of every metric (:mod:`analysis.vowel_map`: ``vowel_map.parquet``,
    ``diagonal_advantage.parquet``, ``vowel_map.json``, with the same draws); without it a vowel map
    left by an earlier run into the folder is removed, so that the folder never holds a stale one.

    Returns
    -------
    SimilarityReport
        ``rankings`` and ``scores`` (paths), ``metrics``, ``warnings``, ``summary``
        (:func:`summary_lines` of the first metric, then :func:`analysis.vowel_map.summary_lines`)
        and ``vowel_map`` (its path, or None).

    Examples
    --------
    Two stores made by ``lam features`` (the package docstring of :mod:`analysis` runs the whole
    chain on the demo corpus):

    >>> from analysis.rankings import load_selections
    >>> from analysis.similarity import run_similarity
    >>> _ = run_similarity("features/en", "features/zh", "similarity", metrics=("centroid_cosine",),
    ...                    progress=False)  # doctest: +SKIP
    >>> load_selections("similarity/rankings.json", unit="Vowl")["BL"]  # doctest: +SKIP
    [7]
    """
    from phonalign.outdir import FolderRules, output_folder

    out = Path(out_dir)
    src, tgt = FeatureStore.open(source), FeatureStore.open(target)
    result = compare_stores(src, tgt, metrics=metrics, units=units, n_bootstrap=n_bootstrap, seed=seed,
                            by_emotion=by_emotion, ci_level=ci_level, n_halves=n_halves, max_rows=max_rows,
                            source_language=source_language, target_language=target_language, resample=resample,
                            n_permutations=n_permutations, match_duration=match_duration,
                            allow_different=allow_different, progress=progress)
    maps = None
    if vowel_map:
        from .vowel_map import vowel_maps

        maps = vowel_maps(src, tgt, metrics=metrics, n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level,
                          max_rows=max_rows, source_language=source_language, target_language=target_language,
                          resample=resample, match_duration=match_duration, allow_different=allow_different,
                          progress=progress)
    with output_folder(out, step="similarity", rules=FolderRules(legacy=("rankings.json", "scores.parquet"))):
        info = _write_similarity(result, out, source=source, target=target, metrics=metrics, k=k, seed=seed,
                                 model=src.meta.get("model"), vowel_map=vowel_map)
        from . import vowel_map as vm_mod

        if maps is None:
            for name in vm_mod.OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
            return info
        files = vm_mod.write_vowel_maps(maps, out, n_bootstrap=n_bootstrap)
        return replace(info, vowel_map=str(files.vowel_map), summary=info.summary + tuple(vm_mod.summary_lines(maps)))


def _write_similarity(result: SimilarityResult, out: Path, *, source: str | Path, target: str | Path,
                      metrics: Sequence[str], k: int, seed: int, model: dict | None,
                      vowel_map: bool) -> SimilarityReport:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from phonalign.fsutil import atomic_path
    from phonalign.provenance import write_run_info

    from .rankings import write_rankings

    write_run_info(out, step="similarity", seed=seed,
                   config={"source_store": str(source), "target_store": str(target), "k": k,
                           **result.config.to_dict(),
                           "vowel_map": vowel_map})
    table = result_table(result)
    with atomic_path(out / "scores.parquet") as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out / "scores.csv") as tmp:
        pcsv.write_csv(table, tmp)
    first: Path | None = None
    summary: list[str] = []
    for m in metrics:
        doc = result_rankings(result, metric=m, k=k, source_store=str(source), target_store=str(target))
        doc["model_identity"] = model  # what `lam train` checks its feature stores against
        write_rankings(out / f"rankings_{m}.json", doc)
        if first is None:
            first = write_rankings(out / "rankings.json", doc)
            summary = summary_lines(doc)
    return SimilarityReport(rankings=str(first), scores=str(out / "scores.parquet"), metrics=tuple(metrics),
                            warnings=tuple(result.warnings), summary=tuple(summary))
