"""Linear elasticity of a clamped body in K material subdomains (``model = "elasticity"``).

    −∇·σ(u) = 0 in Ω,   u = 0 on Γ_C (clamped),   σ(u) n = −P e_v on Γ_L (loaded),
    σ(u) n = 0 elsewhere,   σ = 2 μ_k ε(u) + λ_k tr ε(u) I,   ε(u) = (∇u + ∇uᵀ)/2 in Ω_k,

    μ_k = E_k / (2(1 + ν)),   λ_k = E_k ν / ((1 + ν)(1 − 2ν)),

in the weak form F(u; v) = Σ_k ∫_{Ω_k} σ_k(u) : ε(v) dx + ∫_{Γ_L} P v_v ds = 0 — P the
traction magnitude (force per area) acting against the vertical axis e_v (``vertical``,
default y). Parameters: the Young's moduli ``E_0 … E_{K−1}`` (sample them with
``log = true``), then ``nu`` if ``poisson_parameter`` and ``load`` (P) if ``load_parameter``.
σ is written as E_k σ̂(u) (σ̂ the stress of E = 1), so with ν fixed F is affine in (E_k, P):
hybrid derives θ_k = E_k, a_k = ∫_{Ω_k} σ̂(u):ε(v) and ϑ = P (K + 1 terms); with ν a
parameter the θ are the products E_k/(2(1 + ν)) and E_k ν/((1 + ν)(1 − 2ν)) (2K terms).
All are positive on a box with E_k > 0 and 0 ≤ ν < 1/2 and each a_k is symmetric positive
semi-definite, so the store is certified.

Geometry: a gmsh mesh (``meshes/beam.py``) names its groups ``clamped``, ``loaded`` (facets)
and ``material_k`` (cells), which are used when present; otherwise (a built-in box, or a
file without the names) Γ_C is the face x = x_min, Γ_L the face x = x_max of the mesh's
bounding box and Ω_k the cells whose midpoint lies in the k-th of K equal slabs in x.

QoI ``tip_deflection`` = −|Γ_L|⁻¹ ∫_{Γ_L} u_v ds, the mean deflection of the loaded face in
the direction of the load (a linear functional). For a slender beam of length L, section
A = H·W, I = W H³/12 and a tip load P·A it tends to Timoshenko's
δ = (PA) L³/(3 E I) + (PA) L/(κ G A) (tests/test_elasticity.py).

GAMG needs the rigid-body modes as the near-nullspace (``Problem.near_nullspace``); the
default solver is CG + GAMG (Chebyshev/Jacobi smoothing), as in DOLFINx's elasticity demo.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import ufl
from dolfinx import fem, mesh
from pydantic import Field

import hybrid.model as hm

CLAMPED, LOADED = 1, 2
"""Values of the model's own facet tags."""

SOLVER = {"ksp_type": "cg", "ksp_rtol": 1e-10, "pc_type": "gamg"}
"""Default PETSc options: CG + smoothed-aggregation AMG (GAMG's default smoother, Chebyshev /
Jacobi) with the rigid-body near-nullspace. A case that picks another ``pc_type`` replaces
the ``pc_*`` options; level options (``mg_levels_*``) belong in the case, as PETSc refuses
unused ones."""


def lame(E, nu):
    """(μ, λ) of Young's modulus E and Poisson's ratio ν (numbers or UFL expressions)."""
    return E / (2.0 * (1.0 + nu)), E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))


def _bounds(msh, axis: int) -> tuple[float, float]:
    from mpi4py import MPI

    x = msh.geometry.x[:, axis]
    lo = msh.comm.allreduce(float(x.min()) if x.size else np.inf, op=MPI.MIN)
    hi = msh.comm.allreduce(float(x.max()) if x.size else -np.inf, op=MPI.MAX)
    return lo, hi


def _group(tags: dict, name: str, dim: int):
    """The tag of the physical group ``name`` of dimension ``dim``, or None."""
    g = tags.get("groups", {}).get(name)
    return g[1] if g is not None and g[0] == dim else None


class Elasticity(hm.Model):
    name = "elasticity"

    class Settings(hm.Settings):
        """[physics] settings of the model."""

        degree: int = Field(2, ge=1, le=3)
        materials: int = Field(2, ge=1, le=4)
        poisson: float = Field(0.3, ge=0.0, lt=0.5)
        poisson_parameter: bool = False
        load: float = 1.0
        load_parameter: bool = True
        vertical: Literal["y", "z"] = "y"

    def parameters(self):
        s = self.settings
        return ([f"E_{k}" for k in range(s.materials)] + (["nu"] if s.poisson_parameter else [])
                + (["load"] if s.load_parameter else []))

    def qoi_names(self):
        return ["tip_deflection"]

    def check(self, case):
        if case.mesh.type in ("unit_square", "interval") or (
                case.mesh.type == "file" and case.mesh.gdim != 3):
            yield "mesh", "elasticity is posed on a 3-D mesh (unit_cube, or a file with gdim = 3)"
        for p in case.parameters.parameters:
            if p.name.startswith("E_") and p.lower <= 0:
                yield f"parameters.{p.name}", "Young's moduli must have lower bound > 0"
            if p.name == "nu" and not (0.0 <= p.lower and p.upper < 0.5):
                yield "parameters.nu", "Poisson's ratio must lie in [0, 0.5)"

    def build(self, ctx):
        s, msh = self.settings, ctx.mesh
        tdim, gdim = msh.topology.dim, msh.geometry.dim
        V = fem.functionspace(msh, ("Lagrange", s.degree, (gdim,)))
        u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
        dx = ufl.Measure("dx", domain=msh, subdomain_data=self._materials(ctx))
        facets = self._faces(ctx)
        ds = ufl.Measure("ds", domain=msh, subdomain_data=facets)
        axis = {"y": 1, "z": 2}[s.vertical]
        nu = ctx.mu["nu"] if s.poisson_parameter else s.poisson
        P = ctx.mu["load"] if s.load_parameter else fem.Constant(msh, s.load)

        def eps(w):
            return ufl.sym(ufl.grad(w))

        mu_1, lam_1 = lame(1.0, nu)   # the Lamé coefficients of E = 1: σ is linear in E

        def sigma(w, E):
            return E * (2.0 * mu_1 * eps(w) + lam_1 * ufl.tr(eps(w)) * ufl.Identity(gdim))

        F = sum(ufl.inner(sigma(u, ctx.mu[f"E_{k}"]), eps(v)) * dx(k)
                for k in range(s.materials))
        F = F + P * v[axis] * ds(LOADED)
        area = msh.comm.allreduce(fem.assemble_scalar(fem.form(1.0 * ds(LOADED))))
        if not area > 0:
            raise ValueError("the loaded face has zero area")
        zero = np.zeros(gdim)
        dofs = fem.locate_dofs_topological(V, tdim - 1, facets.find(CLAMPED))
        bc = fem.dirichletbc(zero, dofs, V)
        return hm.Problem(u=u, F=F, bcs=[bc], coercive=True,
                          qoi={"tip_deflection": (-1.0 / area) * u[axis] * ds(LOADED)},
                          solver=dict(SOLVER), near_nullspace=hm.rigid_body_modes(V))

    def _materials(self, ctx) -> mesh.MeshTags:
        """Cell tags 0 … K−1: the ``material_k`` groups, else K equal slabs in x."""
        msh, K = ctx.mesh, self.settings.materials
        tdim = msh.topology.dim
        imap = msh.topology.index_map(tdim)
        cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
        groups = [_group(ctx.tags, f"material_{k}", tdim) for k in range(K)]
        if "cells" in ctx.tags and all(g is not None for g in groups):
            ct = ctx.tags["cells"]
            val = np.full(len(cells), -1, dtype=np.int32)
            for k, g in enumerate(groups):
                val[ct.indices[ct.values == g]] = k
            keep = val >= 0
            return mesh.meshtags(msh, tdim, cells[keep], val[keep])
        x0, x1 = _bounds(msh, 0)
        mid = mesh.compute_midpoints(msh, tdim, cells)[:, 0]
        k = np.clip(np.floor((mid - x0) / (x1 - x0) * K).astype(np.int32), 0, K - 1)
        return mesh.meshtags(msh, tdim, cells, k)

    def _faces(self, ctx) -> mesh.MeshTags:
        """Facet tags CLAMPED, LOADED: the ``clamped``/``loaded`` groups, else x = x_min/x_max."""
        msh = ctx.mesh
        fdim = msh.topology.dim - 1
        msh.topology.create_connectivity(fdim, fdim + 1)
        tags = [_group(ctx.tags, n, fdim) for n in ("clamped", "loaded")]
        if "facets" in ctx.tags and all(t is not None for t in tags):
            ft = ctx.tags["facets"]
            parts = [ft.indices[ft.values == t] for t in tags]
        else:
            x0, x1 = _bounds(msh, 0)
            tol = 1e-10 * (x1 - x0)
            parts = [mesh.locate_entities_boundary(msh, fdim, lambda x, a=a: np.abs(x[0] - a)
                                                   <= tol) for a in (x0, x1)]
        idx = np.concatenate(parts).astype(np.int32)
        val = np.concatenate([np.full(len(p), t, dtype=np.int32)
                              for p, t in zip(parts, (CLAMPED, LOADED), strict=True)])
        order = np.argsort(idx)
        return mesh.meshtags(msh, fdim, idx[order], val[order])
