"""Priors: densities in the natural coordinate θ (log μ for log-scaled parameters, else μ).

A prior implements ``bind`` (returns it restricted to a :class:`Unconstrained` box),
``logpdf`` (numpy, up to a constant), ``logpdf_torch``, ``grad`` (∂/∂θ),
``precision`` (the Hessian of −log p in θ, for Laplace covariances) and ``sample`` (starting
points). Both priors here are restricted to the parameter box; the unconstrained coordinates
keep every point inside it, so the truncation only changes the normalising constant.
"""

from __future__ import annotations

import numpy as np

from hybrid.inference.errors import InferenceError
from hybrid.inference.transform import INTERVAL, Unconstrained


class UniformPrior:
    """Uniform in θ on the box: uniform for linear, log-uniform for log-scaled parameters.

    On an unbounded coordinate it is the improper flat prior (it has no ``sample``).
    """

    def __init__(self, transform: Unconstrained | None = None):
        self.transform = transform

    def bind(self, transform: Unconstrained) -> UniformPrior:
        """The same prior on the box of ``transform`` (a :class:`Posterior` does this)."""
        return UniformPrior(transform)

    @property
    def proper(self) -> bool:
        return self.transform.bounded

    def logpdf(self, theta: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(theta)[:-1])

    def logpdf_torch(self, theta):
        return theta.sum(-1) * 0.0

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(theta))

    def precision(self) -> np.ndarray:
        return np.zeros((self.transform.dim, self.transform.dim))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = self.transform
        if not t.bounded:
            raise InferenceError("a flat prior on an unbounded parameter cannot be sampled: "
                                 "give starting points")
        return t.a + (t.b - t.a) * rng.random((n, t.dim))

    def describe(self) -> dict:
        return {"kind": "uniform", "coordinates": "theta (log mu where log-scaled)"}


class GaussianPrior:
    """Gaussian N(mean, cov) in θ, truncated to the box.

    ``mean`` and ``cov`` are in natural coordinates: a log-scaled parameter gets a
    log-normal prior with ``mean`` the mean of log μ. ``cov`` may be a (P,) vector of
    variances or a (P, P) matrix.
    """

    def __init__(self, mean, cov, transform: Unconstrained | None = None):
        self.transform = transform
        self.mean = np.asarray(mean, dtype=float).reshape(-1)
        cov = np.asarray(cov, dtype=float)
        self.cov = np.diag(cov) if cov.ndim == 1 else cov
        P = transform.dim if transform is not None else self.mean.size
        if self.mean.shape != (P,) or self.cov.shape != (P, P):
            raise InferenceError(f"Gaussian prior: mean must have shape ({P},) and cov "
                                 f"({P},) or ({P}, {P}); got {self.mean.shape}, {cov.shape}")
        try:
            self.chol = np.linalg.cholesky(self.cov)
        except np.linalg.LinAlgError:
            raise InferenceError("Gaussian prior: cov is not symmetric positive definite") from None
        self._prec = np.linalg.inv(self.cov)
        self._prec = 0.5 * (self._prec + self._prec.T)

    @classmethod
    def from_std(cls, mean, std) -> GaussianPrior:
        """Independent N(meanᵢ, stdᵢ²) in θ."""
        return cls(mean, np.asarray(std, dtype=float) ** 2)

    def bind(self, transform: Unconstrained) -> GaussianPrior:
        """The same prior truncated to the box of ``transform`` (:class:`Posterior` does this)."""
        return GaussianPrior(self.mean, self.cov, transform)

    proper = True

    def logpdf(self, theta: np.ndarray) -> np.ndarray:
        d = np.asarray(theta, dtype=float) - self.mean
        return -0.5 * np.einsum("...i,ij,...j->...", d, self._prec, d)

    def logpdf_torch(self, theta):
        import torch

        m = torch.as_tensor(self.mean, dtype=theta.dtype, device=theta.device)
        p = torch.as_tensor(self._prec, dtype=theta.dtype, device=theta.device)
        d = theta - m
        return -0.5 * ((d @ p) * d).sum(-1)

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return -(np.asarray(theta, dtype=float) - self.mean) @ self._prec

    def precision(self) -> np.ndarray:
        return self._prec.copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws from the truncated prior (rejection; clipped into the box after 100 rounds)."""
        t = self.transform
        out = self.mean + rng.standard_normal((n, t.dim)) @ self.chol.T
        for _ in range(100):
            bad = np.any((out <= t.a) | (out >= t.b), axis=1)
            if not bad.any():
                break
            out[bad] = self.mean + rng.standard_normal((int(bad.sum()), t.dim)) @ self.chol.T
        inner = np.where(t.kind == INTERVAL, 1e-9 * (t.b - t.a), 0.0)
        lo = np.where(np.isfinite(t.a), t.a + np.maximum(inner, 1e-12), -np.inf)
        hi = np.where(np.isfinite(t.b), t.b - np.maximum(inner, 1e-12), np.inf)
        return np.clip(out, lo, hi)

    def describe(self) -> dict:
        return {"kind": "gaussian", "coordinates": "theta (log mu where log-scaled)",
                "mean": self.mean.tolist(), "cov": self.cov.tolist()}
