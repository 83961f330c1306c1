"""CTranslate2 (faster-whisper) Whisper checkpoints -> transformers ``WhisperForConditionalGeneration``.

One room per job:

* :mod:`~analysis.ct2.reader`: the binary ``model.bin`` format (:func:`read_ct2_model`), whole or
  in parts, memory-mapped, accepted only if it parses exactly to its last byte;
* :mod:`~analysis.ct2.source`: where a model's files are (:class:`CT2Source`);
* :mod:`~analysis.ct2.mapping`: every CTranslate2 Whisper variable onto the transformers state
  dict (:func:`ct2_to_hf_state_dict`);
* :mod:`~analysis.ct2.builders`: the tokenizer, model config and generation config;
* :mod:`~analysis.ct2.convert`: a Hugging Face directory written from them
  (:func:`convert_ct2_whisper`) and loaded back (:func:`load_converted`);
* :mod:`~analysis.ct2.cache`: converted models cached by the bytes of their source
  (:func:`cached_conversion`, :func:`load_ct2_whisper`).

The inverse direction (a transformers Whisper written as a CTranslate2 model) is CTranslate2's own
converter; the tests use it through :func:`analysis.testing.export_ct2_whisper`.

Examples
--------
>>> from analysis.ct2 import CT2Source, load_ct2_whisper
>>> model = load_ct2_whisper("path/to/faster-whisper-base")  # doctest: +SKIP
>>> model.config.d_model  # doctest: +SKIP
512
"""

from __future__ import annotations

from .builders import build_configs, build_tokenizer
from .cache import cached_conversion, cached_key, ct2_cache_root, load_ct2_whisper, source_key
from .convert import CONVERTER_VERSION, convert_ct2_whisper, load_converted
from .errors import CT2FormatError, ModelLoadError
from .mapping import WhisperDims, ct2_to_hf_state_dict
from .reader import CT2_BINARY_VERSION, CT2Checkpoint, read_ct2_model
from .source import CT2Source, ct2_model_files, is_ct2_directory

__all__ = [
    "CONVERTER_VERSION",
    "CT2_BINARY_VERSION",
    "CT2Checkpoint",
    "CT2FormatError",
    "CT2Source",
    "ModelLoadError",
    "WhisperDims",
    "build_configs",
    "build_tokenizer",
    "cached_conversion",
    "cached_key",
    "ct2_cache_root",
    "ct2_model_files",
    "ct2_to_hf_state_dict",
    "convert_ct2_whisper",
    "is_ct2_directory",
    "load_converted",
    "load_ct2_whisper",
    "read_ct2_model",
    "source_key",
]
