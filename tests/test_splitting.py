"""The operator-splitting loop (hybrid/fem/splitting.py) against mathematics.

- the pointwise ODE integrators have their orders (fe 1, rk2 2, rk4 4) on dv/dt = −v,
  dw/dt = v − w (exact: v = e^{−t}, w = t e^{−t});
- activation times are the linear interpolation inside the step, not the step index;
- with no reaction, the diffusion step is the θ-scheme: the cosine mode of the no-flux
  cable decays as the exact e^{−Dπ²t/L²} with order 1 (Godunov, θ = 1) and 2 (Strang, θ = ½);
- a logistic reaction v' = v(1 − v) with diffusion of a constant state (K v = 0) is the
  ODE alone: the split step is the ODE integrator, compared with the exact logistic curve;
- bad input is refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import ufl

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.errors import ModelError, SolveFailed
from hybrid.fem import MPI
from hybrid.fem.splitting import SplittingSolver, crossing_times, ode_step
from hybrid.model import TimeGrid
from hybrid.model.reaction import ReactionDiffusion

LU = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}

from dolfinx import fem  # noqa: E402  (after hybrid.fem: the wheel's MPI first)
from dolfinx import mesh as dmesh  # noqa: E402


def _linear_rhs(t, v, w):
    return -v, (v - w)


@pytest.mark.parametrize("scheme,order", [("fe", 1), ("rk2", 2), ("rk4", 4)])
def test_ode_orders(scheme, order):
    errs = []
    for m in (10, 20, 40):
        v, w = ode_step(_linear_rhs, 0.0, 1.0, np.ones(3), np.zeros((1, 3)), scheme, m)
        errs.append(max(abs(v[0] - np.exp(-1.0)), abs(w[0, 0] - np.exp(-1.0))))
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(rates - order) < 0.15), (errs, rates)


def test_crossing_times_interpolate_inside_the_step():
    v_old = np.array([0.0, 0.4, 0.6, 0.2])
    v_new = np.array([1.0, 0.45, 0.9, 0.5])
    idx, tc = crossing_times(2.0, 0.5, v_old, v_new, 0.5)
    assert idx.tolist() == [0, 3]           # 1: stays below; 2: already above (not upward)
    np.testing.assert_allclose(tc, [2.0 + 0.5 * 0.5, 2.0 + 0.5 * 1.0], rtol=0, atol=1e-15)


def _cable(n, dt, t_end, reaction, initial, D=1.0, L=1.0):
    msh = dmesh.create_interval(MPI.COMM_WORLD, n, [0.0, L])
    V = fem.functionspace(msh, ("Lagrange", 2))
    u, phi = fem.Function(V), ufl.TestFunction(V)
    F = D * ufl.inner(ufl.grad(u), ufl.grad(phi)) * ufl.dx
    nloc = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
    return ReactionDiffusion(u=u, F=F, initial=initial, time=TimeGrid(0.0, t_end, dt),
                             reaction=reaction, states0=np.zeros((0, nloc)))


def _none(t, v, w):
    return 0.0 * v, w


@pytest.mark.parametrize("splitting,order", [("godunov", 1), ("strang", 2)])
def test_diffusion_step_is_the_theta_scheme(splitting, order):
    """v = cos(πx) e^{−π² t}: the time error of the step has the scheme's order."""
    errs = []
    for dt in (0.01, 0.005, 0.0025):
        pb = _cable(64, dt, 0.1, _none, lambda x: np.cos(np.pi * x[0]))
        r = SplittingSolver(pb, splitting, petsc_options=LU).run()
        x = pb.u.function_space.tabulate_dof_coordinates()[: r.v.size, 0]
        exact = np.cos(np.pi * x) * np.exp(-np.pi ** 2 * 0.1)
        err = MPI.COMM_WORLD.allreduce(float(np.max(np.abs(r.v - exact))), op=MPI.MAX)
        errs.append(err)
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(rates - order) < 0.15), (errs, rates)


@pytest.mark.parametrize("ode,order", [("fe", 1), ("rk2", 2)])
def test_reaction_alone_is_the_ode(ode, order):
    """v' = v(1 − v), v(0) = 0.1, spatially constant: v = 1/(1 + 9 e^{−t})."""
    def logistic(t, v, w):
        return v * (1.0 - v), w
    errs = []
    for dt in (0.1, 0.05, 0.025):
        pb = _cable(8, dt, 2.0, logistic, 0.1)
        r = SplittingSolver(pb, "godunov", ode=ode, petsc_options=LU).run()
        errs.append(float(np.max(np.abs(r.v - 1.0 / (1.0 + 9.0 * np.exp(-2.0))))))
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(rates - order) < 0.15), (errs, rates)


def test_bad_inputs_are_refused():
    pb = _cable(8, 0.1, 1.0, _none, 0.0)
    with pytest.raises(ModelError, match="splitting must be one of"):
        SplittingSolver(pb, "lie")
    with pytest.raises(ModelError, match="ode must be one of"):
        SplittingSolver(pb, "strang", ode="euler")
    with pytest.raises(ModelError, match="whole number of steps"):
        SplittingSolver(pb, "strang", dt=0.3)
    with pytest.raises(ModelError, match="theta must lie"):
        SplittingSolver(pb, "strang", theta=0.2)
    v, phi = pb.u, pb.F.arguments()[0]
    pb.F = pb.F - phi * ufl.dx
    with pytest.raises(ModelError, match="no source"):
        SplittingSolver(pb, "strang")
    pb.F = v * v * phi * ufl.dx
    with pytest.raises(ModelError, match="linear in v"):
        SplittingSolver(pb, "strang")


def test_blow_up_is_reported_with_the_step():
    def explode(t, v, w):
        return 1e3 * v * v, w
    pb = _cable(8, 1.0, 20.0, explode, 1.0)
    with pytest.raises(SolveFailed, match=r"step \d+ \(t = .*\): v is not finite"):
        with np.errstate(over="ignore", invalid="ignore"):
            SplittingSolver(pb, "godunov", ode="fe", petsc_options=LU).run()


@pytest.mark.parametrize("scheme", ["fe", "rk2"])
def test_a_rhs_that_returns_its_input_is_not_corrupted(scheme):
    """dw/dt = w written as ``return ..., w``: the in-place combinations must not touch w."""
    v, w = np.ones(4), np.full((1, 4), 2.0)
    got = ode_step(lambda t, v, w: (-v, w), 0.0, 0.1, v, w, scheme, 3)
    want = ode_step(lambda t, v, w: (-v, w.copy()), 0.0, 0.1, v, w, scheme, 3)
    np.testing.assert_array_equal(w, 2.0)
    np.testing.assert_array_equal(v, 1.0)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-15)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-15)


def test_a_rhs_may_return_a_scalar_rate():
    v, w = np.zeros(3), np.zeros((1, 3))
    got = ode_step(lambda t, v, w: (1.0, 0.0), 0.0, 0.5, v, w, "rk2", 2)
    np.testing.assert_allclose(got[0], 0.5, rtol=1e-15)
    np.testing.assert_array_equal(got[1], 0.0)
