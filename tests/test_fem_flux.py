"""Boundary-flux observations: residual-based outward fluxes through sides of the unit square.

Sign: positive = heat leaving Ω, F_Γ = −∫_Γ κ∇u·n ds = ∫ s g_Γ dx − a(u, g_Γ; μ); DOFs at a
corner count 1/2 for each of its two sides (see hybrid/fem/observations.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.fem.model_problem import ModelProblem

from .conftest import small_case_text

SIDES = '{ left = "x0", right = "x1", bottom = "y0", top = "y1" }'


def flux_case(cells: int = 8, degree: int = 1, cell_type: str | None = None,
              observations: str = f"fluxes = {SIDES}\n"):
    text = small_case_text(cells=cells, blocks=2, degree=degree)
    if cell_type:
        text = text.replace(f"cells = {cells}", f'cells = {cells}\ncell_type = "{cell_type}"')
    return parse_case(text + "\n[observations]\n" + observations, Path("flux.toml"))


def solve(case, mu, comm=None):
    from mpi4py import MPI

    p = ModelProblem(case, comm or MPI.COMM_SELF)
    assert p.solve(np.asarray(mu, dtype=float)).ok
    return p


@pytest.mark.parametrize("degree,cell_type", [(1, None), (2, None), (1, "quadrilateral")])
def test_homogeneous_block_each_side_carries_a_quarter(degree, cell_type):
    """μ = 1: −Δu = 1. ∫ s = 1 leaves Ω, a quarter through each side (the meshes are
    symmetric under x ↔ y and (x, y) ↦ (1 − x, 1 − y)). With corners shared half and half the
    discrete fluxes are conservative, so each side is 1/4 to round-off, on any mesh size."""
    case = flux_case(8, degree, cell_type,
                     f'fluxes = {SIDES[:-2]}, all = ["x0", "x1", "y0", "y1"] }}\n')
    assert case.observations.names() == ["left", "right", "bottom", "top", "all"]
    p = solve(case, np.ones(4))
    y = p.observe()
    np.testing.assert_allclose(y[:4], 0.25, rtol=0, atol=1e-13)
    assert abs(y[4] - 1.0) < 1e-13 and abs(y[:4].sum() - y[4]) < 1e-14
    # scaling κ by t scales u by 1/t: the heat leaving does not change
    assert p.solve(np.full(4, 0.3)).ok
    np.testing.assert_allclose(p.observe(), y, rtol=0, atol=1e-13)
    p.destroy()


def _direct_flux(p: ModelProblem, side: str, mu: np.ndarray) -> float:
    """−∫_Γ κ ∇u_h·n ds from the gradient of u_h (the naive flux, for comparison)."""
    import ufl
    from dolfinx import fem
    from dolfinx import mesh as dmesh

    from hybrid.model.library.thermal_block import block_index

    Q = fem.functionspace(p.mesh, ("DG", 0))
    n_cells = p.mesh.topology.index_map(2).size_local + p.mesh.topology.index_map(2).num_ghosts
    mids = dmesh.compute_midpoints(p.mesh, 2, np.arange(n_cells, dtype=np.int32))
    kappa = fem.Function(Q)
    kappa.x.array[:] = mu[block_index(mids, 2)]
    axis, value = {"x0": (0, 0.0), "x1": (0, 1.0), "y0": (1, 0.0), "y1": (1, 1.0)}[side]
    facets = dmesh.locate_entities_boundary(p.mesh, 1, lambda x: np.isclose(x[axis], value))
    tags = dmesh.meshtags(p.mesh, 1, np.sort(facets), np.ones(len(facets), dtype=np.int32))
    ds = ufl.Measure("ds", domain=p.mesh, subdomain_data=tags)
    n = ufl.FacetNormal(p.mesh)
    return fem.assemble_scalar(fem.form(-ufl.inner(kappa * ufl.grad(p.u), n) * ds(1)))


def test_fluxes_converge_at_twice_the_energy_rate():
    """Conductive left column (μ = 1), poor right one (μ = 0.1): more heat leaves on the left.

    Against a P2 reference on 64×64 cells (error ~4e-9), the P1 fluxes converge as h², twice
    the O(h) rate of the energy error, and beat the flux from ∇u_h by far."""
    mu = np.array([1.0, 0.1, 1.0, 0.1])
    ref = solve(flux_case(64, 2), mu)
    y_ref = ref.observe()
    ref.destroy()
    assert y_ref[0] > 0.3 > 0.2 > y_ref[1]               # left gains what right loses
    assert abs(y_ref.sum() - 1.0) < 1e-12
    errors, direct = [], []
    for cells in (8, 16, 32):
        p = solve(flux_case(cells), mu)
        y = p.observe()
        assert abs(y.sum() - 1.0) < 1e-12              # conservative on every mesh
        errors.append(np.abs(y - y_ref).max())
        direct.append(abs(_direct_flux(p, "x0", mu) - y_ref[0]))
        p.destroy()
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.8), (errors, rates)
    assert errors[-1] < 1e-4
    assert np.all(np.array(errors) < 0.05 * np.array(direct)), (errors, direct)


def test_observe_equals_the_affine_store_data():
    """observe() (assembled from the current κ and u) = L u + Σ θ_q B_q u + ϑ b (store data)
    = observation_operator(μ) to round-off; names follow the rows."""
    from hybrid.core.store import read_static, write_static

    obs = ('points = [[0.3, 0.6]]\ngrid = 2\naverages = { low = [0.0, 0.0, 1.0, 0.5] }\n'
           'fluxes = { left = "x0", upper = ["y1", "x1"] }\n')
    case = flux_case(12, 2, observations=obs)
    assert case.observations.names() == ["p0", "p1", "p2", "p3", "p4", "low", "left", "upper"]
    mu = np.array([0.2, 0.9, 0.5, 0.3])
    p = solve(case, mu)
    y = p.observe()
    st = p.static_data()
    u = p.ordering.gather_function(p.u)
    ta, tf = mu, np.ones(1)                              # θ_k = μ_k, ϑ_0 = 1 (the record)
    assert p.model_record()["theta_a"] == [{"mu": k} for k in range(4)]
    assert p.model_record()["theta_f"] == [1.0]
    assert st.observation_affine.shape == (8 * 4, u.size)
    assert st.observation_affine_f.shape == (8, 1)
    assert st.observation_affine[: 6 * 4].nnz == 0 and np.all(st.observation_affine_f[:6] == 0)
    assert np.all(st.observation_functionals[6:] == 0)
    np.testing.assert_allclose(st.observe(u, ta, tf), y, rtol=0, atol=1e-12)
    rows, offset = p.observation_operator(mu)
    np.testing.assert_allclose(rows @ u + offset, y, rtol=0, atol=1e-12)
    L = p.observation_rows()                             # the μ-independent part
    np.testing.assert_allclose(L[:6] @ u, y[:6], rtol=0, atol=1e-14)
    assert np.all(L[6:] == 0)
    # a flux is the flux of its sides together (weights add up)
    p2 = solve(flux_case(12, 2, observations='fluxes = { y1 = "y1", x1 = "x1" }\n'), mu)
    assert abs(p2.observe().sum() - y[7]) < 1e-13
    p2.destroy()
    # the affine terms round-trip through static.h5
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_static(Path(d) / "static.h5", st)
        back = read_static(Path(d) / "static.h5")
    assert abs(back.observation_affine - st.observation_affine).max() == 0
    assert np.array_equal(back.observation_affine_f, st.observation_affine_f)
    np.testing.assert_allclose(back.observe(u, ta, tf), y, rtol=0, atol=1e-12)
    # a case without fluxes writes no affine observation data (stores stay as they were)
    q = solve(flux_case(12, 2, observations="grid = 2\n"), mu)
    sq = q.static_data()
    assert sq.observation_affine is None and sq.observation_affine_f is None
    assert q.observation_affine() is None
    rows, offset = q.observation_operator(mu)
    assert np.all(offset == 0) and np.array_equal(rows, q.observation_rows())
    q.destroy()
    p.destroy()


def test_flux_side_missing_from_the_mesh_is_a_case_error(tmp_path):
    """A file mesh that is not the unit square has no DOF on x1: one line naming the key."""
    from mpi4py import MPI

    from hybrid.errors import CaseError

    gmsh = pytest.importorskip("gmsh")
    msh = tmp_path / "half.msh"
    gmsh.initialize()
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("half")
        gmsh.model.occ.addRectangle(0, 0, 0, 0.5, 1.0)
        gmsh.model.occ.synchronize()
        gmsh.model.addPhysicalGroup(2, [1], 1)
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.25)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(msh))
    finally:
        gmsh.finalize()
    text = small_case_text(cells=12, blocks=1).replace(
        'type = "unit_square"\ncells = 12', f'type = "file"\nfile = "{msh}"')
    case = parse_case(text + '\n[observations]\nfluxes = { right = "x1" }\n',
                      tmp_path / "half.toml")
    p = ModelProblem(case, MPI.COMM_SELF)
    with pytest.raises(CaseError, match=r"half\.toml: observations\.fluxes\.right: no "
                                        r"boundary DOF on side 'x1'"):
        p.observe()
    p.destroy()


@pytest.mark.mpi(min_size=2)
def test_fluxes_parallel_equal_serial():
    from mpi4py import MPI

    assert MPI.COMM_WORLD.size >= 2
    obs = f'grid = 2\nfluxes = {SIDES[:-2]}, corner = ["x0", "y0"] }}\n'
    case = flux_case(12, 1, observations=obs)
    mu = np.array([0.3, 0.8, 0.15, 0.6])
    par = solve(case, mu, MPI.COMM_WORLD)
    ser = solve(case, mu, MPI.COMM_SELF)
    assert par.V.dofmap.index_map.size_local < par.V.dofmap.index_map.size_global
    y_par, y_ser = par.observe(), ser.observe()
    assert y_par.shape == (9,)
    np.testing.assert_allclose(y_par, y_ser, rtol=0, atol=1e-10)
    assert abs(y_par[4:8].sum() - 1.0) < 1e-12
    st_par = par.static_data()
    op_par = par.observation_operator(mu)
    u = par.ordering.gather_function(par.u)
    if MPI.COMM_WORLD.rank == 0:
        st_ser = ser.static_data()
        assert abs(st_par.observation_affine - st_ser.observation_affine).max() < 1e-12
        np.testing.assert_allclose(st_par.observation_affine_f, st_ser.observation_affine_f,
                                   rtol=0, atol=1e-14)
        np.testing.assert_allclose(op_par[0] @ u + op_par[1], y_ser, rtol=0, atol=1e-10)
    else:
        assert op_par is None
    par.destroy()
    ser.destroy()
