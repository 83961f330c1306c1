"""What produced an output: resolved configuration, seeds and versions, written beside it.

Every command that writes an output directory calls :func:`write_run_info` so a result can be
reproduced (and doubted) months later.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import platform
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .fsutil import atomic_write_json, atomic_write_text

_TRACKED = ("numpy", "torch", "transformers", "praatio", "pyarrow", "scikit-learn", "librosa",
            "soundfile", "pocketsphinx", "scipy")


def versions() -> dict[str, str]:
    """Versions of Python, the toolkit and the libraries whose behaviour affects results."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    # Reading package metadata costs ~70 ms; versions cannot change inside one process.
    out = {"lam-toolkit": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in _TRACKED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def to_plain(obj: Any) -> Any:
    """Dataclasses, paths and tuples -> YAML/JSON-safe builtins (recursively)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_run_info(out_dir: str | Path, *, step: str, config: Any, seed: int | None = None) -> None:
    """Write ``config.yaml`` (resolved configuration) and ``versions.json`` into ``out_dir``.

    Parameters
    ----------
    out_dir : directory of the output.
    step : name of the pipeline step (``align``, ``features``, ...), recorded in both files.
    config : dataclass or mapping with every setting that was in force, defaults included.
    seed : random seed, if the step uses randomness.
    """
    out_dir = Path(out_dir)
    plain = {"step": step, "seed": seed, **to_plain(config)}
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
    atomic_write_json(
        out_dir / "versions.json",
        {"step": step, "written": datetime.now(UTC).isoformat(timespec="seconds"), **versions()},
    )
