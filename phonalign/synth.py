"""Synthetic speech with exact phone boundaries: espeak-ng through ctypes.

This module owns the generator of the bundled demo corpus (:mod:`scripts.make_demo_corpus`).
espeak-ng is a formant synthesiser: it knows where every phoneme it produces starts, and with
``espeakINITIALIZE_PHONEME_EVENTS`` it tells us, as ``espeakEVENT_PHONEME`` events whose ``sample``
field counts output samples at 22050 Hz. That gives ground-truth phone boundaries without any
aligner, which is what the alignment-accuracy measurements (:mod:`phonalign.align_eval`) need.

Three corrections turn espeak's events into the boundaries a phonetician (and TIMIT, and every
forced aligner) would draw:

* **Stop closures.** espeak marks a stop or affricate at its *burst*; the closure silence before it
  is left at the end of the previous phone. :func:`move_stop_closures` moves the boundary back to
  the start of the closure, found from the short-time energy of the previous phone. A short pause
  symbol right before a stop (Mandarin ``_|``, about 40 ms) *is* that closure and joins the stop.
* **Pauses.** espeak's pause symbols (``_``, ``_:``, ``_|``, ``_!`` ...) become empty labels
  (silence); adjacent silences merge and zero-length intervals disappear.
* **Sample rate.** Audio is resampled from 22050 Hz to 16 kHz with soxr; times are kept in
  seconds, so boundaries do not move.

Speech and boundaries vary by a few milliseconds between runs of espeak-ng (it is not bit-exact
across builds), so the corpus is generated once and committed; this module is what regenerates it.
Voices: ``en-us`` (with variants such as ``en-us+f2``) for English, ``cmn-latn-pinyin`` for
Mandarin (pinyin with tone digits; the plain ``cmn`` voice reads the digits as English numbers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PhonalignError
from .records import EMOTIONS, Alignment, Interval

#: espeak-ng's native output rate, Hz; the ``sample`` field of its events counts at this rate.
ESPEAK_RATE = 22050
#: rate of the audio this module returns, Hz (what every speech model of the toolkit reads).
OUTPUT_RATE = 16000

#: voice for each language code; ``cmn-latn-pinyin`` reads ``ni3 hao3`` as Mandarin syllables.
LANGUAGE_VOICES = {"en": "en-us", "zh": "cmn-latn-pinyin"}

# espeak_EVENT_TYPE and other constants, from speak_lib.h (espeak-ng 1.51).
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # never let the library call exit() inside our process
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}

#: stops and affricates (espeak mnemonics, English and Mandarin) whose closure precedes the burst.
STOP_PHONES = frozenset(
    {"p", "t", "k", "b", "d", "g", "tS", "dZ", "t#", "d#", "t2", "d2", "k2", "t3",
     "ph", "th", "kh", "ts", "tsh", "ts.", "ts.h", "tS;", "tS;h"}
)
#: a pause at most this long (seconds) right before a stop is taken as the stop's closure.
MAX_CLOSURE_PAUSE = 0.060


class SynthError(PhonalignError):
    """libespeak-ng is missing, or it could not synthesise a text as asked."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    # Field order and types exactly as ``espeak_EVENT`` in speak_lib.h.
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Prosody:
    """espeak-ng's prosody parameters for one rendition.

    ``rate`` words per minute (80-450), ``pitch`` base pitch 0-100 (50 normal), ``range`` pitch
    range 0-100 (0 monotone, 50 normal), ``volume`` amplitude 0-200 (100 normal).
    """

    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100


@dataclass(frozen=True)
class PhonemeEvent:
    """One ``espeakEVENT_PHONEME``: ``sample`` (at 22050 Hz) where the phoneme starts, its
    mnemonic, and the 1-based character position of the word it belongs to."""

    sample: int
    label: str
    text_position: int


@dataclass(frozen=True)
class WordEvent:
    """One ``espeakEVENT_WORD``: 1-based character position and length of the word in the text."""

    sample: int
    text_position: int
    length: int


@dataclass(frozen=True)
class RawSynthesis:
    """What espeak-ng produced for one text, untouched.

    ``samples``: (n_samples,) int16 at ``sample_rate`` (22050 Hz). The last phoneme event is the
    end-of-utterance pause, whose sample equals ``len(samples)``.
    """

    samples: np.ndarray
    sample_rate: int
    phonemes: tuple[PhonemeEvent, ...]
    words: tuple[WordEvent, ...]


@dataclass(frozen=True)
class Synthesis:
    """A synthesised utterance: ``wave`` (n,) float32 in [-1, 1] at ``sample_rate`` Hz, and its
    ground-truth :class:`~phonalign.records.Alignment` (seconds; phones in espeak mnemonics,
    silences as ``""``)."""

    wave: np.ndarray
    sample_rate: int
    alignment: Alignment
    raw: RawSynthesis
    #: phone intervals in samples of ``raw`` (after the closure move), for :func:`build_alignment`
    intervals: tuple[tuple[int, int, str, int], ...] = ()


class _Espeak:
    """The process-wide libespeak-ng handle (the library has global state: one per process)."""

    _lock = threading.Lock()
    _instance: _Espeak | None = None

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as err:
            raise SynthError(
                f"libespeak-ng cannot be loaded ({err})",
                hint="install it: `apt-get install espeak-ng libespeak-ng1` (Debian/Ubuntu) or "
                "`brew install espeak-ng`; the committed demo corpus does not need it",
            ) from None
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate != ESPEAK_RATE:
            raise SynthError(f"libespeak-ng initialised at {rate} Hz, expected {ESPEAK_RATE} Hz",
                             hint="check the espeak-ng installation (espeak-ng --version)")
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[PhonemeEvent] = []
        self._words: list[WordEvent] = []
        # The ctypes callback object must outlive every synthesis: keep it on the instance.
        self._callback = _CALLBACK(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                label = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._phonemes.append(PhonemeEvent(int(ev.sample), label, int(ev.text_position)))
            elif ev.type == _EVENT_WORD:
                self._words.append(WordEvent(int(ev.sample), int(ev.text_position), int(ev.length)))
            i += 1
        return 0  # 0 = continue synthesis

    def version(self) -> str:
        return self.lib.espeak_Info(None).decode()

    def synth(self, text: str, *, voice: str, prosody: Prosody) -> RawSynthesis:
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SynthError(f"espeak-ng has no voice {voice!r}",
                                 hint="list voices with `espeak-ng --voices`; variants are written "
                                 "like 'en-us+f2'")
            for key, value in (("rate", prosody.rate), ("pitch", prosody.pitch),
                               ("range", prosody.range), ("volume", prosody.volume)):
                self.lib.espeak_SetParameter(_PARAM[key], int(value), 0)
            self._chunks, self._phonemes, self._words = [], [], []
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data)
            err = self.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                raise SynthError(f"espeak_Synth failed with code {err} for {text!r}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return RawSynthesis(samples.astype(np.int16), ESPEAK_RATE, tuple(self._phonemes),
                                tuple(self._words))


def espeak_available() -> bool:
    """True if libespeak-ng can be loaded and initialised in this process."""
    try:
        _Espeak.get()
    except SynthError:
        return False
    return True


def espeak_version() -> str:
    """Version string of the loaded libespeak-ng (e.g. ``'1.51'``)."""
    return _Espeak.get().version()


def synthesize_raw(text: str, *, voice: str, prosody: Prosody = Prosody()) -> RawSynthesis:
    """Run espeak-ng on ``text`` and collect its audio, phoneme and word events.

    Parameters
    ----------
    text : str
        UTF-8 text; for ``cmn-latn-pinyin`` pinyin syllables with tone digits (``"ni3 hao3"``).
    voice : str
        espeak-ng voice name, optionally with a variant (``"en-us+f2"``).
    prosody : Prosody
        Rate, pitch, range and volume.
    """
    return _Espeak.get().synth(text, voice=voice, prosody=prosody)


def is_pause(label: str) -> bool:
    """espeak's pause symbols all start with ``_`` (``_``, ``_:``, ``_!``, ``_|`` ...)."""
    return label == "" or label.startswith("_")


def phone_intervals(raw: RawSynthesis) -> list[tuple[int, int, str, int]]:
    """Phone intervals in samples from the phoneme events of ``raw``.

    Returns
    -------
    list of (start, end, label, text_position)
        ``start``/``end`` in samples at ``raw.sample_rate``; pauses get the label ``""`` (and
        text position 0); adjacent pauses are merged and zero-length intervals dropped. The first
        interval starts at 0 and the last ends at ``len(raw.samples)``.
    """
    n = len(raw.samples)
    events = sorted(raw.phonemes, key=lambda e: e.sample)  # stable: equal samples keep their order
    out: list[tuple[int, int, str, int]] = []
    bounds = [min(max(e.sample, 0), n) for e in events] + [n]
    if events and bounds[0] > 0:
        out.append((0, bounds[0], "", 0))
    for ev, start, end in zip(events, bounds[:-1], bounds[1:]):
        if end <= start:
            continue
        label = "" if is_pause(ev.label) else ev.label
        pos = 0 if label == "" else ev.text_position
        if out and label == "" and out[-1][2] == "":
            out[-1] = (out[-1][0], end, "", 0)
        else:
            out.append((start, end, label, pos))
    return out


def short_time_energy_db(x: np.ndarray, *, window: int) -> np.ndarray:
    """Energy in dB of a centred moving window at every sample.

    Parameters
    ----------
    x : (n,) float array, amplitude in [-1, 1].
    window : window length in samples.

    Returns
    -------
    (n,) float64, dB relative to full scale (digital silence gives -120 dB).
    """
    x = np.asarray(x, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    half = window // 2
    idx = np.arange(len(x))
    lo = np.clip(idx - half, 0, len(x))
    hi = np.clip(idx + half + 1, 0, len(x))
    mean = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return 10.0 * np.log10(mean + 1e-12)


def move_stop_closures(
    intervals: Sequence[tuple[int, int, str, int]],
    samples: np.ndarray,
    *,
    sample_rate: int = ESPEAK_RATE,
    drop_db: float = 20.0,
    window_s: float = 0.005,
    min_keep_s: float = 0.015,
) -> list[tuple[int, int, str, int]]:
    """Move the start of each stop or affricate back to the start of its closure.

    espeak reports a stop at its burst; the closure (silence, or a weak voice bar for b d g) sits
    at the end of the previous phone. For a stop after a speech phone, the closure is the final
    stretch of that phone whose short-time energy stays more than ``drop_db`` below the phone's
    peak; the boundary moves to its start, leaving the previous phone at least ``min_keep_s``.
    A pause of at most :data:`MAX_CLOSURE_PAUSE` right before a stop is the closure itself and
    joins the stop. Stops after longer pauses keep their start (a closure inside a pause cannot
    be seen).

    Parameters
    ----------
    intervals : as returned by :func:`phone_intervals` (samples).
    samples : (n,) int16 or float audio the intervals index.
    sample_rate : Hz of ``samples``.
    drop_db : how far below the previous phone's peak energy counts as closure, dB.
    window_s : energy window, seconds.
    min_keep_s : the previous phone keeps at least this much, seconds.

    Returns
    -------
    list of (start, end, label, text_position), same length as ``intervals`` unless a pause was
    absorbed by its stop.
    """
    x = np.asarray(samples, dtype=np.float64)
    if np.issubdtype(np.asarray(samples).dtype, np.integer):
        x = x / 32768.0
    window = max(int(round(window_s * sample_rate)), 1)
    min_keep = int(round(min_keep_s * sample_rate))
    max_pause = int(round(MAX_CLOSURE_PAUSE * sample_rate))
    out = [list(iv) for iv in intervals]
    i = 1
    while i < len(out):
        start, end, label, pos = out[i]
        prev = out[i - 1]
        if label in STOP_PHONES:
            if prev[2] == "":
                if prev[1] - prev[0] <= max_pause:
                    out[i][0] = prev[0]
                    if i >= 2:
                        out[i - 2][1] = prev[0]
                    del out[i - 1]
                    continue  # the list shrank: re-examine the same stop at its new index
            else:
                # energy inside the previous phone only, so the burst does not leak into it
                seg = short_time_energy_db(x[prev[0]:start], window=window)
                if len(seg) > min_keep:
                    threshold = seg.max() - drop_db
                    loud = np.flatnonzero(seg >= threshold)
                    # last loud sample of the previous phone: the closure begins after it
                    closure = prev[0] + int(loud[-1]) + 1 if loud.size else prev[0]
                    closure = max(closure, prev[0] + min_keep)
                    if closure < start:
                        out[i - 1][1] = closure
                        out[i][0] = closure
        i += 1
    return [tuple(iv) for iv in out]  # type: ignore[misc]


def _word_spans(raw: RawSynthesis, text: str) -> list[tuple[int, list[str]]]:
    """(text position, words) of each ``espeakEVENT_WORD``. espeak sometimes speaks two words as
    one (``out of``): its word event then covers the text up to the next event, several words."""
    events = sorted(raw.words, key=lambda w: w.text_position)
    out = []
    for k, w in enumerate(events):
        stop = events[k + 1].text_position - 1 if k + 1 < len(events) else len(text)
        span = text[w.text_position - 1:max(stop, w.text_position - 1 + w.length)]
        words = [t for t in (tok.strip(" .,;:!?\"'") for tok in span.split()) if t]
        if words:
            out.append((w.text_position, words))
    return out


def _phone_count(word: str, voice: str) -> int:
    """How many phones espeak gives ``word`` said on its own."""
    raw = synthesize_raw(word, voice=voice)
    return sum(1 for e in raw.phonemes if not is_pause(e.label))


def build_alignment(
    raw: RawSynthesis,
    text: str,
    intervals: Sequence[tuple[int, int, str, int]],
    *,
    voice: str | None = None,
    source: str | None = None,
) -> Alignment:
    """Words and phones in seconds from phone intervals (samples at ``raw.sample_rate``).

    A phone belongs to the word whose ``espeakEVENT_WORD`` has the same text position; a word
    spans its first phone's start to its last phone's end. Gaps between words are empty. Where
    espeak spoke several words as one (``out of``), their phones are shared out by the number of
    phones each word has on its own (needs ``voice``); if the counts do not add up, the words keep
    one interval labelled with all of them.

    Raises
    ------
    SynthError
        If a word of the text got no phones, or phones of one word are not contiguous.
    """
    sr = raw.sample_rate
    n = len(raw.samples)
    phones = tuple(Interval(s / sr, e / sr, lab) for s, e, lab, _ in intervals)
    words: list[Interval] = []
    by_pos: dict[int, list[int]] = {}
    for k, (_, _, lab, pos) in enumerate(intervals):
        if lab:
            by_pos.setdefault(pos, []).append(k)
    for pos, labels in _word_spans(raw, text):
        ks = by_pos.get(pos)
        if not ks:
            raise SynthError(f"espeak-ng produced no phones for {' '.join(labels)!r} of {text!r}",
                             hint="rephrase the sentence or spell the word as it is pronounced")
        if ks != list(range(ks[0], ks[-1] + 1)):
            raise SynthError(f"the phones of {' '.join(labels)!r} are not contiguous in {text!r}")
        counts = [_phone_count(w, voice) for w in labels] if len(labels) > 1 and voice else []
        if counts and sum(counts) == len(ks) and all(counts):
            first = ks[0]
            for word, c in zip(labels, counts):
                words.append(Interval(intervals[first][0] / sr, intervals[first + c - 1][1] / sr, word))
                first += c
        else:
            words.append(Interval(intervals[ks[0]][0] / sr, intervals[ks[-1]][1] / sr, " ".join(labels)))
    # Fill the gaps with empty intervals so the tier covers the grid, as Praat expects.
    tier: list[Interval] = []
    cursor = 0.0
    for w in words:
        if w.start > cursor:
            tier.append(Interval(cursor, w.start, ""))
        tier.append(w)
        cursor = w.end
    if cursor < n / sr:
        tier.append(Interval(cursor, n / sr, ""))
    return Alignment(words=tuple(tier), phones=phones, xmin=0.0, xmax=n / sr, source=source)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (n,) audio from ``sr_in`` to ``sr_out`` Hz with soxr (high quality); float32."""
    import soxr

    x = np.asarray(x)
    x = x.astype(np.float32) / 32768.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def spoken_text(text: str) -> str:
    """``text`` with a final full stop if it has no final punctuation (sentence intonation)."""
    return text if text.rstrip()[-1:] in {".", "!", "?"} else text.rstrip() + "."


def synthesize(
    text: str,
    *,
    voice: str,
    prosody: Prosody = Prosody(),
    sample_rate: int = OUTPUT_RATE,
    move_closures: bool = True,
    split_words: bool = True,
) -> Synthesis:
    """Synthesise ``text`` and return 16 kHz audio with its ground-truth alignment.

    Parameters
    ----------
    text : str
        Words separated by spaces (pinyin with tone digits for ``cmn-latn-pinyin``); a final
        full stop is added for sentence intonation if the text has no final punctuation.
    voice : str
        espeak-ng voice, e.g. ``"en-us+f2"``, ``"cmn-latn-pinyin+m3"``.
    prosody : Prosody
        Rate, pitch, range, volume.
    sample_rate : int
        Output rate, Hz (boundaries are in seconds and do not depend on it).
    move_closures : bool
        Apply :func:`move_stop_closures` (the ground truth of the demo corpus does).
    split_words : bool
        Share out the phones of words espeak spoke as one (``out of``) by synthesising each word
        alone. espeak-ng keeps state between calls, so these extra calls can shift the timing of
        the *next* synthesis by a few ms; the corpus script therefore splits words only after
        all audio is made (``split_words=False``, then :func:`build_alignment` with ``voice``).

    Returns
    -------
    Synthesis
        ``wave`` (n,) float32 at ``sample_rate``; alignment with phones in espeak mnemonics.
    """
    spoken = spoken_text(text)
    raw = synthesize_raw(spoken, voice=voice, prosody=prosody)
    if len(raw.samples) == 0 or not raw.phonemes:
        raise SynthError(f"espeak-ng produced no speech for {text!r} with voice {voice!r}")
    intervals = phone_intervals(raw)
    if move_closures:
        intervals = move_stop_closures(intervals, raw.samples, sample_rate=raw.sample_rate)
    alignment = build_alignment(raw, spoken, intervals, voice=voice if split_words else None)
    wave = resample(raw.samples.astype(np.float32) / 32768.0, raw.sample_rate, sample_rate)
    return Synthesis(wave=wave, sample_rate=sample_rate, alignment=alignment, raw=raw,
                     intervals=tuple(intervals))


# --------------------------------------------------------------------------------------------
# Emotion renditions: prosody per emotion, jittered per utterance with a seeded generator.
# --------------------------------------------------------------------------------------------

#: Centre of each emotion's prosody, following the acoustic correlates reported for acted
#: emotional speech (e.g. Scherer 2003; Juslin & Laukka 2003): happiness raises pitch level and
#: range and speeds up; anger is loud and fast with a high but flatter, tense contour; sadness is
#: low, narrow, slow and soft. Values are espeak-ng parameters (see :class:`Prosody`).
EMOTION_PROSODY: dict[str, Prosody] = {
    "Neutral": Prosody(rate=165, pitch=45, range=45, volume=100),
    "Happiness": Prosody(rate=200, pitch=75, range=95, volume=115),
    "Anger": Prosody(rate=190, pitch=58, range=25, volume=190),
    "Sadness": Prosody(rate=120, pitch=25, range=10, volume=60),
}
#: Per-utterance jitter (uniform, +- this much) so that each class has some spread.
PROSODY_JITTER = Prosody(rate=12, pitch=6, range=8, volume=12)


def jittered_prosody(emotion: str, rng: np.random.Generator) -> Prosody:
    """The prosody of ``emotion`` with uniform jitter drawn from ``rng`` (clipped to espeak's
    valid ranges)."""
    if emotion not in EMOTION_PROSODY:
        raise SynthError(f"unknown emotion {emotion!r}", hint=f"use one of {', '.join(EMOTIONS)}")
    centre = EMOTION_PROSODY[emotion]
    d = rng.uniform(-1.0, 1.0, size=4)
    return Prosody(
        rate=int(np.clip(round(centre.rate + d[0] * PROSODY_JITTER.rate), 80, 450)),
        pitch=int(np.clip(round(centre.pitch + d[1] * PROSODY_JITTER.pitch), 0, 100)),
        range=int(np.clip(round(centre.range + d[2] * PROSODY_JITTER.range), 0, 100)),
        volume=int(np.clip(round(centre.volume + d[3] * PROSODY_JITTER.volume), 1, 200)),
    )


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to synthesise one utterance of the demo corpus."""

    utt_id: str
    language: str
    speaker: str
    voice: str
    sentence_index: int
    text: str
    emotion: str
    split: str
    prosody: Prosody


def plan_corpus(
    sentences: dict[str, Sequence[str]],
    voices: dict[str, Sequence[tuple[str, str]]],
    splits: dict[str, Sequence[str]],
    *,
    seed: int,
    emotions: Sequence[str] = EMOTIONS,
) -> list[UtterancePlan]:
    """The deterministic list of utterances of a corpus: language x voice x sentence x emotion.

    Parameters
    ----------
    sentences : language -> sentences (pinyin with tone digits for ``zh``).
    voices : language -> list of (speaker id, espeak voice).
    splits : language -> split name of each sentence (same length as its sentences); the corpus
        is split by sentence, so every speaker and emotion appears in every split.
    seed : seeds the prosody jitter; the same arguments always give the same plan.
    emotions : emotion classes to render.
    """
    rng = np.random.default_rng(seed)
    plan: list[UtterancePlan] = []
    for lang in sorted(sentences):
        sents = list(sentences[lang])
        if len(splits[lang]) != len(sents):
            raise SynthError(f"{lang}: {len(sents)} sentences but {len(splits[lang])} split labels")
        for speaker, voice in voices[lang]:
            for k, text in enumerate(sents):
                for emotion in emotions:
                    plan.append(UtterancePlan(
                        utt_id=f"{speaker}_s{k:02d}_{emotion[:3].lower()}",
                        language=lang, speaker=speaker, voice=voice, sentence_index=k, text=text,
                        emotion=emotion, split=splits[lang][k], prosody=jittered_prosody(emotion, rng),
                    ))
    return plan


# --------------------------------------------------------------------------------------------
# The bundled demo corpus (phonalign/demo_data), built by scripts/make_demo_corpus.py.
# --------------------------------------------------------------------------------------------

#: Our own sentences (no third-party text). English words are all in CMUdict, so the English
#: half aligns with pocketsphinx without out-of-vocabulary words; together they cover the six
#: vowel classes in both languages. Mandarin is pinyin with tone digits (characters in the README).
DEMO_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The black cat sat on a warm mat",
        "Please take the blue boat to the old town",
        "My father keeps his red books in a wooden box",
        "We need three cups of hot tea before noon",
        "She bought a good pair of boots in the city",
        "The dog ran out of the house after the ball",
        "Ten people waited for the late bus today",
        "A small bird sang a sweet song in the garden",
        "He saw a brown cow eat green grass by the road",
        "The boy broke the toy but nobody was upset",
    ),
    "zh": (
        "wo3 men2 qu4 bei3 jing1 kan4 peng2 you3",
        "ta1 de5 ge1 ge5 mei2 you3 lai2",
        "ma1 ma5 zai4 chu2 fang2 zuo4 fan4",
        "xiao3 gou3 zai4 hua1 yuan2 li3 pao3",
        "lao3 shi1 gei3 wo3 men2 jiang3 gu4 shi5",
        "zhe4 ben3 shu1 fei1 chang2 you3 yi4 si5",
        "di4 di5 mai3 le5 yi4 shuang1 xin1 xie2",
        "ming2 tian1 wo3 yao4 zuo4 huo3 che1 hui2 jia1",
        "ta1 men2 zai4 gong1 yuan2 li3 chang4 ge1",
        "qing3 ni3 ba3 chuang1 hu5 guan1 shang4",
    ),
}
#: Chinese characters of the Mandarin sentences, for people reading the corpus.
DEMO_HANZI: tuple[str, ...] = (
    "我们去北京看朋友", "他的哥哥没有来", "妈妈在厨房做饭", "小狗在花园里跑", "老师给我们讲故事", "这本书非常有意思", "弟弟买了一双新鞋",
    "明天我要坐火车回家", "他们在公园里唱歌", "请你把窗户关上",
)
#: Speakers: espeak-ng voice variants (two male, one female per language); three voices keep the
#: committed corpus under 15 MB.
DEMO_VOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("en_m1", "en-us+m1"), ("en_m3", "en-us+m3"), ("en_f2", "en-us+f2")),
    "zh": (("zh_m1", "cmn-latn-pinyin+m1"), ("zh_m3", "cmn-latn-pinyin+m3"), ("zh_f2", "cmn-latn-pinyin+f2")),
}
#: Split by sentence: every speaker and every emotion is in every split, and no sentence text is
#: shared between splits (s00-s05 train, s06-s07 dev, s08-s09 test).
DEMO_SPLITS: dict[str, tuple[str, ...]] = {
    lang: ("train",) * 6 + ("dev",) * 2 + ("test",) * 2 for lang in ("en", "zh")
}
#: Seed of the prosody jitter of the committed corpus.
DEMO_SEED = 20240704


def demo_plan(seed: int = DEMO_SEED) -> list[UtterancePlan]:
    """The plan of the committed demo corpus (240 utterances)."""
    return plan_corpus(DEMO_SENTENCES, DEMO_VOICES, DEMO_SPLITS, seed=seed)
