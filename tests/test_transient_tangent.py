"""Sensitivities of the transient time loop (hybrid/fem/transient_tangent.py) against
independent computations.

The tangent is the exact derivative of the discrete scheme, so it must equal central finite
differences of whole time loops (h = 1e-4·max(1, |μ_p|): truncation ~1e-8 relative, measured
5.8e-9 on the heat block) to 1e-6 relative, for backward Euler, Crank–Nicolson and BDF2 (with
its backward-Euler start), on the heat model (2×2 conductivities, a source and an initial
amplitude as parameters) and on a nonlinear plug-in u_t = ∇·((1+μ0 u²)∇u) + μ1,
u0 = μ2 sin(πx) sin(πy). Independent of differences: u is linear in (s, a) jointly, so
∂u/∂a is the loop at (κ, s = 0, a = 1), to round-off. The adjoint sweep must equal the
tangent's contraction wᵀ J to 1e-10. Set-ups are counted by hybrid and by PETSc's PCSetUp
event: a fixed linear loop does its sensitivities with none. The same run on 2 ranks in
tests/test_transient_tangent_mpi.py.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
import ufl

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.fem import MPI

from .conftest import ROOT

SCHEMES = ["backward_euler", "crank_nicolson", "bdf2"]

from dolfinx import fem, mesh  # noqa: E402  (after hybrid.fem: the wheel's MPI first)
from petsc4py import PETSc  # noqa: E402

from hybrid.fem.transient import TransientSolver  # noqa: E402
from hybrid.fem.transient_tangent import TransientSensitivity  # noqa: E402

MU_HEAT = np.array([0.3, 0.5, 0.7, 0.9, 3.0, 0.6])    # κ_0..3, source, u0
MU_NL = np.array([2.0, 4.0, 1.5])                     # μ0, μ1, amplitude
FD_RTOL = 1e-6


def heat_case_text(scheme: str, cells: int = 6, observations: str = "") -> str:
    """cases/heat_block.toml with 2×2 blocks, 5 steps of 0.02, outputs every 2nd step."""
    text = (ROOT / "cases/heat_block.toml").read_text()
    text = text.replace("cells = 30", f"cells = {cells}").replace("blocks = 3", "blocks = 2")
    text = re.sub(r"kappa_[4-8] = .*\n", "", text)
    text = text.replace('"bdf2"', f'"{scheme}"').replace("t_end = 0.2", "t_end = 0.1")
    text = text.replace("dt = 0.01", "dt = 0.02")
    text = text.replace('qoi = ["mean", "block_mean_4"]', 'qoi = ["mean", "block_mean_0"]')
    return text + observations


def heat_problem(comm, scheme: str, observations: str = ""):
    from hybrid.core.case import parse_case
    from hybrid.fem.model_problem import ModelProblem

    case = parse_case(heat_case_text(scheme, observations=observations),
                      ROOT / "cases/heat_block.toml")
    return ModelProblem(case, comm)


NL_MODEL = '''
import ufl
from dolfinx import fem

import hybrid.model as hm


class NLHeat(hm.Model):
    """u_t = div((1 + mu0 u^2) grad u) + mu1, u = 0 on the boundary, u0 = a sin sin."""

    name = "nl_heat"

    def parameters(self):
        return ["mu0", "mu1", "a"]

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        x = ufl.SpatialCoordinate(ctx.mesh)
        mu = ctx.mu
        F = ((1 + mu[0] * u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) - mu[1] * v) * ufl.dx
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx},
                          initial=mu[2] * ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1]),
                          time=hm.TimeGrid(0.0, 0.1, 0.02),
                          solver={"snes_rtol": 1e-13, "snes_atol": 1e-14})
'''


def nl_problem(comm, tmp_path, scheme: str):
    """The nonlinear plug-in (a file in tmp_path) on a 4×4 unit square through its case."""
    from hybrid.core.case import parse_case
    from hybrid.fem.model_problem import ModelProblem

    (tmp_path / "nl_heat.py").write_text(NL_MODEL)
    text = textwrap.dedent(f"""\
        [case]
        name = "nl_heat"
        [mesh]
        type = "unit_square"
        cells = 4
        [physics]
        model = "nl_heat.py:NLHeat"
        [parameters]
        mu0 = {{ lower = 0.0, upper = 5.0 }}
        mu1 = {{ lower = 0.0, upper = 10.0 }}
        a = {{ lower = 0.0, upper = 2.0 }}
        [time]
        scheme = "{scheme}"
        [outputs]
        store = "{tmp_path / 'store'}"
        qoi = ["mean"]
        every = 2
        """)
    path = tmp_path / "nl_heat.toml"
    path.write_text(text)
    return ModelProblem(parse_case(text, path), comm)


def random_rows(V, m: int = 3, seed: int = 0) -> list[np.ndarray]:
    """m dense random functionals (owned parts), different on every rank."""
    n = V.dofmap.index_map.size_local
    rng = np.random.default_rng(seed + 17 * V.mesh.comm.rank)
    return [rng.standard_normal(n) for _ in range(m)]


def loop_outputs(stepper, rows, mu):
    """One plain loop: (l_i·u(t_j) (n_out, m), QoIs (n_out, n_qoi))."""
    comm = stepper.comm
    res = stepper.run(np.asarray(mu, dtype=float), keep_fields=True)
    assert res.ok, res.reason
    vals = np.array([[comm.allreduce(float(r @ f)) for r in rows] for f in res.fields])
    return vals.reshape(len(res.fields), len(rows)), res.qoi


def central_differences(stepper, rows, mu):
    """Central differences of whole loops, h = 1e-4·max(1, |μ_p|)."""
    mu = np.asarray(mu, dtype=float)
    cols_v, cols_q = [], []
    for p in range(len(mu)):
        h = 1e-4 * max(1.0, abs(mu[p]))
        e = np.zeros_like(mu)
        e[p] = h
        vp, qp = loop_outputs(stepper, rows, mu + e)
        vm, qm = loop_outputs(stepper, rows, mu - e)
        cols_v.append((vp - vm) / (2 * h))
        cols_q.append((qp - qm) / (2 * h))
    return np.stack(cols_v, axis=-1), np.stack(cols_q, axis=-1)


def rel(a, b) -> float:
    """max |a − b| / max |b| (0 for empty arrays)."""
    if np.size(b) == 0:
        assert np.shape(a) == np.shape(b)
        return 0.0
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def check_against_differences(stepper, sens, rows, mu):
    """Tangent = central differences (values, QoIs); values and QoIs = the plain loop."""
    out = sens.run(mu, rows)
    v0, q0 = loop_outputs(stepper, rows, mu)
    np.testing.assert_allclose(out.times, stepper.output_times())
    assert rel(out.values, v0) <= 1e-14 and rel(out.qoi, q0) <= 1e-14
    J, Q = central_differences(stepper, rows, mu)
    assert out.jac.shape == J.shape and out.qoi_jac.shape == Q.shape
    assert rel(out.jac, J) <= FD_RTOL, rel(out.jac, J)
    assert rel(out.qoi_jac, Q) <= FD_RTOL, rel(out.qoi_jac, Q)
    return out


def check_adjoint(sens, rows, mu, out, seed: int = 5):
    """One reverse sweep = wᵀJ + w_qᵀJ_q of the tangent, to 1e-10."""
    comm = sens.comm
    rng = np.random.default_rng(seed)
    w = comm.bcast(rng.standard_normal(out.values.shape))
    wq = comm.bcast(rng.standard_normal(out.qoi.shape))
    tr = sens.solve(mu, rows)
    np.testing.assert_allclose(tr.values, out.values, rtol=0, atol=1e-13)
    g = sens.vjp(w, wq)
    ref = np.einsum("ji,jip->p", w, out.jac) + np.einsum("ji,jip->p", wq, out.qoi_jac)
    assert rel(g, ref) <= 1e-10, (g, ref)
    return g


def pc_setups() -> int:
    return PETSc.Log.Event("PCSetUp").getPerfInfo()["count"]


# --------------------------------------------------------------------------- heat model


@pytest.mark.parametrize("scheme", SCHEMES)
def test_heat_block_tangent_equals_central_differences(scheme):
    comm = MPI.COMM_WORLD
    p = heat_problem(comm, scheme)
    st = p.stepper
    assert st.fixed_operator
    sens = TransientSensitivity(st, qoi={k: p.pb.qoi[k] for k in p.case.qoi})
    rows = random_rows(p.V)
    PETSc.Log.begin()
    before = pc_setups()
    plain = st.run(MU_HEAT)
    loop_setups = pc_setups() - before
    before = pc_setups()
    out = check_against_differences(st, sens, rows, MU_HEAT)
    # zero extra set-ups: hybrid's count and PETSc's agree with the plain loop's
    expected = 2 if scheme == "bdf2" else 1
    assert plain.operator_setups == out.result.operator_setups == loop_setups == expected
    assert out.operator_setups == 0
    assert out.solves == st.n_steps * len(MU_HEAT)
    # superposition (no differences): ∂u/∂a is the loop at (κ, s = 0, a = 1)
    unit = np.r_[MU_HEAT[:4], 0.0, 1.0]
    v1, q1 = loop_outputs(st, rows, unit)
    np.testing.assert_allclose(out.jac[:, :, 5], v1, rtol=0, atol=1e-12 * np.max(np.abs(v1)))
    np.testing.assert_allclose(out.qoi_jac[:, :, 5], q1, rtol=0, atol=1e-12)
    # and PETSc saw no set-up beyond the loop's during the run with sensitivities
    before = pc_setups()
    sens.run(MU_HEAT, rows)
    assert pc_setups() - before == expected
    check_adjoint(sens, rows, MU_HEAT, out)
    assert sens.operator_setups == 0           # the reverse sweep reused the factors too
    sens.destroy()
    p.destroy()


# --------------------------------------------------------------------------- nonlinear


@pytest.mark.parametrize("scheme", SCHEMES)
def test_nonlinear_plugin_tangent_equals_central_differences(scheme, tmp_path):
    """Newton steps: J at the converged u_{n+1}, one set-up per step (forward and reverse)."""
    comm = MPI.COMM_WORLD
    p = nl_problem(comm, tmp_path, scheme)
    st = p.stepper
    assert not st.linear
    sens = TransientSensitivity(st, qoi={"mean": p.pb.qoi["mean"]})
    rows = random_rows(p.V, seed=3)
    out = check_against_differences(st, sens, rows, MU_NL)
    assert out.operator_setups == st.n_steps
    assert np.max(np.abs(out.jac[1:, :, 0])) > 1e-3   # μ0 (the nonlinearity) matters
    check_adjoint(sens, rows, MU_NL, out)
    assert sens.operator_setups == 2 * st.n_steps
    sens.destroy()
    p.destroy()


def test_adjoint_after_a_loop_at_another_mu():
    """solve(μ1), a loop at μ2, vjp: the fixed operators are set up again (once each) at μ1."""
    comm = MPI.COMM_WORLD
    p = heat_problem(comm, "bdf2")
    sens = TransientSensitivity(p.stepper, qoi={k: p.pb.qoi[k] for k in p.case.qoi})
    rows = random_rows(p.V, seed=8)
    out = sens.run(MU_HEAT, rows)
    sens.solve(MU_HEAT, rows)
    p.solve_transient(2 * MU_HEAT)
    w = comm.bcast(np.random.default_rng(1).standard_normal(out.values.shape))
    before = sens.operator_setups
    g = sens.vjp(w)
    assert sens.operator_setups - before == 2          # BDF2's two operators
    ref = np.einsum("ji,jip->p", w, out.jac)
    assert rel(g, ref) <= 1e-10
    sens.destroy()
    p.destroy()


def test_nonlinear_qoi_with_direct_parameter_dependence(tmp_path):
    """q = ∫ μ0 u² dx: dq/dμ = ∂q/∂u·s + ∂q/∂μ, against differences; adjoint agrees."""
    comm = MPI.COMM_WORLD
    p = nl_problem(comm, tmp_path, "bdf2")
    u, mu = p.pb.u, p.mu
    qoi = {"mean": u * ufl.dx, "energy": mu[0] * u**2 * ufl.dx}
    st = TransientSolver(p.pb, mu, p.ctx.t, p.ctx.dt, scheme="bdf2", qoi=qoi, every=2)
    sens = TransientSensitivity(st)
    out = check_against_differences(st, sens, [], MU_NL)
    assert out.values.shape == (len(out.times), 0) and out.jac.shape == (len(out.times), 0, 3)
    check_adjoint(sens, [], MU_NL, out)
    sens.destroy()
    st.destroy()
    p.destroy()


# --------------------------------------------------------------------------- other loops


def moving_problem(comm):
    """u_t = μ0 (1 + t) Δu + μ1 on a 4×4 square, u0 = μ2 x(1−x)y(1−y)·16: J depends on t."""
    msh = mesh.create_unit_square(comm, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    mu = hm.Parameters(msh, ["k", "s", "a"], [1.0, 1.0, 1.0])
    t, dt = fem.Constant(msh, 0.0), fem.Constant(msh, 1.0)
    u, v = fem.Function(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(msh)
    F = (mu[0] * (1 + t) * ufl.inner(ufl.grad(u), ufl.grad(v)) - mu[1] * v) * ufl.dx
    pb = hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                    qoi={"mean": u * ufl.dx},
                    initial=16 * mu[2] * x[0] * (1 - x[0]) * x[1] * (1 - x[1]),
                    time=hm.TimeGrid(0.0, 0.2, 0.05))
    return pb, mu, t, dt


def test_time_dependent_operator():
    """CN with κ(t): J and ∂G/∂u_n change every step; the reverse sweep sets J up per step."""
    comm = MPI.COMM_WORLD
    pb, mu, t, dt = moving_problem(comm)
    qoi = {"mean": pb.u * ufl.dx, "weighted": (1 + t) * pb.u * ufl.dx}   # q(u, t)
    st = TransientSolver(pb, mu, t, dt, scheme="crank_nicolson", qoi=qoi)
    assert st.linear and not st.fixed_operator
    sens = TransientSensitivity(st)
    rows = random_rows(st.V, seed=9)
    m0 = np.array([0.8, 2.0, 0.5])
    out = check_against_differences(st, sens, rows, m0)
    assert out.operator_setups == 0 and out.matrix_assemblies == st.n_steps
    check_adjoint(sens, rows, m0, out)
    assert sens.operator_setups == st.n_steps
    sens.destroy()
    st.destroy()


def test_author_step_residual_has_the_same_tangent():
    """A backward-Euler step written by the author (u_prev) gives hybrid's BE tangent."""
    comm = MPI.COMM_WORLD
    pb, mu, t, dt = moving_problem(comm)
    m0 = np.array([0.8, 2.0, 0.5])
    st = TransientSolver(pb, mu, t, dt, scheme="backward_euler", qoi=pb.qoi)
    sens = TransientSensitivity(st)
    rows = random_rows(st.V, seed=2)
    ref = sens.run(m0, rows)
    sens.destroy()
    st.destroy()
    V = pb.u.function_space
    u_n, v = fem.Function(V), ufl.TestFunction(V)
    F = (pb.u - u_n) / dt * v * ufl.dx + pb.F
    own = hm.Problem(u=pb.u, F=F, bcs=pb.bcs, u_prev=u_n, initial=pb.initial,
                     qoi=pb.qoi, time=pb.time)
    st = TransientSolver(own, mu, t, dt, qoi=pb.qoi)
    assert st.scheme == "user"
    sens = TransientSensitivity(st)
    out = sens.run(m0, rows)
    np.testing.assert_allclose(out.jac, ref.jac, rtol=0, atol=1e-12 * np.max(np.abs(ref.jac)))
    np.testing.assert_allclose(out.qoi_jac, ref.qoi_jac, rtol=0, atol=1e-12)
    sens.destroy()
    st.destroy()


def test_callable_initial_state():
    """A callable u0 is taken as μ-independent (s_0 = 0) and refused if it reads μ."""
    from hybrid.errors import ModelError

    comm = MPI.COMM_WORLD
    pb, mu, t, dt = moving_problem(comm)
    pb.initial = lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])
    st = TransientSolver(pb, mu, t, dt, scheme="backward_euler", qoi=pb.qoi)
    sens = TransientSensitivity(st)
    out = sens.run([0.8, 2.0, 0.5])
    np.testing.assert_array_equal(out.qoi_jac[0], 0.0)
    assert np.all(out.qoi_jac[1:, 0, 2] == 0.0) and np.all(out.qoi_jac[1:, 0, 1] > 0)
    sens.destroy()
    st.destroy()
    pb.initial = lambda x: mu[2].value * np.sin(np.pi * x[0])
    st = TransientSolver(pb, mu, t, dt, scheme="backward_euler", qoi=pb.qoi)
    with pytest.raises(ModelError, match="callable that depends on parameter 'a'"):
        TransientSensitivity(st)
    st.destroy()


# --------------------------------------------------------------------------- ModelProblem


OBSERVATIONS = """
[observations]
points = [[0.3, 0.3], [0.6, 0.7]]
averages = { left = [0.0, 0.0, 0.5, 1.0] }
"""


def test_model_problem_transient_jacobian():
    """The case's sensors and averages (store ordering, scattered): values = L u(t_j), the
    Jacobian = central differences; explicit store-ordered rows give the same."""
    comm = MPI.COMM_WORLD
    p = heat_problem(comm, "bdf2", OBSERVATIONS)
    L = p.observation_rows()
    times, values, jac, qoi, qoi_jac = p.transient_jacobian(MU_HEAT)
    res = p.solve_transient(MU_HEAT, keep_fields=True)
    fields = [p.ordering.gather(f) for f in res.fields]
    if comm.rank == p.ordering.root:
        np.testing.assert_allclose(values, np.array([L @ f for f in fields]), rtol=0,
                                   atol=1e-13)
    np.testing.assert_allclose(qoi, res.qoi, rtol=0, atol=1e-14)
    assert values.shape == (len(times), 3) and qoi_jac.shape == (len(times), 2, 6)
    rows = p._observation_rows_owned()
    J, Q = central_differences(p.stepper, rows, MU_HEAT)
    assert rel(jac, J) <= FD_RTOL and rel(qoi_jac, Q) <= FD_RTOL
    again = p.transient_jacobian(MU_HEAT, L[1:] if L is not None else None)
    np.testing.assert_allclose(again.jac, jac[:, 1:], rtol=0, atol=1e-13)
    p.destroy()


def test_bad_inputs(tmp_path):
    from hybrid.errors import CaseError

    comm = MPI.COMM_WORLD
    # boundary fluxes of a transient model are refused when the problem is built
    with pytest.raises(CaseError, match="boundary fluxes of transient models are not"):
        heat_problem(comm, "backward_euler", '\n[observations]\nfluxes = { west = "x0" }\n')
    p = heat_problem(comm, "backward_euler")
    sens = TransientSensitivity(p.stepper, qoi={k: p.pb.qoi[k] for k in p.case.qoi})
    with pytest.raises(ValueError, match="owned DOFs"):
        sens.run(MU_HEAT, [np.zeros(3)])
    with pytest.raises(ValueError, match="call solve"):
        sens.vjp()
    with pytest.raises(ValueError, match="must be a UFL form"):
        TransientSensitivity(p.stepper)        # ModelProblem's stepper has compiled QoIs
    sens.destroy()
    p.destroy()


def test_iterative_solver_tangents():
    """CG + GAMG (one hierarchy per loop): the tangents solve column by column on it."""
    comm = MPI.COMM_WORLD
    gamg = '\n[solver.petsc]\nksp_type = "cg"\npc_type = "gamg"\nksp_rtol = 1e-13\n'
    p = heat_problem(comm, "crank_nicolson", gamg)
    st = p.stepper
    sens = TransientSensitivity(st, qoi={k: p.pb.qoi[k] for k in p.case.qoi})
    rows = random_rows(p.V, seed=4)
    out = check_against_differences(st, sens, rows, MU_HEAT)
    assert out.result.operator_setups == 1 and out.operator_setups == 0
    assert out.result.iterations > out.result.steps       # iterative, not preonly
    sens.destroy()
    p.destroy()


def test_blocked_and_per_parameter_assembly_agree(tmp_path):
    """∂G/∂μ as one blocked vector (V^P) or one form per parameter: the same tangents."""
    comm = MPI.COMM_WORLD
    p = nl_problem(comm, tmp_path, "crank_nicolson")
    rows = random_rows(p.V, seed=6)
    outs = []
    for blocked in (True, False):
        sens = TransientSensitivity(p.stepper, qoi={"mean": p.pb.qoi["mean"]}, blocked=blocked)
        assert all((st.dG.W is not None) == blocked for st in sens._steps)
        outs.append(sens.run(MU_NL, rows))
        sens.destroy()
    np.testing.assert_allclose(outs[0].jac, outs[1].jac, rtol=0,
                               atol=1e-13 * np.max(np.abs(outs[1].jac)))
    np.testing.assert_allclose(outs[0].qoi_jac, outs[1].qoi_jac, rtol=0, atol=1e-13)
    p.destroy()
