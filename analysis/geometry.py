"""Layer geometry of vowel segments: 2-D PCA projections per layer and linear-probe separability.

``run_geometry(source_store, target_store, out_dir)`` (``lam geometry``) reads the pooled vowel
segment vectors of both languages (one store holding both, or one store per language) and, for
every layer:

* **projection**: PCA fitted on both languages together, each language weighted equally (at most
  ``max_points`` vectors per language and class, a seeded subsample, so that the larger corpus does
  not define the axes alone); vectors are centred, not scaled (the axes are those of the layer's
  own geometry). ``projection.parquet``: ``layer, pc1, pc2, unit_class, language, speaker, emotion,
  utt_id``; ``geometry.json`` holds the explained-variance ratios.
* **linear probe**: multinomial logistic regression on standardised vectors (scikit-learn
  ``StandardScaler`` + ``LogisticRegression``, L2, ``C=1``), scored by **balanced accuracy** (mean
  per-class recall, so that frequent classes do not flatter it; chance = 1 / number of classes).

  - per language: cross-validated with ``GroupKFold`` **by speaker** (at most ``n_folds`` folds):
    no speaker is ever in both the training and the test fold, so the probe cannot score by
    recognising voices; one score per fold, reported with their mean and range.
  - cross-language: trained on all of one language, tested on all of the other (both directions),
    on the classes both languages have; one score per test speaker, with their mean and range.

  ``probe.parquet``: ``layer, train_language, test_language, fold, n_train, n_test, n_classes,
  balanced_accuracy, chance`` (``fold`` = -1: the pooled score of all folds' predictions).

Figures are drawn by :mod:`analysis.vowel_plots` (``pca_small_multiples``, ``probe_curve``).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phonalign.fsutil import atomic_path, atomic_write_json
from phonalign.outdir import FolderRules, check_output_folder, output_folder
from phonalign.provenance import write_run_info
from phonalign.records import VOWEL_CLASSES

from .errors import AnalysisError
from .store import FeatureStore

logger = logging.getLogger(__name__)


#: What a geometry output folder may hold (:mod:`phonalign.outdir`).
GEOMETRY_FOLDER = FolderRules(legacy=("geometry.json", "probe.parquet"),
                              managed={"figures": r"^[A-Za-z0-9_.@\-]+\.(png|svg)$"})


class GeometryError(AnalysisError):
    """Vowel vectors cannot be projected or probed (no vowels, one language, one speaker, ...)."""


@dataclass(frozen=True)
class VowelVectors:
    """Which pooled vowel-segment rows of which store take part, with their labels.

    ``rows[k]`` are index rows of ``stores[k]``; the label arrays (``(n,)``, object) run over the
    concatenation of all stores' rows in that order.
    """

    stores: tuple[FeatureStore, ...]
    rows: tuple[np.ndarray, ...]
    unit_class: np.ndarray
    language: np.ndarray
    speaker: np.ndarray
    emotion: np.ndarray
    utt_id: np.ndarray

    @property
    def n_layers(self) -> int:
        """L; layers are 0..L."""
        return int(self.stores[0].n_layers)

    def layer(self, layer: int) -> np.ndarray:
        """``(n, hidden)`` float32 vectors of one layer, all stores concatenated."""
        return np.concatenate([s.read_layer(layer, rows=r) for s, r in zip(self.stores, self.rows, strict=True)])


@dataclass(frozen=True)
class Projection:
    """PCA projections of the same vowel vectors at every layer.

    ``coords`` ``(n_layers, n, 2)`` float32 (PC1, PC2; arbitrary units of the layer's space),
    ``explained`` ``(n_layers, 2)`` explained-variance ratios; labels ``(n,)`` as in
    :class:`VowelVectors`.
    """

    layers: tuple[int, ...]
    coords: np.ndarray
    explained: np.ndarray
    unit_class: np.ndarray
    language: np.ndarray
    speaker: np.ndarray
    emotion: np.ndarray


@dataclass(frozen=True)
class ProbeScore:
    """One probe score: balanced accuracy (0..1) of classes of ``test_language`` vowels.

    ``fold`` is the fold (per-language CV) or the test speaker's position (cross-language) it
    comes from, -1 for the pooled predictions of all folds. ``chance`` = 1 / ``n_classes``.
    """

    layer: int
    train_language: str
    test_language: str
    fold: int
    test_speakers: str
    n_train: int
    n_test: int
    n_classes: int
    balanced_accuracy: float
    chance: float


@dataclass(frozen=True)
class GeometryResult:
    """What :func:`run_geometry` wrote and computed."""

    out_dir: Path
    projection: Projection
    probe: tuple[ProbeScore, ...]
    seconds: float


def vowel_vectors(stores: Sequence[str | Path | FeatureStore], *, languages: Sequence[str] | None = None,
                  classes: Sequence[str] = VOWEL_CLASSES) -> VowelVectors:
    """The vowel-segment rows of one or more stores (same model), optionally of some languages only."""
    opened = tuple(s if isinstance(s, FeatureStore) else FeatureStore.open(s) for s in stores)
    if len({(s.model_id, s.n_layers, s.hidden_size) for s in opened}) > 1:
        raise GeometryError("the stores hold different models or layer counts",
                            path=opened[1].path, hint="compare stores made with the same --model")
    rows: list[np.ndarray] = []
    labels: dict[str, list[str]] = {k: [] for k in ("unit_class", "language", "speaker", "emotion", "utt_id")}
    seen: set[tuple[str, str]] = set()
    for st in opened:
        idx = st.index.select(["kind", "unit_class", "language", "speaker", "emotion", "utt_id"]).to_pylist()
        keep = [i for i, r in enumerate(idx) if r["kind"] == "segment" and r["unit_class"] in classes
                and (languages is None or r["language"] in languages)
                and (r["language"], r["utt_id"]) not in seen]  # one store given twice: count once
        seen.update((idx[i]["language"], idx[i]["utt_id"]) for i in keep)
        rows.append(np.asarray(keep, dtype=np.int64))
        for k in labels:
            labels[k] += [idx[i][k] or "" for i in keep]
    if not sum(len(r) for r in rows):
        raise GeometryError("no vowel segment vectors in the store(s)", path=opened[0].path,
                            hint="extract features from an aligned corpus (`lam features ALIGNED OUT`)")
    return VowelVectors(opened, tuple(rows), *(np.asarray(labels[k], dtype=object) for k in
                                                ("unit_class", "language", "speaker", "emotion", "utt_id")))


def _balanced_subsample(v: VowelVectors, max_points: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``max_points`` per (language, class), seeded, sorted."""
    rng = np.random.default_rng(seed)
    keep = []
    for lang in np.unique(v.language):
        for c in np.unique(v.unit_class):
            idx = np.flatnonzero((v.language == lang) & (v.unit_class == c))
            if len(idx) > max_points:
                idx = rng.choice(idx, size=max_points, replace=False)
            keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def project_layers(v: VowelVectors, *, layers: Sequence[int] | None = None, max_points: int = 300,
                   seed: int = 0) -> Projection:
    """PCA (2 components) of the vowel vectors at each layer, fitted on both languages together.

    Each language gets equal weight in the fit (rows weighted by 1 / its row count), so that a
    larger corpus does not set the axes alone. At most ``max_points`` per language and class are
    projected (seeded subsample).
    """
    layers = tuple(range(v.n_layers + 1)) if layers is None else tuple(int(x) for x in layers)
    sel = _balanced_subsample(v, max_points, seed)
    langs = v.language[sel]
    w = np.zeros(len(sel))
    for lang in np.unique(langs):
        w[langs == lang] = 1.0 / np.sum(langs == lang)
    w /= w.sum()
    coords = np.zeros((len(layers), len(sel), 2), np.float32)
    explained = np.zeros((len(layers), 2))
    for li, layer in enumerate(layers):
        x = v.layer(layer)[sel].astype(np.float64)
        mean = w @ x
        xc = x - mean
        cov = (xc * w[:, None]).T @ xc
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:2]
        comps = vecs[:, order]
        # a fixed sign per component (largest loading positive), so that panels do not flip at random
        comps *= np.sign(comps[np.argmax(np.abs(comps), axis=0), range(comps.shape[1])])
        coords[li] = (xc @ comps).astype(np.float32)
        total = float(vals.clip(min=0).sum())
        explained[li] = vals[order].clip(min=0) / total if total > 0 else 0.0
    return Projection(layers, coords, explained, v.unit_class[sel], v.language[sel], v.speaker[sel], v.emotion[sel])


def _probe_model(seed: int):  # noqa: ANN202 -- a scikit-learn Pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def _bacc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" in small folds
        return float(balanced_accuracy_score(y_true, y_pred))


def probe_layers(v: VowelVectors, *, layers: Sequence[int] | None = None, n_folds: int = 5,
                 max_per_class: int = 1000, seed: int = 0) -> list[ProbeScore]:
    """Cross-validated linear-probe balanced accuracy per layer, per language and across languages.

    Parameters
    ----------
    v : the vowel vectors (:func:`vowel_vectors`).
    layers : layers to probe (default all, 0..L).
    n_folds : most folds of the per-language ``GroupKFold`` by speaker (fewer when a language has
        fewer speakers; a language with one speaker gets no per-language score).
    max_per_class : at most this many vectors per language and class (seeded subsample), for time.

    Returns
    -------
    list of :class:`ProbeScore`: per layer, per language its folds and the pooled score (fold -1),
    and for each ordered pair of languages the per-test-speaker scores and the pooled one.
    """
    from sklearn.model_selection import GroupKFold

    layers = tuple(range(v.n_layers + 1)) if layers is None else tuple(int(x) for x in layers)
    sel = _balanced_subsample(v, max_per_class, seed)
    y, lang, spk = v.unit_class[sel], v.language[sel], v.speaker[sel]
    languages = sorted(set(lang))
    for a in languages:
        if len(np.unique(spk[lang == a])) < 2:
            logger.warning("probe: %s has one speaker; no speaker-disjoint folds, no per-language score", a)
    out: list[ProbeScore] = []
    for layer in layers:
        x = v.layer(layer)[sel]
        for a in languages:
            ia = np.flatnonzero(lang == a)
            speakers = np.unique(spk[ia])
            if len(speakers) >= 2:
                folds = GroupKFold(n_splits=min(n_folds, len(speakers)))
                pred = np.empty(len(ia), dtype=object)
                for f, (tr, te) in enumerate(folds.split(x[ia], y[ia], groups=spk[ia])):
                    model = _probe_model(seed).fit(x[ia][tr], y[ia][tr])
                    pred[te] = model.predict(x[ia][te])
                    k = len(np.unique(y[ia][te]))
                    out.append(ProbeScore(layer, a, a, f, ",".join(sorted(set(spk[ia][te]))), len(tr), len(te), k,
                                          _bacc(y[ia][te], pred[te]), 1.0 / k))
                k = len(np.unique(y[ia]))
                out.append(ProbeScore(layer, a, a, -1, "all", len(ia), len(ia), k, _bacc(y[ia], pred), 1.0 / k))
            for b in languages:
                if b == a:
                    continue
                ib = np.flatnonzero(lang == b)
                shared = sorted(set(y[ia]) & set(y[ib]))
                if len(shared) < 2:
                    continue
                tr = ia[np.isin(y[ia], shared)]
                te = ib[np.isin(y[ib], shared)]
                model = _probe_model(seed).fit(x[tr], y[tr])
                pred = model.predict(x[te])
                for f, who in enumerate(sorted(set(spk[te]))):
                    m = spk[te] == who
                    k = len(np.unique(y[te][m]))
                    out.append(ProbeScore(layer, a, b, f, who, len(tr), int(m.sum()), k, _bacc(y[te][m], pred[m]),
                                          1.0 / k))
                out.append(ProbeScore(layer, a, b, -1, "all", len(tr), len(te), len(shared), _bacc(y[te], pred),
                                      1.0 / len(shared)))
    return out


@dataclass(frozen=True)
class ProbeSummary:
    """The probe at one layer for one (train, test) language pair.

    ``balanced_accuracy`` of all folds' (or test speakers') predictions pooled, with the mean,
    lowest and highest of the per-fold (per-test-speaker) scores; 0..1, chance = ``chance``.
    """

    layer: int
    train_language: str
    test_language: str
    balanced_accuracy: float
    fold_mean: float
    fold_min: float
    fold_max: float
    n_folds: int
    chance: float
    n_classes: int
    n_test: int


def probe_summary(scores: Sequence[ProbeScore]) -> list[ProbeSummary]:
    """Per layer and (train, test) language: pooled balanced accuracy, fold mean / min / max, chance."""
    out = []
    keys = sorted({(s.layer, s.train_language, s.test_language) for s in scores})
    for layer, a, b in keys:
        folds = [s for s in scores if (s.layer, s.train_language, s.test_language) == (layer, a, b) and s.fold >= 0]
        pooled = next(s for s in scores if (s.layer, s.train_language, s.test_language, s.fold) == (layer, a, b, -1))
        vals = np.array([s.balanced_accuracy for s in folds])
        nan = float("nan")
        out.append(ProbeSummary(layer, a, b, pooled.balanced_accuracy, float(vals.mean()) if len(vals) else nan,
                                float(vals.min()) if len(vals) else nan, float(vals.max()) if len(vals) else nan,
                                len(vals), pooled.chance, pooled.n_classes, pooled.n_test))
    return out


def read_probe(path: str | Path) -> list[ProbeScore]:
    """``probe.parquet`` back as :class:`ProbeScore` records (``path``: the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "probe.parquet"
    if not path.is_file():
        raise GeometryError("probe table not found", path=path, hint="run `lam geometry` first")
    return [ProbeScore(**r) for r in pq.read_table(path).to_pylist()]


def read_projection(path: str | Path) -> Projection:
    """``projection.parquet`` (+ ``geometry.json``) back as a :class:`Projection`."""
    import json

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    table = pq.read_table(folder / "projection.parquet")
    doc = json.loads((folder / "geometry.json").read_text(encoding="utf-8"))
    layers = tuple(doc["layers"])
    n = table.num_rows // len(layers)
    col = {c: np.asarray(table[c].to_pylist(), dtype=object)[:n] for c in ("unit_class", "language", "speaker",
                                                                             "emotion")}
    coords = np.stack([table["pc1"].to_numpy(), table["pc2"].to_numpy()], axis=1).reshape(len(layers), n, 2)
    return Projection(layers, coords.astype(np.float32), np.asarray(doc["explained_variance_ratio"]),
                      col["unit_class"], col["language"], col["speaker"], col["emotion"])


def run_geometry(source_store: str | Path, target_store: str | Path | None, out_dir: str | Path, *,
                 languages: Sequence[str] | None = None, layers: Sequence[int] | None = None, n_folds: int = 5,
                 max_points: int = 300, max_per_class: int = 1000, seed: int = 0,
                 figures: bool = True) -> GeometryResult:
    """``lam geometry``: projections and probes of every layer -> ``out_dir`` (see module docstring).

    Everything is computed before the output folder is touched; it is then locked while written
    (:func:`phonalign.outdir.output_folder`), and a rerun replaces its files.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    stores = [source_store] + ([target_store] if target_store is not None else [])
    check_output_folder(out, step="geometry", rules=GEOMETRY_FOLDER)  # a foreign folder: refused before the work
    v = vowel_vectors(stores, languages=languages)
    if len(set(v.language)) < 2:
        logger.warning("geometry: one language only (%s); no cross-language probe", sorted(set(v.language)))
    proj = project_layers(v, layers=layers, max_points=max_points, seed=seed)
    scores = probe_layers(v, layers=layers, n_folds=n_folds, max_per_class=max_per_class, seed=seed)
    with output_folder(out, step="geometry", rules=GEOMETRY_FOLDER):
        return _write_geometry(out, v, proj, scores, source_store=source_store, target_store=target_store,
                               languages=languages, n_folds=n_folds, max_points=max_points,
                               max_per_class=max_per_class, seed=seed, figures=figures, t0=t0)


def _write_geometry(out: Path, v: VowelVectors, proj: Projection, scores: list[ProbeScore], *,
                    source_store: str | Path, target_store: str | Path | None, languages: Sequence[str] | None,
                    n_folds: int, max_points: int, max_per_class: int, seed: int, figures: bool,
                    t0: float) -> GeometryResult:
    n = proj.coords.shape[1]
    table = pa.table({
        "layer": np.repeat(np.asarray(proj.layers, dtype=np.int32), n),
        "pc1": proj.coords[:, :, 0].ravel(), "pc2": proj.coords[:, :, 1].ravel(),
        **{k: np.tile(getattr(proj, k).astype(str), len(proj.layers)) for k in ("unit_class", "language", "speaker",
                                                                                "emotion")},
    })
    with atomic_path(out / "projection.parquet") as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out / "probe.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist([s.__dict__ for s in scores]), tmp)
    summary = probe_summary(scores)
    notes = [f"{lang}: one speaker only, so no speaker-disjoint folds and no per-language probe score"
             for lang in sorted(set(v.language)) if len(set(v.speaker[v.language == lang])) < 2]
    if len(set(v.language)) < 2:
        notes.append("one language only: no cross-language probe")
    atomic_write_json(out / "geometry.json", {
        "notes": notes,
        "model": v.stores[0].model_id, "layers": list(proj.layers),
        "explained_variance_ratio": proj.explained.round(6).tolist(),
        "n_vectors": {f"{lang}/{c}": int(np.sum((v.language == lang) & (v.unit_class == c)))
                      for lang in sorted(set(v.language)) for c in VOWEL_CLASSES},
        "probe": [asdict(x) for x in summary], "seconds": round(time.perf_counter() - t0, 3)})
    write_run_info(out, step="geometry", config={
        "source_store": str(source_store), "target_store": None if target_store is None else str(target_store),
        "languages": None if languages is None else list(languages), "layers": list(proj.layers),
        "pca": "2 components, both languages weighted equally, centred not scaled",
        "probe": "StandardScaler + LogisticRegression(C=1, L2, lbfgs); balanced accuracy; GroupKFold by speaker "
                 "within a language, train-on-one test-on-the-other across languages",
        "n_folds": n_folds, "max_points": max_points, "max_per_class": max_per_class}, seed=seed)
    if figures:
        from . import vowel_plots

        vowel_plots.save_geometry_figures(proj, scores, out / "figures")
    return GeometryResult(out, proj, tuple(scores), time.perf_counter() - t0)
