"""What lam_train gives back, typed: one epoch's figures, a fit, a classifier's scores, a run's
metrics; each pipeline step's summary and the pipeline's result.

Each record is a frozen dataclass whose ``to_dict()`` is the JSON the toolkit writes (a run's
``metrics.json`` is :meth:`RunMetrics.to_dict`, keys in the order written before these types
existed; a step's summary in ``OUT/steps/<step>.json`` is its ``to_dict()``), and the training
records' ``from_dict()`` reads them back (a finished run is not trained again: its metrics are
read from the file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["EpochRow", "FitResult", "Scores", "CoralDistance", "RunMetrics", "StepSummary", "AlignedSide", "AlignStep",
           "ExtractedSide", "FeaturesStep", "SimilarityStep", "AcousticsStep", "GeometryStep", "TrainStep",
           "ReportStep", "PipelineResult"]


@dataclass(frozen=True)
class EpochRow:
    """One epoch of a fit: mean losses over its batches, the selection score, wall time (s)."""

    epoch: int
    loss: float   # CE + lambda * CORAL
    ce: float
    coral: float  # summed over the anchored layers
    dev_uar: float  # on the selection domain (source dev, or target dev when oracle)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The row of ``metrics.json``'s ``history``."""
        return {"epoch": self.epoch, "loss": self.loss, "ce": self.ce, "coral": self.coral,
                "dev_uar": self.dev_uar, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRow:
        """Inverse of :meth:`to_dict`."""
        return cls(epoch=int(d["epoch"]), loss=d["loss"], ce=d["ce"], coral=d["coral"], dev_uar=d["dev_uar"],
                   seconds=d["seconds"])


@dataclass(frozen=True)
class FitResult:
    """What :func:`lam_train.train.fit` gives back (the model holds the selected weights)."""

    best_epoch: int
    epochs_run: int
    best_score: float  # selection UAR of the best epoch
    history: tuple[EpochRow, ...] = ()
    resumed_from: int | None = None  # last epoch of the checkpoint the run resumed from

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the figures appear in ``metrics.json``."""
        return {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "selection_uar": self.best_score,
                "resumed_from": self.resumed_from, "history": [h.to_dict() for h in self.history]}


@dataclass(frozen=True)
class Scores:
    """A classifier's scores on one labelled domain (:func:`lam_train.evaluate.scores`)."""

    uar: float
    accuracy: float
    recall: Mapping[str, float]  # per class, in the order of ``labels``
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted
    n: int
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists for the matrix and labels)."""
        return {"uar": self.uar, "accuracy": self.accuracy, "recall": dict(self.recall),
                "confusion": [list(r) for r in self.confusion], "n": self.n, "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scores:
        """Inverse of :meth:`to_dict` (also reads the dict :func:`~lam_train.evaluate.scores` returns)."""
        return cls(uar=d["uar"], accuracy=d["accuracy"], recall=dict(d["recall"]),
                   confusion=tuple(tuple(int(x) for x in r) for r in d["confusion"]), n=int(d["n"]),
                   labels=tuple(d["labels"]))


@dataclass(frozen=True)
class CoralDistance:
    """CORAL distance per anchored layer between source and target test representations."""

    between: str  # which two domains
    layers: tuple[int, ...]
    adapted: tuple[float, ...]           # after the adapters
    adapted_relative: tuple[float, ...]  # scale-free (:func:`lam_train.coral.coral_relative`)
    input: tuple[float, ...]             # the classifier's input (upstream layers, pooled)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"between": self.between, "layers": list(self.layers), "adapted": list(self.adapted),
                "adapted_relative": list(self.adapted_relative), "input": list(self.input)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CoralDistance:
        """Inverse of :meth:`to_dict`."""
        return cls(between=d["between"], layers=tuple(d["layers"]), adapted=tuple(d["adapted"]),
                   adapted_relative=tuple(d["adapted_relative"]), input=tuple(d["input"]))


@dataclass(frozen=True)
class RunMetrics:
    """One (strategy, seed) run: :func:`lam_train.train.run_training`'s result and ``metrics.json``."""

    strategy: str
    selection: str
    coral: bool
    lambda_: float  # "lambda" in JSON
    seed: int
    layers: tuple[int, ...]
    n_model_layers: int
    selection_on: str
    oracle: bool
    best_epoch: int
    epochs_run: int
    selection_uar: float
    resumed_from: int | None
    history: tuple[EpochRow, ...]
    layer_weights: tuple[float, ...]
    source_train_n: int
    target_train_n: int
    source_dev: Scores
    target_test: Scores | None  # None: the target test split has no emotion labels
    coral_distance: CoralDistance | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``metrics.json`` (``coral_distance`` only with a target score, ``note`` only without one)."""
        out: dict[str, Any] = {
            "strategy": self.strategy, "selection": self.selection, "coral": self.coral, "lambda": self.lambda_,
            "seed": self.seed, "layers": list(self.layers), "n_model_layers": self.n_model_layers,
            "selection_on": self.selection_on, "oracle": self.oracle, "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run, "selection_uar": self.selection_uar, "resumed_from": self.resumed_from,
            "history": [h.to_dict() for h in self.history], "layer_weights": list(self.layer_weights),
            "source_train_n": self.source_train_n, "target_train_n": self.target_train_n,
            "source_dev": self.source_dev.to_dict(),
            "target_test": None if self.target_test is None else self.target_test.to_dict(),
        }
        if self.coral_distance is not None:
            out["coral_distance"] = self.coral_distance.to_dict()
        if self.note is not None:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunMetrics:
        """Inverse of :meth:`to_dict` (a finished run's ``metrics.json``)."""
        return cls(
            strategy=d["strategy"], selection=d["selection"], coral=d["coral"], lambda_=d["lambda"], seed=d["seed"],
            layers=tuple(d["layers"]), n_model_layers=d["n_model_layers"], selection_on=d["selection_on"],
            oracle=d["oracle"], best_epoch=d["best_epoch"], epochs_run=d["epochs_run"],
            selection_uar=d["selection_uar"], resumed_from=d["resumed_from"],
            history=tuple(EpochRow.from_dict(h) for h in d["history"]), layer_weights=tuple(d["layer_weights"]),
            source_train_n=d["source_train_n"], target_train_n=d["target_train_n"],
            source_dev=Scores.from_dict(d["source_dev"]),
            target_test=None if d.get("target_test") is None else Scores.from_dict(d["target_test"]),
            coral_distance=None if d.get("coral_distance") is None else CoralDistance.from_dict(d["coral_distance"]),
            note=d.get("note"),
        )



# ---------------------------------------------------------------------------------------------
# the pipeline's steps (lam run, lam train, lam demo): each step's summary, recorded in
# OUT/steps/<step>.json as to_dict()


class StepSummary(Protocol):
    """What a pipeline step returns: a record whose ``to_dict()`` goes into its step record."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        ...


@dataclass(frozen=True)
class AlignedSide:
    """One side's alignment counts."""

    utterances: int  # given to the aligner
    ok: int
    failed: int
    suspect: int

    def to_dict(self) -> dict[str, int]:
        """JSON-ready."""
        return {"utterances": self.utterances, "ok": self.ok, "failed": self.failed, "suspect": self.suspect}


@dataclass(frozen=True)
class AlignStep:
    """:func:`lam_train.pipeline.step_align`: both sides aligned into ``OUT/aligned``."""

    source: AlignedSide
    target: AlignedSide

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"source": {...}, "target": {...}}``."""
        return {"source": self.source.to_dict(), "target": self.target.to_dict()}


@dataclass(frozen=True)
class ExtractedSide:
    """One side's extraction counts and times (from :class:`analysis.extract_report.FeaturesReport`)."""

    ok: int  # utterances pooled by this run
    failed: int  # utterances that failed
    rows_written: int  # store rows
    seconds: float  # wall time of the run
    forward_seconds: float  # the model's forward passes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ok": self.ok, "failed": self.failed, "rows_written": self.rows_written, "seconds": self.seconds,
                "forward_seconds": self.forward_seconds}


@dataclass(frozen=True)
class FeaturesStep:
    """:func:`lam_train.pipeline.step_features`: both sides extracted into ``OUT/features``."""

    source: ExtractedSide
    target: ExtractedSide

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"source": {...}, "target": {...}}``."""
        return {"source": self.source.to_dict(), "target": self.target.to_dict()}


@dataclass(frozen=True)
class SimilarityStep:
    """:func:`lam_train.pipeline.step_similarity`: the rankings file, its figures, the unit's selections."""

    rankings: str  # path of rankings.json
    figures: tuple[str, ...]
    selections: Mapping[str, Any]  # selection name (final, BL, GL, WL, RL1..) -> layers

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"rankings": self.rankings, "figures": list(self.figures), "selections": dict(self.selections)}


@dataclass(frozen=True)
class AcousticsStep:
    """:func:`lam_train.pipeline.step_acoustics`: segments measured, how many ok, time (s), the table."""

    segments: int
    ok: int
    seconds: float
    table: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"segments": self.segments, "ok": self.ok, "seconds": self.seconds, "table": self.table}


@dataclass(frozen=True)
class GeometryStep:
    """:func:`lam_train.pipeline.step_geometry`: the layers projected, time (s)."""

    layers: tuple[int, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"layers": list(self.layers), "seconds": self.seconds}


@dataclass(frozen=True)
class TrainStep:
    """:func:`lam_train.pipeline.step_train`: every strategy (with its twins) x seed in ``OUT/runs``."""

    runs: int
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"runs": self.runs, "strategies": list(self.strategies), "seeds": list(self.seeds)}


@dataclass(frozen=True)
class ReportStep:
    """:func:`lam_train.pipeline.step_report`: the report's files (paths)."""

    markdown: str  # report/report.md ("report" in JSON)
    results: str   # report/results.md
    html: str      # report/index.html

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"report": self.markdown, "results": self.results, "html": self.html}


@dataclass(frozen=True)
class PipelineResult:
    """What :func:`~lam_train.pipeline.run_pipeline`, ``train_only`` and ``run_demo`` give back.

    ``report`` is None when the run stopped early (``stopped`` says why, ``message`` in words):
    a source corpus without emotion labels leaves nothing to train on.
    """

    out: str  # the output folder
    rankings: str | None  # the layer rankings used (None for train_only without rankings)
    report: ReportStep | None
    stopped: str | None = None  # "no_emotion_labels"
    message: str | None = None
    seconds: float | None = None  # wall time, for run_demo

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the report's paths, or ``{"stopped", "message", "out", "rankings"}``; ``seconds``
        when timed."""
        plain: dict[str, Any]
        if self.report is None:
            plain = {"stopped": self.stopped, "message": self.message, "out": self.out, "rankings": self.rankings}
        else:
            plain = self.report.to_dict()
        if self.seconds is not None:
            plain["seconds"] = self.seconds
        return plain
