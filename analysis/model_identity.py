"""Which model made a result: identity by content, not by the path typed on the command line.

Two different models may both be called ``--model m`` (from different folders), and one model may
be reached by several paths or names. A feature store therefore records the model's **digest**:

* for a model loaded from files (a local folder, the Hugging Face cache, a converted CTranslate2
  Whisper), a SHA-256 over the names and contents of its weight files and ``config.json``
  (:func:`files_digest`). Hashing a large model takes seconds, so each file's hash is cached
  under ``$LAM_CACHE_DIR/digests/`` (default ``~/.cache/lam-toolkit/digests/``), keyed by its
  resolved path and checked against its size and modification time; an unchanged file is never
  hashed twice;
* for a model given as a built object (notebooks, tests), a SHA-256 over its tensors' names,
  dtypes, shapes and values (:func:`module_digest`);

plus the hub **revision** (commit hash) where there is one. Compatibility checks (resuming a
store, comparing two stores, training on a store with rankings) compare digests, never paths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ModelIdentity", "files_digest", "module_digest", "digest_cache_root", "WEIGHT_SUFFIXES"]

#: Files that hold a model's weights (besides ``config.json``, which is hashed too).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_BLOCK = 1 << 22


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies a model's numbers.

    Attributes
    ----------
    digest : str
        ``"sha256:<hex>"`` of the weight files and config (``kind="files"``) or of the tensors
        (``kind="tensors"``).
    kind : str
        ``files`` or ``tensors``.
    revision : str or None
        Hub commit hash (or CTranslate2 source key) where known.
    files : tuple of str
        Names of the files hashed (relative to the model folder).
    missing_keys, unexpected_keys : tuple of str
        Weights the model expected but the files lacked (accepted only with ``allow_missing``),
        and weights in the files the model did not use.
    """

    digest: str
    kind: str
    revision: str | None = None
    files: tuple[str, ...] = ()
    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (stored in a feature store's ``meta.json``)."""
        return {"digest": self.digest, "kind": self.kind, "revision": self.revision, "files": list(self.files),
                "missing_keys": list(self.missing_keys), "unexpected_keys": list(self.unexpected_keys)}


def digest_cache_root() -> Path:
    """``$LAM_CACHE_DIR/digests`` or ``~/.cache/lam-toolkit/digests``."""
    base = os.environ.get("LAM_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "lam-toolkit") / "digests"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        block = bytearray(_BLOCK)
        view = memoryview(block)
        while n := fh.readinto(block):
            h.update(view[:n])
    return h.hexdigest()


def _cached_file_hash(path: Path, cache: Path | None) -> str:
    """SHA-256 of ``path``, memoised by resolved path, size and mtime (see the module docstring)."""
    real = path.resolve()
    st = real.stat()
    sig = [str(real), st.st_size, st.st_mtime_ns]
    memo = None
    if cache is not None:
        memo = cache / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json")
        try:
            saved = json.loads(memo.read_text(encoding="utf-8"))
            if saved.get("file") == sig and isinstance(saved.get("sha256"), str):
                return saved["sha256"]
        except (OSError, ValueError):
            pass  # no memo yet, or an unreadable one: hash below
    value = _sha256_file(real)
    if memo is not None:
        from phonalign.fsutil import atomic_write_json

        try:
            atomic_write_json(memo, {"file": sig, "sha256": value})
        except OSError as exc:  # a read-only cache still works, only without the shortcut
            logger.warning("cannot write the digest memo %s: %s", memo, exc)
    return value


def files_digest(directory: str | Path, *, cache: str | Path | None = "default") -> tuple[str, tuple[str, ...]]:
    """Digest of a model folder: its weight files (:data:`WEIGHT_SUFFIXES`) and ``config.json``.

    Parameters
    ----------
    directory : str or Path
        The folder the weights were loaded from (symbolic links, as in the Hugging Face cache,
        are followed).
    cache : path, None or ``"default"``
        Where per-file hashes are memoised (:func:`digest_cache_root` by default; None: no memo).

    Returns
    -------
    digest : str
        ``"sha256:<hex>"`` over the sorted ``(name, sha256)`` pairs.
    files : tuple of str
        The names hashed.
    """
    directory = Path(directory)
    root = digest_cache_root() if cache == "default" else (None if cache is None else Path(cache))
    names = sorted(p.name for p in directory.iterdir()
                   if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    pairs = [[name, _cached_file_hash(directory / name, root)] for name in names]
    text = json.dumps(pairs, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest(), tuple(names)


def module_digest(module: Any) -> str:
    """Digest of a built model: names, dtypes, shapes and values of its parameters and buffers.

    Parameters
    ----------
    module : torch.nn.Module
    """
    import numpy as np
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit words
            t = t.view(torch.int16)
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return "sha256:" + h.hexdigest()
