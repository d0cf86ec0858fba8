"""The cheap residual indicator of an approximate field: η(μ) = ‖R(ũ; μ)‖_{X'}.

For a model F(u; v; μ) = 0 and an approximation ũ of its FEM solution u_h(μ) (a surrogate's
field, lifted to the FEM space with the Dirichlet values of the model), the residual
R(ũ; μ) = F(ũ; ·; μ) is a functional on the test space V₀ (zero on the Dirichlet boundary).
Its dual norm in the inner product X (the store's POD inner product) is

    η(μ) = sup_{v ∈ V₀} R(ũ; v) / ‖v‖_X = sqrt(rᵀ X₀⁻¹ r),

with r the assembled residual vector with its Dirichlet rows zeroed and X₀ the matrix of X
with the Dirichlet rows and columns replaced by the identity (X restricted to V₀). Cost: one
residual assembly and one back-substitution with a factorisation of X₀ made once (MUMPS LU).

η is an *indicator*, not a bound. For a linear F with J = ∂F/∂u, R(ũ) = R(u_h) + J(ũ − u_h)
= J(ũ − u_h), so γ_inf ‖e‖_X ≤ η ≤ γ_sup ‖e‖_X with the inf-sup and continuity constants of
J in X; for a nonlinear F the same holds to first order in e = u_h − ũ. The constants are
unknown in general: the effectivity η/‖e‖_X must be measured (e.g. on held-out snapshots,
:mod:`hybrid.workflows.coupler`), and is only as representative as those samples.

Inner products: ``h1`` (mass + stiffness), ``h10`` (stiffness), ``l2`` (mass) — the forms of
the store's matrices (:meth:`hybrid.fem.model_problem.ModelProblem.static_data`). Collective
on the mesh communicator; η is returned on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from petsc4py import PETSc

from hybrid.fem.analysis import assemble_into

INNER_PRODUCTS = ("h1", "h10", "l2")


def inner_product_form(V: fem.FunctionSpace, kind: str) -> ufl.Form:
    """The bilinear form of the inner product ``kind`` on V (as in the store's matrices)."""
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    dx = ufl.dx(domain=V.mesh)
    mass = u * v * dx if not u.ufl_shape else ufl.inner(u, v) * dx   # vector: u·v
    stiffness = ufl.inner(ufl.grad(u), ufl.grad(v)) * dx
    forms = {"h1": mass + stiffness, "h10": stiffness, "l2": mass}
    if kind not in forms:
        raise ValueError(f"the residual indicator's inner product must be one of "
                         f"{INNER_PRODUCTS}, got {kind!r}")
    return forms[kind]


class ResidualIndicator:
    """η(μ; ũ) = sqrt(rᵀ X₀⁻¹ r) for a model's residual F (module docstring).

    Args:
        F: the residual form F(u; v), in the unknown ``u``.
        u: the model's unknown (never modified: the residual is assembled at a copy).
        mu: the model's :class:`hybrid.model.Parameters`.
        bcs: the Dirichlet conditions (their values lift ũ; their DOFs are dropped from r).
        inner_product: ``h1``, ``h10`` or ``l2``.

    Collective on the mesh communicator.
    """

    def __init__(self, F: ufl.Form, u: fem.Function, mu, bcs: Sequence,
                 inner_product: str = "h1"):
        self.V = u.function_space
        self.comm = self.V.mesh.comm
        self.mu, self.bcs = mu, list(bcs)
        self.inner_product = inner_product
        self.n_local = self.V.dofmap.index_map.size_local * self.V.dofmap.index_map_bs
        self.w = fem.Function(self.V, name="u_approx")
        self._R = fem.form(ufl.replace(F, {u: self.w}))
        X = fem.form(inner_product_form(self.V, inner_product))
        self._X = fem_petsc.assemble_matrix(X, bcs=self.bcs)   # identity on Dirichlet rows
        self._X.assemble()
        self._ksp = PETSc.KSP().create(self.comm)
        self._ksp.setType("preonly")
        self._ksp.getPC().setType("lu")
        self._ksp.getPC().setFactorSolverType("mumps")
        self._ksp.setOperators(self._X)
        self._ksp.setUp()                                       # the one factorisation
        self._r = fem_petsc.create_vector(self.V)
        self._z = self._r.duplicate()

    def set_field(self, owned: np.ndarray) -> None:
        """Set ũ from its owned values, then impose the Dirichlet values (the lift)."""
        self.w.x.array[: self.n_local] = owned
        self.w.x.scatter_forward()
        for bc in self.bcs:
            bc.set(self.w.x.array)
        self.w.x.scatter_forward()

    def residual_vector(self, mu: np.ndarray) -> PETSc.Vec:
        """The residual vector r = R(ũ; μ), zero Dirichlet rows, at :meth:`set_field`'s ũ.

        The model's parameter values are restored afterwards.
        """
        saved = self.mu.values_array()
        self.mu.assign(np.asarray(mu, dtype=float))
        try:
            assemble_into(self._R, self._r)
        finally:
            self.mu.assign(saved)
        fem_petsc.set_bc(self._r, self.bcs, alpha=0.0)
        return self._r

    def dual_norm(self, r: PETSc.Vec) -> float:
        """‖r‖_{X'} = sqrt(rᵀ X₀⁻¹ r) of an assembled functional with zero Dirichlet rows."""
        self._ksp.solve(r, self._z)
        return float(np.sqrt(max(r.dot(self._z), 0.0)))

    def __call__(self, mu: np.ndarray, owned: np.ndarray) -> float:
        """η(μ) at the field ũ given by its owned values; on every rank."""
        self.set_field(owned)
        return self.dual_norm(self.residual_vector(mu))

    def destroy(self) -> None:
        for obj in (self._ksp, self._X, self._r, self._z):
            obj.destroy()
