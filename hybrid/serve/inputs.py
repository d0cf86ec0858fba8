"""Request checking shared by the protocol app and the models: one clear error per problem."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from hybrid.errors import HybridError, ParameterError
from hybrid.parameters import ParameterSpace


class ServeError(HybridError):
    """The server cannot start (bad address, port in use, inconsistent models)."""


class RequestError(HybridError):
    """A request that the protocol or the model rejects.

    ``kind`` is the UM-Bridge error type (``InvalidInput``, ``ModelNotFound``,
    ``UnsupportedFeature``, ``InvalidOutput``, ``ModelError``), ``status`` the HTTP status.
    """

    def __init__(self, message: str, kind: str = "InvalidInput", status: int = 400):
        super().__init__(message)
        self.kind = kind
        self.status = status


# ----------------------------------------------------------------------------- inputs
def _numbers(values: Any, where: str) -> list[float]:
    """A JSON list of numbers as floats (NaN kept: the models reject it with a named error)."""
    if not isinstance(values, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise RequestError(f"{where}: expected a list of numbers")
    return [float(v) for v in values]


def _config(config: Any, allowed: dict[str, type]) -> dict:
    """Validate a model config (a JSON object with only the ``allowed`` keys and types)."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RequestError("config: expected a JSON object")
    for key, value in config.items():
        if key not in allowed:
            raise RequestError(f"config: unknown key {key!r}; this model accepts "
                               f"{sorted(allowed) or 'no keys'}")
        if not isinstance(value, allowed[key]):
            raise RequestError(f"config: {key} must be {allowed[key].__name__}, got "
                               f"{json.dumps(value)}")
    return config


def _mu(parameters: Any, space: ParameterSpace, *, extrapolate: bool = False) -> np.ndarray:
    """The single input vector μ of a request, checked against ``space``.

    Raises:
        RequestError: not one list of P numbers.
        ParameterError: NaN/inf, or outside the bounds (unless ``extrapolate``).
    """
    if not isinstance(parameters, list) or not all(isinstance(p, list) for p in parameters):
        raise RequestError("input: expected a list of input vectors (a list of lists)")
    if len(parameters) != 1:
        raise RequestError(f"input: expected 1 input vector (the {space.dim} parameters), got "
                           f"{len(parameters)}")
    mu = np.array(_numbers(parameters[0], "input 0"))
    if mu.shape != (space.dim,):
        raise RequestError(f"input 0: expected {space.dim} values ({', '.join(space.names)}), "
                           f"got {mu.size}")
    if extrapolate:
        if not np.all(np.isfinite(mu)):
            raise ParameterError(f"mu: parameters must be finite numbers, got {mu.tolist()}")
        return mu
    return space.check(mu)


def _index(value: Any, n: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise RequestError(f"{where}: expected an integer in [0, {n - 1}], got "
                           f"{json.dumps(value)}")
    return value


def _vector(values: Any, n: int, where: str) -> np.ndarray:
    v = np.array(_numbers(values, where))
    if v.shape != (n,):
        raise RequestError(f"{where}: expected {n} value(s), got {v.size}")
    if not np.all(np.isfinite(v)):
        raise RequestError(f"{where}: values must be finite numbers")
    return v


def _names(names: Sequence[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (", …" if len(names) > k else "")
