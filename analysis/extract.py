"""`lam features`: every layer of a speech model, mean-pooled per utterance and per segment, into a
feature store.

Reads an aligned-corpus directory (``utterances.parquet`` + ``segments.parquet``, as ``lam align``
writes it) or, for utterance-level features only, a plain corpus that
:func:`phonalign.corpus.read_corpus` reads. For each utterance the store gets one ``utt`` row (mean
over its valid frames) and one ``segment`` row per segment that is not silence (mean over the frames
of :func:`analysis.frames.frames_for_segments`).

Batching: utterances are sorted by length and packed into batches whose *padded* audio (batch size
x longest input; 30 s per utterance for Whisper in crop mode) stays under ``batch_seconds``. Models
that zero padding would change (group norm, Whisper trim) run each distinct length on its own inside
the batch (:class:`analysis.models.SpeechEncoder`), so batched results equal one-at-a-time results.

Chunks of about ``chunk_rows`` rows are committed to the store as they fill (whole utterances only);
a killed job loses at most the uncommitted chunk, and rerunning the same command resumes: committed
utterances are skipped. Per-utterance failures (unreadable audio, too long for Whisper, ...) are
recorded in ``report.json`` and the job goes on; ``strict=True`` stops at the first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from phonalign.errors import LamError
from phonalign.fsutil import atomic_write_json
from phonalign.provenance import write_run_info

from .errors import ExtractionError, StoreError
from .frames import frames_for_segments
from .models import SAMPLE_RATE, SpeechEncoder, load_encoder
from .pooling import pool_batch
from .store import FeatureStore, index_table

#: Segment classes that get no vector: pauses carry no phone.
SKIPPED_CLASSES = ("silence",)


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one `lam features` run (recorded in the output's ``config.yaml``)."""

    model: str
    device: str = "auto"
    dtype: str = "float32"
    batch_seconds: float = 60.0
    whisper_mode: str = "crop"
    shard_index: int = 0
    n_shards: int = 1
    strict: bool = False
    pooling: str = "mean"
    chunk_rows: int = 4096


def _read_inputs(src: Path, *, language: str | None = None) -> tuple[pa.Table, pa.Table | None]:
    """(utterances, segments or None) of an aligned directory or a plain corpus.

    ``language`` is passed to the corpus reader for a plain corpus, whose folders do not say it.
    """
    utt_path = src / "utterances.parquet"
    if utt_path.is_file():
        utts = pq.read_table(utt_path)
        seg_path = src / "segments.parquet"
        if not seg_path.is_file():
            raise ExtractionError("aligned corpus has utterances.parquet but no segments.parquet", path=src,
                                  hint="rerun `lam align`, or pass a plain corpus for utterance features")
        segs = pq.read_table(seg_path)
        return utts, segs
    if not src.exists():
        raise ExtractionError("input not found", path=src, hint="pass the output directory of `lam align`")
    from phonalign.corpus import read_corpus, utterances_to_table

    return utterances_to_table(read_corpus(src, language=language)), None


def _segments_by_utt(segs: pa.Table | None) -> dict[str, tuple[int, int]]:
    """utt_id -> (row start, row stop) in the sorted segments table (one pass, no per-utt filter)."""
    if segs is None or segs.num_rows == 0:
        return {}
    ids = np.asarray(segs.column("utt_id").to_pylist(), dtype=object)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(ids)]])
    return {ids[a]: (int(a), int(b)) for a, b in zip(starts, stops)}


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
    batches, current, longest = [], [], 0.0
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
        self.arrays: list[np.ndarray] = []  # each (L+1, n_rows, H)
        self.n = 0

    def add(self, cols: dict[str, list], arr: np.ndarray) -> None:
        for k, v in cols.items():
            self.cols.setdefault(k, []).extend(v)
        self.arrays.append(arr)
        self.n += arr.shape[1]

    def commit(self, store: FeatureStore, prefix: str) -> None:
        if not self.n:
            return
        layers = np.concatenate(self.arrays, axis=1)
        store.append(index_table(self.cols), layers, chunk_id=store.next_chunk_id(prefix))
        self.__init__()


def extract_features(aligned_dir, out_dir, *, model, device: str = "auto", dtype: str = "float32",
                     batch_seconds: float = 60.0, whisper_mode: str = "crop", shard: tuple[int, int] = (0, 1),
                     strict: bool = False, chunk_rows: int = 4096, progress: bool = True,
                     model_id: str | None = None, language: str | None = None) -> dict:
    """Pool every layer per utterance and per segment into the feature store ``out_dir``.

    Parameters
    ----------
    aligned_dir : str or Path
        Output of ``lam align`` (or a plain corpus: utterance rows only).
    out_dir : str or Path
        Feature store (created, or resumed when it holds the same model and settings).
    model : str or SpeechEncoder or transformers model
        Model id / path (see :func:`analysis.models.load_encoder`), or a built model.
    device, dtype, whisper_mode : see :func:`analysis.models.load_encoder`
    batch_seconds : float
        Cap on padded audio per batch, seconds.
    shard : (int, int)
        ``(I, N)``: process utterances whose position in utt_id order is ``I`` mod ``N``.
    strict : bool
        Stop at the first failing utterance instead of recording it and going on.
    language : str, optional
        Only utterances of this ``language`` (e.g. ``en``), to make one store per corpus side; for a
        plain corpus folder (which does not say its language) it is also the utterances' language.
    chunk_rows : int
        Rows per committed chunk (memory held before a commit: ``chunk_rows x (L+1) x H x 4`` bytes).

    Returns
    -------
    dict
        The report also written to ``out_dir/report.json`` (``ok``, ``skipped_done``, ``failed``,
        ``rows_written``, ``seconds``, ``forward_seconds``).

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
    i_shard, n_shards = int(shard[0]), int(shard[1])
    if not (n_shards >= 1 and 0 <= i_shard < n_shards):
        raise ExtractionError(f"shard {i_shard}/{n_shards} is not valid", hint="use --shard I/N with 0 <= I < N")
    utts, segs = _read_inputs(src, language=language)
    if language is not None:
        keep = np.asarray(utts.column("language").to_pylist(), dtype=object) == language
        if not keep.any():
            raise ExtractionError(f"no utterance of language {language!r}", path=src,
                                  hint="check --language against the corpus' language column")
        utts = utts.filter(pa.array(keep))
    if segs is not None:
        segs = segs.sort_by([("utt_id", "ascending"), ("index", "ascending")])
    seg_rows = _segments_by_utt(segs)
    if isinstance(model, SpeechEncoder):
        enc = model
    else:
        enc = load_encoder(model, device=device, dtype=dtype, whisper_mode=whisper_mode, model_id=model_id)
    settings = {**enc.settings(), "pooling": "mean", "segment_rule": "centre-in-segment, at least one frame",
                "skipped_classes": list(SKIPPED_CLASSES), "input": "segments" if segs is not None else "utterances"}
    store = FeatureStore.create(out, model_id=enc.model_id, revision=enc.revision, n_layers=enc.n_layers,
                                hidden_size=enc.hidden_size, settings=settings, frame_spec=enc.frame_spec.to_dict())
    config = ExtractConfig(model=enc.model_id, device=str(enc.device), dtype=enc.dtype_name,
                           batch_seconds=batch_seconds, whisper_mode=whisper_mode, shard_index=i_shard,
                           n_shards=n_shards, strict=strict, chunk_rows=chunk_rows)
    write_run_info(out, step="features", config={**asdict(config), "input": str(src), "language": language,
                                                 "settings": settings})

    utt_ids = utts.column("utt_id").to_pylist()
    order = np.argsort(np.asarray(utt_ids, dtype=object), kind="stable")
    mine = order[i_shard::n_shards]
    done = store.done_utt_ids()
    todo = [int(i) for i in mine if utt_ids[i] not in done]
    report = {"step": "features", "model": enc.model_id, "shard": f"{i_shard}/{n_shards}", "input": str(src),
              "utterances_in_shard": int(len(mine)), "skipped_done": int(len(mine) - len(todo)), "ok": 0,
              "failed": {}, "rows_written": 0, "forward_seconds": 0.0}
    prefix = "" if n_shards == 1 else f"s{i_shard:04d}of{n_shards:04d}-"
    cols = {name: utts.column(name).to_pylist() if name in utts.column_names else [None] * utts.num_rows
            for name in ("audio_path", "language", "speaker", "corpus", "emotion", "split")}

    def fail(i: int, err: LamError) -> None:
        if strict:
            raise err
        report["failed"][utt_ids[i]] = err.to_report()

    from phonalign.audio import audio_duration, load_audio

    def audio_path(i: int) -> Path:
        path = Path(cols["audio_path"][i] or "")
        return path if path.is_absolute() else src / path

    def check_length(i: int, n: int) -> None:
        if enc.max_samples is not None and n > enc.max_samples:
            raise ExtractionError(f"{n / SAMPLE_RATE:.2f} s is longer than the model's "
                                  f"{enc.max_samples / SAMPLE_RATE:.0f} s window", path=audio_path(i),
                                  utt_id=utt_ids[i], hint="split long recordings before alignment")
        if n < enc.min_samples:
            raise ExtractionError(f"{n} samples is shorter than one frame ({enc.min_samples} samples)",
                                  path=audio_path(i), utt_id=utt_ids[i], hint="drop utterances this short")

    # Batches are planned from the file headers' durations; audio is decoded batch by batch so
    # that memory holds one batch, not the corpus.
    bar = _progress(len(todo), progress, enc.model_id)
    lengths: dict[int, int] = {}
    for i in todo:
        try:
            n = int(round(audio_duration(audio_path(i)) * SAMPLE_RATE))
            check_length(i, n)
        except LamError as err:
            err.utt_id = err.utt_id or utt_ids[i]
            fail(i, err)
            bar.update(1)
            continue
        lengths[i] = n
    ids = np.array(list(lengths), np.int64)
    fixed = 30.0 if (enc.model_type == "whisper" and enc.whisper_mode == "crop") else None
    batches = [ids[b] for b in plan_batches(np.array([lengths[i] for i in ids]), batch_seconds=batch_seconds,
                                            fixed_seconds=fixed)] if ids.size else []
    chunk = _Chunk()
    seg_tab = segs
    try:
        for batch in batches:
            waves, kept = [], []
            for i in batch:
                i = int(i)
                try:
                    wav = load_audio(audio_path(i), sr=SAMPLE_RATE)
                    check_length(i, len(wav))
                except LamError as err:
                    err.utt_id = err.utt_id or utt_ids[i]
                    fail(i, err)
                    bar.update(1)
                    continue
                lengths[i] = len(wav)
                waves.append(wav)
                kept.append(i)
            if not kept:
                continue
            batch = np.array(kept, np.int64)
            tf = time.perf_counter()
            try:
                hidden, valid = enc.forward(waves)
                if enc.device.type == "cuda":
                    torch.cuda.synchronize(enc.device)  # time the forward, not its launch
            except LamError as err:
                for i in batch:
                    fail(int(i), ExtractionError(str(err.message), utt_id=utt_ids[i], hint=err.hint))
                bar.update(len(batch))
                continue
            report["forward_seconds"] += time.perf_counter() - tf
            span_b, span_f, span_s, rows = [], [], [], {k: [] for k in (
                "unit_id", "kind", "utt_id", "seg_index", "unit_class", "phone", "start", "end", "language",
                "speaker", "corpus", "emotion", "split", "first_frame", "stop_frame")}
            for b, i in enumerate(batch):  # per utterance: gather its segment rows (vectorised within)
                i = int(i)
                u = utt_ids[i]
                n = int(valid[b])
                meta = [cols["language"][i], cols["speaker"][i], cols["corpus"][i], cols["emotion"][i], cols["split"][i]]
                seg_first = np.zeros(0, np.int64)
                seg_stop = np.zeros(0, np.int64)
                seg_part = None
                if u in seg_rows:
                    a, z = seg_rows[u]
                    part = seg_tab.slice(a, z - a)
                    cls = np.asarray(part.column("unit_class").to_pylist(), dtype=object)
                    keep = ~np.isin(cls, SKIPPED_CLASSES)
                    seg_part = part.filter(pa.array(keep))
                    if seg_part.num_rows:
                        try:
                            seg_first, seg_stop = frames_for_segments(
                                seg_part.column("start").to_numpy(), seg_part.column("end").to_numpy(),
                                spec=enc.frame_spec, n_frames=n)
                        except LamError as err:
                            err.utt_id = u
                            fail(i, err)
                            continue
                k = 1 + len(seg_first)
                span_b.append(np.full(k, b))
                span_f.append(np.concatenate([[0], seg_first]))
                span_s.append(np.concatenate([[n], seg_stop]))
                rows["unit_id"].append(u)
                rows["kind"].append("utt")
                rows["utt_id"].append(u)
                rows["seg_index"].append(-1)
                rows["unit_class"].append("utterance")
                rows["phone"].append(None)
                rows["start"].append(0.0)
                rows["end"].append(lengths[i] / SAMPLE_RATE)
                if seg_part is not None and seg_part.num_rows:
                    idx = seg_part.column("index").to_pylist()
                    rows["unit_id"].extend(f"{u}#{j}" for j in idx)
                    rows["kind"].extend(["segment"] * len(idx))
                    rows["utt_id"].extend([u] * len(idx))
                    rows["seg_index"].extend(idx)
                    rows["unit_class"].extend(seg_part.column("unit_class").to_pylist())
                    rows["phone"].extend(seg_part.column("phone").to_pylist())
                    rows["start"].extend(seg_part.column("start").to_pylist())
                    rows["end"].extend(seg_part.column("end").to_pylist())
                for name, value in zip(("language", "speaker", "corpus", "emotion", "split"), meta):
                    rows[name].extend([value] * k)
                rows["first_frame"].extend(span_f[-1].tolist())
                rows["stop_frame"].extend(span_s[-1].tolist())
                report["ok"] += 1
            if span_b:
                pooled = pool_batch(hidden, np.concatenate(span_b), np.concatenate(span_f), np.concatenate(span_s))
                chunk.add(rows, pooled.cpu().numpy())
                report["rows_written"] += int(pooled.shape[1])
            bar.update(len(batch))
            if chunk.n >= chunk_rows:
                chunk.commit(store, prefix)
                _write_report(out, report, t0)
    except BaseException:
        # keep the whole utterances already pooled, whatever stopped us (--strict, Ctrl-C, a bug)
        chunk.commit(store, prefix)
        _write_report(out, report, t0)
        bar.close()
        raise
    chunk.commit(store, prefix)
    bar.close()
    return _write_report(out, report, t0)


def _write_report(out: Path, report: dict, t0: float) -> dict:
    report["seconds"] = time.perf_counter() - t0
    report["n_failed"] = len(report["failed"])
    atomic_write_json(out / "report.json", report)
    return report


def _progress(total: int, enabled: bool, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=f"features {name}", unit="utt")


__all__ = ["extract_features", "plan_batches", "ExtractConfig", "SKIPPED_CLASSES", "StoreError"]
