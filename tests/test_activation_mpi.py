"""An activation-time campaign on 2 ranks per sample equals the serial one (``-m mpi``).

The store is partition-independent: the campaign on COMM_WORLD (one group of 2 ranks)
and a campaign of the same case on COMM_SELF write fields in the same store ordering;
they agree to the Krylov tolerance (CG + GAMG at rtol 1e-10 on different partitions:
≪ 1e-6 ms, far below a step of 0.1 ms). The electrodes' observations from the FEM model
on 2 ranks equal the stored rows applied to the serial field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.core.store import SnapshotStore
from hybrid.fem import MPI
from hybrid.fem.activation import rows_apply
from hybrid.fem.model import FEMModel
from hybrid.workflows.campaign import run_campaign

from .test_activation import slab_text

pytestmark = pytest.mark.mpi(min_size=2)


def test_activation_campaign_partition_independent(tmp_path_factory):
    comm = MPI.COMM_WORLD
    base = Path(comm.bcast(str(tmp_path_factory.mktemp("act")) if comm.rank == 0 else None))
    par = parse_case(slab_text(base / "par", samples=4), base / "par.toml")
    run_campaign(par, progress=False, paraview=False, ranks_per_sample=comm.size)
    if comm.rank == 0:
        ser = parse_case(slab_text(base / "ser", samples=4), base / "ser.toml")
        run_campaign(ser, progress=False, paraview=False, comm=MPI.COMM_SELF)
    comm.Barrier()
    sp, ss = SnapshotStore(base / "par" / "store"), SnapshotStore(base / "ser" / "store")
    mp, Up = sp.snapshots()
    ms, Us = ss.snapshots()
    np.testing.assert_array_equal(mp, ms)
    assert Up.shape == (4, 81) and np.isfinite(Up).all()
    assert np.max(np.abs(Up - Us)) < 1e-6, np.max(np.abs(Up - Us))
    fem = FEMModel(par, comm)
    y = fem.observe(mp[1])
    np.testing.assert_allclose(y, rows_apply(ss.static.observation_functionals, Us[1]),
                               atol=1e-6)
    fem.close()
