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
    filter, hence compression=None.)
    """
    import meshio

    st = store.static
    files = store.sample_files()[: max_samples * 4]
    samples = [s for s in (read_sample(p) for p in files) if s.ok][:max_samples]
    if not samples:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    points = st.points if st.points.shape[1] == 3 else np.hstack(
        [st.points, np.zeros((st.points.shape[0], 3 - st.points.shape[1]))])
    # meshio 5.3.5 writes the heavy-data file into the current directory: write from there
    with contextlib.chdir(target.parent):
        with meshio.xdmf.TimeSeriesWriter(target.name, data_format="HDF") as w:
            w.write_points_cells(points, [(st.cell_type, st.cells)])
            for s in samples:
                u = s.u if s.u.ndim == 1 else s.u[-1]
                w.write_data(float(s.index), point_data={"u": u})
    return target
