"""phonalign: corpora, TextGrids, phone sets and the six shared vowel classes, aligners.

The bottom room of the toolkit: it imports nothing from ``analysis`` or ``lam_train``. Its entry
points are re-exported here and imported on first use, so ``import phonalign`` stays cheap (no
pyarrow, praatio or aligner is loaded until a name is used):

* :func:`read_corpus` (``phonalign.corpus``): a corpus folder, manifest or preset as utterances;
* :func:`get_aligner` (``phonalign.align``) and :func:`align_corpus` (``phonalign.align.run``):
  TextGrids and the segments table (``lam align``);
* :func:`read_alignment`, :func:`write_alignment` (``phonalign.textgrid_io``);
* :func:`classify` (``phonalign.phonesets``): phone labels -> the six vowel classes;
* :func:`load_audio` (``phonalign.audio``); :class:`LamError` (``phonalign.errors``).

Examples
--------
Align two utterances of the bundled demo corpus from its reference TextGrids:

>>> import tempfile
>>> from pathlib import Path
>>> import phonalign
>>> utts = phonalign.read_corpus(None, preset="lam-demo")
>>> from phonalign.corpus import demo_corpus_dir
>>> demo = demo_corpus_dir()
>>> out = Path(tempfile.mkdtemp()) / "aligned"
>>> aligner = phonalign.get_aligner("textgrid", textgrids=str(demo / "textgrids"))
>>> _ = phonalign.align_corpus(utts[:2], out, aligner, progress=False)
>>> (out / "segments.parquet").is_file(), (out / "textgrids" / f"{utts[0].utt_id}.TextGrid").is_file()
(True, True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (imported on first access, PEP 562)
_ENTRY_POINTS = {
    "read_corpus": "phonalign.corpus",
    "get_aligner": "phonalign.align",
    "align_corpus": "phonalign.align.run",
    "read_alignment": "phonalign.textgrid_io",
    "write_alignment": "phonalign.textgrid_io",
    "classify": "phonalign.phonesets",
    "load_audio": "phonalign.audio",
    "LamError": "phonalign.errors",
}

__all__ = ["__version__", "read_corpus", "get_aligner", "align_corpus", "read_alignment", "write_alignment",
           "classify", "load_audio", "LamError"]

if TYPE_CHECKING:
    from .align import get_aligner
    from .align.run import align_corpus
    from .audio import load_audio
    from .corpus import read_corpus
    from .errors import LamError
    from .phonesets import classify
    from .textgrid_io import read_alignment, write_alignment


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'phonalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
