"""Reduced operators, Galerkin solve and the residual-based error bound, against full order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from hybrid.surrogate.pod import norms, pod
from hybrid.surrogate.reductor import (
    build_estimator,
    energy_matrix,
    galerkin_solve,
    reduce_operators,
)
from tests.conftest_surrogate import BlockFEM, space


@pytest.fixture(scope="module")
def setup():
    fem = BlockFEM(cells=16, blocks=2)
    mu = space(2).sample(30, "sobol", 2)
    U = np.array([fem.solve(m) for m in mu])
    static = fem.static()
    X = energy_matrix(static.affine_a, np.ones(4))
    P = pod(U, X, modes=10)
    ops = reduce_operators(static, P.modes, X)
    est = build_estimator(static, P.modes, np.ones(4), np.ones(4))
    return fem, static, X, P.modes, ops, est


def test_energy_matrix_is_stiffness(setup):
    fem, static, X, *_ = setup
    assert abs(X - fem.stiffness).max() < 1e-14


def test_reduced_operators_are_projections(setup):
    fem, static, X, Phi, ops, _ = setup
    mu = np.array([0.2, 0.9, 0.4, 0.6])
    A = sum(m * Aq for m, Aq in zip(mu, fem.affine_a, strict=True))
    np.testing.assert_allclose(ops.operator(mu), Phi @ (A @ Phi.T), atol=1e-13)
    np.testing.assert_allclose(ops.rhs(np.ones(1)), Phi @ fem.f, atol=1e-15)
    np.testing.assert_allclose(ops.qoi, fem.qoi @ Phi.T, atol=1e-15)
    np.testing.assert_allclose(ops.gram, np.eye(Phi.shape[0]), atol=1e-12)


def test_galerkin_solution_has_zero_reduced_residual(setup):
    *_, ops, _ = setup
    mu = space(2).sample(50, "random", 5)
    c = galerkin_solve(ops, mu, np.ones((50, 1)))
    r = ops.residual(mu, np.ones((50, 1)), c)
    assert np.abs(r).max() < 1e-13 * np.abs(ops.f).max()
    # and the residual of anything else is not: the test can fail
    assert np.abs(ops.residual(mu, np.ones((50, 1)), c * 1.001)).max() > 1e-6


def test_galerkin_is_exact_when_the_solution_is_in_the_space():
    fem = BlockFEM(cells=12, blocks=2)
    mu_star = np.array([0.3, 0.7, 0.15, 0.95])
    mu = np.vstack([space(2).sample(12, "sobol", 1), mu_star])
    U = np.array([fem.solve(m) for m in mu])
    static = fem.static()
    X = fem.stiffness
    P = pod(U, X)                                    # all modes: spans every snapshot
    ops = reduce_operators(static, P.modes, X)
    est = build_estimator(static, P.modes, np.ones(4), np.ones(4))
    c = galerkin_solve(ops, mu_star, np.ones(1))
    u_star = fem.solve(mu_star)
    assert norms(u_star - c @ P.modes, X)[0] < 1e-10 * norms(u_star, X)[0]
    assert est.dual_norm(mu_star, np.ones(1), c) < 1e-10 * np.linalg.norm(est.R_f)


def test_dual_norm_matches_full_order_computation(setup):
    fem, static, X, Phi, ops, est = setup
    rng = np.random.default_rng(0)
    F = fem.free
    lu = spla.splu(X[F][:, F].tocsc())
    for _ in range(5):
        mu = rng.uniform(0.1, 1.0, 4)
        c = galerkin_solve(ops, mu, np.ones(1)) + 1e-3 * rng.standard_normal(Phi.shape[0])
        A = sum(m * Aq for m, Aq in zip(mu, fem.affine_a, strict=True))
        r = (fem.f - A @ (c @ Phi))[F]
        direct = np.sqrt(r @ lu.solve(r))
        assert est.dual_norm(mu, np.ones(1), c) == pytest.approx(direct, rel=1e-9)


def test_error_bound_is_rigorous_and_sharp_within_the_contrast(setup):
    """1 ≤ Δ/‖e‖_X ≤ γ(μ)/α_LB(μ) = max θ / min θ for the thermal block (energy norm at 1)."""
    fem, static, X, Phi, ops, est = setup
    mu = space(2).sample(40, "random", 17)
    rng = np.random.default_rng(1)
    c = galerkin_solve(ops, mu, np.ones((40, 1)))
    c_pert = c * (1 + 0.01 * rng.standard_normal(c.shape))      # any coefficients, not Galerkin
    U = np.array([fem.solve(m) for m in mu])
    for coef in (c, c_pert):
        bound = est.dual_norm(mu, np.ones((40, 1)), coef) / est.coercivity_lower_bound(mu)
        true = norms(U - coef @ Phi, X)
        eff = bound / true
        assert eff.min() >= 1.0 - 1e-9
        assert np.all(eff <= mu.max(axis=1) / mu.min(axis=1) * (1 + 1e-9))


def test_coercivity_bound_needs_positive_theta(setup):
    *_, est = setup
    from hybrid.surrogate import SurrogateError

    with pytest.raises(SurrogateError, match="theta_q"):
        est.coercivity_lower_bound(np.array([0.5, -0.1, 0.3, 0.2]))
