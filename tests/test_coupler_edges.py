"""The coupler's decisions, bookkeeping and set-up checks, with small stand-in models.

An ensemble surrogate stand-in (K members whose observations are given) has η = max_i
s_i/σ_i with s_i the members' sample standard deviation (ddof 1): the trust test is checked
against that formula, the tolerance included (η = tol is trusted). The FEM stand-in returns
chosen observations, possibly in another order, and can fail. The affine path runs on the
small thermal-block store of tests/test_coupler.py, where the reduced-basis bound is
rigorous: every answer is within η·σ of the FEM.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.core.store import SnapshotStore
from hybrid.errors import ParameterError, SolveFailed
from hybrid.inference import ForwardModel, Observations
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.surrogate.rb import ReducedBasis
from hybrid.workflows.coupler import Coupler, CouplerError

from .conftest_surrogate import BlockFEM, make_store, space
from .test_coupler import NumpyFEM

SPACE = ParameterSpace((Parameter("m", 0.0, 1.0), Parameter("n", 0.0, 1.0)))


class Ensemble:
    """K members; member k predicts coefficients c_k(μ) = base(μ) + offsets[k]."""

    kind = "pod-nn"
    estimator = None
    space = SPACE

    def __init__(self, offsets, names=("a", "b")):
        self.offsets = np.asarray(offsets, dtype=float)        # (K, 2)
        self.members = len(self.offsets)
        self.observation_names = list(names)
        self.observation_matrix = np.array([[1.0, 0.0], [0.0, 2.0]])

    def members_predict(self, mu):
        return np.asarray(mu, float)[None, :] + self.offsets


class State:
    def __init__(self, mu, y, ok=True, reason=""):
        self.mu, self.u, self.observations, self.ok, self.reason = mu, np.ones(3), y, ok, reason


class FEM:
    """Observations (m + n, m − n) in the order ``observation_names``; fails if told to."""

    def __init__(self, names=("a", "b"), fail=False, comm=None):
        self.observation_names = list(names)
        self.fail, self.comm, self.solves, self.commits = fail, comm, 0, []

    def values(self, mu):
        v = {"a": mu[0] + mu[1], "b": mu[0] - mu[1]}
        return np.array([v[n] for n in self.observation_names])

    def solve(self, mu, field=False):
        assert field is True                                   # the coupler needs the field
        self.solves += 1
        return State(mu, self.values(mu), ok=not self.fail, reason="diverged")

    def commit(self, store, state, run_id="coupler", index=None):
        self.commits.append((store, run_id, index))
        return index


def _eta(offsets, sigma):
    ys = (np.asarray(offsets) + 0.5) @ np.array([[1.0, 0.0], [0.0, 2.0]]).T
    return float(np.max(ys.std(axis=0, ddof=1) / sigma))


def test_the_ensemble_answers_when_its_spread_is_within_tol_sigma():
    offs = np.array([[0.0, 0.0], [0.2, 0.1], [-0.1, 0.3]])
    sigma = np.array([0.5, 1.0])
    eta = _eta(offs, sigma)
    mu = np.array([0.5, 0.5])
    cp = Coupler(Ensemble(offs), FEM(), sigma=sigma, tol=eta)         # η = tol: trusted
    ans = cp.evaluate(mu)
    members = (mu + offs) @ np.array([[1.0, 0.0], [0.0, 2.0]]).T
    assert ans.source == "surrogate" and ans.eta == pytest.approx(eta, rel=1e-12)
    assert np.allclose(ans.y, members.mean(axis=0), rtol=1e-12)
    assert ans.etas == {"surrogate": ans.eta}
    assert cp.counts["surrogate"].calls == 1 and cp.counts["surrogate"].time >= 0
    tight = Coupler(Ensemble(offs), FEM(), sigma=sigma, tol=eta * (1 - 1e-9))
    ans = tight.evaluate(mu)
    assert ans.source == "fem" and ans.eta == 0.0
    assert np.allclose(ans.y, [1.0, 0.0]) and ans.etas["surrogate"] == pytest.approx(eta)
    r = tight.report()
    assert r["levels"] == ["surrogate", "fem"] and r["bound"] == "ensemble spread (indicator)"
    assert r["reduced_basis_size"] is None and r["updates"] == 0
    assert r["calls"] == {"surrogate": 1, "reduced-basis": 0, "fem": 1} and tight.n_fem == 1
    assert r["answered_by"] == {"surrogate": 0, "reduced-basis": 0, "fem": 1}
    assert r["criterion"] == "max_i delta_i/sigma_i <= tol" and r["tol"] == tight.tol
    assert r["queries"] == 1 and r["switches"] == 1 and r["time_s"]["fem"] >= 0
    assert r["committed_samples"] == [] and r["update_time_s"] >= 0


def test_switches_are_recorded_when_the_source_changes():
    offs = np.array([[0.0, 0.0], [0.1, 0.1]])
    fem = FEM()
    cp = Coupler(Ensemble(offs), fem, sigma=[1.0, 1.0], tol=0.2)
    wide = Coupler(Ensemble(offs * 10), fem, sigma=[1.0, 1.0], tol=0.2)
    assert cp.observe([0.1, 0.2]).tolist() == pytest.approx([0.15, 0.5])
    cp(np.array([0.3, 0.3]))
    assert len(cp.switches) == 1 and cp.n_queries == 2
    assert cp.switches[0] == {"mu": [0.1, 0.2], "source": "surrogate",
                              "etas": {"surrogate": pytest.approx(_eta(offs, 1.0))},
                              "query": 1, "certified": False, "basis": "ensemble"}
    assert cp.counts["surrogate"].calls == 2 and cp.counts["fem"].calls == 0
    cp.surrogate = wide.surrogate                              # now untrusted: FEM
    cp.evaluate([0.4, 0.1])
    cp.evaluate([0.4, 0.2])
    assert [s["source"] for s in cp.switches] == ["surrogate", "fem"]
    assert cp.switches[1]["query"] == 3 and cp.answered_by["fem"] == 2
    assert cp.report()["switches"] == 2 and fem.solves == 2


def test_switches_are_logged_and_times_accumulated(caplog):
    import logging
    import time

    class Slow(Ensemble):
        def members_predict(self, mu):
            time.sleep(0.02)
            return super().members_predict(mu)

    cp = Coupler(Slow([[0.0, 0.0], [0.1, 0.1]]), FEM(), sigma=[1.0, 1.0])
    assert cp.tol == 0.1                                       # the default tolerance
    assert cp.report()["update_time_s"] == 0.0 and cp.report()["time_s"]["surrogate"] == 0.0
    cp.tol = 0.2
    with caplog.at_level(logging.INFO, logger="hybrid.workflows.coupler"):
        t0 = time.perf_counter()
        cp.evaluate([0.123456, 0.2])
        cp.evaluate([0.3, 0.2])
        wall = time.perf_counter() - t0
    eta = _eta([[0.0, 0.0], [0.1, 0.1]], 1.0)
    assert [r.getMessage() for r in caplog.records] == [
        f"coupler: surrogate at mu=[0.1235, 0.2] (eta {{'surrogate': '{eta:.2g}'}}, tol 0.2)"]
    assert 0.04 <= cp.counts["surrogate"].time <= wall


def test_fem_observations_are_put_in_the_surrogates_order():
    offs = np.array([[0.0, 0.0], [5.0, 5.0]])                  # never trusted
    mu = np.array([0.7, 0.2])
    for names in (("a", "b"), ("b", "a")):
        cp = Coupler(Ensemble(offs), FEM(names), sigma=[1.0, 1.0], tol=0.1)
        assert np.allclose(cp.observe(mu), [0.9, 0.5], rtol=1e-12)
    plain = FEM()
    del plain.observation_names                                # the case's names, then
    plain.values = lambda mu: np.array([int(10 * mu[0]), 3])  # integers
    cp = Coupler(Ensemble(offs), plain, sigma=[1.0, 1.0], tol=0.1)
    y = cp.observe(mu)
    assert y.dtype == np.float64 and y.tolist() == [7.0, 3.0]
    wider = FEM(("b", "c", "a"))
    wider.values = lambda mu: np.array([mu[0] - mu[1], 7.0, mu[0] + mu[1]])
    cp = Coupler(Ensemble(offs), wider, sigma=[1.0, 1.0], tol=0.1)
    assert np.allclose(cp.observe(mu), [0.9, 0.5], rtol=1e-12)


def test_a_failed_fem_solve_raises_and_is_counted():
    cp = Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), FEM(fail=True), sigma=[1.0, 1.0])
    with pytest.raises(SolveFailed, match=r"^FEM solve at mu=\[0.5, 0.25\] failed: diverged$"):
        cp.evaluate([0.5, 0.25])
    with pytest.raises(SolveFailed, match=r"^FEM solve at mu=\[0.123457, 0.5\] failed"):
        cp.evaluate([0.1234567, 0.5])                          # μ rounded to 6 digits
    assert cp.n_fem == 2 and cp.n_queries == 0
    fm = cp.forward_model()
    assert isinstance(fm, ForwardModel) and fm.name == "coupler" and fm.names == ["a", "b"]
    assert fm.failures == (SolveFailed,)
    Y = fm(np.array([[0.5, 0.25]]))                            # a failure is a NaN row
    assert np.all(np.isnan(Y)) and fm.n_failed == 1
    ok = Coupler(Ensemble([[0.0, 0.0], [0.0, 0.0]]), None, sigma=[1.0, 1.0])
    assert np.allclose(ok.forward_model()(np.array([0.2, 0.3])), [0.2, 0.6])
    with pytest.raises(CouplerError, match=r"^the surrogate is not trusted at mu=\[0.5, 0.25\] "
                                           "and no FEM model was given$"):
        Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), None, sigma=[1.0, 1.0]).evaluate(
            [0.5, 0.25])
    with pytest.raises(CouplerError, match=r"mu=\[0.123457, 0.5\] and no FEM"):
        Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), None, sigma=[1.0, 1.0]).evaluate(
            [0.1234567, 0.5])


def test_fem_and_update_times_are_accumulated(tmp_path):
    import time

    class Slow(FEM):
        def solve(self, mu, field=False):
            time.sleep(0.02)
            return super().solve(mu, field)

        def commit(self, store, state, run_id="coupler", index=None):
            time.sleep(0.02)
            return super().commit(store, state, run_id, index)

    cp = Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), Slow(), sigma=[1.0, 1.0], store=tmp_path,
                 static=object(), index_base=0)
    t0 = time.perf_counter()
    cp.evaluate([0.1, 0.1])
    cp.evaluate([0.2, 0.1])
    wall = time.perf_counter() - t0
    r = cp.report()
    assert 0.04 <= r["time_s"]["fem"] <= wall and 0.04 <= r["update_time_s"] <= wall
    assert r["time_s"]["fem"] + r["update_time_s"] <= wall


def test_commits_go_to_the_store_with_consecutive_indices(tmp_path):
    fem = FEM()
    cp = Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), fem, sigma=[1.0, 1.0],
                 store=tmp_path, static=object(), index_base=100, run_id="r7")
    for mu in ([0.1, 0.1], [0.2, 0.1], [0.3, 0.1]):
        cp.evaluate(mu)
    assert fem.commits == [(tmp_path, "r7", 100), (tmp_path, "r7", 101), (tmp_path, "r7", 102)]
    assert cp.committed == [100, 101, 102] and cp.report()["committed_samples"] == [100, 101,
                                                                                    102]
    assert cp.n_fem == 3 and cp.report()["calls"]["fem"] == 3
    fem2 = FEM()
    cp = Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), fem2, sigma=[1.0, 1.0], store=tmp_path,
                 static=object())
    cp.evaluate([0.1, 0.1])
    assert fem2.commits == [(tmp_path, "coupler", None)]
    assert cp.report()["committed_samples"] == []             # the FEM numbered it: None
    fem3 = FEM()
    Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), fem3, sigma=[1.0, 1.0]).evaluate([0.1, 0.1])
    assert fem3.commits == []                                  # no store: nothing kept


class Comm:
    def __init__(self, size):
        self.size, self.calls = size, []

    def bcast(self, obj, root=0):
        assert root == 0
        self.calls.append(obj)
        return obj


def test_on_several_ranks_the_roots_decision_is_broadcast():
    comm = Comm(2)
    cp = Coupler(Ensemble([[0.0, 0.0], [0.0, 0.0]]), FEM(comm=comm), sigma=[1.0, 1.0])
    ans = cp.evaluate([0.2, 0.3])
    assert ans.source == "surrogate" and comm.calls == [ans]
    cp = Coupler(Ensemble([[0.0, 0.0], [5.0, 5.0]]), FEM(comm=comm), sigma=[1.0, 1.0])
    comm.calls.clear()
    assert cp.evaluate([0.2, 0.3]).source == "fem" and comm.calls == [None]
    single = Comm(1)
    cp = Coupler(Ensemble([[0.0, 0.0], [0.0, 0.0]]), FEM(comm=single), sigma=[1.0, 1.0])
    cp.evaluate([0.2, 0.3])
    assert single.calls == []                                  # one rank: no broadcast


def test_set_up_errors():
    ens = Ensemble([[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(CouplerError, match="^the surrogate predicts no observations: declare "
                                           r"\[observations\] in the case file"):
        Coupler(Ensemble([[0.0, 0.0], [1.0, 1.0]], names=()), None, sigma=[])
    for bad in ([1.0], [1.0, 0.0], [1.0, -2.0], [[1.0, 1.0]] * 2, [np.nan, 1.0]):
        with pytest.raises(CouplerError, match=r"^sigma must be 2 positive values \(one per "
                                               r"observation \['a', 'b'\]\)$"):
            Coupler(ens, None, sigma=bad)
    assert Coupler(ens, None, sigma=[[1.0, 2.0]]).sigma.tolist() == [1.0, 2.0]   # flattened
    for tol in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(CouplerError, match=f"^tol must be a positive number, got {tol}$"):
            Coupler(ens, None, sigma=[1.0, 1.0], tol=tol)
    one = Ensemble([[0.0, 0.0]])
    with pytest.raises(CouplerError, match="^the coupler needs an error estimate: an affine "
                                           r"model \(residual bound\), an ensemble"):
        Coupler(one, None, sigma=[1.0, 1.0])
    with pytest.raises(CouplerError, match="^trust must be one of"):
        Coupler(ens, None, sigma=[1.0, 1.0], trust="hope")
    other = Ensemble([[0.0, 0.0], [1.0, 1.0]])
    other.kind = "pod-gp"
    with pytest.raises(CouplerError, match="needs an error estimate"):
        Coupler(other, None, sigma=[1.0, 1.0])
    cp = Coupler(ens, None, sigma=[1.0, 1.0])
    with pytest.raises(CouplerError, match=r"^evaluate takes one parameter vector, got shape "
                                           r"\(2, 2\)$"):
        cp.evaluate(np.full((2, 2), 0.5))
    with pytest.raises(ParameterError):
        cp.evaluate([0.5, 2.0])
    with pytest.raises(CouplerError, match="^retrain needs the store$"):
        cp.retrain()


def test_sigma_from_observations_by_name():
    ens = Ensemble([[0.0, 0.0], [0.3, 0.4]])
    data = Observations(("b", "x", "a"), [0.0, 0.0, 0.0], [2.0, 9.0, 0.5])
    cp = Coupler(ens, None, sigma=data, tol=10.0)
    assert cp.sigma.tolist() == [0.5, 2.0]
    only_b = Observations(("b",), [0.0], [2.0])
    cp = Coupler(ens, None, sigma=only_b, tol=10.0)
    assert cp.sigma.tolist() == [np.inf, 2.0]                 # unobserved: never binding
    ans = cp.evaluate([0.5, 0.5])
    assert ans.eta == pytest.approx(np.std([0.0, 0.8], ddof=1) / 2.0)


# ------------------------------------------------------------------ the affine path
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("coupler_edges")
    fem = BlockFEM(cells=16, blocks=2)
    store = make_store(root / "store", fem, space(2).sample(12, "sobol", 5))
    coarse, _ = build_surrogate(store, BuildOptions(kind="galerkin", modes=2))
    return fem, store, coarse


def test_affine_levels_and_their_certified_errors(world):
    fem, store, coarse = world
    static = SnapshotStore(store).static
    rb = ReducedBasis(static, coarse.spec, coarse.modes, coarse.estimator.mu_ref)
    model = NumpyFEM(fem)
    mu = np.array([0.3, 0.5, 0.7, 0.2])
    y_fem = model.y(fem.solve(mu))
    # the surrogate level alone (no reduced basis): η = ν Δ(μ; c)/σ, and |error| ≤ η σ
    sigma = np.array([1e-2])
    cp = Coupler(coarse, model, sigma=sigma, tol=1e3, store=None, static=static,
                 reduced_basis=False)
    assert cp.report()["levels"] == ["surrogate", "fem"] and cp.affine
    ans = cp.evaluate(mu)
    c = coarse.predict(mu)
    eta = np.max(rb.obs_dual_norms * coarse.error_estimate(mu, relative=False,
                                                           coefficients=c) / sigma)
    assert ans.source == "surrogate" and ans.eta == pytest.approx(eta, rel=1e-9)
    assert np.allclose(ans.y, c @ coarse.observation_matrix.T, rtol=1e-12)
    assert abs(ans.y[0] - y_fem[0]) <= ans.eta * sigma[0] * (1 + 1e-9)
    assert cp.report()["bound"] == "residual (rigorous)"
    # η = tol is trusted at the reduced-basis level too
    probe = Coupler(coarse, model, sigma=sigma, tol=1e-30, store=None, static=static,
                    enrich=False)
    eta_rb = probe.evaluate(mu).etas["reduced-basis"]
    at = Coupler(coarse, model, sigma=sigma, tol=eta_rb, store=None, static=static)
    assert at.evaluate(mu).source == "reduced-basis"
    # a Galerkin surrogate with the reduced basis on: the surrogate level is skipped
    cp = Coupler(coarse, model, sigma=sigma, tol=1e3, store=None, static=static)
    ans = cp.evaluate(mu)
    assert cp.report()["levels"] == ["reduced-basis", "fem"] and ans.source == "reduced-basis"
    assert set(ans.etas) == {"reduced-basis"} and cp.counts["surrogate"].calls == 0
    assert abs(ans.y[0] - y_fem[0]) <= ans.eta * sigma[0] * (1 + 1e-9)
    assert cp.report()["reduced_basis_size"] == rb.n
    # no enrichment: the FEM answer does not change the reduced basis
    tight = Coupler(coarse, model, sigma=np.array([1e-9]), tol=0.1, store=None, static=static,
                    enrich=False)
    assert tight.evaluate(mu).source == "fem" and tight.n_updates == 0
    assert tight.rb.n == rb.n and tight.evaluate(mu).source == "fem"
    comm = Comm(2)

    class OnTwoRanks(NumpyFEM):
        pass

    two = OnTwoRanks(fem)
    two.comm = comm
    grow = Coupler(coarse, two, sigma=np.array([1e-9]), tol=0.1, store=None, static=static)
    grow.evaluate(mu)
    assert grow.n_updates == 1 and grow.rb.n == rb.n + 1 and grow.report()["updates"] == 1
    # the root's decision (None: go to the FEM), then its snapshot, were broadcast
    assert comm.calls[0] is None and np.allclose(comm.calls[1], fem.solve(mu), rtol=1e-12)
    grow.evaluate(np.array([0.8, 0.2, 0.3, 0.9]))
    assert grow.n_updates == 2 and grow.report()["updates"] == 2


def test_affine_set_up_needs_the_static_data(world):
    fem, store, coarse = world
    with pytest.raises(CouplerError, match="^the coupler needs the store \\(static data\\) "
                                           "for the observation error bounds$"):
        Coupler(coarse, None, sigma=[1.0])
    cp = Coupler(coarse, None, sigma=[1.0], store=store)       # read from the store
    assert cp.rb is not None and cp.store == store

    class Flux:
        observation_affine = object()

    with pytest.raises(CouplerError, match="^the coupler certifies point sensors and averages; "
                                           "boundary-flux observations \\(affine in mu\\) are "
                                           "not supported by it yet \\(use --stage2 fem or "
                                           "none\\)$"):
        Coupler(coarse, None, sigma=[1.0], static=Flux())


def test_retrain_rebuilds_the_surrogate_from_the_enriched_store(world, tmp_path):
    import shutil

    fem, store, coarse = world
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    model = NumpyFEM(fem)
    cp = Coupler(coarse, model, sigma=np.array([1e-9]), tol=0.3, store=copy, index_base=500,
                 run_id="rt", reduced_basis=False, enrich=False)
    n0 = len(SnapshotStore(copy).committed_indices())
    cp.evaluate(np.array([0.3, 0.5, 0.7, 0.2]))
    assert cp.committed == [500]
    sur = cp.retrain()
    assert cp.surrogate is sur and sur.kind == "galerkin"
    assert len(SnapshotStore(copy).committed_indices()) == n0 + 1
    assert cp.index_base == 501 and cp.run_id == "rt" and cp.store == copy
    assert cp.fem is model and cp.sigma.tolist() == [1e-9] and cp.tol == 0.3
    assert cp.use_rb is False and cp.enrich is False
    assert cp.n_queries == 0 and cp.committed == []            # a fresh coupler
    sur2 = cp.retrain(BuildOptions(kind="galerkin", modes=1))
    assert sur2.modes.shape[0] == 1 and cp.surrogate is sur2
    cp.index_base = None
    cp.retrain()
    assert cp.index_base is None
    with_rb = Coupler(coarse, model, sigma=np.array([1e-9]), store=copy)
    with_rb.retrain()
    assert with_rb.use_rb is True and with_rb.enrich is True
