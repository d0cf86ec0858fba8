"""Parameter spaces at their edges: batches, exact bound tolerances, tiny plans, messages."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace, parse_mu
from hybrid.errors import ParameterError

SPACE = ParameterSpace((Parameter("a", 0.1, 1.0), Parameter("k", 1e-3, 1e1, log=True)))
# bounds whose sum differs from their width, so a tolerance scaled by the wrong one shows
WIDE = ParameterSpace((Parameter("b", 1.0, 101.0), Parameter("c", -3.0, 5.0)))


def test_check_accepts_a_batch_and_returns_floats():
    batch = [[1, 2], [50, -3], [101, 5]]          # integers, all inside (bounds included)
    out = WIDE.check(batch)
    assert out.dtype == np.float64 and out.shape == (3, 2)
    np.testing.assert_array_equal(out, np.array(batch, dtype=float))
    assert SPACE.check(SPACE.sample(16)).shape == (16, 2)


def test_check_rejects_more_than_two_dimensions_and_wrong_lengths():
    with pytest.raises(ParameterError, match=r"^mu: expected 2 values \(b, c\), got shape"):
        WIDE.check(np.ones((2, 2, 2)) * 2.0)
    with pytest.raises(ParameterError, match=r"expected 2 values \(b, c\), got shape \(3,\)"):
        WIDE.check([2.0, 0.0, 0.0])


@pytest.mark.parametrize("j", [0, 1])
def test_bound_tolerance_is_rtol_times_the_width(j):
    """Values up to rtol·(u − l) past a bound are accepted, anything further is not."""
    lo, up, rtol = WIDE.lower, WIDE.upper, 1e-12
    tol = rtol * (up - lo)
    inside = np.array([50.0, 0.0])
    for edge in (lo[j], up[j], lo[j] - tol[j], up[j] + tol[j],
                 lo[j] - 0.99 * tol[j], up[j] + 0.99 * tol[j]):
        mu = inside.copy()
        mu[j] = edge
        WIDE.check(mu)                              # accepted: no error
    for edge in (lo[j] - 1.01 * tol[j], up[j] + 1.01 * tol[j]):
        mu = inside.copy()
        mu[j] = edge
        with pytest.raises(ParameterError, match=f"{WIDE.names[j]}=.* is outside its bounds"):
            WIDE.check(mu)
    # a value just past a bound, far beyond the tolerance, in a batch
    bad = np.tile(inside, (3, 1))
    bad[1, j] = up[j] + 1e-6 * (up[j] - lo[j])
    with pytest.raises(ParameterError, match=f"^mu: {WIDE.names[j]}="):
        WIDE.check(bad)


def test_the_error_names_the_offending_value_of_a_batch():
    batch = np.array([[0.5, 0.01], [0.6, 0.02], [1.5, 0.03]])   # only the last row is bad
    with pytest.raises(ParameterError, match=r"a=1\.5 is outside its bounds \[0\.1, 1\]"):
        SPACE.check(batch, where="plan")


def test_sample_sizes_zero_and_one():
    with pytest.raises(ParameterError, match="number of samples must be >= 1, got 0"):
        SPACE.sample(0)
    for method in ("sobol", "lhs", "random"):
        one = SPACE.sample(1, method)
        assert one.shape == (1, 2)
        SPACE.check(one)
        assert SPACE.sample(5, method).shape == (5, 2)


def test_sample_defaults_are_sobol_with_seed_zero():
    np.testing.assert_array_equal(SPACE.sample(8), SPACE.sample(8, "sobol", seed=0))
    assert not np.array_equal(SPACE.sample(8), SPACE.sample(8, "lhs", seed=0))


def test_sobol_plans_of_any_length_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SPACE.sample(10, "sobol").shape == (10, 2)   # 10 is not a power of 2


def test_unknown_sampling_method():
    with pytest.raises(ParameterError, match="unknown sampling method 'halton'"):
        SPACE.sample(4, "halton")


def test_unit_maps_are_quiet_and_exact_for_zero_and_negative_bounds():
    """Linear parameters with a zero or negative bound must not trip the log branch."""
    space = ParameterSpace((Parameter("z", 0.0, 2.0), Parameter("n", -2.0, -1.0),
                            Parameter("g", 1e-2, 1e2, log=True)))
    mu = np.array([[0.0, -2.0, 1e-2], [1.0, -1.5, 1.0], [2.0, -1.0, 1e2]])
    xi = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(space.to_unit(mu), xi, atol=1e-15)
        np.testing.assert_allclose(space.from_unit(xi), mu, rtol=1e-14, atol=1e-15)


def test_dict_round_trip():
    items = SPACE.to_dict()
    assert items == [{"name": "a", "lower": 0.1, "upper": 1.0, "log": False},
                     {"name": "k", "lower": 1e-3, "upper": 1e1, "log": True}]
    assert ParameterSpace.from_dict(items) == SPACE
    assert ParameterSpace.from_dict([{"name": "x", "lower": "1", "upper": 2, "log": 1}]) == \
        ParameterSpace((Parameter("x", 1.0, 2.0, log=True),))


def test_parse_mu_missing_name_is_a_parameter_error():
    with pytest.raises(ParameterError, match=r"^--mu: missing parameter\(s\) \['k'\]"):
        parse_mu("a=0.5", SPACE)


def test_parse_mu_messages_name_where():
    with pytest.raises(ParameterError, match=r"^--mu: a=2 is outside"):
        parse_mu("2,0.01", SPACE)
    with pytest.raises(ParameterError, match=r"^--data: a=2 is outside"):
        parse_mu("a=2,k=0.01", SPACE, where="--data")
    with pytest.raises(ParameterError, match=r"^--mu: cannot read"):
        parse_mu("a=0.5=1,k=0.01", SPACE)            # a second '=' is not part of a number
