"""Galerkin time-stepping ROM of an affine linear parabolic model, with an error bound.

**The FEM it reduces** (:mod:`hybrid.fem.transient`, on the free DOFs F; u_D = 0): with
A(μ) = Σ_q θ_q(μ) A_q, f(μ) = Σ_q ϑ_q(μ) f_q, u⁰ = u0(μ) = Σ_q ϑ0_q(μ) u0_q and the fixed
step Δt,

    backward_euler   M (u^{n+1} − u^n)/Δt + A u^{n+1}                 = f
    crank_nicolson   M (u^{n+1} − u^n)/Δt + A (u^{n+1} + u^n)/2       = f
    bdf2             M (3u^{n+1} − 4u^n + u^{n−1})/(2Δt) + A u^{n+1}  = f   (n ≥ 1; step 1 BE)

**The ROM**: u_r^n = Φᵀc^n for a basis Φ (rows, any basis: M_r need not be I), the same
scheme with M_r = Φ M Φᵀ, A_r,q = Φ A_q Φᵀ, f_r,q = Φ f_q, and c⁰ the M-orthogonal
projection of u⁰: c⁰ = M_r⁻¹ Φ M u⁰ = Σ_q ϑ0_q C0_q. With the full basis the ROM is the FEM
to round-off (tests/test_transient_rom.py).

**Online cost.** Per μ: A_r(μ) = Σ θ_q A_r,q (one product with the flattened terms), one
r×r Cholesky of A_r for the steady state c∞ = A_r⁻¹f_r — the fixed point of every scheme —
and one of the step matrix (BE: M_r/Δt + A_r, CN: M_r/Δt + A_r/2; BDF2: 3M_r/(2Δt) + A_r,
plus M_r/Δt + A_r for its BE start). The deviation d^n = c^n − c∞ then obeys a homogeneous
linear recursion, d^{n+1} = G d^n (BE/CN) or d^{n+1} = H(2d^n − ½d^{n−1}) (BDF2), filled
one of two ways:

* ``"doubling"``: Z[m:2m] = Z[0:m] · T^m with T^{2m} = (T^m)² on the state rows
  (d^n, or [d^n, d^{n−1}] for BDF2), so 100 steps take ⌈log₂ 101⌉ = 7 block products and
  6 squarings instead of 100 dependent matrix–vector products, whose ~1 µs per-call
  overhead dominates at small r;
* ``"sequential"``: the step loop, one ``np.dot`` per step into a preallocated buffer
  (for BDF2 one (r × 2r) product on a contiguous [d^n, d^{n−1}] slice).

The squarings cost 6·2m³ flops for a state of size m against the loop's 100·2m² (BDF2
100·2·2r²), so doubling wins while the per-call overhead dominates: ``"auto"`` (default)
doubles up to m = 96 (BE/CN r ≤ 96, BDF2 r ≤ 48), from the timings of
benchmarks/transient_rom.py, which reports both methods at every rank.

**Error bound** (Grepl & Patera 2005; Haasdonk & Ohlberger 2008). X is the energy matrix at a
reference parameter μ̄, X = Σ_q θ_q(μ̄) A_q (on F), and, for A_q symmetric PSD and θ_q > 0,
a(v, v; μ) ≥ α_LB(μ) ‖v‖²_X with α_LB(μ) = min_q θ_q(μ)/θ_q(μ̄) (:mod:`reductor`). The
residual of the FEM step equation at the ROM solution is

    r^k(v) = f(v) − m(D_k u_r, v) − a(Â_k u_r, v; μ),

D_k the scheme's difference quotient and Â_k its operator argument (BE: u_r^k; CN:
(u_r^k + u_r^{k−1})/2). With e^n = u^n − u_r^n, m(D_k e, v) + a(Â_k e, v) = r^k(v); testing
with v = Â_k e and Young's inequality gives, for **backward Euler and Crank–Nicolson**
(proved; for CN the X-term is at the midpoints e^{k−½} = (e^k + e^{k−1})/2):

    ‖e^n‖²_M + Δt α_LB Σ_{k≤n} ‖Â_k e‖²_X ≤ ‖e⁰‖²_M + (Δt/α_LB) Σ_{k=1}^n ‖r^k‖²_{X'} =: Δ_n².

**BDF2** (proved here by G-stability): with a, b, c = e^{k}, e^{k−1}, e^{k−2},
2(3a − 4b + c, a)_M = E^k − E^{k−1} + ‖a − 2b + c‖²_M, E^k = ‖e^k‖²_M + ‖2e^k − e^{k−1}‖²_M,
so E^k − E^{k−1} + 2Δt α_LB ‖e^k‖²_X ≤ (2Δt/α_LB)‖r^k‖²_{X'} for k ≥ 2, and, with the BE
start bound Δ_1,

    ‖e^n‖²_M ≤ E^n ≤ Δ_1² + (2Δ_1 + ‖e⁰‖_M)² + (2Δt/α_LB) Σ_{k=2}^n ‖r^k‖²_{X'} =: Δ_n²,

rigorous but less sharp than the one-step bound (the factor 2 and the start term).
:meth:`GalerkinTimeROM.bound` returns Δ_n ≥ ‖e^n‖_M at every step.

**Offline/online split of the dual norms** (as :mod:`rb` in the steady case): the Riesz
representers X⁻¹ of f_q, of the columns of MΦᵀ and of A_qΦᵀ are X-orthonormalised once into
Q (r_Q rows); then ‖r^k‖_{X'} = ‖Q r^k‖₂ = ‖R_f ϑ − R_M d_k − (Σ_q θ_q R_{A,q}) â_k‖₂ with the
small matrices R_f = Q f, R_M = Q M Φᵀ, R_{A,q} = Q A_q Φᵀ and the reduced d_k, â_k — no
N-sized work online, and no √ε cancellation of a Gram-matrix quadratic form. ‖e⁰‖²_M =
ϑ0ᵀ G0 ϑ0 with G0 the M-Gram matrix of the projection residuals u0_q − Φᵀ C0_q (exact
zero when the u0_q are in the span of Φ).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.pod import gram_schmidt
from hybrid.surrogate.reductor import energy_matrix, free_dofs

SCHEMES = ("backward_euler", "crank_nicolson", "bdf2")
TRAJECTORY_METHODS = ("auto", "doubling", "sequential")
DOUBLING_MAX_STATE = 96     # "auto": doubling up to this state size (r, or 2r for BDF2)


def fill_recursion(z0: np.ndarray, T: np.ndarray, n_states: int,
                   method: str = "auto") -> np.ndarray:
    """States Z[n] = z0 · Tⁿ, n = 0 … n_states−1, (n_states, m) (rows; see module docstring)."""
    m = z0.size
    if method == "auto":
        method = "doubling" if m <= DOUBLING_MAX_STATE else "sequential"
    Z = np.empty((n_states, m))
    Z[0] = z0
    if method == "sequential":
        for n in range(1, n_states):
            np.dot(Z[n - 1], T, out=Z[n])
        return Z
    P, filled = T, 1
    while filled < n_states:
        k = min(filled, n_states - filled)
        np.dot(Z[:k], P, out=Z[filled:filled + k])
        filled += k
        if filled < n_states:
            P = P @ P
    return Z


def _bdf2_loop(H: np.ndarray, d0: np.ndarray, d1: np.ndarray, n: int) -> np.ndarray:
    """d^{m+1} = H(2d^m − ½d^{m−1}), m = 1 … n−1: one (r × 2r) product per step.

    The states are laid out last-first in one buffer, so [d^m, d^{m−1}] is a contiguous slice
    and each step is a single ``np.dot(W, slice, out=next)`` with W = [2H, −½H].
    """
    r = d0.size
    W = np.empty((r, 2 * r))
    W[:, :r] = 2.0 * H
    W[:, r:] = -0.5 * H
    buf = np.empty((n + 1) * r)
    buf[(n - 1) * r:n * r] = d1
    buf[n * r:] = d0
    for m in range(1, n):
        a = (n - m) * r
        np.dot(W, buf[a:a + 2 * r], out=buf[a - r:a])
    return buf.reshape(n + 1, r)[::-1]


def _spd_solve(K: np.ndarray, B: np.ndarray) -> np.ndarray:
    """K⁻¹B for a symmetric positive definite K by one Cholesky (SurrogateError if not SPD)."""
    _, x, info = lapack.dposv(K, B, lower=1)
    if info != 0:
        raise SurrogateError("the reduced step matrix is not positive definite (theta_q <= 0, "
                             "or a basis that is not in the free DOFs?)")
    return x


class GalerkinTimeROM:
    """The reduced time-stepping model and its bound (module docstring).

    Args:
        mass: (N, N) mass matrix M (store ordering, no boundary conditions).
        affine_a: the A_q (N, N); affine_f: (Q_f, N) the f_q; dirichlet_dofs: D.
        modes: (r, N) basis rows (zero on D; any basis of the reduced space).
        initial: (Q0, N) the initial state's terms u0_q.
        theta_a, theta_f, theta_0: μ ↦ θ (Q_a,), ϑ (Q_f,), ϑ0 (Q0,).
        scheme: one of :data:`SCHEMES`; dt: the step; n_steps: steps to t_end.
        mu_ref: μ̄ of the bound's energy inner product (None: no bound).
    """

    def __init__(self, mass, affine_a: list, affine_f: np.ndarray, dirichlet_dofs: np.ndarray,
                 modes: np.ndarray, initial: np.ndarray, *,
                 theta_a: Callable, theta_f: Callable, theta_0: Callable,
                 scheme: str, dt: float, n_steps: int, mu_ref: np.ndarray | None = None):
        if scheme not in SCHEMES:
            raise SurrogateError(f"unknown time scheme {scheme!r}; expected one of {SCHEMES}")
        if not (dt > 0 and n_steps >= 1):
            raise SurrogateError(f"need dt > 0 and n_steps >= 1, got dt={dt}, n_steps={n_steps}")
        if not affine_a:
            raise SurrogateError("a Galerkin time-stepping ROM needs the affine terms A_q")
        self.scheme, self.dt, self.n_steps = scheme, float(dt), int(n_steps)
        self.theta_a, self.theta_f, self.theta_0 = theta_a, theta_f, theta_0
        Phi_all = np.atleast_2d(np.asarray(modes, dtype=float))
        self.N = Phi_all.shape[1]
        F = free_dofs(self.N, dirichlet_dofs)
        self.F = F
        Phi = np.ascontiguousarray(Phi_all[:, F])
        self.Phi = Phi
        M = sp.csr_matrix(mass)[F][:, F]
        A = [sp.csr_matrix(Aq)[F][:, F] for Aq in affine_a]
        f = np.atleast_2d(np.asarray(affine_f, dtype=float))[:, F]
        u0 = np.atleast_2d(np.asarray(initial, dtype=float))[:, F]
        MPt = np.asarray(M @ Phi.T)                              # (|F|, r)
        APt = [np.asarray(Aq @ Phi.T) for Aq in A]
        self.M_r = 0.5 * (Phi @ MPt + (Phi @ MPt).T)
        self.A_r = np.array([0.5 * (Phi @ X + (Phi @ X).T) for X in APt])   # (Q_a, r, r)
        self.f_r = f @ Phi.T                                     # (Q_f, r)
        try:
            self._Mr_lu = sla.cho_factor(self.M_r)
        except np.linalg.LinAlgError:
            raise SurrogateError("the basis is linearly dependent (M_r is singular)") from None
        self.C0 = sla.cho_solve(self._Mr_lu, (u0 @ MPt).T).T    # (Q0, r)
        E0 = u0 - self.C0 @ Phi
        self.G0 = E0 @ np.asarray(M @ E0.T)                      # (Q0, Q0)
        self._online_setup()
        self.has_bound = mu_ref is not None
        if self.has_bound:
            self._riesz(M, A, f, MPt, APt, np.asarray(mu_ref, dtype=float))

    def _online_setup(self) -> None:
        """The online work arrays from M_r and A_r (also after loading a saved ROM)."""
        r = self.r
        self._A_flat = self.A_r.reshape(self.A_r.shape[0], r * r)
        self._Mdt = np.asfortranarray(self.M_r / self.dt)
        self._T2 = np.zeros((2 * r, 2 * r))                      # BDF2 companion (rows)
        self._T2[:r, r:] = np.eye(r)

    # ------------------------------------------------------------------ offline: the bound
    def _riesz(self, M, A, f, MPt, APt, mu_ref) -> None:
        self.theta_ref = np.asarray(self.theta_a(mu_ref), dtype=float)
        if np.any(self.theta_ref <= 0):
            raise SurrogateError("the reference parameter must have theta_q > 0 for every q")
        X = sp.csc_matrix(energy_matrix(A, self.theta_ref))
        try:
            lu = spla.splu(X)
        except RuntimeError as exc:
            raise SurrogateError(f"the energy inner product is singular ({exc})") from None
        cols = np.hstack([f.T, MPt] + APt)                       # (|F|, Q_f + r + Q_a r)
        W = lu.solve(np.ascontiguousarray(cols)).T
        Q, _ = gram_schmidt(W, X, rtol=1e-12)
        Q, _ = gram_schmidt(Q, X, rtol=1e-8)                     # polish orthonormality
        self.R_f = Q @ f.T                                       # (r_Q, Q_f)
        self.R_M = Q @ MPt                                       # (r_Q, r)
        self.R_A = np.array([Q @ X_ for X_ in APt])              # (Q_a, r_Q, r)

    # ------------------------------------------------------------------ online
    @property
    def r(self) -> int:
        return self.Phi.shape[0]

    def times(self, t0: float = 0.0) -> np.ndarray:
        return t0 + self.dt * np.arange(self.n_steps + 1)

    def _coefficients(self, mu):
        mu = np.asarray(mu, dtype=float)
        ta = np.asarray(self.theta_a(mu), dtype=float)
        tf = np.asarray(self.theta_f(mu), dtype=float)
        t0 = np.asarray(self.theta_0(mu), dtype=float)
        return ta, tf, t0

    def initial_coefficients(self, mu) -> np.ndarray:
        return np.asarray(self.theta_0(np.asarray(mu, dtype=float)), dtype=float) @ self.C0

    def solve(self, mu, method: str = "auto") -> np.ndarray:
        """Reduced coefficients c^n at every step, (n_steps + 1, r) (c⁰ first)."""
        ta, tf, t0 = self._coefficients(mu)
        return self.solve_theta(ta, tf, t0, method)

    def solve_theta(self, ta: np.ndarray, tf: np.ndarray, t0: np.ndarray,
                    method: str = "auto") -> np.ndarray:
        """:meth:`solve` from θ(μ), ϑ(μ), ϑ0(μ) (the fast path: no θ trees).

        Every scheme has the steady state c∞ = A_r⁻¹f_r as its fixed point, so the deviation
        d^n = c^n − c∞ obeys the homogeneous recursion d^{n+1} = G d^n (BE/CN) or
        d^{n+1} = H(2d^n − ½d^{n−1}) (BDF2, H = (3M_r/(2Δt) + A_r)⁻¹M_r/Δt). The step
        matrices and A_r are symmetric positive definite (M_r, A_r,q symmetric, θ > 0): each
        is factorised by one Cholesky (LAPACK ``dposv``, all right-hand sides at once).
        """
        if method not in TRAJECTORY_METHODS:
            raise SurrogateError(f"unknown method {method!r}; expected one of "
                                 f"{TRAJECTORY_METHODS}")
        r, n = self.r, self.n_steps
        Ar = (ta @ self._A_flat).reshape(r, r)
        fr = tf @ self.f_r
        cinf = _spd_solve(Ar, fr[:, None])[:, 0]
        d0 = t0 @ self.C0 - cinf
        Mdt = self._Mdt
        if self.scheme != "bdf2":
            if self.scheme == "crank_nicolson":
                G = _spd_solve(Mdt + 0.5 * Ar, Mdt - 0.5 * Ar)
            else:
                G = _spd_solve(Mdt + Ar, Mdt)
            D = fill_recursion(d0, np.ascontiguousarray(G.T), n + 1, method)
            D += cinf
            return D
        d1 = _spd_solve(Mdt + Ar, Mdt) @ d0                     # the BE start step
        H = _spd_solve(1.5 * Mdt + Ar, Mdt)
        out = np.empty((n + 1, r))
        out[0] = d0
        out[1] = d1
        if n > 1:
            if method == "auto":
                method = "doubling" if 2 * r <= DOUBLING_MAX_STATE else "sequential"
            if method == "doubling":
                T = self._T2                                     # rows [d^n, d^{n−1}]
                Ht = H.T
                T[:r, :r] = 2.0 * Ht
                T[r:, :r] = -0.5 * Ht
                z1 = np.empty(2 * r)
                z1[:r], z1[r:] = d1, d0
                out[1:] = fill_recursion(z1, T, n, "doubling")[:, :r]
            else:
                out[2:] = _bdf2_loop(H, d0, d1, n)[2:]
        out += cinf
        return out

    def field(self, c: np.ndarray) -> np.ndarray:
        """Full DOF vectors Φᵀc (store ordering, 0 on D) for c of shape (..., r)."""
        c = np.asarray(c, dtype=float)
        U = np.zeros(c.shape[:-1] + (self.N,))
        U[..., self.F] = c @ self.Phi
        return U

    def residual_norms(self, mu, c: np.ndarray) -> np.ndarray:
        """‖r^k‖_{X'} for k = 1 … n_steps at the ROM trajectory c (n_steps + 1, r)."""
        if not self.has_bound:
            raise SurrogateError("this ROM was built without mu_ref: no error bound")
        ta, tf, _ = self._coefficients(mu)
        c = np.asarray(c, dtype=float)
        if c.shape != (self.n_steps + 1, self.r):
            raise SurrogateError(f"trajectory must have shape {(self.n_steps + 1, self.r)}, "
                                 f"got {c.shape}")
        dt = self.dt
        d = (c[1:] - c[:-1]) / dt                                # BE/CN difference quotient
        if self.scheme == "crank_nicolson":
            a = 0.5 * (c[1:] + c[:-1])
        else:
            a = c[1:]
            if self.scheme == "bdf2" and self.n_steps > 1:
                d[1:] = (3.0 * c[2:] - 4.0 * c[1:-1] + c[:-2]) / (2.0 * dt)
        B = np.tensordot(ta, self.R_A, axes=1)                   # (r_Q, r)
        rho = (self.R_f @ tf)[None, :] - d @ self.R_M.T - a @ B.T
        return np.linalg.norm(rho, axis=1)

    def alpha(self, mu) -> float:
        """α_LB(μ) = min_q θ_q(μ)/θ_q(μ̄) (SurrogateError if ≤ 0)."""
        ta = np.asarray(self.theta_a(np.asarray(mu, dtype=float)), dtype=float)
        a = float(np.min(ta / self.theta_ref))
        if a <= 0:
            raise SurrogateError("the min-theta coercivity bound needs theta_q(mu) > 0")
        return a

    def initial_error(self, mu) -> float:
        """‖u⁰ − Φᵀc⁰‖_M (the M-projection error of the initial state)."""
        t0 = np.asarray(self.theta_0(np.asarray(mu, dtype=float)), dtype=float)
        return float(np.sqrt(max(t0 @ self.G0 @ t0, 0.0)))

    def bound(self, mu, c: np.ndarray | None = None) -> np.ndarray:
        """Δ_n ≥ ‖u^n − Φᵀc^n‖_M, n = 0 … n_steps (module docstring); c default: solve(μ)."""
        c = self.solve(mu) if c is None else c
        eta2 = self.residual_norms(mu, c) ** 2
        alpha, e0 = self.alpha(mu), self.initial_error(mu)
        dt = self.dt
        out = np.empty(self.n_steps + 1)
        out[0] = e0 ** 2
        if self.scheme != "bdf2":
            out[1:] = e0 ** 2 + dt / alpha * np.cumsum(eta2)
            return np.sqrt(out)
        d1 = e0 ** 2 + dt / alpha * eta2[0]
        out[1] = d1
        start = d1 + (2.0 * np.sqrt(d1) + e0) ** 2
        out[2:] = start + 2.0 * dt / alpha * np.cumsum(eta2[1:])
        return np.sqrt(out)
