"""tests/test_transient_tangent.py's checks on 2 ranks (``mpirun -n 2 … --with-mpi -m mpi``).

Rows are random and different on each rank (owned parts); the tangent must still equal
central differences of whole loops to 1e-6 relative and the adjoint the tangent to 1e-10,
with no extra set-up for the fixed linear loop.
"""

from __future__ import annotations

import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.fem import MPI

from . import test_transient_tangent as serial  # a module: its tests are not collected twice

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize("scheme", ["crank_nicolson", "bdf2"])
def test_heat_block_parallel(scheme):
    assert MPI.COMM_WORLD.size >= 2
    serial.test_heat_block_tangent_equals_central_differences(scheme)


@pytest.mark.parametrize("scheme", ["backward_euler", "bdf2"])
def test_nonlinear_plugin_parallel(scheme, tmp_path):
    serial.test_nonlinear_plugin_tangent_equals_central_differences(scheme, tmp_path)


def test_time_dependent_operator_parallel():
    serial.test_time_dependent_operator()


def test_model_problem_parallel():
    serial.test_model_problem_transient_jacobian()
