"""The segments table: one row per phone interval, with its unit class, flags and word.

:func:`segments_from_alignment` turns one utterance's :class:`~phonalign.records.Alignment` into
rows of :data:`~phonalign.records.SEGMENT_SCHEMA`; :func:`write_table` / :func:`read_table` store
such tables as Parquet (atomically) or export them as CSV/TSV.

Checks made here, for every aligner: intervals must be sorted and must not overlap
(:class:`~phonalign.errors.TextGridError` naming the file and the interval), and an alignment may
not run past the end of its audio by more than :data:`MAX_OVERRUN` seconds nor stop more than
:data:`MAX_UNDERRUN` seconds before it (:func:`check_against_audio`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import PhonalignError, TextGridError
from .fsutil import atomic_path
from .records import SEGMENT_SCHEMA, Alignment
from .textgrid_io import validate_alignment

__all__ = [
    "segments_from_alignment",
    "segment_columns",
    "check_against_audio",
    "empty_segments",
    "read_table",
    "write_table",
    "MAX_OVERRUN",
    "MAX_UNDERRUN",
]

#: How far (seconds) an alignment may run past the end of its audio: one 10 ms aligner frame.
MAX_OVERRUN = 0.010
#: How much of the end of its audio (seconds) an alignment may leave uncovered. Grids made for a
#: recording (Praat, MFA, the aligners here) end where it ends; one that stops well before was
#: made for another (shorter) file, and the phones of the rest of the audio are missing.
MAX_UNDERRUN = 0.25


def check_against_audio(alignment: Alignment, duration: float, *, utt_id: str | None = None,
                        tolerance: float = MAX_OVERRUN, max_underrun: float = MAX_UNDERRUN) -> None:
    """Raise :class:`TextGridError` if ``alignment`` does not fit its audio of ``duration`` s.

    It may end at most ``tolerance`` s after the audio (a grid longer than its recording almost
    always belongs to another file, or the audio was cut: its phones would be read from samples
    that are not there), and must cover the audio up to ``max_underrun`` s before its end.
    """
    end = alignment.xmax
    if alignment.phones:
        end = max(end, alignment.phones[-1].end)
    if end > duration + tolerance:
        raise TextGridError(
            f"the alignment ends at {end:.3f} s but the audio lasts {duration:.3f} s "
            f"({end - duration:.3f} s longer, more than the {tolerance * 1000:.0f} ms allowed)",
            path=alignment.source, utt_id=utt_id,
            hint="check that the TextGrid belongs to this recording (same name, same cut)",
        )
    if end < duration - max_underrun:
        raise TextGridError(
            f"the alignment ends at {end:.3f} s but the audio lasts {duration:.3f} s "
            f"({duration - end:.3f} s of audio not covered, more than the {max_underrun:.2f} s allowed)",
            path=alignment.source, utt_id=utt_id,
            hint="check that the TextGrid belongs to this recording (same name, same cut); a grid must "
            "span its whole recording",
        )


def _word_of_each_phone(alignment: Alignment) -> tuple[list[str | None], list[int | None]]:
    """The word interval holding each phone's midpoint (None in pauses), by a single merge pass."""
    words = alignment.words
    names: list[str | None] = []
    index: list[int | None] = []
    j = 0
    n = len(words)
    for ph in alignment.phones:
        mid = 0.5 * (ph.start + ph.end)
        while j < n and words[j].end <= mid:
            j += 1
        if j < n and words[j].start <= mid and words[j].label.strip():
            names.append(words[j].label)
            index.append(j)
        else:
            names.append(None)
            index.append(None)
    return names, index


def segment_columns(
    utt_id: str,
    alignment: Alignment,
    *,
    phone_set: str,
    options=None,
    context: Sequence[str | None] | None = None,
    validate: bool = True,
) -> dict[str, list]:
    """The columns of :data:`SEGMENT_SCHEMA` for one utterance, as Python sequences (lists).

    The batch runner extends these lists over many utterances and builds one table per chunk,
    which is far cheaper than one table per utterance. See :func:`segments_from_alignment`.
    """
    from .phonesets import ClassOptions, classify

    if validate:
        validate_alignment(alignment, utt_id=utt_id)
    phones = alignment.phones
    infos = classify([p.label for p in phones], phone_set=phone_set,
                     options=options if options is not None else ClassOptions(), context=context)
    words, word_index = _word_of_each_phone(alignment)
    n = len(phones)
    if n == 0:
        return {name: [] for name in SEGMENT_SCHEMA.names}
    # one transposition instead of one comprehension per column: this runs per utterance
    label, start, end = map(list, zip(*[(p.label, p.start, p.end) for p in phones], strict=True))
    phone, unit_class, diphthong, rhotic, syllabic, stress, tone = map(list, zip(
        *[(i.phone, i.unit_class, i.diphthong, i.rhotic, i.syllabic, i.stress, i.tone) for i in infos], strict=True))
    return {
        "utt_id": [utt_id] * n,
        "index": list(range(n)),
        "label": label,
        "phone": phone,
        "unit_class": unit_class,
        "start": start,
        "end": end,
        "diphthong": diphthong,
        "rhotic": rhotic,
        "syllabic": syllabic,
        "stress": stress,
        "tone": tone,
        "word": words,
        "word_index": word_index,
        "phone_set": [phone_set] * n,
    }


def columns_to_table(columns: dict[str, list]) -> pa.Table:
    """Lists of :func:`segment_columns` (possibly concatenated) -> a SEGMENT_SCHEMA table."""
    return pa.table({name: pa.array(columns[name], type=SEGMENT_SCHEMA.field(name).type)
                     for name in SEGMENT_SCHEMA.names}, schema=SEGMENT_SCHEMA)


def empty_segments() -> pa.Table:
    """A segments table with no rows."""
    return SEGMENT_SCHEMA.empty_table()


def segments_from_alignment(
    utt_id: str,
    alignment: Alignment,
    *,
    phone_set: str,
    options=None,
    context: Sequence[str | None] | None = None,
) -> pa.Table:
    """One utterance's phone intervals as rows of :data:`~phonalign.records.SEGMENT_SCHEMA`.

    Parameters
    ----------
    utt_id : str
        The utterance.
    alignment : Alignment
        Its word and phone intervals (seconds).
    phone_set : str
        Phone set of the labels (:data:`phonalign.phonesets.PHONE_SETS`).
    options : phonalign.phonesets.ClassOptions, optional
        Named options of the vowel-class mapping (default ``ClassOptions()``).
    context : sequence of str or None, optional
        Pinyin syllable of each phone (Mandarin), passed to :func:`phonalign.phonesets.classify`.

    Returns
    -------
    pa.Table
        ``len(alignment.phones)`` rows, in time order: every phone interval, pauses included
        (``unit_class="silence"``); labels no table knows are ``unknown``, never consonants.
        ``word``/``word_index`` give the word interval holding the phone's midpoint (null in
        pauses).

    Raises
    ------
    TextGridError
        If intervals are unsorted or overlap (naming the file and interval).
    """
    return columns_to_table(segment_columns(utt_id, alignment, phone_set=phone_set, options=options,
                                            context=context))


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` atomically: Parquet for ``.parquet``, CSV for ``.csv``, TSV for ``.tsv``."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            pq.write_table(table, tmp, compression="zstd")
        elif suffix in (".csv", ".tsv"):
            pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(
                delimiter="," if suffix == ".csv" else "\t"))
        else:
            raise PhonalignError(f"cannot write a table as {suffix or 'a file without suffix'!r}",
                                 path=path, hint="use .parquet, .csv or .tsv")
    return path


def read_table(path: str | Path, *, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a table written by :func:`write_table` (Parquet, or CSV/TSV)."""
    path = Path(path)
    if not path.exists():
        raise PhonalignError("table not found", path=path,
                             hint="run `lam align CORPUS OUT` first, or check the output folder")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(
                delimiter="," if suffix == ".csv" else "\t"))
            return table.select(list(columns)) if columns else table
        return pq.read_table(path, columns=list(columns) if columns else None)
    except (pa.ArrowInvalid, OSError) as err:
        raise PhonalignError(f"cannot read the table ({err})", path=path,
                             hint="the file is damaged; rerun the step that wrote it") from None
