"""The ``textgrid`` backend: import alignments that already exist as TextGrids.

For each utterance it reads ``<utt_id>.TextGrid`` from the folder given as ``textgrids`` (also
``<speaker>/<utt_id>.TextGrid`` there, the layout ``mfa align`` writes), or, without that folder,
the TextGrid beside the audio file (``speaker/utt.wav`` + ``speaker/utt.TextGrid``). Reading is
:func:`phonalign.textgrid_io.read_alignment`; a missing or broken TextGrid is a per-utterance
failure, reported and skipped by the runner.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..errors import AlignerError, LamError, TextGridError
from ..fsutil import check_utt_id
from ..records import Utterance
from ..textgrid_io import read_alignment
from .base import Aligner, AlignResult

__all__ = ["TextGridAligner"]

_SUFFIXES = (".TextGrid", ".textgrid", ".Textgrid")


class TextGridAligner(Aligner):
    """Import existing TextGrids as alignments.

    Parameters
    ----------
    textgrids : str or Path, optional
        Folder holding ``<utt_id>.TextGrid`` (or ``<speaker>/<utt_id>.TextGrid``). Default: the
        TextGrid beside each audio file.
    speaker, words_tier, phones_tier, duplicate_tiers
        Passed to :func:`~phonalign.textgrid_io.read_alignment`.
    phone_set : str, optional
        Phone set of the labels, if known; otherwise the runner detects it.
    """

    name = "textgrid"

    def __init__(
        self,
        textgrids: str | Path | None = None,
        *,
        speaker: str | None = None,
        words_tier: str | None = None,
        phones_tier: str | None = None,
        duplicate_tiers: str = "error",
        phone_set: str | None = None,
    ) -> None:
        self.textgrids = None if textgrids is None else Path(textgrids).expanduser()
        self.speaker = speaker
        self.words_tier = words_tier
        self.phones_tier = phones_tier
        self.duplicate_tiers = duplicate_tiers
        self.phone_set = phone_set

    def check_available(self) -> None:
        if self.textgrids is not None and not self.textgrids.is_dir():
            raise AlignerError("the TextGrid folder does not exist", path=self.textgrids,
                               hint="give the folder holding <utt_id>.TextGrid files with --textgrids")
        if self.duplicate_tiers not in ("error", "rename"):
            raise AlignerError(f"duplicate_tiers must be 'error' or 'rename', not {self.duplicate_tiers!r}")

    def candidates(self, utt: Utterance) -> list[Path]:
        """Where this utterance's TextGrid may be, in the order tried."""
        check_utt_id(utt.utt_id)
        if self.textgrids is not None:
            out = [self.textgrids / f"{utt.utt_id}{s}" for s in _SUFFIXES]
            if utt.speaker:
                out += [self.textgrids / utt.speaker / f"{utt.utt_id}{s}" for s in _SUFFIXES]
            return out
        audio = Path(utt.audio_path)
        return [audio.with_name(f"{audio.stem}{s}") for s in _SUFFIXES]

    def _options(self) -> dict:
        return {"speaker": self.speaker, "words_tier": self.words_tier, "phones_tier": self.phones_tier,
                "duplicate_tiers": self.duplicate_tiers}

    def align(self, utterances: Sequence[Utterance], workdir: Path, *, jobs: int = 1) -> Iterator[AlignResult]:
        """Yield one result per utterance, in input order."""
        tasks = [(u.utt_id, self._find(u)) for u in utterances]
        opts = self._options()
        if jobs > 1 and len(tasks) > 64:
            # Parsing is pure Python: processes, not threads. Results come back in input order.
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                yield from pool.map(_read_one, tasks, [opts] * len(tasks),
                                    chunksize=max(16, min(512, len(tasks) // (8 * jobs))))
        else:
            for task in tasks:
                yield _read_one(task, opts)

    def _find(self, utt: Utterance) -> str | TextGridError:
        try:
            check_utt_id(utt.utt_id)
        except LamError as err:
            return TextGridError(err.message, utt_id=utt.utt_id, hint=err.hint)
        if self.textgrids is None:
            # the common case first, with string operations: this runs once per utterance
            guess = os.path.splitext(utt.audio_path)[0] + ".TextGrid"
            if os.path.isfile(guess):
                return guess
        paths = self.candidates(utt)
        for p in paths:
            if p.is_file():
                return str(p)
        return TextGridError(
            "no TextGrid for this utterance (looked for "
            + ", ".join(str(p) for p in paths if p.suffix == ".TextGrid") + ")",
            path=paths[0], utt_id=utt.utt_id,
            hint="put <utt_id>.TextGrid beside the audio, or give their folder with --textgrids DIR",
        )

    def config(self) -> dict:
        return {"aligner": self.name, "textgrids": None if self.textgrids is None else str(self.textgrids),
                **self._options(), "phone_set": self.phone_set}


def _read_one(task: tuple[str, str | TextGridError], opts: dict) -> AlignResult:
    utt_id, where = task
    if isinstance(where, LamError):
        return AlignResult(utt_id, None, where)
    try:
        return AlignResult(utt_id, read_alignment(where, **opts), None, {"textgrid": where})
    except LamError as err:
        err.utt_id = utt_id
        return AlignResult(utt_id, None, err, {"textgrid": where})
