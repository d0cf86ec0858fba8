"""The built-in thermal block is the library plug-in; fluxes come from the residual of any model.

- Same store as the hand-written thermal block to 1e-12 (relative): the reference arrays in
  tests/data/thermal_block_reference.npz were computed by the hand-written implementation
  (hybrid/fem/thermal_block.py at commit 584f397, removed since) with
  tests/data/make_thermal_block_reference.py. A frozen reference rather than a copy of the
  old code under tests/: it pins the store itself (ordering, solver and assembly included),
  so it also catches a later change of the shared parts the old code used.
- Fluxes of plug-ins other than the thermal block, against conservation (the heat made
  leaves through the Dirichlet boundary) and finite differences.
- Stores and surrogates written by the hand-written block (tests/data/legacy_thermal_block,
  made at 584f397 by the same script) load, answer as they did, resume, and train.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError

from .conftest import ROOT

DATA = Path(__file__).parent / "data"
REF = DATA / "thermal_block_reference.npz"
LEGACY = DATA / "legacy_thermal_block"


def _dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a, dtype=float)


def close(new, ref, rel: float = 1e-12) -> None:
    new, ref = _dense(new), _dense(ref)
    assert new.shape == ref.shape
    scale = np.abs(ref).max() if ref.size else 0.0
    assert np.abs(new - ref).max(initial=0.0) <= rel * scale, (np.abs(new - ref).max(), scale)


# ---------------------------------------------------------------------------- same store
@pytest.mark.parametrize("key", ["a", "b"])
def test_plugin_gives_the_hand_written_store(key):
    """Case a: P1, 3×3 blocks, a point, a 2×2 grid, an average, two fluxes; case b: P2,
    2×2 blocks, a grid and two fluxes. Static data, fields, QoIs, observations, the
    observation operator and both Jacobians equal the hand-written ones to 1e-12."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem
    from hybrid.fem.problems import create_problem

    ref = np.load(REF)
    case = parse_case(str(ref[f"{key}/case_text"]), Path(f"{key}.toml"))
    assert case.physics.plugin and case.physics.loaded.reference == "thermal_block"
    p = create_problem(case, MPI.COMM_SELF)
    assert isinstance(p, ModelProblem)
    s = p.static_data()
    for name in ("points", "cells", "mass", "stiffness", "dirichlet_dofs", "affine_f",
                 "qoi_functionals", "observation_functionals", "observation_affine",
                 "observation_affine_f"):
        close(getattr(s, name), ref[f"{key}/{name}"])
    assert len(s.affine_a) == len(ref[f"{key}/affine_a"])
    for A, R in zip(s.affine_a, ref[f"{key}/affine_a"], strict=True):
        close(A, R)
    rec = p.model_record()
    B = case.physics.settings.blocks
    assert rec["theta_a"] == [{"mu": k} for k in range(B * B)] and rec["theta_f"] == [1.0]
    assert rec["certified"] and rec["linear"] and rec["reference"] == "thermal_block"
    n_flux = len(case.observations.fluxes)
    for j in range(2):
        q = f"{key}/mu{j}/"
        mu = ref[q + "mu"]
        assert p.solve(mu).ok
        close(p.ordering.gather_function(p.u), ref[q + "u"])
        close(p.qoi(), ref[q + "qoi"])
        close(p.observe(), ref[q + "observe"])
        rows, offset = p.observation_operator(mu)
        close(rows, ref[q + "operator_rows"])
        close(offset, ref[q + "operator_offset"])
        J_ref = ref[q + "observation_jacobian"]
        close(p.observation_jacobian(mu)[:-n_flux], J_ref[:-n_flux])
        close(p.flux_jacobian(mu), J_ref[-n_flux:])
        close(p.qoi_jacobian(mu), ref[q + "qoi_jacobian"])
    p.destroy()


def test_the_builtin_name_and_the_shipped_cases_are_the_plugin(tmp_path):
    import hashlib

    import hybrid.model.library.thermal_block as tb

    for name in ("thermal_block", "thermal_block_2x2", "thermal_block_gmsh"):
        c = load_case(ROOT / "cases" / f"{name}.toml")
        assert c.physics.plugin and c.physics.loaded.cls is tb.ThermalBlock
        sha = hashlib.sha256(Path(tb.__file__).read_bytes()).hexdigest()
        assert c.fingerprint()["model"] == {"reference": "thermal_block", "sha256": sha}
        # the [physics] table is recorded as the hand-written block recorded it
        assert c.physics.settings.model_dump() == {"model": "thermal_block", "blocks":
                                                   c.physics.settings.blocks, "degree": 1,
                                                   "source": 1.0}
    from .conftest import small_case_text

    text = small_case_text().replace("cells = 12", 'type = "unit_cube"\ncells = 2', 1)
    text = text.replace('type = "unit_square"\n', "", 1)
    with pytest.raises(CaseError, match="mesh.type: the thermal block is posed on the unit"):
        parse_case(text, tmp_path / "c.toml")


def test_gmsh_case_blocks_are_the_mesh_physical_groups():
    """On cases/thermal_block_gmsh.toml the block of each cell (from its midpoint) is the
    gmsh physical group it was meshed in (k + 1), so κ is exact; the fluxes of the four
    sides carry the heat made, ∫ s = 1."""
    from dolfinx import mesh as dmesh
    from dolfinx.io import gmsh as dgmsh
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    msh_file = ROOT / "meshes" / "unit_square_3x3.msh"
    data = dgmsh.read_from_msh(str(msh_file), MPI.COMM_SELF, 0, gdim=2)
    tags = data.cell_tags
    mids = dmesh.compute_midpoints(data.mesh, 2, tags.indices)
    ix, iy = (np.clip(np.floor(mids[:, i] * 3).astype(int), 0, 2) for i in (0, 1))
    assert np.array_equal(ix + 3 * iy + 1, tags.values)
    text = (ROOT / "cases" / "thermal_block_gmsh.toml").read_text()
    text += 'fluxes = { all = ["x0", "x1", "y0", "y1"] }\n'
    case = parse_case(text, ROOT / "cases" / "thermal_block_gmsh.toml")
    p = ModelProblem(case, MPI.COMM_SELF)
    assert p.solve(np.linspace(0.1, 1.0, 9)).ok
    assert abs(p.observe()[-1] - 1.0) < 1e-12
    p.destroy()


# ---------------------------------------------------------------------------- fluxes of plug-ins
ONE_SIDE = '''
import ufl
from dolfinx import fem, mesh

import hybrid.model as hm


class OneSide(hm.Model):
    """−∇·(μ0 ∇u) + μ1 u = 1, u = 0 on x = 0 only (insulated elsewhere)."""

    name = "one_side"

    def parameters(self):
        return 2

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        F = (ctx.mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) + ctx.mu[1] * u * v - v) * ufl.dx
        ctx.mesh.topology.create_connectivity(1, 2)
        facets = mesh.locate_entities_boundary(ctx.mesh, 1, lambda x: x[0] < 1e-12)
        dofs = fem.locate_dofs_topological(V, 1, facets)
        return hm.Problem(u=u, F=F, bcs=[fem.dirichletbc(0.0, dofs, V)],
                          qoi={"mean": u * ufl.dx}, coercive=True)
'''


def _plugin_case(tmp_path, model: str, fluxes: str, params: str) -> object:
    text = textwrap.dedent(f"""\
        [mesh]
        type = "unit_square"
        cells = 8
        [physics]
        model = "{model}"
        [parameters]
        {params}
        [outputs]
        qoi = ["mean"]
        [observations]
        grid = 2
        fluxes = {fluxes}
        """)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_case(path)


def test_fluxes_of_a_nonlinear_plugin_conserve_and_differentiate(tmp_path):
    """Nonlinear diffusion −∇·((μ0 + μ1 u²)∇u) = 1, u = 0 on ∂Ω: the four sides' fluxes
    −F(u; g_Γ) add up to ∫ s = 1 (to the Newton tolerance), the symmetric mesh splits them
    equally, and flux_jacobian equals central differences of full Newton solves. A store
    cannot hold these fluxes (not affine in θ): one line."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    case = _plugin_case(tmp_path, "nonlinear_diffusion",
                        '{ left = "x0", right = "x1", bottom = "y0", top = "y1" }',
                        "mu0 = { lower = 0.5, upper = 2.0 }\nmu1 = { lower = 0.0, upper = 4.0 }")
    p = ModelProblem(case, MPI.COMM_SELF)
    mu = np.array([0.7, 3.0])
    assert p.solve(mu).ok
    y = p.observe()
    flux = y[4:]
    assert abs(flux.sum() - 1.0) < 1e-9
    np.testing.assert_allclose(flux, 0.25, rtol=0, atol=1e-9)
    J = p.flux_jacobian(mu)
    h = 1e-5
    for q in range(2):
        e = np.zeros(2)
        e[q] = h
        assert p.solve(mu + e).ok
        yp = p.observe()[4:]
        assert p.solve(mu - e).ok
        ym = p.observe()[4:]
        fd = (yp - ym) / (2 * h)
        # conservation makes the total flux μ-independent; each side's derivative is ~0 too
        assert np.abs(J[:, q] - fd).max() <= 1e-6
    with pytest.raises(CaseError) as info:
        p.static_data()
    msg = str(info.value)
    assert "observations.fluxes: a store holds fluxes as affine" in msg and "\n" not in msg
    p.destroy()


def test_flux_through_the_dirichlet_side_of_a_partly_insulated_plugin(tmp_path):
    """u = 0 on x = 0 only: the heat made, ∫ s = 1, either leaves through x0 or is absorbed,
    so the flux is 1 − μ1 ∫ u dx (discretely too: F(u; φ_i) = 0 at every free DOF). The
    store's B_q, b_q reproduce it, and flux_jacobian equals the derivative of 1 − μ1·mean
    from the QoI Jacobian. A flux through an insulated side is refused."""
    from mpi4py import MPI

    from hybrid.core.theta import AffineCoefficients
    from hybrid.fem.model_problem import ModelProblem

    (tmp_path / "one_side.py").write_text(ONE_SIDE)
    params = "mu0 = { lower = 0.5, upper = 2.0 }\nmu1 = { lower = 0.0, upper = 4.0 }"
    case = _plugin_case(tmp_path, "one_side.py", '{ left = "x0" }', params)
    p = ModelProblem(case, MPI.COMM_SELF)
    s = p.static_data()
    coef = AffineCoefficients.from_record(p.model_record(), 2)
    for mu in ([0.5, 0.0], [1.7, 3.2]):
        mu = np.array(mu)
        assert p.solve(mu).ok
        y = p.observe()
        mean = p.qoi()[0]
        assert mean > 0.05 and abs(y[-1] - (1.0 - mu[1] * mean)) < 1e-12
        u = p.ordering.gather_function(p.u)
        np.testing.assert_allclose(s.observe(u, coef.theta_a(mu), coef.theta_f(mu)), y,
                                   rtol=0, atol=1e-12)
        dq = p.qoi_jacobian(mu)[0]
        expect = -mu[1] * dq - np.array([0.0, mean])
        np.testing.assert_allclose(p.flux_jacobian(mu)[0], expect, rtol=1e-10, atol=1e-12)
    p.destroy()
    case = _plugin_case(tmp_path, "one_side.py", '{ right = "x1" }', params)
    p = ModelProblem(case, MPI.COMM_SELF)
    assert p.solve(np.array([1.0, 1.0])).ok
    with pytest.raises(CaseError, match=r"observations\.fluxes\.right: side 'x1' has boundary "
                                        r"DOFs without a Dirichlet condition"):
        p.observe()
    p.destroy()


# ---------------------------------------------------------------------------- old stores
def _legacy(tmp_path) -> tuple[Path, object]:
    root = tmp_path / "legacy"
    shutil.copytree(LEGACY, root)
    text = (root / "case.toml").read_text().replace('store = "store"',
                                                    f'store = "{root / "store"}"')
    (root / "case.toml").write_text(text)
    return root, load_case(root / "case.toml")


def test_old_store_and_surrogates_load_and_answer_as_before(tmp_path):
    """The old store has no model record: θ_k = μ_k, ϑ_0 = 1 (affine, certified); its
    surrogates pass check_case with today's case and give the answers they gave at 584f397."""
    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate.coefficients import coefficients_of
    from hybrid.surrogate.surrogate import Surrogate

    root, case = _legacy(tmp_path)
    st = SnapshotStore(root / "store")
    assert "model" not in st.manifest and "model" not in st.manifest["fingerprint"]
    coef = coefficients_of(st.manifest, 4)
    mu = np.array([0.3, 0.8, 0.55, 0.15])
    assert coef.affine and np.array_equal(coef.theta_a(mu), mu)
    assert np.array_equal(coef.theta_f(mu), [1.0])
    answers = json.loads((root / "answers.json").read_text())
    for kind in ("galerkin", "podnn"):
        s = Surrogate.load(root / kind, case=case)
        a = answers[kind]
        np.testing.assert_allclose(s.field(mu), a["field"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s.qoi(mu), a["qoi"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s.observe(mu), a["observe"], rtol=1e-12, atol=1e-15)
        assert s.error_estimate(mu) == pytest.approx(a["error_estimate"], rel=1e-10)
    # the rule is narrow: another case (other QoIs) is still refused
    other = parse_case((root / "case.toml").read_text().replace(
        'qoi = ["mean", "block_mean_0"]', 'qoi = ["mean"]'), root / "other.toml")
    with pytest.raises(Exception, match="QoIs differ"):
        Surrogate.load(root / "galerkin", case=other)


def test_old_store_resumes_with_the_plugin_and_trains(tmp_path):
    """A campaign resumes the old store (6 → 9 samples); the new samples equal a fresh
    plug-in campaign's to 1e-12, the old ones are untouched, the manifest is the old one;
    a Galerkin surrogate built today from the old store answers like the old one."""
    from mpi4py import MPI

    from hybrid.core.store import SnapshotStore
    from hybrid.errors import StoreError
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.workflows.campaign import run_campaign

    root, case = _legacy(tmp_path)
    before = SnapshotStore(root / "store")
    mu0, U0 = before.snapshots()
    manifest = json.loads((root / "store" / "store.json").read_text())
    run_campaign(case, samples=9, progress=False, paraview=False, comm=MPI.COMM_SELF)
    after = SnapshotStore(root / "store")
    mu1, U1 = after.snapshots()
    assert len(mu1) == 9 and np.array_equal(U1[:6], U0) and np.array_equal(mu1[:6], mu0)
    assert json.loads((root / "store" / "store.json").read_text()) == manifest
    fresh = tmp_path / "fresh"
    run_campaign(case, samples=9, store=fresh, progress=False, paraview=False,
                 comm=MPI.COMM_SELF)
    new = SnapshotStore(fresh)
    assert new.manifest["model"]["theta_a"] == [{"mu": k} for k in range(4)]
    mu2, U2 = new.snapshots()
    np.testing.assert_array_equal(mu2, mu1)
    assert np.abs(U2 - U1).max() <= 1e-12 * np.abs(U1).max()
    close(new.static.observation_affine, after.static.observation_affine)
    close(new.static.affine_a[2], after.static.affine_a[2])
    # a different case is still refused by the old store
    other = parse_case((root / "case.toml").read_text().replace("grid = 2", "grid = 3"),
                       root / "other.toml")
    with pytest.raises(StoreError, match="different case"):
        run_campaign(other, samples=9, progress=False, paraview=False, comm=MPI.COMM_SELF)
    # training today on the old store: the same Galerkin surrogate (deterministic)
    shutil.rmtree(root / "store" / "samples")
    shutil.copytree(LEGACY / "store" / "samples", root / "store" / "samples")
    s, _ = build_surrogate(root / "store", BuildOptions(kind="galerkin", modes=4))
    a = json.loads((root / "answers.json").read_text())["galerkin"]
    np.testing.assert_allclose(s.field(np.array(a["mu"])), a["field"], rtol=1e-10, atol=1e-13)


def test_fem_model_jacobian_includes_the_flux_rows():
    """FEMModel.jacobian (what MAP confirmation uses) gives the hand-written block's dy/dμ,
    flux rows included (they depend on μ directly, not only through u)."""
    from mpi4py import MPI

    from hybrid.fem.model import FEMModel

    ref = np.load(REF)
    case = parse_case(str(ref["a/case_text"]), Path("a.toml"))
    fem_model = FEMModel(case, MPI.COMM_SELF)
    y, J = fem_model.jacobian(ref["a/mu1/mu"])
    close(y, ref["a/mu1/observe"])
    close(J, ref["a/mu1/observation_jacobian"])
    assert np.abs(J[-2:]).max() > 1e-3     # the flux rows are not zero
    fem_model.close()


@pytest.mark.mpi(min_size=2)
def test_fluxes_and_their_jacobian_on_two_ranks_equal_the_reference():
    """Case a on COMM_WORLD (the ghosted flux weights, the gathered B_q rows and the
    distributed flux Jacobian): the hand-written block's numbers to 1e-12."""
    from mpi4py import MPI

    from hybrid.fem.model_problem import ModelProblem

    ref = np.load(REF)
    case = parse_case(str(ref["a/case_text"]), Path("a.toml"))
    p = ModelProblem(case, MPI.COMM_WORLD)
    assert p.V.dofmap.index_map.size_local < p.V.dofmap.index_map.size_global
    s = p.static_data()
    mu = ref["a/mu1/mu"]
    assert p.solve(mu).ok
    close(p.observe(), ref["a/mu1/observe"])
    close(p.flux_jacobian(mu), ref["a/mu1/observation_jacobian"][-2:])
    op = p.observation_operator(mu)
    if MPI.COMM_WORLD.rank == 0:
        close(s.observation_affine, ref["a/observation_affine"])
        close(s.observation_affine_f, ref["a/observation_affine_f"])
        close(op[0], ref["a/mu1/operator_rows"])
    else:
        assert s is None and op is None
    p.destroy()
