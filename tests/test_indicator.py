"""The residual indicator η = ‖F(ũ; μ)‖_{X'} (hybrid/fem/indicator.py).

Against mathematics: η vanishes at the FEM solution; for a linear model η(u_h + εw) = ε‖Jw‖_{X'}
exactly and the effectivity lies between the extreme generalized eigenvalues of (J, X); for
the nonlinear model η(u_h + εw)/ε → ‖J(u_h)w‖_{X'} at first order, the limit computed
independently (scipy, from the gathered Jacobian and the store's X).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case

from .test_model_wiring import LIFTED, REACTION, _case
from .test_tangent import TIGHT

MU = np.array([0.8, 3.0])


def _nd(comm, cells: int = 8):
    from hybrid.fem.model_problem import ModelProblem

    text = _case("nonlinear_diffusion", cells=cells, physics="source = 5.0") + TIGHT
    return ModelProblem(parse_case(text, Path("nd.toml")), comm)


def _direction(p, seed: int = 0) -> np.ndarray:
    """A random field in store ordering, zero on the Dirichlet DOFs (on root)."""
    s = p.static_data()
    w = np.random.default_rng(seed).uniform(-1.0, 1.0, s.n_dofs)
    w[s.dirichlet_dofs] = 0.0
    return w


def _dual_norm_scipy(static, vec: np.ndarray) -> float:
    """sqrt(r_Fᵀ X_FF⁻¹ r_F), X = mass + stiffness of the store, F the free DOFs."""
    free = np.setdiff1d(np.arange(static.n_dofs), static.dirichlet_dofs)
    X = (static.mass + static.stiffness).tocsc()[free][:, free]
    r = vec[free]
    return float(np.sqrt(r @ spla.splu(X).solve(r)))


def test_eta_vanishes_at_the_fem_solution_and_is_first_order_in_a_perturbation():
    from dolfinx.fem import form
    from dolfinx.fem.petsc import assemble_matrix
    from mpi4py import MPI

    p = _nd(MPI.COMM_SELF)
    assert p.solve(MU).ok
    u = p.ordering.gather_function(p.u)
    s = p.static_data()
    eta0 = p.indicator(MU, np.zeros_like(u))          # ‖F(0)‖ = ‖s‖_{X'}
    assert eta0 > 0.1
    assert p.indicator(MU, u) < 1e-10 * eta0
    assert np.array_equal(p.ordering.gather_function(p.u), u)    # the state is untouched
    # first order: η(u + εw)/ε → ‖J(u) w‖_{X'}, J gathered and applied by scipy
    A = assemble_matrix(form(p.disc.J))
    A.assemble()
    Jmat = p.ordering.gather_matrix(A)
    w = _direction(p)
    eta1 = _dual_norm_scipy(s, Jmat @ w)
    eps = np.array([1e-2, 1e-3, 1e-4])
    d = np.array([abs(p.indicator(MU, u + e * w) / e - eta1) for e in eps])
    assert d[-1] < 1e-3 * eta1
    ratios = d[:-1] / d[1:]
    assert np.all((ratios > 5) & (ratios < 20)), ratios      # the error is O(ε)
    # the nonlinearity matters: at ε = 1e-2 the linearisation is off by more than round-off
    assert d[0] > 1e-6 * eta1
    p.destroy()


def test_linear_model_eta_is_exactly_linear_and_its_effectivity_is_bounded(tmp_path):
    """J = μ0 K + μ1 M, X = K + M: η/‖e‖_X ∈ [min μ, max μ] for every e ∈ V₀."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    (tmp_path / "rd.py").write_text(REACTION)
    text = _case("rd.py:Reaction", cells=8, qoi='["mean"]',
                 params="mu0 = { lower = 0.5, upper = 2.0 }\nmu1 = { lower = 0.1, upper = 4.0 }")
    p = ModelProblem(parse_case(text, tmp_path / "c.toml"), MPI.COMM_SELF)
    mu = np.array([0.6, 3.5])
    assert p.solve(mu).ok
    u = p.ordering.gather_function(p.u)
    s = p.static_data()
    X = s.mass + s.stiffness
    w = _direction(p, 1)
    # independent: J w = (μ0 K + μ1 M) w from the store's affine terms (θ = μ0, μ1)
    Jw = sum(m * A @ w for m, A in zip(mu, s.affine_a, strict=True))
    eta1 = _dual_norm_scipy(s, Jw)
    for eps in (1.0, 1e-3):
        eta = p.indicator(mu, u + eps * w)
        assert eta == pytest.approx(eps * eta1, rel=1e-8)
    for seed in range(4):
        e = _direction(p, 10 + seed) * (1.0 + seed)
        eff = p.indicator(mu, u + e) / np.sqrt(e @ X @ e)
        assert mu.min() * (1 - 1e-10) <= eff <= mu.max() * (1 + 1e-10), eff
    p.destroy()


def test_the_field_is_lifted_with_the_dirichlet_values(tmp_path):
    """u = 1 + x on ∂Ω: a field given with zero Dirichlet values (as a surrogate's) is lifted."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    (tmp_path / "lifted.py").write_text(LIFTED)
    text = _case("lifted.py", observations="points = [[0.3, 0.6]]")
    p = ModelProblem(parse_case(text, tmp_path / "c.toml"), MPI.COMM_SELF)
    mu = np.array([0.9, 1.5])
    assert p.solve(mu).ok
    u = p.ordering.gather_function(p.u)
    s = p.static_data()
    assert np.abs(u[s.dirichlet_dofs]).min() > 0.9
    zeroed = u.copy()
    zeroed[s.dirichlet_dofs] = 0.0
    ref = p.indicator(mu, np.zeros_like(u))
    assert p.indicator(mu, zeroed) < 1e-10 * ref
    p.destroy()


@pytest.mark.mpi(min_size=2)
def test_eta_on_two_ranks_equals_one_rank():
    from mpi4py import MPI

    par, ser = _nd(MPI.COMM_WORLD), _nd(MPI.COMM_SELF)
    assert par.solve(MU).ok and ser.solve(MU).ok
    u = ser.ordering.gather_function(ser.u)
    w = _direction(ser)
    field = u + 1e-2 * w
    a = par.indicator(MU, field if MPI.COMM_WORLD.rank == 0 else None)
    b = ser.indicator(MU, field)
    assert a == pytest.approx(b, rel=1e-10)
    par.destroy()
    ser.destroy()
