"""Space–time POD of trajectories: one spatial basis for every (μ, t) of a transient store.

A trajectory is u_s(t_n) ∈ ℝ^N at output times t_0 < … < t_{n_t−1}; a set of them is an array
U of shape (S, n_t, N). The space–time inner product is the trapezoidal rule in time and the
X inner product in space (the mass matrix, or the energy matrix; rows as in :mod:`pod`):

    ⟨u, v⟩_{X,T} = Σ_n w_n ⟨u(t_n), v(t_n)⟩_X,   w = trapezoidal weights of t,

so ‖u‖²_{X,T} ≈ ∫ ‖u(t)‖²_X dt. The space–time POD basis Φ (rows φ_k, X-orthonormal)
minimises Σ_s ‖u_s − P_Φ u_s‖²_{X,T} with P_Φ the X-orthogonal projection at each time.
That is the POD (as :func:`hybrid.surrogate.pod.pod`, ``"qr"``) of the S·n_t weighted rows
√w_n u_s(t_n), and by Eckart–Young, with σ_k its singular values,

    Σ_s ‖u_s − P_Φn u_s‖²_{X,T} = Σ_{k>n} σ_k²       (``method="direct"``).

**Two-level POD** (``method="two_level"``, the default): level 1 compresses each trajectory
on its own — the POD of its n_t weighted rows, Y_s ≈ L_s V_s keeping the modes down to
σ_{s,k} ≤ ``level1_rtol``·σ_{s,1} — and level 2 is the POD of the collected scaled modes
Z = [Σ_1 V_1; …; Σ_S V_S] (every trajectory's σ_{s,k} φ_{s,k}). Since Σ_s Y_sᵀY_s ≈ ZᵀZ,
level 2 has the same modes and singular values as the direct POD up to the level-1
truncation; by the triangle inequality the projection error obeys

    (Σ_s ‖u_s − P_Φn u_s‖²_{X,T})^{1/2} ≤ (Σ_{k>n} σ̃_k²)^{1/2} + (Σ_s Σ_{k>k_s} σ_{s,k}²)^{1/2},

with σ̃ the level-2 singular values and the last term the level-1 tails (reported as
``level1_tail``). Its cost is S·O(n_t² N) + O((Σ_s k_s)² N) instead of O((S n_t)² N), and it
streams: :class:`TwoLevelPOD` takes one trajectory at a time, so the S·n_t·N array is never
held (a trajectory can be dropped after :meth:`TwoLevelPOD.add`).

Why two-level is the default (benchmarks/transient_rom.py, ``spacetime_pod``: the heat block
on a 30×30 P1 mesh, 961 DOFs, 30 trajectories × 101 times = 3030 rows): the two bases give
the same projection errors to 9 digits at ranks 10, 20 and 40, on the training and on
held-out trajectories (level-1 tail 4e-15 of the energy at rtol 1e-7, 6e-11 at 1e-5), and
two-level took 0.76 s against 2.4 s for direct. Direct costs O((S n_t)² N): for the
benchmark's 100 trajectories on 120×120 cells (10 100 rows, 14 641 DOFs) it would be
~170× the 30×30 case, so it was not run; two-level took 62 s there.

A basis can start with fixed vectors (``fixed``: e.g. the initial states' affine terms
u0_q, so that the initial condition is represented exactly): they are X-orthonormalised
first, projected out of the trajectories, and the POD of what remains is appended; the
Eckart–Young identity then holds for the remainder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.pod import POD, _apply, _truncation, gram_schmidt, norms

SPACETIME_METHODS = ("two_level", "direct")


def time_weights(times: np.ndarray) -> np.ndarray:
    """Trapezoidal weights w (n_t,) with Σ_n w_n g(t_n) ≈ ∫ g dt; one time: w = (1,)."""
    t = np.asarray(times, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise SurrogateError(f"times must be a non-empty 1-D array, got shape {t.shape}")
    if t.size == 1:
        return np.ones(1)
    h = np.diff(t)
    if np.any(h <= 0):
        raise SurrogateError("times must be strictly increasing")
    w = np.zeros_like(t)
    w[:-1] += 0.5 * h
    w[1:] += 0.5 * h
    return w


def _check(U: np.ndarray, times: np.ndarray) -> np.ndarray:
    U = np.asarray(U, dtype=float)
    if U.ndim == 2:
        U = U[None]
    if U.ndim != 3 or U.shape[1] != np.size(times):
        raise SurrogateError(f"trajectories must have shape (S, n_t, N) with n_t = "
                             f"{np.size(times)} times, got {U.shape}")
    return U


def spacetime_norms(U: np.ndarray, times: np.ndarray, X=None) -> np.ndarray:
    """‖u_s‖_{X,T} = (Σ_n w_n ‖u_s(t_n)‖²_X)^{1/2} of each trajectory, (S,)."""
    U = _check(U, times)
    w = time_weights(times)
    S, nt, N = U.shape
    sq = norms(U.reshape(S * nt, N), X).reshape(S, nt) ** 2
    return np.sqrt(sq @ w)


def relative_spacetime_errors(U: np.ndarray, V: np.ndarray, times: np.ndarray,
                              X=None) -> np.ndarray:
    """‖u_s − v_s‖_{X,T} / ‖u_s‖_{X,T} per trajectory (S,) (U the reference)."""
    U, V = _check(U, times), _check(V, times)
    ref = spacetime_norms(U, times, X)
    return spacetime_norms(U - V, times, X) / np.where(ref > 0, ref, 1.0)


def project(modes: np.ndarray, U: np.ndarray, X=None) -> np.ndarray:
    """X-orthogonal projection coefficients c = U X Φᵀ, (S, n_t, N) → (S, n_t, n)."""
    U = np.asarray(U, dtype=float)
    return U @ _apply(X, modes).T


@dataclass
class SpaceTimePOD:
    """A space–time POD basis.

    Attributes:
        modes: (n, N) X-orthonormal rows: the ``n_fixed`` fixed vectors first, then the POD
            modes of the remainder by decreasing σ.
        singular_values: the (level-2) singular values of the remainder.
        total_energy: Σ_s ‖u_s − P_fixed u_s‖²_{X,T} (exact for ``direct``; the sum of the
            level-1 energies, also exact, for ``two_level``).
        method: ``"direct"`` or ``"two_level"``.
        n_fixed: number of fixed leading vectors.
        level1_tail: Σ_s Σ_{k>k_s} σ_{s,k}² (0 for ``direct``).
        level1_ranks: k_s per trajectory (two-level).
        seconds: wall time of the construction.
    """

    modes: np.ndarray
    singular_values: np.ndarray
    total_energy: float
    method: str
    n_fixed: int = 0
    level1_tail: float = 0.0
    level1_ranks: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_modes(self) -> int:
        return self.modes.shape[0]

    def truncated(self, n: int) -> np.ndarray:
        """The first n rows (fixed vectors included), as a new array."""
        if not self.n_fixed <= n <= self.n_modes:
            raise SurrogateError(f"rank must be in {self.n_fixed} … {self.n_modes}, got {n}")
        return self.modes[:n].copy()


def _pod_rows(Y: np.ndarray, X, *, modes: int | None = None, energy: float | None = None,
              rtol: float = 1e-13) -> POD:
    """POD of the rows of Y: X-orthonormal basis Q of their span, then an SVD of Y X Qᵀ.

    :func:`hybrid.surrogate.pod.gram_schmidt` with its default 64-row blocks lost
    X-orthonormality (‖QXQᵀ − I‖ = 1e-2 … 1e-1) on level 2's collected modes of the 12×12
    heat block (nearly dependent rows across trajectories, the span nearly the whole free
    space; one-row blocks gave 1e-15). A second Gram–Schmidt pass over Q (as
    :mod:`hybrid.surrogate.rb` polishes its bases) restores it to 1e-15, and the SVD of the
    small matrix Y X Qᵀ is then exact whatever spurious directions Q may hold.
    """
    n0 = norms(Y, X)
    Q, _ = gram_schmidt(Y, X, rtol=1e-13, atol=1e-14 * float(n0.max(initial=0.0)))
    Q, _ = gram_schmidt(Q, X, rtol=1e-8)
    R = Y @ _apply(X, Q).T
    _, s, Vt = np.linalg.svd(R, full_matrices=False)
    basis = Vt @ Q
    total = float(np.sum(n0 ** 2))
    n = _truncation(s, total, modes, energy, rtol)
    if n == 0:
        raise SurrogateError("the trajectories are all zero: no space-time POD basis")
    return POD(modes=np.ascontiguousarray(basis[:n]), singular_values=s, total_energy=total,
               method="qr")


def _fixed_basis(fixed, X, N: int) -> tuple[np.ndarray, np.ndarray]:
    if fixed is None or np.size(fixed) == 0:
        return np.zeros((0, N)), np.zeros((0, N))
    Q, _ = gram_schmidt(np.atleast_2d(np.asarray(fixed, dtype=float)), X, rtol=1e-12)
    return Q, _apply(X, Q)


def _remove(rows: np.ndarray, Q: np.ndarray, XQ: np.ndarray) -> np.ndarray:
    for _ in range(2):
        if Q.shape[0]:
            rows = rows - (rows @ XQ.T) @ Q
    return rows


def _append(Q: np.ndarray, XQ: np.ndarray, modes: np.ndarray, X) -> np.ndarray:
    if Q.shape[0] == 0:
        return modes
    modes = _remove(modes, Q, XQ)                      # polish orthogonality to the fixed span
    modes, _ = gram_schmidt(modes, X, rtol=1e-8)
    return np.vstack([Q, modes])


class TwoLevelPOD:
    """Streaming two-level space–time POD: :meth:`add` trajectories, then :meth:`finish`.

    Args:
        times: (n_t,) output times of every trajectory.
        X: spatial inner product (sparse SPD) or None.
        fixed: vectors the basis must contain (projected out before level 1).
        level1_rtol: level 1 keeps σ_{s,k} > level1_rtol · σ_{s,1}.
        keep_coefficients: keep each trajectory's level-1 factors, so that
            :meth:`coefficients` can project the (compressed) trajectories onto the final
            basis without the trajectories themselves.
    """

    def __init__(self, times: np.ndarray, X=None, *, fixed=None, level1_rtol: float = 1e-7,
                 keep_coefficients: bool = False):
        self.times = np.asarray(times, dtype=float)
        self.sw = np.sqrt(time_weights(self.times))
        self.X = X
        self.fixed = fixed
        self.level1_rtol = float(level1_rtol)
        self._Q = self._XQ = None
        self._rows: list[np.ndarray] = []
        self.ranks: list[int] = []
        self.tail = 0.0
        self.energy = 0.0
        self.seconds = 0.0
        self.keep = bool(keep_coefficients)
        self._fixed_c: list[np.ndarray] = []     # U_s X Q_fixedᵀ (n_t, n_fixed)
        self._left: list[np.ndarray] = []        # A_s = Y_s X V_sᵀ (n_t, k_s)

    def add(self, U_s: np.ndarray) -> None:
        """Compress one trajectory (n_t, N) (level 1)."""
        t0 = time.perf_counter()
        U_s = np.asarray(U_s, dtype=float)
        if U_s.ndim != 2 or U_s.shape[0] != self.times.size:
            raise SurrogateError(f"a trajectory must have shape (n_t={self.times.size}, N), "
                                 f"got {U_s.shape}")
        if self._Q is None:
            self._Q, self._XQ = _fixed_basis(self.fixed, self.X, U_s.shape[1])
        if self.keep:
            self._fixed_c.append(U_s @ self._XQ.T)
        Y = _remove(self.sw[:, None] * U_s, self._Q, self._XQ)
        e = float(np.sum(norms(Y, self.X) ** 2))
        self.energy += e
        if e > 0:
            p = _pod_rows(Y, self.X, rtol=self.level1_rtol)
            k = p.n_modes
            s = p.singular_values
            self.tail += max(e - float(np.sum(s[:k] ** 2)), 0.0)
            self._rows.append(s[:k, None] * p.modes)
            self.ranks.append(k)
            if self.keep:
                self._left.append(Y @ _apply(self.X, p.modes).T)
        else:
            self.ranks.append(0)
            if self.keep:
                self._left.append(np.zeros((self.times.size, 0)))
        self.seconds += time.perf_counter() - t0

    def coefficients(self, modes: np.ndarray) -> np.ndarray:
        """Projections c_s(t_n) = ũ_s(t_n) X Φᵀ of the level-1 compressions ũ_s, (S, n_t, n).

        ũ_s = P_fixed u_s + diag(w)^{-1/2} A_s V_s differs from u_s by the trajectory's level-1
        tail: Σ_n w_n ‖u_s(t_n) − ũ_s(t_n)‖²_X = Σ_{k>k_s} σ_{s,k}².
        """
        if not self.keep:
            raise SurrogateError("coefficients() needs keep_coefficients=True")
        XPhi = _apply(self.X, np.atleast_2d(modes))
        QX = self._Q @ XPhi.T                              # (n_fixed, n)
        out = np.empty((len(self.ranks), self.times.size, XPhi.shape[0]))
        rows = iter(self._rows)
        for s, (F, A) in enumerate(zip(self._fixed_c, self._left, strict=True)):
            c = F @ QX
            if A.shape[1]:
                Z = next(rows)                             # σ_k φ_k rows
                sig = norms(Z, self.X)
                c += (A / sig) @ (Z @ XPhi.T) / self.sw[:, None]
            out[s] = c
        return out

    def finish(self, *, modes: int | None = None, energy: float | None = None) -> SpaceTimePOD:
        """Level 2: the POD of the collected scaled modes, truncated by rank or energy."""
        if not self.ranks:
            raise SurrogateError("the two-level POD has no trajectory")
        t0 = time.perf_counter()
        Q = self._Q
        if not self._rows:
            raise SurrogateError("the trajectories lie in the span of the fixed vectors: "
                                 "nothing to compress")
        Z = np.vstack(self._rows)
        p = _pod_rows(Z, self.X, modes=modes, energy=energy)
        basis = _append(Q, self._XQ, p.modes, self.X)
        self.seconds += time.perf_counter() - t0
        return SpaceTimePOD(modes=np.ascontiguousarray(basis),
                            singular_values=p.singular_values, total_energy=self.energy,
                            method="two_level", n_fixed=Q.shape[0], level1_tail=self.tail,
                            level1_ranks=list(self.ranks), seconds=self.seconds)


def spacetime_pod(
    U: np.ndarray,
    times: np.ndarray,
    X=None,
    *,
    modes: int | None = None,
    energy: float | None = None,
    method: str = "two_level",
    fixed=None,
    level1_rtol: float = 1e-7,
) -> SpaceTimePOD:
    """Space–time POD of trajectories U (S, n_t, N) at ``times`` (module docstring).

    Args:
        U: trajectories, (S, n_t, N) (or one, (n_t, N)).
        times: (n_t,) output times.
        X: spatial inner product or None (Euclidean).
        modes: keep at most this many POD modes (besides the fixed vectors).
        energy: keep the fewest POD modes capturing this fraction of the remainder's energy.
        method: ``"two_level"`` (default) or ``"direct"``.
        fixed: vectors the basis starts with (X-orthonormalised).
        level1_rtol: relative cut-off of the per-trajectory level.
    """
    if method not in SPACETIME_METHODS:
        raise SurrogateError(f"unknown space-time POD method {method!r}; expected one of "
                             f"{SPACETIME_METHODS}")
    U = _check(U, times)
    if method == "two_level":
        tl = TwoLevelPOD(times, X, fixed=fixed, level1_rtol=level1_rtol)
        for U_s in U:
            tl.add(U_s)
        return tl.finish(modes=modes, energy=energy)
    t0 = time.perf_counter()
    S, nt, N = U.shape
    Q, XQ = _fixed_basis(fixed, X, N)
    Y = (np.sqrt(time_weights(times))[None, :, None] * U).reshape(S * nt, N)
    Y = _remove(Y, Q, XQ)
    p = _pod_rows(Y, X, modes=modes, energy=energy)
    basis = _append(Q, XQ, p.modes, X)
    return SpaceTimePOD(modes=np.ascontiguousarray(basis), singular_values=p.singular_values,
                        total_energy=p.total_energy, method="direct", n_fixed=Q.shape[0],
                        seconds=time.perf_counter() - t0)
