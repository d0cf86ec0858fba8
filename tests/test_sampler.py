"""The sampler in many dimensions and at the box's bounds, against exact posteriors.

* P = 9, burn-in 500 (the settings under which the old adapted proposal collapsed in rank):
  a linear-Gaussian posterior with a known answer, over 5 seeds, for the random walk with
  delayed acceptance and for MALA;
* a MAP on a bound of the box: the chains leave it and sample the truncated posterior,
  checked against quadrature;
* the error and edge paths of :func:`sample` (starts where the model fails, counters,
  covariances that are not SPD, mismatched posteriors, one chain, collapsed proposals).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.inference import (
    ForwardModel,
    GaussianPrior,
    InferenceError,
    Observations,
    Posterior,
    find_map,
    sample,
    synthesize,
)
from hybrid.inference.proposal import (
    check_spd,
    dispersed_starts,
    laplace_proposal,
    shrunk_covariance,
)

INF = np.inf


def _gaussian9():
    """G(μ) = A μ, 9 parameters with scales spread over a decade, Gaussian prior: exact."""
    P, m, s = 9, 16, 0.05
    rng = np.random.default_rng(0)
    A = rng.standard_normal((m, P)) * np.linspace(0.2, 3.0, P)
    space = ParameterSpace(tuple(Parameter(f"a{i}", -INF, INF) for i in range(P)))
    data = synthesize(A @ np.full(P, 0.3), s, seed=1)
    C0 = 4.0 * np.eye(P)
    cov = np.linalg.inv(A.T @ A / s ** 2 + np.linalg.inv(C0))
    mean = cov @ (A.T @ data.values / s ** 2)
    At = torch.tensor(A)
    exact = ForwardModel(lambda x: x @ A.T, batched=True, torch_fn=lambda x: x @ At.T,
                         name="exact")
    # a cheap model with a small bias, for delayed acceptance
    dA = 0.02 * rng.standard_normal((m, P))
    cheap = ForwardModel(lambda x: x @ (A + dA).T, batched=True, name="cheap")
    prior = GaussianPrior(np.zeros(P), C0)
    return Posterior(exact, data, space, prior), Posterior(cheap, data, space, prior), mean, cov


@pytest.fixture(scope="module")
def g9():
    return _gaussian9()


def _check_against_exact(res, mean, cov, *, z=4.0, std_tol=0.10):
    draws = res.draws()
    sd = np.sqrt(np.diag(cov))
    summ = res.summary()
    for j, name in enumerate(res.names):
        mcse = sd[j] / np.sqrt(summ[name]["ess"])
        assert abs(draws[:, j].mean() - mean[j]) < z * mcse, (name, draws[:, j].mean(),
                                                               mean[j], mcse)
        ratio = draws[:, j].std(ddof=1) / sd[j]
        assert abs(ratio - 1) < std_tol, (name, ratio)


def _full_rank_and_moving(res):
    for c in range(res.chains):
        ev = np.linalg.eigvalsh(res.proposal_cov[c])
        assert ev[0] > 1e-6 * ev[-1], (c, ev)         # no direction lost
    assert np.all(res.counts["accepted"] > 0.05 * res.counts["proposals"])
    # every chain's draws span all 9 dimensions
    for c in range(res.chains):
        s = np.linalg.svd(res.samples[c] - res.samples[c].mean(0), compute_uv=False)
        assert s[-1] > 1e-3 * s[0], (c, s)
    assert not [p for p in res.problems() if "never moved" in p or "lost rank" in p]


@pytest.mark.parametrize("seed", range(5))
def test_nine_parameters_delayed_acceptance_random_walk(g9, seed):
    post, cheap, mean, cov = g9
    mp = find_map(cheap, starts=1, seed=seed)
    lap = laplace_proposal(cheap, mp.mu)
    res = sample(post, cheap, n_samples=6000, burn_in=500, chains=4, seed=seed, x0=lap.mu,
                 proposal_cov=lap.cov, start_cov=lap.cov, kernel="rw")
    _full_rank_and_moving(res)
    _check_against_exact(res, mean, cov)


@pytest.mark.parametrize("seed", range(5))
def test_nine_parameters_mala(g9, seed):
    post, _, mean, cov = g9
    mp = find_map(post, starts=1, seed=seed)
    lap = laplace_proposal(post, mp.mu)
    res = sample(None, post, mode="surrogate-only", n_samples=1500, burn_in=500, chains=4,
                 seed=seed, x0=lap.mu, proposal_cov=lap.cov, start_cov=lap.cov,
                 kernel="mala")
    _full_rank_and_moving(res)
    _check_against_exact(res, mean, cov)
    d = res.to_dict()
    assert d["max_rhat"] < 1.01 and d["min_ess"] > 1000        # MALA mixes in 9-D
    assert d["settings"]["kernel"] == "mala" and d["warnings"] == []


def test_starts_are_over_dispersed(g9):
    post, _, _, cov = g9
    mp = find_map(post, starts=1)
    lap = laplace_proposal(post, mp.mu)
    rngs = [np.random.default_rng(i) for i in range(400)]
    z = dispersed_starts(lap.z, lap.cov, rngs, scale=2.0)
    emp = np.cov(z.T)
    # the starts' covariance is 4× the Laplace one (Laplace = exact for this linear model)
    ratio = np.diag(emp) / (4 * np.diag(cov))
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    assert np.allclose(lap.cov, cov, rtol=1e-6)


# ------------------------------------------------------------------ MAP on a bound
def _truncated_problem():
    """y = (μ₀, μ₁) + noise on [0, 1]², μ₀'s datum beyond the upper bound: exact by quadrature.

    The posterior factorises: μ₀ ~ N(1.03, 0.05²) truncated to [0, 1] (mass piled against
    the bound), μ₁ ~ N(0.4, 0.05²) truncated (inside).
    """
    space = ParameterSpace((Parameter("m0", 0.0, 1.0), Parameter("m1", 0.0, 1.0)))
    data = Observations(("y0", "y1"), [1.03, 0.4], 0.05)
    model = ForwardModel(lambda x: np.asarray(x, float), batched=True,
                         torch_fn=lambda x: x * 1.0)
    post = Posterior(model, data, space)
    grid = np.linspace(0.0, 1.0, 200001)
    exact = []
    for y in data.values:
        w = np.exp(-0.5 * ((grid - y) / 0.05) ** 2)
        w /= w.sum()
        m = np.sum(w * grid)
        q = np.interp([0.05, 0.95], np.cumsum(w), grid)
        exact.append((m, np.sqrt(np.sum(w * (grid - m) ** 2)), q))
    return post, exact


@pytest.mark.parametrize("kernel", ["rw", "mala"])
def test_map_on_a_bound_chains_leave_it_and_match_quadrature(kernel):
    post, exact = _truncated_problem()
    mp = find_map(post, starts=4)
    assert mp.mu[0] == pytest.approx(1.0, abs=1e-9)           # the MAP is on the bound
    lap = laplace_proposal(post, mp.mu)
    assert lap.moved[0] and not lap.moved[1]
    assert 0.9 < lap.mu[0] < 1.0                               # centre moved inside
    res = sample(None, post, mode="surrogate-only", n_samples=4000, burn_in=1000, chains=4,
                 seed=3, x0=lap.mu, proposal_cov=lap.cov, start_cov=lap.cov, kernel=kernel)
    d = res.draws()
    assert np.all(d < 1.0) and np.all(d > 0.0)
    summ = res.summary()
    for j, (m, sd, q) in enumerate(exact):
        s = summ[f"m{j}"]
        assert abs(s["mean"] - m) < 4 * sd / np.sqrt(s["ess"]), (j, s["mean"], m)
        assert abs(s["std"] / sd - 1) < 0.10, (j, s["std"], sd)
        assert abs(s["q05"] - q[0]) < 0.5 * sd and abs(s["q95"] - q[1]) < 0.5 * sd
    assert res.to_dict()["max_rhat"] < 1.01
    # the posterior of m0 is far from a spike at the bound
    assert exact[0][1] > 0.02 and summ["m0"]["std"] > 0.02


# ------------------------------------------------------------------ proposal helpers
def test_shrunk_covariance_keeps_rank_whatever_the_chain_did():
    P = 9
    sigma0 = np.diag(np.linspace(1.0, 2.0, P))
    for emp in (np.zeros((P, P)), np.outer(np.ones(P), np.ones(P))):   # rank 0 and 1
        for n in (1, 25, 1e6):
            s = shrunk_covariance(n, emp, sigma0, 10 * P)
            ev = np.linalg.eigvalsh(s)
            assert ev[0] >= 10 * P / (n + 10 * P) * 1.0 - 1e-12
    # with many states the empirical covariance dominates: (n S + n0 Σ0)/(n + n0)
    s = shrunk_covariance(90.0, np.eye(P) * 3.0, sigma0, 10.0)
    assert np.allclose(s, (270.0 * np.eye(P) + 10.0 * sigma0) / 100.0)


def test_check_spd_refuses_bad_covariances():
    with pytest.raises(InferenceError, match="not positive definite"):
        check_spd(np.diag([1.0, -1.0]), "c")
    with pytest.raises(InferenceError, match="not symmetric"):
        check_spd(np.array([[1.0, 0.5], [0.0, 1.0]]), "c")
    with pytest.raises(InferenceError, match="singular"):
        check_spd(np.diag([1.0, 1e-30]), "c")
    with pytest.raises(InferenceError, match="finite square"):
        check_spd(np.ones(3), "c")
    L = check_spd(np.array([[4.0, 2.0], [2.0, 3.0]]), "c")
    assert np.allclose(L @ L.T, [[4.0, 2.0], [2.0, 3.0]])


# ------------------------------------------------------------------ sample(): edges
def _one_d(fail_below: float | None = None):
    """μ ~ N(0.5, 0.1²)-ish on [0, 1] from one datum; optionally a model failing for μ < c."""
    space = ParameterSpace((Parameter("k", 0.0, 1.0),))
    data = Observations(("y",), [0.5], 0.1)
    calls = {"n": 0}

    def model(x):
        x = np.atleast_2d(x)
        calls["n"] += len(x)
        out = x[:, :1].copy()
        if fail_below is not None:
            out[x[:, 0] < fail_below] = np.nan
        return out

    return Posterior(ForwardModel(model, batched=True), data, space), calls


def test_redraws_a_start_where_the_model_fails_and_counts_every_evaluation():
    post, calls = _one_d(fail_below=0.3)
    res = sample(post, n_samples=500, burn_in=100, chains=6, seed=11)   # prior starts
    c = res.counts
    assert np.all(res.draws() >= 0.3)
    redraws = c["n_expensive"] - (c["proposals_total"] + 1)
    assert redraws.sum() > 0                       # some prior draws fell where it fails
    assert c["n_expensive"].sum() == calls["n"]    # every model evaluation is counted
    assert np.all(c["proposals_total"] == 600) and np.all(c["proposals"] == 500)
    assert np.all(c["accepted"] <= c["accepted_total"])
    assert np.all(c["stage1"] == c["accepted"])    # no screening: stage 1 is the decision
    assert res.accepted.shape == (6, 500) and res.accepted.sum() <= c["accepted"].sum()


def test_a_start_with_zero_density_is_refused():
    post, _ = _one_d(fail_below=0.3)
    with pytest.raises(InferenceError, match="zero posterior density at the starting point"):
        sample(post, x0=[0.1], n_samples=10, burn_in=0, chains=1)


def test_one_chain_and_argument_errors(g9):
    post, cheap, _, _ = g9
    res = sample(post, n_samples=200, burn_in=100, chains=1, seed=0)
    assert res.samples.shape == (1, 200, 9) and res.chains == 1
    d = res.to_dict()
    assert d["max_rhat"] is None and np.isfinite(d["min_ess"])   # ArviZ: R̂ needs 2 chains
    assert any("one chain" in w for w in d["warnings"])
    with pytest.raises(InferenceError, match="proposal_cov: expected shape"):
        sample(post, proposal_cov=np.eye(2), n_samples=5, burn_in=0)
    with pytest.raises(InferenceError, match="proposal_cov: the covariance is not positive"):
        sample(post, proposal_cov=-np.eye(9), n_samples=5, burn_in=0)
    with pytest.raises(InferenceError, match="kernel must be one of"):
        sample(post, kernel="hmc", n_samples=5, burn_in=0)
    with pytest.raises(InferenceError, match="adapt must be one of"):
        sample(post, adapt="forever", n_samples=5, burn_in=0)
    with pytest.raises(InferenceError, match="needs a differentiable"):
        sample(post, cheap, kernel="mala", n_samples=5, burn_in=0)
    with pytest.raises(InferenceError, match="shrinkage"):
        sample(post, shrinkage=0.0, n_samples=5, burn_in=0)
    other = ParameterSpace(tuple(Parameter(f"b{i}", -INF, INF) for i in range(9)))
    wrong = Posterior(cheap.model, cheap.data, other, cheap.prior)
    with pytest.raises(InferenceError, match="different parameters"):
        sample(post, wrong, n_samples=5, burn_in=0)


def test_a_collapsed_proposal_is_reported_not_counted_as_accepted():
    """The old failure: Σ ≈ 1e-300·I makes y == z to the last bit; not a move."""
    post, _ = _one_d()
    res = sample(post, x0=[0.7], proposal_cov=np.array([[1e-300]]), adapt="none",
                 n_samples=300, burn_in=0, chains=2, seed=1)
    assert np.all(res.counts["accepted"] == 0)
    probs = res.problems()
    assert any("chain 0 never moved" in p for p in probs)
    assert res.to_dict()["warnings"] == probs


def test_adaptation_is_frozen_after_burn_in_and_learns_the_scale(g9):
    post, _, _, cov = g9
    # start from a badly scaled Σ₀ (isotropic, 100× too small on average): the shrunk
    # covariance must learn the anisotropic posterior during burn-in
    sigma0 = 0.01 * np.mean(np.diag(cov)) * np.eye(9)
    res = sample(post, x0=np.full(9, 0.3), proposal_cov=sigma0, n_samples=2000,
                 burn_in=3000, chains=2, seed=4)
    for c in range(2):
        prop = res.proposal_cov[c]
        # proportional to the posterior covariance (up to λ·2.38²/d) on the diagonal
        r = np.diag(prop) / np.diag(cov)
        assert r.max() / r.min() < 5.0, r
    frozen = sample(post, x0=np.full(9, 0.3), proposal_cov=sigma0, n_samples=10,
                    burn_in=3000, chains=2, seed=4)
    assert np.allclose(frozen.proposal_cov, res.proposal_cov)   # nothing after burn-in
