"""What :func:`phonalign.align.run.align_corpus` returns: the run's report, typed.

:class:`AlignReport` holds what ``OUT/report.json`` holds; :meth:`AlignReport.to_dict` is that
file's content (the schema is unchanged from the untyped report: ``tests/test_align_report.py``
compares it with a golden file) and :meth:`AlignReport.from_dict` reads it back.

Example: ``report.counts.ok``, ``report.phone_sets["en"]``, ``[u.utt_id for u in report.suspects]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["AlignCounts", "AlignOutputs", "AlignReport", "UtteranceOutcome", "STATUSES"]

#: An utterance's status in the report: aligned, failed (in the runner's checks or the backend), or
#: rejected by the corpus reader before the run.
STATUSES = ("ok", "failed", "rejected")


@dataclass(frozen=True)
class AlignCounts:
    """Counts of one run (``report.json["counts"]``)."""

    utterances: int  # given to align_corpus
    ok: int  # aligned (including suspect ones)
    failed: int
    rejected_by_reader: int
    resumed: int  # aligned by an earlier run of the folder and kept
    suspect: int
    suspect_dropped: int  # suspect ones left out of segments.parquet (drop_suspect=True)
    segments: int  # rows of segments.parquet
    by_class: Mapping[str, int]  # unit class -> segments, every class of UNIT_CLASSES
    errors: Mapping[str, int]  # error class name -> failed or rejected utterances

    def to_dict(self) -> dict[str, Any]:
        """The counts as report.json writes them."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "by_class": dict(self.by_class),
                "errors": dict(self.errors)}


@dataclass(frozen=True)
class UtteranceOutcome:
    """One utterance's line of the report.

    Aligned ones (``status == "ok"``) have ``n_segments``, ``phone_set`` and the quality verdict
    (``suspect``, ``suspect_reason``, ``quality``: :meth:`phonalign.align.quality.QualityMeasures.to_dict`);
    failed and rejected ones have the error's class name (``error``), message (``reason``),
    ``path``, ``line`` and ``hint``. ``info`` holds the backend's facts (OOV words, G2P use, the
    TextGrid read ...) when it gave any.
    """

    utt_id: str | None
    status: str  # one of STATUSES
    n_segments: int | None = None
    phone_set: str | None = None
    reason: str | None = None
    error: str | None = None
    path: str | None = None
    line: int | None = None
    hint: str | None = None
    info: Mapping[str, Any] | None = None
    suspect: bool | None = None  # None: no verdict (not aligned)
    suspect_reason: str | None = None
    quality: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """The utterance was aligned."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The line as report.json writes it: only the keys of its kind."""
        out: dict[str, Any] = {"utt_id": self.utt_id, "status": self.status}
        if self.ok:
            out.update(n_segments=self.n_segments, phone_set=self.phone_set)
        else:
            out.update(reason=self.reason, error=self.error, path=self.path, line=self.line, hint=self.hint)
        if self.info:
            out["info"] = dict(self.info)
        if self.suspect is not None:
            out.update(suspect=self.suspect, suspect_reason=self.suspect_reason,
                       quality=None if self.quality is None else dict(self.quality))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UtteranceOutcome:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class AlignOutputs:
    """Where the run's tables and TextGrids are."""

    segments: str
    utterances: str
    textgrids: str


@dataclass(frozen=True)
class AlignReport:
    """The report of :func:`~phonalign.align.run.align_corpus`, also written to ``OUT/report.json``."""

    out_dir: str
    aligner: Mapping[str, Any]  # the backend's settings (Aligner.config())
    phone_sets: Mapping[str, str]  # language -> phone set (given, or detected)
    options: Mapping[str, Any]  # the vowel-class options (ClassOptions.to_dict())
    counts: AlignCounts
    unknown_labels: Mapping[str, int]  # label -> segments of class unknown, most frequent first
    oov_words: Mapping[str, int]  # out-of-vocabulary word -> utterances, over the whole batch
    dropped_emotions: Mapping[str, int]  # emotion labels outside the four classes -> utterances
    corpus: Mapping[str, Any]  # the corpus reader's report (source, skipped files, ...)
    outputs: AlignOutputs
    utterances: tuple[UtteranceOutcome, ...]  # in input order, then the reader's rejections
    seconds: float = 0.0  # wall time of the run

    @property
    def suspects(self) -> tuple[UtteranceOutcome, ...]:
        """The aligned utterances flagged as suspect, in input order."""
        return tuple(u for u in self.utterances if u.suspect)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {
            "out_dir": self.out_dir,
            "aligner": dict(self.aligner),
            "phone_sets": dict(self.phone_sets),
            "options": dict(self.options),
            "counts": self.counts.to_dict(),
            "unknown_labels": dict(self.unknown_labels),
            "oov_words": dict(self.oov_words),
            "dropped_emotions": dict(self.dropped_emotions),
            "corpus": dict(self.corpus),
            "outputs": {"segments": self.outputs.segments, "utterances": self.outputs.utterances,
                        "textgrids": self.outputs.textgrids},
            "utterances": [u.to_dict() for u in self.utterances],
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlignReport:
        """The report of a ``report.json`` (as :func:`phonalign.fsutil.read_json` reads it)."""
        return cls(
            out_dir=data["out_dir"], aligner=data["aligner"], phone_sets=data["phone_sets"],
            options=data["options"], counts=AlignCounts(**data["counts"]),
            unknown_labels=data["unknown_labels"], oov_words=data["oov_words"],
            dropped_emotions=data["dropped_emotions"], corpus=data["corpus"],
            outputs=AlignOutputs(**data["outputs"]),
            utterances=tuple(UtteranceOutcome.from_dict(u) for u in data["utterances"]),
            seconds=data.get("seconds", 0.0),
        )
