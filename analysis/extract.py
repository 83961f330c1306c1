"""`lam features`: every layer of a speech model, mean-pooled per utterance and per segment, into a
feature store.

Reads an aligned-corpus directory (``utterances.parquet`` + ``segments.parquet``, as ``lam align``
writes it) or, for utterance-level features only, a plain corpus that
:func:`phonalign.corpus.read_corpus` reads. For each utterance the store gets one ``utt`` row (mean
over its valid frames) and one ``segment`` row per segment that is not silence (mean over the frames
of :func:`analysis.frames.frames_for_segments`), for every layer or the ``layers`` asked for, stored
in ``store_dtype`` (float32, float16 or bfloat16; see :mod:`analysis.store`).

Batching: utterances are sorted by length and packed into batches whose *padded* audio (batch size
x longest input; 30 s per utterance for Whisper in crop mode) stays under ``batch_seconds``. Models
that zero padding would change (group norm, Whisper trim) run each distinct length on its own inside
the batch (:class:`analysis.models.SpeechEncoder`), so batched results equal one-at-a-time results.

A run is three named steps, the same for every engine: :func:`plan_extraction` (the store brought in
line with the input, what is left to do), :func:`pool_work` (one batch decoded, run and pooled:
what a worker computes, in this process for ``engine="local"`` or in Ray actors holding the model
for ``engine="ray"``, :mod:`analysis.ray_extract`), and one writer in this process that commits the
results in planned order (finite checks, index rows, chunks, the report). So outputs, resume and
reports do not depend on the engine, and a run started with one engine can be finished with the
other.

Chunks of about ``chunk_rows`` rows are committed to the store as they fill (whole utterances only);
a killed job loses at most the uncommitted chunk, and rerunning the same command resumes. Every row
records the fingerprint of its utterance's inputs (audio size and mtime, utterance fields, its
segments) and every chunk the settings fingerprint (extraction settings and the model's digest,
:mod:`analysis.model_identity`): a rerun keeps the utterances whose fingerprints match, takes out
and redoes those whose inputs changed (e.g. re-aligned with another ``--trap``), and drops those
no longer in the input, so that it ends exactly where a fresh run would. A store made with another
model or settings (layers and store dtype included), or from another corpus
(``meta.json["input"]``), is refused unless ``force``. The store folder is locked for the run,
whatever the engine (:mod:`phonalign.outdir`); shards (``shard=(I, N)``, by a hash of the utterance
id) share it, each keeping its report under ``shards/`` until :func:`merge_shard_reports` combines
them. Per-utterance failures (unreadable audio, NaN samples, segments past the end of the audio,
non-finite model output, too long for Whisper, a Ray worker that keeps dying, ...) are recorded in
``report.json`` and the job goes on; ``strict=True`` stops at the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from phonalign.engine import EngineConfig, WorkProgress, resolve_engine
from phonalign.errors import LamError, OutputFolderError
from phonalign.fingerprint import differences, digest, file_signature
from phonalign.fsutil import atomic_write_json, make_dirs, read_json, read_parquet
from phonalign.outdir import FolderRules, OutputFolder, output_folder
from phonalign.provenance import write_run_info

from .defaults import (
    BATCH_SECONDS,
    CHUNK_ROWS,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_STORE_DTYPE,
    DEFAULT_WHISPER_MODE,
    STORE_DTYPES,
)
from .errors import ExtractionError, StoreError, StoreSettingsError
from .extract_report import FeaturesReport, MergedFeaturesReport, ShardSummary, UtteranceFailure
from .frames import frames_for_segments
from .models import SAMPLE_RATE, SpeechEncoder, load_encoder
from .pooling import pool_batch
from .store import FeatureStore, index_table, model_digest, new_meta, parse_layers, settings_mismatch

#: Segment classes that get no vector: pauses carry no phone.
SKIPPED_CLASSES = ("silence",)

#: How far (seconds) a segment may end after its audio: one aligner frame, as for alignments.
MAX_SEGMENT_OVERRUN = 0.010

#: What a feature store folder may hold (see :mod:`phonalign.outdir`).
STORE_FOLDER = FolderRules(
    legacy=("meta.json",),
    managed={"index": r"^part-[A-Za-z0-9-]+\.parquet$", "layers": r"^layer_\d{2,}$",
             "layers/*": r"^chunk-[A-Za-z0-9-]+\.npy$", "shards": r"^s\d{4}of\d{4}$",
             "shards/*": r"^(report\.json|config\.yaml|versions\.json)$"},
)


def shard_of(utt_id: str, n_shards: int) -> int:
    """The shard (0..N-1) an utterance belongs to: a hash of its id, so that adding or removing
    other utterances never moves it to another shard."""
    if n_shards <= 1:
        return 0
    return int.from_bytes(hashlib.blake2b(utt_id.encode("utf-8"), digest_size=8).digest(), "big") % n_shards


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``(I, N)`` from ``"I/N"`` (as ``lam features --shard`` takes it) or from a pair, checked
    ``0 <= I < N``; an :class:`ExtractionError` naming the fix otherwise."""
    try:
        i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise ExtractionError(f"shard {shard!r} is not I/N", hint="write shard I of N as I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ExtractionError(f"shard {i}/{n} is not valid", hint="use I/N with 0 <= I < N")
    return i, n


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one `lam features` run (recorded in the output's ``config.yaml``)."""

    model: str
    device: str = DEFAULT_DEVICE
    dtype: str = DEFAULT_DTYPE
    batch_seconds: float = BATCH_SECONDS
    whisper_mode: str = DEFAULT_WHISPER_MODE
    shard_index: int = 0
    n_shards: int = 1
    strict: bool = False
    pooling: str = "mean"
    chunk_rows: int = CHUNK_ROWS
    store_dtype: str = DEFAULT_STORE_DTYPE
    layers: tuple[int, ...] = ()
    random_init: bool = False
    init_seed: int = 0


def _read_inputs(src: Path, *, language: str | None = None) -> tuple[pa.Table, pa.Table | None]:
    """(utterances, segments or None) of an aligned directory or a plain corpus.

    ``language`` is passed to the corpus reader for a plain corpus, whose folders do not say it.
    """
    utt_path = src / "utterances.parquet"
    if utt_path.is_file():
        hint = "the aligned corpus is damaged: rerun `lam align` on it"
        utts = read_parquet(utt_path, what="utterances table", hint=hint)
        seg_path = src / "segments.parquet"
        if not seg_path.is_file():
            raise ExtractionError("aligned corpus has utterances.parquet but no segments.parquet", path=src,
                                  hint="rerun `lam align`, or pass a plain corpus for utterance features")
        segs = read_parquet(seg_path, what="segments table", hint=hint)
        for table, path, need in ((utts, utt_path, ("utt_id", "audio_path")),
                                  (segs, seg_path, ("utt_id", "index", "start", "end", "unit_class", "phone"))):
            missing = [c for c in need if c not in table.column_names]
            if missing:
                raise ExtractionError(f"the table lacks column(s) {missing}", path=path, hint=hint)
        return utts, segs
    if not src.exists():
        raise ExtractionError("input not found", path=src, hint="pass the output directory of `lam align`")
    from phonalign.corpus import read_corpus, utterances_to_table

    return utterances_to_table(read_corpus(src, language=language)), None


@dataclass(frozen=True)
class EncoderFacts:
    """What the planning and the writer need to know of the model that computes (plain values, no
    weights): taken from the loaded encoder in this process, or from a Ray actor's."""

    model_id: str
    revision: str | None
    n_layers: int
    hidden_size: int
    model_type: str
    whisper_mode: str
    max_samples: int | None
    min_samples: int
    settings: dict
    frame_spec: dict
    device: str
    dtype: str
    #: :meth:`analysis.model_identity.ModelIdentity.to_dict` (the weights' digest)
    identity: dict

    @classmethod
    def of(cls, enc: SpeechEncoder) -> EncoderFacts:
        """The facts of a loaded encoder (its identity computed, and memoised, here)."""
        return cls(model_id=enc.model_id, revision=enc.revision, n_layers=int(enc.n_layers),
                   hidden_size=int(enc.hidden_size), model_type=enc.model_type, whisper_mode=enc.whisper_mode,
                   max_samples=enc.max_samples, min_samples=int(enc.min_samples), settings=enc.settings(),
                   frame_spec=enc.frame_spec.to_dict(), device=str(enc.device), dtype=enc.dtype_name,
                   identity=enc.identity.to_dict())


@dataclass(frozen=True)
class ExtractionPlan:
    """What one run (or shard) of feature extraction must do, after the store was brought in line
    with the input (see :func:`plan_extraction`).

    Attributes
    ----------
    store : FeatureStore
    meta : dict
        The store's metadata for this run (model identity, settings, layers, dtype).
    settings_fp : str
        Settings fingerprint to record with every chunk (``FeatureStore.append(settings_fp=...)``).
    fingerprints : dict
        utt_id -> input fingerprint, to record in every row of the utterance (``input_fp``).
    mine : ndarray of int
        Positions (in the utterance table) of this shard's utterances, in utt_id order.
    todo : list of int
        Those still to extract (new, changed, or not yet done).
    chunk_prefix : str
        Chunk id prefix of this shard (``""`` unsharded).
    dropped, redone : int
        Utterances taken out of the store because they left the input, or because they changed.
    layers : list of int
        Layers kept (0..L), in store order: what workers pool and the store holds.
    """

    store: FeatureStore
    meta: dict
    settings_fp: str
    fingerprints: dict[str, str]
    mine: np.ndarray
    todo: list[int]
    chunk_prefix: str
    dropped: int
    redone: int
    layers: list[int]


def _audio_path(src: Path, value: str | None) -> Path:
    path = Path(value or "")
    return path if path.is_absolute() else src / path


def plan_extraction(out: Path, src: Path, utts: pa.Table, segs: pa.Table | None, enc: SpeechEncoder | EncoderFacts,
                    *, language: str | None, shard: tuple[int, int] = (0, 1), force: bool = False,
                    layers: str | Sequence[int] | None = None, store_dtype: str = DEFAULT_STORE_DTYPE,
                    extra_settings: dict | None = None) -> ExtractionPlan:
    """Open (or create) the store at ``out`` for a run and bring it in line with the input.

    The caller holds ``out`` (:func:`phonalign.outdir.output_folder`, shared when sharded). Every
    engine that writes into the store (the local one, Ray actors) starts here and commits chunks
    with ``plan.settings_fp`` and rows carrying ``plan.fingerprints[utt_id]``. ``enc`` is the
    loaded encoder, or the :class:`EncoderFacts` of the one workers run. ``extra_settings`` are
    recorded with the store's settings (``weights: random-init`` and its seed for the untrained
    control).

    Raises
    ------
    StoreSettingsError, OutputFolderError
        Another model or settings (layers and store dtype included), or another corpus, without
        ``force``; a sharded run that would have to touch another run's chunks.
    StoreError
        ``layers`` that the model does not have, an unknown ``store_dtype``.
    """
    facts = enc if isinstance(enc, EncoderFacts) else EncoderFacts.of(enc)
    i_shard, n_shards = shard
    kept = parse_layers(layers, facts.n_layers)
    settings = {**facts.settings, "pooling": "mean", "segment_rule": "centre-in-segment, at least one frame",
                "skipped_classes": list(SKIPPED_CLASSES), "input": "segments" if segs is not None else "utterances",
                **(extra_settings or {})}
    meta = new_meta(model_id=facts.model_id, revision=facts.revision, n_layers=facts.n_layers,
                    hidden_size=facts.hidden_size, settings=settings, frame_spec=facts.frame_spec,
                    model=facts.identity, layers=kept, dtype=store_dtype)
    corpus_id = {"source": str(src.resolve()), "language": language,
                 "corpora": sorted({str(c) for c in utts.column("corpus").to_pylist()})
                 if "corpus" in utts.column_names else []}
    settings_fp = digest({k: meta[k] for k in ("n_layers", "hidden_size", "settings", "frame_spec")}
                         | {"model": model_digest(meta)})
    store = _open_store(out, meta, corpus_id, force=force, sharded=n_shards > 1)
    utt_ids = utts.column("utt_id").to_pylist()
    cols = {name: utts.column(name).to_pylist() if name in utts.column_names else [None] * utts.num_rows
            for name in ("audio_path", "language", "speaker", "corpus", "emotion", "split", "start", "end")}
    fps = _input_fingerprints(utt_ids, cols, segs, _segments_by_utt(segs),
                              lambda i: _audio_path(src, cols["audio_path"][i]))
    mine = np.array([i for i, u in enumerate(utt_ids) if shard_of(u, n_shards) == i_shard], np.int64)
    mine = mine[np.argsort(np.asarray(utt_ids, dtype=object)[mine], kind="stable")] if mine.size else mine
    prefix = "" if n_shards == 1 else f"s{i_shard:04d}of{n_shards:04d}-"
    done, dropped, redone = _resume(store, utt_ids, fps, settings_fp, i_shard=i_shard, n_shards=n_shards,
                                    prefix=prefix, path=out)
    todo = [int(i) for i in mine if utt_ids[i] not in done]
    return ExtractionPlan(store, meta, settings_fp, fps, mine, todo, prefix, dropped, redone, kept)


def _input_fingerprints(utt_ids: list[str], cols: dict[str, list], segs: pa.Table | None,
                        seg_rows: dict[str, tuple[int, int]], audio_path: Callable[[int], Path]) -> dict[str, str]:
    """utt_id -> fingerprint of what its rows are made from: the audio file (size, mtime), the
    utterance fields copied into the index, the stretch of the recording for an interval of a long
    recording, and its segments (index, times, class, phone)."""
    seg_digest: dict[str, str] = {}
    if segs is not None and segs.num_rows:
        idx = segs.column("index").to_numpy(zero_copy_only=False).astype(np.int64)
        start = segs.column("start").to_numpy(zero_copy_only=False).astype(np.float64)
        end = segs.column("end").to_numpy(zero_copy_only=False).astype(np.float64)
        cls = segs.column("unit_class").to_pylist()
        phone = segs.column("phone").to_pylist()
        for u, (a, z) in seg_rows.items():
            h = hashlib.blake2b(digest_size=8)
            h.update(idx[a:z].tobytes())
            h.update(start[a:z].tobytes())
            h.update(end[a:z].tobytes())
            h.update(json.dumps([cls[a:z], phone[a:z]], ensure_ascii=False).encode("utf-8"))
            seg_digest[u] = h.hexdigest()

    def stretch(i: int) -> list:
        # only intervals add their times, so that stores of whole recordings resume as before
        start, end = cols.get("start", [None] * len(utt_ids))[i], cols.get("end", [None] * len(utt_ids))[i]
        return [] if start is None and end is None else [start, end]

    return {u: digest([file_signature(audio_path(i)), str(audio_path(i)),
                       [cols[c][i] for c in ("language", "speaker", "corpus", "emotion", "split")],
                       seg_digest.get(u), *stretch(i)])
            for i, u in enumerate(utt_ids)}


def _open_store(out: Path, meta: dict, corpus_id: dict, *, force: bool, sharded: bool) -> FeatureStore:
    """The store at ``out`` for this run: created, reopened, or (``force``) taken over."""
    if not (out / "meta.json").is_file():
        store = FeatureStore.create(out, model_id=meta["model_id"], revision=meta["revision"],
                                    n_layers=meta["n_layers"], hidden_size=meta["hidden_size"],
                                    settings=meta["settings"], frame_spec=meta["frame_spec"], model=meta["model"],
                                    layers=meta["layers"], dtype=meta["dtype"])
        _set_input(store, corpus_id)
        return store
    store = FeatureStore.open(out)
    mismatch = settings_mismatch(store.meta, meta)
    old_input = store.meta.get("input")
    other_corpus = old_input is not None and old_input != corpus_id
    if not (mismatch or other_corpus):
        if old_input is None or (model_digest(meta) and not model_digest(store.meta)):
            _set_input(store, corpus_id, model=meta["model"])  # a store of an earlier version: adopted
        return store
    empty = len(store) == 0
    if not (force or empty):
        if mismatch:
            raise StoreSettingsError(mismatch, path=out, hint="use a new output folder for another model or other "
                                     "settings, or rerun with --force to replace the store's contents")
        raise OutputFolderError(
            f"the store holds another corpus ({differences(old_input, corpus_id)})", path=out,
            hint="make one store per corpus (a new output folder), or rerun with --force to replace the store's "
            "utterances by this corpus' ones")
    if sharded and not empty:
        raise OutputFolderError("a sharded run cannot replace a store's contents", path=out,
                                hint="run once without --shard (with --force), then shard")
    if mismatch:
        store = FeatureStore.replace_contents(out, meta)
    _set_input(store, corpus_id, model=meta["model"])
    return store


def _set_input(store: FeatureStore, corpus_id: dict, *, model: dict | None = None) -> None:
    """Record the corpus (and the model identity) a store holds in its ``meta.json``."""
    meta = dict(store.meta)
    meta["input"] = corpus_id
    if model is not None and not model_digest(meta):
        meta["model"] = model
    atomic_write_json(store.path / "meta.json", meta)
    store.meta = meta


def _resume(store: FeatureStore, utt_ids: list[str], fps: dict[str, str], settings_fp: str, *, i_shard: int,
            n_shards: int, prefix: str, path: Path) -> tuple[set[str], int, int]:
    """Bring the store in line with the current input before extracting.

    Utterances of this shard whose stored rows were made from other inputs or settings, that are
    stored twice, or that left the corpus are taken out of the store. Returns the utterances
    still done (to skip), how many were dropped for good and how many will be redone.
    """
    index = store.index
    current = set(utt_ids)
    if not index.num_rows:
        store.collect_garbage(chunk_prefix=prefix or None)
        return set(), 0, 0
    chunk = store.row_chunks()
    ids = index.column("utt_id").to_pylist()
    stored_fp = index.column("input_fp").to_pylist()
    kind = index.column("kind").to_pylist()
    where: dict[str, set[str]] = {}
    state: dict[str, tuple[str | None, str | None]] = {}
    for u, fp, k, c in zip(ids, stored_fp, kind, chunk, strict=True):
        if k != "utt":
            continue
        where.setdefault(u, set()).add(c)
        state[u] = (fp, store.chunk_settings_fp(c))
    drop: set[str] = set()
    for u, (fp, sfp) in state.items():
        if shard_of(u, n_shards) != i_shard:
            continue
        if u not in current or fp != fps.get(u) or sfp != settings_fp or len(where[u]) > 1:
            drop.add(u)
    if prefix:
        foreign = sorted(u for u in drop if any(not c.startswith(prefix) for c in where[u]))
        if foreign:
            raise OutputFolderError(
                f"{len(foreign)} utterance(s) of this shard must be redone but were stored by another run "
                f"(e.g. {foreign[0]!r})", path=path,
                hint="run once without --shard to bring the store up to date, then shard again")
    store.drop_utterances(drop, chunk_prefix=prefix or None)
    store.collect_garbage(chunk_prefix=prefix or None)
    done = {u for u in state if u not in drop}
    dropped = sum(1 for u in drop if u not in current)
    return done, dropped, len(drop) - dropped


def _check_segments_in_audio(index: np.ndarray, start: np.ndarray, end: np.ndarray, duration: float, utt_id: str,
                             path: str | Path, *, offset: float = 0.0) -> None:
    """Raise :class:`ExtractionError` when a segment lies past the end of the audio (the aligned
    corpus and the audio disagree: its vector would be some other frames').

    ``index``, ``start``, ``end``: the segments' indices and times (seconds, on the recording's
    timeline), shape (n,); ``duration``: of the audio read for the utterance, seconds, which starts
    ``offset`` seconds into its recording (an interval of a long recording).
    """
    bad = np.flatnonzero((end - offset > duration + MAX_SEGMENT_OVERRUN) | (start - offset >= duration))
    if bad.size:
        j = int(bad[0])
        raise ExtractionError(
            f"segment {int(index[j])} ({start[j]:.3f}-{end[j]:.3f} s) lies past the end of the audio "
            f"({offset + duration:.3f} s)", path=path, utt_id=utt_id,
            hint="the audio is shorter than its alignment says (cut or replaced since `lam align`): align it again")


def merge_shard_reports(out: str | Path) -> MergedFeaturesReport:
    """Combine the shard reports of a store into ``out/report.json`` (and ``config.yaml``).

    Every shard of ``lam features --shard I/N`` keeps its own ``shards/sIIIIofNNNN/report.json``
    and ``config.yaml``; each shard calls this when it finishes, so the last one leaves the
    merged report. The merge takes a lock of its own, so two shards finishing together cannot
    lose each other's counts. ``complete`` is true once every one of the N shards has reported.

    Returns
    -------
    MergedFeaturesReport
        The merged report (:meth:`~analysis.extract_report.MergedFeaturesReport.to_dict` is the file).
    """
    out = Path(out)
    with open(out / ".lam.lock.merge", "a+") as lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # blocks: a merge takes milliseconds
        except (ImportError, OSError):
            pass  # no flock here: shards finishing in the same millisecond may need a rerun of one
        reports, latest_n = _latest_shard_reports(out)
        merged = _merge_reports(reports, latest_n)
        atomic_write_json(out / "report.json", merged.to_dict())
        configs = sorted((out / "shards").glob(f"s*of{latest_n:04d}/config.yaml")) if latest_n else []
        if configs:
            import yaml

            first = yaml.safe_load(configs[0].read_text(encoding="utf-8")) or {}
            common = {k: v for k, v in first.items() if k not in ("shard_index",)}
            write_run_info(out, step="features", config={**common, "shards": [p.parent.name for p in configs]})
    return merged


def _latest_shard_reports(out: Path) -> tuple[dict[str, dict], int | None]:
    """The shard reports under ``out/shards`` of the latest split (by folder name), and its N."""
    reports = {}
    n_shards = None
    for path in sorted((out / "shards").glob("s*of*/report.json")):
        reports[path.parent.name] = read_json(path, what="shard report",
                                              hint="rerun that shard (it resumes) to write it again")
        n_shards = int(path.parent.name.split("of")[1])
    return {k: v for k, v in reports.items() if int(k.split("of")[1]) == n_shards}, n_shards


def _merge_reports(reports: dict[str, dict], n_shards: int | None) -> MergedFeaturesReport:
    """Sums of the shards' counts and times, their failures, and the shards still missing."""
    counts = dict.fromkeys(("ok", "skipped_done", "redone", "dropped", "rows_written", "utterances_in_shard"), 0)
    times = {"forward_seconds": 0.0, "seconds": 0.0}
    failed: dict[str, Any] = {}
    first: dict[str, Any] = {}
    for _, rep in sorted(reports.items()):
        for key in counts:
            counts[key] += int(rep.get(key) or 0)
        for key in times:
            times[key] += float(rep.get(key) or 0.0)
        failed.update(rep.get("failed") or {})
        for key in ("model", "model_digest", "input"):
            first.setdefault(key, rep.get(key))
    expected = {f"s{i:04d}of{n_shards:04d}" for i in range(n_shards or 0)}
    shards = {name: ShardSummary(**{k: rep.get(k) for k in ("shard", "ok", "n_failed", "skipped_done", "seconds")})
              for name, rep in sorted(reports.items())}
    failures = tuple(UtteranceFailure.from_dict(u, r) for u, r in failed.items())
    return MergedFeaturesReport(shards=shards, failed=failures, ok=counts["ok"], skipped_done=counts["skipped_done"],
                                redone=counts["redone"], dropped=counts["dropped"],
                                rows_written=counts["rows_written"], forward_seconds=times["forward_seconds"],
                                seconds=times["seconds"], utterances_in_shard=counts["utterances_in_shard"],
                                model=first.get("model"), model_digest=first.get("model_digest"),
                                input=first.get("input"),
                                n_shards=n_shards, shards_missing=tuple(sorted(expected - set(reports))))


def _segments_by_utt(segs: pa.Table | None) -> dict[str, tuple[int, int]]:
    """utt_id -> (row start, row stop) in the sorted segments table (one pass, no per-utt filter)."""
    if segs is None or segs.num_rows == 0:
        return {}
    ids = np.asarray(segs.column("utt_id").to_pylist(), dtype=object)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(ids)]])
    return {ids[a]: (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}


def plan_batches(lengths, *, batch_seconds: float, fixed_seconds: float | None = None) -> list[np.ndarray]:
    """Group items into batches by length under a cap on padded audio seconds.

    Parameters
    ----------
    lengths : array of int, shape (n,)
        Samples at 16 kHz.
    batch_seconds : float
        Cap on ``batch size x longest item`` (seconds); an item longer than the cap runs alone.
    fixed_seconds : float, optional
        Cost of every item whatever its length (Whisper crop pads each input to 30 s).

    Returns
    -------
    list of ndarray of int
        Item positions per batch, longest items first.
    """
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    longest = 0.0
    for i in order:  # one step per utterance (not per frame or segment)
        sec = fixed_seconds if fixed_seconds is not None else lengths[i] / SAMPLE_RATE
        new_longest = max(longest, sec)
        if current and new_longest * (len(current) + 1) > batch_seconds:
            batches.append(np.array(current))
            current, new_longest = [], sec
        current.append(int(i))
        longest = new_longest
    if current:
        batches.append(np.array(current))
    return batches


class _Chunk:
    """Pooled rows waiting to be committed as one store chunk."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {}
        self.arrays: list[np.ndarray] = []  # each (n_stored_layers, n_rows, H)
        self.n = 0

    def add(self, cols: dict[str, list], arr: np.ndarray) -> None:
        for k, v in cols.items():
            self.cols.setdefault(k, []).extend(v)
        self.arrays.append(arr)
        self.n += arr.shape[1]

    def commit(self, store: FeatureStore, prefix: str, settings_fp: str) -> None:
        if not self.n:
            return
        layers = np.concatenate(self.arrays, axis=1)
        store.append(index_table(self.cols), layers, chunk_id=store.next_chunk_id(prefix), settings_fp=settings_fp)
        self.__init__()  # type: ignore[misc]


def random_init_model(model: Any, *, seed: int, model_id: str | None = None) -> tuple[Any, str, dict | None]:
    """The same architecture with freshly initialised weights: the untrained control.

    Builds ``type(built)(built.config)`` under ``torch.manual_seed(seed)`` (transformers' own
    initialisation; Whisper keeps its fixed sinusoidal positions, which are not learned), so the
    same seed gives the same weights. The caller's global torch RNG state is left as it was.

    Parameters
    ----------
    model : str, Path or transformers.PreTrainedModel
        What :func:`analysis.models.load_encoder` takes (an id or directory is loaded once to read
        its configuration and front-end settings).
    seed : int

    Returns
    -------
    (model, model_id, preprocessor) : transformers.PreTrainedModel, str, dict or None
    """
    from .models import _model_dir, _read_preprocessor

    if isinstance(model, SpeechEncoder):
        raise ExtractionError("--random-init needs a model id, directory or transformers model, not a SpeechEncoder",
                              hint="pass the model itself")
    preprocessor = None
    built: Any
    if isinstance(model, (str, Path)):
        from .model_sources import resolve_pretrained

        loaded = resolve_pretrained(str(model))
        built, model_id = loaded.model, model_id or loaded.model_id
        preprocessor = _read_preprocessor(_model_dir(str(loaded.location)))
    else:
        built = model
        model_id = model_id or getattr(built.config, "_name_or_path", "") or type(built).__name__
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        fresh = type(built)(built.config)
    return fresh.eval(), str(model_id), preprocessor


# ---------------------------------------------------------------------------------------------
# The work of one batch (what a worker computes) and its commit (what the one writer does).
# Both engines (local, and Ray actors in analysis.ray_extract) compute batches with pool_work
# and hand the results to the same _Writer, so the store, resume and report are the same.


@dataclass(frozen=True)
class UttWork:
    """One utterance to pool: its audio and the segments that get a vector.

    ``pos`` is the utterance's row in the run's utterance table; ``seconds`` its duration from the
    file header (or its interval); ``start``/``end`` (seconds, None: the recording's start/end) the
    stretch of the recording an interval of a long recording is; ``seg_index`` (int64),
    ``seg_start``/``seg_end`` (float64, seconds on the recording's timeline), shape (n_segments,),
    are its non-silence segments in index order.
    """

    pos: int
    utt_id: str
    audio_path: str
    seconds: float
    start: float | None
    end: float | None
    seg_index: np.ndarray
    seg_start: np.ndarray
    seg_end: np.ndarray


@dataclass(frozen=True)
class UttPooled:
    """One pooled utterance: its length and the frames of its rows (utterance row, then segments)."""

    pos: int
    n_samples: int
    first_frame: np.ndarray  # int64 (1 + n_segments,)
    stop_frame: np.ndarray


@dataclass(frozen=True)
class BatchResult:
    """What a worker sends back for one batch.

    ``pooled`` is float32 ``(n_stored_layers, n_rows, hidden)``, the rows of the utterances of
    ``done`` in order (each: its utterance row, then its segment rows); ``failed`` pairs an
    utterance's ``pos`` with its error. Values are as the model gave them (the writer checks them).
    """

    pooled: np.ndarray | None
    done: tuple[UttPooled, ...]
    failed: tuple[tuple[int, LamError], ...]
    forward_seconds: float
    audio_seconds: float


def check_length(facts: EncoderFacts, n: int, *, path: str | Path, utt_id: str) -> None:
    """Raise :class:`ExtractionError` when ``n`` samples are too long or too short for the model."""
    if facts.max_samples is not None and n > facts.max_samples:
        raise ExtractionError(f"{n / SAMPLE_RATE:.2f} s is longer than the model's "
                              f"{facts.max_samples / SAMPLE_RATE:.0f} s window", path=path,
                              utt_id=utt_id, hint="split long recordings before alignment")
    if n < facts.min_samples:
        raise ExtractionError(f"{n} samples is shorter than one frame ({facts.min_samples} samples)",
                              path=path, utt_id=utt_id, hint="drop utterances this short")


def pool_work(enc: SpeechEncoder, batch: Sequence[UttWork], *, layers: Sequence[int],
              facts: EncoderFacts | None = None) -> BatchResult:
    """Decode, run and pool one batch: every kept layer, per utterance and per segment.

    Parameters
    ----------
    enc : SpeechEncoder
    batch : sequence of UttWork
        One planned batch (:func:`plan_batches`).
    layers : sequence of int
        Layers kept (0..L), in store order.
    facts : EncoderFacts, optional
        ``EncoderFacts.of(enc)``, when the caller has it (spares computing it per batch).

    Returns
    -------
    BatchResult
        Per-utterance failures (unreadable audio, NaN samples, too long, segments past the end of
        the audio) are in ``failed``; nothing is raised for them.
    """
    from phonalign.audio import load_audio

    facts = facts if facts is not None else EncoderFacts.of(enc)
    failed: list[tuple[int, LamError]] = []
    waves, kept = [], []
    for w in batch:
        try:
            wav = load_audio(w.audio_path, sr=SAMPLE_RATE, start=w.start, end=w.end)
            check_length(facts, len(wav), path=w.audio_path, utt_id=w.utt_id)
            if len(w.seg_start):
                _check_segments_in_audio(w.seg_index, w.seg_start, w.seg_end, len(wav) / SAMPLE_RATE, w.utt_id,
                                         w.audio_path, offset=float(w.start or 0.0))
        except LamError as err:
            err.utt_id = err.utt_id or w.utt_id
            failed.append((w.pos, err))
            continue
        waves.append(wav)
        kept.append(w)
    if not kept:
        return BatchResult(None, (), tuple(failed), 0.0, 0.0)
    tf = time.perf_counter()
    try:
        hidden, valid = enc.forward(waves)
        if enc.device.type == "cuda":
            torch.cuda.synchronize(enc.device)  # time the forward, not its launch
    except LamError as err:
        failed.extend((w.pos, ExtractionError(str(err.message), utt_id=w.utt_id, hint=err.hint)) for w in kept)
        return BatchResult(None, (), tuple(failed), 0.0, 0.0)
    forward_seconds = time.perf_counter() - tf
    span_b, span_f, span_s, done = [], [], [], []
    for b, w in enumerate(kept):  # per utterance: its spans (vectorised within)
        n = int(valid[b])
        seg_first = np.zeros(0, np.int64)
        seg_stop = np.zeros(0, np.int64)
        if len(w.seg_start):
            try:
                # segment times are on the recording's timeline; frames on the utterance's
                offset = float(w.start or 0.0)
                seg_first, seg_stop = frames_for_segments(w.seg_start - offset, w.seg_end - offset,
                                                          spec=enc.frame_spec, n_frames=n)
            except LamError as err:
                err.utt_id = w.utt_id
                failed.append((w.pos, err))
                continue
        first = np.concatenate([[0], seg_first]).astype(np.int64)
        stop = np.concatenate([[n], seg_stop]).astype(np.int64)
        span_b.append(np.full(len(first), b))
        span_f.append(first)
        span_s.append(stop)
        done.append(UttPooled(w.pos, len(waves[b]), first, stop))
    pooled = None
    if span_b:
        if list(layers) == list(range(hidden.shape[0])):
            selected = hidden
        else:
            selected = hidden[torch.as_tensor(np.asarray(layers, np.int64), device=hidden.device)]
        pooled = pool_batch(selected, np.concatenate(span_b), np.concatenate(span_f),
                            np.concatenate(span_s)).cpu().numpy()
    return BatchResult(pooled, tuple(done), tuple(failed), forward_seconds,
                       float(sum(len(x) for x in waves)) / SAMPLE_RATE)


_ROW_COLUMNS = ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "phone", "start", "end", "language",
                "speaker", "corpus", "emotion", "split", "first_frame", "stop_frame", "input_fp")


class _Writer:
    """The one writer of a run: checks batch results, turns them into index rows and store chunks,
    keeps the report. Every engine commits through it, in planned order."""

    def __init__(self, *, plan: ExtractionPlan, report_dir: Path, report: dict, t0: float, chunk_rows: int,
                 strict: bool, utt_ids: list[str], cols: dict[str, list], seg_tab: pa.Table | None,
                 seg_rows: dict[str, tuple[int, int]], audio_path: Callable[[int], Path]) -> None:
        self.plan, self.report_dir, self.report, self.t0 = plan, report_dir, report, t0
        self.chunk_rows, self.strict = chunk_rows, strict
        self.utt_ids, self.cols, self.seg_tab, self.seg_rows = utt_ids, cols, seg_tab, seg_rows
        self.audio_path = audio_path
        self.chunk = _Chunk()

    def fail(self, pos: int, err: LamError) -> None:
        """Record one utterance's failure (raise it with ``strict``)."""
        if self.strict:
            raise err
        self.report["failed"][self.utt_ids[pos]] = err.to_report()

    def segments_of(self, pos: int) -> pa.Table | None:
        """The segment rows of utterance ``pos`` that get a vector (silence dropped), or None."""
        u = self.utt_ids[pos]
        if self.seg_tab is None or u not in self.seg_rows:
            return None
        a, z = self.seg_rows[u]
        part = self.seg_tab.slice(a, z - a)
        cls = np.asarray(part.column("unit_class").to_pylist(), dtype=object)
        return part.filter(pa.array(~np.isin(cls, SKIPPED_CLASSES)))

    def add(self, result: BatchResult) -> None:
        """Commit one batch's results (whole utterances; a chunk is written when it is full).

        An utterance whose vectors hold NaN or infinity fails here and none of its rows is kept:
        a store never holds a non-finite value.
        """
        for pos, err in result.failed:
            self.fail(pos, err)
        self.report["forward_seconds"] += result.forward_seconds
        if result.pooled is None:
            return
        finite = np.isfinite(result.pooled).all(axis=(0, 2))
        keep = np.ones(result.pooled.shape[1], bool)
        rows: dict[str, list] = {k: [] for k in _ROW_COLUMNS}
        start = 0
        for d in result.done:
            u = self.utt_ids[d.pos]
            k = len(d.first_frame)
            if not finite[start:start + k].all():
                keep[start:start + k] = False
                start += k
                self.fail(d.pos, ExtractionError(
                    "the model's output for this utterance holds NaN or infinite values", path=self.audio_path(d.pos),
                    utt_id=u, hint="check the recording (clipping, silence) or use float32 (--dtype)"))
                continue
            start += k
            meta = [self.cols[name][d.pos] for name in ("language", "speaker", "corpus", "emotion", "split")]
            rows["unit_id"].append(u)
            rows["kind"].append("utt")
            rows["utt_id"].append(u)
            rows["seg_index"].append(-1)
            rows["unit_class"].append("utterance")
            rows["phone"].append(None)
            offset = float(self.cols["start"][d.pos] or 0.0)  # an interval of a long recording
            rows["start"].append(offset)
            rows["end"].append(offset + d.n_samples / SAMPLE_RATE)
            if k > 1:
                seg_part = self.segments_of(d.pos)
                if seg_part is None or seg_part.num_rows != k - 1:
                    raise ExtractionError(f"a worker pooled {k - 1} segments, the segments table has "
                                          f"{0 if seg_part is None else seg_part.num_rows}", utt_id=u,
                                          hint="this is a bug: the work sent and the table disagree")
                idx = seg_part.column("index").to_pylist()
                rows["unit_id"].extend(f"{u}#{j}" for j in idx)
                rows["kind"].extend(["segment"] * len(idx))
                rows["utt_id"].extend([u] * len(idx))
                rows["seg_index"].extend(idx)
                rows["unit_class"].extend(seg_part.column("unit_class").to_pylist())
                rows["phone"].extend(seg_part.column("phone").to_pylist())
                rows["start"].extend(seg_part.column("start").to_pylist())
                rows["end"].extend(seg_part.column("end").to_pylist())
            for name, value in zip(("language", "speaker", "corpus", "emotion", "split"), meta, strict=True):
                rows[name].extend([value] * k)
            rows["first_frame"].extend(d.first_frame.tolist())
            rows["stop_frame"].extend(d.stop_frame.tolist())
            rows["input_fp"].extend([self.plan.fingerprints[u]] * k)
            self.report["ok"] += 1
        pooled = result.pooled if keep.all() else result.pooled[:, keep]
        if pooled.shape[1]:
            self.chunk.add(rows, pooled)
            self.report["rows_written"] += int(pooled.shape[1])
        if self.chunk.n >= self.chunk_rows:
            self.flush()

    def flush(self) -> FeaturesReport:
        """Commit the rows pooled so far and write the report (returned)."""
        self.chunk.commit(self.plan.store, self.plan.chunk_prefix, self.plan.settings_fp)
        return _write_report(self.report_dir, self.report, self.t0)


def extract_features(aligned_dir: str | Path, out_dir: str | Path, *, model: Any, device: str = DEFAULT_DEVICE,
                     dtype: str = DEFAULT_DTYPE, batch_seconds: float = BATCH_SECONDS,
                     whisper_mode: str = DEFAULT_WHISPER_MODE, shard: str | tuple[int, int] = (0, 1),
                     strict: bool = False, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
                     model_id: str | None = None, language: str | None = None, force: bool = False,
                     allow_missing: bool = False, random_init: bool = False, init_seed: int = 0,
                     store_dtype: str = DEFAULT_STORE_DTYPE, layers: str | Sequence[int] | None = None,
                     engine: str | EngineConfig | None = None) -> FeaturesReport:
    """Pool every layer per utterance and per segment into the feature store ``out_dir``.

    Parameters
    ----------
    aligned_dir : str or Path
        Output of ``lam align`` (or a plain corpus: utterance rows only).
    out_dir : str or Path
        Feature store (created, or resumed when it holds the same model, settings and corpus; see
        the module docstring for what a resumed run redoes). Locked for the run.
    model : str or SpeechEncoder or transformers model
        Model id / path (see :func:`analysis.models.load_encoder`), or a built model.
    device, dtype, whisper_mode : see :func:`analysis.models.load_encoder`
    batch_seconds : float
        Cap on padded audio per batch, seconds.
    shard : (int, int) or str
        ``(I, N)`` or ``"I/N"`` (:func:`parse_shard`): process the utterances of shard ``I`` of ``N``
        (:func:`shard_of` of the utterance id, stable when the corpus changes). Shards of one store
        may run at the same time; each keeps its report in ``out_dir/shards/sIIIIofNNNN/`` and the
        last to finish merges them.
    strict : bool
        Stop at the first failing utterance instead of recording it and going on.
    language : str, optional
        Only utterances of this ``language`` (e.g. ``en``), to make one store per corpus side; for a
        plain corpus folder (which does not say its language) it is also the utterances' language.
    chunk_rows : int
        Rows per committed chunk (memory held before a commit: ``chunk_rows x layers x H x 4`` bytes).
    force : bool
        Accept a store made with another model or settings (its contents are replaced; unsharded
        runs only) or from another corpus (its utterances are dropped).
    allow_missing : bool
        Accept a model folder whose weight files do not fill the architecture (recorded in the
        store's ``meta.json``).
    random_init, init_seed : bool, int
        Extract with the same architecture but freshly initialised weights (:func:`random_init_model`),
        the untrained control. The store's settings then say ``weights: random-init`` and the seed,
        so it is never taken for the trained model and `lam similarity` refuses to mix the two.
    store_dtype : ``float32`` | ``float16`` | ``bfloat16``
        Precision of the stored arrays (see :mod:`analysis.store`); pooling is always float32.
    layers : str or sequence of int, optional
        Layers to keep (``"0,6-12"`` or ``[0, 6, 7, ...]``, see :func:`analysis.store.parse_layers`);
        default every layer 0..L.
    engine : ``"local"``, ``"ray"`` or :class:`phonalign.engine.EngineConfig`, optional
        Where batches are computed (default here; see :mod:`phonalign.engine`): with Ray, actors
        load the model (``model`` as an id or path, or a built model sent to them) and the
        batches planned here run there; this process still holds the store folder, plans, and
        writes the store and the report.

    Returns
    -------
    FeaturesReport
        The run's (a shard's own) report, whose :meth:`~FeaturesReport.to_dict` is ``report.json``:
        ``ok``, ``skipped_done``, ``redone``, ``dropped``, ``failed``, ``rows_written``, ``seconds``...

    Examples
    --------
    Every layer of a small random HuBERT (saved as a local model folder) over two aligned demo
    utterances:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from analysis.extract import extract_features
    >>> from analysis.store import FeatureStore
    >>> from analysis.testing import random_model
    >>> from phonalign.align import get_aligner
    >>> from phonalign.align.run import align_corpus
    >>> from phonalign.corpus import demo_corpus_dir, read_corpus
    >>> work = Path(tempfile.mkdtemp())
    >>> aligner = get_aligner("textgrid", textgrids=str(demo_corpus_dir() / "textgrids"))
    >>> _ = align_corpus(read_corpus(None, preset="lam-demo")[:2], work / "aligned", aligner, progress=False)
    >>> random_model("hubert", n_layers=2).save_pretrained(work / "hubert-tiny")
    >>> _ = extract_features(work / "aligned", work / "store", model=str(work / "hubert-tiny"), device="cpu",
    ...                      progress=False)
    >>> store = FeatureStore.open(work / "store")
    >>> store.layer_names, store.read_layer("layer_02").shape[1]
    (['layer_00', 'layer_01', 'layer_02'], 32)
    """
    t0 = time.perf_counter()
    src, out = Path(aligned_dir), Path(out_dir)
    i_shard, n_shards = parse_shard(shard)
    _check_store_dtype(store_dtype)
    engine = resolve_engine(engine)
    utts, segs = _select_inputs(src, language=language)
    # the folder is held for the whole run, whatever the engine: the workers only compute
    with output_folder(out, step="features", rules=STORE_FOLDER,
                       shard=(i_shard, n_shards) if n_shards > 1 else None) as folder:
        return _extract_locked(src, out, folder, utts, segs, t0=t0, model=model, device=device, dtype=dtype,
                               batch_seconds=batch_seconds, whisper_mode=whisper_mode, i_shard=i_shard,
                               n_shards=n_shards, strict=strict, chunk_rows=chunk_rows, progress=progress,
                               model_id=model_id, language=language, force=force, allow_missing=allow_missing,
                               random_init=random_init, init_seed=init_seed, store_dtype=store_dtype, layers=layers,
                               engine=engine)


def _check_store_dtype(store_dtype: str) -> None:
    if store_dtype not in STORE_DTYPES:
        raise ExtractionError(f"unknown store dtype {store_dtype!r}", hint=f"use one of {', '.join(STORE_DTYPES)}")


def _select_inputs(src: Path, *, language: str | None) -> tuple[pa.Table, pa.Table | None]:
    """The run's utterances (of ``language`` only, when given) and segments (sorted by utterance
    and index, or None for a plain corpus)."""
    utts, segs = _read_inputs(src, language=language)
    if language is not None:
        keep = np.asarray(utts.column("language").to_pylist(), dtype=object) == language
        if not keep.any():
            raise ExtractionError(f"no utterance of language {language!r}", path=src,
                                  hint="check --language against the corpus' language column")
        utts = utts.filter(pa.array(keep))
    if segs is not None:
        segs = segs.sort_by([("utt_id", "ascending"), ("index", "ascending")])
    return utts, segs


def _extract_locked(src: Path, out: Path, folder: OutputFolder, utts: pa.Table, segs: pa.Table | None, *,
                    t0: float, model: Any, device: str, dtype: str, batch_seconds: float, whisper_mode: str,
                    i_shard: int, n_shards: int, strict: bool, chunk_rows: int, progress: bool,
                    model_id: str | None, language: str | None, force: bool, allow_missing: bool,
                    random_init: bool, init_seed: int, store_dtype: str, layers: str | Sequence[int] | None,
                    engine: EngineConfig) -> FeaturesReport:
    """:func:`extract_features` once the output folder is held."""
    seg_rows = _segments_by_utt(segs)
    extra: dict | None = None
    do_normalize: bool | None = None
    if random_init:
        # built here, from the seed, whatever the engine: Ray actors get these very weights
        model, model_id, preprocessor = random_init_model(model, seed=init_seed, model_id=model_id)
        do_normalize = None if preprocessor is None or "do_normalize" not in preprocessor \
            else bool(preprocessor["do_normalize"])
        # only untrained stores carry these keys, so stores made before them resume unchanged
        extra = {"weights": "random-init", "init_seed": int(init_seed)}
    load_kw: dict[str, Any] = dict(device=device, dtype=dtype, whisper_mode=whisper_mode, model_id=model_id,
                   do_normalize=do_normalize, allow_missing=allow_missing)
    with contextlib.ExitStack() as stack:
        pool = None
        enc: SpeechEncoder | None = None
        if engine.name == "ray":
            from .ray_extract import RayExtractPool

            pool = stack.enter_context(RayExtractPool(engine, model=model, untrained=random_init, **load_kw))
            assert pool.facts is not None  # set on entering the pool
            facts = pool.facts
        else:
            enc = model if isinstance(model, SpeechEncoder) else load_encoder(model, **load_kw)
            if random_init:
                enc.revision = None  # no checkpoint revision describes these weights
            facts = EncoderFacts.of(enc)
        plan = plan_extraction(out, src, utts, segs, facts, language=language, shard=(i_shard, n_shards),
                               force=force, layers=layers, store_dtype=store_dtype, extra_settings=extra)
        report_dir = out if folder.shard_name is None else make_dirs(out / "shards" / folder.shard_name)
        config = ExtractConfig(model=facts.model_id, device=facts.device, dtype=facts.dtype,
                               batch_seconds=batch_seconds, whisper_mode=whisper_mode, shard_index=i_shard,
                               n_shards=n_shards, strict=strict, chunk_rows=chunk_rows, store_dtype=store_dtype,
                               layers=tuple(plan.layers), random_init=random_init, init_seed=init_seed)
        write_run_info(report_dir, step="features", config={**asdict(config), "input": str(src),
                                                            "language": language, "settings": plan.meta["settings"],
                                                            "model": facts.identity, "engine": engine})

        utt_ids = utts.column("utt_id").to_pylist()
        cols = {name: utts.column(name).to_pylist() if name in utts.column_names else [None] * utts.num_rows
                for name in ("audio_path", "language", "speaker", "corpus", "emotion", "split", "start", "end")}

        def audio_path(i: int) -> Path:
            return _audio_path(src, cols["audio_path"][i])

        running: dict[str, Any] = {  # the writer's counts; FeaturesReport.from_dict makes the report
            "step": "features", "model": facts.model_id, "model_digest": facts.identity.get("digest"),
            "shard": f"{i_shard}/{n_shards}", "input": str(src), "utterances_in_shard": int(len(plan.mine)),
            "skipped_done": int(len(plan.mine) - len(plan.todo)), "ok": 0, "redone": plan.redone,
            "dropped": plan.dropped, "failed": {}, "rows_written": 0, "forward_seconds": 0.0}
        writer = _Writer(plan=plan, report_dir=report_dir, report=running, t0=t0, chunk_rows=chunk_rows,
                         strict=strict, utt_ids=utt_ids, cols=cols, seg_tab=segs, seg_rows=seg_rows,
                         audio_path=audio_path)
        bar: WorkProgress | None = None
        try:
            batches, lengths = _plan(plan.todo, facts, writer=writer, audio_path=audio_path,
                                     batch_seconds=batch_seconds)
            work = [[UttWork(pos=i, utt_id=utt_ids[i], audio_path=str(audio_path(i)),
                             seconds=lengths[i] / SAMPLE_RATE, start=cols["start"][i], end=cols["end"][i],
                             **_segment_spans(writer, i)) for i in batch]
                    for batch in batches]
            bar = WorkProgress(len(plan.todo), sum(lengths.values()) / SAMPLE_RATE,
                               desc=f"features {facts.model_id}", progress=progress)
            bar.update(len(plan.todo) - len(lengths))  # failed while planning
            if pool is not None:
                results = pool.run(work, layers=plan.layers, on_done=bar.update)
            else:
                assert enc is not None
                results = _local_results(enc, facts, work, layers=plan.layers, progress=bar)
            for result in results:
                writer.add(result)
        except BaseException:
            # keep the whole utterances already pooled, whatever stopped us (--strict, Ctrl-C, a bug;
            # after a full disk this fails too, with its own one-line error)
            if bar is not None:
                bar.close()
            writer.flush()
            raise
        bar.close()
        report = writer.flush()
    if folder.shard_name is not None:
        merge_shard_reports(out)
    return report


def _local_results(enc: SpeechEncoder, facts: EncoderFacts, work: Sequence[Sequence[UttWork]], *,
                   layers: Sequence[int], progress: WorkProgress) -> Iterator[BatchResult]:
    """The local engine: every planned batch computed in this process, in order."""
    for batch in work:
        result = pool_work(enc, batch, layers=layers, facts=facts)
        progress.update(len(batch), sum(w.seconds for w in batch))
        yield result


def _plan(todo: list[int], facts: EncoderFacts, *, writer: _Writer, audio_path: Callable[[int], Path],
          batch_seconds: float) -> tuple[list[list[int]], dict[int, int]]:
    """Batches of utterance positions, planned from the file headers' durations (audio is decoded
    batch by batch, so memory holds one batch, not the corpus), and each utterance's length in
    samples. Unreadable and too long or too short utterances are recorded as failed here."""
    from phonalign.audio import audio_duration

    def duration(i: int) -> float:
        """Seconds of utterance ``i``: its recording, or its interval of a long recording."""
        start, end = writer.cols["start"][i], writer.cols["end"][i]
        if start is None and end is None:
            return audio_duration(audio_path(i))
        return (audio_duration(audio_path(i)) if end is None else float(end)) - float(start or 0.0)

    lengths: dict[int, int] = {}
    for i in todo:
        try:
            n = int(round(duration(i) * SAMPLE_RATE))
            check_length(facts, n, path=audio_path(i), utt_id=writer.utt_ids[i])
        except LamError as err:
            err.utt_id = err.utt_id or writer.utt_ids[i]
            writer.fail(i, err)
            continue
        lengths[i] = n
    ids = np.array(list(lengths), np.int64)
    if not ids.size:
        return [], lengths
    fixed = 30.0 if (facts.model_type == "whisper" and facts.whisper_mode == "crop") else None
    plan = plan_batches(np.array([lengths[i] for i in ids]), batch_seconds=batch_seconds, fixed_seconds=fixed)
    return [[int(i) for i in ids[b]] for b in plan], lengths


def _segment_spans(writer: _Writer, pos: int) -> dict[str, np.ndarray]:
    """Indices and start and end times (seconds, float64) of the segments of utterance ``pos`` that
    get a vector."""
    part = writer.segments_of(pos)
    if part is None or not part.num_rows:
        return {"seg_index": np.zeros(0, np.int64), "seg_start": np.zeros(0), "seg_end": np.zeros(0)}
    return {"seg_index": part.column("index").to_numpy(zero_copy_only=False).astype(np.int64),
            "seg_start": part.column("start").to_numpy(zero_copy_only=False).astype(np.float64),
            "seg_end": part.column("end").to_numpy(zero_copy_only=False).astype(np.float64)}


def _write_report(out: Path, report: dict, t0: float) -> FeaturesReport:
    """Write the run's report so far (the writer's running counts) to ``out/report.json``."""
    report["seconds"] = time.perf_counter() - t0
    typed = FeaturesReport.from_dict(report)
    atomic_write_json(out / "report.json", typed.to_dict())
    return typed


__all__ = ["extract_features", "FeaturesReport", "MergedFeaturesReport", "UtteranceFailure", "parse_shard",
           "plan_batches", "random_init_model", "ExtractConfig", "SKIPPED_CLASSES", "StoreError", "shard_of",
           "merge_shard_reports", "STORE_FOLDER", "plan_extraction", "ExtractionPlan", "EncoderFacts", "UttWork",
           "BatchResult", "pool_work"]
