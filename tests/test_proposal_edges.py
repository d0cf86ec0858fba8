"""The bound-safe Laplace proposal, the starts and the SPD check against closed forms.

For a model linear in μ the Laplace approximation is written out here in θ (μ, or log μ for a
log-scaled parameter): H_θ = J_θᵀ Σ_y⁻¹ J_θ + P_prior + 12/width² on the bounded
coordinates (the precision of the uniform prior in w = (θ − a)/width), and pushed to z with
dz/dθ = 1/(width ξ(1 − ξ)) on an interval, 1 on a free coordinate.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.errors import HybridError
from hybrid.inference import ForwardModel, GaussianPrior, Observations, Posterior
from hybrid.inference.errors import InferenceError
from hybrid.inference.proposal import check_spd, dispersed_starts, laplace_proposal

INF = np.inf


def _mixed():
    """p0 ∈ [1, 5] linear, p1 ∈ [0.1, 10] log-scaled, p2 free; G = A μ; Gaussian prior in θ."""
    space = ParameterSpace((Parameter("p0", 1.0, 5.0), Parameter("p1", 0.1, 10.0, log=True),
                            Parameter("p2", -INF, INF)))
    rng = np.random.default_rng(4)
    A = rng.standard_normal((6, 3)) + np.array([1.0, 0.0, 0.0])
    sigma = 0.05
    mu0 = np.array([3.0, 1.0, 0.5])
    data = Observations(tuple(f"y{i}" for i in range(6)), A @ mu0, sigma)
    theta_mean = np.array([2.5, 0.2, 0.0])
    theta_cov = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 4.0]])
    prior = GaussianPrior(theta_mean, theta_cov)
    post = Posterior(ForwardModel(lambda x: x @ A.T, batched=True), data, space, prior)
    return post, A, sigma, mu0, theta_cov


def test_laplace_in_the_interior_is_the_closed_form():
    post, A, sigma, mu0, theta_cov = _mixed()
    width = np.array([4.0, np.log(100.0), 1.0])
    bounded = np.array([True, True, False])
    dmu_dtheta = np.array([1.0, mu0[1], 1.0])             # μ = e^θ for the log parameter
    J_theta = A * dmu_dtheta
    H = (J_theta.T @ J_theta / sigma ** 2 + np.linalg.inv(theta_cov)
         + np.diag(np.where(bounded, 12.0 / width ** 2, 0.0)))
    C_theta = np.linalg.inv(H)
    theta = np.array([mu0[0], np.log(mu0[1]), mu0[2]])
    a = np.array([1.0, np.log(0.1), 0.0])
    xi = (theta - a) / width
    dz_dtheta = np.where(bounded, 1.0 / (width * xi * (1 - xi)), 1.0)
    expected = dz_dtheta[:, None] * C_theta * dz_dtheta[None, :]
    for J in (A, None):                                    # given, or by finite differences
        lap = laplace_proposal(post, mu0, J=J)
        rtol = 1e-10 if J is not None else 1e-6
        assert not lap.moved.any()                         # far from the bounds: not moved
        assert np.allclose(lap.mu, mu0, rtol=1e-12)
        assert np.allclose(lap.z, post.transform.to_z(mu0), rtol=1e-12)
        assert np.allclose(lap.cov, expected, rtol=rtol, atol=0.0)
        w_scale = np.where(bounded, width, 1.0)
        assert np.allclose(lap.cov_w, C_theta / np.outer(w_scale, w_scale), rtol=rtol, atol=0)
    with pytest.raises(HybridError, match=r"^MAP: p0=6 is outside its bounds \[1, 5\]$"):
        laplace_proposal(post, [6.0, 1.0, 0.0], J=A)       # outside the box
    # a Jacobian of exact fractions is a matrix of numbers too
    Jf = [[Fraction(v).limit_denominator(10 ** 12) for v in row] for row in A]
    assert np.allclose(laplace_proposal(post, mu0, J=Jf).cov, expected, rtol=1e-9)


def test_laplace_of_a_linear_gaussian_problem_is_the_exact_posterior():
    """Free coordinates, linear model, Gaussian prior: Laplace = the posterior, exactly."""
    space = ParameterSpace((Parameter("a", -INF, INF), Parameter("b", -INF, INF)))
    A = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.2]])
    C0 = np.array([[2.0, 0.5], [0.5, 1.0]])
    data = Observations(("u", "v", "w"), [1.0, 0.0, 2.0], [0.1, 0.2, 0.3])
    post = Posterior(ForwardModel(lambda x: A @ x), data, space, GaussianPrior([0, 0], C0))
    exact = np.linalg.inv(A.T @ np.diag(1 / data.sigma ** 2) @ A + np.linalg.inv(C0))
    lap = laplace_proposal(post, [0.3, 0.4], J=A)
    assert np.allclose(lap.cov, exact, rtol=1e-12, atol=0)
    assert np.allclose(lap.cov_w, exact, rtol=1e-12, atol=0)


def test_a_centre_on_a_bound_is_moved_inside_by_one_standard_deviation():
    """y = μ on [0, 1]², MAPs on the lower and on the upper bound: w_c = s and 1 − s."""
    space = ParameterSpace((Parameter("lo", 0.0, 1.0), Parameter("hi", 0.0, 1.0)))
    sig = np.array([0.1, 0.2])
    data = Observations(("a", "b"), [-0.2, 1.3], sig)
    post = Posterior(ForwardModel(lambda x: np.asarray(x, float)), data, space)
    lap = laplace_proposal(post, [0.0, 1.0], J=np.eye(2))
    s = 1.0 / np.sqrt(1.0 / sig ** 2 + 12.0)               # H_w = 1/σ² + 12, uncorrelated
    assert lap.moved.tolist() == [True, True]
    assert np.allclose(lap.mu, [s[0], 1.0 - s[1]], rtol=1e-12)
    wc = lap.mu
    assert np.allclose(lap.cov, np.diag((s / (wc * (1 - wc))) ** 2), rtol=1e-10, atol=0)
    assert np.allclose(lap.cov_w, np.diag(s ** 2), rtol=1e-12, atol=0)
    # a MAP inside but within one standard deviation of a bound is moved too; farther, not
    lap = laplace_proposal(post, [0.5 * s[0], 0.5], J=np.eye(2))
    assert lap.moved.tolist() == [True, False] and lap.mu[0] == pytest.approx(s[0])


def _free(ev, Q):
    """Free coordinates, flat prior, G = diag(√ev) Q μ with σ = 1: H = Qᵀ diag(ev) Q."""
    P = len(ev)
    space = ParameterSpace(tuple(Parameter(f"x{i}", -INF, INF) for i in range(P)))
    A = np.sqrt(np.asarray(ev, float))[:, None] * Q
    data = Observations(tuple(f"y{i}" for i in range(P)), np.zeros(P), 1.0)
    return Posterior(ForwardModel(lambda x: A @ x), data, space), A


@pytest.mark.parametrize("ev, expected", [
    ([5e-13, 0.1, 0.2], [5e-13, 0.1, 0.2]),   # tiny but regular (cond 4e11): inverted as is
    ([3e-12, 2.0, 4.0], [4e-12, 2.0, 4.0]),   # cond > 1e12: the smallest raised to 1e-12·max
    ([0.0, 0.1, 0.5], [1e-12, 0.1, 0.5]),     # singular, max < 1: raised to 1e-12
])
def test_the_laplace_precision_is_floored_at_1e12_condition(ev, expected):
    """A direction the data and a flat prior leave (nearly) free gets a finite variance:
    the eigenvalues of H are floored at 1e-12·max(λ_max, 1), and no others change."""
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    post, A = _free(ev, Q)
    lap = laplace_proposal(post, np.zeros(3), J=A)
    got = np.sort(1.0 / np.linalg.eigvalsh(lap.cov))
    assert np.allclose(got, expected, rtol=1e-3, atol=0), got   # cond 1e12: round-off
    assert np.all(np.isfinite(lap.cov)) and np.allclose(lap.cov, lap.cov.T, rtol=1e-12)


def test_dispersed_starts_have_scale_squared_times_the_covariance():
    """4000 starts: whitened by L and the scale, their covariance is I within 5 standard
    errors (√(2/n) on the diagonal, √(1/n) off it) and their mean is z_c within 5/√n."""
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    zc = np.array([1.0, -2.0, 0.5])
    n = 4000
    L = np.linalg.cholesky(cov)
    for scale, kw in ((2.0, {}), (0.5, {"scale": 0.5})):      # the default κ is 2
        rngs = [np.random.default_rng(i) for i in range(n)]
        z = dispersed_starts(zc, cov, rngs, **kw)
        assert z.shape == (n, 3)
        u = np.linalg.solve(L, (z - zc).T).T / scale
        assert np.all(np.abs(u.mean(axis=0)) < 5 / np.sqrt(n))
        se = np.where(np.eye(3) > 0, np.sqrt(2.0 / n), np.sqrt(1.0 / n))
        assert np.all(np.abs(np.cov(u.T) - np.eye(3)) < 5 * se), np.cov(u.T)
    with pytest.raises(InferenceError, match="^starting covariance: the covariance is not "
                                             "positive definite"):
        dispersed_starts(zc, -cov, rngs[:2])


def test_check_spd_thresholds_and_inputs():
    # asymmetric by 1e-6 relative: refused (rtol 1e-8), whatever numpy's default tolerances
    a = np.array([[1.0, 0.5], [0.5 * (1 + 1e-6), 1.0]])
    with pytest.raises(InferenceError, match="^c: the covariance is not symmetric"):
        check_spd(a, "c")
    # tiny entries: an asymmetry of 20 % of them is refused (no absolute tolerance)
    with pytest.raises(InferenceError, match="not symmetric"):
        check_spd(1e-10 * np.array([[1.0, 0.5], [0.4, 1.0]]), "c")
    # the singularity test is relative: diag(1e6, 1e-20) has d_min/d_max = 1e-13
    with pytest.raises(InferenceError, match="numerically singular"):
        check_spd(np.diag([1e6, 1e-20]), "c")
    L = check_spd(np.diag([1e6, 1e-6]), "c")              # cond 1e12: accepted
    assert np.allclose(L, np.diag([1e3, 1e-3]))
    for bad in (np.ones((2, 3)), np.array([[1.0, np.nan], [np.nan, 1.0]]),
                np.array([[1.0, 0.0], [0.0, np.inf]])):
        with pytest.raises(InferenceError, match="^c: expected a finite square matrix"):
            check_spd(bad, "c")
    # exact fractions are numbers too
    L = check_spd([[Fraction(4), Fraction(2)], [Fraction(2), Fraction(3)]], "c")
    assert np.allclose(L @ L.T, [[4.0, 2.0], [2.0, 3.0]], rtol=1e-15)
