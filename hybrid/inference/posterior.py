"""Forward models and the posterior density of a parameter-estimation problem.

A :class:`ForwardModel` wraps any G: μ ↦ predicted observations (the FEM model, a surrogate,
an analytic function): numpy in and out, one point (P,) → (m,) or a batch (S, P) → (S, m),
optionally a differentiable torch version, evaluation counts and time, and failures
(exceptions of the given types) turned into NaN predictions, which the posterior treats as
zero density. A :class:`Posterior` puts a model, :class:`~hybrid.inference.data.Observations`
and a prior on a :class:`~hybrid.core.parameters.ParameterSpace` together:

    Φ(μ)    = ½ χ²(μ) − log p_θ(θ(μ))                          (negative log-posterior)
    log π_z = −½ χ²(μ(z)) + log p_θ(θ(z)) + log |dθ/dz|         (density in z, for samplers)

with χ²(μ) = Σᵢ ((Gᵢ(μ) − yᵢ)/σᵢ)² and the coordinates θ, w, z of :mod:`transform`.
Optimisers minimise Φ(μ(w)) over the scaled w with box bounds (a mode of the posterior in θ;
no Jacobian term); samplers draw the unconstrained z from π_z. Gradients come from torch
autograd when the model has a torch version, otherwise from finite differences in w (one-sided
at the bounds, so the model is never asked outside the box), batched into one model call.

Observations are matched to model outputs by name when the model declares ``names``
(``ForwardModel(..., names=surrogate.observation_names)``), else by position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hybrid.core.parameters import ParameterSpace
from hybrid.inference.data import Observations
from hybrid.inference.errors import InferenceError
from hybrid.inference.prior import GaussianPrior, UniformPrior
from hybrid.inference.transform import Unconstrained

FD_STEP = {"central": 6e-6, "forward": 1.5e-8}
"""Default relative finite-difference steps (≈ ε^(1/3) and ε^(1/2) of float64)."""


class ForwardModel:
    """G: μ ↦ predicted observations, with counts of evaluated points and time spent.

    Args:
        fn: numpy callable; called with one point (P,) unless ``batched``, in which case it
            receives (S, P) and returns (S, m).
        torch_fn: differentiable torch version, (P,) or (S, P) float64 tensor in.
        batched: ``fn`` takes batches.
        names: the names of the m outputs (to match observations by name).
        failures: exception types meaning "no result here" (e.g. a failed FEM solve): the
            point's prediction becomes NaN and is counted in ``n_failed``.
        name: a label for reports.
        jac_fn: μ (P,) ↦ (G(μ), dG/dμ (m, P)), e.g. a tangent-linear or adjoint model; used
            for gradients when there is no torch version (one call per gradient).
    """

    def __init__(self, fn: Callable, *, torch_fn: Callable | None = None,
                 batched: bool = False, names: Sequence[str] | None = None,
                 failures: tuple[type[BaseException], ...] = (), name: str = "model",
                 jac_fn: Callable | None = None):
        self.fn = fn
        self.torch_fn = torch_fn
        self.jac_fn = jac_fn
        self.batched = batched
        self.names = list(names) if names is not None else None
        self.failures = tuple(failures)
        self.name = name
        self.n_evals = 0
        self.n_failed = 0
        self.time = 0.0
        self._m = len(self.names) if self.names is not None else None

    @classmethod
    def wrap(cls, model) -> ForwardModel:
        """A :class:`ForwardModel` as is; a plain callable as an unbatched numpy model."""
        if isinstance(model, ForwardModel):
            return model
        if callable(model):
            return cls(model)
        raise InferenceError(f"a forward model must be callable, got {type(model).__name__}")

    @property
    def differentiable(self) -> bool:
        return self.torch_fn is not None

    def _one(self, x: np.ndarray):
        try:
            y = np.asarray(self.fn(x), dtype=float).reshape(-1)
        except self.failures:
            self.n_failed += 1
            return None
        self._m = y.size
        return y

    def __call__(self, mu) -> np.ndarray:
        """Predictions at μ: (P,) → (m,) or (S, P) → (S, m); NaN where the model failed."""
        mu = np.asarray(mu, dtype=float)
        single = mu.ndim == 1
        X = np.atleast_2d(mu)
        t0 = time.perf_counter()
        rows = None
        if self.batched:
            try:
                Y = np.asarray(self.fn(X), dtype=float).reshape(X.shape[0], -1)
                self._m = Y.shape[1]
            except self.failures:  # find the failing points one by one
                rows = [self._one(x[None]) for x in X]
        else:
            rows = [self._one(x) for x in X]
        if rows is not None:
            if self._m is None:
                raise InferenceError(f"{self.name}: failed at every point of the first call; "
                                     "cannot tell the number of outputs (give names)")
            Y = np.stack([r if r is not None else np.full(self._m, np.nan) for r in rows])
        self.time += time.perf_counter() - t0
        self.n_evals += X.shape[0]
        return Y[0] if single else Y

    def value_and_jacobian(self, mu) -> tuple[np.ndarray, np.ndarray]:
        """(G(μ), dG/dμ) at one μ from ``jac_fn``; NaN where the model failed."""
        mu = np.asarray(mu, dtype=float)
        t0 = time.perf_counter()
        try:
            y, J = self.jac_fn(mu)
            y, J = np.asarray(y, dtype=float).reshape(-1), np.asarray(J, dtype=float)
            self._m = y.size
        except self.failures:
            self.n_failed += 1
            m = self._m if self._m is not None else 1
            y, J = np.full(m, np.nan), np.full((m, mu.size), np.nan)
        self.time += time.perf_counter() - t0
        self.n_evals += 1
        return y, J

    def torch(self, mu):
        """Differentiable predictions (torch float64) at a torch μ."""
        if self.torch_fn is None:
            raise InferenceError(f"{self.name}: no torch version for gradients")
        import torch

        t0 = time.perf_counter()
        out = self.torch_fn(mu)
        self.time += time.perf_counter() - t0
        self.n_evals += 1 if mu.ndim == 1 else mu.shape[0]
        return torch.as_tensor(out).to(torch.float64)

    def counts(self) -> dict:
        return {"evaluations": self.n_evals, "failed": self.n_failed, "time_s": self.time}


_STENCILS = {  # (offset in steps, weight): derivative ≈ Σ weight f(x + offset h) / h
    "central": ((1, 0.5), (-1, -0.5)),
    "forward3": ((0, -1.5), (1, 2.0), (2, -0.5)),
    "backward3": ((0, 1.5), (-1, -2.0), (-2, 0.5)),
    "forward": ((0, -1.0), (1, 1.0)),
    "backward": ((0, 1.0), (-1, -1.0)),
}


def fd_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, f0: np.ndarray | None = None,
                *, step: float | None = None, scheme: str = "central",
                bounds: np.ndarray | None = None) -> np.ndarray:
    """Finite-difference Jacobian (m, P) of a batched f: (S, P) → (S, m) at x (P,).

    Steps hᵢ = step · max(1, |xᵢ|). ``scheme`` is ``"central"`` (second order) or
    ``"forward"`` (first order, P points); where a stencil would leave ``bounds`` (P, 2), a
    one-sided one of the same order is used instead, so f is never called outside the box.
    All points go to f in one batch; ``f0`` = f(x) is reused when given.
    """
    if scheme not in FD_STEP:
        raise InferenceError(f"finite differences: scheme must be one of {list(FD_STEP)}")
    x = np.asarray(x, dtype=float)
    P = x.size
    h = (step or FD_STEP[scheme]) * np.maximum(1.0, np.abs(x))
    h = (x + h) - x  # exactly representable steps
    lo, hi = (np.full(P, -np.inf), np.full(P, np.inf)) if bounds is None else np.asarray(
        bounds, dtype=float).T
    stencils = []
    for i in range(P):
        if scheme == "central":
            name = ("central" if x[i] - h[i] >= lo[i] and x[i] + h[i] <= hi[i] else
                    "forward3" if x[i] + 2 * h[i] <= hi[i] else "backward3")
        else:
            name = "forward" if x[i] + h[i] <= hi[i] else "backward"
        stencils.append(_STENCILS[name])
    points, where = [], []
    need_f0 = f0 is None and any(k == 0 for st in stencils for k, _ in st)
    if need_f0:
        points.append(x)
    for i, st in enumerate(stencils):
        for k, _ in st:
            if k != 0:
                xp = x.copy()
                xp[i] = x[i] + k * h[i]
                where.append(len(points))
                points.append(xp)
    F = f(np.vstack(points))
    if need_f0:
        f0 = F[0]
    J = np.empty((F.shape[1], P))
    it = iter(where)
    for i, st in enumerate(stencils):
        J[:, i] = sum(w * (f0 if k == 0 else F[next(it)]) for k, w in st) / h[i]
    return J


@dataclass(frozen=True)
class Correction:
    """An additive, first-order correction of a model in w: c(w) = d + E (w − w_c).

    With d = G_exp(μ_c) − G(μ_c) and E = dG_exp/dw − dG/dw at w_c, the corrected model matches
    the expensive one in value and slope at w_c (the trust-region loop of :mod:`map`).
    """

    offset: np.ndarray
    slope: np.ndarray
    center: np.ndarray

    def __call__(self, w) -> np.ndarray:
        return self.offset + (np.asarray(w, dtype=float) - self.center) @ self.slope.T

    def torch(self, wt):
        import torch

        d, E, c = (torch.as_tensor(a, dtype=wt.dtype) for a in (self.offset, self.slope,
                                                                  self.center))
        return d + (wt - c) @ E.T


class Posterior:
    """Posterior of μ given data: a forward model, observations and a prior on a box.

    Args:
        model: a :class:`ForwardModel` or a callable (P,) → (m,).
        data: the observations (matched to ``model.names`` by name when it has names).
        space: the parameter box (infinite bounds allowed; see :mod:`transform`).
        prior: ``None`` or ``"uniform"`` (uniform in θ on the box, flat where unbounded), a
            :class:`GaussianPrior` (mean, cov) in θ, or a prior object with the same methods.
        fd_scheme, fd_step: finite differences for a model without a torch version.
    """

    def __init__(self, model, data: Observations, space: ParameterSpace, prior=None, *,
                 fd_scheme: str = "central", fd_step: float | None = None):
        self.model = ForwardModel.wrap(model)
        self.data = data
        self.space = space
        self.transform = Unconstrained(space)
        if prior is None or (isinstance(prior, str) and prior == "uniform"):
            prior = UniformPrior(self.transform)
        elif isinstance(prior, str):
            raise InferenceError(f"unknown prior {prior!r}; give 'uniform' or a GaussianPrior")
        if hasattr(prior, "bind"):
            prior = prior.bind(self.transform)
        self.prior = prior
        self.fd_scheme, self.fd_step = fd_scheme, fd_step
        self._index = None
        if self.model.names is not None:
            pos = {n: i for i, n in enumerate(self.model.names)}
            missing = [n for n in data.names if n not in pos]
            if missing:
                raise InferenceError(f"model {self.model.name!r} predicts no observation named "
                                     f"{missing[0]!r}; it has {self.model.names}")
            self._index = np.array([pos[n] for n in data.names])
        self._y = data.values
        self._sigma = data.sigma

    @property
    def dim(self) -> int:
        return self.space.dim

    @property
    def names(self) -> list[str]:
        return self.space.names

    def with_model(self, model) -> Posterior:
        """The same data, space and prior with another forward model (e.g. FEM vs surrogate)."""
        return Posterior(model, self.data, self.space, self.prior, fd_scheme=self.fd_scheme,
                         fd_step=self.fd_step)

    def with_data(self, data: Observations) -> Posterior:
        return Posterior(self.model, data, self.space, self.prior, fd_scheme=self.fd_scheme,
                         fd_step=self.fd_step)

    # ------------------------------------------------------------ predictions
    def _select(self, Y: np.ndarray) -> np.ndarray:
        if self._index is not None:
            Y = Y[..., self._index]
        if Y.shape[-1] != len(self.data):
            raise InferenceError(f"model {self.model.name!r} gives {Y.shape[-1]} outputs for "
                                 f"{len(self.data)} observations (declare names to select)")
        return Y

    def predict(self, mu) -> np.ndarray:
        """Model predictions of the observed quantities, (P,) → (m,) or (S, P) → (S, m)."""
        return self._select(self.model(mu))

    def predict_torch(self, mu):
        out = self.model.torch(mu)
        if self._index is not None:
            import torch

            out = out[..., torch.as_tensor(self._index)]
        return out

    def residual(self, mu) -> np.ndarray:
        """Data-weighted residual (G(μ) − y)/σ."""
        return (self.predict(mu) - self._y) / self._sigma

    def chi2(self, mu) -> np.ndarray:
        r = self.residual(mu)
        return np.sum(r * r, axis=-1)

    def neg_log_posterior(self, mu) -> np.ndarray:
        """Φ(μ) = ½χ² − log p_θ(θ(μ)) (up to a constant); its minimiser is the MAP estimate."""
        mu = np.asarray(mu, dtype=float)
        return 0.5 * self.chi2(mu) - self.prior.logpdf(self.transform.theta(mu))

    # ------------------------------------------------------------ sampler: z
    def log_density(self, z) -> np.ndarray:
        """Log-density in z: −Φ(μ(z)) + log |dθ/dz| (+ const); −inf where the model failed."""
        z = np.asarray(z, dtype=float)
        f = -self.neg_log_posterior(self.transform.from_z(z)) + self.transform.log_jacobian(z)
        return np.where(np.isfinite(f), f, -np.inf)

    def log_density_and_grad(self, z) -> tuple[np.ndarray, np.ndarray]:
        """Log-density log π_z and ∇_z log π_z at (S, P) points by autograd (one batched call).

        Needs a differentiable model (a surrogate); −inf and a zero gradient where the
        density is not finite.
        """
        if not self.model.differentiable:
            raise InferenceError(f"model {self.model.name!r} has no torch version: no "
                                 "gradient of the log-density")
        import torch

        zt = torch.tensor(np.atleast_2d(np.asarray(z, dtype=float)), dtype=torch.float64,
                          requires_grad=True)
        mu, theta, lj = self.transform.torch_from_z(zt)
        r = (self.predict_torch(mu) - torch.tensor(self._y)) / torch.tensor(self._sigma)
        f = -0.5 * (r * r).sum(-1) + self.prior.logpdf_torch(theta) + lj
        (g,) = torch.autograd.grad(f.sum(), zt)
        f, g = f.detach().numpy().copy(), g.numpy().copy()
        bad = ~np.isfinite(f) | ~np.all(np.isfinite(g), axis=-1)
        f[bad], g[bad] = -np.inf, 0.0
        return f, g

    # ------------------------------------------------------------ optimiser: w
    def objective_from_prediction(self, mu, pred) -> np.ndarray:
        """Φ at μ from a prediction already made there (no model call); +inf if not finite."""
        r = (np.asarray(pred, dtype=float) - self._y) / self._sigma
        f = 0.5 * np.sum(r * r, axis=-1) - self.prior.logpdf(self.transform.theta(mu))
        return np.where(np.isfinite(f), f, np.inf)

    def _fd_predict_w(self, W: np.ndarray) -> np.ndarray:
        return self.predict(self.transform.from_w(W))

    def predict_and_jacobian_w(self, w) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and dG/dw (m, P) at w from the model's ``jac_fn`` (one model call)."""
        w = np.asarray(w, dtype=float)
        y, J = self.model.value_and_jacobian(self.transform.from_w(w))
        return self._select(y), self._select(J.T).T * self.transform.dmu_dw(w)

    def jacobian_w(self, w, pred0: np.ndarray | None = None) -> np.ndarray:
        """dG/dw (m, P): torch autograd, or finite differences in w kept inside the box."""
        w = np.asarray(w, dtype=float)
        if self.model.differentiable:
            import torch

            def g(wt):
                return self.predict_torch(self.transform.torch_from_w(wt)[0])

            return torch.autograd.functional.jacobian(
                g, torch.as_tensor(w, dtype=torch.float64)).detach().numpy()
        if self.model.jac_fn is not None:
            return self.predict_and_jacobian_w(w)[1]
        return fd_jacobian(self._fd_predict_w, w, pred0, step=self.fd_step,
                           scheme=self.fd_scheme, bounds=self.transform.w_bounds())

    def jacobian(self, mu) -> np.ndarray:
        """dG/dμ (m, P) at μ (autograd in μ, or finite differences in w divided by dμ/dw)."""
        mu = np.asarray(mu, dtype=float)
        if self.model.differentiable:
            import torch

            return torch.autograd.functional.jacobian(
                self.predict_torch, torch.as_tensor(mu, dtype=torch.float64)).detach().numpy()
        w = self.transform.to_w(mu)
        return self.jacobian_w(w) / self.transform.dmu_dw(w)

    def objective(self, w) -> float:
        """Φ(μ(w)); +inf where the model failed."""
        mu = self.transform.from_w(w)
        return float(self.objective_from_prediction(mu, self.predict(mu)))

    def objective_and_grad(self, w, correction: Correction | None = None
                           ) -> tuple[float, np.ndarray]:
        """Φ(μ(w)) and ∂Φ/∂w (autograd, or J_wᵀ r/σ − ∇_θ log p ⊙ dθ/dw with an FD J_w).

        With a ``correction`` the model is G(μ(w)) + d + E (w − w_c) (see :class:`Correction`).
        """
        w = np.asarray(w, dtype=float)
        t = self.transform
        if self.model.differentiable:
            import torch

            wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
            mu, theta = t.torch_from_w(wt)
            pred = self.predict_torch(mu)
            if correction is not None:
                pred = pred + correction.torch(wt)
            r = (pred - torch.tensor(self._y)) / torch.tensor(self._sigma)
            f = 0.5 * (r * r).sum() - self.prior.logpdf_torch(theta)
            if not torch.isfinite(f):
                return np.inf, np.zeros_like(w)
            f.backward()
            return float(f.detach()), wt.grad.numpy().copy()
        mu = t.from_w(w)
        J = None
        if self.model.jac_fn is not None:   # value and gradient from one model call
            raw, J = self.predict_and_jacobian_w(w)
        else:
            raw = self.predict(mu)
        pred = raw + correction(w) if correction is not None else raw
        r = (pred - self._y) / self._sigma
        theta = t.theta(mu)
        f = 0.5 * float(r @ r) - float(self.prior.logpdf(theta))
        if not np.isfinite(f):
            return np.inf, np.zeros_like(w)
        if J is None:
            J = self.jacobian_w(w, raw)
        if correction is not None:
            J = J + correction.slope
        g = J.T @ (r / self._sigma) - self.prior.grad(theta) * t.dtheta_dw()
        return f, g

    def describe(self) -> dict:
        return {"parameters": self.space.to_dict(), "model": self.model.name,
                "observations": list(self.data.names), "prior": self.prior.describe()}


__all__ = ["Correction", "ForwardModel", "GaussianPrior", "Posterior", "UniformPrior",
           "fd_jacobian"]
