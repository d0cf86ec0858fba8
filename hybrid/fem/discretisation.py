"""Solve a model's :class:`~hybrid.model.Problem` at μ: KSP for a linear F, SNES otherwise.

The user never calls a solver. A linear residual F(u; v) = a(u, v) − L(v) is solved with
a = ∂F/∂u and L = −F|_{u=0} by :class:`hybrid.fem.solver.LinearSolver` (the case's PETSc
options under a prefix unique to the problem, removed from the options database after
use). A nonlinear F is solved by Newton's method, DOLFINx 0.11's SNES
:class:`dolfinx.fem.petsc.NonlinearProblem` with J = ∂F/∂u, also under a unique prefix whose
options are removed afterwards, even when the set-up raises. Every solve returns a
:class:`~hybrid.fem.solver.SolveResult` (ok, PETSc's converged reason, iterations): a
failed solve is a result, not an exception.

Options are hybrid's defaults, then the problem's (``Problem.solver``), then the caller's
(the case's ``[solver.petsc]``), each layer replacing the solver families it names
(:func:`_layer`). Newton starts from zero (``warm_start=False``, reproducible) or
from the last solution.

``Problem.near_nullspace`` (e.g. elasticity's rigid-body modes) is orthonormalised and
attached to the operator (``MatSetNearNullSpace``), where GAMG finds it at set-up
(:func:`near_nullspace`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from petsc4py import PETSc

from hybrid.fem.analysis import at_zero, jacobian
from hybrid.fem.solver import LinearSolver, SolveResult

_ids = itertools.count()
_SNES_REASONS = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items()
                 if isinstance(v, int)}

LINEAR_DEFAULTS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
NEWTON_DEFAULTS = {"snes_type": "newtonls", "snes_linesearch_type": "basic",
                   "snes_rtol": 1e-10, "snes_atol": 1e-12, "snes_max_it": 50,
                   **LINEAR_DEFAULTS}


def _layer(base: dict, over: dict) -> dict:
    """PETSc options ``over`` on top of ``base``.

    Where ``over`` chooses a ``ksp_type``, ``pc_type`` or ``snes_type``, the ``ksp_*``,
    ``pc_*`` or ``snes_*`` options of ``base`` are dropped: they belong to the solver it
    replaces (e.g. ``pc_factor_mat_solver_type`` of the default LU under a case's
    ``pc_type = "none"``, which PETSc would never use).
    """
    for family in ("ksp", "pc", "snes"):
        if f"{family}_type" in over:
            base = {k: v for k, v in base.items() if not k.startswith(f"{family}_")}
    return {**base, **over}


def _petsc_value(v):
    return str(v).lower() if isinstance(v, bool) else v


class Discretisation:
    """A Problem ready to be solved for many μ (collective on the mesh communicator).

    Args:
        problem: the model's Problem.
        mu: its :class:`hybrid.model.Parameters` (the Context's ``mu``).
        petsc_options: options that override ``problem.solver``.
        name: a label for the options prefix.
        warm_start: start Newton from the previous solution instead of zero.
    """

    def __init__(self, problem, mu, petsc_options: dict | None = None, name: str = "model",
                 warm_start: bool = False):
        if problem.time is not None or problem.u_prev is not None:
            raise ValueError("a transient Problem (Problem.time, u_prev) is stepped by "
                             "hybrid.fem.transient.TransientSolver, not Discretisation")
        self.problem, self.mu, self.warm_start = problem, mu, warm_start
        self.u = problem.u
        self.J = jacobian(problem.F, self.u)
        self.linear = self.u not in self.J.coefficients()
        defaults = LINEAR_DEFAULTS if self.linear else NEWTON_DEFAULTS
        self.options = _layer(_layer(defaults, dict(problem.solver)), dict(petsc_options or {}))
        self.prefix = f"{name}_{next(_ids)}_"
        self._qoi = {k: fem.form(f) for k, f in problem.qoi.items()}
        self.near_nullspace = near_nullspace(problem.near_nullspace, self.u.function_space)
        if self.linear:
            L = -at_zero(problem.F, self.u)
            if L.empty():  # F(0) = 0: a zero right-hand side on the same space
                v = problem.F.arguments()[0]
                zero = fem.Constant(self.u.function_space.mesh, np.zeros(v.ufl_shape))
                L = ufl.inner(zero, v) * ufl.dx
            opts = {k: v for k, v in self.options.items() if not k.startswith("snes_")}
            self._linear = LinearSolver(fem.form(self.J), fem.form(L), list(problem.bcs), opts,
                                        self.prefix.rstrip("_"))
            self._snes = None
            if self.near_nullspace is not None:
                self._linear.A.setNearNullSpace(self.near_nullspace)
        else:
            self._linear = None
            self._nonlinear = fem_petsc.NonlinearProblem(
                problem.F, self.u, bcs=list(problem.bcs), J=self.J,
                petsc_options_prefix=self.prefix)
            self._snes = self._nonlinear.solver
            if self.near_nullspace is not None:
                self._nonlinear.A.setNearNullSpace(self.near_nullspace)
            opts = PETSc.Options()
            try:
                for k, v in self.options.items():
                    opts[f"{self.prefix}{k}"] = _petsc_value(v)
                self._snes.setFromOptions()
            finally:
                for k in self.options:
                    opts.delValue(f"{self.prefix}{k}")

    def solve(self, mu: Sequence[float]) -> SolveResult:
        """Set μ and solve into ``problem.u``; never raises for a solver failure."""
        self.mu.assign(mu)
        if self._linear is not None:
            return self._linear.solve(self.u)
        if not self.warm_start:
            self.u.x.array[:] = 0.0
        try:
            self._nonlinear.solve()
        except PETSc.Error as exc:
            return SolveResult(False, f"PETSc error {exc.ierr}", -1)
        reason = self._snes.getConvergedReason()
        its = self._snes.getIterationNumber()
        comm = self.u.function_space.mesh.comm
        from mpi4py import MPI

        finite = comm.allreduce(bool(np.all(np.isfinite(self.u.x.array))), op=MPI.LAND)
        name = _SNES_REASONS.get(reason, str(reason))
        if reason <= 0:
            return SolveResult(False, name, its)
        if not finite:
            return SolveResult(False, "NaN or Inf in solution", its)
        return SolveResult(True, name, its)

    @property
    def linear_ksp(self) -> PETSc.KSP | None:
        """The KSP of a linear F's solve (its operator is J = a at the last solved μ)."""
        return self._linear.ksp if self._linear is not None else None

    def qoi(self) -> dict[str, float]:
        """The QoIs of the current solution (the same on all ranks)."""
        comm = self.u.function_space.mesh.comm
        return {k: float(comm.allreduce(fem.assemble_scalar(f))) for k, f in self._qoi.items()}

    def destroy(self) -> None:
        """Free the PETSc objects."""
        if self.near_nullspace is not None:
            self.near_nullspace.destroy()
            self.near_nullspace = None
        if self._linear is not None:
            self._linear.destroy()
        else:
            self._nonlinear = None  # NonlinearProblem destroys its PETSc objects itself


def near_nullspace(functions, V) -> PETSc.NullSpace | None:
    """A PETSc near-nullspace from Functions z_1 … z_k of V (None for none); collective.

    The z_i are orthonormalised (modified Gram–Schmidt, ``dolfinx.la.orthonormalize``) on
    copies, as PETSc requires of a near-nullspace basis. A Function of another space, or a
    dependent set, is a ValueError.
    """
    if not functions:
        return None
    from dolfinx import la

    vecs = []
    for k, f in enumerate(functions):
        if not isinstance(f, fem.Function) or f.function_space != V:
            raise ValueError(f"Problem.near_nullspace[{k}] must be a fem.Function of u's space")
        g = fem.Function(V)
        g.x.array[:] = f.x.array
        vecs.append(g.x)
    try:
        la.orthonormalize(vecs)
    except RuntimeError:   # DOLFINx: "Linear dependency detected"
        ok = False
    else:
        ok = la.is_orthonormal(vecs, eps=1e-8)
    if not ok:
        raise ValueError("Problem.near_nullspace: the functions are linearly dependent")
    n = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    petsc = [PETSc.Vec().createWithArray(v.array[:n].copy(), bsize=V.dofmap.index_map_bs,
                                         comm=V.mesh.comm) for v in vecs]
    return PETSc.NullSpace().create(vectors=petsc, comm=V.mesh.comm)


def solve(problem, mu_params, mu: Sequence[float], petsc_options: dict | None = None):
    """One-off solve of ``problem`` at μ; returns (SolveResult, QoIs)."""
    d = Discretisation(problem, mu_params, petsc_options)
    try:
        res = d.solve(mu)
        return res, d.qoi()
    finally:
        d.destroy()
