"""Plug-in models through the case, the FEM problem, the store and the surrogate.

Checked against mathematics or independent computations: the stored affine terms solve the
stored fields, tangent-linear Jacobians equal central finite differences, the plug-in thermal
block's store equals the hand-written one's (tests/test_thermal_block_plugin.py),
surrogates answer without the model's code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError, ModelError

from .conftest import ROOT, run_cli

REACTION = '''
import ufl
from dolfinx import fem

import hybrid.model as hm


class Reaction(hm.Model):
    """−∇·(μ0 ∇u) + μ1 u = s, u = 0 on ∂Ω: linear, affine, coercive for μ > 0."""

    name = "reaction_diffusion"

    class Settings(hm.Settings):
        source: float = 1.0

    def parameters(self):
        return 2

    def qoi_names(self):
        return ["mean", "first_moment"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        x = ufl.SpatialCoordinate(ctx.mesh)
        s = fem.Constant(ctx.mesh, self.settings.source)
        F = (ctx.mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) + ctx.mu[1] * u * v
             - s * v) * ufl.dx
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)], coercive=True,
                          qoi={"mean": u * ufl.dx, "first_moment": x[0] * u * ufl.dx})
'''


def _case(model: str, *, cells: int = 8, samples: int = 6, store: str = "store",
          physics: str = "", params: str | None = None, qoi: str = '["mean"]',
          observations: str = "grid = 2\naverages = { centre = [0.25, 0.25, 0.75, 0.75] }",
          ) -> str:
    params = params or ("mu0 = { lower = 0.5, upper = 2.0 }\n"
                        "mu1 = { lower = 0.0, upper = 4.0 }")
    return textwrap.dedent(f"""\
        [case]
        name = "plugin"
        [mesh]
        type = "unit_square"
        cells = {cells}
        [physics]
        model = "{model}"
        {physics}
        [parameters]
        {params}
        [sampling]
        samples = {samples}
        seed = 1
        [outputs]
        store = "{store}"
        qoi = {qoi}
        [observations]
        """) + observations + "\n"


def _reaction_case(tmp_path: Path, **kw) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "rd.py").write_text(textwrap.dedent(REACTION))
    kw.setdefault("params", "mu0 = { lower = 0.5, upper = 2.0 }\n"
                            "mu1 = { lower = 0.1, upper = 4.0 }")
    kw.setdefault("store", str(tmp_path / "store"))
    kw.setdefault("qoi", '["mean", "first_moment"]')
    p = tmp_path / "case.toml"
    p.write_text(_case("models/rd.py:Reaction", **kw))
    return p


def _nd_case(tmp_path: Path, **kw) -> Path:
    kw.setdefault("store", str(tmp_path / "store"))
    kw.setdefault("physics", "source = 5.0")
    p = tmp_path / "nd.toml"
    p.write_text(_case("nonlinear_diffusion", **kw))
    return p


# ---------------------------------------------------------------------------- the case
def test_a_case_names_a_builtin_a_file_or_a_module_plugin(tmp_path):
    import hybrid.model.library.nonlinear_diffusion as ndmod

    c = load_case(_nd_case(tmp_path))
    assert c.physics.plugin and c.physics.name == "nonlinear_diffusion"
    assert c.physics.settings.model_dump() == {"model": "nonlinear_diffusion", "source": 5.0,
                                               "degree": 1}
    sha = hashlib.sha256(Path(ndmod.__file__).read_bytes()).hexdigest()
    assert c.fingerprint()["model"] == {"reference": "nonlinear_diffusion", "sha256": sha}
    rd = load_case(_reaction_case(tmp_path))
    sha_rd = hashlib.sha256((tmp_path / "models" / "rd.py").read_bytes()).hexdigest()
    assert rd.fingerprint()["model"]["sha256"] == sha_rd
    assert rd.physics.name == "reaction_diffusion"
    mod = parse_case(_case("hybrid.model.library.nonlinear_diffusion:NonlinearDiffusion"),
                     tmp_path / "m.toml")
    assert mod.physics.loaded.cls is c.physics.loaded.cls
    # the built-in thermal block is a plug-in too (tests/test_thermal_block_plugin.py)
    from .conftest import small_case_text

    tb = parse_case(small_case_text(), tmp_path / "tb.toml")
    assert tb.physics.plugin and tb.fingerprint()["model"]["reference"] == "thermal_block"


@pytest.mark.parametrize("physics, params, qoi, obs, expect", [
    ("source = 5.0\nwidth = 2", None, '["mean"]', "grid = 2", "physics.width: unknown key"),
    ('source = "hot"', None, '["mean"]', "grid = 2", "physics.source:"),
    ("", "a = { lower = 0.5, upper = 2.0 }", '["mean"]', "grid = 2", "parameters:"),
    ("", None, '["max"]', "grid = 2", "outputs.qoi: unknown quantity 'max'"),
    ("", "mu0 = { lower = -1.0, upper = 2.0 }\nmu1 = { lower = 0.0, upper = 4.0 }",
     '["mean"]', "grid = 2", "parameters.mu0: the diffusivity"),
])
def test_case_errors_of_a_plugin_are_one_line_naming_the_case(tmp_path, physics, params, qoi,
                                                              obs, expect):
    p = tmp_path / "bad.toml"
    p.write_text(_case("nonlinear_diffusion", physics=physics, params=params, qoi=qoi,
                       observations=obs))
    with pytest.raises(CaseError) as info:
        load_case(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: ") and expect in msg and "\n" not in msg, msg


def test_unknown_names_and_broken_model_files(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(_case("navier_stokes"))
    with pytest.raises(CaseError, match="physics.model: unknown physics model 'navier_stokes'"):
        load_case(p)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("raise RuntimeError('boom')\n")
    p.write_text(_case("models/bad.py:Bad", store=str(tmp_path / "store")))
    with pytest.raises(ModelError) as info:
        load_case(p)
    assert str(info.value).startswith(str(tmp_path / "models" / "bad.py"))
    assert "RuntimeError: boom" in str(info.value)
    r = run_cli(["campaign", p, "--no-progress"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.py" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "store").exists()
    # a model whose build fails: found while the campaign sets up, before any sample
    (tmp_path / "models" / "late.py").write_text(textwrap.dedent(REACTION).replace(
        "        V = fem.functionspace", "        1 / 0\n        V = fem.functionspace"))
    p.write_text(_case("models/late.py:Reaction", store=str(tmp_path / "store"),
                       params="a = { lower = 0.5, upper = 2.0 }\nb = { lower = 0.1, upper = 4.0 }"))
    r = run_cli(["campaign", p, "--no-progress"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"hybrid: error: {tmp_path / 'models' / 'late.py'}: "
                                "Reaction.build raised ZeroDivisionError: division by zero")
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------- FEM problem
def _fd(fun, mu, h):
    cols = []
    for k in range(len(mu)):
        e = np.zeros(len(mu))
        e[k] = h
        cols.append((fun(mu + e) - fun(mu - e)) / (2 * h))
    return np.stack(cols, axis=-1)


def test_nonlinear_problem_newton_outputs_and_tangent_linear_jacobians(tmp_path):
    from mpi4py import MPI

    from hybrid.fem.problems import create_problem

    case = load_case(_nd_case(tmp_path))
    p = create_problem(case, MPI.COMM_SELF)
    assert type(p).__name__ == "ModelProblem" and not p.linear
    mu = np.array([0.8, 3.0])
    res = p.solve(mu)
    assert res.ok and res.reason.startswith("CONVERGED_") and res.iterations >= 3, res
    u = p.ordering.gather_function(p.u)
    s = p.static_data()
    # store data against independent facts: ∫1 = 1ᵀM1, K1 = 0, the Dirichlet DOFs are
    # exactly the boundary points, no affine terms for a nonlinear F
    one = np.ones(s.n_dofs)
    assert one @ s.mass @ one == pytest.approx(1.0, rel=1e-12)
    assert np.abs(s.stiffness @ one).max() < 1e-12
    on_bd = np.flatnonzero(np.any((s.points < 1e-12) | (s.points > 1 - 1e-12), axis=1))
    assert np.array_equal(np.sort(s.dirichlet_dofs), on_bd)
    assert np.abs(u[on_bd]).max() == 0.0
    assert s.affine_a == [] and s.affine_f.shape == (0, s.n_dofs)
    rec = p.model_record()
    assert rec["linear"] is False and rec["theta_a"] == [] and not rec["certified"]
    # the QoI row reproduces the assembled QoI; the mean is 1ᵀM u
    assert s.qoi_functionals @ u == pytest.approx(p.qoi(), rel=1e-12)
    assert p.qoi()[0] == pytest.approx(one @ s.mass @ u, rel=1e-12)
    # sensors: u at the cell centres of a 2x2 grid, the average over the centre box
    y = p.observe()
    assert y.shape == (5,) and np.allclose(y, s.observation_functionals @ u, rtol=1e-14)
    # tangent-linear Jacobians = central finite differences of full Newton solves
    J_obs = p.observation_jacobian(mu)
    J_q = p.qoi_jacobian(mu)

    def outputs(m):
        assert p.solve(m).ok
        return np.concatenate([p.observe(), p.qoi()])

    fd = _fd(outputs, mu, 1e-5)
    assert np.all(np.abs(J_obs).max(axis=0) > 1e-4)          # both parameters matter
    assert np.allclose(np.vstack([J_obs, J_q]), fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())
    assert not np.allclose(J_obs[:, 1], 0.0)
    p.destroy()


LIFTED = """
import ufl
from dolfinx import fem

import hybrid.model as hm


class Lifted(hm.Model):
    \"\"\"−∇·((μ0 + μ1 u²) ∇u) = 0 with u = 1 + x on ∂Ω: the tangent is zero there, u is not.\"\"\"

    name = "lifted"

    def parameters(self):
        return 2

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        x = ufl.SpatialCoordinate(ctx.mesh)
        F = ufl.inner((ctx.mu[0] + ctx.mu[1] * u**2) * ufl.grad(u), ufl.grad(v)) * ufl.dx \\
            - ctx.mu[0] * x[1] * v * ufl.dx
        bc = hm.dirichlet_on_boundary(V, lambda p: 1.0 + p[0])
        return hm.Problem(u=u, F=F, bcs=[bc], qoi={"mean": u * ufl.dx})
"""


def test_tangent_linear_with_a_nonzero_dirichlet_value(tmp_path):
    """δu_q = 0 on the boundary although u = 1 + x there: central FD of Newton solves."""
    from mpi4py import MPI

    from hybrid.fem.problems import create_problem

    (tmp_path / "lifted.py").write_text(LIFTED)
    path = tmp_path / "c.toml"
    path.write_text(_case("lifted.py", observations="points = [[0.3, 0.6], [0.8, 0.2]]"))
    p = create_problem(load_case(path), MPI.COMM_SELF)
    mu = np.array([0.9, 1.5])
    assert p.solve(mu).ok
    J = np.vstack([p.observation_jacobian(mu), p.qoi_jacobian(mu)])

    def outputs(m):
        assert p.solve(m).ok
        return np.concatenate([p.observe(), p.qoi()])

    fd = _fd(outputs, mu, 1e-5)
    assert np.abs(fd).min() > 1e-4
    assert np.allclose(J, fd, rtol=1e-6), (J, fd)
    p.destroy()


def test_linear_plugin_stores_affine_terms_that_solve_its_fields(tmp_path):
    from mpi4py import MPI

    from hybrid.core.theta import AffineCoefficients
    from hybrid.fem.problems import create_problem

    case = load_case(_reaction_case(tmp_path))
    p = create_problem(case, MPI.COMM_SELF)
    assert p.linear
    s = p.static_data()
    rec = p.model_record()
    assert rec["linear"] and rec["affine"] and rec["certified"], rec
    assert sorted(json.dumps(t) for t in rec["theta_a"]) == ['{"mu": 0}', '{"mu": 1}']
    assert rec["theta_f"] == [1.0] and len(s.affine_a) == 2 and s.affine_f.shape[0] == 1
    coef = AffineCoefficients.from_record(json.loads(json.dumps(rec)), 2)
    mu = np.array([1.3, 2.7])
    assert p.solve(mu).ok
    u = p.ordering.gather_function(p.u)
    # the stored A(μ) = Σ θ_q A_q and f(μ) = Σ ϑ_q f_q solve the stored field off the boundary
    A = sum(t * Aq for t, Aq in zip(coef.theta_a(mu), s.affine_a, strict=True))
    f = coef.theta_f(mu) @ s.affine_f
    free = np.setdiff1d(np.arange(s.n_dofs), s.dirichlet_dofs)
    r = (A @ u - f)[free]
    assert np.abs(r).max() < 1e-12 * np.abs(f).max()
    # and A_0 = K, A_1 = M (whichever θ is which)
    by = {json.dumps(t): Aq for t, Aq in zip(rec["theta_a"], s.affine_a, strict=True)}
    assert abs(by['{"mu": 0}'] - s.stiffness).max() < 1e-13
    assert abs(by['{"mu": 1}'] - s.mass).max() < 1e-13
    assert np.allclose(s.qoi_functionals @ u, p.qoi(), rtol=1e-12)
    # tangent linear, linear F: A(μ) δu_q = −A_q u, checked against the stored matrices
    Jq = p.qoi_jacobian(mu)
    Ad = A.tolil()
    for i in s.dirichlet_dofs:
        Ad[i, :] = 0.0
        Ad[i, i] = 1.0
    import scipy.sparse.linalg as sla

    for q, key in enumerate(['{"mu": 0}', '{"mu": 1}']):
        rhs = -(by[key] @ u)
        rhs[s.dirichlet_dofs] = 0.0
        du = sla.spsolve(Ad.tocsc(), rhs)
        assert np.allclose(s.qoi_functionals @ du, Jq[:, q], rtol=1e-9)
    p.destroy()


# ---------------------------------------------------------------------------- store, surrogate
NO_MODEL_CODE = """
import sys, json
import numpy as np
from hybrid.core.store import SnapshotStore
from hybrid.surrogate.surrogate import Surrogate
st = SnapshotStore(sys.argv[1])
mu, U = st.snapshots()
s = Surrogate.load(sys.argv[2])
c = s.predict(mu[0])
e = s.error_estimate(mu[0], relative=False)
bad = [m for m in sys.modules if m.startswith(("dolfinx", "hybrid_model_", "ufl"))]
print(json.dumps({"n": len(mu), "err": float(np.linalg.norm(s.field(mu[0]) - U[0])),
                  "bound": float(e), "bad": bad}))
"""


def test_store_and_surrogate_carry_theta_and_never_import_the_model(tmp_path):
    from mpi4py import MPI

    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.workflows.campaign import run_campaign

    path = _reaction_case(tmp_path, samples=10)
    case = load_case(path)
    r = run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False)
    assert r.ok == 10
    st = SnapshotStore(tmp_path / "store")
    m = st.manifest["model"]
    assert m["reference"] == "models/rd.py:Reaction" and m["certified"]
    assert m["sha256"] == hashlib.sha256((tmp_path / "models" / "rd.py").read_bytes()
                                         ).hexdigest()
    assert m["settings"] == {"model": "models/rd.py:Reaction", "source": 1.0}
    sur, _ = build_surrogate(st.path, BuildOptions(kind="galerkin", modes=3))
    assert sur.meta["affine"] and sur.meta["model"] == m and sur.estimator is not None
    sur.save(tmp_path / "sur")
    # the rigorous bound holds at a held-out μ (energy norm at μ_ref), FEM as the truth
    from hybrid.fem.problems import create_problem
    from hybrid.surrogate.reductor import inner_product

    p = create_problem(case, MPI.COMM_SELF)
    mu = np.array([1.7, 0.3])
    assert p.solve(mu).ok
    u = p.ordering.gather_function(p.u)
    p.destroy()
    X = inner_product(st.static, "energy", sur.estimator.theta_ref)
    e = u - sur.field(mu)
    err = float(np.sqrt(e @ (X @ e)))
    bound = float(sur.error_estimate(mu, relative=False))
    assert 0 < err <= bound <= 50 * err, (err, bound)
    # the model file now raises on import: store and surrogate still load and answer
    (tmp_path / "models" / "rd.py").write_text("raise RuntimeError('model code ran')\n")
    out = subprocess.run([sys.executable, "-c", NO_MODEL_CODE, str(st.path),
                          str(tmp_path / "sur")], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["n"] == 10 and res["bad"] == [] and res["bound"] >= res["err"] * 0.999


def test_a_changed_model_file_refuses_the_resume(tmp_path):
    path = _reaction_case(tmp_path, samples=3)
    r = run_cli(["campaign", path, "--no-progress"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = sorted(p.name for p in (tmp_path / "store" / "samples").iterdir())
    model = tmp_path / "models" / "rd.py"
    model.write_text(model.read_text().replace("s * v", "2.0 * s * v"))
    r = run_cli(["campaign", path, "--no-progress", "--samples", "5"], cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "changed since the store was made" in lines[0], r.stderr
    assert "models/rd.py:Reaction" in lines[0]
    assert sorted(p.name for p in (tmp_path / "store" / "samples").iterdir()) == before


# ---------------------------------------------------------------------------- the case file
def test_nonlinear_case_campaign_serial_and_two_ranks_train_and_fem_confirmed_map(tmp_path):
    from hybrid.core.store import SnapshotStore

    text = (ROOT / "cases" / "nonlinear_diffusion.toml").read_text()
    assert load_case(ROOT / "cases" / "nonlinear_diffusion.toml").physics.plugin
    text = text.replace("cells = 32", "cells = 8").replace("grid = 3", "grid = 2")
    path = tmp_path / "nd.toml"
    path.write_text(text)
    args = ["campaign", path, "--samples", "10", "--no-progress"]
    r1 = run_cli([*args, "--store", tmp_path / "s1"], cwd=tmp_path)
    r2 = run_cli([*args, "--store", tmp_path / "s2", "--ranks-per-sample", "2"], ranks=2,
                 cwd=tmp_path)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    s1, s2 = SnapshotStore(tmp_path / "s1"), SnapshotStore(tmp_path / "s2")
    (m1, U1), (m2, U2) = s1.snapshots(), s2.snapshots()
    assert U1.shape == (10, 81) and np.array_equal(m1, m2)
    assert {s.ranks for s in s2.samples()} == {2}      # each sample solved on 2 ranks
    assert np.abs(U1 - U2).max() <= 1e-10 * np.abs(U1).max()   # partition-independent
    assert {s.reason for s in s1.samples()} <= {"CONVERGED_FNORM_ABS", "CONVERGED_FNORM_RELATIVE",
                                                "CONVERGED_SNORM_RELATIVE"}
    assert min(s.iterations for s in s1.samples()) >= 2
    assert s1.manifest["model"]["theta_a"] == [] and s1.static.affine_a == []
    r = run_cli(["train", tmp_path / "s1", "-o", tmp_path / "sur", "--epochs", "200",
                 "--lbfgs", "200", "--width", "16", "--depth", "2", "--no-plots",
                 "--no-progress"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "physics-informed term was skipped" in r.stdout
    meta = json.loads((tmp_path / "sur" / "surrogate.json").read_text())
    assert meta["affine"] is False and meta["training"]["physics_informed"] is False
    r = run_cli(["synth", path, "--mu", "1.2,2.5", "--out", tmp_path / "y.csv", "--noise",
                 "1e-4"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(["infer", path, "--surrogate", tmp_path / "sur", "--data", tmp_path / "y.csv",
                 "--method", "map", "--starts", "4", "--no-plots", "--no-enrich",
                 "-o", tmp_path / "inf"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "inf" / "summary.json").read_text())
    est = np.array([s["estimate"]["mu0"], s["estimate"]["mu1"]])
    assert np.allclose(est, [1.2, 2.5], rtol=0.05), est
    assert s["misfit"]["chi2_fem"] < 20 and s["fem"]["solves"] >= 1


def test_a_certified_plugin_trains_physics_informed_with_torch_theta(tmp_path):
    """θ trees in torch: the physics-informed term runs and the bound's gradient = FD."""
    import torch
    from mpi4py import MPI

    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig
    from hybrid.workflows.campaign import run_campaign

    case = load_case(_reaction_case(tmp_path, samples=12))
    assert run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False).ok == 12
    cfg = TrainingConfig(width=16, depth=2, adam_epochs=100, lbfgs_iterations=100,
                         collocation=64)
    s, _ = build_surrogate(tmp_path / "store", BuildOptions(kind="pod-nn", modes=4,
                                                            training=cfg))
    assert s.meta["training"]["physics_informed"] and s.meta["pod"]["inner_product"] == "energy"
    mu = np.array([1.1, 2.0])
    m = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    e = s.error_estimate(m, relative=False)
    e.backward()
    assert float(e.detach()) == pytest.approx(s.error_estimate(mu, relative=False), rel=1e-10)
    fd = _fd(lambda x: np.array([s.error_estimate(x, relative=False)]), mu, 1e-6)[0]
    assert np.allclose(m.grad.numpy(), fd, rtol=1e-4), (m.grad, fd)
