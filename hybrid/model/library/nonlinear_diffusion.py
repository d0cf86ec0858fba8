"""Nonlinear diffusion −∇·((μ0 + μ1 u²) ∇u) = s on the unit square, u = 0 on ∂Ω.

F(u; v) = ∫ (μ0 + μ1 u²) ∇u·∇v dx − ∫ s v dx is nonlinear in u and affine in μ
(θ = μ0, μ1, 1); it is solved by Newton's method (PETSc SNES). For μ0 > 0, μ1 ≥ 0 the
problem is monotone and has one solution.
"""

from __future__ import annotations

import ufl
from dolfinx import fem
from pydantic import Field

import hybrid.model as hm


class NonlinearDiffusion(hm.Model):
    name = "nonlinear_diffusion"

    class Settings(hm.Settings):
        """[physics] settings of the model."""

        source: float = 1.0
        degree: int = Field(1, ge=1, le=3)

    def parameters(self):
        return ["mu0", "mu1"]

    def qoi_names(self):
        return ["mean"]

    def check(self, case):
        if case.mesh.type != "unit_square":
            yield "mesh.type", "nonlinear_diffusion is posed on the unit square"
        if any(p.lower <= 0 for p in case.parameters.parameters[:1]):
            yield "parameters.mu0", "the diffusivity μ0 must have lower bound > 0"

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", self.settings.degree))
        u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
        s = fem.Constant(ctx.mesh, self.settings.source)
        k = ctx.mu["mu0"] + ctx.mu["mu1"] * u**2
        F = ufl.inner(k * ufl.grad(u), ufl.grad(v)) * ufl.dx - s * v * ufl.dx
        snes = {"snes_type": "newtonls", "snes_linesearch_type": "basic", "snes_rtol": 1e-10,
                "snes_atol": 1e-12, "snes_max_it": 30, "ksp_type": "preonly", "pc_type": "lu",
                "pc_factor_mat_solver_type": "mumps"}
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx}, solver=snes)
