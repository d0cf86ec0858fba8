"""Reductor on a 1D two-block P1 model: projections, affine observations, symmetry, the
error bound's offline data and its errors, all against directly computed full-order values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.core.store import StaticData
from hybrid.surrogate import SurrogateError
from hybrid.surrogate.pod import pod
from hybrid.surrogate.reductor import (
    ResidualEstimator,
    _all_symmetric,
    build_estimator,
    energy_matrix,
    free_dofs,
    inner_product,
    reduce_affine_observations,
    reduce_operators,
)

N = 41                                      # nodes on [0, 1]; u(0) = u(1) = 0


def p1_1d(n_nodes: int = N):
    """Stiffness of the left and right halves, mass, and two load vectors."""
    h = 1.0 / (n_nodes - 1)
    ke = np.array([[1.0, -1.0], [-1.0, 1.0]]) / h
    me = h / 6.0 * np.array([[2.0, 1.0], [1.0, 2.0]])
    A = [sp.lil_matrix((n_nodes, n_nodes)) for _ in range(2)]
    M = sp.lil_matrix((n_nodes, n_nodes))
    for e in range(n_nodes - 1):
        ix = np.ix_([e, e + 1], [e, e + 1])
        q = 0 if e < (n_nodes - 1) // 2 else 1
        A[q][ix] = A[q][ix].toarray() + ke
        M[ix] = M[ix].toarray() + me
    M = M.tocsr()
    f = np.vstack([M @ np.ones(n_nodes), np.eye(n_nodes)[n_nodes // 3]])   # (Q_f = 2, N)
    return [a.tocsr() for a in A], M, f


AFF, MASS, F = p1_1d()
STIFF = sp.csr_matrix(AFF[0] + AFF[1])
D = np.array([0, N - 1])
FREE = free_dofs(N, D)
# observations: two point values (L rows) and one "flux" row set B (n_obs·Q_a rows), b
L = np.zeros((2, N))
L[0, 10], L[1, 30] = 1.0, 1.0
B = sp.csr_matrix(np.random.default_rng(0).standard_normal((2 * 2, N)))
b = np.array([[0.5, -1.0], [2.0, 0.25]])


def static(**kw) -> StaticData:
    base = dict(points=np.linspace(0, 1, N)[:, None],
                cells=np.c_[np.arange(N - 1), 1 + np.arange(N - 1)], cell_type="line",
                mass=MASS, stiffness=STIFF, dirichlet_dofs=D, affine_a=AFF,
                affine_f=F, qoi_functionals=np.vstack([MASS @ np.ones(N), L[0]]),
                observation_functionals=L, observation_affine=B, observation_affine_f=b)
    base.update(kw)
    return StaticData(**base)


def solve(mu, theta_f=(1.0, 0.5)):
    A = (mu[0] * AFF[0] + mu[1] * AFF[1]).tocsr()[FREE][:, FREE]
    u = np.zeros(N)
    u[FREE] = spla.spsolve(A.tocsc(), (np.asarray(theta_f) @ F)[FREE])
    return u


@pytest.fixture(scope="module")
def basis():
    mus = [(a, c) for a in (0.2, 1.0, 5.0) for c in (0.3, 2.0)]
    U = np.array([solve(m, (1.0, t)) for m in mus for t in (0.0, 1.0)])
    return pod(U, STIFF, modes=4).modes


def test_free_dofs():
    np.testing.assert_array_equal(free_dofs(5, [0, 3]), [1, 2, 4])
    np.testing.assert_array_equal(free_dofs(3, []), [0, 1, 2])


def test_energy_matrix_and_inner_products():
    X = energy_matrix(AFF, [2.0, 3.0])
    assert abs(X - (2 * AFF[0] + 3 * AFF[1])).max() < 1e-14
    assert abs(energy_matrix(AFF[:1], [4.0]) - 4 * AFF[0]).max() < 1e-14   # one term
    with pytest.raises(ValueError):
        energy_matrix(AFF, [1.0])                  # one coefficient for two terms
    s = static()
    assert abs(inner_product(s, "energy", np.ones(2)) - STIFF).max() < 1e-14
    assert abs(inner_product(s, "h1") - (MASS + STIFF)).max() < 1e-14
    assert abs(inner_product(s, "h10") - STIFF).max() < 1e-14
    assert abs(inner_product(s, "l2") - MASS).max() < 1e-14
    for kind in ("energy", "h1", "h10", "l2"):
        assert sp.issparse(inner_product(s, kind, np.ones(2)))
    with pytest.raises(SurrogateError, match=r"^the 'energy' inner product needs an affine "
                                             r"model; use --inner-product h1, h10 or l2$"):
        inner_product(static(affine_a=[]), "energy", np.ones(2))
    with pytest.raises(SurrogateError, match="the 'energy' inner product needs an affine"):
        inner_product(s, "energy")
    with pytest.raises(SurrogateError, match=r"unknown inner product 'h2'; expected one of"):
        inner_product(s, "h2")


def test_reduced_operators_are_the_projections(basis):
    Phi, s = basis, static()
    X = STIFF
    ops = reduce_operators(s, Phi, X)
    for q in range(2):
        np.testing.assert_allclose(ops.A[q], Phi @ AFF[q] @ Phi.T, atol=1e-12)
        np.testing.assert_array_equal(ops.A[q], ops.A[q].T)     # symmetric terms stay so
    np.testing.assert_allclose(ops.f, F @ Phi.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ops.qoi, s.qoi_functionals @ Phi.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ops.observations, L @ Phi.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ops.gram, np.eye(4), atol=1e-12)   # Φ is X-orthonormal
    np.testing.assert_array_equal(ops.gram, ops.gram.T)
    Br = (B @ Phi.T).reshape(2, 2, 4)
    np.testing.assert_allclose(ops.observations_a, Br, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(ops.observations_f, b)
    # a Galerkin solution reproduces the affine observations of its field
    mu, tf = np.array([0.7, 1.9]), np.array([1.0, 0.5])
    c = np.linalg.solve(ops.operator(mu), ops.rhs(tf))
    u = c @ Phi
    y_full = L @ u + np.einsum("iq,q->i", (B @ u).reshape(2, 2), mu) + b @ tf
    y_red = ops.observations @ c + np.einsum("iqj,q,j->i", ops.observations_a, mu, c) + b @ tf
    np.testing.assert_allclose(y_red, y_full, rtol=1e-12, atol=1e-13)
    # a single QoI row, and no observations at all
    one = reduce_operators(static(qoi_functionals=L[0], observation_functionals=None,
                                  observation_affine=None, observation_affine_f=None), Phi, X)
    assert one.qoi.shape == (1, 4) and one.observations.shape == (0, 4)
    assert one.observations_a is None and one.observations_f is None
    empty = reduce_operators(static(observation_functionals=np.zeros((0, N)),
                                    observation_affine=None), Phi, X)
    assert empty.observations.shape == (0, 4)


def test_a_non_symmetric_term_is_projected_as_it_is(basis):
    adv = sp.diags([np.ones(N - 1), -np.ones(N - 1)], [1, -1], shape=(N, N), format="csr")
    s = static(affine_a=[AFF[0], AFF[1] + adv])
    ops = reduce_operators(s, basis, STIFF)
    np.testing.assert_allclose(ops.A[1], basis @ (AFF[1] + adv) @ basis.T, atol=1e-12)
    assert np.abs(ops.A[1] - ops.A[1].T).max() > 1e-3


def test_all_symmetric_uses_a_relative_tolerance():
    S = sp.csr_matrix(np.array([[2.0, 1.0], [1.0, 3.0]]))
    skew = sp.csr_matrix(np.array([[0.0, 1.0], [-1.0, 0.0]]))
    assert _all_symmetric([S, 1e6 * S])
    assert not _all_symmetric([S, S + 1e-6 * skew])
    assert _all_symmetric([1e6 * S + 1e-8 * skew])          # 1e-14 relative: symmetric
    assert not _all_symmetric([1e-3 * S + 1e-14 * skew])    # 1e-11 relative: not
    assert _all_symmetric([S + 1e-3 * skew], tol=1e-2)
    assert _all_symmetric([sp.csr_matrix((3, 3))])


def test_affine_observation_errors(basis):
    assert reduce_affine_observations(static(observation_affine=None), basis) == (None, None)
    with pytest.raises(SurrogateError, match=r"observations depend on mu \(boundary fluxes\) "
                                             r"but it has no affine decomposition"):
        reduce_affine_observations(static(affine_a=[]), basis)
    with pytest.raises(SurrogateError, match=r"have shapes \(3, 41\) and \(2, 2\); expected "
                                             r"\(2·2, 41\) and \(2, 2\)"):
        reduce_affine_observations(static(observation_affine=B[:3]), basis)
    with pytest.raises(SurrogateError, match=r"have shapes \(4, 41\) and \(2, 1\); expected "
                                             r"\(2·2, 41\) and \(2, 2\)"):
        reduce_affine_observations(static(observation_affine_f=b[:, :1]), basis)
    with pytest.raises(SurrogateError, match=r"expected \(0·2, 41\) and \(0, 2\)"):
        reduce_affine_observations(static(observation_functionals=None), basis)
    with pytest.raises(SurrogateError, match="^the store has no affine decomposition: "
                                             "no reduced operators$"):
        reduce_operators(static(affine_a=[]), basis, STIFF)


def test_statics_without_affine_observation_fields_and_integer_inputs(basis):
    from types import SimpleNamespace

    old = SimpleNamespace(affine_a=AFF, affine_f=F)      # written before fluxes existed
    assert reduce_affine_observations(old, basis) == (None, None)
    _, bf = reduce_affine_observations(static(observation_affine_f=np.array([[1, 2], [3, 4]])),
                                       basis)
    assert bf.dtype == np.float64
    np.testing.assert_array_equal(bf, [[1.0, 2.0], [3.0, 4.0]])
    est = build_estimator(static(), basis, [3, 1], [1, 1])
    assert est.theta_ref.dtype == np.float64 and est.theta_ref.tolist() == [3.0, 1.0]


def full_dual_norm(mu, tf, c, Phi, theta_ref):
    X = energy_matrix(AFF, theta_ref)[FREE][:, FREE].tocsc()
    r = ((np.asarray(tf) @ F) - (mu[0] * AFF[0] + mu[1] * AFF[1]) @ (c @ Phi))[FREE]
    return float(np.sqrt(r @ spla.spsolve(X, r)))


def test_estimator_dual_norm_against_full_order(basis):
    theta_ref = np.array([3.0, 0.5])                  # X far from the stiffness matrix
    est = build_estimator(static(), basis, theta_ref, [1, 2])
    assert est.R_f.shape[1] == 2 and est.R_a.shape[1:] == (2, 4)
    np.testing.assert_array_equal(est.theta_ref, theta_ref)
    assert est.mu_ref.dtype == np.float64 and est.mu_ref.tolist() == [1.0, 2.0]
    rng = np.random.default_rng(1)
    mus = np.array([[0.4, 2.5], [1.5, 0.2], [0.9, 0.9]])
    tfs = np.array([[1.0, 0.0], [0.3, 2.0], [1.0, 1.0]])
    cs = rng.standard_normal((3, 4))
    ref = np.array([full_dual_norm(m, t, c, basis, theta_ref)
                    for m, t, c in zip(mus, tfs, cs, strict=True)])
    np.testing.assert_allclose(est.dual_norm(mus, tfs, cs), ref, rtol=1e-10)
    # broadcasting: a batch in any one argument, the others shared
    np.testing.assert_allclose(
        est.dual_norm(mus, tfs[0], cs[0]),
        [full_dual_norm(m, tfs[0], cs[0], basis, theta_ref) for m in mus], rtol=1e-10)
    np.testing.assert_allclose(
        est.dual_norm(mus[0], tfs, cs[0]),
        [full_dual_norm(mus[0], t, cs[0], basis, theta_ref) for t in tfs], rtol=1e-10)
    np.testing.assert_allclose(
        est.dual_norm(mus[0], tfs[0], cs),
        [full_dual_norm(mus[0], tfs[0], c, basis, theta_ref) for c in cs], rtol=1e-10)
    grid = est.dual_norm(mus[:, None, :], tfs[None, :2, :], cs[0])
    assert grid.shape == (3, 2)
    one = est.dual_norm(mus[0], tfs[0], cs[0])
    assert one.shape == ()
    assert float(one) == pytest.approx(ref[0], rel=1e-10)


def test_coercivity_lower_bound():
    est = ResidualEstimator(R_f=np.zeros((1, 1)), R_a=np.zeros((1, 2, 1)),
                            theta_ref=np.array([2.0, 4.0]), mu_ref=np.ones(2))
    assert est.coercivity_lower_bound(np.array([1.0, 1.0])) == pytest.approx(0.25)
    np.testing.assert_allclose(est.coercivity_lower_bound(np.array([[4.0, 4.0], [1.0, 8.0]])),
                               [1.0, 0.5])
    for bad in ([0.0, 1.0], [1.0, -1.0]):
        with pytest.raises(SurrogateError, match=r"^the min-theta coercivity bound needs "
                                                 r"theta_q\(mu\) > 0; no error bound at this "
                                                 r"parameter$"):
            est.coercivity_lower_bound(np.array(bad))


def test_estimator_errors(basis):
    with pytest.raises(SurrogateError, match="^the store has no affine decomposition: "
                                             "no residual estimator$"):
        build_estimator(static(affine_a=[]), basis, [1, 1], [1, 1])
    for bad in ([0.0, 1.0], [1.0, -2.0]):
        with pytest.raises(SurrogateError, match="^the reference parameter must have "
                                                 "theta_q > 0 for every q$"):
            build_estimator(static(), basis, bad, [1, 1])
    with pytest.raises(SurrogateError, match="inner product is singular on the free DOFs"):
        build_estimator(static(dirichlet_dofs=np.array([], dtype=int)), basis, [1, 1], [1, 1])
