"""The affine decomposition of a transient model's initial state (collective).

A reduced time-stepping model needs u0(μ) online without the FEM. When the initial state is
affine in the parameters,

    u0(x; μ) = Σ_q ϑ0_q(μ) g_q(x),

each g_q is interpolated once (offline) and u0_h(μ) = Σ_q ϑ0_q(μ) I_h g_q — exactly the
FEM's interpolated initial state, since interpolation is linear. The terms are found by the
residual's own method (:func:`hybrid.fem.analysis._decompose`) applied to the linear form
∫ u0 w dx (w a test function): its terms θ_q · ∫ c_q w dx give g_q = c_q|_{w=1}. The result is
accepted only after Σ_q ϑ0_q(μ) I_h g_q has been checked against I_h u0(μ) at random μ in
the box (relative max-norm error ≤ ``tol``); otherwise None (the surrogate then learns
u0(μ) from the stored trajectories' first fields).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ufl
from dolfinx import fem
from mpi4py import MPI

from hybrid.core import theta as th
from hybrid.fem import analysis as an


@dataclass
class InitialDecomposition:
    """u0(μ) = Σ_q θ_q(μ) g_q: the θ trees and the interpolated g_q (owned DOF values)."""

    theta: list[th.Tree]
    terms: list[np.ndarray]
    error: float


def _interpolate(expr, V: fem.FunctionSpace) -> np.ndarray:
    f = fem.Function(V)
    if isinstance(expr, int | float):
        f.x.array[:] = float(expr)
    else:
        f.interpolate(fem.Expression(expr, V.element.interpolation_points))
    return f.x.array[: V.dofmap.index_map.size_local].copy()


def decompose_initial(initial, V: fem.FunctionSpace, mu, box: np.ndarray | None, *,
                      checks: int = 3, tol: float = 1e-10, seed: int = 0
                      ) -> InitialDecomposition | None:
    """The affine terms of ``Problem.initial`` (a number or a UFL expression), or None.

    ``mu`` is the model's :class:`hybrid.model.Parameters` (its Constants are assigned
    during the checks and restored after). A callable initial state is not analysable: None.
    """
    if initial is None or isinstance(initial, int | float):
        value = 0.0 if initial is None else float(initial)
        return InitialDecomposition([1.0], [_interpolate(value, V)], 0.0)
    if not isinstance(initial, ufl.core.expr.Expr):
        return None
    w = ufl.TestFunction(V)
    form = initial * w * ufl.dx(domain=V.mesh)
    try:
        terms = an._decompose(form, mu, max_degree=4)
    except an._NotAffine:
        return None
    theta, g = [], []
    for t in terms:
        itgs = t.form.integrals()
        expr = sum(ufl.replace(i.integrand(), {w: ufl.as_ufl(1.0)}) for i in itgs)
        theta.append(t.theta)
        g.append(_interpolate(expr, V))
    comm = V.mesh.comm
    saved = np.array([float(c.value) for c in mu.constants])
    rng = np.random.default_rng(seed)
    err = 0.0
    try:
        for _ in range(checks):
            m = an._random_mu(rng, mu, box)
            m = comm.bcast(m, root=0)
            mu.assign(m)
            ref = _interpolate(initial, V)
            vals = np.array([float(th.evaluate(tr, m)) for tr in theta])
            approx = vals @ np.array(g) if g else np.zeros_like(ref)
            scale = comm.allreduce(float(np.max(np.abs(ref), initial=0.0)), op=MPI.MAX)
            diff = comm.allreduce(float(np.max(np.abs(ref - approx), initial=0.0)),
                                  op=MPI.MAX)
            err = max(err, diff / max(scale, 1e-300))
    finally:
        mu.assign(saved)
    if err > tol:
        return None
    return InitialDecomposition(theta, g, err)
