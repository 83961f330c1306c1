"""analysis: speech-model layers, frame<->time mapping, pooling, the feature store, cross-language
similarity, rankings and plots. May import ``phonalign``; never ``lam_train``.

Its entry points are re-exported here and imported on first use, so ``import analysis`` does not
import torch or transformers until a name that needs them is used:

* :func:`extract_features` (``analysis.extract``): every layer pooled per utterance and segment
  into a :class:`FeatureStore` (``analysis.store``; ``lam features``);
* :func:`load_encoder` (``analysis.models``), :func:`load_pretrained` (``analysis.model_sources``);
* :func:`compare_stores`, :func:`run_similarity` (``analysis.similarity``; ``lam similarity``);
* :func:`vowel_maps` (``analysis.vowel_map``; ``lam similarity --vowel-map``): the cross-language
  vowel map of every layer and its diagonal advantage;
* :func:`measure_corpus` (``analysis.acoustics``; ``lam acoustics``), :func:`run_geometry`
  (``analysis.geometry``; ``lam geometry``): the acoustic vowel space and the layer geometry;
* :func:`read_rankings`, :func:`load_selections` (``analysis.rankings``);
* :func:`plot_results` (``analysis.plots``; ``lam plot``).

Small random models for tests and dry runs are in :mod:`analysis.testing`.

Examples
--------
Pool every layer of a small random WavLM over one aligned demo utterance per speaker (three per
language), then compare English with Mandarin layer by layer:

>>> import tempfile
>>> from pathlib import Path
>>> import analysis, phonalign
>>> from analysis.testing import random_model
>>> work = Path(tempfile.mkdtemp())
>>> random_model("wavlm", n_layers=4).save_pretrained(work / "wavlm-tiny")
>>> from phonalign.corpus import demo_corpus_dir
>>> demo = demo_corpus_dir()
>>> aligner = phonalign.get_aligner("textgrid", textgrids=str(demo / "textgrids"))
>>> utts = phonalign.read_corpus(None, preset="lam-demo")
>>> for lang in ("en", "zh"):
...     mine = [u for u in utts if u.language == lang and u.utt_id.endswith("_s00_neu")]
...     _ = phonalign.align_corpus(mine, work / "aligned" / lang, aligner, progress=False)
...     _ = analysis.extract_features(work / "aligned" / lang, work / "features" / lang,
...                                   model=str(work / "wavlm-tiny"), device="cpu", progress=False)
>>> store = analysis.FeatureStore.open(work / "features" / "en")
>>> store.layer_names
['layer_00', 'layer_01', 'layer_02', 'layer_03', 'layer_04']
>>> store.read_layer("layer_01").shape[1]
32
>>> _ = analysis.run_similarity(work / "features" / "en", work / "features" / "zh", work / "similarity",
...                             units=("Utt",), progress=False)
>>> analysis.load_selections(work / "similarity" / "rankings.json", unit="Utt")["final"]
[4]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from phonalign import __version__

# name -> module that defines it (imported on first access, PEP 562)
_ENTRY_POINTS = {
    "extract_features": "analysis.extract",
    "FeatureStore": "analysis.store",
    "load_encoder": "analysis.models",
    "load_pretrained": "analysis.model_sources",
    "compare_stores": "analysis.similarity",
    "run_similarity": "analysis.similarity",
    "vowel_maps": "analysis.vowel_map",
    "measure_corpus": "analysis.acoustics",
    "run_geometry": "analysis.geometry",
    "read_rankings": "analysis.rankings",
    "load_selections": "analysis.rankings",
    "plot_results": "analysis.plots",
}

__all__ = ["__version__", "extract_features", "FeatureStore", "load_encoder", "load_pretrained", "compare_stores",
           "run_similarity", "vowel_maps", "measure_corpus", "run_geometry", "read_rankings", "load_selections",
           "plot_results"]

if TYPE_CHECKING:
    from .acoustics import measure_corpus
    from .extract import extract_features
    from .geometry import run_geometry
    from .model_sources import load_pretrained
    from .models import load_encoder
    from .plots import plot_results
    from .rankings import load_selections, read_rankings
    from .similarity import compare_stores, run_similarity
    from .store import FeatureStore
    from .vowel_map import vowel_maps


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
