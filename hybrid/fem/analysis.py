"""What hybrid derives from a model's UFL residual F(u; v) with scalar parameter Constants.

- :func:`is_linear` / :func:`jacobian`: J = expand_derivatives(derivative(F, u, du)); F is
  linear in u iff u is not a coefficient of J.
- :func:`parameter_derivative`: ∂F/∂μ_q. UFL 2026.1 refuses ``ufl.derivative`` with respect
  to a Constant, so μ_q is replaced by ``ufl.variable(μ_q)`` in every integrand and
  differentiated with ``ufl.diff``.
- :func:`affine_decomposition`: F = Σ_q θ_q(μ) F_q with θ_q as data
  (:mod:`hybrid.core.theta`) and F_q free of μ. Method: each maximal scalar sub-expression
  of an integrand that depends on the parameters alone (``exp(μ0)``, ``μ0·μ1``,
  ``μ1²/(1+μ0)``) becomes a symbol z_j; each summand of the integrand is then expanded as a
  polynomial in the symbols by Taylor's formula at z = 0 — differentiate in z_j until the
  derivative is zero (at most ``max_degree`` times), the coefficient of z_j^k being
  ∂^k/∂z_j^k|_{z=0} / k!. A summand that does not become zero (exp(−(x − μ0)²): μ0 is
  entangled with x) is not affine, and the result says so (no exception). Terms with the same
  canonical θ (after pulling out numeric factors) are merged. The decomposition is returned
  only after Σ θ_q(μ) F_q(u) has been checked against F(u; μ) at random (μ, u), assembled,
  to a relative tolerance (default 1e-12). For a linear F, a_q = ∂F_q/∂u and
  f_q = −F_q|_{u=0}, so that F = Σ θ_q (a_q(u, v) − f_q(v)).
- :func:`user_affine`: explicit (θ_q, F_q) pairs of ``Problem.affine``, checked the same way.
- :func:`coercivity_certificate`: θ_q > 0 on the parameter box proved by interval
  arithmetic, and every assembled a_q symmetric positive semi-definite (numerically: the
  symmetric defect to round-off and the smallest eigenvalue ≥ −tol·‖A_q‖).

All assembly is collective on the mesh communicator; the results are the same on all ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import ufl
from dolfinx import fem
from dolfinx.fem import petsc as fem_petsc
from petsc4py import PETSc
from ufl.algorithms import expand_derivatives
from ufl.algorithms.map_integrands import map_integrands
from ufl.constantvalue import ConstantValue, ScalarValue, Zero
from ufl.corealg.traversal import unique_post_traversal

from hybrid.core import theta as th

# ---------------------------------------------------------------------------- linearity


def jacobian(F: ufl.Form, u: fem.Function, du=None) -> ufl.Form:
    """J = ∂F/∂u in the direction of a trial function (derivatives expanded)."""
    du = ufl.TrialFunction(u.function_space) if du is None else du
    return expand_derivatives(ufl.derivative(F, u, du))


def is_linear(F: ufl.Form, u: fem.Function) -> bool:
    """True iff F(u; v) is affine in u (its Jacobian does not depend on u)."""
    return u not in jacobian(F, u).coefficients()


def zero_like(u: fem.Function):
    """The UFL zero of u's shape (for F|_{u=0})."""
    return Zero(u.ufl_shape)


def at_zero(F: ufl.Form, u: fem.Function) -> ufl.Form:
    """F with u replaced by 0 (integrals that vanish are dropped)."""
    return map_integrands(lambda e: e, ufl.replace(F, {u: zero_like(u)}))


# ---------------------------------------------------------------------------- ∂F/∂μ


def _diff_integrands(F: ufl.Form, c) -> ufl.Form:
    vc = ufl.variable(c)
    G = ufl.replace(F, {c: vc})
    D = map_integrands(lambda e: expand_derivatives(ufl.diff(e, vc)), G)
    return ufl.replace(D, {vc: c}) if not D.empty() else D


def parameter_derivative(F: ufl.Form, c: fem.Constant) -> ufl.Form:
    """∂F/∂c for a scalar Constant c (an empty Form where F does not depend on c)."""
    if c.ufl_shape != ():
        raise ValueError("parameter_derivative needs a scalar Constant")
    return _diff_integrands(F, c)


def parameter_derivatives(F: ufl.Form, mu) -> list[ufl.Form]:
    """[∂F/∂μ_q for q < P] for the parameters ``mu`` (a :class:`hybrid.model.Parameters`)."""
    return [parameter_derivative(F, c) for c in mu.constants]


# ---------------------------------------------------------------------------- affine terms


@dataclass
class AffineTerm:
    """One term θ(μ) · form: θ a canonical tree, the form free of μ."""

    theta: th.Tree
    form: ufl.Form


@dataclass
class AffineDecomposition:
    """F = Σ terms[q].theta(μ) · terms[q].form, or why not.

    ``a`` and ``f`` (linear F only) hold the bilinear forms a_q = ∂F_q/∂u and the linear
    forms f_q = −F_q|_{u=0}, each with its θ; ``error`` is the largest relative reassembly
    error seen in the checks; ``source`` is "derived" or "user".
    """

    affine: bool
    reason: str = ""
    terms: list[AffineTerm] = field(default_factory=list)
    linear: bool | None = None
    a: list[AffineTerm] = field(default_factory=list)
    f: list[AffineTerm] = field(default_factory=list)
    error: float = math.nan
    source: str = "derived"

    @property
    def thetas(self) -> list[th.Tree]:
        """θ_q of the residual terms."""
        return [t.theta for t in self.terms]

    @property
    def theta_a(self) -> list[th.Tree]:
        """θ_q of the operator terms a_q."""
        return [t.theta for t in self.a]

    @property
    def theta_f(self) -> list[th.Tree]:
        """θ_q of the right-hand side terms f_q."""
        return [t.theta for t in self.f]


class _NotAffine(Exception):
    pass


_UNARY = {ufl.classes.Exp: "exp", ufl.classes.Ln: "log", ufl.classes.Sqrt: "sqrt"}


def expr_to_theta(expr, mu) -> th.Tree:
    """The θ tree of a UFL expression of the parameters alone (raises ValueError otherwise)."""
    try:
        return th.canonical(_to_tree(ufl.as_ufl(expr), mu))
    except _NotAffine as exc:
        raise ValueError(str(exc)) from None


def _to_tree(e, mu) -> th.Tree:
    if isinstance(e, Zero):
        return 0.0
    if isinstance(e, ScalarValue):
        return float(e)
    if isinstance(e, ufl.Constant):
        k = mu.index(e)
        if k is None:
            raise _NotAffine("a Constant that is not a parameter is part of θ")
        return {"mu": k}
    ops = [_to_tree(o, mu) for o in e.ufl_operands]
    if isinstance(e, ufl.classes.Sum):
        return {"add": ops}
    if isinstance(e, ufl.classes.Product):
        return {"mul": ops}
    if isinstance(e, ufl.classes.Division):
        return {"div": ops}
    if isinstance(e, ufl.classes.Power):
        return {"pow": ops}
    if type(e) in _UNARY:
        return {_UNARY[type(e)]: ops[0]}
    if isinstance(e, ufl.classes.Conj | ufl.classes.Real):  # identities for real scalars
        return ops[0]
    raise _NotAffine(f"θ uses {type(e).__name__}, which θ trees do not support "
                     f"(allowed: + − · / ** exp log sqrt)")


def _status(expr, params: set) -> dict:
    """Per node: 'param' (parameters and numbers only, ≥ 1 parameter), 'num', or 'other'."""
    st: dict = {}
    for node in unique_post_traversal(expr):
        if node._ufl_is_terminal_:
            if isinstance(node, ufl.Constant) and node in params:
                st[node] = "param"
            elif isinstance(node, ConstantValue | ufl.classes.MultiIndex):
                st[node] = "num"
            else:
                st[node] = "other"
        else:
            kids = [st[o] for o in node.ufl_operands]
            st[node] = ("other" if "other" in kids else "param" if "param" in kids else "num")
    return st


def _maximal_param_subexpressions(expr, params: set) -> list:
    st = _status(expr, params)
    found, seen, stack = [], set(), [expr]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if st[e] == "param" and e.ufl_shape == () and not e.ufl_free_indices:
            found.append(e)
        elif st[e] == "other":
            stack.extend(e.ufl_operands)
    return found


def _summands(expr) -> list:
    out, stack = [], [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, ufl.classes.Sum):
            stack.extend(e.ufl_operands)
        else:
            out.append(e)
    return out


def _symbols_in(expr, symbols: dict) -> list:
    return [symbols[n] for n in unique_post_traversal(expr) if n in symbols]


def _poly(expr, symbols: dict, max_degree: int) -> list[tuple[dict, object]]:
    """Expand expr as Σ_α c_α z^α in the symbols; [({j: k}, c_α)], c_α free of symbols."""
    present = sorted(set(_symbols_in(expr, symbols)))
    if not present:
        return [({}, expr)]
    j = present[0]
    z = next(s for s, k in symbols.items() if k == j)
    vz = ufl.variable(z)
    out, g, fact = [], expr, 1.0
    for k in range(max_degree + 1):
        try:
            g0 = ufl.replace(g, {z: Zero()})
        except (ZeroDivisionError, ValueError, ArithmeticError) as exc:
            raise _NotAffine(f"not a polynomial in a θ factor ({exc})") from None
        if not isinstance(g0, Zero):
            coeff = g0 if fact == 1.0 else (1.0 / fact) * g0
            for exps, c in _poly(coeff, symbols, max_degree):
                out.append(({**exps, j: k}, c))
        g = expand_derivatives(ufl.diff(ufl.replace(g, {z: vz}), vz))
        if isinstance(g, Zero):
            return out
        g = ufl.replace(g, {vz: z})
        fact *= k + 1
    raise _NotAffine(f"a parameter enters F through a function that is not a polynomial in "
                     f"its θ factors (degree > {max_degree})")


def _scale_out(tree: th.Tree) -> tuple[float, th.Tree]:
    """(c, θ') with θ = c·θ' and θ' free of numeric factors (1.0 for a constant θ)."""
    tree = th.canonical(tree)
    if not isinstance(tree, dict):
        return float(tree), 1.0
    if "neg" in tree:
        c, rest = _scale_out(tree["neg"])
        return -c, rest
    if "mul" in tree:
        c, rest = 1.0, []
        for a in tree["mul"]:
            ca, ra = _scale_out(a)
            c *= ca
            if ra != 1.0:
                rest.append(ra)
        if not rest:
            return c, 1.0
        return c, th.canonical({"mul": rest}) if len(rest) > 1 else rest[0]
    return 1.0, tree


def _monomial(exps: dict, trees: list) -> th.Tree:
    factors = []
    for j, k in sorted(exps.items()):
        if k == 1:
            factors.append(trees[j])
        elif k > 1:
            factors.append({"pow": [trees[j], float(k)]})
    if not factors:
        return 1.0
    return factors[0] if len(factors) == 1 else {"mul": factors}


def _decompose(F: ufl.Form, mu, max_degree: int) -> list[AffineTerm]:
    params = set(mu.constants)
    groups: dict[str, tuple[th.Tree, list]] = {}
    for itg in F.integrals():
        domain = itg.ufl_domain()
        for s in _summands(itg.integrand()):
            subs = _maximal_param_subexpressions(s, params)
            trees = [_to_tree(e, mu) for e in subs]
            symbols = {e: ufl.Constant(domain) for e in subs}
            z_of = {symbols[e]: j for j, e in enumerate(subs)}
            s_z = ufl.replace(s, symbols) if symbols else s
            try:
                expansion = _poly(s_z, z_of, max_degree)
            except _NotAffine as exc:
                factors = ", ".join(sorted(th.dumps(t) for t in trees))   # stable
                raise _NotAffine(f"{exc}; in a {itg.integral_type()} integral, θ factors "
                                 f"{factors}") from None
            for exps, c in expansion:
                scale, theta = _scale_out(_monomial(exps, trees))
                key = th.dumps(theta)
                integrand = c if scale == 1.0 else scale * c
                groups.setdefault(key, (th.canonical(theta), []))[1].append(
                    itg.reconstruct(integrand=integrand))
    terms = []
    for theta, itgs in groups.values():
        form = map_integrands(lambda e: e, ufl.Form(itgs))
        if not form.empty():
            terms.append(AffineTerm(theta, form))
    return terms


def _split_linear(terms: list[AffineTerm], u: fem.Function) -> tuple[list, list]:
    a, f = [], []
    du = ufl.TrialFunction(u.function_space)
    for t in terms:
        aq = jacobian(t.form, u, du)
        if not aq.empty():
            a.append(AffineTerm(t.theta, aq))
        fq = at_zero(t.form, u)
        if not fq.empty():
            f.append(AffineTerm(t.theta, -fq))
    return a, f


def _functions(F: ufl.Form) -> list[fem.Function]:
    return [c for c in F.coefficients() if isinstance(c, fem.Function)]


def assemble_owned(form: fem.Form) -> np.ndarray:
    """The owned entries of the assembled vector of ``form``, ghost contributions added."""
    b = fem_petsc.assemble_vector(form)
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    out = b.getArray().copy()
    b.destroy()
    return out


def assemble_into(form: fem.Form, b: PETSc.Vec) -> PETSc.Vec:
    """Assemble ``form`` into ``b`` (zeroed first) and accumulate its ghost contributions."""
    with b.localForm() as bl:
        bl.set(0.0)
    fem_petsc.assemble_vector(b, form)
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    return b


def _random_mu(rng, mu, box) -> np.ndarray:
    P = len(mu.constants)
    if box is None:
        return rng.uniform(0.5, 2.0, size=P)
    lo, hi = (np.asarray(b, dtype=float) for b in box)
    return lo + (hi - lo) * rng.random(P)


def reassembly_error(F: ufl.Form, terms: Sequence[AffineTerm], u: fem.Function, mu,
                     box=None, checks: int = 3, seed: int = 0) -> float:
    """The largest, over ``checks`` random (μ, u) of ‖F(u; μ) − Σ θ_q(μ) F_q(u)‖₂ / ‖F(u; μ)‖₂.

    μ is uniform in ``box`` = (lower, upper) (default [0.5, 2]^P), the same on all ranks;
    u and every other Function of F are uniform in [−1, 1] (restored afterwards), as are
    the parameter values.
    """
    msh = u.function_space.mesh
    comm = msh.comm
    weights = [fem.Constant(msh, 0.0) for _ in terms]
    G = ufl.Form([itg.reconstruct(integrand=w * itg.integrand())
                  for w, t in zip(weights, terms, strict=True) for itg in t.form.integrals()])
    F_c = fem.form(F)
    G_c = fem.form(G) if terms else None
    b_F = fem_petsc.create_vector(fem.extract_function_spaces([F_c]))
    b_G = b_F.duplicate()
    funcs = _functions(F)
    saved_f = [f.x.array.copy() for f in funcs]
    saved_mu = mu.values_array()
    rng_mu = np.random.default_rng(seed)
    rng_u = np.random.default_rng([seed, comm.rank])
    worst = 0.0
    try:
        for _ in range(checks):
            m = _random_mu(rng_mu, mu, box)
            mu.assign(m)
            for f in funcs:
                f.x.array[:] = rng_u.uniform(-1.0, 1.0, size=f.x.array.size)
                f.x.scatter_forward()
            for w, t in zip(weights, terms, strict=True):
                w.value = float(th.evaluate(t.theta, m))
            assemble_into(F_c, b_F)
            if G_c is not None:
                assemble_into(G_c, b_G)
            else:
                b_G.set(0.0)
            ref = b_F.norm()
            b_G.axpy(-1.0, b_F)
            err = b_G.norm() / ref if ref > 0 else b_G.norm()
            worst = max(worst, err if np.isfinite(err) else math.inf)
    finally:
        for f, s in zip(funcs, saved_f, strict=True):
            f.x.array[:] = s
        mu.assign(saved_mu)
        b_F.destroy()
        b_G.destroy()
    return worst


def affine_decomposition(F: ufl.Form, u: fem.Function, mu, box=None, *, checks: int = 3,
                         tol: float = 1e-12, seed: int = 0,
                         max_degree: int = 8) -> AffineDecomposition:
    """Derive F = Σ θ_q(μ) F_q (module docstring); check it; a not-affine result otherwise.

    ``mu`` is the :class:`hybrid.model.Parameters` of the model, ``box`` an optional
    (lower, upper) parameter box for the random checks. Collective.
    """
    linear = is_linear(F, u)
    try:
        terms = _decompose(F, mu, max_degree)
    except _NotAffine as exc:
        return AffineDecomposition(False, reason=str(exc), linear=linear)
    return _finish(F, u, mu, box, terms, linear, checks, tol, seed, "derived")


def _finish(F, u, mu, box, terms, linear, checks, tol, seed, source) -> AffineDecomposition:
    err = reassembly_error(F, terms, u, mu, box, checks, seed)
    if not err <= tol:
        return AffineDecomposition(False, reason=f"Σ θ_q F_q differs from F by {err:.2e} "
                                   f"(relative) at a random (μ, u); tolerance {tol:.0e}",
                                   terms=terms, linear=linear, error=err, source=source)
    a, f = _split_linear(terms, u) if linear else ([], [])
    return AffineDecomposition(True, terms=terms, linear=linear, a=a, f=f, error=err,
                               source=source)


def user_affine(F: ufl.Form, u: fem.Function, mu, affine: Sequence, box=None, *,
                checks: int = 3, tol: float = 1e-12, seed: int = 0) -> AffineDecomposition:
    """Check explicit affine terms [(θ_q, F_q)] of ``Problem.affine``.

    θ_q is a UFL expression of ``mu`` (or a θ tree), F_q a form free of μ; Σ θ_q F_q must
    reassemble F like a derived decomposition. Collective.
    """
    linear = is_linear(F, u)
    params = set(mu.constants)
    terms = []
    for q, (theta, form) in enumerate(affine):
        try:
            tree = (th.canonical(th.validate(theta, len(mu.constants)))
                    if isinstance(theta, dict | int | float) else expr_to_theta(theta, mu))
        except (ValueError, th.ThetaError) as exc:
            return AffineDecomposition(False, reason=f"affine term {q}: θ: {exc}", linear=linear,
                                       source="user")
        if not isinstance(form, ufl.Form) or any(c in params for c in form.constants()):
            return AffineDecomposition(False, reason=f"affine term {q}: F_q must be a form free "
                                       f"of the parameters", linear=linear, source="user")
        terms.append(AffineTerm(tree, form))
    return _finish(F, u, mu, box, terms, linear, checks, tol, seed, "user")


# ---------------------------------------------------------------------------- coercivity


@dataclass
class CoercivityCertificate:
    """θ_q > 0 on the box (interval lower bounds) and a_q symmetric PSD (per term)."""

    ok: bool
    reasons: list[str]
    theta_lower: list[float]
    asymmetry: list[float]
    min_eigenvalue: list[float]


def _gather_csr(A: PETSc.Mat, comm):
    """The global matrix as scipy CSR on rank 0 (None elsewhere)."""
    import scipy.sparse as sp

    r0, r1 = A.getOwnershipRange()
    indptr, indices, data = A.getValuesCSR()
    parts = comm.gather((r0, r1, indptr.copy(), indices.copy(), data.copy()), root=0)
    if comm.rank != 0:
        return None
    n = A.getSize()
    blocks = []
    for r0, r1, ip, ix, dv in sorted(parts, key=lambda p: p[0]):
        blocks.append(sp.csr_matrix((dv, ix, ip), shape=(r1 - r0, n[1])))
    return sp.vstack(blocks, format="csr")


def _min_eig(S, max_dense: int, tol: float) -> float:
    """λ_min of the symmetric S / ‖S‖_max, or a lower bound of it that is ≥ −tol.

    Dense (exact to round-off) up to ``max_dense`` rows. Beyond, the Gershgorin bound
    min_i (s_ii − Σ_{j≠i} |s_ij|) ≤ λ_min settles diagonally dominant matrices (stiffness
    matrices of most meshes); otherwise the inertia of S + tol‖S‖ I (Sylvester's law: an
    LDLᵀ factorisation with symmetric pivoting has no negative pivot iff it is positive
    definite, i.e. λ_min > −tol‖S‖; then −tol is returned as the lower bound) settles
    semi-definite matrices with a large kernel (elasticity: rigid-body modes, and the zero
    rows outside a subdomain), where Lanczos converges slowly; failing that, shift-invert
    Lanczos at the Gershgorin bound, which lies below the spectrum, so the eigenvalue nearest
    to it is λ_min.
    """
    import scipy.linalg as la
    import scipy.sparse.linalg as sla
    from scipy.sparse import identity as sp_identity

    scale = abs(S).max() or 1.0
    n = S.shape[0]
    if n <= max_dense:
        return float(la.eigvalsh(S.toarray(), subset_by_index=[0, 0])[0]) / scale
    diag = S.diagonal()
    off = np.asarray(abs(S).sum(axis=1)).ravel() - np.abs(diag)
    bound = float((diag - off).min()) / scale
    if bound >= -tol:
        return bound
    if _positive_definite(S + tol * scale * sp_identity(n, format="csc")):
        return -tol
    sigma = (bound - 1e-3) * scale
    vals = sla.eigsh(S, k=1, sigma=sigma, which="LM", return_eigenvectors=False, maxiter=5000)
    return float(vals.min()) / scale


def _positive_definite(S) -> bool:
    """Whether the symmetric sparse S is positive definite, from the pivots of S = LDLᵀ.

    SuperLU in symmetric mode (diagonal pivots, the same permutation on rows and columns)
    gives P S Pᵀ = L U with U's diagonal the pivots D; by Sylvester's law of inertia S is
    positive definite iff every pivot is positive. If SuperLU leaves the diagonal (its row
    and column permutations differ) or fails, the answer is False (undecided here).
    """
    import scipy.sparse.linalg as sla

    try:
        lu = sla.splu(S.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                      options={"SymmetricMode": True})
    except RuntimeError:
        return False
    if not np.array_equal(lu.perm_r, lu.perm_c):
        return False
    return bool(np.all(lu.U.diagonal() > 0))


def coercivity_certificate(decomp: AffineDecomposition, box, *, tol: float = 1e-10,
                           max_dense: int = 500) -> CoercivityCertificate:
    """Check the conditions of the min-θ coercivity bound for a linear affine problem.

    a(w, w; μ) = Σ θ_q(μ) a_q(w, w) ≥ min_q θ_q(μ)/θ_q(μ̄) · a(w, w; μ̄) holds when every θ_q
    is positive on the box (proved by :func:`hybrid.core.theta.prove_positive`) and every
    a_q is symmetric positive semi-definite, checked on the assembled matrix (no boundary
    conditions): ‖A − Aᵀ‖_max ≤ tol·‖A‖_max and λ_min((A + Aᵀ)/2) ≥ −tol·‖A‖_max (dense
    eigensolver up to ``max_dense`` rows; beyond, a Gershgorin bound or shift-invert Lanczos,
    see :func:`_min_eig`). The a_q are assembled from one compiled form. The matrix checks are
    numerical (to round-off), not proofs. Collective.
    """
    reasons: list[str] = []
    if not decomp.affine or not decomp.linear or not decomp.a:
        return CoercivityCertificate(False, ["not a linear affine problem"], [], [], [])
    lower, upper = (np.asarray(b, dtype=float) for b in box)
    lows, asym, eigs = [], [], []
    # one compiled form Σ c_q a_q; A_q is assembled with c = e_q (one JIT compilation, not Q)
    msh = decomp.a[0].form.arguments()[0].ufl_function_space().mesh
    weights = [fem.Constant(msh, 0.0) for _ in decomp.a]
    form = fem.form(ufl.Form([itg.reconstruct(integrand=w * itg.integrand())
                              for w, t in zip(weights, decomp.a, strict=True)
                              for itg in t.form.integrals()]))
    comm = msh.comm
    A = fem_petsc.create_matrix(form)
    for q, term in enumerate(decomp.a):
        lo, _ = th.interval(term.theta, lower, upper)
        lows.append(lo)
        if not lo > 0:
            reasons.append(f"θ_{q} = {th.dumps(term.theta)} is not proved positive on the box "
                           f"(lower bound {lo})")
        for k, w in enumerate(weights):
            w.value = 1.0 if k == q else 0.0
        A.zeroEntries()
        fem_petsc.assemble_matrix(A, form)
        A.assemble()
        S = _gather_csr(A, comm)
        res = None
        if comm.rank == 0:
            S.eliminate_zeros()
            scale = abs(S).max() if S.nnz else 1.0
            d = abs(S - S.T).max() / scale if S.nnz else 0.0
            lam = _min_eig(0.5 * (S + S.T), max_dense, tol) if S.nnz else 0.0
            res = (float(d), float(lam))
        d, lam = comm.bcast(res, root=0)
        asym.append(d)
        eigs.append(lam)
        if d > tol:
            reasons.append(f"a_{q} is not symmetric (relative defect {d:.1e})")
        if lam < -tol:
            reasons.append(f"a_{q} is not positive semi-definite (λ_min/‖A‖ = {lam:.1e})")
    A.destroy()
    return CoercivityCertificate(not reasons, reasons, lows, asym, eigs)


# ---------------------------------------------------------------------------- one call


@dataclass
class Analysis:
    """Everything derived from a Problem: linearity, affine terms, coercivity (if asked)."""

    linear: bool
    affine: AffineDecomposition
    certificate: CoercivityCertificate | None = None

    @property
    def tier(self) -> str:
        """'certified' (linear, affine, coercivity proved) or 'residual' (PLUGINS.md tiers)."""
        if self.certificate is not None and self.certificate.ok:
            return "certified"
        return "residual"


def analyse(problem, mu, box=None, *, tol: float = 1e-12) -> Analysis:
    """Analyse a model's Problem: the user's affine terms if given, else derived ones.

    The coercivity certificate is computed only when the model promises coercivity
    (``Problem.coercive``), the problem is linear and affine, and a box is given. Collective.
    """
    if problem.affine is not None:
        decomp = user_affine(problem.F, problem.u, mu, problem.affine, box, tol=tol)
    else:
        decomp = affine_decomposition(problem.F, problem.u, mu, box, tol=tol)
    linear = decomp.linear if decomp.linear is not None else is_linear(problem.F, problem.u)
    cert = None
    if problem.coercive and decomp.affine and linear and box is not None:
        cert = coercivity_certificate(decomp, box)
    return Analysis(linear, decomp, cert)
