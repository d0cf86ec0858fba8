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
from hybrid.fem import MPI
from hybrid.fem.splitting import gather_by_coordinates

from .test_monodomain import C_EXACT, cable_speed, slab

pytestmark = pytest.mark.mpi(min_size=2)


def test_slab_activation_times_partition_independent():
    assert MPI.COMM_WORLD.size >= 2
    kw = dict(size=[20.0, 20.0], region=[[0.0, 1.5], [0.0, 1.5]], t_end=120.0)
    Vp, rp = slab(24, comm=MPI.COMM_WORLD, **kw)
    Vs, rs = slab(24, comm=MPI.COMM_SELF, **kw)
    xp, tp = gather_by_coordinates(Vp, rp.activation)
    xs, ts = gather_by_coordinates(Vs, rs.activation)
    np.testing.assert_allclose(xp, xs, rtol=0, atol=1e-12)
    assert np.array_equal(np.isnan(tp), np.isnan(ts))
    ok = np.isfinite(ts)
    assert ok.sum() > 100
    assert np.max(np.abs(tp[ok] - ts[ok])) < 1e-6, np.max(np.abs(tp[ok] - ts[ok]))
    # the parallel run did distribute the work
    assert MPI.COMM_WORLD.allreduce(rp.activation.size) == ts.size > rp.activation.size


def test_cable_front_speed_parallel():
    c = cable_speed(600, 0.1, "strang")
    assert abs(c - C_EXACT) / C_EXACT < 5e-5, c
    assert abs(c - cable_speed(600, 0.1, "strang", comm=MPI.COMM_SELF)) < 1e-8
