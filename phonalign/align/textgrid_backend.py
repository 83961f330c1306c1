"""The ``textgrid`` backend: import alignments that already exist as TextGrids.

For each utterance it reads ``<utt_id>.TextGrid`` (or a TIMIT ``.PHN``) from the folder given as ``textgrids`` (also
``<speaker>/<utt_id>.TextGrid`` there, the layout ``mfa align`` writes), or, without that folder,
the TextGrid beside the audio file (``speaker/utt.wav`` + ``speaker/utt.TextGrid``). Reading is
:func:`phonalign.textgrid_io.read_alignment`; a missing or broken TextGrid is a per-utterance
failure, reported and skipped by the runner.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import AlignerError, LamError, TextGridError
from ..fingerprint import content_digest
from ..fsutil import check_utt_id, is_safe_name
from ..records import Utterance
from ..textgrid_io import read_alignment
from ..workers import WorkerPool
from .base import Aligner, AlignResult, decode_result, encode_result

__all__ = ["TextGridAligner"]

_SUFFIXES = (".TextGrid", ".textgrid", ".Textgrid", ".PHN", ".phn")  # .PHN: TIMIT's hand labels


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
    aligns_audio = False

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
            # the speaker comes from the corpus (a manifest column): only a plain folder name may
            # steer the look-up, so that '../..' cannot lead it outside --textgrids
            if utt.speaker and is_safe_name(utt.speaker):
                out += [self.textgrids / utt.speaker / f"{utt.utt_id}{s}" for s in _SUFFIXES]
            return out
        audio = Path(utt.audio_path)
        return [audio.with_name(f"{audio.stem}{s}") for s in _SUFFIXES]

    def _options(self) -> dict:
        return {"speaker": self.speaker, "words_tier": self.words_tier, "phones_tier": self.phones_tier,
                "duplicate_tiers": self.duplicate_tiers}

    def align(self, utterances: Sequence[Utterance], workdir: Path, *, jobs: int = 1) -> Iterator[AlignResult]:
        """Yield one result per utterance, in input order (``jobs`` reader processes)."""
        opts = self._options()
        if jobs > 1 and len(utterances) > 4 * _IN_FLIGHT:
            yield from _read_in_processes(utterances, self._find, opts, jobs)
            return
        for utt in utterances:
            yield _read_one((utt.utt_id, self._find(utt)), opts)

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

    def input_fingerprint(self, utterance: Utterance) -> str:
        """Where the utterance's TextGrid is and a digest of its content ("missing" if none)."""
        where = self._find(utterance)
        return "missing" if isinstance(where, LamError) else f"{where}:{content_digest(where)}"


def _read_one(task: tuple[str, str | TextGridError], opts: dict) -> AlignResult:
    utt_id, where = task
    if isinstance(where, LamError):
        return AlignResult(utt_id, None, where)
    try:
        return AlignResult(utt_id, read_alignment(where, **opts), None, {"textgrid": where})
    except LamError as err:
        err.utt_id = utt_id
        return AlignResult(utt_id, None, err, {"textgrid": where})


# -- parallel reading --------------------------------------------------------------------------
# Parsing is pure Python, so jobs > 1 means processes: a phonalign.workers pool running
# textgrid_reader. A task is [utt_id, path] as JSON, its answer the AlignResult
# (phonalign.align.base.encode_result: times exact, no pickle). Up to _IN_FLIGHT tasks go to a
# reader at once, so that it never waits for this process between files; results come back in
# input order. A reader that dies fails the utterance it was reading (the others go on).

#: Tasks sent to one reader process before its first answer comes back.
_IN_FLIGHT = 32
#: The reader processes' factory (phonalign.workers runs it in each of them).
READER_TARGET = "phonalign.align.textgrid_backend:textgrid_reader"


def textgrid_reader(setup: bytes) -> Callable[[bytes], bytes]:
    """Worker side of parallel reading: ``setup`` is the reader options as JSON; the handler reads
    the TextGrid of one task (``[utt_id, path]`` as JSON) and answers its encoded result."""
    opts = json.loads(setup)

    def read(task: bytes) -> bytes:
        utt_id, path = json.loads(task)
        return encode_result(_read_one((utt_id, path), opts))

    return read


def _read_in_processes(utterances: Sequence[Utterance], find: Callable[[Utterance], str | TextGridError],
                       opts: dict, jobs: int) -> Iterator[AlignResult]:
    # every utterance in input order: found ones become tasks (taken by the pool as it sends
    # them), missing ones are answered here, in their place among the others
    order: deque[tuple[str, str | TextGridError]] = deque()

    def tasks() -> Iterator[bytes]:
        for u in utterances:
            where = find(u)
            order.append((u.utt_id, where))
            if isinstance(where, str):
                yield json.dumps([u.utt_id, where]).encode("utf-8")

    def missing_before_next() -> Iterator[AlignResult]:
        while order:
            utt_id, where = order[0]
            if isinstance(where, str):
                return
            order.popleft()
            yield AlignResult(utt_id, None, where)

    with WorkerPool(READER_TARGET, json.dumps(opts).encode("utf-8"), workers=jobs, name="TextGrid reader",
                    in_flight=_IN_FLIGHT) as pool:
        for reply in pool.map(tasks()):
            yield from missing_before_next()
            utt_id, where = order.popleft()  # the utterance of this reply: the pool keeps the order
            if reply.data is not None:
                yield decode_result(reply.data, fallback=TextGridError)
                continue
            yield AlignResult(utt_id, None, AlignerError(
                f"the TextGrid reader process died reading this file (exit code {reply.exit_code})",
                path=str(where), utt_id=utt_id, hint="check the TextGrid; run with -j 1 to see the error"),
                {"textgrid": str(where)})
        yield from missing_before_next()
