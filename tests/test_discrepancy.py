"""The approximation-error model of a cheaper level (hybrid/inference/discrepancy.py).

* the constant model is the mean and ddof-1 spread of the pairs' differences; the linear
  model reproduces an error that is exactly affine in the natural coordinates (log μ for
  log-scaled parameters) with zero spread, and its spread is the residual standard deviation
  with P + 1 degrees of freedom taken;
* a coarse level whose error is affine in t(μ) becomes, corrected, the fine level itself:
  the corrected posterior's log density equals the fine one's up to a constant;
* inside delayed acceptance the corrected coarse level passes nearly every proposal where
  the uncorrected one rejects most, and the chain still samples the fine posterior;
* refusals in one line.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.inference import ForwardModel, InferenceError, Observations, Posterior, sample
from hybrid.inference.discrepancy import (
    approximation_error,
    corrected_model,
    inflated_data,
)

from .test_mcmc_multilevel import _agrees


def test_constant_model_is_mean_and_spread():
    rng = np.random.default_rng(0)
    fine, cheap = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    mu = rng.uniform(1, 2, size=(5, 2))
    err = approximation_error(fine, cheap, mu, kind="constant")
    np.testing.assert_allclose(err.intercept, (fine - cheap).mean(0), rtol=1e-14)
    np.testing.assert_allclose(err.std, (fine - cheap).std(0, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(err(mu[0]), err.intercept, rtol=1e-14)
    assert approximation_error(fine, cheap, mu).kind == "linear"   # 5 >= P + 3
    assert approximation_error(fine[:4], cheap[:4], mu[:4]).kind == "constant"


def test_linear_model_recovers_an_affine_error_in_log_coordinates():
    rng = np.random.default_rng(1)
    mu = np.column_stack([rng.uniform(0.1, 1.0, 12), rng.uniform(-1, 1, 12)])
    log = np.array([True, False])
    t = np.column_stack([np.log(mu[:, 0]), mu[:, 1]])
    B = np.array([[2.0, -1.0], [0.5, 3.0], [0.0, 1.0]])
    e = 0.7 + t @ B.T
    cheap = rng.normal(size=e.shape)
    err = approximation_error(cheap + e, cheap, mu, log)
    assert err.kind == "linear" and np.all(err.std < 1e-12)
    probe = np.array([[0.3, 0.2], [0.9, -0.8]])
    tp = np.column_stack([np.log(probe[:, 0]), probe[:, 1]])
    np.testing.assert_allclose(err(probe), 0.7 + tp @ B.T, atol=1e-12)
    # with noise: the spread is the residual std with P + 1 degrees of freedom taken
    noise = 0.1 * rng.standard_normal(e.shape)
    err = approximation_error(cheap + e + noise, cheap, mu, log)
    X = np.column_stack([np.ones(12), t - t.mean(0)])
    res = (e + noise) - X @ np.linalg.lstsq(X, e + noise, rcond=None)[0]
    np.testing.assert_allclose(err.std, np.sqrt((res ** 2).sum(0) / (12 - 3)), rtol=1e-12)


def _levels():
    """Fine y = Gμ; coarse y = (G + E)μ + c, an error −Eμ − c affine in μ; Gaussian noise."""
    rng = np.random.default_rng(4)
    G = rng.standard_normal((6, 2)) + 2 * np.eye(6, 2)
    E = 0.3 * rng.standard_normal((6, 2))
    c = rng.normal(size=6)
    space = ParameterSpace((Parameter("a", -3.0, 3.0), Parameter("b", -3.0, 3.0)))
    data = Observations(tuple(f"y{i}" for i in range(6)), G @ np.array([0.5, -0.4]), 0.05)
    fine_m = ForwardModel(lambda m: G @ m, name="fine")
    coarse_m = ForwardModel(lambda m: (G + E) @ m + c, name="coarse")
    return space, data, fine_m, coarse_m, G


def test_corrected_affine_error_gives_the_fine_posterior():
    space, data, fine_m, coarse_m, _ = _levels()
    pairs = np.random.default_rng(2).uniform(-3, 3, size=(8, 2))
    err = approximation_error(np.array([fine_m.fn(m) for m in pairs]),
                              np.array([coarse_m.fn(m) for m in pairs]), pairs)
    fine = Posterior(fine_m, data, space)
    corr = Posterior(corrected_model(coarse_m, err), inflated_data(data, err), space)
    z = np.random.default_rng(3).normal(size=(20, 2))
    d = corr.log_density(z) - fine.log_density(z)
    np.testing.assert_allclose(d, d[0], atol=1e-8)
    raw = Posterior(coarse_m, data, space).log_density(z) - fine.log_density(z)
    assert np.ptp(raw) > 100    # the uncorrected coarse level is far off


def test_corrected_level_screens_well_and_the_chain_stays_exact():
    space, data, fine_m, coarse_m, G = _levels()
    rng = np.random.default_rng(5)
    pairs = rng.uniform(-3, 3, size=(8, 2))
    err = approximation_error(np.array([fine_m.fn(m) for m in pairs]),
                              np.array([coarse_m.fn(m) for m in pairs]), pairs)
    fine = Posterior(fine_m, data, space)
    sur = fine.with_model(ForwardModel(lambda m: (G + 0.002) @ m, name="surrogate"))
    corr = Posterior(corrected_model(coarse_m, err), inflated_data(data, err), space)
    raw = fine.with_model(coarse_m)
    cov = np.linalg.inv(G.T @ G / 0.05 ** 2)
    mean = cov @ (G.T @ data.values / 0.05 ** 2)
    kw = {"n_samples": 1500, "burn_in": 300, "chains": 2, "seed": 1, "x0": mean,
          "proposal_cov": cov, "start_cov": cov, "kernel": "rw"}
    good = sample(fine, sur, intermediate=[corr], **kw)
    bad = sample(fine, sur, intermediate=[raw], **kw)
    g, b = good.to_dict(), bad.to_dict()
    print("stage-2 acceptance", good.acceptance()["stage2"], bad.acceptance()["stage2"],
          "fine per ESS", g["expensive_per_effective_sample"], b["expensive_per_effective_sample"])
    assert good.acceptance()["stage2"] > 0.9 > bad.acceptance()["stage2"]
    assert g["expensive_per_effective_sample"] < 0.5 * b["expensive_per_effective_sample"]
    ok, report = _agrees(good.samples, mean, cov)   # the box is far: the prior is flat here
    assert ok, report


def test_refusals():
    with pytest.raises(InferenceError, match="at least 2 pairs"):
        approximation_error(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 1)))
    with pytest.raises(InferenceError, match="do not pair up"):
        approximation_error(np.ones((3, 2)), np.ones((3, 3)), np.ones((3, 1)))
    with pytest.raises(InferenceError, match="needs at least 5 pairs"):
        approximation_error(np.ones((4, 2)), np.ones((4, 2)), np.ones((4, 2)), kind="linear")
    with pytest.raises(InferenceError, match="non-finite"):
        approximation_error(np.full((3, 1), np.nan), np.ones((3, 1)), np.ones((3, 1)))
