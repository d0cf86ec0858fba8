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


# ---------------------------------------------------------------------------- against references
def _csr(form):
    import scipy.sparse as sp
    from dolfinx import fem
    from dolfinx.fem import petsc as fem_petsc

    A = fem_petsc.assemble_matrix(fem.form(form))
    A.assemble()
    indptr, indices, data = A.getValuesCSR()
    S = sp.csr_matrix((data, indices, indptr), shape=A.getSize())
    A.destroy()
    return S


def test_certificate_reports_each_terms_own_matrix_numbers():
    import scipy.linalg as la
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import affine_decomposition, coercivity_certificate

    msh, V = _space(5)
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["k", "m", "b"])
    beta = ufl.as_vector([1.0, 0.5])
    F = (mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + mu[1] * u * v * ufl.dx
         + mu[2] * ufl.dot(beta, ufl.grad(u)) * v * ufl.dx - v * ufl.dx)
    d = affine_decomposition(F, u, mu)
    box = ([0.5, 0.25, 0.1], [1.0, 1.0, 2.0])
    cert = coercivity_certificate(d, box)
    assert len(cert.min_eigenvalue) == len(d.a) == 3
    expected = []
    for q, term in enumerate(d.a):                 # each a_q assembled on its own
        S = _csr(term.form)
        scale = abs(S).max()
        asym = abs(S - S.T).max() / scale
        lam = la.eigvalsh((0.5 * (S + S.T)).toarray())[0] / scale
        assert cert.asymmetry[q] == pytest.approx(asym, abs=1e-14), q
        assert cert.min_eigenvalue[q] == pytest.approx(lam, abs=1e-12), q
        assert cert.theta_lower[q] == th.interval(term.theta, *box)[0]
        if asym > 1e-10:
            expected.append(f"a_{q} is not symmetric")
        if lam < -1e-10:
            expected.append(f"a_{q} is not positive semi-definite")
    kinds = {th.dumps(t.theta): q for q, t in enumerate(d.a)}
    assert cert.min_eigenvalue[kinds['{"mu":1}']] > 1e-3          # the mass matrix: SPD
    assert abs(cert.min_eigenvalue[kinds['{"mu":0}']]) < 1e-12    # stiffness: constants
    b = kinds['{"mu":2}']                       # convection: not symmetric, indefinite part
    assert expected == [f"a_{b} is not symmetric", f"a_{b} is not positive semi-definite"]
    assert not cert.ok and [r.split(" (")[0] for r in cert.reasons] == expected


def test_certificate_refuses_what_is_not_linear_and_affine():
    from hybrid.fem.analysis import AffineDecomposition, CoercivityCertificate
    from hybrid.fem.analysis import coercivity_certificate as cc

    msh, _ = _space(4)
    pb, ctx = _model("thermal_block", msh, {"blocks": 2})
    from hybrid.fem.analysis import affine_decomposition

    d = affine_decomposition(pb.F, pb.u, ctx.mu)
    box = ([0.1] * 4, [1.0] * 4)
    no = CoercivityCertificate(False, ["not a linear affine problem"], [], [], [])
    for bad in (AffineDecomposition(False, "x", d.terms, True, d.a, d.f),
                AffineDecomposition(True, "", d.terms, False, d.a, d.f),
                AffineDecomposition(True, "", d.terms, True, [], d.f)):
        assert cc(bad, box) == no
    assert cc(d, box).ok


def test_min_eig_dense_gershgorin_and_lanczos_against_exact_eigenvalues():
    import scipy.sparse as sp

    from hybrid.fem.analysis import _min_eig

    def tri(n, diag):
        return sp.diags([-1.0, diag, -1.0], [-1, 0, 1], shape=(n, n)).tocsr()

    n = 60
    lam1 = 2 * np.cos(np.pi / (n + 1))            # eigenvalues of tri(n, d): d - 2cos(kπ/(n+1))
    # dense up to max_dense rows inclusive: exact λ_min / ‖S‖_max
    assert _min_eig(tri(n, 2.0), n, 1e-10) == pytest.approx((2 - lam1) / 2, rel=1e-9)
    assert _min_eig(tri(n, -3.0), n, 1e-10) == pytest.approx((-3 - lam1) / 3, rel=1e-12)
    # beyond: the Gershgorin bound min_i(s_ii − Σ_j≠i |s_ij|) / ‖S‖_max when it is ≥ −tol
    assert _min_eig(tri(n, 3.0), n - 1, 1e-10) == pytest.approx((3 - 2) / 3, rel=1e-15)
    assert _min_eig(tri(n, 2.0), n - 1, 1e-10) == 0.0
    # otherwise Lanczos: the exact λ_min
    assert _min_eig(tri(n, 1.0), n - 1, 1e-10) == pytest.approx((1 - lam1) / 1, rel=1e-8)


def test_scale_out_and_monomials_are_the_algebra_they_name():
    from hybrid.fem.analysis import _monomial, _scale_out

    U, W = {"mu": 0}, {"mu": 1}
    assert _scale_out(3.0) == (3.0, 1.0)
    assert _scale_out(U) == (1.0, U)
    assert _scale_out({"neg": {"mul": [2.0, U]}}) == (-2.0, U)
    assert _scale_out({"neg": U}) == (-1.0, U)
    assert _scale_out({"mul": [2.0, 3.0]}) == (6.0, 1.0)
    assert _scale_out({"mul": [2.0, U]}) == (2.0, U)
    assert _scale_out({"mul": [-2.0, U, {"neg": W}, 0.5]}) == (1.0, th.canonical({"mul": [U, W]}))
    assert _monomial({}, [U]) == 1.0
    assert _monomial({0: 0}, [U]) == 1.0
    assert _monomial({0: 1}, [U, W]) == U
    assert _monomial({1: 2}, [U, W]) == {"pow": [W, 2.0]}
    assert _monomial({0: 3, 1: 1}, [U, W]) == {"mul": [{"pow": [U, 3.0]}, W]}


def test_a_parameter_in_a_polynomial_is_expanded_by_taylor_up_to_max_degree():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import affine_decomposition

    msh, V = _space(5)
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["a"])
    x = ufl.SpatialCoordinate(msh)
    # (1 + μ x)^3 = 1 + 3μx + 3μ²x² + μ³x³: the z^k coefficient is the k-th derivative / k!
    F = (1 + mu[0] * x[0]) ** 3 * u * v * ufl.dx - v * ufl.dx
    d = affine_decomposition(F, u, mu, max_degree=3)
    assert d.affine, d.reason
    assert sorted(th.dumps(t) for t in d.thetas) == sorted(
        ["1.0", '{"mu":0}', '{"pow":[{"mu":0},2.0]}', '{"pow":[{"mu":0},3.0]}'])
    assert _independent_reassembly(F, u, mu, d, 3) <= 1e-12
    low = affine_decomposition(F, u, mu, max_degree=2)
    assert not low.affine and "degree > 2" in low.reason


def _abs_residual(n=4):
    """F = |μ0| a(u, v): equal to μ0 a(u, v) on μ0 > 0 only."""
    import ufl
    from dolfinx import fem

    msh, V = _space(n)
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["k", "c"])
    a = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    return abs(mu[0]) * a, u, mu, a


def test_user_affine_results_carry_linearity_the_source_and_are_checked_on_the_box():
    import ufl

    from hybrid.fem.analysis import user_affine

    F, u, mu, a = _abs_residual()
    terms = [(mu[0], a)]
    ok = user_affine(F, u, mu, terms)              # the default box [0.5, 2]²: |μ0| = μ0
    assert ok.affine and ok.linear is True and ok.source == "user" and ok.error <= 1e-14
    assert ok.thetas == [{"mu": 0}] and len(ok.a) == 1
    neg = user_affine(F, u, mu, terms, ([-2.0, 0.0], [-1.0, 1.0]))
    assert not neg.affine and neg.linear is True and neg.source == "user"
    assert neg.error == pytest.approx(2.0, rel=1e-10)   # ‖(|μ| − μ) a‖ / ‖|μ| a‖ = 2
    assert [t.theta for t in neg.terms] == [{"mu": 0}]  # the refused terms are kept
    # error is the worst reassembly error of the seeded checks
    from hybrid.fem.analysis import affine_decomposition, reassembly_error

    wrong = [(mu[0] * mu[0], a)]
    d = user_affine(F, u, mu, wrong)
    assert not d.affine and d.error == reassembly_error(F, d.terms, u, mu, None, 3, 0)
    d = user_affine(F, u, mu, wrong, seed=5, checks=1)
    assert d.error == reassembly_error(F, d.terms, u, mu, None, 1, 5)
    G = mu[0] * a + mu[1] * u * a.arguments()[0] * ufl.dx
    e = affine_decomposition(G, u, mu)
    assert e.affine and e.error == reassembly_error(G, e.terms, u, mu, None, 3, 0)
    bad = user_affine(F, u, mu, [({"mu": 5}, a)])
    assert (bad.affine, bad.linear, bad.source, bad.terms) == (False, True, "user", [])
    assert bad.reason.startswith("affine term 0: θ: ") and "out of range for 2" in bad.reason
    bad = user_affine(F, u, mu, [(mu[0], a), (1.0, mu[1] * a)])
    assert (bad.affine, bad.linear, bad.source, bad.terms) == (False, True, "user", [])
    assert bad.reason == "affine term 1: F_q must be a form free of the parameters"


def test_reassembly_error_is_relative_seeded_on_the_box_and_restores_the_state():
    from hybrid.fem.analysis import AffineTerm, reassembly_error

    F, u, mu, a = _abs_residual()
    _randomise(u, 7)
    mu.assign([0.7, 0.3])
    before, mu_before = u.x.array.copy(), mu.values_array().copy()
    right = [AffineTerm({"mu": 0}, a)]
    assert reassembly_error(F, right, u, mu) <= 1e-14
    assert reassembly_error(F, right, u, mu, ([-2.0, 0.0], [-1.0, 1.0])) == pytest.approx(
        2.0, rel=1e-10)
    assert reassembly_error(F, [], u, mu) == 1.0         # nothing reassembled: all of F
    # μ0² for |μ0|: the relative error is max |1 − μ0| over the seeded draws of μ0
    wrong = [AffineTerm({"mul": [{"mu": 0}, {"mu": 0}]}, a)]
    e5 = reassembly_error(F, wrong, u, mu, seed=5, checks=1)
    m5 = np.random.default_rng(5).uniform(0.5, 2.0, size=2)
    assert e5 == pytest.approx(abs(1 - m5[0]), rel=1e-10)
    assert reassembly_error(F, wrong, u, mu, seed=5, checks=1) == e5
    assert reassembly_error(F, wrong, u, mu, seed=6, checks=1) != e5
    np.testing.assert_array_equal(u.x.array, before)
    np.testing.assert_array_equal(mu.values_array(), mu_before)


def test_random_parameters_fill_the_box_or_the_default_one():
    from types import SimpleNamespace

    from hybrid.fem.analysis import _random_mu

    three = SimpleNamespace(constants=[None] * 3)
    rng = np.random.default_rng(0)
    d = np.array([_random_mu(rng, three, None) for _ in range(3000)])
    assert d.shape == (3000, 3)
    assert d.min() >= 0.5 and d.max() <= 2.0 and d.min() < 0.505 and d.max() > 1.995
    lo, hi = np.array([-3.0, 0.0, 10.0]), np.array([-1.0, 0.0, 20.0])
    b = np.array([_random_mu(rng, three, (lo, hi)) for _ in range(3000)])
    assert np.all(b >= lo) and np.all(b <= hi)
    width = hi - lo
    assert np.all(b.min(axis=0) - lo <= 0.01 * width) and np.all(hi - b.max(axis=0) <= 0.01 * width)
    assert np.all(np.abs(b.mean(axis=0) - (lo + hi) / 2) <= 0.03 * width)


def test_the_certificate_is_computed_only_for_a_coercive_linear_affine_problem_on_a_box():
    import ufl

    from hybrid.fem.analysis import analyse

    msh, _ = _space(4)
    pb, ctx = _model("thermal_block", msh, {"blocks": 2})
    box = ([0.1] * 4, [1.0] * 4)
    assert pb.coercive
    a = analyse(pb, ctx.mu, box)
    assert a.certificate is not None and a.certificate.ok and a.linear is True
    assert analyse(pb, ctx.mu).certificate is None          # no box
    pb.coercive = False
    assert analyse(pb, ctx.mu, box).certificate is None     # no promise
    pb.coercive = True
    F0, v = pb.F, pb.F.arguments()[0]
    x = ufl.SpatialCoordinate(msh)
    g = ufl.exp(-((x[0] - ctx.mu[0]) ** 2) / 0.02)
    pb.F = F0 - g * v * ufl.dx                              # linear, not affine
    b = analyse(pb, ctx.mu, box)
    assert not b.affine.affine and b.linear is True and b.certificate is None
    # user terms are checked on the box: |μ0| a = μ0 a for μ0 > 0 only
    lap = ufl.inner(ufl.grad(pb.u), ufl.grad(v)) * ufl.dx
    pb.F, pb.affine = abs(ctx.mu[0]) * lap, [(ctx.mu[0], lap)]
    assert analyse(pb, ctx.mu, box).affine.affine
    assert not analyse(pb, ctx.mu, ([-1.0] + [0.1] * 3, [-0.1] + [1.0] * 3)).affine.affine
    pb.F = F0
    pb.affine = [(ctx.mu[0], lap)]                           # not F
    c = analyse(pb, ctx.mu, box)
    assert not c.affine.affine and c.linear is True and c.certificate is None


def test_derivative_helpers_take_the_direction_and_values_they_are_given():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import assemble_into, at_zero, jacobian, parameter_derivative

    msh, V = _space(4)
    u, v = fem.Function(V), ufl.TestFunction(V)
    f = fem.Constant(msh, 0.5)
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) + u ** 3 * v - f * v) * ufl.dx
    _randomise(u, 1)
    w = fem.Function(V)
    _randomise(w, 2)
    J = jacobian(F, u, w)                          # the directional derivative dF[u] w
    expected = (ufl.inner(ufl.grad(w), ufl.grad(v)) + 3 * u ** 2 * w * v) * ufl.dx
    assert len(J.arguments()) == 1
    np.testing.assert_allclose(_assemble(J).array, _assemble(expected).array, rtol=1e-12,
                               atol=1e-14)
    assert len(jacobian(F, u).arguments()) == 2
    zero = _assemble(at_zero(F, u)).array          # F at u = 0: −f v
    np.testing.assert_allclose(zero, _assemble(-f * v * ufl.dx).array, rtol=1e-14)
    b = _assemble(v * ufl.dx)
    b.set(5.0)                                     # stale values are overwritten, not added
    assemble_into(fem.form(u * v * ufl.dx), b)
    np.testing.assert_allclose(b.array, _assemble(u * v * ufl.dx).array, rtol=1e-14)
    vec = fem.Constant(msh, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="^parameter_derivative needs a scalar Constant$"):
        parameter_derivative(F, vec)


def test_theta_of_an_expression_reads_parameters_and_refuses_other_constants():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import expr_to_theta

    msh, _ = _space(2)
    mu = hm.Parameters(msh, ["a", "b"])
    assert expr_to_theta(ufl.real(mu[1]), mu) == {"mu": 1}
    assert expr_to_theta(ufl.conj(mu[0]) * 2, mu) == th.canonical({"mul": [2.0, {"mu": 0}]})
    assert expr_to_theta(ufl.as_ufl(0.0), mu) == 0.0
    assert expr_to_theta(ufl.as_ufl(2.5), mu) == 2.5
    other = fem.Constant(msh, 1.0)
    with pytest.raises(ValueError,
                       match="^a Constant that is not a parameter is part of θ$"):
        expr_to_theta(mu[0] * other, mu)


def test_a_sum_inside_one_integral_is_split_and_named_in_refusals():
    import ufl
    from dolfinx import fem

    from hybrid.fem.analysis import affine_decomposition

    msh, V = _space(4)
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu = hm.Parameters(msh, ["a", "b"])
    x = ufl.SpatialCoordinate(msh)
    F = (mu[0] * u * v + x[0] * u * v + mu[1] * ufl.inner(ufl.grad(u), ufl.grad(v))) * ufl.dx
    d = affine_decomposition(F, u, mu)
    assert d.affine, d.reason
    assert sorted(th.dumps(t) for t in d.thetas) == ["1.0", '{"mu":0}', '{"mu":1}']
    assert _independent_reassembly(F, u, mu, d, 4) <= 1e-12
    g = ufl.exp(-((x[0] - mu[0]) ** 2 + (x[1] - mu[1]) ** 2))
    bad = affine_decomposition(F - g * v * ufl.dx, u, mu)
    assert not bad.affine
    factors = bad.reason.rsplit("θ factors ", 1)[1].split(", ")
    assert sorted(factors) == sorted(th.dumps({"mul": [-1.0, {"mu": q}]}) for q in (0, 1))
