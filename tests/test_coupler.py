"""The coupler and its reduced-basis level, against an independent numpy FEM (no DOLFINx).

The "FEM" here is tests/conftest_surrogate.BlockFEM (its own P1 assembly and sparse solve),
wrapped in the interface of hybrid.fem.model.FEMModel (solve → state, commit).
"""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.core.store import ENRICHMENT_BASE, Sample, SnapshotStore, write_sample
from hybrid.inference import Observations
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.surrogate.rb import ReducedBasis
from hybrid.workflows.coupler import Coupler, CouplerError

from .conftest_surrogate import BlockFEM, make_store, space


class FakeState:
    def __init__(self, mu, u, y):
        self.mu, self.u, self.observations, self.ok, self.reason = mu, u, y, True, ""
        self.qoi, self.wall_time, self.iterations = None, 0.0, 1


class NumpyFEM:
    """FEMModel's interface over BlockFEM; observation: the store's functional (2 × mean)."""

    observation_names = ["twice_mean"]
    comm = None

    def __init__(self, fem: BlockFEM):
        self.fem, self.n_solves = fem, 0

    def y(self, u):
        return 2.0 * self.fem.qoi[:1] @ u

    def solve(self, mu, field=True):
        self.n_solves += 1
        u = self.fem.solve(mu)
        return FakeState(np.asarray(mu), u, self.y(u))

    def commit(self, store, state, run_id="coupler", index=None):
        index = ENRICHMENT_BASE + self.n_solves if index is None else index
        write_sample(store, Sample(index=index, mu=state.mu, status="ok", reason="",
                                   wall_time=0.0, u=state.u, run_id=run_id))
        return index


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("coupler")
    fem = BlockFEM(cells=16, blocks=2)
    store = make_store(root / "store", fem, space(2).sample(12, "sobol", 5))
    coarse, _ = build_surrogate(store, BuildOptions(kind="galerkin", modes=2))
    return fem, store, coarse


def test_reduced_basis_bounds_are_rigorous_and_enrichment_is_exact(world):
    fem, store, coarse = world
    static = SnapshotStore(store).static
    rb = ReducedBasis(static, coarse.spec, coarse.modes, coarse.estimator.mu_ref)
    X = fem.stiffness
    mus = space(2).sample(20, "random", 7)
    for mu in mus:
        u = fem.solve(mu)
        c = rb.solve(mu)
        e = u - rb.field(c)[0]
        err = np.sqrt(e @ (X @ e))
        bound = rb.bound(mu, c)
        assert err <= bound * (1 + 1e-10) and bound < 20 * err      # rigorous, not vacuous
        assert abs(2 * fem.qoi[0] @ e) <= rb.obs_dual_norms[0] * bound * (1 + 1e-10)
    # the same bound as the surrogate's own estimator (built independently, offline)
    assert np.allclose(rb.bound(mus, rb.solve(mus)), coarse.error_estimate(mus, relative=False),
                       rtol=1e-9)
    # enriching with a snapshot makes that snapshot exact, with a zero bound
    u0 = fem.solve(mus[0])
    n0 = rb.n
    assert rb.enrich(u0) and rb.n == n0 + 1
    c0 = rb.solve(mus[0])
    assert np.abs(rb.field(c0)[0] - u0).max() < 1e-12 * np.abs(u0).max()
    assert rb.bound(mus[0], c0) < 1e-10 * np.sqrt(u0 @ (X @ u0))
    assert not rb.enrich(2.0 * u0)                    # in the span: nothing to add
    # incremental update equals a model built from scratch on the enriched basis
    fresh = ReducedBasis(static, coarse.spec, rb.field(np.eye(rb.n)), coarse.estimator.mu_ref)
    for mu in mus[1:6]:
        assert np.isclose(rb.bound(mu, rb.solve(mu)), fresh.bound(mu, fresh.solve(mu)),
                          rtol=1e-8)


def test_coupler_falls_back_to_fem_when_untrusted_and_counts_it(world, tmp_path):
    fem, store, coarse = world
    model = NumpyFEM(fem)
    mu = np.array([0.15, 0.9, 0.6, 0.25])
    y_fem = model.y(fem.solve(mu))
    sigma = 1e-3 * abs(y_fem)                       # 0.1 % noise: the 2-mode basis is not enough
    cp = Coupler(coarse, model, sigma=sigma, tol=0.1, store=store)
    ans = cp.evaluate(mu)
    assert ans.source == "fem" and ans.etas["reduced-basis"] > 0.1
    assert np.allclose(ans.y, y_fem, rtol=1e-12)
    assert cp.n_fem == 1 and model.n_solves == 1
    assert cp.report()["answered_by"]["fem"] == 1 and cp.n_updates == 1
    # the snapshot went into the store, and into the reduced basis: now it answers there
    assert SnapshotStore(store).committed_indices() >= set(cp.committed)
    again = cp.evaluate(mu)
    assert again.source == "reduced-basis" and again.eta < 1e-6
    assert np.allclose(again.y, y_fem, rtol=1e-9)
    assert cp.n_fem == 1 and len(cp.switches) == 2


def test_coupler_answers_are_certified_within_tol_sigma(world):
    """Every non-FEM answer is within tol·σ of an independent FEM solve."""
    fem, store, coarse = world
    model = NumpyFEM(fem)
    sigma = np.array([2e-4])
    cp = Coupler(coarse, model, sigma=sigma, tol=0.5, store=None,
                 static=SnapshotStore(store).static)
    sources = []
    for mu in space(2).sample(40, "random", 3):
        ans = cp.evaluate(mu)
        sources.append(ans.source)
        err = abs(ans.y[0] - model.y(fem.solve(mu))[0])
        assert err <= 0.5 * sigma[0] * (1 + 1e-9), (ans.source, err / sigma[0])
    assert sources.count("fem") >= 1 and sources.count("reduced-basis") >= 10
    # the fallbacks enrich the basis: later queries need the FEM less often
    assert sources[:20].count("fem") > sources[20:].count("fem")


def test_coupler_with_network_surrogate_uses_three_levels(world):
    fem, store, _ = world
    from hybrid.surrogate.training import TrainingConfig

    cfg = TrainingConfig(width=16, depth=2, adam_epochs=50, lbfgs_iterations=100,
                         collocation=256, progress=False)
    net, _ = build_surrogate(store, BuildOptions(kind="pod-nn", training=cfg))
    model = NumpyFEM(fem)
    data = Observations(("twice_mean",), [0.1], [1e-3])      # sigma by name
    loose = Coupler(net, model, sigma=data, tol=1e3, store=store)
    assert loose.evaluate(np.full(4, 0.5)).source == "surrogate"
    tight = Coupler(net, model, sigma=data, tol=1e-12, store=None,
                    static=SnapshotStore(store).static)
    ans = tight.evaluate(np.full(4, 0.5))
    assert ans.source == "fem" and set(ans.etas) == {"surrogate", "reduced-basis"}
    r = tight.report()
    assert r["levels"] == ["surrogate", "reduced-basis", "fem"] and r["calls"]["fem"] == 1


def test_coupler_refuses_bad_setups(world):
    fem, store, coarse = world
    static = SnapshotStore(store).static
    with pytest.raises(CouplerError, match="sigma must be 1 positive"):
        Coupler(coarse, None, sigma=[1.0, 2.0], static=static)
    with pytest.raises(CouplerError, match="tol must be a positive"):
        Coupler(coarse, None, sigma=[1.0], tol=-1, static=static)
    cp = Coupler(coarse, None, sigma=[1e-9], static=static)
    with pytest.raises(CouplerError, match="no FEM model was given"):
        cp.evaluate(np.full(4, 0.5))
    from hybrid.errors import ParameterError

    with pytest.raises(ParameterError):
        cp.evaluate(np.array([0.5, 0.5, 0.5, 7.0]))
