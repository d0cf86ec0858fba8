"""Single-output views of a served model, for clients that take exactly one output vector.

tinyDA's ``UmBridgeModel`` flattens the list of outputs into one array and
``umbridge.emcee.UmbridgeLogProb`` asserts one output of a log-density: neither works on a
model with outputs ``[observations, qoi]``. A view is another UM-Bridge model, served next to
its base (``surrogate`` → ``surrogate-observations``, ``surrogate-qoi``, ``surrogate-loglik``),
whose calls run in the base's worker thread (one at a time, collective for an MPI FEM model).

:class:`LogLikelihoodView` answers log N(data; G(μ), diag σ²) with data and σ from the
request's config; ``{"outside": "-inf"}`` makes a μ outside the parameter box answer −inf
(JSON ``-Infinity``) instead of the default ``InvalidInput`` error, so a sampler's proposal
outside the prior's support is rejected instead of ending the client's run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import umbridge

from hybrid.errors import ParameterError
from hybrid.serve.inputs import RequestError, _config, _index, _mu, _vector


class _View(umbridge.Model):
    def __init__(self, base, name: str):
        super().__init__(name)
        self._of = base

    @property
    def base(self):
        return self._of.base

    @property
    def space(self):
        return self._of.space

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return self._of.get_input_sizes()

    def supports_evaluate(self) -> bool:
        return True

    def supports_gradient(self) -> bool:
        return self._of._has_derivative(self.k)

    def supports_apply_jacobian(self) -> bool:
        return self.supports_gradient()

    def _wrt(self, out_wrt: Any, in_wrt: Any) -> None:
        _index(out_wrt, 1, "outWrt")
        _index(in_wrt, 1, "inWrt")
        if not self.supports_gradient():
            raise RequestError(f"model {self.name}: no derivatives (model {self._of.name} has "
                               f"none for {self._of.output_names[self.k][0]})",
                               "UnsupportedFeature")


class OutputView(_View):
    """Output ``output`` (``"observations"`` or ``"qoi"``) of ``base`` as the only output.

    Same input, config, values and derivatives as that output of the base model.
    """

    def __init__(self, base, output: str, name: str | None = None):
        super().__init__(base, name or f"{base.name}-{output}")
        self.k = base.output_index(output)
        self.output = output

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [self._of.get_output_sizes()[self.k]]

    def __call__(self, parameters: list[list[float]], config: dict | None = None):
        mu, cfg = self._of._check(parameters, config)
        return [np.asarray(self._of._values(mu, cfg)[self.k], dtype=float).tolist()]

    def gradient(self, out_wrt, in_wrt, parameters, sens, config=None) -> list[float]:
        self._wrt(out_wrt, in_wrt)
        mu, cfg = self._of._check(parameters, config)
        s = _vector(sens, self.get_output_sizes()[0], "sens")
        return np.asarray(self._of._vjp(self.k, mu, cfg, s), dtype=float).tolist()

    def apply_jacobian(self, out_wrt, in_wrt, parameters, vec, config=None) -> list[float]:
        self._wrt(out_wrt, in_wrt)
        mu, cfg = self._of._check(parameters, config)
        v = _vector(vec, self.space.dim, "vec")
        return np.asarray(self._of._jvp(self.k, mu, cfg, v), dtype=float).tolist()

    def describe(self) -> str:
        names = self._of.output_names[self.k][1]
        return (f"view {self.name}: output [{len(names)}] = {self.output} of "
                f"{self._of.name}; gradient: {'yes' if self.supports_gradient() else 'no'}")


def _numbers_rule(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and _finite(v) for v in value)


def _sigma_rule(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(isinstance(v, int | float) and not isinstance(v, bool) and _finite(v) and v > 0
               for v in items)


def _finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:                   # a huge integer
        return False


class LogLikelihoodView(_View):
    """The Gaussian log-likelihood of the observations of ``base``: output ``[1]``.

    log L(μ) = −½ Σ_i ((G_i(μ) − d_i)/σ_i)² − Σ_i log σ_i − (m/2) log 2π, with G the
    observations output of ``base`` and, from the request's config, ``data`` (d, m numbers)
    and ``sigma`` (σ > 0, one number or m). ``outside``: ``"error"`` (default: a μ outside the
    parameter box is an ``InvalidInput`` error, as for the base model) or ``"-inf"``
    (Evaluate answers −inf there; derivatives there stay errors). The base model's config
    keys (the surrogate's ``extrapolate``) are accepted too. Gradient and ApplyJacobian from
    the base model's Jacobian of the observations: ∇ log L = −Jᵀ (r/σ), r = (G − d)/σ.
    """

    minus_inf = True        # the app lets −inf through (JSON -Infinity)
    keys = {"data": (_numbers_rule, "a list of finite numbers"),
            "sigma": (_sigma_rule, "a positive number or a list of positive numbers"),
            "outside": (lambda v: v in ("error", "-inf"), '"error" or "-inf"')}

    def __init__(self, base, name: str | None = None):
        super().__init__(base, name or f"{base.name}-loglik")
        self.k = base.output_index("observations")
        self.m = base.get_output_sizes()[self.k]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [1]

    def _setup(self, parameters, config, *, derivative: bool):
        """(μ or None when outside with outside = -inf, base config, d, σ)."""
        raw = _config(config, {**self._of.config_keys, **self.keys})
        for key in ("data", "sigma"):
            if key not in raw:
                raise RequestError(f"config: {key} is required (model {self.name}: "
                                   f"log N(data; observations, sigma^2), {self.m} observations)")
        d = np.array(raw["data"], dtype=float)
        if d.shape != (self.m,):
            raise RequestError(f"config: data must have {self.m} values (the observations), "
                               f"got {d.size}")
        sigma = np.broadcast_to(np.array(raw["sigma"], dtype=float), (self.m,)) \
            if not isinstance(raw["sigma"], list) or len(raw["sigma"]) == self.m else None
        if sigma is None:
            raise RequestError(f"config: sigma must be one number or {self.m} values, got "
                               f"{len(raw['sigma'])}")
        cfg = {k: v for k, v in raw.items() if k in self._of.config_keys}
        if not derivative and raw.get("outside", "error") == "-inf" \
                and not cfg.get("extrapolate", False):
            mu = _mu(parameters, self.space, extrapolate=True)   # sizes, finite
            try:
                self.space.check(mu)
            except ParameterError:
                return None, cfg, d, sigma
        mu, cfg = self._of._check(parameters, cfg)
        return mu, cfg, d, sigma

    def _loglik(self, y: np.ndarray, d: np.ndarray, sigma: np.ndarray) -> tuple[float, np.ndarray]:
        r = (y - d) / sigma
        value = -0.5 * float(r @ r) - float(np.sum(np.log(sigma))) \
            - 0.5 * self.m * math.log(2 * math.pi)
        return value, r / sigma

    def __call__(self, parameters: list[list[float]], config: dict | None = None):
        mu, cfg, d, sigma = self._setup(parameters, config, derivative=False)
        if mu is None:
            return [[-math.inf]]
        return [[self._loglik(self._of._values(mu, cfg)[self.k], d, sigma)[0]]]

    def _derivative(self, out_wrt, in_wrt, parameters, config):
        self._wrt(out_wrt, in_wrt)
        mu, cfg, d, sigma = self._setup(parameters, config, derivative=True)
        y, J = self._of._value_and_jacobian(self.k, mu, cfg)
        return J, self._loglik(y, d, sigma)[1]

    def gradient(self, out_wrt, in_wrt, parameters, sens, config=None) -> list[float]:
        """The vector–Jacobian product sens · ∇ log L = −sens Jᵀ (r/σ)."""
        s = _vector(sens, 1, "sens")[0]
        J, w = self._derivative(out_wrt, in_wrt, parameters, config)
        return (-s * (J.T @ w)).tolist()

    def apply_jacobian(self, out_wrt, in_wrt, parameters, vec, config=None) -> list[float]:
        """[∇ log L · vec]."""
        v = _vector(vec, self.space.dim, "vec")
        J, w = self._derivative(out_wrt, in_wrt, parameters, config)
        return [float(-(w @ (J @ v)))]

    def describe(self) -> str:
        return (f"view {self.name}: output [1] = Gaussian log-likelihood of the {self.m} "
                f"observations of {self._of.name} (config: data, sigma, outside); gradient: "
                f"{'yes' if self.supports_gradient() else 'no'}")
