"""The gaussian_source plug-in: FEM against the exact sine series, analysis, Jacobians.

−∇·(κ∇u) = A exp(−|x − x₀|²/(2σ²)) on the unit square, u = 0 on ∂Ω has the exact solution

    u = Σ_{m,n≥1} c_mn sin(mπx) sin(nπy),   c_mn = 4A G_m(x0) G_n(y0) / (κπ²(m² + n²)),
    G_m(c) = ∫_0^1 exp(−(s − c)²/(2σ²)) sin(mπs) ds,

and ∫u = Σ c_mn o_m o_n with o_m = (1 − (−1)^m)/(mπ). G_m is computed by 600-point
Gauss–Legendre quadrature (exact to round-off for m ≤ 150: the integrand is smooth and
the rule integrates polynomials of degree 1199); the tail of the series beyond M = 150
terms per direction is below 1e-9 in ∫u (measured: M = 100 and 200 agree to 2e-10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError

from .conftest import ROOT

A, SIGMA = 50.0, 0.1
MU = np.array([0.35, 0.6, 1.3])       # x0, y0, kappa
M_TERMS = 150


def series_coefficients(mu, M: int = M_TERMS, amplitude: float = A,
                        sigma: float = SIGMA) -> np.ndarray:
    """c_mn, m, n = 1 … M, of the exact solution (module docstring)."""
    x0, y0, kappa = mu
    s, w = np.polynomial.legendre.leggauss(600)
    s, w = 0.5 * (s + 1.0), 0.5 * w
    m = np.arange(1, M + 1)
    S = np.sin(np.pi * np.outer(m, s))
    gx = S @ (w * np.exp(-(s - x0) ** 2 / (2 * sigma**2)))
    gy = S @ (w * np.exp(-(s - y0) ** 2 / (2 * sigma**2)))
    return 4 * amplitude * np.outer(gx, gy) / (kappa * np.pi**2 * (m[:, None]**2 + m[None, :]**2))


def exact(mu):
    """(u(x) for x of shape (3, n), ∫u) from the sine series."""
    C = series_coefficients(mu)
    m = np.arange(1, C.shape[0] + 1)

    def u(x):
        sx, sy = np.sin(np.pi * np.outer(x[0], m)), np.sin(np.pi * np.outer(x[1], m))
        return ((sx @ C) * sy).sum(axis=1)

    odd = (1 - (-1.0) ** m) / (m * np.pi)
    return u, float(odd @ C @ odd)


def test_the_series_is_converged():
    """Truncation of the reference: M = 100 and M = 150 agree far below the FEM errors."""
    m100 = series_coefficients(MU, 100)
    m150 = series_coefficients(MU)
    assert np.array_equal(m100, m150[:100, :100])
    assert np.abs(m150[100:, :]).sum() + np.abs(m150[:100, 100:]).sum() < 1e-6


def fem_errors(comm, n: int, mu=MU, degree: int = 1):
    """P1 solve of the plug-in on an n×n mesh: (L2 error, H1 error, |∫u_h − ∫u|, ‖u‖_L2)."""
    import ufl
    from dolfinx import fem, mesh

    from hybrid.fem.discretisation import Discretisation

    msh = mesh.create_unit_square(comm, n, n)
    lm = hm.load_model("gaussian_source")
    pb, ctx = lm.build(lm.instantiate({"degree": degree}), msh, ["x0", "y0", "kappa"])
    disc = Discretisation(pb, ctx.mu, None)
    res = disc.solve(np.asarray(mu))
    assert res.ok, res
    u_ex, mean = exact(mu)
    Ve = fem.functionspace(msh, ("Lagrange", degree + 2))   # interpolation error O(h^(p+3))
    ue = fem.Function(Ve)
    ue.interpolate(u_ex)
    e = pb.u - ue

    def integral(expr):
        return comm.allreduce(fem.assemble_scalar(fem.form(expr * ufl.dx)))

    out = (np.sqrt(integral(e * e)), np.sqrt(integral(ufl.inner(ufl.grad(e), ufl.grad(e)))),
           abs(integral(pb.u) - mean), np.sqrt(integral(ue * ue)))
    disc.destroy()
    return out


def check_rates(comm):
    errs = np.array([fem_errors(comm, n) for n in (8, 16, 32)])
    rates = np.log2(errs[:-1, :3] / errs[1:, :3])
    # measured: L2 1.91, 1.98; H1 0.96, 0.99; mean 1.98, 1.996
    assert np.all(np.abs(rates[:, 0] - 2.0) < 0.1), f"L2 rates {rates[:, 0]}"
    assert np.all(np.abs(rates[:, 1] - 1.0) < 0.1), f"H1 rates {rates[:, 1]}"
    assert np.all(np.abs(rates[:, 2] - 2.0) < 0.1), f"rates of the mean {rates[:, 2]}"
    assert errs[-1, 0] / errs[-1, 3] < 6e-3          # 4.4e-3 measured at 32×32
    return rates


def test_fem_converges_to_the_sine_series_serial():
    from mpi4py import MPI

    check_rates(MPI.COMM_SELF)


@pytest.mark.mpi(min_size=2)
def test_fem_converges_to_the_sine_series_two_ranks():
    from mpi4py import MPI

    assert MPI.COMM_WORLD.size >= 2
    check_rates(MPI.COMM_WORLD)


def test_p2_converges_at_rate_three():
    """A wrong source (position, width, amplitude) would stall at O(1), not converge as h³."""
    from mpi4py import MPI

    errs = np.array([fem_errors(MPI.COMM_SELF, n, degree=2)[0] for n in (8, 16)])
    assert abs(np.log2(errs[0] / errs[1]) - 3.0) < 0.2, errs


def test_analysis_says_linear_and_not_affine():
    """Linear in u, the position inside exp(−|x − x₀|²/2σ²): not affine, hence no A_q."""
    from dolfinx import mesh
    from mpi4py import MPI

    from hybrid.fem.analysis import analyse

    msh = mesh.create_unit_square(MPI.COMM_SELF, 6, 6)
    lm = hm.load_model("gaussian_source")
    pb, ctx = lm.build(lm.instantiate({}), msh)
    box = (np.array([0.2, 0.2, 0.5]), np.array([0.8, 0.8, 2.0]))
    an = analyse(pb, ctx.mu, box)
    assert an.linear is True
    assert an.affine.affine is False and an.affine.a == [] and an.affine.f == []
    assert "not a polynomial" in an.affine.reason
    assert an.certificate is None and an.tier == "residual"


def _case_text(cells: int = 8, observations: str = "grid = 2") -> str:
    """cases/gaussian_source.toml on an n×n mesh with other observations."""
    text = (ROOT / "cases" / "gaussian_source.toml").read_text()
    text = text.replace("cells = 32", f"cells = {cells}")
    return text[:text.index("[observations]")] + f"[observations]\n{observations}\n"


def test_the_store_of_a_campaign_holds_no_affine_terms_and_says_why():
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    case = parse_case(_case_text(), Path("gs.toml"))
    p = ModelProblem(case, MPI.COMM_SELF)
    assert p.linear
    s = p.static_data()
    rec = p.model_record()
    assert rec["linear"] is True and rec["affine"] is False and rec["certified"] is False
    assert rec["theta_a"] == [] and rec["theta_f"] == [] and "not a polynomial" in rec["reason"]
    assert s.affine_a == [] and s.affine_f.shape == (0, s.n_dofs)
    assert rec["reference"] == "gaussian_source"
    p.destroy()


def test_tangent_linear_jacobian_equals_finite_differences():
    """∂F/∂x0 goes through the exponential: J δu_q = −∂F/∂μ_q against central FD."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    case = parse_case(_case_text(observations="points = [[0.3, 0.6], [0.7, 0.4]]\n"
                                 "averages = { box = [0.1, 0.1, 0.5, 0.5] }"), Path("gs.toml"))
    p = ModelProblem(case, MPI.COMM_SELF)
    assert p.solve(MU).ok
    J = np.vstack([p.observation_jacobian(MU), p.qoi_jacobian(MU)])

    def outputs(m):
        assert p.solve(m).ok
        return np.concatenate([p.observe(), p.qoi()])

    h = 1e-5
    fd = np.stack([(outputs(MU + h * e) - outputs(MU - h * e)) / (2 * h) for e in np.eye(3)],
                  axis=1)
    assert np.abs(fd[:, :2]).min() > 1e-3                 # the position matters everywhere
    assert np.allclose(J, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max()), (J, fd)
    # linear in 1/κ: u(κ) = u(1)/κ, so ∂u/∂κ = −u/κ
    assert p.solve(MU).ok
    y = np.concatenate([p.observe(), p.qoi()])
    assert np.allclose(J[:, 2], -y / MU[2], rtol=1e-10)
    p.destroy()


@pytest.mark.parametrize("edit, key", [
    ("kappa = { lower = 0.5, upper = 2.0, log = true }",
     "parameters.kappa"),
    ('model = "gaussian_source"\nspread = 1.0', "physics.spread"),
    ("width = 0.1", "physics.width"),
])
def test_case_errors_are_one_line_naming_the_case(tmp_path, edit, key):
    text = _case_text()
    if edit.startswith("kappa"):
        text = text.replace(edit, "kappa = { lower = 0.0, upper = 2.0 }")
    elif edit.startswith("model"):
        text = text.replace('model = "gaussian_source"', edit)
    else:
        text = text.replace(edit, "width = -0.1")
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(CaseError) as info:
        load_case(p)
    msg = str(info.value)
    assert key in msg and "\n" not in msg, msg


@pytest.mark.mpi(min_size=2)
def test_model_problem_on_two_ranks_equals_one_rank():
    """Field, observations and tangent-linear Jacobians with the mesh split over 2 ranks."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    case = parse_case(_case_text(cells=10), Path("gs.toml"))
    par, ser = ModelProblem(case, MPI.COMM_WORLD), ModelProblem(case, MPI.COMM_SELF)
    assert par.V.dofmap.index_map.size_local < par.V.dofmap.index_map.size_global
    assert par.solve(MU).ok and ser.solve(MU).ok
    out_par = [par.observe(), par.qoi(), par.observation_jacobian(MU), par.qoi_jacobian(MU)]
    out_ser = [ser.observe(), ser.qoi(), ser.observation_jacobian(MU), ser.qoi_jacobian(MU)]
    for a, b in zip(out_par, out_ser, strict=True):
        assert np.allclose(a, b, rtol=1e-10, atol=1e-13), (a, b)
    u_par, u_ser = par.ordering.gather_function(par.u), ser.ordering.gather_function(ser.u)
    assert par.model_record() == ser.model_record()
    if MPI.COMM_WORLD.rank == 0:
        assert np.abs(u_par - u_ser).max() <= 1e-12 * np.abs(u_ser).max()
    par.destroy()
    ser.destroy()
