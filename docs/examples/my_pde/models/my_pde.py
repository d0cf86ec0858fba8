# models/my_pde.py, next to the case file:  −∇·(μ0 ∇u) + μ1 u = s,  u = 0 on ∂Ω
import ufl
from dolfinx import fem

import hybrid.model as hm


class MyPDE(hm.Model):
    name = "reaction_diffusion"

    class Settings(hm.Settings):           # the [physics] table; unknown keys are refused
        source: float = 1.0

    def parameters(self):
        return ["mu0", "mu1"]              # or a count; checked against the case

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):                  # ctx.mesh, ctx.mu[k]: scalar fem.Constants
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        s = fem.Constant(ctx.mesh, self.settings.source)
        F = (ctx.mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) + ctx.mu[1] * u * v - s * v) * ufl.dx
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx}, coercive=True)
