"""Derivatives of linear outputs of a steady model: tangent-linear and adjoint solves.

For a residual F(u(μ); μ) = 0 and outputs y_i = l_i·u (rows of observation functionals or
QoIs), differentiating F at the converged u gives, with J = ∂F/∂u,

    tangent-linear:  J δu_q = −∂F/∂μ_q,   dy_i/dμ_q = l_i·δu_q          (P solves)
    adjoint:         Jᵀ λ_i = l_iᵀ,       dy_i/dμ_q = −λ_i·∂F/∂μ_q     (m solves)

and :meth:`Sensitivity.jacobian` picks the mode with fewer solves, min(P, m). Both use ONE
set-up of J at the converged state (a factorisation for a direct KSP, a preconditioner for an
iterative one); the transpose solves use the same factors (``KSP.solveTranspose``). For a
linear F whose solve used a direct KSP, the solve's own factors are those of J and are reused
(``reuse``): no assembly and no factorisation at all.

Dirichlet conditions are μ-independent (:class:`hybrid.model.Problem`), so δu_q = 0 on the
Dirichlet DOFs: J is assembled with those rows and columns replaced by the identity and the
right-hand sides have zero Dirichlet rows. With J_bc = [[J_II, 0], [0, I]], the adjoint with
l_D zeroed gives λ_D = 0 and λ_I = J_IIᵀ⁻¹ l_I, so −λᵀ ∂F/∂μ_q = −l_Iᵀ J_II⁻¹ ∂F_I/∂μ_q =
l·δu_q: the two modes agree to round-off.

∂F/∂μ_q come from :func:`hybrid.fem.analysis.parameter_derivatives`, compiled once.
Everything here is collective on the mesh communicator; Jacobians are on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from petsc4py import PETSc

from hybrid.fem.analysis import assemble_into, jacobian, parameter_derivatives

MODES = ("auto", "tangent", "adjoint")

_DIRECT = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def linear_options(options: dict) -> dict:
    """The KSP/PC part of a solver option set (no ``snes_*`` keys); MUMPS LU if none."""
    opts = {k: v for k, v in options.items() if not k.startswith("snes_")}
    return opts or dict(_DIRECT)


def is_direct(options: dict) -> bool:
    """True when the options give a direct solve (``preonly`` with LU or Cholesky)."""
    return (options.get("ksp_type", "preonly") == "preonly"
            and options.get("pc_type", "lu") in ("lu", "cholesky"))


class Sensitivity:
    """dy/dμ of linear outputs at the current state of ``u`` (module docstring).

    Args:
        F: the residual form F(u; v).
        u: the unknown (its current values are the converged state).
        mu: the model's :class:`hybrid.model.Parameters` (their current values are μ).
        bcs: the μ-independent Dirichlet conditions.
        options: PETSc KSP/PC options of the sensitivity solves (default MUMPS LU); an
            iterative KSP should have a tight ``ksp_rtol`` (the derivatives are as accurate
            as these solves).
        reuse: a KSP whose operator is J at the current state and already set up (the linear
            solve's own); then no J is assembled here. The caller guarantees it is current.
        near_nullspace: a PETSc NullSpace attached to J assembled here (GAMG's near-nullspace,
            e.g. elasticity's rigid-body modes; ``Problem.near_nullspace``).

    Collective on the mesh communicator.
    """

    _ids = 0

    def __init__(self, F, u: fem.Function, mu, bcs: Sequence, *, options: dict | None = None,
                 reuse: PETSc.KSP | None = None, near_nullspace: PETSc.NullSpace | None = None):
        self.u, self.mu, self.bcs = u, mu, list(bcs)
        self.V = u.function_space
        self.comm = self.V.mesh.comm
        self.n_local = self.V.dofmap.index_map.size_local * self.V.dofmap.index_map_bs
        dF = parameter_derivatives(F, mu)
        self._dF = [fem.form(f) if not f.empty() else None for f in dF]
        self.P = len(dF)
        self._reuse = reuse
        self._ksp = None
        self._A = None
        self.options = dict(options) if options else dict(_DIRECT)
        self._pending: list[str] = []
        """Option names kept in PETSc's database until the first set-up (MUMPS controls are
        read at the first factorisation), then removed."""
        if reuse is None:
            self._J = fem.form(jacobian(F, u))
            self._A = fem_petsc.create_matrix(self._J)
            if near_nullspace is not None:
                self._A.setNearNullSpace(near_nullspace)
            self._ksp = PETSc.KSP().create(self.comm)
            Sensitivity._ids += 1
            prefix = f"sens_{Sensitivity._ids}_"
            self._ksp.setOptionsPrefix(prefix)
            opts = PETSc.Options()
            self._pending = [f"{prefix}{k}" for k in self.options]
            try:
                for k, v in self.options.items():
                    opts[f"{prefix}{k}"] = str(v).lower() if isinstance(v, bool) else v
                self._ksp.setFromOptions()
            except PETSc.Error:
                self._forget_options()
                raise
            self._ksp.setOperators(self._A)
        self._b = fem_petsc.create_vector(self.V)
        self._x = self._b.duplicate()
        self._dFvecs = [self._b.duplicate() for _ in range(self.P)]
        self._state: tuple | None = None
        self._tangents: list[np.ndarray] | None = None
        self.n_setups = 0
        """How many times J was assembled and set up (factorised) here."""
        self.n_solves = 0
        """Back-substitutions (or iterative solves) run, tangent and adjoint together."""

    # ------------------------------------------------------------------ the state
    def _current(self) -> tuple:
        return (self.mu.values_array().tobytes(), self.u.x.array.tobytes())

    def _ensure(self) -> None:
        """Set J up and assemble ∂F/∂μ_q once per state (μ, u); nothing if unchanged."""
        key = self._current()
        if self._state is not None and self._state == key:
            return
        if self._reuse is None:
            self._A.zeroEntries()
            fem_petsc.assemble_matrix(self._A, self._J, bcs=self.bcs)
            self._A.assemble()
            self._ksp.setOperators(self._A)
            try:
                self._ksp.setUp()
            finally:
                self._forget_options()
            self.n_setups += 1
        for form, vec in zip(self._dF, self._dFvecs, strict=True):
            if form is None:       # F does not depend on μ_q
                vec.set(0.0)
                continue
            assemble_into(form, vec)
            fem_petsc.set_bc(vec, self.bcs, alpha=0.0)   # zero Dirichlet rows
        self._state = key
        self._tangents = None

    def _forget_options(self) -> None:
        opts = PETSc.Options()
        for k in self._pending:
            opts.delValue(k)
        self._pending = []

    @property
    def ksp(self) -> PETSc.KSP:
        return self._reuse if self._reuse is not None else self._ksp

    def _solve(self, rhs: PETSc.Vec, transpose: bool) -> np.ndarray:
        ksp = self.ksp
        (ksp.solveTranspose if transpose else ksp.solve)(rhs, self._x)
        reason = ksp.getConvergedReason()
        if reason < 0:
            raise RuntimeError(f"sensitivity solve failed ({reason}); use a direct solver "
                               "or tighten the KSP")
        self.n_solves += 1
        return self._x.getArray(readonly=True)[: self.n_local].copy()

    # ------------------------------------------------------------------ the two modes
    def tangents(self) -> list[np.ndarray]:
        """Owned parts of δu_q (q < P): J δu_q = −∂F/∂μ_q, δu_q = 0 on Dirichlet DOFs."""
        self._ensure()
        if self._tangents is None:
            out = []
            for vec in self._dFvecs:
                vec.scale(-1.0)
                try:
                    out.append(self._solve(vec, transpose=False))
                finally:
                    vec.scale(-1.0)
            self._tangents = out
        return self._tangents

    def adjoints(self, rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Owned parts of λ_i: Jᵀ λ_i = l_i (Dirichlet entries of l_i zeroed, λ_i = 0 there).

        ``rows``: the owned parts of the output rows l_i (length ``n_local`` each).
        """
        self._ensure()
        out = []
        for row in rows:
            self._b.setArray(np.ascontiguousarray(row[: self.n_local], dtype=float))
            self._b.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
            fem_petsc.set_bc(self._b, self.bcs, alpha=0.0)
            out.append(self._solve(self._b, transpose=True))
        return out

    def jacobian(self, rows: Sequence[np.ndarray], mode: str = "auto") -> np.ndarray:
        """(m, P) dy/dμ of the outputs y_i = l_i·u, ``rows`` the owned parts of l_i.

        ``mode``: ``"tangent"`` (P solves), ``"adjoint"`` (m solves) or ``"auto"``: the one
        with fewer solves (tangents already solved at this state count as free). On every
        rank.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        m, P = len(rows), self.P
        if m == 0 or P == 0:
            return np.zeros((m, P))
        if mode == "auto":
            self._ensure()
            mode = "tangent" if (self._tangents is not None or P <= m) else "adjoint"
        n = self.n_local
        local = np.zeros((m, P))
        if mode == "tangent":
            for q, du in enumerate(self.tangents()):
                for i, row in enumerate(rows):
                    local[i, q] = np.dot(row[:n], du)
        else:
            dF = [v.getArray(readonly=True)[:n] for v in self._dFvecs]
            for i, lam in enumerate(self.adjoints(rows)):
                for q in range(P):
                    local[i, q] = -np.dot(lam, dF[q])
        return self.comm.allreduce(local)

    def vjp(self, rows: Sequence[np.ndarray], sens: np.ndarray) -> np.ndarray:
        """sᵀ dy/dμ (P,) by ONE adjoint solve: Jᵀλ = Σ_i s_i l_i, (sᵀ dy/dμ)_q = −λ·∂F/∂μ_q."""
        n = self.n_local
        row = np.zeros(n)
        for s_i, r in zip(np.asarray(sens, dtype=float), rows, strict=True):
            row += s_i * r[:n]
        return self.jacobian([row], "adjoint")[0]

    def jvp(self, rows: Sequence[np.ndarray], direction: np.ndarray) -> np.ndarray:
        """dy/dμ v (m,) by ONE tangent solve: J δu = −Σ_q v_q ∂F/∂μ_q, (J v)_i = l_i·δu."""
        self._ensure()
        n = self.n_local
        rhs = self._b
        rhs.set(0.0)
        for v_q, vec in zip(np.asarray(direction, dtype=float), self._dFvecs, strict=True):
            rhs.axpy(-v_q, vec)
        du = self._solve(rhs, transpose=False)
        local = np.array([np.dot(r[:n], du) for r in rows])
        return self.comm.allreduce(local)

    def destroy(self) -> None:
        """Free the PETSc objects created here (never the reused KSP)."""
        self._forget_options()
        for v in (self._b, self._x, *self._dFvecs):
            v.destroy()
        if self._ksp is not None:
            self._ksp.destroy()
            self._A.destroy()
        self._ksp = self._A = None
