"""The approximation error of a cheaper model, folded into its likelihood (numpy only).

A coarse-mesh FEM y_c(μ) differs from the fine one y_f(μ) by a discretisation error
e(μ) = y_f(μ) − y_c(μ) that is often many noise standard deviations (a coarse mesh conducts
a cardiac wave more slowly). Used as it is, the coarse posterior sits beside the fine one,
and a delayed-acceptance stage that screens with it rejects good proposals. The *Bayesian
approximation error* approach (Kaipio & Somersalo 2007; Cui, Fox & O'Sullivan 2011 inside
delayed acceptance) models e as Gaussian, estimated from pairs (μ_j, y_f(μ_j), y_c(μ_j))
drawn from the prior, and uses

    y = y_c(μ) + ê(μ) + ε',   ε' ~ N(0, diag(σ² + s²)),

with, per output i, either

* ``kind="constant"``: ê_i = the mean of e_i over the pairs, s_i its standard deviation
  (the classic BAE: a mean shift and a variance inflation), or
* ``kind="linear"`` (when there are at least P + 3 pairs): the least-squares fit
  ê_i(μ) = a_i + b_iᵀ(t(μ) − t̄), t the sampler's natural coordinates (log μ for
  log-scaled parameters), s_i the residual standard deviation (P + 1 degrees of freedom
  taken). A discretisation error is smooth in μ: on the cardiac slab a linear fit cuts the
  spread of e from 0.6–1.7 ms to 0.1–0.3 ms (held-out pairs), below the 1 ms noise, where
  the constant model leaves the coarse posterior flatter than the fine one — and chains that
  start in its tails stuck (the screening ratio π_c/π_s then varies by e⁵ across them).

Delayed acceptance stays exact for the fine posterior whatever the correction (it changes
only which proposals reach the fine level), so ê and s need not be right, only helpful;
they are estimated once, before sampling, from pairs the caller provides (the fine outputs
of store samples and coarse solves at the same μ). Hand-written: tinyDA and MUQ implement
error models inside their own samplers; hybrid's sampler is its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.inference.data import Observations
from hybrid.inference.errors import InferenceError
from hybrid.inference.posterior import ForwardModel

KINDS = ("auto", "constant", "linear")


@dataclass
class ApproximationError:
    """ê(μ) = intercept + slope (t(μ) − centre) (m outputs) and the spread ``std`` (m,)."""

    intercept: np.ndarray
    slope: np.ndarray
    centre: np.ndarray
    log_mask: np.ndarray
    std: np.ndarray
    n: int
    kind: str

    def __call__(self, mu: np.ndarray) -> np.ndarray:
        """ê(μ): (m,) for one μ (P,), (S, m) for a batch (S, P)."""
        return self.intercept + (_natural(mu, self.log_mask) - self.centre) @ self.slope.T

    def to_dict(self) -> dict:
        return {"pairs": self.n, "kind": self.kind, "mean": self.intercept.tolist(),
                "std": self.std.tolist(), "slope": self.slope.tolist()}


def _natural(mu: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    """t(μ): log μ for the log-scaled parameters, μ for the others."""
    mu = np.asarray(mu, dtype=float)
    return np.where(log_mask, np.log(np.where(log_mask, mu, 1.0)), mu)


def approximation_error(fine: np.ndarray, cheap: np.ndarray, mu: np.ndarray,
                        log_mask=None, kind: str = "auto") -> ApproximationError:
    """Fit the error model of e = fine − cheap at the pairs' μ (n, P); outputs (n, m).

    ``kind="auto"``: linear when n ≥ P + 3, else constant.
    """
    fine, cheap = np.atleast_2d(fine).astype(float), np.atleast_2d(cheap).astype(float)
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    n, P = mu.shape
    if kind not in KINDS:
        raise InferenceError(f"approximation error: kind must be one of {KINDS}, got {kind!r}")
    if fine.shape != cheap.shape or fine.shape[0] != n:
        raise InferenceError(f"approximation error: fine outputs {fine.shape}, cheap outputs "
                             f"{cheap.shape} and parameters {mu.shape} do not pair up")
    if n < 2:
        raise InferenceError(f"approximation error: at least 2 pairs are needed, got {n}")
    e = fine - cheap
    if not np.all(np.isfinite(e)):
        raise InferenceError("approximation error: a pair holds non-finite outputs")
    if kind == "auto":
        kind = "linear" if n >= P + 3 else "constant"
    if kind == "linear" and n < P + 3:
        raise InferenceError(f"approximation error: a linear model in {P} parameters needs "
                             f"at least {P + 3} pairs, got {n}")
    lm = np.zeros(P, bool) if log_mask is None else np.asarray(log_mask, bool)
    t = _natural(mu, lm)
    centre = t.mean(axis=0)
    if kind == "constant":
        return ApproximationError(e.mean(axis=0), np.zeros((e.shape[1], P)), centre, lm,
                                  e.std(axis=0, ddof=1), n, kind)
    X = np.column_stack([np.ones(n), t - centre])
    coef, *_ = np.linalg.lstsq(X, e, rcond=None)
    resid = e - X @ coef
    std = np.sqrt((resid ** 2).sum(axis=0) / (n - P - 1))
    return ApproximationError(coef[0], coef[1:].T.copy(), centre, lm, std, n, kind)


def corrected_model(model: ForwardModel, err: ApproximationError,
                    name: str | None = None) -> ForwardModel:
    """The cheap model plus ê(μ) (same names, failures and batching; no gradients)."""
    fn = model.fn

    def corrected(mu):
        return np.asarray(fn(mu), dtype=float) + err(mu)

    return ForwardModel(corrected, batched=model.batched, names=model.names,
                        failures=model.failures, name=name or f"{model.name} + error model")


def inflated_data(data: Observations, err: ApproximationError) -> Observations:
    """The data with σ' = √(σ² + s²) (the error model's spread added to the noise)."""
    if err.std.shape != data.values.shape:
        raise InferenceError(f"approximation error has {err.std.size} outputs, the data "
                             f"{data.values.size}")
    return Observations(data.names, data.values, np.sqrt(data.sigma ** 2 + err.std ** 2),
                        {**data.meta, "approximation_error": f"{err.kind}: variance added"})
