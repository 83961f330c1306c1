"""Errors of the ``analysis`` package: one root, :class:`AnalysisError`, under the toolkit's
:class:`~phonalign.errors.LamError`, and a subclass per thing that can go wrong."""

from __future__ import annotations

from phonalign.errors import LamError


class AnalysisError(LamError):
    """Root of the ``analysis`` errors."""


class ModelError(AnalysisError):
    """A speech model cannot be loaded, or is not an encoder this package knows how to run."""


class FrameError(AnalysisError):
    """Frame<->time arithmetic was asked something impossible (negative times, no frames)."""


class ExtractionError(AnalysisError):
    """One utterance could not be turned into features (audio too long, unreadable, ...)."""


class StoreError(AnalysisError):
    """A feature store is missing, corrupt, or does not hold what was asked."""


class StoreSettingsError(StoreError):
    """Appending to a feature store with a model or settings other than those it was made with."""


class SimilarityError(AnalysisError):
    """Two stores cannot be compared (different models or layers, a unit with no rows, ...)."""


class RankingsError(AnalysisError):
    """A rankings file is missing, malformed, or lacks the unit asked for."""
