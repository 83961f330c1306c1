"""Confounds of a cross-language comparison that are not the languages: utterance duration and
Whisper's position embedding. Small pure functions on arrays.

* Duration. Whisper's sinusoidal positions, attention span and every utterance-level mean depend
  on how long an utterance is, so corpora of different lengths differ in every layer for a reason
  that is not phonetic. :func:`duration_quartiles` describes each side, :func:`duration_warning`
  flags medians more than 1.5x apart, and :func:`match_durations` subsamples both sides to the
  same duration distribution (``lam similarity --match-duration``).
* Position embedding. Whisper's layer 0 is the convolution output *plus* a fixed sinusoidal
  position vector per frame; an utterance's (or segment's) mean at layer 0 therefore contains the
  mean position vector of its frames, which depends only on where the frames are.
  :func:`position_component` computes that part exactly from the stored frame spans, so that
  :func:`position_share` can say how much of a cross-language centroid gap it explains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["duration_quartiles", "duration_warning", "match_durations", "position_component", "position_share",
           "DurationSummary", "PositionShare"]

#: Medians further apart than this ratio get a warning in ``rankings.json``.
DURATION_RATIO_WARNING = 1.5


def duration_quartiles(durations: np.ndarray) -> list[float] | None:
    """``[q25, q50, q75]`` of utterance durations (seconds), or None when there are none."""
    d = np.asarray(durations, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    return [float(x) for x in np.quantile(d, [0.25, 0.5, 0.75])]


@dataclass(frozen=True)
class DurationSummary:
    """Utterance durations of the two sides of a comparison (``rankings.json["duration_s"]``).

    ``source``/``target``: ``(q25, q50, q75)`` seconds (:func:`duration_quartiles`), None for a side
    without utterances. After ``--match-duration`` (:func:`match_durations`) they describe the kept
    utterances, ``before_matching`` the sides before, and ``matched_utterances`` counts the kept
    utterances per side (``{"source": n, "target": n}``); both None without matching.
    """

    source: tuple[float, ...] | None
    target: tuple[float, ...] | None
    before_matching: DurationSummary | None = None
    matched_utterances: Mapping[str, int] | None = None

    @classmethod
    def of(cls, source: np.ndarray, target: np.ndarray) -> DurationSummary:
        """The quartiles of each side's utterance durations (seconds, shapes (n_s,), (n_t,))."""
        q_s, q_t = duration_quartiles(source), duration_quartiles(target)
        return cls(None if q_s is None else tuple(q_s), None if q_t is None else tuple(q_t))

    def to_dict(self) -> dict[str, Any]:
        """As ``rankings.json`` writes it: quartiles as lists, the matching keys only after matching."""
        out: dict[str, Any] = {"source": None if self.source is None else list(self.source),
                               "target": None if self.target is None else list(self.target)}
        if self.before_matching is not None:
            out["before_matching"] = self.before_matching.to_dict()
        if self.matched_utterances is not None:
            out["matched_utterances"] = dict(self.matched_utterances)
        return out


def duration_warning(source: Sequence[float] | None, target: Sequence[float] | None, *,
                     ratio: float = DURATION_RATIO_WARNING) -> str | None:
    """A one-line warning when the median durations differ by more than ``ratio`` (None otherwise)."""
    if not source or not target or min(source[1], target[1]) <= 0:
        return None
    r = max(source[1], target[1]) / min(source[1], target[1])
    if r <= ratio:
        return None
    return (f"median utterance durations differ {r:.2f}x (source {source[1]:.2f} s, target {target[1]:.2f} s): "
            "length leaks into every layer (Whisper's positions, attention span); consider --match-duration")


def match_durations(source: np.ndarray, target: np.ndarray, *, seed: int = 0, n_bins: int = 10
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Subsample both sides to the same duration distribution.

    The pooled log-durations are cut into ``n_bins`` bins of equal pooled count (fewer when a side
    has under five utterances per bin); in every bin each side keeps as many utterances as the
    smaller side has there, drawn at random (``numpy.random.default_rng(seed)``). Both sides then
    have the same number of utterances in every bin.

    Parameters
    ----------
    source, target : ndarray, float, shape (n_s,), (n_t,)
        Utterance durations, seconds.

    Returns
    -------
    (keep_source, keep_target) : ndarray of bool, shape (n_s,), (n_t,)
    """
    a = np.log(np.maximum(np.asarray(source, np.float64), 1e-3))
    b = np.log(np.maximum(np.asarray(target, np.float64), 1e-3))
    rng = np.random.default_rng(seed)
    keep_a, keep_b = np.zeros(a.size, bool), np.zeros(b.size, bool)
    if a.size == 0 or b.size == 0:
        return keep_a, keep_b
    k = int(max(1, min(n_bins, min(a.size, b.size) // 5)))
    edges = np.quantile(np.concatenate([a, b]), np.linspace(0, 1, k + 1))[1:-1]
    bin_a, bin_b = np.searchsorted(edges, a, side="right"), np.searchsorted(edges, b, side="right")
    for j in range(k):
        ia, ib = np.flatnonzero(bin_a == j), np.flatnonzero(bin_b == j)
        n = min(ia.size, ib.size)
        keep_a[rng.choice(ia, size=n, replace=False)] = True
        keep_b[rng.choice(ib, size=n, replace=False)] = True
    return keep_a, keep_b


def position_component(positions: np.ndarray, first_frame: np.ndarray, stop_frame: np.ndarray) -> np.ndarray:
    """Mean position-embedding vector over each row's frames ``[first, stop)``.

    Parameters
    ----------
    positions : ndarray, shape (n_positions, H)
        The encoder's position table (Whisper: ``embed_positions.weight``, sinusoids).
    first_frame, stop_frame : ndarray of int, shape (n,)
        Frame spans of the stored rows (``FeatureStore.index``).

    Returns
    -------
    ndarray, shape (n, H)
        The part of each row's layer-0 mean that is position alone.
    """
    pos = np.asarray(positions, np.float64)
    cum = np.concatenate([np.zeros((1, pos.shape[1])), np.cumsum(pos, axis=0)])
    f = np.asarray(first_frame, np.int64)
    s = np.maximum(np.asarray(stop_frame, np.int64), f + 1)
    return (cum[s] - cum[f]) / (s - f)[:, None]


@dataclass(frozen=True)
class PositionShare:
    """How much of a layer-0 centroid gap between two sides their frame positions explain
    (:func:`position_share`); NaN shares when the gap is zero."""

    gap_norm: float  # ||m_a - m_b||
    position_gap_norm: float  # the same for the position parts
    projection_share: float  # share of the gap along the position gap: <gap, pgap> / ||gap||^2
    energy_share: float  # ||pgap||^2 / ||gap||^2

    def to_dict(self) -> dict[str, float]:
        """The four numbers by name."""
        return {"gap_norm": self.gap_norm, "position_gap_norm": self.position_gap_norm,
                "projection_share": self.projection_share, "energy_share": self.energy_share}


def position_share(layer0_a: np.ndarray, pos_a: np.ndarray, layer0_b: np.ndarray, pos_b: np.ndarray
                   ) -> PositionShare:
    """How much of the layer-0 centroid difference between two sides their frame positions explain.

    Parameters
    ----------
    layer0_a, layer0_b : ndarray, shape (n_a, H), (n_b, H)
        Layer-0 rows of each side.
    pos_a, pos_b : ndarray, same shapes
        :func:`position_component` of the same rows.

    Returns
    -------
    PositionShare
        ``gap_norm`` (``||m_a - m_b||``), ``position_gap_norm`` (same for the position parts),
        ``projection_share`` (share of the gap along the position gap: ``<gap, pgap> / ||gap||^2``),
        ``energy_share`` (``||pgap||^2 / ||gap||^2``).
    """
    gap = layer0_a.mean(0) - layer0_b.mean(0)
    pgap = pos_a.mean(0) - pos_b.mean(0)
    g2 = float(gap @ gap)
    return PositionShare(gap_norm=float(np.sqrt(g2)), position_gap_norm=float(np.linalg.norm(pgap)),
                         projection_share=float(gap @ pgap / g2) if g2 > 0 else float("nan"),
                         energy_share=float(pgap @ pgap / g2) if g2 > 0 else float("nan"))
