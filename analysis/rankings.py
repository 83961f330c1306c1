"""Layer rankings and layer selections: the JSON that `lam similarity` writes and training reads.

``rankings.json`` (format ``lam-rankings/1``; keys added by later versions never change the
meaning of earlier ones, so older readers keep working)::

    {
      "format": "lam-rankings/1",
      "model": "microsoft/wavlm-base-plus",          # model id of the source store
      "source_store": "...", "target_store": "...",
      "revision": null,
      "metric": "centroid_cosine",
      "higher_is_more_similar": true,                # false for coral / mmd (distances)
      "n_layers": 12,                                # L; scores have L + 1 entries (layer 0 = CNN/embedding output)
      "k": 3, "seed": 0, "n_bootstrap": 200, "ci_level": 0.95, "n_halves": 10, "n_permutations": 200,
      "ci_method": "...",                            # how every interval is made (contains its estimate)
      "resampling": {"unit": "speaker", "requested": "auto",
                     "clusters": {"source": 17, "target": 3}, "reason": null},
      "duration_s": {"source": [q25, q50, q75], "target": [...]},   # utterance durations, seconds
      "settings": {"source": {...}, "target": {...}},  # the stores' extraction settings (Whisper mode, weights)
      "untrained": false,                            # true when a store holds a random-init model
      "warnings": ["median utterance durations differ 2.3x ..."],
      "emotion": null,                               # or "averaged" with --by-emotion
      "units": {
        "Vowl": {
          "layers": [0, 1, ..., 12],
          "score": [...], "ci_low": [...], "ci_high": [...],
          "reference_source": [...], "reference_target": [...],   # within-language, speaker-disjoint halves
          "reference_split": "speaker",              # or "utterance" when speakers are unknown
          "cross_half": [...],                       # cross-language score at the halves' size
          "gap": [...], "gap_ci_low": [...], "gap_ci_high": [...],  # > 0: languages differ more than one language
          "as_similar_as_within": [...],             # per layer: the gap's interval reaches 0
          "p_best": [null, 0.41, ...],               # share of draws with the layer first (layer 0: null)
          "tied_with_best": [3, 4, 5],               # confidence set for the best layer (best included)
          "flat": false,                             # every layer tied with the best
          "tie_critical": 3.1,                       # max-t critical value of the joint tie test
          "p_null": [...], "null_score": [...], "null_low": [...], "null_high": [...],  # with permutations
          "clusters": {"source": 17, "target": 3},   # clusters holding rows of the unit
          "defined_draws": 1.0,                      # least share of draws with a defined score
          "top_k_frequency": [...],                  # share of draws with the layer in the top k (layer 0: null)
          "ranking": [7, 8, 6, ...],                 # transformer layers 1..L, most similar first
          "selections": {"final": [12], "BL": [7], "GL": [6, 7, 8], "WL": [1, 2, 12],
                         "RL1": [...], "RL2": [...], "RL3": [...]},
          "n_source": 1234, "n_target": 987,          # pooled vectors compared
          "n_utt_source": 40, "n_utt_target": 35
        },
        "Utt": {...}, "Cons": {...}, "A": {...}, ...
      },
      "skipped_units": {"O": "rows from 1 speaker(s) on the target side; ..."},
      "by_emotion": {"Neutral": {"Vowl": {"score": [...], ...}}, ...}   # only with --by-emotion
    }

A store made with ``lam features --layers`` holds some layers only: the others have null scores,
``layers_compared`` lists the layers both stores hold, and rankings and selections are drawn
from the transformer layers among them (``final`` stays layer L; training refuses it when the
store lacks L).

Selections are lists of transformer layer indices in ``1..L`` (never 0), sorted ascending:
``final`` the last layer; ``BL`` the most similar layer; ``GL`` the k most similar; ``WL`` the k
least similar; ``RL1..RL3`` k layers drawn uniformly without replacement with
``numpy.random.default_rng([seed, i])`` (the same draw for every unit), redrawn from that
stream while it repeats an earlier RL group, so the three differ whenever ``C(L, k) >= 3``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phonalign.fsutil import atomic_write_json

from .defaults import SEED, SELECTION_KEYS, TOP_K
from .errors import RankingsError

FORMAT = "lam-rankings/1"


def _candidates(n_scores: int, candidates: Sequence[int] | None) -> np.ndarray:
    """Transformer layers that may be ranked: ``candidates`` (checked) or all of 1..L."""
    n_layers = n_scores - 1
    if candidates is None:
        return np.arange(1, n_layers + 1)
    cand = np.array(sorted({int(c) for c in candidates if int(c) != 0}), dtype=np.int64)
    if cand.size and (cand.min() < 1 or cand.max() > n_layers):
        raise RankingsError(f"candidate layers {cand.tolist()} are outside 1..{n_layers}")
    return cand


def rank_layers(scores: Sequence[float] | np.ndarray, *, higher_is_more_similar: bool = True,
                candidates: Sequence[int] | None = None) -> list[int]:
    """Transformer layers ordered from most to least similar.

    Parameters
    ----------
    scores : sequence of float, length L + 1
        Score of each layer, layer 0 first (ignored in the ranking). NaN ranks last.
    higher_is_more_similar : bool
        False for distances (CORAL, MMD).
    candidates : sequence of int, optional
        The layers to rank (those a ``--layers`` store holds; 0 is dropped); default 1..L.
    """
    s = np.asarray(scores, dtype=np.float64)
    cand = _candidates(len(s), candidates)
    key = -s[cand] if higher_is_more_similar else s[cand]
    key = np.where(np.isnan(key), np.inf, key)
    # stable sort: ties keep the lower layer first
    return [int(cand[i]) for i in np.argsort(key, kind="stable")]


def select_layers(scores: Sequence[float] | np.ndarray, *, k: int = TOP_K, seed: int = SEED,
                  higher_is_more_similar: bool = True, candidates: Sequence[int] | None = None
                  ) -> dict[str, list[int]]:
    """The selections ``final, BL, GL, WL, RL1, RL2, RL3`` (transformer layers 1..L).

    ``candidates`` restricts BL, GL, WL and the random groups to those layers (see
    :func:`rank_layers`); ``final`` is always layer L.

    Raises
    ------
    RankingsError
        If ``k`` is not in ``1..`` the number of candidate layers.
    """
    ranking = rank_layers(scores, higher_is_more_similar=higher_is_more_similar, candidates=candidates)
    n_layers = len(scores) - 1
    n_cand = len(ranking)
    if not 1 <= k <= n_cand:
        raise RankingsError(f"k={k} layers cannot be chosen among {n_cand} transformer layers",
                            hint=f"use --k between 1 and {n_cand}")
    out = {
        "final": [n_layers],
        "BL": [ranking[0]],
        "GL": sorted(ranking[:k]),
        "WL": sorted(ranking[-k:]),
    }
    # Three *different* random groups where there are at least three to choose from: with 6 layers
    # and k=3 two independent draws coincide one time in twenty, which would make RL1..RL3 a
    # smaller control than the table suggests. A collision redraws from the same seeded stream.
    n_groups = math.comb(n_cand, k)
    pool = _candidates(len(scores), candidates)
    drawn: list[list[int]] = []
    for i in (1, 2, 3):
        rng = np.random.default_rng([int(seed), i])
        while True:
            group = sorted(int(x) for x in rng.choice(pool, size=k, replace=False))
            if group not in drawn or len(drawn) >= n_groups:
                break
        drawn.append(group)
        out[f"RL{i}"] = group
    return out


def top_k_frequency(boot_scores: np.ndarray, *, k: int, higher_is_more_similar: bool = True,
                    candidates: Sequence[int] | None = None) -> list:
    """Rank stability: share of bootstrap draws in which each layer is among the k most similar.

    Parameters
    ----------
    boot_scores : ndarray, shape (n_bootstrap, L + 1)
    candidates : sequence of int, optional
        The layers ranked (see :func:`rank_layers`); the others get None.

    Returns
    -------
    list of length L + 1 (None for layer 0, which is never ranked, and for non-candidates)
    """
    b_all = np.asarray(boot_scores, dtype=np.float64)
    cand = _candidates(b_all.shape[1], candidates)
    out: list = [None] * b_all.shape[1]
    if b_all.shape[0] == 0:
        return out
    b = b_all[:, cand]
    key = -b if higher_is_more_similar else b
    key = np.where(np.isnan(key), np.inf, key)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    counts = np.bincount(order.ravel(), minlength=b.shape[1]) / b.shape[0]
    for j, layer in enumerate(cand):
        out[int(layer)] = float(counts[j])
    return out


def write_rankings(path: str | Path, doc: Mapping) -> Path:
    """Write a rankings document atomically (``path`` is a file or a directory)."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "rankings.json"
    atomic_write_json(path, {"format": FORMAT, **doc})
    return path


@dataclass(frozen=True, eq=False)
class Rankings(Mapping[str, Any]):
    """A rankings document as :func:`read_rankings` reads it (the format above), read-only.

    The fields most callers want are attributes (``.metric``, ``.units``, ``.n_layers``, ...);
    it is also a mapping of the document's keys, so ``doc["units"]["Vowl"]`` reads as the JSON
    does. :meth:`to_dict` is the document (a copy).
    """

    doc: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.doc[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.doc)

    def __len__(self) -> int:
        return len(self.doc)

    @property
    def metric(self) -> str:
        """The metric ranked (``centroid_cosine``, ...)."""
        return str(self.doc["metric"])

    @property
    def model(self) -> str | None:
        """Model id of the source store."""
        return self.doc.get("model")

    @property
    def n_layers(self) -> int:
        """L: scores have L + 1 entries, layer 0 first."""
        return int(self.doc["n_layers"])

    @property
    def higher_is_more_similar(self) -> bool:
        """False for distances (coral, mmd)."""
        return bool(self.doc.get("higher_is_more_similar", True))

    @property
    def units(self) -> Mapping[str, Mapping[str, Any]]:
        """Unit -> its scores, intervals, ranking and selections (the format above)."""
        return self.doc["units"]

    @property
    def skipped_units(self) -> Mapping[str, str]:
        """Unit -> why it has no score."""
        return self.doc.get("skipped_units") or {}

    @property
    def warnings(self) -> list[str]:
        """The warnings owed to the reader (durations, resampling, ...)."""
        return list(self.doc.get("warnings") or [])

    def to_dict(self) -> dict[str, Any]:
        """The document, as ``rankings.json`` holds it."""
        return copy.deepcopy(dict(self.doc))


@dataclass(frozen=True, eq=False)
class Selections(Mapping[str, list[int]]):
    """One unit's layer selections, as training uses them (:func:`load_selections`), read-only.

    A mapping of selection name (``final, BL, GL, WL, RL1, RL2, RL3``) to its transformer layers
    (1..L, ascending), so ``selections["BL"]`` reads as the JSON does; each lookup gives a new
    list. It equals a ``dict`` of the same selections; :meth:`to_dict` is that dict.
    """

    unit: str
    layers: Mapping[str, tuple[int, ...]]  # selection name -> layers, in SELECTION_KEYS order

    def __getitem__(self, key: str) -> list[int]:
        return list(self.layers[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"Selections(unit={self.unit!r}, {self.to_dict()!r})"

    @property
    def best(self) -> int:
        """The most similar layer (``BL``)."""
        return self.layers["BL"][0]

    def to_dict(self) -> dict[str, list[int]]:
        """``{"final": [L], "BL": [l], "GL": [...], ...}`` as ``rankings.json`` lists them."""
        return {key: list(v) for key, v in self.layers.items()}


def read_rankings(path: str | Path) -> Rankings:
    """Read ``rankings.json`` (``path`` is the file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "rankings.json"
    if not path.is_file():
        raise RankingsError("rankings file not found", path=path,
                            hint="run `lam similarity SOURCE_STORE TARGET_STORE --out DIR` first")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RankingsError(f"not valid JSON: {err.msg}", path=path, line=err.lineno,
                            hint="rerun `lam similarity`") from err
    if doc.get("format") != FORMAT or "units" not in doc:
        raise RankingsError(f"not a rankings file (format {doc.get('format')!r})", path=path,
                            hint="rerun `lam similarity` with this toolkit version")
    return Rankings(doc)


@dataclass(frozen=True)
class SelectionInfo:
    """How much a unit's layer selection can be trusted (from ``rankings.json``).

    Attributes
    ----------
    unit : str
    flat : bool or None
        Every layer is tied with the best (None: the rankings have no draws, or predate ties).
    tied_with_best : tuple of int
        Layers the data cannot tell from the best (empty when unknown).
    best : int
        The best layer (``BL``).
    metric : str
    resampling : str or None
        ``speaker`` or ``utterance`` (None for older files).
    """

    unit: str
    flat: bool | None
    tied_with_best: tuple[int, ...]
    best: int
    metric: str
    resampling: str | None

    def warning(self) -> str | None:
        """A loud one-line warning when the selection comes from a flat (or untested) profile."""
        if self.flat:
            return (f"the {self.unit} layer profile ({self.metric}) is FLAT: every layer is tied with the best, so "
                    f"BL/GL/WL are chosen by noise; anchoring them tests nothing the data can show")
        return None


def load_selection_info(path: str | Path, *, unit: str) -> SelectionInfo:
    """Flatness and ties of one unit's profile (see :class:`SelectionInfo`)."""
    doc = read_rankings(path)
    if unit not in doc["units"]:
        raise RankingsError(f"no unit {unit!r} in the rankings (it has {', '.join(doc['units'])})", path=path,
                            hint="choose one of those, or rerun `lam similarity --units ...`")
    e = doc["units"][unit]
    flat = e.get("flat")
    return SelectionInfo(unit=unit, flat=None if flat is None else bool(flat),
                         tied_with_best=tuple(int(x) for x in e.get("tied_with_best") or ()),
                         best=int((e.get("selections") or {}).get("BL", [0])[0]), metric=str(doc.get("metric")),
                         resampling=(doc.get("resampling") or {}).get("unit"))


def load_selections(path: str | Path, *, unit: str) -> Selections:
    """Layer selections for one unit, as training uses them.

    Parameters
    ----------
    path : str or Path
        ``rankings.json`` or the ``lam similarity`` output directory.
    unit : str
        ``Utt``, ``Vowl``, ``Cons`` or a vowel class ``A E @ i O u``.

    Returns
    -------
    Selections
        A read-only mapping ``{"final": [L], "BL": [l], "GL": [...], "WL": [...], "RL1": [...],
        "RL2": [...], "RL3": [...]}``; transformer layers 1..L.
    """
    doc = read_rankings(path)
    units = doc["units"]
    if unit not in units:
        raise RankingsError(f"no unit {unit!r} in the rankings (it has {', '.join(units)})", path=path,
                            hint="choose one of those, or rerun `lam similarity --units ...`")
    sel = units[unit].get("selections") or {}
    missing = [k for k in SELECTION_KEYS if k not in sel]
    if missing:
        raise RankingsError(f"unit {unit!r} lacks selections {missing}", path=path, hint="rerun `lam similarity`")
    n_layers = int(doc["n_layers"])
    out: dict[str, tuple[int, ...]] = {}
    for key in SELECTION_KEYS:
        layers = [int(x) for x in sel[key]]
        if not layers or any(not 1 <= x <= n_layers for x in layers):
            raise RankingsError(f"selection {key} of unit {unit!r} has layers {layers} outside 1..{n_layers}",
                                path=path, hint="rerun `lam similarity`")
        out[key] = tuple(layers)
    return Selections(unit, out)
