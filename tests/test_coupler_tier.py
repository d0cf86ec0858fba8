"""The coupler's opt-in residual-indicator tier, with small stand-in models (no DOLFINx).

The FEM stand-in is tests/conftest_surrogate.BlockFEM (its own P1 assembly and solve). Its
"residual indicator" of a field u at μ is g(μ)·‖u_h(μ) − u‖_X, with g(μ) = 1 + Σμ and X the
inner product it is asked for, so the effectivity η/‖u_h − ũ‖_X at a held-out μ_s is g(μ_s)
exactly: the effectivity statistics, the observation dual norms ν_i = ‖l_i‖_{X'} (computed
here with a dense inverse) and the acceptance rule max_i ν_i η(μ)/(ε_min σ_i) ≤ tol are
checked against those independent numbers. The surrogate stand-in reproduces the snapshots it
was "trained" on exactly (zero error: no effectivity there) and interpolates elsewhere.
"""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest

from hybrid.core.store import SnapshotStore
from hybrid.errors import SolveFailed
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.workflows.coupler import Coupler, CouplerError

from .conftest_surrogate import BlockFEM, make_store, space

SPACE = space(2)
MUS = SPACE.sample(10, "sobol", 3)          # the store's samples
TRAIN = [0, 1, 2, 3, 5]                     # the stand-in surrogate reproduces these exactly
VALID = [4, 6, 7, 5]                        # validation split: 5 is a training sample (error 0)


def gain(mu):
    return 1.0 + float(np.sum(mu))


class State:
    def __init__(self, u, y, ok=True, reason=""):
        self.u, self.observations, self.ok, self.reason = u, y, ok, reason


class Comm:
    """A communicator of ``size`` ranks seen from the root: bcast returns the root's object
    (root 0 by default, as mpi4py's)."""

    def __init__(self, size):
        self.size, self.roots = size, []

    def bcast(self, obj, root=0):
        self.roots.append(root)
        return obj


class IndicatorFEM:
    """BlockFEM with FEMModel's interface and a residual indicator g(μ)‖u_h(μ) − u‖_X."""

    has_indicator = True

    def __init__(self, bfem, L, names, fail=False, comm=None):
        self.bfem, self.L, self.observation_names = bfem, L, list(names)
        self.fail, self.comm = fail, comm
        self.X = {"h1": bfem.mass + bfem.stiffness, "h10": bfem.stiffness, "l2": bfem.mass}
        self.solved, self.indicated = [], []

    def solve(self, mu, field=False):
        assert field is True                        # the held-out set needs the field
        self.solved.append(np.array(mu))
        u = self.bfem.solve(mu)
        return State(u, self.L @ u, ok=not self.fail, reason="diverged")

    def indicator(self, mu, u, inner_product):
        self.indicated.append(inner_product)
        e = self.bfem.solve(mu) - np.asarray(u)
        return gain(mu) * float(np.sqrt(e @ (self.X[inner_product] @ e)))

    def commit(self, store, state, run_id="coupler", index=None):
        return index


class FieldSurrogate:
    """No bound, no ensemble: ũ(μ) = Σ_j w_j(μ) u_h(μ_j), inverse-distance weights, exact at μ_j."""

    kind = "pod-nn"
    estimator = None
    members = 1
    space = SPACE

    def __init__(self, bfem, L, names, meta):
        self.modes = np.array([bfem.solve(m) for m in MUS[TRAIN]])      # (k, n)
        self.observation_names = list(names)
        self.observation_matrix = L @ self.modes.T                      # (m, k)
        self.meta = meta

    def predict(self, mu):
        d = np.linalg.norm(MUS[TRAIN] - np.asarray(mu), axis=1)
        if np.any(d < 1e-14):
            return (d < 1e-14).astype(float)
        w = 1.0 / d**2
        return w / w.sum()

    def reconstruct(self, c):
        return np.asarray(c) @ self.modes

    def field(self, mu, extrapolate=None):
        return self.reconstruct(self.predict(mu))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tier")
    bfem = BlockFEM(cells=6, blocks=2)
    store = make_store(root / "store", bfem, MUS, affine=False)
    # two observations (twice the mean, the mean of block 0), as the coupler sees them
    L = np.vstack([2.0 * bfem.qoi[0], bfem.qoi[1]])
    static = SimpleNamespace(mass=bfem.mass, stiffness=bfem.stiffness,
                             dirichlet_dofs=bfem.dirichlet, observation_functionals=L,
                             observation_affine=None)
    return bfem, store, static, L


def meta(store, ip="h1", vi=VALID):
    return {"pod": {"inner_product": ip}, "store": {"path": str(store), "validation_indices": vi}}


def make(world, *, ip="h1", vi=VALID, sigma=(1e-3, 2e-3), tol=1e6, comm=None, fail=False,
         surrogate_meta=None, **kw):
    bfem, store, static, L = world
    sur = FieldSurrogate(bfem, L, ("a", "b"), surrogate_meta or meta(store, ip, vi))
    fem = IndicatorFEM(bfem, L, ("a", "b"), fail=fail, comm=comm)
    kw.setdefault("store", store)
    cp = Coupler(sur, fem, sigma=np.array(sigma), tol=tol, static=static, trust="indicator",
                 **kw)
    return cp, sur, fem


def x_norm(bfem, e, ip="h1"):
    X = {"h1": bfem.mass + bfem.stiffness, "h10": bfem.stiffness, "l2": bfem.mass}[ip]
    return float(np.sqrt(e @ (X @ e)))


# ------------------------------------------------------------------ set-up
@pytest.mark.parametrize("ip", ["h1", "h10", "l2"])
def test_effectivity_on_the_store_validation_split_is_eta_over_the_true_error(world, ip):
    bfem = world[0]
    cp, sur, fem = make(world, ip=ip)
    g = np.array([gain(MUS[i]) for i in VALID if i not in TRAIN])    # 5 has zero error
    assert cp.effectivity == {"min": pytest.approx(g.min(), rel=1e-10),
                              "median": pytest.approx(np.median(g), rel=1e-10),
                              "max": pytest.approx(g.max(), rel=1e-10), "n": 3,
                              "holdout": "store validation split", "inner_product": ip}
    assert cp.inner_product == ip and set(fem.indicated) == {ip} and fem.solved == []
    assert cp.holdout == "store"                                      # the default
    # ν_i = ‖l_i‖_{X'} over the free DOFs, with a dense inverse
    X = fem.X[ip].toarray()[np.ix_(bfem.free, bfem.free)]
    Lf = world[3][:, bfem.free]
    nu = np.sqrt(np.einsum("ij,ij->i", Lf, np.linalg.solve(X, Lf.T).T))
    assert cp.nu == pytest.approx(nu, rel=1e-10) and cp.nu.shape == (2,)
    # the dual norm is the supremum of |l·v|/‖v‖_X: attained at v = X⁻¹l, never exceeded
    v = np.zeros(bfem.n_dofs)
    v[bfem.free] = np.linalg.solve(X, Lf[1])
    assert abs(world[3][1] @ v) / x_norm(bfem, v, ip) == pytest.approx(cp.nu[1], rel=1e-10)
    assert (cp.rb, cp.use_rb, cp.use_surrogate, cp.fem_only) == (None, False, True, False)


def test_the_default_inner_product_is_h1_and_the_logged_summary(world, caplog):
    store = world[1]
    with caplog.at_level(logging.INFO, logger="hybrid.workflows.coupler"):
        cp, _, _ = make(world, surrogate_meta={"store": meta(store)["store"]})    # no "pod"
    eff = cp.effectivity
    assert cp.inner_product == "h1" == eff["inner_product"]
    assert ("coupler: residual indicator opted in; effectivity on 3 held-out snapshots min "
            f"{eff['min']:.3g} median {eff['median']:.3g} max {eff['max']:.3g}"
            ) in caplog.messages
    cp, _, _ = make(world, surrogate_meta={"pod": {}, "store": meta(store)["store"]})
    assert cp.inner_product == "h1"


def test_held_out_validation_snapshots_come_from_the_coupler_store_or_the_surrogate_s(world,
                                                                                      tmp_path):
    store = world[1]
    exp = make(world)[0].effectivity
    # the coupler's store wins over the path the surrogate recorded
    cp, _, _ = make(world, surrogate_meta=meta(tmp_path / "gone"))
    assert cp.effectivity == exp
    # without a coupler store, the surrogate's
    cp, _, _ = make(world, store=None)
    assert cp.effectivity == exp and cp.store is None
    # exactly 3 validation snapshots are enough
    cp, _, _ = make(world, vi=[4, 6, 7])
    g = [gain(MUS[i]) for i in (4, 6, 7)]
    assert cp.effectivity["n"] == 3 and cp.effectivity["min"] == pytest.approx(min(g))
    msg = ("the surrogate's store has fewer than 3 validation snapshots to measure the "
           "indicator's effectivity on; set [coupler] holdout = N (N fresh FEM solves)")
    with pytest.raises(CouplerError, match=f"^{re.escape(msg)}$"):
        make(world, vi=[4, 6])
    with pytest.raises(CouplerError, match="fewer than 3 validation"):
        make(world, store=None, surrogate_meta=meta(tmp_path / "gone"))
    with pytest.raises(CouplerError, match="fewer than 3 validation"):
        make(world, surrogate_meta={"pod": {"inner_product": "h1"}})     # no split recorded
    with pytest.raises(CouplerError, match="fewer than 3 validation"):   # nor a store path
        make(world, store=None, surrogate_meta={"store": {"validation_indices": VALID}})
    with pytest.raises(CouplerError, match="fewer than 3 validation"):   # nor any store record
        make(world, store=None, surrogate_meta={"pod": {"inner_product": "h1"}})
    assert SnapshotStore(store).static is not None


def test_without_a_recorded_store_the_working_directory_is_not_read(world, monkeypatch):
    monkeypatch.chdir(world[1])   # a store in the working directory is not the surrogate's
    with pytest.raises(CouplerError, match="fewer than 3 validation"):
        make(world, store=None, surrogate_meta={"store": {"validation_indices": VALID}})


def test_no_nonzero_held_out_error_is_refused(world):
    with pytest.raises(CouplerError, match=r"^the indicator's effectivity could not be "
                       r"measured \(no held-out snapshot with a nonzero surrogate error\)$"):
        make(world, vi=[0, 1, 5])                                    # all training samples


def test_fresh_held_out_solves_at_sobol_points(world):
    bfem = world[0]
    cp, sur, fem = make(world, holdout=4)
    plan = SPACE.sample(4, "sobol", 12345)                          # reproducible plan
    assert np.array_equal(np.array(fem.solved), plan)
    g = np.array([gain(m) for m in plan])
    assert cp.effectivity == {"min": pytest.approx(g.min(), rel=1e-10),
                              "median": pytest.approx(np.median(g), rel=1e-10),
                              "max": pytest.approx(g.max(), rel=1e-10), "n": 4,
                              "holdout": "4 fresh FEM solves (Sobol)", "inner_product": "h1"}
    assert x_norm(bfem, bfem.solve(plan[0]) - sur.field(plan[0])) > 0
    one, _, fem1 = make(world, holdout=1)
    assert len(fem1.solved) == 1 and one.effectivity["n"] == 1
    assert one.effectivity["min"] == one.effectivity["max"] == pytest.approx(gain(plan[0]))
    for bad in (0, -2):
        with pytest.raises(CouplerError,
                           match=f"^holdout must be 'store' or a positive number, got {bad}$"):
            make(world, holdout=bad)


def test_a_failed_held_out_solve_names_its_mu(world):
    m = SPACE.sample(2, "sobol", 12345)[0]
    with pytest.raises(SolveFailed, match=r"^held-out FEM solve at mu=" +
                       str(np.round(m, 6).tolist()).replace("[", r"\[").replace("]", r"\]")
                       + " failed: diverged$"):
        make(world, holdout=2, fail=True)


def test_held_out_fields_are_broadcast_from_the_root_on_several_ranks(world):
    comm = Comm(2)
    cp, _, _ = make(world, holdout=3, comm=comm)
    assert comm.roots == [0, 0, 0]
    single = Comm(1)
    cp1, _, _ = make(world, holdout=3, comm=single)
    assert single.roots == [] and cp1.effectivity == cp.effectivity
    # a FEM model need not have a communicator at all (serial plug-ins)
    bfem, store, static, L = world
    serial = IndicatorFEM(bfem, L, ("a", "b"))
    del serial.comm
    cp2 = Coupler(FieldSurrogate(bfem, L, ("a", "b"), meta(store)), serial, sigma=[1.0, 1.0],
                  static=static, trust="indicator", holdout=3)
    assert cp2.effectivity == cp.effectivity and len(serial.solved) == 3


def test_set_up_errors(world):
    bfem, store, static, L = world
    sur = FieldSurrogate(bfem, L, ("a", "b"), meta(store))
    fem = IndicatorFEM(bfem, L, ("a", "b"))
    need_fem = (r"^trust = 'indicator' needs the FEM model of a plug-in \(it computes the "
                r"residual of the surrogate's field\)$")
    with pytest.raises(CouplerError, match=need_fem):
        Coupler(sur, None, sigma=[1.0, 1.0], static=static, trust="indicator")
    plain = SimpleNamespace(solve=fem.solve, indicator=fem.indicator)   # no has_indicator
    with pytest.raises(CouplerError, match=need_fem):
        Coupler(sur, plain, sigma=[1.0, 1.0], static=static, trust="indicator")
    off = IndicatorFEM(bfem, L, ("a", "b"))
    off.has_indicator = False
    with pytest.raises(CouplerError, match=need_fem):
        Coupler(sur, off, sigma=[1.0, 1.0], static=static, trust="indicator")
    with pytest.raises(CouplerError, match=r"^trust = 'indicator' needs the store \(static "
                       r"data\) for the inner product and the held-out snapshots$"):
        Coupler(sur, fem, sigma=[1.0, 1.0], trust="indicator")
    sur.meta = meta(store, "energy")
    with pytest.raises(CouplerError, match=r"^the residual indicator takes the h1, h10 or l2 "
                       r"inner product; the surrogate's POD used 'energy'$"):
        Coupler(sur, fem, sigma=[1.0, 1.0], static=static, trust="indicator")
    bound = FieldSurrogate(bfem, L, ("a", "b"), meta(store))
    bound.estimator = object()
    with pytest.raises(CouplerError, match=r"^trust = 'indicator' is for models without a "
                       r"certified bound; this surrogate has one \(use trust = 'bound'\)$"):
        Coupler(bound, fem, sigma=[1.0, 1.0], static=static, trust="indicator")
    with pytest.raises(CouplerError, match=r"^trust must be one of \('bound', 'indicator'\), "
                       r"got 'faith'$"):
        Coupler(sur, fem, sigma=[1.0, 1.0], static=static, trust="faith")
    # the indicator's set-up reads the static data it was given, or the store's
    sur.meta = meta(store)
    one = IndicatorFEM(bfem, L[:1], ("twice_mean",))
    s1 = FieldSurrogate(bfem, L[:1], ("twice_mean",), meta(store))
    cp = Coupler(s1, one, sigma=[1.0], store=store, trust="indicator")
    ref = make(world)[0]
    assert cp.nu == pytest.approx(ref.nu[:1], rel=1e-12)          # static.h5's 2 × mean


# ------------------------------------------------------------------ answers
def test_acceptance_rule_on_both_sides_of_the_threshold_and_the_labels(world):
    bfem = world[0]
    sigma = np.array([1e-3, 2e-3])
    cp, sur, fem = make(world, sigma=sigma)
    mu = np.array([0.3, 0.8, 0.5, 0.2])
    ut = sur.reconstruct(sur.predict(mu))
    eta = gain(mu) * x_norm(bfem, bfem.solve(mu) - ut)              # η(μ) of the stand-in
    expect = float(np.max(cp.nu * eta / (cp.effectivity["min"] * sigma)))
    assert expect > 0
    at = make(world, sigma=sigma, tol=expect)[0]
    ans = at.evaluate(mu)                                            # η = tol: accepted
    assert ans.source == "surrogate" and ans.eta == pytest.approx(expect, rel=1e-10)
    assert ans.etas == {"surrogate": ans.eta}
    assert ans.certified is False and ans.basis == "indicator"
    assert ans.y == pytest.approx(world[3] @ ut, rel=1e-12)          # y = L ũ(μ)
    assert at.n_uncertified == 1 and at.answered_by["surrogate"] == 1
    assert at.switches[-1]["certified"] is False and at.switches[-1]["basis"] == "indicator"
    assert at.basis == "indicator"
    below = make(world, sigma=sigma, tol=expect * (1 - 1e-9))[0]
    ans = below.evaluate(mu)
    assert ans.source == "fem" and ans.certified is True and ans.basis == "fem"
    assert ans.eta == 0.0 and ans.etas["surrogate"] == pytest.approx(expect, rel=1e-10)
    assert ans.y == pytest.approx(world[3] @ bfem.solve(mu), rel=1e-12)
    assert below.n_uncertified == 0
    assert below.switches[-1]["certified"] is True and below.switches[-1]["basis"] == "fem"


def test_uncertified_answers_are_counted_and_reported(world):
    cp, _, _ = make(world)
    assert cp.report()["uncertified_answers"] == 0
    cp.evaluate([0.3, 0.8, 0.5, 0.2])
    cp.evaluate([0.4, 0.8, 0.5, 0.2])
    cp.tol = 1e-30                                                   # now the FEM answers
    cp.evaluate([0.5, 0.8, 0.5, 0.2])
    r = cp.report()
    assert r["uncertified_answers"] == 2 == cp.n_uncertified
    assert r["answered_by"] == {"surrogate": 2, "reduced-basis": 0, "fem": 1}
    assert r["trust"] == "indicator" and r["basis"] == "indicator" and r["certified"] is False
    assert r["bound"] == ("FEM residual indicator ||F(u_r; mu)||_X' / min effectivity "
                          "(opted in; not a bound)")
    assert r["effectivity"] == cp.effectivity and r["effectivity"]["n"] == 3
    assert r["levels"] == ["surrogate", "fem"] and r["reduced_basis_size"] is None


def test_retrain_keeps_the_trust_and_the_held_out_set(world, monkeypatch):
    import hybrid.surrogate.build as build

    bfem, store, static, L = world
    cp, sur, fem = make(world, holdout=3)
    fresh = FieldSurrogate(bfem, L, ("a", "b"), meta(store))
    monkeypatch.setattr(build, "build_surrogate", lambda path, opts: (fresh, None))
    monkeypatch.setattr(Coupler, "_setup_indicator",
                        lambda self, static_: setattr(self, "seen", (self.trust, self.holdout)))
    assert cp.retrain() is fresh
    assert cp.surrogate is fresh and cp.seen == ("indicator", 3) and cp.holdout == 3


# ------------------------------------------------------------------ without the opt-in
def test_no_bound_no_ensemble_no_opt_in_every_answer_is_fem(world, caplog):
    bfem, store, static, L = world
    sur = FieldSurrogate(bfem, L, ("a", "b"), meta(store))
    fem = IndicatorFEM(bfem, L, ("a", "b"))
    with caplog.at_level(logging.INFO, logger="hybrid.workflows.coupler"):
        cp = Coupler(sur, fem, sigma=[1.0, 1.0], tol=1e6)
    assert ("coupler: no certified bound for this model and the residual indicator is not "
            "opted in ([coupler] trust = 'indicator'): every answer is FEM") in caplog.messages
    assert cp.fem_only is True and cp.basis == "fem" and cp.effectivity is None
    mu = np.array([0.3, 0.8, 0.5, 0.2])
    ans = cp.evaluate(mu)
    assert ans.source == "fem" and ans.certified and ans.basis == "fem" and ans.etas == {}
    assert ans.y == pytest.approx(L @ bfem.solve(mu), rel=1e-12)
    r = cp.report()
    assert r["basis"] == "fem" and r["certified"] is True and r["trust"] == "bound"
    assert r["bound"] == "none: every answer is FEM (no bound; indicator not opted in)"
    assert r["levels"] == ["fem"] and r["calls"]["surrogate"] == 0 and r["effectivity"] is None
    assert r["uncertified_answers"] == 0
    with pytest.raises(CouplerError, match=r"^the coupler needs an error estimate: an affine "
                       r"model \(residual bound\), an ensemble surrogate \(train with "
                       r"--members >= 2\), the opted-in residual indicator \(\[coupler\] "
                       r"trust = 'indicator'\) or a FEM model$"):
        Coupler(sur, None, sigma=[1.0, 1.0])


def test_reduced_basis_answers_are_certified_bounds(tmp_path):
    from .test_coupler import NumpyFEM

    fem = BlockFEM(cells=8, blocks=2)
    store = make_store(tmp_path / "store", fem, SPACE.sample(8, "sobol", 5))
    coarse, _ = build_surrogate(store, BuildOptions(kind="galerkin", modes=3))
    cp = Coupler(coarse, NumpyFEM(fem), sigma=[1.0], tol=1e6, store=store)
    ans = cp.evaluate([0.3, 0.5, 0.7, 0.2])
    assert ans.source == "reduced-basis" and ans.certified is True and ans.basis == "bound"
    assert cp.switches[0]["certified"] is True and cp.switches[0]["basis"] == "bound"
    r = cp.report()
    assert r["basis"] == "bound" and r["certified"] is True and r["uncertified_answers"] == 0
    assert r["bound"] == "residual (rigorous)" and r["effectivity"] is None
    assert r["trust"] == "bound" and r["reduced_basis_size"] == cp.rb.n
    # the surrogate level of an affine model rests on its residual bound: certified too
    alone = Coupler(coarse, NumpyFEM(fem), sigma=[1.0], tol=1e6, store=store,
                    reduced_basis=False)
    ans = alone.evaluate([0.3, 0.5, 0.7, 0.2])
    assert ans.source == "surrogate" and ans.certified is True and ans.basis == "bound"
    assert alone.n_uncertified == 0
