"""Proper orthogonal decomposition (POD) in a finite-element inner product.

Vectors are *rows* (as in the store: a snapshot matrix ``U`` has shape (S, N)), and the inner
product is ⟨u, v⟩_X = u X vᵀ with a sparse symmetric positive (semi)definite X (the mass
matrix, the stiffness matrix, the energy matrix of an affine operator at a reference
parameter, …). POD finds the X-orthonormal basis Φ (rows φ_1 … φ_n) that minimises the
mean squared X-norm projection error of the snapshots,

    Σ_s ‖u_s − Σ_k ⟨u_s, φ_k⟩_X φ_k‖²_X = Σ_{k>n} σ_k²,

where σ_k are the singular values of the map c ↦ Σ_s c_s u_s from ℝ^S (Euclidean) to
(ℝ^N, X). Three ways to compute them:

* ``"qr"`` (default up to 2000 snapshots): X-orthonormalise the snapshots by block
  Gram–Schmidt with reorthogonalisation, U = R Q, then an SVD of the small S×k matrix R.
  Singular values are accurate to ε·σ_1 (not √ε), so modes down to σ_k/σ_1 ≈ 1e-14 are
  meaningful.
* ``"snapshots"``: the classical method of snapshots — eigen-decomposition of the Gram
  matrix C = U X Uᵀ, φ_k = v_kᵀ U / σ_k — followed by an X-reorthonormalisation of the
  modes. Cheapest, but singular values are only accurate to √ε·σ_1 ≈ 1e-8·σ_1, so modes
  below that are dropped.
* ``"randomized"``: randomized range finder with power iterations in the X inner product
  (Halko, Martinsson & Tropp 2011) for stores with many snapshots: cost O(S·N·k) for k
  modes instead of O(S²·N). Needs a target rank.

Truncation keeps the smallest n with Σ_{k≤n} σ_k² ≥ energy · Σ_s ‖u_s‖²_X (the total is
exact, whatever method), or a given rank, whichever is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hybrid.surrogate.errors import SurrogateError

POD_METHODS = ("auto", "qr", "snapshots", "randomized")


def _apply(X, V: np.ndarray) -> np.ndarray:
    """X applied to the rows of V (X symmetric), shape of V; X None means the identity."""
    if X is None:
        return V.copy()
    return np.asarray((X @ V.T).T)


def norms(V: np.ndarray, X=None) -> np.ndarray:
    """X-norms of the rows of V (shape (m, N) → (m,))."""
    V = np.atleast_2d(V)
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", _apply(X, V), V), 0.0))


def gram_schmidt(
    V: np.ndarray,
    X=None,
    *,
    rtol: float = 1e-12,
    atol: float = 0.0,
    block: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """X-orthonormalise the rows of V by block Gram–Schmidt with reorthogonalisation.

    Each block of rows is projected twice against the basis built so far (BLAS-3), then
    orthonormalised row by row, again twice; a row whose X-norm after projection is below
    ``max(atol, rtol · its original X-norm)`` is linearly dependent and dropped.

    Args:
        V: (m, N) rows to orthonormalise.
        X: (N, N) symmetric positive definite matrix (sparse or dense) or None (Euclidean).
        rtol: relative drop tolerance.
        atol: absolute drop tolerance.
        block: rows per block.

    Returns:
        (Q, kept): Q of shape (k, N) with Q X Qᵀ = I to round-off, and the indices of the
        rows of V that were kept (span(Q) = span(V[kept]) up to the tolerance).
    """
    V = np.atleast_2d(np.asarray(V, dtype=float))
    m, n = V.shape
    Q = np.zeros((0, n))
    XQ = np.zeros((0, n))
    kept: list[int] = []
    for start in range(0, m, block):
        B = V[start:start + block].copy()
        n0 = norms(B, X)
        for _ in range(2):
            if Q.shape[0]:
                B -= (B @ XQ.T) @ Q
        LQ = np.empty_like(B)
        LXQ = np.empty_like(B)
        k = 0
        for j in range(B.shape[0]):
            tol = max(atol, rtol * n0[j])
            v = B[j]
            for _ in range(2):
                if k:
                    v = v - (LXQ[:k] @ v) @ LQ[:k]
            xv = _apply(X, v[None])[0]
            nv = float(np.sqrt(max(v @ xv, 0.0)))
            if Q.shape[0] and tol < nv < 1e-2 * n0[j]:
                # heavy cancellation: what is left may have lost orthogonality to the old
                # basis; project once more against everything
                v = v - (XQ @ v) @ Q
                if k:
                    v = v - (LXQ[:k] @ v) @ LQ[:k]
                xv = _apply(X, v[None])[0]
                nv = float(np.sqrt(max(v @ xv, 0.0)))
            if nv <= tol or n0[j] == 0.0:
                continue
            LQ[k] = v / nv
            LXQ[k] = xv / nv
            k += 1
            kept.append(start + j)
        if k:
            Q = np.vstack([Q, LQ[:k]])
            XQ = np.vstack([XQ, LXQ[:k]])
    return Q, np.array(kept, dtype=int)


@dataclass
class POD:
    """A POD basis and the spectrum it came from.

    Attributes:
        modes: (n, N) X-orthonormal basis rows φ_1 … φ_n, ordered by decreasing σ.
        singular_values: (k,) every singular value the method computed (k ≥ n).
        total_energy: Σ_s ‖u_s‖²_X of the snapshots (exact).
        method: the method used.
    """

    modes: np.ndarray
    singular_values: np.ndarray
    total_energy: float
    method: str

    @property
    def n_modes(self) -> int:
        return self.modes.shape[0]

    def energy_fraction(self, n: int | None = None) -> float:
        """Fraction of the snapshot energy captured by the first n modes (default: all kept)."""
        n = self.n_modes if n is None else n
        if self.total_energy == 0.0:
            return 1.0
        return float(np.sum(self.singular_values[:n] ** 2) / self.total_energy)


def _truncation(s: np.ndarray, total: float, modes: int | None, energy: float | None,
                rtol: float) -> int:
    keep = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise SurrogateError(f"energy fraction must be in (0, 1], got {energy}")
        cum = np.cumsum(s**2)
        need = int(np.searchsorted(cum, energy * total * (1 - 1e-15))) + 1
        keep = min(keep, need)
    if modes is not None:
        if modes < 1:
            raise SurrogateError(f"number of modes must be >= 1, got {modes}")
        keep = min(keep, modes)
    return keep


def pod(
    U: np.ndarray,
    X=None,
    *,
    modes: int | None = None,
    energy: float | None = None,
    method: str = "auto",
    rtol: float | None = None,
    oversampling: int = 10,
    power_iterations: int = 2,
    seed: int = 0,
) -> POD:
    """POD of the snapshot rows of U in the X inner product.

    Args:
        U: (S, N) snapshots, one per row.
        X: (N, N) inner-product matrix (SPD on the span of the snapshots) or None.
        modes: keep at most this many modes.
        energy: keep the fewest modes capturing this fraction of Σ‖u_s‖²_X (e.g. 1 − 1e-10).
        method: ``"auto"``, ``"qr"``, ``"snapshots"`` or ``"randomized"`` (module docstring).
        rtol: drop modes with σ_k ≤ rtol·σ_1 (default 1e-13 for "qr"/"randomized",
            1e-7 for "snapshots", the accuracy limits of the methods).
        oversampling: extra random vectors of the randomized method.
        power_iterations: power iterations of the randomized method.
        seed: seed of the randomized method.

    Returns:
        The :class:`POD` (at least one mode unless U is zero).
    """
    U = np.atleast_2d(np.asarray(U, dtype=float))
    S = U.shape[0]
    if S == 0:
        raise SurrogateError("POD needs at least one snapshot")
    if method not in POD_METHODS:
        raise SurrogateError(f"unknown POD method {method!r}; expected one of {POD_METHODS}")
    if method == "auto":
        method = "qr" if S <= 2000 or modes is None else "randomized"
    total = float(np.sum(norms(U, X) ** 2))
    if method == "qr":
        Q, _ = gram_schmidt(U, X, rtol=1e-13)
        R = U @ _apply(X, Q).T                     # (S, k): U ≈ R Q
        _, s, Vt = np.linalg.svd(R, full_matrices=False)
        basis = Vt @ Q
        tol = 1e-13 if rtol is None else rtol
    elif method == "snapshots":
        C = U @ _apply(X, U).T
        lam, V = np.linalg.eigh(0.5 * (C + C.T))
        lam, V = lam[::-1], V[:, ::-1]
        s = np.sqrt(np.maximum(lam, 0.0))
        tol = 1e-7 if rtol is None else rtol
        k = int(np.sum(s > tol * s[0])) if s[0] > 0 else 0
        basis = (V[:, :k].T @ U) / s[:k, None]
        basis, kept = gram_schmidt(basis, X, rtol=1e-6)    # restore X-orthonormality
        s = s[kept]
    else:  # randomized
        if modes is None:
            raise SurrogateError("the randomized POD needs a number of modes (--modes)")
        k = min(S, modes + oversampling)
        rng = np.random.default_rng(seed)
        Y = rng.standard_normal((k, S)) @ U
        Q, _ = gram_schmidt(Y, X, rtol=1e-13)
        for _ in range(power_iterations):
            Y = (Q @ _apply(X, U).T) @ U           # rows of (U X Uᵀ) applied to the basis
            Q, _ = gram_schmidt(Y, X, rtol=1e-13)
        B = U @ _apply(X, Q).T                     # (S, k)
        _, s, Vt = np.linalg.svd(B, full_matrices=False)
        basis = Vt @ Q
        tol = 1e-13 if rtol is None else rtol
    n = _truncation(s, total, modes, energy, tol)
    if n == 0:
        raise SurrogateError("the snapshots are all zero: no POD basis")
    return POD(modes=np.ascontiguousarray(basis[:n]), singular_values=s, total_energy=total,
               method=method)


def projection_errors(
    modes: np.ndarray,
    U: np.ndarray,
    X=None,
    ranks: list[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Relative X-norm errors of the X-orthogonal projection of the rows of U.

    For each n in ``ranks`` (default 1 … n_modes) and each snapshot u,
    ‖u − Σ_{k≤n} ⟨u, φ_k⟩_X φ_k‖_X / ‖u‖_X, computed from the residual vector itself (no
    cancellation). Returns an array of shape (len(ranks), S).
    """
    U = np.atleast_2d(np.asarray(U, dtype=float))
    ranks = np.arange(1, modes.shape[0] + 1) if ranks is None else np.asarray(ranks, dtype=int)
    if np.any(ranks < 0) or np.any(ranks > modes.shape[0]):
        raise SurrogateError(f"ranks must be in 0 … {modes.shape[0]}")
    c = U @ _apply(X, modes).T
    ref = norms(U, X)
    ref = np.where(ref > 0, ref, 1.0)
    out = np.empty((len(ranks), U.shape[0]))
    E = U.copy()
    done = 0
    for i, n in enumerate(ranks):
        if n < done:
            E = U - c[:, :n] @ modes[:n]
        else:
            E -= c[:, done:n] @ modes[done:n]
        done = n
        out[i] = norms(E, X) / ref
    return out


def as_sparse(X) -> sp.csr_matrix | None:
    """X as a CSR matrix (None stays None)."""
    return None if X is None else sp.csr_matrix(X)
