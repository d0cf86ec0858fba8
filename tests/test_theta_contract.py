"""θ trees: the promises of hybrid.core.theta that the operation-by-operation tests leave open.

* Enclosures of results that are exact floating-point numbers are those numbers widened
  outward by the documented margin: one ulp for the correctly rounded IEEE operations
  (+, ×, /, √), two for the libm ones (exp, log, pow); exact endpoints (a constant, a
  parameter bound, the 0 of an even power, a product with an exact zero) are not widened.
* Near the overflow of exp the enclosure still contains the real value (checked with
  mpmath); a bound that is not a number, or ∞ − ∞, proves nothing.
* validate() names the path of the offending node and what is wrong with it, and enforces
  the documented size and depth limits exactly.
* canonical()/dumps()/fingerprint() are the documented compact, sorted JSON and its sha256.
* evaluate() computes in real arithmetic for integer μ, quietly gives nan/inf outside the
  domain, and in torch keeps μ's dtype, device and batch shape without aliasing μ.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings

import numpy as np
import pytest
import torch

from hybrid.core import theta as T
from hybrid.errors import ThetaError

U = {"mu": 0}
V = {"mu": 1}


def widened(lo: float, hi: float, ulps: int) -> tuple[float, float]:
    for _ in range(ulps):
        lo, hi = float(np.nextafter(lo, -np.inf)), float(np.nextafter(hi, np.inf))
    return lo, hi


# ------------------------------------------------------------------ documented outward margin
IEEE, LIBM = 1, 2   # ulps: correctly rounded operations / libm's exp, log, pow

EXACT = [
    # (tree, lower, upper, exact range (representable), documented ulps)
    ({"add": [U, V]}, [1.0, 3.0], [2.0, 4.0], (4.0, 6.0), IEEE),
    ({"add": [U, 0.5]}, [1.0], [2.0], (1.5, 2.5), IEEE),
    ({"mul": [U, V]}, [2.0, 4.0], [3.0, 5.0], (8.0, 15.0), IEEE),
    ({"mul": [U, V]}, [-3.0, 4.0], [2.0, 5.0], (-15.0, 10.0), IEEE),
    ({"div": [U, V]}, [6.0, 2.0], [8.0, 4.0], (1.5, 4.0), IEEE),
    ({"div": [U, V]}, [1.0, 1.0], [2.0, 4.0], (0.25, 2.0), IEEE),    # min is lo/hi
    ({"div": [U, V]}, [-8.0, -4.0], [-6.0, -2.0], (1.5, 4.0), IEEE),
    ({"sqrt": U}, [4.0], [9.0], (2.0, 3.0), IEEE),
    ({"exp": U}, [0.0], [0.0], (1.0, 1.0), LIBM),
    ({"log": U}, [1.0], [1.0], (0.0, 0.0), LIBM),
    ({"pow": [U, 3]}, [2.0], [3.0], (8.0, 27.0), LIBM),               # odd
    ({"pow": [U, 3]}, [-3.0], [-2.0], (-27.0, -8.0), LIBM),
    ({"pow": [U, 2]}, [2.0], [3.0], (4.0, 9.0), LIBM),                # even, positive
    ({"pow": [U, 2]}, [-3.0], [-2.0], (4.0, 9.0), LIBM),              # even, negative
    ({"pow": [U, 1024]}, [0.5], [0.5], (2.0 ** -1024, 2.0 ** -1024), LIBM),  # largest integer
    ({"pow": [U, V]}, [1.0, 0.5], [1.0, 3.0], (1.0, 1.0), LIBM),      # 1 ** y, general path
]


@pytest.mark.parametrize("tree,lower,upper,exact,ulps", EXACT)
def test_exact_results_are_widened_by_the_documented_margin_and_no_more(tree, lower, upper,
                                                                      exact, ulps):
    assert T.interval(tree, lower, upper) == widened(*exact, ulps)


def test_exact_endpoints_are_not_widened():
    assert T.interval(2.5, [0.0], [1.0]) == (2.5, 2.5)
    assert T.interval(V, [0.0, -1.5], [1.0, 0.25]) == (-1.5, 0.25)
    assert T.interval({"neg": U}, [1.0], [2.0]) == (-2.0, -1.0)
    assert T.interval({"pow": [U, 0]}, [-2.0], [3.0]) == (1.0, 1.0)
    # an even power on a box reaching 0 has the exact minimum 0 (never a negative bound)
    up9 = widened(9.0, 9.0, LIBM)[1]
    for box in (([0.0], [3.0]), ([-3.0], [0.0]), ([-3.0], [2.0]), ([-1.0], [3.0])):
        assert T.interval({"pow": [U, 2]}, *box) == (0.0, up9), box
    assert T.interval({"pow": [U, 1024]}, [-1.0], [1.0]) == (0.0, widened(1.0, 1.0, LIBM)[1])
    # a factor that is exactly 0 makes the product 0, however large the other factor
    lo, hi = T.interval({"mul": [U, V]}, [-math.inf, 0.0], [-1.0, 0.0])
    assert (lo, hi) == widened(0.0, 0.0, IEEE)
    lo, hi = T.interval({"mul": [V, U]}, [0.0, 1.0], [0.0, math.inf])
    assert (lo, hi) == widened(0.0, 0.0, IEEE)


# ------------------------------------------------------------------ exp near overflow
def _contains(got, *exact_values):
    mp = pytest.importorskip("mpmath")
    lo, hi = got
    for x in exact_values:
        assert mp.mpf(lo) <= x <= mp.mpf(hi), (got, x)


def test_enclosures_next_to_the_overflow_of_exp_contain_the_real_value():
    mp = pytest.importorskip("mpmath")
    mp.mp.prec = 200
    for x in (700.0, 709.0, 709.5, 709.78):                 # exp(x) is still a finite float
        got = T.interval({"exp": U}, [x], [x])
        _contains(got, mp.exp(x))
        assert got == widened(math.exp(x), math.exp(x), LIBM)
    got = T.interval({"pow": [U, V]}, [2.0, 1023.5], [2.0, 1023.5])   # 2 ** 1023.5 ≈ 1.27e308
    _contains(got, mp.mpf(2) ** mp.mpf(1023.5))
    assert got[1] - got[0] <= 1e-11 * got[0]
    got = T.interval({"pow": [U, V]}, [2.0, 1000.0], [3.0, 1023.9])
    _contains(got, mp.mpf(2) ** 1000)
    assert got[0] <= 2.0 ** 1000 * (1 + 1e-12) and got[1] == math.inf


def test_above_the_largest_float_the_lower_bound_is_the_largest_float_or_next_to_it():
    big = np.finfo(float).max
    for tree, lower, upper in [({"exp": U}, [750.0], [800.0]),
                               ({"pow": [U, V]}, [2.0, 1100.0], [3.0, 2000.0]),
                               ({"pow": [U, 2]}, [1e200], [1e201])]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # and quietly: no overflow warning
            lo, hi = T.interval(tree, lower, upper)
        assert hi == math.inf
        assert big * (1 - 1e-15) <= lo <= big, (tree, lo)


# ------------------------------------------------------------------ undefined ends
def test_division_by_a_box_reaching_zero_is_unbounded_and_zero_over_it_is_zero():
    for lower, upper in (([0.0], [1.0]), ([-1.0], [0.0]), ([-1.0], [1.0])):
        assert T.interval({"div": [1.0, U]}, lower, upper) == (-math.inf, math.inf)
    # x / y with x in [-1, 0] and y in [-1, 1] takes every real value
    assert T.interval({"div": [U, V]}, [-1.0, -1.0], [0.0, 1.0]) == (-math.inf, math.inf)
    assert T.interval({"div": [U, V]}, [0.0, -1.0], [1.0, 1.0]) == (-math.inf, math.inf)
    # 0 / y is 0 wherever it is defined
    assert T.interval({"div": [0.0, U]}, [-1.0], [1.0]) == (0.0, 0.0)
    assert T.interval({"div": [V, U]}, [-1.0, 0.0], [1.0, 0.0]) == (0.0, 0.0)


@pytest.mark.parametrize("lower,upper", [([math.nan], [1.0]), ([0.5], [math.nan]),
                                         ([0.0, math.nan], [1.0, 2.0]),
                                         ([0.0, 1.0], [1.0, 0.0])])
def test_a_box_with_a_bound_that_is_not_a_number_or_reversed_is_refused(lower, upper):
    for tree in (U, {"exp": U}, {"mul": [U, 2.0]}):
        with pytest.raises(ThetaError, match="bad box"):
            T.interval(tree, lower, upper)
        with pytest.raises(ThetaError, match="bad box"):
            T.prove_positive(tree, lower, upper)


def test_infinity_minus_infinity_is_undefined_at_both_ends():
    # μ0 = +∞ and −μ1 ∈ [−∞, 0]: the lower end ∞ − ∞ is undefined, so is the enclosure
    a, b = T.interval({"add": [U, {"neg": V}]}, [math.inf, 0.0], [math.inf, math.inf])
    assert math.isnan(a) and math.isnan(b)


# ------------------------------------------------------------------ validate: what and where
def _message(tree, **kw) -> str:
    with pytest.raises(ThetaError) as info:
        T.validate(tree, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_errors_name_the_path_of_the_offending_node():
    msg = _message({"add": [1.0, {"mul": [{"cos": 1}, 2.0]}]})
    assert msg.startswith("θ.add[1].mul[0]: unknown node 'cos'")
    msg = _message({"exp": {"log": {"mu": -1}}})
    assert msg.startswith("θ.exp.log.mu: expected a parameter index ≥ 0, got -1")
    msg = _message({"sqrt": {"div": [U, {"mu": 4}]}}, n_params=3, where="theta_a[2]")
    assert msg.startswith("theta_a[2].sqrt.div[1].mu: index 4 out of range for 3 parameters")
    msg = _message({"neg": {"add": {"mu": 0}}})
    assert msg.startswith("θ.neg.add: expected a list of operands, got {'mu': 0}")
    msg = _message({"neg": {"pow": [U]}})
    assert msg.startswith("θ.neg.pow: expected 2 operands, got 1")
    assert _message({"neg": float("inf")}).startswith("θ.neg: number inf is not finite")


def test_errors_name_the_type_and_value_that_is_not_a_node():
    assert _message({"add": [1.0, "mu_0"]}).startswith(
        "θ.add[1]: expected a number or a one-key object, got str 'mu_0'")
    assert _message(None).startswith("θ: expected a number or a one-key object, got NoneType None")
    assert _message({"exp": [1, 2]}).startswith(
        "θ.exp: expected a number or a one-key object, got list [1, 2]")
    assert _message({"mu": "0"}).startswith("θ.mu: expected a parameter index ≥ 0, got '0'")


def test_unknown_nodes_list_the_allowed_ones():
    msg = _message({"sin": U})
    assert msg.startswith("θ: unknown node 'sin'; allowed: ")
    assert msg.split("allowed: ", 1)[1].split(", ") == list(T.NODES)


def test_long_values_are_cut_to_forty_characters():
    for n in (10, 38):                      # repr of 38 x's and two quotes: 40, shown whole
        text = repr("x" * n)
        assert _message({"add": ["x" * n]}).endswith(f"got str {text}")
    for n in (39, 200):
        shown = _message({"add": ["x" * n]}).split("got str ", 1)[1]
        assert shown == repr("x" * n)[:37] + "..." and len(shown) == 40


def test_the_node_limit_is_exactly_the_documented_one():
    at_limit = {"add": [1.0] * (T.MAX_NODES - 1)}          # the add node and its operands
    assert len(T.validate(at_limit)["add"]) == T.MAX_NODES - 1
    msg = _message({"add": [1.0] * T.MAX_NODES}, where="theta_f[0]")
    assert msg == f"theta_f[0]: tree has more than {T.MAX_NODES} nodes"


@pytest.mark.parametrize("wrap", [lambda t: {"neg": t}, lambda t: {"add": [t]},
                                  lambda t: {"div": [1.0, t]}])
def test_the_depth_limit_is_exactly_the_documented_one(wrap):
    t = U
    for _ in range(T.MAX_DEPTH):                            # the leaf at depth 64
        t = wrap(t)
    assert T.validate(t) == t
    msg = _message(wrap(t))
    assert msg.endswith(f": tree deeper than {T.MAX_DEPTH}") and msg.startswith("θ.")


# ------------------------------------------------------------------ canonical text
def test_one_operand_sums_and_products_are_their_operand():
    assert T.canonical({"add": [U]}) == U
    assert T.canonical({"mul": [{"add": [2]}]}) == 2.0
    assert T.canonical({"exp": {"mul": [{"add": [V]}]}}) == {"exp": V}


def test_dumps_is_compact_json_and_the_fingerprint_its_sha256():
    tree = {"mul": [{"add": [V, 1]}, {"exp": U}]}
    text = T.dumps(tree)
    assert not any(c.isspace() for c in text)
    assert json.loads(text) == T.canonical(tree)
    assert text == json.dumps(T.canonical(tree), separators=(",", ":"))
    trees = [tree, {"mu": 0}, 2]
    array = "[" + ",".join(T.dumps(t) for t in trees) + "]"
    assert json.loads(array) == [T.canonical(t) for t in trees]
    assert T.fingerprint(trees) == hashlib.sha256(array.encode()).hexdigest()
    # the stored format: a fingerprint recorded in a store must stay the same
    assert T.fingerprint([{"mu": 0}, 2]) == hashlib.sha256(b'[{"mu":0},2.0]').hexdigest()
    assert T.fingerprint([]) == hashlib.sha256(b"[]").hexdigest()


# ------------------------------------------------------------------ evaluation
def test_integer_parameters_are_evaluated_in_real_arithmetic():
    mu = np.array([[100_000, 3]])                          # int64: 1e5 ** 4 would overflow
    assert T.evaluate({"mul": [U, U, U, U]}, mu).tolist() == [1e20]
    assert T.evaluate({"pow": [V, -1]}, [3, 4]) == pytest.approx(0.25, rel=1e-15)
    assert T.evaluate({"div": [U, V]}, [[1, 4]]).tolist() == [0.25]


def test_integer_tensors_are_evaluated_in_real_arithmetic_too():
    ints = torch.tensor([[3, 2], [1, 4]])
    for tree in (3.5, {"pow": [0.5, U]}, {"mul": [U, 0.5]}, {"div": [U, V]}, {"exp": V}, U):
        out = T.evaluate(tree, ints)
        assert out.dtype == torch.float64, tree
        np.testing.assert_array_equal(out.numpy(), T.evaluate(tree, ints.numpy()))
    assert T.evaluate(3.5, ints).tolist() == [3.5, 3.5]
    assert T.evaluate({"pow": [0.5, U]}, ints).tolist() == [0.125, 0.5]


def test_outside_the_domain_values_are_nan_or_inf_without_warnings():
    mu = np.array([[-1.0, 0.0], [4.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(T.evaluate({"log": U}, mu), [np.nan, math.log(4.0)])
        np.testing.assert_array_equal(T.evaluate({"sqrt": U}, mu), [np.nan, 2.0])
        np.testing.assert_array_equal(T.evaluate({"div": [1.0, V]}, mu), [np.inf, 0.5])
        assert math.isnan(T.evaluate({"pow": [U, 0.5]}, mu[0]))


def test_nested_operations_in_numpy_and_torch():
    mu = np.array([[0.3, 1.7], [-1.2, 0.4]])
    trees = [({"sqrt": {"exp": U}}, np.exp(mu[:, 0] / 2)),
             ({"log": {"exp": V}}, mu[:, 1]),
             ({"exp": {"neg": {"log": V}}}, 1 / mu[:, 1]),
             ({"pow": [{"sqrt": V}, {"exp": U}]}, mu[:, 1] ** (np.exp(mu[:, 0]) / 2))]
    for tree, exact in trees:
        np.testing.assert_allclose(T.evaluate(tree, mu), exact, rtol=1e-14)
        np.testing.assert_allclose(T.evaluate(tree, torch.tensor(mu)).numpy(), exact,
                                   rtol=1e-14)


def test_torch_keeps_the_dtype_device_and_batch_shape_of_mu():
    t = torch.tensor([[0.3, 1.7], [1.2, 0.4]], dtype=torch.float64)
    out = T.evaluate(0.1, t)
    assert out.dtype == torch.float64 and out.tolist() == [0.1, 0.1]   # 0.1 in double
    assert T.evaluate(0.1, t.float()).dtype == torch.float32
    base = T.evaluate({"pow": [0.1, U]}, t)                 # constant base, double base
    np.testing.assert_allclose(base.numpy(), 0.1 ** t[:, 0].numpy(), rtol=1e-15)
    meta = torch.empty(4, 2, dtype=torch.float64, device="meta")
    for tree in (2.5, U, {"pow": [2.0, U]}, {"exp": V}):
        r = T.evaluate(tree, meta)
        assert r.device == meta.device and tuple(r.shape) == (4,), tree
    for shape in ((2,), (3, 2), (2, 3, 2), (1, 1, 2)):      # torch: any batch shape (..., P)
        m = torch.rand(shape, dtype=torch.float64)
        for tree in (2.5, U, {"mul": [U, V]}):
            r = T.evaluate(tree, m)
            assert tuple(r.shape) == shape[:-1], (tree, shape)
            exact = m[..., 0] * m[..., 1] if tree == {"mul": [U, V]} else (
                m[..., 0] if tree == U else torch.full(shape[:-1], 2.5, dtype=m.dtype))
            np.testing.assert_allclose(r.numpy(), exact.numpy(), rtol=1e-15)
        st = T.evaluate_all([U, 2.5, V], m)
        assert tuple(st.shape) == shape[:-1] + (3,)
        np.testing.assert_array_equal(st[..., 0].numpy(), m[..., 0].numpy())
        np.testing.assert_array_equal(st[..., 1].numpy(), np.full(shape[:-1], 2.5))
        np.testing.assert_array_equal(st[..., 2].numpy(), m[..., 1].numpy())
        assert tuple(T.evaluate_all([], m).shape) == shape[:-1] + (0,)
    for shape in ((2,), (3, 2)):                            # numpy: (P,) or (S, P)
        m = np.random.default_rng(0).random(shape)
        assert T.evaluate(2.5, m).shape == shape[:-1]
        assert T.evaluate_all([], m).shape == shape[:-1] + (0,)
        st = T.evaluate_all([U, 2.5], m)
        assert st.shape == shape[:-1] + (2,)
        np.testing.assert_array_equal(st[..., 0], m[..., 0])


def test_results_are_new_arrays_never_views_of_mu():
    t = torch.tensor([[0.3, 1.7], [1.2, 0.4]], dtype=torch.float64)
    m = t.numpy().copy()
    for mu in (t, m):
        out = T.evaluate(U, mu)
        out += 1.0
        np.testing.assert_array_equal(np.asarray(mu), [[0.3, 1.7], [1.2, 0.4]])
    leaf = t.clone().requires_grad_(True)
    out = T.evaluate(V, leaf)
    out.mul_(2.0)                                          # in place on the result is allowed
    out.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [[0.0, 2.0], [0.0, 2.0]])


# ------------------------------------------------------------------ affine coefficients
def test_affine_coefficients_defaults_and_the_parameter_count_of_both_lists():
    c = T.AffineCoefficients([U], [1.0])
    assert c.affine is True                                # the certificate unless refused
    assert T.AffineCoefficients([U], [1.0], affine=False).affine is False
    with pytest.raises(ThetaError) as info:
        T.AffineCoefficients([U], [{"exp": {"mu": 2}}], n_params=2)
    assert str(info.value).startswith("theta_f[0].exp.mu: index 2 out of range for 2")
    with pytest.raises(ThetaError) as info:
        T.AffineCoefficients.from_record({"theta_a": U, "theta_f": []})
    assert str(info.value).startswith("model record: theta_a and theta_f must be lists")
