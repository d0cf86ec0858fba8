"""Errors of the inference side."""

from __future__ import annotations

from hybrid.errors import HybridError


class DataError(HybridError):
    """Observation data are malformed: the message names the file, the line and the problem."""


class InferenceError(HybridError):
    """An inference request is invalid (shapes, settings, an improper prior where one is needed)."""
