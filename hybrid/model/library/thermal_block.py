"""The thermal block, the standard model-order-reduction benchmark (``model = "thermal_block"``).

    −∇·(κ(x; μ) ∇u) = s  in Ω = (0, 1)²,   u = 0 on ∂Ω,

with κ = μ_k on block k of a B×B grid of equal blocks. Block k = ix + B·iy of a cell is the
block of its midpoint, ix = min(⌊B x⌋, B − 1) the column from the left, iy the row from the
bottom (a point on a block edge belongs to the right/upper block); the mesh must resolve the
block edges: a unit-square mesh with a multiple of B cells per side, or a gmsh file whose
edges follow the blocks (``meshes/unit_square_blocks.py``; its cell tags are not needed).
hybrid derives the affine terms θ_k = μ_k, a_k = ∫_{Ω_k} ∇u·∇v, ϑ_0 = 1, f_0 = ∫ s v, the
coercivity certificate (μ_k > 0 on the box) and the boundary fluxes from F.

QoIs: ``mean`` = ∫_Ω u dx, ``block_mean_k`` = |Ω_k|⁻¹ ∫_{Ω_k} u dx.
"""

from __future__ import annotations

import numpy as np
import ufl
from dolfinx import fem, mesh
from pydantic import Field

import hybrid.model as hm


def block_index(x: np.ndarray, blocks: int) -> np.ndarray:
    """Block k = ix + B·iy of points x (shape (n, ≥ 2)); edges go right/upper."""
    ix = np.clip(np.floor(x[:, 0] * blocks).astype(int), 0, blocks - 1)
    iy = np.clip(np.floor(x[:, 1] * blocks).astype(int), 0, blocks - 1)
    return ix + blocks * iy


class ThermalBlock(hm.Model):
    name = "thermal_block"

    class Settings(hm.Settings):
        """[physics] settings of the model."""

        blocks: int = Field(3, ge=1, le=20)
        source: float = 1.0
        degree: int = Field(1, ge=1, le=3)

    def parameters(self):
        return self.settings.blocks**2

    def qoi_names(self):
        return ["mean"] + [f"block_mean_{k}" for k in range(self.settings.blocks**2)]

    def check(self, case):
        B = self.settings.blocks
        mesh = case.mesh
        if mesh.type == "unit_cube" or mesh.gdim != 2:
            yield "mesh.type", "the thermal block is posed on the unit square"
        if mesh.type == "unit_square" and mesh.cells % B:
            yield "mesh.cells", (f"must be a multiple of physics.blocks={B} so the mesh "
                                 f"resolves the block edges, got {mesh.cells}")
        if any(p.lower <= 0 for p in case.parameters.parameters):
            yield "parameters", "conductivities must have lower bound > 0"

    def build(self, ctx):
        B, msh = self.settings.blocks, ctx.mesh
        tdim = msh.topology.dim
        V = fem.functionspace(msh, ("Lagrange", self.settings.degree))
        imap = msh.topology.index_map(tdim)
        cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
        x = mesh.compute_midpoints(msh, tdim, cells)
        tags = mesh.meshtags(msh, tdim, cells, block_index(x, B).astype(np.int32))
        dx = ufl.Measure("dx", domain=msh, subdomain_data=tags)
        u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
        s = fem.Constant(msh, self.settings.source)
        F = sum(ctx.mu[k] * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx(k) for k in range(B * B))
        F = F - s * v * dx
        qoi = {"mean": u * dx} | {f"block_mean_{k}": B * B * u * dx(k) for k in range(B * B)}
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)], qoi=qoi,
                          coercive=True)
