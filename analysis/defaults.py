"""Names and defaults of the ``analysis`` layer, written once.

The library signatures (:func:`analysis.extract.extract_features`,
:func:`analysis.similarity.run_similarity`, :func:`analysis.models.load_encoder`, ...), the run
configuration (:mod:`lam_train.config`) and the ``lam`` command line read them from here, and
``tests/test_defaults.py`` checks that they agree. No third-party import, so that the command line
can read them while it starts.
"""

from __future__ import annotations

import re

from phonalign.defaults import VOWEL_CLASSES

from .errors import ModelError

__all__ = [
    "BATCH_SECONDS", "CHUNK_ROWS", "CI_LEVEL", "DEFAULT_DEVICE", "DEFAULT_DTYPE", "DEFAULT_METRIC", "DEFAULT_MODEL",
    "DEFAULT_RESAMPLE", "DEFAULT_STORE_DTYPE", "DEFAULT_WHISPER_MODE", "DTYPES", "MAX_ROWS", "METRICS", "N_BOOTSTRAP",
    "N_HALVES", "N_PERMUTATIONS", "RESAMPLE_MODES", "SEED", "SELECTION_KEYS", "STORE_DTYPES", "TOP_K", "UNITS",
    "WHISPER_MODES", "check_device",
]

# ---- models and feature extraction ------------------------------------------------------------

#: The model of ``lam demo`` and of a run config that names none: OpenAI Whisper base, offline
#: (:mod:`analysis.model_sources`).
DEFAULT_MODEL = "whisper-base"
#: ``crop``: Whisper's input padded to 30 s and the output cropped to the real length (the model as
#: trained); ``trim``: the real length only (faster on short clips, the features differ slightly).
WHISPER_MODES: tuple[str, ...] = ("crop", "trim")
DEFAULT_WHISPER_MODE = "crop"
#: Precision the model runs in (the last two on CUDA only).
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
DEFAULT_DTYPE = "float32"
#: ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
DEFAULT_DEVICE = "auto"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
#: Cap on padded audio per extraction batch, seconds.
BATCH_SECONDS = 60.0
#: Rows per committed chunk of a feature store.
CHUNK_ROWS = 4096
#: Precision of a feature store's arrays on disk (``lam features --store-dtype``; readers always get
#: float32; see :mod:`analysis.store`).
STORE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
DEFAULT_STORE_DTYPE = "float32"

# ---- similarity, rankings and selections ------------------------------------------------------

#: Units of analysis: whole utterances, all vowels, consonants, and each vowel class on its own.
UNITS: tuple[str, ...] = ("Utt", "Vowl", "Cons") + VOWEL_CLASSES
#: Metric name -> whether a higher value means more similar.
METRICS: dict[str, bool] = {
    "centroid_cosine": True,
    "pairwise_cosine": True,
    "standardized_cosine": True,
    "coral": False,
    "mmd": False,
}
DEFAULT_METRIC = "centroid_cosine"
#: Layer selections of ``rankings.json`` (transformer layers 1..L).
SELECTION_KEYS: tuple[str, ...] = ("final", "BL", "GL", "WL", "RL1", "RL2", "RL3")
#: What the bootstrap draws resample: ``auto`` (speakers when both sides have at least 2, else
#: utterances), ``speaker``, ``utterance``.
RESAMPLE_MODES: tuple[str, ...] = ("auto", "speaker", "utterance")
DEFAULT_RESAMPLE = "auto"
#: Bootstrap draws (0: no intervals, ties unknown).
N_BOOTSTRAP = 200
#: Language-label permutations of the null profile (0: none).
N_PERMUTATIONS = 0
#: Random speaker-disjoint half splits of the within-language reference.
N_HALVES = 10
#: Layers in the GL / WL / RL selections.
TOP_K = 3
#: Level of the intervals and of the joint tie test.
CI_LEVEL = 0.95
#: Rows per unit and corpus sampled for the distribution metrics (coral, mmd).
MAX_ROWS = 1000
#: Seed of draws, half splits, permutations and random layer groups.
SEED = 0


def check_device(device: str) -> str:
    """``device`` if it is written as a device this toolkit runs on, else a :class:`ModelError`.

    Whether the device is present is :func:`analysis.models.resolve_device`'s question.
    """
    if not isinstance(device, str) or _DEVICE.fullmatch(device) is None:
        raise ModelError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")
    return device
