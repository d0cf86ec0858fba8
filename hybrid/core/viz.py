"""ParaView output from a store (meshio; no DOLFINx needed)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from hybrid.core.store import SnapshotStore, read_sample


def write_store_xdmf(store: SnapshotStore, target: Path, max_samples: int = 200) -> Path | None:
    """Write up to ``max_samples`` successful snapshots as an XDMF time series.

    Each "time step" t = sample index; the point data is the field ``u`` (for a transient
    store, its field at the last output time, t_end). Returns the path, or
    None when the store holds no successful sample. (The DOLFINx wheel's HDF5 has no deflate
    filter, hence compression=None.) A vector field (manifest ``element.value_shape`` [bs]:
    store DOF bs·k + c) is written on its nodes, ``u`` with bs components per node.
    """
    import meshio

    st = store.static
    files = store.sample_files()[: max_samples * 4]
    samples = [s for s in (read_sample(p) for p in files) if s.ok][:max_samples]
    if not samples:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    bs = int(np.prod((store.manifest.get("element") or {}).get("value_shape") or [1]))
    pts, cells = (st.points, st.cells) if bs == 1 else (st.points[::bs], st.cells // bs)
    points = pts if pts.shape[1] == 3 else np.hstack(
        [pts, np.zeros((pts.shape[0], 3 - pts.shape[1]))])
    # meshio 5.3.5 writes the heavy-data file into the current directory: write from there
    with contextlib.chdir(target.parent):
        with meshio.xdmf.TimeSeriesWriter(target.name, data_format="HDF") as w:
            w.write_points_cells(points, [(st.cell_type, cells)])
            for s in samples:
                u = s.u if s.u.ndim == 1 else s.u[-1]      # a trajectory: its last field
                u = u if bs == 1 else u.reshape(-1, bs)
                w.write_data(float(s.index), point_data={"u": u})
    return target
