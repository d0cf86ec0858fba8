"""Transient heat conduction (``model = "heat"``) on an interval or the unit square.

    ∂u/∂t = ∇·(κ(x; μ) ∇u) + s   in Ω × (t0, t_end],   u = 0 on ∂Ω,
    u(x, t0) = a · Π_d sin(m π (x_d − lo_d) / (hi_d − lo_d)),

with Ω = [lo, hi] the mesh's bounding box (an ``interval`` mesh [x0, x1] or the unit square),
κ = κ_k on block k of B×B equal blocks of the square (one block on an interval; block
k = ix + B·iy of a cell's midpoint, as in the thermal block), s a constant source and a
the initial amplitude. The model states the semi-discrete form (hybrid applies the case's
time scheme, :mod:`hybrid.fem.transient`):

    m(∂u/∂t, v) = ∫ ∂u/∂t v dx,   r(u; v) = Σ_k κ_k ∫_{Ω_k} ∇u·∇v dx − ∫ s v dx.

Parameters: ``kappa`` (B = 1) or ``kappa_0 … kappa_{B²−1}``, then ``source`` when
``source_parameter`` (else s = the ``source`` setting), then ``u0`` (the amplitude a) when
``initial_parameter`` (else a = ``amplitude``): a μ-dependent initial state.

With s = 0 and one block the exact solution is the decaying sine

    u = a · Π_d sin(m π (x_d − lo_d)/L_d) · exp(−κ π² m² Σ_d L_d⁻² t),

e.g. the seed's rod u_t = κ u_xx on [−1, 1], u0 = −sin(πx) (a = 1, m = 2), u = −sin(πx)·e^{−κπ²t}
(``cases/heat_rod.toml``). QoIs: ``mean`` = ∫ u dx, and ``block_mean_k`` for B > 1.
"""

from __future__ import annotations

import numpy as np
import ufl
from dolfinx import fem, mesh
from mpi4py import MPI
from pydantic import Field

import hybrid.model as hm


class Heat(hm.Model):
    name = "heat"

    class Settings(hm.Settings):
        """[physics] settings of the model."""

        blocks: int = Field(1, ge=1, le=10)
        degree: int = Field(1, ge=1, le=3)
        source: float = 0.0
        source_parameter: bool = False
        amplitude: float = 1.0
        initial_parameter: bool = False
        modes: int = Field(1, ge=1, le=20)
        t_end: float = Field(1.0, gt=0)
        dt: float = Field(0.01, gt=0)

    def parameters(self):
        s = self.settings
        nb = s.blocks ** 2
        names = ["kappa"] if nb == 1 else [f"kappa_{k}" for k in range(nb)]
        return names + (["source"] if s.source_parameter else []) + \
            (["u0"] if s.initial_parameter else [])

    def qoi_names(self):
        nb = self.settings.blocks ** 2
        return ["mean"] + ([f"block_mean_{k}" for k in range(nb)] if nb > 1 else [])

    def check(self, case):
        if case.mesh.type not in ("interval", "unit_square"):
            yield "mesh.type", "heat is posed on an interval or the unit square"
        B = self.settings.blocks
        if case.mesh.type == "interval" and B != 1:
            yield "physics.blocks", "blocks are a grid of the unit square; an interval has one"
        if case.mesh.cells % B:
            yield "mesh.cells", (f"must be a multiple of physics.blocks={B} so the mesh "
                                 f"resolves the block edges, got {case.mesh.cells}")
        nb = B ** 2
        if any(p.lower <= 0 for p in case.parameters.parameters[:nb]):
            yield "parameters", "conductivities must have lower bound > 0"

    def build(self, ctx):
        s, msh = self.settings, ctx.mesh
        tdim = msh.topology.dim
        B = s.blocks
        V = fem.functionspace(msh, ("Lagrange", s.degree))
        xg = msh.geometry.x[:, :tdim]
        lo = np.array([ctx.comm.allreduce(float(c), op=MPI.MIN) for c in xg.min(axis=0)])
        hi = np.array([ctx.comm.allreduce(float(c), op=MPI.MAX) for c in xg.max(axis=0)])
        imap = msh.topology.index_map(tdim)
        cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
        mid = (mesh.compute_midpoints(msh, tdim, cells)[:, :tdim] - lo) / (hi - lo)
        idx = np.clip(np.floor(mid * B).astype(int), 0, B - 1)
        k = idx[:, 0] + (B * idx[:, 1] if tdim > 1 else 0)
        dx = ufl.Measure("dx", domain=msh,
                         subdomain_data=mesh.meshtags(msh, tdim, cells, k.astype(np.int32)))
        nb = B ** tdim
        u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
        names = list(ctx.mu)
        kappa = [ctx.mu[q] for q in range(nb)]
        src = ctx.mu["source"] if "source" in names else fem.Constant(msh, s.source)
        amp = ctx.mu["u0"] if "u0" in names else fem.Constant(msh, s.amplitude)
        F = sum(kappa[q] * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx(q) for q in range(nb))
        F = F - src * v * dx
        x = ufl.SpatialCoordinate(msh)
        shape = 1.0
        for d in range(tdim):
            shape = shape * ufl.sin(s.modes * np.pi * (x[d] - float(lo[d]))
                                    / float(hi[d] - lo[d]))
        qoi = {"mean": u * dx}
        if nb > 1:
            vol = float(np.prod(hi - lo)) / nb
            qoi |= {f"block_mean_{q}": u / vol * dx(q) for q in range(nb)}
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)], qoi=qoi,
                          coercive=True, initial=amp * shape,
                          time=hm.TimeGrid(0.0, s.t_end, s.dt))
