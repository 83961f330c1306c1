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
* **A writer process** (:mod:`phonalign.align.textgrid_writer`) formats and writes the TextGrids of
  runs of :data:`WRITER_PROCESS_FROM` utterances or more (tiers handed over as packed bytes through
  a pipe, never pickle), so that creating thousands of files overlaps with reading and
  classifying; a chunk is committed only once the writer confirms its files are on disk.

The run's named steps are the methods of :class:`_AlignRun` (check ids, keep what is done, check
audio, align, then :func:`phonalign.align.assemble.assemble`); the journal is
:mod:`phonalign.align.journal`, the report's types :mod:`phonalign.align.report`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..audio import audio_duration
from ..corpus import Corpus, CorpusReport
from ..engine import EngineConfig, EngineError, WorkProgress, resolve_engine
from ..errors import AlignerError, LamError, PhonalignError, PhoneSetError, TextGridError
from ..fingerprint import digest, file_signature
from ..fsutil import atomic_write_json, check_utt_id, is_temp_name, make_dirs
from ..outdir import FolderRules, output_folder
from ..progress import progress_bar
from ..records import Alignment, Utterance
from ..segments import check_against_audio, segment_columns
from ..textgrid_io import grid_limits
from .assemble import RunFacts, assemble
from .base import Aligner, AlignResult
from .journal import STATUS_SCHEMA, Journal, corpus_identity
from .quality import QualityMeasures
from .report import AlignReport
from .textgrid_writer import TextGridWriter

if TYPE_CHECKING:
    from ..phonesets import ClassOptions

__all__ = ["align_corpus", "STATUS_SCHEMA", "DETECT_UTTERANCES", "ALIGN_FOLDER", "utterance_fingerprint",
           "AlignReport"]

#: From this many utterances on, TextGrids are written by a child process (phonalign.align.textgrid_writer).
WRITER_PROCESS_FROM = 200

#: Number of aligned utterances of a language pooled to detect its phone set.
DETECT_UTTERANCES = 20

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


def align_corpus(
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    aligner: Aligner,
    *,
    strict: bool = False,
    phone_set: str | None = None,
    options: ClassOptions | None = None,
    jobs: int = 1,
    progress: bool = True,
    chunk_size: int = 2000,
    corpus_report: CorpusReport | dict | None = None,
    force: bool = False,
    drop_suspect: bool = False,
    engine: str | EngineConfig | None = None,
) -> AlignReport:
    """Align ``utterances`` with ``aligner`` and write the aligned-corpus directory ``out_dir``.

    Parameters
    ----------
    utterances : sequence of Utterance
        The corpus (e.g. the :class:`~phonalign.corpus.Corpus` of :func:`phonalign.corpus.read_corpus`,
        whose report is merged into ``report.json``).
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
    corpus_report : CorpusReport or dict, optional
        Reader report to include (defaults to ``utterances.report`` for a :class:`~phonalign.corpus.Corpus`).
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
    AlignReport
        The report (:mod:`phonalign.align.report`), also written to ``OUT/report.json``
        (:meth:`AlignReport.to_dict`).

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
    >>> report = align_corpus(utts, out, aligner, progress=False)
    >>> report.counts.ok, report.phone_sets
    (2, {'en': 'espeak_en'})
    >>> sorted(p.name for p in (out / "textgrids").iterdir()) == sorted(f"{u.utt_id}.TextGrid" for u in utts)
    True
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    engine = _checked_engine(engine, jobs)
    aligner.check_available()
    if corpus_report is None:
        corpus_report = utterances.report if isinstance(utterances, Corpus) else {}
    if isinstance(corpus_report, CorpusReport):
        corpus_report = corpus_report.to_dict()  # report.json holds it as written
    with output_folder(out_dir, step="align", rules=ALIGN_FOLDER):
        return _AlignRun(utterances, Path(out_dir), aligner, strict=strict, phone_set=phone_set, options=options,
                         jobs=jobs, progress=progress, chunk_size=chunk_size, corpus_report=corpus_report,
                         force=force, drop_suspect=drop_suspect, engine=engine).run()


def _checked_engine(engine: str | EngineConfig | None, jobs: int) -> EngineConfig:
    resolved = resolve_engine(engine)
    if resolved.name == "ray":
        if jobs != 1:
            raise EngineError("-j/--jobs is for --engine local", hint="with --engine ray, --workers says how many "
                              "chunks run at once (default: the cluster's CPUs)")
        from ..ray_cluster import import_ray

        import_ray()  # a clear error now, before any work, when Ray is not installed
    return resolved


class _AlignRun:
    """One :func:`align_corpus` run once the output folder is held, as named steps (whatever the
    engine: workers only compute):

    1. :meth:`check_ids`: ids safe and unique, fingerprints of every utterance's inputs;
    2. :meth:`kept`: what earlier runs of the folder did and may be kept (and phone sets that
       must be detected again);
    3. :meth:`check_audio`: durations (and audio free of NaN) of the rest, the utterances to align;
    4. :meth:`align`: the backend's results, each checked, classified and written (:meth:`accept`,
       :meth:`finish`; results of a language whose phone set is not known yet wait for
       :meth:`release`), committed chunk by chunk through the journal;
    5. :func:`~phonalign.align.assemble.assemble`: the final tables and the report.

    Failures of single utterances go through :meth:`fail` (recorded, or raised with ``strict``).
    """

    def __init__(self, utterances: Sequence[Utterance], out: Path, aligner: Aligner, *, strict: bool,
                 phone_set: str | None, options: ClassOptions | None, jobs: int, progress: bool, chunk_size: int,
                 corpus_report: dict, force: bool, drop_suspect: bool, engine: EngineConfig) -> None:
        from ..phonesets import ClassOptions

        self.t0 = time.perf_counter()
        self.out, self.aligner, self.strict, self.phone_set = out, aligner, strict, phone_set
        self.options = options if options is not None else ClassOptions()
        self.jobs, self.progress, self.chunk_size, self.engine = jobs, progress, chunk_size, engine
        self.corpus_report, self.drop_suspect = corpus_report, drop_suspect
        self.tg_dir = make_dirs(out / "textgrids")
        self.workdir = make_dirs(out / "work")  # the backend's scratch space (MFA stages its corpus there)
        self.utts: list[Utterance] = list(utterances)
        self.settings = {"aligner": aligner.config(), "phone_set": phone_set, "options": self.options.to_dict()}
        self.journal = Journal(out, settings=self.settings, corpus=corpus_identity(self.utts, corpus_report),
                               force=force)
        self.fixed_phone_set: str | None = phone_set if phone_set is not None else aligner.phone_set
        self.latest = self.journal.latest()
        self.order: list[str] = []  # safe, unique ids in input order (the final tables' order)
        self.fps: dict[str, str] = {}  # utt_id -> fingerprint of its inputs
        self.input_failures: list[tuple[str, LamError]] = []
        self.n_resumed = 0
        self.durations: dict[str, float] = {}
        self.todo: list[Utterance] = []  # to align, in input order
        self.waiting: dict[str, list[tuple[Utterance, Alignment, dict]]] = {}  # language -> results
        self.finished: set[str] = set()
        self.results: Iterator[AlignResult] | None = None  # the backend's (a generator holding its workers)

    def run(self) -> AlignReport:
        try:
            self.remove_killed_writes()
            safe = self.check_ids()
            self.check_audio(safe, kept=self.kept(safe))
            self.align()
        finally:
            # keep what is done, whatever stopped us (strict failure, Ctrl-C, a full disk, a bug)
            try:
                self.journal.flush()
            finally:
                self.journal.close()
                close = getattr(self.results, "close", None)
                if close is not None:  # a generator: the backend's workers or Ray tasks end now, not at exit
                    close()
        report = assemble(self.out, self.journal, RunFacts(
            utterances=self.utts, order=self.order, aligner=self.aligner.config(), options=self.options.to_dict(),
            corpus_report=self.corpus_report, n_resumed=self.n_resumed, input_failures=self.input_failures,
            drop_suspect=self.drop_suspect))
        report = dataclasses.replace(report, seconds=round(time.perf_counter() - self.t0, 3))
        atomic_write_json(self.out / "report.json", report.to_dict())
        self.write_run_info()
        return report

    def write_run_info(self) -> None:
        from ..provenance import write_run_info

        write_run_info(self.out, step="align", config={
            "aligner": self.aligner.config(), "phone_set": self.phone_set,
            "detected_phone_sets": dict(self.journal.phone_sets), "options": self.options.to_dict(),
            "strict": self.strict, "jobs": self.jobs, "engine": self.engine, "chunk_size": self.chunk_size,
            "drop_suspect": self.drop_suspect, "n_utterances": len(self.utts),
        })

    # ---- failures --------------------------------------------------------------------------
    def fail(self, utt_id: str, err: LamError, duration: float | None = None, info: dict | None = None) -> None:
        """Record the failure of one utterance (with ``strict``: raise it)."""
        self.journal.record(utt_id, error=err, duration=duration, info=info, input_fp=self.fps.get(utt_id))
        if self.strict:
            raise err
        if self.journal.pending() >= self.chunk_size:
            self.journal.flush()

    def unchanged(self, utt_id: str) -> bool:
        """Done before from the same inputs with the same settings (ok or a lasting failure)."""
        rec = self.latest.get(utt_id)
        return rec is not None and rec.input_fp == self.fps[utt_id] and rec.settings_fp == self.journal.settings_fp

    # ---- before aligning -------------------------------------------------------------------
    def remove_killed_writes(self) -> None:
        """A resumed run: temporary files of TextGrids being written when the last run was killed."""
        if self.journal.committed:
            with os.scandir(self.tg_dir) as entries:
                for entry in entries:
                    if is_temp_name(entry.name) and entry.is_file():
                        os.unlink(entry.path)

    def check_ids(self) -> list[Utterance]:
        """The utterances whose ids are safe as file names and unique, with their fingerprints.

        A bad id is a property of the input, checked again on every run: reported, never
        journalled, never used as a file name."""
        safe: list[Utterance] = []
        seen: set[str] = set()
        for utt in self.utts:
            try:
                check_utt_id(utt.utt_id)
                if utt.utt_id in seen:
                    raise PhonalignError("the utterance id appears twice in the corpus", utt_id=utt.utt_id,
                                         hint="utterance ids must be unique; rename one of them")
            except LamError as err:
                self.input_failures.append((utt.utt_id, err))
                if self.strict:
                    raise
                continue
            seen.add(utt.utt_id)
            self.order.append(utt.utt_id)
            safe.append(utt)
            self.fps[utt.utt_id] = utterance_fingerprint(utt, self.aligner)
        return safe

    def kept(self, safe: list[Utterance]) -> set[str]:
        """The utterances an earlier run aligned from the same inputs and settings, and whose
        language's phone set stands: kept as they are. Starts the TextGrid writer when many
        others are left to align."""
        redo_languages: set[str] = (_stale_phone_sets(self.journal, safe, self.fps, self.unchanged)
                                    if self.fixed_phone_set is None else set())
        for language in redo_languages:
            self.journal.forget_phone_set(language)
        kept = {u.utt_id for u in safe if u.language not in redo_languages and self.unchanged(u.utt_id)
                and self.latest[u.utt_id].status == "ok"}
        self.n_resumed = len(kept)
        if len(safe) - self.n_resumed >= WRITER_PROCESS_FROM:
            # started first, so that its start-up (imports) overlaps with the audio checks
            self.journal.writer = TextGridWriter()
        return kept

    def check_audio(self, safe: list[Utterance], *, kept: set[str]) -> None:
        """Durations of the utterances not ``kept`` (audio readable, free of NaN, intervals inside
        their recordings); the ones that pass are :attr:`todo`."""
        bar = progress_bar(len(safe), desc="checking audio", item="utt", progress=self.progress)
        for utt in safe:
            bar.update(1)
            if utt.utt_id in kept:
                continue
            try:
                self.durations[utt.utt_id] = _usable_duration(
                    utt, audio_duration(utt.audio_path, check_samples=True), self.aligner)
            except LamError as err:
                err.utt_id = utt.utt_id
                self.fail(utt.utt_id, err)
                continue
            self.todo.append(utt)
        bar.close()

    # ---- aligning --------------------------------------------------------------------------
    def align(self) -> None:
        """Run the backend over :attr:`todo` and take its results (:attr:`results` is closed by
        :meth:`run` whatever happens: the backend's workers end with it)."""
        work = WorkProgress(len(self.todo), sum(self.durations[u.utt_id] for u in self.todo), desc="aligning",
                            progress=self.progress)
        # intervals of long recordings are cut here (OUT/work/intervals; Ray workers read them there)
        staged, shifts = _stage_intervals(self.todo, self.workdir, self.aligner)
        if self.engine.name == "ray" and staged:
            from .ray_engine import align_results

            self.results = align_results(self.aligner, staged, self.durations, engine=self.engine,
                                         on_done=work.update)
        else:
            self.results = self.aligner.align(staged, self.workdir, jobs=self.jobs) if staged else iter(())
        by_id = {u.utt_id: u for u in self.todo}
        for result in self.results:
            if self.engine.name == "local":
                work.update(1, self.durations.get(result.utt_id, 0.0))
            utt = by_id.get(result.utt_id)
            if utt is None or result.utt_id in self.finished:
                raise AlignerError(f"the {self.aligner.name!r} backend returned an unexpected or repeated "
                                   f"utterance {result.utt_id!r}", hint="this is a bug in the backend")
            self.finished.add(result.utt_id)
            self.accept(utt, result, shifts.get(utt.utt_id))
        for language in list(self.waiting):
            self.release(language)
        work.close()
        for utt in self.todo:
            if utt.utt_id not in self.finished:
                self.fail(utt.utt_id, AlignerError(f"the {self.aligner.name!r} backend returned no result",
                                                   utt_id=utt.utt_id))

    def accept(self, utt: Utterance, result: AlignResult, shift: float | None) -> None:
        """One result of the backend: a failure is recorded; an alignment goes back onto its
        recording's timeline (an interval's cut) and is finished, or waits for its language's
        phone set to be detected."""
        alignment = result.alignment
        if not result.ok or alignment is None:
            error = result.error or AlignerError("the aligner returned no alignment")
            error.utt_id = error.utt_id or result.utt_id
            self.fail(result.utt_id, error, self.durations.get(result.utt_id), result.info)
            return
        if shift is not None:  # an interval aligned from its cut
            alignment = _shifted(alignment, shift)
            (self.workdir / "intervals" / f"{utt.utt_id}.wav").unlink(missing_ok=True)
        ps = self.fixed_phone_set or self.journal.phone_sets.get(utt.language)
        if ps is None:
            batch = self.waiting.setdefault(utt.language, [])
            batch.append((utt, alignment, result.info))
            if len(batch) >= DETECT_UTTERANCES:
                self.release(utt.language)
            return
        self.finish(utt, alignment, result.info, ps)

    def release(self, language: str) -> None:
        """Detect the phone set of ``language`` from the waiting results, then finish them."""
        from ..phonesets import detect_phone_set

        batch = self.waiting.pop(language, [])
        if not batch:
            return
        labels = [p.label for _, a, _ in batch for p in a.phones]
        try:
            ps = detect_phone_set(labels)
        except PhoneSetError as err:
            for utt, alignment, _ in batch:
                self.fail(utt.utt_id, PhoneSetError(err.message, path=alignment.source, utt_id=utt.utt_id,
                                                    hint=err.hint))
            return
        self.journal.set_phone_set(language, ps, {u.utt_id: self.fps[u.utt_id] for u, _, _ in batch})
        for utt, alignment, info in batch:
            self.finish(utt, alignment, info, ps)

    def finish(self, utt: Utterance, alignment: Alignment, info: dict, ps: str) -> None:
        """Check one alignment against its audio, classify its phones, measure its quality, and
        hand its TextGrid and segments to the journal."""
        duration = self.durations[utt.utt_id]
        try:
            if not any(p.label.strip() for p in alignment.phones):
                raise TextGridError("the alignment has no phones (the phone tier has no labelled interval)",
                                    path=alignment.source, utt_id=utt.utt_id,
                                    hint="check the phone tier of the TextGrid (or the transcript), or "
                                    "name the phone tier with --phones-tier")
            # an interval's alignment lies on the recording's timeline and must end with the interval
            check_against_audio(alignment, utt.end if utt.end is not None else duration, utt_id=utt.utt_id)
            cols = segment_columns(utt.utt_id, alignment, phone_set=ps, options=self.options,
                                   context=info.get("pinyin"))
            grid_limits(alignment)  # what would stop the TextGrid writer: check it here
            info = {**info, "quality": self.quality_of(utt, alignment, cols["unit_class"], info).to_dict()}
        except LamError as err:
            err.utt_id = utt.utt_id
            self.fail(utt.utt_id, err, duration, info)
            return
        except ValueError as err:  # an alignment that cannot be written (e.g. non-finite times)
            self.fail(utt.utt_id, PhonalignError(str(err), path=alignment.source, utt_id=utt.utt_id), duration, info)
            return
        self.journal.write_textgrid(self.tg_dir / f"{utt.utt_id}.TextGrid", alignment, cols)
        self.journal.add_rows(cols)
        self.journal.record(utt.utt_id, n_segments=len(cols["index"]), phone_set=ps, duration=duration, info=info,
                            input_fp=self.fps[utt.utt_id])
        if self.journal.pending() >= self.chunk_size:
            self.journal.flush()

    def quality_of(self, utt: Utterance, alignment: Alignment, unit_classes: Sequence[str],
                   info: dict) -> QualityMeasures:
        """Quality measures of one aligned utterance (:mod:`phonalign.align.quality`): detected
        speech against the alignment for backends that align audio, the word tier against the
        transcript for imports."""
        from ..audio import load_audio
        from .quality import measure, speech_intervals, transcript_mismatch

        speech = None
        if self.aligner.aligns_audio:
            speech = speech_intervals(load_audio(utt.audio_path, sr=16000, start=utt.start, end=utt.end))
        mismatch = None if self.aligner.aligns_audio else transcript_mismatch(utt.text, alignment)
        return measure(alignment, unit_classes, min_duration=self.aligner.min_phone_duration, speech=speech,
                       offset=utt.start or 0.0, acoustic_score=info.get("acoustic_score"), transcript=mismatch)


def _stale_phone_sets(journal: Journal, utts: Sequence[Utterance], fps: dict[str, str],
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

