"""What :func:`analysis.extract.extract_features` and :func:`analysis.extract.merge_shard_reports`
return: the run's report, typed.

:class:`FeaturesReport` holds what a run's (or a shard's) ``report.json`` holds and
:class:`MergedFeaturesReport` what the merged ``report.json`` of a sharded store holds;
``to_dict()`` is that file's content (the schema is unchanged from the untyped report) and
``from_dict()`` reads it back.

Example: ``report.ok``, ``report.n_failed``, ``[f.utt_id for f in report.failed]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phonalign.errors import UtteranceFailure

__all__ = ["FeaturesReport", "MergedFeaturesReport", "ShardSummary", "UtteranceFailure"]


def _failures(failed: Mapping[str, Mapping[str, Any]] | None) -> tuple[UtteranceFailure, ...]:
    return tuple(UtteranceFailure.from_dict(u, rec) for u, rec in (failed or {}).items())


def _failed_dict(failed: Sequence[UtteranceFailure]) -> dict[str, dict[str, Any]]:
    return {f.utt_id: f.to_dict() for f in failed}


@dataclass(frozen=True)
class FeaturesReport:
    """The report of one run (or one shard) of :func:`~analysis.extract.extract_features`, also
    written to ``OUT/report.json`` (a shard's to ``OUT/shards/sIIIIofNNNN/report.json``).

    Counts are utterances; ``rows_written`` store rows (utterance and segment rows); times are
    seconds (``seconds`` the wall time of the run, ``forward_seconds`` the model's forward passes).
    """

    model: str
    model_digest: str | None  # the weights' digest (analysis.model_identity)
    shard: str  # "I/N"
    input: str  # the aligned corpus (or plain corpus) read
    utterances_in_shard: int
    skipped_done: int  # done by an earlier run from the same inputs, kept
    ok: int  # pooled by this run
    redone: int  # taken out of the store because their inputs changed, and pooled again
    dropped: int  # taken out of the store because they left the input
    failed: tuple[UtteranceFailure, ...]
    rows_written: int
    forward_seconds: float
    seconds: float

    @property
    def n_failed(self) -> int:
        """Utterances that failed."""
        return len(self.failed)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {"step": "features", "model": self.model, "model_digest": self.model_digest, "shard": self.shard,
                "input": self.input, "utterances_in_shard": self.utterances_in_shard,
                "skipped_done": self.skipped_done, "ok": self.ok, "redone": self.redone, "dropped": self.dropped,
                "failed": _failed_dict(self.failed), "rows_written": self.rows_written,
                "forward_seconds": self.forward_seconds, "seconds": self.seconds, "n_failed": self.n_failed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturesReport:
        """The report of a ``report.json`` (as :func:`phonalign.fsutil.read_json` reads it)."""
        return cls(model=data["model"], model_digest=data.get("model_digest"), shard=data["shard"],
                   input=data["input"], utterances_in_shard=int(data["utterances_in_shard"]),
                   skipped_done=int(data["skipped_done"]), ok=int(data["ok"]), redone=int(data["redone"]),
                   dropped=int(data["dropped"]), failed=_failures(data.get("failed")),
                   rows_written=int(data["rows_written"]), forward_seconds=float(data["forward_seconds"]),
                   seconds=float(data.get("seconds", 0.0)))


@dataclass(frozen=True)
class ShardSummary:
    """One shard's line of a merged report (``None`` where the shard's report lacks the key)."""

    shard: str | None
    ok: int | None
    n_failed: int | None
    skipped_done: int | None
    seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        """The line as the merged ``report.json["shards"][name]`` writes it."""
        return {"shard": self.shard, "ok": self.ok, "n_failed": self.n_failed, "skipped_done": self.skipped_done,
                "seconds": self.seconds}


@dataclass(frozen=True)
class MergedFeaturesReport:
    """The shard reports of a store combined (:func:`~analysis.extract.merge_shard_reports`), also
    written to ``OUT/report.json``.

    Counts and times are sums over the shards of the latest split (``n_shards``); ``model``,
    ``model_digest`` and ``input`` are the first shard's (None, and absent from :meth:`to_dict`,
    when no shard has reported). ``complete`` once every one of the ``n_shards`` has reported.
    """

    shards: Mapping[str, ShardSummary]  # "sIIIIofNNNN" -> its line
    failed: tuple[UtteranceFailure, ...]
    ok: int
    skipped_done: int
    redone: int
    dropped: int
    rows_written: int
    forward_seconds: float
    seconds: float
    utterances_in_shard: int
    model: str | None
    model_digest: str | None
    input: str | None
    n_shards: int | None
    shards_missing: tuple[str, ...]

    @property
    def n_failed(self) -> int:
        """Utterances that failed, over the shards."""
        return len(self.failed)

    @property
    def complete(self) -> bool:
        """Every shard of the split has reported."""
        return not self.shards_missing

    def to_dict(self) -> dict[str, Any]:
        """The content of the merged ``report.json``."""
        out: dict[str, Any] = {
            "step": "features", "shards": {name: s.to_dict() for name, s in self.shards.items()},
            "failed": _failed_dict(self.failed), "ok": self.ok, "skipped_done": self.skipped_done,
            "redone": self.redone, "dropped": self.dropped, "rows_written": self.rows_written,
            "forward_seconds": self.forward_seconds, "seconds": self.seconds,
            "utterances_in_shard": self.utterances_in_shard}
        if self.shards:  # the first shard's facts (no shard reported: the keys are absent)
            out.update(model=self.model, model_digest=self.model_digest, input=self.input)
        out.update(n_failed=self.n_failed, n_shards=self.n_shards, shards_missing=list(self.shards_missing),
                   complete=self.complete)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MergedFeaturesReport:
        """The report of a merged ``report.json``."""
        return cls(shards={name: ShardSummary(**s) for name, s in data["shards"].items()},
                   failed=_failures(data.get("failed")), ok=int(data["ok"]), skipped_done=int(data["skipped_done"]),
                   redone=int(data["redone"]), dropped=int(data["dropped"]), rows_written=int(data["rows_written"]),
                   forward_seconds=float(data["forward_seconds"]), seconds=float(data["seconds"]),
                   utterances_in_shard=int(data["utterances_in_shard"]), model=data.get("model"),
                   model_digest=data.get("model_digest"), input=data.get("input"), n_shards=data.get("n_shards"),
                   shards_missing=tuple(data.get("shards_missing") or ()))
