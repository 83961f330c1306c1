"""Cross-language similarity of pooled representations, layer by layer, with uncertainty.

Units
-----
``Utt`` (utterance vectors), ``Vowl`` (segments of the six vowel classes), ``Cons`` (consonant
segments), and each vowel class ``A E @ i O u`` alone. Silence, ``unknown`` and ``excluded``
segments are never used.

Metrics (``higher`` = larger means more similar)
------------------------------------------------
``centroid_cosine`` (default, as in the paper; higher)
    cosine of the source and target centroids (means of the pooled vectors).
``pairwise_cosine`` (higher)
    mean cosine over all source x target pairs, computed exactly as the dot product of the means
    of the unit-normalised vectors.
``standardized_cosine`` (higher)
    centroid cosine after z-scoring every dimension of the layer with the mean and standard
    deviation of *all* its pooled rows (utterances and segments) of both corpora, each corpus
    weighted equally. Raw transformer features are anisotropic (one large common direction), which
    pushes every raw centroid cosine towards 1; this removes the common offset. (For ``Utt`` the
    utterance rows are part of the standardising population, so read it as "direction of
    deviation from the overall mean".)
``coral`` (lower)
    Deep CORAL distance ``||C_s - C_t||_F^2 / (4 d^2)`` of the covariance matrices (``1/(n-1)``).
``mmd`` (lower)
    squared maximum mean discrepancy (biased V-statistic) with the RBF kernel
    ``k(x, y) = exp(-||x - y||^2 / h)``, ``h`` = median of the pairwise squared distances in the
    pooled sample (median heuristic).

The three cosine metrics use *every* row, streamed: one pass over each store per layer gathers, for
every utterance and unit class, the sum (and the sum of unit-normalised vectors) of its rows, so
memory is ``n_utterances x 8 classes x hidden`` per store, whatever the number of segments, and one
layer's chunk at a time. ``coral`` and ``mmd`` need the rows themselves: they use a seeded random
subsample of at most ``max_rows`` rows per unit and corpus (default 1000), the same rows for every
layer, and kernel (Gram-matrix) formulas so that bootstrap draws cost ``O(max_rows^2)`` each.

Uncertainty
-----------
* Bootstrap: ``n_bootstrap`` draws that resample **utterances** with replacement in each corpus
  (``numpy.random.default_rng(seed)``); a draw weights each utterance's rows by how often it was
  drawn. Percentile intervals at ``ci_level``. The same draws serve every layer, unit and metric, so
  per-draw layer rankings give the rank stability (share of draws with a layer in the top k).
* Within-language reference: ``n_halves`` random splits of each corpus' utterances into two halves;
  the score between the halves (mean over splits) says what "the same language" gives, per layer.
* ``by_emotion``: every score also per emotion (utterances of that emotion in both corpora) and
  averaged over the emotions present in both (each bootstrap draw averaged the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from phonalign.fingerprint import differences
from phonalign.records import EMOTIONS, VOWEL_CLASSES

from .errors import SimilarityError
from .store import FeatureStore, check_finite, model_digest

UNITS: tuple[str, ...] = ("Utt", "Vowl", "Cons") + VOWEL_CLASSES
METRICS: dict[str, bool] = {  # name -> higher is more similar
    "centroid_cosine": True,
    "pairwise_cosine": True,
    "standardized_cosine": True,
    "coral": False,
    "mmd": False,
}
_SUM_METRICS = ("centroid_cosine", "pairwise_cosine", "standardized_cosine")
_ROW_METRICS = ("coral", "mmd")
#: storage classes: 0 utterance, 1..6 vowel classes, 7 consonant
_CLASSES: tuple[str, ...] = ("utterance",) + VOWEL_CLASSES + ("consonant",)
_UNIT_CLASSES: dict[str, list[int]] = {"Utt": [0], "Vowl": [1, 2, 3, 4, 5, 6], "Cons": [7],
                                       **{v: [1 + i] for i, v in enumerate(VOWEL_CLASSES)}}


# ---------------------------------------------------------------------------------------- arrays
def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (R, H) arrays (NaN where a row is all zero / NaN)."""
    num = np.einsum("rh,rh->r", a, b)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _weighted_cov_traces(g: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """``sum_ij wa_i wb_j (xa_i~ . xb_j~)^2`` for rows centred on their weighted means, per draw.

    With ``u = G wb``, ``v = wa^T G`` and ``k = wa^T G wb / (Wa Wb)`` the square expands to
    ``wa^T (G*G) wb - sum_i wa_i u_i^2 / Wb - sum_j wb_j v_j^2 / Wa + k^2 Wa Wb``: matrix products
    only, ``O(R m^2)`` for R draws.

    g : (m_a, m_b) linear Gram ``Xa Xb^T``; wa : (R, m_a); wb : (R, m_b). Returns (R,).
    """
    sa, sb = wa.sum(1), wb.sum(1)
    u = wb @ g.T                                           # (R, m_a)
    v = wa @ g                                             # (R, m_b)
    k = np.einsum("rj,rj->r", v, wb) / (sa * sb)
    quad = np.einsum("rj,rj->r", wa @ (g * g), wb)
    return quad - np.einsum("ri,ri->r", wa, u * u) / sb - np.einsum("rj,rj->r", wb, v * v) / sa + k * k * sa * sb


def _coral_from_grams(gaa, gbb, gab, wa, wb, d: int) -> np.ndarray:
    """Weighted Deep CORAL distance per draw from Gram matrices (see module docstring)."""
    na, nb = wa.sum(1), wb.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        taa = _weighted_cov_traces(gaa, wa, wa) / (na - 1) ** 2
        tbb = _weighted_cov_traces(gbb, wb, wb) / (nb - 1) ** 2
        tab = _weighted_cov_traces(gab, wa, wb) / ((na - 1) * (nb - 1))
    return (taa - 2 * tab + tbb) / (4.0 * d * d)


def _sqdist(gaa_diag, gbb_diag, gab):
    return np.maximum(gaa_diag[:, None] + gbb_diag[None, :] - 2 * gab, 0.0)


def _mmd_from_kernels(kaa, kbb, kab, wa, wb) -> np.ndarray:
    na, nb = wa.sum(1), wb.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.einsum("rj,rj->r", wa @ kaa, wa) / na ** 2 + np.einsum("rj,rj->r", wb @ kbb, wb) / nb ** 2
                - 2 * np.einsum("rj,rj->r", wa @ kab, wb) / (na * nb))


def median_bandwidth(a: np.ndarray, b: np.ndarray) -> float:
    """Median of the pairwise squared distances of the pooled rows of ``a`` and ``b`` (off-diagonal)."""
    x = np.concatenate([a, b]).astype(np.float64)
    g = x @ x.T
    d = _sqdist(np.diag(g), np.diag(g), g)
    iu = np.triu_indices(len(x), 1)
    h = float(np.median(d[iu])) if iu[0].size else 1.0
    return h if h > 0 else 1.0


def coral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Deep CORAL distance ``||C_a - C_b||_F^2 / (4 d^2)`` (covariances with ``1/(n-1)``).

    Parameters
    ----------
    a, b : ndarray, shape (n_a, d) and (n_b, d)
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(np.sum((ca - cb) ** 2) / (4.0 * a.shape[1] ** 2))


def mmd_rbf(a: np.ndarray, b: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Squared MMD (biased) with ``k(x, y) = exp(-||x-y||^2 / h)``; ``h`` by the median heuristic."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    gaa, gbb, gab = a @ a.T, b @ b.T, a @ b.T
    da, db = np.diag(gaa), np.diag(gbb)
    k = lambda d: np.exp(-d / h)  # noqa: E731
    return float(k(_sqdist(da, da, gaa)).mean() + k(_sqdist(db, db, gbb)).mean() - 2 * k(_sqdist(da, db, gab)).mean())


def similarity(a, b, *, metric: str = "centroid_cosine", standardize_with: tuple | None = None) -> float:
    """Similarity of two sets of pooled vectors (librosa-style: arrays in, a number out).

    Parameters
    ----------
    a, b : ndarray, float, shape (n_a, H) and (n_b, H)
        Pooled vectors of one unit in one layer, source and target.
    metric : str
        One of :data:`METRICS` (see the module docstring); ``coral`` and ``mmd`` are distances.
    standardize_with : (mean, std), optional
        For ``standardized_cosine``: per-dimension statistics; default from ``a`` and ``b``
        (each set weighted equally).

    Returns
    -------
    float
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise SimilarityError(f"cannot compare arrays of shapes {a.shape} and {b.shape}",
                              hint="pass two non-empty (n, H) arrays with the same H")
    if metric == "centroid_cosine":
        return float(_cos_rows(a.mean(0)[None], b.mean(0)[None])[0])
    if metric == "pairwise_cosine":
        na = a / np.linalg.norm(a, axis=1, keepdims=True)
        nb = b / np.linalg.norm(b, axis=1, keepdims=True)
        return float(na.mean(0) @ nb.mean(0))
    if metric == "standardized_cosine":
        if standardize_with is None:
            mu = (a.mean(0) + b.mean(0)) / 2
            sd = np.sqrt(np.maximum(((a ** 2).mean(0) + (b ** 2).mean(0)) / 2 - mu ** 2, 0)) + 1e-12
        else:
            mu, sd = standardize_with
        return float(_cos_rows(((a.mean(0) - mu) / sd)[None], ((b.mean(0) - mu) / sd)[None])[0])
    if metric == "coral":
        return coral_distance(a, b)
    if metric == "mmd":
        return mmd_rbf(a, b)
    raise SimilarityError(f"unknown metric {metric!r}", hint=f"use one of {', '.join(METRICS)}")


# ---------------------------------------------------------------------------------------- stores
class _View:
    """What the analysis needs from one store's index, as integer arrays."""

    def __init__(self, store: FeatureStore, *, name: str, language: str | None = None) -> None:
        self.store, self.name = store, name
        idx = store.index
        utt = np.asarray(idx.column("utt_id").to_pylist(), dtype=object)
        # rows of another language (one store holding both corpora) take no part at all
        if language is None:
            self.row_keep = np.ones(len(utt), bool)
        else:
            self.row_keep = np.asarray(idx.column("language").to_pylist(), dtype=object) == language
        self.utt_ids, kept_utt = np.unique(utt[self.row_keep], return_inverse=True)
        self.row_utt = np.zeros(len(utt), np.int64)
        self.row_utt[self.row_keep] = kept_utt
        self.n_utt = len(self.utt_ids)
        kind = np.asarray(idx.column("kind").to_pylist(), dtype=object)
        ucls = np.asarray(idx.column("unit_class").to_pylist(), dtype=object)
        cls = np.full(len(utt), -1, np.int64)
        cls[kind == "utt"] = 0
        seg = kind == "segment"
        for i, name_ in enumerate(_CLASSES[1:], start=1):
            cls[seg & (ucls == name_)] = i
        cls[~self.row_keep] = -1
        self.row_cls = cls
        counts = np.zeros((len(_CLASSES), self.n_utt))
        ok = cls >= 0
        np.add.at(counts, (cls[ok], self.row_utt[ok]), 1)
        self.counts = counts  # (8, n_utt)
        emo = np.asarray(idx.column("emotion").to_pylist(), dtype=object)
        self.utt_emotion = np.full(self.n_utt, None, dtype=object)
        self.utt_emotion[self.row_utt[self.row_keep]] = emo[self.row_keep]

    def group_matrix(self, offset: int, n: int) -> tuple[np.ndarray, sp.csr_matrix]:
        """Groups (class * n_utt + utt) touched by rows offset..offset+n and their indicator."""
        cls = self.row_cls[offset:offset + n]
        keep = np.flatnonzero(cls >= 0)
        code = cls[keep] * self.n_utt + self.row_utt[offset:offset + n][keep]
        uniq, inv = np.unique(code, return_inverse=True)
        g = sp.csr_matrix((np.ones(keep.size), (inv, keep)), shape=(uniq.size, n))
        return uniq, g


@dataclass
class UnitResult:
    """Scores of one (scope, unit, metric) over layers 0..L."""

    score: np.ndarray          # (L+1,)
    boot: np.ndarray           # (n_bootstrap, L+1)
    ref_source: np.ndarray     # (L+1,)
    ref_target: np.ndarray     # (L+1,)
    n_source: int = 0
    n_target: int = 0
    n_utt_source: int = 0
    n_utt_target: int = 0

    def ci(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval at ``level`` (e.g. 0.95): ``(low, high)``, each ``(n_layers,)``."""
        q = (1 - level) / 2 * 100
        if self.boot.shape[0] == 0:
            nan = np.full_like(self.score, np.nan)
            return nan, nan
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanpercentile(self.boot, q, axis=0), np.nanpercentile(self.boot, 100 - q, axis=0)


@dataclass
class SimilarityResult:
    """Everything `lam similarity` computed. ``results[scope][unit][metric]`` is a :class:`UnitResult`;
    scopes are ``all`` and, with ``by_emotion``, each emotion and ``averaged``."""

    n_layers: int
    source_model: str
    target_model: str
    revision: str | None
    config: dict
    results: dict = field(default_factory=dict)


def check_same_model(source: FeatureStore, target: FeatureStore) -> None:
    """Raise :class:`SimilarityError` unless both stores were made by the same model and settings.

    The model is compared by the digest of its weights when both stores record one (two folders
    passed as the same ``--model`` name may hold different models, and one model may be reached by
    two paths); stores of earlier versions are compared by model id.
    """
    if (source.n_layers, source.hidden_size) != (target.n_layers, target.hidden_size):
        raise SimilarityError(
            f"the stores hold different models: {source.model_id} ({source.n_layers} layers, {source.hidden_size}) "
            f"vs {target.model_id} ({target.n_layers} layers, {target.hidden_size})", path=target.path,
            hint="extract both corpora with the same --model")
    ds, dt = model_digest(source.meta), model_digest(target.meta)
    if ds and dt:
        if ds != dt:
            raise SimilarityError(
                f"the stores were made by different models: {source.model_id} ({ds[:19]}) vs {target.model_id} "
                f"({dt[:19]}), compared by the digest of their weights", path=target.path,
                hint="extract both corpora with the same model files")
    elif source.model_id != target.model_id:
        raise SimilarityError(f"the stores were made by different models: {source.model_id} vs {target.model_id}",
                              path=target.path, hint="extract both corpora with the same model (--model)")
    if source.meta.get("settings") != target.meta.get("settings"):
        raise SimilarityError(f"the stores were made with different settings: "
                              f"{differences(source.meta.get('settings'), target.meta.get('settings'))}",
                              path=target.path, hint="extract both corpora with the same model and settings")


def _weights(view: _View, rng: np.random.Generator, n_bootstrap: int, n_halves: int) -> np.ndarray:
    """(1 + B + 2 n_halves, n_utt) utterance weights: all ones; bootstrap counts; half A; half B."""
    n = view.n_utt
    boot = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(np.float64) if n else \
        np.zeros((n_bootstrap, 0))
    halves_a = np.zeros((n_halves, n))
    for h in range(n_halves):
        halves_a[h, rng.permutation(n)[: n // 2]] = 1.0
    return np.concatenate([np.ones((1, n)), boot, halves_a, 1.0 - halves_a])


def compare_stores(source: FeatureStore, target: FeatureStore, *, metrics: Sequence[str] = ("centroid_cosine",),
                   units: Sequence[str] = UNITS, n_bootstrap: int = 200, seed: int = 0, by_emotion: bool = False,
                   ci_level: float = 0.95, n_halves: int = 10, max_rows: int = 1000,
                   source_language: str | None = None, target_language: str | None = None,
                   progress: bool = False) -> SimilarityResult:
    """Per-layer similarity of every unit between two feature stores (streamed; see module docstring).

    Parameters
    ----------
    source, target : FeatureStore
        Made by the same model (same layers and hidden size).
    metrics : sequence of str
        Names in :data:`METRICS`.
    units : sequence of str
        Names in :data:`UNITS`.
    n_bootstrap : int
        Bootstrap draws (utterances resampled); 0 for no intervals.
    seed : int
    by_emotion : bool
        Also per emotion and averaged over emotions (needs emotion labels in both stores).
    n_halves : int
        Random within-language half splits for the reference.
    max_rows : int
        Subsample per unit and corpus for ``coral`` and ``mmd``.
    source_language, target_language : str, optional
        Keep only rows of this ``language`` (so that one store may hold both corpora; pass it as
        both ``source`` and ``target``).

    Returns
    -------
    SimilarityResult
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise SimilarityError(f"unknown metric(s) {bad}", hint=f"use {', '.join(METRICS)}")
    bad = [u for u in units if u not in UNITS]
    if bad:
        raise SimilarityError(f"unknown unit(s) {bad}", hint=f"use {', '.join(UNITS)}")
    check_same_model(source, target)
    src = _View(source, name="source", language=source_language)
    tgt = _View(target, name="target", language=target_language)
    for v, lang in ((src, source_language), (tgt, target_language)):
        if v.n_utt == 0:
            what = "the store is empty" if lang is None else f"the store has no utterance of language {lang!r}"
            raise SimilarityError(what, path=v.store.path, hint="run `lam features` first, or check --*-language")
    rng = np.random.default_rng(seed)
    w_src = _weights(src, rng, n_bootstrap, n_halves)
    w_tgt = _weights(tgt, rng, n_bootstrap, n_halves)
    scopes = {"all": (np.ones(src.n_utt), np.ones(tgt.n_utt))}
    if by_emotion:
        present = [e for e in EMOTIONS if np.any(src.utt_emotion == e) and np.any(tgt.utt_emotion == e)]
        if not present:
            raise SimilarityError("--by-emotion needs emotion labels shared by both corpora; none found",
                                  path=target.path, hint="label the corpora, or drop --by-emotion")
        for e in present:
            scopes[e] = ((src.utt_emotion == e).astype(float), (tgt.utt_emotion == e).astype(float))
    n_l = source.n_layers + 1
    h = source.hidden_size
    sum_metrics = [m for m in metrics if m in _SUM_METRICS]
    row_metrics = [m for m in metrics if m in _ROW_METRICS]
    need_norm = "pairwise_cosine" in sum_metrics
    b, nh = n_bootstrap, n_halves

    # scores[scope][unit][metric] -> arrays filled layer by layer
    res: dict = {s: {u: {m: UnitResult(np.full(n_l, np.nan), np.full((b, n_l), np.nan), np.full(n_l, np.nan),
                                        np.full(n_l, np.nan)) for m in metrics} for u in units} for s in scopes}
    for s, (ms, mt) in scopes.items():
        for u in units:
            cs = src.counts[_UNIT_CLASSES[u]].sum(0) * ms
            ct = tgt.counts[_UNIT_CLASSES[u]].sum(0) * mt
            for m in metrics:
                r = res[s][u][m]
                r.n_source, r.n_target = int(cs.sum()), int(ct.sum())
                r.n_utt_source, r.n_utt_target = int((cs > 0).sum()), int((ct > 0).sum())
    samples = {v.name: _row_samples(v, units, max_rows, seed) for v in (src, tgt)} if row_metrics else {}

    from tqdm.auto import tqdm

    for layer in tqdm(range(n_l), disable=not progress, desc="similarity", unit="layer"):
        stats = {}
        if sum_metrics:
            for v in (src, tgt):
                stats[v.name] = _stream_sums(v, layer, h, need_norm)
            mu, sd = _standardizer(stats["source"], stats["target"])
        rows = {v.name: _read_sample_rows(v, samples[v.name], layer) for v in (src, tgt)} if row_metrics else {}
        for s, (ms, mt) in scopes.items():
            ws, wt = w_src * ms, w_tgt * mt
            for u in units:
                cl = _UNIT_CLASSES[u]
                for m in sum_metrics:
                    full, boot, ref_s, ref_t = _sum_metric(m, stats, cl, ws, wt, b, nh, mu, sd)
                    r = res[s][u][m]
                    r.score[layer], r.boot[:, layer], r.ref_source[layer], r.ref_target[layer] = full, boot, ref_s, ref_t
                for m in row_metrics:
                    full, boot, ref_s, ref_t = _row_metric(m, rows, samples, u, ws, wt, b, nh, h)
                    r = res[s][u][m]
                    r.score[layer], r.boot[:, layer], r.ref_source[layer], r.ref_target[layer] = full, boot, ref_s, ref_t
        del stats, rows
    if by_emotion:
        emos = [s for s in scopes if s != "all"]
        res["averaged"] = {}
        for u in units:
            res["averaged"][u] = {}
            for m in metrics:
                parts = [res[e][u][m] for e in emos]
                with np.errstate(all="ignore"):
                    res["averaged"][u][m] = UnitResult(
                        np.mean([p.score for p in parts], 0), np.mean([p.boot for p in parts], 0),
                        np.mean([p.ref_source for p in parts], 0), np.mean([p.ref_target for p in parts], 0),
                        sum(p.n_source for p in parts), sum(p.n_target for p in parts),
                        sum(p.n_utt_source for p in parts), sum(p.n_utt_target for p in parts))
    config = dict(metrics=list(metrics), units=list(units), n_bootstrap=n_bootstrap, seed=seed, by_emotion=by_emotion,
                  ci_level=ci_level, n_halves=n_halves, max_rows=max_rows, source_language=source_language,
                  target_language=target_language)
    return SimilarityResult(n_layers=source.n_layers, source_model=source.model_id, target_model=target.model_id,
                            revision=source.meta.get("revision"), config=config, results=res)


def _stream_sums(v: _View, layer: int, h: int, need_norm: bool) -> dict:
    """One pass over a layer: per (class, utterance) sums (and of unit-normalised rows), totals."""
    s = np.zeros((len(_CLASSES) * v.n_utt, h))
    sn = np.zeros_like(s) if need_norm else None
    tot, tot2, n_all = np.zeros(h), np.zeros(h), 0
    for offset, arr in v.store.iter_layer(layer):
        x = np.asarray(arr, dtype=np.float64)
        if not np.isfinite(x).all():  # stores refuse them at write; one written before that did not
            check_finite(x, v.store.index.slice(offset, x.shape[0]), layer=layer, path=v.store.path)
        uniq, g = v.group_matrix(offset, x.shape[0])
        s[uniq] += g @ x
        if need_norm:
            nrm = np.linalg.norm(x, axis=1, keepdims=True)
            s_n = g @ (x / np.where(nrm > 0, nrm, 1.0))
            sn[uniq] += s_n
        mine = x[v.row_keep[offset:offset + x.shape[0]]]
        tot += mine.sum(0)
        tot2 += np.einsum("nh,nh->h", mine, mine)
        n_all += mine.shape[0]
        del x, arr
    out = {"S": s.reshape(len(_CLASSES), v.n_utt, h), "tot": tot, "tot2": tot2, "n": n_all,
           "counts": v.counts}
    if need_norm:
        out["SN"] = sn.reshape(len(_CLASSES), v.n_utt, h)
    return out


def _standardizer(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    mu_a, mu_b = a["tot"] / max(a["n"], 1), b["tot"] / max(b["n"], 1)
    mu = (mu_a + mu_b) / 2
    ex2 = (a["tot2"] / max(a["n"], 1) + b["tot2"] / max(b["n"], 1)) / 2
    return mu, np.sqrt(np.maximum(ex2 - mu * mu, 0.0)) + 1e-12


def _centroids(stat: dict, key: str, cl: list[int], w: np.ndarray) -> np.ndarray:
    m = stat[key][cl].sum(0)                  # (n_utt, H)
    n = stat["counts"][cl].sum(0)             # (n_utt,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ m) / (w @ n)[:, None]     # (R, H)


def _sum_metric(metric, stats, cl, ws, wt, b, nh, mu, sd):
    key = "SN" if metric == "pairwise_cosine" else "S"
    cs = _centroids(stats["source"], key, cl, ws)
    ct = _centroids(stats["target"], key, cl, wt)
    if metric == "pairwise_cosine":
        f = lambda x, y: np.einsum("rh,rh->r", x, y)  # noqa: E731  (dot of mean unit vectors)
    elif metric == "standardized_cosine":
        f = lambda x, y: _cos_rows((x - mu) / sd, (y - mu) / sd)  # noqa: E731
    else:
        f = _cos_rows
    cross = f(cs[: 1 + b], ct[: 1 + b])
    a0, b0 = 1 + b, 1 + b + nh
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref_s = np.nanmean(f(cs[a0:b0], cs[b0:])) if nh else np.nan
            ref_t = np.nanmean(f(ct[a0:b0], ct[b0:])) if nh else np.nan
    return cross[0], cross[1:], ref_s, ref_t


def _row_samples(v: _View, units, max_rows: int, seed: int) -> dict:
    """Seeded subsample of rows per unit (same for every layer): rows and their utterance codes."""
    out = {}
    for k, u in enumerate(units):
        rows = np.flatnonzero(np.isin(v.row_cls, _UNIT_CLASSES[u]))
        rng = np.random.default_rng([seed, k, 0 if v.name == "source" else 1])
        if rows.size > max_rows:
            rows = np.sort(rng.choice(rows, size=max_rows, replace=False))
        out[u] = rows
    union = np.unique(np.concatenate(list(out.values()))) if out else np.zeros(0, np.int64)
    return {"units": out, "union": union, "utt": {u: v.row_utt[r] for u, r in out.items()}}


def _read_sample_rows(v: _View, sample: dict, layer: int) -> dict:
    union = sample["union"]
    x = v.store.read_layer(layer, rows=union).astype(np.float64)
    if not np.isfinite(x).all():
        check_finite(x, v.store.index.take(pa.array(union)), layer=layer, path=v.store.path)
    pos = {u: np.searchsorted(union, r) for u, r in sample["units"].items()}
    return {u: x[p] for u, p in pos.items()}


def _row_metric(metric, rows, samples, u, ws, wt, b, nh, h):
    xs, xt = rows["source"][u], rows["target"][u]
    if len(xs) < 2 or len(xt) < 2:
        return np.nan, np.full(b, np.nan), np.nan, np.nan
    # row weights = weight of the row's utterance in each draw
    rws = ws[:, samples["source"]["utt"][u]]
    rwt = wt[:, samples["target"]["utt"][u]]
    gss, gtt, gst = xs @ xs.T, xt @ xt.T, xs @ xt.T
    a0, b0 = 1 + b, 1 + b + nh
    if metric == "coral":
        cross = _coral_from_grams(gss, gtt, gst, rws[: 1 + b], rwt[: 1 + b], h)
        ref_s = _coral_from_grams(gss, gss, gss, rws[a0:b0], rws[b0:], h)
        ref_t = _coral_from_grams(gtt, gtt, gtt, rwt[a0:b0], rwt[b0:], h)
    else:
        ds, dt = np.diag(gss), np.diag(gtt)
        dss, dtt, dst = _sqdist(ds, ds, gss), _sqdist(dt, dt, gtt), _sqdist(ds, dt, gst)
        pooled = np.concatenate([dss[np.triu_indices(len(xs), 1)], dtt[np.triu_indices(len(xt), 1)], dst.ravel()])
        bw = float(np.median(pooled)) or 1.0
        kss, ktt, kst = np.exp(-dss / bw), np.exp(-dtt / bw), np.exp(-dst / bw)
        cross = _mmd_from_kernels(kss, ktt, kst, rws[: 1 + b], rwt[: 1 + b])
        ref_s = _mmd_from_kernels(kss, kss, kss, rws[a0:b0], rws[b0:])
        ref_t = _mmd_from_kernels(ktt, ktt, ktt, rwt[a0:b0], rwt[b0:])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return cross[0], cross[1:], (np.nanmean(ref_s) if nh else np.nan), (np.nanmean(ref_t) if nh else np.nan)


# ---------------------------------------------------------------------------------------- output
def result_rankings(result: SimilarityResult, *, metric: str, k: int = 3, scope: str | None = None,
                    source_store: str = "", target_store: str = "") -> dict:
    """The rankings document (see :mod:`analysis.rankings`) of one metric.

    ``scope`` defaults to ``averaged`` when per-emotion scores exist, else ``all``.
    """
    from .rankings import rank_layers, select_layers, top_k_frequency

    higher = METRICS[metric]
    scope = scope or ("averaged" if "averaged" in result.results else "all")
    level = result.config["ci_level"]
    seed = result.config["seed"]

    def entry(r: UnitResult, full: bool) -> dict:
        lo, hi = r.ci(level)
        out = {"layers": list(range(result.n_layers + 1)), "score": _list(r.score), "ci_low": _list(lo),
               "ci_high": _list(hi), "reference_source": _list(r.ref_source), "reference_target": _list(r.ref_target),
               "n_source": r.n_source, "n_target": r.n_target, "n_utt_source": r.n_utt_source,
               "n_utt_target": r.n_utt_target}
        if full:
            out["top_k_frequency"] = top_k_frequency(r.boot, k=k, higher_is_more_similar=higher)
            out["ranking"] = rank_layers(r.score, higher_is_more_similar=higher)
            out["selections"] = select_layers(r.score, k=k, seed=seed, higher_is_more_similar=higher)
        return out

    units, skipped = {}, {}
    for u, by_metric in result.results[scope].items():
        r = by_metric[metric]
        if r.n_source == 0 or r.n_target == 0:  # e.g. no 'O' vowels in one corpus: no ranking
            skipped[u] = f"{r.n_source} source and {r.n_target} target rows"
        elif np.all(np.isnan(r.score[1:])):  # e.g. coral on a single row
            skipped[u] = f"no score defined with {r.n_source} source and {r.n_target} target rows"
        else:
            units[u] = entry(r, True)
    doc = {"model": result.source_model, "target_model": result.target_model, "revision": result.revision,
           "source_store": source_store, "target_store": target_store, "metric": metric,
           "higher_is_more_similar": higher, "n_layers": result.n_layers, "k": k, "seed": seed,
           "n_bootstrap": result.config["n_bootstrap"], "ci_level": level, "n_halves": result.config["n_halves"],
           "emotion": None if scope == "all" else scope, "units": units, "skipped_units": skipped}
    emos = [s for s in result.results if s not in ("all", "averaged")]
    if emos:
        doc["by_emotion"] = {e: {u: entry(m[metric], False) for u, m in result.results[e].items()} for e in emos}
    return doc


def _list(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64)]


def result_table(result: SimilarityResult):
    """Long table: scope, unit, metric, layer, score, ci_low, ci_high, references, counts (pyarrow)."""
    import pyarrow as pa

    cols = {k: [] for k in ("scope", "unit", "metric", "layer", "score", "ci_low", "ci_high", "reference_source",
                            "reference_target", "n_source", "n_target")}
    for scope, units in result.results.items():
        for u, by_metric in units.items():
            for m, r in by_metric.items():
                lo, hi = r.ci(result.config["ci_level"])
                n = result.n_layers + 1
                cols["scope"] += [scope] * n
                cols["unit"] += [u] * n
                cols["metric"] += [m] * n
                cols["layer"] += list(range(n))
                for key, arr in (("score", r.score), ("ci_low", lo), ("ci_high", hi),
                                 ("reference_source", r.ref_source), ("reference_target", r.ref_target)):
                    cols[key] += _list(arr)
                cols["n_source"] += [r.n_source] * n
                cols["n_target"] += [r.n_target] * n
    return pa.table(cols)


def run_similarity(source, target, out_dir, *, metrics=("centroid_cosine",), units=UNITS, k: int = 3,
                   n_bootstrap: int = 200, seed: int = 0, by_emotion: bool = False, ci_level: float = 0.95,
                   n_halves: int = 10, max_rows: int = 1000, source_language: str | None = None,
                   target_language: str | None = None, progress: bool = True) -> dict:
    """`lam similarity`: compare two stores and write scores, rankings and selections to ``out_dir``.

    Writes ``rankings.json`` (first metric), ``rankings_<metric>.json`` (every metric),
    ``scores.parquet`` + ``scores.csv`` (every scope/unit/metric/layer), ``config.yaml``,
    ``versions.json``.

    Returns
    -------
    dict
        ``{"rankings": path, "scores": path, "metrics": [...]}``

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
                            source_language=source_language, target_language=target_language, progress=progress)
    with output_folder(out, step="similarity", rules=FolderRules(legacy=("rankings.json", "scores.parquet"))):
        return _write_similarity(result, out, source=source, target=target, metrics=metrics, k=k, seed=seed,
                                 model=src.meta.get("model"))


def _write_similarity(result: SimilarityResult, out: Path, *, source, target, metrics, k: int, seed: int,
                      model: dict | None) -> dict:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from phonalign.fsutil import atomic_path
    from phonalign.provenance import write_run_info

    from .rankings import write_rankings

    write_run_info(out, step="similarity", seed=seed,
                   config={"source_store": str(source), "target_store": str(target), "k": k, **result.config})
    table = result_table(result)
    with atomic_path(out / "scores.parquet") as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out / "scores.csv") as tmp:
        pcsv.write_csv(table, tmp)
    first = None
    for m in metrics:
        doc = result_rankings(result, metric=m, k=k, source_store=str(source), target_store=str(target))
        doc["model_identity"] = model  # what `lam train` checks its feature stores against
        write_rankings(out / f"rankings_{m}.json", doc)
        if first is None:
            first = write_rankings(out / "rankings.json", doc)
    return {"rankings": str(first), "scores": str(out / "scores.parquet"), "metrics": list(metrics)}
