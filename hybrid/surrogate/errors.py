"""Errors and warnings of the surrogate side."""

from __future__ import annotations

from hybrid.errors import HybridError


class SurrogateError(HybridError):
    """A surrogate artifact is missing, corrupted or does not match; or a request is invalid."""


class ExtrapolationWarning(UserWarning):
    """A surrogate was queried outside the parameter box it was trained on."""
