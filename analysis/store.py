"""The feature store: pooled vectors of every layer of one model, on disk, chunked and appendable.

One store holds one (model id, revision, extraction settings). Layout::

    STORE/
      meta.json                         model_id, revision, n_layers, hidden_size, settings,
                                        frame_spec, version, format
      config.yaml, versions.json        write_run_info (resolved settings and library versions)
      layers/layer_00/chunk-<id>.npy    float32 (n_rows_of_chunk, hidden), np.save(allow_pickle=False)
      ...
      layers/layer_LL/chunk-<id>.npy
      index/part-<id>.parquet           the chunk's index rows (INDEX_SCHEMA), written LAST

A chunk is *committed* when its index part exists. Every file is written to a temporary name and
moved into place atomically, and the index part is moved last, so a process killed at any point
leaves committed chunks intact and at most an uncommitted chunk's layer files, which are ignored
(and overwritten when the chunk id is reused). A chunk holds whole utterances only, so "which
utterances are done" is exactly the set of ``utt_id`` in the committed index: a resumed job skips
those and nothing is lost or duplicated. Shards of one job (``--shard I/N``) write disjoint chunk
ids (``s0001of0004-00000``), so several processes can fill one store at once.

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
import pyarrow.parquet as pq

from phonalign import __version__
from phonalign.fsutil import atomic_path, atomic_write_json

from .errors import StoreError, StoreSettingsError

FORMAT = "lam-feature-store/1"

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
    ]
)

_CHUNK_ID = re.compile(r"^[A-Za-z0-9-]+$")


def layer_name(layer: int) -> str:
    """``3 -> "layer_03"`` (index 0 is the output before the first transformer layer)."""
    return f"layer_{int(layer):02d}"


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


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
        except (OSError, json.JSONDecodeError) as err:
            raise StoreError(f"meta.json cannot be read: {err}", path=meta_path,
                             hint="the store is damaged; extract the features again") from err
        if meta.get("format") != FORMAT:
            raise StoreError(f"unknown store format {meta.get('format')!r} (expected {FORMAT!r})",
                             path=meta_path, hint="extract the features again with this toolkit version")
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

        Raises
        ------
        StoreSettingsError
            If the store exists with another model, revision, shape or settings.
        """
        path = Path(path)
        meta = {
            "format": FORMAT,
            "model_id": str(model_id),
            "revision": revision,
            "n_layers": int(n_layers),
            "hidden_size": int(hidden_size),
            "layer_names": [layer_name(i) for i in range(int(n_layers) + 1)],
            "settings": json.loads(_canonical(dict(settings))),
            "frame_spec": None if frame_spec is None else json.loads(_canonical(dict(frame_spec))),
            "version": __version__,
        }
        if (path / "meta.json").is_file():
            store = cls.open(path)
            old = store.meta
            for key in ("model_id", "revision", "n_layers", "hidden_size", "settings"):
                if _canonical(old.get(key)) != _canonical(meta[key]):
                    raise StoreSettingsError(
                        f"the store was made with {key}={_canonical(old.get(key))}, "
                        f"this run asks for {key}={_canonical(meta[key])}",
                        path=path,
                        hint="use a new output directory for other settings, or rerun with the "
                        "store's settings to resume it",
                    )
            return store
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / "meta.json", meta)
        return cls(path, meta)

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
        """``["layer_00", ..., "layer_LL"]``."""
        return list(self.meta["layer_names"])

    @property
    def model_id(self) -> str:
        """The model the features were extracted with, as given to ``lam features --model``."""
        return self.meta["model_id"]

    def _scan(self) -> list[tuple[str, int]]:
        if self._chunks is None:
            parts = sorted((self.path / "index").glob("part-*.parquet"))
            chunks = []
            for part in parts:
                cid = part.name[len("part-"):-len(".parquet")]
                chunks.append((cid, pq.ParquetFile(part).metadata.num_rows))
            self._chunks = chunks
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
            parts = [pq.read_table(self.path / "index" / f"part-{cid}.parquet", schema=INDEX_SCHEMA)
                     for cid, _ in self._scan()]
            self._index = pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()
        return self._index

    def done_utt_ids(self) -> set[str]:
        """Utterances whose vectors are committed (a resumed extraction skips them)."""
        return set(self.index.column("utt_id").unique().to_pylist())

    # ------------------------------------------------------------------ reading
    def _layer_dir(self, layer) -> Path:
        name = layer if isinstance(layer, str) else layer_name(layer)
        if name not in self.meta["layer_names"]:
            raise StoreError(f"no layer {layer!r} in this store (it has {self.layer_names[0]}.."
                             f"{self.layer_names[-1]})", path=self.path)
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
        return arr

    def iter_layer(self, layer) -> Iterator[tuple[int, np.ndarray]]:
        """Stream one layer chunk by chunk.

        Yields
        ------
        offset : int
            Row of the index where the chunk starts.
        array : ndarray, float32, shape (n_rows_of_chunk, hidden), memory-mapped read-only
        """
        layer_dir = self._layer_dir(layer)
        offset = 0
        for cid, n in self._scan():
            yield offset, self._chunk_array(layer_dir, cid, n)
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
        for offset, arr in self.iter_layer(layer):
            sel = np.flatnonzero((rows >= offset) & (rows < offset + arr.shape[0]))
            if sel.size:
                out[sel] = arr[rows[sel] - offset]
        return out

    # ------------------------------------------------------------------ writing
    def next_chunk_id(self, prefix: str = "") -> str:
        """First unused committed chunk id with ``prefix`` (e.g. ``s0001of0004-``)."""
        used = [cid for cid in self.chunks if cid.startswith(prefix) and cid[len(prefix):].isdigit()]
        nxt = 1 + max((int(c[len(prefix):]) for c in used), default=-1)
        return f"{prefix}{nxt:05d}"

    def append(self, index: pa.Table, layers: Sequence[np.ndarray] | np.ndarray, *,
               chunk_id: str | None = None) -> str:
        """Commit one chunk: the layer arrays first, the index part last (atomically each).

        Parameters
        ----------
        index : pa.Table
            Rows of INDEX_SCHEMA (whole utterances only).
        layers : sequence of L+1 arrays, or array (L+1, n_rows, hidden)
            Vectors, cast to float32.
        chunk_id : str, optional
            Defaults to :meth:`next_chunk_id`. Letters, digits and ``-``.

        Returns
        -------
        str
            The chunk id.
        """
        index = index.cast(INDEX_SCHEMA) if index.schema != INDEX_SCHEMA else index
        n = index.num_rows
        if len(layers) != self.n_layers + 1:
            raise StoreError(f"{len(layers)} layers given, the store holds {self.n_layers + 1}", path=self.path)
        cid = chunk_id or self.next_chunk_id()
        if not _CHUNK_ID.match(cid):
            raise StoreError(f"chunk id {cid!r} is not letters, digits and '-'", path=self.path)
        if cid in self.chunks:
            raise StoreError(f"chunk {cid!r} is already committed", path=self.path,
                             hint="chunks are never rewritten; pick a new id")
        for i, arr in enumerate(layers):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if arr.shape != (n, self.hidden_size):
                raise StoreError(f"layer {i} has shape {arr.shape}, expected ({n}, {self.hidden_size})",
                                 path=self.path)
            with atomic_path(self.path / "layers" / layer_name(i) / f"chunk-{cid}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
        with atomic_path(self.path / "index" / f"part-{cid}.parquet") as tmp:
            pq.write_table(index, tmp)
        self.refresh()
        return cid

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, model={self.model_id!r}, layers={self.n_layers + 1}, "
                f"hidden={self.hidden_size}, rows={len(self)})")


def index_table(rows: Mapping[str, Sequence]) -> pa.Table:
    """Build an INDEX_SCHEMA table from columns (missing nullable columns are filled with nulls)."""
    n = len(next(iter(rows.values())))
    cols = {}
    for field in INDEX_SCHEMA:
        cols[field.name] = pa.array(rows[field.name], type=field.type) if field.name in rows \
            else pa.nulls(n, type=field.type)
    return pa.table(cols, schema=INDEX_SCHEMA)
