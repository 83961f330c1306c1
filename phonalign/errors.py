"""The toolkit's exception family.

Every error raised for bad user input derives from :class:`LamError` and says *where* (file, line,
utterance) and *how to fix it*. Packages higher up (``analysis``, ``lam_train``) subclass these
rather than defining a second root, so a notebook or batch job can catch one type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class UtteranceFailure:
    """One utterance a batch step could not process, and why: the fields of the error it got
    (:meth:`LamError.to_report`), kept by ``lam features`` and ``lam align-eval`` reports."""

    utt_id: str
    error: str  # the error's class name
    message: str
    path: str | None
    line: int | None
    hint: str | None

    @classmethod
    def from_error(cls, utt_id: str, err: LamError) -> UtteranceFailure:
        """The failure of ``utt_id`` that ``err`` describes."""
        return cls(utt_id, type(err).__name__, err.message, err.path, err.line, err.hint)

    def to_dict(self) -> dict[str, Any]:
        """The error's record without the utterance id (the reports that key failures by id use it)."""
        return {"error": self.error, "message": self.message, "path": self.path, "line": self.line,
                "hint": self.hint}

    @classmethod
    def from_dict(cls, utt_id: str, data: Mapping[str, Any]) -> UtteranceFailure:
        """The failure of ``utt_id`` from its record (:meth:`to_dict`, :meth:`LamError.to_report`);
        a path is kept as the string the JSON file holds."""
        path = data.get("path")
        return cls(utt_id=utt_id, error=str(data.get("error")), message=str(data.get("message")),
                   path=None if path is None else str(path), line=data.get("line"), hint=data.get("hint"))


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
