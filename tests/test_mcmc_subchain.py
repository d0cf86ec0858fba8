"""Delayed acceptance with a first-stage subchain (mcmc.sample(..., subchain=n)).

On the linear-Gaussian levels of tests/test_mcmc_multilevel.py (fine G, coarse G + E1,
surrogate G + E2, analytic fine posterior):

* with a subchain of 10 surrogate steps, two and three levels still sample the *fine*
  posterior (means and covariances within Monte-Carlo error), and not the coarse one;
* the point of the subchain, measured: fine evaluations per effective sample fall well below
  those of the one-step first stage on the same problem and budget;
* counts: n cheap evaluations per iteration (+ starts), fine evaluations = stage passes;
* refusals: MALA with a subchain, a subchain without delayed acceptance, n < 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.inference import InferenceError, sample

from .test_mcmc_multilevel import RUN, _agrees, _three_levels


@pytest.fixture(scope="module")
def levels():
    return _three_levels()


def _per_ess(res) -> float:
    return res.to_dict()["expensive_per_effective_sample"]


def test_subchain_two_levels_exact_and_cheaper(levels):
    sur, coarse, fine, (m, C), (mc, Cc), start = levels
    one = sample(fine, sur, **RUN, **start)
    sub = sample(fine, sur, subchain=10, **RUN, **start)
    ok, report = _agrees(sub.samples, m, C)
    assert ok, report
    assert not _agrees(sub.samples, mc, Cc)[0]   # the test has power (the coarse is far)
    assert sub.settings["subchain"] == 10
    c = sub.counts
    total = RUN["burn_in"] + RUN["n_samples"]
    assert np.all(c["n_cheap"] == 10 * total + 1)
    assert np.all(c["n_expensive"] == c["stage1_total"] + 1)
    # each fine solve buys more: measured 3.0 against 7.1 fine solves per effective sample
    print("fine solves per ESS: one-step", _per_ess(one), "subchain", _per_ess(sub))
    assert _per_ess(sub) < 0.6 * _per_ess(one), (_per_ess(sub), _per_ess(one))
    # the fine acceptance of a subchain's proposal is high (the surrogate is close)
    assert sub.acceptance()["stage2"] > 0.6


def test_subchain_three_levels_exact(levels):
    sur, coarse, fine, (m, C), (mc, Cc), start = levels
    res = sample(fine, sur, intermediate=[coarse], subchain=10, **RUN, **start)
    ok, report = _agrees(res.samples, m, C)
    assert ok, report
    assert not _agrees(res.samples, mc, Cc)[0]
    c = res.counts
    assert np.all(c["n_intermediate"][:, 0] == c["stage1_total"] + 1)
    assert np.all(c["n_expensive"] == c["stage2_total"] + 1)


def test_subchain_refusals(levels):
    sur, coarse, fine, _, _, start = levels
    kw = {"n_samples": 10, "burn_in": 5, "chains": 1, **start}
    with pytest.raises(InferenceError, match="random-walk"):
        sample(fine, sur, subchain=5, kernel="mala", **kw)
    with pytest.raises(InferenceError, match="first stage of delayed acceptance"):
        sample(None, sur, subchain=5, **kw)
    with pytest.raises(InferenceError, match="integer >= 1"):
        sample(fine, sur, subchain=0, **kw)
