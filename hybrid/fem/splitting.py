"""Operator splitting for reaction–diffusion plug-ins (collective on the mesh communicator).

The model (:class:`hybrid.model.reaction.ReactionDiffusion`) states

    M dv/dt = −K v + M f(t, v, w),   dw/dt = g(t, v, w),

with K from the diffusion residual r(v; φ) (linear in v, no source) and (f, g) a numpy
function at the DOFs. One step t_n → t_{n+1} = t_n + Δt is

    godunov (order 1):  R(Δt) then D(Δt)                       default θ = 1 (backward Euler)
    strang  (order 2):  R(Δt/2), D(Δt), R(Δt/2)                default θ = ½ (Crank–Nicolson)

where R(τ) integrates the pointwise ODEs over τ (``ode`` = ``"fe"`` forward Euler, ``"rk2"``
Heun, ``"rk4"``, each with ``substeps`` equal substeps; order 1, 2, 4) and D(Δt) solves

    (M + θΔt K) v_{n+1} = (M − (1 − θ)Δt K) v_n.

Both matrices are assembled and the KSP (default CG + Jacobi, rtol 1e-8:
:data:`DIFFUSION_DEFAULTS`) is set up once;
:meth:`SplittingSolver.run` reassembles them (and sets the KSP up again) only when the value
of a ``fem.Constant`` in the forms (e.g. a conductivity in μ) changed since, so one solver
serves samples of μ. A step is one mat-vec and one Krylov solve from the previous v as
initial guess. Reaction parameters are read by the model's numpy function at call time.
The reaction runs on the local array of v (owned and ghost DOFs alike: it is pointwise).
Inside the loop nothing reads the ghost values of v (the mat-vec and the Krylov solve use
the owned ones; activation times are recorded on owned DOFs), so they are updated once, at
the end of the run, not every step; the collective check that v is finite runs every
``_CHECK_EVERY`` steps. Both remove synchronisations from a step whose cost on a few ranks
is mostly latency (benchmarks/cardiac.py).

Activation times: T(x_i) = the first t at which v_i crosses ``threshold`` upward, linearly
interpolated between the step's end values, T = t_n + Δt (θ_v − v_i^n)/(v_i^{n+1} − v_i^n);
t0 where v_i(t0) ≥ threshold; NaN where v_i never crosses.
"""

from __future__ import annotations

import itertools
import time as _time
from dataclasses import dataclass, field

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI
from petsc4py import PETSc

from hybrid.errors import ModelError, SolveFailed
from hybrid.fem.analysis import at_zero, jacobian
from hybrid.fem.discretisation import _layer, _petsc_value
from hybrid.fem.mesh import build_mesh
from hybrid.fem.transient import time_steps
from hybrid.model.reaction import ReactionDiffusion

SPLITTINGS = {"godunov": 1.0, "strang": 0.5}   # name → default θ
ODE_SCHEMES = ("fe", "rk2", "rk4")
DIFFUSION_DEFAULTS = {"ksp_type": "cg", "pc_type": "jacobi", "ksp_norm_type": "natural",
                      "ksp_rtol": 1e-8, "ksp_atol": 1e-14, "ksp_max_it": 500}
"""CG + Jacobi, natural norm, rtol 1e-8, warm-started from the previous v.

Evidence (benchmarks/cardiac.py timing2d, benchmarks/results/cardiac.json "slab_2d"):
M + θΔtK at Δt = 0.1 ms is mass-dominated (θΔt D/h² ≈ 0.4 on the 2-D slab at h = 0.1 mm),
so a diagonal preconditioner needs few iterations from the warm start, and on a few ranks a
step costs mostly synchronisations (each CG iteration one halo exchange, two reductions; the
natural norm rᵀz saves the third). On the 40 401-DOF slab, 3000 steps, 2 ranks, the
compiled ionic kernel, wall of the whole solve: CG + GAMG rtol 1e-10 (the former default)
142 s, 47 ms/step, 6.8 iterations; CG + SOR rtol 1e-8 25 s, 8.1 ms/step, 5.1; CG + Jacobi
rtol 1e-10 18 s, 6.0 ms/step, 9.8; rtol 1e-8 13 s, 4.3 ms/step, 6.5; rtol 1e-6 8.0 s,
2.6 ms/step, 3.3 (a shared 2-core machine under load, one pass each; an earlier pass gave
the same order: 111 / 27 / 21 / 13 / 9 s).
Activation times against CG + Jacobi at rtol 1e-12: GAMG 1e-10 2.3e-7 ms, Jacobi 1e-10
2.3e-7 ms, 1e-8 4.3e-5 ms, 1e-6 7.4e-3 ms (and one DOF's activation within t_end flips):
rtol 1e-8 changes them by < 1e-3 of a step, far below the discretisation error. Jacobi
is also partition-independent (unlike SOR or GAMG), which keeps the 1-vs-2-ranks test tight.
"""
_CHECK_EVERY = 10   # steps between the collective check that v is finite
_ids = itertools.count()


@dataclass
class SplittingResult:
    """One run of the split time loop (arrays are the owned DOFs of v, local order).

    Attributes:
        activation: activation time per owned DOF (NaN: never activated).
        v, w: the final state (owned DOFs).
        steps: steps taken; t_end: final time.
        iterations: Krylov iterations summed over the steps.
        time_reaction, time_diffusion, time_total: wall seconds (this rank).
        operator_setups: assemblies of the step matrix so far (1, +1 per run after a
            change of a Constant in the diffusion forms).
    """

    activation: np.ndarray
    v: np.ndarray
    w: np.ndarray
    steps: int
    t_end: float
    iterations: int
    time_reaction: float
    time_diffusion: float
    time_total: float
    operator_setups: int = 1
    info: dict = field(default_factory=dict)


def ode_step(rhs, t: float, tau: float, v: np.ndarray, w: np.ndarray, scheme: str,
             substeps: int) -> tuple[np.ndarray, np.ndarray]:
    """Advance dv/dt, dw/dt = rhs(t, v, w) by τ with ``substeps`` explicit steps (vectorised).

    fe: y + h f(y); rk2 (Heun): y + h/2 (f(y) + f(y + h f(y))); rk4: the classical one.
    ``v`` and ``w`` are not modified; the combinations are formed in place on the arrays
    ``rhs`` returns (fresh ones on every call).
    """
    h = tau / substeps
    for k in range(substeps):
        s = t + k * h
        if scheme == "fe":
            dv, dw = _own(rhs(s, v, w), v, w)
            v, w = _axpy(h, dv, v), _axpy(h, dw, w)
        elif scheme == "rk2":
            dv1, dw1 = _own(rhs(s, v, w), v, w)
            dv2, dw2 = rhs(s + h, v + h * dv1, w + h * dw1)
            dv1 += dv2
            dw1 += dw2
            v, w = _axpy(0.5 * h, dv1, v), _axpy(0.5 * h, dw1, w)
        else:
            k1 = rhs(s, v, w)
            k2 = rhs(s + h / 2, v + h / 2 * k1[0], w + h / 2 * k1[1])
            k3 = rhs(s + h / 2, v + h / 2 * k2[0], w + h / 2 * k2[1])
            k4 = rhs(s + h, v + h * k3[0], w + h * k3[1])
            v = v + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            w = w + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return v, w


def _own(pair, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (dv, dw) as arrays this integrator may overwrite.

    Copies where a right-hand side returned (a view of) its input, a scalar or a
    broadcastable shape (the contract asks for new arrays of the shapes of v and w).
    """
    out = []
    for x, ref in zip(pair, (v, w), strict=True):
        x = np.asarray(x, dtype=float)
        if x.shape != ref.shape:
            x = np.array(np.broadcast_to(x, ref.shape))
        elif np.may_share_memory(x, v) or np.may_share_memory(x, w):
            x = x.copy()
        out.append(x)
    return out[0], out[1]


def _axpy(a: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return a·x + y, formed in ``x`` (which the caller owns)."""
    x *= a
    x += y
    return x


def crossing_times(t: float, dt: float, v_old: np.ndarray, v_new: np.ndarray,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """DOFs whose v crosses ``threshold`` upward in (t, t+dt], and the interpolated times."""
    up = (v_old < threshold) & (v_new >= threshold)
    idx = np.flatnonzero(up)
    frac = (threshold - v_old[idx]) / (v_new[idx] - v_old[idx])
    return idx, t + dt * frac


class SplittingSolver:
    """The split time loop of a :class:`ReactionDiffusion` problem (collective).

    Args:
        problem: the model's problem (``time``, ``reaction``, ``states0`` set).
        splitting: ``"godunov"`` or ``"strang"`` (default: the problem's).
        dt, t0, t_end: the grid (default ``problem.time``); (t_end − t0)/dt whole.
        theta: θ of the diffusion step (default: 1 for Godunov, ½ for Strang).
        ode, substeps: the reaction integrator (default: the problem's, rk2 with 1 substep).
        petsc_options: over the problem's and :data:`DIFFUSION_DEFAULTS`.
    """

    def __init__(self, problem: ReactionDiffusion, splitting: str | None = None,
                 dt: float | None = None, t0: float | None = None, t_end: float | None = None,
                 theta: float | None = None, ode: str | None = None,
                 substeps: int | None = None, petsc_options: dict | None = None,
                 name: str = "splitting"):
        if not isinstance(problem, ReactionDiffusion) or problem.reaction is None:
            raise ModelError("operator splitting needs a ReactionDiffusion problem with a "
                             "reaction function")
        splitting = problem.splitting if splitting is None else splitting
        ode = problem.ode if ode is None else ode
        substeps = problem.substeps if substeps is None else substeps
        if splitting not in SPLITTINGS:
            raise ModelError(f"splitting must be one of {sorted(SPLITTINGS)}, got {splitting!r}")
        if ode not in ODE_SCHEMES:
            raise ModelError(f"ode must be one of {list(ODE_SCHEMES)}, got {ode!r}")
        if not (isinstance(substeps, int) and substeps >= 1):
            raise ModelError(f"substeps must be an integer >= 1, got {substeps!r}")
        if problem.bcs:
            raise ModelError("operator splitting supports natural (no-flux) boundaries only; "
                             "the problem has Dirichlet conditions")
        grid = problem.time
        if grid is None and None in (dt, t_end):
            raise ModelError("the problem has no time grid; give dt and t_end")
        self.t0 = grid.t0 if t0 is None else float(t0)
        self.t_end = grid.t_end if t_end is None else float(t_end)
        self.dt = grid.dt if dt is None else float(dt)
        try:
            self.n_steps = time_steps(self.t0, self.t_end, self.dt)
        except ValueError as exc:
            raise ModelError(f"time grid: {exc}") from None
        self.splitting, self.ode, self.substeps = splitting, ode, substeps
        self.theta = SPLITTINGS[splitting] if theta is None else float(theta)
        if not 0.5 <= self.theta <= 1.0:
            raise ModelError(f"theta must lie in [0.5, 1] (unconditionally stable), got "
                             f"{self.theta}")
        self.problem = problem
        u = problem.u
        self.u, self.V = u, u.function_space
        self.comm = self.V.mesh.comm
        K = jacobian(problem.F, u)
        if u in K.coefficients():
            raise ModelError("the diffusion residual r(v; φ) must be linear in v")
        if not at_zero(problem.F, u).empty():
            raise ModelError("the diffusion residual must have no source (r(0; φ) = 0): "
                             "put sources and stimuli in the reaction")
        phi = problem.F.arguments()[0]
        mform = problem.mass if problem.mass is not None else u * phi * ufl.dx
        M = jacobian(mform, u)
        th, h = self.theta, self.dt
        self._aform = fem.form(M + th * h * K)
        self._bform = fem.form(M - (1.0 - th) * h * K) if th < 1.0 else fem.form(M)
        self._constants = [c for c in (M + K).constants() if isinstance(c, fem.Constant)]
        self._A = fem_petsc.assemble_matrix(self._aform)
        self._A.assemble()
        self._B = fem_petsc.assemble_matrix(self._bform)
        self._B.assemble()
        self._assembled_at = self._constant_values()
        self.operator_setups = 1
        self.options = _layer(_layer(DIFFUSION_DEFAULTS, dict(problem.solver)),
                              dict(petsc_options or {}))
        self.prefix = f"{name}_{next(_ids)}_"
        opts = PETSc.Options()
        for k, val in self.options.items():
            opts[f"{self.prefix}{k}"] = _petsc_value(val)
        self.ksp = PETSc.KSP().create(self.comm)
        self.ksp.setOptionsPrefix(self.prefix)
        self.ksp.setOperators(self._A)
        self.ksp.setFromOptions()
        if self.ksp.getType() != PETSc.KSP.Type.PREONLY:
            self.ksp.setInitialGuessNonzero(True)
        self.ksp.setUp()
        for k in self.options:
            del opts[f"{self.prefix}{k}"]
        self._rhs = self._A.createVecLeft()
        self.n_owned = self.V.dofmap.index_map.size_local

    def _constant_values(self) -> list[np.ndarray]:
        return [np.array(c.value, copy=True) for c in self._constants]

    def _refresh_operators(self) -> None:
        """Reassemble A, B and set the KSP up again if a Constant of the forms changed."""
        now = self._constant_values()
        if all(np.array_equal(a, b) for a, b in zip(now, self._assembled_at, strict=True)):
            return
        for mat, form in ((self._A, self._aform), (self._B, self._bform)):
            mat.zeroEntries()
            fem_petsc.assemble_matrix(mat, form)
            mat.assemble()
        self.ksp.setOperators(self._A)
        self.ksp.setUp()
        self._assembled_at = now
        self.operator_setups += 1

    def _react(self, t: float, tau: float, w: np.ndarray) -> np.ndarray:
        """R(τ) on v = u's local array (updated in place) and w; returns the new w.

        The problem's fused ``reaction_step`` where it takes the scheme (in place), else
        :func:`ode_step` on ``reaction``.
        """
        v = self.u.x.array
        step = self.problem.reaction_step
        out = None if step is None else step(t, tau, v, w, self.ode, self.substeps)
        if out is None:
            out = ode_step(self.problem.reaction, t, tau, v, w, self.ode, self.substeps)
        if out[0] is not v:
            v[:] = out[0]
        return out[1]

    def _initial(self) -> None:
        init = self.problem.initial
        if init is None:
            self.u.x.array[:] = 0.0
        elif isinstance(init, int | float):
            self.u.x.array[:] = float(init)
        elif callable(init):
            self.u.interpolate(init)
        else:
            self.u.interpolate(fem.Expression(init, self.V.element.interpolation_points))
        self.u.x.scatter_forward()

    def run(self, stop_when_activated: bool = False) -> SplittingResult:
        """Run t0 → t_end (collective); SolveFailed if a Krylov solve diverges or v is NaN.

        ``stop_when_activated``: stop at the first check (every ``_CHECK_EVERY`` steps) at
        which every DOF has activated: the activation map is then complete (later steps
        cannot change it); ``steps`` and ``t_end`` of the result say where it stopped. The
        check shares the finiteness reduction.
        """
        pb, u = self.problem, self.u
        n_loc = u.x.array.size
        self._refresh_operators()
        self._initial()
        w = np.zeros((0, n_loc)) if pb.states0 is None else np.array(pb.states0, float)
        if w.shape[-1] != n_loc:
            raise ModelError(f"states0 must have {n_loc} columns (local DOFs), got {w.shape}")
        thr, no = pb.threshold, self.n_owned
        act = np.full(no, np.nan)
        act[u.x.array[:no] >= thr] = self.t0
        vec = u.x.petsc_vec
        finite = True
        t_r = t_d = 0.0
        its = 0
        start = _time.perf_counter()
        steps = 0
        for n in range(self.n_steps):
            t = self.t0 + n * self.dt
            v_old = u.x.array[:no].copy()
            tic = _time.perf_counter()
            first = self.dt if self.splitting == "godunov" else self.dt / 2
            w = self._react(t, first, w)
            t_r += _time.perf_counter() - tic
            tic = _time.perf_counter()
            self._B.mult(vec, self._rhs)
            self.ksp.solve(self._rhs, vec)
            reason = self.ksp.getConvergedReason()
            its += self.ksp.getIterationNumber()
            t_d += _time.perf_counter() - tic
            if reason < 0:
                raise SolveFailed(f"step {n + 1} (t = {t + self.dt:g}): diffusion KSP "
                                  f"diverged (reason {reason})")
            if self.splitting == "strang":
                tic = _time.perf_counter()
                w = self._react(t + first, first, w)
                t_r += _time.perf_counter() - tic
            v_new = u.x.array[:no]
            finite = finite and bool(np.all(np.isfinite(v_new)))
            idx, tc = crossing_times(t, self.dt, v_old, v_new, thr)
            fresh = np.isnan(act[idx])
            act[idx[fresh]] = tc[fresh]
            steps = n + 1
            if steps % _CHECK_EVERY == 0 or steps == self.n_steps:
                # one reduction: 2 if v is not finite somewhere, else 1 if a DOF has not
                # yet activated somewhere (when stopping on activation), else 0
                flag = 2 if not finite else int(
                    stop_when_activated and bool(np.isnan(act).any()))
                flag = self.comm.allreduce(flag, op=MPI.MAX)
                if flag == 2:
                    raise SolveFailed(f"by step {steps} (t = {t + self.dt:g}): v is not "
                                      "finite")
                if stop_when_activated and flag == 0:
                    break
        u.x.scatter_forward()
        total = _time.perf_counter() - start
        return SplittingResult(activation=act, v=u.x.array[:no].copy(), w=w[:, :no].copy(),
                               steps=steps, t_end=self.t0 + steps * self.dt, iterations=its,
                               time_reaction=t_r, time_diffusion=t_d, time_total=total,
                               operator_setups=self.operator_setups, info=dict(pb.info))

    def destroy(self) -> None:
        """Free the PETSc objects."""
        self.ksp.destroy()
        self._A.destroy()
        self._B.destroy()
        self._rhs.destroy()


def owned_coordinates(V: fem.FunctionSpace) -> np.ndarray:
    """Coordinates (n_owned, gdim) of the owned DOFs of a scalar space."""
    n = V.dofmap.index_map.size_local
    return V.tabulate_dof_coordinates()[:n, :V.mesh.geometry.dim]


def gather_by_coordinates(V: fem.FunctionSpace, values: np.ndarray,
                          decimals: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' (coordinates, values), sorted by coordinates: a partition-free order.

    Collective; every rank receives the whole field.
    """
    x = owned_coordinates(V)
    xs = np.concatenate(V.mesh.comm.allgather(x))
    vs = np.concatenate(V.mesh.comm.allgather(np.asarray(values)))
    key = np.round(xs, decimals)
    order = np.lexsort(key.T[::-1])
    return xs[order], vs[order]


def value_at(V: fem.FunctionSpace, values: np.ndarray, point) -> float:
    """The owned-DOF value at the DOF nearest ``point`` (collective; all ranks get it)."""
    x = owned_coordinates(V)
    p = np.asarray(point, float)[: x.shape[1]]
    d = np.linalg.norm(x - p, axis=1) if x.size else np.array([np.inf])
    k = int(np.argmin(d))
    best = (float(d[k]), float(values[k]) if x.size else np.nan)
    return min(V.mesh.comm.allgather(best))[1]


def solve_case(case, comm: MPI.Intracomm, mu=None, **options):
    """Run a case whose model returns a ReactionDiffusion problem (collective).

    ``mu`` defaults to the middle of the parameter box (geometric for log parameters);
    the case's ``[time]`` t0, t_end, dt and ``[solver.petsc]`` apply; ``options`` go to
    :class:`SplittingSolver` (and win over ``[time]``). Returns (result, function space,
    solver) — destroy the solver.
    """
    tm = case.time
    if tm is not None and tm.scheme is not None:
        raise ModelError(f"{case.path}: time.scheme: a reaction-diffusion model is stepped by "
                         "operator splitting; choose it with physics.splitting")
    spec = case.physics
    msh = build_mesh(case.mesh, comm, case.mesh_file)
    pb, ctx = spec.loaded.build(spec.model, msh, case.parameters.names)
    space = case.parameters
    if mu is None:
        lo, hi = space.lower, space.upper
        mu = np.where(space.log_mask, np.sqrt(lo * hi), 0.5 * (lo + hi))
    ctx.mu.assign(space.check(np.asarray(mu, float)))
    grid = {k: getattr(tm, k) for k in ("t0", "t_end", "dt")} if tm is not None else {}
    kwargs = {k: v for k, v in grid.items() if v is not None} | options
    solver = SplittingSolver(pb, petsc_options=dict(case.petsc_options), **kwargs)
    return solver.run(), pb.u.function_space, solver
