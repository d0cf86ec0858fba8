"""The approximation error of a cheaper model, folded into its likelihood (numpy only).

A coarse-mesh FEM y_c(μ) differs from the fine one y_f(μ) by a discretisation error e(μ) =
y_f(μ) − y_c(μ) that is often many noise standard deviations (a coarse mesh conducts a
cardiac wave more slowly). Used as it is, the coarse posterior sits beside the fine one and
a delayed-acceptance stage that screens with it rejects good proposals. The *Bayesian
approximation error* approach (Kaipio & Somersalo 2007; Cui, Fox & O'Sullivan 2011 for its
use inside delayed acceptance) models e as Gaussian with the mean ē and covariance Γ_e of
its values at pairs (μ_j, y_f(μ_j), y_c(μ_j)) drawn from the prior, so that

    y = y_c(μ) + ē + ε',   ε' ~ N(0, Γ_noise + Γ_e),

i.e. the coarse likelihood with the data shifted by −ē and the noise variance inflated by the
variance of e (diagonal here: Γ_e's diagonal, the observations' own noise being diagonal).
Delayed acceptance stays exact for the fine posterior whatever the correction (it changes
only which proposals reach the fine level), so ē and Γ_e need not be accurate, only
helpful; they are estimated once, before sampling, from pairs the caller provides (the
fine outputs of store samples and coarse solves at the same μ).

Why not hand-written elsewhere: libraries of the field (tinyDA, MUQ) implement the adaptive
variant inside their own samplers; hybrid's sampler is its own, so the two formulas live here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.inference.data import Observations
from hybrid.inference.errors import InferenceError


@dataclass
class ApproximationError:
    """ē (m,) and the standard deviation s_e (m,) of e = y_fine − y_cheap over ``n`` pairs."""

    mean: np.ndarray
    std: np.ndarray
    n: int

    def to_dict(self) -> dict:
        return {"pairs": self.n, "mean": self.mean.tolist(), "std": self.std.tolist()}


def approximation_error(fine: np.ndarray, cheap: np.ndarray) -> ApproximationError:
    """ē and s_e (ddof 1) of the pairs' differences; ``fine``, ``cheap`` of shape (n, m)."""
    fine, cheap = np.atleast_2d(fine).astype(float), np.atleast_2d(cheap).astype(float)
    if fine.shape != cheap.shape:
        raise InferenceError(f"approximation error: fine outputs {fine.shape} and cheap "
                             f"outputs {cheap.shape} differ in shape")
    if fine.shape[0] < 2:
        raise InferenceError("approximation error: at least 2 pairs are needed, got "
                             f"{fine.shape[0]}")
    e = fine - cheap
    if not np.all(np.isfinite(e)):
        raise InferenceError("approximation error: a pair holds non-finite outputs")
    return ApproximationError(e.mean(axis=0), e.std(axis=0, ddof=1), fine.shape[0])


def corrected_data(data: Observations, err: ApproximationError) -> Observations:
    """The data the cheap model should see: y − ē with σ' = √(σ² + s_e²)."""
    if err.mean.shape != data.values.shape:
        raise InferenceError(f"approximation error has {err.mean.size} outputs, the data "
                             f"{data.values.size}")
    return Observations(data.names, data.values - err.mean,
                        np.sqrt(data.sigma ** 2 + err.std ** 2),
                        {**data.meta, "approximation_error": "mean shifted, variance added"})
