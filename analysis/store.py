"""The feature store: pooled vectors of every layer of one model, on disk, chunked and appendable.

One store holds one (model id, revision, extraction settings). Layout::

    STORE/
      meta.json                         model_id, revision, n_layers, hidden_size, settings,
                                        frame_spec, layers, dtype, version, format
      config.yaml, versions.json        write_run_info (resolved settings and library versions)
      layers/layer_00/chunk-<id>.npy    (n_rows_of_chunk, hidden) in the store's dtype (below),
      ...                               np.save(allow_pickle=False)
      layers/layer_LL/chunk-<id>.npy
      index/part-<id>.parquet           the chunk's index rows (INDEX_SCHEMA), written LAST

**Which layers, in which precision** (corpus scale: a store of every layer of WavLM large over
MSP-Podcast in float32 is hundreds of GB, see ``docs/scale.md``). ``meta["layers"]`` lists the
layers stored (``lam features --layers``; all ``0..L`` by default) and ``meta["dtype"]`` their
precision on disk (:data:`STORE_DTYPES`, ``lam features --store-dtype``):

* ``float32``: as computed;
* ``float16``: IEEE half (``<f2``), half the size; a value beyond float16's range (65504) is an
  error at write time, never a silent infinity;
* ``bfloat16``: numpy has no bfloat16 type, so the arrays are ``<u2`` holding bfloat16 *bit
  patterns*: the upper 16 bits of the float32 value after rounding to nearest, ties to even
  (what ``torch.Tensor.to(torch.bfloat16)`` does). Same range as float32, 8 significant bits.

Readers always get float32 (:meth:`FeatureStore.read_layer`, :meth:`FeatureStore.iter_layer`) and
all arithmetic on store values (similarity, training) accumulates in float32 or float64, whatever
is stored. Stores written before these options (format ``lam-feature-store/1``) hold every layer
in float32 and are read as such.

A chunk is *committed* when its index part exists. Every file is written to a temporary name and
moved into place atomically, and the index part is moved last, so a process killed at any point
leaves committed chunks intact and at most an uncommitted chunk's layer files, which are ignored
(and overwritten when the chunk id is reused). A chunk holds whole utterances only, so "which
utterances are done" is exactly the set of ``utt_id`` in the committed index: a resumed job skips
those and nothing is lost or duplicated. Shards of one job (``--shard I/N``) write disjoint chunk
ids (``s0001of0004-00000``), so several processes can fill one store at once.

Chunks are never edited. To take utterances out (their inputs changed, or they left the corpus),
:meth:`FeatureStore.drop_utterances` commits a *replacement* chunk holding the other rows, whose
index part names the chunks it replaces (Parquet metadata ``lam.replaces``, transitively); the
replaced chunks stop counting the moment the replacement is committed, and their files are
removed afterwards (:meth:`FeatureStore.collect_garbage`). Each index part also records the
settings fingerprint of the run that wrote it (``lam.settings_fp``), and each row the input
fingerprint of its utterance (``input_fp``), so that a resumed run can tell what changed.

Every array is checked at write: a store never holds a NaN or infinite value
(:meth:`FeatureStore.append` refuses it, naming the utterances).

Reading a layer memory-maps its chunk files (``np.load(mmap_mode="r")``): one layer is read without
touching the others, and :meth:`FeatureStore.iter_layer` streams a layer chunk by chunk so that a
reader's memory does not grow with the number of rows. No pickle is used anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute below)
import pyarrow.parquet as pq

from phonalign import __version__
from phonalign.fsutil import atomic_path, atomic_write_json

from .defaults import DEFAULT_STORE_DTYPE, STORE_DTYPES
from .errors import StoreError, StoreSettingsError

FORMAT = "lam-feature-store/2"
#: Formats this version reads: /1 (every layer, float32) and /2 (``layers`` and ``dtype`` in meta).
READ_FORMATS = ("lam-feature-store/1", FORMAT)
_REPLACES = b"lam.replaces"
_SETTINGS_FP = b"lam.settings_fp"

#: Precisions of the stored arrays (``lam features --store-dtype``).
#: numpy dtype of the ``.npy`` files of each store dtype (bfloat16: bit patterns, see above).
_DISK_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}

#: One row per pooled unit (an utterance or a segment).
INDEX_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),      # utt_id for utterances, "utt_id#index" for segments
        ("kind", pa.string()),         # "utt" | "segment"
        ("utt_id", pa.string()),
        ("seg_index", pa.int32()),     # SEGMENT_SCHEMA.index; -1 for utterances
        ("unit_class", pa.string()),   # A E @ i O u consonant ...; "utterance" for utterances
        ("phone", pa.string()),        # normalised phone; null for utterances
        ("start", pa.float64()),       # seconds
        ("end", pa.float64()),         # seconds
        ("language", pa.string()),
        ("speaker", pa.string()),
        ("corpus", pa.string()),
        ("emotion", pa.string()),
        ("split", pa.string()),
        ("first_frame", pa.int32()),   # frames pooled: first_frame .. stop_frame-1
        ("stop_frame", pa.int32()),
        ("input_fp", pa.string()),     # fingerprint of the utterance's inputs (null in older stores)
    ]
)

_CHUNK_ID = re.compile(r"^[A-Za-z0-9-]+$")


def layer_name(layer: int) -> str:
    """``3 -> "layer_03"`` (index 0 is the output before the first transformer layer)."""
    return f"layer_{int(layer):02d}"


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def encode_array(x: np.ndarray, dtype: str) -> np.ndarray:
    """Float values -> the array written to disk for store dtype ``dtype``.

    Parameters
    ----------
    x : ndarray, float (any shape)
        Values to store; cast to float32 first.
    dtype : ``float32`` | ``float16`` | ``bfloat16``

    Returns
    -------
    ndarray
        float32, float16, or uint16 bfloat16 bit patterns (round to nearest, ties to even), same
        shape as ``x``.

    Raises
    ------
    StoreError
        If a finite value does not fit the dtype's range (float16: |x| > 65504), or ``dtype`` is
        unknown.
    """
    if dtype not in _DISK_DTYPE:
        raise StoreError(f"unknown store dtype {dtype!r}", hint=f"use one of {', '.join(STORE_DTYPES)}")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float32":
        return x32
    if dtype == "float16":
        with np.errstate(over="ignore"):
            out = x32.astype(np.float16)
    else:
        u = x32.view(np.uint32)
        # round to nearest even on the 16 bits dropped; NaNs (whose payload the addition could
        # carry into the exponent) become a quiet NaN of the same sign
        out = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
        nan = np.isnan(x32)
        if nan.any():
            out[nan] = ((u[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    _check_range(x32, decode_array(out, dtype), dtype)
    return out


def _check_range(x32: np.ndarray, back: np.ndarray, dtype: str) -> None:
    overflow = np.isfinite(x32) & ~np.isfinite(back)
    if overflow.any():
        worst = float(np.abs(x32[overflow]).max())
        raise StoreError(f"a value of magnitude {worst:g} does not fit the store dtype {dtype} "
                         f"(largest: {float(np.finfo(np.float16).max) if dtype == 'float16' else 3.39e38:g})",
                         hint="use --store-dtype bfloat16 (float32's range) or float32")


def decode_array(a: np.ndarray, dtype: str) -> np.ndarray:
    """The on-disk array of store dtype ``dtype`` -> float32 values (a new array unless float32).

    Parameters
    ----------
    a : ndarray
        float32, float16, or uint16 bfloat16 bit patterns.
    dtype : ``float32`` | ``float16`` | ``bfloat16``

    Returns
    -------
    ndarray, float32, same shape as ``a``
    """
    if dtype == "bfloat16":
        return (np.asarray(a, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(a).astype(np.float32, copy=False)


def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """Layers to store, checked against a model of ``n_layers`` transformer layers.

    Parameters
    ----------
    spec : str, sequence of int, or None
        ``None`` or ``"all"``: every layer ``0..L``; a string of comma-separated layers and
        ranges (``"0,6-12"``); or a sequence of ints.
    n_layers : int
        L (the model has L + 1 hidden states, 0..L).

    Returns
    -------
    list of int
        Sorted, without repeats.

    Raises
    ------
    StoreError
        A layer outside ``0..L``, an empty selection, or a malformed string.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(int(n_layers) + 1))
    hint = (f"give layers between 0 and {n_layers} as a list or ranges, "
            f"e.g. --layers 0,{max(1, n_layers // 2)}-{n_layers}")
    if isinstance(spec, str):
        out: list[int] = []
        for item in spec.split(","):
            item = item.strip()
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
            if not m:
                raise StoreError(f"--layers item {item!r} is not a layer or a range", hint=hint)
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise StoreError(f"--layers range {item!r} runs backwards", hint=hint)
            out.extend(range(lo, hi + 1))
    else:
        out = [int(x) for x in spec]
    bad = [x for x in out if not 0 <= x <= n_layers]
    if bad or not out:
        raise StoreError(f"layers {bad or out} are not layers of this model (0..{n_layers})" if bad
                         else "no layer selected", hint=hint)
    return sorted(set(out))


class FeatureStore:
    """A feature store on disk; see the module docstring for the layout.

    Use :meth:`open` to read an existing store and :meth:`create` to make one (or reopen it for
    appending with the same model and settings).
    """

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = Path(path)
        self.meta = meta
        self._index: pa.Table | None = None
        self._chunks: list[tuple[str, int]] | None = None  # (chunk id, n_rows), committed, sorted
        self._all_chunk_ids: list[str] = []  # committed index parts, replaced ones included
        self._replaced: list[str] = []  # chunks whose replacement is committed (files not removed yet)
        self._chunk_settings: dict[str, str | None] = {}
        self._replaces: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        """Open an existing store for reading (and appending).

        Raises
        ------
        StoreError
            If ``path`` has no ``meta.json`` or it is not a feature store's.
        """
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise StoreError("not a feature store (no meta.json)", path=path,
                             hint="make one with `lam features ALIGNED OUT --model ID`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreError(f"meta.json cannot be read ({err})", path=meta_path,
                             hint="the store is damaged; extract the features again") from None
        if not isinstance(meta, dict) or meta.get("format") not in READ_FORMATS:
            meta = meta if isinstance(meta, dict) else {}
            raise StoreError(f"unknown store format {meta.get('format')!r} (expected {FORMAT!r})",
                             path=meta_path, hint="extract the features again with this toolkit version")
        try:
            n_layers = int(meta["n_layers"])
        except (KeyError, TypeError, ValueError):
            raise StoreError("meta.json does not say how many layers the model has (n_layers)", path=meta_path,
                             hint="the store is damaged; extract the features again") from None
        # format /1 stores hold every layer in float32
        meta.setdefault("layers", list(range(n_layers + 1)))
        meta.setdefault("dtype", "float32")
        return cls(path, meta)

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        model_id: str,
        revision: str | None,
        n_layers: int,
        hidden_size: int,
        settings: Mapping,
        frame_spec: Mapping | None = None,
        model: Mapping | None = None,
        layers: Sequence[int] | None = None,
        dtype: str = DEFAULT_STORE_DTYPE,
    ) -> FeatureStore:
        """Create a store, or reopen one made with the same model and settings for appending.

        Parameters
        ----------
        model_id, revision : str
            What made the features (hub id or path; commit hash or None).
        n_layers : int
            Transformer layers L; the store holds L + 1 layers (``layer_00`` .. ``layer_LL``).
        hidden_size : int
            Width of every vector.
        settings : mapping
            Every extraction setting that changes the numbers (pooling, dtype, Whisper mode, ...).
            JSON-serialisable.
        model : mapping, optional
            The model's identity by content (:meth:`analysis.model_identity.ModelIdentity.to_dict`:
            ``digest``, ``revision``, ...). When both the store and this run have one, the model is
            compared by digest, not by ``model_id`` (a path or name as typed).
        layers : sequence of int, optional
            Layers kept (see :func:`parse_layers`); default every layer ``0..L``.
        dtype : ``float32`` | ``float16`` | ``bfloat16``
            Precision of the stored arrays (see the module docstring).

        Raises
        ------
        StoreSettingsError
            If the store exists with another model, revision, shape, settings, layers or dtype.
        StoreError
            Layers outside ``0..L`` or an unknown dtype.
        """
        path = Path(path)
        meta = new_meta(model_id=model_id, revision=revision, n_layers=n_layers, hidden_size=hidden_size,
                        settings=settings, frame_spec=frame_spec, model=model, layers=layers, dtype=dtype)
        if (path / "meta.json").is_file():
            store = cls.open(path)
            mismatch = settings_mismatch(store.meta, meta)
            if mismatch:
                raise StoreSettingsError(
                    mismatch, path=path,
                    hint="use a new output directory for other settings, or rerun with the store's settings to "
                    "resume it (lam features --force replaces its contents)")
            return store
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / "meta.json", meta)
        return cls(path, meta)

    @classmethod
    def replace_contents(cls, path: str | Path, meta: Mapping) -> FeatureStore:
        """Empty an existing store and give it ``meta`` (``lam features --force`` with other settings).

        The index parts go first (uncommitting every chunk), then the layer files, then the new
        ``meta.json``: a process killed midway leaves an empty store or one with the old meta and no
        chunks, never a mix. Only the store's own files are removed. The caller holds the folder
        exclusively.
        """
        path = Path(path)
        for part in sorted((path / "index").glob("part-*.parquet")):
            part.unlink()
        for f in sorted((path / "layers").glob("layer_*/chunk-*.npy")):
            f.unlink()
        atomic_write_json(path / "meta.json", dict(meta))
        return cls(path, dict(meta))

    # ------------------------------------------------------------------ description
    @property
    def n_layers(self) -> int:
        """Transformer layers L (the store holds L + 1 layers)."""
        return int(self.meta["n_layers"])

    @property
    def hidden_size(self) -> int:
        """Width of every layer's vectors (the model's hidden size)."""
        return int(self.meta["hidden_size"])

    @property
    def layer_names(self) -> list[str]:
        """Names of the stored layers: ``["layer_00", ..., "layer_LL"]`` unless made with ``--layers``."""
        return [layer_name(i) for i in self.layers]

    @property
    def layers(self) -> list[int]:
        """Indices of the stored layers (all of ``0..L`` unless made with ``lam features --layers``)."""
        return [int(i) for i in self.meta["layers"]]

    @property
    def dtype(self) -> str:
        """Precision of the stored arrays: ``float32``, ``float16`` or ``bfloat16`` (reads give float32)."""
        return str(self.meta["dtype"])

    @property
    def model_id(self) -> str:
        """The model the features were extracted with, as given to ``lam features --model``."""
        return self.meta["model_id"]

    def _scan(self) -> list[tuple[str, int]]:
        if self._chunks is None:
            parts = sorted((self.path / "index").glob("part-*.parquet"))
            found: dict[str, tuple[int, list[str], str | None]] = {}
            for part in parts:
                cid = part.name[len("part-"):-len(".parquet")]
                try:
                    md = pq.ParquetFile(part).metadata
                except (OSError, pa.ArrowException) as err:
                    raise StoreError(f"index part cannot be read ({str(err).splitlines()[0]})", path=part,
                                     hint="the store is damaged: delete this part (its chunk's utterances are "
                                     "extracted again on the next run) or extract the features again") from None
                kv = md.metadata or {}
                replaces = json.loads(kv[_REPLACES].decode()) if _REPLACES in kv else []
                settings_fp = kv[_SETTINGS_FP].decode() if _SETTINGS_FP in kv else None
                found[cid] = (md.num_rows, replaces, settings_fp)
            replaced = {r for _, reps, _ in found.values() for r in reps}
            self._all_chunk_ids = sorted(found)
            self._replaced = sorted(replaced & set(found))
            self._chunk_settings = {cid: fp for cid, (_, _, fp) in found.items()}
            self._chunks = [(cid, n) for cid, (n, _, _) in sorted(found.items()) if cid not in replaced]
            self._replaces = {cid: reps for cid, (_, reps, _) in found.items()}
        return self._chunks

    def refresh(self) -> None:
        """Forget cached index/chunk lists (after another process appended)."""
        self._index = None
        self._chunks = None

    @property
    def chunks(self) -> list[str]:
        """Committed chunk ids, in reading order."""
        return [cid for cid, _ in self._scan()]

    def __len__(self) -> int:
        return sum(n for _, n in self._scan())

    @property
    def index(self) -> pa.Table:
        """The index table (INDEX_SCHEMA), one row per stored vector, in row order."""
        if self._index is None:
            parts = []
            for cid, _ in self._scan():
                part = self.path / "index" / f"part-{cid}.parquet"
                try:
                    parts.append(pq.read_table(part, schema=INDEX_SCHEMA))
                except (OSError, pa.ArrowException) as err:
                    raise StoreError(f"index part cannot be read ({str(err).splitlines()[0]})", path=part,
                                     hint="the store is damaged: delete this part (its chunk's utterances are "
                                     "extracted again on the next run) or extract the features again") from None
            self._index = pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()
        return self._index

    def chunk_settings_fp(self, chunk_id: str) -> str | None:
        """The settings fingerprint recorded with a committed chunk (None in older stores)."""
        self._scan()
        return self._chunk_settings.get(chunk_id)

    def row_chunks(self) -> np.ndarray:
        """Chunk id of every index row, ``(n_rows,)`` object array (in row order)."""
        return np.concatenate([np.full(n, cid, dtype=object) for cid, n in self._scan()]) if self._scan() \
            else np.zeros(0, dtype=object)

    def done_utt_ids(self) -> set[str]:
        """Utterances whose vectors are committed (a resumed extraction skips them)."""
        return set(self.index.column("utt_id").unique().to_pylist())

    # ------------------------------------------------------------------ reading
    def _layer_dir(self, layer) -> Path:
        name = layer if isinstance(layer, str) else layer_name(layer)
        if name not in self.layer_names:
            raise StoreError(f"layer {layer!r} is not in this store; it holds {describe_layers(self.layers)}",
                             path=self.path,
                             hint="use a stored layer, or extract again with `lam features --layers` naming "
                             "the layers you need")
        return self.path / "layers" / name

    def _chunk_array(self, layer_dir: Path, cid: str, n_rows: int) -> np.ndarray:
        f = layer_dir / f"chunk-{cid}.npy"
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StoreError(f"layer chunk cannot be read: {err}", path=f,
                             hint="the store is damaged; delete it and extract again") from err
        if arr.shape != (n_rows, self.hidden_size):
            raise StoreError(f"layer chunk has shape {arr.shape}, index says ({n_rows}, {self.hidden_size})",
                             path=f, hint="the store is damaged; delete it and extract again")
        if arr.dtype != _DISK_DTYPE[self.dtype]:
            raise StoreError(f"layer chunk holds {arr.dtype}, the store's dtype {self.dtype} is stored as "
                             f"{_DISK_DTYPE[self.dtype]}", path=f,
                             hint="the store is damaged; delete it and extract again")
        return arr

    def iter_layer(self, layer) -> Iterator[tuple[int, np.ndarray]]:
        """Stream one layer chunk by chunk.

        Yields
        ------
        offset : int
            Row of the index where the chunk starts.
        array : ndarray, float32, shape (n_rows_of_chunk, hidden)
            Memory-mapped read-only for a float32 store; decoded chunk by chunk otherwise.
        """
        layer_dir = self._layer_dir(layer)
        offset = 0
        for cid, n in self._scan():
            yield offset, decode_array(self._chunk_array(layer_dir, cid, n), self.dtype)
            offset += n

    def read_layer(self, layer, *, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Vectors of one layer, without reading any other layer.

        Parameters
        ----------
        layer : int or str
            ``3`` or ``"layer_03"``.
        rows : array of int, optional
            Index rows to read (any order, repeats allowed); all rows when None.

        Returns
        -------
        ndarray, float32, shape (n_rows, hidden)
        """
        if rows is None:
            parts = [np.asarray(a) for _, a in self.iter_layer(layer)]
            if not parts:
                return np.zeros((0, self.hidden_size), np.float32)
            return np.concatenate(parts, axis=0).astype(np.float32, copy=False)
        rows = np.asarray(rows, dtype=np.int64)
        n = len(self)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise StoreError(f"row {int(rows.max()) if rows.max() >= n else int(rows.min())} is outside "
                             f"the store's {n} rows", path=self.path)
        out = np.empty((rows.size, self.hidden_size), np.float32)
        layer_dir = self._layer_dir(layer)
        offset = 0
        for cid, n in self._scan():  # decode only the rows asked for, not whole chunks
            sel = np.flatnonzero((rows >= offset) & (rows < offset + n))
            if sel.size:
                arr = self._chunk_array(layer_dir, cid, n)
                out[sel] = decode_array(arr[rows[sel] - offset], self.dtype)
            offset += n
        return out

    # ------------------------------------------------------------------ writing
    def next_chunk_id(self, prefix: str = "") -> str:
        """First unused chunk id with ``prefix`` (e.g. ``s0001of0004-``); ids of replaced chunks are
        never reused (their files may still be there)."""
        self._scan()
        used = [cid for cid in self._all_chunk_ids if cid.startswith(prefix) and cid[len(prefix):].isdigit()]
        nxt = 1 + max((int(c[len(prefix):]) for c in used), default=-1)
        return f"{prefix}{nxt:05d}"

    def append(self, index: pa.Table, layers: Sequence[np.ndarray] | np.ndarray, *,
               chunk_id: str | None = None, replaces: Sequence[str] = (), settings_fp: str | None = None) -> str:
        """Commit one chunk: the layer arrays first, the index part last (atomically each).

        Parameters
        ----------
        index : pa.Table
            Rows of INDEX_SCHEMA (whole utterances only).
        layers : sequence of arrays, or array (n_stored_layers, n_rows, hidden)
            Vectors of the stored layers (:attr:`layers`, in that order), float; written in the
            store's dtype (:func:`encode_array`). Every value must be finite.
        chunk_id : str, optional
            Defaults to :meth:`next_chunk_id`. Letters, digits and ``-``.
        replaces : sequence of str
            Committed chunks this one replaces (they stop counting when this one is committed).
        settings_fp : str, optional
            Fingerprint of the settings of the run writing the chunk (kept in its index part).

        Returns
        -------
        str
            The chunk id.

        Raises
        ------
        StoreError
            Shapes that do not fit the store, a chunk id in use, or a non-finite value (naming the
            utterances concerned).
        """
        index = conform_index(index)
        n = index.num_rows
        if len(layers) != len(self.layers):
            raise StoreError(f"{len(layers)} layers given, the store holds {len(self.layers)} "
                             f"({describe_layers(self.layers)})", path=self.path)
        cid = chunk_id or self.next_chunk_id()
        if not _CHUNK_ID.match(cid):
            raise StoreError(f"chunk id {cid!r} is not letters, digits and '-'", path=self.path)
        self._scan()
        if cid in self._all_chunk_ids:
            raise StoreError(f"chunk {cid!r} is already committed", path=self.path,
                             hint="chunks are never rewritten; pick a new id")
        encoded = []
        for i, arr in zip(self.layers, layers, strict=True):  # every check and conversion before the first write
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if arr.shape != (n, self.hidden_size):
                raise StoreError(f"layer {i} has shape {arr.shape}, expected ({n}, {self.hidden_size})",
                                 path=self.path)
            check_finite(arr, index, layer=i, path=self.path)
            try:
                encoded.append((i, encode_array(arr, self.dtype)))
            except StoreError as err:
                raise StoreError(f"layer {i}: {err.message}", path=self.path, hint=err.hint) from None
        for i, arr in encoded:
            with atomic_path(self.path / "layers" / layer_name(i) / f"chunk-{cid}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
        # a replacement also names what its predecessors replaced: removing their files in any
        # order can never bring an older chunk back
        self._scan()
        chain = sorted({r for c in replaces for r in [c, *self._replaces.get(c, [])]})
        md = {_SETTINGS_FP: (settings_fp or "").encode(), _REPLACES: json.dumps(chain).encode()}
        table = index.replace_schema_metadata({**(index.schema.metadata or {}), **md})
        with atomic_path(self.path / "index" / f"part-{cid}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.refresh()
        return cid

    def drop_utterances(self, utt_ids: set[str] | frozenset[str], *, chunk_prefix: str | None = None,
                        settings_fp: str | None = None) -> int:
        """Take every row of ``utt_ids`` out of the store; return the number of rows removed.

        Each committed chunk holding such rows (only chunks whose id starts with ``chunk_prefix``
        when it is given: a shard touches its own chunks only) is replaced by a new chunk with its
        other rows, committed atomically (see the module docstring). Reads and writes one chunk's
        layers at a time.
        """
        if not utt_ids:
            return 0
        removed = 0
        wanted = pa.array(sorted(utt_ids), type=pa.string())
        offset = 0
        plan: list[tuple[str, int, int, np.ndarray]] = []
        index = self.index
        for cid, n in self._scan():
            if chunk_prefix is None or cid.startswith(chunk_prefix):
                drop = np.asarray(pa.compute.is_in(index.column("utt_id").slice(offset, n), value_set=wanted))
                if drop.any():
                    plan.append((cid, offset, n, ~drop))
            offset += n
        for cid, start, n, keep in plan:
            rows = np.flatnonzero(keep)
            part = index.slice(start, n).take(pa.array(rows))
            # decoded and encoded again: exact for float16 and bfloat16 (float32 holds their values)
            layer_arrays = [decode_array(np.asarray(self._chunk_array(self._layer_dir(i), cid, n))[rows], self.dtype)
                            for i in self.layers]
            prefix = chunk_prefix if chunk_prefix is not None else re.sub(r"\d+$", "", cid)
            self.append(part, layer_arrays, chunk_id=self.next_chunk_id(prefix), replaces=[cid],
                        settings_fp=self.chunk_settings_fp(cid) if settings_fp is None else settings_fp)
            removed += int(n - rows.size)
        return removed

    def collect_garbage(self, *, chunk_prefix: str | None = None) -> int:
        """Remove the files of replaced chunks (and temporary files); return the chunks removed.

        The caller must hold the folder (a shard passes its ``chunk_prefix`` and touches only its
        own chunks).
        """
        from phonalign.fsutil import is_temp_name

        self._scan()
        gone = [cid for cid in self._replaced if chunk_prefix is None or cid.startswith(chunk_prefix)]
        for cid in gone:
            (self.path / "index" / f"part-{cid}.parquet").unlink(missing_ok=True)
        for cid in gone:
            for name in self.layer_names:
                (self.path / "layers" / name / f"chunk-{cid}.npy").unlink(missing_ok=True)
        if chunk_prefix is None:
            for folder in [self.path / "index", *[self.path / "layers" / n for n in self.layer_names]]:
                if folder.is_dir():
                    for f in folder.iterdir():
                        if is_temp_name(f.name) and f.is_file():
                            f.unlink(missing_ok=True)
        self.refresh()
        return len(gone)

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, model={self.model_id!r}, layers={describe_layers(self.layers)}, "
                f"hidden={self.hidden_size}, dtype={self.dtype}, rows={len(self)})")


def describe_layers(layers: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 6, 12]`` -> ``"layers 0-3, 6, 12"`` (for messages)."""
    parts: list[str] = []
    layers = sorted(int(x) for x in layers)
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[j] + 1:
            j += 1
        parts.append(str(layers[i]) if i == j else f"{layers[i]}-{layers[j]}")
        i = j + 1
    return "layers " + ", ".join(parts) if parts else "no layers"


def new_meta(*, model_id: str, revision: str | None, n_layers: int, hidden_size: int, settings: Mapping,
             frame_spec: Mapping | None = None, model: Mapping | None = None, layers: Sequence[int] | None = None,
             dtype: str = DEFAULT_STORE_DTYPE) -> dict:
    """The ``meta.json`` of a store (see :meth:`FeatureStore.create`).

    Raises
    ------
    StoreError
        Layers outside ``0..L`` (:func:`parse_layers`) or an unknown ``dtype``.
    """
    if dtype not in STORE_DTYPES:
        raise StoreError(f"unknown store dtype {dtype!r}", hint=f"use one of {', '.join(STORE_DTYPES)}")
    kept = parse_layers(None if layers is None else list(layers), int(n_layers))
    return {
        "format": FORMAT,
        "model_id": str(model_id),
        "revision": revision,
        "n_layers": int(n_layers),
        "hidden_size": int(hidden_size),
        "layers": kept,
        "layer_names": [layer_name(i) for i in kept],
        "dtype": dtype,
        "settings": json.loads(_canonical(dict(settings))),
        "frame_spec": None if frame_spec is None else json.loads(_canonical(dict(frame_spec))),
        "model": None if model is None else json.loads(_canonical(dict(model))),
        "version": __version__,
    }


def model_digest(meta: Mapping) -> str | None:
    """The model digest recorded in a store's (or rankings') metadata, or None (older stores)."""
    model = meta.get("model")
    digest = model.get("digest") if isinstance(model, Mapping) else None
    return digest if isinstance(digest, str) else None


def settings_mismatch(old: Mapping, new: Mapping) -> str | None:
    """Why a store made with ``old`` meta cannot take rows made with ``new`` meta, or None.

    The model is compared by digest when both have one (a path typed differently is the same
    model; the same path holding other weights is not); otherwise by ``model_id`` and revision.
    """
    keys = ["n_layers", "hidden_size", "settings", "layers", "dtype"]
    old, new = _with_format_1_defaults(old), _with_format_1_defaults(new)
    if model_digest(old) and model_digest(new):
        if model_digest(old) != model_digest(new):
            return (f"the store was made with another model ({old.get('model_id')}, {model_digest(old)}); this "
                    f"run uses {new.get('model_id')}, {model_digest(new)} (compared by the weights' digest)")
    else:
        keys = ["model_id", "revision", *keys]
    for key in keys:
        if _canonical(old.get(key)) != _canonical(new.get(key)):
            return (f"the store was made with {key}={_canonical(old.get(key))}, "
                    f"this run asks for {key}={_canonical(new.get(key))}")
    return None


def _with_format_1_defaults(meta: Mapping) -> Mapping:
    """``meta`` with the ``layers`` and ``dtype`` of a format /1 store (every layer, float32) when absent."""
    if "layers" in meta and "dtype" in meta:
        return meta
    n = meta.get("n_layers")
    return {"layers": list(range(int(n) + 1)) if n is not None else None, "dtype": "float32", **meta}


def check_finite(array: np.ndarray, index: pa.Table | None = None, *, layer: int | str | None = None,
                 path: str | Path | None = None) -> None:
    """Raise :class:`StoreError` if ``array`` holds NaN or infinite values, naming the utterances.

    Parameters
    ----------
    array : ndarray, shape (n_rows, hidden)
    index : pa.Table, optional
        The rows' index (``utt_id`` column), to name the utterances concerned.
    """
    finite = np.isfinite(array)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1))
    who = ""
    if index is not None and "utt_id" in index.column_names:
        ids = sorted(set(index.column("utt_id").take(pa.array(bad_rows)).to_pylist()))
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        who = f" of utterance(s) {', '.join(map(repr, ids[:5]))}{more}"
    where = "" if layer is None else f" in layer {layer}"
    raise StoreError(f"{bad_rows.size} vector(s){who}{where} hold NaN or infinite values", path=path,
                     utt_id=None, hint="a store never holds non-finite values: find the utterance's audio or the "
                     "model's numerical problem (float16 overflow) and extract it again")


def conform_index(index: pa.Table) -> pa.Table:
    """``index`` with exactly the columns of INDEX_SCHEMA (missing nullable ones filled with nulls)."""
    if index.schema.equals(INDEX_SCHEMA):
        return index
    n = index.num_rows
    cols = [index.column(f.name).cast(f.type) if f.name in index.column_names else pa.nulls(n, type=f.type)
            for f in INDEX_SCHEMA]
    return pa.table(cols, schema=INDEX_SCHEMA)


def index_table(rows: Mapping[str, Sequence]) -> pa.Table:
    """Build an INDEX_SCHEMA table from columns (missing nullable columns are filled with nulls)."""
    n = len(next(iter(rows.values())))
    cols = {}
    for field in INDEX_SCHEMA:
        cols[field.name] = pa.array(rows[field.name], type=field.type) if field.name in rows \
            else pa.nulls(n, type=field.type)
    return pa.table(cols, schema=INDEX_SCHEMA)
