"""Reductor: project an affine FEM model onto a POD basis, once, offline.

The store holds the affine decomposition of the FEM operator and right-hand side,

    A(μ) = Σ_q θ_q(μ) A_q,      f(μ) = Σ_q ϑ_q(μ) f_q,

without boundary conditions, and the homogeneous Dirichlet DOFs D. The discrete problem is
posed on the free DOFs F: find u_F with A_FF(μ) u_F = f_F(μ), u_D = 0. Every snapshot, hence
every POD mode, vanishes on D, so Galerkin projection onto the basis Φ (rows φ_j) needs no
boundary treatment:

    A_r,q = Φ A_q Φᵀ  (n×n),   f_r,q = Φ f_q  (n),   l_r = Φ l  (QoI functionals).

Observations may also depend on μ affinely (boundary fluxes; see the store format):
y_i = L_i u + Σ_q θ_q(μ) B_{i,q} u + Σ_q ϑ_q(μ) b_{i,q}, reduced to B_r,{i,q} = B_{i,q} Φᵀ (n)
with b unchanged, so y_i(c) = L_r,i c + Σ_q θ_q B_r,{i,q} c + Σ_q ϑ_q b_{i,q}.

**Residual-based error estimate.** For any reduced coefficients c (Galerkin or a network's),
the FEM residual of u_r = Σ_j c_j φ_j is r(μ) = f_F(μ) − A_FF(μ) u_r,F ∈ ℝ^{|F|}, and its dual
norm in the estimator's inner product X (SPD on F) is ‖r‖_{X'} = (rᵀ X⁻¹ r)^{1/2}. It is
linear in w(μ, c) = [ϑ(μ); −θ(μ) ⊗ c] ∈ ℝ^{Q_f + Q_a n}:

    X⁻¹ r = Σ_q ϑ_q R_{f,q} − Σ_{q,j} θ_q c_j R_{a,qj},

with the Riesz representers R_{f,q} = X⁻¹ f_q,F and R_{a,qj} = X⁻¹ (A_q φ_j)_F computed once
(one sparse LU of X_FF, Q_f + Q_a n solves). X-orthonormalising them by block Gram–Schmidt,
[R_f, R_a] = Qᵀ R with Q X Qᵀ = I, leaves a small matrix R (r × (Q_f + Q_a n)) with

    ‖r(μ)‖_{X'} = ‖R w(μ, c)‖₂,

computed online in O(r (Q_f + Q_a n)) operations with no N-sized work and, unlike the
quadratic form wᵀ G w of a Gram matrix, without the cancellation that limits that form to
√ε relative accuracy.

**Coercivity lower bound (min-θ).** X is the energy matrix at a reference parameter μ̄,
X = Σ_q θ_q(μ̄) A_q,FF. If every A_q is positive semidefinite and θ_q(μ) > 0, θ_q(μ̄) > 0, then
for all v

    a(v, v; μ) = Σ_q (θ_q(μ)/θ_q(μ̄)) θ_q(μ̄) a_q(v, v) ≥ α_LB(μ) ‖v‖²_X,
    α_LB(μ) = min_q θ_q(μ)/θ_q(μ̄).

With e = u_h(μ) − u_r, a(e, v; μ) = r(v) for all v, so α_LB ‖e‖²_X ≤ a(e, e) = r(e) ≤ ‖r‖_{X'}‖e‖_X:

    ‖u_h(μ) − u_r‖_X ≤ Δ(μ) = ‖r(μ)‖_{X'} / α_LB(μ),

a rigorous bound on the error with respect to the FEM solution, for *any* reduced
coefficients. For the thermal block θ_q = μ_q, μ̄ = (1, …, 1), X = Σ_q A_q is the stiffness
matrix (the H¹₀ energy norm) and α_LB(μ) = min_q μ_q.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.pod import gram_schmidt

INNER_PRODUCTS = ("energy", "h1", "h10", "l2")


def free_dofs(n_dofs: int, dirichlet_dofs: np.ndarray) -> np.ndarray:
    """Indices of the DOFs not fixed by the Dirichlet condition."""
    mask = np.ones(n_dofs, dtype=bool)
    mask[np.asarray(dirichlet_dofs, dtype=int)] = False
    return np.flatnonzero(mask)


def energy_matrix(affine_a: list, theta_ref: np.ndarray) -> sp.csr_matrix:
    """X = Σ_q θ_q(μ̄) A_q (the operator at the reference parameter)."""
    X = sp.csr_matrix(affine_a[0].shape)
    for t, A in zip(theta_ref, affine_a, strict=True):
        X = X + float(t) * sp.csr_matrix(A)
    return sp.csr_matrix(X)


def inner_product(static, kind: str, theta_ref: np.ndarray | None = None) -> sp.csr_matrix:
    """The inner-product matrix named ``kind`` from a store's static data.

    ``energy``: Σ_q θ_q(μ̄) A_q (affine models; needs ``theta_ref``); ``h1``: mass + stiffness;
    ``h10``: stiffness (H¹ seminorm); ``l2``: mass.
    """
    if kind == "energy":
        if not static.affine_a or theta_ref is None:
            raise SurrogateError("the 'energy' inner product needs an affine model; "
                                 "use --inner-product h1, h10 or l2")
        return energy_matrix(static.affine_a, theta_ref)
    if kind == "h1":
        return sp.csr_matrix(static.mass + static.stiffness)
    if kind == "h10":
        return sp.csr_matrix(static.stiffness)
    if kind == "l2":
        return sp.csr_matrix(static.mass)
    raise SurrogateError(f"unknown inner product {kind!r}; expected one of {INNER_PRODUCTS}")


@dataclass
class ReducedOperators:
    """Galerkin projections of the affine terms and of the linear output functionals.

    Attributes:
        A: (Q_a, n, n) reduced operator terms A_r,q = Φ A_q Φᵀ.
        f: (Q_f, n) reduced right-hand side terms f_r,q = Φ f_q.
        qoi: (n_qoi, n) reduced QoI functionals l_r = Φ l.
        observations: (n_obs, n) reduced observation functionals, or (0, n).
        gram: (n, n) Φ X_E Φᵀ, the basis' Gram matrix in the estimator's norm.
        observations_a: (n_obs, Q_a, n) reduced μ-dependent observation terms B_{i,q} Φᵀ, or
            None when every observation is linear.
        observations_f: (n_obs, Q_f) their constant terms b_{i,q}, or None.
    """

    A: np.ndarray
    f: np.ndarray
    qoi: np.ndarray
    observations: np.ndarray
    gram: np.ndarray
    observations_a: np.ndarray | None = None
    observations_f: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.A.shape[-1]

    def operator(self, theta_a: np.ndarray) -> np.ndarray:
        """A_r(μ) = Σ_q θ_q A_r,q for θ of shape (..., Q_a) → (..., n, n)."""
        return np.tensordot(theta_a, self.A, axes=(-1, 0))

    def rhs(self, theta_f: np.ndarray) -> np.ndarray:
        """f_r(μ) = Σ_q ϑ_q f_r,q for ϑ of shape (..., Q_f) → (..., n)."""
        return theta_f @ self.f

    def residual(self, theta_a: np.ndarray, theta_f: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Reduced residual f_r(μ) − A_r(μ) c (batched over leading axes)."""
        Ac = np.einsum("...q,qij,...j->...i", theta_a, self.A, c)
        return self.rhs(theta_f) - Ac


@dataclass
class ResidualEstimator:
    """Offline data of the residual-based error bound (module docstring).

    Attributes:
        R_f: (r, Q_f) and R_a: (r, Q_a, n) — ‖r(μ)‖_{X'} = ‖R_f ϑ − Σ_q θ_q R_a[:, q, :] c‖₂.
        theta_ref: (Q_a,) θ_q(μ̄) at the reference parameter of X.
        mu_ref: (P,) the reference parameter μ̄.
    """

    R_f: np.ndarray
    R_a: np.ndarray
    theta_ref: np.ndarray
    mu_ref: np.ndarray

    def dual_norm(self, theta_a: np.ndarray, theta_f: np.ndarray, c: np.ndarray) -> np.ndarray:
        """‖r(μ)‖_{X'} for θ (…, Q_a), ϑ (…, Q_f), c (…, n) → (…)."""
        theta_a, theta_f, c = np.asarray(theta_a), np.asarray(theta_f), np.asarray(c)
        lead = np.broadcast_shapes(theta_a.shape[:-1], theta_f.shape[:-1], c.shape[:-1])
        ta = np.broadcast_to(theta_a, lead + theta_a.shape[-1:]).reshape(-1, theta_a.shape[-1])
        tf = np.broadcast_to(theta_f, lead + theta_f.shape[-1:]).reshape(-1, theta_f.shape[-1])
        cc = np.broadcast_to(c, lead + c.shape[-1:]).reshape(-1, c.shape[-1])
        r, qa, n = self.R_a.shape
        outer = (ta[:, :, None] * cc[:, None, :]).reshape(-1, qa * n)
        v = tf @ self.R_f.T - outer @ self.R_a.reshape(r, qa * n).T
        return np.sqrt(np.einsum("ij,ij->i", v, v)).reshape(lead)

    def coercivity_lower_bound(self, theta_a: np.ndarray) -> np.ndarray:
        """α_LB(μ) = min_q θ_q(μ)/θ_q(μ̄) (SurrogateError if some θ_q(μ) ≤ 0)."""
        ratio = np.asarray(theta_a) / self.theta_ref
        alpha = ratio.min(axis=-1)
        if np.any(alpha <= 0):
            raise SurrogateError("the min-theta coercivity bound needs theta_q(mu) > 0; "
                                 "no error bound at this parameter")
        return alpha


def reduce_operators(static, modes: np.ndarray, X_E: sp.spmatrix) -> ReducedOperators:
    """Project the affine terms, QoI and observation functionals onto the rows of ``modes``."""
    if not static.affine_a:
        raise SurrogateError("the store has no affine decomposition: no reduced operators")
    Phi = modes
    A = np.array([Phi @ np.asarray(sp.csr_matrix(Aq) @ Phi.T) for Aq in static.affine_a])
    A = 0.5 * (A + np.transpose(A, (0, 2, 1))) if _all_symmetric(static.affine_a) else A
    f = np.atleast_2d(static.affine_f) @ Phi.T
    qoi = np.atleast_2d(static.qoi_functionals).reshape(-1, Phi.shape[1]) @ Phi.T
    obs = static.observation_functionals
    obs = (np.zeros((0, Phi.shape[0])) if obs is None or np.size(obs) == 0
           else np.atleast_2d(obs) @ Phi.T)
    gram = Phi @ np.asarray(X_E @ Phi.T)
    obs_a, obs_f = reduce_affine_observations(static, Phi)
    return ReducedOperators(A=A, f=f, qoi=qoi, observations=obs, gram=0.5 * (gram + gram.T),
                            observations_a=obs_a, observations_f=obs_f)


def reduce_affine_observations(static, modes: np.ndarray
                               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(B_r (n_obs, Q_a, n), b (n_obs, Q_f)) of μ-dependent observations, or (None, None).

    B_r,{i,q} = B_{i,q} Φᵀ from the store's ``observation_affine`` (row i·Q_a + q = B_{i,q}).
    """
    B = getattr(static, "observation_affine", None)
    if B is None:
        return None, None
    if not static.affine_a:
        raise SurrogateError("the store's observations depend on mu (boundary fluxes) but it "
                             "has no affine decomposition")
    qa, qf = len(static.affine_a), np.atleast_2d(static.affine_f).shape[0]
    n_obs = np.atleast_2d(static.observation_functionals).shape[0] \
        if static.observation_functionals is not None else 0
    b = np.atleast_2d(np.asarray(static.observation_affine_f, dtype=float))
    if B.shape != (n_obs * qa, modes.shape[1]) or b.shape != (n_obs, qf):
        raise SurrogateError(f"the store's affine observation terms have shapes {B.shape} and "
                             f"{b.shape}; expected ({n_obs}·{qa}, {modes.shape[1]}) and "
                             f"({n_obs}, {qf})")
    Br = np.asarray(sp.csr_matrix(B) @ modes.T).reshape(n_obs, qa, modes.shape[0])
    return Br, b.copy()


def _all_symmetric(mats: list, tol: float = 1e-12) -> bool:
    for M in mats:
        M = sp.csr_matrix(M)
        d = abs(M - M.T)
        if d.nnz and d.max() > tol * max(abs(M).max(), 1e-300):
            return False
    return True


def build_estimator(
    static,
    modes: np.ndarray,
    theta_ref: np.ndarray,
    mu_ref: np.ndarray,
    *,
    rtol: float = 1e-13,
) -> ResidualEstimator:
    """Offline part of the residual-based error bound for the basis ``modes`` (n, N)."""
    if not static.affine_a:
        raise SurrogateError("the store has no affine decomposition: no residual estimator")
    theta_ref = np.asarray(theta_ref, dtype=float)
    if np.any(theta_ref <= 0):
        raise SurrogateError("the reference parameter must have theta_q > 0 for every q")
    N = modes.shape[1]
    F = free_dofs(N, static.dirichlet_dofs)
    X = energy_matrix(static.affine_a, theta_ref)[F][:, F].tocsc()
    cols = [np.atleast_2d(static.affine_f)[:, F].T]                    # (|F|, Q_f)
    for Aq in static.affine_a:
        cols.append(np.asarray(sp.csr_matrix(Aq) @ modes.T)[F])      # (|F|, n)
    Fm = np.hstack(cols)                                               # (|F|, Q_f + Q_a n)
    try:
        lu = spla.splu(X)
    except RuntimeError as exc:
        raise SurrogateError(f"the estimator's inner product is singular on the free DOFs "
                             f"({exc})") from None
    W = lu.solve(Fm)                                                   # Riesz representers
    Q, _ = gram_schmidt(W.T, X, rtol=rtol)                             # X-orthonormal rows
    R = Q @ Fm                                                         # = Q X W  (r, m)
    qf = np.atleast_2d(static.affine_f).shape[0]
    n = modes.shape[0]
    return ResidualEstimator(R_f=R[:, :qf].copy(),
                             R_a=R[:, qf:].reshape(R.shape[0], len(static.affine_a), n).copy(),
                             theta_ref=theta_ref, mu_ref=np.asarray(mu_ref, dtype=float))


def galerkin_solve(ops: ReducedOperators, theta_a: np.ndarray, theta_f: np.ndarray) -> np.ndarray:
    """Reduced Galerkin solution c(μ) = A_r(μ)⁻¹ f_r(μ), batched over leading axes."""
    return np.linalg.solve(ops.operator(theta_a), ops.rhs(theta_f)[..., None])[..., 0]
