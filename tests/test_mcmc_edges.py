"""The sampler's adaptation, counters, starts, labels and outputs against what they must be.

Small Gaussian targets (G linear, Gaussian prior or a 1-D box) with known posteriors, so that
each run takes a fraction of a second:

* the proposal: h = λ·2.38²/d (random walk) or λ·1.65²/d^⅓ (MALA) times Σ; with
  ``adapt="none"`` λ = 1 and Σ = Σ₀ exactly, with ``"scale"`` Σ = Σ₀, with ``"covariance"``
  Σ after burn-in is proportional to the posterior covariance;
* the counts: every model evaluation (starts and redraws included) is counted once, stage-1
  passes bound acceptances, the sampling-phase counts are those of the retained steps;
* the starts: over-dispersed around x0, redrawn where the model fails;
* the result: problems(), acceptance(), to_dict(), ArviZ groups and files.
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
    sample,
)
from hybrid.inference.mcmc import MCMCResult, _log_q, _mala_drift, target_acceptance

INF = np.inf


def _gauss(P=3, *, torch=False, cheap_bias=0.0, count=None):
    """G(μ) = A μ on free coordinates, prior N(0, 4 I): posterior N(m, C) in closed form."""
    rng = np.random.default_rng(P)
    A = rng.standard_normal((P + 2, P)) + np.eye(P + 2, P) * 2
    s = 0.3
    space = ParameterSpace(tuple(Parameter(f"x{i}", -INF, INF) for i in range(P)))
    data = Observations(tuple(f"y{i}" for i in range(P + 2)), A @ np.linspace(-1, 1, P), s)
    C0 = 4.0 * np.eye(P)
    C = np.linalg.inv(A.T @ A / s ** 2 + np.linalg.inv(C0))
    m = C @ (A.T @ data.values / s ** 2)
    kw = {}
    if torch:
        import torch as th

        At = th.tensor(A)
        kw["torch_fn"] = lambda x: x @ At.T

    def fn(x):
        if count is not None:
            count["n"] += len(np.atleast_2d(x))
        return x @ A.T

    post = Posterior(ForwardModel(fn, batched=True, **kw), data, space, GaussianPrior(
        np.zeros(P), C0))
    B = A + cheap_bias
    cheap = post.with_model(ForwardModel(lambda x: x @ B.T, batched=True, **kw))
    return post, cheap, m, C


# ------------------------------------------------------------------ the proposal
def test_without_adaptation_the_proposal_is_the_textbook_one():
    post, _, m, C = _gauss(3)
    res = sample(post, x0=m, proposal_cov=C, adapt="none", n_samples=50, burn_in=20,
                 chains=2, seed=1)
    assert np.allclose(res.proposal_cov, 2.38 ** 2 / 3 * C, rtol=1e-14)
    assert res.settings["adaptation"] == "burn-in only, then frozen: none"
    post, _, m, C = _gauss(2, torch=True)
    res = sample(None, post, mode="surrogate-only", x0=m, proposal_cov=C, adapt="none",
                 kernel="mala", n_samples=50, burn_in=20, chains=2, seed=1)
    assert np.allclose(res.proposal_cov, 1.65 ** 2 / 2 ** (1 / 3) * C, rtol=1e-14)
    assert res.settings["target_accept"] == 0.574 and res.settings["adapt"] == "none"


def test_scale_adaptation_keeps_the_shape_of_sigma0_and_reaches_the_target_rate():
    post, _, m, C = _gauss(2)
    sigma0 = np.diag([1.0, 3.0]) * np.mean(np.diag(C))
    res = sample(post, x0=m, proposal_cov=sigma0, adapt="scale", n_samples=1500,
                 burn_in=1500, chains=2, seed=2)
    for c in range(2):
        ratio = np.diag(res.proposal_cov[c]) / np.diag(sigma0)
        assert np.allclose(ratio, ratio[0], rtol=1e-12)
        assert res.proposal_cov[c][0, 1] == 0.0
    # the Robbins–Monro scale hits α* = 0.35 (d = 2) to within a few per cent
    assert abs(res.acceptance()["overall"] - target_acceptance(2)) < 0.05
    assert "global scale only" in res.settings["adaptation"]


def test_the_adapted_covariance_is_proportional_to_the_posterior():
    """After burn-in on a correlated Gaussian the frozen Σ is ∝ C: the whitened proposal
    C^(-1/2) Σ C^(-1/2) is a multiple of I within 20 %."""
    post, _, m, C = _gauss(3)
    # correlate the target strongly: a linear change of the model
    T = np.array([[1.0, 0.0, 0.0], [0.9, 0.5, 0.0], [0.2, -0.7, 0.4]])
    fn = post.model.fn
    post = Posterior(ForwardModel(lambda x: fn(x @ T.T), batched=True), post.data,
                     post.space, post.prior)
    A = post.jacobian(np.zeros(3))
    C = np.linalg.inv(A.T @ A / 0.3 ** 2 + np.eye(3) / 4.0)
    m = C @ (A.T @ post.data.values / 0.3 ** 2)
    res = sample(post, x0=m, proposal_cov=0.01 * np.eye(3), n_samples=20, burn_in=3000,
                 chains=2, seed=3, shrinkage=5.0)
    Ci = np.linalg.inv(np.linalg.cholesky(C))
    for c in range(2):
        white = Ci @ res.proposal_cov[c] @ Ci.T
        ev = np.linalg.eigvalsh(white)
        assert ev.max() / ev.min() < 1.5, ev
        # its size: λ·2.38²/d with λ near one for a Gaussian target
        assert 0.3 < np.mean(ev) / (2.38 ** 2 / 3) < 3.0, ev
    assert res.settings["shrinkage"] == 5.0
    st = res.settings
    assert (st["n_samples"], st["burn_in"], st["chains"], st["thin"], st["adapt_every"],
            st["kernel"], st["adapt"], st["ranks"]) == (20, 3000, 2, 1, 25, "rw",
                                                        "covariance", 1)
    assert st["target_accept"] == 0.31 and st["posterior"] == post.describe()
    assert res.settings["adaptation"] == ("burn-in only, then frozen: global scale + empirical "
                                          "covariance shrunk toward Σ₀")
    # shrinkage default: 10·P pseudo-observations
    assert sample(post, x0=m, n_samples=5, burn_in=0, chains=1).settings["shrinkage"] == 30.0


def test_adaptation_updates_every_adapt_every_iterations_only_in_burn_in():
    post, _, m, C = _gauss(2)
    kw = dict(x0=m, proposal_cov=C, n_samples=20, chains=1, seed=5)
    # burn-in shorter than the first covariance update: Σ = Σ₀ (only λ moves)
    short = sample(post, burn_in=40, adapt_every=100, **kw)
    r = short.proposal_cov[0] / C
    assert np.allclose(r, r[0, 0], rtol=1e-12)
    longer = sample(post, burn_in=40, adapt_every=10, **kw)
    r = longer.proposal_cov[0] / C
    assert not np.allclose(r, r[0, 0], rtol=1e-3)
    # the first update may use as few as two states (burn-in 4: states from it = 1 on)
    two = sample(post, burn_in=4, adapt_every=3, **kw)
    r = two.proposal_cov[0] / C
    assert not np.allclose(r, r[0, 0], rtol=1e-3)
    # λ adapts from the first step of burn-in: with burn-in the scale differs from 2.38²/d
    none = sample(post, burn_in=0, **kw)
    assert np.allclose(none.proposal_cov[0], 2.38 ** 2 / 2 * C, rtol=1e-14)
    one = sample(post, burn_in=1, **kw)
    assert not np.allclose(one.proposal_cov[0], 2.38 ** 2 / 2 * C, rtol=1e-3)
    # γ₁ = 1: after one step λ = exp(accepted − α*)
    lam = one.proposal_cov[0][0, 0] / (2.38 ** 2 / 2 * C[0, 0])
    assert np.isclose(lam, np.exp(1 - 0.35)) or np.isclose(lam, np.exp(-0.35))


def test_target_acceptance_by_dimension():
    assert [target_acceptance(d) for d in (1, 2, 3, 4, 5, 50)] == [0.44, 0.35, 0.31, 0.28,
                                                                   0.234, 0.234]
    post, _, m, C = _gauss(2)
    res = sample(post, x0=m, n_samples=5, burn_in=0, chains=1, target_accept=0.5)
    assert res.settings["target_accept"] == 0.5
    assert sample(post, x0=m, n_samples=5, burn_in=0, chains=1).settings[
        "target_accept"] == 0.35


# ------------------------------------------------------------------ MALA
def test_mala_drift_and_proposal_density():
    """y = z + (h/2) Σ g; log q = −|L⁻¹(y − mean)|²/(2h) for Σ = L Lᵀ."""
    z = np.array([[1.0, 2.0], [0.0, -1.0]])
    g = np.array([[0.5, -1.0], [2.0, 0.0]])
    sigma = np.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 4.0]]])
    h = np.array([0.3, 2.0])
    mean = _mala_drift(z, g, sigma, h)
    assert np.allclose(mean[0], z[0] + 0.15 * sigma[0] @ g[0], rtol=1e-15)
    assert np.allclose(mean[1], z[1] + 1.0 * sigma[1] @ g[1], rtol=1e-15)
    # three chains in two dimensions
    y = np.array([[0.2, 0.1], [1.0, 1.0], [-1.0, 0.5]])
    mean3 = np.vstack([mean, [0.0, 0.0]])
    sigma3 = np.concatenate([sigma, [[[3.0, -1.0], [-1.0, 1.0]]]])
    h3 = np.append(h, 0.7)
    lq = _log_q(y, mean3, np.linalg.cholesky(sigma3), h3)
    assert lq.shape == (3,)
    for c in range(3):
        d = y[c] - mean3[c]
        assert np.isclose(lq[c], -0.5 * d @ np.linalg.solve(sigma3[c], d) / h3[c],
                          rtol=1e-13)


def test_mala_samples_a_gaussian_and_its_first_stage_is_the_gradient_model():
    post, _, m, C = _gauss(2, torch=True)
    res = sample(None, post, mode="surrogate-only", x0=m, proposal_cov=C, start_cov=C,
                 kernel="mala", n_samples=500, burn_in=200, chains=2, seed=6)
    d = res.draws()
    se = np.sqrt(np.diag(C) / 150)            # a conservative ESS of 150 per coordinate
    assert np.all(np.abs(d.mean(0) - m) < 5 * se)
    assert np.allclose(np.cov(d.T), C, rtol=0.3, atol=0.3 * np.sqrt(np.outer(np.diag(C),
                                                                             np.diag(C))))
    assert abs(res.acceptance()["overall"] - 0.574) < 0.1
    # delayed acceptance with MALA: the exact stage corrects a biased cheap model
    exact, cheap, m, C = _gauss(2, torch=True, cheap_bias=0.05)
    res = sample(exact, cheap, x0=m, proposal_cov=C, kernel="mala", n_samples=500,
                 burn_in=200, chains=2, seed=6)
    assert np.all(np.abs(res.draws().mean(0) - m) < 5 * se)
    assert res.mode == "delayed-acceptance" and res.settings["kernel"] == "mala"


def test_mala_at_a_failing_proposal_rejects_it():
    """Proposals where the model fails (density −inf) are rejected, not accepted on a NaN."""
    space = ParameterSpace((Parameter("k", 0.0, 1.0),))
    data = Observations(("y",), [0.5], 0.2)
    import torch as th

    def fn(x):
        x = np.atleast_2d(x)
        out = x[:, :1].copy()
        out[x[:, 0] > 0.6] = np.nan
        return out

    def tfn(x):
        return th.where(x[..., :1] > 0.6, th.full_like(x[..., :1], float("nan")), x[..., :1])

    post = Posterior(ForwardModel(fn, batched=True, torch_fn=tfn), data, space)
    res = sample(None, post, mode="surrogate-only", x0=[0.5], proposal_cov=[[4.0]],
                 adapt="none", kernel="mala", n_samples=400, burn_in=0, chains=2, seed=1)
    assert np.all(res.draws() <= 0.6) and np.all(np.isfinite(res.log_density))
    assert 0 < res.counts["accepted"].sum() < res.counts["proposals"].sum()


# ------------------------------------------------------------------ counts and starts
def test_delayed_acceptance_counts_every_model_evaluation():
    n = {"n": 0}
    post, cheap, m, C = _gauss(2, cheap_bias=0.1, count=n)
    n_cheap0 = cheap.model.n_evals
    res = sample(post, cheap, x0=m, proposal_cov=C, start_cov=C, n_samples=150, burn_in=50,
                 thin=2, chains=3, seed=4)
    c = res.counts
    assert np.all(c["proposals_total"] == 50 + 300) and np.all(c["proposals"] == 300)
    assert np.all(c["n_cheap"] == c["proposals_total"] + 1)            # + the start
    assert np.all(c["n_expensive"] == c["stage1_total"] + 1)
    assert c["n_expensive"].sum() == n["n"] and c["n_cheap"].sum() == (cheap.model.n_evals
                                                                       - n_cheap0)
    assert np.all(c["accepted_total"] <= c["stage1_total"])
    assert np.all(c["accepted"] <= c["stage1"]) and np.all(c["stage1"] <= c["proposals"])
    assert np.all(c["accepted"] <= c["accepted_total"])
    assert np.all(c["stage1"] <= c["stage1_total"])
    assert np.all(c["rank_fallbacks"] == 0)
    # retained flags: one per kept (every 2nd) step
    assert res.accepted.shape == res.stage1.shape == (3, 150)
    assert np.all(res.accepted <= res.stage1)
    assert np.all(res.accepted.sum(1) <= c["accepted"])
    acc = res.acceptance()
    assert acc["overall"] == pytest.approx(c["accepted"].sum() / c["proposals"].sum())
    assert acc["stage1"] == pytest.approx(c["stage1"].sum() / c["proposals"].sum())
    assert acc["stage2"] == pytest.approx(c["accepted"].sum() / c["stage1"].sum())
    d = res.to_dict()
    assert d["exact"] is True and d["mode"] == "delayed-acceptance" and d["seed"] == 4
    assert d["names"] == ["x0", "x1"] and d["chains"] == 3
    assert set(d) == {"mode", "exact", "names", "chains", "draws_per_chain", "burn_in", "thin",
                      "seed", "parameters", "max_rhat", "min_ess", "counts", "acceptance",
                      "expensive_per_effective_sample", "ess_per_second", "warnings",
                      "wall_time_s", "settings"}
    assert d["max_rhat"] == max(v["rhat"] for v in d["parameters"].values())
    assert d["min_ess"] == min(v["ess"] for v in d["parameters"].values())
    assert d["counts"]["cheap"] == c["n_cheap"].sum()
    assert d["counts"]["expensive"] == c["n_expensive"].sum()
    assert d["counts"]["per_chain"]["accepted"] == c["accepted"].tolist()
    assert all(type(v) is int for v in d["counts"]["per_chain"]["rank_fallbacks"])
    assert d["draws_per_chain"] == 150 and d["thin"] == 2 and d["burn_in"] == 50
    assert d["expensive_per_effective_sample"] == pytest.approx(
        c["n_expensive"].sum() / d["min_ess"])
    assert d["ess_per_second"] == pytest.approx(d["min_ess"] / d["wall_time_s"])


def test_thinning_keeps_every_thin_th_state():
    """thin = 3 and thin = 1 from one seed walk the same chain: the kept draws are its
    states after steps 3, 6, 9, …"""
    post, _, m, C = _gauss(2)
    kw = dict(x0=m, proposal_cov=C, adapt="none", burn_in=10, chains=2, seed=9)
    full = sample(post, n_samples=90, thin=1, **kw)
    thin = sample(post, n_samples=30, thin=3, **kw)
    assert np.allclose(thin.samples, full.samples[:, 2::3], rtol=1e-15)
    assert np.allclose(thin.log_density, full.log_density[:, 2::3], rtol=1e-15)
    assert np.array_equal(thin.accepted, full.accepted[:, 2::3])
    assert np.array_equal(thin.counts["accepted"], full.counts["accepted"])
    # the log-density reported is the target's at the retained state
    z = post.transform.to_z(full.samples.reshape(-1, 2))
    assert np.allclose(full.log_density.ravel(), post.log_density(z), rtol=1e-12)


def test_surrogate_only_and_metropolis_count_one_model_each():
    post, cheap, m, C = _gauss(2, cheap_bias=0.1)
    so = sample(None, cheap, x0=m, n_samples=50, burn_in=10, chains=2, seed=1)
    assert np.all(so.counts["n_expensive"] == 0)
    assert np.all(so.counts["n_cheap"] == 61)
    assert so.acceptance().keys() == {"overall"}
    mh = sample(post, x0=m, n_samples=50, burn_in=10, chains=2, seed=1)
    assert np.all(mh.counts["n_cheap"] == 0) and np.all(mh.counts["n_expensive"] == 61)
    assert np.all(mh.counts["stage1"] == mh.counts["accepted"])


def _one_d_failing(below=0.3):
    """The 1-D posterior of test_sampler with a model that fails (NaN) for μ < ``below``."""
    from .test_sampler import _one_d

    return _one_d(fail_below=below)


def test_dispersed_starts_are_redrawn_where_the_model_fails():
    post, calls = _one_d_failing(0.45)
    cheap, ccalls = _one_d_failing(0.45)
    x0 = [0.5]
    z0 = post.transform.to_z(np.array(x0))
    res = sample(post, cheap, x0=x0, start_cov=[[1.0]], proposal_cov=[[0.1]], n_samples=100,
                 burn_in=0, chains=8, seed=2)
    assert np.all(res.draws() >= 0.45)
    c = res.counts
    redraws_exp = c["n_expensive"] - (c["stage1_total"] + 1)
    redraws_cheap = c["n_cheap"] - (c["proposals_total"] + 1)
    assert np.array_equal(redraws_exp, redraws_cheap) and redraws_exp.sum() > 0
    assert c["n_expensive"].sum() == calls["n"] and c["n_cheap"].sum() == ccalls["n"]
    assert res.settings["over_dispersed_starts"] is True
    # a start never redrawn is a draw from N(z0, 4): mostly far from z0
    assert res.samples.shape == (8, 100, 1) and np.isfinite(z0).all()


def test_surrogate_only_redraws_count_only_the_cheap_model():
    cheap, calls = _one_d_failing(0.3)
    res = sample(None, cheap, n_samples=100, burn_in=0, chains=8, seed=11)   # prior starts
    c = res.counts
    assert np.all(c["n_expensive"] == 0)
    assert (c["n_cheap"] - (c["proposals_total"] + 1)).sum() > 0
    assert c["n_cheap"].sum() == calls["n"]
    post, calls = _one_d_failing(0.3)
    res = sample(post, n_samples=100, burn_in=0, chains=8, seed=11)
    c = res.counts
    assert np.all(c["n_cheap"] == 0) and c["n_expensive"].sum() == calls["n"]


def test_no_finite_start_after_100_redraws_is_an_error():
    post, _ = _one_d_failing(1.0)                         # fails everywhere
    with pytest.raises(InferenceError, match="no starting point with finite posterior "
                                             "density found"):
        sample(post, n_samples=5, burn_in=0, chains=1, seed=0)


def test_starts_one_per_chain_and_bad_shapes():
    post, _, m, C = _gauss(2)
    x0 = np.array([[0.1, 0.2], [0.3, 0.4], [9.0, 9.0]])
    res = sample(post, x0=x0, proposal_cov=1e-300 * np.eye(2), adapt="none", n_samples=3,
                 burn_in=0, chains=3, seed=0)
    assert np.allclose(res.samples[:, 0], x0, rtol=1e-12)            # each chain its own x0
    assert res.settings["over_dispersed_starts"] is False
    res = sample(post, x0=x0[0], proposal_cov=1e-300 * np.eye(2), adapt="none", n_samples=3,
                 burn_in=0, chains=2, seed=0)
    assert np.allclose(res.samples[:, 0], x0[0], rtol=1e-12)         # all at one x0
    with pytest.raises(InferenceError, match=r"x0: expected 2 values per chain, got shape "
                                             r"\(3,\)"):
        sample(post, x0=[1.0, 2.0, 3.0], n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="x0: expected 2 values per chain"):
        sample(post, x0=np.zeros((1, 2, 2)), n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="x0: 2 starting points for 3 chains"):
        sample(post, x0=np.zeros((2, 2)), chains=3, n_samples=3, burn_in=0)
    p3 = _gauss(3)[0]
    with pytest.raises(InferenceError, match="^x0: 2 starting points for 4 chains$"):
        sample(p3, x0=np.zeros((2, 3)), chains=4, n_samples=3, burn_in=0)


def test_start_scale_sets_the_spread_of_the_starts_and_of_redrawn_ones():
    """κ = 0.5: starts z ~ N(z0, κ² C); where the model fails (μ < x0) they are redrawn from
    the same law, so the starts are the half-normal above z0: mean κσ√(2/π)."""
    post, _, m, C = _gauss(1)
    frozen = np.array([[1e-300]])
    res = sample(post, x0=m, start_cov=C, start_scale=0.5, proposal_cov=frozen, adapt="none",
                 n_samples=1, burn_in=0, chains=400, seed=3)
    sd = np.std(res.samples[:, 0, 0])
    assert abs(sd / (0.5 * np.sqrt(C[0, 0])) - 1) < 0.15, sd      # ±4 SE of 400 draws
    space = ParameterSpace((Parameter("k", -INF, INF),))
    x0 = 0.2
    half = Posterior(ForwardModel(lambda x: np.where(x < x0, np.nan, x), batched=True),
                     Observations(("y",), [0.2], 1.0), space, GaussianPrior([0.0], [1.0]))
    res = sample(half, x0=[x0], start_cov=[[1.0]], start_scale=0.5, proposal_cov=frozen,
                 adapt="none", n_samples=1, burn_in=0, chains=400, seed=4)
    d = res.samples[:, 0, 0] - x0
    assert np.all(d >= 0)
    assert abs(d.mean() - 0.5 * np.sqrt(2 / np.pi)) < 4 * 0.5 * 0.6 / np.sqrt(400)
    assert d.max() < 0.5 * 4.5


def test_a_prior_without_a_proper_flag_needs_starting_points():
    post, _, m, C = _gauss(1)

    class Flat:                                                    # a duck-typed prior
        def logpdf(self, theta):
            return np.zeros(np.shape(theta)[:-1])

        def describe(self):
            return {"kind": "flat"}

    p = Posterior(post.model, post.data, post.space, Flat())
    with pytest.raises(InferenceError, match="^MCMC: give starting points x0 \\(the prior is "
                                             "improper\\)$"):
        sample(p, n_samples=2, burn_in=0)
    assert sample(p, x0=m, n_samples=2, burn_in=0, chains=1).samples.shape == (1, 2, 1)


# ------------------------------------------------------------------ arguments
def test_argument_errors():
    post, cheap, m, C = _gauss(2)
    with pytest.raises(InferenceError, match="start_cov: expected shape \\(2, 2\\), got "
                                             "\\(3, 3\\)"):
        sample(post, x0=m, start_cov=np.eye(3), n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="^start_cov: the covariance is not positive"):
        sample(post, x0=m, start_cov=np.diag([1.0, -1.0]), n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="^proposal_cov: the covariance is not symmetric"):
        sample(post, x0=m, proposal_cov=[[1.0, 0.5], [0.0, 1.0]], n_samples=3, burn_in=0)
    for kw in ({"n_samples": 0}, {"burn_in": -1}, {"chains": 0}, {"thin": 0},
               {"adapt_every": 0}):
        args = {"n_samples": 3, "burn_in": 0, **kw}
        with pytest.raises(InferenceError, match="must be >= 1 and burn_in >= 0"):
            sample(post, x0=m, **args)
    with pytest.raises(InferenceError, match="shrinkage must be > 0, got -1"):
        sample(post, x0=m, shrinkage=-1.0, n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="surrogate-only mode needs the cheap"):
        sample(post, mode="surrogate-only", n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="metropolis mode needs the posterior"):
        sample(None, cheap, mode="metropolis", n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="needs both"):
        sample(None, cheap, mode="delayed-acceptance", n_samples=3, burn_in=0)
    with pytest.raises(InferenceError, match="kernel 'mala' needs a differentiable"):
        sample(post, x0=m, kernel="mala", n_samples=3, burn_in=0)
    # the boundary values are accepted
    res = sample(post, x0=m, n_samples=1, burn_in=0, chains=1, thin=1, adapt_every=1,
                 shrinkage=1e-9)
    assert res.samples.shape == (1, 1, 2)
    # default modes
    assert sample(post, cheap, x0=m, n_samples=2, burn_in=0).mode == "delayed-acceptance"
    assert sample(None, cheap, x0=m, n_samples=2, burn_in=0).mode == "surrogate-only"
    assert sample(post, x0=m, n_samples=2, burn_in=0).mode == "metropolis"


# ------------------------------------------------------------------ the result
class _FakeComm:
    """Two ranks in one process: rank 1's result is handed to rank 0's gather."""

    def __init__(self, rank, size, box):
        self.rank, self.size, self.box = rank, size, box

    def gather(self, obj, root=0):
        assert root == 0
        if self.rank != 0:
            self.box.append(obj)
            return None
        return [obj, *self.box]


def test_chains_spread_over_ranks_give_the_same_draws():
    post, cheap, m, C = _gauss(2, cheap_bias=0.1)
    kw = dict(x0=m, proposal_cov=C, start_cov=C, n_samples=60, burn_in=30, chains=3, seed=5)
    ref = sample(post, cheap, **kw)
    box = []
    assert sample(post, cheap, comm=_FakeComm(1, 2, box), **kw) is None   # chain 1
    res = sample(post, cheap, comm=_FakeComm(0, 2, box), **kw)          # chains 0, 2
    assert np.array_equal(res.samples, ref.samples)
    for k in ref.counts:
        assert np.array_equal(res.counts[k], ref.counts[k]), k
    assert np.array_equal(res.proposal_cov, ref.proposal_cov)
    assert res.settings["ranks"] == 2 and ref.settings["ranks"] == 1
    # a rank without chains (3 ranks, 1 chain) contributes nothing
    box = []
    one = dict(kw, chains=1)
    assert sample(post, cheap, comm=_FakeComm(1, 3, box), **one) is None
    assert box == [None]
    res = sample(post, cheap, comm=_FakeComm(0, 3, box), **one)
    assert np.array_equal(res.samples, sample(post, cheap, **one).samples)


def _result(samples, accepted=None, cov=None, mode="metropolis"):
    C, n, P = samples.shape
    counts = {k: np.full(C, n) for k in ("proposals", "stage1", "accepted", "n_cheap",
                                          "n_expensive")}
    if accepted is not None:
        counts["accepted"] = np.asarray(accepted)
    return MCMCResult(mode=mode, exact=True, names=[f"p{j}" for j in range(P)],
                      samples=samples, log_density=np.zeros((C, n)), counts=counts,
                      burn_in=0, thin=1, seed=0, wall_time=0.0,
                      proposal_cov=np.broadcast_to(np.eye(P) if cov is None else cov,
                                                   (C, P, P)).copy())


def test_problems_reports_what_makes_draws_untrustworthy():
    rng = np.random.default_rng(0)
    good = _result(rng.standard_normal((4, 1000, 2)))
    assert good.problems() == []
    d = good.to_dict()
    assert d["warnings"] == [] and d["ess_per_second"] is None     # wall time 0
    split = rng.standard_normal((4, 1000, 2))
    split[:2, :, 1] += 3.0                                          # p1: chains disagree
    probs = _result(split).problems()
    assert "R-hat > 1.01 for p1: chains disagree (run longer)" in probs
    sticky = np.cumsum(rng.standard_normal((2, 300, 1)), axis=1)    # a random walk: low ESS
    probs = _result(sticky, accepted=[5, 0]).problems()
    assert "chain 1 never moved in 300 steps (its draws are one point)" in probs
    assert not any("chain 0 never moved" in p for p in probs)
    assert any(p.startswith("bulk ESS < 200 (100 per chain) for p0") for p in probs)
    flat = _result(rng.standard_normal((2, 500, 3)), cov=np.diag([1e3, 5e2, 1e-10]))
    probs = flat.problems()
    assert probs == ["chain 0: the proposal covariance lost rank (eigenvalue ratio 1.0e-13)",
                     "chain 1: the proposal covariance lost rank (eigenvalue ratio 1.0e-13)"]
    ok = _result(rng.standard_normal((2, 500, 3)), cov=np.diag([1e3, 5e2, 1e-8]))
    assert ok.problems() == []                                    # ratio 1e-11: full rank
    both = rng.standard_normal((4, 1000, 2))
    both[:2] += 3.0                                                 # both disagree
    assert "R-hat > 1.01 for p0, p1: chains disagree (run longer)" in _result(both).problems()
    e = rng.standard_normal((4, 1000, 2))                # AR(1), ρ = 0.85: ESS ≈ 4000·0.15/1.85
    for t in range(1, 1000):
        e[:, t] = 0.85 * e[:, t - 1] + np.sqrt(1 - 0.85 ** 2) * e[:, t]
    ess_low = _result(e)
    assert 100 < ess_low.summary()["p0"]["ess_bulk"] < 400
    assert ("bulk ESS < 400 (100 per chain) for p0, p1: too few effective draws"
            in ess_low.problems())
    one = _result(rng.standard_normal((1, 2000, 1)))
    assert one.problems() == ["one chain: R-hat needs several chains to see non-convergence"]
    assert one.chains == 1 and one.draws().shape == (2000, 1)


def test_acceptance_without_proposals_and_without_stage1_passes():
    r = _result(np.random.default_rng(1).standard_normal((2, 10, 1)), mode="delayed-acceptance")
    for k in r.counts:
        r.counts[k] = np.zeros(2, dtype=int)
    assert r.acceptance() == {"overall": None, "stage1": None, "stage2": None}
    r.counts["proposals"] = np.array([5, 5])
    assert r.acceptance() == {"overall": 0.0, "stage1": 0.0, "stage2": None}
    d = r.to_dict()
    assert d["counts"]["cheap"] == 0 and d["expensive_per_effective_sample"] == 0.0
    assert d["chains"] == 2 and d["names"] == ["p0"] and d["mode"] == "delayed-acceptance"


def test_inference_data_and_files(tmp_path):
    import xarray as xr

    post, cheap, m, C = _gauss(2, cheap_bias=0.1)
    res = sample(post, cheap, x0=m, proposal_cov=C, n_samples=40, burn_in=10, chains=2,
                 seed=1)
    dt = res.to_inference_data(observed={"y": post.data.values}, attrs={"case": "g",
                                                                        "extra": {"a": 1}})
    post_ = dt["posterior"]
    assert np.array_equal(post_["x0"].values, res.samples[:, :, 0])
    assert np.array_equal(post_["x1"].values, res.samples[:, :, 1])
    ss = dt["sample_stats"]
    assert np.array_equal(ss["lp"].values, res.log_density)
    assert np.array_equal(ss["accepted"].values, res.accepted)
    assert np.array_equal(ss["stage1_accepted"].values, res.stage1)
    assert np.array_equal(dt["observed_data"]["y"].values, post.data.values)
    a = post_.attrs
    assert a["mode"] == "delayed-acceptance" and a["exact"] == 1 and a["burn_in"] == 10
    assert a["thin"] == 1 and a["seed"] == 1 and a["case"] == "g"
    assert a["n_expensive"] == res.counts["n_expensive"].sum()
    assert a["n_cheap"] == res.counts["n_cheap"].sum()
    assert json.loads(a["extra"]) == {"a": 1}
    bare = _result(res.samples).to_inference_data()
    assert "accepted" not in bare["sample_stats"] and "observed_data" not in bare.children
    path = res.save_netcdf(tmp_path / "r.nc", observed={"y": post.data.values},
                           attrs={"case": "g"})
    back = xr.open_datatree(path)
    assert np.allclose(back["posterior"]["x1"].values, res.samples[:, :, 1])
    assert np.allclose(back["observed_data"]["y"].values, post.data.values)
    assert back["posterior"].attrs["case"] == "g" and back["posterior"].attrs["seed"] == 1
    back.close()
    plain = xr.open_datatree(res.save_netcdf(tmp_path / "p.nc"))
    assert "observed_data" not in plain.children and "case" not in plain["posterior"].attrs
    plain.close()
    j = json.loads(res.save_json(tmp_path / "r.json").read_text())
    assert j["counts"]["expensive"] == res.counts["n_expensive"].sum()
    with np.load(res.save_npz(tmp_path / "r.npz")) as z:
        assert np.array_equal(z["samples"], res.samples)
        assert np.array_equal(z["log_density"], res.log_density)
        assert z["names"].tolist() == ["x0", "x1"]
