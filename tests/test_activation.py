"""Activation-time maps through the platform (hybrid/fem/activation.py).

A reaction–diffusion plug-in (the monodomain model) is a map μ ↦ T(x; μ): campaigns store
one activation-time field per sample (NaN where the tissue never activated), electrodes
observe T at points, the FEM model gives observations and finite-difference Jacobians for
inference, POD-NN surrogates are trained on the store. Checked against independent
computations: the electrode value against the field at the node it sits on, the stored
field against a direct run of the splitting solver, the Jacobian against the sign the
physics dictates and against a second difference with another step.
"""

from __future__ import annotations

import numpy as np
import pytest
import ufl

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.core.store import SnapshotStore
from hybrid.errors import CaseError
from hybrid.fem import MPI
from hybrid.fem.activation import ActivationProblem, rows_apply
from hybrid.fem.model import FEMModel
from hybrid.fem.problems import create_problem
from hybrid.fem.splitting import solve_case
from hybrid.surrogate.errors import SurrogateError
from hybrid.workflows.campaign import run_campaign

SLAB = """
[case]
name = "slab_act"

[mesh]
{mesh}

[physics]
model = "hybrid.model.library.monodomain:Monodomain"
geometry = "slab"
ionic = "aliev_panfilov"
stimulus_region = [[0.0, 1.0], [0.0, 1.0]]
t_end = {t_end}
dt = 0.1

[parameters]
sigma_l = {{ lower = 0.06, upper = 0.24, log = true }}
sigma_t = {{ lower = 0.015, upper = 0.06, log = true }}

[observations]
points = {points}

[solver.petsc]
ksp_type = "cg"
pc_type = "gamg"
ksp_rtol = 1e-10

[sampling]
samples = {samples}
method = "sobol"
seed = 5

[outputs]
qoi = []
store = "{store}"
"""
LX, LY = 4.0, 2.0                      # mm
ELECTRODES_MM = [[4.0, 0.0], [0.0, 2.0], [2.0, 1.0]]   # on mesh vertices (cells 8 × 8)


def slab_text(tmp_path, t_end=60.0, samples=6, cells=8) -> str:
    mesh = f'type = "rectangle"\nextent = [[0.0, {LX}], [0.0, {LY}]]\ncells = {cells}'
    return SLAB.format(mesh=mesh, t_end=t_end, points=ELECTRODES_MM, samples=samples,
                       store=tmp_path / "store")


@pytest.fixture
def slab(tmp_path):
    return parse_case(slab_text(tmp_path), tmp_path / "slab.toml")


def test_create_problem_gives_the_activation_map(slab):
    p = create_problem(slab, MPI.COMM_WORLD)
    assert isinstance(p, ActivationProblem) and not p.transient
    rec = p.model_record()
    assert rec["affine"] is False and rec["certified"] is False
    assert p.field_record()["kind"] == "activation_time"


def test_solve_and_electrodes_match_the_splitting_run(slab):
    """T in the problem's field = the splitting solver's activation times; electrodes = T there."""
    mu = np.array([0.12, 0.03])
    p = create_problem(slab, MPI.COMM_WORLD)
    res = p.solve(mu)
    assert res.ok and "all DOFs activated" in res.reason, res.reason
    direct, V, solver = solve_case(slab, MPI.COMM_WORLD, mu=mu)
    solver.destroy()
    # the problem's loop stopped once all had activated; the direct run went on to t_end
    assert p.last.steps < direct.steps == 600 and p.last.t_end < 60.0
    np.testing.assert_allclose(p.u.x.array[:p.n_owned], direct.activation, rtol=0, atol=1e-9)
    y = p.observe()
    from hybrid.fem.splitting import value_at

    want = [value_at(V, direct.activation, p) for p in ELECTRODES_MM]
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-9)
    # physics: the stimulated corner is at the origin; the far x-corner (along the fibres,
    # 4 mm) activates before the far y-corner (across, 2 mm) only if c_l > 2 c_t
    assert 0 < y[2] < max(y[0], y[1])


def test_campaign_store_holds_activation_fields(tmp_path, slab):
    r = run_campaign(slab, progress=False, paraview=False)
    assert r.ok == 6 and r.failed == 0
    st = SnapshotStore(tmp_path / "store")
    assert st.field["kind"] == "activation_time" and st.field["unit"] == "ms"
    mu, U = st.snapshots()
    assert U.shape == (6, 81) and np.isfinite(U).all()
    L = st.static.observation_functionals
    fem = FEMModel(slab, MPI.COMM_WORLD)
    for k in (0, 3):
        # the stored field, observed by the stored rows = a fresh FEM solve's electrodes
        np.testing.assert_allclose(rows_apply(L, U[k]), fem.observe(mu[k]), atol=1e-9)
    # faster conduction activates earlier: T falls as σ_l grows (σ_t fixed)
    a = fem.observe(np.array([0.08, 0.03]))
    b = fem.observe(np.array([0.20, 0.03]))
    assert b[0] < a[0] - 1.0, (a, b)
    fem.close()


def test_never_activated_is_nan_and_training_refuses_it(tmp_path):
    """t_end too short: NaN where v never crossed; the store keeps it; a POD refuses it."""
    case = parse_case(slab_text(tmp_path, t_end=12.0, samples=3), tmp_path / "c.toml")
    p = create_problem(case, MPI.COMM_WORLD)
    res = p.solve(np.array([0.12, 0.03]))
    assert res.ok and "never activated" in res.reason
    T = p.u.x.array[:p.n_owned]
    assert np.isnan(T).any() and np.isfinite(T).any()
    y = p.observe()
    # the centre electrode (2, 1) mm is reached in 12 ms? it must be NaN exactly when its
    # cell's nodes are; the far corners are not reached
    assert np.isnan(y[0]) and np.isnan(y[1])
    run_campaign(case, progress=False, paraview=False)
    st = SnapshotStore(tmp_path / "store")
    mu, U = st.snapshots()
    assert np.isnan(U).any()
    from hybrid.surrogate.build import BuildOptions, build_surrogate

    with pytest.raises(SurrogateError, match="never activated"):
        build_surrogate(tmp_path / "store", BuildOptions())


def test_jacobian_by_central_differences(slab):
    """dT/dσ_l < 0 at the along-fibre electrode; two steps agree to O(h²)."""
    fem = FEMModel(slab, MPI.COMM_WORLD)
    mu = np.array([0.12, 0.03])
    y, J = fem.jacobian(mu)
    assert J.shape == (3, 2) and J[0, 0] < 0 and J[1, 1] < 0
    p = fem.problem
    assert p.jacobian_solves == 4
    import hybrid.fem.activation as act

    old = act.FD_STEP
    try:
        act.FD_STEP = 4e-3
        J2 = p.observation_jacobian(mu)
    finally:
        act.FD_STEP = old
    np.testing.assert_allclose(J, J2, rtol=2e-2, atol=1e-3 * np.abs(J).max())
    np.testing.assert_allclose(p.observe(), y, atol=1e-12)   # left at μ's own field
    fem.close()


def test_fluxes_and_times_refused(tmp_path):
    text = slab_text(tmp_path).replace("[observations]", '[observations]\nfluxes = { x0 = "x0" }')
    with pytest.raises(CaseError, match="fluxes"):
        create_problem(parse_case(text, tmp_path / "c.toml"), MPI.COMM_WORLD)
    text = slab_text(tmp_path).replace("[observations]", "[observations]\ntimes = [10.0]")
    with pytest.raises(CaseError, match="observations.times"):
        create_problem(parse_case(text, tmp_path / "c.toml"), MPI.COMM_WORLD)


def test_cardiac_slab_cases_pair_up_as_fine_and_coarse_levels():
    """cases/cardiac_slab*.toml: the same parameters and electrodes; the coarse level runs,
    everything activates before t_end, and the wave reaches x = 4 mm before x = 8 mm."""
    from pathlib import Path

    from hybrid.core.case import load_case
    from hybrid.workflows.infer import load_coarse_case

    cases = Path(__file__).resolve().parents[1] / "cases"
    fine = load_case(cases / "cardiac_slab.toml")
    coarse = load_coarse_case(cases / "cardiac_slab_coarse.toml", fine)
    assert fine.parameters.names == ["sigma_l", "sigma_t", "ap_a"]
    assert len(fine.observations.data_names()) == 8
    p = create_problem(coarse, MPI.COMM_WORLD)
    res = p.solve(np.array([0.06, 0.015, 0.2]))   # the slowest corner of the box
    assert res.ok and "all DOFs activated" in res.reason, res.reason
    y = p.observe()
    assert np.all(np.isfinite(y)) and y[1] < y[0] < coarse.physics.settings.t_end
    p.destroy()


FRONT_MODEL = '''
import numpy as np
import ufl
from dolfinx import fem

import hybrid.model as hm
from hybrid.model.reaction import ReactionDiffusion


class Front(hm.Model):
    """v_t = D Δv + v(1 − v)(v − 0.1) on the unit square, v = 1 for x < 0.25 initially."""

    name = "front"

    def parameters(self):
        return ["D"]

    def qoi_names(self):
        return ["mean_T", "left_T"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        v, phi = fem.Function(V), ufl.TestFunction(V)
        F = ctx.mu["D"] * ufl.inner(ufl.grad(v), ufl.grad(phi)) * ufl.dx
        n = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
        x = ufl.SpatialCoordinate(ctx.mesh)
        left = ufl.conditional(ufl.lt(x[0], 0.5), 1.0, 0.0)

        def rhs(t, vv, w):
            return vv * (1.0 - vv) * (vv - 0.1), w

        return ReactionDiffusion(
            u=v, F=F, initial=lambda X: np.where(X[0] < 0.25, 1.0, 0.0),
            time=hm.TimeGrid(0.0, 60.0, 0.1), reaction=rhs, states0=np.zeros((0, n)),
            threshold=0.5, qoi={"mean_T": v * ufl.dx, "left_T": 2.0 * left * v * ufl.dx})
'''


def test_qois_are_linear_functionals_of_the_activation_field(tmp_path):
    """A user's ReactionDiffusion plug-in: QoI forms written in v are l·T, checked against
    ∫ T dx assembled independently; the store's QoI column and rows agree with them."""
    from dolfinx import fem as dfem

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "front.py").write_text(FRONT_MODEL)
    text = f"""
[case]
name = "front"
[mesh]
type = "unit_square"
cells = 10
[physics]
model = "models/front.py:Front"
[parameters]
D = {{ lower = 0.005, upper = 0.02 }}
[observations]
points = [[0.5, 0.5]]
[sampling]
samples = 3
[outputs]
qoi = ["mean_T", "left_T"]
store = "{tmp_path / 'store'}"
"""
    case = parse_case(text, tmp_path / "front.toml")
    p = create_problem(case, MPI.COMM_WORLD)
    res = p.solve(np.array([0.01]))
    assert res.ok and "all DOFs activated" in res.reason, res.reason
    q = p.qoi()
    mean_T = MPI.COMM_WORLD.allreduce(dfem.assemble_scalar(dfem.form(p.u * ufl.dx)))
    assert q[0] == pytest.approx(mean_T, rel=1e-12)
    assert 0.0 <= q[1] < q[0]      # the left half activates first
    run_campaign(case, progress=False, paraview=False)
    st = SnapshotStore(tmp_path / "store")
    mu, Q = st.qois()
    _, U = st.snapshots()
    np.testing.assert_allclose(Q, U @ st.static.qoi_functionals.T, rtol=1e-12)
    assert np.all(np.diff(Q[np.argsort(mu[:, 0]), 0]) < 0)   # faster diffusion, earlier
