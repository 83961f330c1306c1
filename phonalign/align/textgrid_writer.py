"""The alignment runner's TextGrid writer process: formatting and creating the output TextGrids
overlaps with reading and classifying the next utterances.

:class:`TextGridWriter` (in the runner's process) hands each TextGrid over as its tiers packed
by :func:`phonalign.textgrid_io.pack_tiers` (plain bytes, never pickle) to a
:mod:`phonalign.workers` process running :func:`file_writer`, which formats the text and writes
it atomically (:func:`phonalign.fsutil.atomic_path`). Nothing is answered per file: at
:meth:`TextGridWriter.sync` the writer answers once everything before it is on disk, with the
first error if there was one, and the runner commits a chunk only after that. Like every worker,
the writer ignores Ctrl-C (an interrupted run still commits the chunk it finished) and stops at the
end of its input, also when the runner is killed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

from ..errors import AlignerError
from ..fsutil import atomic_path
from ..textgrid_io import textgrid_text_from_packed
from ..workers import WorkerError, WorkerProcess

__all__ = ["TextGridWriter", "file_writer", "WRITER_TARGET"]

#: The writer process' factory (phonalign.workers runs it).
WRITER_TARGET = "phonalign.align.textgrid_writer:file_writer"
_PATH_LENGTH = struct.Struct("<I")


class _FileWriter:
    """Worker side: a message is ``<path length><path><packed tiers>``; an empty message asks for
    ``ok``, or ``err`` and the first error since the last such question."""

    def __init__(self) -> None:
        self.error: str | None = None

    def __call__(self, message: bytes) -> bytes | None:
        if not message:
            answer, self.error = ("err " + self.error) if self.error else "ok", None
            return answer.encode("utf-8", "replace")
        (n_path,) = _PATH_LENGTH.unpack_from(message)
        start = _PATH_LENGTH.size
        path = os.fsdecode(message[start:start + n_path])
        try:
            text = textgrid_text_from_packed(message[start + n_path:])
            with atomic_path(path) as tmp:
                tmp.write_bytes(text.encode("utf-8"))
        except (OSError, ValueError) as err:
            self.error = self.error or f"{path}: {err}"
        return None


def file_writer(setup: bytes) -> Callable[[bytes], bytes | None]:
    """The writer process' handler (``setup`` is unused)."""
    return _FileWriter()


class TextGridWriter:
    """Runner side: writes TextGrids through the writer process (started at once, so that its
    start-up overlaps with the runner's checks)."""

    def __init__(self) -> None:
        # a larger pipe lets the runner run ahead of the writer by ~300 TextGrids (Linux)
        self.worker = WorkerProcess(WRITER_TARGET, name="TextGrid writer", pipe_bytes=1 << 20)

    def write(self, path: Path, packed: bytes) -> None:
        """Queue ``path`` with its tiers packed by :func:`~phonalign.textgrid_io.pack_tiers`."""
        p = os.fsencode(path)
        try:
            self.worker.send(_PATH_LENGTH.pack(len(p)) + p + packed)
        except WorkerError:
            raise AlignerError("the TextGrid writer process stopped", path=path) from None

    def sync(self) -> None:
        """Return once every TextGrid queued so far is on disk; :class:`AlignerError` if one could
        not be written (or the writer stopped)."""
        try:
            self.worker.send(b"")
            answer = self.worker.receive().decode("utf-8", "replace")
        except WorkerError:
            answer = ""
        if answer != "ok":
            raise AlignerError(f"writing TextGrids failed: {answer[4:] or 'the writer process stopped'}",
                               hint="check free disk space and permissions of the output folder")

    def close(self) -> None:
        """Let the writer finish what is queued, and end it."""
        self.worker.close(timeout=60.0)
