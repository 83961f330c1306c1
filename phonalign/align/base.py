"""The aligner backend interface.

A backend turns utterances (audio + transcript) into :class:`~phonalign.records.Alignment`\\ s.
The runner (:mod:`phonalign.align.run`) owns everything around it: skipping utterances already
done, classifying phones, writing TextGrids and tables atomically, and the report. A backend
only aligns, and reports per-utterance failures as :class:`AlignResult` with an ``error`` instead
of raising, so that a batch goes on.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import errors
from ..errors import AlignerError, LamError
from ..records import Alignment, Interval, Utterance


@dataclass(frozen=True)
class AlignResult:
    """Outcome for one utterance: an alignment, or the error that prevented it.

    ``info`` carries backend facts for the report (e.g. ``{"oov": ["word", ...]}``).
    """

    utt_id: str
    alignment: Alignment | None
    error: LamError | None = None
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the utterance was aligned."""
        return self.alignment is not None and self.error is None


def encode_result(result: AlignResult) -> bytes:
    """``result`` as UTF-8 JSON, the form in which a worker process hands it over
    (:mod:`phonalign.workers`): times are exact (JSON keeps the shortest repr of every float), the
    error keeps its class name and fields, and nothing is pickled. :func:`decode_result` reads it."""
    message: dict = {"utt_id": result.utt_id, "info": result.info}
    a = result.alignment
    if a is not None:
        message["alignment"] = [a.xmin, a.xmax, [[i.start, i.end, i.label] for i in a.words],
                                [[i.start, i.end, i.label] for i in a.phones], a.source, a.extra]
    err = result.error
    if err is not None:
        message["error"] = [type(err).__name__, err.message, err.path, err.line, err.utt_id, err.hint]
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


def decode_result(data: bytes, *, fallback: type[LamError] = AlignerError) -> AlignResult:
    """The :class:`AlignResult` :func:`encode_result` encoded. An error whose class is not one of
    :mod:`phonalign.errors` comes back as ``fallback``, with the same message and fields."""
    message = json.loads(data)
    alignment = None
    if message.get("alignment") is not None:
        xmin, xmax, words, phones, source, extra = message["alignment"]
        alignment = Alignment(words=tuple(Interval(*w) for w in words), phones=tuple(Interval(*p) for p in phones),
                              xmin=xmin, xmax=xmax, source=source, extra=extra)
    error = None
    if message.get("error") is not None:
        kind, text, path, line, utt_id, hint = message["error"]
        cls = getattr(errors, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, LamError)):
            cls = fallback
        error = cls(text, path=path, line=line, utt_id=utt_id, hint=hint)
    return AlignResult(message["utt_id"], alignment, error, message.get("info") or {})


class Aligner(ABC):
    """Base class of aligner backends (``textgrid``, ``mfa``, ``pocketsphinx``)."""

    #: name used on the command line (``--aligner NAME``)
    name: str = ""
    #: phone set of the labels this backend writes, or None to detect it from the labels
    phone_set: str | None = None
    #: shortest phone the backend can produce, seconds (3-state HMMs at 10 ms frames: 0.03), or None
    #: when it has none (imported TextGrids); used by :mod:`phonalign.align.quality`
    min_phone_duration: float | None = None
    #: whether the backend aligns audio (then the runner measures detected speech against the
    #: alignment); False for imports, which read no audio
    aligns_audio: bool = True

    def check_available(self) -> None:  # noqa: B027 -- optional: a backend with nothing to install keeps this
        """Raise :class:`~phonalign.errors.AlignerError` with install instructions if the
        backend cannot run here. Called once, before any work."""

    @abstractmethod
    def align(self, utterances: Sequence[Utterance], workdir: Path, *, jobs: int = 1) -> Iterator[AlignResult]:
        """Align ``utterances``; yield one :class:`AlignResult` per utterance, in any order.

        ``workdir`` is a scratch directory inside the output directory that the backend may use
        (staging, logs); ``jobs`` is the number of parallel processes to use.
        """

    def config(self) -> dict:
        """Settings of this backend, recorded in the output's ``config.yaml``."""
        return {"aligner": self.name}

    def input_fingerprint(self, utterance: Utterance) -> str:
        """A digest of what this backend reads for ``utterance`` besides its audio and transcript
        (e.g. the TextGrid it imports), so that a resumed run redoes the utterance when it changed;
        ``""`` when there is nothing else. Must be cheap: it is called for every utterance."""
        return ""

    def plan(self, workdir: Path, *, jobs: int = 1) -> list[str]:
        """What :meth:`align` will do, one line per action, for ``lam run --dry-run`` (nothing is run).

        ``workdir`` is the scratch folder :meth:`align` will get. Backends that run external
        commands list them exactly as they will run them.
        """
        settings = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "aligner")
        return [f"{self.name} aligner in this process ({settings})"]
