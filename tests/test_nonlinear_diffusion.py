"""The nonlinear diffusion plug-in against a manufactured solution (serial and 2 ranks)."""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm

MU = np.array([1.0, 4.0])  # κ(u) = 1 + 4u²: clearly nonlinear for u = O(1)


def mms_errors(comm, n: int, petsc: dict | None = None):
    """P1 Newton solve of −∇·((μ0 + μ1u²)∇u) = f with u = sin(πx) sin(πy) · 1.5.

    The model's own residual (source setting s = 1) is used, with the manufactured source
    added: F_mms = F + ∫ (s − f) v dx. Returns (L2 error, H1 error, SolveResult).
    """
    import ufl
    from dolfinx import fem, mesh

    from hybrid.fem.discretisation import Discretisation

    msh = mesh.create_unit_square(comm, n, n)
    lm = hm.load_model("nonlinear_diffusion")
    pb, ctx = lm.build(lm.instantiate({"source": 1.0}), msh, ["mu0", "mu1"])
    v = pb.F.arguments()[0]
    x = ufl.SpatialCoordinate(msh)
    u_ex = 1.5 * ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])
    k = fem.Constant(msh, MU[0]) + fem.Constant(msh, MU[1]) * u_ex**2
    f = -ufl.div(k * ufl.grad(u_ex))
    pb.F = pb.F + (1.0 - f) * v * ufl.dx
    disc = Discretisation(pb, ctx.mu, petsc)
    res = disc.solve(MU)
    dx = ufl.dx(metadata={"quadrature_degree": 6})
    e = pb.u - u_ex
    l2 = comm.allreduce(fem.assemble_scalar(fem.form(e * e * dx)))
    h1 = comm.allreduce(fem.assemble_scalar(fem.form(ufl.inner(ufl.grad(e), ufl.grad(e)) * dx)))
    disc.destroy()
    return float(np.sqrt(l2)), float(np.sqrt(h1)), res


def check_rates(comm):
    ns = [8, 16, 32]
    out = [mms_errors(comm, n) for n in ns]
    for _, _, res in out:
        assert res.ok and res.reason.startswith("CONVERGED_"), res
        assert 2 <= res.iterations <= 12, res  # nonlinear: more than one Newton step
    errs = np.array([o[:2] for o in out])
    rates = np.log2(errs[:-1] / errs[1:])
    assert np.all(np.abs(rates[:, 0] - 2.0) < 0.1), f"L2 rates {rates[:, 0]}"
    assert np.all(np.abs(rates[:, 1] - 1.0) < 0.1), f"H1 rates {rates[:, 1]}"
    assert errs[-1, 0] < 5e-3
    return rates


def test_manufactured_solution_rates_serial():
    from mpi4py import MPI

    check_rates(MPI.COMM_SELF)


@pytest.mark.mpi(min_size=2)
def test_manufactured_solution_rates_two_ranks():
    from mpi4py import MPI

    assert MPI.COMM_WORLD.size >= 2
    check_rates(MPI.COMM_WORLD)


def test_a_failed_newton_solve_is_reported_not_raised():
    from mpi4py import MPI

    l2, _, res = mms_errors(MPI.COMM_SELF, 8, {"snes_max_it": 1})
    assert res.ok is False and res.reason == "DIVERGED_MAX_IT" and res.iterations == 1
    # the next problem in the same process is not affected by the options of this one
    _, _, res = mms_errors(MPI.COMM_SELF, 8)
    assert res.ok and res.iterations >= 2


def test_newton_with_an_iterative_linear_solver_and_warm_start():
    from dolfinx import mesh
    from mpi4py import MPI

    from hybrid.fem.discretisation import Discretisation

    msh = mesh.create_unit_square(MPI.COMM_SELF, 16, 16)
    lm = hm.load_model("nonlinear_diffusion")
    pb, ctx = lm.build(lm.instantiate({"source": 10.0}), msh)
    lu = Discretisation(pb, ctx.mu)
    assert lu.solve(MU).ok
    ref = pb.u.x.array.copy()
    lu.destroy()
    cg = Discretisation(pb, ctx.mu, {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12},
                        warm_start=True)
    res = cg.solve(MU)
    assert res.ok and res.iterations <= 1  # started at the solution
    assert np.abs(pb.u.x.array - ref).max() <= 1e-9 * np.abs(ref).max()
    pb.u.x.array[:] = 0.0
    res = cg.solve(MU)
    assert res.ok and res.iterations >= 2
    assert np.abs(pb.u.x.array - ref).max() <= 1e-9 * np.abs(ref).max()
