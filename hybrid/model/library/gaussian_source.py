"""Steady diffusion from a Gaussian source at a parametrised position, on the unit square.

    −∇·(κ ∇u) = f,   f(x) = A exp(−|x − x₀|² / (2σ²)),   x₀ = (μ_x0, μ_y0),   u = 0 on ∂Ω,

with the parameters μ = (x0, y0, kappa). The weak residual is

    F(u; v) = ∫ κ ∇u·∇v dx − ∫ A exp(−((x − x0)² + (y − y0)²) / (2σ²)) v dx.

F is linear in u. κ enters affinely (θ = κ), but the source position enters through the
exponential together with the spatial coordinate x, so F admits no finite expansion
Σ_q θ_q(μ) F_q with F_q free of μ: hybrid's analysis classifies the model *linear,
not affine* — the store holds no A_q, f_q, surrogates are data-only (POD-NN) and there is
no rigorous error bound (PLUGINS.md, tier (b)).

Settings: ``amplitude`` A, ``width`` σ, the Lagrange ``degree`` p and optionally the
``quadrature_degree`` of the source integral (default: UFL's estimate, p + 4 for
exp(quadratic)·v on triangles, which hybrid pins on the integral so that F, J and ∂F/∂μ
share one rule: :mod:`hybrid.fem.quadrature`).

The exact solution is the sine series (used by tests/test_gaussian_source.py)

    u(x, y) = Σ_{m,n ≥ 1} f_mn / (κ π² (m² + n²)) sin(mπx) sin(nπy),
    f_mn = 4 A G_m(x0) G_n(y0),   G_m(c) = ∫_0^1 exp(−(s − c)²/(2σ²)) sin(mπs) ds.
"""

from __future__ import annotations

import ufl
from dolfinx import fem
from pydantic import Field

import hybrid.model as hm


class GaussianSource(hm.Model):
    name = "gaussian_source"

    class Settings(hm.Settings):
        """[physics] settings of the model."""

        amplitude: float = Field(50.0, gt=0.0)
        width: float = Field(0.1, gt=0.0, le=1.0)
        degree: int = Field(1, ge=1, le=3)
        quadrature_degree: int | None = Field(None, ge=1, le=30)

    def parameters(self):
        return ["x0", "y0", "kappa"]

    def qoi_names(self):
        return ["mean"]

    def check(self, case):
        if case.mesh.type != "unit_square":
            yield "mesh.type", "gaussian_source is posed on the unit square"
        kappa = case.parameters.parameters[2]
        if kappa.lower <= 0:
            yield "parameters.kappa", "the conductivity kappa must have lower bound > 0"

    def build(self, ctx):
        s = self.settings
        V = fem.functionspace(ctx.mesh, ("Lagrange", s.degree))
        u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
        x = ufl.SpatialCoordinate(ctx.mesh)
        x0, y0, kappa = ctx.mu["x0"], ctx.mu["y0"], ctx.mu["kappa"]
        r2 = (x[0] - x0) ** 2 + (x[1] - y0) ** 2
        f = s.amplitude * ufl.exp(-r2 / (2.0 * s.width**2))
        meta = {} if s.quadrature_degree is None else {"quadrature_degree": s.quadrature_degree}
        F = kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx \
            - f * v * ufl.dx(metadata=meta)
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx}, coercive=True,
                          solver={"ksp_type": "preonly", "pc_type": "lu",
                                  "pc_factor_mat_solver_type": "mumps"})
