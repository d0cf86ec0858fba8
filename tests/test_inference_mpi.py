"""Chains spread over MPI ranks: ``mpirun -n 2 python -m pytest --with-mpi -m mpi``."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.inference import sample

from .test_inference_mcmc import _linear_problem

pytestmark = pytest.mark.mpi(min_size=2)


def test_chains_over_ranks_equal_the_serial_run():
    try:  # the DOLFINx wheel orders its MPI ahead of mpi4py's
        import dolfinx_solver  # noqa: F401
    except ModuleNotFoundError:
        pass
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    post, cheap, _, _ = _linear_problem()
    n0 = post.model.n_evals
    res = sample(post, cheap, n_samples=300, burn_in=300, chains=3, seed=9, comm=comm)
    local_expensive = post.model.n_evals - n0
    total = comm.reduce(local_expensive, root=0)
    if comm.rank != 0:
        assert res is None
        return
    serial = sample(post, cheap, n_samples=300, burn_in=300, chains=3, seed=9)
    assert res.settings["ranks"] == comm.size
    assert np.allclose(res.samples, serial.samples, rtol=1e-12, atol=1e-14)
    for k, v in serial.counts.items():
        assert np.array_equal(res.counts[k], v), k
    assert total == res.counts["n_expensive"].sum()
