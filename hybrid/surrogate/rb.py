"""An enrichable reduced-basis model: Galerkin ROM, residual bound, certified observations.

The coupler's second level (between the network and the FEM). It holds, for an affine model
and an X-orthonormal basis Φ (rows φ_j, X the energy matrix at μ̄ on the free DOFs F):

* the reduced operators A_r,q = Φ A_q Φᵀ, f_r,q = Φ f_q and observation rows L Φᵀ
  (see :mod:`hybrid.surrogate.reductor`);
* the residual bound Δ(μ; c) = ‖R w(μ, c)‖₂ / α_LB(μ) ≥ ‖u_h(μ) − Φᵀc‖_X, with R = Q F_m for an
  X-orthonormal basis Q of the Riesz representers X⁻¹F_m (F_m = [f_q, A_q φ_j] on F);
* the dual norms ν_i = ‖l_i‖_{X'} = (l_i,F X⁻¹ l_i,Fᵀ)^{1/2} of the observation functionals,
  so that every observation of any reduced state is certified:

      |l_i(u_h(μ)) − l_i(Φᵀ c)| ≤ ν_i Δ(μ; c)            (Cauchy–Schwarz in X).

:meth:`ReducedBasis.enrich` adds a FEM snapshot to the basis (the greedy reduced-basis
step). It is incremental: the new mode is X-orthonormalised against Φ, the reduced operators
gain one row and column, and only the Q_a new Riesz representers are solved for (with the
LU factors of X_FF kept from construction) and orthonormalised against Q, so an update costs
O(Q_a) sparse solves and O(Q_a r |F|) flops instead of rebuilding the estimator
(O(Q_a n) solves and O((Q_a n)² |F|) flops). scipy has no updatable reduced-basis model,
hence this module.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.pod import gram_schmidt, norms
from hybrid.surrogate.reductor import energy_matrix, free_dofs


def _orthonormalize_against(B: np.ndarray, Q: np.ndarray, XQ: np.ndarray, X,
                            rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """X-orthonormal rows spanning span(B) minus span(Q) (projected twice), with X times them."""
    B = np.array(B, dtype=float)
    n0 = norms(B, X)                 # drop what is within rtol of the old span
    for _ in range(2):
        if Q.shape[0]:
            B -= (B @ XQ.T) @ Q
    keep = norms(B, X) > rtol * n0
    Qb, _ = gram_schmidt(B[keep], X, rtol=rtol, atol=rtol * float(n0.max(initial=0.0)))
    for _ in range(2):       # gram_schmidt's combinations keep orthogonality; polish it
        if Q.shape[0] and Qb.shape[0]:
            Qb -= (Qb @ XQ.T) @ Q
    if Qb.shape[0]:
        Qb, _ = gram_schmidt(Qb, X, rtol=1e-8)
    return Qb, np.asarray((X @ Qb.T).T) if Qb.shape[0] else np.zeros((0, B.shape[1]))


class ReducedBasis:
    """Galerkin reduced-basis model of an affine problem, with certified observations.

    Args:
        static: the store's :class:`~hybrid.core.store.StaticData` (affine terms, Dirichlet DOFs,
            observation functionals).
        spec: the physics spec (θ_q(μ), ϑ_q(μ)).
        modes: (n, N) initial basis (any basis of the space; it is X-orthonormalised).
        mu_ref: μ̄ of the energy inner product X = Σ_q θ_q(μ̄) A_q and of α_LB.
        rtol: drop tolerance of the orthonormalisations.
    """

    def __init__(self, static, spec, modes: np.ndarray, mu_ref: np.ndarray, *,
                 rtol: float = 1e-12):
        if not static.affine_a:
            raise SurrogateError("a reduced-basis model needs the affine decomposition in the "
                                 "store")
        self.spec = spec
        self.rtol = rtol
        self.mu_ref = np.asarray(mu_ref, dtype=float)
        self.theta_ref = np.asarray(spec.theta_a(self.mu_ref), dtype=float)
        if np.any(self.theta_ref <= 0):
            raise SurrogateError("the reference parameter must have theta_q > 0 for every q")
        N = modes.shape[1]
        self.N = N
        self.F = free_dofs(N, static.dirichlet_dofs)
        F = self.F
        X = energy_matrix(static.affine_a, self.theta_ref)
        self.X_FF = sp.csc_matrix(X[F][:, F])
        try:
            self._lu = spla.splu(self.X_FF)
        except RuntimeError as exc:
            raise SurrogateError(f"the energy inner product is singular ({exc})") from None
        self.A_FF = [sp.csr_matrix(Aq)[F][:, F] for Aq in static.affine_a]
        self.f_F = np.atleast_2d(static.affine_f)[:, F]                      # (Q_f, |F|)
        obs = static.observation_functionals
        self.L_F = (np.zeros((0, len(F))) if obs is None or np.size(obs) == 0
                    else np.atleast_2d(obs)[:, F])                          # (m, |F|)
        self.obs_dual_norms = self._dual_norms(self.L_F)
        # basis, X-orthonormal
        Phi, _ = gram_schmidt(np.asarray(modes, dtype=float)[:, F], self.X_FF, rtol=rtol)
        self.Phi = np.zeros((0, len(F)))
        self.XPhi = np.zeros((0, len(F)))
        self.AqPhi = [np.zeros((0, len(F))) for _ in self.A_FF]            # rows (A_q φ_j)_F
        self.Q = np.zeros((0, len(F)))                                      # representers
        self.XQ = np.zeros((0, len(F)))
        self.R_f = np.zeros((0, self.f_F.shape[0]))
        self._add_representers(self.f_F)
        self.R_a = np.zeros((self.Q.shape[0], len(self.A_FF), 0))
        self._add_modes(Phi)

    # ---------------------------------------------------------------- construction
    def _dual_norms(self, rows: np.ndarray) -> np.ndarray:
        if rows.shape[0] == 0:
            return np.zeros(0)
        W = self._lu.solve(np.ascontiguousarray(rows.T))                    # X⁻¹ lᵀ
        return np.sqrt(np.maximum(np.einsum("ij,ji->i", rows, W), 0.0))

    def _add_representers(self, cols_rows: np.ndarray) -> None:
        """Add the Riesz representers of the functionals ``cols_rows`` (k, |F|) to Q."""
        W = self._lu.solve(np.ascontiguousarray(cols_rows.T)).T             # (k, |F|)
        Qb, XQb = _orthonormalize_against(W, self.Q, self.XQ, self.X_FF, self.rtol)
        self.Q = np.vstack([self.Q, Qb])
        self.XQ = np.vstack([self.XQ, XQb])

    def _add_modes(self, Phi_new: np.ndarray) -> None:
        """Append X-orthonormal rows (already orthogonal to Φ) and update every operator."""
        k = Phi_new.shape[0]
        if k == 0:
            return
        r_old = self.Q.shape[0]
        new_aq = [np.asarray((A @ Phi_new.T).T) for A in self.A_FF]         # (k, |F|) each
        self._add_representers(np.vstack(new_aq))
        self.Phi = np.vstack([self.Phi, Phi_new])
        self.XPhi = np.vstack([self.XPhi, np.asarray((self.X_FF @ Phi_new.T).T)])
        self.AqPhi = [np.vstack([old, new]) for old, new in zip(self.AqPhi, new_aq,
                                                                strict=True)]
        # R = Q F_m: old rows gain the new columns; new rows see every column
        Qa = len(self.A_FF)
        n = self.Phi.shape[0]
        R_f = self.f_F @ self.Q.T                                            # (Q_f, r)
        R_a = np.empty((self.Q.shape[0], Qa, n))
        for q in range(Qa):
            R_a[:r_old, q, : n - k] = self.R_a[:, q, :]
            R_a[:r_old, q, n - k:] = (self.Q[:r_old] @ new_aq[q].T)
            R_a[r_old:, q, :] = self.Q[r_old:] @ self.AqPhi[q].T
        self.R_f = R_f.T.copy()
        self.R_a = R_a
        self._reduce()

    def _reduce(self) -> None:
        Phi = self.Phi
        self.A = np.array([Phi @ AP.T for AP in self.AqPhi])               # (Q_a, n, n)
        self.A = 0.5 * (self.A + np.transpose(self.A, (0, 2, 1)))
        self.f = self.f_F @ Phi.T                                            # (Q_f, n)
        self.obs = self.L_F @ Phi.T                                          # (m, n)
        self.gram = Phi @ self.XPhi.T

    # ---------------------------------------------------------------- queries
    @property
    def n(self) -> int:
        return self.Phi.shape[0]

    def solve(self, mu: np.ndarray) -> np.ndarray:
        """Galerkin coefficients c(μ) = A_r(μ)⁻¹ f_r(μ), (P,) → (n,) or (B, P) → (B, n)."""
        ta = np.asarray(self.spec.theta_a(mu), dtype=float)
        tf = np.asarray(self.spec.theta_f(mu), dtype=float)
        A = np.tensordot(ta, self.A, axes=(-1, 0))
        return np.linalg.solve(A, (tf @ self.f)[..., None])[..., 0]

    def bound(self, mu: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Δ(μ; c) = ‖r(μ; c)‖_{X'}/α_LB(μ) ≥ ‖u_h(μ) − Φᵀc‖_X (absolute; (P,) → ())."""
        ta = np.asarray(self.spec.theta_a(mu), dtype=float)
        tf = np.asarray(self.spec.theta_f(mu), dtype=float)
        v = tf @ self.R_f.T - np.einsum("...q,rqj,...j->...r", ta, self.R_a, c)
        alpha = np.min(ta / self.theta_ref, axis=-1)
        if np.any(alpha <= 0):
            raise SurrogateError("the min-theta coercivity bound needs theta_q(mu) > 0")
        return np.linalg.norm(v, axis=-1) / alpha

    def observe(self, c: np.ndarray) -> np.ndarray:
        """Observations l_i(Φᵀ c) of reduced states (linear functionals)."""
        return np.asarray(c) @ self.obs.T

    def field(self, c: np.ndarray) -> np.ndarray:
        """Full DOF vector(s) Φᵀ c in store ordering (zero on the Dirichlet DOFs)."""
        c = np.atleast_2d(c)
        U = np.zeros((c.shape[0], self.N))
        U[:, self.F] = c @ self.Phi
        return U

    def residual_of_field(self, mu: np.ndarray, u: np.ndarray) -> float:
        """X-norm of the part of a field u outside the basis (≥ 0; 0 if u is in the span)."""
        uF = np.asarray(u, dtype=float)[self.F]
        c = self.XPhi @ uF
        e = uF - c @ self.Phi
        return float(np.sqrt(max(e @ (self.X_FF @ e), 0.0)))

    def enrich(self, u: np.ndarray) -> bool:
        """Add the snapshot u (store ordering, zero on Dirichlet DOFs) to the basis.

        Returns False (nothing changed) when u lies in the span of the basis to ``rtol``.
        """
        uF = np.asarray(u, dtype=float)[self.F][None, :]
        Phi_new, _ = _orthonormalize_against(uF, self.Phi, self.XPhi, self.X_FF, 1e-10)
        if Phi_new.shape[0] == 0:
            return False
        self._add_modes(Phi_new)
        return True
