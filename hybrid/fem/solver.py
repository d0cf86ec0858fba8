"""A reusable linear solve A u = b with PETSc options from the case file.

Thin wrapper over a PETSc KSP: the operator matrix is created once from the bilinear form's
sparsity and re-assembled for every parameter, the KSP (and its preconditioner) is configured
from the case's ``[solver.petsc]`` options under a prefix unique to this object (PETSc options
from one problem must never leak into another), and the outcome of every solve is reported
(converged reason, iterations, NaN check) instead of raising, so a campaign can record a
failed sample and carry on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from petsc4py import PETSc

from hybrid.errors import HybridError

_ids = itertools.count()
_REASONS = {v: k for k, v in vars(PETSc.KSP.ConvergedReason).items() if isinstance(v, int)}


@dataclass
class SolveResult:
    """Outcome of one linear solve."""

    ok: bool
    reason: str
    iterations: int


class SolverOptionsError(HybridError):
    """The case's PETSc options are refused or never used by PETSc."""


class LinearSolver:
    """Solve a(u, v) = L(v) with Dirichlet conditions; collective on the mesh communicator."""

    def __init__(
        self,
        a: fem.Form,
        L: fem.Form,
        bcs: list[fem.DirichletBC],
        petsc_options: dict,
        name: str = "hybrid",
    ):
        self.a, self.L, self.bcs = a, L, bcs
        self.prefix = f"{name}_{next(_ids)}_"
        self.A = fem_petsc.create_matrix(a)
        self.b = fem_petsc.create_vector(fem.extract_function_spaces([L]))
        self.ksp = PETSc.KSP().create(a.mesh.comm)
        self.ksp.setOptionsPrefix(self.prefix)
        self.A.setOptionsPrefix(self.prefix)
        opts = PETSc.Options()
        self._pending = list(petsc_options)
        """Options kept in PETSc's database until the first solve has read them all (some,
        such as MUMPS controls, are read only at the first factorisation)."""
        try:
            for k, v in petsc_options.items():
                opts[f"{self.prefix}{k}"] = v if not isinstance(v, bool) else str(v).lower()
            self.ksp.setFromOptions()
            self.A.setFromOptions()
        except PETSc.Error as exc:
            self._forget_options()
            bad = ", ".join(f"{k} = {v!r}" for k, v in petsc_options.items())
            raise SolverOptionsError(
                f"solver.petsc: PETSc refused these options (error {exc.ierr}: an unknown "
                f"type or a bad value among {bad})") from None
        self.ksp.setOperators(self.A)
        self.operator_assemblies = 0

    def _forget_options(self) -> list[str]:
        """Delete this solver's options from PETSc's database; return those never used."""
        opts = PETSc.Options()
        unused = [k for k in self._pending if not opts.used(f"{self.prefix}{k}")]
        for k in self._pending:
            opts.delValue(f"{self.prefix}{k}")
        self._pending = []
        return unused

    def solve(self, u: fem.Function) -> SolveResult:
        """Assemble A and b with the current coefficients and solve into ``u``."""
        self.assemble_operator()
        return self.solve_rhs(u)

    def assemble_operator(self) -> None:
        """Assemble A with the current coefficients (the next solve sets the PC up again).

        Counted in ``operator_assemblies``: a time loop whose operator does not change
        calls this once per sample, and every later :meth:`solve_rhs` reuses the
        factorisation (or the multigrid hierarchy) of this A. Collective.
        """
        self.A.zeroEntries()
        fem_petsc.assemble_matrix(self.A, self.a, bcs=self.bcs)
        self.A.assemble()
        self.operator_assemblies += 1

    def solve_rhs(self, u: fem.Function) -> SolveResult:
        """Assemble b = L with the current coefficients and solve A u = b with the last A."""
        with self.b.localForm() as bl:
            bl.set(0.0)
        fem_petsc.assemble_vector(self.b, self.L)
        fem_petsc.apply_lifting(self.b, [self.a], bcs=[self.bcs])
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(self.b, self.bcs)
        try:
            self.ksp.solve(self.b, u.x.petsc_vec)
        except PETSc.Error as exc:  # e.g. a zero pivot in a direct solver
            self._forget_options()
            return SolveResult(False, f"PETSc error {exc.ierr}", -1)
        if self._pending:
            unused = self._forget_options()
            if unused:   # a misspelled key is a user error, not a silent default
                raise SolverOptionsError(
                    f"solver.petsc: option(s) {', '.join(unused)} were never used by PETSc "
                    "(misspelled, or not meaningful for this solver)")
        u.x.scatter_forward()
        reason = self.ksp.getConvergedReason()
        its = self.ksp.getIterationNumber()
        comm = u.function_space.mesh.comm
        finite = comm.allreduce(bool(np.all(np.isfinite(u.x.array))), op=_land())
        if reason < 0:
            return SolveResult(False, _REASONS.get(reason, str(reason)), its)
        if not finite:
            return SolveResult(False, "NaN or Inf in solution", its)
        return SolveResult(True, _REASONS.get(reason, str(reason)), its)

    def destroy(self) -> None:
        self._forget_options()
        self.ksp.destroy()
        self.A.destroy()
        self.b.destroy()


def _land():
    from mpi4py import MPI

    return MPI.LAND
