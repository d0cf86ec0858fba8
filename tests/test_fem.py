"""Verification of the FEM side against mathematics (serial; MPI variants in test_fem_mpi)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.fem.model_problem import ModelProblem
from hybrid.model.library.thermal_block import block_index

from .conftest import ROOT, small_case_text


def mms_errors(comm, n: int, petsc: dict) -> tuple[float, float]:
    """P1 solve of −∇·(κ∇u) = f, κ = 1 + x² + y, u = sin(πx) sin(πy); return (L2, H1) errors."""
    import ufl
    from dolfinx import fem, mesh

    from hybrid.fem.solver import LinearSolver

    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    x = ufl.SpatialCoordinate(msh)
    u_ex = ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1])
    kappa = 1 + x[0] ** 2 + x[1]
    f = -ufl.div(kappa * ufl.grad(u_ex))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = fem.form(ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx)
    L = fem.form(f * v * ufl.dx)
    msh.topology.create_connectivity(1, 2)
    dofs = fem.locate_dofs_topological(V, 1, mesh.exterior_facet_indices(msh.topology))
    bcs = [fem.dirichletbc(0.0, dofs, V)]
    uh = fem.Function(V)
    solver = LinearSolver(a, L, bcs, petsc, "mms")
    res = solver.solve(uh)
    assert res.ok, res.reason
    dx = ufl.dx(metadata={"quadrature_degree": 6})
    e = uh - u_ex
    l2 = comm.allreduce(fem.assemble_scalar(fem.form(e * e * dx)))
    h1 = comm.allreduce(fem.assemble_scalar(fem.form(ufl.inner(ufl.grad(e), ufl.grad(e)) * dx)))
    solver.destroy()
    return float(np.sqrt(l2)), float(np.sqrt(h1))


def check_mms_rates(comm, petsc):
    ns = [8, 16, 32]
    errs = np.array([mms_errors(comm, n, petsc) for n in ns])
    rates = np.log2(errs[:-1] / errs[1:])
    assert np.all(np.abs(rates[:, 0] - 2.0) < 0.1), f"L2 rates {rates[:, 0]}"
    assert np.all(np.abs(rates[:, 1] - 1.0) < 0.1), f"H1 rates {rates[:, 1]}"
    assert errs[-1, 0] < 2e-3  # and the constant is sane
    return rates


def test_mms_convergence_serial():
    from mpi4py import MPI

    check_mms_rates(MPI.COMM_SELF, {"ksp_type": "preonly", "pc_type": "lu"})


def test_block_index_rule():
    x = np.array([[0.0, 0.0], [1 / 3, 0.0], [0.2, 2 / 3], [1.0, 1.0], [0.999, 0.34]])
    assert block_index(x, 3).tolist() == [0, 1, 6, 8, 5]


def _problem(comm, cells=12, blocks=2, petsc=None, degree=1):
    kw = {"petsc": petsc} if petsc else {}
    text = small_case_text(cells=cells, blocks=blocks, degree=degree, **kw)
    return ModelProblem(parse_case(text, Path("t.toml")), comm)


def square_torsion_mean(terms: int = 400) -> float:
    """∫u for −Δu = 1 on the unit square, u = 0 on ∂Ω, by its Fourier series:
    (64/π⁶) Σ_{m,n odd} 1/(m² n² (m² + n²))."""
    m = np.arange(1, 2 * terms, 2, dtype=float)
    M, N = np.meshgrid(m, m)
    return float(64 / np.pi**6 * np.sum(1.0 / (M**2 * N**2 * (M**2 + N**2))))


def test_thermal_block_uniform_matches_fourier_series():
    """With μ_k = c for all k the solution is u_Poisson / c; its mean converges at rate 2."""
    from mpi4py import MPI

    exact = square_torsion_mean()
    assert abs(exact - 0.0351442) < 1e-6
    c = 0.4
    errs = []
    for cells in (12, 24, 48):
        p = _problem(MPI.COMM_SELF, cells=cells, blocks=3)
        assert p.solve(np.full(9, c)).ok
        errs.append(abs(p.qoi()[0] - exact / c))
        p.destroy()
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(rates > 1.8), rates
    assert errs[-1] / (exact / c) < 2e-3


def test_affine_decomposition_reproduces_solution():
    """Σ μ_q A_q u(μ) = f_0 on the free DOFs, with A_q, f_0 and u all in store ordering."""
    from mpi4py import MPI

    p = _problem(MPI.COMM_SELF, cells=12, blocks=2)
    st = p.static_data()
    mu = np.array([0.13, 0.9, 0.4, 0.65])
    assert p.solve(mu).ok
    u = p.ordering.gather_function(p.u)
    A = sum(m * Aq for m, Aq in zip(mu, st.affine_a, strict=True))
    free = np.setdiff1d(np.arange(st.n_dofs), st.dirichlet_dofs)
    r = (st.affine_f[0] - A @ u)[free]
    assert np.abs(r).max() < 1e-12 * np.abs(st.affine_f[0]).max() * 1e3
    assert np.allclose(u[st.dirichlet_dofs], 0.0)
    # boundary DOFs are exactly the points on the boundary
    on_bnd = np.isclose(st.points, 0).any(1) | np.isclose(st.points, 1).any(1)
    assert np.array_equal(np.flatnonzero(on_bnd), st.dirichlet_dofs)
    # Σ_q A_q is the stiffness matrix, the mass matrix integrates 1 to the area
    assert abs(sum(st.affine_a) - st.stiffness).max() < 1e-12
    one = np.ones(st.n_dofs)
    assert np.isclose(one @ st.mass @ one, 1.0)
    # QoI functionals agree with the direct evaluation
    assert np.allclose(st.qoi_functionals @ u, p.qoi(), rtol=1e-12)
    # store ordering is sorted by (y, x)
    key = st.points[:, 1] * 1e3 + st.points[:, 0]
    assert np.all(np.diff(key) > 0)
    p.destroy()


def test_failed_solve_is_reported_not_raised():
    from mpi4py import MPI

    p = _problem(MPI.COMM_SELF, cells=24, blocks=2,
                 petsc='ksp_type = "cg"\nksp_max_it = 2\nksp_rtol = 1e-12\npc_type = "none"')
    res = p.solve(np.full(4, 0.5))
    assert not res.ok and res.reason == "DIVERGED_MAX_IT"
    p.destroy()


@pytest.mark.parametrize("degree", [2])
def test_p2_runs_and_orders(degree):
    from mpi4py import MPI

    p = _problem(MPI.COMM_SELF, cells=6, blocks=2, degree=degree)
    assert p.solve(np.full(4, 1.0)).ok
    st = p.static_data()
    assert st.n_dofs == (2 * 6 + 1) ** 2
    assert abs(p.qoi()[0] - square_torsion_mean()) < 2e-4
    p.destroy()


def test_gmsh_file_mesh_case():
    """The shipped gmsh mesh (block edges resolved) gives the Poisson mean within 0.5 %."""
    from mpi4py import MPI

    from hybrid.core.case import load_case

    case = load_case(ROOT / "cases" / "thermal_block_gmsh.toml")
    p = ModelProblem(case, MPI.COMM_SELF)
    assert p.solve(np.full(9, 0.5)).ok
    assert abs(p.qoi()[0] / (square_torsion_mean() / 0.5) - 1) < 5e-3
    # every cell lies inside one block: κ is exact on this mesh
    import dolfinx

    tdim = p.mesh.topology.dim
    geom = p.mesh.geometry.x[:, :2]
    cells = dolfinx.mesh.entities_to_geometry(
        p.mesh, tdim, np.arange(p.mesh.topology.index_map(tdim).size_local, dtype=np.int32))
    blk = block_index(geom[cells].mean(axis=1), 3)
    for v in range(3):
        inside = (geom[cells[:, v]] * 3 - np.stack([blk % 3, blk // 3], 1))
        assert np.all(inside > -1e-9) and np.all(inside < 1 + 1e-9)
    p.destroy()


def test_observation_rows_match_point_evaluation():
    """Point-sensor rows reproduce dolfinx's own point evaluation; box averages integrate."""
    from dolfinx import geometry
    from mpi4py import MPI

    text = small_case_text(cells=12, blocks=2, degree=2) + (
        "\n[observations]\npoints = [[0.13, 0.71], [0.5, 0.5], [0.999, 0.001]]\ngrid = 2\n"
        "averages = { left = [0.0, 0.0, 0.5, 1.0] }\n")
    case = parse_case(text, Path("t.toml"))
    assert case.observations.names() == ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "left"]
    p = ModelProblem(case, MPI.COMM_SELF)
    assert p.solve(np.array([0.2, 0.9, 0.5, 0.3])).ok
    y = p.observe()
    pts = np.array([[0.13, 0.71], [0.5, 0.5], [0.999, 0.001],
                    [0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    pts3 = np.hstack([pts, np.zeros((len(pts), 1))])
    tree = geometry.bb_tree(p.mesh, 2)
    cells = geometry.compute_colliding_cells(
        p.mesh, geometry.compute_collisions_points(tree, pts3), pts3)
    direct = np.array([p.u.eval(pts3[i], cells.links(i)[:1])[0] for i in range(len(pts))])
    assert np.allclose(y[:7], direct, rtol=1e-12, atol=1e-15)
    # the box average of the left half equals the mean of blocks 0 and 2
    st = p.static_data()
    c2 = parse_case(small_case_text(cells=12, blocks=2, degree=2).replace(
        'qoi = ["mean", "block_mean_0"]', 'qoi = ["block_mean_0", "block_mean_2"]'), Path("u.toml"))
    p2 = ModelProblem(c2, MPI.COMM_SELF)
    assert p2.solve(np.array([0.2, 0.9, 0.5, 0.3])).ok
    left = p2.qoi().mean()
    assert np.isclose(y[7], left, rtol=1e-12)
    assert st.observation_functionals.shape == (8, st.n_dofs)
    p.destroy()
    p2.destroy()
