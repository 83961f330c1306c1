"""Typed records and table schemas shared by every step: utterances, intervals, alignments, segments.

A corpus is a table of :class:`Utterance` rows; an aligner turns each into an :class:`Alignment`
(word and phone intervals); phones become rows of the segments table (:data:`SEGMENT_SCHEMA`).
Times are float seconds from the start of the recording, as start/end pairs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# The vocabulary (emotions, unit classes, languages) is written once in phonalign.defaults, which the
# command line reads without loading pyarrow; re-exported here beside the schemas that use it.
from .defaults import EMOTIONS as EMOTIONS
from .defaults import LANGUAGES as LANGUAGES
from .defaults import UNIT_CLASSES as UNIT_CLASSES
from .defaults import VOWEL_CLASSES as VOWEL_CLASSES

#: Tolerance for comparing times, seconds. Praat writes 15-17 significant digits; aligners round
#: to 10 ms frames; 0.1 ms separates "the same boundary" from "a different one".
TIME_TOL = 1e-4



@dataclass(frozen=True)
class Utterance:
    """One recording with its transcript and labels.

    ``audio_path`` is absolute once a corpus has been read. ``emotion`` is one of :data:`EMOTIONS`
    or None (unlabelled, or a class the study drops); ``split`` is ``train``/``dev``/``test``/None.
    ``start``/``end`` (seconds) make the utterance one transcribed interval of a longer recording
    (``audio_path``); None for a recording that is the utterance. Times of its alignment stay on the
    recording's timeline.
    """

    utt_id: str
    audio_path: str
    text: str
    language: str
    speaker: str
    corpus: str
    emotion: str | None = None
    split: str | None = None
    start: float | None = None
    end: float | None = None

    @property
    def is_interval(self) -> bool:
        """True when the utterance is an interval of a longer recording."""
        return self.start is not None or self.end is not None


@dataclass(frozen=True)
class Interval:
    """A labelled stretch of time, seconds."""

    start: float
    end: float
    label: str

    @property
    def duration(self) -> float:
        """``end - start``, seconds."""
        return self.end - self.start


@dataclass(frozen=True)
class Alignment:
    """Word and phone intervals of one utterance, as an aligner or a TextGrid gives them.

    ``xmin``/``xmax`` are the grid's limits (seconds). Intervals are sorted and non-overlapping;
    empty labels are kept as ``""`` (they become ``silence`` segments).
    """

    words: tuple[Interval, ...]
    phones: tuple[Interval, ...]
    xmin: float = 0.0
    xmax: float = 0.0
    source: str | None = None  # file it came from, for error messages
    extra: dict = field(default_factory=dict, compare=False)


# The table schemas are built on first use (PEP 562 module __getattr__): a worker process that
# needs only the records above (a pocketsphinx decoder, the TextGrid reader) starts without
# loading pyarrow, which is about a third of its start-up imports.
if TYPE_CHECKING:
    import pyarrow as pa

    #: ``utterances.parquet`` of a corpus: one row per :class:`Utterance`.
    UTTERANCE_SCHEMA: pa.Schema
    #: ``utterances.parquet`` of an aligned corpus: the utterance columns, then the verdict of the
    #: alignment quality check (:mod:`phonalign.align.quality`).
    ALIGNED_UTTERANCE_SCHEMA: pa.Schema
    #: ``segments.parquet``: one row per phone interval.
    SEGMENT_SCHEMA: pa.Schema


@functools.cache
def _schemas() -> dict[str, pa.Schema]:
    import pyarrow as pa

    UTTERANCE_SCHEMA = pa.schema(
        [
            ("utt_id", pa.string()),
            ("audio_path", pa.string()),
            ("text", pa.string()),
            ("language", pa.string()),
            ("speaker", pa.string()),
            ("corpus", pa.string()),
            ("emotion", pa.string()),
            ("split", pa.string()),
            ("start", pa.float64()),   # seconds into audio_path; null: the whole recording
            ("end", pa.float64()),
        ]
    )

    ALIGNED_UTTERANCE_SCHEMA = pa.schema(
        list(UTTERANCE_SCHEMA)
        + [
            ("suspect", pa.bool_()),          # the alignment cannot be right (wrong or partial transcript)
            ("suspect_reason", pa.string()),  # why, null when not suspect
        ]
    )

    SEGMENT_SCHEMA = pa.schema(
        [
            ("utt_id", pa.string()),
            ("index", pa.int32()),          # position of the phone interval in the utterance, 0-based
            ("label", pa.string()),         # as the aligner / TextGrid wrote it
            ("phone", pa.string()),         # normalised base phone (stress digits, tone marks removed)
            ("unit_class", pa.string()),    # one of UNIT_CLASSES
            ("start", pa.float64()),        # seconds
            ("end", pa.float64()),          # seconds
            ("diphthong", pa.bool_()),
            ("rhotic", pa.bool_()),
            ("syllabic", pa.bool_()),
            ("stress", pa.int8()),          # ARPAbet stress 0/1/2, null where the phone set has none
            ("tone", pa.int8()),            # Mandarin tone 1-5, null where unknown
            ("word", pa.string()),          # the word interval the phone lies in, null in pauses
            ("word_index", pa.int32()),     # its position in the words tier, null in pauses
            ("phone_set", pa.string()),     # phone set the label was read in
        ]
    )
    return {"UTTERANCE_SCHEMA": UTTERANCE_SCHEMA, "ALIGNED_UTTERANCE_SCHEMA": ALIGNED_UTTERANCE_SCHEMA,
            "SEGMENT_SCHEMA": SEGMENT_SCHEMA}


def __getattr__(name: str) -> pa.Schema:
    # names checked first: a probe for another attribute (inspect, doctest) must not load pyarrow
    if name in ("UTTERANCE_SCHEMA", "ALIGNED_UTTERANCE_SCHEMA", "SEGMENT_SCHEMA"):
        return _schemas()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
