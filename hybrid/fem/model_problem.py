"""A model plug-in's Problem on a case: the interface of the hand-written thermal block.

:class:`ModelProblem` builds the plug-in's :class:`hybrid.model.Problem` on the case's mesh
and gives campaigns, :class:`hybrid.fem.model.FEMModel` and ``hybrid solve`` what
:class:`hybrid.fem.thermal_block.ThermalBlockProblem` gives them:

- ``solve(μ)``: :class:`hybrid.fem.discretisation.Discretisation` (KSP for a linear F,
  SNES Newton otherwise); the converged reason is the sample's reason;
- the field in store ordering (:class:`hybrid.fem.ordering.StoreOrdering`), the case's QoIs
  (each must be a linear functional q(u) = l·u: ∂q/∂u is u-free and q(0) = 0, so that the
  store can hold it as the row l), point sensors and box averages (rows L, y = L u);
- ``static_data()``: mesh, mass and stiffness matrices, Dirichlet DOFs, QoI and observation
  rows, and — for a linear F with a checked affine decomposition
  F = Σ_q θ_q(μ) (a_q(u, v) − f_q(v)) (:func:`hybrid.fem.analysis.affine_decomposition`) —
  the matrices A_q and vectors f_q, with θ_q as data in :meth:`model_record`;
- Jacobians (:mod:`hybrid.fem.tangent`): differentiating F(u(μ); μ) = 0 gives

      J(u) δu_q = −∂F/∂μ_q,   J = ∂F/∂u at the converged u,   δu_q = 0 on the Dirichlet boundary

  and dy_i/dμ_q = l_i·δu_q, or by the adjoint Jᵀλ_i = l_i, dy_i/dμ_q = −λ_i·∂F/∂μ_q —
  whichever needs fewer solves, min(P, m), on one factorisation of J (for a linear F with a
  direct solver, the solve's own).

All methods are collective on ``comm``.
"""

from __future__ import annotations

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI
from petsc4py import PETSc

from hybrid.case import Case
from hybrid.errors import ModelError
from hybrid.fem.analysis import analyse, at_zero
from hybrid.fem.discretisation import Discretisation
from hybrid.fem.mesh import build_mesh
from hybrid.fem.ordering import StoreOrdering
from hybrid.fem.quadrature import pin_quadrature_degrees
from hybrid.fem.solver import SolveResult
from hybrid.store import StaticData


class ModelProblem:
    """A plug-in model on ``case`` (its ``physics`` a :class:`hybrid.physics.plugin.PluginSpec`)."""

    def __init__(self, case: Case, comm: MPI.Intracomm):
        self.case, self.comm = case, comm
        spec = case.physics
        self.spec = spec
        self.mesh = build_mesh(case.mesh, comm, case.mesh_file)
        self.pb, self.ctx = spec.loaded.build(spec.model, self.mesh, case.parameters.names)
        self.pb.F = pin_quadrature_degrees(self.pb.F)   # one rule for F, J and ∂F/∂μ
        self.mu = self.ctx.mu
        self.u = self.pb.u
        self.V = self.u.function_space
        self.bcs = list(self.pb.bcs)
        origin = spec.loaded.origin
        if self.V.dofmap.index_map_bs != 1 or self.u.ufl_shape != ():
            raise ModelError(f"{origin}: the unknown u must be scalar (store ordering and "
                             "sensors are implemented for scalar spaces)")
        v = ufl.TestFunction(self.V)
        self._qoi_forms, self._qoi_rows = {}, {}
        for name in case.qoi:
            q = self.pb.qoi[name]
            dq = ufl.algorithms.expand_derivatives(ufl.derivative(q, self.u, v))
            zero = at_zero(q, self.u)
            if self.u in dq.coefficients() or not zero.empty():
                raise ModelError(f"{origin}: QoI {name!r} is not a linear functional of u "
                                 "(the store holds QoIs as rows l, q(u) = l·u)")
            self._qoi_forms[name] = fem.form(q)
            self._qoi_rows[name] = fem.form(dq)
        self.disc = Discretisation(self.pb, self.mu, dict(case.petsc_options),
                                   name=f"model_{spec.name}")
        self.linear = self.disc.linear
        self._ordering: StoreOrdering | None = None
        self._qoi = None
        self._obs = None
        self._record = None
        self._tl = None

    # ---------------------------------------------------------------- solve and outputs
    @property
    def ordering(self) -> StoreOrdering:
        if self._ordering is None:
            self._ordering = StoreOrdering(self.V)
        return self._ordering

    @property
    def element(self) -> dict:
        """The unknown's element, for the store manifest."""
        return {"family": "Lagrange", "degree": int(self.V.ufl_element().embedded_superdegree)}

    def solve(self, mu: np.ndarray) -> SolveResult:
        """Solve at μ into ``self.u`` (KSP or SNES; a failed solve is a result)."""
        return self.disc.solve(np.asarray(mu, dtype=float))

    def qoi_vectors(self) -> dict[str, np.ndarray]:
        """Owned parts of the QoI rows l = ∂q/∂u (q(u) = l·u), one per case QoI."""
        if self._qoi is None:
            self._qoi = {}
            for name, form in self._qoi_rows.items():
                b = fem_petsc.assemble_vector(form)
                b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
                self._qoi[name] = b.getArray().copy()
                b.destroy()
        return self._qoi

    def qoi(self) -> np.ndarray:
        """The case's QoIs of the current solution (assembled forms; the same on all ranks)."""
        return np.array([self.comm.allreduce(fem.assemble_scalar(f))
                         for f in self._qoi_forms.values()], dtype=float)

    def observation_rows(self) -> np.ndarray | None:
        """(n_obs, N) rows L with y = L u in store ordering, on root (None elsewhere)."""
        from hybrid.fem.observations import observation_rows

        if self._obs is None:
            self._obs = observation_rows(self.V, self.ordering, self.case.observations,
                                         f"{self.case.path}")
        return self._obs if self.comm.rank == self.ordering.root else None

    def observation_operator(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, offset) with y = rows @ u + offset: μ-independent here (offset 0); on root."""
        L = self.observation_rows()
        if L is None:
            return None
        return L.copy(), np.zeros(L.shape[0])

    def observe(self) -> np.ndarray:
        """Observations of the current solution, in ``case.observations.names()`` order."""
        rows = self.observation_rows()
        u = self.ordering.gather_function(self.u)
        y = rows @ u if u is not None else None
        return self.comm.bcast(y, root=self.ordering.root)

    # ---------------------------------------------------------------- static data
    def _dirichlet_dofs(self) -> np.ndarray:
        dofs = [bc.dof_indices()[0] for bc in self.bcs]
        return np.unique(np.concatenate(dofs)) if dofs else np.zeros(0, dtype=np.int32)

    def _analysis(self):
        box = (self.case.parameters.lower, self.case.parameters.upper)
        return analyse(self.pb, self.mu, box)

    def model_record(self) -> dict:
        """What the store and surrogates record of the model (after :meth:`static_data`).

        {reference, sha256, settings, linear, affine, certified, reason, theta_a, theta_f}:
        θ trees of the store's A_q and f_q (empty lists when the store holds none), and
        whether the min-θ coercivity certificate holds (the surrogate's error bound needs it).
        """
        if self._record is None:
            self.static_data()
        return self._record

    def static_data(self) -> StaticData | None:
        """Mesh, inner products, Dirichlet DOFs, QoI and observation rows and affine terms.

        A_q, f_q are written only for a linear F whose affine decomposition reassembles F
        (otherwise ``affine_a = []`` and ``affine_f`` is (0, N)). On root; None elsewhere.
        """
        o = self.ordering
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)

        mat, vec = o.assemble_matrix, o.assemble_vector
        dx = ufl.dx(domain=self.mesh)
        mass = mat(u * v * dx)
        stiffness = mat(ufl.inner(ufl.grad(u), ufl.grad(v)) * dx)
        an = self._analysis()
        d = an.affine
        use = bool(an.linear and d.affine and d.a)
        affine_a = [mat(t.form) for t in d.a] if use else []
        affine_f = [vec(t.form) for t in d.f] if use else []
        cert = an.certificate
        self._record = {
            **self.spec.model_info,
            "settings": self.spec.settings.model_dump(),
            "linear": bool(an.linear),
            "affine": bool(d.affine),
            "certified": bool(use and cert is not None and cert.ok),
            "reason": d.reason if not d.affine else (
                "" if use else "not linear in u: the store holds no affine terms"),
            "theta_a": d.theta_a if use else [],
            "theta_f": d.theta_f if use else [],
        }
        qoi = [o.gather(vec_) for vec_ in self.qoi_vectors().values()]
        obs = self.observation_rows()
        dirichlet = o.gather_index_set(self._dirichlet_dofs())
        cells = o.gather_cells()
        if self.comm.rank != o.root:
            return None
        N = o.n_global
        return StaticData(
            points=o.points,
            cells=cells,
            cell_type=o.cell_type,
            mass=mass,
            stiffness=stiffness,
            dirichlet_dofs=dirichlet,
            affine_a=affine_a,
            affine_f=np.array(affine_f) if affine_f else np.zeros((0, N)),
            qoi_functionals=np.array(qoi) if qoi else np.zeros((0, N)),
            observation_functionals=obs,
        )

    # ---------------------------------------------------------------- derivatives
    def sensitivity(self):
        """The :class:`hybrid.fem.tangent.Sensitivity` of this problem (made once).

        For a linear F solved by a direct KSP, the solve's own factors of J are reused;
        otherwise J is assembled and set up once per state with the solver's KSP/PC options.
        """
        from hybrid.fem.tangent import Sensitivity, is_direct, linear_options

        if self._tl is None:
            opts = linear_options(self.disc.options)
            reuse = self.disc.linear_ksp if self.linear and is_direct(opts) else None
            self._tl = Sensitivity(self.pb.F, self.u, self.mu, self.bcs, options=opts,
                                   reuse=reuse)
        return self._tl

    def _at(self, mu: np.ndarray) -> None:
        """Make the current state the solution at ``mu`` (solve only if μ differs)."""
        mu = np.asarray(mu, dtype=float)
        if not np.array_equal(self.mu.values_array(), mu):
            res = self.solve(mu)
            if not res.ok:
                from hybrid.errors import SolveFailed

                raise SolveFailed(f"FEM solve at mu={np.round(mu, 6).tolist()} failed: "
                                  f"{res.reason}")

    def _tangents(self) -> list[np.ndarray]:
        """Owned parts of δu_q, q < P, at the current solution: J δu_q = −∂F/∂μ_q."""
        return self.sensitivity().tangents()

    def _observation_rows_owned(self) -> list[np.ndarray]:
        """Owned parts of the observation rows l_i (scattered from root once)."""
        if getattr(self, "_obs_owned", None) is None:
            rows = self.observation_rows()
            m = self.comm.bcast(rows.shape[0] if rows is not None else 0,
                                root=self.ordering.root)
            self._obs_owned = [self.ordering.scatter(rows[i] if rows is not None else None)
                               for i in range(m)]
        return self._obs_owned

    def observation_jacobian(self, mu: np.ndarray, mode: str = "auto") -> np.ndarray:
        """dy/dμ (m, P) at the solution at ``mu``; on every rank.

        Tangent-linear (P solves) or adjoint (m solves), whichever is fewer, on one
        factorisation of J (:mod:`hybrid.fem.tangent`); ``mode`` forces one.
        """
        self._at(mu)
        return self.sensitivity().jacobian(self._observation_rows_owned(), mode)

    def qoi_jacobian(self, mu: np.ndarray, mode: str = "auto") -> np.ndarray:
        """dq/dμ (n_qoi, P) at the solution at ``mu``: l·δu_q or −λᵀ∂F/∂μ; on every rank."""
        self._at(mu)
        return self.sensitivity().jacobian(list(self.qoi_vectors().values()), mode)

    def _output_rows(self, output: str) -> list[np.ndarray]:
        if output == "observations":
            return self._observation_rows_owned()
        if output == "qoi":
            return list(self.qoi_vectors().values())
        raise ValueError(f"output must be 'observations' or 'qoi', got {output!r}")

    def vjp(self, mu: np.ndarray, output: str, sens: np.ndarray) -> np.ndarray:
        """sᵀ d(output)/dμ (P,) at the solution at ``mu``: one adjoint solve; every rank."""
        self._at(mu)
        return self.sensitivity().vjp(self._output_rows(output), sens)

    def jvp(self, mu: np.ndarray, output: str, direction: np.ndarray) -> np.ndarray:
        """d(output)/dμ v at the solution at ``mu``: one tangent-linear solve; every rank."""
        self._at(mu)
        return self.sensitivity().jvp(self._output_rows(output), direction)

    # ---------------------------------------------------------------- residual indicator
    def residual_indicator(self, inner_product: str = "h1"):
        """The :class:`hybrid.fem.indicator.ResidualIndicator` in ``inner_product``.

        Made once per inner product: X₀ is factorised at the first call.
        """
        from hybrid.fem.indicator import ResidualIndicator

        cache = self.__dict__.setdefault("_indicators", {})
        if inner_product not in cache:
            cache[inner_product] = ResidualIndicator(self.pb.F, self.u, self.mu, self.bcs,
                                                     inner_product)
        return cache[inner_product]

    def indicator(self, mu: np.ndarray, field: np.ndarray | None,
                  inner_product: str = "h1") -> float:
        """η(μ) = ‖F(ũ; μ)‖_{X'} of a field ũ in store ordering; on every rank.

        ``field`` is read on root (None elsewhere); its Dirichlet values are replaced by
        the model's.
        """
        owned = self.ordering.scatter(field)
        return self.residual_indicator(inner_product)(mu, owned)

    def destroy(self) -> None:
        self.disc.destroy()
        if self._tl is not None:
            self._tl.destroy()
            self._tl = None
        for ind in self.__dict__.pop("_indicators", {}).values():
            ind.destroy()
