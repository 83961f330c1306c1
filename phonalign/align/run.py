"""The alignment batch runner: utterances in, an "aligned corpus" directory out.

:func:`align_corpus` drives any :class:`~phonalign.align.base.Aligner` and owns everything around
it, the same for every backend:

* **Checks before aligning**: each utterance id must be safe as a file name
  (:func:`phonalign.fsutil.check_utt_id`; nothing is ever written outside ``OUT``) and its audio
  a regular file, readable, non-empty and (for float formats) free of NaN and infinity
  (:func:`phonalign.audio.audio_duration` with ``check_samples``); an interval of a recording
  must lie inside it.
* **Checks after aligning**: at least one labelled phone, intervals sorted and not overlapping,
  the alignment no longer than the audio by more than 10 ms and not ending more than 0.25 s before
  it (:mod:`phonalign.segments`), the phone set detected per language from the labels unless given
  (:func:`phonalign.phonesets.detect_phone_set`).
* **One writer**: ``OUT`` is locked for the run and a folder holding files the toolkit did not
  write is refused (:mod:`phonalign.outdir`).
* **Quality** (:mod:`phonalign.align.quality`): measures per aligned utterance (from the audio for
  backends that align it, the word tier against the transcript for imports) and, once every
  utterance is in, a ``suspect`` flag with its reason in ``utterances.parquet`` and the report;
  ``drop_suspect=True`` leaves suspect utterances out of ``segments.parquet``.
* **Long recordings**: an utterance with ``start``/``end`` is an interval of its recording. For
  backends that align audio it is cut (frame-exactly, only its samples read) into ``OUT/work/
  intervals/``, aligned as a recording of its own and moved back onto the recording's timeline
  (the cut is deleted); imported TextGrids are taken as they are, on the recording's timeline.
  Backends that align audio get at most :data:`MAX_UTTERANCE_SECONDS` per utterance: longer
  input fails with a hint naming the interval route.
* **Outputs** (``OUT`` below)::

      OUT/textgrids/<utt_id>.TextGrid   words, phones and vowel_class tiers (one per utterance)
      OUT/segments.parquet              SEGMENT_SCHEMA, the utterances aligned, in input order
      OUT/utterances.parquet            ALIGNED_UTTERANCE_SCHEMA, the utterances aligned (+ suspect)
      OUT/report.json                   per-utterance status and reason, counts, unknown labels,
                                        dropped emotions, phone sets
      OUT/config.yaml, OUT/versions.json
      OUT/parts/                        the run's journal (see below)
      OUT/work/                         the backend's scratch space

* **Streaming and resuming** (corpora of 10^5-10^6 utterances): results are buffered and written
  every ``chunk_size`` utterances as ``parts/segments-NNNNN.parquet`` followed by
  ``parts/status-NNNNN.parquet`` (per-utterance outcome with the fingerprints of its inputs and
  of the settings, :func:`utterance_fingerprint`), each atomically. A status part is the commit
  marker of its chunk: on a rerun, utterances whose latest outcome is ``ok`` with the same
  fingerprints are skipped, changed and failed ones are redone, ones no longer in the input are
  dropped (and their TextGrids removed), and a segments part without its status part (a run killed
  between the two writes) is discarded. Other settings or another corpus are refused unless
  ``force``. The final tables are assembled from each utterance's latest outcome, so an interrupted
  or edited run followed by a rerun gives the same tables as one fresh run.
* **Failures** are recorded per utterance and the batch goes on; ``strict=True`` stops at the first
  (after saving what is done) and raises its error.
* **Engines**: the backend's results come from the backend itself (``engine="local"``, with
  ``jobs`` processes) or from Ray tasks running it on a cluster (``engine="ray"``,
  :mod:`phonalign.align.ray_engine`), handed back in input order by chunk. Everything above is
  done here, by the same code for both, so outputs and resume are the same; the engine is not
  part of the run's fingerprint, and a run started with one engine can be finished with the other.
* **A writer process** formats and writes the TextGrids of runs of :data:`WRITER_PROCESS_FROM`
  utterances or more (tiers handed over as packed bytes through a pipe, never pickle), so that
  creating thousands of files overlaps with reading and classifying; a chunk is committed only
  once the writer confirms its files are on disk.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..audio import audio_duration
from ..engine import EngineConfig, EngineError, WorkProgress, resolve_engine
from ..errors import (
    AlignerError,
    DamagedFileError,
    LamError,
    OutputFolderError,
    PhonalignError,
    PhoneSetError,
    TextGridError,
)
from ..fingerprint import differences, digest, file_signature
from ..fsutil import (
    atomic_path,
    atomic_write_json,
    check_utt_id,
    is_safe_name,
    is_temp_name,
    make_dirs,
    os_error,
    read_json,
    read_parquet,
)
from ..outdir import FolderRules, output_folder
from ..progress import Progress, progress_bar
from ..records import SEGMENT_SCHEMA, UNIT_CLASSES, Alignment, Utterance
from ..segments import check_against_audio, columns_to_table, segment_columns
from ..textgrid_io import alignment_to_textgrid_text, grid_limits, pack_tiers
from .base import Aligner, AlignResult

__all__ = ["align_corpus", "STATUS_SCHEMA", "DETECT_UTTERANCES", "ALIGN_FOLDER", "utterance_fingerprint"]

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

#: From this many utterances on, TextGrids are written by a child process (see _FileWriter).
WRITER_PROCESS_FROM = 200

#: Number of aligned utterances of a language pooled to detect its phone set.
DETECT_UTTERANCES = 20

_PART = re.compile(r"^(segments|status)-(\d{5,})\.parquet$")

#: What an aligned-corpus folder may hold (see :mod:`phonalign.outdir`): earlier versions' output
#: is recognised by its resume state; ``parts/`` and ``textgrids/`` are cleaned by the runner, so
#: a file there that it did not write stops the run.
ALIGN_FOLDER = FolderRules(
    legacy=("parts/state.json", "utterances.parquet"),
    managed={"parts": r"^((segments|status)-\d{5,}\.parquet|state\.json)$",
             "textgrids": r"^[A-Za-z0-9_.\-+=@,]+\.TextGrid$"},
)


def utterance_fingerprint(utt: Utterance, aligner: Aligner) -> str:
    """What an utterance's alignment is made from: its audio file (size, mtime), transcript,
    language, the stretch of the recording for an interval, and what the backend reads for it (e.g.
    the TextGrid's content)."""
    parts = [file_signature(utt.audio_path), utt.text, utt.language, aligner.input_fingerprint(utt)]
    if utt.is_interval:  # an interval of a recording: which stretch of it
        parts.append(f"{utt.start!r}-{utt.end!r}")
    return digest(parts)


def _corpus_identity(utts: Sequence[Utterance], corpus_report: dict) -> dict:
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


class _Journal:
    """The ``parts/`` folder: committed chunks, the resume state, and the buffer of the next chunk.

    ``parts/state.json`` holds the settings the folder was made with, the corpus it holds, the
    phone sets detected per language and the utterances each was detected from.
    """

    def __init__(self, out: Path, *, settings: dict, corpus: dict, force: bool) -> None:
        self.dir = make_dirs(out / "parts")
        self.state_path = self.dir / "state.json"
        self.settings_fp = digest(settings)
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
            old = {**old, "corpus": corpus}
        self.state = fresh if old is None else {**fresh, **old}
        self.state["corpus"] = corpus
        atomic_write_json(self.state_path, self.state)
        # leftovers of a killed run: our temporary files and segment parts whose chunk never
        # committed (the folder check refused anything else before we got here)
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
        self.committed = sorted(numbers["status"])
        self.next_part = (max(self.committed) + 1) if self.committed else 1
        self.rows: list[dict[str, list]] = []  # segment columns, one dict per utterance
        self.status: list[tuple] = []  # STATUS_SCHEMA rows
        self.writer: _FileWriter | None = None

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
        return self.state["phone_sets"]

    def set_phone_set(self, language: str, phone_set: str, basis: dict[str, str]) -> None:
        """Record the phone set detected for ``language`` and the utterances (id -> input
        fingerprint) it was detected from: if one of them changes, it is detected again."""
        self.state["phone_sets"][language] = phone_set
        self.state.setdefault("phone_set_basis", {})[language] = basis
        atomic_write_json(self.state_path, self.state)

    def forget_phone_set(self, language: str) -> None:
        self.state["phone_sets"].pop(language, None)
        self.state.setdefault("phone_set_basis", {}).pop(language, None)
        atomic_write_json(self.state_path, self.state)

    def latest(self) -> dict[str, tuple[str, str | None, str | None]]:
        """utt_id -> (status, input fingerprint, settings fingerprint) of its latest committed outcome."""
        latest: dict[str, tuple[str, str | None, str | None]] = {}
        for k in self.committed:
            t = self.read_status(k, ["utt_id", "status", "input_fp", "settings_fp"])
            latest.update(zip(t.column("utt_id").to_pylist(),
                              zip(t.column("status").to_pylist(), t.column("input_fp").to_pylist(),
                                  t.column("settings_fp").to_pylist(), strict=True), strict=True))
        return latest

    def record(self, utt_id: str, *, error: LamError | None = None, n_segments: int = 0,
               phone_set: str | None = None, duration: float | None = None,
               info: dict | None = None, input_fp: str | None = None) -> None:
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
        with atomic_path(self.dir / f"segments-{k:05d}.parquet") as tmp:
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
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _write_atomically(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# The writer process: reads frames <II path-length payload-length><path><payload> from stdin, the
# payload tiers packed by phonalign.textgrid_io.pack_tiers; formats it as a TextGrid
# and writes it atomically (phonalign.fsutil.atomic_path). A frame with both lengths 0 asks it to
# answer "ok" (or the first error) on stdout once everything before it is written. It ignores
# Ctrl-C so that an interrupted run can still commit the chunk it has finished, and stops at the
# end of its input (also when the parent is killed). Plain bytes through a pipe: no pickle.
_WRITER_CODE = '''
import os, signal, struct, sys
from phonalign.fsutil import atomic_path
from phonalign.textgrid_io import textgrid_text_from_packed
signal.signal(signal.SIGINT, signal.SIG_IGN)
rd, out = sys.stdin.buffer, sys.stdout.buffer
error = None
while True:
    head = rd.read(8)
    if len(head) < 8:
        break
    n_path, n_data = struct.unpack("<II", head)
    if n_path == 0 and n_data == 0:
        out.write((("err " + error) if error else "ok").encode("utf-8", "replace") + b"\\n")
        out.flush()
        error = None
        continue
    path = os.fsdecode(rd.read(n_path))
    data = rd.read(n_data)
    if len(data) < n_data:
        break
    try:
        text = textgrid_text_from_packed(data)
        with atomic_path(path) as tmp:
            tmp.write_bytes(text.encode("utf-8"))
    except (OSError, ValueError) as err:
        error = error or f"{path}: {err}"
'''


class _FileWriter:
    """Formats and writes TextGrids in a child process, so that this work (and creating the files:
    kernel time, slow on some file systems) overlaps with reading and classifying the next
    utterances in this one."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        import phonalign

        env = dict(os.environ)
        root = str(Path(phonalign.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # unbuffered: every file goes into the pipe at once, so the child starts on it at once
        self.proc = subprocess.Popen([sys.executable, "-c", _WRITER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, bufsize=0)
        if self.proc.stdin is None or self.proc.stdout is None:  # both were asked for as pipes
            raise AlignerError("the TextGrid writer process has no pipes")
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        try:  # a larger pipe lets this process run ahead of the writer by ~300 TextGrids (Linux)
            import fcntl

            fcntl.fcntl(self.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass

    def write(self, path: Path, data: bytes) -> None:
        import os
        import struct

        p = os.fsencode(path)
        try:
            self._send(struct.pack("<II", len(p), len(data)) + p + data)
        except BrokenPipeError:
            raise AlignerError("the TextGrid writer process stopped", path=path) from None

    def _send(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:  # an unbuffered pipe may take part of a frame (e.g. after a signal)
            view = view[self.stdin.write(view) or 0:]

    def sync(self) -> None:
        try:
            self._send(b"\0" * 8)
            answer = self.stdout.readline().decode("utf-8", "replace").strip()
        except BrokenPipeError:
            answer = ""
        if answer != "ok":
            raise AlignerError(f"writing TextGrids failed: {answer[4:] or 'the writer process stopped'}",
                               hint="check free disk space and permissions of the output folder")

    def close(self) -> None:
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)
        self.stdout.close()


def _progress(total: int, desc: str, enabled: bool) -> Progress:
    return progress_bar(total, desc=desc, item="utt", progress=enabled)


def align_corpus(
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    aligner: Aligner,
    *,
    strict: bool = False,
    phone_set: str | None = None,
    options=None,
    jobs: int = 1,
    progress: bool = True,
    chunk_size: int = 2000,
    corpus_report: dict | None = None,
    force: bool = False,
    drop_suspect: bool = False,
    engine: str | EngineConfig | None = None,
) -> dict:
    """Align ``utterances`` with ``aligner`` and write the aligned-corpus directory ``out_dir``.

    Parameters
    ----------
    utterances : sequence of Utterance
        The corpus (e.g. from :func:`phonalign.corpus.read_corpus`; its ``report`` attribute, if
        any, is merged into ``report.json``).
    out_dir : str or Path
        Output folder; created if needed. A folder from an earlier run with the same settings is
        resumed: utterances done with unchanged inputs (:func:`utterance_fingerprint`) are kept,
        changed ones are redone, and ones no longer in ``utterances`` are dropped. The folder is
        locked for the run (:func:`phonalign.outdir.output_folder`).
    aligner : Aligner
        The backend (:func:`phonalign.align.get_aligner`).
    strict : bool
        Stop at the first failing utterance and raise its error (after saving what is done).
    phone_set : str, optional
        Phone set of the labels; default: the backend's, else detected per language from the
        first :data:`DETECT_UTTERANCES` aligned utterances.
    options : phonalign.phonesets.ClassOptions, optional
        Named options of the vowel-class mapping (default ``ClassOptions()``).
    jobs : int
        Processes the backend may use.
    progress : bool
        Show progress (:mod:`phonalign.progress`: a bar on a terminal, plain log lines otherwise).
    chunk_size : int
        Utterances per committed chunk (``parts/``): what an interruption can lose at most.
    corpus_report : dict, optional
        Reader report to include (defaults to ``utterances.report``).
    force : bool
        Accept a folder made with other settings or holding another corpus: every utterance made
        with the old settings is redone, and the other corpus' utterances are dropped.
    drop_suspect : bool
        Leave utterances flagged ``suspect`` (:mod:`phonalign.align.quality`) out of
        ``segments.parquet``; they stay in ``utterances.parquet`` and the report with their reason.
    engine : ``"local"``, ``"ray"`` or :class:`~phonalign.engine.EngineConfig`, optional
        Where the backend runs (default local; see :mod:`phonalign.engine`). With Ray, ``jobs``
        must be 1: the engine's ``workers`` say how many chunks run at once.

    Returns
    -------
    dict
        The report also written to ``OUT/report.json``.

    Raises
    ------
    LamError
        With ``strict=True``, the first utterance's error; always, errors that concern the whole
        run (backend not available, an output folder made with other settings or holding another
        corpus or files the toolkit did not write, another process writing into it, a full disk).

    Examples
    --------
    Import the reference TextGrids of two demo utterances:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from phonalign.align import get_aligner
    >>> from phonalign.align.run import align_corpus
    >>> from phonalign.corpus import demo_corpus_dir, read_corpus
    >>> utts = read_corpus(None, preset="lam-demo")[:2]
    >>> out = Path(tempfile.mkdtemp()) / "aligned"
    >>> aligner = get_aligner("textgrid", textgrids=str(demo_corpus_dir() / "textgrids"))
    >>> _ = align_corpus(utts, out, aligner, progress=False)
    >>> sorted(p.name for p in (out / "textgrids").iterdir()) == sorted(f"{u.utt_id}.TextGrid" for u in utts)
    True
    >>> (out / "segments.parquet").is_file()
    True
    """
    from ..phonesets import ClassOptions

    options = options if options is not None else ClassOptions()
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    engine = resolve_engine(engine)
    if engine.name == "ray":
        if jobs != 1:
            raise EngineError("-j/--jobs is for --engine local", hint="with --engine ray, --workers says how many "
                              "chunks run at once (default: the cluster's CPUs)")
        from ..ray_cluster import import_ray

        import_ray()  # a clear error now, before any work, when Ray is not installed
    aligner.check_available()
    if corpus_report is None:
        corpus_report = getattr(utterances, "report", None) or {}
    with output_folder(out_dir, step="align", rules=ALIGN_FOLDER):
        return _align_locked(utterances, Path(out_dir), aligner, strict=strict, phone_set=phone_set,
                             options=options, jobs=jobs, progress=progress, chunk_size=chunk_size,
                             corpus_report=corpus_report, force=force, drop_suspect=drop_suspect, engine=engine)


def _align_locked(utterances: Sequence[Utterance], out: Path, aligner: Aligner, *, strict: bool,
                  phone_set: str | None, options, jobs: int, progress: bool, chunk_size: int,
                  corpus_report: dict, force: bool, drop_suspect: bool, engine: EngineConfig) -> dict:
    """:func:`align_corpus` once the output folder is held (whatever the engine: workers only compute)."""
    from ..audio import load_audio
    from ..phonesets import detect_phone_set
    from ..provenance import write_run_info
    from .quality import measure, speech_intervals, transcript_mismatch

    t0 = time.perf_counter()
    tg_dir = make_dirs(out / "textgrids")
    workdir = make_dirs(out / "work")  # the backend's scratch space (MFA stages its corpus there)
    utts: list[Utterance] = list(utterances)
    settings = {"aligner": aligner.config(), "phone_set": phone_set, "options": options.to_dict()}
    journal = _Journal(out, settings=settings, corpus=_corpus_identity(utts, corpus_report), force=force)
    if journal.committed:
        # a resumed run: temporary files of TextGrids being written when the last run was killed
        with os.scandir(tg_dir) as entries:
            for entry in entries:
                if is_temp_name(entry.name) and entry.is_file():
                    os.unlink(entry.path)
    fixed_phone_set: str | None = phone_set if phone_set is not None else aligner.phone_set
    latest = journal.latest()

    # ---- pass 1: ids, fingerprints and audio, before any aligner work ---------------------------
    seen: set[str] = set()
    order: list[str] = []  # safe, unique ids in input order (the final tables' order)
    todo: list[Utterance] = []
    durations: dict[str, float] = {}
    fps: dict[str, str] = {}
    n_resumed = 0
    input_failures: list[tuple[str, LamError]] = []

    def fail(utt_id: str, err: LamError, duration: float | None = None, info: dict | None = None) -> None:
        journal.record(utt_id, error=err, duration=duration, info=info, input_fp=fps.get(utt_id))
        if strict:
            raise err
        if journal.pending() >= chunk_size:
            journal.flush()

    def unchanged(utt_id: str) -> bool:
        """Done before from the same inputs with the same settings (ok or a lasting failure)."""
        rec = latest.get(utt_id)
        return rec is not None and rec[1] == fps[utt_id] and rec[2] == journal.settings_fp

    results: Iterator[AlignResult] | None = None
    try:
        safe: list[Utterance] = []
        for utt in utts:
            try:
                check_utt_id(utt.utt_id)
                if utt.utt_id in seen:
                    raise PhonalignError("the utterance id appears twice in the corpus", utt_id=utt.utt_id,
                                         hint="utterance ids must be unique; rename one of them")
            except LamError as err:
                # a property of the input, checked again on every run: reported, never journalled,
                # never used as a file name
                input_failures.append((utt.utt_id, err))
                if strict:
                    raise
                continue
            seen.add(utt.utt_id)
            order.append(utt.utt_id)
            safe.append(utt)
            fps[utt.utt_id] = utterance_fingerprint(utt, aligner)
        redo_languages: set[str] = (_stale_phone_sets(journal, safe, latest, fps, unchanged)
                                    if fixed_phone_set is None else set())
        for language in redo_languages:
            journal.forget_phone_set(language)
        keep = [u for u in safe if u.language not in redo_languages and unchanged(u.utt_id)
                and latest[u.utt_id][0] == "ok"]
        kept = {u.utt_id for u in keep}
        n_resumed = len(kept)
        if len(safe) - n_resumed >= WRITER_PROCESS_FROM:
            # started first, so that its start-up (imports) overlaps with the audio checks
            journal.writer = _FileWriter()
        bar = _progress(len(safe), "checking audio", progress)
        for utt in safe:
            bar.update(1)
            if utt.utt_id in kept:
                continue
            try:
                durations[utt.utt_id] = _usable_duration(utt, audio_duration(utt.audio_path, check_samples=True),
                                                         aligner)
            except LamError as err:
                err.utt_id = utt.utt_id
                fail(utt.utt_id, err)
                continue
            todo.append(utt)
        bar.close()

        # ---- pass 2: align, check, classify, write ----------------------------------------------
        by_id = {u.utt_id: u for u in todo}
        waiting: dict[str, list[tuple[Utterance, Alignment, dict]]] = {}  # language -> results
        finished: set[str] = set()

        def quality_of(utt: Utterance, alignment: Alignment, unit_classes, info: dict):
            """Quality measures of one aligned utterance (:mod:`phonalign.align.quality`): detected
            speech against the alignment for backends that align audio, the word tier against the
            transcript for imports."""
            speech = None
            if aligner.aligns_audio:
                speech = speech_intervals(load_audio(utt.audio_path, sr=16000, start=utt.start, end=utt.end))
            mismatch = None if aligner.aligns_audio else transcript_mismatch(utt.text, alignment)
            return measure(alignment, unit_classes, min_duration=aligner.min_phone_duration, speech=speech,
                           offset=utt.start or 0.0, acoustic_score=info.get("acoustic_score"), transcript=mismatch)

        def finish(utt: Utterance, alignment: Alignment, info: dict, ps: str) -> None:
            duration = durations[utt.utt_id]
            try:
                if not any(p.label.strip() for p in alignment.phones):
                    raise TextGridError("the alignment has no phones (the phone tier has no labelled interval)",
                                        path=alignment.source, utt_id=utt.utt_id,
                                        hint="check the phone tier of the TextGrid (or the transcript), or "
                                        "name the phone tier with --phones-tier")
                # an interval's alignment lies on the recording's timeline and must end with the interval
                check_against_audio(alignment, utt.end if utt.end is not None else duration, utt_id=utt.utt_id)
                cols = segment_columns(utt.utt_id, alignment, phone_set=ps, options=options,
                                       context=info.get("pinyin"))
                grid_limits(alignment)  # what would stop the TextGrid writer: check it here
                info = {**info, "quality": quality_of(utt, alignment, cols["unit_class"], info).to_dict()}
            except LamError as err:
                err.utt_id = utt.utt_id
                fail(utt.utt_id, err, duration, info)
                return
            except ValueError as err:  # an alignment that cannot be written (e.g. non-finite times)
                fail(utt.utt_id, PhonalignError(str(err), path=alignment.source, utt_id=utt.utt_id),
                     duration, info)
                return
            journal.write_textgrid(tg_dir / f"{utt.utt_id}.TextGrid", alignment, cols)
            journal.add_rows(cols)
            journal.record(utt.utt_id, n_segments=len(cols["index"]), phone_set=ps, duration=duration,
                           info=info, input_fp=fps[utt.utt_id])
            if journal.pending() >= chunk_size:
                journal.flush()

        def release(language: str) -> None:
            """Detect the phone set of ``language`` from the waiting results, then finish them."""
            batch = waiting.pop(language, [])
            if not batch:
                return
            labels = [p.label for _, a, _ in batch for p in a.phones]
            try:
                ps = detect_phone_set(labels)
            except PhoneSetError as err:
                for utt, alignment, _ in batch:
                    fail(utt.utt_id, PhoneSetError(err.message, path=alignment.source, utt_id=utt.utt_id,
                                                   hint=err.hint))
                return
            journal.set_phone_set(language, ps, {u.utt_id: fps[u.utt_id] for u, _, _ in batch})
            for utt, alignment, info in batch:
                finish(utt, alignment, info, ps)

        work = WorkProgress(len(todo), sum(durations[u.utt_id] for u in todo), desc="aligning", progress=progress)
        # intervals of long recordings are cut here (OUT/work/intervals; Ray workers read them there)
        staged, shifts = _stage_intervals(todo, workdir, aligner)
        if engine.name == "ray" and staged:
            from .ray_engine import align_results

            results = align_results(aligner, staged, durations, engine=engine, on_done=work.update)
        else:
            results = aligner.align(staged, workdir, jobs=jobs) if staged else iter(())
        for result in results:
            if engine.name == "local":
                work.update(1, durations.get(result.utt_id, 0.0))
            found = by_id.get(result.utt_id)
            if found is None or result.utt_id in finished:
                raise AlignerError(f"the {aligner.name!r} backend returned an unexpected or repeated "
                                   f"utterance {result.utt_id!r}", hint="this is a bug in the backend")
            utt, alignment = found, result.alignment
            finished.add(result.utt_id)
            if not result.ok or alignment is None:
                error = result.error or AlignerError("the aligner returned no alignment")
                error.utt_id = error.utt_id or result.utt_id
                fail(result.utt_id, error, durations.get(result.utt_id), result.info)
                continue
            alignment = result.alignment
            assert alignment is not None  # result.ok: an alignment and no error
            if utt.utt_id in shifts:  # an interval aligned from its cut: back onto the recording's timeline
                alignment = _shifted(alignment, shifts[utt.utt_id])
                (workdir / "intervals" / f"{utt.utt_id}.wav").unlink(missing_ok=True)
            ps = fixed_phone_set or journal.phone_sets.get(utt.language)
            if ps is None:
                waiting.setdefault(utt.language, []).append((utt, alignment, result.info))
                if len(waiting[utt.language]) >= DETECT_UTTERANCES:
                    release(utt.language)
                continue
            finish(utt, alignment, result.info, ps)
        for language in list(waiting):
            release(language)
        work.close()
        for utt in todo:
            if utt.utt_id not in finished:
                fail(utt.utt_id, AlignerError(f"the {aligner.name!r} backend returned no result",
                                              utt_id=utt.utt_id))
    finally:
        # keep what is done, whatever stopped us (strict failure, Ctrl-C, a full disk, a bug)
        try:
            journal.flush()
        finally:
            journal.close()
            close = getattr(results, "close", None)
            if close is not None:  # a generator: the backend's workers or Ray tasks end now, not at exit
                close()

    # ---- assemble ---------------------------------------------------------------------------
    report = _assemble(out, journal, utts, order, aligner=aligner, options=options, strict=strict,
                       jobs=jobs, corpus_report=corpus_report, n_resumed=n_resumed,
                       input_failures=input_failures, drop_suspect=drop_suspect)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out / "report.json", report)
    write_run_info(out, step="align", config={
        "aligner": aligner.config(),
        "phone_set": phone_set,
        "detected_phone_sets": dict(journal.phone_sets),
        "options": options.to_dict(),
        "strict": strict,
        "jobs": jobs,
        "engine": engine,
        "chunk_size": chunk_size,
        "drop_suspect": drop_suspect,
        "n_utterances": len(utts),
    })
    return report


def _stale_phone_sets(journal: _Journal, utts: Sequence[Utterance], latest: dict, fps: dict[str, str],
                      unchanged: Callable[[str], bool]) -> set[str]:
    """Languages whose detected phone set a fresh run might detect from other utterances.

    A phone set is detected from the first :data:`DETECT_UTTERANCES` utterances of a language
    aligned in input order. It must be detected again (and every utterance of the language
    redone) when one of those utterances changed or left the corpus, when it came from fewer
    utterances than that and there is a new or changed one, or when a new or changed utterance
    now comes before the last of them.
    """
    stale: set[str] = set()
    basis_all = journal.state.get("phone_set_basis") or {}
    pos = {u.utt_id: i for i, u in enumerate(utts)}
    new_by_language: dict[str, list[int]] = {}
    for u in utts:
        if not unchanged(u.utt_id):
            new_by_language.setdefault(u.language, []).append(pos[u.utt_id])
    for language in list(journal.phone_sets):
        basis = basis_all.get(language)
        if not basis:
            stale.add(language)  # detected by an earlier version: where from is unknown
            continue
        if any(u not in pos or fps[u] != fp for u, fp in basis.items()):
            stale.add(language)
            continue
        # utterances of the basis itself may be waiting to be redone (a run killed before it
        # committed them): their inputs are the ones the phone set was detected from
        basis_pos = {pos[u] for u in basis}
        fresh = [p for p in new_by_language.get(language, []) if p not in basis_pos]
        if fresh and (len(basis) < DETECT_UTTERANCES or min(fresh) < max(basis_pos)):
            stale.add(language)
    return stale


#: Longest stretch of audio aligned as one utterance by backends that align audio, seconds: beyond
#: it, decoder memory grows faster than the audio (pocketsphinx: about 3.5x per doubling); long
#: recordings are aligned interval by interval (``read_corpus(..., intervals=TIER)``).
MAX_UTTERANCE_SECONDS = 60.0


def _usable_duration(utt: Utterance, duration: float, aligner: Aligner) -> float:
    """The duration to align for ``utt`` (its interval's for an interval of a recording), checked:
    intervals inside the recording, at most :data:`MAX_UTTERANCE_SECONDS` for aligners of audio."""
    if utt.is_interval:
        start = 0.0 if utt.start is None else float(utt.start)
        end = duration if utt.end is None else float(utt.end)
        if not (0.0 <= start < end <= duration + 0.010):
            raise AlignerError(f"the interval {start:.3f}-{end:.3f} s is not inside the recording (0-{duration:.3f} s)",
                               path=utt.audio_path, utt_id=utt.utt_id,
                               hint="check the interval tier's times against the recording")
        duration = end - start
    if aligner.aligns_audio and duration > MAX_UTTERANCE_SECONDS:
        raise AlignerError(
            f"{duration:.1f} s of audio is too long to align as one utterance (at most "
            f"{MAX_UTTERANCE_SECONDS:.0f} s: decoder memory grows faster than the audio)", path=utt.audio_path,
            utt_id=utt.utt_id,
            hint="give the recording's transcribed intervals: a TextGrid tier beside it, read with "
                 "`lam align --intervals TIER` (read_corpus(..., intervals=TIER)), or start/end columns in a "
                 "manifest; each interval is aligned as an utterance on the recording's timeline")
    return duration


def _stage_intervals(todo: list[Utterance], workdir: Path, aligner: Aligner) -> tuple[list[Utterance], dict]:
    """For backends that align audio: each interval of a longer recording cut into its own WAV (read
    frame-exactly, never the whole recording) and handed over as an utterance of its own; returns the
    utterances for the backend and ``utt_id -> start`` of the cut ones."""
    import dataclasses

    import soundfile as sf

    if not aligner.aligns_audio or not any(u.is_interval for u in todo):
        return todo, {}
    folder = workdir / "intervals"
    folder.mkdir(parents=True, exist_ok=True)
    out, shifts = [], {}
    for u in todo:
        if not u.is_interval:
            out.append(u)
            continue
        from ..audio import load_audio

        wave = load_audio(u.audio_path, sr=16000, start=u.start, end=u.end)
        path = folder / f"{u.utt_id}.wav"
        sf.write(str(path), wave, 16000, subtype="FLOAT")
        shifts[u.utt_id] = float(u.start or 0.0)
        out.append(dataclasses.replace(u, audio_path=str(path), start=None, end=None))
    return out, shifts


def _shifted(alignment: Alignment, offset: float) -> Alignment:
    """``alignment`` of a cut moved by ``offset`` seconds onto its recording's timeline."""
    from ..records import Interval

    move = lambda ivs: tuple(Interval(i.start + offset, i.end + offset, i.label) for i in ivs)  # noqa: E731
    return Alignment(words=move(alignment.words), phones=move(alignment.phones), xmin=alignment.xmin + offset,
                     xmax=alignment.xmax + offset, source=alignment.source, extra=alignment.extra)


def _verdicts(utts: list[Utterance], ok_ids: set[str], latest: dict[str, int], cols: dict) -> dict:
    """utt_id -> (QualityMeasures, Verdict) of every aligned utterance; the speaking-rate rule
    compares each with the median of its language (:mod:`phonalign.align.quality`)."""
    from .quality import QualityMeasures, judge, reference

    language = {u.utt_id: u.language for u in utts}
    measures: dict[str, QualityMeasures] = {}
    for u in ok_ids:
        raw = cols["info"][latest[u]]
        q = json.loads(raw).get("quality") if raw else None
        measures[u] = QualityMeasures.from_dict(q) if q else QualityMeasures(n_phones=0)
    by_lang: dict[str, list[QualityMeasures]] = {}
    for u, m in measures.items():
        by_lang.setdefault(language.get(u, ""), []).append(m)
    refs = {lang: reference(ms) for lang, ms in by_lang.items()}
    return {u: (m, judge(m, refs[language.get(u, "")])) for u, m in measures.items()}


def _positions(ids: pa.ChunkedArray | pa.Array, order: pa.Array) -> pa.Array:
    return pc.index_in(ids, value_set=order)


def _assemble(out: Path, journal: _Journal, utts: list[Utterance], order: list[str], *,
              aligner: Aligner, options, strict: bool, jobs: int, corpus_report: dict,
              n_resumed: int, input_failures: list[tuple[str, LamError]], drop_suspect: bool = False) -> dict:
    """Combine the committed parts into ``segments.parquet``, ``utterances.parquet`` and the report."""
    from ..corpus import utterances_to_table

    order_arr = pa.array(order, type=pa.string())
    # latest outcome of each utterance (a retried failure may have succeeded later, a changed
    # utterance been redone), and the part that holds it
    status_parts = []
    for k in journal.committed:
        part = journal.read_status(k)
        status_parts.append(part.append_column("_part", pa.array(np.full(part.num_rows, k, np.int64))))
    status = (pa.concat_tables(status_parts) if status_parts
              else STATUS_SCHEMA.empty_table().append_column("_part", pa.array([], pa.int64())))
    ever_ok = set(pc.unique(status.filter(pc.equal(status.column("status"), "ok")).column("utt_id")).to_pylist())
    # keep each utterance's last row, vectorised (10^6 rows as Python dicts would take gigabytes)
    if status.num_rows:
        status = status.append_column("_row", pa.array(np.arange(status.num_rows)))
        last = status.group_by("utt_id").aggregate([("_row", "max")]).column("_row_max").to_numpy()
        # the rows themselves, in commit order (sort_indices(last) would be positions in `last`)
        status = status.take(pa.array(np.sort(last))).drop_columns(["_row"])
    cols = {name: status.column(name).to_pylist() for name in STATUS_SCHEMA.names}
    part_of = status.column("_part").to_pylist()
    latest: dict[str, int] = {u: i for i, u in enumerate(cols["utt_id"])}
    input_ids = {u.utt_id for u in utts}
    ok_ids = {u for u, i in latest.items() if cols["status"][i] == "ok" and u in input_ids}
    # TextGrids of utterances that are no longer aligned (removed from the corpus, or failing now):
    # written by this folder's runs (their ids come from its journal), so they are ours to remove
    for utt_id in sorted(ever_ok - ok_ids):
        if is_safe_name(utt_id):
            try:
                (out / "textgrids" / f"{utt_id}.TextGrid").unlink(missing_ok=True)
            except OSError as err:
                raise os_error(err, path=out / "textgrids" / f"{utt_id}.TextGrid", action="cannot remove") from None
    verdicts = _verdicts(utts, ok_ids, latest, cols)
    suspect_ids = {u for u, (_, v) in verdicts.items() if v.suspect}
    # suspect alignments keep their TextGrids; --drop-suspect leaves only their segments out
    seg_ids = ok_ids - suspect_ids if drop_suspect else ok_ids
    ok_in_part: dict[int, list[str]] = {}
    for u in seg_ids:
        ok_in_part.setdefault(part_of[latest[u]], []).append(u)

    # segments: stream the parts in input order when their ranges do not interleave
    ranges = []
    for k in journal.committed:
        p = journal.dir / f"segments-{k:05d}.parquet"
        ids = read_parquet(p, what="segments part of a committed chunk", columns=["utt_id"],
                           hint=f"delete {p.name} and status-{k:05d}.parquet: the rerun redoes that chunk")
        ids = ids.column("utt_id")
        mine = pa.array(sorted(ok_in_part.get(k, [])), type=pa.string())
        pos = _positions(ids.filter(pc.is_in(ids, value_set=mine)), order_arr)
        if len(pos) and pos.null_count < len(pos):
            ranges.append((pc.min(pos).as_py(), pc.max(pos).as_py(), p, mine))
    ranges.sort(key=lambda r: r[0])
    monotonic = all(a[1] < b[0] for a, b in itertools.pairwise(ranges))

    def prepared(table: pa.Table, mine: pa.Array) -> tuple[pa.Table, bool]:
        """The part's rows of utterances whose latest outcome (ok) it holds, in input order; and
        whether that changed it."""
        changed = False
        keep = pc.is_in(table.column("utt_id"), value_set=mine)
        if not pc.all(keep).as_py():
            table = table.filter(keep)
            changed = True
        pos = _positions(table.column("utt_id"), order_arr).to_numpy(zero_copy_only=False)
        idx = table.column("index").to_numpy()
        dp, di = np.diff(pos), np.diff(idx)
        if not np.all((dp > 0) | ((dp == 0) & (di > 0))):
            table = table.append_column("_pos", pa.array(pos))
            table = table.sort_by([("_pos", "ascending"), ("index", "ascending")]).drop_columns(["_pos"])
            changed = True
        return table, changed

    unknown: Counter[str] = Counter()
    by_class: Counter[str] = Counter()
    n_segments = 0

    def tally(table: pa.Table) -> None:
        nonlocal n_segments
        n_segments += table.num_rows
        vc = pc.value_counts(table.column("unit_class"))
        for item in vc.to_pylist():
            by_class[item["values"]] += item["counts"]
        unk = table.filter(pc.equal(table.column("unit_class"), "unknown")).column("label")
        for item in pc.value_counts(unk).to_pylist():
            unknown[item["values"]] += item["counts"]

    seg_out = out / "segments.parquet"
    linked = False
    if monotonic and len(ranges) == 1:
        # the columns that decide (order, membership) and that are counted: not the whole part
        table, changed = prepared(pq.read_table(ranges[0][2], columns=["utt_id", "index", "unit_class", "label"]),
                                  ranges[0][3])
        if not changed:
            # one part, already the final table (the usual case up to chunk_size utterances):
            # link it into place instead of re-encoding it (parts are only ever replaced)
            link = journal.dir / ".segments.parquet.lamtmp-00000000.parquet"  # a temporary name (cleaned if left)
            try:
                link.unlink(missing_ok=True)
                os.link(ranges[0][2], link)
                os.replace(link, seg_out)
                linked = True
                tally(table)
            except OSError:  # no hard links on this file system: write it
                link.unlink(missing_ok=True)
    if not linked:
        with atomic_path(seg_out) as tmp:
            if monotonic:
                with pq.ParquetWriter(tmp, SEGMENT_SCHEMA) as writer:
                    for _, _, p, mine in ranges:
                        table = prepared(pq.read_table(p), mine)[0]
                        tally(table)
                        writer.write_table(table)
            else:
                tables = [prepared(pq.read_table(p), mine)[0] for _, _, p, mine in ranges]
                table = prepared(pa.concat_tables(tables), pa.array(sorted(ok_ids), type=pa.string()))[0] \
                    if tables else SEGMENT_SCHEMA.empty_table()
                tally(table)
                pq.write_table(table, tmp)

    aligned = [u for u in utts if u.utt_id in ok_ids]
    table = utterances_to_table(aligned)
    table = table.append_column("suspect", pa.array([verdicts[u.utt_id][1].suspect for u in aligned], pa.bool_()))
    table = table.append_column("suspect_reason", pa.array([verdicts[u.utt_id][1].reason for u in aligned],
                                                           pa.string()))
    with atomic_path(out / "utterances.parquet") as tmp:
        pq.write_table(table, tmp, compression="snappy")

    items = []
    errors: Counter[str] = Counter()
    oov: Counter[str] = Counter()
    for utt_id in order:
        i = latest.get(utt_id)
        if i is None:
            continue
        item = {"utt_id": utt_id, "status": cols["status"][i]}
        if cols["status"][i] == "ok":
            item.update(n_segments=cols["n_segments"][i], phone_set=cols["phone_set"][i])
        else:
            errors[cols["error"][i]] += 1
            item.update(reason=cols["message"][i], error=cols["error"][i], path=cols["path"][i],
                        line=cols["line"][i], hint=cols["hint"][i])
        if cols["info"][i]:
            info = json.loads(cols["info"][i])
            info.pop("quality", None)
            if info:
                item["info"] = info
            oov.update(str(w) for w in info.get("oov", ()))
        if utt_id in verdicts:
            measures, verdict = verdicts[utt_id]
            item.update(suspect=verdict.suspect, suspect_reason=verdict.reason, quality=measures.to_dict())
        items.append(item)
    for utt_id, failure in input_failures:
        errors[type(failure).__name__] += 1
        items.append({"utt_id": utt_id, "status": "failed", "reason": failure.message,
                      "error": type(failure).__name__, "path": failure.path, "line": failure.line,
                      "hint": failure.hint})
    rejected = list(corpus_report.get("rejected", []))
    for rej in rejected:
        errors[rej.get("error") or "CorpusError"] += 1
        items.append({"utt_id": rej.get("utt_id"), "status": "rejected", "reason": rej.get("message"),
                      "error": rej.get("error"), "path": rej.get("path"), "line": rej.get("line"),
                      "hint": rej.get("hint")})
    n_failed = sum(1 for i in items if i["status"] == "failed")
    return {
        "out_dir": str(out),
        "aligner": aligner.config(),
        "phone_sets": dict(journal.phone_sets),
        "options": options.to_dict(),
        "counts": {
            "utterances": len(utts),
            "ok": len(aligned),
            "failed": n_failed,
            "rejected_by_reader": len(rejected),
            "resumed": n_resumed,
            "suspect": len(suspect_ids),
            "suspect_dropped": len(suspect_ids) if drop_suspect else 0,
            "segments": n_segments,
            "by_class": {c: by_class.get(c, 0) for c in UNIT_CLASSES},
            "errors": dict(sorted(errors.items())),
        },
        "unknown_labels": dict(unknown.most_common()),
        # out-of-vocabulary words over the whole batch (aligned utterances too: a G2P fallback or
        # MFA's own OOV handling may have aligned them), word -> number of utterances
        "oov_words": dict(oov.most_common()),
        "dropped_emotions": dict(corpus_report.get("dropped_emotions", {})),
        "corpus": {k: v for k, v in corpus_report.items() if k not in ("rejected", "dropped_emotions")},
        "outputs": {"segments": str(seg_out), "utterances": str(out / "utterances.parquet"),
                    "textgrids": str(out / "textgrids")},
        "utterances": items,
    }
