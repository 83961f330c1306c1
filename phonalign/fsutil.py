"""Safe file output: atomic writes and utterance ids that cannot escape an output directory.

Batch jobs over 10^5 utterances get killed; an interrupted run must leave either the old file or
the complete new one, never half of one. Everything is written to a temporary file in the same
directory and moved into place with :func:`os.replace`, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UnsafePathError

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-+=@,]+$")


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    Use for writers that insist on a file name (pyarrow, soundfile, praatio)::

        with atomic_path(out / "segments.parquet") as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def check_utt_id(utt_id: str, *, source: str | Path | None = None) -> str:
    """Return ``utt_id`` unchanged if it is safe as a file name, else raise.

    Rejects ``/``, ``\\``, ``..``, empty ids and characters outside ``[A-Za-z0-9_.-+=@,]``, so
    that ``out / f"{utt_id}.TextGrid"`` can never land outside ``out``.
    """
    if not utt_id or utt_id in {".", ".."} or ".." in utt_id or not _SAFE_ID.match(utt_id):
        raise UnsafePathError(
            f"utterance id {utt_id!r} is not safe as a file name",
            path=source,
            utt_id=utt_id,
            hint="use ids made of letters, digits and _ . - (no '/', '\\' or '..'); "
            "rename the file or fix the manifest's id column",
        )
    return utt_id


def child_path(root: str | Path, name: str, *, suffix: str = "") -> Path:
    """``root / (name + suffix)``, refusing any name that would resolve outside ``root``."""
    check_utt_id(name)
    root = Path(root)
    path = root / f"{name}{suffix}"
    if root.resolve() not in path.resolve().parents:
        raise UnsafePathError(f"{name!r} resolves outside {root}", path=path)
    return path
