"""MAP estimation with a Laplace covariance; trust-region confirmation with an expensive model.

A MAP estimate of a cheap model (surrogate) is confirmed, and corrected, with an expensive
one (FEM).

:func:`find_map` minimises Φ(μ(w)) = ½χ² − log p_θ (see :mod:`posterior`) over the scaled
coordinate w (the unit cube where bounded, θ elsewhere; see :mod:`transform`) with scipy's
L-BFGS-B, the box as its bounds, and exact gradients (torch autograd, or finite differences
batched into one model call), from the k points of a scrambled Sobol design (plus any given
starts), and keeps the best. At the optimum the Gauss–Newton (Laplace)
covariance is

    C_μ = (Jᵀ Σ⁻¹ J + Dᵀ P_θ D)⁻¹,     J = dG/dμ, Σ = diag σ², D = dθ/dμ, P_θ = prior precision,

exact for a linear model with a Gaussian (or flat) prior. ``cov_z`` is the same in z, plus
the curvature of the log-Jacobian (what a sampler of π_z sees): a good initial proposal.

:func:`confirm` is a trust-region model-management loop (Alexandrov, Dennis, Lewis & Torczon,
1998): at the current point w_k the cheap model is corrected to first order,

    G_k(w) = G_c(w) + d_k + E_k (w − w_k),   d_k = G_e(w_k) − G_c(w_k),   E_k = J_e(w_k) − J_c(w_k),

so it matches the expensive model in value and slope at w_k; the corrected MAP problem is
solved inside the box ‖w − w_k‖∞ ≤ Δ_k (and the parameter box); the expensive model is run
at the trial point and
the step is accepted if the actual decrease of Φ is a fair fraction of the predicted one
(ρ = actual / predicted > η₁), with Δ shrunk (ρ < ¼) or grown (ρ > ¾ on the boundary).
The expensive Jacobian is from forward differences in w (P expensive runs per accepted
point), a user-supplied Jacobian (e.g. an adjoint), or left out (``jacobian="zeroth"``:
value correction only, 1 expensive run per iteration, exact only when the cheap model's
slope is right). Because the corrected model is first-order consistent, the loop converges
to a stationary point of the *expensive* Φ, not the cheap one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hybrid.inference.errors import InferenceError
from hybrid.inference.posterior import Correction, ForwardModel, Posterior, fd_jacobian
from hybrid.inference.prior import GaussianPrior
from hybrid.inference.transform import INTERVAL

PG_TOL = 1e-6
"""A start counts as converged if L-BFGS-B says so, or if its projected gradient is below
PG_TOL · (1 + |Φ|) where it stopped."""


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


@dataclass
class MAPResult:
    """A MAP estimate: μ̂ (and z), the misfit there, the Laplace covariance, the cost."""

    names: list[str]
    mu: np.ndarray
    z: np.ndarray
    objective: float
    """Φ(μ̂) = ½χ² − log p_θ (up to a constant)."""
    chi2: float
    residual: np.ndarray
    """Data-weighted residual (G(μ̂) − y)/σ."""
    cov: np.ndarray | None
    """Laplace covariance in μ; None if the Gauss–Newton Hessian is singular."""
    cov_z: np.ndarray | None
    n_model_evals: int
    converged: bool
    message: str
    wall_time: float = 0.0
    starts: list[dict] = field(default_factory=list)

    @property
    def std(self) -> np.ndarray | None:
        return None if self.cov is None else np.sqrt(np.diag(self.cov))

    def to_dict(self) -> dict:
        d = {"names": self.names, "mu": self.mu, "chi2": self.chi2,
             "objective": self.objective, "residual_rms": float(np.sqrt(np.mean(
                 self.residual ** 2))), "residual": self.residual, "std": self.std,
             "cov": self.cov, "n_model_evals": self.n_model_evals,
             "converged": self.converged, "message": self.message,
             "wall_time_s": self.wall_time, "starts": self.starts}
        return _jsonable(d)


@dataclass
class ConfirmResult(MAPResult):
    """A MAP estimate of the expensive model found through the corrected cheap one."""

    n_expensive: int = 0
    n_cheap: int = 0
    chi2_cheap: float = float("nan")
    """χ² of the uncorrected cheap model at μ̂ (vs ``chi2``, the expensive one's)."""
    cheap_mu: np.ndarray | None = None
    """The cheap model's own MAP estimate, where the loop started."""
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(_jsonable({"n_expensive": self.n_expensive, "n_cheap": self.n_cheap,
                            "chi2_cheap": self.chi2_cheap, "cheap_mu": self.cheap_mu,
                            "history": self.history}))
        return d


def _inv_spd(H: np.ndarray) -> np.ndarray | None:
    H = 0.5 * (H + H.T)
    w, V = np.linalg.eigh(H)
    if w[0] <= 1e-12 * max(w[-1], 0.0) or w[-1] <= 0:
        return None
    return (V / w) @ V.T


def laplace(posterior: Posterior, mu, J: np.ndarray | None = None
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gauss–Newton covariances (C_μ, C_z) at μ; J = dG/dμ (m, P) if already known."""
    t = posterior.transform
    mu = np.asarray(mu, dtype=float)
    z, theta = t.to_z(mu), t.theta(mu)
    if J is None:
        J = posterior.jacobian(mu)
    w = 1.0 / posterior.data.sigma ** 2
    Pt = posterior.prior.precision()
    dth_dmu = 1.0 / t.dmu_dtheta(theta)
    H_mu = (J.T * w) @ J + dth_dmu[:, None] * Pt * dth_dmu[None, :]
    Jz = J * t.dmu_dz(z)
    dth_dz = t.dtheta_dz(z)
    s = 1.0 / (1.0 + np.exp(-z))
    logjac_curv = np.where(t.kind == INTERVAL, 2.0 * s * (1.0 - s), 0.0)
    H_z = (Jz.T * w) @ Jz + dth_dz[:, None] * Pt * dth_dz[None, :] + np.diag(logjac_curv)
    return _inv_spd(H_mu), _inv_spd(H_z)


def start_points(posterior: Posterior, k: int, seed: int = 0) -> np.ndarray:
    """Starting points (k, P) in w from a scrambled Sobol design of k points.

    Bounded coordinates: the design itself (uniform in θ on the box); with a Gaussian prior:
    its quantiles; unbounded coordinates under a flat prior: standard-normal quantiles.
    """
    from scipy.special import ndtri
    from scipy.stats import qmc

    t = posterior.transform
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*balance properties.*")
        u = qmc.Sobol(d=t.dim, scramble=True, seed=seed).random(k)
    u = np.clip(u, 1e-12, 1 - 1e-12)
    w = np.where(t.kind == INTERVAL, u, ndtri(u))
    if isinstance(posterior.prior, GaussianPrior):
        pr = posterior.prior
        theta = pr.mean + ndtri(u) @ pr.chol.T
        inside = (theta > t.a) & (theta < t.b)
        w = np.where(inside, t.w_from_theta(np.where(inside, theta, pr.mean)), w)
    return w


def _projected_gradient(g, w, bounds) -> float:
    """‖g‖∞ without the components that push against an active bound."""
    out = ((w <= bounds[:, 0]) & (g > 0)) | ((w >= bounds[:, 1]) & (g < 0))
    return float(np.max(np.abs(np.where(out, 0.0, g)), initial=0.0))


def _lbfgsb(fun, w0, bounds, maxiter, gtol, ftol):
    from scipy.optimize import minimize

    b = [(None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi)
         for lo, hi in bounds]
    return minimize(fun, np.clip(w0, bounds[:, 0], bounds[:, 1]), jac=True, method="L-BFGS-B",
                    bounds=b, options={"maxiter": maxiter, "gtol": gtol, "ftol": ftol,
                                       "maxcor": 20})


def _result(posterior: Posterior, w, *, n_evals, converged, message, t0, starts=(),
            J=None, do_laplace=True, cls=MAPResult, **extra):
    t = posterior.transform
    mu = t.from_w(w)
    pred = extra.pop("pred", None)
    if pred is None:
        pred = posterior.predict(mu)
    r = (pred - posterior.data.values) / posterior.data.sigma
    cov, cov_z = laplace(posterior, mu, J) if do_laplace else (None, None)
    obj = float(posterior.objective_from_prediction(mu, pred))
    return cls(names=posterior.names, mu=mu, z=t.z_from_w(w), objective=obj,
               chi2=float(r @ r), residual=r, cov=cov, cov_z=cov_z, n_model_evals=n_evals,
               converged=converged, message=message, wall_time=time.perf_counter() - t0,
               starts=list(starts), **extra)


def find_map(posterior: Posterior, *, starts: int = 8, seed: int = 0, x0=None,
             laplace_cov: bool = True, maxiter: int = 1000, gtol: float = 1e-10,
             ftol: float = 1e-15) -> MAPResult:
    """MAP estimate by multi-start L-BFGS-B in w; the best of all local optima is kept.

    Args:
        posterior: the problem.
        starts: size k of the scrambled Sobol design of starting points (0: only ``x0``).
        seed: scrambling seed.
        x0: extra starting point(s) μ, (P,) or (n, P), tried first.
        laplace_cov: compute the Laplace covariance (one Jacobian at μ̂).
        maxiter: L-BFGS-B iteration limit per start.
        gtol: L-BFGS-B projected-gradient tolerance.
        ftol: L-BFGS-B relative-decrease tolerance on Φ.
    """
    t0 = time.perf_counter()
    t = posterior.transform
    n0 = posterior.model.n_evals
    W = [] if starts <= 0 else list(start_points(posterior, starts, seed))
    if x0 is not None:
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        posterior.space.check(x0, where="x0")
        W = list(t.to_w(x0)) + W
    if not W:
        raise InferenceError("find_map: no starting points (starts=0 and no x0)")
    best, runs = None, []
    bounds = t.w_bounds()
    for w0 in W:
        res = _lbfgsb(posterior.objective_and_grad, w0, bounds, maxiter, gtol, ftol)
        # L-BFGS-B ends "abnormally" when Φ is flat to rounding at the optimum (finite
        # differences): judge that case by the projected gradient instead
        res.success = bool(res.success) or (
            np.isfinite(res.fun) and _projected_gradient(res.jac, res.x, bounds)
            <= PG_TOL * (1.0 + abs(res.fun)))
        runs.append({"start": t.from_w(w0), "mu": t.from_w(res.x), "objective": float(res.fun),
                     "iterations": int(res.nit), "converged": res.success,
                     "message": str(res.message)})
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise InferenceError("find_map: the model failed (NaN) at every start")
    msg = best.message if isinstance(best.message, str) else str(best.message)
    out = _result(posterior, best.x, n_evals=0, converged=bool(best.success), message=msg,
                  t0=t0, starts=runs, do_laplace=laplace_cov)
    out.n_model_evals = posterior.model.n_evals - n0
    return out


def confirm(cheap: Posterior, expensive, *, start: MAPResult | None = None,
            radius: float = 0.2, jacobian: str | Callable = "fd",
            fd_scheme: str = "forward", fd_step: float | None = None,
            gtol: float = 1e-6, ftol: float = 1e-12, xtol: float = 1e-10,
            eta: float = 1e-4, max_expensive: int = 200, map_kwargs: dict | None = None
            ) -> ConfirmResult:
    """MAP of the expensive model through a trust-region loop on the corrected cheap model.

    Args:
        cheap: posterior with the cheap model (surrogate); data, space and prior are shared.
        expensive: the expensive model (a :class:`ForwardModel`, a callable μ ↦ G(μ), or a
            :class:`Posterior` whose model is used).
        start: the cheap MAP if already computed (else :func:`find_map` with ``map_kwargs``).
        radius: initial trust-region half-width Δ₀ in w (∞-norm; w is the unit cube on
            bounded parameters).
        jacobian: ``"fd"`` (finite differences of the expensive model in w), ``"model"``
            (the expensive model's own ``jac_fn``, e.g. a tangent-linear FEM: evaluated with
            every expensive run), a callable μ ↦ dG_e/dμ (m, P), or ``"zeroth"`` (value
            correction only).
        fd_scheme: finite-difference scheme of the expensive Jacobian (forward: P runs).
        fd_step: relative finite-difference step (default ≈ √ε forward; raise it for a
            solver with iterative tolerance, e.g. 1e-6).
        gtol: stop when the projected ‖∂Φ_e/∂w‖∞ ≤ gtol (the expensive gradient).
        ftol: stop when the corrected model predicts a decrease ≤ ftol (1 + |Φ_e|): the cheap
            model, corrected, agrees that the expensive misfit cannot be lowered further.
        xtol: stop when an accepted step, or the trust region, is smaller than this.
        eta: accept a step when ρ = actual/predicted decrease > eta.
        max_expensive: budget of expensive evaluations.
        map_kwargs: arguments of :func:`find_map` for the cheap MAP when ``start`` is None.

    Returns:
        the expensive MAP with its Laplace covariance (from the corrected Jacobian), the
        number of expensive and cheap evaluations and the history of iterations.
    """
    t0 = time.perf_counter()
    if isinstance(expensive, Posterior):
        expensive = expensive.model
    if jacobian not in ("fd", "zeroth", "model") and not callable(jacobian):
        raise InferenceError(f"confirm: jacobian must be 'fd', 'zeroth', 'model' or a "
                             f"callable, got {jacobian!r}")
    exp_post = cheap.with_model(ForwardModel.wrap(expensive))
    if jacobian == "model" and exp_post.model.jac_fn is None:
        raise InferenceError("confirm: jacobian='model' needs an expensive model with jac_fn")
    t = cheap.transform
    em, cm = exp_post.model, cheap.model
    e0, c0 = em.n_evals, cm.n_evals
    if start is None:
        start = find_map(cheap, laplace_cov=False, **(map_kwargs or {}))
    w = t.to_w(start.mu)
    bounds = t.w_bounds()
    y, sigma = cheap.data.values, cheap.data.sigma

    def exp_predict_w(W):
        return exp_post.predict(t.from_w(W))

    def exp_eval(ww):
        """Expensive prediction at w, and its Jacobian in w when the model gives one."""
        if jacobian != "model":
            return exp_post.predict(t.from_w(ww)), None
        return exp_post.predict_and_jacobian_w(ww)

    F, J_at = exp_eval(w)
    phi = float(exp_post.objective_from_prediction(t.from_w(w), F))
    if not np.isfinite(phi):
        raise InferenceError("confirm: the expensive model failed at the cheap MAP estimate")
    delta = float(radius)
    history: list[dict] = []
    converged, reason = False, f"budget of {max_expensive} expensive evaluations spent"
    Jw_e = None
    need_model = True
    while em.n_evals - e0 < max_expensive:
        mu = t.from_w(w)
        if need_model:  # a new accepted point: correct the cheap model there
            d = F - cheap.predict(mu)
            Jw_c = cheap.jacobian_w(w)
            if jacobian == "fd":
                Jw_e = fd_jacobian(exp_predict_w, w, F, step=fd_step, scheme=fd_scheme,
                                   bounds=bounds)
            elif jacobian == "model":
                Jw_e = J_at
            elif callable(jacobian):
                Jw_e = np.asarray(jacobian(mu), dtype=float) * t.dmu_dw(w)
            else:
                Jw_e = Jw_c
            corr = Correction(d, Jw_e - Jw_c, w.copy())
            g = Jw_e.T @ ((F - y) / sigma ** 2) - cheap.prior.grad(t.theta(mu)) * t.dtheta_dw()
            gnorm = _projected_gradient(g, w, bounds)
            need_model = False
            if jacobian != "zeroth" and gnorm <= gtol:
                converged, reason = True, f"projected gradient ‖∂Φ/∂w‖∞ = {gnorm:.2e} <= gtol"
                break
        lo = np.maximum(w - delta, bounds[:, 0])
        hi = np.minimum(w + delta, bounds[:, 1])
        res = _lbfgsb(lambda ww, c=corr: cheap.objective_and_grad(ww, c), w,
                      np.stack([lo, hi], axis=1), 1000, 1e-12, 1e-15)
        pred_dec = phi - float(res.fun)
        step = float(np.max(np.abs(res.x - w)))
        rec = {"iteration": len(history) + 1, "mu": mu, "objective": phi, "radius": delta,
               "gradient": gnorm, "predicted": pred_dec, "step": step}
        if pred_dec <= ftol * (1.0 + abs(phi)):
            history.append({**rec, "accepted": False, "rho": None})
            converged, reason = True, (f"corrected model predicts no decrease "
                                       f"({pred_dec:.2e}) within the trust region")
            break
        Ft, Jt = exp_eval(res.x)
        phit = float(exp_post.objective_from_prediction(t.from_w(res.x), Ft))
        actual = phi - phit
        rho = actual / pred_dec if np.isfinite(phit) else -np.inf
        accepted = bool(rho > eta)
        history.append({**rec, "actual": actual, "rho": rho, "accepted": accepted})
        if rho < 0.25:
            delta = 0.25 * min(delta, step) if step > 0 else 0.25 * delta
        elif rho > 0.75 and step >= 0.99 * delta:
            delta = 2.0 * delta
        if accepted:
            w, F, phi, J_at = res.x.copy(), Ft, phit, Jt
            need_model = True
            if step <= xtol:
                converged, reason = True, f"step {step:.2e} <= xtol"
                break
            if actual <= ftol * (1.0 + abs(phi)):
                converged, reason = True, (f"expensive objective decreased by {actual:.2e} "
                                           "only, as predicted")
                break
        elif delta <= xtol:
            reason = f"trust region collapsed (radius {delta:.2e}) without reaching gtol/ftol"
            break
    mu = t.from_w(w)
    # Laplace covariance from the expensive Jacobian of the last corrected point (no extra
    # runs; when the loop stopped on an accepted step that point is at most xtol away).
    J = None if Jw_e is None else Jw_e / t.dmu_dw(w)
    return _result(exp_post, w, n_evals=em.n_evals - e0, converged=converged, message=reason,
                   t0=t0, J=J, do_laplace=J is not None, pred=F, cls=ConfirmResult,
                   n_expensive=em.n_evals - e0, n_cheap=cm.n_evals - c0,
                   chi2_cheap=float(cheap.chi2(mu)), cheap_mu=start.mu,
                   history=_jsonable(history))
