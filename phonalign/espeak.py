"""The espeak-ng binding: libespeak-ng through ctypes, audio plus phoneme and word events.

espeak-ng is a formant synthesiser: it knows where every phoneme it produces starts, and with
``espeakINITIALIZE_PHONEME_EVENTS`` it tells us, as ``espeakEVENT_PHONEME`` events whose ``sample``
field counts output samples at 22050 Hz. :func:`synthesize_raw` returns that, untouched. Two rooms
build on it: the demo-corpus generator (:mod:`phonalign.synth`, which turns the events into
ground-truth boundaries) and pocketsphinx's grapheme-to-phoneme fallback
(:func:`phonalign.align.pocketsphinx_backend.espeak_arpabet`, which reads the phonemes only).

The library has global state, so one handle serves the process, behind a lock.
Voices: ``en-us`` (with variants such as ``en-us+f2``) for English, ``cmn-latn-pinyin`` for
Mandarin (pinyin with tone digits; the plain ``cmn`` voice reads the digits as English numbers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PhonalignError

__all__ = ["ESPEAK_RATE", "LANGUAGE_VOICES", "PhonemeEvent", "Prosody", "RawSynthesis", "SynthError", "WordEvent",
           "espeak_available", "espeak_version", "is_pause", "synthesize_raw"]

#: espeak-ng's native output rate, Hz; the ``sample`` field of its events counts at this rate.
ESPEAK_RATE = 22050

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

    def _on_audio(self, wav: Any, n_samples: int, events: Any) -> int:
        # wav: POINTER(c_short), events: POINTER(_Event), as declared by _CALLBACK
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
