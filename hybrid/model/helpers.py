"""Small helpers for model authors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def boundary_dofs(V) -> np.ndarray:
    """Local DOFs of V on the exterior boundary (collective)."""
    from dolfinx import fem, mesh

    msh = V.mesh
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    facets = mesh.exterior_facet_indices(msh.topology)
    return fem.locate_dofs_topological(V, tdim - 1, facets)


def dirichlet_on_boundary(V, value: float | Sequence[float] | Callable = 0.0):
    """Dirichlet condition u = value on the whole exterior boundary.

    ``value`` is a number (scalar space), a sequence of the block size (vector space), or a
    callable x ↦ values interpolated into V (x of shape (3, n)).
    """
    from dolfinx import fem

    dofs = boundary_dofs(V)
    if callable(value):
        g = fem.Function(V)
        g.interpolate(value)
        return fem.dirichletbc(g, dofs)
    bs = V.dofmap.index_map_bs
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0 and bs == 1:
        return fem.dirichletbc(float(arr), dofs, V)
    if arr.shape == (bs,):
        return fem.dirichletbc(arr, dofs, V)
    raise ValueError(f"boundary value of shape {arr.shape} does not fit a space of block size {bs}")
