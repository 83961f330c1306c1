"""Feature extraction on a Ray cluster (``lam features --engine ray``): actors that keep the model loaded.

:func:`analysis.extract.extract_features` plans the batches exactly as for the local engine
(same order, same padding caps), then :class:`RayExtractPool` sends units of consecutive batches
(about ``chunk_seconds`` of audio each) to ``workers`` actors. Each actor loads the model once
(on its GPU with ``gpus_per_worker``), computes every batch with the same
:func:`analysis.extract.pool_work` as the local engine, and returns the pooled vectors; the
driver commits them through the same writer, in planned order, so the store is the one a local
run would write (bit for bit when the actors run the same number of threads on the same kind of
device; see docs/scale.md).

Faults: an actor whose process dies is restarted by Ray (the model loaded again) and its unit
retried, up to ``max_retries`` times per unit (each actor runs one unit at a time, so the unit that
was running is the one to blame); a restarted actor gets work again only once it answers, so a
slow restart does not use up a unit's retries; a unit that still fails is reported per utterance in
``report.json`` and the run goes on. Errors in the model's set-up (a model
that cannot be loaded, float16 on a CPU node) are raised on the driver as they would be locally.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from phonalign.engine import EngineConfig, EngineError, cut_by_duration
from phonalign.errors import LamError
from phonalign.ray_cluster import connect, default_workers

from .errors import ExtractionError
from .extract import BatchResult, EncoderFacts, UttWork, pool_work
from .models import PortableModule, SpeechEncoder, load_encoder

__all__ = ["RayExtractPool", "ACTOR_NAME", "MAX_UNIT_BYTES"]

log = logging.getLogger(__name__)

#: Class name of the actors (their processes are titled ``ray::LamExtractWorker``).
ACTOR_NAME = "LamExtractWorker"
#: Cap on the pooled vectors one unit of work sends back (float32 bytes), so that a few units in
#: flight per worker fit Ray's object store even for every layer of a large model.
MAX_UNIT_BYTES = 256 * 1024 * 1024


class LamExtractWorker:
    """A Ray actor (made remote in :class:`RayExtractPool`): one model, loaded once, many batches."""

    def __init__(self, model: Any, *, device: str, dtype: str, whisper_mode: str, model_id: str | None,
                 do_normalize: bool | None, allow_missing: bool, untrained: bool, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # what the node gave this actor, not every core of the node
        self.error: LamError | None = None
        self.enc: SpeechEncoder | None = None
        self._facts: EncoderFacts | None = None
        if isinstance(model, PortableModule):
            model = model.build()
        try:
            self.enc = model if isinstance(model, SpeechEncoder) else load_encoder(
                model, device=device, dtype=dtype, whisper_mode=whisper_mode, model_id=model_id,
                do_normalize=do_normalize, allow_missing=allow_missing)
            if untrained:
                self.enc.revision = None  # random-init weights: no checkpoint revision describes them
            # the model's identity (the weights' digest, memoised per node) is part of the facts
            self._facts = EncoderFacts.of(self.enc)
        except LamError as err:  # raised on the driver by facts(), as a local run would
            self.error = err

    def facts(self) -> EncoderFacts:
        """The loaded model's facts (raises the set-up error, if any)."""
        if self.error is not None:
            raise self.error
        assert self._facts is not None
        return self._facts

    def run(self, batches: list[list[UttWork]], layers: list[int]) -> list[BatchResult]:
        """Pool every batch of one unit of work."""
        if self.error is not None:
            raise self.error
        assert self.enc is not None
        return [pool_work(self.enc, batch, layers=layers, facts=self._facts) for batch in batches]


class RayExtractPool:
    """Actors holding the model, for one :func:`~analysis.extract.extract_features` run.

    Use as a context manager: entering joins the cluster and loads the model in every actor
    (:attr:`facts` then describes it); leaving ends the actors and the connection.
    """

    def __init__(self, engine: EngineConfig, *, model: Any, device: str, dtype: str, whisper_mode: str,
                 model_id: str | None, do_normalize: bool | None = None, allow_missing: bool = False,
                 untrained: bool = False) -> None:
        if device == "cuda" and engine.gpus_per_worker <= 0:
            raise EngineError("--device cuda with --engine ray needs --gpus-per-worker (e.g. 1)",
                              hint="give each actor a GPU with --gpus-per-worker, or use --device cpu")
        self.engine = engine
        self._model, self._device, self._dtype = model, device, dtype
        self._whisper_mode, self._model_id, self._allow_missing = whisper_mode, model_id, allow_missing
        self._do_normalize, self._untrained = do_normalize, untrained
        self._conn: Any = None
        self._model_ref: Any = None
        self.ray: Any = None
        self.actors: list[Any] = []
        self.facts: EncoderFacts | None = None

    def __enter__(self) -> RayExtractPool:
        self._conn = connect(self.engine)
        self.ray = self._conn.__enter__()
        try:
            self._start_actors()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_actors(self) -> None:
        ray, e = self.ray, self.engine
        n = default_workers(ray, e)
        model = self._model
        if isinstance(model, torch.nn.Module):  # a built model (a SpeechEncoder pickles itself alike)
            model = PortableModule.of(model) or model
        # the pool holds the model's object ref for the whole run: Ray restarts a lost actor with
        # its constructor's arguments, and an object whose last ref is gone has been deleted
        self._model_ref = model if isinstance(model, str) else ray.put(model)
        model = self._model_ref
        # a dead actor is always restarted (the model loaded again); how often a unit may be
        # retried is counted per unit in run(), so that a unit that kills its actor is the one
        # reported, not the units that happened to be queued on the same actor
        actor_cls = ray.remote(LamExtractWorker).options(
            num_cpus=e.cpus_per_worker, num_gpus=e.gpus_per_worker, max_restarts=-1, max_task_retries=0)
        self.actors = [actor_cls.remote(model, device=self._device, dtype=self._dtype,
                                        whisper_mode=self._whisper_mode, model_id=self._model_id,
                                        do_normalize=self._do_normalize, allow_missing=self._allow_missing,
                                        untrained=self._untrained, threads=e.cpus_per_worker)
                       for _ in range(n)]
        facts = [self._get(ref) for ref in [a.facts.remote() for a in self.actors]]
        if any(f != facts[0] for f in facts[1:]):
            raise EngineError("the Ray workers loaded different models: "
                              + "; ".join(sorted({f"{f.model_id} ({f.identity.get('digest')}) on {f.device}"
                                                  for f in facts})),
                              hint="every node needs the same model files and toolkit version")
        self.facts = facts[0]
        log.info("ray features: %d actors with %s on %s", n, self.facts.model_id, self.facts.device)

    def _get(self, ref: Any) -> Any:
        """``ray.get`` that raises the actor's own exception (a LamError) as itself."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def __exit__(self, *exc: object) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - an actor that is gone already
                pass
        self.actors = []
        self._model_ref = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.__exit__(None, None, None)

    def run(self, work: Sequence[Sequence[UttWork]], *, layers: Sequence[int],
            on_done: Callable[[int, float], None] | None = None) -> Iterator[BatchResult]:
        """Results of every planned batch, in planned order.

        Parameters
        ----------
        work : sequence of batches (sequences of UttWork), as the driver planned them
        layers : layers to keep
        on_done : called with (utterances, audio seconds) as each unit finishes on the cluster
        """
        e = self.engine
        assert self.facts is not None
        layers = list(layers)
        secs = [sum(w.seconds for w in b) for b in work]
        rows = [sum(1 + len(w.seg_start) for w in b) for b in work]
        size = [r * len(layers) * self.facts.hidden_size * 4 for r in rows]
        units = cut_by_duration([max(s, 1e-3) for s in secs], chunk_seconds=e.chunk_seconds,
                                min_chunks=4 * len(self.actors), sizes=size, max_size=MAX_UNIT_BYTES)
        log.info("ray features: %d batches in %d units on %d actors", len(work), len(units), len(self.actors))
        sched = _UnitScheduler(self, work, units, layers)
        out = 0
        while out < len(units):
            for u, results in sched.step():
                if on_done is not None:
                    n_utt = sum(len(work[i]) for i in units[u])
                    on_done(n_utt, sum(r.audio_seconds for r in results))
            while out in sched.done:
                yield from sched.done.pop(out)
                out += 1

    def _failed(self, batch: Sequence[UttWork], err: BaseException) -> BatchResult:
        msg = str(err).splitlines()[0] if str(err) else "no message"
        return BatchResult(None, (), tuple(
            (w.pos, ExtractionError(f"the Ray worker extracting this utterance failed {self.engine.max_retries + 1} "
                                    f"times ({type(err).__name__}: {msg})", utt_id=w.utt_id, path=w.audio_path,
                                    hint="see the Ray logs of the cluster (a worker out of memory, a crash); "
                                    "rerun the same command to retry these utterances"))
            for w in batch), 0.0, 0.0)


#: How long the driver waits for lost actors to come back (Ray restarts them and loads the model
#: again) while no unit is running, seconds; then the run stops with an error (nothing committed
#: is lost, and a rerun resumes).
ACTOR_RESTART_TIMEOUT_S = 600.0
#: Calls a unit may lose to an actor that was restarting when the call reached it (the call never
#: ran there), beyond its ``max_retries``: bounds the loop if an actor keeps flapping.
MAX_UNAVAILABLE = 20
#: Pings in a row that find an actor dead (not restarting) before it is given up: Ray could not
#: restart it (its constructor failed on the new process, say).
MAX_DEAD_PINGS = 3


class _UnitScheduler:
    """Which unit runs on which actor, and what happens when an actor is lost.

    One unit per actor at a time, so that when an actor dies the unit it was running is the one to
    blame (Ray would fail every call queued on it alike): each unit gets up to ``1 + max_retries``
    attempts, on whichever actor is free. A lost actor is restarted by Ray (the model loaded again)
    and gets no work until it answers a ping: a call sent to an actor that is still restarting
    fails at once with ``ActorUnavailableError``, and charging those to the unit would spend its
    retries in milliseconds on a busy machine. Such a call is retried without counting (up to
    :data:`MAX_UNAVAILABLE` times); a unit whose actor died while running it is charged.
    """

    def __init__(self, pool: RayExtractPool, work: Sequence[Sequence[UttWork]], units: Sequence[Sequence[int]],
                 layers: list[int]) -> None:
        self.pool, self.ray, self.engine = pool, pool.ray, pool.engine
        self.work, self.units, self.layers = work, units, layers
        self.idle = list(range(len(pool.actors)))
        self.running: dict[Any, tuple[int, int]] = {}  # unit call -> (unit, actor)
        self.pinging: dict[Any, int] = {}  # ping call -> actor
        self.dead_pings = [0] * len(pool.actors)
        self.gone: dict[int, str] = {}  # actors given up -> why
        self.attempts = [0] * len(units)  # charged attempts (the actor died while running the unit)
        self.unavailable = [0] * len(units)  # calls that reached a restarting actor
        self.queue = list(range(len(units)))  # units to run, in order (a retried unit goes first)
        self.done: dict[int, list[BatchResult]] = {}
        self._waiting_since: float | None = None
        self._submit()

    def step(self) -> list[tuple[int, list[BatchResult]]]:
        """Wait for the next call to finish; return the units that finished (unit, results)."""
        ready, _ = self.ray.wait(list(self.running) + list(self.pinging), num_returns=1, timeout=5.0)
        finished = []
        for ref in ready:
            if ref in self.pinging:
                self._pinged(ref)
            else:
                finished.extend(self._unit_returned(ref))
        self._check_stalled()
        self._submit()
        return finished

    def _submit(self) -> None:
        while self.idle and self.queue:
            u, k = self.queue.pop(0), self.idle.pop(0)
            batches = [list(self.work[i]) for i in self.units[u]]
            self.running[self.pool.actors[k].run.remote(batches, self.layers)] = (u, k)

    def _unit_returned(self, ref: Any) -> list[tuple[int, list[BatchResult]]]:
        u, k = self.running.pop(ref)
        try:
            results = self.pool._get(ref)
        except self.ray.exceptions.RayError as err:  # the actor died (or its result was lost)
            self._revive(k)
            unavailable = isinstance(err, self.ray.exceptions.ActorUnavailableError)
            if unavailable and self.unavailable[u] < MAX_UNAVAILABLE:
                self.unavailable[u] += 1
                self.queue.insert(0, u)
                return []
            self.attempts[u] += 1
            if self.attempts[u] <= self.engine.max_retries:
                log.warning("ray features: unit %d lost its worker (%s); retrying", u, type(err).__name__)
                self.queue.insert(0, u)
                return []
            log.warning("ray features: unit %d failed %d times: %s", u, self.attempts[u], type(err).__name__)
            results = [self.pool._failed(self.work[i], err) for i in self.units[u]]
        else:
            self.idle.append(k)
        self.done[u] = results
        return [(u, results)]

    def _revive(self, k: int) -> None:
        """Send actor ``k`` a ping; it gets work again once the ping is answered."""
        self.pinging[self.pool.actors[k].facts.remote()] = k

    def _pinged(self, ref: Any) -> None:
        k = self.pinging.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            # restarting: ask again shortly; dead several times in a row: Ray could not restart it
            dead = not isinstance(err, self.ray.exceptions.ActorUnavailableError)
            self.dead_pings[k] = self.dead_pings[k] + 1 if dead else 0
            if self.dead_pings[k] < MAX_DEAD_PINGS:
                time.sleep(0.2)
                self._revive(k)
                return
            self.gone[k] = f"{type(err).__name__}: {_first_line(err)}"
            log.warning("ray features: worker %d could not be restarted (%s)", k, self.gone[k])
            if not (self.running or self.idle or self.pinging):
                raise EngineError(f"every Ray extraction worker was lost and none could be restarted "
                                  f"({self.gone[k]})", hint="see the Ray logs of the cluster; the work "
                                  "committed so far is kept, and rerunning the same command resumes") from None
        else:
            self.dead_pings[k] = 0
            self.idle.append(k)

    def _check_stalled(self) -> None:
        """Raise when no unit has run for ACTOR_RESTART_TIMEOUT_S because no actor came back."""
        if self.running or self.idle or not self.pinging:
            self._waiting_since = None
            return
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        if now - self._waiting_since > ACTOR_RESTART_TIMEOUT_S:
            raise EngineError(f"no Ray extraction worker came back within {ACTOR_RESTART_TIMEOUT_S:.0f} s after "
                              "being lost", hint="see the Ray logs of the cluster (out of memory, a node gone); "
                              "rerun the same command to resume")


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0][:300] if lines else "no message"
