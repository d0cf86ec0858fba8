"""tests/test_transient.py's verification on 2 ranks (``mpirun -n 2 … --with-mpi -m mpi``)."""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.fem import MPI

from .test_transient import (
    EXPECTED,
    rod,
    space_rates,
    test_heat_block_superposition_and_steady_limit,
    time_rates,
)

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_time_order_parallel(scheme):
    assert MPI.COMM_WORLD.size >= 2
    errs, rates = time_rates(MPI.COMM_WORLD, scheme, dim=2)
    assert np.all(np.abs(rates - EXPECTED[scheme]) <= 0.15), (errs, rates)


def test_space_order_parallel():
    errs, rates = space_rates(MPI.COMM_WORLD)
    assert np.all(np.abs(rates - 2.0) <= 0.15), (errs, rates)


def test_heat_rod_parallel():
    rel, rel_nodes, res = rod(MPI.COMM_WORLD)
    assert res.ok and res.operator_setups == 1
    assert rel_nodes <= 1e-5 and rel <= 1e-4, (rel, rel_nodes)


def test_heat_block_parallel():
    """The 2-D block model (blocks, μ-dependent initial state) on 2 ranks."""
    test_heat_block_superposition_and_steady_limit()
