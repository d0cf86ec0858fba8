"""Observation operators of the field, in store ordering.

Point sensors and box averages are linear in u, so each is stored as one row l of a matrix
L with y = L u; the surrogate side then evaluates them from the reduced basis as (L V) c,
without rebuilding the field. Boundary fluxes are affine in μ (below).

* Point sensor at x: l_i = φ_i(x). The owning cell is found with a bounding-box tree over
  this rank's owned cells, x is pulled back to the reference cell (affine simplices:
  ξ = J⁻¹(x − x₀)) and the element's basis is tabulated there with Basix. A point on a
  partition boundary is found by several ranks; the lowest rank's row is kept.
* Box average over B = [x₀, x₁]×[y₀, y₁]: l_i = |B|⁻¹ ∫_B φ_i, integrating over the cells
  whose midpoint lies in B (exact when the mesh resolves the box's edges).
* Boundary flux through Γ (sides of the unit square/cube), positive for heat *leaving* Ω:
  F_Γ = −∫_Γ κ ∇u·n ds. It is computed from the residual, not by differentiating u: for the
  discrete solution and any g ∈ V_h, ∫_∂Ω κ∇u·n g ds = a(u, g; μ) − ∫ s g dx (the right-hand
  side vanishes for g ∈ V_h ∩ H¹₀, so it depends only on g on ∂Ω). With the weight g_Γ of
  :func:`flux_weight`, F_Γ = ∫ s g_Γ dx − a(u, g_Γ; μ) = g_Γᵀ f(μ) − g_Γᵀ A(μ) u: affine in μ,
  B_q = −g_Γᵀ A_q, b_q = g_Γᵀ f_q. This flux converges at least as fast as the energy error
  (Carey; Brezzi, Hughes & Süli) and conserves exactly: the fluxes of sides that partition
  ∂Ω add up to ∫ s dx, to round-off.

A vector field (a blocked space, store DOF bs·node + c) is observed by components: the case
names them (``[observations] components = ["x", "y"]``), and each point sensor and each box
average gives one row per named component, sensor-major (p0_x, p0_y, p1_x, …): the row of
component c is the scalar row placed on the DOFs bs·node + c.

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

COMPONENTS = ("x", "y", "z")
"""Component names of a vector field, in block order."""


def point_rows(V: fem.FunctionSpace, ordering: StoreOrdering, points: np.ndarray,
               where: str = "observations",
               components: tuple[int, ...] = (0,)) -> np.ndarray | None:
    """Rows l with l·u = u_c(x) for each point x (shape (n, gdim)) and component c.

    (n·len(components), N) on root, row i·len(components) + j for point i, component j
    (a scalar space: ``components = (0,)``, one row per point).
    """
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
        if ordering.bs == 1:
            idx = ordering.to_store_indices(V.dofmap.cell_dofs(c))
        else:
            idx = ordering.bs * ordering.to_store_nodes(V.dofmap.cell_dofs(c))
        found.append((i, idx, w))
    parts = msh.comm.gather(found, root=ordering.root)
    if parts is None:
        return None
    nc = len(components)
    rows = np.zeros((len(points) * nc, ordering.n_global))
    seen = np.zeros(len(points), dtype=bool)
    for part in parts:  # rank order: the lowest rank that found a point wins
        for i, idx, w in part:
            if not seen[i]:
                for j, comp in enumerate(components):
                    rows[i * nc + j, idx + comp] = w
                seen[i] = True
    if not seen.all():
        j = int(np.flatnonzero(~seen)[0])
        raise CaseError(f"{where}: sensor {j} at {points[j].tolist()} lies outside the mesh")
    return rows


def box_average_rows(V: fem.FunctionSpace, ordering: StoreOrdering,
                     boxes: list[np.ndarray],
                     components: tuple[int, ...] | None = None) -> np.ndarray | None:
    """Rows l with l·u = mean of u over each box [x0, y0(, z0), x1, y1(, z1)]; on root.

    A vector field: one row per box and component (box-major), l·u = mean of u_c.
    """
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
        for vc in ([v] if components is None else [v[c] for c in components]):
            b = fem_petsc.assemble_vector(fem.form((1.0 / vol) * vc * dx(1)))
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            rows.append(ordering.gather_vector(b))
            b.destroy()
    return np.array(rows) if ordering.comm.rank == ordering.root else None


SIDE_AXIS = {"x0": (0, 0.0), "x1": (0, 1.0), "y0": (1, 0.0), "y1": (1, 1.0),
             "z0": (2, 0.0), "z1": (2, 1.0)}


def flux_weight(V: fem.FunctionSpace, boundary_dofs: np.ndarray, sides: list[str],
                where: str = "observations.fluxes",
                among: list[str] | None = None) -> fem.Function:
    """The weight g_Γ ∈ V_h of the flux through the union Γ of ``sides`` of the unit box.

    g_Γ vanishes at interior DOFs. A boundary DOF on m sides of the box (m = 2 at an edge of
    the square where two sides meet, 3 at a corner of the cube) gets k/m, k of its sides
    being in Γ: the weights of all sides sum to 1 at every boundary DOF (a partition of unity
    on ∂Ω), so the fluxes of sides that cover ∂Ω add up to the total, ∫ s dx, exactly.
    (Weighting the shared DOFs by 1 — closed sides — counts them twice: the four sides of
    the square would then sum to ∫ s plus the residuals of the corner DOFs, ∫ s φ_c −
    a(u, φ_c), e.g. exactly h² too much for P1 on the built-in triangle mesh.)
    ``boundary_dofs``: local indices (owned and ghost) of the DOFs on ∂Ω (for a model with
    Dirichlet conditions on part of ∂Ω: its Dirichlet DOFs). ``among``: the sides that share
    the boundary DOFs (default: every side of the box) — for such a model, the sides that are
    Dirichlet throughout, so that a corner with one insulated side counts wholly for the
    other. Collective.
    """
    msh = V.mesh
    gdim = msh.geometry.dim
    x = V.tabulate_dof_coordinates()
    bd = np.asarray(boundary_dofs, dtype=np.int32)
    on = {s: np.abs(x[bd, a] - v) <= 1e-10 for s, (a, v) in SIDE_AXIS.items() if a < gdim}
    shared = [s for s in on if among is None or s in among or s in sides]
    counts = np.sum([on[s] for s in shared], axis=0)
    mine = np.sum([on[s] for s in sides], axis=0)
    found = msh.comm.allreduce(np.array([int(on[s].any()) for s in sides]))
    for s, n in zip(sides, found, strict=True):
        if n == 0:
            raise CaseError(f"{where}: no boundary DOF on side {s!r} (fluxes are taken "
                            "through the sides of the unit square/cube)")
    g = fem.Function(V, name="flux_weight")
    g.x.array[:] = 0.0
    g.x.array[bd] = np.where(counts > 0, mine / np.maximum(counts, 1), 0.0)
    return g


def observation_rows(V: fem.FunctionSpace, ordering: StoreOrdering, observations, where: str,
                     ) -> np.ndarray:
    """(n_obs, N) rows L of the μ-independent observations, y = L u, on the ordering's root.

    Point sensors, then box averages, then a zero row per boundary flux (its μ-dependent
    part lives elsewhere); the other ranks get a (0, 0) array. A vector field: each sensor
    and average one row per component of ``observations.components``. Collective.
    """
    sensors = observations.sensors()
    comps = observation_components(V, observations, where)
    parts = []
    if sensors:
        pts = np.array([p for _, p in sensors], dtype=float)
        parts.append(point_rows(V, ordering, pts, where, comps or (0,)))
    if observations.averages:
        parts.append(box_average_rows(V, ordering, list(observations.averages.values()),
                                      comps))
    if ordering.comm.rank != ordering.root:
        return np.zeros((0, 0))
    if observations.fluxes:
        parts.append(np.zeros((len(observations.fluxes), ordering.n_global)))
    return np.vstack(parts) if parts else np.zeros((0, ordering.n_global))


def observation_components(V: fem.FunctionSpace, observations,
                           where: str = "observations") -> tuple[int, ...] | None:
    """The block indices of ``observations.components`` (None for a scalar space).

    A vector field needs the case to name its components (an observation of "u" would be
    ambiguous), a scalar field must not name any: CaseError otherwise.
    """
    names = list(getattr(observations, "components", None) or [])
    bs = V.dofmap.index_map_bs
    if bs == 1 and V.ufl_element().reference_value_shape == ():
        if names:
            raise CaseError(f"{where}: observations.components: the unknown is a scalar "
                            f"field; remove the key (got {names})")
        return None
    allowed = COMPONENTS[:bs]
    has_obs = bool(observations.sensors() or observations.averages)
    if has_obs and not names:
        raise CaseError(f"{where}: observations.components: the unknown is a vector field with "
                        f"{bs} components; name those to observe, e.g. components = "
                        f"{list(allowed)}")
    bad = [c for c in names if c not in allowed]
    if bad:
        raise CaseError(f"{where}: observations.components: unknown component(s) {bad}; this "
                        f"field has {list(allowed)}")
    return tuple(allowed.index(c) for c in names)
