"""Derivatives of a transient model's outputs with respect to μ: the discrete tangent and adjoint.

The time loop (:mod:`hybrid.fem.transient`) solves, for n = 0 … N−1, one step residual

    G_n(u_{n+1}, u_n, u_{n−1}; μ) = 0        (u_{n+1} = the Dirichlet values on Γ_D)

(backward Euler and Crank–Nicolson use u_n only; BDF2 uses u_{n−1} from its second step on,
its first step being backward Euler; an author's step residual uses ``u_prev`` = u_n).
Differentiating the scheme itself (not the PDE) gives the exact derivative of what the FEM
computes. With the step's matrices at its converged state

    J_n = ∂G_n/∂u_{n+1},  B_n = ∂G_n/∂u_n,  C_n = ∂G_n/∂u_{n−1},  d_n^p = ∂G_n/∂μ_p,

and Z the zeroing of the Dirichlet rows (the conditions do not depend on μ), the
**tangent-linear** (forward) recursion for s_n^p = ∂u_n/∂μ_p is

    J_n s_{n+1}^p = −Z (B_n s_n^p + C_n s_{n−1}^p + d_n^p),   s_0^p = I_h(∂u_0/∂μ_p),

where I_h(∂u_0/∂μ_p) is the interpolant of the derivative of the initial-state expression
(``Problem.initial``: a number or None gives 0; a UFL expression is differentiated in each
μ_p; a callable must not depend on μ — checked, :class:`~hybrid.errors.ModelError`). Outputs
y = l·u_n (rows l) and QoIs q(u_n; μ) at the output times t_n then have

    dy/dμ_p = l·s_n^p,     dq/dμ_p = ∂q/∂u(u_n)·s_n^p + ∂q/∂μ_p(u_n).

The **adjoint** (reverse) recursion gives one weighted sum Φ = Σ_j w_j·y(t_j) (e.g. the
gradient of a misfit) from one backward sweep: with a_n = ∂Φ/∂u_n plus what later steps
send back,

    J_nᵀ λ_{n+1} = Z a_{n+1},   a_n = g_n − B_nᵀ λ_{n+1} − C_{n+1}ᵀ λ_{n+2},
    dΦ/dμ_p = −Σ_n λ_{n+1}·d_n^p + s_0^p·a_0 + ∂Φ/∂μ_p,

g_n = ∂Φ/∂u_n from the outputs at step n (zero at other steps). J_bc (the step's matrix with
Dirichlet rows and columns replaced by the identity) is block-diagonal in (interior,
Dirichlet), so both recursions give zero on Γ_D and agree to round-off.

**When each pays.** Forward: P solves per step (P + 1 with the step itself) give the whole
Jacobian of every output at every output time, n_out × m × P numbers, at the cost of P
loops' back-substitutions and P vector assemblies per step — the right choice for few
parameters and many outputs over time (the inference side's J = dy/dμ). Adjoint: one
forward loop that keeps the trajectory (N + 1 fields in memory), then N transposed solves
and P vector assemblies per step for ONE weighted sum, whatever P — the right choice for the
gradient of one scalar (a misfit) when P is large; a full Jacobian by adjoint would need
n_out·m sweeps.

**Reuse.** A linear step's solve leaves its KSP set up with J_n: the tangent (and, after the
loop, the transposed) solves use it, so a linear loop with a fixed operator does its
sensitivities with **zero** extra set-ups (a linear step whose J depends on t or u_n is set
up again per step in the reverse sweep only). A nonlinear step's J_n is assembled at the
converged u_{n+1} and set up once per step here (its own KSP, the step's KSP/PC options:
one set-up per step, forward and reverse), as Newton's last matrix belongs to the iterate
before. B_n and C_n are assembled once per run when they depend on none of u, u_n, u_{n−1},
t (the heat equation: −M/dt), else per step. Per step the P vectors ∂G/∂μ_p are one
assembly of a blocked form on V^P, and the P systems one ``KSPMatSolve`` (a multi-right-hand-
side back-substitution for MUMPS). The step forms are differentiated with the step's
quadrature degrees pinned (:func:`hybrid.fem.quadrature.pin_quadrature_degrees`).

Cost, measured on ``cases/heat_block.toml`` (30×30 P1, 961 DOFs, BDF2, 20 steps, P = 11,
5 rows; a shared 2-core machine under load 4–5): one loop 40–83 ms (median of 7), the loop
with its 220 tangents 2.3–2.6× that (3.0× on 2 ranks; 5.0× with P single solves and P
assemblies per step instead of the two batches), the loop keeping its states plus one
adjoint sweep 1.9–2.0×.

Everything here is collective on the mesh communicator; results are the same on every rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from mpi4py import MPI
from petsc4py import PETSc

from hybrid.errors import ModelError, SolveFailed
from hybrid.fem.analysis import assemble_into, jacobian, parameter_derivative
from hybrid.fem.quadrature import pin_quadrature_degrees
from hybrid.fem.tangent import linear_options
from hybrid.fem.transient import TransientResult, TransientSolver, _LinearStep

_ids = itertools.count()


@dataclass
class TransientSensitivities:
    """Outputs and their μ-derivatives at the output times of one loop.

    Attributes:
        times: output times (n_out,), t0 first.
        values: y_{j,i} = l_i·u(t_j) (n_out, m).
        jac: dy_{j,i}/dμ_p (n_out, m, P).
        qoi: the stepper's QoIs (n_out, n_qoi).
        qoi_jac: dq_{j,k}/dμ_p (n_out, n_qoi, P).
        result: the forward loop's :class:`~hybrid.fem.transient.TransientResult`.
        solves: tangent solves of this run (P per step).
        operator_setups: set-ups (factorisations) of this run beyond the loop's own.
        matrix_assemblies: assemblies of ∂G/∂u_n, ∂G/∂u_{n−1} in this run.

    Unpacks as ``times, values, jac, qoi, qoi_jac``.
    """

    times: np.ndarray
    values: np.ndarray
    jac: np.ndarray
    qoi: np.ndarray
    qoi_jac: np.ndarray
    result: TransientResult
    solves: int = 0
    operator_setups: int = 0
    matrix_assemblies: int = 0

    def __iter__(self):
        return iter((self.times, self.values, self.jac, self.qoi, self.qoi_jac))


@dataclass
class TransientTrajectory:
    """A forward loop kept for the adjoint: outputs at the output times and every state."""

    times: np.ndarray
    values: np.ndarray
    qoi: np.ndarray
    result: TransientResult
    states: list[np.ndarray] = field(default_factory=list, repr=False)
    rows: list[np.ndarray] = field(default_factory=list, repr=False)


class _StateMatrix:
    """∂G/∂w (w = u_n or u_{n−1}) as a matrix: assembled once per run if ``fixed``."""

    def __init__(self, form: ufl.Form, moving: set):
        self.fixed = not ((set(form.coefficients()) | set(form.constants())) & moving)
        self.form = fem.form(form)
        self.A = fem_petsc.create_matrix(self.form)

    def assemble(self) -> None:
        self.A.zeroEntries()
        fem_petsc.assemble_matrix(self.A, self.form)
        self.A.assemble()

    def destroy(self) -> None:
        self.A.destroy()


class _ParameterDerivatives:
    """∂G/∂μ_p for every p as an (n_local, P) array: ONE assembly of a blocked form.

    With w = (w_0 … w_{P−1}) the test function of V^P (V's element blocked P times, whose
    DOF layout is V's with P values per node, checked), Σ_p ∂G/∂μ_p(v → w_p) assembles all
    P vectors in one pass over the cells, one compiled kernel instead of P. Falls back to
    one form per p (``blocked=False``, or a vector-valued V, or a layout that differs).
    """

    def __init__(self, G: ufl.Form, V: fem.FunctionSpace, constants, blocked: bool):
        self.V, self.P = V, len(constants)
        self.n = V.dofmap.index_map.size_local
        dG = [parameter_derivative(G, c) for c in constants]
        self.nonzero = [k for k, f in enumerate(dG) if not f.empty()]
        self.W = _blocked_space(V, self.P) if (blocked and self.nonzero) else None
        if self.W is not None:
            v = G.arguments()[0]
            w = ufl.TestFunction(self.W)
            form = sum((ufl.replace(dG[k], {v: w[k]}) for k in self.nonzero[1:]),
                       ufl.replace(dG[self.nonzero[0]], {v: w[self.nonzero[0]]}))
            self.form = fem.form(form)
            self.vec = fem_petsc.create_vector(self.W)
        else:
            self.forms = {k: fem.form(dG[k]) for k in self.nonzero}
            self.vec = fem_petsc.create_vector(V)
        self.out = np.zeros((self.n, self.P))

    def assemble(self) -> np.ndarray:
        """The owned values of ∂G/∂μ_p at the current coefficients, (n_local, P).

        Ghost contributions accumulated; the array is reused by the next call.
        """
        if self.W is not None:
            assemble_into(self.form, self.vec)
            self.out[:] = self.vec.array_r[: self.n * self.P].reshape(self.n, self.P)
        else:
            for k, form in self.forms.items():
                assemble_into(form, self.vec)
                self.out[:, k] = self.vec.array_r[: self.n]
        return self.out

    def destroy(self) -> None:
        self.vec.destroy()


def _blocked_space(V: fem.FunctionSpace, P: int) -> fem.FunctionSpace | None:
    """V^P with V's DOF layout (collective check), or None."""
    import basix.ufl

    if V.dofmap.index_map_bs != 1 or V.ufl_element().reference_value_shape != ():
        return None
    W = fem.functionspace(V.mesh, basix.ufl.blocked_element(V.ufl_element(), shape=(P,)))
    a, b = V.dofmap.index_map, W.dofmap.index_map
    same = (a.size_local == b.size_local and a.num_ghosts == b.num_ghosts
            and np.array_equal(a.ghosts, b.ghosts) and np.array_equal(V.dofmap.list,
                                                                       W.dofmap.list))
    return W if V.mesh.comm.allreduce(bool(same), op=MPI.LAND) else None


class _StepDerivatives:
    """What the tangent needs of one step residual G: B, C, ∂G/∂μ_p, and J's solver."""

    def __init__(self, ts: TransientSolver, G: ufl.Form, solver, moving: set,
                 blocked: bool = True):
        G = pin_quadrature_degrees(G)
        self.solver = solver
        self.linear = isinstance(solver, _LinearStep)
        self.B = self.C = None
        for name, w in (("B", ts.u_n), ("C", ts.u_nm1)):
            if w is not None and w in G.coefficients():
                form = jacobian(G, w)
                if not form.empty():
                    setattr(self, name, _StateMatrix(form, moving))
        self.dG = _ParameterDerivatives(G, ts.V, ts.mu.constants, blocked)
        self.ksp = self.A = None
        self._pending: list[str] = []
        if not self.linear:      # own matrix and KSP for J at the converged state
            self.J = solver.problem.J
            self.A = fem_petsc.create_matrix(self.J)
            self.ksp = PETSc.KSP().create(ts.comm)
            prefix = f"transient_tangent_{next(_ids)}_"
            self.ksp.setOptionsPrefix(prefix)
            opts = PETSc.Options()
            options = linear_options(solver.options)
            self._pending = [f"{prefix}{k}" for k in options]
            try:
                for k, v in options.items():
                    opts[f"{prefix}{k}"] = str(v).lower() if isinstance(v, bool) else v
                self.ksp.setFromOptions()
            except PETSc.Error:
                self._forget_options()
                raise
            self.ksp.setOperators(self.A)

    def _forget_options(self) -> None:
        opts = PETSc.Options()
        for k in self._pending:
            opts.delValue(k)
        self._pending = []

    def operator(self, bcs, refresh: bool = False) -> tuple[PETSc.KSP, int]:
        """The KSP of J at the current state and the set-ups this took (0 when reused).

        A linear step's KSP is the loop's own, set up by the step just taken; ``refresh``
        reassembles it at the current state first (a reverse sweep: a non-fixed operator at
        every step, a fixed one if another μ was stepped since the trajectory).
        """
        if self.linear:
            if refresh:
                self.solver.solver.assemble_operator()
                return self.solver.ksp, 1
            return self.solver.ksp, 0
        self.A.zeroEntries()
        fem_petsc.assemble_matrix(self.A, self.J, bcs=bcs)
        self.A.assemble()
        self.ksp.setOperators(self.A)
        try:
            self.ksp.setUp()
        finally:
            self._forget_options()
        return self.ksp, 1

    def destroy(self) -> None:
        self._forget_options()
        self.dG.destroy()
        for m in (self.B, self.C):
            if m is not None:
                m.destroy()
        if self.ksp is not None:
            self.ksp.destroy()
            self.A.destroy()


class TransientSensitivity:
    """dy/dμ of a transient model's outputs over its time loop (module docstring).

    Args:
        stepper: the model's :class:`~hybrid.fem.transient.TransientSolver`; its parameters
            ``stepper.mu`` are μ.
        qoi: the UFL forms of the stepper's QoIs, in its order (default: the stepper's own
            ``qoi_forms``, which must then be UFL forms, not compiled ones).
        blocked: assemble the P vectors ∂G/∂μ_p of a step as one blocked vector (one pass,
            one kernel; the default) rather than one form each.

    Collective on the mesh communicator.
    """

    def __init__(self, stepper: TransientSolver, qoi: dict | None = None,
                 blocked: bool = True):
        self.ts = ts = stepper
        self.V, self.comm = ts.V, ts.comm
        self.n_local = self.V.dofmap.index_map.size_local
        self.P = len(ts.mu.constants)
        self.bcs = ts.bcs
        moving = {ts.u, ts.u_n, ts.u_nm1, ts.t, ts.t_prev} - {None}
        self._steps = [_StepDerivatives(ts, G, s, moving, blocked)
                       for G, s in zip(ts.forms, ts.step_solvers, strict=True)]
        v = ufl.TestFunction(self.V)
        self._dq_du, self._dq_dmu = [], []
        qoi = dict(ts.qoi_forms if qoi is None else qoi)
        if list(qoi) != list(ts.qoi_forms):
            raise ValueError(f"qoi must name the stepper's QoIs {list(ts.qoi_forms)} in order, "
                             f"got {list(qoi)}")
        for name, q in qoi.items():
            if not isinstance(q, ufl.Form):
                raise ValueError(f"QoI {name!r} must be a UFL form to be differentiated, got "
                                 f"{type(q).__name__}")
            dq = ufl.algorithms.expand_derivatives(ufl.derivative(q, ts.u, v))
            self._dq_du.append(None if dq.empty() else fem.form(dq))
            self._dq_dmu.append([None if f.empty() else fem.form(f)
                                 for f in (parameter_derivative(q, c) for c in ts.mu.constants)])
        self._s0 = self._initial_derivatives(ts.problem.initial)
        self._s = [[fem_petsc.create_vector(self.V) for _ in range(self.P)] for _ in range(3)]
        self._rhs = fem_petsc.create_vector(self.V)
        imap = self.V.dofmap.index_map
        layout = ((self.n_local, imap.size_global), (PETSc.DECIDE, max(self.P, 1)))
        self._R, self._X = (PETSc.Mat().createDense(layout, comm=self.comm) for _ in range(2))
        for M in (self._R, self._X):
            M.setUp()
            M.assemble()
        self._work = self._rhs.duplicate()
        self._lam = self._rhs.duplicate()
        self._w = fem.Function(self.V)
        owned = [bc.dof_indices() for bc in self.bcs]
        self._bc_rows = np.unique(np.concatenate(
            [d[:k] for d, k in owned] + [np.zeros(0, dtype=np.int32)]))
        """Owned Dirichlet DOFs: the rows Z zeroes."""
        self.solves = 0
        """Tangent and adjoint solves, all runs together."""
        self.operator_setups = 0
        """Set-ups (factorisations) done here, all runs together (0 for a fixed linear loop)."""
        self.matrix_assemblies = 0
        """Assemblies of ∂G/∂u_n and ∂G/∂u_{n−1}, all runs together."""
        self.trajectory: TransientTrajectory | None = None

    # ------------------------------------------------------------------ set-up
    def _initial_derivatives(self, initial) -> list[fem.Expression | None]:
        """Per μ_p: the compiled ∂u_0/∂μ_p (None where it is zero)."""
        ts = self.ts
        if initial is None or isinstance(initial, int | float):
            return [None] * self.P
        if isinstance(initial, ufl.core.expr.Expr):
            out = []
            for c in ts.mu.constants:
                vc = ufl.variable(c)
                d = ufl.algorithms.expand_derivatives(
                    ufl.diff(ufl.replace(initial, {c: vc}), vc))
                d = ufl.replace(d, {vc: c})
                out.append(None if isinstance(d, ufl.constantvalue.Zero) else
                           fem.Expression(d, self.V.element.interpolation_points))
            return out
        # a callable x -> values: refused if it reads μ (its derivative is not known here)
        w = fem.Function(self.V)
        w.interpolate(initial)
        ref = w.x.array.copy()
        for p, c in enumerate(ts.mu.constants):
            old = float(c.value)
            c.value = old + 0.5 + abs(old)
            try:
                w.interpolate(initial)
            finally:
                c.value = old
            changed = self.comm.allreduce(bool(np.any(w.x.array != ref)), op=MPI.LOR)
            if changed:
                raise ModelError(
                    f"Problem.initial is a callable that depends on parameter "
                    f"{ts.mu.names[p]!r}: give it as a UFL expression of ctx.mu so that its "
                    "derivative is known")
        return [None] * self.P

    def _check_rows(self, rows) -> list[np.ndarray]:
        out = []
        for i, r in enumerate(rows or []):
            r = np.asarray(r, dtype=float).reshape(-1)
            if r.size < self.n_local:
                raise ValueError(f"row {i} has {r.size} entries; the owned DOFs are "
                                 f"{self.n_local}")
            out.append(r[: self.n_local])
        return out

    def _set_initial(self, s: list[PETSc.Vec]) -> None:
        for expr, vec in zip(self._s0, s, strict=True):
            if expr is None:
                with vec.localForm() as loc:
                    loc.set(0.0)
            else:
                self._w.interpolate(expr)
                self._w.x.petsc_vec.copy(vec)

    def _prepare(self, mu) -> None:
        """Set μ and assemble the fixed B and C of this μ (once per run)."""
        self.ts.mu.assign(mu)
        for st in self._steps:
            for m in (st.B, st.C):
                if m is not None and m.fixed:
                    m.assemble()
                    self.matrix_assemblies += 1

    def _assemble_state_matrices(self, st: _StepDerivatives) -> None:
        for m in (st.B, st.C):
            if m is not None and not m.fixed:
                m.assemble()
                self.matrix_assemblies += 1

    def _output_derivatives(self, rows, svecs, u) -> np.ndarray:
        """The outputs and their derivatives, (m + n_qoi, 1 + P), on this rank's DOFs.

        Column 0: the row values l·u (QoI values left 0: the loop has them); columns 1…:
        l·s_p and ∂q/∂u·s_p + ∂q/∂μ_p.
        """
        n, P = self.n_local, self.P
        m, nq = len(rows), len(self._dq_du)
        local = np.zeros((m + nq, 1 + P))
        S = np.array([s.array_r[:n] for s in svecs]).reshape(P, n)
        uo = u.x.array[:n]
        for i, r in enumerate(rows):
            local[i, 0] = r @ uo
            local[i, 1:] = S @ r
        for k, (dq, dmu) in enumerate(zip(self._dq_du, self._dq_dmu, strict=True)):
            if dq is not None:
                assemble_into(dq, self._work)
                local[m + k, 1:] = S @ self._work.array_r[:n]
            for p, f in enumerate(dmu):
                if f is not None:
                    local[m + k, 1 + p] += fem.assemble_scalar(f)
        return local

    def _loop(self, mu, on_output, on_step) -> TransientResult:
        res = self.ts.run(np.asarray(mu, dtype=float), on_output=on_output, on_step=on_step)
        if not res.ok:
            raise SolveFailed(f"FEM time loop at mu={np.round(np.asarray(mu, float), 6).tolist()}"
                              f" failed: {res.reason}")
        return res

    # ------------------------------------------------------------------ forward mode
    def run(self, mu: Sequence[float], rows: Sequence[np.ndarray] | None = None
            ) -> TransientSensitivities:
        """One time loop at μ with its tangents: outputs and Jacobians at the output times.

        ``rows``: owned parts (DOLFINx owned ordering, length ``n_local``) of the output
        rows l_i, or None for QoIs only. P tangent solves per step on the step's own
        operator. Raises :class:`~hybrid.errors.SolveFailed` if a step fails.
        """
        rows = self._check_rows(rows)
        P, m, nq = self.P, len(rows), len(self._dq_du)
        counts = (self.solves, self.operator_setups, self.matrix_assemblies)
        self._prepare(mu)
        ring = self._s
        self._set_initial(ring[0])
        cur = [0]                                   # index of s_n in the ring
        outs: list[np.ndarray] = []

        def on_step(n: int, k: int) -> None:
            st = self._steps[k]
            self._assemble_state_matrices(st)
            ksp, setups = st.operator(self.bcs)
            self.operator_setups += setups
            i_n = cur[0]
            s_n, s_nm1, s_new = ring[i_n], ring[(i_n + 2) % 3], ring[(i_n + 1) % 3]
            self._tangent_rhs(st, s_n, s_nm1)
            self._solve_block(ksp, s_new)
            cur[0] = (i_n + 1) % 3

        def on_output(t, u) -> None:
            outs.append(self._output_derivatives(rows, ring[cur[0]], u))

        res = self._loop(mu, on_output, on_step)
        glob = self.comm.allreduce(np.array(outs), op=MPI.SUM) if outs else np.zeros(
            (0, m + nq, 1 + P))
        values = glob[:, :m, 0]
        jac = glob[:, :m, 1:]
        qoi_jac = glob[:, m:, 1:]
        return TransientSensitivities(
            res.times, values, jac, res.qoi, qoi_jac, res,
            solves=self.solves - counts[0], operator_setups=self.operator_setups - counts[1],
            matrix_assemblies=self.matrix_assemblies - counts[2])

    def _tangent_rhs(self, st: _StepDerivatives, s_n: list[PETSc.Vec],
                     s_nm1: list[PETSc.Vec]) -> None:
        """Set the columns of ``self._R`` to −Z (B s_n^p + C s_{n−1}^p + ∂G/∂μ_p)."""
        n = self.n_local
        R = self._R.getDenseArray()
        R[:, : self.P] = st.dG.assemble()
        for p in range(self.P):
            for mat, s in ((st.B, s_n), (st.C, s_nm1)):
                if mat is not None:
                    mat.A.mult(s[p], self._work)
                    R[:, p] += self._work.array_r[:n]
        R *= -1.0
        R[self._bc_rows, :] = 0.0

    def _solve_block(self, ksp: PETSc.KSP, out: list[PETSc.Vec]) -> None:
        """All P tangent systems at once: J X = R (``KSPMatSolve``).

        A direct solver does one multi-right-hand-side back-substitution (MUMPS: 1.3 ms for
        11 right-hand sides against 11 × 0.37 ms at 961 DOFs); an iterative KSP solves the
        columns in turn.
        """
        if not out:
            return
        ksp.matSolve(self._R, self._X)
        reason = ksp.getConvergedReason()
        if reason < 0:
            raise SolveFailed(f"transient sensitivity solve failed (KSP reason {reason}); "
                              "use a direct solver or tighten the KSP")
        X = self._X.getDenseArray(readonly=True)
        for p, vec in enumerate(out):
            vec.array_w[:] = X[:, p]
        self.solves += len(out)

    def _solve(self, ksp: PETSc.KSP, rhs: PETSc.Vec, x: PETSc.Vec, transpose: bool) -> None:
        (ksp.solveTranspose if transpose else ksp.solve)(rhs, x)
        reason = ksp.getConvergedReason()
        if reason < 0:
            raise SolveFailed(f"transient sensitivity solve failed (KSP reason {reason}); "
                              "use a direct solver or tighten the KSP")
        self.solves += 1

    # ------------------------------------------------------------------ reverse mode
    def solve(self, mu: Sequence[float], rows: Sequence[np.ndarray] | None = None
              ) -> TransientTrajectory:
        """One time loop at μ that keeps every state, for :meth:`vjp` (no tangents).

        Returns the outputs l_i·u and QoIs at the output times; ``self.trajectory`` keeps
        the N + 1 fields (memory N·n_dofs floats).
        """
        rows = self._check_rows(rows)
        ts = self.ts
        states: list[np.ndarray] = []
        vals: list[np.ndarray] = []

        def on_step(n: int, k: int) -> None:
            states.append(ts.u.x.array.copy())

        def on_output(t, u) -> None:
            if not states:
                states.append(u.x.array.copy())
            vals.append(np.array([r @ u.x.array[: self.n_local] for r in rows]))

        res = self._loop(mu, on_output, on_step)
        values = self.comm.allreduce(np.array(vals).reshape(len(vals), len(rows)), op=MPI.SUM)
        self.trajectory = TransientTrajectory(res.times, values, res.qoi, res, states, rows)
        self._mu = np.asarray(mu, dtype=float).copy()
        return self.trajectory

    def _set_state(self, n: int) -> None:
        """The coefficients of step n (t_n → t_{n+1}) from the kept trajectory."""
        ts, X = self.ts, self.trajectory.states
        ts.u.x.array[:] = X[n + 1]
        ts.u_n.x.array[:] = X[n]
        if ts.u_nm1 is not None:
            ts.u_nm1.x.array[:] = X[max(n - 1, 0)]
        ts.t_prev.value, ts.t.value = ts.t0 + n * ts.dt, ts.t0 + (n + 1) * ts.dt

    def _add_output_gradient(self, acc: PETSc.Vec, j: int, wv: np.ndarray,
                             wq: np.ndarray, direct: np.ndarray) -> None:
        """Add g = Σ_i w_ji l_i + Σ_k wq_jk ∂q_k/∂u to acc (current u), ∂Φ/∂μ to direct."""
        n = self.n_local
        a = acc.getArray()
        for i, r in enumerate(self.trajectory.rows):
            if wv[j, i] != 0.0:
                a[:n] += wv[j, i] * r
        for k, (dq, dmu) in enumerate(zip(self._dq_du, self._dq_dmu, strict=True)):
            if wq[j, k] == 0.0:
                continue
            if dq is not None:
                assemble_into(dq, self._work)
                a[:n] += wq[j, k] * self._work.array_r[:n]
            for p, f in enumerate(dmu):
                if f is not None:
                    direct[p] += wq[j, k] * fem.assemble_scalar(f)
        acc.setArray(a)

    def vjp(self, w_values: np.ndarray | None = None, w_qoi: np.ndarray | None = None
            ) -> np.ndarray:
        """dΦ/dμ (P,) of Φ = Σ_j (w_values[j]·y(t_j) + w_qoi[j]·q(t_j)) by one adjoint sweep.

        Runs backwards over the trajectory of the last :meth:`solve` (its μ and rows);
        ``w_values`` (n_out, m) and ``w_qoi`` (n_out, n_qoi) default to zero. N transposed
        solves on the steps' operators (a fixed linear loop: its own factors, no set-up —
        unless the stepper has been run at another μ since, then each is set up once).
        On return ``problem.u`` holds the last state again. Same result on every rank.
        """
        tr = self.trajectory
        if tr is None:
            raise ValueError("vjp needs a trajectory: call solve(mu, rows) first")
        ts = self.ts
        n_out, m, nq = len(tr.times), len(tr.rows), len(self._dq_du)
        wv = np.zeros((n_out, m)) if w_values is None else np.asarray(w_values, dtype=float)
        wq = np.zeros((n_out, nq)) if w_qoi is None else np.asarray(w_qoi, dtype=float)
        if wv.shape != (n_out, m) or wq.shape != (n_out, nq):
            raise ValueError(f"weights must be ({n_out}, {m}) and ({n_out}, {nq}), got "
                             f"{wv.shape} and {wq.shape}")
        stale = not np.array_equal(ts.mu.values_array(), self._mu)   # factors of another μ
        refreshed: set[int] = set()
        ts.mu.assign(self._mu)
        for st in self._steps:
            for mat in (st.B, st.C):
                if mat is not None and mat.fixed:
                    mat.assemble()
                    self.matrix_assemblies += 1
        N = ts.n_steps
        out_step = {k: j for j, k in enumerate(
            k for k in range(N + 1) if k % ts.every == 0 or k == N)}
        acc = {N: self._rhs.duplicate()}
        for v in acc.values():
            v.set(0.0)
        grad = np.zeros(self.P)          # −Σ λ·d (local parts)
        direct = np.zeros(self.P)        # ∂Φ/∂μ of the QoIs (local parts)
        for n in range(N - 1, -1, -1):
            self._set_state(n)
            st = self._steps[min(n, len(self._steps) - 1)]
            a = acc.pop(n + 1)
            if n + 1 in out_step:
                self._add_output_gradient(a, out_step[n + 1], wv, wq, direct)
            for idx in (n, n - 1):
                if idx >= 0 and idx not in acc:
                    acc[idx] = self._rhs.duplicate()
                    acc[idx].set(0.0)
            fem_petsc.set_bc(a, self.bcs, alpha=0.0)
            refresh = st.linear and (not st.solver.fixed or (stale and id(st) not in refreshed))
            refreshed.add(id(st))
            ksp, setups = st.operator(self.bcs, refresh)
            self.operator_setups += setups
            self._solve(ksp, a, self._lam, transpose=True)
            a.destroy()
            grad -= self._lam.array_r[: self.n_local] @ st.dG.assemble()
            self._assemble_state_matrices(st)
            if st.B is not None:
                self._work.set(0.0)
                st.B.A.multTranspose(self._lam, self._work)
                acc[n].axpy(-1.0, self._work)
            if st.C is not None and n >= 1:
                self._work.set(0.0)
                st.C.A.multTranspose(self._lam, self._work)
                acc[n - 1].axpy(-1.0, self._work)
        a0 = acc.pop(0)
        ts.u.x.array[:] = tr.states[0]
        ts.t.value = ts.t0
        if 0 in out_step:
            self._add_output_gradient(a0, out_step[0], wv, wq, direct)
        s0 = self._s[0]
        self._set_initial(s0)
        a0r = a0.array_r[: self.n_local]
        for p in range(self.P):
            grad[p] += s0[p].array_r[: self.n_local] @ a0r
        a0.destroy()
        for v in acc.values():
            v.destroy()
        ts.u.x.array[:] = tr.states[-1]
        return self.comm.allreduce(grad + direct, op=MPI.SUM)

    def destroy(self) -> None:
        """Free the PETSc objects made here (never the loop's own KSPs)."""
        for st in self._steps:
            st.destroy()
        for ring in self._s:
            for v in ring:
                v.destroy()
        for v in (self._rhs, self._work, self._lam, self._R, self._X):
            v.destroy()
