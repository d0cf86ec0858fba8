"""User-facing errors.

Anything the user can fix (a malformed case file, a missing mesh, out-of-range parameters,
a corrupted store) raises :class:`HybridError`. The command line prints its message as one
line and exits with :attr:`HybridError.exit_code`; it never shows a traceback for these.
"""

from __future__ import annotations


class HybridError(Exception):
    """An error caused by user input; its message is one line naming what and where."""

    exit_code = 2


class CaseError(HybridError):
    """A case file is malformed: the message names the file, the key and what was expected."""


class StoreError(HybridError):
    """A snapshot store is missing, corrupted, or does not match the case."""


class ParameterError(HybridError):
    """A parameter vector is malformed or outside the parameter space."""


class SolveFailed(HybridError):
    """A FEM solve did not converge (a result of the model, recorded rather than fatal)."""

    exit_code = 3


class ModelError(HybridError):
    """A physics model plug-in is unusable: the message names the model file and the problem."""


class ThetaError(HybridError):
    """A θ(μ) expression tree is malformed (unknown node, wrong arity, bad number)."""
