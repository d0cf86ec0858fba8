"""What hybrid derives from a UFL residual: linearity, ∂F/∂μ, affine terms, coercivity."""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.core import theta as th


def _space(n=6):
    from dolfinx import fem, mesh
    from mpi4py import MPI

    msh = mesh.create_unit_square(MPI.COMM_WORLD, n, n)
    return msh, fem.functionspace(msh, ("Lagrange", 1))


def _assemble(form):
    from dolfinx import fem
    from dolfinx.fem import petsc as fem_petsc
    from petsc4py import PETSc

    b = fem_petsc.assemble_vector(fem.form(form))
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    return b


def _randomise(u, seed):
    rng = np.random.default_rng([seed, u.function_space.mesh.comm.rank])
    u.x.array[:] = rng.uniform(-1, 1, u.x.array.size)
    u.x.scatter_forward()


def _exp_residual(n=6):
    """θ's with exp, products and quotients: exp(μ0), μ0μ1, μ1²/(1+μ0), μ2, μ1μ2 (and 1)."""
    import ufl
    from dolfinx import fem

    msh, V = _space(n)
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["a", "b", "c"])
    x = ufl.SpatialCoordinate(msh)
    s = fem.Constant(msh, 0.7)
    F = (ufl.exp(mu[0]) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
         + mu[0] * mu[1] * u * v * ufl.dx
         - mu[1] ** 2 / (1 + mu[0]) * v * ufl.ds
         + mu["c"] * (2 * mu["b"] + x[0]) * v * ufl.dx
         - s * v * ufl.dx)
    return F, u, mu


def _model(ref, msh, table=None):
    lm = hm.load_model(ref)
    return lm.build(lm.instantiate(table or {}), msh)


def _independent_reassembly(F, u, mu, decomp, seed):
    """‖F − Σ θ_q F_q‖/‖F‖ with each F_q assembled on its own (not the checker's one form)."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.3, 1.7, len(mu))
    mu.assign(m)
    _randomise(u, seed)
    ref = _assemble(F)
    total = ref.duplicate()
    total.set(0.0)
    for t in decomp.terms:
        total.axpy(float(th.evaluate(t.theta, m)), _assemble(t.form))
    total.axpy(-1.0, ref)
    return total.norm() / ref.norm()


# ---------------------------------------------------------------------------- linearity
def test_linearity_of_a_linear_a_nonlinear_and_a_time_step_residual():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import is_linear

    msh, _ = _space()
    tb, _ = _model("thermal_block", msh, {"blocks": 2})
    nd, _ = _model("nonlinear_diffusion", msh)
    assert is_linear(tb.F, tb.u)
    assert not is_linear(nd.F, nd.u)
    V = tb.u.function_space
    u, u_n, v = fem.Function(V), fem.Function(V), ufl.TestFunction(V)
    dt, theta, t = fem.Constant(msh, 0.1), 0.5, fem.Constant(msh, 0.3)
    x = ufl.SpatialCoordinate(msh)

    def a(w):
        return ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx

    def f(time):
        return ufl.sin(time) * x[0] * v * ufl.dx

    step = ((u - u_n) / dt * v * ufl.dx + theta * a(u) + (1 - theta) * a(u_n)
            - theta * f(t) - (1 - theta) * f(t - dt))
    assert is_linear(step, u)
    assert not is_linear(step + u**3 * v * ufl.dx, u)
    assert not is_linear(ufl.exp(u) * v * ufl.dx, u)


# ---------------------------------------------------------------------------- affine terms
def test_thermal_block_affine_terms_reassemble_F():
    from hybrid.fem.analysis import affine_decomposition

    msh, _ = _space(8)
    pb, ctx = _model("thermal_block", msh, {"blocks": 2, "source": 2.0})
    d = affine_decomposition(pb.F, pb.u, ctx.mu)
    assert d.affine and d.linear and d.error <= 1e-12
    assert sorted(th.dumps(t) for t in d.thetas) == sorted(
        ['{"mu":0}', '{"mu":1}', '{"mu":2}', '{"mu":3}', "1.0"])
    assert [th.dumps(t) for t in d.theta_a] == ['{"mu":0}', '{"mu":1}', '{"mu":2}', '{"mu":3}']
    assert [th.dumps(t) for t in d.theta_f] == ["1.0"]
    for seed in (11, 12, 13):
        assert _independent_reassembly(pb.F, pb.u, ctx.mu, d, seed) <= 1e-12


def test_nonlinear_diffusion_affine_terms_reassemble_F():
    from hybrid.fem.analysis import affine_decomposition

    msh, _ = _space(8)
    pb, ctx = _model("nonlinear_diffusion", msh)
    d = affine_decomposition(pb.F, pb.u, ctx.mu)
    assert d.affine and d.linear is False and d.error <= 1e-12
    assert sorted(th.dumps(t) for t in d.thetas) == ['1.0', '{"mu":0}', '{"mu":1}']
    assert d.a == [] and d.f == []  # only for linear F
    for seed in (21, 22, 23):
        assert _independent_reassembly(pb.F, pb.u, ctx.mu, d, seed) <= 1e-12


def test_exp_product_quotient_thetas_are_derived_and_reassemble_F():
    from hybrid.fem.analysis import affine_decomposition

    F, u, mu = _exp_residual()
    d = affine_decomposition(F, u, mu)
    assert d.affine, d.reason
    assert d.error <= 1e-12
    expected = [{"exp": {"mu": 0}}, {"mul": [{"mu": 1}, {"mu": 0}]},
                {"div": [{"pow": [{"mu": 1}, 2]}, {"add": [{"mu": 0}, 1]}]},
                {"mu": 2}, {"mul": [{"mu": 2}, {"mu": 1}]}, 1.0]
    assert sorted(th.dumps(t) for t in d.thetas) == sorted(th.dumps(t) for t in expected)
    for seed in (31, 32, 33):
        assert _independent_reassembly(F, u, mu, d, seed) <= 1e-12


def test_a_moving_gaussian_source_is_not_affine():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import affine_decomposition

    msh, V = _space()
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["x0", "y0"])
    x = ufl.SpatialCoordinate(msh)
    g = ufl.exp(-((x[0] - mu[0]) ** 2 + (x[1] - mu[1]) ** 2) / 0.02)
    F = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g * v * ufl.dx
    d = affine_decomposition(F, u, mu)
    assert d.affine is False and d.linear is True
    assert "not a polynomial" in d.reason and "\n" not in d.reason
    lap = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    d = affine_decomposition(lap - ufl.sin(mu[0]) * v * ufl.dx, u, mu)
    assert d.affine is False and "Sin" in d.reason


def test_a_parameter_hidden_in_a_condition_is_caught_by_the_reassembly_check():
    """UFL does not differentiate conditions: the expansion alone would call this affine."""
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import affine_decomposition

    msh, V = _space()
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["x0"])
    x = ufl.SpatialCoordinate(msh)
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
         - ufl.conditional(ufl.lt(x[0], mu[0]), 1.0, 0.0) * v * ufl.dx)
    d = affine_decomposition(F, u, mu, ([0.2], [0.8]))
    assert d.affine is False and "differs from F" in d.reason and d.error > 1e-3


def test_derivatives_in_mu_match_central_finite_differences():
    from hybrid.fem.analysis import parameter_derivatives

    F, u, mu = _exp_residual()
    dF = parameter_derivatives(F, mu)
    m = np.array([0.4, 1.3, 0.8])
    _randomise(u, 5)
    h = 1e-5
    for q in range(3):
        mu.assign(m)
        exact = _assemble(dF[q])
        e = np.zeros(3)
        e[q] = h
        mu.assign(m + e)
        fp = _assemble(F)
        mu.assign(m - e)
        fm = _assemble(F)
        fd = (fp - fm) / (2 * h)
        assert (fd - exact).norm() <= 1e-7 * exact.norm(), q
    import ufl

    from hybrid.fem.analysis import parameter_derivative

    msh, _ = _space()
    pb, ctx = _model("nonlinear_diffusion", msh)
    v = pb.F.arguments()[0]
    _randomise(pb.u, 6)
    d1 = _assemble(parameter_derivative(pb.F, ctx.mu["mu1"]))
    ref = _assemble(ufl.inner(pb.u**2 * ufl.grad(pb.u), ufl.grad(v)) * ufl.dx)
    assert (d1 - ref).norm() <= 1e-14 * ref.norm()


def test_user_affine_terms_are_checked():
    import ufl

    from hybrid.fem.analysis import user_affine

    msh, _ = _space()
    pb, ctx = _model("nonlinear_diffusion", msh)
    u, v, mu = pb.u, pb.F.arguments()[0], ctx.mu
    a0 = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    a1 = ufl.inner(u**2 * ufl.grad(u), ufl.grad(v)) * ufl.dx
    f = -1.0 * v * ufl.dx
    good = user_affine(pb.F, u, mu, [(mu["mu0"], a0), (mu["mu1"], a1), (1.0, f)])
    assert good.affine and good.source == "user" and good.error <= 1e-12
    missing = user_affine(pb.F, u, mu, [(mu["mu0"], a0), (mu["mu1"], a1)])
    assert not missing.affine and "differs from F" in missing.reason
    wrong = user_affine(pb.F, u, mu, [(mu["mu0"], a0), (mu["mu0"], a1), (1.0, f)])
    assert not wrong.affine
    tree = user_affine(pb.F, u, mu, [({"mu": 0}, a0), ({"mu": 1}, a1), (1.0, f)])
    assert tree.affine
    impure = user_affine(pb.F, u, mu, [(1.0, mu["mu0"] * a0), (mu["mu1"], a1), (1.0, f)])
    assert not impure.affine and "free of the parameters" in impure.reason


# The derived thermal-block terms against the former hand-written matrices: the stored
# reference arrays of tests/test_thermal_block_plugin.py (tests/data/thermal_block_reference.npz).


# ---------------------------------------------------------------------------- coercivity
def test_coercivity_certificate_holds_for_the_thermal_block():
    from hybrid.fem.analysis import affine_decomposition, coercivity_certificate

    msh, _ = _space(6)
    pb, ctx = _model("thermal_block", msh, {"blocks": 2})
    d = affine_decomposition(pb.F, pb.u, ctx.mu)
    cert = coercivity_certificate(d, ([0.1] * 4, [1.0] * 4))
    assert cert.ok, cert.reasons
    assert min(cert.theta_lower) > 0 and max(cert.asymmetry) <= 1e-14
    assert min(cert.min_eigenvalue) >= -1e-12  # PSD: singular (constants), not negative
    bad = coercivity_certificate(d, ([0.0, 0.1, 0.1, 0.1], [1.0] * 4))
    assert not bad.ok and "θ_0" in bad.reasons[0]


def test_coercivity_certificate_fails_for_indefinite_and_nonsymmetric_terms():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import affine_decomposition, coercivity_certificate

    msh, V = _space(6)
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["k", "c", "b"])
    F = (mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - mu[1] * u * v * ufl.dx
         - v * ufl.dx)
    d = affine_decomposition(F, u, mu)
    cert = coercivity_certificate(d, ([0.1] * 3, [1.0] * 3))
    assert not cert.ok and any("positive semi-definite" in r for r in cert.reasons)
    beta = ufl.as_vector([1.0, 0.5])
    G = (mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
         + mu[2] * ufl.dot(beta, ufl.grad(u)) * v * ufl.dx - v * ufl.dx)
    cert = coercivity_certificate(affine_decomposition(G, u, mu), ([0.1] * 3, [1.0] * 3))
    assert not cert.ok and any("not symmetric" in r for r in cert.reasons)


@pytest.mark.mpi(min_size=2)
def test_affine_terms_and_certificate_on_two_ranks():
    from mpi4py import MPI

    from hybrid.fem.analysis import affine_decomposition, coercivity_certificate

    msh, V = _space(8)
    assert MPI.COMM_WORLD.size >= 2
    assert V.dofmap.index_map.size_local < V.dofmap.index_map.size_global
    pb, ctx = _model("thermal_block", msh, {"blocks": 2})
    d = affine_decomposition(pb.F, pb.u, ctx.mu)
    assert d.affine and d.error <= 1e-12
    assert _independent_reassembly(pb.F, pb.u, ctx.mu, d, 41) <= 1e-12
    cert = coercivity_certificate(d, ([0.1] * 4, [1.0] * 4))
    assert cert.ok, cert.reasons
    F, u, mu = _exp_residual(8)
    d = affine_decomposition(F, u, mu)
    assert d.affine and d.error <= 1e-12


def test_analyse_picks_the_tier():
    import ufl

    from hybrid.fem.analysis import analyse

    msh, _ = _space(6)
    pb, ctx = _model("thermal_block", msh, {"blocks": 2})
    a = analyse(pb, ctx.mu, ([0.1] * 4, [1.0] * 4))
    assert a.linear and a.affine.affine and a.tier == "certified"
    assert a.affine.source == "derived"
    nd, ctx2 = _model("nonlinear_diffusion", msh)
    b = analyse(nd, ctx2.mu, ([0.5, 0.0], [2.0, 1.0]))
    assert not b.linear and b.affine.affine and b.certificate is None and b.tier == "residual"
    v = nd.F.arguments()[0]
    nd.affine = [(ctx2.mu[0], ufl.inner(ufl.grad(nd.u), ufl.grad(v)) * ufl.dx)]
    c = analyse(nd, ctx2.mu)
    assert c.affine.source == "user" and not c.affine.affine


def test_min_eigenvalue_beyond_the_dense_limit():
    import scipy.sparse as sp

    from hybrid.fem.analysis import _min_eig

    n = 3000
    lap = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n)).tocsr()
    exact = 2 - 2 * np.cos(np.pi / (n + 1))  # smallest eigenvalue of the 1-D Laplacian
    assert 0 <= exact and _min_eig(lap, 100, 1e-10) >= -1e-10  # Gershgorin settles it
    shifted = lap - 1e-3 * sp.eye(n)
    lam = _min_eig(shifted, 100, 1e-10) * (2 - 1e-3)  # it returns λ_min / ‖S‖_max
    assert lam == pytest.approx(exact - 1e-3, rel=1e-6)
