"""Where chains start and what they propose: a Laplace proposal that survives the box's bounds.

The sampler works in the unconstrained z of :mod:`~hybrid.inference.transform`. A Laplace
approximation taken directly in z is useless when the MAP sits on (or next to) a bound of the
box: there z is huge, dθ/dz ≈ 0, the Gauss–Newton Hessian in z is singular, and a chain
started there never leaves (the logistic map is saturated). So the approximation is made in
the scaled coordinate w (affine in θ, see :mod:`transform`), where it is regular everywhere:

    H_w = J_wᵀ Σ_y⁻¹ J_w + H_prior,w + 12·I_bounded,    C_w = H_w⁻¹,

with J_w = dG/dw at the MAP. The term 12·I on the bounded coordinates is the precision of the
uniform distribution on w ∈ [0, 1]: it caps a coordinate the data do not determine at the
prior's own spread instead of letting C_w blow up (it changes a well-determined coordinate,
whose data precision is ≫ 12, by a negligible relative amount). The **centre** is the MAP in w
moved inside the box by one Laplace standard deviation where it is closer than that to a bound,

    w_c = clip(ŵ, s, 1 − s),    s = √diag(C_w)   (bounded coordinates),

and the proposal covariance in z is the linear push-forward Σ₀ = D C_w D with
D = diag(dz/dw) at w_c: where the posterior piles against a bound, its z-marginal has a scale
of order one (an exponential tail p_z ∝ e^{−|z|} beyond the bound), which Σ₀ then has too.

:func:`dispersed_starts` draws chain starts from N(z_c, κ²Σ₀) (κ = 2, i.e. four times the
Laplace covariance): over-dispersed, so that R̂ can see chains that have not converged.

:func:`shrunk_covariance` is the rank-safe adaptation of Haario et al.: the empirical
covariance S_n of n states is shrunk toward Σ₀ with n₀ pseudo-observations,

    Σ_n = (n·S_n + n₀·Σ₀) / (n + n₀),

so Σ_n ⪰ n₀/(n + n₀)·Σ₀ ≻ 0 whatever the chain did (a chain that never moved has S_n = 0 and
proposes from Σ₀·n₀/(n+n₀), never from a collapsed matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.inference.errors import InferenceError
from hybrid.inference.posterior import Posterior
from hybrid.inference.transform import INTERVAL

UNIFORM_PRECISION = 12.0
"""1 / Var(U(0, 1)): the precision of the uniform prior in w on a bounded coordinate."""


@dataclass
class LaplaceProposal:
    """Centre z_c and covariance Σ₀ (P, P) in z of a bound-safe Laplace approximation."""

    z: np.ndarray
    mu: np.ndarray
    """The centre in μ."""
    cov: np.ndarray
    cov_w: np.ndarray
    moved: np.ndarray
    """Coordinates whose centre was moved inside the box (the MAP was within one std of a
    bound)."""


def check_spd(cov: np.ndarray, what: str) -> np.ndarray:
    """Return the Cholesky factor of a symmetric positive-definite ``cov``, or raise."""
    cov = np.asarray(cov, dtype=float)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not np.all(np.isfinite(cov)):
        raise InferenceError(f"{what}: expected a finite square matrix, got shape {cov.shape}")
    if not np.allclose(cov, cov.T, rtol=1e-8, atol=0.0):
        raise InferenceError(f"{what}: the covariance is not symmetric")
    try:
        L = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise InferenceError(f"{what}: the covariance is not positive definite") from None
    d = np.diag(L)
    if d.min() <= 1e-12 * d.max():
        raise InferenceError(f"{what}: the covariance is numerically singular "
                             f"(condition number >= 1e24)")
    return L


def laplace_proposal(posterior: Posterior, mu, J: np.ndarray | None = None) -> LaplaceProposal:
    """The bound-safe Laplace approximation at ``mu`` (the MAP), see the module docstring.

    Args:
        posterior: the (cheap) posterior; its Jacobian is used when ``J`` is not given.
        mu: the MAP estimate (P,), possibly on a bound.
        J: dG/dμ (m, P) at ``mu`` if already known.
    """
    t = posterior.transform
    mu = t.space.check(np.asarray(mu, dtype=float), where="MAP")
    w = t.to_w(mu)
    if J is None:
        J = posterior.jacobian(mu)
    Jw = np.asarray(J, dtype=float) * t.dmu_dw(w)
    sig2 = posterior.data.sigma ** 2
    dth_dw = t.dtheta_dw()
    Hp = dth_dw[:, None] * posterior.prior.precision() * dth_dw[None, :]
    bounded = t.kind == INTERVAL
    H = (Jw.T / sig2) @ Jw + Hp + np.diag(np.where(bounded, UNIFORM_PRECISION, 0.0))
    H = 0.5 * (H + H.T)
    ev, V = np.linalg.eigh(H)
    if not np.all(np.isfinite(ev)) or ev[0] <= 1e-12 * max(ev[-1], 1e-300):
        # a coordinate the data and a flat prior leave free (unbounded): floor the precision
        # at 1e-12 of the largest, so its proposal is wide but finite
        ev = np.maximum(ev, max(ev[-1], 1.0) * 1e-12)
    Cw = (V / ev) @ V.T
    s = np.sqrt(np.diag(Cw))
    wc = np.where(bounded, np.clip(w, np.minimum(s, 0.5), np.maximum(1.0 - s, 0.5)), w)
    moved = bounded & (wc != w)
    zc = t.z_from_w(wc)
    dz_dw = t.dtheta_dw() / t.dtheta_dz(zc)
    cov = dz_dw[:, None] * Cw * dz_dw[None, :]
    cov = 0.5 * (cov + cov.T)
    return LaplaceProposal(z=zc, mu=t.from_z(zc), cov=cov, cov_w=Cw, moved=moved)


def dispersed_starts(center_z: np.ndarray, cov: np.ndarray, rngs: list[np.random.Generator],
                     scale: float = 2.0) -> np.ndarray:
    """One start per generator from N(z_c, scale²·cov) in z, shape (len(rngs), P)."""
    L = check_spd(cov, "starting covariance")
    return np.stack([center_z + scale * L @ r.standard_normal(center_z.size) for r in rngs])


def shrunk_covariance(n: float, emp: np.ndarray, prior_cov: np.ndarray, n0: float
                      ) -> np.ndarray:
    """(n·S + n₀·Σ₀)/(n + n₀): the empirical covariance S of n states shrunk toward Σ₀."""
    return (n * emp + n0 * prior_cov) / (n + n0)


__all__ = ["LaplaceProposal", "check_spd", "dispersed_starts", "laplace_proposal",
           "shrunk_covariance"]
