"""θ(μ) as data: small JSON expression trees, evaluated in numpy and torch, never ``eval``.

An affine term F = Σ_q θ_q(μ) F_q stores each θ_q as a tree of these nodes (nothing else
is accepted):

=====================  =============================================
``2.5`` (a number)     a finite constant (JSON int or float, not bool)
``{"mu": i}``          the parameter μ_i (i an int, 0 ≤ i < P)
``{"add": [a, ...]}``  a + … (one operand or more)
``{"mul": [a, ...]}``  a · … (one operand or more)
``{"div": [a, b]}``    a / b
``{"pow": [a, b]}``    a ** b
``{"exp": a}``         exp(a)
``{"log": a}``         natural logarithm of a
``{"sqrt": a}``        √a
``{"neg": a}``         −a
=====================  =============================================

Every dict has exactly one key. :func:`canonical` flattens nested sums and products,
writes numbers as floats and sorts the operands of ``add`` and ``mul`` by their canonical
JSON text, so that equal trees written in another order have the same :func:`dumps` text
and the same :func:`fingerprint`. :func:`interval` bounds a tree on a box of parameters
with outward rounding (rigorous for these operations); :func:`prove_positive` uses it to
prove θ > 0 on the whole box. This module imports neither dolfinx nor torch (torch is
used only when a tensor is passed in).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hybrid.errors import ThetaError

Tree = Any  # float | dict[str, Any]

NARY = ("add", "mul")
BINARY = ("div", "pow")
UNARY = ("exp", "log", "sqrt", "neg")
NODES = ("mu", *NARY, *BINARY, *UNARY)
MAX_NODES = 10_000
MAX_DEPTH = 64


# ---------------------------------------------------------------------------- validation
def validate(tree: Tree, n_params: int | None = None, where: str = "θ") -> Tree:
    """Check ``tree`` against the grammar above and return a copy with numbers as floats.

    Raises :class:`ThetaError` with one line naming the offending node's path
    (e.g. ``θ.mul[1]``) for anything else: unknown keys, wrong arity, non-finite or boolean
    numbers, strings, parameter indices out of range, trees deeper than 64 or larger than
    10 000 nodes.
    """
    count = [0]

    def walk(t: Tree, path: str, depth: int) -> Tree:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise ThetaError(f"{where}: tree has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ThetaError(f"{path}: tree deeper than {MAX_DEPTH}")
        if isinstance(t, bool) or not isinstance(t, int | float | dict):
            raise ThetaError(f"{path}: expected a number or a one-key object, got "
                             f"{type(t).__name__} {_short(t)}")
        if not isinstance(t, dict):
            if not math.isfinite(t):
                raise ThetaError(f"{path}: number {t!r} is not finite")
            return float(t)
        if len(t) != 1:
            raise ThetaError(f"{path}: a node has exactly one key, got {sorted(map(str, t))}")
        (op, arg), = t.items()
        if op not in NODES:
            raise ThetaError(f"{path}: unknown node {_short(op)}; allowed: {', '.join(NODES)}")
        if op == "mu":
            if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
                raise ThetaError(f"{path}.mu: expected a parameter index ≥ 0, got {_short(arg)}")
            if n_params is not None and arg >= n_params:
                raise ThetaError(f"{path}.mu: index {arg} out of range for {n_params} parameters")
            return {"mu": int(arg)}
        if op in UNARY:
            return {op: walk(arg, f"{path}.{op}", depth + 1)}
        if not isinstance(arg, list):
            raise ThetaError(f"{path}.{op}: expected a list of operands, got {_short(arg)}")
        if op in BINARY and len(arg) != 2:
            raise ThetaError(f"{path}.{op}: expected 2 operands, got {len(arg)}")
        if op in NARY and not arg:
            raise ThetaError(f"{path}.{op}: expected at least one operand")
        return {op: [walk(a, f"{path}.{op}[{k}]", depth + 1) for k, a in enumerate(arg)]}

    return walk(tree, where, 0)


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------- canonical form
def canonical(tree: Tree) -> Tree:
    """The canonical form of a (valid) tree: floats, flat sorted ``add``/``mul``.

    ``add``/``mul`` operands that are themselves ``add``/``mul`` are merged into their
    parent, and one-operand sums and products are replaced by their operand. No other
    algebra is done (``mul[2, 3]`` stays as it is), so the value is unchanged up to the
    rounding of the reordered floating-point operations.
    """
    tree = validate(tree)

    def canon(t: Tree) -> Tree:
        if not isinstance(t, dict):
            return t
        (op, arg), = t.items()
        if op == "mu":
            return t
        if op in UNARY:
            return {op: canon(arg)}
        args = [canon(a) for a in arg]
        if op in BINARY:
            return {op: args}
        flat: list[Tree] = []
        for a in args:
            if isinstance(a, dict) and op in a:
                flat.extend(a[op])
            else:
                flat.append(a)
        if len(flat) == 1:
            return flat[0]
        return {op: sorted(flat, key=_key)}

    return canon(tree)


def _key(t: Tree) -> str:
    return json.dumps(t, sort_keys=True, separators=(",", ":"))


def dumps(tree: Tree) -> str:
    """Canonical JSON text of ``tree`` (compact, sorted): equal trees, equal text."""
    return _key(canonical(tree))


def fingerprint(trees: Sequence[Tree]) -> str:
    """sha256 (hex) of the canonical JSON of a list of trees."""
    text = "[" + ",".join(dumps(t) for t in trees) + "]"
    return hashlib.sha256(text.encode()).hexdigest()


def n_parameters(tree: Tree) -> int:
    """1 + the largest parameter index used (0 for a constant tree)."""
    if not isinstance(tree, dict):
        return 0
    (op, arg), = tree.items()
    if op == "mu":
        return arg + 1
    return max(n_parameters(a) for a in (arg if isinstance(arg, list) else [arg]))


# ---------------------------------------------------------------------------- evaluation
def evaluate(tree: Tree, mu) -> Any:
    """θ(μ) for μ of shape (P,) or (S, P): a float array of shape () or (S,).

    A torch tensor μ (shape (..., P)) gives a tensor of shape (...), differentiable by
    autograd (an integer tensor is read as float64, like an array). The tree is validated
    first.
    """
    tree = validate(tree)
    if _is_torch(mu):
        import torch

        if not mu.is_floating_point():  # integer μ: real arithmetic, as for an array
            mu = mu.to(torch.float64)
        ops = _torch_ops(torch)
        out = _eval(tree, mu, ops)
        if not torch.is_tensor(out):
            out = torch.as_tensor(out, dtype=mu.dtype, device=mu.device)
        return out.expand(mu.shape[:-1]).clone()  # a new tensor, never a view of μ
    mu = np.asarray(mu, dtype=float)
    if mu.ndim not in (1, 2):
        raise ThetaError(f"θ: μ must have shape (P,) or (S, P), got {mu.shape}")
    with np.errstate(all="ignore"):
        out = _eval(tree, mu, _NUMPY)
    return np.broadcast_to(np.asarray(out, dtype=float), mu.shape[:-1]).copy()


def evaluate_all(trees: Sequence[Tree], mu) -> Any:
    """Stack of θ_q(μ), shape (..., Q): numpy for arrays, torch for tensors."""
    vals = [evaluate(t, mu) for t in trees]
    if _is_torch(mu):
        import torch

        return torch.stack(vals, dim=-1) if vals else mu.new_zeros(mu.shape[:-1] + (0,))
    mu = np.asarray(mu, dtype=float)
    return np.stack(vals, axis=-1) if vals else np.zeros(mu.shape[:-1] + (0,))


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


_NUMPY = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "pow": np.power}


def _torch_ops(torch):
    return {"exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "pow": torch.pow}


def _eval(t: Tree, mu, ops):
    if not isinstance(t, dict):
        return t
    (op, arg), = t.items()
    if op == "mu":
        if arg >= mu.shape[-1]:
            raise ThetaError(f"θ: uses μ_{arg} but μ has {mu.shape[-1]} components")
        return mu[..., arg]
    if op == "neg":
        return -_eval(arg, mu, ops)
    if op in UNARY:
        x = _eval(arg, mu, ops)
        if not hasattr(x, "shape"):  # a number: keep the math exact and the type float
            return float(_NUMPY[op](x))
        return ops[op](x)
    vals = [_eval(a, mu, ops) for a in arg]
    if op == "add":
        out = vals[0]
        for v in vals[1:]:
            out = out + v
        return out
    if op == "mul":
        out = vals[0]
        for v in vals[1:]:
            out = out * v
        return out
    if op == "div":
        return vals[0] / vals[1]
    a, b = vals  # pow
    if not hasattr(a, "shape") and not hasattr(b, "shape"):
        return float(np.power(a, b))
    if not hasattr(a, "shape") and hasattr(b, "dtype") and _is_torch(b):
        import torch

        return torch.pow(torch.as_tensor(a, dtype=b.dtype, device=b.device), b)
    return ops["pow"](a, b)


# ---------------------------------------------------------------------------- intervals
def interval(tree: Tree, lower: Sequence[float], upper: Sequence[float]) -> tuple[float, float]:
    """Enclosure [lo, hi] of θ(μ) for every μ with lower ≤ μ ≤ upper (componentwise).

    Each operation's result is widened outward by one ulp (two for exp, log and pow, whose
    libm results are not guaranteed correctly rounded), so the enclosure holds for the real
    numbers, not just for floating-point evaluation. Where θ is undefined somewhere on the
    box (log or √ of a possibly negative number, a base of a non-integer power that may be
    negative, division by an interval containing 0) the result is (nan, nan) or infinite,
    and no positivity can be proved.
    """
    tree = validate(tree)
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    if lo.shape != hi.shape or lo.ndim != 1 or not np.all(lo <= hi):  # NaN bounds too
        raise ThetaError(f"θ: bad box lower={lo.tolist()} upper={hi.tolist()}")
    with np.errstate(all="ignore"):
        return _ival(tree, lo, hi)


def prove_positive(tree: Tree, lower: Sequence[float], upper: Sequence[float]) -> bool:
    """True iff the interval enclosure proves θ(μ) > 0 on the whole box."""
    a, _ = interval(tree, lower, upper)
    return bool(a > 0.0)  # False for nan


_NAN = (math.nan, math.nan)


def _down(x: float, ulps: int = 1) -> float:
    for _ in range(ulps):
        x = float(np.nextafter(x, -np.inf))
    return x


def _up(x: float, ulps: int = 1) -> float:
    for _ in range(ulps):
        x = float(np.nextafter(x, np.inf))
    return x


def _exp(x: float) -> float:
    """math.exp, inf where the result overflows (x > 709.78...)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _out(a: float, b: float, ulps: int = 1) -> tuple[float, float]:
    if math.isnan(a) or math.isnan(b):
        return _NAN
    return _down(a, ulps), _up(b, ulps)


def _mul(x: tuple, y: tuple) -> tuple[float, float]:
    prods = [x[0] * y[0], x[0] * y[1], x[1] * y[0], x[1] * y[1]]
    prods = [0.0 if math.isnan(p) else p for p in prods]  # 0·inf: the factor is exactly 0
    return _out(min(prods), max(prods))


def _ipow_int(x: tuple, n: int) -> tuple[float, float]:
    """Integer power x ** n (exact monotonicity cases)."""
    a, b = x
    if n == 0:
        return 1.0, 1.0
    if n < 0:
        p = _ipow_int(x, -n)
        return _div((1.0, 1.0), p)
    pa, pb = float(np.float64(a) ** n), float(np.float64(b) ** n)
    if n % 2 == 1:
        return _out(pa, pb, 2)
    if a > 0:
        return _out(pa, pb, 2)
    if b < 0:
        return _out(pb, pa, 2)
    return 0.0, _up(max(pa, pb), 2)  # 0 in [a, b]: the minimum 0 ** n = 0 is exact


def _div(x: tuple, y: tuple) -> tuple[float, float]:
    if y[0] <= 0.0 <= y[1]:
        return (-math.inf, math.inf) if not (x[0] == x[1] == 0.0) else (0.0, 0.0)
    q = [x[0] / y[0], x[0] / y[1], x[1] / y[0], x[1] / y[1]]
    return _out(min(q), max(q))


def _ival(t: Tree, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    if not isinstance(t, dict):
        return float(t), float(t)
    (op, arg), = t.items()
    if op == "mu":
        if arg >= lo.size:
            raise ThetaError(f"θ: uses μ_{arg} but the box has {lo.size} components")
        return float(lo[arg]), float(hi[arg])
    if op == "neg":
        a, b = _ival(arg, lo, hi)
        return -b, -a
    if op in UNARY:
        a, b = _ival(arg, lo, hi)
        if math.isnan(a) or math.isnan(b):
            return _NAN
        if op == "exp":
            return max(0.0, _down(_exp(a), 2)), _up(_exp(b), 2)
        if op == "log":
            if a <= 0.0:
                return _NAN
            return _out(math.log(a), math.log(b) if b < math.inf else math.inf, 2)
        if a < 0.0:  # sqrt
            return _NAN
        return max(0.0, _down(math.sqrt(a))), _up(math.sqrt(b) if b < math.inf else math.inf)
    vals = [_ival(a, lo, hi) for a in arg]
    if any(math.isnan(v[0]) or math.isnan(v[1]) for v in vals):
        return _NAN
    if op == "add":
        a, b = vals[0]
        for c, d in vals[1:]:
            a, b = _out(a + c, b + d)
        return a, b
    if op == "mul":
        out = vals[0]
        for v in vals[1:]:
            out = _mul(out, v)
        return out
    if op == "div":
        return _div(vals[0], vals[1])
    (a, b), (c, d) = vals  # pow
    if c == d and float(c).is_integer() and abs(c) <= 1024:
        return _ipow_int((a, b), int(c))
    if a <= 0.0:
        return _NAN
    # a ** y = exp(y log a) on a positive base; monotone in each argument separately
    ln = _out(math.log(a), math.log(b) if b < math.inf else math.inf, 2)
    e = _mul(ln, (c, d))
    return max(0.0, _down(_exp(e[0]), 2)), _up(_exp(e[1]), 2)


# ---------------------------------------------------------------------------- coefficients
class AffineCoefficients:
    """θ_q(μ), ϑ_q(μ) of A(μ) = Σ_q θ_q(μ) A_q, f(μ) = Σ_q ϑ_q(μ) f_q from stored trees.

    The surrogate side's stand-in for a physics spec of a plug-in model: it needs only the
    trees a store or a surrogate records (``model.theta_a``, ``model.theta_f``), never the
    model's code. ``theta_a(μ)`` has shape (..., Q_a) for μ of shape (P,) or (S, P) (numpy)
    or any (..., P) tensor (torch, differentiable). ``affine`` is the min-θ coercivity
    certificate of the model (θ_q > 0 on the box, A_q symmetric PSD): what an energy norm and
    the rigorous error bound rely on.
    """

    def __init__(self, theta_a: Sequence[Tree], theta_f: Sequence[Tree], *,
                 affine: bool = True, n_params: int | None = None):
        self.trees_a = [canonical(validate(t, n_params, f"theta_a[{q}]"))
                        for q, t in enumerate(theta_a)]
        self.trees_f = [canonical(validate(t, n_params, f"theta_f[{q}]"))
                        for q, t in enumerate(theta_f)]
        self.affine = bool(affine)

    @classmethod
    def from_record(cls, record: dict, n_params: int | None = None) -> AffineCoefficients:
        """From a store's or surrogate's ``model`` record (ThetaError if malformed)."""
        if not isinstance(record, dict) or not isinstance(record.get("theta_a"), list) \
                or not isinstance(record.get("theta_f"), list):
            raise ThetaError("model record: theta_a and theta_f must be lists of θ trees")
        return cls(record["theta_a"], record["theta_f"],
                   affine=bool(record.get("certified")) and bool(record["theta_a"]),
                   n_params=n_params)

    def theta_a(self, mu):
        """θ_q(μ), shape (..., Q_a)."""
        return evaluate_all(self.trees_a, mu)

    def theta_f(self, mu):
        """ϑ_q(μ), shape (..., Q_f)."""
        return evaluate_all(self.trees_f, mu)
