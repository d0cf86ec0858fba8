"""POD at its edges: nearly dependent sets, tolerances, truncation boundaries, rank lists."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from hybrid.surrogate import SurrogateError
from hybrid.surrogate.pod import POD, as_sparse, gram_schmidt, norms, pod, projection_errors

from .test_pod import exact_singular_values, low_rank_set, spd_matrix

N = 60
X = spd_matrix(N, seed=4)


def nearly_dependent_rows(seed: int = 0) -> np.ndarray:
    """Two random rows, then combinations of them plus perturbations of 1e-3 … 1e-10."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((2, N))
    rows = [base[0], base[1]]
    for eps in (1e-3, 1e-5, 1e-7, 1e-9, 1e-10):
        c = rng.standard_normal(2)
        rows.append(c @ base + eps * rng.standard_normal(N))
    return np.array(rows)


def orthonormality_defect(Q: np.ndarray, Xm=X) -> float:
    G = Q @ (Xm @ Q.T) if Xm is not None else Q @ Q.T
    return float(np.abs(G - np.eye(Q.shape[0])).max())


@pytest.mark.parametrize("block", [1, 2, 3, 64])
def test_gram_schmidt_on_a_nearly_dependent_set(block):
    """Heavy cancellation (residuals down to 1e-10 of the row) still gives X-orthonormal rows
    spanning the set, whatever the blocking; a row below the tolerance is dropped."""
    V = nearly_dependent_rows()
    Q, kept = gram_schmidt(V, X, block=block)
    assert kept.tolist() == list(range(V.shape[0]))       # 1e-10 > rtol = 1e-12: all kept
    assert orthonormality_defect(Q) < 1e-12
    # span(Q) = span(V): every row is reproduced by its X-projection onto Q
    P = (V @ (X @ Q.T)) @ Q
    assert np.abs(P - V).max() < 1e-12 * np.abs(V).max()
    # with a looser tolerance the rows perturbed by < 1e-8 (relative) are dependent
    Q2, kept2 = gram_schmidt(V, X, rtol=1e-8, block=block)
    assert kept2.tolist() == [0, 1, 2, 3, 4]
    assert orthonormality_defect(Q2) < 1e-12


def test_gram_schmidt_across_blocks_matches_one_block():
    V = np.vstack([nearly_dependent_rows(1), low_rank_set(5, N, 5, seed=2)])
    Q1, k1 = gram_schmidt(V, X, block=1)
    Q64, k64 = gram_schmidt(V, X)
    assert k1.tolist() == k64.tolist()
    assert np.abs(Q1 - Q64).max() < 1e-6      # same basis (rows fixed up to round-off)
    assert orthonormality_defect(Q1) < 1e-12 and orthonormality_defect(Q64) < 1e-12


def test_gram_schmidt_tolerance_is_relative_to_the_x_norm():
    """X weighs the first coordinate 1e8: a row that differs from e_1 by 1e-5 in another
    coordinate is dependent relative to its X-norm (1e4), not to its Euclidean norm (1)."""
    Xw = sp.diags(np.r_[1e8, np.ones(4)]).tocsr()
    e1, e2 = np.eye(5)[0], np.eye(5)[1]
    V = np.array([e1, e1 + 1e-5 * e2])
    Q, kept = gram_schmidt(V, Xw, rtol=1e-6)
    assert kept.tolist() == [0]
    np.testing.assert_allclose(Q, [e1 / 1e4], rtol=1e-15)
    Q, kept = gram_schmidt(V, Xw, rtol=1e-12)              # 1e-9 relative: independent
    assert kept.tolist() == [0, 1] and orthonormality_defect(Q, Xw) < 1e-12
    np.testing.assert_allclose(np.abs(Q[1]), e2, atol=1e-10)


def test_gram_schmidt_drops_zero_and_exactly_dependent_rows():
    e = np.eye(4)
    Q, kept = gram_schmidt(np.array([e[0], 0 * e[1], e[0], e[2]]), None, rtol=0.0)
    assert kept.tolist() == [0, 3] and kept.dtype.kind == "i"
    np.testing.assert_array_equal(Q, e[[0, 2]])
    Q, kept = gram_schmidt(np.zeros((3, 4)))
    assert Q.shape == (0, 4) and kept.shape == (0,) and kept.dtype.kind == "i"
    Q, kept = gram_schmidt(np.array([e[0], 1e-3 * e[1]]), None, atol=1e-2)   # absolute drop
    assert kept.tolist() == [0]


def test_norms():
    V = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(norms(V), [5.0, 0.0])
    np.testing.assert_allclose(norms(V, sp.diags([4.0, 1.0])), [np.sqrt(4 * 9 + 16.0), 0.0])
    assert as_sparse(None) is None
    A = as_sparse(np.eye(3))
    assert sp.issparse(A) and A.format == "csr" and A.nnz == 3


def orthogonal_rows(sigmas, n=8, seed=0) -> np.ndarray:
    """Rows with Euclidean singular values exactly ``sigmas`` (orthonormal directions)."""
    Qf, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, len(sigmas))))
    return np.asarray(sigmas)[:, None] * Qf.T


def test_energy_truncation_at_an_exact_boundary():
    """Σ σ_k² = 16 + 4 + 1 + 0.25: energy 20/21.25 needs exactly two modes, a hair more
    needs three."""
    U = np.diag([4.0, 2.0, 1.0, 0.5])
    total = 21.25
    P = pod(U, energy=20.0 / total)
    assert P.n_modes == 2
    assert P.energy_fraction() == pytest.approx(20.0 / total, rel=1e-14)
    assert pod(U, energy=20.0 / total * (1 + 1e-9)).n_modes == 3
    assert pod(U, energy=1.0).n_modes == 4
    assert P.energy_fraction(1) == pytest.approx(16.0 / total, rel=1e-14)
    assert P.energy_fraction(4) == pytest.approx(1.0, rel=1e-14)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(SurrogateError, match="energy fraction must be in"):
            pod(U, energy=bad)


def test_energy_fraction_of_zero_energy_is_one():
    P = POD(modes=np.zeros((1, 3)), singular_values=np.zeros(1), total_energy=0.0,
            method="qr")
    assert P.energy_fraction() == 1.0 and P.energy_fraction(1) == 1.0


def test_modes_limits():
    U = orthogonal_rows([3.0, 2.0, 1.0])
    assert pod(U, modes=1).n_modes == 1
    assert pod(U, modes=5).n_modes == 3
    for bad in (0, -2):
        with pytest.raises(SurrogateError, match=f"number of modes must be >= 1, got {bad}"):
            pod(U, modes=bad)


@pytest.mark.parametrize("method", ["qr", "snapshots", "randomized"])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_rtol_is_relative_to_the_largest_singular_value(method, scale):
    U = scale * orthogonal_rows([1.0, 1e-2, 1e-5])
    P = pod(U, rtol=1e-3, method=method, modes=3 if method == "randomized" else None)
    assert P.n_modes == 2
    np.testing.assert_allclose(P.singular_values[:2], scale * np.array([1.0, 1e-2]),
                               rtol=1e-6)
    assert orthonormality_defect(P.modes, None) < 1e-10


def test_qr_resolves_singular_values_far_below_sqrt_eps():
    """The default method keeps a direction 5e-13 below the first (module docstring)."""
    e = np.eye(6)
    U = np.array([e[0], e[0] + 5e-13 * e[1]])
    P = pod(U, rtol=1e-14)
    s = np.linalg.svd(U, compute_uv=False)
    assert P.method == "qr" and P.n_modes == 2
    np.testing.assert_allclose(P.singular_values, s, rtol=1e-2)


def test_one_snapshot_every_method():
    u = np.random.default_rng(3).standard_normal(N)
    nu = float(np.sqrt(u @ (X @ u)))
    for method in ("auto", "qr", "snapshots", "randomized"):
        P = pod(u[None] * 1e-3, X, method=method, modes=1 if method == "randomized" else None)
        assert P.n_modes == 1 and P.method == ("qr" if method == "auto" else method)
        np.testing.assert_allclose(P.singular_values[0], 1e-3 * nu, rtol=1e-12)
        np.testing.assert_allclose(np.abs(P.modes[0] @ (X @ u)), nu, rtol=1e-12)
        assert orthonormality_defect(P.modes) < 1e-12


def test_snapshots_method_on_repeated_snapshots():
    """A Gram matrix of rank one (zero and round-off negative eigenvalues) gives one mode."""
    u = np.random.default_rng(4).standard_normal(N)
    U = np.array([u, u, -u, 2 * u])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = pod(U, X, method="snapshots")
    nu = float(np.sqrt(u @ (X @ u)))
    assert P.n_modes == 1
    np.testing.assert_allclose(P.singular_values[0], np.sqrt(7.0) * nu, rtol=1e-12)
    assert orthonormality_defect(P.modes) < 1e-12
    assert projection_errors(P.modes, U, X).max() < 1e-12


@pytest.mark.parametrize("method", ["qr", "snapshots", "randomized"])
def test_zero_and_empty_snapshots_are_clean_errors(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SurrogateError, match="^the snapshots are all zero: no POD basis$"):
            pod(np.zeros((3, 5)), method=method, modes=2)
    with pytest.raises(SurrogateError, match="^POD needs at least one snapshot$"):
        pod(np.zeros((0, 5)), method=method)


def test_method_choice_and_errors():
    U = np.random.default_rng(5).standard_normal((2001, 4))
    assert pod(U, modes=3).method == "randomized"            # many snapshots, a rank
    assert pod(U).method == "qr"                             # no rank: the exact method
    assert pod(U[:2000], modes=3).method == "qr"
    with pytest.raises(SurrogateError, match="unknown POD method 'svd'"):
        pod(U[:5], method="svd")
    with pytest.raises(SurrogateError,
                       match=r"^the randomized POD needs a number of modes \(--modes\)$"):
        pod(U[:5], method="randomized")


def test_randomized_is_seeded_and_uses_the_documented_defaults():
    U = low_rank_set(40, N, 30, decay=0.9)         # rank 30 > modes + oversampling
    a = pod(U, X, method="randomized", modes=4)
    b = pod(U, X, method="randomized", modes=4)
    c = pod(U, X, method="randomized", modes=4, oversampling=10, power_iterations=2, seed=0)
    np.testing.assert_array_equal(a.modes, b.modes)
    np.testing.assert_array_equal(a.modes, c.modes)
    assert not np.array_equal(a.singular_values,
                              pod(U, X, method="randomized", modes=4, seed=1).singular_values)


def test_randomized_without_power_iterations_is_x_orthonormal_and_exact_on_low_rank():
    U = low_rank_set(30, N, 5)
    P = pod(U, X, method="randomized", modes=5, power_iterations=0)
    assert orthonormality_defect(P.modes) < 1e-12
    assert projection_errors(P.modes, U, X, [5]).max() < 1e-12
    np.testing.assert_allclose(P.singular_values[:5], exact_singular_values(U, X)[:5],
                               rtol=1e-10)


def test_projection_errors_against_the_svd_tail():
    """Σ_s ‖u_s − Π_r u_s‖²_X = Σ_{k>r} σ_k² for the POD basis (Eckart–Young in X)."""
    U = low_rank_set(25, N, 8, decay=0.5)
    P = pod(U, X)
    s = exact_singular_values(U, X)
    ref = norms(U, X)
    E = projection_errors(P.modes, U, X)                    # default ranks 1 … n
    assert E.shape == (P.n_modes, U.shape[0]) == (8, 25)
    for r in range(1, 9):
        np.testing.assert_allclose(np.sum((E[r - 1] * ref) ** 2), np.sum(s[r:] ** 2),
                                   rtol=1e-8, atol=1e-24 * s[0] ** 2)
    # rank 0 is the snapshot itself; ranks in any order give the same rows
    np.testing.assert_allclose(projection_errors(P.modes, U, X, [0])[0], 1.0, rtol=1e-14)
    mixed = projection_errors(P.modes, U, X, [5, 2, 2, 8, 0, 3])
    np.testing.assert_allclose(mixed[[0, 1, 2, 3, 5]], E[[4, 1, 1, 7, 2]], atol=1e-13)
    np.testing.assert_allclose(mixed[4], 1.0, rtol=1e-14)


def test_projection_errors_are_relative_and_zero_rows_are_exact():
    U = 1e-4 * orthogonal_rows([2.0, 1.0], n=5)
    modes = U[:1] / np.linalg.norm(U[0])
    E = projection_errors(modes, np.vstack([U, np.zeros(5)]), None, [1])
    np.testing.assert_allclose(E[0], [0.0, 1.0, 0.0], atol=1e-12)


def test_projection_errors_refuse_ranks_out_of_range():
    U = low_rank_set(6, N, 3)
    modes = pod(U, X).modes
    for bad in ([-1], [4], [1, 4], [-1, 2]):
        with pytest.raises(SurrogateError, match=r"ranks must be in 0 … 3"):
            projection_errors(modes, U, X, bad)


def test_randomized_power_iterations_converge_in_the_x_inner_product():
    """Each power iteration (in X) sharpens the leading singular values (Halko et al. 2011)."""
    rng = np.random.default_rng(0)
    Xs = spd_matrix(80, seed=3)
    U = (rng.standard_normal((60, 30)) * 0.8 ** np.arange(30)) @ rng.standard_normal((30, 80))
    s = exact_singular_values(U, Xs)[:3]
    err = [np.abs(pod(U, Xs, method="randomized", modes=3, oversampling=2,
                      power_iterations=q).singular_values[:3] / s - 1).max() for q in (1, 3)]
    assert err[1] < 1e-6 and err[1] < 1e-2 * err[0]


def test_integer_input_is_read_as_float():
    V = np.array([[1, 1, 0], [1, 0, 0], [2, 1, 1]])
    for block in (1, 64):
        Q, kept = gram_schmidt(V, block=block)
        assert kept.tolist() == [0, 1, 2] and orthonormality_defect(Q, None) < 1e-15
        np.testing.assert_allclose(np.abs(Q), np.abs(gram_schmidt(V.astype(float))[0]),
                                   atol=1e-15)
    E = projection_errors(Q[:2], V, None, [1, 2])
    np.testing.assert_allclose(E[1], [0.0, 0.0, 1.0 / np.sqrt(6.0)], atol=1e-15)
