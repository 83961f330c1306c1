"""pocketsphinx backend (``--aligner pocketsphinx``): offline English word and phone alignment.

The pocketsphinx 5 wheel ships a US-English acoustic model and CMUdict, so this backend needs
nothing but ``pip``. Alignment is two passes of the decoder over the same audio: a word-level pass
(``set_align_text``) and a sub-word pass (``set_alignment`` then ``get_alignment()``), which gives
ARPAbet phones without stress.

Settings found on this machine (and kept as defaults): pocketsphinx's defaults fail on clean or
synthetic audio, because digital silence gives log-energy features of minus infinity and the
pruning drops the only path. What makes every utterance of the demo corpus align:

* silence padding (``padding`` seconds, 0.4 by default) at both ends, removed from the times;
* a little noise: +-1 LSB, seeded from the utterance id so that results do not depend on which
  worker process aligned which utterance or in what order (pocketsphinx's own ``dither`` draws
  from one global generator per process, so it does);
* very wide beams (``beam``, ``wbeam``, ``pbeam`` = 1e-200), no cap on active HMMs
  (``maxhmmpf=-1``) and no best-path rescoring (``bestpath=False``): a forced alignment has one
  word sequence, so a wide search costs little.

Times: pocketsphinx numbers frames (10 ms hop, 25.625 ms window). A phone that starts at frame
``i`` changes between the analysis windows centred at ``(i-1)*hop + wlen/2`` and
``i*hop + wlen/2``; we put the boundary half way, at ``i*hop + wlen/2 - hop/2`` (7.8 ms after the
frame's first sample). Measured on the demo corpus, reporting the frame's first sample instead
leaves a median bias of -8 ms.

Out-of-vocabulary words are listed in the result's ``info["oov"]`` and the utterance fails with
a hint, unless a pronunciation comes from ``dictionary`` (a CMUdict-format file: ``WORD  PH PH``,
``WORD(2)  ...`` for variants, ``;;;`` comments; stress digits are dropped) or from the optional
``g2p="espeak"`` fallback (espeak-ng's English letter-to-sound rules through libespeak-ng, mapped
to ARPAbet with :func:`phonalign.phonesets.to_arpabet`). English only: other languages fail per
utterance with a clear reason.

With ``jobs > 1``, utterances go one at a time to worker processes (:mod:`phonalign.workers`
running :func:`decoder_worker`), each with its own decoder; jobs and results cross the pipes as
JSON bytes (no pickle). A worker that dies is replaced and its utterance reported as failed.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import AlignerError, AudioError, LamError
from ..records import Alignment, Interval, Utterance
from ..workers import WorkerPool
from .base import Aligner, AlignResult, decode_result, encode_result

#: The phones of pocketsphinx's en-us model (CMUdict ARPAbet without stress, plus silence).
ARPABET_PHONES = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)
#: Words of the decoder's output that are not words of the transcript.
_FILLER_WORDS = frozenset({"<s>", "</s>", "<sil>", "(NULL)", "[NOISE]", "++NOISE++"})
#: Peak amplitude below which audio counts as silent (-80 dBFS).
SILENT_PEAK = 1e-4
_ALT = re.compile(r"\(\d+\)$")


@dataclass(frozen=True)
class PocketsphinxSettings:
    """Everything a worker process needs to build its decoder (plain values only)."""

    dictionary: str | None = None
    g2p: str | None = None
    padding: float = 0.4
    beam: float = 1e-200
    wbeam: float = 1e-200
    pbeam: float = 1e-200
    maxhmmpf: int = -1
    noise_lsb: int = 1
    hmm: str | None = None
    lexicon: str | None = None


def read_cmudict(path: str | Path) -> dict[str, list[list[str]]]:
    """Read a CMUdict-format pronunciation file.

    Lines are ``WORD PH PH ...`` (tab or spaces); ``WORD(2)`` marks a variant; ``;;;`` and ``#``
    start comments; stress digits are dropped (``AH0`` -> ``AH``).

    Returns
    -------
    dict
        lower-case word -> list of pronunciations (lists of ARPAbet phones).

    Raises
    ------
    AlignerError
        The file is missing or a line has no phones or a phone the model does not know
        (with the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise AlignerError("pronunciation dictionary not found", path=path,
                           hint="pass a CMUdict-format file: one 'WORD  PH PH ...' per line")
    out: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8-sig", errors="strict") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith(";;;") or line.startswith("#"):
                continue
            parts = line.split()
            word = _ALT.sub("", parts[0]).lower()
            phones = [re.sub(r"\d$", "", p).upper() for p in parts[1:]]
            if not phones:
                raise AlignerError(f"no pronunciation for {parts[0]!r}", path=path, line=lineno,
                                   hint="write the word, then its ARPAbet phones: 'TOMATO  T AH M EY T OW'")
            bad = [raw for raw, p in zip(parts[1:], phones, strict=True) if p not in ARPABET_PHONES]
            if bad:
                raise AlignerError(
                    f"unknown phone(s) {', '.join(bad)} for {parts[0]!r}", path=path, line=lineno,
                    hint="use the 39 ARPAbet phones of CMUdict (AA AE AH ... ZH), stress digits allowed",
                )
            out.setdefault(word, []).append(phones)
    return out


def espeak_arpabet(word: str) -> list[str]:
    """Pronunciation of an English ``word`` by espeak-ng's letter-to-sound rules, in ARPAbet.

    Raises
    ------
    AlignerError
        libespeak-ng or the phone-set table is not available, or the word gives no phones.
    """
    from .. import espeak

    try:
        raw = espeak.synthesize_raw(word, voice="en-us")
    except espeak.SynthError as err:
        raise AlignerError(f"espeak-ng G2P is not available: {err.message}",
                           hint="install espeak-ng, or pass --dictionary with the missing words") from None
    labels = [e.label for e in raw.phonemes if not espeak.is_pause(e.label)]
    from ..phonesets import to_arpabet

    # expand=True: espeak's r-coloured vowels become two phones, as CMUdict spells them (A@ -> AA R)
    mapped = to_arpabet(labels, phone_set="espeak_en", expand=True)
    phones = [re.sub(r"\d$", "", p).upper() for item in mapped if item for p in item.split()]
    phones = [p for p in phones if p in ARPABET_PHONES]
    if not phones:
        raise AlignerError(f"espeak-ng gave no pronunciation for {word!r}")
    return phones


class Job(NamedTuple):
    """What a decoder needs to align one utterance (plain values: it crosses to worker processes as JSON)."""

    utt_id: str
    audio_path: str
    text: str
    language: str


class _Worker:
    """One decoder and its dictionary additions; lives in one process."""

    def __init__(self, settings: PocketsphinxSettings) -> None:
        from pocketsphinx import Decoder

        self.s = settings
        kwargs = dict(lm=None, dither=False, bestpath=False, beam=settings.beam, wbeam=settings.wbeam,
                      pbeam=settings.pbeam, maxhmmpf=settings.maxhmmpf, loglevel="FATAL")
        if settings.hmm:
            kwargs["hmm"] = settings.hmm
        if settings.lexicon:
            kwargs["dict"] = settings.lexicon
        self.decoder = Decoder(**kwargs)
        config = self.decoder.config
        self.hop = 1.0 / float(config["frate"])
        self.frame_offset = float(config["wlen"]) / 2.0 - self.hop / 2.0
        # The feature extractor's state (cepstral mean among others) carries over from one
        # utterance to the next inside a decoder, so an utterance's alignment would depend on what
        # the process aligned before, and so on -j. Every pass starts from a reinitialised
        # extractor and the initial mean instead (reinit_feat costs ~0.1 ms).
        self.cmn0 = self.decoder.get_cmn()
        self.g2p_cache: dict[str, list[str] | None] = {}
        if settings.dictionary:
            entries = [(word if j == 0 else f"{word}({j + 1})", " ".join(pron))
                       for word, prons in read_cmudict(settings.dictionary).items()
                       for j, pron in enumerate(prons)]
            for k, (name, phones) in enumerate(entries):
                # an entry of the same name replaces CMUdict's: the user's file wins; the search
                # is rebuilt once, after the last word
                self.decoder.add_word(name, phones, update=(k == len(entries) - 1))

    # -- one utterance --------------------------------------------------------------------
    def align_one(self, job: Job) -> AlignResult:
        """The alignment of one utterance, or the error that prevented it (never raised)."""
        try:
            return self._align(job)
        except LamError as err:
            err.utt_id = err.utt_id or job.utt_id
            return AlignResult(job.utt_id, None, err)
        except RuntimeError as err:  # pocketsphinx raises RuntimeError on search failures
            return AlignResult(job.utt_id, None, AlignerError(f"pocketsphinx failed: {err}", utt_id=job.utt_id,
                                                              path=job.audio_path))

    def _pronounce(self, words: list[str]) -> tuple[list[str], list[str], list[str], dict[str, str]]:
        """Return (words for the decoder, OOV words without pronunciation, words from G2P, words
        replaced by a spelled-out number or the parts of a compound)."""
        from ..text_norm import expand_word

        oov, g2p_words, out = [], [], []
        expanded: dict[str, str] = {}
        known = lambda w: self.decoder.lookup_word(w) is not None  # noqa: E731
        for w in words:
            if known(w):
                out.append(w)
                continue
            parts = expand_word(w, known)
            if parts is not None and all(known(p) for p in parts):
                out.extend(parts)
                expanded[w] = " ".join(parts)
                continue
            if self.s.g2p == "espeak":
                if w not in self.g2p_cache:
                    try:
                        self.g2p_cache[w] = espeak_arpabet(w)
                    except AlignerError:
                        self.g2p_cache[w] = None
                pron = self.g2p_cache[w]
                if pron:
                    self.decoder.add_word(w, " ".join(pron), update=True)
                    g2p_words.append(w)
                    out.append(w)
                    continue
            oov.append(w)
            out.append(w)
        return out, oov, g2p_words, expanded

    def _align(self, job: Job) -> AlignResult:
        from ..audio import load_audio

        utt_id, audio_path, text, language = job

        if not (language or "").lower().startswith("en"):
            raise AlignerError(
                f"pocketsphinx aligns English only; this utterance is {language!r}",
                utt_id=utt_id, path=audio_path,
                hint="use --aligner mfa with a model of that language (e.g. mandarin_mfa), or "
                "--aligner textgrid with existing alignments",
            )
        from ..text_norm import tokenize

        tokens = tokenize(text)
        if not any(t.kind == "word" for t in tokens):
            raise AlignerError("the transcript has no words", utt_id=utt_id, path=audio_path,
                               hint="fill in the transcript (text column or .lab file)")
        words, oov, g2p_words, expanded = self._pronounce([t.text for t in tokens if t.kind == "word"])
        # markup is never a word: noise markup ([laughter], <unk>) is aligned as pocketsphinx's noise
        # filler in its place, pause markup is left to the optional silences between words
        words = _with_noise(tokens, words, expanded)
        info: dict = {"g2p": sorted(set(g2p_words))} if g2p_words else {}
        markup = [t.text for t in tokens if t.kind != "word"]
        if markup:
            info["markup"] = markup
        if expanded:
            info["expanded"] = expanded
        if oov:
            info["oov"] = sorted(set(oov))
            looks_foreign = len(oov) > len(words) / 2
            msg = (f"{len(oov)} of {len(words)} words are not in the dictionary "
                   f"({', '.join(info['oov'][:10])})")
            if looks_foreign:
                msg += "; the transcript does not look like English"
            # a failure with the backend's facts: which words are missing
            return AlignResult(utt_id, None, AlignerError(
                msg, utt_id=utt_id, path=audio_path,
                hint="check the utterance's language and transcript; add pronunciations with "
                "--dictionary FILE (CMUdict format), or enable the espeak-ng G2P fallback (g2p='espeak')",
            ), info)
        wave = load_audio(audio_path, sr=16000)
        duration = len(wave) / 16000.0
        if float(np.max(np.abs(wave))) < SILENT_PEAK:
            raise AudioError("the audio is silent (peak below -80 dBFS)", path=audio_path, utt_id=utt_id,
                             hint="check the recording; silent files cannot be aligned")
        pcm = self._pcm(wave, utt_id)
        d = self.decoder
        d.set_align_text(" ".join(words))
        d.reinit_feat()
        d.set_cmn(self.cmn0)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        if hyp is None:
            raise AlignerError(
                "pocketsphinx found no alignment of the transcript to the audio", utt_id=utt_id,
                path=audio_path,
                hint="check that the transcript matches the audio; very short audio for many words "
                "(each phone needs at least 30 ms) cannot align",
            )
        d.set_alignment()
        d.reinit_feat()
        d.set_cmn(self.cmn0)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        al = d.get_alignment()
        if al is None:
            raise AlignerError("pocketsphinx's phone pass gave no alignment", utt_id=utt_id, path=audio_path,
                               hint="check that the transcript matches the audio")
        words_out, phones_out = self._intervals(al, duration)
        # the word pass' path score is relative to the best-scoring state of each frame (a
        # probability in (0, 1]); its log per frame is the backend's acoustic score
        frames = max(int(d.n_frames()), 1)
        if hyp.score > 0:
            info["acoustic_score"] = round(math.log(hyp.score) / frames, 6)
        alignment = Alignment(words=tuple(Interval(*w) for w in words_out),
                              phones=tuple(Interval(*p) for p in phones_out), xmin=0.0, xmax=duration,
                              source="pocketsphinx")
        return AlignResult(utt_id, alignment, None, info)

    def _pcm(self, wave: np.ndarray, utt_id: str) -> bytes:
        pad = np.zeros(int(round(self.s.padding * 16000)), dtype=np.int16)
        pcm = np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)
        pcm = np.concatenate([pad, pcm, pad])
        if self.s.noise_lsb > 0:
            rng = np.random.default_rng(zlib.crc32(utt_id.encode("utf-8")))
            noise = rng.integers(-self.s.noise_lsb, self.s.noise_lsb + 1, size=len(pcm))
            pcm = np.clip(pcm.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
        return pcm.tobytes()

    def _time(self, frame: int, duration: float) -> float:
        t = frame * self.hop + self.frame_offset - self.s.padding
        return float(min(max(t, 0.0), duration))

    def _intervals(self, al, duration: float) -> tuple[list, list]:
        words, phones = [], []
        for word in al:
            name = _ALT.sub("", word.name)
            for ph in word:
                start = self._time(ph.start, duration)
                end = self._time(ph.start + ph.duration, duration)
                # noise fillers keep their label (a noise marker, class unknown); pauses are empty
                label = "" if ph.name.upper() == "SIL" else ph.name
                phones.append([start, end, label])
            if name not in _FILLER_WORDS and not name.startswith("+"):
                words.append([self._time(word.start, duration),
                              self._time(word.start + word.duration, duration), name])
        return _tile(words, duration), _tile(phones, duration)


def _with_noise(tokens, words: list[str], expanded: dict[str, str]) -> list[str]:
    """The decoder's word sequence: ``words`` (already expanded) with ``[NOISE]`` where the transcript
    had noise markup."""
    out: list[str] = []
    it = iter(words)
    for t in tokens:
        if t.kind == "noise":
            out.append("[NOISE]")
        elif t.kind == "word":
            n = len(expanded[t.text].split()) if t.text in expanded else 1
            out.extend(next(it) for _ in range(n))
    return out


def _tile(intervals: list, duration: float) -> list:
    """Sorted, gap-free intervals covering [0, duration]: gaps become "" and zero-length or
    clipped-away intervals disappear; adjacent silences merge."""
    out: list[list] = []
    cursor = 0.0
    for start, end, label in sorted(intervals, key=lambda iv: (iv[0], iv[1])):
        start = max(start, cursor)
        if end - start <= 1e-9:
            continue
        if start - cursor > 1e-9:
            out.append([cursor, start, ""])
        else:
            start = cursor  # float noise: no sliver of silence
        if out and label == "" and out[-1][2] == "":
            out[-1][1] = end
        else:
            out.append([start, end, label])
        cursor = end
    if duration - cursor > 1e-9:
        if out and out[-1][2] == "":
            out[-1][1] = duration
        else:
            out.append([cursor, duration, ""])
    elif out:
        out[-1][1] = duration
    merged: list[list] = []
    for iv in out:
        if merged and iv[2] == "" and merged[-1][2] == "":
            merged[-1][1] = iv[1]
        else:
            merged.append(iv)
    return merged


#: The worker processes' factory (phonalign.workers runs it in each of them).
WORKER_TARGET = "phonalign.align.pocketsphinx_backend:decoder_worker"


def decoder_worker(setup: bytes) -> Callable[[bytes], bytes]:
    """Worker side of ``jobs > 1``: ``setup`` is the :class:`PocketsphinxSettings` as JSON (the
    decoder is built once, here); the handler aligns one :class:`Job` (JSON list) and answers its
    :class:`~phonalign.align.base.AlignResult` (:func:`~phonalign.align.base.encode_result`)."""
    worker = _Worker(PocketsphinxSettings(**json.loads(setup)))

    def align(task: bytes) -> bytes:
        return encode_result(worker.align_one(Job(*json.loads(task))))

    return align


class PocketsphinxAligner(Aligner):
    """Forced alignment of English with pocketsphinx's bundled US-English model.

    Parameters
    ----------
    dictionary : str or Path, optional
        Extra pronunciations, CMUdict format (see :func:`read_cmudict`); entries override CMUdict.
    g2p : {None, "espeak"}
        Fallback for words missing from both dictionaries. ``None`` reports them as OOV.
    padding : float
        Seconds of silence added at both ends before decoding (removed from the times).
    beam, wbeam, pbeam : float
        pocketsphinx's beam widths (probabilities; smaller is wider).
    maxhmmpf : int
        Cap on active HMMs per frame; -1 for none.
    noise_lsb : int
        Amplitude (in 16-bit steps) of the seeded noise added before decoding; 0 disables it.
    hmm, lexicon : str or Path, optional
        Another pocketsphinx acoustic model folder and its full pronunciation dictionary
        (default: the US-English model and CMUdict shipped with the wheel).
    """

    name = "pocketsphinx"
    phone_set = "arpabet"
    min_phone_duration = 0.03  # 3-state phone HMMs at 10 ms frames

    def __init__(self, dictionary: str | Path | None = None, g2p: str | None = None, padding: float = 0.4,
                 *, beam: float = 1e-200, wbeam: float = 1e-200, pbeam: float = 1e-200, maxhmmpf: int = -1,
                 noise_lsb: int = 1, hmm: str | Path | None = None,
                 lexicon: str | Path | None = None) -> None:
        if g2p not in (None, "espeak"):
            raise AlignerError(f"unknown G2P fallback {g2p!r}", hint="use g2p=None or g2p='espeak'")
        if padding < 0:
            raise AlignerError(f"padding must be >= 0 seconds, got {padding}")
        self.settings = PocketsphinxSettings(
            dictionary=None if dictionary is None else str(Path(dictionary).resolve()),
            g2p=g2p, padding=float(padding), beam=beam, wbeam=wbeam, pbeam=pbeam, maxhmmpf=maxhmmpf,
            noise_lsb=noise_lsb, hmm=None if hmm is None else str(hmm),
            lexicon=None if lexicon is None else str(lexicon),
        )
        self._local: _Worker | None = None

    def __getstate__(self) -> dict:
        # the decoder of -j 1 runs belongs to this process; a copy (a Ray worker) builds its own
        state = dict(self.__dict__)
        state["_local"] = None
        return state

    def check_available(self) -> None:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError:
            raise AlignerError("pocketsphinx is not installed",
                               hint="pip install 'pocketsphinx>=5' (it ships the US-English model)") from None
        if self.settings.dictionary:
            read_cmudict(self.settings.dictionary)  # fail now, not once per utterance
        if self.settings.g2p == "espeak":
            from ..espeak import espeak_available

            if not espeak_available():
                raise AlignerError("the espeak-ng G2P fallback needs libespeak-ng",
                                   hint="apt-get install espeak-ng, or drop g2p='espeak'")

    def config(self) -> dict:
        import importlib.metadata

        return {"aligner": self.name, "pocketsphinx": importlib.metadata.version("pocketsphinx"),
                **asdict(self.settings)}

    def align(self, utterances: Sequence[Utterance], workdir: Path, *, jobs: int = 1) -> Iterator[AlignResult]:
        """Yield one result per utterance, in input order (``jobs`` decoder processes)."""
        todo = [Job(u.utt_id, str(u.audio_path), u.text or "", u.language or "") for u in utterances]
        if not todo:
            return
        jobs = max(1, min(int(jobs), len(todo)))
        if jobs == 1:
            if self._local is None:
                self._local = _Worker(self.settings)
            for job in todo:
                yield self._local.align_one(job)
            return
        # two utterances in flight per worker: the next one is waiting in its pipe when it answers,
        # so a decoder never idles for a round trip through this process (which also writes the
        # results, and shares the cores)
        with WorkerPool(WORKER_TARGET, json.dumps(asdict(self.settings)).encode("utf-8"), workers=jobs,
                        name="pocketsphinx worker", in_flight=2) as pool:
            for job, reply in zip(todo, pool.map(json.dumps(list(job)).encode("utf-8") for job in todo),
                                  strict=True):
                if reply.data is not None:
                    yield decode_result(reply.data)
                    continue
                # the process died (a crash inside pocketsphinx): reported; the pool replaced it
                yield AlignResult(job.utt_id, None, AlignerError(
                    f"the pocketsphinx worker process died (exit code {reply.exit_code})", utt_id=job.utt_id,
                    path=job.audio_path, hint="check the audio file; run with -j 1 to see the error"))
