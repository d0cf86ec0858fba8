"""POD in an inner product: exactness on low-rank sets, orthonormality, truncation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hybrid.surrogate import SurrogateError
from hybrid.surrogate.pod import gram_schmidt, norms, pod, projection_errors


def spd_matrix(n: int, seed: int = 0) -> sp.csr_matrix:
    """A sparse SPD matrix that is far from the identity (1D Laplacian + varying mass)."""
    rng = np.random.default_rng(seed)
    main = 2.0 + rng.uniform(0.5, 3.0, n)
    off = -np.ones(n - 1)
    return sp.diags([off, main, off], [-1, 0, 1], format="csr")


def low_rank_set(S: int, N: int, rank: int, seed: int = 1, decay: float = 0.3):
    """Snapshots U = C V (rank ``rank``) with singular values spread over a few decades."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((S, rank)) * decay ** np.arange(rank)
    V = rng.standard_normal((rank, N))
    return C @ V


def exact_singular_values(U: np.ndarray, X: sp.spmatrix) -> np.ndarray:
    """Singular values of U in the X inner product, independently: SVD of U L (X = L Lᵀ)."""
    L = np.linalg.cholesky(X.toarray())
    return np.linalg.svd(U @ L, compute_uv=False)


@pytest.mark.parametrize("method", ["qr", "snapshots", "randomized"])
def test_pod_reproduces_low_rank_set_and_is_orthonormal(method):
    N, S, r = 120, 40, 7
    X = spd_matrix(N)
    U = low_rank_set(S, N, r)
    P = pod(U, X, method=method, modes=r if method == "randomized" else None)
    assert P.n_modes == r                                   # rank detected, not more
    G = P.modes @ (X @ P.modes.T)
    assert np.abs(G - np.eye(r)).max() < 1e-12              # X-orthonormal
    err = projection_errors(P.modes, U, X, [r])
    assert err.max() < 1e-12                                # reproduced exactly
    s_exact = exact_singular_values(U, X)[:r]
    tol = 1e-7 if method == "snapshots" else 1e-10
    np.testing.assert_allclose(P.singular_values[:r], s_exact, rtol=tol)
    assert P.total_energy == pytest.approx(np.sum(s_exact**2), rel=1e-12)


def test_pod_is_not_euclidean():
    """The modes depend on X: Euclidean POD of the same set is not X-orthonormal."""
    N, S = 80, 30
    X = spd_matrix(N, seed=3)
    U = low_rank_set(S, N, 6, decay=0.8)
    PX = pod(U, X, modes=3)
    PE = pod(U, None, modes=3)
    assert np.abs(PX.modes @ (X @ PX.modes.T) - np.eye(3)).max() < 1e-12
    assert np.abs(PE.modes @ (X @ PE.modes.T) - np.eye(3)).max() > 1e-2


def test_truncation_by_energy_and_eckart_young():
    N, S = 150, 50
    X = spd_matrix(N, seed=5)
    U = low_rank_set(S, N, 20, seed=4, decay=0.5)
    s = exact_singular_values(U, X)
    total = np.sum(s**2)
    for energy in (0.9, 0.999, 1 - 1e-8):
        P = pod(U, X, energy=energy)
        n_expected = int(np.argmax(np.cumsum(s**2) >= energy * total)) + 1
        assert P.n_modes == n_expected
        assert P.energy_fraction() >= energy
        # Σ_s ‖u_s − Π u_s‖²_X equals the discarded energy Σ_{k>n} σ_k²
        e = projection_errors(P.modes, U, X, [P.n_modes])[0] * norms(U, X)
        assert np.sum(e**2) == pytest.approx(np.sum(s[P.n_modes:] ** 2), rel=1e-8)
    assert pod(U, X, modes=4, energy=0.999999).n_modes == 4   # the smaller of the two


def test_projection_errors_of_held_out_snapshots():
    N = 90
    X = spd_matrix(N, seed=7)
    U = low_rank_set(60, N, 12, seed=8, decay=0.6)
    train, held = U[:45], U[45:]
    P = pod(train, X, modes=8)
    err = projection_errors(P.modes, held, X, [2, 5, 8])
    # independent: X-orthogonal projection by solving the normal equations densely
    Xd = X.toarray()
    for i, n in enumerate([2, 5, 8]):
        Phi = P.modes[:n]
        coef = np.linalg.solve(Phi @ Xd @ Phi.T, Phi @ Xd @ held.T).T
        E = held - coef @ Phi
        ref = np.sqrt(np.einsum("ij,jk,ik->i", E, Xd, E)) / np.sqrt(
            np.einsum("ij,jk,ik->i", held, Xd, held))
        np.testing.assert_allclose(err[i], ref, rtol=1e-9)
    assert np.all(np.diff(err.mean(axis=1)) < 0)              # more modes, less error


def test_gram_schmidt_drops_dependent_rows():
    N = 60
    X = spd_matrix(N, seed=9)
    rng = np.random.default_rng(0)
    V = rng.standard_normal((5, N))
    rows = np.vstack([V, V[1] + 2 * V[3], V[:2] * 1e3, rng.standard_normal((1, N))])
    Q, kept = gram_schmidt(rows, X, block=3)
    assert kept.tolist() == [0, 1, 2, 3, 4, 8]
    assert np.abs(Q @ (X @ Q.T) - np.eye(6)).max() < 1e-13
    # span preserved: every input row is reproduced by its X-projection onto Q
    proj = (rows @ (X @ Q.T)) @ Q
    assert np.abs(proj - rows).max() < 1e-10 * np.abs(rows).max()


def test_pod_errors():
    X = spd_matrix(10)
    with pytest.raises(SurrogateError, match="all zero"):
        pod(np.zeros((3, 10)), X)
    with pytest.raises(SurrogateError, match="unknown POD method"):
        pod(np.ones((3, 10)), X, method="svd")
    with pytest.raises(SurrogateError, match="randomized POD needs"):
        pod(np.ones((3, 10)), X, method="randomized")
    with pytest.raises(SurrogateError, match="energy fraction"):
        pod(np.ones((3, 10)), X, energy=1.5)
