"""θ trees, operation by operation: interval enclosures against exact ranges, values against
the formulas in numpy and torch, and the affine-coefficient record the surrogate side reads.

An enclosure must be sound (contain the exact range) and tight (outward by a few ulps only);
each exact range below is the textbook one of a monotone or piecewise-monotone operation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hybrid.core import theta as T
from hybrid.errors import ThetaError

POS, NEG, MIX = (0.5, 2.0), (-3.0, -1.0), (-2.0, 3.0)


def _corners(f, *boxes):
    vals = [f(*c) for c in itertools.product(*boxes)]
    return min(vals), max(vals)


def _tight(got, exact, ulps: float = 32.0):
    lo, hi = got
    elo, ehi = exact
    slack = lambda v: ulps * np.spacing(max(abs(v), 1e-300))  # noqa: E731
    assert lo <= elo and hi >= ehi, (got, exact)                      # sound
    assert elo - lo <= slack(elo) and hi - ehi <= slack(ehi), (got, exact)   # tight


def _box(*ranges):
    return [r[0] for r in ranges], [r[1] for r in ranges]


U = {"mu": 0}
V = {"mu": 1}

CASES = [
    # (tree, boxes, exact range)
    (3.5, (POS,), (3.5, 3.5)),
    (U, (NEG,), NEG),
    ({"neg": U}, (MIX,), (-3.0, 2.0)),
    ({"exp": U}, (MIX,), (math.exp(-2.0), math.exp(3.0))),
    ({"log": U}, (POS,), (math.log(0.5), math.log(2.0))),
    ({"sqrt": U}, (POS,), (math.sqrt(0.5), math.sqrt(2.0))),
    ({"sqrt": U}, ((0.0, 4.0),), (0.0, 2.0)),
    ({"add": [U, V, 1.0]}, (POS, NEG), (0.5 - 3.0 + 1.0, 2.0 - 1.0 + 1.0)),
    ({"mul": [U, V]}, (POS, NEG), _corners(lambda a, b: a * b, POS, NEG)),
    ({"mul": [U, V]}, (MIX, NEG), _corners(lambda a, b: a * b, MIX, NEG)),
    ({"mul": [U, V]}, (MIX, MIX), _corners(lambda a, b: a * b, MIX, MIX)),
    ({"mul": [U, U, 2.0]}, (NEG,), (_corners(lambda a, b: 2 * a * b, NEG, NEG))),
    ({"div": [U, V]}, (MIX, POS), _corners(lambda a, b: a / b, MIX, POS)),
    ({"div": [U, V]}, (POS, NEG), _corners(lambda a, b: a / b, POS, NEG)),
    ({"div": [1.0, U]}, (NEG,), (1 / -1.0, 1 / -3.0)),
    ({"pow": [U, 2]}, (MIX,), (0.0, 9.0)),
    ({"pow": [U, 2]}, (NEG,), (1.0, 9.0)),
    ({"pow": [U, 2]}, (POS,), (0.25, 4.0)),
    ({"pow": [U, 3]}, (MIX,), (-8.0, 27.0)),
    ({"pow": [U, 4]}, (NEG,), (1.0, 81.0)),
    ({"pow": [U, 0]}, (MIX,), (1.0, 1.0)),
    ({"pow": [U, -1]}, (POS,), (0.5, 2.0)),
    ({"pow": [U, -2]}, (NEG,), (1 / 9.0, 1.0)),
    ({"pow": [U, -3]}, (NEG,), (-1.0, -1 / 27.0)),
    ({"pow": [U, 0.5]}, (POS,), (math.sqrt(0.5), math.sqrt(2.0))),
    ({"pow": [U, V]}, (POS, MIX), _corners(lambda a, b: a ** b, POS, MIX)),
    ({"pow": [U, V]}, ((2.0, 3.0), (1.5, 2.5)), _corners(lambda a, b: a ** b, (2.0, 3.0),
                                                           (1.5, 2.5))),
]


@pytest.mark.parametrize("tree,boxes,exact", CASES)
def test_interval_is_sound_and_tight_for_each_operation(tree, boxes, exact):
    lo, hi = _box(*boxes)
    _tight(T.interval(tree, lo, hi), exact)


@pytest.mark.parametrize("tree,boxes", [
    ({"log": U}, (MIX,)), ({"log": U}, ((0.0, 1.0),)), ({"sqrt": U}, (MIX,)),
    ({"pow": [U, 0.5]}, (MIX,)), ({"pow": [U, V]}, ((0.0, 1.0), POS)),
    ({"exp": {"log": U}}, (NEG,)), ({"add": [{"sqrt": U}, 1.0]}, (NEG,)),
    ({"mul": [{"log": U}, 2.0]}, (MIX,)), ({"div": [{"sqrt": U}, 2.0]}, (NEG,)),
    ({"neg": {"log": U}}, (NEG,)),
])
def test_undefined_somewhere_on_the_box_proves_nothing(tree, boxes):
    lo, hi = _box(*boxes)
    a, b = T.interval(tree, lo, hi)
    assert not (a > 0) or math.isnan(b)          # never a positive lower bound
    assert not T.prove_positive(tree, lo, hi)


def test_division_by_an_interval_containing_zero_proves_nothing():
    a, b = T.interval({"div": [1.0, U]}, [-1.0], [1.0])
    assert not (a > 0 and math.isfinite(b))
    assert not T.prove_positive({"div": [1.0, U]}, [-1.0], [1.0])
    assert T.prove_positive({"div": [1.0, U]}, [0.5], [1.0])


def test_exp_overflow_and_huge_bounds_stay_enclosures():
    a, b = T.interval({"exp": U}, [700.0], [800.0])
    assert a > 0 and b == math.inf
    a, b = T.interval({"pow": [U, V]}, [2.0, 1000.0], [3.0, 2000.0])
    assert a > 0 and b == math.inf
    a, b = T.interval({"exp": U}, [-800.0], [-700.0])
    assert a == 0.0 and 0 < b < 1e-300


def test_random_composite_trees_enclose_dense_samples():
    rng = np.random.default_rng(5)
    trees = [
        {"div": [{"mul": [{"exp": U}, {"pow": [V, 2]}]}, {"add": [1.0, U]}]},
        {"add": [{"sqrt": {"mul": [U, V]}}, {"neg": {"log": V}}]},
        {"pow": [{"add": [U, 1.0]}, {"mul": [V, 0.5]}]},
        {"mul": [{"pow": [U, -1]}, {"pow": [{"neg": V}, 3]}, -2.0]},
    ]
    for tree in trees:
        for _ in range(5):
            lo = rng.uniform(0.1, 1.0, 2)
            hi = lo + rng.uniform(0.01, 2.0, 2)
            a, b = T.interval(tree, lo, hi)
            mu = lo + (hi - lo) * rng.random((4000, 2))
            mu = np.vstack([mu, list(itertools.product(*zip(lo, hi, strict=True)))])
            v = T.evaluate(tree, mu)
            assert a <= v.min() and v.max() <= b, (tree, a, v.min(), v.max(), b)
            assert b - a <= 4 * (v.max() - v.min()) + 1e-12      # and not wildly wide


def test_interval_refuses_bad_boxes_and_missing_parameters():
    with pytest.raises(ThetaError, match="bad box"):
        T.interval(U, [1.0], [0.0])
    with pytest.raises(ThetaError, match="bad box"):
        T.interval(U, [0.0, 1.0], [1.0])
    with pytest.raises(ThetaError, match="uses μ_1 but the box has 1 components"):
        T.interval(V, [0.0], [1.0])


OPS = [
    (3.5, lambda m: np.full(m.shape[:-1], 3.5)),
    ({"neg": U}, lambda m: -m[..., 0]),
    ({"exp": U}, lambda m: np.exp(m[..., 0])),
    ({"log": V}, lambda m: np.log(m[..., 1])),
    ({"sqrt": V}, lambda m: np.sqrt(m[..., 1])),
    ({"add": [U, V, 2.0]}, lambda m: m[..., 0] + m[..., 1] + 2.0),
    ({"mul": [U, V, -3.0]}, lambda m: -3.0 * m[..., 0] * m[..., 1]),
    ({"div": [U, V]}, lambda m: m[..., 0] / m[..., 1]),
    ({"pow": [V, U]}, lambda m: m[..., 1] ** m[..., 0]),
    ({"pow": [U, 3]}, lambda m: m[..., 0] ** 3),
]


@pytest.mark.parametrize("tree,f", OPS)
def test_each_operation_in_numpy_and_torch_equals_its_formula(tree, f):
    rng = np.random.default_rng(2)
    mu = np.c_[rng.uniform(-1.0, 1.0, 7), rng.uniform(0.5, 2.0, 7)]
    np.testing.assert_allclose(T.evaluate(tree, mu), f(mu), rtol=1e-15, atol=0)
    one = T.evaluate(tree, mu[3])
    assert np.shape(one) == () and one == pytest.approx(f(mu[3]), rel=1e-15)
    t = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    out = T.evaluate(tree, t)
    assert out.shape == (7,)
    np.testing.assert_allclose(out.detach().numpy(), f(mu), rtol=1e-15, atol=0)
    if not out.requires_grad:                      # a constant: no dependence on μ
        assert isinstance(tree, float)
        return
    out.sum().backward()
    h = 1e-6
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        fd = (f(mu + e) - f(mu - e)) / (2 * h)
        np.testing.assert_allclose(t.grad.numpy()[:, j], fd, rtol=1e-6, atol=1e-8)


def test_evaluate_all_stacks_and_refuses_bad_shapes():
    trees = [U, {"mul": [U, V]}, 2.0]
    mu = np.array([[0.5, 2.0], [1.5, 3.0]])
    np.testing.assert_array_equal(T.evaluate_all(trees, mu),
                                  [[0.5, 1.0, 2.0], [1.5, 4.5, 2.0]])
    assert T.evaluate_all(trees, mu[0]).shape == (3,)
    assert T.evaluate_all([], mu).shape == (2, 0)
    assert tuple(T.evaluate_all([], torch.zeros(4, 2, dtype=torch.float64)).shape) == (4, 0)
    st = T.evaluate_all(trees, torch.tensor(mu))
    assert tuple(st.shape) == (2, 3) and st.dtype == torch.float64
    with pytest.raises(ThetaError, match=r"shape \(P,\) or \(S, P\)"):
        T.evaluate(U, np.zeros((2, 2, 2)))


def test_n_parameters_counts_the_largest_index_used():
    assert T.n_parameters(2.0) == 0
    assert T.n_parameters(U) == 1
    assert T.n_parameters({"add": [{"mu": 3}, {"mul": [U, {"exp": {"mu": 5}}]}]}) == 6


def test_affine_coefficients_from_a_record():
    rec = {"theta_a": [U, {"mul": [U, V]}], "theta_f": [1.0, {"exp": V}], "certified": True}
    c = T.AffineCoefficients.from_record(rec, n_params=2)
    mu = np.array([[0.5, 1.0], [2.0, 0.0]])
    np.testing.assert_allclose(c.theta_a(mu), [[0.5, 0.5], [2.0, 0.0]], rtol=1e-15)
    np.testing.assert_allclose(c.theta_f(mu), [[1.0, math.e], [1.0, 1.0]], rtol=1e-15)
    assert c.affine is True
    assert c.trees_a[1] == T.canonical({"mul": [V, U]})          # stored canonically
    t = torch.tensor(mu, requires_grad=True)
    c.theta_a(t)[:, 1].sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), mu[:, ::-1], rtol=1e-15)
    assert T.AffineCoefficients.from_record({**rec, "certified": False}).affine is False
    assert T.AffineCoefficients.from_record({**rec, "theta_a": []}).affine is False
    assert T.AffineCoefficients.from_record({"theta_a": [U], "theta_f": []}).affine is False
    for bad in ([], {"theta_a": U, "theta_f": []}, {"theta_a": [U]}):
        with pytest.raises(ThetaError, match="theta_a and theta_f must be lists"):
            T.AffineCoefficients.from_record(bad)
    with pytest.raises(ThetaError, match=r"theta_a\[1\]"):
        T.AffineCoefficients.from_record({"theta_a": [U, {"mu": 2}], "theta_f": []},
                                         n_params=2)
    with pytest.raises(ThetaError, match=r"theta_f\[0\]"):
        T.AffineCoefficients([U], [{"cos": U}])


def test_constant_subtrees_and_constant_bases_evaluate_exactly():
    mu = np.array([[0.5, 2.0], [1.5, 3.0]])
    assert T.evaluate({"pow": [2.0, 3.0]}, mu).tolist() == [8.0, 8.0]
    assert T.evaluate({"exp": 0.0}, mu).tolist() == [1.0, 1.0]
    assert T.evaluate({"sqrt": 9.0}, mu[0]) == 3.0
    np.testing.assert_allclose(T.evaluate({"pow": [2.0, U]}, mu), 2.0 ** mu[:, 0], rtol=1e-15)
    t = torch.tensor(mu, requires_grad=True)
    out = T.evaluate({"pow": [2.0, U]}, t)                   # constant base, tensor exponent
    assert out.dtype == torch.float64
    out.sum().backward()
    np.testing.assert_allclose(t.grad.numpy()[:, 0], np.log(2.0) * 2.0 ** mu[:, 0],
                               rtol=1e-14)
    np.testing.assert_array_equal(T.evaluate({"pow": [2.0, 3.0]}, t).detach().numpy(), [8, 8])
    with pytest.raises(ThetaError, match="uses μ_2 but μ has 2 components"):
        T.evaluate({"mu": 2}, mu)


def test_integer_powers_at_zero_endpoints():
    _tight(T.interval({"pow": [U, 2]}, [0.0], [3.0]), (0.0, 9.0))
    _tight(T.interval({"pow": [U, 2]}, [-3.0], [0.0]), (0.0, 9.0))
    _tight(T.interval({"pow": [U, 0]}, [0.0], [3.0]), (1.0, 1.0))
    a, b = T.interval({"pow": [U, -1]}, [0.0], [1.0])        # 1/x on [0, 1]: unbounded
    assert not T.prove_positive({"pow": [U, -1]}, [-1.0], [1.0])
    assert b == math.inf or math.isnan(b) or math.isnan(a)
