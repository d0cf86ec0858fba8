"""The FEM model used by inference: observations, failures, enrichment of a store."""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.fem  # noqa: F401
from hybrid.core.case import load_case
from hybrid.core.store import ENRICHMENT_BASE, SnapshotStore
from hybrid.errors import ParameterError
from hybrid.fem.model import FEMModel, SolveFailed
from hybrid.workflows.campaign import run_campaign


def _with_obs(path):
    path.write_text(path.read_text() + "\n[observations]\ngrid = 2\n")
    return path


def test_fem_model_observes_and_enriches_store(write_case, tmp_path):
    from mpi4py import MPI

    case = load_case(_with_obs(write_case(cells=12, blocks=2, samples=3)))
    r = run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False)
    assert r.ok == 3
    model = FEMModel(case, MPI.COMM_SELF)
    mu = np.array([0.3, 0.5, 0.7, 0.9])
    state = model.solve(mu)
    assert state.ok and state.observations.shape == (4,)
    store = SnapshotStore(tmp_path / "store")
    rows = store.static.observation_functionals
    assert np.allclose(rows @ state.u, state.observations, rtol=1e-12)
    assert np.allclose(model.observe(mu), state.observations)
    assert model.n_solves == 2 and model.time > 0
    idx = model.commit(tmp_path / "store", state)
    assert idx == ENRICHMENT_BASE
    mus, U = store.snapshots()
    assert len(mus) == 4 and np.allclose(U[-1], state.u) and np.allclose(mus[-1], mu)
    # growing the campaign afterwards solves the planned samples, not the enrichment one
    r = run_campaign(case, samples=5, comm=MPI.COMM_SELF, progress=False, paraview=False)
    assert r.solved_now == 2 and r.ok == 5
    assert len(store.snapshots()[0]) == 6
    with pytest.raises(ParameterError):
        model.solve(np.array([0.3, 0.5, 0.7, 1.5]))
    model.close()


def test_fem_model_failure_raises_in_observe(write_case):
    from mpi4py import MPI

    case = load_case(_with_obs(write_case(
        cells=24, blocks=2, petsc='ksp_type = "cg"\npc_type = "none"\nksp_max_it = 2')))
    model = FEMModel(case, MPI.COMM_SELF)
    assert not model.solve(np.full(4, 0.5)).ok
    with pytest.raises(SolveFailed, match="DIVERGED_MAX_IT"):
        model.observe(np.full(4, 0.5))
    model.close()
