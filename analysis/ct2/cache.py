"""The cache of converted models: keyed by the bytes of the source, memoised by size and mtime.

Converted models live in ``$LAM_CACHE_DIR/ct2/<key>/`` (default ``~/.cache/lam-toolkit/ct2/<key>/``)
as written by :func:`~analysis.ct2.convert.convert_ct2_whisper`. ``<key>`` is the SHA-256 of the
converter version and of every source file's bytes (``model.bin`` parts in order, ``config.json``,
``tokenizer.json`` or the vocabulary). Hashing 145 MB (16 MiB blocks) takes 0.3-0.5 s, a
quarter of the 2 s budget for a cached load on a busy machine, so the digest is memoised: the first
load of a source hashes every byte and stores the key under ``<cache>/sources/`` together with each
file's resolved path, size and modification time (ns); a later load whose files have the same
size and mtime reuses the stored key after a ``stat`` only. A file rewritten in place changes its
mtime and is rehashed; ``verify=True`` forces a full rehash (the key is then re-derived, never the
cached model trusted blindly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .convert import CONVERTER_VERSION, convert_ct2_whisper, is_complete_conversion, load_converted
from .source import CT2Source

if TYPE_CHECKING:
    import torch
    from transformers import WhisperForConditionalGeneration

logger = logging.getLogger(__name__)

__all__ = ["cached_conversion", "cached_key", "ct2_cache_root", "load_ct2_whisper", "source_key"]

_HASH_BLOCK = 16 << 20


def ct2_cache_root() -> Path:
    """``$LAM_CACHE_DIR/ct2`` or ``~/.cache/lam-toolkit/ct2``."""
    base = os.environ.get("LAM_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "lam-toolkit") / "ct2"


def _sha256_file(path: Path, h: hashlib._Hash | None = None) -> hashlib._Hash:
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
                       # the file's own name (.txt or .json) keeps keys of earlier versions unchanged
                       (source.vocabulary.name if source.vocabulary else "", source.vocabulary
                        if source.tokenizer is None else None)):
        if path is not None:
            digests[role] = _sha256_file(path).hexdigest()
    key = hashlib.sha256(json.dumps({"converter": CONVERTER_VERSION, **digests}, sort_keys=True).encode())
    return key.hexdigest(), digests


def _stat_signature(source: CT2Source) -> list[list[Any]]:
    sig = []
    for p in source.all_files():
        st = p.stat()
        sig.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return sig


def _memo_path(root: Path, source: CT2Source) -> Path:
    where = "\0".join(str(p.resolve()) for p in source.all_files())
    return root / "sources" / (hashlib.sha256(where.encode()).hexdigest()[:32] + ".json")


def cached_key(source: CT2Source, *, cache_dir: str | os.PathLike[str] | None = None,
               verify: bool = False) -> tuple[str, dict[str, str]]:
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


def cached_conversion(source: CT2Source | str | Path, *, cache_dir: str | os.PathLike[str] | None = None,
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
    if not is_complete_conversion(target):
        logger.info("converting CTranslate2 model %s -> %s", source.model_files[0], target)
        convert_ct2_whisper(source, target, digests=digests)
    return target


def load_ct2_whisper(source: CT2Source | str | Path, *, cache_dir: str | os.PathLike[str] | None = None,
                     dtype: torch.dtype | None = None, verify: bool = False) -> WhisperForConditionalGeneration:
    """Load a CTranslate2 Whisper model as a transformers ``WhisperForConditionalGeneration``.

    The first call converts and caches (see the module docstring); later calls hash the source and
    load the cached safetensors.

    Parameters
    ----------
    source : CT2Source or path
        A source or a directory with ``model.bin`` (or ``model.bin.part1..N``), ``config.json`` and
        ``tokenizer.json`` (or ``vocabulary.json``/``vocabulary.txt``).
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

