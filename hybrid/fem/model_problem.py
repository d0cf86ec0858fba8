"""A model plug-in's Problem on a case: what campaigns, the FEM model and ``hybrid solve`` use.

:class:`ModelProblem` builds the plug-in's :class:`hybrid.model.Problem` on the case's mesh
(every model is a plug-in, the built-in thermal block included) and gives
campaigns, :class:`hybrid.fem.model.FEMModel` and ``hybrid solve``:

- ``solve(μ)``: :class:`hybrid.fem.discretisation.Discretisation` (KSP for a linear F,
  SNES Newton otherwise); the converged reason is the sample's reason;
- the field in store ordering (:class:`hybrid.fem.ordering.StoreOrdering`), the case's QoIs
  (each must be a linear functional q(u) = l·u: ∂q/∂u is u-free and q(0) = 0, so that the
  store can hold it as the row l), point sensors and box averages (rows L, y = L u);
- boundary fluxes from the residual, for every model: with g_Γ the weight of Γ
  (:func:`hybrid.fem.observations.flux_weight`: 1 on the Dirichlet DOFs of Γ, shared
  DOFs split between sides, 0 elsewhere), the outward flux is

      y_Γ(u; μ) = −F(u; g_Γ; μ)        (F with its test function replaced by g_Γ)

  — for F = a(u, v; μ) − ∫ s v this is ∫ s g_Γ − a(u, g_Γ; μ), positive for heat leaving Ω.
  For a linear affine F = Σ_q θ_q (a_q(u, v) − f_q(v)) it is affine in θ,
  y_Γ = Σ_q θ_q (B_q u + b_q) with B_q = −g_Γᵀ A_q, b_q = g_Γᵀ f_q, which the store holds
  (docs/store-format.md); its μ-derivative is dy_Γ/dμ_q = −∂F/∂u[δu_q](g_Γ) − ∂F/∂μ_q(u; g_Γ)
  (:meth:`ModelProblem.flux_jacobian`);
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

from hybrid.core.case import Case
from hybrid.core.store import StaticData
from hybrid.errors import ModelError
from hybrid.fem.analysis import (
    analyse,
    assemble_into,
    assemble_owned,
    at_zero,
    parameter_derivatives,
)
from hybrid.fem.discretisation import Discretisation
from hybrid.fem.mesh import build_mesh_and_tags
from hybrid.fem.ordering import StoreOrdering
from hybrid.fem.quadrature import pin_quadrature_degrees
from hybrid.fem.solver import SolveResult


class ModelProblem:
    """A plug-in model on ``case`` (its ``physics`` a :class:`hybrid.core.physics.PluginSpec`).

    ``built``: the (mesh, tags, Problem, Context) already built by
    :func:`hybrid.fem.problems.create_problem` (default: built here).
    """

    def __init__(self, case: Case, comm: MPI.Intracomm, built=None):
        self.case, self.comm = case, comm
        spec = case.physics
        self.spec = spec
        if built is None:
            mesh, tags = build_mesh_and_tags(case.mesh, comm, case.mesh_file)
            pb, ctx = spec.loaded.build(spec.model, mesh, case.parameters.names, tags)
            built = (mesh, tags, pb, ctx)
        self.mesh, tags, self.pb, self.ctx = built
        from hybrid.model.reaction import ReactionDiffusion

        if isinstance(self.pb, ReactionDiffusion):   # its reaction is not part of F
            raise ModelError(f"{spec.loaded.origin}: a reaction-diffusion model is stepped by "
                             "operator splitting: use hybrid.fem.problems.create_problem "
                             "(the activation-time map, hybrid.fem.activation)")
        self.pb.F = pin_quadrature_degrees(self.pb.F)   # one rule for F, J and ∂F/∂μ
        self.mu = self.ctx.mu
        self.u = self.pb.u
        self.V = self.u.function_space
        self.bcs = list(self.pb.bcs)
        origin = spec.loaded.origin
        if len(self.u.ufl_shape) > 1 or (
                self.V.num_sub_spaces and self.V.dofmap.index_map_bs != self.V.num_sub_spaces):
            raise ModelError(f"{origin}: the unknown u must be a scalar or a vector Lagrange "
                             "field (one blocked space; store ordering and sensors are "
                             "implemented for these)")
        if self.u.ufl_shape and case.observations.fluxes:
            from hybrid.errors import CaseError

            raise CaseError(f"{case.path}: observations.fluxes: boundary fluxes are "
                            "implemented for scalar fields; the unknown is a vector field")
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
        self.transient = self.pb.time is not None
        self.stepper = None
        if self.transient:
            from hybrid.fem.transient import DEFAULT_SCHEME, TransientSolver

            tm = case.time
            pick = (lambda k: getattr(tm, k) if tm is not None else None)  # noqa: E731
            try:
                self.stepper = TransientSolver(
                    self.pb, self.mu, self.ctx.t, self.ctx.dt,
                    scheme=pick("scheme") or DEFAULT_SCHEME, t0=pick("t0"),
                    t_end=pick("t_end"), step=pick("dt"), qoi=self._qoi_forms,
                    petsc_options=dict(case.petsc_options), every=case.every,
                    name=f"model_{spec.name}")
            except ValueError as exc:
                from hybrid.errors import CaseError

                raise CaseError(f"{case.path}: time: {exc}") from None
            self.disc = None
            self.linear = self.stepper.linear
            self.observation_steps = self._observation_steps()
        else:
            if case.time is not None:
                from hybrid.errors import CaseError

                raise CaseError(f"{case.path}: time: model {spec.name!r} is steady (its "
                                "Problem has no time grid); remove the [time] table")
            if case.observations.times is not None:
                from hybrid.errors import CaseError

                raise CaseError(f"{case.path}: observations.times: model {spec.name!r} is "
                                "steady; observation times need a transient model")
            try:
                self.disc = Discretisation(self.pb, self.mu, dict(case.petsc_options),
                                           name=f"model_{spec.name}")
            except ValueError as exc:   # e.g. a Problem.near_nullspace hybrid cannot use
                raise ModelError(f"{origin}: {exc}") from None
            self.linear = self.disc.linear
        self._ordering: StoreOrdering | None = None
        self._qoi = None
        self._obs = None
        self._record = None
        self._tl = None
        self._an = None
        self._flux = None
        self._flux_affine = None
        self._flux_tl = None

    # ---------------------------------------------------------------- transient outputs
    def _observation_steps(self) -> np.ndarray:
        """Indices into the output times of ``[observations] times`` (CaseError if off-grid)."""
        from hybrid.errors import CaseError

        obs = self.case.observations
        if obs.fluxes:
            raise CaseError(f"{self.case.path}: observations.fluxes: boundary fluxes of "
                            "transient models are not supported (the residual flux would "
                            "need the time derivative); use point sensors or averages")
        if not obs.names():
            return np.zeros(0, dtype=int)
        out = self.stepper.output_times()
        times = obs.times if obs.times is not None else [float(out[-1])]
        from hybrid.core.store import output_time_indices

        try:
            return output_time_indices(out, times, tol=1e-9 * max(1.0, abs(out[-1])))
        except ValueError as exc:
            raise CaseError(
                f"{self.case.path}: observations.times: t = {exc.args[0]:g} is not an output "
                f"time (t0 = {out[0]:g}, dt = {self.stepper.dt:g}, every {self.stepper.every} "
                f"steps: {out[1] - out[0] if out.size > 1 else 0:g} apart, to "
                f"t_end = {out[-1]:g})") from None

    @property
    def observation_times(self) -> np.ndarray:
        """The times at which a transient case observes (default: t_end only)."""
        return self.stepper.output_times()[self.observation_steps]

    def time_record(self) -> dict:
        """The store manifest's ``time`` record of this transient problem."""
        st = self.stepper
        return {"scheme": st.scheme, "t0": st.t0, "t_end": st.t_end, "dt": st.dt,
                "n_steps": st.n_steps, "every": st.every,
                "times": st.output_times().tolist(),
                "observation_times": self.observation_times.tolist()}

    def run_trajectory(self, mu: np.ndarray, *, fields: bool = False):
        """The time loop at μ with its observations (collective).

        Returns (result, y, U): the :class:`~hybrid.fem.transient.TransientResult`, the
        observations (n_obs_times · n_obs,) time-major on every rank (None if the loop
        failed), and the store-ordered fields (n_out, N) on root when ``fields`` (else None).
        Sensor rows are applied to the owned DOFs and summed over ranks: no field is gathered
        for the observations.
        """
        owned = self._observation_rows_owned() if self.case.observations.names() else []
        rows = np.array(owned) if owned else None
        steps = set(self.observation_steps.tolist())
        y, k = [], [0]
        n_local = self.ordering.n_local       # owned DOFs (× block size)

        def on_output(t, u):
            if k[0] in steps and rows is not None:
                y.append(self.comm.allreduce(rows @ u.x.array[:n_local]))
            k[0] += 1

        res = self.stepper.run(np.asarray(mu, dtype=float), on_output, keep_fields=fields)
        U = None
        if fields and res.ok:
            got = [self.ordering.gather(f) for f in res.fields]
            U = np.array(got) if self.comm.rank == self.ordering.root else None
        obs = np.concatenate(y) if (res.ok and y) else (np.zeros(0) if res.ok else None)
        return res, obs, U

    # ---------------------------------------------------------------- solve and outputs
    @property
    def ordering(self) -> StoreOrdering:
        if self._ordering is None:
            self._ordering = StoreOrdering(self.V)
        return self._ordering

    @property
    def element(self) -> dict:
        """The unknown's element, for the store manifest (``value_shape`` for a vector field)."""
        out = {"family": "Lagrange", "degree": int(self.V.ufl_element().embedded_superdegree)}
        if self.u.ufl_shape:
            out["value_shape"] = list(self.u.ufl_shape)
        return out

    def solve(self, mu: np.ndarray) -> SolveResult:
        """Solve at μ into ``self.u`` (KSP or SNES; a failed solve is a result).

        A transient problem runs its time loop; ``self.u`` is then the last step.
        """
        if self.transient:
            return self.solve_transient(mu).as_solve_result()
        return self.disc.solve(np.asarray(mu, dtype=float))

    def solve_transient(self, mu: np.ndarray, on_output=None, keep_fields: bool = False):
        """The time loop at μ: a :class:`hybrid.fem.transient.TransientResult` (collective).

        Its ``qoi`` rows are the case's QoIs at ``times``; ``on_output(t, u)`` is called at
        each output time; ``keep_fields`` keeps the owned DOF values per output time (DOLFINx
        ordering; :attr:`ordering` gathers them into store ordering).
        """
        if not self.transient:
            raise ValueError("solve_transient needs a transient problem (Problem.time)")
        return self.stepper.run(np.asarray(mu, dtype=float), on_output, keep_fields)

    def qoi_vectors(self) -> dict[str, np.ndarray]:
        """Owned parts of the QoI rows l = ∂q/∂u (q(u) = l·u), one per case QoI."""
        if self._qoi is None:
            self._qoi = {name: assemble_owned(form) for name, form in self._qoi_rows.items()}
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
        """(rows (m, N), offset (m,)) with y = rows @ u + offset at μ, in store ordering.

        Point sensors and averages: their rows L, offset 0. A flux row is Σ_q θ_q(μ) B_q, its
        offset Σ_q ϑ_q(μ) b_q (a linear affine model; otherwise fluxes are refused here, as
        they are not rows). On root (None elsewhere); collective.
        """
        from hybrid.core.store import affine_observation_operator
        from hybrid.core.theta import AffineCoefficients

        L = self.observation_rows()
        aff = self.observation_affine()
        if self.comm.rank != self.ordering.root:
            return None
        if aff is None:
            return L.copy(), np.zeros(L.shape[0])
        d = self._analysis().affine     # cached by observation_affine on every rank
        coef = AffineCoefficients(d.theta_a, d.theta_f, n_params=len(self.mu))
        mu = np.asarray(mu, dtype=float)
        return affine_observation_operator(L, aff[0], aff[1], coef.theta_a(mu),
                                           coef.theta_f(mu))

    def observe(self) -> np.ndarray:
        """Observations of the current solution, in ``case.observations.names()`` order.

        Sensors and averages as L u, then the fluxes −F(u; g_Γ) (the same on all ranks).
        """
        rows = self.observation_rows()
        u = self.ordering.gather_function(self.u)
        y = rows @ u if u is not None else None
        y = self.comm.bcast(y, root=self.ordering.root)
        n_flux = len(self.case.observations.fluxes)
        if n_flux:
            y[len(y) - n_flux:] = self.flux_values()
        return y

    # ---------------------------------------------------------------- boundary fluxes
    def _fluxes(self) -> tuple[list[np.ndarray], fem.Function, fem.Form]:
        """Flux weights g_Γ (local arrays), a Function g to hold one, the compiled −F(u; g).

        One compiled form serves all fluxes. Collective; cached.

        A side of Γ must be Dirichlet throughout: at a DOF without a Dirichlet condition the
        residual vanishes, so −F(u; g_Γ) would miss the flux through it (CaseError).
        """
        if self._flux is None:
            from hybrid.errors import CaseError
            from hybrid.fem.observations import SIDE_AXIS, flux_weight
            from hybrid.model.helpers import boundary_dofs

            dirichlet = self._dirichlet_dofs()
            free = np.setdiff1d(boundary_dofs(self.V), dirichlet)
            x = self.V.tabulate_dof_coordinates()
            gdim = self.mesh.geometry.dim

            def count(dofs, side):
                a, val = SIDE_AXIS[side]
                return self.comm.allreduce(int(np.sum(np.abs(x[dofs, a] - val) <= 1e-10)))

            sides_all = [s for s, (a, _) in SIDE_AXIS.items() if a < gdim]
            n_free = {s: count(free, s) for s in sides_all}
            full = [s for s in sides_all if n_free[s] == 0 and count(dirichlet, s) > 0]
            g = fem.Function(self.V, name="flux_weight")
            weights = []
            for name, sides in self.case.observations.fluxes.items():
                where = f"{self.case.path}: observations.fluxes.{name}"
                for side in sides:
                    if n_free.get(side, 0):
                        raise CaseError(
                            f"{where}: side {side!r} has boundary DOFs without a Dirichlet "
                            "condition; fluxes are taken from the residual at Dirichlet DOFs")
                gi = flux_weight(self.V, dirichlet, sides, where, among=full)
                weights.append(gi.x.array.copy())
            v = self.pb.F.arguments()[0]
            self._flux = (weights, g, fem.form(-ufl.replace(self.pb.F, {v: g})))
        return self._flux

    def flux_values(self) -> np.ndarray:
        """Outward fluxes −F(u; g_Γ) of the current solution, one per flux (every rank)."""
        if not self.case.observations.fluxes:
            return np.zeros(0)
        weights, g, form = self._fluxes()
        out = []
        for w in weights:
            g.x.array[:] = w
            out.append(self.comm.allreduce(fem.assemble_scalar(form)))
        return np.array(out, dtype=float)

    def observation_affine(self) -> tuple | None:
        """The μ-dependent part of the observations, in the store's format, on root.

        (B, b): B CSR (n_obs·Q_a, N), row i·Q_a + q = B_{i,q} = −g_Γᵀ A_q for flux i (zero
        rows for sensors and averages), b (n_obs, Q_f) with b_{i,q} = g_Γᵀ f_q = f_q(g_Γ).
        None when the case declares no flux (and on the other ranks). A model that is not
        linear with affine terms has no such form: CaseError. Collective.
        """
        import scipy.sparse as sp

        from hybrid.errors import CaseError

        fluxes = self.case.observations.fluxes
        if not fluxes:
            return None
        if self._flux_affine is None:
            an = self._analysis()
            d = an.affine
            if not (an.linear and d.affine and d.a):
                why = d.reason if not d.affine else "F is not linear in u"
                raise CaseError(
                    f"{self.case.path}: observations.fluxes: a store holds fluxes as affine "
                    f"functionals Σ θ_q (B_q u + b_q), which needs a linear model with affine "
                    f"terms; model {self.spec.name!r}: {why}")
            o = self.ordering
            weights, g, _ = self._fluxes()
            ca = [fem.Constant(self.mesh, 0.0) for _ in d.a]
            cf = [fem.Constant(self.mesh, 0.0) for _ in d.f]
            # one compiled form each: Σ_q c_q a_q(v, g) (the row g_Γᵀ A_q), Σ_q c_q f_q(g)
            row = fem.form(_weighted(ca, [ufl.action(ufl.adjoint(t.form), g) for t in d.a]))
            rhs = fem.form(_weighted(cf, [ufl.action(t.form, g) for t in d.f]))
            rows, bf = [], []
            for w in weights:
                g.x.array[:] = w
                for q in range(len(ca)):
                    for k, c in enumerate(ca):
                        c.value = 1.0 if k == q else 0.0
                    rows.append(self._gathered(row))
                line = []
                for q in range(len(cf)):
                    for k, c in enumerate(cf):
                        c.value = 1.0 if k == q else 0.0
                    line.append(self.comm.allreduce(fem.assemble_scalar(rhs)))
                bf.append(line)
            if self.comm.rank == o.root:
                n_lin = len(self.case.observations.names()) - len(fluxes)
                Qa, Qf = len(ca), len(cf)
                B = sp.vstack([sp.csr_matrix((n_lin * Qa, o.n_global)),
                               -sp.csr_matrix(np.array(rows))], format="csr")
                B.eliminate_zeros()
                b = np.zeros((n_lin + len(fluxes), Qf))
                b[n_lin:] = np.array(bf).reshape(len(fluxes), Qf)
                self._flux_affine = (B, b)
            else:
                self._flux_affine = ()
        return self._flux_affine if self.comm.rank == self.ordering.root else None

    def _gathered(self, form: fem.Form) -> np.ndarray | None:
        """A compiled linear form assembled and gathered in store ordering (root; collective)."""
        b = fem_petsc.create_vector(self.V)
        assemble_into(form, b)
        out = self.ordering.gather_vector(b)
        b.destroy()
        return out

    def flux_jacobian(self, mu: np.ndarray) -> np.ndarray:
        """dy_Γ/dμ (n_flux, P) at the current solution (solved at ``mu``); every rank.

        Differentiating y_Γ = −F(u(μ); g_Γ; μ):
        dy_Γ/dμ_q = −(∂F/∂u)[δu_q](g_Γ) − (∂F/∂μ_q)(u; g_Γ), with the tangents δu_q of the
        tangent-linear model (:meth:`_tangents`, the same factorisation as the other
        Jacobians). The first term is r_Γ·δu_q with r_Γ = −∂/∂u F(u; g_Γ) assembled as a
        vector. Collective.
        """
        if not self.case.observations.fluxes:
            return np.zeros((0, len(self.mu)))
        weights, g, _ = self._fluxes()
        if self._flux_tl is None:
            v = self.pb.F.arguments()[0]
            Fg = ufl.replace(self.pb.F, {v: g})
            dr = ufl.algorithms.expand_derivatives(
                ufl.derivative(-Fg, self.u, ufl.TestFunction(self.V)))
            c = [fem.Constant(self.mesh, 0.0) for _ in self.mu.constants]
            dmu = [(ck, f) for ck, f in zip(c, parameter_derivatives(-Fg, self.mu), strict=True)
                   if not f.empty()]
            dform = fem.form(_weighted(*zip(*dmu, strict=True))) if dmu else None
            self._flux_tl = (fem.form(dr), c, dform, fem_petsc.create_vector(self.V))
        rform, c, dform, b = self._flux_tl
        tangents = self._tangents()
        n = self.V.dofmap.index_map.size_local * self.V.dofmap.index_map_bs
        P = len(self.mu)
        J = np.zeros((len(weights), P))
        for i, w in enumerate(weights):
            g.x.array[:] = w
            assemble_into(rform, b)
            r = b.getArray()[:n]
            local = np.array([r @ du for du in tangents])
            J[i] = self.comm.allreduce(local)
            if dform is not None:
                for q in range(P):
                    for k, ck in enumerate(c):
                        ck.value = 1.0 if k == q else 0.0
                    J[i, q] += self.comm.allreduce(fem.assemble_scalar(dform))
        return J

    # ---------------------------------------------------------------- static data
    def _dirichlet_dofs(self) -> np.ndarray:
        dofs = [bc.dof_indices()[0] for bc in self.bcs]
        return np.unique(np.concatenate(dofs)) if dofs else np.zeros(0, dtype=np.int32)

    def _analysis(self):
        """:func:`hybrid.fem.analysis.analyse` of the problem on the case's box (cached)."""
        if self._an is None:
            box = (self.case.parameters.lower, self.case.parameters.upper)
            self._an = analyse(self.pb, self.mu, box)
        return self._an

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
        mass = mat(u * v * dx if not self.u.ufl_shape else ufl.inner(u, v) * dx)
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
        initial = self._initial_terms()
        if initial is not None:
            self._record["theta_0"] = initial[0]
        if self.transient:   # the time-derivative term: the default ∫ u v dx or the model's
            self._record["mass"] = "l2" if self.pb.mass is None else "model"
        qoi = [o.gather(vec_) for vec_ in self.qoi_vectors().values()]
        obs = self.observation_rows()
        obs_affine = self.observation_affine()
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
            observation_affine=obs_affine[0] if obs_affine else None,
            observation_affine_f=obs_affine[1] if obs_affine else None,
            initial_terms=initial[1] if initial is not None else None,
        )

    def _initial_terms(self) -> tuple[list, np.ndarray | None] | None:
        """(θ trees, g_q (Q_0, N) in store ordering on root) of an affine initial state.

        None for a steady problem or an initial state that is not affine in μ
        (:mod:`hybrid.fem.initial`). Collective.
        """
        from hybrid.fem.initial import decompose_initial

        if not self.transient or self.pb.u_prev is not None:
            return None
        box = np.array([self.case.parameters.lower, self.case.parameters.upper])
        dec = decompose_initial(self.pb.initial, self.V, self.mu, box)
        if dec is None:
            return None
        g = [self.ordering.gather(t) for t in dec.terms]
        return dec.theta, (np.array(g) if self.comm.rank == self.ordering.root else None)

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
                                   reuse=reuse, near_nullspace=self.disc.near_nullspace)
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
            self._obs_owned = self.ordering.scatter_rows(self.observation_rows())
        return self._obs_owned

    def observation_jacobian(self, mu: np.ndarray, mode: str = "auto") -> np.ndarray:
        """dy/dμ (m, P) at the solution at ``mu``; on every rank.

        Tangent-linear (P solves) or adjoint (m solves), whichever is fewer, on one
        factorisation of J (:mod:`hybrid.fem.tangent`); ``mode`` forces one.
        """
        self._at(mu)
        J = self.sensitivity().jacobian(self._observation_rows_owned(), mode)
        n_flux = len(self.case.observations.fluxes)
        if n_flux:   # flux rows depend on μ directly too: y_Γ = −F(u; g_Γ; μ)
            J = np.array(J, dtype=float)
            J[J.shape[0] - n_flux:] = self.flux_jacobian(mu)
        return J

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
        """sᵀ d(output)/dμ (P,) at the solution at ``mu``: one adjoint solve; every rank.

        Observations with boundary fluxes take the full Jacobian instead (flux rows depend on
        μ directly, :meth:`flux_jacobian`).
        """
        self._at(mu)
        if output == "observations" and self.case.observations.fluxes:
            return np.asarray(sens, dtype=float) @ self.observation_jacobian(mu)
        return self.sensitivity().vjp(self._output_rows(output), sens)

    def jvp(self, mu: np.ndarray, output: str, direction: np.ndarray) -> np.ndarray:
        """d(output)/dμ v at the solution at ``mu``: one tangent-linear solve; every rank.

        Observations with boundary fluxes take the full Jacobian instead (see :meth:`vjp`).
        """
        self._at(mu)
        if output == "observations" and self.case.observations.fluxes:
            return self.observation_jacobian(mu) @ np.asarray(direction, dtype=float)
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
        if self.disc is not None:
            self.disc.destroy()
        if self.__dict__.get("_transient_tl") is not None:
            self.__dict__.pop("_transient_tl").destroy()
        if self.stepper is not None:
            self.stepper.destroy()
        if self._tl is not None:
            self._tl.destroy()
            self._tl = None
        for ind in self.__dict__.pop("_indicators", {}).values():
            ind.destroy()

    # ---------------------------------------------------------------- transient derivatives
    def transient_jacobian(self, mu: np.ndarray, rows: np.ndarray | None = None):
        """Outputs over time and their μ-derivatives: one time loop with its tangents.

        Returns a :class:`hybrid.fem.transient_tangent.TransientSensitivities` (unpacks as
        ``times, values, jac, qoi, qoi_jac``): at the output times t_j, values y_{j,i} =
        l_i·u(t_j) (n_out, m), jac = dy/dμ (n_out, m, P), the case's QoIs (n_out, n_qoi) and
        qoi_jac (n_out, n_qoi, P) — the exact derivative of the discrete scheme, by the
        tangent-linear recursion J_n s_{n+1} = −(∂G/∂u_n s_n + ∂G/∂u_{n−1} s_{n−1} +
        ∂G/∂μ) on each step's own operator (P solves per step; no extra set-up for a
        linear loop with a fixed operator). ``rows``: (m, N) functionals l_i in store
        ordering, read on root (None elsewhere); None on root: the case's observations
        (sensors and averages; fluxes are refused). Same result on every rank; collective.
        """
        from hybrid.errors import CaseError
        from hybrid.fem.transient_tangent import TransientSensitivity

        if not self.transient:
            raise ValueError("transient_jacobian needs a transient problem (Problem.time)")
        root = self.ordering.root
        mine = self.comm.rank == root
        use_case = self.comm.bcast(rows is None if mine else None, root=root)
        if use_case:
            if self.case.observations.fluxes:
                raise CaseError(f"{self.case.path}: observations.fluxes: boundary fluxes of a "
                                "transient model are not differentiated; use sensors or "
                                "averages")
            owned = self._observation_rows_owned()
        else:
            owned = self.ordering.scatter_rows(np.asarray(rows, dtype=float) if mine else None)
        sens = self.__dict__.get("_transient_tl")
        if sens is None:
            sens = TransientSensitivity(self.stepper,
                                        qoi={k: self.pb.qoi[k] for k in self.case.qoi})
            self.__dict__["_transient_tl"] = sens
        return sens.run(np.asarray(mu, dtype=float), owned)


def _weighted(weights, forms) -> ufl.Form:
    """Σ_q w_q F_q as one form (w_q Constants: one JIT compilation serves every q)."""
    return ufl.Form([itg.reconstruct(integrand=w * itg.integrand())
                     for w, f in zip(weights, forms, strict=True) for itg in f.integrals()])
