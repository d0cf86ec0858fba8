"""FEM verification under ``mpirun -n 2 python -m pytest --with-mpi -m mpi``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401
from hybrid.core.case import parse_case
from hybrid.fem.model_problem import ModelProblem

from .conftest import small_case_text
from .test_fem import check_mms_rates

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize(
    "petsc",
    [
        {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
        {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12},
    ],
)
def test_mms_convergence_parallel(petsc):
    from mpi4py import MPI

    assert MPI.COMM_WORLD.size >= 2
    check_mms_rates(MPI.COMM_WORLD, petsc)


@pytest.mark.parametrize("solver", ["mumps", "gamg"])
def test_one_rank_and_two_ranks_agree_in_store_ordering(solver):
    """The same μ solved on COMM_SELF and on COMM_WORLD gives the same store-ordered field."""
    from mpi4py import MPI

    petsc = (
        'ksp_type = "preonly"\npc_type = "lu"\npc_factor_mat_solver_type = "mumps"'
        if solver == "mumps"
        else 'ksp_type = "cg"\npc_type = "gamg"\nksp_rtol = 1e-12'
    )
    case = parse_case(small_case_text(cells=30, blocks=3, petsc=petsc), Path("t.toml"))
    mu = np.array([0.1, 0.9, 0.35, 0.6, 1.0, 0.2, 0.75, 0.45, 0.3])
    par = ModelProblem(case, MPI.COMM_WORLD)
    assert par.V.dofmap.index_map.size_local < par.V.dofmap.index_map.size_global
    assert par.solve(mu).ok
    u_par = par.ordering.gather_function(par.u)
    static_par = par.static_data()
    q_par = par.qoi()
    ser = ModelProblem(case, MPI.COMM_SELF)
    assert ser.solve(mu).ok
    u_ser = ser.ordering.gather_function(ser.u)
    if MPI.COMM_WORLD.rank == 0:
        tol = 1e-12 if solver == "mumps" else 1e-9
        assert np.abs(u_par - u_ser).max() <= tol * np.abs(u_ser).max()
        static_ser = ser.static_data()
        assert np.allclose(static_par.points, static_ser.points)
        assert abs(static_par.stiffness - static_ser.stiffness).max() < 1e-12
        assert abs(static_par.mass - static_ser.mass).max() < 1e-15
        assert np.array_equal(static_par.dirichlet_dofs, static_ser.dirichlet_dofs)
        # same cells as sets of store-ordered vertices
        a = {tuple(sorted(c)) for c in static_par.cells}
        b = {tuple(sorted(c)) for c in static_ser.cells}
        assert a == b
    assert np.allclose(q_par, ser.qoi(), rtol=1e-9)
    par.destroy()
    ser.destroy()


def test_observations_parallel_equal_serial():
    from mpi4py import MPI

    text = small_case_text(cells=12, blocks=2) + (
        "\n[observations]\ngrid = 4\npoints = [[0.5, 0.5], [0.25, 0.5]]\n"
        "averages = { top = [0.0, 0.5, 1.0, 1.0] }\n")
    case = parse_case(text, Path("t.toml"))
    mu = np.array([0.3, 0.8, 0.15, 0.6])
    par = ModelProblem(case, MPI.COMM_WORLD)
    ser = ModelProblem(case, MPI.COMM_SELF)
    assert par.solve(mu).ok and ser.solve(mu).ok
    y_par, y_ser = par.observe(), ser.observe()
    assert y_par.shape == (19,)
    assert np.allclose(y_par, y_ser, rtol=1e-12, atol=1e-15)
    rows_par = par.observation_rows()
    if MPI.COMM_WORLD.rank == 0:
        assert np.allclose(rows_par, ser.observation_rows(), atol=1e-14)
    par.destroy()
    ser.destroy()
