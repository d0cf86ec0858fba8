"""An ionic parameter in μ (``physics.ionic_parameters``), read by the reaction at call time.

(a) Nagumo cable with ``nagumo_a`` in μ: the front speed follows the exact
    c = √(2Dk)(½ − a) at two values of a, both run by one solver built once.
(b) Aliev–Panfilov cable with ``ap_a`` in μ: higher a → slower conduction, and the speed
    ratio follows the bistable front's (½ − a) law (the recovery w is ≈ 0 at the front).
(c) A change of μ (σ and the ionic parameter) between two runs of one built problem gives
    the activation times of a fresh build (MUMPS LU: to round-off), and the diffusion
    operator is reassembled only when σ changed.
(d) Case files: the rule "the case lists exactly Monodomain.parameters()" and its one-line
    refusals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError
from hybrid.fem import MPI
from hybrid.fem.splitting import SplittingSolver, solve_case, value_at
from hybrid.model.library.monodomain import Monodomain

CASES = Path(__file__).resolve().parents[1] / "cases"

from dolfinx import mesh as dmesh  # noqa: E402  (after hybrid.fem: the wheel's MPI first)

LU = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def cable(ionic: str, names: list[str], n: int, length: float, t_end: float, dt: float,
          **settings):
    s = Monodomain.Settings(geometry="cable", ionic=ionic, stimulus_region=[[0.0, 2.0]],
                            ionic_parameters=names[1:], t_end=t_end, dt=dt, **settings)
    msh = dmesh.create_interval(MPI.COMM_WORLD, n, [0.0, length])
    ctx = hm.Context(mesh=msh, comm=msh.comm, settings=s,
                     mu=hm.Parameters(msh, names, np.ones(len(names))))
    pb = Monodomain(s).build(ctx)
    return pb, ctx, SplittingSolver(pb, petsc_options=LU)


def speed(solver, pb, x1: float, x2: float, mu=None, ctx=None) -> tuple[float, object]:
    if mu is not None:
        ctx.mu.assign(mu)
    r = solver.run()
    V = pb.u.function_space
    return (x2 - x1) / (value_at(V, r.activation, [x2]) - value_at(V, r.activation, [x1])), r


NAGUMO = dict(chi=1.0, C_m=1.0, nagumo_k=1.0, stimulus_amplitude=1.0)


def test_nagumo_a_in_mu_follows_the_exact_speed():
    """c = √(2Dk)(½ − a) at a = 0.1 and 0.25 (D = k = 1), one solver; measured 3.7e-5, 1.0e-4."""
    pb, ctx, solver = cable("nagumo", ["sigma", "nagumo_a"], 600, 60.0, 140.0, 0.1, **NAGUMO)
    for a in (0.1, 0.25):
        c, _ = speed(solver, pb, 20.0, 40.0, [1.0, a], ctx)
        exact = np.sqrt(2.0) * (0.5 - a)
        assert abs(c - exact) / exact < 5e-4, (a, c, exact)
    assert solver.operator_setups == 1       # σ unchanged: no reassembly
    solver.destroy()


AP = dict(chi=140.0, C_m=0.01)


def test_ap_a_slows_conduction():
    """Aliev–Panfilov on a 20 mm cable, σ = 0.12 mS/mm: c falls as a rises, ∝ (½ − a).

    The front of v_t = D v_xx − k v(v − a)(v − 1)/T is the Nagumo front (w ≈ 0 ahead of
    it), so c(a1)/c(a2) ≈ (½ − a1)/(½ − a2); measured ratios c(0.1)/c(0.15) = 1.144,
    c(0.15)/c(0.2) = 1.169 against 1.143, 1.167. A parameter that is read once at build (or
    not at all) gives ratio 1.
    """
    pb, ctx, solver = cable("aliev_panfilov", ["sigma", "ap_a"], 200, 20.0, 200.0, 0.1, **AP)
    cs = [speed(solver, pb, 5.0, 15.0, [0.12, a], ctx)[0] for a in (0.1, 0.15, 0.2)]
    solver.destroy()
    assert cs[0] > cs[1] > cs[2] > 0, cs
    for (a1, c1), (a2, c2) in zip(zip((0.1, 0.15), cs[:2], strict=True),
                                  zip((0.15, 0.2), cs[1:], strict=True), strict=True):
        want = (0.5 - a1) / (0.5 - a2)
        assert abs(c1 / c2 - want) < 0.05 * want, (c1 / c2, want)


def test_a_change_of_mu_equals_a_fresh_build():
    names = ["sigma", "ap_a", "ap_k"]
    first, second = [0.12, 0.15, 8.0], [0.2, 0.12, 7.0]
    pb, ctx, solver = cable("aliev_panfilov", names, 80, 10.0, 40.0, 0.2, **AP)
    ctx.mu.assign(first)
    r1 = solver.run()
    ctx.mu.assign(second)
    r2 = solver.run()
    assert (r1.operator_setups, r2.operator_setups) == (2, 3)   # built at σ = 1; σ changed
    solver.destroy()
    pb_f, ctx_f, fresh = cable("aliev_panfilov", names, 80, 10.0, 40.0, 0.2, **AP)
    ctx_f.mu.assign(second)
    rf = fresh.run()
    fresh.destroy()
    assert np.isfinite(rf.activation).sum() > 40
    np.testing.assert_allclose(r2.activation, rf.activation, rtol=0, atol=1e-10)
    np.testing.assert_allclose(r2.w, rf.w, rtol=0, atol=1e-12)
    assert np.nanmax(np.abs(r1.activation - rf.activation)) > 1.0   # μ did matter


def with_param(text: str, physics: str, param: str) -> str:
    """The slab case with lines added to [physics] and a parameter after sigma_t."""
    line = next(ln for ln in text.splitlines() if ln.startswith("sigma_t ="))
    return text.replace("[physics]\n", f"[physics]\n{physics}\n").replace(
        line, f"{line}\n{param}")


def test_case_with_ap_a_in_mu():
    text = (CASES / "monodomain_slab.toml").read_text()
    case = parse_case(with_param(text, 'ionic_parameters = ["ap_a"]',
                                 "ap_a = { lower = 0.1, upper = 0.2 }"), CASES / "x.toml")
    assert case.parameters.names == ["sigma_l", "sigma_t", "ap_a"]
    assert Monodomain(case.physics.settings).parameters() == case.parameters.names


@pytest.mark.parametrize("physics,params,match", [
    ("", "ap_a = { lower = 0.1, upper = 0.2 }",
     r"expects the parameters \['sigma_l', 'sigma_t'\], the case declares"),
    ('ionic_parameters = ["nagumo_a"]', "nagumo_a = { lower = 0.1, upper = 0.2 }",
     r"physics\.ionic_parameters: 'nagumo_a' is not a parameter of ionic model"),
    ('ionic_parameters = ["ap_a"]\nap_a = 0.12', "ap_a = { lower = 0.1, upper = 0.2 }",
     r"physics\.ap_a: is in μ"),
    ('ionic_parameters = ["ap_a"]', "ap_a = { lower = 0.1, upper = 1.2 }",
     r"parameters\.ap_a: ap_a must lie in \(0, 1\)"),
    ('ionic_parameters = ["ap_b"]', "ap_b = { lower = 0.1, upper = 0.2 }",
     r"physics\.ionic_parameters\.0: Input should be"),
])
def test_bad_ionic_parameters_refused_in_one_line(physics, params, match):
    text = (CASES / "monodomain_slab.toml").read_text()
    bad = with_param(text, physics, params)
    with pytest.raises(CaseError, match=match) as err:
        parse_case(bad, CASES / "x.toml")
    assert "\n" not in str(err.value)


def test_solve_case_takes_the_ionic_parameter():
    """solve_case at ap_a = 0.1 and 0.2 on the slab case (20×20 cells, 40 ms): the higher a,
    the later the point (3, 0) mm activates."""
    text = (CASES / "monodomain_slab.toml").read_text()
    text = with_param(text, 'ionic_parameters = ["ap_a"]', "ap_a = { lower = 0.05, upper = 0.3 }")
    text = text.replace("cells = 200", "cells = 20")
    case = parse_case(text, CASES / "x.toml")
    ts = []
    for a in (0.1, 0.2):
        r, V, solver = solve_case(case, MPI.COMM_WORLD, mu=[0.12, 0.03, a], t_end=40.0)
        solver.destroy()
        ts.append(value_at(V, r.activation, [3.0, 0.0]))
    assert np.all(np.isfinite(ts)) and ts[1] > ts[0] + 0.5, ts
    assert load_case(CASES / "monodomain_slab.toml").parameters.names == ["sigma_l", "sigma_t"]


@pytest.mark.parametrize("ode,substeps", [("rk2", 1), ("fe", 3)])
def test_compiled_kernel_equals_the_numpy_step(ode, substeps):
    """ionic_kernel = "c": one R(τ) from a random state (in place), with the stimulus
    switching off inside the step (t_off = 2 ms), equals ode_step on the numpy rhs to
    round-off; rk4 falls back to the numpy path (None)."""
    from hybrid.fem.splitting import ode_step

    kw = dict(ionic_parameters=["ap_a"], ionic_kernel="c", **AP)
    s = Monodomain.Settings(geometry="cable", stimulus_region=[[0.0, 5.0]], **kw)
    msh = dmesh.create_interval(MPI.COMM_SELF, 50, [0.0, 10.0])
    ctx = hm.Context(mesh=msh, comm=msh.comm, settings=s,
                     mu=hm.Parameters(msh, ["sigma", "ap_a"], [0.12, 0.13]))
    pb = Monodomain(s).build(ctx)
    rng = np.random.default_rng(3)
    v, w = rng.uniform(-0.1, 1.1, 51), rng.uniform(0.0, 2.0, (1, 51))
    want = ode_step(pb.reaction, 1.9, 0.3, v, w, ode, substeps)
    vc, wc = v.copy(), w.copy()
    got = pb.reaction_step(1.9, 0.3, vc, wc, ode, substeps)
    assert got[0] is vc and got[1] is wc                       # in place
    np.testing.assert_allclose(vc, want[0], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(wc, want[1], rtol=1e-13, atol=1e-14)
    assert np.max(np.abs(want[0] - v)) > 1e-2                  # the step did something
    ctx.mu.assign([0.12, 0.2])                                 # μ is read at call time
    vc, wc = v.copy(), w.copy()
    pb.reaction_step(1.9, 0.3, vc, wc, ode, substeps)
    np.testing.assert_allclose(vc, ode_step(pb.reaction, 1.9, 0.3, v, w, ode, substeps)[0],
                               rtol=1e-13, atol=1e-14)
    assert pb.reaction_step(1.9, 0.3, v, w, "rk4", 1) is None


def test_compiled_kernel_run_equals_numpy_run():
    pbs = []
    for kernel in ("numpy", "c"):
        pb, ctx, solver = cable("aliev_panfilov", ["sigma"], 80, 10.0, 40.0, 0.2,
                                ionic_kernel=kernel, **AP)
        ctx.mu.assign([0.12])
        pbs.append(solver.run())
        solver.destroy()
    assert np.isfinite(pbs[0].activation).sum() > 40
    np.testing.assert_allclose(pbs[1].activation, pbs[0].activation, rtol=0, atol=1e-9)


def test_compiled_kernel_without_a_compiler_is_one_line(tmp_path, monkeypatch):
    import hybrid.model.library.ionic_c as ic
    from hybrid.errors import ModelError

    monkeypatch.setattr(ic, "_LIB", None)
    monkeypatch.setenv("HYBRID_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(ModelError, match=r"ionic_kernel = 'c': cannot compile .* use "
                                         r"ionic_kernel = 'numpy'") as err:
        ic.library()
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "ionic").glob("*.so"))
