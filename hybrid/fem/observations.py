"""Observation operators as linear functionals of the field, in store ordering.

Every observation hybrid supports so far is linear in u, so it is stored as one row l of a
matrix L with y = L u; the surrogate side then evaluates observations from the reduced
basis as (L V) c, without rebuilding the field.

* Point sensor at x: l_i = φ_i(x). The owning cell is found with a bounding-box tree over
  this rank's owned cells, x is pulled back to the reference cell (affine simplices:
  ξ = J⁻¹(x − x₀)) and the element's basis is tabulated there with Basix. A point on a
  partition boundary is found by several ranks; the lowest rank's row is kept.
* Box average over B = [x₀, x₁]×[y₀, y₁]: l_i = |B|⁻¹ ∫_B φ_i, integrating over the cells
  whose midpoint lies in B (exact when the mesh resolves the box's edges).

Collective on the mesh communicator; rows are returned on the ordering's root.
"""

from __future__ import annotations

import numpy as np
import ufl
from dolfinx import fem, geometry
from dolfinx import mesh as dmesh
from dolfinx.fem import petsc as fem_petsc
from petsc4py import PETSc

from hybrid.errors import CaseError
from hybrid.fem.ordering import StoreOrdering


def point_rows(V: fem.FunctionSpace, ordering: StoreOrdering, points: np.ndarray,
               where: str = "observations") -> np.ndarray | None:
    """Rows l with l·u = u(x) for each point x (shape (n, gdim)); (n, N) on root."""
    msh = V.mesh
    tdim, gdim = msh.topology.dim, msh.geometry.dim
    if msh.topology.cell_name() not in ("interval", "triangle", "tetrahedron"):
        raise NotImplementedError("point sensors are implemented for simplex meshes")
    n_owned = msh.topology.index_map(tdim).size_local
    tree = geometry.bb_tree(msh, tdim, entities=np.arange(n_owned, dtype=np.int32))
    pts3 = np.zeros((len(points), 3))
    pts3[:, :gdim] = points
    cand = geometry.compute_collisions_points(tree, pts3)
    cells = geometry.compute_colliding_cells(msh, cand, pts3)
    element = V.ufl_element().basix_element
    xg = msh.geometry.x
    gdofs = msh.geometry.dofmaps[0]
    found = []
    for i in range(len(points)):
        links = cells.links(i)
        if len(links) == 0:
            continue
        c = int(links[0])
        verts = xg[gdofs[c][: tdim + 1], :gdim]
        J = (verts[1:] - verts[0]).T
        xi = np.linalg.lstsq(J, points[i] - verts[0], rcond=None)[0]
        w = element.tabulate(0, xi[None, :])[0, 0, :, 0]
        idx = ordering.to_store_indices(V.dofmap.cell_dofs(c))
        found.append((i, idx, w))
    parts = msh.comm.gather(found, root=ordering.root)
    if parts is None:
        return None
    rows = np.zeros((len(points), ordering.n_global))
    seen = np.zeros(len(points), dtype=bool)
    for part in parts:  # rank order: the lowest rank that found a point wins
        for i, idx, w in part:
            if not seen[i]:
                rows[i, idx] = w
                seen[i] = True
    if not seen.all():
        j = int(np.flatnonzero(~seen)[0])
        raise CaseError(f"{where}: sensor {j} at {points[j].tolist()} lies outside the mesh")
    return rows


def box_average_rows(V: fem.FunctionSpace, ordering: StoreOrdering,
                     boxes: list[np.ndarray]) -> np.ndarray | None:
    """Rows l with l·u = mean of u over each box [x0, y0(, z0), x1, y1(, z1)]; on root."""
    msh = V.mesh
    tdim = msh.topology.dim
    n = msh.topology.index_map(tdim).size_local + msh.topology.index_map(tdim).num_ghosts
    mids = dmesh.compute_midpoints(msh, tdim, np.arange(n, dtype=np.int32))[:, :tdim]
    v = ufl.TestFunction(V)
    rows = []
    for box in boxes:
        lo, hi = np.asarray(box[:tdim]), np.asarray(box[tdim:])
        inside = np.all((mids >= lo) & (mids <= hi), axis=1).astype(np.int32)
        tags = dmesh.meshtags(msh, tdim, np.arange(n, dtype=np.int32), inside)
        dx = ufl.Measure("dx", domain=msh, subdomain_data=tags)
        vol = msh.comm.allreduce(fem.assemble_scalar(fem.form(1.0 * dx(1))))
        if vol <= 0:
            raise CaseError(f"observations: box {list(box)} contains no cell midpoint")
        b = fem_petsc.assemble_vector(fem.form((1.0 / vol) * v * dx(1)))
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        rows.append(ordering.gather_vector(b))
        b.destroy()
    return np.array(rows) if ordering.comm.rank == ordering.root else None
