"""Delayed-acceptance MCMC against analytic posteriors; diagnostics; reports and plots.

Tolerances are Monte-Carlo errors: a posterior mean is checked to 4.5 standard errors
sd/√ESS, a variance through the mean of f = (x − m)², whose own ESS sets its standard error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.inference import (
    ForwardModel,
    GaussianPrior,
    InferenceError,
    Observations,
    Posterior,
    ess,
    ess_bulk,
    ess_tail,
    rhat,
    sample,
    split_rhat,
    synthesize,
)
from hybrid.inference.plots import corner, trace

INF = np.inf
Z = 4.5  # standard errors


def _linear_problem():
    """G(μ) = A μ (exact) vs (A + δA) μ + b (cheap, biased), Gaussian prior, Gaussian noise."""
    rng = np.random.default_rng(0)
    P, m, sigma = 2, 5, 0.3
    A = rng.standard_normal((m, P))
    dA, b = 0.3 * rng.standard_normal((m, P)), 0.2 * np.ones(m)
    space = ParameterSpace(tuple(Parameter(f"a{i}", -INF, INF) for i in range(P)))
    data = synthesize(A @ np.array([0.7, -0.4]), sigma, seed=1)
    m0, C0 = np.zeros(P), 4.0 * np.eye(P)

    def analytic(B, off):
        cov = np.linalg.inv(B.T @ B / sigma ** 2 + np.linalg.inv(C0))
        return cov @ (B.T @ (data.values - off) / sigma ** 2 + np.linalg.solve(C0, m0)), cov

    expensive = ForwardModel(lambda x: A @ x, name="expensive")          # one point per call
    cheap = ForwardModel(lambda x: x @ (A + dA).T + b, batched=True, name="cheap")
    prior = GaussianPrior(m0, C0)
    return (Posterior(expensive, data, space, prior), Posterior(cheap, data, space, prior),
            analytic(A, 0.0), analytic(A + dA, b))


def _mc_checks(chains: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[bool, str]:
    """True if every mean and variance agrees with (mean, cov) within Z Monte-Carlo errors."""
    ok, report = True, []
    for j in range(chains.shape[-1]):
        x = chains[:, :, j]
        se = np.sqrt(cov[j, j] / ess(x))
        f = (x - mean[j]) ** 2
        se_var = np.std(f) / np.sqrt(ess(f))
        dm, dv = (x.mean() - mean[j]) / se, (f.mean() - cov[j, j]) / se_var
        ok &= abs(dm) < Z and abs(dv) < Z
        report.append(f"param {j}: mean off by {dm:+.1f} SE, variance by {dv:+.1f} SE")
    return bool(ok), "; ".join(report)


@pytest.fixture(scope="module")
def linear():
    return _linear_problem()


@pytest.fixture(scope="module")
def da_run(linear):
    post, cheap, _, _ = linear
    n_exp0, n_cheap0 = post.model.n_evals, cheap.model.n_evals
    res = sample(post, cheap, n_samples=3000, burn_in=1000, chains=4, seed=2)
    return res, post.model.n_evals - n_exp0, cheap.model.n_evals - n_cheap0


def test_delayed_acceptance_targets_the_exact_posterior(linear, da_run):
    _, _, (m_exact, c_exact), (m_cheap, c_cheap) = linear
    res, _, _ = da_run
    assert res.mode == "delayed-acceptance" and res.exact
    ok, why = _mc_checks(res.samples, m_exact, c_exact)
    assert ok, why
    # the same chain is far from the cheap model's (biased) posterior: the check can fail
    assert not _mc_checks(res.samples, m_cheap, c_cheap)[0]
    assert res.to_dict()["max_rhat"] < 1.01


def test_expensive_evaluations_are_stage1_acceptances(da_run):
    res, n_exp, n_cheap = da_run
    c = res.counts
    assert n_exp == c["stage1_total"].sum() + res.chains == c["n_expensive"].sum()
    assert n_cheap == c["proposals_total"].sum() + res.chains == c["n_cheap"].sum()
    assert c["proposals_total"].sum() == res.chains * (1000 + 3000)
    acc = res.acceptance()
    assert 0 < acc["overall"] < acc["stage1"] < 1 and 0 < acc["stage2"] < 1
    assert np.isclose(acc["overall"], acc["stage1"] * acc["stage2"])
    assert n_exp < 0.7 * n_cheap          # the screening saves expensive runs


def test_surrogate_only_mode_samples_the_biased_posterior(linear):
    _, cheap, (m_exact, c_exact), (m_cheap, c_cheap) = linear
    res = sample(None, cheap, n_samples=3000, burn_in=1000, chains=4, seed=3)
    assert res.mode == "surrogate-only" and res.exact is False
    d = res.to_dict()
    assert d["exact"] is False and d["mode"] == "surrogate-only"
    assert d["counts"]["expensive"] == 0
    ok, why = _mc_checks(res.samples, m_cheap, c_cheap)
    assert ok, why
    assert not _mc_checks(res.samples, m_exact, c_exact)[0]


def test_bounded_log_parameter_against_quadrature():
    """A 1-D posterior on a log-scaled box with mass at the lower bound, by quadrature."""
    space = ParameterSpace((Parameter("k", 0.1, 10.0, log=True),))
    t = np.array([0.2, 0.5, 1.0])

    def model(mu):
        return np.exp(-np.atleast_2d(mu)[:, :1] * t)

    data = Observations(("a", "b", "c"), [0.97, 0.93, 0.88], 0.08)
    post = Posterior(ForwardModel(model, batched=True), data, space)
    cheap = post.with_model(ForwardModel(lambda mu: 1.02 * model(0.9 * mu), batched=True))
    theta = np.linspace(np.log(0.1), np.log(10.0), 40001)            # uniform prior in log k
    w = np.exp(-0.5 * data.chi2(model(np.exp(theta)[:, None])))
    w /= w.sum()
    mean = np.sum(w * np.exp(theta))
    var = np.sum(w * (np.exp(theta) - mean) ** 2)
    assert np.sum(w[theta < np.log(0.2)]) > 0.2                      # the bound matters
    res = sample(post, cheap, n_samples=3000, burn_in=1000, chains=4, seed=5)
    ok, why = _mc_checks(res.samples, np.array([mean]), np.array([[var]]))
    assert ok, why
    assert np.all(res.samples > 0.1) and np.all(res.samples < 10.0)


def test_seeded_and_chains_independent_of_their_number(linear):
    post, cheap, _, _ = linear
    a = sample(post, cheap, n_samples=200, burn_in=200, chains=2, seed=7)
    b = sample(post, cheap, n_samples=200, burn_in=200, chains=3, seed=7)
    assert np.allclose(a.samples, b.samples[:2], rtol=1e-12, atol=1e-14)
    c = sample(post, cheap, n_samples=200, burn_in=200, chains=2, seed=8)
    assert not np.allclose(a.samples, c.samples)


def test_metropolis_mode_and_errors(linear):
    post, cheap, (m_exact, c_exact), _ = linear
    res = sample(post, x0=m_exact, proposal_cov=c_exact, n_samples=2000, burn_in=500,
                 chains=2, seed=4)
    assert res.mode == "metropolis" and res.exact
    assert res.counts["n_cheap"].sum() == 0
    ok, why = _mc_checks(res.samples, m_exact, c_exact)
    assert ok, why
    with pytest.raises(InferenceError, match="mode must be one of"):
        sample(post, cheap, mode="fast")
    with pytest.raises(InferenceError, match="needs both"):
        sample(post, mode="delayed-acceptance")
    flat = Posterior(post.model, post.data, post.space)           # improper flat prior
    with pytest.raises(InferenceError, match="give starting points"):
        sample(flat, n_samples=10, burn_in=0)
    with pytest.raises(InferenceError, match="starting points for 3 chains"):
        sample(post, x0=np.zeros((2, 2)), chains=3)


def test_report_is_json_and_plots_are_png(da_run, tmp_path):
    res, _, _ = da_run
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    p = d["parameters"]["a0"]
    assert set(p) >= {"mean", "std", "q05", "q95", "rhat", "ess", "ess_bulk", "mcse_mean"}
    assert p["q05"] < p["mean"] < p["q95"]
    assert d["counts"]["expensive"] == int(res.counts["n_expensive"].sum())
    assert d["acceptance"]["stage1"] is not None and d["wall_time_s"] > 0
    assert d["settings"]["posterior"]["prior"]["kind"] == "gaussian"
    res.save_json(tmp_path / "r.json")
    with np.load(res.save_npz(tmp_path / "r.npz")) as z:
        assert z["samples"].shape == (4, 3000, 2)
    for f in (corner(res, tmp_path / "corner.png", truths=[0.7, -0.4],
                     markers={"MAP": [0.6, -0.6]}),
              trace(res, tmp_path / "trace.png"), corner(res.draws(), tmp_path / "c2.png")):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------- diagnostics
def _ar1(rng, rho, chains, n):
    from scipy.signal import lfilter

    e = rng.standard_normal((chains, n))
    e[:, 0] /= np.sqrt(1 - rho ** 2)              # start in the stationary distribution
    return lfilter([1.0], [1.0, -rho], e, axis=1)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains(rho):
    """ESS ≈ n (1 − ρ)/(1 + ρ): the mean ratio over 25 replicates, within 4.5 of its SEs.

    The estimator is slightly biased low (truncation; about −1 % here), well inside the bound.
    """
    rng = np.random.default_rng(10)
    chains, n = 4, 4000
    target = chains * n * (1 - rho) / (1 + rho)
    ratios = np.array([ess(_ar1(rng, rho, chains, n)) / target for _ in range(25)])
    se = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - 1) < Z * se + 0.01, (ratios.mean(), se)
    assert ratios.std() < 0.1 + 0.1 * rho          # and it is not wild
    x = _ar1(rng, rho, chains, n)
    assert abs(ess_bulk(x) / target - 1) < 0.3      # rank normalising a Gaussian changes little
    if rho == 0.0:  # i.i.d. draws: quantile indicators are i.i.d. too
        assert abs(ess_tail(x) / target - 1) < 0.2
    else:           # indicators of a Gaussian AR(1) decorrelate faster than the chain
        assert ess_tail(x) > 0.9 * target


def test_rhat_converged_separated_and_drifting():
    rng = np.random.default_rng(1)
    iid = rng.standard_normal((4, 1000))
    assert rhat(iid) < 1.01 and split_rhat(iid) < 1.01
    modes = iid + np.array([[-3.0], [-3.0], [3.0], [3.0]])   # two modes, never mixed
    assert rhat(modes) > 1.5 and split_rhat(modes) > 1.5
    # chains that agree with each other but drift: only splitting them reveals it
    drift = iid * 0.3 + np.linspace(0, 3, 1000)
    import arviz_stats

    assert arviz_stats.rhat(drift, method="identity", chain_axis=0, draw_axis=1) < 1.01
    assert split_rhat(drift) > 1.1 and rhat(drift) > 1.1
    # heavy tails: the rank-normalised version still sees one chain with larger scale
    cauchy = rng.standard_cauchy((4, 1000))
    cauchy[0] *= 20
    assert rhat(cauchy) > 1.05
