"""Alignment on a Ray cluster (``lam align --engine ray``): chunks of utterances as Ray tasks.

The driver (:func:`phonalign.align.run.align_corpus`) checks the input, then asks
:func:`align_results` for the backend's results instead of calling the backend itself. Here the
utterances to align are cut into chunks of about ``chunk_seconds`` of audio (in input order), each
chunk becomes a Ray task that runs the same backend (a copy of the driver's
:class:`~phonalign.align.base.Aligner`) on a worker with ``jobs=1`` and returns its
:class:`~phonalign.align.base.AlignResult`\\ s, and the results are handed back chunk by chunk in
input order, whatever order the tasks finish in. Everything after that (checks, phone classes,
TextGrids, the journal, the report) is the driver's, the same code as for the local engine.

Faults: a task whose worker process dies is retried by Ray up to ``max_retries`` times (the
backends are deterministic, so a retry gives the same result); a chunk that still fails is
reported per utterance as an :class:`~phonalign.errors.AlignerError` and the run goes on. A killed
driver loses only what it had not committed; rerunning resumes as with the local engine.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ..engine import EngineConfig, cut_by_duration
from ..errors import AlignerError
from ..ray_cluster import connect, default_workers
from ..records import Utterance
from .base import Aligner, AlignResult

__all__ = ["align_results", "TASK_NAME"]

log = logging.getLogger(__name__)

#: Name of the Ray tasks (worker processes are titled ``ray::<name>`` while they run one).
TASK_NAME = "lam_align_chunk"


#: The backend a worker process aligned its last chunk with, under its run's token. Ray reuses a
#: worker process for many chunks of a run, and a backend keeps per-process state between
#: ``align`` calls (pocketsphinx loads its decoder once per process): each task receives a fresh
#: copy of the driver's aligner, and reusing the first one keeps that state for the whole run.
_worker_aligner: tuple[str, Aligner] | None = None


def align_chunk(run_token: str, aligner: Aligner, utterances: Sequence[Utterance]) -> list[AlignResult]:
    """Run on a worker: align one chunk with the backend, in a scratch folder of the worker.

    ``run_token`` names the run (one per :func:`align_results` call): chunks of the same run on
    this worker process share one backend instance, so its loaded state is reused.
    """
    global _worker_aligner
    if _worker_aligner is None or _worker_aligner[0] != run_token:
        _worker_aligner = (run_token, aligner)
    with tempfile.TemporaryDirectory(prefix="lam-align-") as work:
        return list(_worker_aligner[1].align(list(utterances), Path(work), jobs=1))


def align_results(aligner: Aligner, utterances: Sequence[Utterance], durations: Mapping[str, float], *,
                  engine: EngineConfig, on_done: Callable[[int, float], None] | None = None
                  ) -> Iterator[AlignResult]:
    """The backend's results for ``utterances``, computed by Ray tasks, in input order by chunk.

    Parameters
    ----------
    aligner : Aligner
        The backend; copied to the workers (it must not hold process-bound state).
    utterances : sequence of Utterance
        What to align (ids and audio already checked by the driver).
    durations : mapping
        utt_id -> audio duration (seconds), for cutting chunks and the progress.
    engine : EngineConfig
        ``address``, ``workers``, ``cpus_per_worker``, ``max_retries``, ``chunk_seconds``.
    on_done : callable, optional
        Called with (utterances, audio seconds) of each chunk as it finishes on the cluster.

    Yields
    ------
    AlignResult
        One per utterance. A chunk whose worker died more than ``max_retries`` times gives failed
        results; an exception raised by the backend itself (a bug) is raised here.
    """
    utts = list(utterances)
    if not utts:
        return
    with connect(engine) as ray:
        workers = default_workers(ray, engine)
        seconds = [float(durations.get(u.utt_id, 0.0)) for u in utts]
        chunks = cut_by_duration(seconds, chunk_seconds=engine.chunk_seconds, min_chunks=4 * workers)
        log.info("ray align: %d utterances in %d chunks on %d workers", len(utts), len(chunks), workers)
        task = ray.remote(align_chunk).options(name=TASK_NAME, num_cpus=engine.cpus_per_worker,
                                               max_retries=engine.max_retries)
        aligner_ref = ray.put(aligner)
        run_token = uuid.uuid4().hex
        # chunks in flight = workers: Ray would run any more at once where CPUs are free, and the
        # next chunk is submitted as soon as one finishes
        window = workers
        running: dict = {}  # object ref -> chunk number
        done: dict[int, list[AlignResult]] = {}
        submitted = 0
        next_out = 0

        def submit() -> None:
            nonlocal submitted
            while submitted < len(chunks) and len(running) < window:
                part = [utts[i] for i in chunks[submitted]]
                running[task.remote(run_token, aligner_ref, part)] = submitted
                submitted += 1

        submit()
        while next_out < len(chunks):
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                k = running.pop(ref)
                part = [utts[i] for i in chunks[k]]
                try:
                    done[k] = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    # the backend raised (it reports per-utterance failures as results): a bug
                    raise (err.cause if isinstance(err.cause, BaseException) else err) from None
                except ray.exceptions.RayError as err:
                    log.warning("ray align: chunk %d failed after %d retries: %s", k, engine.max_retries,
                                type(err).__name__)
                    done[k] = [_failed(u, err, engine) for u in part]
                if on_done is not None:
                    on_done(len(part), sum(seconds[i] for i in chunks[k]))
            submit()
            while next_out in done:
                yield from done.pop(next_out)
                next_out += 1


def _failed(utt: Utterance, err: BaseException, engine: EngineConfig) -> AlignResult:
    return AlignResult(utt.utt_id, None, AlignerError(
        f"the Ray worker aligning this utterance's chunk failed {engine.max_retries + 1} times "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no message'})",
        utt_id=utt.utt_id, path=utt.audio_path,
        hint="see the Ray logs of the cluster (a worker out of memory, a crash in the backend); "
        "rerun the same command to retry these utterances"))
