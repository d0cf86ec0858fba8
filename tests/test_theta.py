"""θ(μ) trees: numpy = torch = the formula, autograd = finite differences, intervals, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybrid.core import theta as T
from hybrid.errors import ThetaError

# θ = exp(μ0) · μ1² / (1 + μ0) − √μ2 + log(μ1 μ2) + μ0^μ2
TREE = {"add": [
    {"div": [{"mul": [{"exp": {"mu": 0}}, {"pow": [{"mu": 1}, 2]}]}, {"add": [1, {"mu": 0}]}]},
    {"neg": {"sqrt": {"mu": 2}}},
    {"log": {"mul": [{"mu": 1}, {"mu": 2}]}},
    {"pow": [{"mu": 0}, {"mu": 2}]},
]}


def formula(m):
    m0, m1, m2 = m[..., 0], m[..., 1], m[..., 2]
    return np.exp(m0) * m1**2 / (1 + m0) - np.sqrt(m2) + np.log(m1 * m2) + m0**m2


def test_numpy_matches_the_formula_on_a_batch():
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.2, 2.0, size=(50, 3))
    assert np.allclose(T.evaluate(TREE, mu), formula(mu), rtol=1e-14, atol=0)
    assert T.evaluate(TREE, mu[0]).shape == ()
    assert T.evaluate(TREE, mu[0]) == pytest.approx(formula(mu[0]), rel=1e-14)
    assert T.evaluate(3, mu).tolist() == [3.0] * 50  # a constant broadcasts over the batch


def test_torch_matches_numpy_and_autograd_matches_finite_differences():
    rng = np.random.default_rng(1)
    mu = rng.uniform(0.5, 1.5, size=(7, 3))
    t = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    y = T.evaluate(TREE, t)
    assert torch.is_tensor(y) and y.shape == (7,)
    assert np.allclose(y.detach().numpy(), T.evaluate(TREE, mu), rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(y.sum(), t)
    h = 1e-6
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        fd = (formula(mu + e) - formula(mu - e)) / (2 * h)
        assert np.allclose(grad[:, i].numpy(), fd, rtol=1e-7, atol=1e-9)


def test_evaluate_all_stacks_terms():
    trees = [{"mu": 1}, 1.0, {"mul": [2, {"mu": 0}]}]
    mu = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert T.evaluate_all(trees, mu).tolist() == [[2.0, 1.0, 2.0], [4.0, 1.0, 6.0]]
    out = T.evaluate_all(trees, torch.tensor(mu))
    assert out.tolist() == [[2.0, 1.0, 2.0], [4.0, 1.0, 6.0]]


def test_interval_encloses_samples_and_proves_positivity_on_a_positive_box():
    lo, hi = np.array([0.1, 0.5, 0.2]), np.array([1.0, 2.0, 3.0])
    a, b = T.interval(TREE, lo, hi)
    rng = np.random.default_rng(2)
    mu = lo + (hi - lo) * rng.random((20000, 3))
    vals = formula(mu)
    assert a <= vals.min() and vals.max() <= b
    tb = {"div": [{"pow": [{"mu": 1}, 2]}, {"add": [1, {"mu": 0}]}]}  # μ1²/(1+μ0)
    assert T.prove_positive(tb, [0.1, 0.1], [1.0, 1.0])
    assert T.prove_positive({"exp": {"neg": {"mu": 0}}}, [-50.0], [50.0])
    assert T.prove_positive({"mu": 3}, [0, 0, 0, 1e-300], [1, 1, 1, 1])


def test_positivity_fails_on_a_box_containing_zero():
    assert not T.prove_positive({"mu": 0}, [0.0], [1.0])
    assert not T.prove_positive({"mu": 0}, [-0.1], [1.0])
    # μ1² / (1 + μ0) is zero at μ1 = 0: not strictly positive on the box
    tb = {"div": [{"pow": [{"mu": 1}, 2]}, {"add": [1, {"mu": 0}]}]}
    assert not T.prove_positive(tb, [0.1, -0.5], [1.0, 1.0])
    # undefined somewhere on the box: nothing can be proved
    assert not T.prove_positive({"log": {"mu": 0}}, [-1.0], [3.0])
    assert not T.prove_positive({"sqrt": {"mu": 0}}, [-1.0], [3.0])
    assert not T.prove_positive({"div": [1, {"mu": 0}]}, [-1.0], [3.0])
    # the square of a sign-changing interval is enclosed from 0, not from a negative product
    a, b = T.interval({"pow": [{"mu": 0}, 2]}, [-2.0], [1.0])
    assert a == 0.0 and b >= 4.0


def test_interval_is_outward_rounded():
    # 0.1 + 0.2 is not 0.3 in floating point; the enclosure must contain the real value
    a, b = T.interval({"add": [{"mu": 0}, {"mu": 1}]}, [0.1, 0.2], [0.1, 0.2])
    assert a < 0.1 + 0.2 < b
    a, b = T.interval({"exp": {"mu": 0}}, [1.0], [1.0])
    assert a < np.e < b


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"eval": "__import__('os').system('true')"}, "unknown node"),
        ({"__class__": 1}, "unknown node"),
        ("mu_0", "expected a number"),
        ([1, 2], "expected a number"),
        (True, "expected a number"),
        (float("nan"), "not finite"),
        ({"mu": 0, "add": [1]}, "exactly one key"),
        ({"mu": -1}, "parameter index"),
        ({"mu": 1.0}, "parameter index"),
        ({"div": [1]}, "expected 2 operands"),
        ({"add": []}, "at least one operand"),
        ({"add": {"mu": 0}}, "list of operands"),
        ({"exp": {"sin": {"mu": 0}}}, "unknown node"),
        ({"mul": [1, {"mu": 9}]}, "out of range"),
    ],
)
def test_unknown_or_malformed_nodes_are_refused_with_one_line(bad, words):
    with pytest.raises(ThetaError) as info:
        T.validate(bad, n_params=3)
    msg = str(info.value)
    assert words in msg and "\n" not in msg
    with pytest.raises(ThetaError):
        T.evaluate(bad, np.ones(3))


def test_deep_trees_are_refused():
    t = {"mu": 0}
    for _ in range(200):
        t = {"neg": t}
    with pytest.raises(ThetaError, match="deeper"):
        T.validate(t)


def test_canonical_form_is_stable_under_reordering():
    a = {"mul": [{"mu": 1}, {"add": [{"mu": 0}, 1]}, {"mul": [2, {"exp": {"mu": 2}}]}]}
    b = {"mul": [{"mul": [{"exp": {"mu": 2}}, {"add": [1.0, {"mu": 0}]}]}, 2.0, {"mu": 1}]}
    assert T.dumps(a) == T.dumps(b)
    assert T.fingerprint([a, {"mu": 0}]) == T.fingerprint([b, {"mu": 0}])
    assert T.fingerprint([a, {"mu": 0}]) != T.fingerprint([{"mu": 0}, a])
    assert T.dumps(a) == T.dumps(json.loads(T.dumps(a)))  # idempotent through JSON
    mu = np.array([0.3, 1.7, -0.4])
    assert T.evaluate(T.canonical(a), mu) == pytest.approx(T.evaluate(a, mu), rel=1e-15)
    # non-commutative operands keep their order
    assert T.dumps({"div": [{"mu": 0}, {"mu": 1}]}) != T.dumps({"div": [{"mu": 1}, {"mu": 0}]})


def test_theta_imports_neither_dolfinx_nor_torch():
    import subprocess
    import sys

    code = ("import sys, hybrid.core.theta; "
            "print(sorted(m for m in ('dolfinx', 'ufl', 'petsc4py', 'mpi4py', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
