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
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import AlignerError, LamError, TextGridError
from ..fingerprint import content_digest
from ..fsutil import check_utt_id, is_safe_name
from ..records import Utterance
from ..textgrid_io import read_alignment
from .base import Aligner, AlignResult

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
        if jobs > 1 and len(utterances) > 4 * _BLOCK:
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
# Parsing is pure Python, so jobs > 1 means processes. Each reader is a `python -c` child that
# takes JSON task lines on stdin and answers one JSON line per task (times survive JSON exactly:
# shortest round-trip reprs). No pickle. Blocks of tasks go round-robin to the readers and are
# collected in the same order, so results stream out in input order; each reader has at most two
# blocks in flight, which keeps the pipes from filling up both ways.

_BLOCK = 32

_READER_CODE = """
import json, sys
from phonalign.errors import LamError
from phonalign.textgrid_io import read_alignment
opts = json.loads(sys.argv[1])
for line in sys.stdin:
    task = json.loads(line)
    try:
        a = read_alignment(task["path"], **opts)
        out = {"a": [a.xmin, a.xmax, [[i.start, i.end, i.label] for i in a.words],
                     [[i.start, i.end, i.label] for i in a.phones], a.source, a.extra]}
    except LamError as err:
        out = {"e": [type(err).__name__, err.message, err.path, err.line, err.hint]}
    sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\\n")
    if task["flush"]:
        sys.stdout.flush()
"""


def _result_from_json(utt_id: str, where: str, line: str) -> AlignResult:
    from .. import errors
    from ..records import Alignment, Interval

    msg = json.loads(line)
    if "e" in msg:
        kind, message, path, lineno, hint = msg["e"]
        cls = getattr(errors, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, LamError)):
            cls = TextGridError
        return AlignResult(utt_id, None, cls(message, path=path, line=lineno, utt_id=utt_id, hint=hint),
                           {"textgrid": where})
    xmin, xmax, words, phones, source, extra = msg["a"]
    alignment = Alignment(words=tuple(Interval(*w) for w in words), phones=tuple(Interval(*p) for p in phones),
                          xmin=xmin, xmax=xmax, source=source, extra=extra)
    return AlignResult(utt_id, alignment, None, {"textgrid": where})


def _read_in_processes(utterances: Sequence[Utterance], find, opts: dict, jobs: int) -> Iterator[AlignResult]:
    import phonalign

    env = dict(os.environ)
    root = str(Path(phonalign.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    readers = [subprocess.Popen([sys.executable, "-c", _READER_CODE, json.dumps(opts)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8")
               for _ in range(jobs)]
    blocks = [utterances[i:i + _BLOCK] for i in range(0, len(utterances), _BLOCK)]
    sent: list[list[tuple[str, str | LamError]]] = []

    def send(j: int) -> None:
        tasks = [(u.utt_id, find(u)) for u in blocks[j]]
        todo = [where for _, where in tasks if isinstance(where, str)]
        stdin = readers[j % jobs].stdin
        assert stdin is not None  # opened with stdin=PIPE
        for k, where in enumerate(todo):
            stdin.write(json.dumps({"path": where, "flush": k == len(todo) - 1}) + "\n")
        stdin.flush()
        sent.append(tasks)

    try:
        for j in range(min(len(blocks), 2 * jobs)):
            send(j)
        for j in range(len(blocks)):
            stdout = readers[j % jobs].stdout
            assert stdout is not None  # opened with stdout=PIPE
            for utt_id, where in sent[j]:
                if not isinstance(where, str):
                    yield AlignResult(utt_id, None, where)
                    continue
                line = stdout.readline()
                if not line:
                    raise AlignerError("a TextGrid reader process stopped unexpectedly",
                                       hint="rerun; the utterances done so far are kept")
                yield _result_from_json(utt_id, where, line)
            sent[j] = []
            if j + 2 * jobs < len(blocks):
                send(j + 2 * jobs)
    finally:
        for proc in readers:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
        for proc in readers:
            if proc.stdout is not None:
                proc.stdout.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
