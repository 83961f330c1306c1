"""The last step of an alignment run: the journal's committed parts become ``segments.parquet``,
``utterances.parquet`` and the report.

Everything is made from each utterance's *latest* committed outcome (a retried failure may have
succeeded later, a changed utterance been redone), in input order, so that an interrupted or edited
run followed by a rerun gives the same tables as one fresh run. The steps:

1. :func:`latest_outcomes`: the last status row of each utterance, vectorised (10^6 rows as Python
   dicts would take gigabytes), and the part that holds it.
2. TextGrids of utterances no longer aligned (removed from the corpus, or failing now) are removed:
   this folder's runs wrote them (their ids come from its journal).
3. :func:`verdicts`: quality measures and the ``suspect`` verdict of every aligned utterance
   (:mod:`phonalign.align.quality`; the speaking-rate rule compares each with its language).
4. :func:`write_segments`: the parts' rows of the utterances kept, streamed part by part in input
   order when the parts' ranges do not interleave (else sorted at once); a single part that already
   is the final table is hard-linked into place instead of being re-encoded.
5. ``utterances.parquet`` with the verdicts, and the :class:`~phonalign.align.report.AlignReport`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import LamError
from ..fsutil import atomic_path, is_safe_name, os_error, read_parquet
from ..records import SEGMENT_SCHEMA, UNIT_CLASSES, Utterance
from .journal import STATUS_SCHEMA, Journal
from .quality import QualityMeasures, Verdict, judge, reference
from .report import AlignCounts, AlignOutputs, AlignReport, UtteranceOutcome

__all__ = ["RunFacts", "assemble"]


@dataclass(frozen=True)
class RunFacts:
    """What the report says about a run besides the journal's content."""

    utterances: Sequence[Utterance]  # as given, in input order
    order: Sequence[str]  # the safe, unique ids in input order (the tables' order)
    aligner: Mapping[str, Any]  # Aligner.config()
    options: Mapping[str, Any]  # ClassOptions.to_dict()
    corpus_report: Mapping[str, Any]  # the corpus reader's report
    n_resumed: int  # utterances kept from an earlier run
    input_failures: Sequence[tuple[str, LamError]]  # ids refused before aligning (unsafe, repeated)
    drop_suspect: bool


@dataclass(frozen=True)
class Latest:
    """The latest committed outcome of each utterance: columns of :data:`STATUS_SCHEMA` (one row
    per utterance, in commit order), the part holding each row, and who was ever aligned."""

    cols: Mapping[str, list]
    part_of: Sequence[int]
    row: Mapping[str, int]  # utt_id -> its row in cols
    ever_ok: frozenset[str]


def latest_outcomes(journal: Journal) -> Latest:
    """Each utterance's last row of the journal's status parts, and the part holding it."""
    status_parts = []
    for k in journal.committed:
        part = journal.read_status(k)
        status_parts.append(part.append_column("_part", pa.array(np.full(part.num_rows, k, np.int64))))
    status = (pa.concat_tables(status_parts) if status_parts
              else STATUS_SCHEMA.empty_table().append_column("_part", pa.array([], pa.int64())))
    ever_ok = set(pc.unique(status.filter(pc.equal(status.column("status"), "ok")).column("utt_id")).to_pylist())
    if status.num_rows:  # each utterance's last row, vectorised
        status = status.append_column("_row", pa.array(np.arange(status.num_rows)))
        last = status.group_by("utt_id").aggregate([("_row", "max")]).column("_row_max").to_numpy()
        # the rows themselves, in commit order (sort_indices(last) would be positions in `last`)
        status = status.take(pa.array(np.sort(last))).drop_columns(["_row"])
    cols = {name: status.column(name).to_pylist() for name in STATUS_SCHEMA.names}
    return Latest(cols=cols, part_of=status.column("_part").to_pylist(),
                  row={u: i for i, u in enumerate(cols["utt_id"])}, ever_ok=frozenset(ever_ok))


def _remove_textgrids(out: Path, utt_ids: Iterable[str]) -> None:
    for utt_id in sorted(utt_ids):
        if is_safe_name(utt_id):
            path = out / "textgrids" / f"{utt_id}.TextGrid"
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                raise os_error(err, path=path, action="cannot remove") from None


def verdicts(utts: Sequence[Utterance], ok_ids: set[str], latest: Latest) -> dict[str, tuple[QualityMeasures, Verdict]]:
    """utt_id -> (QualityMeasures, Verdict) of every aligned utterance; the speaking-rate rule
    compares each with the median of its language (:mod:`phonalign.align.quality`)."""
    language = {u.utt_id: u.language for u in utts}
    measures: dict[str, QualityMeasures] = {}
    for u in ok_ids:
        raw = latest.cols["info"][latest.row[u]]
        q = json.loads(raw).get("quality") if raw else None
        measures[u] = QualityMeasures.from_dict(q) if q else QualityMeasures(n_phones=0)
    by_lang: dict[str, list[QualityMeasures]] = {}
    for u, m in measures.items():
        by_lang.setdefault(language.get(u, ""), []).append(m)
    refs = {lang: reference(ms) for lang, ms in by_lang.items()}
    return {u: (m, judge(m, refs[language.get(u, "")])) for u, m in measures.items()}


# ------------------------------------------------------------------------------------------ segments
class _Tally:
    """Segments written, per class, and the labels of class ``unknown``."""

    def __init__(self) -> None:
        self.n_segments = 0
        self.by_class: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()

    def add(self, table: pa.Table) -> None:
        self.n_segments += table.num_rows
        for item in pc.value_counts(table.column("unit_class")).to_pylist():
            self.by_class[item["values"]] += item["counts"]
        unk = table.filter(pc.equal(table.column("unit_class"), "unknown")).column("label")
        for item in pc.value_counts(unk).to_pylist():
            self.unknown[item["values"]] += item["counts"]


@dataclass(frozen=True)
class _Range:
    """A segments part, the input positions its kept utterances span, and their ids."""

    first: int
    last: int
    path: Path
    mine: pa.Array


def _positions(ids: pa.ChunkedArray | pa.Array, order: pa.Array) -> pa.Array:
    return pc.index_in(ids, value_set=order)


def _part_ranges(journal: Journal, ok_in_part: Mapping[int, list[str]], order: pa.Array) -> list[_Range]:
    ranges = []
    for k in journal.committed:
        p = journal.segments_part(k)
        ids = read_parquet(p, what="segments part of a committed chunk", columns=["utt_id"],
                           hint=f"delete {p.name} and status-{k:05d}.parquet: the rerun redoes that chunk")
        column = ids.column("utt_id")
        mine = pa.array(sorted(ok_in_part.get(k, [])), type=pa.string())
        pos = _positions(column.filter(pc.is_in(column, value_set=mine)), order)
        if len(pos) and pos.null_count < len(pos):
            ranges.append(_Range(pc.min(pos).as_py(), pc.max(pos).as_py(), p, mine))
    return sorted(ranges, key=lambda r: r.first)


def _prepared(table: pa.Table, mine: pa.Array, order: pa.Array) -> tuple[pa.Table, bool]:
    """The part's rows of utterances whose latest outcome (ok) it holds, in input order; and
    whether that changed it."""
    changed = False
    keep = pc.is_in(table.column("utt_id"), value_set=mine)
    if not pc.all(keep).as_py():
        table = table.filter(keep)
        changed = True
    pos = _positions(table.column("utt_id"), order).to_numpy(zero_copy_only=False)
    idx = table.column("index").to_numpy()
    dp, di = np.diff(pos), np.diff(idx)
    if not np.all((dp > 0) | ((dp == 0) & (di > 0))):
        table = table.append_column("_pos", pa.array(pos))
        table = table.sort_by([("_pos", "ascending"), ("index", "ascending")]).drop_columns(["_pos"])
        changed = True
    return table, changed


def _link_single_part(journal: Journal, part: _Range, order: pa.Array, seg_out: Path) -> _Tally | None:
    """One part that already is the final table (the usual case up to chunk_size utterances):
    hard-linked into place instead of re-encoded (parts are only ever replaced). None when it is
    not, or the file system has no hard links."""
    # the columns that decide (order, membership) and that are counted: not the whole part
    table, changed = _prepared(pq.read_table(part.path, columns=["utt_id", "index", "unit_class", "label"]),
                               part.mine, order)
    if changed:
        return None
    link = journal.dir / ".segments.parquet.lamtmp-00000000.parquet"  # a temporary name (cleaned if left)
    try:
        link.unlink(missing_ok=True)
        os.link(part.path, link)
        os.replace(link, seg_out)
    except OSError:  # no hard links on this file system: write it
        link.unlink(missing_ok=True)
        return None
    tally = _Tally()
    tally.add(table)
    return tally


def write_segments(seg_out: Path, journal: Journal, ranges: list[_Range], ok_ids: set[str],
                   order: pa.Array) -> _Tally:
    """Write ``segments.parquet`` from the parts (see the module docstring); returns what it holds."""
    monotonic = all(a.last < b.first for a, b in itertools.pairwise(ranges))
    if monotonic and len(ranges) == 1:
        linked = _link_single_part(journal, ranges[0], order, seg_out)
        if linked is not None:
            return linked
    tally = _Tally()
    with atomic_path(seg_out) as tmp:
        if monotonic:
            with pq.ParquetWriter(tmp, SEGMENT_SCHEMA) as writer:
                for r in ranges:
                    table = _prepared(pq.read_table(r.path), r.mine, order)[0]
                    tally.add(table)
                    writer.write_table(table)
        else:
            tables = [_prepared(pq.read_table(r.path), r.mine, order)[0] for r in ranges]
            table = _prepared(pa.concat_tables(tables), pa.array(sorted(ok_ids), type=pa.string()), order)[0] \
                if tables else SEGMENT_SCHEMA.empty_table()
            tally.add(table)
            pq.write_table(table, tmp)
    return tally


def _write_utterances(path: Path, aligned: Sequence[Utterance],
                      judged: Mapping[str, tuple[QualityMeasures, Verdict]]) -> None:
    from ..corpus import utterances_to_table

    table = utterances_to_table(list(aligned))
    table = table.append_column("suspect", pa.array([judged[u.utt_id][1].suspect for u in aligned], pa.bool_()))
    table = table.append_column("suspect_reason", pa.array([judged[u.utt_id][1].reason for u in aligned],
                                                           pa.string()))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


# ------------------------------------------------------------------------------------------- report
def _journal_outcome(utt_id: str, i: int, latest: Latest,
                     judged: Mapping[str, tuple[QualityMeasures, Verdict]]) -> UtteranceOutcome:
    cols = latest.cols
    info = json.loads(cols["info"][i]) if cols["info"][i] else None
    if info is not None:
        info.pop("quality", None)  # reported apart, as `quality`
    verdict: dict[str, Any] = {}
    if utt_id in judged:
        measures, v = judged[utt_id]
        verdict = {"suspect": v.suspect, "suspect_reason": v.reason, "quality": measures.to_dict()}
    if cols["status"][i] == "ok":
        return UtteranceOutcome(utt_id, "ok", n_segments=cols["n_segments"][i], phone_set=cols["phone_set"][i],
                                info=info or None, **verdict)
    return UtteranceOutcome(utt_id, cols["status"][i], reason=cols["message"][i], error=cols["error"][i],
                            path=cols["path"][i], line=cols["line"][i], hint=cols["hint"][i], info=info or None,
                            **verdict)


def outcomes(run: RunFacts, latest: Latest,
             judged: Mapping[str, tuple[QualityMeasures, Verdict]]) -> list[UtteranceOutcome]:
    """The report's lines: the journal's outcome of every utterance in input order, then the ones
    refused before aligning, then the corpus reader's rejections."""
    items = [_journal_outcome(u, latest.row[u], latest, judged) for u in run.order if u in latest.row]
    items += [UtteranceOutcome(utt_id, "failed", reason=err.message, error=type(err).__name__, path=err.path,
                               line=err.line, hint=err.hint) for utt_id, err in run.input_failures]
    items += [UtteranceOutcome(rej.get("utt_id"), "rejected", reason=rej.get("message"), error=rej.get("error"),
                               path=rej.get("path"), line=rej.get("line"), hint=rej.get("hint"))
              for rej in run.corpus_report.get("rejected", [])]
    return items


def _first_of_each_id(utts: Sequence[Utterance]) -> list[Utterance]:
    """The utterances in input order, each id once: a repeated id was refused before aligning, and
    the first utterance with it is the one aligned."""
    seen: dict[str, Utterance] = {}
    for u in utts:
        seen.setdefault(u.utt_id, u)
    return list(seen.values())


def assemble(out: Path, journal: Journal, run: RunFacts) -> AlignReport:
    """Write ``segments.parquet`` and ``utterances.parquet`` from the journal; return the report
    (its ``seconds`` left at 0 for the caller)."""
    order = pa.array(list(run.order), type=pa.string())
    latest = latest_outcomes(journal)
    first = _first_of_each_id(run.utterances)
    input_ids = {u.utt_id for u in first}
    ok_ids = {u for u, i in latest.row.items() if latest.cols["status"][i] == "ok" and u in input_ids}
    _remove_textgrids(out, latest.ever_ok - ok_ids)
    judged = verdicts(first, ok_ids, latest)
    suspect_ids = {u for u, (_, v) in judged.items() if v.suspect}
    # suspect alignments keep their TextGrids; drop_suspect leaves only their segments out
    ok_in_part: dict[int, list[str]] = {}
    for u in ok_ids - suspect_ids if run.drop_suspect else ok_ids:
        ok_in_part.setdefault(latest.part_of[latest.row[u]], []).append(u)
    seg_out = out / "segments.parquet"
    tally = write_segments(seg_out, journal, _part_ranges(journal, ok_in_part, order), ok_ids, order)
    aligned = [u for u in first if u.utt_id in ok_ids]
    _write_utterances(out / "utterances.parquet", aligned, judged)
    items = outcomes(run, latest, judged)
    errors = Counter(i.error or "CorpusError" for i in items if i.status != "ok")
    oov = Counter(str(w) for i in items if i.info for w in i.info.get("oov", ()))
    rejected = sum(1 for i in items if i.status == "rejected")
    counts = AlignCounts(
        utterances=len(run.utterances), ok=len(aligned), failed=sum(1 for i in items if i.status == "failed"),
        rejected_by_reader=rejected, resumed=run.n_resumed, suspect=len(suspect_ids),
        suspect_dropped=len(suspect_ids) if run.drop_suspect else 0, segments=tally.n_segments,
        by_class={c: tally.by_class.get(c, 0) for c in UNIT_CLASSES}, errors=dict(sorted(errors.items())))
    return AlignReport(
        out_dir=str(out), aligner=run.aligner, phone_sets=dict(journal.phone_sets), options=run.options,
        counts=counts, unknown_labels=dict(tally.unknown.most_common()),
        # out-of-vocabulary words over the whole batch (aligned utterances too: a G2P fallback or
        # MFA's own OOV handling may have aligned them), word -> number of utterances
        oov_words=dict(oov.most_common()), dropped_emotions=dict(run.corpus_report.get("dropped_emotions", {})),
        corpus={k: v for k, v in run.corpus_report.items() if k not in ("rejected", "dropped_emotions")},
        outputs=AlignOutputs(segments=str(seg_out), utterances=str(out / "utterances.parquet"),
                             textgrids=str(out / "textgrids")),
        utterances=tuple(items))
