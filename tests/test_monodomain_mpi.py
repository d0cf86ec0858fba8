"""Activation times on 2 ranks equal the serial ones to solver tolerance (``--with-mpi -m mpi``).

Each rank also runs the same problem alone on COMM_SELF; the fields are compared DOF by DOF
in a partition-free order (by coordinates). CG + GAMG at rtol 1e-10 (the partitions give
different GAMG hierarchies): measured max difference 3.4e-8 ms against activation
times up to 120 ms; the bound 1e-6 ms is far below a step (0.2 ms), so a lost ghost update or a
crossing taken from the step index would fail it.
"""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import load_case
from hybrid.fem import MPI
from hybrid.fem.splitting import DIFFUSION_DEFAULTS, gather_by_coordinates, solve_case

from .test_monodomain import C_EXACT, CASES, cable_speed, slab

pytestmark = pytest.mark.mpi(min_size=2)


def _compare(Vp, rp, Vs, rs, bound: float, min_active: int) -> float:
    xp, tp = gather_by_coordinates(Vp, rp.activation)
    xs, ts = gather_by_coordinates(Vs, rs.activation)
    np.testing.assert_allclose(xp, xs, rtol=0, atol=1e-12)
    assert np.array_equal(np.isnan(tp), np.isnan(ts))
    ok = np.isfinite(ts)
    assert ok.sum() > min_active
    err = float(np.max(np.abs(tp[ok] - ts[ok])))
    assert err < bound, err
    # the parallel run did distribute the work
    assert MPI.COMM_WORLD.allreduce(rp.activation.size) == ts.size > rp.activation.size
    return err


TIGHT = {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-10}


def test_slab_activation_times_partition_independent():
    """CG + GAMG at rtol 1e-10: the loop itself (ghosts, crossings) is partition-free."""
    assert MPI.COMM_WORLD.size >= 2
    kw = dict(size=[20.0, 20.0], region=[[0.0, 1.5], [0.0, 1.5]], t_end=120.0, petsc=TIGHT)
    Vp, rp = slab(24, comm=MPI.COMM_WORLD, **kw)
    Vs, rs = slab(24, comm=MPI.COMM_SELF, **kw)
    _compare(Vp, rp, Vs, rs, 1e-6, 100)


def test_slab_partition_independent_with_the_default_solver():
    """The default CG + Jacobi at rtol 1e-8: the preconditioner is the diagonal on any
    partition, so the runs differ only by the order of the reductions: measured 8.9e-14 ms
    (bound 1e-9)."""
    assert DIFFUSION_DEFAULTS["pc_type"] == "jacobi"
    kw = dict(size=[20.0, 20.0], region=[[0.0, 1.5], [0.0, 1.5]], t_end=120.0)
    Vp, rp = slab(24, comm=MPI.COMM_WORLD, **kw)
    Vs, rs = slab(24, comm=MPI.COMM_SELF, **kw)
    _compare(Vp, rp, Vs, rs, 1e-9, 100)


def test_slab3d_case_partition_independent():
    """cases/monodomain_slab3d.toml (gmsh mesh, rotating fibres, compiled ionic kernel) for
    20 ms, its own solver (CG + Jacobi, rtol 1e-8): measured 3.2e-14 ms over 247 activated
    DOFs (bound 1e-9)."""
    case = load_case(CASES / "monodomain_slab3d.toml")
    rp, Vp, sp = solve_case(case, MPI.COMM_WORLD, t_end=20.0)
    rs, Vs, ss = solve_case(case, MPI.COMM_SELF, t_end=20.0)
    sp.destroy()
    ss.destroy()
    _compare(Vp, rp, Vs, rs, 1e-9, 200)


def test_cable_front_speed_parallel():
    c = cable_speed(600, 0.1, "strang")
    assert abs(c - C_EXACT) / C_EXACT < 5e-5, c
    assert abs(c - cable_speed(600, 0.1, "strang", comm=MPI.COMM_SELF)) < 1e-8
