"""A reaction–diffusion plug-in on a case as the map μ ↦ activation-time field T(x; μ).

A cardiac simulation's output is not v(t) but *when* each point activates: the activation
time T_i = the first t at which v_i crosses the model's threshold upward, interpolated
linearly inside the step (:mod:`hybrid.fem.splitting`), NaN where v_i never crosses before
t_end. :class:`ActivationProblem` gives campaigns, :class:`hybrid.fem.model.FEMModel` and
``hybrid solve`` the interface of a steady problem whose "solution" is T:

- ``solve(μ)`` runs the split time loop (:class:`~hybrid.fem.splitting.SplittingSolver`,
  one per problem: it reassembles the diffusion matrices when the conductivities in μ
  change) until every DOF has activated or t_end, and puts T into ``self.u`` (a P1
  function on v's space), so the store holds one scalar field per sample — the
  activation-time map, in ms, NaN included;
- observations are the case's point sensors and box averages applied to T: an electrode at x
  observes T(x) = Σ_i φ_i(x) T_i. Only the non-zero weights of a row enter its sum, so a NaN
  elsewhere in the tissue does not reach an electrode that activated;
- QoIs are the plug-in's ``Problem.qoi`` forms read as linear functionals of T: a form q
  written in v gives the row l = ∂q/∂v and the QoI l·T (e.g. ``v/|Ω| dx`` is the mean
  activation time). Rows are what the store holds (docs/store-format.md);
- no affine terms and no certified bound: T(μ) is a nonlinear, non-affine map (the
  model record says so), so surrogates of it are data-driven (POD-NN) with a calibrated
  indicator;
- ``observation_jacobian(μ)``: central differences, 2P extra time loops, counted in
  ``jacobian_solves``. Why not a tangent-linear model: T is defined by a threshold crossing
  inside a split scheme with explicit ionic substeps; the discrete tangent of the crossing
  time exists almost everywhere (dT_i = −δv_i(t*)/∂_t v_i(t*)) but needs the tangent of
  every substep of the ionic ODEs, which the model states as a numpy function without
  derivatives. With the step h_q = 1e-3·(upper − lower) the difference error (O(h²)·T''')
  is far below the 1 ms data noise of the cases.

Boundary fluxes are refused (they are not functionals of T). Collective on ``comm``.
"""

from __future__ import annotations

import numpy as np
import ufl
from dolfinx import fem
from mpi4py import MPI

from hybrid.core.case import Case
from hybrid.core.store import StaticData
from hybrid.errors import CaseError, ModelError, SolveFailed
from hybrid.fem.analysis import assemble_owned
from hybrid.fem.ordering import StoreOrdering
from hybrid.fem.solver import SolveResult
from hybrid.model.reaction import ReactionDiffusion

FIELD_RECORD = {"name": "activation_time", "unit": "ms", "kind": "activation_time",
                "missing": "NaN: never activated before t_end"}
"""The store manifest's ``field`` record of an activation-time store."""

FD_STEP = 1e-3
"""Central-difference step of :meth:`ActivationProblem.observation_jacobian`, × the range."""


def rows_apply(rows: np.ndarray, field: np.ndarray) -> np.ndarray:
    """y_i = Σ_{j: L_ij ≠ 0} L_ij T_j: the rows applied to a field that may hold NaN.

    A dense product would give NaN for every row as soon as one DOF is NaN (0·NaN = NaN);
    here a row is NaN only if a DOF it weighs is.
    """
    rows = np.atleast_2d(rows)
    out = np.empty(rows.shape[0])
    for i, r in enumerate(rows):
        nz = np.flatnonzero(r)
        out[i] = r[nz] @ field[nz]
    return out


class ActivationProblem:
    """A :class:`~hybrid.model.reaction.ReactionDiffusion` plug-in on ``case``: μ ↦ T(x; μ).

    ``built`` is the (mesh, tags, Problem, Context) of :func:`hybrid.fem.problems.
    create_problem`, which builds the plug-in once to see what kind of Problem it returns.
    """

    transient = False
    linear = False

    def __init__(self, case: Case, comm: MPI.Intracomm, built=None):
        self.case, self.comm = case, comm
        spec = case.physics
        self.spec = spec
        origin = spec.loaded.origin
        if built is None:
            from hybrid.fem.mesh import build_mesh_and_tags

            mesh, tags = build_mesh_and_tags(case.mesh, comm, case.mesh_file)
            pb, ctx = spec.loaded.build(spec.model, mesh, case.parameters.names, tags)
            built = (mesh, tags, pb, ctx)
        self.mesh, _, self.pb, self.ctx = built
        if not isinstance(self.pb, ReactionDiffusion):
            raise ModelError(f"{origin}: an activation-time problem needs a "
                             "ReactionDiffusion Problem")
        self.mu = self.ctx.mu
        self.V = self.pb.u.function_space
        if self.pb.u.ufl_shape:
            raise ModelError(f"{origin}: the reaction-diffusion unknown v must be scalar")
        obs = case.observations
        if obs.fluxes:
            raise CaseError(f"{case.path}: observations.fluxes: boundary fluxes are not "
                            "functionals of the activation-time field; use point sensors "
                            "(electrodes) or box averages")
        if obs.times is not None:
            raise CaseError(f"{case.path}: observations.times: an activation-time case "
                            "observes the activation time itself (one value per electrode); "
                            "remove observations.times")
        tm = case.time
        if tm is not None and tm.scheme is not None:
            raise CaseError(f"{case.path}: time.scheme: a reaction-diffusion model is stepped "
                            "by operator splitting; choose it with physics.splitting")
        self._grid = {k: getattr(tm, k) for k in ("t0", "t_end", "dt")
                      if tm is not None and getattr(tm, k) is not None}
        self.u = fem.Function(self.V, name="activation_time")
        """The activation-time field T (ms) of the last solve; NaN: never activated."""
        v, phi = self.pb.u, ufl.TestFunction(self.V)
        self._qoi_rows = {}
        for name in case.qoi:
            q = self.pb.qoi[name]
            dq = ufl.algorithms.expand_derivatives(ufl.derivative(q, v, phi))
            if v in dq.coefficients():
                raise ModelError(f"{origin}: QoI {name!r} is not linear in v; QoIs of an "
                                 "activation-time model are linear functionals of T, "
                                 "written in v")
            self._qoi_rows[name] = fem.form(dq)
        self.n_owned = self.V.dofmap.index_map.size_local
        self.last: object | None = None
        """The last :class:`~hybrid.fem.splitting.SplittingResult` (timings, iterations)."""
        self.jacobian_solves = 0
        """Time loops run by :meth:`observation_jacobian` (2P per call), summed."""
        self._ordering: StoreOrdering | None = None
        self._qoi: dict | None = None
        self._obs = None
        self._obs_owned = None
        self._solver = None

    # ---------------------------------------------------------------- the solve
    @property
    def ordering(self) -> StoreOrdering:
        if self._ordering is None:
            self._ordering = StoreOrdering(self.V)
        return self._ordering

    @property
    def element(self) -> dict:
        return {"family": "Lagrange", "degree": int(self.V.ufl_element().embedded_superdegree)}

    @property
    def solver(self):
        """The :class:`~hybrid.fem.splitting.SplittingSolver`, made once.

        It reassembles its diffusion operators when a conductivity in μ changed; the ionic
        parameters in μ are read by the reaction at call time.
        """
        if self._solver is None:
            from hybrid.fem.splitting import SplittingSolver

            self._solver = SplittingSolver(
                self.pb, petsc_options=dict(self.case.petsc_options),
                name=f"activation_{self.spec.name}", **self._grid)
        return self._solver

    def field_record(self) -> dict:
        """The store manifest's ``field`` record (what the stored field is)."""
        out = dict(FIELD_RECORD)
        t_end = self._grid.get("t_end", self.pb.time.t_end if self.pb.time else None)
        out["t_end"] = t_end
        out["threshold"] = float(self.pb.threshold)
        return out

    def solve(self, mu: np.ndarray) -> SolveResult:
        """Run the split loop at μ; T into ``self.u`` (a failed loop is a result, not raised).

        The reason of a successful run says how many DOFs never activated.
        """
        self.mu.assign(np.asarray(mu, dtype=float))
        try:
            res = self.solver.run(stop_when_activated=True)
        except SolveFailed as exc:
            self.u.x.array[:] = np.nan
            return SolveResult(False, str(exc), 0)
        self.last = res
        self.u.x.array[:self.n_owned] = res.activation
        self.u.x.scatter_forward()
        missing = self.comm.allreduce(int(np.isnan(res.activation).sum()), op=MPI.SUM)
        reason = (f"{missing} DOFs never activated before t_end = {res.t_end:g}"
                  if missing else f"all DOFs activated ({res.steps} steps)")
        return SolveResult(True, reason, int(res.iterations))

    # ---------------------------------------------------------------- outputs
    def observation_rows(self) -> np.ndarray | None:
        """(n_obs, N) rows L (electrodes, averages) in store ordering, on root."""
        from hybrid.fem.observations import observation_rows

        if self._obs is None:
            self._obs = observation_rows(self.V, self.ordering, self.case.observations,
                                         f"{self.case.path}")
        return self._obs if self.comm.rank == self.ordering.root else None

    def observe(self) -> np.ndarray:
        """The electrodes' activation times of the last solve (every rank; NaN: none)."""
        return self._apply_owned(self._observation_rows_owned())

    def _apply_owned(self, rows: list[np.ndarray]) -> np.ndarray:
        """Σ over ranks of the owned rows applied to T (collective; every rank gets it).

        NaN where a row weighs a NaN DOF on some rank (:func:`rows_apply`).
        """
        if not rows:
            return np.zeros(0)
        local = rows_apply(np.array(rows), self.u.x.array[:self.n_owned])
        nan = self.comm.allreduce(np.isnan(local).astype(int), op=MPI.SUM)
        y = self.comm.allreduce(np.nan_to_num(local, nan=0.0), op=MPI.SUM)
        return np.where(nan > 0, np.nan, y)

    def _observation_rows_owned(self) -> list[np.ndarray]:
        if self._obs_owned is None:
            self._obs_owned = self.ordering.scatter_rows(self.observation_rows())
        return self._obs_owned

    def qoi_vectors(self) -> dict[str, np.ndarray]:
        """Owned parts of the QoI rows l = ∂q/∂v, applied to T."""
        if self._qoi is None:
            self._qoi = {name: assemble_owned(form) for name, form in self._qoi_rows.items()}
        return self._qoi

    def qoi(self) -> np.ndarray:
        """The case's QoIs l·T of the last solve (every rank; NaN if a weighed DOF is NaN)."""
        return self._apply_owned(list(self.qoi_vectors().values()))

    def observation_jacobian(self, mu: np.ndarray) -> np.ndarray:
        """dy/dμ (m, P) by central differences of whole runs (module docstring); every rank.

        Leaves ``self.u`` at the field of ``mu`` (it solves there last).
        """
        mu = np.asarray(mu, dtype=float)
        sp = self.case.parameters
        h = FD_STEP * (sp.upper - sp.lower)
        cols = []
        for q in range(mu.size):
            ys = []
            for s in (+1.0, -1.0):
                m = mu.copy()
                m[q] = np.clip(m[q] + s * h[q], sp.lower[q], sp.upper[q])
                res = self.solve(m)
                if not res.ok:
                    raise SolveFailed(f"finite-difference solve at {m.tolist()}: {res.reason}")
                ys.append((m[q], self.observe()))
            (a, ya), (b, yb) = ys
            cols.append((ya - yb) / (a - b))
            self.jacobian_solves += 2
        res = self.solve(mu)
        if not res.ok:
            raise SolveFailed(f"solve at {mu.tolist()}: {res.reason}")
        return np.column_stack(cols) if cols else np.zeros((0, 0))

    # ---------------------------------------------------------------- the store's part
    def model_record(self) -> dict:
        """What the store records of the model: nonlinear, non-affine, no certificate."""
        return {**self.spec.model_info,
                "settings": self.spec.settings.model_dump(),
                "linear": False, "affine": False, "certified": False,
                "reason": "reaction-diffusion: the activation-time map is nonlinear in μ "
                          "(no affine terms)",
                "theta_a": [], "theta_f": [],
                "output": "activation_time"}

    def static_data(self) -> StaticData | None:
        """Mesh, the L² and H¹-seminorm matrices (POD inner products), QoI and electrode rows."""
        o = self.ordering
        u, v = ufl.TrialFunction(self.V), ufl.TestFunction(self.V)
        dx = ufl.dx(domain=self.mesh)
        mass = o.assemble_matrix(u * v * dx)
        stiffness = o.assemble_matrix(ufl.inner(ufl.grad(u), ufl.grad(v)) * dx)
        qoi = [o.gather(vec) for vec in self.qoi_vectors().values()]
        obs = self.observation_rows()
        dirichlet = o.gather_index_set(np.zeros(0, dtype=np.int32))
        cells = o.gather_cells()
        if self.comm.rank != o.root:
            return None
        N = o.n_global
        return StaticData(
            points=o.points, cells=cells, cell_type=o.cell_type, mass=mass,
            stiffness=stiffness, dirichlet_dofs=dirichlet, affine_a=[],
            affine_f=np.zeros((0, N)),
            qoi_functionals=np.array(qoi) if qoi else np.zeros((0, N)),
            observation_functionals=obs)

    def destroy(self) -> None:
        """Free the splitting solver's PETSc objects."""
        if self._solver is not None:
            self._solver.destroy()
            self._solver = None
