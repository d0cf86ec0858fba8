"""Tangent-linear and adjoint Jacobians of plug-in models (hybrid/fem/tangent.py).

Both modes are checked against central finite differences of full FEM solves (Newton for the
nonlinear diffusion model, tight tolerances) and against each other; serial and on 2 ranks
(``mpirun -n 2 python -m pytest --with-mpi -m mpi tests/test_tangent.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case

from .test_model_wiring import REACTION, _case

MU = np.array([0.8, 3.0])
TIGHT = ('\n[solver.petsc]\nsnes_rtol = 1e-12\nsnes_atol = 1e-13\nksp_type = "preonly"\n'
         'pc_type = "lu"\npc_factor_mat_solver_type = "mumps"\n')


def _nd(comm, extra: str = TIGHT, cells: int = 6):
    from hybrid.fem.model_problem import ModelProblem

    text = _case("nonlinear_diffusion", cells=cells, physics="source = 5.0") + extra
    return ModelProblem(parse_case(text, Path("nd.toml")), comm)


def _outputs(p, m):
    res = p.solve(m)
    assert res.ok, res
    return np.concatenate([p.observe(), p.qoi()])


def central_fd(p, mu, rel: float = 1e-4) -> np.ndarray:
    """Central differences with step h_q = rel·|μ_q|: truncation O(h²) ≈ 1e-8 relative,
    round-off ≈ (Newton residual ≈ 1e-13)/h ≈ 1e-9: both far below the 1e-6 checked."""
    cols = []
    for q in range(len(mu)):
        h = rel * max(abs(mu[q]), 1.0)
        e = np.zeros(len(mu))
        e[q] = h
        cols.append((_outputs(p, mu + e) - _outputs(p, mu - e)) / (2 * h))
    return np.stack(cols, axis=-1)


def check_modes_against_fd(comm) -> None:
    p = _nd(comm)
    assert not p.linear
    fd = central_fd(p, MU)
    assert p.solve(MU).ok
    sens = p.sensitivity()
    J = {mode: np.vstack([p.observation_jacobian(MU, mode), p.qoi_jacobian(MU, mode)])
         for mode in ("tangent", "adjoint")}
    assert sens.n_setups == 1          # one factorisation of J served both modes
    scale = np.abs(fd).max(axis=0)
    assert np.all(scale > 1e-3)        # both parameters matter
    for mode, Jm in J.items():
        err = np.abs(Jm - fd).max(axis=0) / scale
        assert np.all(err < 1e-6), (mode, err)
    d = np.abs(J["tangent"] - J["adjoint"]).max(axis=0) / scale
    assert np.all(d < 1e-10), d
    # the two modes are not the same computation: the adjoint of a non-symmetric J
    A = sens.ksp.getOperators()[0]
    assert not A.isSymmetric(tol=1e-8)
    p.destroy()


def test_tangent_and_adjoint_equal_central_fd_serial():
    from mpi4py import MPI

    check_modes_against_fd(MPI.COMM_SELF)


@pytest.mark.mpi(min_size=2)
def test_tangent_and_adjoint_equal_central_fd_two_ranks():
    from mpi4py import MPI

    assert MPI.COMM_WORLD.size >= 2
    check_modes_against_fd(MPI.COMM_WORLD)


@pytest.mark.mpi(min_size=2)
def test_two_rank_jacobians_equal_one_rank():
    from mpi4py import MPI

    par, ser = _nd(MPI.COMM_WORLD), _nd(MPI.COMM_SELF)
    for mode in ("tangent", "adjoint"):
        a = np.vstack([par.observation_jacobian(MU, mode), par.qoi_jacobian(MU, mode)])
        b = np.vstack([ser.observation_jacobian(MU, mode), ser.qoi_jacobian(MU, mode)])
        assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max()
    par.destroy()
    ser.destroy()


def test_auto_picks_the_fewer_solves_and_reuses_the_state():
    """m = 5 observations > P = 2: tangents (2 solves); the 1 QoI then reuses them. At a new
    state, the QoI alone (m = 1 < P) takes one adjoint solve."""
    from mpi4py import MPI

    p = _nd(MPI.COMM_SELF)
    s = p.sensitivity()
    Jo = p.observation_jacobian(MU)
    assert (s.n_setups, s.n_solves) == (1, 2)
    Jq = p.qoi_jacobian(MU)
    assert (s.n_setups, s.n_solves) == (1, 2)
    mu2 = MU * 1.1
    Jq2 = p.qoi_jacobian(mu2)          # solves at mu2 first (the state differs)
    assert (s.n_setups, s.n_solves) == (2, 3)
    assert np.allclose(Jq2, p.qoi_jacobian(mu2, "tangent"), rtol=1e-10)
    assert not np.allclose(Jq, Jq2, rtol=1e-3)
    assert Jo.shape == (5, 2) and Jq.shape == (1, 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        p.observation_jacobian(mu2, "reverse")
    p.destroy()


def test_an_iterative_solver_gives_the_direct_jacobians():
    from mpi4py import MPI

    gmres = ('\n[solver.petsc]\nsnes_rtol = 1e-12\nsnes_atol = 1e-13\nksp_type = "gmres"\n'
             'pc_type = "gamg"\nksp_rtol = 1e-13\nksp_atol = 1e-15\n')
    it, lu = _nd(MPI.COMM_SELF, gmres), _nd(MPI.COMM_SELF)
    assert it.sensitivity().options["pc_type"] == "gamg"
    for mode in ("tangent", "adjoint"):
        a = np.vstack([it.observation_jacobian(MU, mode), it.qoi_jacobian(MU, mode)])
        b = np.vstack([lu.observation_jacobian(MU, mode), lu.qoi_jacobian(MU, mode)])
        assert np.abs(a - b).max() <= 1e-8 * np.abs(b).max(), mode
        assert it.sensitivity().ksp.getIterationNumber() > 1     # really iterative
    from petsc4py import PETSc

    assert not [k for k in PETSc.Options().getAll() if k.startswith("sens_")]   # no leak
    it.destroy()
    lu.destroy()


def test_a_linear_model_reuses_the_factors_of_its_solve(tmp_path):
    """Reaction–diffusion (linear in u, F affine in μ): no J is assembled or factorised
    for the derivatives; both modes equal central FD of the linear solves."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    (tmp_path / "rd.py").write_text(REACTION)
    text = _case("rd.py:Reaction", cells=6, qoi='["mean", "first_moment"]',
                 params="mu0 = { lower = 0.5, upper = 2.0 }\nmu1 = { lower = 0.1, upper = 4.0 }")
    p = ModelProblem(parse_case(text, tmp_path / "c.toml"), MPI.COMM_SELF)
    assert p.linear
    mu = np.array([1.3, 2.2])
    fd = central_fd(p, mu)
    assert p.solve(mu).ok
    s = p.sensitivity()
    assert s.ksp is p.disc.linear_ksp
    for mode in ("tangent", "adjoint"):
        J = np.vstack([p.observation_jacobian(mu, mode), p.qoi_jacobian(mu, mode)])
        assert np.abs(J - fd).max() <= 1e-6 * np.abs(fd).max(), mode
    assert s.n_setups == 0
    p.destroy()


def test_products_take_one_solve_and_umbridge_uses_them(tmp_path):
    """sᵀJ by one adjoint solve and J v by one tangent solve, equal to the full Jacobian's;
    UM-Bridge Gradient/ApplyJacobian of a served plug-in FEM model go through them."""
    from mpi4py import MPI

    from hybrid.serve.models import FEMModel as Served

    p = _nd(MPI.COMM_SELF)
    J = {"observations": p.observation_jacobian(MU, "tangent"), "qoi": p.qoi_jacobian(MU)}
    s = p.sensitivity()
    rng = np.random.default_rng(3)
    for out, Jo in J.items():
        sens, vec = rng.normal(size=Jo.shape[0]), rng.normal(size=2)
        n = s.n_solves
        assert np.allclose(p.vjp(MU, out, sens), sens @ Jo, rtol=1e-10, atol=0)
        assert np.allclose(p.jvp(MU, out, vec), Jo @ vec, rtol=1e-10, atol=0)
        assert s.n_solves == n + 2 and s.n_setups == 1
    text = _case("nonlinear_diffusion", cells=6, physics="source = 5.0") + TIGHT
    (tmp_path / "nd.toml").write_text(text)
    m = Served(tmp_path / "nd.toml", MPI.COMM_SELF)
    assert m.supports_gradient() and m.supports_apply_jacobian()
    sens, vec = rng.normal(size=5), rng.normal(size=2)
    g = np.array(m.gradient(0, 0, [MU.tolist()], sens.tolist()))
    jv = np.array(m.apply_jacobian(1, 0, [MU.tolist()], vec.tolist()))
    ms = m.model.problem.sensitivity()
    assert ms.n_solves == 2 and ms.n_setups <= 2       # one solve per product
    assert np.allclose(g, sens @ J["observations"], rtol=1e-10)
    assert np.allclose(jv, J["qoi"] @ vec, rtol=1e-10)
    m.close()
    p.destroy()
