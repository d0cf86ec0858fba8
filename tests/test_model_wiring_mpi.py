"""Plug-in models on 2 ranks = on 1 rank (``mpirun -n 2 python -m pytest --with-mpi -m mpi``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401
from hybrid.core.case import parse_case

from .conftest import small_case_text
from .test_model_wiring import _case

pytestmark = pytest.mark.mpi(min_size=2)

TB = "hybrid.model.library.thermal_block:ThermalBlock"


@pytest.mark.parametrize("which", ["nonlinear_diffusion", "thermal_block_plugin"])
def test_model_problem_on_two_ranks_equals_one_rank(which):
    """Fields, static data (affine terms included), outputs and tangent-linear Jacobians."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    if which == "nonlinear_diffusion":
        text, mu = _case("nonlinear_diffusion", cells=10, physics="source = 5.0"), \
            np.array([0.7, 3.0])
    else:
        text = small_case_text(cells=10, blocks=2).replace('"thermal_block"', f'"{TB}"') + \
            "\n[observations]\ngrid = 2\n"
        mu = np.array([0.2, 0.9, 0.5, 0.35])
    case = parse_case(text, Path("t.toml"))
    par = ModelProblem(case, MPI.COMM_WORLD)
    assert par.V.dofmap.index_map.size_local < par.V.dofmap.index_map.size_global
    res = par.solve(mu)
    assert res.ok, res
    u_par = par.ordering.gather_function(par.u)
    out_par = [par.qoi(), par.observe(), par.observation_jacobian(mu), par.qoi_jacobian(mu)]
    st_par = par.static_data()
    rec_par = par.model_record()
    ser = ModelProblem(case, MPI.COMM_SELF)
    assert ser.solve(mu).ok
    u_ser = ser.ordering.gather_function(ser.u)
    out_ser = [ser.qoi(), ser.observe(), ser.observation_jacobian(mu), ser.qoi_jacobian(mu)]
    for a, b in zip(out_par, out_ser, strict=True):   # on every rank
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max()), (a, b)
    st_ser = ser.static_data()
    assert rec_par == ser.model_record()
    if MPI.COMM_WORLD.rank == 0:
        assert np.abs(u_par - u_ser).max() <= 1e-10 * np.abs(u_ser).max()
        assert np.array_equal(st_par.dirichlet_dofs, st_ser.dirichlet_dofs)
        assert abs(st_par.mass - st_ser.mass).max() < 1e-14
        assert np.allclose(st_par.observation_functionals, st_ser.observation_functionals,
                           atol=1e-14)
        assert len(st_par.affine_a) == len(st_ser.affine_a) == (
            4 if which != "nonlinear_diffusion" else 0)
        for Ap, As in zip(st_par.affine_a, st_ser.affine_a, strict=True):
            assert abs(Ap - As).max() < 1e-13
        assert np.allclose(st_par.affine_f, st_ser.affine_f, atol=1e-15)
    par.destroy()
    ser.destroy()
