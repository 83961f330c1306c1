"""Errors of the ``lam_train`` package: training, evaluation, configuration and the pipeline."""

from __future__ import annotations

from phonalign.errors import LamError


class TrainError(LamError):
    """Training, evaluation or the pipeline cannot go on as asked (bad data, bad checkpoint...)."""


class ConfigError(TrainError):
    """A run configuration is invalid: unknown key, wrong type, value out of range, missing path."""
