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


def rigid_body_modes(V) -> list:
    """The rigid-body motions of a vector space V (bs = gdim = 2 or 3) as Functions.

    Translations e_i and infinitesimal rotations ω × x — (−y, x) in 2D; (−y, x, 0),
    (z, 0, −x), (0, −z, y) in 3D —, interpolated at V's nodes (exact for Lagrange spaces of
    any degree): the kernel of the elasticity operator without boundary conditions, the
    near-nullspace that algebraic multigrid needs (``Problem.near_nullspace``).
    """
    from dolfinx import fem

    bs, gdim = V.dofmap.index_map_bs, V.mesh.geometry.dim
    if bs != gdim or gdim not in (2, 3):
        raise ValueError(f"rigid-body modes need a vector space with gdim = 2 or 3 components, "
                         f"got block size {bs} on a {gdim}D mesh")
    x = V.tabulate_dof_coordinates()
    rot = [[-x[:, 1], x[:, 0]]] if gdim == 2 else [
        [-x[:, 1], x[:, 0], 0 * x[:, 0]], [x[:, 2], 0 * x[:, 0], -x[:, 0]],
        [0 * x[:, 0], -x[:, 2], x[:, 1]]]
    fields = [[np.full(len(x), float(i == c)) for c in range(gdim)] for i in range(gdim)]
    modes = []
    for comps in fields + rot:
        f = fem.Function(V, name="rigid_body_mode")
        f.x.array[:] = np.stack(comps, axis=1).ravel()
        modes.append(f)
    return modes
