"""The alignment run's journal: the ``parts/`` folder of an aligned-corpus directory.

A run buffers its results and commits them every ``chunk_size`` utterances as
``parts/segments-NNNNN.parquet`` followed by ``parts/status-NNNNN.parquet`` (one row per
utterance and attempt, :data:`STATUS_SCHEMA`, with the fingerprints of its inputs and of the
settings), each written atomically; the status part is the commit marker of its chunk (the
TextGrids of the chunk are on disk before it is written). ``parts/state.json`` holds the settings
the folder was made with, the corpus it holds, and the phone sets detected per language with the
utterances each was detected from. :mod:`phonalign.align.run` decides what to redo from
:meth:`Journal.latest`; :mod:`phonalign.align.assemble` builds the final tables from the parts.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DamagedFileError, LamError, OutputFolderError
from ..fingerprint import differences, digest
from ..fsutil import atomic_path, atomic_write_json, is_temp_name, make_dirs, read_json, read_parquet
from ..records import SEGMENT_SCHEMA, Alignment, Utterance
from ..segments import columns_to_table
from ..textgrid_io import alignment_to_textgrid_text, grid_limits, pack_tiers
from .textgrid_writer import TextGridWriter

__all__ = ["Committed", "Journal", "STATUS_SCHEMA", "corpus_identity"]

#: Per-utterance outcome, one row per attempt, in ``parts/status-NNNNN.parquet``.
STATUS_SCHEMA = pa.schema([
    ("utt_id", pa.string()),
    ("status", pa.string()),      # "ok" | "failed"
    ("error", pa.string()),       # exception type, null when ok
    ("message", pa.string()),
    ("path", pa.string()),
    ("line", pa.int32()),
    ("hint", pa.string()),
    ("n_segments", pa.int32()),
    ("phone_set", pa.string()),
    ("duration", pa.float64()),   # audio duration, seconds
    ("info", pa.string()),        # the backend's facts (OOV words, G2P use...) as JSON, or null
    ("input_fp", pa.string()),    # fingerprint of the utterance's inputs (phonalign.fingerprint)
    ("settings_fp", pa.string()),  # fingerprint of the run's settings
])

_PART = re.compile(r"^(segments|status)-(\d{5,})\.parquet$")


class Committed(NamedTuple):
    """An utterance's latest committed outcome, as a resumed run needs it."""

    status: str  # "ok" | "failed"
    input_fp: str | None  # fingerprint of its inputs (None in parts of older versions)
    settings_fp: str | None  # fingerprint of the run's settings


def corpus_identity(utts: Sequence[Utterance], corpus_report: dict) -> dict:
    """Which corpus a run aligns: the reader's source (resolved) and the corpus names."""
    source = corpus_report.get("source")
    if source:
        try:
            source = str(Path(source).expanduser().resolve())
        except OSError:
            source = str(source)
    return {"source": source or None, "names": sorted({u.corpus or "" for u in utts})}


def _describe_corpus(c: dict) -> str:
    names = ", ".join(map(repr, c.get("names") or [])) or "no name"
    return f"corpus {names}" + (f" from {c['source']}" if c.get("source") else "")


class Journal:
    """The ``parts/`` folder: committed chunks, the resume state, and the buffer of the next chunk.

    Opening it checks the folder's state against this run (other settings or another corpus are
    refused unless ``force``) and removes what a killed run left: temporary files, and segment
    parts whose status part was never written.
    """

    def __init__(self, out: Path, *, settings: dict, corpus: dict, force: bool) -> None:
        self.dir = make_dirs(out / "parts")
        self.state_path = self.dir / "state.json"
        self.settings_fp = digest(settings)
        self.state = self._resumed_state(out, settings=settings, corpus=corpus, force=force)
        atomic_write_json(self.state_path, self.state)
        self.committed = self._committed_parts()
        self.next_part = (max(self.committed) + 1) if self.committed else 1
        self.rows: list[dict[str, list]] = []  # segment columns, one dict per utterance
        self.status: list[tuple] = []  # STATUS_SCHEMA rows
        self.writer: TextGridWriter | None = None

    def _resumed_state(self, out: Path, *, settings: dict, corpus: dict, force: bool) -> dict[str, Any]:
        """The state of this run: the folder's (same settings and corpus), or a fresh one."""
        fresh = {"fingerprint": settings, "phone_sets": {}, "phone_set_basis": {}, "corpus": corpus}
        old = None
        if self.state_path.exists():
            try:
                old = read_json(self.state_path, what="resume state",
                                hint="rerun with --force to redo every utterance, or use a new output folder")
            except DamagedFileError:
                if not force:
                    raise
        if old is not None and old.get("fingerprint") != settings:
            if not force:
                raise OutputFolderError(
                    "this output folder holds a run made with other settings "
                    f"({differences(old.get('fingerprint'), settings)})", path=out,
                    hint="rerun with --force to realign every utterance with the new settings (force=True in "
                    "Python), or use a new output folder")
            old = None  # every utterance done with the old settings is redone, phone sets detected again
        if old is not None and old.get("corpus") not in (None, corpus):
            if not force:
                raise OutputFolderError(
                    f"this output folder holds another corpus ({_describe_corpus(old['corpus'])}; now: "
                    f"{_describe_corpus(corpus)})", path=out,
                    hint="use a new output folder for another corpus, or rerun with --force to replace "
                    "the folder's utterances by this corpus")
        state = fresh if old is None else {**fresh, **old}
        state["corpus"] = corpus
        return state

    def _committed_parts(self) -> list[int]:
        """Numbers of the committed chunks, once the leftovers of a killed run are removed: our
        temporary files and segment parts whose chunk never committed (the folder check refused
        anything else before we got here)."""
        for p in self.dir.iterdir():
            if is_temp_name(p.name) and p.is_file():
                p.unlink(missing_ok=True)
        numbers: dict[str, set[int]] = {kind: set() for kind in ("segments", "status")}
        for p in self.dir.iterdir():
            m = _PART.match(p.name)
            if m:
                numbers[m.group(1)].add(int(m.group(2)))
        for k in numbers["segments"] - numbers["status"]:
            (self.dir / f"segments-{k:05d}.parquet").unlink()
        return sorted(numbers["status"])

    def segments_part(self, k: int) -> Path:
        """Where the segments of chunk ``k`` are."""
        return self.dir / f"segments-{k:05d}.parquet"

    def read_status(self, k: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Status part ``k`` (older parts lack the fingerprint columns: they read as nulls)."""
        path = self.dir / f"status-{k:05d}.parquet"
        table = read_parquet(path, what="status part of a committed chunk", columns=None,
                             hint=f"delete {path.name} and segments-{k:05d}.parquet: the rerun redoes that chunk")
        for name in STATUS_SCHEMA.names:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, type=STATUS_SCHEMA.field(name).type))
        table = table.select(STATUS_SCHEMA.names)
        return table if columns is None else table.select(list(columns))

    @property
    def phone_sets(self) -> dict[str, str]:
        """language -> phone set detected (or given) so far."""
        return self.state["phone_sets"]

    def set_phone_set(self, language: str, phone_set: str, basis: dict[str, str]) -> None:
        """Record the phone set detected for ``language`` and the utterances (id -> input
        fingerprint) it was detected from: if one of them changes, it is detected again."""
        self.state["phone_sets"][language] = phone_set
        self.state.setdefault("phone_set_basis", {})[language] = basis
        atomic_write_json(self.state_path, self.state)

    def forget_phone_set(self, language: str) -> None:
        """Drop the phone set of ``language``: it is detected again (see :meth:`set_phone_set`)."""
        self.state["phone_sets"].pop(language, None)
        self.state.setdefault("phone_set_basis", {}).pop(language, None)
        atomic_write_json(self.state_path, self.state)

    def latest(self) -> dict[str, Committed]:
        """utt_id -> its latest committed outcome."""
        latest: dict[str, Committed] = {}
        for k in self.committed:
            t = self.read_status(k, ["utt_id", "status", "input_fp", "settings_fp"])
            latest.update(zip(t.column("utt_id").to_pylist(),
                              map(Committed, t.column("status").to_pylist(), t.column("input_fp").to_pylist(),
                                  t.column("settings_fp").to_pylist()), strict=True))
        return latest

    def record(self, utt_id: str, *, error: LamError | None = None, n_segments: int = 0,
               phone_set: str | None = None, duration: float | None = None,
               info: dict | None = None, input_fp: str | None = None) -> None:
        """Buffer the outcome of one utterance (a row of :data:`STATUS_SCHEMA`): aligned, or failed
        with ``error``; committed by the next :meth:`flush`."""
        # the backend's facts travel as JSON so that the status parts keep a flat schema
        info_json = json.dumps(info, sort_keys=True, ensure_ascii=False, default=str) if info else None
        if error is None:
            self.status.append((utt_id, "ok", None, None, None, None, None, n_segments, phone_set, duration,
                                info_json, input_fp, self.settings_fp))
        else:
            self.status.append((utt_id, "failed", type(error).__name__, error.message, error.path,
                                error.line, error.hint, n_segments, phone_set, duration, info_json, input_fp,
                                self.settings_fp))

    def add_rows(self, columns: dict[str, list]) -> None:
        """Buffer the segment columns of one aligned utterance."""
        self.rows.append(columns)

    def write_textgrid(self, path: Path, alignment: Alignment, cols: dict) -> None:
        """Write the output TextGrid of one utterance (in the writer process when there is one);
        ``cols`` are its segment columns (phone times, labels and classes)."""
        if self.writer is not None:
            xmin, xmax = grid_limits(alignment)
            w = alignment.words
            self.writer.write(path, pack_tiers(
                xmin, xmax,
                ([iv.start for iv in w], [iv.end for iv in w], [iv.label for iv in w]),
                (cols["start"], cols["end"], cols["label"]),
                cols["unit_class"]))
        else:
            text = alignment_to_textgrid_text(alignment, vowel_classes=cols["unit_class"])
            _write_atomically(path, text.encode("utf-8"))

    def pending(self) -> int:
        """Utterances buffered since the last commit."""
        return len(self.status)

    def flush(self) -> None:
        """Commit the buffered chunk: its TextGrids, the segments part, then the status part that
        marks it done."""
        if self.writer is not None:
            self.writer.sync()  # every TextGrid of the chunk is on disk before it is marked done
        if not self.status:
            return
        k = self.next_part
        chain = itertools.chain.from_iterable
        seg = columns_to_table({name: list(chain(r[name] for r in self.rows)) for name in SEGMENT_SCHEMA.names})
        with atomic_path(self.segments_part(k)) as tmp:
            pq.write_table(seg, tmp, compression="snappy")
        cols = list(zip(*self.status, strict=True))
        status = pa.table({name: pa.array(col, type=STATUS_SCHEMA.field(name).type)
                           for name, col in zip(STATUS_SCHEMA.names, cols, strict=True)}, schema=STATUS_SCHEMA)
        with atomic_path(self.dir / f"status-{k:05d}.parquet") as tmp:
            pq.write_table(status, tmp, compression="snappy")
        self.committed.append(k)
        self.next_part = k + 1
        self.rows = []
        self.status = []

    def close(self) -> None:
        """End the TextGrid writer process, if there is one (after :meth:`flush`)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _write_atomically(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)

