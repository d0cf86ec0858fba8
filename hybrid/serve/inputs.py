"""Request checking shared by the protocol app and the models: one clear error per problem."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hybrid.core.parameters import ParameterSpace
from hybrid.errors import HybridError, ParameterError


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
def _show(value: Any, limit: int = 60) -> str:
    """A short, safe rendering of a request value for an error message (never raises)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)                   # JSON integers have at most 4300 digits
        return text if len(text) <= 24 else f"{text[:10]}…{text[-4:]} ({len(text)} digits)"
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _numbers(values: Any, where: str) -> list[float]:
    """A JSON list of numbers as floats (NaN kept: the models reject it with a named error)."""
    if not isinstance(values, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise RequestError(f"{where}: expected a list of numbers")
    out = []
    for v in values:
        try:
            out.append(float(v))
        except OverflowError:               # an integer literal beyond the float range
            raise RequestError(f"{where}: {_show(v)} is too large for a float") from None
    return out


def _config(config: Any, allowed: dict[str, type | tuple[Callable[[Any], bool], str]]) -> dict:
    """Validate a model config (a JSON object with only the ``allowed`` keys and types).

    A value of ``allowed`` is a type, or a pair (check ``value -> bool``, what it accepts).
    """
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RequestError("config: expected a JSON object")
    for key, value in config.items():
        if key not in allowed:
            raise RequestError(f"config: unknown key {key!r}; this model accepts "
                               f"{sorted(allowed) or 'no keys'}")
        rule = allowed[key]
        if isinstance(rule, type):
            if not isinstance(value, rule):
                raise RequestError(f"config: {key} must be {rule.__name__}, got "
                                   f"{_show(value)}")
        elif not rule[0](value):
            raise RequestError(f"config: {key} must be {rule[1]}, got {_show(value)}")
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
                           f"{_show(value)}")
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
