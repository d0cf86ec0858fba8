"""3-D linear elasticity (``model = "elasticity"``) and vector unknowns through the store.

- Store ordering of a blocked space: nodes sorted as in the scalar space of the same degree,
  components interleaved node-major; gathered fields, matrices (the vector mass and
  stiffness matrices are kron(scalar, I₃)), cells and index sets agree with that layout.
- Sensors of a vector field observe the named components (exact for a linear field).
- The tip deflection of a slender clamped beam converges to Timoshenko's value (P2).
- The affine terms hybrid derives (θ_k = E_k, ϑ = P; with ν a parameter the Lamé products)
  reassemble the FEM solution from the store alone; the store is certified.
- A POD–Galerkin surrogate of a small elasticity store reproduces held-out FEM fields.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.core.examples import MUMPS
from hybrid.errors import CaseError

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "meshes"))
import beam  # noqa: E402  (meshes/beam.py)

GAMG = 'ksp_type = "cg"\nksp_rtol = 1.0e-12\npc_type = "gamg"'


def beam_mesh(directory: Path, length: float = 4.0, materials: int = 2, size: float = 0.5,
              ) -> Path:
    """A gmsh beam [0, L]×[0, 1]×[0, 1] (meshes/beam.py), made once per directory."""
    path = Path(directory) / f"beam_{length}_{materials}_{size}.msh"
    if not path.exists():
        beam.build(length, 1.0, 1.0, materials, size, str(path))
    return path


def beam_case_text(mesh: Path, *, degree: int = 1, materials: int = 2, poisson: float = 0.3,
                   poisson_parameter: bool = False, petsc: str = MUMPS, samples: int = 8,
                   store: str = "store", observations: str = "") -> str:
    params = "\n".join(f"E_{k} = {{ lower = 1.0, upper = 10.0, log = true }}"
                       for k in range(materials))
    if poisson_parameter:
        params += "\nnu = { lower = 0.1, upper = 0.4 }"
    return f"""
[case]
name = "beam"
[mesh]
type = "file"
file = "{mesh}"
gdim = 3
[physics]
model = "elasticity"
degree = {degree}
materials = {materials}
poisson = {poisson}
poisson_parameter = {str(poisson_parameter).lower()}
[parameters]
{params}
load = {{ lower = 0.5, upper = 2.0 }}
[sampling]
method = "sobol"
samples = {samples}
seed = 2
[solver.petsc]
{petsc}
[outputs]
store = "{store}"
qoi = ["tip_deflection"]
{observations}
"""


def _problem(text: str, comm=None):
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    return ModelProblem(parse_case(text, Path("beam.toml")), comm or MPI.COMM_WORLD)


# ---------------------------------------------------------------------------- ordering
def vector_ordering_checks(comm, degree: int = 2) -> dict:
    """Check the blocked ordering against the scalar one on a unit cube; return root data."""
    import ufl
    from dolfinx import fem, mesh

    from hybrid.fem.ordering import StoreOrdering

    msh = mesh.create_unit_cube(comm, 3, 2, 2)
    V = fem.functionspace(msh, ("Lagrange", degree, (3,)))
    Q = fem.functionspace(msh, ("Lagrange", degree))
    ov, oq = StoreOrdering(V), StoreOrdering(Q)
    assert ov.bs == 3 and ov.n_global == 3 * oq.n_global and ov.n_local == 3 * oq.n_local
    u = fem.Function(V)
    u.interpolate(lambda x: np.stack([x[0] + 2 * x[1], x[1] * x[2] - 1, x[0] ** 2 + x[2]]))
    U = ov.gather_function(u)
    # unrolled local DOFs → store indices: the component is kept, the node's point matches
    x_local = V.tabulate_dof_coordinates()
    d = np.arange(len(x_local) * 3)
    s = ov.to_store_indices(d)
    assert np.array_equal(s % 3, d % 3)
    pts_all = comm.bcast(ov.points if comm.rank == 0 else None, root=0)
    assert np.allclose(pts_all[s], x_local[d // 3], atol=1e-12)
    uu, vv = ufl.TrialFunction(V), ufl.TestFunction(V)
    p, q = ufl.TrialFunction(Q), ufl.TestFunction(Q)
    Mv = ov.assemble_matrix(ufl.inner(uu, vv) * ufl.dx)
    Kv = ov.assemble_matrix(ufl.inner(ufl.grad(uu), ufl.grad(vv)) * ufl.dx)
    Ms = oq.assemble_matrix(p * q * ufl.dx)
    Ks = oq.assemble_matrix(ufl.inner(ufl.grad(p), ufl.grad(q)) * ufl.dx)
    cells, cells_q = ov.gather_cells(), oq.gather_cells()
    facets = mesh.locate_entities_boundary(msh, 2, lambda x: np.isclose(x[0], 0.0))
    dofs = fem.locate_dofs_topological(V, 2, facets)
    bc = fem.dirichletbc(np.zeros(3), dofs, V)
    bset = ov.gather_index_set(bc.dof_indices()[0])
    if comm.rank != 0:
        return {}
    import scipy.sparse as sp

    assert np.array_equal(ov.points, np.repeat(oq.points, 3, axis=0))
    X = ov.points
    f = np.stack([X[:, 0] + 2 * X[:, 1], X[:, 1] * X[:, 2] - 1, X[:, 0] ** 2 + X[:, 2]], axis=1)
    assert np.allclose(U, f[np.arange(len(U)), np.arange(len(U)) % 3], atol=1e-13)
    I3 = sp.identity(3)
    assert abs(Mv - sp.kron(Ms, I3)).max() < 1e-15
    assert abs(Kv - sp.kron(Ks, I3)).max() < 1e-13
    assert cells.shape[1] == 4 and np.all(cells % 3 == 0)
    assert np.array_equal(cells // 3, cells_q)
    assert bset.size == 3 * np.sum(np.isclose(oq.points[:, 0], 0.0))
    assert np.allclose(X[bset, 0], 0.0) and set(np.bincount(bset % 3)) == {bset.size // 3}
    return {"U": U, "points": X, "M": Mv, "cells": cells, "bc": bset}


def test_vector_store_ordering_is_node_major_and_matches_the_scalar_one():
    from mpi4py import MPI

    vector_ordering_checks(MPI.COMM_WORLD, degree=2)
    vector_ordering_checks(MPI.COMM_WORLD, degree=1)


# ---------------------------------------------------------------------------- sensors
def test_sensors_observe_components_of_a_linear_field(tmp_path):
    """A linear displacement is exact in P1: each row gives u_c(p) for the named c."""
    mesh = beam_mesh(tmp_path)
    obs = ('[observations]\npoints = [[0.3, 0.2, 0.7], [3.9, 1.0, 0.5]]\n'
           'averages = { tip = [2.0, 0.0, 0.0, 4.0, 1.0, 1.0] }\ncomponents = ["z", "x"]')
    mp = _problem(beam_case_text(mesh, observations=obs))
    assert mp.case.observations.names() == ["p0_z", "p0_x", "p1_z", "p1_x", "tip_z", "tip_x"]
    A = np.array([[0.1, -0.2, 0.3], [0.5, 0.0, -1.0], [2.0, 0.7, 0.4]])
    b = np.array([1.0, -2.0, 0.5])
    mp.u.interpolate(lambda x: (A @ x + b[:, None]))
    y = mp.observe()
    pts = np.array([[0.3, 0.2, 0.7], [3.9, 1.0, 0.5]])
    exact = [(A @ p + b)[c] for p in pts for c in (2, 0)]
    centre = np.array([3.0, 0.5, 0.5])    # the box is the slab x > 2 (resolved)
    exact += [(A @ centre + b)[2], (A @ centre + b)[0]]   # the mean of a linear field
    assert np.allclose(y, exact, rtol=1e-12, atol=1e-12), (y, exact)
    mp.destroy()


@pytest.mark.parametrize("obs, message", [
    ('[observations]\npoints = [[1.0, 0.5, 0.5]]', "name those to observe"),
    ('[observations]\npoints = [[1.0, 0.5, 0.5]]\ncomponents = ["x", "x"]', "must not repeat"),
])
def test_vector_sensors_need_components(tmp_path, obs, message):
    mesh = beam_mesh(tmp_path)
    with pytest.raises(CaseError, match=message) as e:
        _problem(beam_case_text(mesh, observations=obs)).observation_rows()
    assert "\n" not in str(e.value)


def test_scalar_case_refuses_components():
    from hybrid.fem.model_problem import ModelProblem

    from .conftest import small_case_text

    text = small_case_text(cells=4) + '\n[observations]\ngrid = 2\ncomponents = ["x"]\n'
    from mpi4py import MPI

    mp = ModelProblem(parse_case(text, Path("t.toml")), MPI.COMM_WORLD)
    with pytest.raises(CaseError, match="scalar field; remove the key"):
        mp.observation_rows()


# ---------------------------------------------------------------------------- Timoshenko
def test_tip_deflection_converges_to_timoshenko(tmp_path):
    """δ = P L³/(3EI) + P L/(κ G A): P = traction·A, A = 1, I = 1/12, L = 10, ν = 0 (G = E/2,
    Cowper's κ = 10(1 + ν)/(12 + 11ν) = 5/6): δ = 4000 + 24 = 4024 for unit traction, E = 1.

    P2, CG + GAMG: h = 0.5 → 0.25 brings the error from 2.9e-4 to 1e-5 (the compliance
    converges at rate 2p = 4; measured 4.5 against the h = 0.125 value 4024.03). Euler–
    Bernoulli (4000) is 6e-3 away, a κ of 1 gives 4020 (1e-3 away): both fail the 1e-4
    check. P1 locks in bending: 16 % low at h = 0.25 (rate → 2: 4.7 % at h = 0.125).
    """
    L, E, P, nu = 10.0, 1.0, 1.0, 0.0
    kappa, G, A, inertia = 10 * (1 + nu) / (12 + 11 * nu), E / (2 * (1 + nu)), 1.0, 1.0 / 12
    delta = P * A * L**3 / (3 * E * inertia) + P * A * L / (kappa * G * A)
    errs = {}
    for degree, size in ((2, 0.5), (2, 0.25), (1, 0.25)):
        mesh = beam_mesh(tmp_path, length=L, materials=1, size=size)
        text = beam_case_text(mesh, degree=degree, materials=1, poisson=nu, petsc=GAMG)
        mp = _problem(text)
        res = mp.solve(np.array([E, P]))
        assert res.ok and res.iterations < 200, res
        errs[degree, size] = (mp.qoi()[0] - delta) / delta
        mp.destroy()
    assert abs(errs[2, 0.25]) < 1e-4, errs
    assert abs(errs[2, 0.25]) < abs(errs[2, 0.5]) / 8, errs
    assert 1e-4 < abs(errs[2, 0.5]) < 1e-3, errs
    assert -0.25 < errs[1, 0.25] < -0.05, errs   # P1 converges much more slowly


def test_near_nullspace_is_the_rigid_body_modes(tmp_path):
    """The six modes are in the kernel of the stiffness matrix without boundary conditions."""
    import ufl
    from dolfinx import fem
    from dolfinx.fem import petsc as fem_petsc

    import hybrid.model as hm

    mp = _problem(beam_case_text(beam_mesh(tmp_path), degree=2))
    modes = mp.pb.near_nullspace
    assert len(modes) == 6
    J = fem_petsc.assemble_matrix(fem.form(ufl.replace(
        mp.disc.J, {c: fem.Constant(mp.mesh, 1.0) for c in mp.mu.constants})))
    J.assemble()
    y = J.createVecLeft()
    for m in modes:
        J.mult(m.x.petsc_vec, y)
        assert y.norm() < 1e-10 * J.norm() * m.x.petsc_vec.norm()
    ns = mp.disc.near_nullspace
    assert ns is not None and len(ns.getVecs()) == 6
    with pytest.raises(ValueError, match="block size"):
        hm.rigid_body_modes(fem.functionspace(mp.mesh, ("Lagrange", 1)))
    from hybrid.fem.discretisation import near_nullspace

    with pytest.raises(ValueError, match="linearly dependent"):
        near_nullspace([modes[0], modes[1], modes[0]], mp.V)
    with pytest.raises(ValueError, match=r"near_nullspace\[0\] must be a fem.Function"):
        near_nullspace([fem.Function(fem.functionspace(mp.mesh, ("Lagrange", 1)))], mp.V)
    mp.destroy()


# ---------------------------------------------------------------------------- affine terms
@pytest.mark.parametrize("poisson_parameter", [False, True])
def test_affine_terms_reassemble_the_fem_solution(tmp_path, poisson_parameter):
    """Σ θ_q(μ) A_q u = Σ ϑ_q(μ) f_q solved from the store's data (Dirichlet rows fixed)
    equals the FEM field; θ are E_k (ν fixed) or the Lamé products (ν a parameter)."""
    import scipy.sparse.linalg as sla

    from hybrid.core.theta import AffineCoefficients
    from hybrid.model.library.elasticity import lame
    from hybrid.surrogate.reductor import free_dofs

    mesh = beam_mesh(tmp_path)
    mp = _problem(beam_case_text(mesh, degree=2, poisson_parameter=poisson_parameter))
    mu = np.array([2.0, 7.0, 0.25, 1.3]) if poisson_parameter else np.array([2.0, 7.0, 1.3])
    assert mp.solve(mu).ok
    u = mp.ordering.gather_function(mp.u)
    st = mp.static_data()
    rec = mp.model_record()
    assert rec["linear"] and rec["affine"] and rec["certified"], rec
    P = len(mu)
    coef = AffineCoefficients(rec["theta_a"], rec["theta_f"], n_params=P)
    ta, tf = coef.theta_a(mu), coef.theta_f(mu)
    if poisson_parameter:   # θ: the Lamé coefficients μ_L(E_k, ν), λ(E_k, ν) themselves
        expect = [c for E in mu[:2] for c in lame(E, mu[2])]
        assert len(st.affine_a) == 4 and np.allclose(ta, expect, rtol=1e-13), (ta, expect)
    else:
        assert rec["theta_a"] == [{"mu": 0}, {"mu": 1}] and rec["theta_f"] == [{"mu": 2}]
    assert np.allclose(tf, [mu[-1]], rtol=1e-15)
    if mp.comm.rank == 0:
        A = sum(t * Aq for t, Aq in zip(ta, st.affine_a, strict=True)).tocsr()
        f = tf @ st.affine_f
        free = free_dofs(st.n_dofs, st.dirichlet_dofs)
        x = np.zeros(st.n_dofs)
        x[free] = sla.spsolve(A[free][:, free].tocsc(), f[free])
        assert np.abs(x - u).max() <= 1e-8 * np.abs(u).max()
        # QoI row: the tip deflection from the store equals the assembled functional
        assert np.isclose(st.qoi_functionals[0] @ u, mp.qoi()[0], rtol=1e-12)
        assert st.points.shape == (st.n_dofs, 3) and st.cell_type == "tetra"
    assert mp.element == {"family": "Lagrange", "degree": 2, "value_shape": [3]}
    mp.destroy()


# ---------------------------------------------------------------------------- surrogate
def test_pod_galerkin_surrogate_on_an_elasticity_store(tmp_path):
    """Campaign (P1, 2 materials, 3 parameters, 24 samples) → POD–Galerkin surrogate;
    field error against FEM solves at held-out μ, in the store's energy norm, ≤ 1e-6."""
    from mpi4py import MPI

    from hybrid.core.case import load_case
    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate.build import BuildOptions, build_surrogate, default_mu_ref
    from hybrid.surrogate.coefficients import coefficients_of
    from hybrid.surrogate.reductor import inner_product
    from hybrid.workflows.campaign import run_campaign

    mesh = beam_mesh(tmp_path)
    path = tmp_path / "beam.toml"
    obs = '[observations]\npoints = [[2.0, 1.0, 0.5], [4.0, 1.0, 0.5]]\ncomponents = ["y"]'
    path.write_text(beam_case_text(mesh, samples=24, store=str(tmp_path / "store"),
                                   observations=obs))
    case = load_case(path)
    res = run_campaign(case, progress=False, paraview=False)
    assert res.failed == 0
    sur, report = build_surrogate(tmp_path / "store", BuildOptions(kind="galerkin"))
    assert sur.observation_names == ["p0_y", "p1_y"]
    store = SnapshotStore(tmp_path / "store")
    assert store.manifest["element"]["value_shape"] == [3]
    assert store.observation_names == ["p0_y", "p1_y"]
    coef = coefficients_of(store.manifest, 3)
    _check_paraview(store, tmp_path / "pv" / "s.xdmf")
    mp = _problem(path.read_text())
    rng = np.random.default_rng(5)
    st = mp.static_data()
    errs = []
    for _ in range(4):
        mu = np.array([np.exp(rng.uniform(0, np.log(10))), np.exp(rng.uniform(0, np.log(10))),
                       rng.uniform(0.5, 2.0)])
        assert mp.solve(mu).ok
        u = mp.ordering.gather_function(mp.u)
        y, q = mp.observe(), mp.qoi()
        if MPI.COMM_WORLD.rank == 0:
            ut = sur.field(mu)
            e = ut - u
            X = st.stiffness + st.mass
            errs.append(np.sqrt(e @ (X @ e) / (u @ (X @ u))))
            assert np.allclose(sur.observe(mu), y, rtol=1e-5)
            assert np.isclose(sur.qoi(mu)[0], q[0], rtol=1e-6)
            # the certified bound, relative in the energy norm at μ̄, bounds the true error
            XE = inner_product(st, "energy", coef.theta_a(default_mu_ref(case.parameters)))
            true = np.sqrt(e @ (XE @ e) / (ut @ (XE @ ut)))
            assert sur.error_estimate(mu) >= true, (sur.error_estimate(mu), true)
    if MPI.COMM_WORLD.rank == 0:
        assert max(errs) < 1e-6 and report["n_modes"] >= 3, (errs, report["n_modes"])
    mp.destroy()
    # POD-NN on the same vector store (short training): a network of the POD coefficients
    from hybrid.surrogate.training import TrainingConfig

    cfg = TrainingConfig(width=16, depth=2, adam_epochs=100, lbfgs_iterations=200,
                         collocation=128, progress=False)
    net, rep = build_surrogate(tmp_path / "store", BuildOptions(kind="pod-nn", training=cfg))
    print("pod-nn validation error", rep["metrics"]["surrogate_error_mean"])
    assert rep["metrics"]["surrogate_error_mean"] < 2e-2, rep["metrics"]
    if MPI.COMM_WORLD.rank == 0:
        assert net.field(mu).shape == (st.n_dofs,)


def _check_paraview(store, target: Path) -> None:
    """The XDMF of a vector store: one point per node, u with 3 components per node."""
    import meshio

    from hybrid.core.viz import write_store_xdmf

    write_store_xdmf(store, target, max_samples=2)
    with meshio.xdmf.TimeSeriesReader(str(target)) as r:
        pts, cells = r.read_points_cells()
        _, data, _ = r.read_data(0)
    _, U = store.snapshots()
    st = store.static
    assert np.array_equal(pts, st.points[::3]) and np.array_equal(cells[0].data, st.cells // 3)
    assert data["u"].shape == (st.n_dofs // 3, 3) and np.array_equal(data["u"].ravel(), U[0])


@pytest.mark.parametrize("edit, message", [
    (('type = "file"', 'type = "unit_square"\ncells = 4'),
     "mesh: elasticity is posed on a 3-D mesh"),
    (('E_0 = { lower = 1.0, upper = 10.0, log = true }', 'E_0 = { lower = 0.0, upper = 1.0 }'),
     "parameters.E_0: Young's moduli must have lower bound > 0"),
    (('poisson = 0.3', 'poisson = 0.5'), "physics.poisson"),
    (('materials = 2', 'materials = 5'), "physics.materials"),
])
def test_bad_elasticity_cases_are_one_line(tmp_path, edit, message):
    text = beam_case_text(beam_mesh(tmp_path)).replace(*edit)
    if "unit_square" in edit[1]:
        text = text.replace(f'file = "{beam_mesh(tmp_path)}"\ngdim = 3\n', "")
    with pytest.raises(CaseError, match=message) as e:
        parse_case(text, tmp_path / "bad.toml")
    assert "\n" not in str(e.value)


def test_an_xdmf_mesh_gives_the_store_of_the_same_built_in_mesh(tmp_path):
    """A unit cube written to XDMF by DOLFINx and read back as [mesh] type = "file" gives the
    field of the built-in unit cube (store ordering depends on the geometry alone); no named
    groups: the faces x = 0, 1 and slabs in x are found geometrically."""
    from dolfinx import mesh as dmesh
    from dolfinx.io import XDMFFile
    from mpi4py import MPI

    path = Path(MPI.COMM_WORLD.bcast(str(tmp_path / "cube.xdmf"), root=0))
    cube = dmesh.create_unit_cube(MPI.COMM_WORLD, 3, 3, 3)
    with XDMFFile(MPI.COMM_WORLD, str(path), "w") as f:
        f.write_mesh(cube)
    base = beam_case_text(Path("unused"), observations='[observations]\npoints = '
                          '[[1.0, 0.5, 0.5]]\ncomponents = ["y"]')
    from_file = base.replace('file = "unused"', f'file = "{path}"')
    built_in = base.replace('type = "file"\nfile = "unused"\ngdim = 3', 'type = "unit_cube"\n'
                            'cells = 3')
    mu = np.array([2.0, 4.0, 1.0])
    out = []
    for text in (from_file, built_in):
        mp = _problem(text)
        assert mp.solve(mu).ok
        out.append((mp.ordering.gather_function(mp.u), mp.observe(), mp.qoi()))
        mp.destroy()
    if MPI.COMM_WORLD.rank == 0:
        assert np.abs(out[0][0] - out[1][0]).max() <= 1e-12 * np.abs(out[1][0]).max()
    assert np.allclose(out[0][1], out[1][1], rtol=1e-12) and out[0][2][0] > 0
    bad = tmp_path / "bad.xdmf"
    bad.write_text("<Xdmf><Domain></Domain></Xdmf>")
    with pytest.raises(CaseError, match="cannot read mesh \\(no uniform grid"):
        _problem(base.replace('file = "unused"', f'file = "{bad}"'))


def test_hybrid_solve_writes_the_vector_field(tmp_path):
    """``solve_one`` on a P2 vector case: XDMF with a 3-component P1 field equal to the P2
    values at the vertices; the JSON counts every component in n_dofs."""
    import json

    import h5py
    from mpi4py import MPI

    from hybrid.workflows.solve import solve_one

    text = beam_case_text(beam_mesh(tmp_path), degree=2)
    case = parse_case(text, tmp_path / "beam.toml")
    out = Path(MPI.COMM_WORLD.bcast(str(tmp_path / "one"), root=0))
    solve_one(case, np.array([2.0, 4.0, 1.0]), out)
    mp = _problem(text)
    assert mp.solve(np.array([2.0, 4.0, 1.0])).ok
    U = mp.ordering.gather_function(mp.u)
    if MPI.COMM_WORLD.rank == 0:
        rec = json.loads((out / "solution.json").read_text())
        assert rec["n_dofs"] == mp.ordering.n_global == U.size
        with h5py.File(out / "solution.h5", "r") as f:
            x = f["Mesh/mesh/geometry"][()]
            (step,) = f["Function/u"].keys()
            u = f["Function/u"][step][()]
        assert u.shape == (len(x), 3)
        P = mp.ordering.points[::3]   # store nodes; the vertices are among them
        key = {tuple(np.round(p, 9)): k for k, p in enumerate(P)}
        idx = np.array([key[tuple(np.round(p, 9))] for p in x])
        assert np.abs(u - U.reshape(-1, 3)[idx]).max() <= 1e-12 * np.abs(U).max()
    mp.destroy()


def test_a_tensor_unknown_is_refused_in_one_line(tmp_path):
    from hybrid.errors import ModelError

    (tmp_path / "tensor.py").write_text(
        "import ufl\nfrom dolfinx import fem\nimport hybrid.model as hm\n\n"
        "class Tensor(hm.Model):\n    name = 'tensor'\n"
        "    def parameters(self):\n        return 1\n"
        "    def build(self, ctx):\n"
        "        V = fem.functionspace(ctx.mesh, ('Lagrange', 1, (2, 2)))\n"
        "        u, v = fem.Function(V), ufl.TestFunction(V)\n"
        "        F = ctx.mu[0] * ufl.inner(u, v) * ufl.dx - v[0, 0] * ufl.dx\n"
        "        return hm.Problem(u=u, F=F)\n")
    text = ('[mesh]\ntype = "unit_square"\ncells = 2\n[physics]\nmodel = "tensor.py:Tensor"\n'
            '[parameters]\nk = { lower = 1.0, upper = 2.0 }\n[outputs]\nstore = "s"\nqoi = []\n')
    with pytest.raises(ModelError, match="scalar or a vector Lagrange field") as e:
        _problem_at(text, tmp_path / "t.toml")
    assert "\n" not in str(e.value)


def _problem_at(text: str, path: Path):
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    path.write_text(text)
    from hybrid.core.case import load_case

    return ModelProblem(load_case(path), MPI.COMM_WORLD)


def test_a_dependent_near_nullspace_is_one_line(tmp_path):
    from hybrid.errors import ModelError

    (tmp_path / "ns.py").write_text(
        "import ufl\nfrom dolfinx import fem\nimport hybrid.model as hm\n\n"
        "class NS(hm.Model):\n    name = 'ns'\n"
        "    def parameters(self):\n        return 1\n"
        "    def build(self, ctx):\n"
        "        V = fem.functionspace(ctx.mesh, ('Lagrange', 1, (2,)))\n"
        "        u, v = fem.Function(V), ufl.TestFunction(V)\n"
        "        F = ctx.mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v[0] * ufl.dx\n"
        "        m = hm.rigid_body_modes(V)\n"
        "        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, [0.0, 0.0])],\n"
        "                          near_nullspace=[m[0], m[0]])\n")
    text = ('[mesh]\ntype = "unit_square"\ncells = 2\n[physics]\nmodel = "ns.py:NS"\n'
            '[parameters]\nk = { lower = 1.0, upper = 2.0 }\n[outputs]\nstore = "s"\nqoi = []\n')
    with pytest.raises(ModelError, match="ns.py.*near_nullspace: the functions are linearly "
                                         "dependent") as e:
        _problem_at(text, tmp_path / "t.toml")
    assert "\n" not in str(e.value)
