"""Fingerprints: short digests that say whether an item's inputs or a step's settings changed.

A resumed run may skip an item only when what produced it is unchanged. Every committed item
records two fingerprints:

* the **input fingerprint** of the item (:func:`digest` of everything it was made from: the audio
  file's size and modification time (:func:`file_signature`), the transcript, the TextGrid's
  content (:func:`content_digest`), its segments, its utterance fields ...);
* the **settings fingerprint** of the step (:func:`digest` of every option that changes results).

A rerun redoes items whose input fingerprint differs, drops items no longer in the input, and
refuses to mix other settings into an existing output unless asked to (``--force``, which then
redoes every item made with the old settings).

Audio is fingerprinted by size and modification time (nanoseconds), not by content: hashing
10^5 recordings on every rerun would cost more than the work it saves. A tool that rewrites audio
in place keeping both size and mtime would go unnoticed; TextGrids and transcripts, which are
small and edited by hand, are fingerprinted by content.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["digest", "file_signature", "content_digest", "differences"]

_LEN = 16  # hex digits kept: 64 bits, ample for telling versions of one item apart


def digest(obj: Any) -> str:
    """A 16-hex-digit SHA-256 digest of ``obj`` as canonical JSON (sorted keys; paths as text)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_LEN]


def file_signature(path: str | Path) -> str:
    """``"<size>:<mtime_ns>"`` of a file (symbolic links followed), or ``"missing"``."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def content_digest(path: str | Path) -> str:
    """A 16-hex-digit digest of a file's bytes, or ``"missing"`` when it cannot be read."""
    h = hashlib.blake2b(digest_size=8)
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    except OSError:
        return "missing"
    return h.hexdigest()


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def differences(before: Any, now: Any, *, limit: int = 4) -> str:
    """``"options.trap: 'A', now 'E'; phone_set: None, now 'arpabet'"``: the settings that differ
    between two nested mappings (for messages that say what changed, not dump both)."""
    a, b = _flat(before), _flat(now)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    parts = [f"{k}: {a.get(k, '<unset>')!r}, now {b.get(k, '<unset>')!r}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts) or "no visible difference"
