"""Coordinates, posterior gradients, MAP + Laplace against analytic answers, the confirm loop."""

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
    Unconstrained,
    confirm,
    find_map,
    synthesize,
)

INF = np.inf
T = np.linspace(0.1, 3.0, 12)

# a box with a log-scaled and a linear parameter
BOX = ParameterSpace((Parameter("k", 0.1, 10.0, log=True), Parameter("c", 0.0, 2.0)))
# every kind of bound: interval, lower only (log: (0, inf)), upper only, none
MIXED = ParameterSpace((Parameter("a", -1.0, 3.0), Parameter("b", 0.0, INF, log=True),
                        Parameter("c", -INF, 2.0), Parameter("d", 1.0, INF),
                        Parameter("e", -INF, INF)))


def decay(mu):
    """Nonlinear analytic 'expensive' model: exp(−k t)(1 + c t) at 12 times (numpy or torch)."""
    lib = torch if isinstance(mu, torch.Tensor) else np
    k, c = mu[..., :1], mu[..., 1:2]
    return lib.exp(-k * torch.as_tensor(T) if lib is torch else -k * T) * (1 + c * (
        torch.as_tensor(T) if lib is torch else T))


def biased_decay(mu):
    """A deliberately biased 'cheap' model: wrong amplitude, rate, slope and offset."""
    mu = np.atleast_2d(mu)
    k, c = mu[:, :1], mu[:, 1:]
    return 1.04 * np.exp(-0.93 * k * T) * (1 + 1.05 * c * T) + 0.01


# ------------------------------------------------------------------- coordinates
def test_transform_round_trip_and_unit_coordinate():
    tr = Unconstrained(MIXED)
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(200, 5))
    mu = tr.from_z(z)
    assert np.all(mu[:, 0] > -1) and np.all(mu[:, 0] < 3) and np.all(mu[:, 1] > 0)
    assert np.all(mu[:, 2] < 2) and np.all(mu[:, 3] > 1)
    assert np.allclose(tr.to_z(mu), z, atol=1e-9)
    # for a bounded parameter z = logit of ParameterSpace.to_unit
    tb = Unconstrained(BOX)
    mu = BOX.sample(50, "random", seed=3)
    xi = BOX.to_unit(mu)
    assert np.allclose(tb.to_z(mu), np.log(xi / (1 - xi)), atol=1e-12)


def test_log_jacobian_matches_numerical_derivative_and_torch():
    tr = Unconstrained(MIXED)
    z = np.random.default_rng(1).normal(size=(7, 5))
    h = 1e-6
    num = np.zeros_like(z)
    for j in range(5):
        e = np.zeros(5)
        e[j] = h
        num[:, j] = (tr.theta_from_z(z + e)[:, j] - tr.theta_from_z(z - e)[:, j]) / (2 * h)
    assert np.allclose(tr.dtheta_dz(z), num, rtol=1e-7)
    assert np.allclose(tr.log_jacobian(z), np.log(np.abs(num)).sum(1), atol=1e-7)
    mu_t, theta_t, lj_t = tr.torch_from_z(torch.as_tensor(z))
    assert np.allclose(mu_t.numpy(), tr.from_z(z), rtol=1e-14)
    assert np.allclose(theta_t.numpy(), tr.theta_from_z(z), rtol=1e-14)
    assert np.allclose(lj_t.numpy(), tr.log_jacobian(z), rtol=1e-13)


def test_bad_spaces_are_refused():
    with pytest.raises(InferenceError, match="lower"):
        Unconstrained(ParameterSpace((Parameter("a", 1.0, 1.0),)))
    with pytest.raises(InferenceError, match="log-scaled needs lower >= 0"):
        Unconstrained(ParameterSpace((Parameter("a", -1.0, 1.0, log=True),)))


# ------------------------------------------------------------------- posterior
def _decay_problem(differentiable: bool, data=None):
    if data is None:
        data = Observations(tuple(f"t{i}" for i in range(T.size)),
                            decay(np.array([1.3, 0.6])), 0.01)
    model = ForwardModel(decay, torch_fn=decay if differentiable else None, batched=True)
    return Posterior(model, data, BOX)


def test_gradient_autograd_equals_finite_differences():
    data = synthesize(decay(np.array([1.3, 0.6])), 0.01, seed=3)
    pa, pf = _decay_problem(True, data), _decay_problem(False, data)
    rng = np.random.default_rng(2)
    # inside the box, and on its bounds (one-sided differences there)
    for w in [*rng.uniform(0.05, 0.95, (5, 2)), np.array([0.0, 0.3]), np.array([0.4, 1.0])]:
        fa, ga = pa.objective_and_grad(w)
        ff, gf = pf.objective_and_grad(w)
        assert np.isclose(fa, ff, rtol=1e-13)
        assert np.allclose(ga, gf, rtol=1e-6, atol=1e-8 * np.abs(ga).max())
        mu = pa.transform.from_w(w)
        assert np.allclose(pa.jacobian(mu), pf.jacobian(mu), rtol=1e-6, atol=1e-9)
    # finite differences never leave the box: a model that refuses outside it still works
    def strict(mu):
        assert np.all(BOX.to_unit(mu) >= 0) and np.all(BOX.to_unit(mu) <= 1), mu
        return decay(mu)

    ps = Posterior(ForwardModel(strict, batched=True), data, BOX)
    for w in (np.array([0.0, 0.0]), np.array([1.0, 1.0])):
        assert np.allclose(ps.objective_and_grad(w)[1], pa.objective_and_grad(w)[1], rtol=1e-6)


def test_observations_are_matched_by_name():
    names = [f"t{i}" for i in range(T.size)]
    data = Observations(("t3", "t0"), decay(np.array([1.0, 0.5]))[[3, 0]], 0.1)
    post = Posterior(ForwardModel(decay, batched=True, names=names), data, BOX)
    assert np.allclose(post.residual(np.array([1.0, 0.5])), 0.0)
    with pytest.raises(InferenceError, match="predicts no observation named 'zz'"):
        Posterior(ForwardModel(decay, names=names), Observations(("zz",), [1.0], 1.0), BOX)
    with pytest.raises(InferenceError, match="12 outputs for 2 observations"):
        Posterior(ForwardModel(decay), data, BOX).chi2(np.array([1.0, 0.5]))


def test_model_failures_become_zero_density():
    class Diverged(Exception):
        pass

    def fragile(mu):
        if mu[0] > 5.0:
            raise Diverged("no convergence")
        return decay(mu)

    model = ForwardModel(fragile, failures=(Diverged,))
    post = Posterior(model, synthesize(decay(np.array([1.0, 0.5])), 0.01), BOX)
    z = post.transform.to_z(np.array([[1.0, 0.5], [8.0, 0.5]]))
    lp = post.log_density(z)
    assert np.isfinite(lp[0]) and lp[1] == -np.inf
    assert model.n_failed == 1 and model.n_evals == 2


# ------------------------------------------------------------------- MAP
@pytest.mark.parametrize("differentiable", [True, False])
def test_map_recovers_known_parameters_from_noise_free_data(differentiable):
    truth = np.array([1.3, 0.6])
    post = _decay_problem(differentiable)
    res = find_map(post, starts=4, seed=1)
    # noise-free data: the minimum is χ² = 0 at the truth; tolerance by optimiser precision
    assert np.allclose(res.mu, truth, rtol=1e-7, atol=0), res.mu - truth
    assert res.chi2 < 1e-10
    assert res.n_model_evals == post.model.n_evals
    assert len(res.starts) == 4 and res.converged
    d = res.to_dict()
    assert d["names"] == ["k", "c"] and d["n_model_evals"] == res.n_model_evals


@pytest.mark.parametrize("differentiable", [True, False])
def test_map_on_a_bound_is_the_bound(differentiable):
    """G = A μ with orthogonal columns: the MAP in a box is the clipped least-squares point."""
    Q = np.linalg.qr(np.random.default_rng(4).standard_normal((6, 3)))[0] * [1.0, 2.0, 0.5]
    box = ParameterSpace((Parameter("a", 0.0, 1.0), Parameter("b", 0.0, 1.0),
                          Parameter("c", 0.1, 10.0, log=True)))
    data = Observations(tuple(f"y{i}" for i in range(6)), Q @ np.array([-0.5, 0.4, 20.0]), 0.1)
    Qt = torch.as_tensor(Q)
    model = ForwardModel(lambda x: x @ Q.T, batched=True,
                         torch_fn=(lambda x: x @ Qt.T) if differentiable else None)
    res = find_map(Posterior(model, data, box), starts=4)
    assert res.mu[0] == 0.0 and res.mu[2] == 10.0 and res.converged
    assert abs(res.mu[1] - 0.4) < 1e-8


def _linear_gaussian(seed=0, P=3, m=6, prior=True):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, P))
    sigma = rng.uniform(0.1, 0.4, m)
    space = ParameterSpace(tuple(Parameter(f"a{i}", -INF, INF) for i in range(P)))
    data = Observations(tuple(f"y{i}" for i in range(m)), A @ rng.standard_normal(P)
                        + sigma * rng.standard_normal(m), sigma)
    m0, C0 = rng.standard_normal(P), np.diag(rng.uniform(0.5, 2.0, P))
    H = A.T @ np.diag(sigma ** -2) @ A + (np.linalg.inv(C0) if prior else 0)
    cov = np.linalg.inv(H)
    mean = cov @ (A.T @ (data.values / sigma ** 2) + (np.linalg.solve(C0, m0) if prior else 0))
    return A, space, data, (GaussianPrior(m0, C0) if prior else None), mean, cov


@pytest.mark.parametrize("prior", [True, False])
@pytest.mark.parametrize("differentiable", [True, False])
def test_laplace_covariance_of_linear_gaussian_is_the_posterior(prior, differentiable):
    A, space, data, pr, mean, cov = _linear_gaussian(prior=prior)
    At = torch.as_tensor(A)
    model = ForwardModel(lambda x: x @ A.T, batched=True,
                         torch_fn=(lambda x: x @ At.T) if differentiable else None)
    res = find_map(Posterior(model, data, space, pr), starts=2)
    # Φ is flat to rounding (1e-16 relative) within ~1e-8 standard deviations of the mode
    assert np.all(np.abs(res.mu - mean) < 1e-6 * np.sqrt(np.diag(cov))), res.mu - mean
    assert np.allclose(res.cov, cov, rtol=1e-7 if not differentiable else 1e-12)
    assert np.allclose(res.cov_z, cov, rtol=1e-7 if not differentiable else 1e-12)


def test_laplace_on_log_parameter_uses_the_chain_rule():
    """A model linear in log k: the Laplace covariance in μ is D C_θ D with D = dμ/dθ = μ."""
    space = ParameterSpace((Parameter("k", 1e-3, 1e3, log=True),))
    data = Observations(("y",), [np.log(2.0)], 0.05)
    post = Posterior(ForwardModel(lambda mu: np.log(mu)), data, space)
    res = find_map(post, starts=2)
    assert np.isclose(res.mu[0], 2.0, rtol=1e-8)
    assert np.isclose(res.cov[0, 0], (2.0 * 0.05) ** 2, rtol=1e-6)


# ------------------------------------------------------------------- confirm
def test_confirm_loop_reaches_the_expensive_map_with_few_expensive_runs():
    data = synthesize(decay(np.array([1.3, 0.6])), 0.01, seed=3)
    expensive = ForwardModel(decay, batched=True, name="expensive")
    cheap = Posterior(ForwardModel(biased_decay, batched=True, name="cheap"), data, BOX)
    direct = find_map(cheap.with_model(expensive), starts=8)     # the reference answer
    cheap_map = find_map(cheap, starts=8)
    std = np.sqrt(np.diag(direct.cov))
    assert np.any(np.abs(cheap_map.mu - direct.mu) > 3 * std)    # the bias matters

    n0 = expensive.n_evals
    res = confirm(cheap, expensive, start=cheap_map)
    assert res.converged, res.message
    assert res.n_expensive == expensive.n_evals - n0
    # tight: within 1e-4 posterior standard deviations of the expensive MAP
    assert np.all(np.abs(res.mu - direct.mu) < 1e-4 * std), (res.mu - direct.mu) / std
    assert abs(res.chi2 - direct.chi2) < 1e-8 * direct.chi2
    assert res.n_expensive <= 20 < direct.n_model_evals / 20
    assert np.allclose(res.cov, direct.cov, rtol=1e-4)
    assert res.to_dict()["history"][0]["accepted"] is True

    # value-only correction keeps the cheap model's wrong slope: it misses the expensive MAP
    zeroth = confirm(cheap, expensive, start=cheap_map, jacobian="zeroth", max_expensive=40)
    assert np.any(np.abs(zeroth.mu - direct.mu) > 1e-2 * std)


def test_confirm_with_exact_jacobian_and_consistent_cheap_model_needs_two_runs():
    """A cheap model that only has an offset: the corrected model is exact after one run."""
    data = synthesize(decay(np.array([1.3, 0.6])), 0.01, seed=3)
    expensive = ForwardModel(decay, batched=True)
    cheap = Posterior(ForwardModel(lambda m: decay(m) + 0.05, batched=True), data, BOX)
    res = confirm(cheap, expensive, jacobian="zeroth")
    direct = find_map(cheap.with_model(expensive), starts=4)
    assert np.allclose(res.mu, direct.mu, rtol=1e-7)
    assert res.n_expensive <= 3
