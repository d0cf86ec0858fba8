"""The fixed-step time loop of a transient :class:`~hybrid.model.Problem` (collective).

The model states the semi-discrete equation

    m(∂u/∂t, v) + r(u; v, t) = 0   for all v,   u(·, t0) = u0(·; μ),

with r = ``Problem.F`` written with ``ctx.t`` and m = ``Problem.mass`` (default ∫ u v dx).
hybrid applies the scheme (``[time] scheme``) with u_n ≈ u(t_n), t_n = t0 + n·dt, and
solves one step residual G(u_{n+1}; v) = 0 per step, with ``ctx.t`` = t_{n+1}:

    backward_euler   m((u − u_n)/dt, v) + r(u; v, t_{n+1})                        order 1
    crank_nicolson   m((u − u_n)/dt, v) + ½ r(u; v, t_{n+1}) + ½ r(u_n; v, t_n)    order 2
    bdf2             m((3u − 4u_n + u_{n−1})/(2dt), v) + r(u; v, t_{n+1})          order 2

BDF2 takes its first step with backward Euler: that step's local error is O(dt²), so the
global error stays O(dt²) (measured in tests/test_transient.py). When the model gives
``Problem.u_prev``, F is its own step residual and is stepped as written.

Solvers. J = ∂G/∂u. If u is absent from J the step is linear: a = J, L = −G|_{u=0}.
If moreover J contains none of u_n, u_{n−1}, t_{n+1}, t_n, the operator is the same at
every step: it is assembled and set up (one LU factorisation, one GAMG hierarchy) **once
per sample**, and each step only assembles the right-hand side and back-substitutes
(BDF2: one more for its backward-Euler start). A linear step whose J depends on t or on
the previous state is reassembled every step; a nonlinear step is solved by SNES Newton
from u_n. A step that fails (KSP/SNES divergence, NaN) ends the sample: the result is
``ok = False`` with the step, the time and PETSc's reason.

The result (:class:`TransientResult`) is what later layers build on: the output times
t0, t_k, t_2k, … and t_end (every ``every``-th step, the last always), the QoIs at those
times (n_out, n_qoi), optionally the owned part of each output field, and an
``on_output(time, u)`` callback (XDMF time series in ``hybrid solve``). Boundary
conditions are those of the Problem (independent of t and μ).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI
from petsc4py import PETSc

from hybrid.fem.analysis import at_zero, jacobian
from hybrid.fem.discretisation import LINEAR_DEFAULTS, NEWTON_DEFAULTS, _layer, _petsc_value
from hybrid.fem.solver import LinearSolver, SolveResult

SCHEMES = ("backward_euler", "crank_nicolson", "bdf2")
DEFAULT_SCHEME = "bdf2"
_ids = itertools.count()
_SNES_REASONS = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items()
                 if isinstance(v, int)}


@dataclass
class TransientResult:
    """One sample's time loop.

    Attributes:
        ok: every step converged.
        reason: PETSc's last converged reason, or why (and at which step and time) it failed.
        iterations: linear or Newton iterations summed over the steps.
        steps: steps completed.
        times: the output times (n_out,), t0 first.
        qoi: QoIs at the output times (n_out, n_qoi), in the order of the ``qoi`` forms.
        fields: owned DOF values of u at the output times (when ``keep_fields``).
        operator_setups: how many times the step operator was assembled (and hence the
            preconditioner/factorisation set up); 1 for a linear, t- and u_n-free J
            (2 for BDF2 with its start step).
    """

    ok: bool
    reason: str
    iterations: int
    steps: int
    times: np.ndarray
    qoi: np.ndarray
    fields: list[np.ndarray] = field(default_factory=list)
    operator_setups: int = 0

    def as_solve_result(self) -> SolveResult:
        """The sample's outcome in the steady solvers' form."""
        return SolveResult(self.ok, self.reason, self.iterations)


def time_steps(t0: float, t_end: float, dt: float) -> int:
    """N with t0 + N·dt = t_end (to 1e-9 relative); ValueError if none."""
    if not (dt > 0 and t_end > t0):
        raise ValueError(f"the time grid needs dt > 0 and t_end > t0 (t0={t0:g}, "
                         f"t_end={t_end:g}, dt={dt:g})")
    n = round((t_end - t0) / dt)
    if n < 1 or abs(n * dt - (t_end - t0)) > 1e-9 * (t_end - t0):
        raise ValueError(f"(t_end - t0)/dt = {(t_end - t0) / dt:g} is not a whole number of "
                         "steps")
    return n


class TransientSolver:
    """The time loop of ``problem`` on its mesh (collective on the mesh communicator).

    Args:
        problem: the model's Problem (``time`` set).
        mu: its :class:`hybrid.model.Parameters`.
        t, dt: the Context's time and step Constants (``ctx.t``, ``ctx.dt``).
        scheme: one of :data:`SCHEMES` (ignored for a step residual with ``u_prev``).
        t0, t_end, step: the grid (default: ``problem.time``).
        qoi: name → scalar form of u, evaluated at every output time.
        petsc_options: options over the problem's (``[solver.petsc]``).
        every: output every k-th step (and the last).
    """

    def __init__(self, problem, mu, t, dt, scheme: str = DEFAULT_SCHEME,
                 t0: float | None = None, t_end: float | None = None,
                 step: float | None = None, qoi: dict | None = None,
                 petsc_options: dict | None = None, every: int = 1, name: str = "transient"):
        grid = problem.time
        self.t0 = float(grid.t0 if t0 is None else t0)
        self.t_end = float(grid.t_end if t_end is None else t_end)
        self.dt = float(grid.dt if step is None else step)
        self.n_steps = time_steps(self.t0, self.t_end, self.dt)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = int(every)
        self.problem, self.mu, self.u = problem, mu, problem.u
        self.V = self.u.function_space
        self.comm = self.V.mesh.comm
        self.t, self.dt_c = t, dt
        self.dt_c.value = self.dt
        self.bcs = list(problem.bcs)
        self.user_step = problem.u_prev is not None
        if not self.user_step and scheme not in SCHEMES:
            raise ValueError(f"unknown time scheme {scheme!r}; expected one of {SCHEMES}")
        self.scheme = "user" if self.user_step else scheme
        msh = self.V.mesh
        self.t_prev = fem.Constant(msh, 0.0)
        self.u_n = problem.u_prev if self.user_step else fem.Function(self.V, name="u_n")
        self.u_nm1 = fem.Function(self.V, name="u_nm1") if self.scheme == "bdf2" else None
        forms = self._step_forms()            # [(G, n_from)]: G used from step n_from on
        self.forms = forms
        """The step residual(s) G (UFL): [G] or, for BDF2, [G_BE, G_BDF2] (the tangent uses
        them, :mod:`hybrid.fem.transient_tangent`)."""
        self.qoi_forms = dict(qoi or {})
        self._qoi = {k: fem.form(f) for k, f in self.qoi_forms.items()}
        self._initial = self._initial_value(problem.initial)
        self._steppers = [self._stepper(G, petsc_options, f"{name}_{next(_ids)}")
                          for G in forms]

    # ------------------------------------------------------------------ set-up
    def _step_forms(self) -> list[ufl.Form]:
        """The step residual(s): [G] or, for BDF2, [G_BE (first step), G_BDF2]."""
        pb, u, dt = self.problem, self.u, self.dt_c
        r = pb.F
        if self.user_step:
            return [r]
        v = r.arguments()[0]
        if pb.mass is not None:
            m = pb.mass
        else:   # ∫ u v dx on r's cell measure (DOLFINx wants one subdomain data per form)
            data = [d for sd in r.subdomain_data().values() for d in sd.get("cell", [])
                    if d is not None]
            dx = ufl.Measure("dx", domain=self.V.mesh,
                             subdomain_data=data[0] if data else None)
            m = ufl.inner(u, v) * dx

        def mdot(rate):
            return ufl.replace(m, {u: rate})

        be = mdot((u - self.u_n) / dt) + r
        if self.scheme == "backward_euler":
            return [be]
        if self.scheme == "crank_nicolson":
            r_n = ufl.replace(r, {u: self.u_n, self.t: self.t_prev})
            return [mdot((u - self.u_n) / dt) + 0.5 * r + 0.5 * r_n]
        return [be, mdot((3.0 * u - 4.0 * self.u_n + self.u_nm1) / (2.0 * dt)) + r]

    def _initial_value(self, initial) -> Callable[[], None]:
        """A closure that writes u0(·; μ) (current μ) into ``self.u``."""
        u = self.u
        if initial is None or isinstance(initial, int | float):
            value = 0.0 if initial is None else float(initial)

            def set_const():
                u.x.array[:] = value
            return set_const
        if isinstance(initial, ufl.core.expr.Expr):
            expr = fem.Expression(initial, self.V.element.interpolation_points)

            def set_expr():
                u.interpolate(expr)
            return set_expr
        if callable(initial):
            return lambda: u.interpolate(initial)
        raise ValueError("Problem.initial must be a number, a UFL expression or a callable "
                         f"x -> values, got {type(initial).__name__}")

    def _stepper(self, G: ufl.Form, petsc_options: dict | None, prefix: str):
        J = jacobian(G, self.u)
        linear = self.u not in J.coefficients()
        base = LINEAR_DEFAULTS if linear else NEWTON_DEFAULTS
        opts = _layer(_layer(base, dict(self.problem.solver)), dict(petsc_options or {}))
        if linear:
            moving = {self.u_n, self.u_nm1} & set(J.coefficients())
            moving |= {self.t, self.t_prev} & set(J.constants())
            L = -at_zero(G, self.u)
            opts = {k: v for k, v in opts.items() if not k.startswith("snes_")}
            solver = LinearSolver(fem.form(J), fem.form(L), self.bcs, opts, prefix)
            return _LinearStep(solver, fixed=not moving)
        return _NewtonStep(G, self.u, J, self.bcs, opts, prefix + "_")

    @property
    def step_solvers(self) -> list:
        """The solver of each step residual in :attr:`forms` (``_LinearStep``/``_NewtonStep``)."""
        return self._steppers

    @property
    def linear(self) -> bool:
        return all(isinstance(s, _LinearStep) for s in self._steppers)

    @property
    def fixed_operator(self) -> bool:
        """Linear steps whose operator is the same at every step (set up once per sample)."""
        return all(isinstance(s, _LinearStep) and s.fixed for s in self._steppers)

    # ------------------------------------------------------------------ the loop
    def _qoi_values(self) -> np.ndarray:
        return np.array([self.comm.allreduce(fem.assemble_scalar(f), op=MPI.SUM)
                         for f in self._qoi.values()], dtype=float)

    def run(self, mu: Sequence[float], on_output: Callable | None = None,
            keep_fields: bool = False, on_step: Callable | None = None) -> TransientResult:
        """Set μ, write u0 and step to t_end; never raises for a solver failure.

        ``on_output(t, u)`` is called (collectively) at each output time, t0 included.
        ``on_step(n, k)`` is called (collectively) after step n (t_n → t_{n+1}) converged,
        before that time's ``on_output``, with ``u`` = u_{n+1} and ``u_n``, ``u_nm1``, ``t``,
        ``t_prev`` still those of the step; k indexes :attr:`forms` (the residual used).
        On return ``problem.u`` holds the last computed step.
        """
        self.mu.assign(mu)
        u = self.u
        self.t.value = self.t0
        self._initial()
        u.x.scatter_forward()
        times, qois, fields = [], [], []
        n_local = self.V.dofmap.index_map.size_local

        def output(tn):
            times.append(tn)
            qois.append(self._qoi_values())
            if keep_fields:
                fields.append(u.x.array[:n_local].copy())
            if on_output is not None:
                on_output(tn, u)

        output(self.t0)
        for s in self._steppers:
            s.operator_setups = 0
            s.assembled = False
        its, reason, ok, n = 0, "no step", True, 0
        for n in range(self.n_steps):
            k = min(n, len(self._steppers) - 1)
            stepper = self._steppers[k]
            tn, tn1 = self.t0 + n * self.dt, self.t0 + (n + 1) * self.dt
            if self.u_nm1 is not None:
                self.u_nm1.x.array[:] = self.u_n.x.array
            self.u_n.x.array[:] = u.x.array
            self.t_prev.value, self.t.value = tn, tn1
            res = stepper.step(u)
            its += max(res.iterations, 0)
            if not res.ok:
                ok, reason = False, f"step {n + 1} (t = {tn1:.6g}): {res.reason}"
                break
            reason = res.reason
            if on_step is not None:
                on_step(n, k)
            if (n + 1) % self.every == 0 or n + 1 == self.n_steps:
                output(tn1)
        steps = n + 1 if ok else n
        return TransientResult(ok, reason, its, steps, np.array(times),
                               np.array(qois).reshape(len(times), len(self._qoi)), fields,
                               sum(s.operator_setups for s in self._steppers))

    def output_times(self) -> np.ndarray:
        """The output times of a complete loop."""
        ks = [k for k in range(self.n_steps + 1) if k % self.every == 0 or k == self.n_steps]
        return self.t0 + self.dt * np.array(ks, dtype=float)

    def destroy(self) -> None:
        for s in self._steppers:
            s.destroy()


class _LinearStep:
    """a(u, v) = L(v): the operator assembled once per sample when ``fixed``."""

    def __init__(self, solver: LinearSolver, fixed: bool):
        self.solver, self.fixed = solver, fixed
        self.operator_setups, self.assembled = 0, False

    @property
    def ksp(self) -> PETSc.KSP:
        """The KSP whose operator is this step's J (set up by the last :meth:`step`)."""
        return self.solver.ksp

    def step(self, u: fem.Function) -> SolveResult:
        if not (self.fixed and self.assembled):
            self.solver.assemble_operator()
            self.operator_setups += 1
            self.assembled = True
        return self.solver.solve_rhs(u)

    def destroy(self) -> None:
        self.solver.destroy()


class _NewtonStep:
    """G(u; v) = 0 by SNES Newton from u_n (the Jacobian assembled every iteration)."""

    def __init__(self, G, u, J, bcs, options: dict, prefix: str):
        self.u = u
        self.options = dict(options)
        self.problem = fem_petsc.NonlinearProblem(G, u, bcs=list(bcs), J=J,
                                                  petsc_options_prefix=prefix)
        self.snes = self.problem.solver
        opts = PETSc.Options()
        try:
            for k, v in options.items():
                opts[f"{prefix}{k}"] = _petsc_value(v)
            self.snes.setFromOptions()
        finally:
            for k in options:
                opts.delValue(f"{prefix}{k}")
        self.operator_setups, self.assembled = 0, False

    def step(self, u: fem.Function) -> SolveResult:
        try:
            self.problem.solve()
        except PETSc.Error as exc:
            return SolveResult(False, f"PETSc error {exc.ierr}", -1)
        reason = self.snes.getConvergedReason()
        its = self.snes.getIterationNumber()
        self.operator_setups += max(its, 1)
        comm = u.function_space.mesh.comm
        finite = comm.allreduce(bool(np.all(np.isfinite(u.x.array))), op=MPI.LAND)
        name = _SNES_REASONS.get(reason, str(reason))
        if reason <= 0:
            return SolveResult(False, name, its)
        if not finite or not math.isfinite(self.snes.getFunctionNorm()):
            return SolveResult(False, "NaN or Inf in solution", its)
        return SolveResult(True, name, its)

    def destroy(self) -> None:
        self.problem = None
