"""R̂ and ESS against the formulas of Vehtari et al. (2021), written out here, and exact values.

The references below implement the paper's definitions directly (split chains dropping the
middle draw of an odd chain, W, B, var⁺, rank normalisation with Blom's offset 3/8, folding
about the median, Geyer's initial monotone sequence with Stan's cap of M'N' log₁₀(M'N')), so
the wrappers of :mod:`hybrid.inference.diagnostics` are checked against the mathematics, not
against the library they call. Exact values: the ESS of an AR(1) chain, n(1−ρ)/(1+ρ), and of
i.i.d. draws, M·N (for the mean and for the tail-quantile indicators).
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from hybrid.inference.diagnostics import (
    ess,
    ess_bulk,
    ess_tail,
    rhat,
    split_rhat,
    summarize,
)


# ------------------------------------------------------------------ the reference formulas
def _split(x):
    half = x.shape[1] // 2
    return np.vstack((x[:, :half], x[:, x.shape[1] - half:]))


def _rank_normal(x):
    r = stats.rankdata(x, method="average").reshape(x.shape)
    return stats.norm.ppf((r - 3 / 8) / (x.size + 1 / 4))


def _rhat_of(x):
    """√(var⁺/W) of chains x (M, N), var⁺ = (N−1)/N W + B/N."""
    n = x.shape[1]
    W = np.mean(np.var(x, axis=1, ddof=1))
    B_over_n = np.var(np.mean(x, axis=1), ddof=1)
    return np.sqrt(((n - 1) / n * W + B_over_n) / W)


def _ess_of(x):
    """Geyer's initial monotone sequence estimate of the ESS of the mean of chains x (M, N).

    ρ̂(t) = 1 − (W − mean_m ĉₘ(t))/var⁺ (t ≥ 1); pairs Γ_k = ρ̂(2k) + ρ̂(2k+1) are formed while the
    previous one is positive (and lags remain); the last pair formed is dropped, its even
    lag kept when positive (Stan's truncation); the pairs kept are made non-increasing;
    τ̂ = −1 + 2 ΣΓ_k (+ that even lag), ESS = MN/τ̂, τ̂ ≥ 1/log₁₀(MN).
    """
    M, N = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    acov = np.array([np.correlate(c, c, "full")[N - 1:] / N for c in xc])
    W = np.mean(acov[:, 0]) * N / (N - 1)                     # mean of the chain variances
    var_plus = W * (N - 1) / N + (np.var(x.mean(axis=1), ddof=1) if M > 1 else 0.0)
    rho = 1.0 - (W - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0                                             # ρ̂(0) = 1 by definition
    gammas = [rho[0] + rho[1]]
    while gammas[-1] > 0 and 2 * len(gammas) - 1 < N - 3:
        k = len(gammas)
        gammas.append(rho[2 * k] + rho[2 * k + 1])
    last_even = rho[2 * (len(gammas) - 1)]
    kept = np.minimum.accumulate(np.array(gammas[:-1])) if len(gammas) > 1 else np.zeros(0)
    tau = -1.0 + 2.0 * kept.sum() + max(last_even, 0.0) * (last_even > 0)
    S = M * N
    return S / max(tau, 1.0 / np.log10(S))


def _ref_split_rhat(x):
    return _rhat_of(_split(x))


def _ref_rank_rhat(x):
    s = _split(x)
    return max(_rhat_of(_rank_normal(s)), _rhat_of(_rank_normal(np.abs(s - np.median(s)))))


def _ref_ess_mean(x):
    return _ess_of(_split(x))


def _ref_ess_bulk(x):
    return _ess_of(_rank_normal(_split(x)))


def _ref_ess_tail(x):
    q = np.quantile(x, [0.05, 0.95])
    return min(_ess_of(_split((x <= qi).astype(float))) for qi in q)


def _ar1(rng, rho, chains, n):
    e = rng.standard_normal((chains, n))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / np.sqrt(1 - rho ** 2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("shape", [(4, 200), (3, 201), (1, 300), (2, 37)])
def test_every_diagnostic_equals_the_reference_formula(shape):
    """Even and odd chain lengths and one chain; correlated draws with a shifted chain."""
    rng = np.random.default_rng(sum(shape))
    x = _ar1(rng, 0.6, *shape) + np.linspace(0.0, 0.8, shape[0])[:, None]
    assert ess(x) == pytest.approx(_ref_ess_mean(x), rel=1e-9)
    assert ess_bulk(x) == pytest.approx(_ref_ess_bulk(x), rel=1e-9)
    assert ess_tail(x) == pytest.approx(_ref_ess_tail(x), rel=1e-9)
    if shape[0] > 1:
        assert split_rhat(x) == pytest.approx(_ref_split_rhat(x), rel=1e-12)
        assert split_rhat(x, rank=False) == pytest.approx(_ref_split_rhat(x), rel=1e-12)
        assert split_rhat(x, rank=True) == pytest.approx(_rhat_of(_rank_normal(_split(x))),
                                                         rel=1e-12)
        assert rhat(x) == pytest.approx(_ref_rank_rhat(x), rel=1e-12)
    else:   # R̂ needs several chains
        assert np.isnan(rhat(x)) and np.isnan(split_rhat(x))


def test_the_references_see_what_the_paper_says():
    """Split-R̂ > rank-R̂ for a chain with outliers; ESS of the tails differs from the bulk."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 400))
    x[0, :200] += 0.5                           # one half-chain off: split R̂ sees it
    assert _ref_split_rhat(x) > 1.01
    assert split_rhat(x) == pytest.approx(_ref_split_rhat(x), rel=1e-12)
    y = rng.standard_normal((4, 400))
    y[:, ::2] *= 3.0                            # a scale change only the folded R̂ sees
    y[:2] *= 2.0
    assert rhat(y) == pytest.approx(_ref_rank_rhat(y), rel=1e-12)
    assert rhat(y) > split_rhat(y, rank=True)   # the tail (folded) version is the larger


@pytest.mark.parametrize("rho", [0.3, 0.8])
def test_ess_of_ar1_against_its_exact_value(rho):
    """ESS of the mean of an AR(1) chain: n(1 − ρ)/(1 + ρ), mean over 20 replicates (±5 %)."""
    rng = np.random.default_rng(int(10 * rho))
    M, N = 2, 2000
    exact = M * N * (1 - rho) / (1 + rho)
    r = np.array([ess(_ar1(rng, rho, M, N)) for _ in range(20)]) / exact
    assert abs(r.mean() - 1) < 0.05, r.mean()


def test_ess_of_iid_draws_is_the_number_of_draws():
    """I.i.d. draws: ESS of the mean, bulk and tail ≈ M·N (replicate mean within 4 %; 8 % for
    the tail, the smaller of two noisy estimates, hence biased low by a few per cent)."""
    rng = np.random.default_rng(7)
    M, N = 4, 500
    xs = [rng.standard_normal((M, N)) for _ in range(20)]
    for f, tol in ((ess, 0.04), (ess_bulk, 0.04), (ess_tail, 0.08)):
        r = np.mean([f(x) for x in xs]) / (M * N)
        assert abs(r - 1) < tol, (f.__name__, r)
    # the tail ESS is the smaller of the two quantile indicators'
    x = xs[0]
    lo, hi = np.quantile(x, [0.05, 0.95])
    e_lo = _ess_of(_split((x <= lo).astype(float)))
    e_hi = _ess_of(_split((x <= hi).astype(float)))
    assert ess_tail(x) == pytest.approx(min(e_lo, e_hi), rel=1e-9)


def test_one_dimensional_draws_are_one_chain():
    x = np.random.default_rng(0).standard_normal(301)
    assert ess(x) == pytest.approx(_ref_ess_mean(x[None, :]), rel=1e-9)
    assert ess_bulk(x) == ess_bulk(x[None, :]) and ess_tail(x) == ess_tail(x[None, :])
    with pytest.raises(ValueError, match=r"draws must have shape \(chains, draws\), got "
                                         r"\(2, 3, 4\)"):
        ess(np.zeros((2, 3, 4)))


def test_boolean_and_integer_draws_are_numbers():
    rng = np.random.default_rng(1)
    b = rng.random((2, 400)) < 0.3
    assert ess(b) == pytest.approx(_ref_ess_mean(b.astype(float)), rel=1e-9)
    k = rng.integers(0, 5, (2, 400))
    assert ess(k) == pytest.approx(_ref_ess_mean(k.astype(float)), rel=1e-9)


def test_undefined_diagnostics_are_nan_without_warnings():
    """Constant draws, no draws, chains constant but different (W = 0): NaN, silently."""
    const = np.full((3, 50), 2.5)
    stuck = np.repeat([[1.0], [2.0]], 20, axis=1)     # W = 0: R̂ = ∞, reported as NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in (ess, ess_bulk, ess_tail, rhat, split_rhat):
            assert np.isnan(f(const)), f.__name__
            assert np.isnan(f(np.empty((2, 0)))), f.__name__
        assert np.isnan(split_rhat(stuck)) and np.isnan(rhat(stuck))
    # a range of exactly one is not "constant"
    unit = np.tile([0.0, 1.0, 0.25, 0.5, 0.75, 0.125, 0.625, 0.375], (2, 25))
    unit[1] = unit[1, ::-1]
    assert np.ptp(unit) == 1.0
    assert ess(unit) == pytest.approx(_ref_ess_mean(unit), rel=1e-9)


def test_summarize_against_numpy_and_the_references():
    rng = np.random.default_rng(5)
    draws = np.stack([_ar1(rng, 0.5, 3, 200), rng.standard_normal((3, 200)) * 2 + 1], axis=-1)
    s = summarize(draws.tolist(), ["a", "b"])
    assert list(s) == ["a", "b"]
    for j, name in enumerate(("a", "b")):
        x = draws[:, :, j]
        flat = x.ravel()
        v = s[name]
        assert set(v) == {"mean", "std", "q05", "q50", "q95", "rhat", "ess", "ess_bulk",
                          "ess_tail", "mcse_mean"}
        assert v["mean"] == pytest.approx(flat.mean(), rel=1e-12)
        sd = np.sqrt(np.sum((flat - flat.mean()) ** 2) / (flat.size - 1))
        assert v["std"] == pytest.approx(sd, rel=1e-12)
        for key, p in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)):
            srt = np.sort(flat)
            pos = p * (flat.size - 1)                  # linear interpolation between order stats
            lo = int(np.floor(pos))
            assert v[key] == pytest.approx(srt[lo] + (pos - lo) * (srt[lo + 1] - srt[lo]),
                                           rel=1e-12)
        assert v["ess"] == pytest.approx(_ref_ess_mean(x), rel=1e-9)
        assert v["ess_bulk"] == pytest.approx(_ref_ess_bulk(x), rel=1e-9)
        assert v["ess_tail"] == pytest.approx(_ref_ess_tail(x), rel=1e-9)
        assert v["rhat"] == pytest.approx(_ref_rank_rhat(x), rel=1e-12)
        assert v["mcse_mean"] == pytest.approx(sd / np.sqrt(v["ess"]), rel=1e-12)


def test_summarize_takes_any_real_numbers():
    """Draws given as exact fractions (an object array) are summarised as floats."""
    rng = np.random.default_rng(2)
    k = rng.integers(0, 9, (2, 60, 1))
    frac = [[[Fraction(int(v), 3) for v in row] for row in chain] for chain in k]
    s = summarize(frac, ["f"])["f"]
    ref = summarize(k / 3.0, ["f"])["f"]
    assert s == pytest.approx(ref, rel=1e-12)
    assert s["std"] == pytest.approx(np.std(k / 3.0, ddof=1), rel=1e-12)


def test_summarize_of_degenerate_draws():
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # no "ddof" warning either
        one = summarize(np.array([[[3.0]]]), ["k"])["k"]        # one draw
    assert one["mean"] == 3.0 and one["q05"] == one["q50"] == one["q95"] == 3.0
    assert np.isnan(one["std"]) and np.isnan(one["ess"]) and np.isnan(one["mcse_mean"])
    two = summarize(np.array([[[1.0], [3.0]]]), ["k"])["k"]     # two draws: std defined
    assert two["std"] == pytest.approx(np.sqrt(2.0))
    const = summarize(np.full((2, 30, 1), 0.5), ["c"])["c"]
    assert const["std"] == 0.0 and np.isnan(const["mcse_mean"]) and np.isnan(const["rhat"])
