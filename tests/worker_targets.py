"""Factories for :mod:`phonalign.workers` processes started by the tests (worker processes import
this module by name: the ``worker_targets`` fixture of ``conftest.py`` puts ``tests/`` on their path).

Each is what a real factory is, ``factory(setup: bytes) -> handler(task: bytes) -> bytes | None``,
with a fault a test needs: a worker that dies on one task, one whose set-up fails, one that prints.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

Handler = Callable[[bytes], bytes | None]


def echo(setup: bytes) -> Handler:
    """Answers ``setup + task``; exits with code 7 on the task ``b"die"``, sleeps on ``b"sleep:S"``,
    prints to stdout (which must not reach the parent as a frame) on ``b"print"``."""

    def handle(task: bytes) -> bytes:
        if task == b"die":
            os._exit(7)  # what a segfault in a C library looks like from outside
        if task.startswith(b"sleep:"):
            time.sleep(float(task[6:]))
        if task == b"print":
            print("stray output from a worker")
            sys.stdout.flush()
        return setup + task

    return handle


def pid(setup: bytes) -> Handler:
    """Answers the worker's process id."""
    return lambda task: str(os.getpid()).encode()


def failing_setup(setup: bytes) -> Handler:
    raise RuntimeError("the factory of this worker fails")


def pocketsphinx_dying_on_crash(setup: bytes) -> Handler:
    """pocketsphinx's decoder worker, exiting with code 3 on the utterance ``crash``."""
    from phonalign.align.pocketsphinx_backend import decoder_worker

    real = decoder_worker(setup)

    def align(task: bytes) -> bytes:
        if json.loads(task)[0] == "crash":
            os._exit(3)
        return real(task)

    return align


def textgrid_reader_dying_on(setup: bytes) -> Handler:
    """The TextGrid reader, exiting with code 5 when asked to read a file whose name holds ``crash``."""
    from phonalign.align.textgrid_backend import textgrid_reader

    real = textgrid_reader(setup)

    def read(task: bytes) -> bytes:
        if "crash" in json.loads(task)[1]:
            os._exit(5)
        return real(task)

    return read
