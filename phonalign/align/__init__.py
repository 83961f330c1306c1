"""Aligner backends, chosen by name: ``textgrid`` (import existing TextGrids), ``mfa`` (Montreal
Forced Aligner) and ``pocketsphinx``.

Backends are imported only when asked for, so that ``lam --help`` and a notebook that only reads
TextGrids never import pocketsphinx or look for ``mfa``. The batch runner around them is
:func:`phonalign.align.run.align_corpus`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from ..errors import AlignerError, LamError
from .options import missing_required

if TYPE_CHECKING:
    from .base import Aligner, AlignResult

__all__ = ["get_aligner", "ALIGNERS", "Aligner", "AlignResult"]

#: name -> "module:class" of each backend.
ALIGNERS: dict[str, str] = {
    "textgrid": "phonalign.align.textgrid_backend:TextGridAligner",
    "mfa": "phonalign.align.mfa:MFAAligner",
    "pocketsphinx": "phonalign.align.pocketsphinx_backend:PocketsphinxAligner",
}


def get_aligner(name: str, **options: Any) -> Aligner:
    """Build the backend called ``name`` with ``options`` (only those the user gave).

    Parameters
    ----------
    name : {"textgrid", "mfa", "pocketsphinx"}
    **options
        Keyword arguments of the backend's constructor, e.g. ``textgrids=DIR`` for ``textgrid``,
        ``dictionary=..., acoustic_model=..., beam=10`` for ``mfa``, ``padding=...`` for
        ``pocketsphinx``. Anything not given keeps the backend's default.

    Raises
    ------
    AlignerError
        Unknown backend name (listing the valid ones), or an option the backend does not take
        (listing the ones it does).
    """
    if name not in ALIGNERS:
        raise AlignerError(f"unknown aligner {name!r}", hint=f"choose one of {', '.join(ALIGNERS)}")
    module_name, class_name = ALIGNERS[name].split(":")
    # the backends are modules of this package: imported when asked for, never guarded (a backend
    # whose third-party program is missing says so in its own check_available())
    cls = getattr(importlib.import_module(module_name), class_name)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params]
    if unknown and not takes_any:
        valid = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        raise AlignerError(f"the {name!r} aligner has no option(s) {', '.join(map(repr, unknown))}",
                           hint=f"its options are: {', '.join(valid)}")
    missing = [o.cli_flag for o in missing_required(name, options)]
    if missing:
        raise AlignerError(f"the {name!r} aligner needs {', '.join(missing)}",
                           hint="; ".join(f"{o.cli_flag}: {o.help}" for o in missing_required(name, options)))
    try:
        return cls(**options)
    except LamError:
        raise
    except (TypeError, ValueError) as err:  # a value the backend cannot use, said as one line
        raise AlignerError(f"the {name!r} aligner cannot be built with {options}: {err}",
                           hint=f"check the values against `lam align --help` ({name} options)") from None


def __getattr__(name: str) -> Any:
    # Aligner and AlignResult load the record schemas (pyarrow): imported when first asked for, so
    # that `lam --help`, which reads the backends' option declarations, stays light
    if name in ("Aligner", "AlignResult"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
