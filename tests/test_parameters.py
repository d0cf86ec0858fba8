from __future__ import annotations

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace, parse_mu
from hybrid.errors import ParameterError

SPACE = ParameterSpace((Parameter("a", 0.1, 1.0), Parameter("k", 1e-3, 1e1, log=True)))


def test_unit_map_roundtrip_and_log_uniform():
    xi = np.random.default_rng(0).random((50, 2))
    mu = SPACE.from_unit(xi)
    assert np.allclose(SPACE.to_unit(mu), xi, atol=1e-14)
    # log-uniform: the midpoint of the unit interval maps to the geometric mean
    assert np.isclose(SPACE.from_unit(np.array([0.5, 0.5]))[1], np.sqrt(1e-3 * 1e1))
    assert np.isclose(SPACE.from_unit(np.array([0.5, 0.5]))[0], 0.55)


@pytest.mark.parametrize("method", ["sobol", "lhs", "random"])
def test_sampling_is_seeded_and_in_bounds(method):
    a = SPACE.sample(37, method, seed=5)
    b = SPACE.sample(37, method, seed=5)
    assert np.array_equal(a, b)
    assert np.all(a >= SPACE.lower) and np.all(a <= SPACE.upper)
    assert not np.array_equal(a, SPACE.sample(37, method, seed=6))


def test_sobol_prefix_property():
    assert np.array_equal(SPACE.sample(10, "sobol", 1), SPACE.sample(25, "sobol", 1)[:10])


def test_lhs_stratifies_each_coordinate():
    xi = SPACE.to_unit(SPACE.sample(40, "lhs", 2))
    for j in range(2):
        assert sorted(np.floor(xi[:, j] * 40).astype(int)) == list(range(40))


def test_check_and_parse():
    assert np.allclose(parse_mu("0.5, 0.01", SPACE), [0.5, 0.01])
    assert np.allclose(parse_mu("k=0.01,a=0.5", SPACE), [0.5, 0.01])
    with pytest.raises(ParameterError, match="a=2 is outside its bounds"):
        parse_mu("2,0.01", SPACE)
    with pytest.raises(ParameterError, match="expected 2 values"):
        parse_mu("0.5", SPACE)
    with pytest.raises(ParameterError, match="finite"):
        SPACE.check(np.array([np.nan, 0.1]))
    with pytest.raises(ParameterError, match="cannot read"):
        parse_mu("0.5,abc", SPACE)
    with pytest.raises(ParameterError, match="unknown parameter"):
        parse_mu("a=0.5,z=1", SPACE)
