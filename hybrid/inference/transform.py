"""The map from the parameter box to unconstrained coordinates used by optimisers and samplers.

Three coordinates per parameter:

* μ, the physical value;
* θ, the *natural* coordinate: θ = log μ for a log-scaled parameter, θ = μ otherwise. Priors
  are densities in θ, so the default uniform prior is uniform for a linear parameter and
  log-uniform for a log-scaled one (as the sampling plans of :mod:`hybrid.core.parameters`);
* z ∈ ℝ, the unconstrained coordinate, from θ's bounds [a, b] (a = log l, b = log u when
  log-scaled; log 0 = −∞):

  ====================  =======================  ==========================
  bounds of θ           z                        log |dθ/dz|
  ====================  =======================  ==========================
  a, b finite           logit ξ, ξ = (θ−a)/(b−a)  log(b−a) + log ξ + log(1−ξ)
  a finite, b = +∞      log(θ − a)               z
  a = −∞, b finite      log(b − θ)               z
  both infinite         θ                        0
  ====================  =======================  ==========================

  For a bounded parameter ξ is exactly :meth:`ParameterSpace.to_unit`.

A density p_θ becomes p_z(z) = p_θ(θ(z)) |dθ/dz| in z; samplers draw z with this density.

Optimisers use a fourth, *scaled* coordinate w, affine in θ: w = ξ ∈ [0, 1] (ParameterSpace's
unit coordinate) for a parameter with finite bounds, w = θ otherwise, with the box handled as
bounds by L-BFGS-B. A mode of p_θ is a mode in w (no Jacobian term), a MAP estimate on a bound
is found exactly, and the objective is not flattened by the logistic map far from the mode
(where a gradient in z vanishes and an optimiser stalls).

An unbounded space is declared with infinite bounds, e.g. ``Parameter("a", -inf, inf)``.
"""

from __future__ import annotations

import numpy as np

from hybrid.core.parameters import ParameterSpace
from hybrid.inference.errors import InferenceError

INTERVAL, LOWER, UPPER, FREE = 0, 1, 2, 3


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


class Unconstrained:
    """Coordinates μ ↔ θ ↔ z of a :class:`ParameterSpace` (numpy and torch versions)."""

    def __init__(self, space: ParameterSpace):
        self.space = space
        lo, up, lg = space.lower, space.upper, space.log_mask
        for p in space.parameters:
            if np.isnan(p.lower) or np.isnan(p.upper) or not p.lower < p.upper:
                raise InferenceError(f"parameter {p.name}: lower ({p.lower:g}) must be < "
                                     f"upper ({p.upper:g})")
            if p.log and p.lower < 0:
                raise InferenceError(f"parameter {p.name}: log-scaled needs lower >= 0")
        with np.errstate(divide="ignore"):
            self.a = np.where(lg, np.log(np.where(lg, lo, 1.0)), lo)
            self.b = np.where(lg, np.log(np.where(lg, up, 1.0)), up)
        fa, fb = np.isfinite(self.a), np.isfinite(self.b)
        self.kind = np.select([fa & fb, fa & ~fb, ~fa & fb], [INTERVAL, LOWER, UPPER], FREE)
        self.log_mask = lg
        self.width = np.where(self.kind == INTERVAL, self.b - self.a, 1.0)
        self._a0 = np.where(np.isfinite(self.a), self.a, 0.0)
        self._b0 = np.where(np.isfinite(self.b), self.b, 0.0)

    @property
    def dim(self) -> int:
        return self.space.dim

    @property
    def bounded(self) -> bool:
        """True when every parameter has finite bounds."""
        return bool(np.all(self.kind == INTERVAL))

    def w_bounds(self) -> np.ndarray:
        """Bounds (P, 2) of the scaled coordinate w: [0, 1] where bounded, θ's bounds else."""
        return np.where((self.kind == INTERVAL)[:, None], np.array([0.0, 1.0]),
                        np.stack([self.a, self.b], axis=1))

    # ---------------------------------------------------------------- scaled w (optimisers)
    def w_from_theta(self, theta) -> np.ndarray:
        t = np.asarray(theta, dtype=float)
        return np.where(self.kind == INTERVAL, (t - self._a0) / self.width, t)

    def theta_from_w(self, w) -> np.ndarray:
        w = np.asarray(w, dtype=float)
        return np.where(self.kind == INTERVAL, self._a0 + self.width * w, w)

    def to_w(self, mu) -> np.ndarray:
        """Map μ ↦ w (ξ = ParameterSpace.to_unit(μ) where bounded, θ elsewhere)."""
        return self.w_from_theta(self.theta(mu))

    def from_w(self, w) -> np.ndarray:
        """Map w ↦ μ."""
        return self.mu(self.theta_from_w(w))

    def dtheta_dw(self) -> np.ndarray:
        """Diagonal of dθ/dw (constant: the width of θ's interval, or 1)."""
        return self.width.copy()

    def dmu_dw(self, w) -> np.ndarray:
        """Diagonal of dμ/dw."""
        return self.dmu_dtheta(self.theta_from_w(w)) * self.width

    def z_from_w(self, w) -> np.ndarray:
        return self.z_from_theta(self.theta_from_w(w))

    def w_from_z(self, z) -> np.ndarray:
        return self.w_from_theta(self.theta_from_z(z))

    def torch_from_w(self, w):
        """Map a torch w (..., P) ↦ (μ, θ), differentiable."""
        import torch

        a0 = torch.as_tensor(self._a0, dtype=w.dtype, device=w.device)
        width = torch.as_tensor(self.width, dtype=w.dtype, device=w.device)
        interval = torch.as_tensor(self.kind == INTERVAL, device=w.device)
        theta = torch.where(interval, a0 + width * w, w)
        lg = torch.as_tensor(self.log_mask, device=w.device)
        mu = torch.where(lg, torch.exp(torch.where(lg, theta, torch.zeros_like(theta))), theta)
        return mu, theta

    # ---------------------------------------------------------------- numpy
    def theta(self, mu: np.ndarray) -> np.ndarray:
        mu = np.asarray(mu, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.log_mask, np.log(np.where(self.log_mask, mu, 1.0)), mu)

    def mu(self, theta: np.ndarray) -> np.ndarray:
        """Map θ ↦ μ, clipped to the box (exp(log u) may round past the bound u)."""
        theta = np.asarray(theta, dtype=float)
        mu = np.where(self.log_mask, np.exp(np.where(self.log_mask, theta, 0.0)), theta)
        return np.clip(mu, self.space.lower, self.space.upper)

    def z_from_theta(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=float)
        k = self.kind
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.clip((t - self._a0) / self.width, 1e-300, 1.0)
            zi = np.log(xi) - np.log1p(-np.minimum(xi, 1 - 1e-16))
            zl = np.log(np.maximum(t - self._a0, 1e-300))
            zu = np.log(np.maximum(self._b0 - t, 1e-300))
        return np.select([k == INTERVAL, k == LOWER, k == UPPER], [zi, zl, zu], t)

    def theta_from_z(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        k = self.kind
        with np.errstate(over="ignore"):
            ti = self._a0 + self.width * np.exp(_log_sigmoid(z))
            tl = self._a0 + np.exp(z)
            tu = self._b0 - np.exp(z)
        return np.select([k == INTERVAL, k == LOWER, k == UPPER], [ti, tl, tu], z)

    def to_z(self, mu: np.ndarray) -> np.ndarray:
        """Map μ ↦ z (a point on a bound maps to a large finite |z|, not to ±∞)."""
        return self.z_from_theta(self.theta(mu))

    def from_z(self, z: np.ndarray) -> np.ndarray:
        """Map z ↦ μ (shape (..., P))."""
        return self.mu(self.theta_from_z(z))

    def log_jacobian(self, z: np.ndarray) -> np.ndarray:
        """Log-determinant log |dθ/dz| ((..., P) → (...)): p_z = p_θ |dθ/dz|."""
        z = np.asarray(z, dtype=float)
        k = self.kind
        li = np.log(self.width) + _log_sigmoid(z) + _log_sigmoid(-z)
        return np.sum(np.select([k == INTERVAL, (k == LOWER) | (k == UPPER)], [li, z], 0.0),
                      axis=-1)

    def dtheta_dz(self, z: np.ndarray) -> np.ndarray:
        """Diagonal of dθ/dz (shape (..., P))."""
        z = np.asarray(z, dtype=float)
        k = self.kind
        with np.errstate(over="ignore"):
            s = np.exp(_log_sigmoid(z))
            di = self.width * s * (1.0 - s)
            de = np.exp(z)
        return np.select([k == INTERVAL, k == LOWER, k == UPPER], [di, de, -de], 1.0)

    def dmu_dtheta(self, theta: np.ndarray) -> np.ndarray:
        """Diagonal of dμ/dθ (μ for a log-scaled parameter, 1 otherwise)."""
        theta = np.asarray(theta, dtype=float)
        return np.where(self.log_mask, np.exp(np.where(self.log_mask, theta, 0.0)), 1.0)

    def dmu_dz(self, z: np.ndarray) -> np.ndarray:
        """Diagonal of dμ/dz (shape (..., P))."""
        return self.dmu_dtheta(self.theta_from_z(z)) * self.dtheta_dz(z)

    # ---------------------------------------------------------------- torch
    def torch_from_z(self, z):
        """Map a torch z (..., P) ↦ (μ, θ, log |det dθ/dz|), differentiable."""
        import torch

        kw = {"dtype": z.dtype, "device": z.device}
        k = torch.as_tensor(self.kind, device=z.device)
        a0, b0 = torch.as_tensor(self._a0, **kw), torch.as_tensor(self._b0, **kw)
        w = torch.as_tensor(self.width, **kw)
        ls = torch.nn.functional.logsigmoid
        interval, one_sided = k == INTERVAL, (k == LOWER) | (k == UPPER)
        zc = torch.clamp(z, max=700.0)
        theta = torch.where(interval, a0 + w * torch.sigmoid(z),
                            torch.where(k == LOWER, a0 + torch.exp(zc),
                                        torch.where(k == UPPER, b0 - torch.exp(zc), z)))
        lj = torch.where(interval, torch.log(w) + ls(z) + ls(-z),
                         torch.where(one_sided, z, torch.zeros_like(z))).sum(-1)
        lg = torch.as_tensor(self.log_mask, device=z.device)
        mu = torch.where(lg, torch.exp(torch.where(lg, theta, torch.zeros_like(theta))), theta)
        return mu, theta, lj
