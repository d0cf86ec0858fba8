"""Transient problems (hybrid/fem/transient.py) against mathematics.

Time order: a manufactured solution u = X(x)·g(t) with X in the finite-element space
(X = x(1−x) in P2 on an interval, X = x(1−x)y(1−y) in Q2 on quadrilaterals), so the
semi-discrete Galerkin solution *is* u and the error at t_end is the time error alone:
backward Euler order 1, Crank–Nicolson and BDF2 (with its backward-Euler start) order 2.
Space order: P1 in L² at rate 2 with a CN step small enough to hide the time error.
The seed's rod u_t = κ u_xx against its exact solution; one operator set-up per sample for
a linear step; a failed step is a failed sample with its reason. The same checks run on
2 ranks in tests/test_transient_mpi.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import ufl

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.fem import MPI
from hybrid.fem.transient import TransientSolver, time_steps

from .conftest import ROOT, run_cli

EXPECTED = {"backward_euler": 1.0, "crank_nicolson": 2.0, "bdf2": 2.0}

from dolfinx import fem, mesh  # noqa: E402  (after hybrid.fem: the wheel's MPI first)

KAPPA = 0.5


def _g(t):
    """The time factor of the manufactured solutions (and its derivative), UFL or float."""
    sin, cos = (ufl.sin, ufl.cos) if isinstance(t, ufl.core.expr.Expr) else (np.sin, np.cos)
    return 1.0 + sin(3.0 * t), 3.0 * cos(3.0 * t)


def separable_problem(comm, dim: int):
    """u = X(x)·g(t), X ∈ V_h: the problem, its Context, and the exact u as UFL in ctx.t."""
    if dim == 1:
        msh = mesh.create_interval(comm, 4, [0.0, 1.0])
        V = fem.functionspace(msh, ("Lagrange", 2))
    else:
        msh = mesh.create_unit_square(comm, 3, 3, cell_type=mesh.CellType.quadrilateral)
        V = fem.functionspace(msh, ("Lagrange", 2))
    x = ufl.SpatialCoordinate(msh)
    mu = hm.Parameters(msh, ["kappa"], [KAPPA])
    t, dt = fem.Constant(msh, 0.0), fem.Constant(msh, 1.0)
    X = x[0] * (1 - x[0]) if dim == 1 else x[0] * (1 - x[0]) * x[1] * (1 - x[1])
    g, dg = _g(t)
    kappa = mu["kappa"]
    f = X * dg - kappa * ufl.div(ufl.grad(X)) * g          # u_t − κΔu for u = X g
    u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
    F = kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    g0, _ = _g(0.0)
    pb = hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                    qoi={"mean": u * ufl.dx}, initial=X * g0,
                    time=hm.TimeGrid(0.0, 1.0, 0.1))
    return pb, mu, t, dt, X * g


def l2(comm, e) -> float:
    return float(np.sqrt(comm.allreduce(fem.assemble_scalar(
        fem.form(e**2 * ufl.dx(metadata={"quadrature_degree": 8}))), op=MPI.SUM)))


def time_rates(comm, scheme: str, dim: int = 1, steps=(20, 40, 80)):
    """Errors at t_end = 1 for dt = 1/steps and the observed rates."""
    pb, mu, t, dt, exact = separable_problem(comm, dim)
    errs = []
    for n in steps:
        ts = TransientSolver(pb, mu, t, dt, scheme=scheme, step=1.0 / n)
        res = ts.run([KAPPA])
        assert res.ok, res.reason
        assert res.steps == n and np.isclose(float(t.value), 1.0)
        errs.append(l2(comm, pb.u - exact))     # t.value = t_end: exact at the last time
        ts.destroy()
    errs = np.array(errs)
    return errs, np.log2(errs[:-1] / errs[1:])


@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_time_order(scheme):
    errs, rates = time_rates(MPI.COMM_WORLD, scheme)
    assert np.all(np.abs(rates - EXPECTED[scheme]) <= 0.15), (errs, rates)


def test_time_order_2d_bdf2():
    errs, rates = time_rates(MPI.COMM_WORLD, "bdf2", dim=2)
    assert np.all(np.abs(rates - 2.0) <= 0.15), (errs, rates)


def test_semi_discrete_solution_is_exact_when_in_the_space():
    """The premise of the time-order tests: the error is time error only (it vanishes with dt)."""
    errs, _ = time_rates(MPI.COMM_WORLD, "crank_nicolson", steps=(640,))
    assert errs[0] < 2e-7     # 2.2e-6 at 160 steps: still O(dt²), no spatial floor


def space_rates(comm, cells=(8, 16, 32), degree: int = 1):
    """P1 on [0, 1], u = sin(πx)·g(t), CN with dt = 1/400 up to t = 0.5: L² errors, rates."""
    errs = []
    for n in cells:
        msh = mesh.create_interval(comm, n, [0.0, 1.0])
        V = fem.functionspace(msh, ("Lagrange", degree))
        x = ufl.SpatialCoordinate(msh)
        mu = hm.Parameters(msh, ["kappa"], [KAPPA])
        t, dt = fem.Constant(msh, 0.0), fem.Constant(msh, 1.0)
        g, dg = _g(t)
        S = ufl.sin(ufl.pi * x[0])
        f = S * dg + KAPPA * ufl.pi**2 * S * g
        u, v = fem.Function(V), ufl.TestFunction(V)
        F = mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx \
            - f * v * ufl.dx(metadata={"quadrature_degree": 6})
        pb = hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)], initial=S,
                        time=hm.TimeGrid(0.0, 0.5, 1.0 / 400))
        ts = TransientSolver(pb, mu, t, dt, scheme="crank_nicolson")
        res = ts.run([KAPPA])
        assert res.ok
        errs.append(l2(comm, u - S * g))
        ts.destroy()
    errs = np.array(errs)
    return errs, np.log2(errs[:-1] / errs[1:])


def test_space_order_p1():
    errs, rates = space_rates(MPI.COMM_WORLD)
    assert np.all(np.abs(rates - 2.0) <= 0.15), (errs, rates)


def rod(comm, cells: int = 200, dt: float = 0.01, scheme: str = "crank_nicolson",
        kappa: float = 0.01, degree: int = 1, every: int = 1):
    """The seed's rod on [−1, 1] through the case file: (relative L² error over (x, t),
    relative discrete l² error at the nodes over the steps, the result)."""
    from hybrid.core.case import parse_case
    from hybrid.fem.model_problem import ModelProblem

    text = (ROOT / "cases/heat_rod.toml").read_text()
    text = text.replace("cells = 200", f"cells = {cells}").replace(
        "dt = 0.01", f"dt = {dt}").replace('scheme = "crank_nicolson"', f'scheme = "{scheme}"')
    text = text.replace("degree = 1", f"degree = {degree}").replace("every = 10",
                                                                    f"every = {every}")
    case = parse_case(text, ROOT / "cases/heat_rod.toml")
    p = ModelProblem(case, comm)
    tc = fem.Constant(p.mesh, 0.0)
    x = ufl.SpatialCoordinate(p.mesh)
    exact = -ufl.sin(ufl.pi * x[0]) * ufl.exp(-kappa * ufl.pi**2 * tc)
    md = {"quadrature_degree": 2 * degree + 6}
    e2 = fem.form((p.u - exact) ** 2 * ufl.dx(metadata=md))
    n2 = fem.form(exact**2 * ufl.dx(metadata=md))
    xs = p.V.tabulate_dof_coordinates()[:p.V.dofmap.index_map.size_local, 0]
    acc = {"e": [], "n": [], "de": [], "dn": []}

    def on_output(t, u):
        tc.value = t
        acc["e"].append(comm.allreduce(fem.assemble_scalar(e2), op=MPI.SUM))
        acc["n"].append(comm.allreduce(fem.assemble_scalar(n2), op=MPI.SUM))
        ue = -np.sin(np.pi * xs) * np.exp(-kappa * np.pi**2 * t)
        n_own = len(xs)
        acc["de"].append(comm.allreduce(float(np.sum((u.x.array[:n_own] - ue) ** 2))))
        acc["dn"].append(comm.allreduce(float(np.sum(ue**2))))

    res = p.solve_transient([kappa], on_output=on_output)
    p.destroy()
    w = np.full(len(res.times), 1.0)          # trapezoid weights in t
    w[0] = w[-1] = 0.5
    rel = np.sqrt(w @ acc["e"] / (w @ acc["n"]))
    rel_nodes = np.sqrt(w @ acc["de"] / (w @ acc["dn"]))
    return rel, rel_nodes, res


def test_heat_rod_against_exact_solution():
    """CN at 200 cells, dt = 0.01: the P1 field at its nodes to 1e-5 relative over (x, t);
    the continuous L² error is the P1 interpolation error h²π²/12-ish (≈ 5e-5), and P2
    reaches 1e-5 in the continuous norm too."""
    comm = MPI.COMM_WORLD
    rel, rel_nodes, res = rod(comm)
    assert res.ok and res.steps == 100 and res.operator_setups == 1
    assert rel_nodes <= 1e-5, rel_nodes
    assert rel <= 1e-4, rel
    rel2, _, res2 = rod(comm, degree=2, cells=100)
    assert res2.ok and rel2 <= 1e-5, rel2


def test_operator_set_up_once_per_sample():
    """One factorisation for a linear, t-free step (BDF2: two, with its BE start), counted
    by hybrid and by PETSc's PCSetUp event; a t-dependent J is set up at every step."""
    from petsc4py import PETSc

    comm = MPI.COMM_WORLD
    pb, mu, t, dt, _ = separable_problem(comm, 1)
    PETSc.Log.begin()
    ev = PETSc.Log.Event("PCSetUp")
    for scheme, setups in [("backward_euler", 1), ("crank_nicolson", 1), ("bdf2", 2)]:
        ts = TransientSolver(pb, mu, t, dt, scheme=scheme, step=0.05)
        assert ts.fixed_operator
        for sample in range(2):                         # per sample, not per solver
            before = ev.getPerfInfo()["count"]
            res = ts.run([KAPPA * (1 + sample)])
            assert res.ok and res.steps == 20
            assert res.operator_setups == setups
            assert ev.getPerfInfo()["count"] - before == setups
        ts.destroy()
    # κ(t) = 1 + t in the operator: reassembled at every step
    V = pb.u.function_space
    u, v = pb.u, ufl.TestFunction(V)
    F = (1 + t) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    moving = hm.Problem(u=u, F=F, bcs=pb.bcs, initial=1.0, time=hm.TimeGrid(0.0, 0.5, 0.05))
    ts = TransientSolver(moving, mu, t, dt, scheme="crank_nicolson")
    assert ts.linear and not ts.fixed_operator
    res = ts.run([1.0])
    assert res.ok and res.operator_setups == 10
    ts.destroy()


def _riccati(comm, dt: float):
    """u_t = u² (+ a diffusion that a uniform state does not feel), u0 = 1, no BCs."""
    msh = mesh.create_unit_square(comm, 2, 2)
    V = fem.functionspace(msh, ("Lagrange", 1))
    mu = hm.Parameters(msh, ["kappa"], [1.0])
    t, dtc = fem.Constant(msh, 0.0), fem.Constant(msh, 1.0)
    u, v = fem.Function(V), ufl.TestFunction(V)
    F = mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - u**2 * v * ufl.dx
    pb = hm.Problem(u=u, F=F, initial=1.0, qoi={"mean": u * ufl.dx},
                    time=hm.TimeGrid(0.0, 4 * dt, dt))
    return TransientSolver(pb, mu, t, dtc, scheme="backward_euler", qoi=pb.qoi)


def test_nonlinear_steps_by_newton():
    """BE for u' = u²: u_{n+1} = (1 − sqrt(1 − 4 dt u_n)) / (2 dt), to 1e-10."""
    ts = _riccati(MPI.COMM_WORLD, 0.05)
    assert not ts.linear
    res = ts.run([1.0])
    assert res.ok, res.reason
    un, expected = 1.0, [1.0]
    for _ in range(4):
        un = (1 - np.sqrt(1 - 4 * 0.05 * un)) / (2 * 0.05)
        expected.append(un)
    np.testing.assert_allclose(res.qoi[:, 0], expected, rtol=1e-10)
    ts.destroy()


def test_failed_step_is_a_failed_sample_with_reason():
    """BE for u' = u² with 4 dt u_n > 1 has no real solution: Newton fails at step 1."""
    ts = _riccati(MPI.COMM_WORLD, 0.3)
    res = ts.run([1.0])
    assert not res.ok and res.steps == 0
    assert res.reason.startswith("step 1 (t = 0.3): DIVERGED"), res.reason
    assert len(res.times) == 1           # only the initial state was output
    ts.destroy()


def test_author_step_residual_equals_hybrid_scheme():
    """A θ-scheme written by the author (u_prev, ctx.dt) gives hybrid's CN to 1e-12."""
    comm = MPI.COMM_WORLD
    pb, mu, t, dt, _ = separable_problem(comm, 1)
    ts = TransientSolver(pb, mu, t, dt, scheme="crank_nicolson", step=0.05)
    ts.run([KAPPA])
    ref = pb.u.x.array.copy()
    ts.destroy()
    V = pb.u.function_space
    u, u_n, v = pb.u, fem.Function(V), ufl.TestFunction(V)
    t_n = t - dt
    x = ufl.SpatialCoordinate(V.mesh)
    X = x[0] * (1 - x[0])

    def r(w, tt):
        g, dg = _g(tt)
        f = X * dg + 2 * mu[0] * g
        return mu[0] * ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx - f * v * ufl.dx

    F = (u - u_n) / dt * v * ufl.dx + 0.5 * r(u, t) + 0.5 * r(u_n, t_n)
    own = hm.Problem(u=u, F=F, bcs=pb.bcs, u_prev=u_n, initial=pb.initial,
                     time=hm.TimeGrid(0.0, 1.0, 0.05))
    ts = TransientSolver(own, mu, t, dt)
    assert ts.scheme == "user" and ts.fixed_operator
    res = ts.run([KAPPA])
    assert res.ok and res.operator_setups == 1
    np.testing.assert_allclose(pb.u.x.array, ref, rtol=0, atol=1e-12)
    ts.destroy()


def test_time_grid_must_be_whole_steps():
    assert time_steps(0.0, 1.0, 0.01) == 100
    with pytest.raises(ValueError, match="whole number of steps"):
        time_steps(0.0, 1.0, 0.03)


def test_outputs_every_k_and_the_last():
    comm = MPI.COMM_WORLD
    pb, mu, t, dt, _ = separable_problem(comm, 1)
    ts = TransientSolver(pb, mu, t, dt, scheme="bdf2", step=0.1, every=3,
                         qoi={"mean": pb.qoi["mean"]})
    res = ts.run([KAPPA], keep_fields=True)
    np.testing.assert_allclose(res.times, [0.0, 0.3, 0.6, 0.9, 1.0])
    np.testing.assert_allclose(res.times, ts.output_times())
    # ∫ X g dx = g(t)/6 (the field is exact in space, BDF2 error ~1e-3 at dt = 0.1)
    np.testing.assert_allclose(res.qoi[:, 0], _g(res.times)[0] / 6, rtol=0, atol=5e-3)
    assert len(res.fields) == 5
    ts.destroy()


def test_hybrid_solve_writes_time_series(tmp_path):
    out = tmp_path / "rod"
    r = run_cli(["solve", ROOT / "cases/heat_rod.toml", "--mu", "0.01", "--out", out])
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "solution.json").read_text())
    assert s["status"] == "ok" and s["time"]["scheme"] == "crank_nicolson"
    assert s["time"]["steps"] == 100 and s["time"]["operator_setups"] == 1
    np.testing.assert_allclose(s["time"]["times"], np.linspace(0, 1, 11))
    assert len(s["qoi"]["mean"]) == 11
    np.testing.assert_allclose(s["qoi"]["mean"], 0.0, atol=1e-12)   # −sin(πx) is odd
    import xml.etree.ElementTree as ET

    import h5py

    grids = [g for g in ET.parse(out / "solution.xdmf").iter("Grid")
             if g.find("Time") is not None]
    times = [float(g.find("Time").get("Value")) for g in grids]
    np.testing.assert_allclose(times, np.linspace(0, 1, 11))
    last = grids[-1].find("Attribute/DataItem").text.split(":")[1]
    with h5py.File(out / "solution.h5", "r") as h5:
        vals = h5[last][()].ravel()
    assert np.isclose(np.max(np.abs(vals)), np.exp(-0.01 * np.pi**2), rtol=1e-4)


def test_transient_case_errors(tmp_path):
    """Observation times off the output grid, a [time] on a steady model, a bad grid: one
    line, exit 2, nothing written."""
    rod_text = (ROOT / "cases/heat_rod.toml").read_text()
    block = (ROOT / "cases/heat_block.toml").read_text().replace("cells = 30", "cells = 6")
    sensors = '\n[observations]\npoints = [[0.5, 0.5]]\n'
    cases = {
        "obs_times": (block + sensors + "times = [0.05]\n", ["campaign"],
                      "observations.times: t = 0.05 is not an output time"),
        "obs_steady": ((ROOT / "cases/thermal_block_2x2.toml").read_text().replace(
            "[observations]", "[observations]\ntimes = [0.1]"), ["campaign"],
            "observation times need a transient model"),
        "flux": (block + sensors + 'fluxes = { left = "x0" }\n', ["campaign"],
                 "boundary fluxes of transient models are not supported"),
        "steady": ((ROOT / "cases/thermal_block_2x2.toml").read_text()
                   + '\n[time]\nscheme = "bdf2"\n', ["solve", "--mu", "1,1,1,1"],
                   "is steady"),
        "grid": (rod_text.replace("dt = 0.01", "dt = 0.03"), ["solve", "--mu", "0.01"],
                 "whole number of steps"),
        "scheme": (rod_text.replace('"crank_nicolson"', '"rk4"'), ["solve", "--mu", "0.01"],
                   "time.scheme"),
    }
    for name, (text, args, msg) in cases.items():
        p = tmp_path / f"{name}.toml"
        for store in ("runs/heat_rod/store", "runs/heat_block/store",
                      "runs/thermal_block_2x2/store"):
            text = text.replace(f'store = "{store}"', f'store = "{tmp_path / name}"')
        p.write_text(text)
        cmd = [args[0], p, *args[1:]]
        if args[0] == "solve":
            cmd += ["--out", tmp_path / f"out_{name}"]
        r = run_cli(cmd)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and msg in lines[0], (name, r.stderr)
        assert not (tmp_path / name).exists()


def test_stationary_case_has_no_time_keys(tmp_path):
    out = tmp_path / "tb"
    r = run_cli(["solve", ROOT / "cases/thermal_block_2x2.toml", "--mu", "1,1,1,1",
                 "--out", out])
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "solution.json").read_text())
    assert "time" not in s and isinstance(s["qoi"]["mean"], float)


def _block_problem(comm, cells=6):
    from hybrid.core.case import parse_case
    from hybrid.fem.model_problem import ModelProblem

    text = (ROOT / "cases/heat_block.toml").read_text().replace("cells = 30", f"cells = {cells}")
    return ModelProblem(parse_case(text, ROOT / "cases/heat_block.toml"), comm)


def test_heat_block_superposition_and_steady_limit():
    """u is linear in (source, u0) jointly: u(s, a) = u(s, 0) + u(0, a) at every output time;
    backward Euler's fixed point is the steady thermal block with the same κ and s."""
    from hybrid.core.case import parse_case
    from hybrid.fem.model_problem import ModelProblem

    comm = MPI.COMM_WORLD
    p = _block_problem(comm)
    assert p.stepper.scheme == "bdf2" and p.stepper.fixed_operator
    kappa = np.linspace(0.2, 1.0, 9)
    runs = [p.solve_transient(np.r_[kappa, s, a], keep_fields=True)
            for s, a in [(3.0, 0.7), (3.0, 0.0), (0.0, 0.7)]]
    assert all(r.ok and r.operator_setups == 2 for r in runs)
    for f, f1, f2 in zip(runs[0].fields, runs[1].fields, runs[2].fields, strict=True):
        np.testing.assert_allclose(f, f1 + f2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(runs[0].qoi, runs[1].qoi + runs[2].qoi, atol=1e-12)
    assert np.isclose(runs[2].qoi[0, 0], 0.7 * 4 / np.pi**2, rtol=5e-2)   # ∫ a sin sin
    p.destroy()
    # long backward-Euler run → steady state
    text = (ROOT / "cases/heat_block.toml").read_text().replace("cells = 30", "cells = 6")
    text = text.replace('"bdf2"', '"backward_euler"').replace("t_end = 0.2", "t_end = 40.0")
    text = text.replace("dt = 0.01", "dt = 2.0")
    p = ModelProblem(parse_case(text, ROOT / "cases/heat_block.toml"), comm)
    r = p.solve_transient(np.r_[kappa, 3.0, 0.7], keep_fields=True)
    steady = (ROOT / "cases/thermal_block.toml").read_text()
    steady = steady.replace("cells = 60", "cells = 6").replace("source = 1.0", "source = 3.0")
    q = ModelProblem(parse_case(steady, ROOT / "cases/thermal_block.toml"), comm)
    assert q.solve(kappa).ok
    ref = q.u.x.array[:q.V.dofmap.index_map.size_local]
    assert np.max(np.abs(r.fields[-1] - ref)) <= 1e-8 * np.max(np.abs(ref))
    p.destroy()
    q.destroy()


def test_gamg_hierarchy_set_up_once():
    from petsc4py import PETSc

    comm = MPI.COMM_WORLD
    pb, mu, t, dt, exact = separable_problem(comm, 2)
    PETSc.Log.begin()
    ev = PETSc.Log.Event("PCSetUp")
    ts = TransientSolver(pb, mu, t, dt, scheme="crank_nicolson", step=0.05,
                         petsc_options={"ksp_type": "cg", "pc_type": "gamg",
                                        "ksp_rtol": 1e-12})
    before = ev.getPerfInfo()["count"]
    res = ts.run([KAPPA])
    assert res.ok and res.operator_setups == 1 and ev.getPerfInfo()["count"] - before == 1
    assert res.iterations > res.steps          # an iterative solve, not preonly
    ts.destroy()
