"""The toolkit's exception family.

Every error raised for bad user input derives from :class:`LamError` and says *where* (file, line,
utterance) and *how to fix it*. Packages higher up (``analysis``, ``lam_train``) subclass these
rather than defining a second root, so a notebook or batch job can catch one type.
"""

from __future__ import annotations

from pathlib import Path


class LamError(Exception):
    """Root of all toolkit errors.

    Parameters
    ----------
    message : str
        What went wrong, in one sentence.
    path : str or Path, optional
        The file concerned.
    line : int, optional
        1-based line number in ``path``, where known.
    utt_id : str, optional
        The utterance concerned.
    hint : str, optional
        How to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        utt_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.utt_id = utt_id
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        if self.utt_id is not None:
            where.append(f"utterance {self.utt_id!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_report(self) -> dict:
        """A JSON-ready record for a batch job's ``report.json``."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "path": self.path,
            "line": self.line,
            "hint": self.hint,
        }


class PhonalignError(LamError):
    """Errors of the ``phonalign`` package."""


class CorpusError(PhonalignError):
    """A corpus directory or manifest cannot be read as asked."""


class AudioError(PhonalignError):
    """An audio file is missing, unreadable or empty."""


class TextGridError(PhonalignError):
    """A TextGrid cannot be parsed or is inconsistent."""


class PhoneSetError(PhonalignError):
    """A phone set or labelling option is unknown or cannot be detected."""


class AlignerError(PhonalignError):
    """An aligner backend failed or is not installed."""


class UnsafePathError(PhonalignError):
    """An identifier would write outside the output directory."""


class OutputError(PhonalignError, OSError):
    """Writing an output failed (disk full, read-only file system, no permission, too many open
    files). Also an :class:`OSError`, so code that catches OS errors around optional writes (caches)
    keeps working; ``errno`` is the operating system's error number where known."""


class DamagedFileError(PhonalignError):
    """A file the toolkit wrote earlier (or an input table) exists but cannot be parsed."""


class OutputFolderError(PhonalignError):
    """An output folder cannot be used: it holds files the toolkit did not write, belongs to
    another step, or holds a run with another corpus or other settings."""


class OutputLockedError(OutputFolderError):
    """Another process is writing into the same output folder (the message names it)."""
