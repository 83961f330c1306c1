"""Where the heavy steps run: on this machine (``local``, the default) or on a Ray cluster (``ray``).

The two heavy steps, alignment (:func:`phonalign.align.run.align_corpus`) and feature extraction
(:func:`analysis.extract.extract_features`), take ``engine=`` (a name or an :class:`EngineConfig`).
Whatever the engine, the same driver code checks the input, plans the work, commits results to
the output folder and writes the report: an engine only computes per-utterance results (Ray tasks
for alignment, Ray actors holding the model for extraction) and hands them back in the order the
work was planned. Outputs, resume and reports are therefore the same for both engines, and a run
started with one engine can be finished with the other.

This module knows nothing of Ray: the Ray-specific code is in :mod:`phonalign.ray_cluster`,
:mod:`phonalign.align.ray_engine` and :mod:`analysis.ray_extract`, imported only when
``engine="ray"`` is chosen (``pip install 'lam-toolkit[ray]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .errors import LamError

__all__ = ["ENGINES", "EngineConfig", "EngineError", "resolve_engine", "WorkProgress", "cut_by_duration"]

log = logging.getLogger(__name__)

#: Engine names (``--engine``).
ENGINES = ("local", "ray")


class EngineError(LamError):
    """An engine cannot run as asked (Ray missing, cluster unreachable, bad engine settings)."""


@dataclass(frozen=True)
class EngineConfig:
    """How and where the heavy steps run (``lam align/features --engine ...``, ``engine:`` in run configs).

    None of these settings changes a result: they are not part of any output's fingerprint, so
    that a run can be resumed with another engine.

    Attributes
    ----------
    name : ``local`` | ``ray``
    address : str, optional
        Ray only: ``None`` starts a Ray instance on this machine for the run; ``"auto"`` joins
        the cluster this machine belongs to (``ray start`` was run here); ``"HOST:PORT"`` joins
        the cluster whose head is there.
    workers : int, optional
        Ray only: tasks (alignment) or actors (extraction) at once; default: as many as the
        cluster's CPUs (or GPUs, with ``gpus_per_worker``) allow.
    gpus_per_worker : float
        Ray extraction: GPUs per actor (e.g. 1, or 0.5 to share one GPU between two actors).
    cpus_per_worker : int
        Ray: CPUs per task or actor, also the torch threads of an extraction actor.
    max_retries : int
        Ray: times a chunk is retried after its worker died (then its utterances are reported as
        failed and the run goes on).
    chunk_seconds : float
        Ray: audio per unit of work sent to a worker, seconds (fewer when needed to give every
        worker several units).
    """

    name: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: int = 1
    max_retries: int = 3
    chunk_seconds: float = 600.0

    def check(self) -> EngineConfig:
        """Return ``self`` when every setting is valid, else raise :class:`EngineError`."""
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine {self.name!r}", hint=f"use one of {', '.join(ENGINES)}")
        if self.workers is not None and self.workers < 1:
            raise EngineError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise EngineError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker < 1:
            raise EngineError(f"cpus_per_worker must be at least 1, got {self.cpus_per_worker}")
        if self.max_retries < 0:
            raise EngineError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.chunk_seconds > 0:
            raise EngineError(f"chunk_seconds must be > 0, got {self.chunk_seconds}")
        if self.name == "local" and (self.address is not None or self.workers is not None
                                     or self.gpus_per_worker):
            raise EngineError("--ray-address, --workers and --gpus-per-worker are for --engine ray",
                              hint="add --engine ray, or drop them (the local engine uses -j / --device)")
        return self


def resolve_engine(engine: str | EngineConfig | None, **settings: Any) -> EngineConfig:
    """An :class:`EngineConfig` from a name (``"local"``, ``"ray"``), a config, or None (local).

    ``settings`` (only those not None) replace the config's fields, e.g.
    ``resolve_engine("ray", address="auto", workers=None)``.
    """
    if engine is None:
        cfg = EngineConfig()
    elif isinstance(engine, EngineConfig):
        cfg = engine
    elif isinstance(engine, str):
        if engine not in ENGINES:
            raise EngineError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
        cfg = EngineConfig(name=engine)  # type: ignore[arg-type]
    else:
        raise EngineError(f"engine must be a name or an EngineConfig, got {type(engine).__name__}")
    given = {k: v for k, v in settings.items() if v is not None}
    return (replace(cfg, **given) if given else cfg).check()


def cut_by_duration(seconds: Sequence[float], *, chunk_seconds: float, min_chunks: int = 1,
                    sizes: Sequence[float] | None = None, max_size: float | None = None) -> list[range]:
    """Consecutive ranges of items whose durations add up to about ``chunk_seconds`` each.

    Parameters
    ----------
    seconds : sequence of float, shape (n,)
        Duration of each item (an utterance, or a batch of them), in the order they are planned.
    chunk_seconds : float
        Target audio per chunk; lowered to ``total / min_chunks`` so that there are at least
        ``min_chunks`` chunks when there are that many items.
    min_chunks : int
        E.g. a few per worker, so that every worker gets work and a straggler is short.
    sizes, max_size : sequence of float (n,) and float, optional
        A second budget per chunk (e.g. bytes of the results a worker sends back).

    Returns
    -------
    list of range
        Covering ``0..n-1`` in order; every range non-empty; an item over a budget on its own is
        a chunk of its own.
    """
    total = float(sum(seconds))
    target = min(float(chunk_seconds), total / max(1, min_chunks)) if total > 0 else float(chunk_seconds)
    size = [0.0] * len(seconds) if sizes is None else [float(x) for x in sizes]
    cap = float("inf") if max_size is None else float(max_size)
    out: list[range] = []
    start, acc, acc_size = 0, 0.0, 0.0
    for i, s in enumerate(seconds):
        if i > start and (acc + float(s) > target or acc_size + size[i] > cap):
            out.append(range(start, i))
            start, acc, acc_size = i, 0.0, 0.0
        acc += float(s)
        acc_size += size[i]
    if start < len(seconds):
        out.append(range(start, len(seconds)))
    return out


class WorkProgress:
    """Progress of a batch job in utterances and audio hours (:func:`phonalign.progress.progress_bar`:
    a bar on a terminal or in Jupyter, plain log lines otherwise).

    Both engines report here as results arrive; with Ray that is as chunks finish anywhere in the
    cluster.
    """

    def __init__(self, total: int, total_seconds: float, *, desc: str, progress: bool = True) -> None:
        from .progress import progress_bar

        self.desc = desc
        self.total_hours = total_seconds / 3600.0
        self.hours = 0.0
        self.n = 0
        self.bar = progress_bar(total, desc=desc, item="utt", progress=progress)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix(audio=f"{self.hours:.2f}/{self.total_hours:.2f} h")

    def update(self, n: int, seconds: float = 0.0) -> None:
        """``n`` more utterances done, holding ``seconds`` of audio."""
        self.hours += seconds / 3600.0
        self.n += n
        self._postfix()
        self.bar.update(n)

    def close(self) -> None:
        """End the bar (a plain last line where no bar is drawn); log the totals."""
        log.debug("%s: %d utterances, %.3f h of audio", self.desc, self.n, self.hours)
        self.bar.close()
