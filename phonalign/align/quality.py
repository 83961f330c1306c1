"""Alignment quality: measures per utterance and the ``suspect`` flag for alignments that cannot be right.

A forced aligner aligns whatever transcript it is given: a wrong sentence, half a transcript or a
three-word placeholder on 16 s of speech all come back as "aligned". What gives them away:

* **Phones squeezed to the aligner's minimum duration** (``n_at_min`` of ``n_phones``): the
  transcript holds more phones than the speech has room for. pocketsphinx and MFA models are
  3-state HMMs at 10 ms frames, so no phone can be shorter than 30 ms.
* **Detected speech labelled silence** (``unexplained_speech`` seconds, ``silence_share`` of the
  detected speech): the transcript covers less than what was said. Speech is detected with
  :func:`librosa.effects.split`: frames within :data:`SPEECH_TOP_DB` dB of the recording's loudest
  and at least :data:`SPEECH_ABOVE_FLOOR_DB` dB above its noise floor (without the second condition,
  every frame of a recording whose noise lies less than 35 dB below its loudest frame counts as
  speech, and every correct alignment of such a recording has seconds of "speech" labelled silence).
* **Speaking rate against the corpus** (``rate_ratio``): speech phones per second of detected
  speech, over the median of the corpus' utterances of the same language.
* **The backend's acoustic score** (``acoustic_score``) where the backend has one: pocketsphinx's
  log path score per frame, relative to the best-scoring model state of each frame; MFA's
  ``speech_log_likelihood`` (``alignment_analysis.csv``: mean per-frame log-likelihood of the speech
  phones). Neither has a scale that holds across recordings, models or backends, so a score is only
  ever judged against the other utterances of the same run and language (rule 4).
* **Transcript against the word tier** (imported TextGrids): the TextGrid's words, read back, must
  be the transcript's words (Chinese: character by character).

The flag (:func:`judge`) uses thresholds fixed from principles, not fitted to data:

1. ``squeezed``: a binomial test of ``n_at_min`` against a null share :data:`MIN_SHARE_NULL` = 0.2 of
   phones at the minimum (read speech puts about 10-15 % of phones at 30 ms or less: 7-12 % on
   the real LibriSpeech fixtures; 0.2 is a conservative ceiling), flagged at p < :data:`ALPHA` =
   0.01 (at most one false alarm per hundred correct utterances even at that ceiling, far fewer at
   the real share). A 4-phone word with 2 phones at the minimum is not flagged (p = 0.18); 7 of 12 is
   (p = 0.004).
2. ``unexplained``: at least :data:`UNEXPLAINED_SECONDS` = 1.0 s of detected speech labelled
   silence (two to three words of read speech, at about 2.5-3 words/s: more than the breaths,
   clicks and hesitations a correct transcript leaves out), or at least :data:`UNEXPLAINED_WORD` =
   0.3 s (one short word) that is also more than half of all detected speech (short clips).
3. ``rate``: a speaking rate below half or above twice the reference median (same language): one
   speaker's rate varies by about +-30 %, read speech between speakers by less than a factor of two.
   Only for utterances of at least :data:`RATE_MIN_PHONES` = 10 phones: a rate counted from fewer
   has a relative error of about 1/sqrt(n) > 30 % (one-word clips).
4. ``score``: an acoustic score whose modified z-score (median and MAD) is below -:data:`SCORE_Z`
   (Iglewicz and Hoaglin's outlier rule), against the same reference.
5. ``transcript``: the word tier differs from the transcript.

The reference of rules 3 and 4 is the utterances of the same language that rules 1, 2 and 5 do not
flag, when there are at least :data:`RATE_MIN_UTTERANCES` of them (else the rules are not applied):
a median of a mostly correct corpus, not pulled by the transcripts already caught.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..records import Alignment

__all__ = ["QualityMeasures", "Verdict", "Reference", "reference", "measure", "judge", "transcript_mismatch",
           "speech_intervals", "MIN_SHARE_NULL", "ALPHA", "UNEXPLAINED_SECONDS", "UNEXPLAINED_SHARE", "SPEECH_TOP_DB",
           "SPEECH_ABOVE_FLOOR_DB", "FLOOR_PERCENTILE"]

MIN_SHARE_NULL = 0.2
ALPHA = 0.01
UNEXPLAINED_SECONDS = 1.0
UNEXPLAINED_WORD = 0.3
UNEXPLAINED_SHARE = 0.5
RATE_FACTOR = 2.0
RATE_MIN_UTTERANCES = 5
#: A rate from fewer phones is too uncertain to compare (relative error about 1/sqrt(n) > 30 %).
RATE_MIN_PHONES = 10
#: Modified z-score (Iglewicz and Hoaglin) below which an acoustic score is an outlier.
SCORE_Z = 3.5
#: Frames within this many dB of the recording's loudest frame count as speech ...
SPEECH_TOP_DB = 35.0
#: ... when they are also this many dB above the recording's noise floor: twice the floor's amplitude.
#: The RMS level of steady noise over a 25 ms frame varies by well under 1 dB, so noise frames stay
#: below; on THCHS-30 (floor 26 dB below the loudest frame) a 10 or 12 dB margin left so little
#: detected speech that half transcripts went unnoticed, 6 dB caught them all (tests/test_align_quality.py).
SPEECH_ABOVE_FLOOR_DB = 6.0
#: Percentile of the frame levels taken as the noise floor (the quietest 5 % of frames: pauses and
#: closures, even in a clip cut tight at the speech).
FLOOR_PERCENTILE = 5.0
#: 25 ms frames every 10 ms, as the aligners use.
_FRAME, _HOP = 400, 160
_SR = 16000
_TOL = 0.0011  # a phone at the minimum duration, give or take a millisecond of rounding


@dataclass(frozen=True)
class QualityMeasures:
    """Quality measures of one aligned utterance (seconds; None where not measured).

    Attributes
    ----------
    n_phones : int
        Speech phones (pauses and noise left out).
    n_at_min : int or None
        Of those, phones at the aligner's minimum duration (None when the backend has none).
    min_share : float or None
        ``n_at_min / n_phones``.
    speech_seconds : float or None
        Detected speech in the recording (:func:`speech_intervals`); None without audio.
    unexplained_speech : float or None
        Detected speech that the alignment labels silence or noise, seconds.
    silence_share : float or None
        ``unexplained_speech / speech_seconds``.
    phone_rate : float or None
        Speech phones per second of detected speech.
    acoustic_score : float or None
        The backend's per-frame log score (pocketsphinx, MFA), when it has one.
    transcript : str or None
        How the word tier differs from the transcript, or None when they agree (or no check).
    """

    n_phones: int
    n_at_min: int | None = None
    min_share: float | None = None
    speech_seconds: float | None = None
    unexplained_speech: float | None = None
    silence_share: float | None = None
    phone_rate: float | None = None
    acoustic_score: float | None = None
    transcript: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready (rounded) form, as stored in the report."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> QualityMeasures:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Verdict:
    """Whether an alignment is suspect, and why (one reason per failed rule)."""

    suspect: bool
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """The reasons joined with ``; `` (None when not suspect)."""
        return "; ".join(self.reasons) if self.reasons else None


def speech_intervals(wave: np.ndarray) -> np.ndarray:
    """Stretches of speech in a 16 kHz recording: ``(n, 2)`` float64 start/end seconds.

    :func:`librosa.effects.split` with 25 ms frames every 10 ms. A frame is speech when its RMS level
    is within :data:`SPEECH_TOP_DB` dB of the loudest frame *and* at least
    :data:`SPEECH_ABOVE_FLOOR_DB` dB above the recording's noise floor (the
    :data:`FLOOR_PERCENTILE`-th percentile of the frame levels). A recording whose loudest frame is
    not that far above its floor has no detectable speech: ``(0, 2)``.
    """
    import librosa

    if wave.size < _FRAME:
        return np.zeros((0, 2))
    y = np.asarray(wave, np.float32)
    rms = librosa.feature.rms(y=y, frame_length=_FRAME, hop_length=_HOP)[0]  # the frames split uses
    level = 20.0 * np.log10(np.maximum(rms, 1e-10))
    peak, floor = float(level.max()), float(np.percentile(level, FLOOR_PERCENTILE))
    top_db = min(SPEECH_TOP_DB, peak - floor - SPEECH_ABOVE_FLOOR_DB)
    if top_db <= 0:
        return np.zeros((0, 2))
    iv = librosa.effects.split(y, top_db=top_db, frame_length=_FRAME, hop_length=_HOP)
    return np.asarray(iv, np.float64).reshape(-1, 2) / _SR


def _speech_phone_mask(alignment: Alignment, infos_classes: Sequence[str]) -> list[bool]:
    return [c not in ("silence", "unknown") for c in infos_classes]


def measure(alignment: Alignment, unit_classes: Sequence[str], *, min_duration: float | None,
            speech: np.ndarray | None = None, offset: float = 0.0, acoustic_score: float | None = None,
            transcript: str | None = None) -> QualityMeasures:
    """Quality measures of one alignment.

    Parameters
    ----------
    alignment : Alignment
        The utterance's intervals, seconds.
    unit_classes : sequence of str, length ``len(alignment.phones)``
        Unit class of each phone interval (``silence`` and ``unknown`` are not speech phones).
    min_duration : float or None
        The backend's shortest possible phone, seconds (None: not measured).
    speech : ndarray (n, 2), optional
        Detected speech (:func:`speech_intervals`), seconds from the start of the audio given.
    offset : float
        Time of that audio's first sample on the alignment's timeline (an interval of a longer
        recording), seconds.
    acoustic_score : float, optional
        The backend's per-frame score.
    transcript : str, optional
        How the word tier differs from the transcript (:func:`transcript_mismatch`).
    """
    is_speech = _speech_phone_mask(alignment, unit_classes)
    phones = [p for p, s in zip(alignment.phones, is_speech, strict=True) if s]
    n = len(phones)
    n_min = share = None
    if min_duration is not None and n:
        n_min = sum(1 for p in phones if p.end - p.start <= min_duration + _TOL)
        share = n_min / n
    speech_s = unexplained = sil_share = rate = None
    if speech is not None:
        speech = np.asarray(speech, np.float64).reshape(-1, 2) + offset
        speech_s = float(np.sum(speech[:, 1] - speech[:, 0]))
        if phones:
            starts = np.array([p.start for p in phones])
            ends = np.array([p.end for p in phones])
            # detected speech covered by speech phones: interval intersections, vectorised
            lo = np.maximum(speech[:, None, 0], starts[None, :])
            hi = np.minimum(speech[:, None, 1], ends[None, :])
            covered = float(np.clip(hi - lo, 0.0, None).sum())
        else:
            covered = 0.0
        unexplained = max(speech_s - covered, 0.0)
        sil_share = unexplained / speech_s if speech_s > 0 else None
        rate = n / speech_s if speech_s > 0 else None
    return QualityMeasures(n_phones=n, n_at_min=n_min, min_share=share, speech_seconds=speech_s,
                           unexplained_speech=unexplained, silence_share=sil_share, phone_rate=rate,
                           acoustic_score=acoustic_score, transcript=transcript)


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(K >= k) for K ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    return float(sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1)))


@dataclass(frozen=True)
class Reference:
    """Corpus reference of one language for rules 3 and 4: medians (and MAD) over utterances the
    other rules do not flag; None where fewer than :data:`RATE_MIN_UTTERANCES` have the measure."""

    median_rate: float | None = None
    median_score: float | None = None
    mad_score: float | None = None


def reference(measures: Sequence[QualityMeasures]) -> Reference:
    """The :class:`Reference` of one language's utterances (those :func:`judge` without a
    reference does not flag)."""
    clean = [m for m in measures if not judge(m).suspect]
    rates = [m.phone_rate for m in clean if m.phone_rate]
    scores = np.array([m.acoustic_score for m in clean if m.acoustic_score is not None], np.float64)
    med_rate = float(np.median(rates)) if len(rates) >= RATE_MIN_UTTERANCES else None
    med = mad = None
    if scores.size >= RATE_MIN_UTTERANCES:
        med = float(np.median(scores))
        mad = float(np.median(np.abs(scores - med)))
    return Reference(med_rate, med, mad)


def judge(m: QualityMeasures, ref: Reference | None = None) -> Verdict:
    """Apply the rules of the module docstring to one utterance's measures; rules 3 and 4 only
    with a corpus ``ref`` (:func:`reference`)."""
    reasons = []
    if m.n_at_min is not None and m.n_phones:
        p = _binom_sf(m.n_at_min, m.n_phones, MIN_SHARE_NULL)
        if p < ALPHA:
            reasons.append(f"{m.n_at_min} of {m.n_phones} phones squeezed to the aligner's minimum duration "
                           f"(p = {p:.1g}): the transcript has more than the audio holds")
    if m.unexplained_speech is not None and m.silence_share is not None and (
            m.unexplained_speech >= UNEXPLAINED_SECONDS
            or (m.unexplained_speech >= UNEXPLAINED_WORD and m.silence_share > UNEXPLAINED_SHARE)):
        reasons.append(f"{m.unexplained_speech:.2f} s of detected speech ({m.silence_share:.0%}) aligned as "
                       "silence: the transcript covers less than was said")
    if ref is not None and m.phone_rate is not None and ref.median_rate and m.n_phones >= RATE_MIN_PHONES:
        ratio = m.phone_rate / ref.median_rate
        if ratio < 1 / RATE_FACTOR or ratio > RATE_FACTOR:
            reasons.append(f"{m.phone_rate:.1f} phones per second of speech, {ratio:.2f} x the corpus median "
                           f"({ref.median_rate:.1f})")
    if (ref is not None and m.acoustic_score is not None and ref.median_score is not None
            and ref.mad_score is not None and ref.mad_score > 0):
        z = 0.6745 * (m.acoustic_score - ref.median_score) / ref.mad_score
        if z < -SCORE_Z:
            reasons.append(f"acoustic score {m.acoustic_score:.4g} per frame, modified z = {z:.1f} against the "
                           f"corpus median {ref.median_score:.4g}: the audio does not fit the transcript")
    if m.transcript:
        reasons.append(f"the word tier differs from the transcript ({m.transcript})")
    return Verdict(bool(reasons), tuple(reasons))


# -- transcript against word tier ----------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_MARKUP = re.compile(r"\[[^\]]*\]|<[^>]*>|\{[^}]*\}")
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*", re.UNICODE)
_CJK_SPLIT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _tokens(text: str) -> list[str]:
    """Comparable tokens: CJK characters one by one, other words lower-cased; markup and
    punctuation dropped."""
    text = unicodedata.normalize("NFKC", _MARKUP.sub(" ", text)).lower()
    out: list[str] = []
    for w in _WORD.findall(text):
        out.extend(_CJK_SPLIT.findall(w) if _CJK.search(w) else [w])
    return out


def transcript_mismatch(text: str, alignment: Alignment) -> str | None:
    """How the word tier of ``alignment`` differs from ``text``, or None when they agree.

    Only for alignments that carry their own words (imported TextGrids); the comparison is token by
    token after dropping markup, punctuation and case, Chinese character by character (a word tier
    of multi-character words matches a transcript without spaces). An empty transcript or an
    alignment without words is not checked.
    """
    want = _tokens(text or "")
    words = [w.label for w in alignment.words if w.label.strip()]
    have = _tokens(" ".join(words))
    if not want or not words or want == have:
        return None
    import difflib

    sm = difflib.SequenceMatcher(None, want, have, autojunk=False)
    def show(tokens: list[str]) -> str:
        return "".join(tokens) if _CJK.search("".join(tokens)) else " ".join(tokens)

    for op, a0, a1, b0, b1 in sm.get_opcodes():
        if op != "equal":
            return (f"transcript {show(want[a0:a1])!r} vs TextGrid {show(have[b0:b1])!r} "
                    f"at token {a0 + 1} of {len(want)}")
    return None
