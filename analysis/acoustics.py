"""Acoustic measurements of vowel segments with Praat's own algorithms (praat-parselmouth).

``measure_corpus(aligned_dir, out_dir, settings=AcousticSettings())`` (``lam acoustics ALIGNED OUT``)
reads an aligned corpus (``utterances.parquet`` + ``segments.parquet``, as ``lam align`` writes them)
and measures every segment of the six vowel classes:

* **F1, F2, F3** (Hz) at 25, 50 and 75 % of the segment: Praat's ``To Formant (burg)`` on the whole
  recording (time step 5 ms, 5 formants, window 25 ms, pre-emphasis from 50 Hz), then
  ``Get value at time`` with linear interpolation, exactly as a Praat script would;
* **duration** (s);
* **mean F0** (Hz): Praat's autocorrelation pitch (``To Pitch (ac)``, Boersma 1993; floor 50 Hz,
  ceiling 600 Hz by default), ``Get mean`` over the segment (voiced frames only);
* **mean intensity** (dB): ``To Intensity`` (minimum pitch 100 Hz, mean subtracted: no), ``Get mean``
  over the segment with energy averaging.

The **formant ceiling** (the ``Maximum formant`` of ``To Formant (burg)``) is set per speaker by
``settings.ceiling``:

``auto`` (default)
    5000 Hz for male and 5500 Hz for female speakers (Praat's manual recommendations) when a speaker
    table says the sex (``speakers=``: columns ``speaker`` and ``sex`` or ``gender``; a corpus
    manifest with those columns will do); otherwise the per-speaker search below.
``search``
    the per-speaker search for every speaker.
a number (e.g. ``"5250"``)
    that ceiling, in Hz, for everyone.

The per-speaker **ceiling search** follows the optimal-ceiling procedure of Escudero, Boersma,
Rauber and Bion (2009, *JASA* 126(3):1379-1393), who chose the ceiling that minimised the variation
of F1 and F2 within vowel categories: for each candidate ceiling on a grid (4000-6500 Hz in 250 Hz
steps by default) we measure F1 and F2 at the midpoint of the speaker's vowel tokens (at most
``search_max_tokens``, a seeded subsample) and take the ceiling with the lowest pooled within-class
variance of ln F1 plus ln F2 (natural logs, so that F1 and F2 weigh alike). Only tokens with F1 and
F2 defined at every candidate enter the criterion, so each candidate is judged on the same tokens.
Every candidate's criterion is kept in ``ceilings.json``. A speaker with fewer than
``search_min_tokens`` (30) measurable vowel tokens gets Praat's default ceiling, 5500 Hz, instead
(``ceiling_source`` ``default``): on a handful of tokens the criterion is noise.

Per-speaker **Lobanov normalisation** (``normalise="lobanov"``) adds ``F1_25_z`` ... ``F3_75_z``:
each formant minus the speaker's mean of that formant at the vowel midpoints, divided by their
standard deviation (Lobanov 1971).

Per-segment problems are recorded, never silently NaN: ``status`` is ``ok``, ``too_short`` (shorter
than ``min_duration_s``: nothing measured but the duration), ``no_voicing`` (no voiced pitch frame:
F0 is NaN, formants and intensity are measured), ``formant_undefined`` (Praat found no such formant
at some time point: those values are NaN), ``intensity_undefined`` (the segment is too close to
the recording's edge for Praat's intensity window), ``outside_audio`` (the segment lies beyond the recording)
or ``audio_error`` (the recording could not be read); ``reason`` says which values are missing and
why.

Output (``OUT/``): ``acoustics.parquet`` (one row per vowel segment, :data:`ACOUSTICS_COLUMNS`, plus
the ``_z`` columns with Lobanov), ``acoustics.csv``, ``ceilings.json`` (ceiling and how it was chosen,
per speaker), ``report.json`` (counts per status, seconds), ``config.yaml`` and ``versions.json``
(every setting, the Praat version), ``emotion_by_class.csv`` (F0, intensity and duration per
language, vowel class and emotion: :func:`write_emotion_table`), ``figures/`` (vowel charts per
language and per emotion, the emotion measures; :mod:`analysis.vowel_plots`).

Resuming: the folder is locked for the run (:func:`phonalign.outdir.output_folder`: one writer at
a time, no foreign files). A long job commits ``parts/part-NNNNN.parquet`` every
``chunk_utterances`` utterances, each listing its utterances with their **input fingerprint**
(:mod:`phonalign.fingerprint`: the recording's size and modification time, the utterance's fields,
its vowel segments, its speaker's ceiling) and the **settings fingerprint** (``parts/settings.json``).
A rerun keeps the utterances whose fingerprints match, measures changed and new ones, leaves out
those no longer in the input, and reuses a speaker's ceiling search while that speaker's
utterances are unchanged. A folder measured with other settings is refused with the settings that
differ; ``force=True`` (``--force``) measures everything again with the new ones.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phonalign.errors import OutputFolderError
from phonalign.fingerprint import differences, digest, file_signature
from phonalign.fsutil import atomic_path, atomic_write_json, is_temp_name, make_dirs, read_json
from phonalign.outdir import FolderRules, output_folder
from phonalign.progress import progress_bar, track
from phonalign.provenance import write_run_info
from phonalign.records import VOWEL_CLASSES

from .errors import AnalysisError

logger = logging.getLogger(__name__)

#: Relative positions inside a segment at which formants are read (25, 50, 75 %).
POSITIONS: tuple[int, ...] = (25, 50, 75)
FORMANT_COLUMNS: tuple[str, ...] = tuple(f"F{k}_{p}" for k in (1, 2, 3) for p in POSITIONS)
STATUSES: tuple[str, ...] = ("ok", "too_short", "no_voicing", "formant_undefined", "intensity_undefined",
                             "outside_audio", "audio_error")
MALE_CEILING_HZ = 5000.0
FEMALE_CEILING_HZ = 5500.0
#: Seconds of signal either side of a token's midpoint that the ceiling search analyses.
SEARCH_MARGIN_S = 0.06
_SEX = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}

ACOUSTICS_SCHEMA = pa.schema(
    [
        ("utt_id", pa.string()),
        ("seg_index", pa.int32()),
        ("label", pa.string()),
        ("phone", pa.string()),
        ("unit_class", pa.string()),        # A E @ i O u
        ("start", pa.float64()),            # seconds
        ("end", pa.float64()),              # seconds
        ("duration", pa.float64()),         # seconds
        ("language", pa.string()),
        ("speaker", pa.string()),
        ("corpus", pa.string()),
        ("emotion", pa.string()),
        ("split", pa.string()),
        *[(c, pa.float64()) for c in FORMANT_COLUMNS],   # Hz
        ("f0_mean", pa.float64()),          # Hz, Praat autocorrelation pitch, voiced frames
        ("intensity_mean", pa.float64()),   # dB (re 2e-5 Pa as Praat reports), energy average
        ("ceiling_hz", pa.float64()),       # formant ceiling used for this speaker
        ("ceiling_source", pa.string()),    # male | female | search | fixed | default
        ("status", pa.string()),            # one of STATUSES
        ("reason", pa.string()),            # why values are missing; null when status is ok
    ]
)
ACOUSTICS_COLUMNS: tuple[str, ...] = tuple(ACOUSTICS_SCHEMA.names)


class AcousticsError(AnalysisError):
    """An aligned corpus cannot be measured (missing tables, bad settings, mixed output folder)."""


@dataclass(frozen=True)
class AcousticSettings:
    """Every setting of the measurement; all of them are written to ``config.yaml``.

    Times in seconds, frequencies in Hz. The Praat commands they feed are named in the module
    docstring; ``time_step_s`` etc. are the arguments of ``To Formant (burg)``.
    """

    ceiling: str = "auto"                     # auto | search | <Hz>
    male_ceiling_hz: float = MALE_CEILING_HZ
    female_ceiling_hz: float = FEMALE_CEILING_HZ
    search_grid_hz: tuple[float, ...] = tuple(float(x) for x in range(4000, 6501, 250))
    search_max_tokens: int = 300              # per speaker, seeded subsample
    # fewer usable tokens than this and the search's criterion is noise: Praat's default ceiling
    # (5500 Hz, its `To Formant (burg)` default) is used instead, and ceilings.json says so
    search_min_tokens: int = 30
    default_ceiling_hz: float = 5500.0
    time_step_s: float = 0.005
    max_formants: float = 5.0
    window_length_s: float = 0.025
    pre_emphasis_hz: float = 50.0
    # Praat's usual floor is 75 Hz; 50 Hz because low voices go below it (the demo corpus' sad male
    # voices sit at 60-70 Hz, and a 75 Hz floor left every one of their vowels unvoiced)
    pitch_floor_hz: float = 50.0
    pitch_ceiling_hz: float = 600.0
    intensity_min_pitch_hz: float = 100.0
    min_duration_s: float = 0.03
    normalise: str = "none"                   # none | lobanov
    classes: tuple[str, ...] = VOWEL_CLASSES
    seed: int = 0
    chunk_utterances: int = 200

    def __post_init__(self) -> None:
        if self.ceiling not in ("auto", "search"):
            try:
                hz = float(self.ceiling)
            except ValueError:
                raise AcousticsError(f"--ceiling {self.ceiling!r} is not auto, search or a number of Hz",
                                     hint="e.g. --ceiling auto, --ceiling search or --ceiling 5500") from None
            if not 2000.0 <= hz <= 8000.0:
                raise AcousticsError(f"--ceiling {hz:g} Hz is outside 2000..8000 Hz",
                                     hint="5000 Hz suits adult male voices, 5500 Hz adult female voices")
        if self.normalise not in ("none", "lobanov"):
            raise AcousticsError(f"normalise={self.normalise!r} is not none or lobanov", hint="use none or lobanov")
        bad = [c for c in self.classes if c not in VOWEL_CLASSES]
        if bad or not self.classes:
            raise AcousticsError(f"classes {bad or '(none)'} are not vowel classes", hint=f"use {VOWEL_CLASSES}")
        if not self.search_grid_hz or self.search_max_tokens < self.search_min_tokens or self.chunk_utterances < 1:
            raise AcousticsError("the ceiling search needs a grid and at least 2 tokens; chunks at least 1 utterance")
        if self.min_duration_s < 0 or self.time_step_s <= 0 or self.window_length_s <= 0:
            raise AcousticsError("durations and time steps must be positive")


@dataclass(frozen=True)
class SpeakerCeiling:
    """How one speaker's formant ceiling was chosen.

    ``criterion`` maps each searched ceiling (Hz) to the pooled within-class variance of
    ln F1 + ln F2 (empty unless ``source == "search"``); ``n_tokens`` tokens entered it.
    """

    speaker: str
    ceiling_hz: float
    source: str                      # male | female | search | fixed | default
    criterion: dict[float, float] = field(default_factory=dict)
    n_tokens: int = 0


@dataclass(frozen=True)
class AcousticsResult:
    """What :func:`measure_corpus` wrote: paths, counts per status, ceilings, seconds."""

    out_dir: Path
    table: Path
    n_segments: int
    counts: dict[str, int]
    ceilings: dict[str, SpeakerCeiling]
    seconds: float
    resumed_utterances: int
    remeasured_changed: int = 0


# ------------------------------------------------------------------------------------------- praat


def praat_version() -> str:
    """Version of the Praat inside parselmouth (e.g. ``6.4.27``)."""
    import parselmouth

    return str(parselmouth.PRAAT_VERSION)


def _load_sound(path: str | Path) -> Any:
    """The recording as a mono ``parselmouth.Sound`` at its own sampling rate (as Praat reads it)."""
    import parselmouth

    snd = parselmouth.Sound(str(path))
    if snd.n_channels > 1:
        snd = snd.convert_to_mono()
    return snd


def _formant(sound: Any, ceiling_hz: float, s: AcousticSettings) -> Any:
    return sound.to_formant_burg(time_step=s.time_step_s, max_number_of_formants=s.max_formants,
                                 maximum_formant=ceiling_hz, window_length=s.window_length_s,
                                 pre_emphasis_from=s.pre_emphasis_hz)


def _formant_values(formant: Any, times: np.ndarray, n: int = 3) -> np.ndarray:
    """``(len(times), n)`` formant frequencies, Hz, NaN where Praat has none.

    ``Formant.get_value_at_time`` is Praat's ``Get value at time: k, t, "hertz", "linear"`` without
    the command interpreter's overhead (the same number, ~250x faster).
    """
    out = np.full((len(times), n), np.nan)
    for i, t in enumerate(times):
        for k in range(n):
            out[i, k] = formant.get_value_at_time(k + 1, float(t))
    return out


def _mean(obj: Any, t1: float, t2: float, unit: str) -> float:
    from parselmouth.praat import call

    v = call(obj, "Get mean", float(t1), float(t2), unit)
    return float("nan") if v is None else float(v)


# ------------------------------------------------------------------------------------------ inputs


def read_speaker_sex(path: str | Path) -> dict[str, str]:
    """``{speaker: "male" | "female"}`` from a CSV/TSV table with ``speaker`` and ``sex``/``gender``.

    Unknown values (empty, ``NA``, ``other``) leave the speaker out, so that the ceiling search
    decides for them. A corpus manifest with these columns can be passed as it is.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise AcousticsError("speaker table not found", path=path, hint="give a CSV/TSV with columns speaker,sex")
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if path.suffix.lower() in (".tsv", ".tab") or "\t" in text.split("\n", 1)[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    cols = {c.lower().strip(): c for c in (rows[0].keys() if rows else [])}
    sex_col = cols.get("sex") or cols.get("gender")
    if "speaker" not in cols or sex_col is None:
        raise AcousticsError(f"the speaker table has columns {sorted(cols)}; it needs speaker and sex (or gender)",
                             path=path, hint="add a header line: speaker,sex")
    out: dict[str, str] = {}
    for line, r in enumerate(rows, start=2):
        spk, raw = (r.get(cols["speaker"]) or "").strip(), (r.get(sex_col) or "").strip().lower()
        sex = _SEX.get(raw)
        if not spk or sex is None:
            continue
        if out.get(spk, sex) != sex:
            raise AcousticsError(f"speaker {spk!r} is given as {out[spk]} and as {sex}", path=path, line=line,
                                 hint="give each speaker one sex")
        out[spk] = sex
    return out


def _read_aligned(aligned_dir: Path, classes: Sequence[str]) -> tuple[list[dict], dict[str, list[dict]]]:
    """Utterance rows (in corpus order) and their vowel segments, by ``utt_id``."""
    from phonalign.segments import read_table

    for name in ("utterances.parquet", "segments.parquet"):
        if not (aligned_dir / name).is_file():
            raise AcousticsError(f"{name} not found: not an aligned corpus folder", path=aligned_dir / name,
                                 hint="run `lam align CORPUS OUT` first and give OUT")
    utts = read_table(aligned_dir / "utterances.parquet").to_pylist()
    seg = read_table(aligned_dir / "segments.parquet")
    seg = seg.filter(pa.compute.is_in(seg["unit_class"], value_set=pa.array(list(classes))))
    by_utt: dict[str, list[dict]] = {}
    for r in seg.select(["utt_id", "index", "label", "phone", "unit_class", "start", "end"]).to_pylist():
        by_utt.setdefault(r["utt_id"], []).append(r)
    return utts, by_utt


def _audio_path(aligned_dir: Path, utt: Mapping) -> Path:
    p = Path(utt["audio_path"])
    return p if p.is_absolute() else (aligned_dir / p)


# ------------------------------------------------------------------------------------- measurement


def measure_segments(sound: Any, segments: Sequence[Mapping], *, ceiling_hz: float,
                     settings: AcousticSettings = AcousticSettings()) -> list[dict]:
    """Measure vowel segments of one recording; one dict per segment (keys of the measurements).

    Parameters
    ----------
    sound : parselmouth.Sound
        The whole recording, mono.
    segments : sequence of mappings with ``start`` and ``end`` (seconds)
    ceiling_hz : float
        Formant ceiling (``Maximum formant`` of ``To Formant (burg)``), Hz.

    Returns
    -------
    list of dict
        ``duration`` (s), ``F1_25`` .. ``F3_75`` (Hz), ``f0_mean`` (Hz), ``intensity_mean`` (dB),
        ``status`` and ``reason`` (see the module docstring).
    """
    s = settings
    formant = _formant(sound, ceiling_hz, s)
    pitch = sound.to_pitch_ac(pitch_floor=s.pitch_floor_hz, pitch_ceiling=s.pitch_ceiling_hz)
    intensity = sound.to_intensity(minimum_pitch=s.intensity_min_pitch_hz, subtract_mean=False)
    t_end = float(sound.xmax)
    out = []
    for seg in segments:
        start, end = float(seg["start"]), float(seg["end"])
        row: dict[str, Any] = {"duration": end - start, **{c: float("nan") for c in FORMANT_COLUMNS},
                               "f0_mean": float("nan"), "intensity_mean": float("nan"),
                               "status": "ok", "reason": None}
        if end > t_end + 1e-3 or start >= t_end:
            row.update(status="outside_audio",
                       reason=f"segment {start:.3f}-{end:.3f} s lies beyond the recording's end ({t_end:.3f} s)")
            out.append(row)
            continue
        if end - start < s.min_duration_s:
            row.update(status="too_short", reason=f"{1000 * (end - start):.1f} ms is shorter than the "
                       f"{1000 * s.min_duration_s:.0f} ms minimum; nothing measured but the duration")
            out.append(row)
            continue
        times = np.array([start + p / 100.0 * (end - start) for p in POSITIONS])
        vals = _formant_values(formant, times)                       # (3 positions, 3 formants)
        for k in range(3):
            for j, p in enumerate(POSITIONS):
                row[f"F{k + 1}_{p}"] = vals[j, k]
        row["f0_mean"] = _mean(pitch, start, end, "Hertz")
        row["intensity_mean"] = _mean(intensity, start, end, "energy")
        missing = [c for c in FORMANT_COLUMNS if math.isnan(row[c])]
        reasons = []
        if math.isnan(row["f0_mean"]):
            row["status"] = "no_voicing"
            reasons.append(f"no voiced pitch frame (floor {s.pitch_floor_hz:g} Hz, ceiling {s.pitch_ceiling_hz:g} Hz):"
                           " f0_mean undefined")
        if missing:
            row["status"] = row["status"] if row["status"] != "ok" else "formant_undefined"
            reasons.append(f"Praat found no {', '.join(missing)} at ceiling {ceiling_hz:g} Hz")
        if math.isnan(row["intensity_mean"]):
            reasons.append("intensity undefined (segment too close to the recording's edge)")
            if row["status"] == "ok":
                row["status"] = "intensity_undefined"
        row["reason"] = "; ".join(reasons) or None
        out.append(row)
    return out


def search_ceiling(tokens: Sequence[tuple[Any, float]], grid_hz: Sequence[float], *,
                   classes: Sequence[str], settings: AcousticSettings = AcousticSettings()) -> tuple[float, dict]:
    """Per-speaker ceiling: the grid value with the lowest pooled within-class variance of ln F1 + ln F2.

    Parameters
    ----------
    tokens : sequence of ``(sound, midpoint_s)``
        A vowel token: its recording (``parselmouth.Sound``) and its midpoint, seconds.
    grid_hz : candidate ceilings, Hz.
    classes : the vowel class of each token (same length as ``tokens``).

    Returns
    -------
    (best ceiling in Hz, ``{"criterion": {ceiling: value}, "n_tokens": int}``); the criterion is the
    within-class variance of ln F1 plus that of ln F2, pooled over classes (NaN where no class has
    two usable tokens). Ties go to the lower ceiling.

    Notes
    -----
    Each token is analysed on an excerpt of ``±SEARCH_MARGIN_S`` around its midpoint rather than on
    the whole recording: Praat's Burg frame at the midpoint sees only ``±window_length`` of signal,
    so the excerpt gives the same criterion at a third of the cost on the demo corpus (the
    measurement itself always analyses the whole recording).
    """
    classes_arr = np.asarray(classes)
    n = len(tokens)
    f12 = np.full((len(grid_hz), n, 2), np.nan)
    excerpts = []
    for snd, t in tokens:
        lo, hi = max(float(snd.xmin), t - SEARCH_MARGIN_S), min(float(snd.xmax), t + SEARCH_MARGIN_S)
        excerpts.append(snd.extract_part(from_time=lo, to_time=hi, preserve_times=True))
    for g, ceiling in enumerate(grid_hz):
        for i, ((_snd, t), part) in enumerate(zip(tokens, excerpts, strict=True)):
            f12[g, i] = _formant_values(_formant(part, float(ceiling), settings), np.array([t]), n=2)[0]
    usable = np.all(np.isfinite(f12), axis=(0, 2)) & np.all(f12 > 0, axis=(0, 2))
    crit: dict[float, float] = {}
    for g, ceiling in enumerate(grid_hz):
        logs = np.log(f12[g, usable])
        cls = classes_arr[usable]
        total, count = 0.0, 0
        for c in np.unique(cls):
            sel = logs[cls == c]
            if len(sel) >= 2:
                total += float(((sel - sel.mean(axis=0)) ** 2).sum())
                count += len(sel) - 1
        crit[float(ceiling)] = total / count if count else float("nan")
    finite = {c: v for c, v in crit.items() if math.isfinite(v)}
    if not finite:
        raise AcousticsError("the ceiling search found no class with two measurable tokens",
                             hint="give the speaker's sex (--speakers) or a fixed --ceiling")
    best = min(finite, key=lambda c: (finite[c], c))
    return best, {"criterion": crit, "n_tokens": int(usable.sum())}


def _choose_ceilings(utts: Sequence[Mapping], segs: Mapping[str, list[dict]], sex: Mapping[str, str],
                     s: AcousticSettings, progress: bool) -> dict[str, SpeakerCeiling]:
    """The ceiling of every speaker of ``utts`` with vowel segments (``u["_aligned"]``: its folder)."""
    speakers = sorted({u["speaker"] for u in utts if segs.get(u["utt_id"])})
    out: dict[str, SpeakerCeiling] = {}
    to_search = []
    for spk in speakers:
        if s.ceiling not in ("auto", "search"):
            out[spk] = SpeakerCeiling(spk, float(s.ceiling), "fixed")
        elif s.ceiling == "auto" and sex.get(spk) == "male":
            out[spk] = SpeakerCeiling(spk, s.male_ceiling_hz, "male")
        elif s.ceiling == "auto" and sex.get(spk) == "female":
            out[spk] = SpeakerCeiling(spk, s.female_ceiling_hz, "female")
        else:
            to_search.append(spk)
    for spk in _progress(to_search, progress, "ceiling search"):
        cand = [(u, seg) for u in utts if u["speaker"] == spk for seg in segs.get(u["utt_id"], [])
                if seg["end"] - seg["start"] >= s.min_duration_s]
        if len(cand) > s.search_max_tokens:
            rng = np.random.default_rng([s.seed, _stable_hash(spk)])
            keep = np.sort(rng.choice(len(cand), size=s.search_max_tokens, replace=False))
            cand = [cand[i] for i in keep]
        sounds: dict[str, Any] = {}
        tokens, classes = [], []
        for u, seg in cand:
            if u["utt_id"] not in sounds:
                try:
                    sounds[u["utt_id"]] = _load_sound(_audio_path(u["_aligned"], u))
                except Exception as err:  # noqa: BLE001 -- parselmouth raises PraatError; recorded below
                    logger.warning("ceiling search: %s unreadable (%s)", u["utt_id"], err)
                    sounds[u["utt_id"]] = None
            snd = sounds[u["utt_id"]]
            if snd is None:
                continue
            tokens.append((snd, 0.5 * (seg["start"] + seg["end"])))
            classes.append(seg["unit_class"])
        if len(tokens) < s.search_min_tokens:
            logger.warning("ceiling search: speaker %s has %d vowel tokens (< %d); Praat's default ceiling "
                           "%g Hz is used", spk, len(tokens), s.search_min_tokens, s.default_ceiling_hz)
            out[spk] = SpeakerCeiling(spk, s.default_ceiling_hz, "default", {}, len(tokens))
            continue
        try:
            best, info = search_ceiling(tokens, s.search_grid_hz, classes=classes, settings=s)
        except AcousticsError as err:
            raise AcousticsError(f"speaker {spk!r}: {err.message}", path=cand[0][0]["_aligned"] if cand else None,
                                 hint=err.hint) from None
        if best in (min(s.search_grid_hz), max(s.search_grid_hz)):
            logger.warning("ceiling search: speaker %s's best ceiling %g Hz lies at the edge of the grid; "
                           "widen it or give the speaker's sex", spk, best)
        out[spk] = SpeakerCeiling(spk, best, "search", info["criterion"], info["n_tokens"])
    return out


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8"))


def _progress(items: Sequence, enabled: bool, desc: str) -> Iterable:
    # a bar on a terminal, plain log lines otherwise (phonalign.progress)
    return track(items, desc=desc, item="speaker", progress=enabled)


def lobanov(table: pa.Table) -> pa.Table:
    """Add ``F*_z`` columns: per speaker, (F - mean) / sd of that formant at the vowel midpoints.

    Parameters
    ----------
    table : acoustics table (:data:`ACOUSTICS_SCHEMA`).

    Returns
    -------
    The table with ``F1_25_z`` ... ``F3_75_z`` (unitless) appended; NaN where the raw value is NaN
    or the speaker has fewer than two measured midpoints of that formant.
    """
    spk = np.asarray(table["speaker"].to_pylist(), dtype=object)
    cols = {c: table[c].to_numpy(zero_copy_only=False).astype(float) for c in FORMANT_COLUMNS}
    z = {c: np.full(len(spk), np.nan) for c in FORMANT_COLUMNS}
    for who in np.unique(spk):
        sel = spk == who
        for k in (1, 2, 3):
            mid = cols[f"F{k}_50"][sel]
            mid = mid[np.isfinite(mid)]
            if len(mid) < 2 or mid.std(ddof=1) == 0:
                continue
            mu, sd = mid.mean(), mid.std(ddof=1)
            for p in POSITIONS:
                z[f"F{k}_{p}"][sel] = (cols[f"F{k}_{p}"][sel] - mu) / sd
    for c in FORMANT_COLUMNS:
        table = table.append_column(f"{c}_z", pa.array(z[c], type=pa.float64()))
    return table


# ---------------------------------------------------------------------------------------- the job


def _settings_doc(s: AcousticSettings, sex: Mapping[str, str]) -> dict:
    return {"settings": asdict(s), "speaker_sex": dict(sorted(sex.items())), "praat": praat_version()}


#: What an acoustics output folder may hold (:mod:`phonalign.outdir`): ``parts/`` and ``figures/``
#: are written and cleaned by :func:`measure_corpus` only.
ACOUSTICS_FOLDER = FolderRules(
    legacy=("acoustics.parquet", "parts/settings.json"),
    managed={"parts": r"^(part-\d{5}\.parquet|settings\.json)$", "figures": r"^[A-Za-z0-9_.@\-]+\.(png|svg)$"})


def _utterance_fingerprint(u: Mapping, segs: Sequence[Mapping]) -> str:
    """What an utterance's rows are made from: the recording (size, mtime), its fields, its vowel segments."""
    return digest([file_signature(_audio_path(u["_aligned"], u)),
                   {k: u.get(k) for k in ("language", "speaker", "corpus", "emotion", "split")},
                   [[g["index"], g["label"], g["phone"], g["unit_class"], g["start"], g["end"]] for g in segs]])


@dataclass(frozen=True)
class _Outcome:
    """The latest committed measurement of one utterance: part number, fingerprints."""

    part: int
    input_fp: str | None
    settings_fp: str | None


def _committed(parts_dir: Path) -> tuple[list[Path], dict[str, _Outcome]]:
    """Part files in order and each utterance's latest outcome (a later part supersedes an earlier one)."""
    files = sorted(parts_dir.glob("part-*.parquet"))
    latest: dict[str, _Outcome] = {}
    for k, f in enumerate(files):
        meta = pq.read_schema(f).metadata or {}
        listed = json.loads(meta.get(b"lam_utterances", b"[]"))
        settings_fp = json.loads(meta.get(b"lam_settings_fp", b"null"))
        # parts written before fingerprints list utterance ids only: they count as changed
        fps = listed if isinstance(listed, dict) else {u: None for u in listed}
        for utt, fp in fps.items():
            latest[utt] = _Outcome(k, fp, settings_fp)
    return files, latest


def _write_part(parts_dir: Path, index: int, rows: list[dict], fingerprints: Mapping[str, str],
                settings_fp: str) -> None:
    # the utterances (with their fingerprints) go into the metadata: an utterance without vowels
    # leaves no row but is done all the same
    table = pa.Table.from_pylist(rows, schema=ACOUSTICS_SCHEMA)
    table = table.replace_schema_metadata({"lam_utterances": json.dumps(dict(fingerprints)),
                                           "lam_settings_fp": json.dumps(settings_fp)})
    with atomic_path(parts_dir / f"part-{index:05d}.parquet") as tmp:
        pq.write_table(table, tmp)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def measure_corpus(aligned_dir: str | Path | Sequence[str | Path], out_dir: str | Path, *,
                   settings: AcousticSettings = AcousticSettings(),
                   speakers: str | Path | Mapping[str, str] | None = None, language: str | None = None,
                   strict: bool = False, force: bool = False, progress: bool = True,
                   figures: bool = True) -> AcousticsResult:
    """``lam acoustics ALIGNED OUT``: measure every vowel segment of an aligned corpus.

    The output folder is locked for the run (:func:`phonalign.outdir.output_folder`). A rerun into
    the same folder keeps every utterance whose inputs are unchanged (its recording's size and
    modification time, its fields and vowel segments, its speaker's ceiling), measures changed and
    new ones, and leaves out utterances no longer in the input. Other settings are refused unless
    ``force``, which measures everything again with the new ones.

    Parameters
    ----------
    aligned_dir : output folder of ``lam align`` (``utterances.parquet``, ``segments.parquet``), or
        several of them (e.g. the two languages of ``lam run``) measured into one table; utterance
        ids must be unique across them.
    out_dir : where ``acoustics.parquet`` and its companions go (see the module docstring).
    settings : :class:`AcousticSettings`.
    speakers : speaker table path (CSV/TSV with ``speaker`` and ``sex``/``gender``) or a mapping
        ``{speaker: "male" | "female"}``; used by ``ceiling="auto"``.
    language : keep only utterances of this language.
    strict : stop at the first segment that cannot be fully measured instead of recording it.
    force : accept a folder measured with other settings and measure every utterance again.
    progress : progress bar on a terminal.
    figures : draw the vowel charts and emotion figures into ``out_dir/figures`` (PNG + SVG).

    Raises
    ------
    AcousticsError
        Not an aligned folder, no utterance of ``language``, an utterance id in two folders.
    phonalign.errors.OutputFolderError
        The folder holds other settings (without ``force``), files lam did not write, or another
        step's output; :class:`~phonalign.errors.OutputLockedError` when another run holds it.
    """
    t0 = time.perf_counter()
    s = settings
    dirs = [Path(aligned_dir)] if isinstance(aligned_dir, (str, Path)) else [Path(a) for a in aligned_dir]
    if not dirs:
        raise AcousticsError("no aligned folder given", hint="give the output folder of `lam align`")
    out = Path(out_dir)
    sex = dict(speakers) if isinstance(speakers, Mapping) else (read_speaker_sex(speakers) if speakers else {})
    sex = {k: _SEX.get(str(v).lower(), str(v)) for k, v in sex.items()}
    utts: list[dict] = []
    segs: dict[str, list[dict]] = {}
    where: dict[str, Path] = {}
    for d in dirs:
        d_utts, d_segs = _read_aligned(d, s.classes)
        for u in d_utts:
            if u["utt_id"] in where:
                raise AcousticsError(f"utterance {u['utt_id']!r} is in two aligned folders ({where[u['utt_id']]} "
                                     f"and {d})", path=d / "utterances.parquet", utt_id=u["utt_id"],
                                     hint="measure the folders into separate outputs, or give each corpus its own "
                                     "utterance ids")
            where[u["utt_id"]] = d
            u["_aligned"] = d
        utts += d_utts
        segs.update(d_segs)
    if language is not None:
        utts = [u for u in utts if u["language"] == language]
        if not utts:
            raise AcousticsError(f"no utterance of language {language!r}",
                                 path=dirs[0] / "utterances.parquet", hint="check --language against the corpus")
    doc = _settings_doc(s, sex)
    doc["language"] = language
    config = {**doc, "aligned": [str(d.resolve()) for d in dirs] if len(dirs) > 1 else str(dirs[0].resolve()),
              "speakers_table": str(speakers) if speakers and not isinstance(speakers, Mapping) else None}
    with output_folder(out, step="acoustics", rules=ACOUSTICS_FOLDER):
        return _measure_locked(utts, segs, out, s, doc, config, force=force, strict=strict, progress=progress,
                               figures=figures, t0=t0)


def _measure_locked(utts: list[dict], segs: dict[str, list[dict]], out: Path, s: AcousticSettings, doc: dict,
                    config: dict, *, force: bool, strict: bool, progress: bool, figures: bool,
                    t0: float) -> AcousticsResult:
    parts_dir = make_dirs(out / "parts")
    for p in parts_dir.iterdir():  # leftovers of a killed run (the folder check refused anything foreign)
        if is_temp_name(p.name) and p.is_file():
            p.unlink(missing_ok=True)
    doc = json.loads(json.dumps(doc, default=str))
    settings_fp = digest(doc)
    settings_file = parts_dir / "settings.json"
    old_doc = read_json(settings_file, what="acoustics settings", hint="rerun with --force, or use a new output "
                        "folder") if settings_file.is_file() else None
    if isinstance(old_doc, dict) and "fingerprint" not in old_doc:  # written before fingerprints: the doc itself
        old_doc = {"fingerprint": digest({k: v for k, v in old_doc.items() if k != "aligned"}),
                   "settings": {k: v for k, v in old_doc.items() if k != "aligned"}}
    if old_doc is not None and old_doc.get("fingerprint") != settings_fp and not force:
        raise OutputFolderError(f"this output folder was measured with other settings "
                                f"({differences(old_doc.get('settings'), doc)})", path=out,
                                hint="rerun with --force to measure every segment again with the new settings "
                                "(force=True in Python), or use a new output folder")
    atomic_write_json(settings_file, {"fingerprint": settings_fp, "settings": doc})
    # ceilings: a speaker's is reused while the settings and the speaker's utterances are unchanged
    base_fp = {u["utt_id"]: _utterance_fingerprint(u, segs.get(u["utt_id"], [])) for u in utts}
    speaker_fp = {spk: digest(sorted(base_fp[u["utt_id"]] for u in utts if u["speaker"] == spk))
                  for spk in {u["speaker"] for u in utts}}
    ceil_file = out / "ceilings.json"
    old_ceil = read_json(ceil_file, what="ceilings", hint="rerun with --force") if ceil_file.is_file() else {}
    reuse: dict[str, SpeakerCeiling] = {}
    if old_ceil.get("settings_fp") == settings_fp:
        for k, v in old_ceil.get("speakers", {}).items():
            if v.get("inputs_fp") == speaker_fp.get(k):
                reuse[k] = SpeakerCeiling(k, v["ceiling_hz"], v["source"],
                                          {float(c): x for c, x in v["criterion"].items()}, v["n_tokens"])
    pending = [u for u in utts if u["speaker"] not in reuse]
    ceilings = {**reuse, **_choose_ceilings(pending, segs, doc["speaker_sex"], s, progress)}
    atomic_write_json(ceil_file, {"rule": s.ceiling, "grid_hz": list(s.search_grid_hz), "settings_fp": settings_fp,
                                  "method": "pooled within-class variance of ln F1 + ln F2 at vowel midpoints "
                                            "(after Escudero et al. 2009)",
                                  "speakers": {k: {**asdict(v), "inputs_fp": speaker_fp[k]}
                                               for k, v in sorted(ceilings.items()) if k in speaker_fp}})
    fps = {}
    for u in utts:
        c = ceilings.get(u["speaker"])
        fps[u["utt_id"]] = digest([base_fp[u["utt_id"]], None if c is None else [c.ceiling_hz, c.source]])
    _, latest = _committed(parts_dir)
    done = {k for k, o in latest.items() if o.settings_fp == settings_fp and o.input_fp == fps.get(k)}
    todo = [u for u in utts if u["utt_id"] not in done]
    changed = sum(1 for u in todo if u["utt_id"] in latest)
    next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts_dir.glob("part-*.parquet")), default=-1)
    with progress_bar(len(todo), desc="acoustics", item="utt", progress=progress) as bar:
        for chunk in _chunks(todo, s.chunk_utterances):
            rows: list[dict] = []
            for u in chunk:
                rows += _measure_utterance(u, segs.get(u["utt_id"], []), ceilings, s, strict)
                bar.update(1)
            _write_part(parts_dir, next_part, rows, {u["utt_id"]: fps[u["utt_id"]] for u in chunk}, settings_fp)
            next_part += 1
    files, latest = _committed(parts_dir)
    keep = {u["utt_id"] for u in utts}
    tables = []
    for k, f in enumerate(files):  # each utterance's rows from its latest part only
        mine = sorted(u for u, o in latest.items() if o.part == k and u in keep)
        if mine:
            t = pq.read_table(f).replace_schema_metadata(None)
            tables.append(t.filter(pa.compute.is_in(t["utt_id"], value_set=pa.array(mine, type=pa.string()))))
    table = pa.concat_tables(tables) if tables else ACOUSTICS_SCHEMA.empty_table()
    order = {u["utt_id"]: i for i, u in enumerate(utts)}
    ids, seg_idx = table["utt_id"].to_pylist(), table["seg_index"].to_pylist()
    idx = sorted(range(table.num_rows), key=lambda i: (order[ids[i]], seg_idx[i]))
    table = table.take(pa.array(idx, type=pa.int64()))
    if s.normalise == "lobanov":
        table = lobanov(table)
    with atomic_path(out / "acoustics.parquet") as tmp:
        pq.write_table(table, tmp)
    _write_csv(table, out / "acoustics.csv")
    counts = {st: 0 for st in STATUSES}
    for st in table["status"].to_pylist():
        counts[st] = counts.get(st, 0) + 1
    seconds = time.perf_counter() - t0
    failures = [{"utt_id": r["utt_id"], "seg_index": r["seg_index"], "status": r["status"], "reason": r["reason"]}
                for r in table.select(["utt_id", "seg_index", "status", "reason"]).to_pylist() if r["status"] != "ok"]
    atomic_write_json(out / "report.json", {"segments": table.num_rows, "utterances": len(utts), "counts": counts,
                                            "resumed_utterances": len(utts) - len(todo),
                                            "remeasured_changed": changed, "seconds": round(seconds, 3),
                                            "not_ok": failures})
    write_run_info(out, step="acoustics", config=config, seed=s.seed)
    write_emotion_table(table, out / "emotion_by_class.csv")
    if figures and table.num_rows:
        from .vowel_plots import save_acoustic_figures

        save_acoustic_figures(table, out / "figures")
    logger.info("acoustics: %d vowel segments of %d utterances in %.1f s", table.num_rows, len(utts), seconds)
    return AcousticsResult(out, out / "acoustics.parquet", table.num_rows, counts, ceilings, seconds,
                           len(utts) - len(todo), changed)


def _measure_utterance(u: Mapping, segs: Sequence[Mapping], ceilings: Mapping[str, SpeakerCeiling],
                       s: AcousticSettings, strict: bool) -> list[dict]:
    base = {k: u.get(k) for k in ("language", "speaker", "corpus", "emotion", "split")}
    if not segs:
        return []
    ceiling = ceilings[u["speaker"]]
    try:
        sound = _load_sound(_audio_path(u["_aligned"], u))
        values = measure_segments(sound, segs, ceiling_hz=ceiling.ceiling_hz, settings=s)
    except Exception as err:  # noqa: BLE001 -- parselmouth.PraatError and OS errors: recorded per utterance
        if strict:
            raise AcousticsError(f"cannot measure: {err}", path=_audio_path(u["_aligned"], u), utt_id=u["utt_id"],
                                 hint="check the audio file, or run without --strict to record and go on") from err
        values = [{"duration": seg["end"] - seg["start"], **{c: float("nan") for c in FORMANT_COLUMNS},
                   "f0_mean": float("nan"), "intensity_mean": float("nan"), "status": "audio_error",
                   "reason": f"{type(err).__name__}: {err}".strip()[:300]} for seg in segs]
    rows = []
    for seg, v in zip(segs, values, strict=True):
        if strict and v["status"] != "ok":
            raise AcousticsError(f"segment {seg['index']} ({seg['label']}): {v['reason']}", utt_id=u["utt_id"],
                                 path=_audio_path(u["_aligned"], u), hint="run without --strict to record it and go on")
        rows.append({"utt_id": u["utt_id"], "seg_index": seg["index"], "label": seg["label"], "phone": seg["phone"],
                     "unit_class": seg["unit_class"], "start": seg["start"], "end": seg["end"], **base, **v,
                     "ceiling_hz": ceiling.ceiling_hz, "ceiling_source": ceiling.source})
    return rows


def _write_csv(table: pa.Table, path: Path) -> None:
    import pyarrow.csv as pcsv

    with atomic_path(path) as tmp:
        pcsv.write_csv(table, tmp)


def read_acoustics(path: str | Path) -> pa.Table:
    """``acoustics.parquet`` (``path`` is the file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "acoustics.parquet"
    if not path.is_file():
        raise AcousticsError("acoustics table not found", path=path, hint="run `lam acoustics ALIGNED OUT` first")
    return pq.read_table(path)


def class_means(table: pa.Table, *, columns: Sequence[str] = ("F1_50", "F2_50"),
                by: Sequence[str] = ("language", "unit_class")) -> pa.Table:
    """Mean of ``columns`` per group, over the rows with status ``ok`` or ``no_voicing``.

    Returns
    -------
    pa.Table
        One row per group (sorted), columns ``by``, ``n`` (rows in the group) and each of
        ``columns`` (NaN-skipping mean, in that column's unit; NaN where no value is defined).
    """
    rows = [r for r in table.select(list(by) + list(columns) + ["status"]).to_pylist()
            if r["status"] in ("ok", "no_voicing")]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    keys = sorted(groups, key=lambda k: tuple(str(x) for x in k))
    out: dict[str, list] = {b: [k[i] for k in keys] for i, b in enumerate(by)}
    out["n"] = [len(groups[k]) for k in keys]
    for c in columns:
        vals = [np.array([r[c] for r in groups[k]], dtype=float) for k in keys]
        out[c] = [float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for v in vals]
    return pa.table(out) if keys else pa.table({**{b: pa.array([], pa.string()) for b in by},
                                                  "n": pa.array([], pa.int64()),
                                                  **{c: pa.array([], pa.float64()) for c in columns}})


def write_text_summary(result: AcousticsResult) -> str:
    """One line per status count, for the CLI."""
    parts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v)
    return f"{result.n_segments} vowel segments ({parts}) in {result.seconds:.1f} s -> {result.table}"


__all__ = [
    "ACOUSTICS_COLUMNS", "ACOUSTICS_SCHEMA", "EMOTION_MEASURES", "FORMANT_COLUMNS", "POSITIONS", "STATUSES",
    "AcousticSettings", "AcousticsError", "AcousticsResult", "EmotionCell", "SpeakerCeiling", "class_means",
    "combine_acoustics", "emotion_summary", "lobanov", "measure_corpus", "measure_segments", "praat_version",
    "read_acoustics", "read_speaker_sex", "search_ceiling", "write_emotion_table", "write_text_summary",
]


@dataclass(frozen=True)
class EmotionCell:
    """F0, intensity and duration of one (language, vowel class, emotion) cell.

    Each value is the mean over speakers of the speaker's mean (the speaker is the independent
    unit), with the lowest and highest speaker mean beside it: ``f0`` Hz, ``intensity`` dB,
    ``duration`` seconds. ``n_tokens`` measured segments from ``n_speakers`` speakers.
    """

    language: str
    unit_class: str
    emotion: str
    n_tokens: int
    n_speakers: int
    f0: float
    f0_range: tuple[float, float]
    intensity: float
    intensity_range: tuple[float, float]
    duration: float
    duration_range: tuple[float, float]


EMOTION_MEASURES: dict[str, str] = {"f0": "f0_mean", "intensity": "intensity_mean", "duration": "duration"}


def emotion_summary(table: pa.Table, *, by_class: bool = True) -> list[EmotionCell]:
    """F0, intensity and duration per language, vowel class (or ``"all"``) and emotion.

    Rows without an emotion label, and rows with status other than ``ok`` / ``no_voicing``, are
    left out (F0 of ``no_voicing`` rows is NaN and skipped). Speaker means first, then their mean.
    """
    from phonalign.records import EMOTIONS

    rows = [r for r in table.select(["language", "unit_class", "emotion", "speaker", "status",
                                     *EMOTION_MEASURES.values()]).to_pylist()
            if r["emotion"] and r["status"] in ("ok", "no_voicing")]
    cells: dict[tuple[str, str, str], dict[str, list[dict]]] = {}
    for r in rows:
        key = (r["language"], r["unit_class"] if by_class else "all", r["emotion"])
        cells.setdefault(key, {}).setdefault(r["speaker"], []).append(r)
    emo_order = {e: i for i, e in enumerate(EMOTIONS)}
    cls_order = {c: i for i, c in enumerate(VOWEL_CLASSES + ("all",))}
    out = []
    for (lang, cls, emo), by_spk in sorted(cells.items(), key=lambda kv: (kv[0][0], cls_order.get(kv[0][1], 99),
                                                                           emo_order.get(kv[0][2], 99), kv[0][2])):
        vals: dict[str, tuple[float, tuple[float, float]]] = {}
        for name, col in EMOTION_MEASURES.items():
            with np.errstate(all="ignore"):
                spk_means = np.array([np.nanmean([r[col] for r in rs]) if np.isfinite([r[col] for r in rs]).any()
                                      else np.nan for rs in by_spk.values()])
            spk_means = spk_means[np.isfinite(spk_means)]
            vals[name] = ((float(spk_means.mean()), (float(spk_means.min()), float(spk_means.max())))
                          if len(spk_means) else (float("nan"), (float("nan"), float("nan"))))
        out.append(EmotionCell(lang, cls, emo, sum(len(rs) for rs in by_spk.values()), len(by_spk),
                               vals["f0"][0], vals["f0"][1], vals["intensity"][0], vals["intensity"][1],
                               vals["duration"][0], vals["duration"][1]))
    return out


def combine_acoustics(parts: Sequence[str | Path], out_dir: str | Path, *, figures: bool = True) -> Path:
    """Join the outputs of several :func:`measure_corpus` runs into one folder (locked while written).

    Writes ``out_dir/acoustics.parquet`` (+ ``.csv``; a segment measured twice is kept once),
    ``report.json`` (counts summed), ``ceilings.json`` (speakers of every part) and the figures;
    returns the table's path. The parts must share their settings (same columns). (To measure
    several aligned folders into one table in the first place, give :func:`measure_corpus` all of
    them.)
    """
    out = Path(out_dir)
    with output_folder(out, step="acoustics", rules=ACOUSTICS_FOLDER):
        return _combine_locked([Path(p) for p in parts], out, figures=figures)


def _combine_locked(parts: list[Path], out: Path, *, figures: bool) -> Path:
    tables, counts, speakers, not_ok = [], {s: 0 for s in STATUSES}, {}, []
    for p in parts:
        tables.append(read_acoustics(p))
        rep = json.loads((p / "report.json").read_text(encoding="utf-8"))
        for k, v in rep["counts"].items():
            counts[k] = counts.get(k, 0) + v
        not_ok += rep.get("not_ok", [])
        speakers.update(json.loads((p / "ceilings.json").read_text(encoding="utf-8"))["speakers"])
    names = {tuple(t.column_names) for t in tables}
    if len(names) > 1:
        raise AcousticsError("the parts were measured with different settings (columns differ)", path=out,
                             hint="measure every part with the same options")
    table = pa.concat_tables(tables)
    seen: set[tuple[str, int]] = set()
    keep = []
    for i, key in enumerate(zip(table["utt_id"].to_pylist(), table["seg_index"].to_pylist(), strict=True)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    table = table.take(pa.array(keep, type=pa.int64()))
    with atomic_path(out / "acoustics.parquet") as tmp:
        pq.write_table(table, tmp)
    _write_csv(table, out / "acoustics.csv")
    atomic_write_json(out / "report.json", {"segments": table.num_rows, "counts": counts, "not_ok": not_ok,
                                            "parts": [str(p) for p in parts]})
    atomic_write_json(out / "ceilings.json", {"speakers": speakers, "parts": [str(p) for p in parts]})
    write_emotion_table(table, out / "emotion_by_class.csv")
    if figures and table.num_rows:
        from .vowel_plots import save_acoustic_figures

        save_acoustic_figures(table, out / "figures")
    return out / "acoustics.parquet"


def write_emotion_table(table: pa.Table, path: str | Path) -> Path:
    """:func:`emotion_summary` per language, vowel class and emotion (and over all vowels) as CSV.

    Columns: ``language, unit_class, emotion, n_tokens, n_speakers`` and for ``f0`` (Hz),
    ``intensity`` (dB) and ``duration`` (s) the mean of speaker means with ``_min`` / ``_max``
    (lowest and highest speaker mean). Empty (header only) when no row has an emotion.
    """
    import csv
    import io

    path = Path(path)
    cols = ["language", "unit_class", "emotion", "n_tokens", "n_speakers"]
    for m in EMOTION_MEASURES:
        cols += [m, f"{m}_min", f"{m}_max"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for c in emotion_summary(table) + emotion_summary(table, by_class=False):
        row: list[Any] = [c.language, c.unit_class, c.emotion, c.n_tokens, c.n_speakers]
        for m in EMOTION_MEASURES:
            lo, hi = getattr(c, f"{m}_range")
            row += [f"{getattr(c, m):.6g}", f"{lo:.6g}", f"{hi:.6g}"]
        w.writerow(row)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path
