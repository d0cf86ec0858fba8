"""The finite-element half of the thermal block (see :mod:`hybrid.physics.thermal_block`).

Weak form: find u ∈ V_h ⊂ H¹₀(Ω) with Σ_k μ_k ∫_{Ω_k} ∇u·∇v dx = ∫_Ω s v dx for all v.
κ is a DG0 function whose cell values are set from the block of each cell's midpoint
(k = ix + B·iy with ix = min(⌊B x⌋, B − 1), so points on a block edge belong to the
right/upper block); the mesh must resolve the block edges for κ to be exact.
"""

from __future__ import annotations

import numpy as np
import ufl
from dolfinx import fem
from dolfinx import mesh as dmesh
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI

from hybrid.case import Case
from hybrid.fem.mesh import build_mesh
from hybrid.fem.ordering import StoreOrdering
from hybrid.fem.solver import LinearSolver, SolveResult
from hybrid.store import StaticData, affine_observation_operator


def block_index(x: np.ndarray, blocks: int) -> np.ndarray:
    """Block number k = ix + B·iy of points x (shape (n, ≥2)); edges go right/upper."""
    ix = np.clip(np.floor(x[:, 0] * blocks).astype(int), 0, blocks - 1)
    iy = np.clip(np.floor(x[:, 1] * blocks).astype(int), 0, blocks - 1)
    return ix + blocks * iy


class ThermalBlockProblem:
    """Thermal block on a communicator: solve for μ, gather fields, build the static data.

    All methods are collective on ``comm``.
    """

    def __init__(self, case: Case, comm: MPI.Intracomm):
        self.case, self.comm = case, comm
        spec = case.physics
        self.B = spec.blocks
        self.mesh = build_mesh(case.mesh, comm, case.mesh_file)
        msh = self.mesh
        tdim = msh.topology.dim
        self.V = fem.functionspace(msh, ("Lagrange", spec.settings.degree))
        self.Q = fem.functionspace(msh, ("DG", 0))
        n_cells = msh.topology.index_map(tdim).size_local + msh.topology.index_map(tdim).num_ghosts
        mids = dmesh.compute_midpoints(msh, tdim, np.arange(n_cells, dtype=np.int32))
        self.cell_block = block_index(mids, self.B).astype(np.int32)
        self.cell_tags = dmesh.meshtags(msh, tdim, np.arange(n_cells, dtype=np.int32),
                                        self.cell_block)
        self.kappa = fem.Function(self.Q, name="kappa")
        self.source = fem.Constant(msh, float(spec.settings.source))
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        self.a = fem.form(ufl.inner(self.kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx)
        self.L = fem.form(self.source * v * ufl.dx)
        msh.topology.create_connectivity(tdim - 1, tdim)
        facets = dmesh.exterior_facet_indices(msh.topology)
        self.bc_dofs = fem.locate_dofs_topological(self.V, tdim - 1, facets)
        self.bcs = [fem.dirichletbc(0.0, self.bc_dofs, self.V)]
        self.solver = LinearSolver(self.a, self.L, self.bcs, case.petsc_options, "tb")
        self.u = fem.Function(self.V, name="u")
        self._ordering: StoreOrdering | None = None
        self._qoi = None
        self._obs = None
        self._flux = None
        self._obs_affine = None

    @property
    def ordering(self) -> StoreOrdering:
        if self._ordering is None:
            self._ordering = StoreOrdering(self.V)
        return self._ordering

    def set_parameters(self, mu: np.ndarray) -> None:
        self.kappa.x.array[:] = np.asarray(mu, dtype=float)[self.cell_block]

    def solve(self, mu: np.ndarray) -> SolveResult:
        """Solve for μ into ``self.u``."""
        self.set_parameters(mu)
        return self.solver.solve(self.u)

    # ---------------------------------------------------------------- quantities of interest
    def _qoi_forms(self) -> dict[str, fem.Form]:
        v = ufl.TestFunction(self.V)
        dxb = ufl.Measure("dx", domain=self.mesh, subdomain_data=self.cell_tags)
        area = 1.0 / self.B**2
        forms = {"mean": fem.form(v * ufl.dx)}
        for k in range(self.B**2):
            forms[f"block_mean_{k}"] = fem.form((1.0 / area) * v * dxb(k))
        return forms

    def qoi_vectors(self) -> dict[str, np.ndarray]:
        """Owned parts of the linear QoI functionals l (QoI(u) = l·u), one per case QoI."""
        if self._qoi is None:
            forms = self._qoi_forms()
            self._qoi = {}
            for name in self.case.qoi:
                b = fem_petsc.assemble_vector(forms[name])
                b.ghostUpdate(addv=fem_petsc.PETSc.InsertMode.ADD,
                              mode=fem_petsc.PETSc.ScatterMode.REVERSE)
                self._qoi[name] = b.getArray().copy()
                b.destroy()
        return self._qoi

    def qoi(self) -> np.ndarray:
        """Values of the case's QoIs for the current solution (the same on all ranks)."""
        n = self.V.dofmap.index_map.size_local
        local = np.array([vec @ self.u.x.array[:n] for vec in self.qoi_vectors().values()])
        return self.comm.allreduce(local)

    # ---------------------------------------------------------------- static data for the store
    def static_data(self) -> StaticData | None:
        """Mesh, inner products, affine terms and QoI functionals in store ordering (on root)."""
        o = self.ordering
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        dxb = ufl.Measure("dx", domain=self.mesh, subdomain_data=self.cell_tags)

        mat, vec = o.assemble_matrix, o.assemble_vector
        mass = mat(u * v * ufl.dx)
        stiffness = mat(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
        affine_a = [mat(ufl.inner(ufl.grad(u), ufl.grad(v)) * dxb(k)) for k in range(self.B**2)]
        f0 = vec(self.source * v * ufl.dx)
        qoi = [o.gather(l_vec) for l_vec in self.qoi_vectors().values()]
        obs = self.observation_rows()
        obs_affine = self.observation_affine()
        dirichlet = o.gather_index_set(self.bc_dofs)
        cells = o.gather_cells()
        if self.comm.rank != o.root:
            return None
        return StaticData(
            points=o.points,
            cells=cells,
            cell_type=o.cell_type,
            mass=mass,
            stiffness=stiffness,
            dirichlet_dofs=dirichlet,
            affine_a=affine_a,
            affine_f=f0[None, :],
            qoi_functionals=np.array(qoi) if qoi else np.zeros((0, o.n_global)),
            observation_functionals=obs,
            observation_affine=obs_affine[0] if obs_affine else None,
            observation_affine_f=obs_affine[1] if obs_affine else None,
        )

    def observation_rows(self) -> np.ndarray | None:
        """(n_obs, N) rows L with y = L u in store ordering, on root (None elsewhere).

        This is the μ-independent part of the observations: exact for point sensors and box
        averages; boundary fluxes (affine in μ) have zero rows here — see
        :meth:`observation_affine` and :meth:`observation_operator`.
        """
        from hybrid.fem.observations import observation_rows

        if self._obs is None:
            self._obs = observation_rows(self.V, self.ordering, self.case.observations,
                                         f"{self.case.path}")
        return self._obs if self.comm.rank == self.ordering.root else None

    def _fluxes(self) -> list[tuple[fem.Function, fem.Form]]:
        """Per declared flux: its weight g_Γ and the form ∫ s g_Γ − κ∇u·∇g_Γ dx (cached)."""
        from hybrid.fem.observations import flux_weight

        if self._flux is None:
            fluxes = []
            for name, sides in self.case.observations.fluxes.items():
                g = flux_weight(self.V, self.bc_dofs, sides,
                                f"{self.case.path}: observations.fluxes.{name}")
                form = fem.form((self.source * g - ufl.inner(self.kappa * ufl.grad(self.u),
                                                             ufl.grad(g))) * ufl.dx)
                fluxes.append((g, form))
            self._flux = fluxes
        return self._flux

    def observation_affine(self) -> tuple | None:
        """The μ-dependent part of the observations, in the store's format, on root.

        Returns (B, b) with B CSR (n_obs·Q_a, N), row i·Q_a + q = B_{i,q} = −g_Γᵀ A_q for flux
        i (zero for sensors and averages), and b (n_obs, Q_f) with b_{i,q} = g_Γᵀ f_q; None
        when the case declares no flux (and on the other ranks). Collective.
        """
        import scipy.sparse as sp

        if not self.case.observations.fluxes:
            return None
        if self._obs_affine is None:
            o = self.ordering
            v = ufl.TestFunction(self.V)
            dxb = ufl.Measure("dx", domain=self.mesh, subdomain_data=self.cell_tags)
            n_lin = len(self.case.observations.names()) - len(self.case.observations.fluxes)
            Qa = self.B**2
            rows, bf = [], []
            for g, _ in self._fluxes():
                for k in range(Qa):
                    b = fem_petsc.assemble_vector(fem.form(
                        ufl.inner(ufl.grad(v), ufl.grad(g)) * dxb(k)))
                    b.ghostUpdate(addv=fem_petsc.PETSc.InsertMode.ADD,
                                  mode=fem_petsc.PETSc.ScatterMode.REVERSE)
                    rows.append(o.gather_vector(b))
                    b.destroy()
                bf.append(self.comm.allreduce(
                    fem.assemble_scalar(fem.form(self.source * g * ufl.dx))))
            if self.comm.rank == o.root:
                n_flux = len(bf)
                B = sp.vstack([sp.csr_matrix((n_lin * Qa, o.n_global)),
                               -sp.csr_matrix(np.array(rows))], format="csr")
                B.eliminate_zeros()
                f = np.zeros((n_lin + n_flux, 1))
                f[n_lin:, 0] = bf
                self._obs_affine = (B, f)
            else:
                self._obs_affine = ()
        return self._obs_affine if self.comm.rank == self.ordering.root else None

    def observation_operator(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows (m, N), offset (m,)) with y = rows @ u + offset at μ, in store ordering.

        For μ-independent observations rows = :meth:`observation_rows` and offset = 0;
        a flux row is Σ_q θ_q(μ) B_q, its offset Σ_q ϑ_q(μ) b_q. On root (None elsewhere);
        collective.
        """
        L = self.observation_rows()
        aff = self.observation_affine()
        if self.comm.rank != self.ordering.root:
            return None
        if aff is None:
            return L.copy(), np.zeros(L.shape[0])
        spec = self.case.physics
        mu = np.asarray(mu, dtype=float)
        return affine_observation_operator(L, aff[0], aff[1], spec.theta_a(mu), spec.theta_f(mu))

    def flux_values(self) -> np.ndarray:
        """Outward fluxes ∫ s g_Γ dx − a(u, g_Γ; μ) of the current solution (positive: out).

        One per declared flux, the same on all ranks; collective.
        """
        local = np.array([fem.assemble_scalar(form) for _, form in self._fluxes()])
        return self.comm.allreduce(local) if local.size else np.zeros(0)

    def observe(self) -> np.ndarray:
        """Observations of the current solution (the same on all ranks).

        In the order of ``case.observations.names()``: sensors, averages, then fluxes.
        """
        rows = self.observation_rows()
        u = self.ordering.gather_function(self.u)
        y = rows @ u if u is not None else None
        y = self.comm.bcast(y, root=self.ordering.root)
        n_flux = len(self.case.observations.fluxes)
        if n_flux:
            y[len(y) - n_flux:] = self.flux_values()
        return y

    def destroy(self) -> None:
        self.solver.destroy()

    # ---------------------------------------------------------------- tangent-linear model
    def observation_jacobian(self, mu: np.ndarray) -> np.ndarray:
        """dy/dμ (m, P) of the observations at the current solution (solved at ``mu``).

        Tangent-linear model: differentiating A(μ) u = f with A = Σ_k μ_k A_k gives
        A(μ) ∂u/∂μ_k = −A_k u, solved with the operator already factored for u (MUMPS
        reuses its factors: P back-substitutions, no new factorisation). With
        y = L(μ) u + b(μ) (point sensors and averages: L constant, b = 0; fluxes: affine in
        μ), ∂y/∂μ_k = L(μ) ∂u/∂μ_k + (∂L/∂μ_k) u + ∂b/∂μ_k, the last two by a difference of
        the affine operator at μ + e_k and μ (exact for affine dependence). Collective; the
        result is on every rank.
        """
        P = self.B**2
        mu = np.asarray(mu, dtype=float)
        root = self.comm.rank == self.ordering.root
        rows, offset = self.observation_operator(mu) if root else (None, None)
        if not root:
            self.observation_operator(mu)  # collective
        u = self.ordering.gather_function(self.u)
        J = np.zeros((rows.shape[0], P)) if root else None
        for k in range(P):
            du = self.ordering.gather_function(self._tangent(k))
            if J is not None:
                J[:, k] = rows @ du
        if self.case.observations.fluxes:  # μ-dependent rows: add (∂L/∂μ_k) u + ∂b/∂μ_k
            for k in range(P):
                e = mu.copy()
                e[k] += 1.0
                res = self.observation_operator(e)
                if J is not None:
                    rows_k, off_k = res
                    J[:, k] += (rows_k - rows) @ u + (off_k - offset)
        return self.comm.bcast(J, root=self.ordering.root)

    def _tangent(self, k: int) -> fem.Function:
        """∂u/∂μ_k at the current solution: A(μ) ∂u/∂μ_k = −A_k u on the last solve's factors.

        Used by :meth:`observation_jacobian` and :meth:`qoi_jacobian`; the returned function is
        overwritten by the next call. Collective.
        """
        if not hasattr(self, "_sens_forms"):
            v = ufl.TestFunction(self.V)
            dxb = ufl.Measure("dx", domain=self.mesh, subdomain_data=self.cell_tags)
            self._sens_forms = [fem.form(-ufl.inner(ufl.grad(self.u), ufl.grad(v)) * dxb(q))
                                for q in range(self.B**2)]
            self._du = fem.Function(self.V)
        b = self.solver.b
        with b.localForm() as bl:
            bl.set(0.0)
        fem_petsc.assemble_vector(b, self._sens_forms[k])
        b.ghostUpdate(addv=fem_petsc.PETSc.InsertMode.ADD,
                      mode=fem_petsc.PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(b, self.bcs)   # homogeneous: ∂u/∂μ_k = 0 on the boundary
        self.solver.ksp.solve(b, self._du.x.petsc_vec)
        self._du.x.scatter_forward()
        return self._du

    def qoi_jacobian(self, mu: np.ndarray) -> np.ndarray:
        """dq/dμ (q, P) of the case's QoIs at the current solution (solved at ``mu``).

        The QoIs are linear functionals of u (q_i = l_i·u, :meth:`qoi_vectors`, independent
        of μ), so ∂q_i/∂μ_k = l_i·∂u/∂μ_k with the tangent-linear solutions of
        :meth:`observation_jacobian`: P back-substitutions on the factors already computed
        for u, no new factorisation. Collective; the result is on every rank.
        """
        n = self.V.dofmap.index_map.size_local
        ls = list(self.qoi_vectors().values())
        J = np.zeros((len(ls), self.B**2))
        for k in range(self.B**2):
            du = self._tangent(k).x.array[:n]
            J[:, k] = [l_vec @ du for l_vec in ls]
        return self.comm.allreduce(J)
