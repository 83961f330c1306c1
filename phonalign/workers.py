"""Worker processes that run importable functions: the one process pool of the toolkit.

A worker is a fresh interpreter started as ``python -m phonalign.workers MODULE:FACTORY``. It
calls ``FACTORY(setup)`` once (``setup`` is the first message it receives; the factory builds
whatever the work needs, e.g. a decoder) and gets back a *handler*, then calls the handler on
every further message and sends back what it returns. Messages are plain bytes in length-prefixed
frames over the worker's stdin and stdout (the callers encode JSON or packed arrays; never
pickle), so factories and handlers are ordinary typed functions of their modules, seen by linters,
type checkers and tests like any other code.

What the design guarantees, whoever uses it:

* **A fresh interpreter, not a fork**: nothing of the parent is inherited (threads of pyarrow or
  torch, open files, locks), and a script needs no ``if __name__ == "__main__"`` guard. The
  worker imports the same ``phonalign`` as the parent (its folder goes first on ``PYTHONPATH``).
* **Workers end with their stream**: a worker stops when its stdin reaches end of file, that is
  when the parent closes it or dies (the kernel closes the parent's end of the pipe), after the
  message in hand. Workers ignore Ctrl-C (SIGINT): the parent decides when they stop, so that an
  interrupted run can still finish and commit what it has (the TextGrid writer).
* **Stray output cannot break the stream**: the frames travel on private copies of the worker's
  stdin and stdout; its file descriptor 1 is pointed at stderr, so a ``print`` or a C library
  writing to stdout shows on stderr instead of corrupting a frame.
* **A worker that dies is detected** (:class:`WorkerPool`): the task it was working on comes back
  as a :class:`Reply` with ``data=None`` and the exit code, the tasks queued behind it go to the
  other workers, a new worker takes its place, and the rest goes on; no hang. A worker that dies
  before its factory returned is a set-up failure, the same for every worker, and raises
  :class:`WorkerError` instead of being retried.

:class:`WorkerProcess` is one worker with blocking ``send``/``receive`` (a stream of messages
answered only when asked, as the TextGrid writer is used); :class:`WorkerPool` is ``n`` workers
answering every task, results in input order.
"""

from __future__ import annotations

import importlib
import os
import selectors
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .errors import PhonalignError

__all__ = ["Handler", "Reply", "WorkerError", "WorkerPool", "WorkerProcess", "main"]

#: What a factory returns: called with each task message; returns the answer, or None for a
#: message that is not answered (a :class:`WorkerPool` handler must answer every task).
Handler = Callable[[bytes], bytes | None]

_HEAD = struct.Struct("<I")  # frame: payload length (little-endian uint32), then the payload
_READY = b"ready"  # a worker's first frame: its factory returned
_READ_SIZE = 1 << 16


class WorkerError(PhonalignError):
    """A worker process could not start, or stopped while a caller was waiting on it."""

    def __init__(self, message: str, *, exit_code: int | None = None, started: bool = True,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.started = started


def _frame(message: bytes) -> bytes:
    return _HEAD.pack(len(message)) + message


class _Frames:
    """Frames cut out of a byte stream read in pieces."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def pop(self) -> bytes | None:
        """The next complete frame's payload, or None when none is complete yet."""
        if len(self.buffer) < _HEAD.size:
            return None
        (n,) = _HEAD.unpack_from(self.buffer)
        end = _HEAD.size + n
        if len(self.buffer) < end:
            return None
        payload = bytes(self.buffer[_HEAD.size:end])
        del self.buffer[:end]
        return payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # a pipe may take part of a large frame at a time
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------------------------- worker side
def _resolve(target: str) -> Callable[[bytes], Handler]:
    """The factory named ``"package.module:function"`` (or ``module:Class.method``)."""
    module_name, _, qualname = target.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"a worker target is 'module:function', not {target!r}")
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"the worker target {target!r} is not callable")
    return cast(Callable[[bytes], Handler], obj)  # a factory, by the contract of the target string


def serve(target: str, stdin_fd: int, stdout_fd: int) -> int:
    """Run a worker on the two descriptors: set up with the first message, then answer the rest.

    Each answer is written as soon as it is made (one write per answer): when the worker dies,
    every answer it gave has reached the parent, so the first unanswered task is the one it died on.
    """
    frames = _Frames()

    def next_message() -> bytes | None:
        while (message := frames.pop()) is None:
            data = os.read(stdin_fd, _READ_SIZE)
            if not data:
                return None
            frames.feed(data)
        return message

    setup = next_message()
    if setup is None:
        return 0
    handler = _resolve(target)(setup)
    _write_all(stdout_fd, _frame(_READY))
    while (message := next_message()) is not None:
        answer = handler(message)
        if answer is not None:
            _write_all(stdout_fd, _frame(answer))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m phonalign.workers MODULE:FACTORY``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m phonalign.workers MODULE:FACTORY (frames on stdin and stdout)\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when its workers stop
    stdin_fd, stdout_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # prints (and C libraries writing to stdout) go to stderr, not into a frame
    try:
        return serve(args[0], stdin_fd, stdout_fd)
    except BrokenPipeError:  # the parent is gone: nobody to answer
        return 0


# ------------------------------------------------------------------------------------- parent side
def _environment() -> dict[str, str]:
    """The parent's environment, with this ``phonalign`` first on the path, so that a worker
    imports the same code as its parent (also from a source tree that is not installed)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class WorkerProcess:
    """One worker process running ``target``'s handler (see the module docstring).

    Parameters
    ----------
    target : str
        ``"package.module:factory"``: called as ``factory(setup)`` in the worker, it returns the
        handler of every further message.
    setup : bytes
        The factory's argument (e.g. settings as JSON).
    name : str
        What the worker is, for messages ("TextGrid writer").
    pipe_bytes : int, optional
        Size asked for the pipe into the worker (Linux ``F_SETPIPE_SZ``): how far the parent may
        run ahead of a worker it does not wait for.
    """

    def __init__(self, target: str, setup: bytes = b"", *, name: str, pipe_bytes: int | None = None) -> None:
        self.target = target
        self.name = name
        self.ready = False
        self._frames = _Frames()
        self._eof = False
        self.proc = subprocess.Popen([sys.executable, "-m", "phonalign.workers", target], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=_environment(), bufsize=0)
        if self.proc.stdin is None or self.proc.stdout is None:  # both were asked for as pipes
            raise WorkerError(f"the {name} process has no pipes", started=False)
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        if pipe_bytes:
            try:
                import fcntl

                fcntl.fcntl(self._stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), pipe_bytes)
            except (ImportError, OSError):  # not Linux, or above the system's limit: the default pipe
                pass
        self.send(setup)

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def fileno(self) -> int:
        """The descriptor the worker's answers arrive on (for :mod:`selectors`)."""
        return self._stdout.fileno()

    def send(self, message: bytes) -> None:
        """Send one message (blocks while the pipe is full); :class:`WorkerError` if the worker is gone."""
        try:
            _write_all(self._stdin.fileno(), _frame(message))
        except (BrokenPipeError, ValueError):  # ValueError: our end was closed already
            raise self._stopped() from None

    def read_available(self) -> list[bytes] | None:
        """Read once (call when :meth:`fileno` is readable): the answers complete so far, or None
        at end of stream (the worker stopped). The worker's first frame (ready) is not returned."""
        data = os.read(self.fileno(), _READ_SIZE)
        if not data:
            self._eof = True
            return None
        self._frames.feed(data)
        out = []
        while (message := self._frames.pop()) is not None:
            if not self.ready:
                self.ready = message == _READY
                continue
            out.append(message)
        return out

    def receive(self) -> bytes:
        """The next answer (blocks); :class:`WorkerError` if the worker stopped before it."""
        while True:
            message = self._frames.pop()
            if message is not None:
                if not self.ready:
                    self.ready = message == _READY
                    continue
                return message
            data = os.read(self.fileno(), _READ_SIZE) if not self._eof else b""
            if not data:
                self._eof = True
                raise self._stopped()
            self._frames.feed(data)

    def exit_code(self, timeout: float = 10.0) -> int | None:
        """The exit code of a worker whose stream ended (None if it is still running after ``timeout``)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _stopped(self) -> WorkerError:
        code = self.exit_code()
        if not self.ready:
            return WorkerError(f"the {self.name} process could not start (exit code {code})", exit_code=code,
                               started=False, hint="its error is printed above (stderr)")
        return WorkerError(f"the {self.name} process stopped (exit code {code})", exit_code=code)

    def close_stream(self) -> None:
        """Close both pipes: the worker stops after the message in hand (or at its next answer)."""
        for pipe in (self._stdin, self._stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def close(self, *, timeout: float = 5.0) -> int | None:
        """End the worker: close its stream, wait up to ``timeout`` seconds, then kill it.
        Returns its exit code."""
        self.close_stream()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass(frozen=True)
class Reply:
    """A pool's outcome of one task: the worker's answer, or the exit code of the worker that died on it."""

    index: int  # position of the task in the sequence given to WorkerPool.map
    data: bytes | None  # the answer; None when the worker died while working on this task
    exit_code: int | None = None  # of the worker that died on it (None if unknown or answered)

    @property
    def died(self) -> bool:
        """The worker died while working on this task (there is no answer)."""
        return self.data is None


class WorkerPool:
    """``workers`` processes running ``target``'s handler; tasks in, :class:`Reply` objects out in input order.

    Each worker has at most ``in_flight`` tasks at a time (1: one utterance at a time; more for
    short tasks, so that a worker never waits for the parent between them), and at most
    ``in_flight_bytes`` of them unanswered (one task at least), so that the pipe into a worker
    never fills while the worker waits to write its answers: no deadlock, whatever the sizes.

    Parameters
    ----------
    target, setup, name
        As :class:`WorkerProcess`.
    workers : int
        Number of processes (at least 1).
    in_flight : int
        Tasks sent to one worker before its first answer comes back.
    in_flight_bytes : int
        Bytes of unanswered tasks one worker may hold (well below a pipe's 64 KiB; a larger task
        is sent alone).
    """

    def __init__(self, target: str, setup: bytes = b"", *, workers: int, name: str, in_flight: int = 1,
                 in_flight_bytes: int = 16 << 10) -> None:
        if workers < 1 or in_flight < 1:
            raise ValueError("a worker pool needs at least one worker and one task in flight")
        self.target, self.setup, self.name = target, setup, name
        self.in_flight, self.in_flight_bytes = in_flight, in_flight_bytes
        self.deaths = 0  # workers replaced after dying on a task
        self.workers: list[WorkerProcess] = []
        try:
            for _ in range(workers):
                self.workers.append(WorkerProcess(target, setup, name=name))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.pid for w in self.workers]

    def map(self, tasks: Iterable[bytes]) -> Iterator[Reply]:
        """One :class:`Reply` per task, in the order of ``tasks`` (taken from it as they can be sent).

        Raises
        ------
        WorkerError
            A worker could not start (its factory failed): the same would happen to every worker.
        """
        return _Mapping(self, tasks).run()

    def replace(self, k: int) -> WorkerProcess:
        """End worker ``k`` (it died) and start another in its place."""
        self.workers[k].close(timeout=0.0)
        self.workers[k] = WorkerProcess(self.target, self.setup, name=self.name)
        self.deaths += 1
        return self.workers[k]

    def close(self) -> None:
        """End every worker (each stops after the task in hand, or is killed after 5 s)."""
        for w in self.workers:
            w.close_stream()
        for w in self.workers:
            w.close(timeout=5.0)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Mapping:
    """The state of one :meth:`WorkerPool.map`: what waits to be sent, what each worker holds, what is done.

    Tasks are taken from the iterable only when they can be sent (at most ``window`` ahead of the
    next result to hand out), so a stream of 10^6 tasks is never held at once.
    """

    def __init__(self, pool: WorkerPool, tasks: Iterable[bytes]) -> None:
        self.pool, self.source = pool, iter(tasks)
        self.pulled = 0  # tasks taken from the source so far
        self.exhausted = False
        self.payload: dict[int, bytes] = {}  # taken and not answered yet
        self.waiting: deque[int] = deque()  # taken, not sent (or sent to a worker that died): in order
        self.held: list[deque[int]] = [deque() for _ in pool.workers]  # sent to worker k, unanswered, in order
        self.held_bytes = [0] * len(pool.workers)
        self.broken: set[int] = set()  # workers whose pipe broke: their end of stream comes next
        self.done: dict[int, Reply] = {}
        self.next_out = 0
        # results wait in `done` while an earlier task is still out: bounded, so memory is too
        self.window = max(4 * len(pool.workers) * pool.in_flight, 16)
        self.selector = selectors.DefaultSelector()

    def run(self) -> Iterator[Reply]:
        try:
            for k, w in enumerate(self.pool.workers):
                self.selector.register(w.fileno(), selectors.EVENT_READ, k)
            while True:
                if self.next_out in self.done:
                    yield self.done.pop(self.next_out)
                    self.next_out += 1
                    continue
                self.feed()
                if self.exhausted and self.next_out >= self.pulled:
                    return
                for key, _ in self.selector.select():
                    self.collect(key.data)
        finally:
            self.selector.close()

    def candidate(self) -> int | None:
        """The next task to send: a waiting one, else one more from the source if the window allows."""
        if not self.waiting and not self.exhausted and self.pulled < self.next_out + self.window:
            try:
                task = next(self.source)
            except StopIteration:
                self.exhausted = True
            else:
                self.payload[self.pulled] = task
                self.waiting.append(self.pulled)
                self.pulled += 1
        return self.waiting[0] if self.waiting else None

    def fits(self, k: int, i: int) -> bool:
        held = self.held[k]
        return k not in self.broken and len(held) < self.pool.in_flight and (
            not held or self.held_bytes[k] + len(self.payload[i]) <= self.pool.in_flight_bytes)

    def feed(self) -> None:
        for k, w in enumerate(self.pool.workers):
            while (i := self.candidate()) is not None and self.fits(k, i):
                try:
                    w.send(self.payload[i])
                except WorkerError:  # it died: its end of stream tells what it held
                    self.broken.add(k)
                    break
                self.waiting.popleft()
                self.held[k].append(i)
                self.held_bytes[k] += len(self.payload[i])

    def answered(self, k: int, data: bytes | None, exit_code: int | None = None) -> None:
        i = self.held[k].popleft()
        self.held_bytes[k] -= len(self.payload.pop(i))
        self.done[i] = Reply(i, data, exit_code)

    def collect(self, k: int) -> None:
        answers = self.pool.workers[k].read_available()
        for data in answers or ():
            self.answered(k, data)
        if answers is None:
            self.died(k)

    def died(self, k: int) -> None:
        w = self.pool.workers[k]
        code = w.exit_code()
        if not w.ready:
            raise WorkerError(f"the {w.name} process could not start (exit code {code})", exit_code=code,
                              started=False, hint="its error is printed above (stderr)")
        if self.held[k]:  # the task it was working on failed; the ones queued behind it go to the others
            self.answered(k, None, code)
            self.waiting.extendleft(reversed(self.held[k]))
        self.held[k], self.held_bytes[k] = deque(), 0
        self.broken.discard(k)
        self.selector.unregister(w.fileno())
        self.selector.register(self.pool.replace(k).fileno(), selectors.EVENT_READ, k)


if __name__ == "__main__":
    sys.exit(main())
