"""The errors of the CTranslate2 Whisper loader (both :class:`~analysis.errors.ModelError`)."""

from __future__ import annotations

from analysis.errors import ModelError

__all__ = ["CT2FormatError", "ModelLoadError"]


class ModelLoadError(ModelError):
    """A model cannot be found, read or converted (a :class:`~analysis.errors.ModelError`)."""


class CT2FormatError(ModelLoadError):
    """A CTranslate2 ``model.bin`` is malformed, truncated or not a Whisper model we can map."""

