"""Elasticity on 2 ranks = on 1 rank, in store ordering (``mpirun -n 2 … --with-mpi -m mpi``).

- The blocked store ordering on 2 ranks gives the serial points, fields, matrices, cells.
- ModelProblem: field, static data (mass, affine terms, Dirichlet DOFs, sensor rows), QoIs,
  observations and tangent-linear Jacobians agree (MUMPS to 1e-10; CG + GAMG to its tolerance).
- A campaign with G = 2 ranks per sample equals one with G = 1 (two groups of one rank).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401
from hybrid.core.case import load_case, parse_case

from .test_elasticity import GAMG, beam_case_text, beam_mesh, vector_ordering_checks

pytestmark = pytest.mark.mpi(min_size=2)

OBS = '[observations]\npoints = [[1.0, 1.0, 0.5], [4.0, 0.5, 0.0]]\ncomponents = ["x", "y", "z"]'


def _shared_dir(tmp_path) -> Path:
    from mpi4py import MPI

    return Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))


def _mesh(tmp_path) -> Path:
    from mpi4py import MPI

    d = _shared_dir(tmp_path)
    if MPI.COMM_WORLD.rank == 0:
        beam_mesh(d)
    MPI.COMM_WORLD.barrier()
    return beam_mesh(d)


def test_vector_ordering_on_two_ranks_equals_one_rank():
    from mpi4py import MPI

    par = vector_ordering_checks(MPI.COMM_WORLD, degree=2)
    ser = vector_ordering_checks(MPI.COMM_SELF, degree=2) if MPI.COMM_WORLD.rank == 0 else {}
    if MPI.COMM_WORLD.rank == 0:
        assert np.abs(par["points"] - ser["points"]).max() < 1e-14
        assert np.array_equal(par["cells"][np.lexsort(par["cells"].T)],
                              ser["cells"][np.lexsort(ser["cells"].T)])
        assert np.array_equal(par["bc"], ser["bc"])
        assert np.abs(par["U"] - ser["U"]).max() < 1e-14
        assert abs(par["M"] - ser["M"]).max() < 1e-15


@pytest.mark.parametrize("solver", ["mumps", "gamg"])
def test_elasticity_on_two_ranks_equals_one_rank(tmp_path, solver):
    from mpi4py import MPI

    from hybrid.core.examples import MUMPS
    from hybrid.fem.model_problem import ModelProblem

    text = beam_case_text(_mesh(tmp_path), degree=2, observations=OBS,
                          petsc=MUMPS if solver == "mumps" else GAMG)
    case = parse_case(text, Path("beam.toml"))
    mu = np.array([2.0, 6.0, 1.5])
    tol = 1e-10 if solver == "mumps" else 1e-8
    par = ModelProblem(case, MPI.COMM_WORLD)
    assert par.V.dofmap.index_map.size_local < par.V.dofmap.index_map.size_global
    assert par.solve(mu).ok
    u_par = par.ordering.gather_function(par.u)
    out_par = [par.qoi(), par.observe(), par.observation_jacobian(mu), par.qoi_jacobian(mu)]
    st_par = par.static_data()
    ser = ModelProblem(case, MPI.COMM_SELF)
    assert ser.solve(mu).ok
    u_ser = ser.ordering.gather_function(ser.u)
    out_ser = [ser.qoi(), ser.observe(), ser.observation_jacobian(mu), ser.qoi_jacobian(mu)]
    for a, b in zip(out_par, out_ser, strict=True):
        assert np.allclose(a, b, rtol=tol, atol=tol * np.abs(b).max()), (a, b)
    st_ser = ser.static_data()
    assert par.model_record() == ser.model_record()
    if MPI.COMM_WORLD.rank == 0:
        assert np.abs(u_par - u_ser).max() <= tol * np.abs(u_ser).max()
        # P2 edge nodes: coordinates computed per cell differ by round-off across partitions
        assert np.abs(st_par.points - st_ser.points).max() < 1e-14
        assert np.array_equal(st_par.dirichlet_dofs, st_ser.dirichlet_dofs)
        assert abs(st_par.mass - st_ser.mass).max() < 1e-15
        assert abs(st_par.stiffness - st_ser.stiffness).max() < 1e-13
        assert np.allclose(st_par.observation_functionals, st_ser.observation_functionals,
                           atol=1e-14)
        assert np.allclose(st_par.qoi_functionals, st_ser.qoi_functionals, atol=1e-15)
        assert len(st_par.affine_a) == len(st_ser.affine_a) == 2
        for Ap, As in zip(st_par.affine_a, st_ser.affine_a, strict=True):
            assert abs(Ap - As).max() < 1e-13
        assert np.allclose(st_par.affine_f, st_ser.affine_f, atol=1e-15)
        # u(αE, P) = u(E, P)/α and u is linear in P: Euler's identities for the tangents,
        # Σ_k E_k ∂y/∂E_k = −y and P ∂y/∂P = y
        J = out_ser[2]
        y = out_ser[1]
        assert np.allclose(J[:, :2] @ mu[:2], -y, rtol=1e-8, atol=1e-10 * np.abs(y).max())
        assert np.allclose(J[:, 2] * mu[2], y, rtol=1e-8, atol=1e-10 * np.abs(y).max())
    par.destroy()
    ser.destroy()


def test_campaign_two_ranks_per_sample_equals_one(tmp_path):
    """G = 2 (one group of two ranks) and G = 1 (two groups) fill equal stores."""
    from mpi4py import MPI

    from hybrid.core.store import SnapshotStore
    from hybrid.workflows.campaign import run_campaign

    d = _shared_dir(tmp_path)
    mesh = _mesh(tmp_path)
    path = d / "beam.toml"
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(beam_case_text(mesh, degree=1, samples=6, observations=OBS))
    MPI.COMM_WORLD.barrier()
    case = load_case(path)
    r1 = run_campaign(case, ranks_per_sample=1, store=d / "s1", progress=False, paraview=False)
    r2 = run_campaign(case, ranks_per_sample=2, store=d / "s2", progress=False, paraview=True)
    assert r1.failed == r2.failed == 0
    if MPI.COMM_WORLD.rank == 0:
        s1, s2 = SnapshotStore(d / "s1"), SnapshotStore(d / "s2")
        (m1, U1), (m2, U2) = s1.snapshots(), s2.snapshots()
        assert np.array_equal(m1, m2) and U1.shape == (6, s1.static.n_dofs)
        assert {s.ranks for s in s2.samples()} == {2} and {s.ranks for s in s1.samples()} == {1}
        assert np.abs(U1 - U2).max() <= 1e-10 * np.abs(U1).max()
        assert s1.manifest["element"] == {"family": "Lagrange", "degree": 1, "value_shape": [3]}
        assert s1.observation_names == [f"p{i}_{c}" for i in range(2) for c in "xyz"]
        assert np.abs(s1.static.points - s2.static.points).max() < 1e-14
        q1 = np.array([s.qoi for s in s1.samples()])
        assert np.all(q1 > 0)      # the tip moves with the load
