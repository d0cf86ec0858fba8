"""hybrid.fem.quadrature: F's quadrature rule pinned per integral, inherited by ∂F/∂μ and J."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.fem.quadrature import estimated_degree, pin_quadrature_degrees


def _assemble(form) -> float:
    from dolfinx import fem

    return float(fem.assemble_scalar(fem.form(form)))


@pytest.mark.parametrize("cell", ["triangle", "quadrilateral"])
def test_the_pinned_rule_is_the_one_ufl_would_choose(cell):
    """A non-polynomial integrand alone: pinned and unpinned assemble to the same number.

    Any other degree changes the value of ∫ exp(3xy) sin(15x) u dx by far more than round-off
    (checked: degree ± 2; on quadrilaterals the Gauss–Jacobi rules of degrees 2k and 2k + 1
    coincide), so equality to 1e-15 identifies FFCx's own choice, scaling factor
    of the quadrilateral included.
    """
    import ufl
    from dolfinx import fem, mesh
    from mpi4py import MPI

    ct = mesh.CellType.triangle if cell == "triangle" else mesh.CellType.quadrilateral
    msh = mesh.create_unit_square(MPI.COMM_SELF, 2, 2, ct)
    u = fem.Function(fem.functionspace(msh, ("Lagrange", 1)))
    u.interpolate(lambda x: 1 + x[0] ** 2 + x[1])
    x = ufl.SpatialCoordinate(msh)
    form = ufl.exp(3 * x[0] * x[1]) * ufl.sin(15 * x[0]) * u * ufl.dx
    pinned = pin_quadrature_degrees(form)
    d = pinned.integrals()[0].metadata()["quadrature_degree"]
    assert d == estimated_degree(form.integrals()[0])
    ref = _assemble(form)
    assert _assemble(pinned) == pytest.approx(ref, rel=1e-15)
    for other in (d - 2, d + 2):
        shifted = form.integrals()[0].reconstruct(metadata={"quadrature_degree": other})
        assert abs(_assemble(ufl.Form([shifted])) - ref) > 1e-12 * abs(ref)
    # explicit choices are kept
    own = ufl.exp(x[0]) * u * ufl.dx(metadata={"quadrature_degree": 2})
    assert pin_quadrature_degrees(own).integrals()[0].metadata() == {"quadrature_degree": 2}


EXPCOEF = """
import ufl
from dolfinx import fem

import hybrid.model as hm


class ExpCoefficient(hm.Model):
    \"\"\"−∇·(exp(μ0 x) ∇u) = μ1 sin(πy/μ0): every μ sits inside a non-polynomial function.\"\"\"

    name = "exp_coefficient"

    def parameters(self):
        return 2

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        x = ufl.SpatialCoordinate(ctx.mesh)
        k = ufl.exp(ctx.mu[0] * x[0])
        F = (k * ufl.inner(ufl.grad(u), ufl.grad(v))
             - ctx.mu[1] * ufl.sin(ufl.pi * x[1] / ctx.mu[0]) * v) * ufl.dx
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx})
"""


def test_tangent_linear_of_a_non_polynomial_user_model_equals_finite_differences(tmp_path):
    """Without the pin, ∂F/∂μ0 is integrated by a higher rule than F (TL ≠ FD at 1e-5)."""
    from mpi4py import MPI

    from hybrid.core.case import load_case
    from hybrid.fem.model_problem import ModelProblem

    (tmp_path / "expc.py").write_text(EXPCOEF)
    case = tmp_path / "c.toml"
    case.write_text(textwrap.dedent("""\
        [mesh]
        type = "unit_square"
        cells = 8
        [physics]
        model = "expc.py"
        [parameters]
        a = { lower = 0.5, upper = 2.0 }
        b = { lower = 0.5, upper = 2.0 }
        [outputs]
        qoi = ["mean"]
        [observations]
        points = [[0.3, 0.6], [0.7, 0.4]]
        """))
    p = ModelProblem(load_case(Path(case)), MPI.COMM_SELF)
    assert all("quadrature_degree" in i.metadata() for i in p.pb.F.integrals())
    mu = np.array([1.3, 0.8])
    assert p.solve(mu).ok
    J = np.vstack([p.observation_jacobian(mu), p.qoi_jacobian(mu)])

    def outputs(m):
        assert p.solve(m).ok
        return np.concatenate([p.observe(), p.qoi()])

    h = 1e-5
    fd = np.stack([(outputs(mu + h * e) - outputs(mu - h * e)) / (2 * h) for e in np.eye(2)],
                  axis=1)
    assert np.abs(fd).min() > 1e-4
    assert np.allclose(J, fd, rtol=1e-7, atol=1e-10 * np.abs(fd).max()), (J, fd)
    p.destroy()
