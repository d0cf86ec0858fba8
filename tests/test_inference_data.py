"""Observation data: CSV round trip, validation (one line naming file and line), noise model."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.errors import HybridError
from hybrid.inference import DataError, GaussianNoise, Observations, read_csv, synthesize

GOOD = "# noise: gaussian absolute 0.01\nsensor,value,sigma\np0,1.5,0.01\np1,-2.0,0.02\n"


def _err(tmp_path, text: str, **kw) -> str:
    p = tmp_path / "obs.csv"
    p.write_text(text)
    with pytest.raises(DataError) as ei:
        read_csv(p, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(p))
    assert ei.value.exit_code == 2 and isinstance(ei.value, HybridError)
    return msg


def test_read_good_file_and_metadata(tmp_path):
    p = tmp_path / "obs.csv"
    p.write_text("# campaign: demo\n\n" + GOOD.replace("p1,", " p1 , "))
    obs = read_csv(p, expected=["p0", "p1", "p2"])
    assert obs.names == ("p0", "p1")
    assert np.array_equal(obs.values, [1.5, -2.0]) and np.array_equal(obs.sigma, [0.01, 0.02])
    assert obs.meta == {"campaign": "demo", "noise": "gaussian absolute 0.01"}


def test_csv_round_trip_is_exact(tmp_path):
    obs = synthesize(np.array([1 / 3, 2e-7, -5.0]), 0.05, "relative", seed=4, floor=1e-9)
    back = Observations.from_csv(obs.to_csv(tmp_path / "o.csv"))
    assert back.names == obs.names
    assert np.array_equal(back.values, obs.values) and np.array_equal(back.sigma, obs.sigma)
    assert back.meta == obs.meta


@pytest.mark.parametrize(
    "text,line,expect",
    [
        ("sensor,value,sigma\np0,nan,0.1\n", 2, "value must be finite, got nan"),
        ("sensor,value,sigma\np0,1.0,0.1\np1,inf,0.1\n", 3, "value must be finite, got inf"),
        ("sensor,value,sigma\np0,abc,0.1\n", 2, "value 'abc' is not a number"),
        ("# meta: x\nsensor,value,sigma\np0,1.0\n", 3,
         "expected 3 columns (sensor,value,sigma), got 2"),
        ("sensor,value,sigma\np0,1.0,0.1,7\n", 2, "expected 3 columns"),
        ("sensor,value,sigma\np0,1.0,0\n", 2, "sigma must be > 0, got 0"),
        ("sensor,value,sigma\np0,1.0,-0.5\n", 2, "sigma must be > 0, got -0.5"),
        ("sensor,value,sigma\np0,1.0,nan\n", 2, "sigma must be finite, got nan"),
        ("sensor,value,sigma\np0,1.0,0.1\n\np0,2.0,0.1\n", 4,
         "duplicate sensor 'p0' (first on line 2)"),
        ("sensor,value,sigma\np0,1.0,0.1\nq9,1.0,0.1\n", 3, "unknown sensor 'q9'; expected one of"),
        ("sensor,value,sigma\n,1.0,0.1\n", 2, "empty sensor name"),
        ("name,val,err\np0,1,1\n", 1, "header must be 'sensor,value,sigma'"),
        ("# only a comment\nsensor,value,sigma\n", 2, "no observations after the header"),
        ("sensor,value\np0,1.0\n", 1, "no sigma column and no noise model"),
        ("# noise: poisson 3\nsensor,value\np0,1.0\n", 1, "noise model 'poisson 3'"),
        ("# noise: gaussian relative 0.1\nsensor,value\np0,0.0\n", 3, "set a floor"),
    ],
)
def test_bad_data_one_line_error_names_file_and_line(tmp_path, text, line, expect):
    msg = _err(tmp_path, text, expected=["p0", "p1"])
    assert msg.startswith(f"{tmp_path / 'obs.csv'}:{line}: "), msg
    assert expect in msg, msg


def test_empty_and_missing_files(tmp_path):
    assert "empty data file" in _err(tmp_path, "")
    assert "empty data file" in _err(tmp_path, "# just metadata: here\n\n")
    with pytest.raises(DataError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")
    msg = _err(tmp_path, GOOD, expected=["p0", "p1", "p2"], require_all=True)
    assert "no row for sensor(s) ['p2']" in msg


def test_sigma_from_noise_model_when_column_missing(tmp_path):
    p = tmp_path / "obs.csv"
    p.write_text("# noise: gaussian relative 0.1 floor 0.05\nsensor,value\na,2.0\nb,-0.1\n")
    obs = read_csv(p)
    assert np.allclose(obs.sigma, [0.2, 0.05])
    obs2 = read_csv(p, noise=GaussianNoise(0.3))  # an explicit model overrides the metadata
    assert np.allclose(obs2.sigma, [0.3, 0.3]) and obs2.meta["noise"] == "gaussian absolute 0.3"


def test_noise_model_and_parse():
    n = GaussianNoise(0.05, "relative", floor=1e-3)
    assert np.allclose(n.sigma(np.array([2.0, -1.0, 0.0])), [0.1, 0.05, 1e-3])
    assert GaussianNoise.parse(n.describe()) == n
    assert np.allclose(GaussianNoise(0.2).sigma(np.zeros(3)), 0.2)
    for bad in (dict(std=0.0), dict(std=-1.0), dict(std=1.0, kind="poisson"),
                dict(std=1.0, floor=-1.0), dict(std=float("nan"))):
        with pytest.raises(DataError):
            GaussianNoise(**bad)


def test_observations_validate_and_select():
    obs = Observations(("a", "b", "c"), [1.0, 2.0, 3.0], 0.5)
    assert np.array_equal(obs.sigma, [0.5, 0.5, 0.5])
    sub = obs.select(["c", "a"])
    assert sub.names == ("c", "a") and np.array_equal(sub.values, [3.0, 1.0])
    assert np.isclose(obs.chi2(np.array([1.5, 2.0, 3.0])), 1.0)
    with pytest.raises(DataError, match="no observation named 'x'"):
        obs.select(["x"])
    for names, values, sigma in [(("a", "a"), [1, 2], 1), (("a",), [np.nan], 1),
                                 (("a",), [1.0], 0.0), (("a", "b"), [1.0], 1.0), ((), [], 1)]:
        with pytest.raises(DataError):
            Observations(names, values, sigma)


def test_synthesize_noise_statistics():
    """Standardised noise of 4000 synthetic values has mean 0 and variance 1 (5 SE bounds)."""
    y = np.linspace(1.0, 5.0, 4000)
    for kind, sig in (("absolute", np.full_like(y, 0.3)), ("relative", 0.3 * y)):
        obs = synthesize(y, 0.3, kind, seed=11)
        assert np.allclose(obs.sigma, sig)
        e = (obs.values - y) / sig
        n = e.size
        assert abs(e.mean()) < 5 / np.sqrt(n)
        assert abs(e.var() - 1) < 5 * np.sqrt(2 / n)
    a, b = synthesize(y, 0.3, seed=1), synthesize(y, 0.3, seed=1)
    assert np.array_equal(a.values, b.values)
    assert not np.array_equal(a.values, synthesize(y, 0.3, seed=2).values)
