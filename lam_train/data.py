"""Training data: who reads which rows, and the guarantee that target labels are never read.

Two input modes:

* **pooled** (default, fast): per-utterance mean-pooled features of the chosen layers from a
  feature store (:class:`analysis.store.FeatureStore`, or any object with the same ``index`` and
  ``read_layer`` -- :class:`ArrayFeatures` holds them in memory for tests and benchmarks).
* **frames** (on the fly): waveforms from an aligned corpus' ``utterances.parquet``; the speech
  model (``analysis.models.load_encoder``) runs inside the training step, frozen or with its top
  layers fine-tuned.

Leakage guard: the unlabelled target sets are built by :func:`unlabelled_domain` from a copy of
the index *with the emotion column removed* before any row is selected, so no code path of
training can see a target label. Labelled target rows are only built by :func:`labelled_domain`
for evaluation (and for the flagged ``oracle_target_dev`` selection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from phonalign.records import EMOTIONS

from .errors import TrainError

LABEL_COLUMN = "emotion"


class FeatureTable(Protocol):
    """What training needs of a feature store: an index table and one layer at a time."""

    @property
    def index(self) -> pa.Table:
        """One row per pooled unit (the columns of :data:`analysis.store.INDEX_SCHEMA`)."""
        ...

    def read_layer(self, layer: int, *, rows: np.ndarray | None = None) -> np.ndarray:
        """Vectors of one layer, (n_rows, hidden) float32; all rows when ``rows`` is None."""
        ...


class ArrayFeatures:
    """An in-memory feature store: an index table and ``{layer: (n_units, hidden) float32}``.

    Same reading interface as :class:`analysis.store.FeatureStore`; used by tests, benchmarks
    and notebooks that already hold arrays.
    """

    def __init__(self, index: pa.Table, layers: dict[int, np.ndarray], *, meta: dict | None = None):
        n = index.num_rows
        for k, v in layers.items():
            if v.shape[0] != n:
                raise TrainError(f"layer {k} has {v.shape[0]} rows but the index has {n}")
        self.index = index
        self._layers = {int(k): np.asarray(v, dtype=np.float32) for k, v in layers.items()}
        n_layers = max(self._layers) if self._layers else 0
        hidden = next(iter(self._layers.values())).shape[1] if self._layers else 0
        self.meta = meta or {"model_id": "arrays", "n_layers": n_layers, "hidden_size": hidden}

    def read_layer(self, layer: int, *, rows: np.ndarray | None = None) -> np.ndarray:
        """Vectors of one layer, (n_rows, hidden) float32; all rows when ``rows`` is None."""
        if int(layer) not in self._layers:
            raise TrainError(f"layer {layer} is not in this feature table (have {sorted(self._layers)})")
        x = self._layers[int(layer)]
        return x if rows is None else x[rows]


def open_features(path: str | Path) -> FeatureTable:
    """Open a feature store written by ``lam features`` (lazy import of ``analysis``)."""
    from analysis.store import FeatureStore

    path = Path(path)
    if not path.exists():
        raise TrainError("feature store not found", path=path,
                         hint="run `lam features` first, or fix data.source_store / data.target_store")
    return FeatureStore.open(path)


def n_model_layers(features: FeatureTable) -> int:
    """L, the number of transformer layers (the store holds L + 1 layers, 0..L)."""
    meta = getattr(features, "meta", None) or {}
    if "n_layers" in meta:
        return int(meta["n_layers"])
    names = getattr(features, "layer_names", None)
    if names:
        return len(names) - 1
    raise TrainError("cannot tell how many layers this feature store holds (no meta['n_layers'])")


def stored_layers(features: FeatureTable) -> list[int]:
    """Layers the feature table holds: ``meta["layers"]`` (a store made with ``lam features
    --layers``), else every layer ``0..L``."""
    meta = getattr(features, "meta", None) or {}
    if meta.get("layers") is not None:
        return sorted(int(x) for x in meta["layers"])
    held = getattr(features, "layers", None)
    if isinstance(held, (list, tuple)):
        return sorted(int(x) for x in held)
    return list(range(n_model_layers(features) + 1))


def select_rows(index: pa.Table, *, language: str | None, split: str | None, kind: str = "utt") -> np.ndarray:
    """Row numbers (int64, ascending) of ``index`` with the given kind, language and split.

    ``None`` for language or split means "any". Uses vectorised pyarrow filters.
    """
    mask = pa.array(np.ones(index.num_rows, dtype=bool))
    if "kind" in index.column_names:
        mask = pc.and_(mask, pc.equal(index["kind"], kind))
    if language is not None:
        mask = pc.and_(mask, pc.equal(index["language"], language))
    if split is not None:
        mask = pc.and_(mask, pc.equal(index["split"], split))
    mask = pc.fill_null(mask, False)
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).astype(np.int64)


def encode_labels(emotions: Sequence[str | None]) -> np.ndarray:
    """Emotion names -> class indices into :data:`EMOTIONS`; -1 for missing or other classes."""
    lookup = {e: i for i, e in enumerate(EMOTIONS)}
    return np.array([lookup.get(e, -1) if e is not None else -1 for e in emotions], dtype=np.int64)


@dataclass
class Domain:
    """Rows of one side and split: features (pooled) or waveforms (frames), labels if allowed.

    ``x`` is (n_layers, n, hidden) float32 in pooled mode; ``waves`` a list of float32 arrays in
    frame mode. ``y`` is (n,) int64 class indices, or None for an unlabelled (target) domain.
    """

    utt_ids: list[str]
    x: torch.Tensor | None = None
    waves: list[np.ndarray] | None = None
    y: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """Number of utterances."""
        return len(self.utt_ids)

    @property
    def labelled(self) -> bool:
        """True when the domain carries emotion labels (never for a target training domain)."""
        return self.y is not None

    @property
    def labels(self) -> torch.Tensor:
        """``y`` of a labelled domain; asking an unlabelled one is the caller's bug."""
        if self.y is None:
            raise TrainError("internal: labels were read from an unlabelled domain")
        return self.y

    @property
    def features(self) -> torch.Tensor:
        """``x`` of a pooled-mode domain."""
        if self.x is None:
            raise TrainError("internal: pooled features were read from a frame-mode domain")
        return self.x

    @property
    def audio(self) -> list[np.ndarray]:
        """``waves`` of a frame-mode domain."""
        if self.waves is None:
            raise TrainError("internal: waveforms were read from a pooled-mode domain")
        return self.waves


def _check_nonempty(rows: np.ndarray, what: str, language: str | None, split: str | None) -> None:
    if rows.size == 0:
        raise TrainError(
            f"no utterances for {what} (language={language!r}, split={split!r})",
            hint="check data.*_language and the split names (data.train_split / dev_split / test_split) "
                 "against the store's index",
        )


def _read_layers(features: FeatureTable, layers: Sequence[int], rows: np.ndarray) -> torch.Tensor:
    # One layer at a time: the store never has to hold all L + 1 layers in memory.
    arrays = []
    for layer in layers:
        x = np.asarray(features.read_layer(int(layer), rows=rows), dtype=np.float32)
        check_finite_rows(x, features, rows, layer=int(layer))
        arrays.append(x)
    return torch.from_numpy(np.stack(arrays))


def check_finite_rows(x: np.ndarray, features: FeatureTable, rows: np.ndarray, *, layer: int) -> None:
    """Raise :class:`TrainError` naming the utterances if ``x`` (rows ``rows`` of ``features``,
    one layer) holds NaN or infinity: training on them would give a NaN loss and a meaningless model."""
    finite = np.isfinite(x).all(axis=1)
    if finite.all():
        return
    bad = rows[~finite]
    ids = sorted(set(features.index["utt_id"].take(pa.array(bad)).to_pylist()))
    path = getattr(features, "path", None)
    raise TrainError(f"the features of {len(ids)} utterance(s) hold NaN or infinite values in layer {layer} "
                     f"(e.g. {', '.join(map(repr, ids[:3]))})", path=path, utt_id=ids[0],
                     hint="extract that store again with this version (it refuses non-finite vectors and "
                     "reports their utterances as failed), or drop those utterances")


def store_model_digest(features: FeatureTable) -> str | None:
    """The model digest a feature table records (``meta['model']['digest']``), or None."""
    meta = getattr(features, "meta", None) or {}
    model = meta.get("model")
    digest = model.get("digest") if isinstance(model, dict) else None
    return digest if isinstance(digest, str) else None


def check_same_model(source: FeatureTable, target: FeatureTable) -> None:
    """Raise :class:`TrainError` before any training unless both feature tables come from one
    model: same layers and width, and the same weights' digest where both record one."""
    if source is target:
        return
    ms, mt = getattr(source, "meta", None) or {}, getattr(target, "meta", None) or {}
    shape_s = (ms.get("n_layers"), ms.get("hidden_size"))
    shape_t = (mt.get("n_layers"), mt.get("hidden_size"))
    ds, dt = store_model_digest(source), store_model_digest(target)
    if shape_s != shape_t or (ds and dt and ds != dt):
        raise TrainError(
            f"the source and target feature stores come from different models: {ms.get('model_id')} "
            f"({shape_s[0]} layers, width {shape_s[1]}{', ' + ds[:19] if ds else ''}) vs {mt.get('model_id')} "
            f"({shape_t[0]} layers, width {shape_t[1]}{', ' + dt[:19] if dt else ''})",
            path=getattr(target, "path", None),
            hint="extract both corpora with the same model (data.source_store / data.target_store)")


def check_rankings_model(rankings: str | Path, features: FeatureTable) -> None:
    """Raise :class:`TrainError` if a rankings file was computed on features of another model
    than ``features`` (compared by the weights' digest, else by model id and layer count)."""
    from phonalign.fsutil import read_json

    path = Path(rankings)
    if path.is_dir():
        path = path / "rankings.json"
    doc = read_json(path, what="rankings file", hint="rerun `lam similarity`")
    meta = getattr(features, "meta", None) or {}
    ident = doc.get("model_identity") if isinstance(doc, dict) else None
    rd = ident.get("digest") if isinstance(ident, dict) else None
    sd = store_model_digest(features)
    if rd and sd:
        same = rd == sd
    else:
        same = doc.get("model") == meta.get("model_id")
    if not same or (meta.get("n_layers") is not None and doc.get("n_layers") != meta.get("n_layers")):
        raise TrainError(
            f"the rankings were computed with another model ({doc.get('model')}, {doc.get('n_layers')} layers"
            f"{', ' + rd[:19] if rd else ''}) than the feature store's ({meta.get('model_id')}, "
            f"{meta.get('n_layers')} layers{', ' + sd[:19] if sd else ''})", path=path,
            hint="run `lam similarity` on stores of the model you train on, or point `rankings:` at its output")


def labelled_domain(features: FeatureTable, *, layers: Sequence[int], language: str | None, split: str,
                    what: str = "source") -> Domain:
    """Pooled features and labels of one split: for the source side, and for evaluation.

    Rows whose emotion is missing or outside the four classes are dropped (they cannot be scored).
    """
    rows = select_rows(features.index, language=language, split=split)
    _check_nonempty(rows, what, language, split)
    y = encode_labels(features.index[LABEL_COLUMN].take(pa.array(rows)).to_pylist())
    keep = y >= 0
    rows, y = rows[keep], y[keep]
    _check_nonempty(rows, f"{what} with one of the emotions {', '.join(EMOTIONS)}", language, split)
    ids = features.index["utt_id"].take(pa.array(rows)).to_pylist()
    return Domain(utt_ids=ids, x=_read_layers(features, layers, rows), y=torch.from_numpy(y))


def unlabelled_domain(features: FeatureTable, *, layers: Sequence[int], language: str | None, split: str,
                      what: str = "target") -> Domain:
    """Pooled features of one split *without labels*: the target side during training.

    The emotion column is dropped from the index before anything else, so this function (and
    everything downstream of it) cannot read a target label even by mistake.
    """
    index = features.index
    if LABEL_COLUMN in index.column_names:
        index = index.drop_columns([LABEL_COLUMN])
    rows = select_rows(index, language=language, split=split)
    _check_nonempty(rows, what, language, split)
    ids = index["utt_id"].take(pa.array(rows)).to_pylist()
    return Domain(utt_ids=ids, x=_read_layers(features, layers, rows), y=None)


# ---------------------------------------------------------------------------------------------
# frame mode: waveforms from an aligned corpus


def read_utterances(aligned_dir: str | Path, *, drop_labels: bool) -> pa.Table:
    """``utterances.parquet`` of an aligned corpus; without the emotion column if ``drop_labels``."""
    from phonalign.fsutil import read_parquet

    path = Path(aligned_dir) / "utterances.parquet"
    if not path.is_file():
        raise TrainError("utterances table not found", path=path, hint="run `lam align` on the corpus first")
    table = read_parquet(path, what="utterances table", hint="rerun `lam align` on the corpus")
    if drop_labels and LABEL_COLUMN in table.column_names:
        table = table.drop_columns([LABEL_COLUMN])
    return table


def audio_domain(table: pa.Table, *, language: str | None, split: str, max_seconds: float, labelled: bool,
                 sr: int = 16000, what: str = "source") -> Domain:
    """Waveforms (cropped to ``max_seconds``) of one split of an utterances table.

    ``labelled=False`` requires a table without the emotion column (see :func:`read_utterances`).
    """
    from phonalign.audio import load_audio

    if not labelled and LABEL_COLUMN in table.column_names:
        raise TrainError("internal: an unlabelled audio domain was given a table with emotion labels")
    rows = select_rows(table, language=language, split=split)
    _check_nonempty(rows, what, language, split)
    y = None
    if labelled:
        yy = encode_labels(table[LABEL_COLUMN].take(pa.array(rows)).to_pylist())
        rows, yy = rows[yy >= 0], yy[yy >= 0]
        _check_nonempty(rows, f"{what} with a known emotion", language, split)
        y = torch.from_numpy(yy)
    sub = table.take(pa.array(rows))
    limit = int(max_seconds * sr)
    waves = [load_audio(p, sr=sr)[:limit] for p in sub["audio_path"].to_pylist()]
    return Domain(utt_ids=sub["utt_id"].to_pylist(), waves=waves, y=y)


# ---------------------------------------------------------------------------------------------
# standardisation and class balance


@dataclass(frozen=True)
class Standardizer:
    """Per-layer, per-dimension z-scoring with source-train statistics.

    mean, std : (n_layers, 1, hidden) float32. Raw transformer features are anisotropic (a few
    huge dimensions); without this the adapters would start far from a useful scale.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardizer:
        """x : (n_layers, n, hidden) -> statistics over n."""
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True).clamp_min(1e-6)
        return cls(mean=mean, std=std)

    @classmethod
    def identity(cls, n_layers: int, hidden: int) -> Standardizer:
        """No-op statistics (mean 0, std 1) of shape (n_layers, 1, hidden)."""
        return cls(mean=torch.zeros(n_layers, 1, hidden), std=torch.ones(n_layers, 1, hidden))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def class_weights(y: torch.Tensor, n_classes: int = len(EMOTIONS)) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * count_c)`` (1 for balanced data; 0 for absent classes)."""
    counts = torch.bincount(y, minlength=n_classes).to(torch.float32)
    present = counts > 0
    w = torch.zeros(n_classes)
    w[present] = y.numel() / (present.sum() * counts[present])
    return w


def epoch_order(y: np.ndarray | None, n: int, rng: np.random.Generator, *, balanced: bool) -> np.ndarray:
    """Row order for one epoch: a permutation, or (``balanced``) ``n`` draws with class-balanced
    probabilities (each class equally likely; with replacement)."""
    if not balanced or y is None:
        return rng.permutation(n)
    counts = np.bincount(y, minlength=len(EMOTIONS)).astype(np.float64)
    p = 1.0 / counts[y]
    return rng.choice(n, size=n, replace=True, p=p / p.sum())
