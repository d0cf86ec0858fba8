"""Forward models, finite differences and the posterior density against closed forms.

* :class:`ForwardModel`: shapes, dtypes, failures (batched and not), counts and times;
* :func:`fd_jacobian`: the documented steps hᵢ = step·max(1, |xᵢ|), the stencils (central,
  one-sided of the same order inside the bounds, forward/backward) seen through the points
  the function is asked at, and f0 reuse;
* :class:`Posterior`: Φ = ½χ² − log p_θ, log π_z = −Φ + log|dθ/dz| (differences between
  points, so constants cancel), log_density_and_grad against finite differences, failures →
  −inf with a zero gradient, and the three gradient paths (torch, jac_fn, finite differences)
  agreeing.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.inference import ForwardModel, GaussianPrior, InferenceError, Observations
from hybrid.inference.posterior import FD_STEP, Correction, Posterior, fd_jacobian
from hybrid.inference.prior import UniformPrior

INF = np.inf


class Failed(Exception):
    pass


# ------------------------------------------------------------------ ForwardModel
def test_forward_model_defaults_and_wrap():
    def f(x):
        return x * 2

    m = ForwardModel(f)
    assert m.name == "model" and m.torch_fn is None and m.jac_fn is None
    assert m.batched is False and m.differentiable is False and m.names is None
    assert m.counts() == {"evaluations": 0, "failed": 0, "time_s": 0.0}
    assert ForwardModel.wrap(m) is m
    w = ForwardModel.wrap(f)
    assert isinstance(w, ForwardModel) and w.fn is f and not w.batched
    with pytest.raises(InferenceError, match="^a forward model must be callable, got int$"):
        ForwardModel.wrap(3)
    n = ForwardModel(f, names=("a", "b"), name="two", torch_fn=f, jac_fn=f, batched=True)
    assert n.names == ["a", "b"] and n.name == "two" and n.differentiable
    assert n.jac_fn is f and n.batched is True


def test_forward_model_shapes_and_dtypes():
    seen = []

    def column(x):            # one point in, a column of ints out
        seen.append(np.asarray(x).dtype)
        return [[int(round(10 * x[0]))], [3]]

    m = ForwardModel(column)
    y = m([1, 2])                                          # integers in: floats to the model
    assert y.shape == (2,) and y.dtype == np.float64 and y.tolist() == [10.0, 3.0]
    assert seen == [np.float64]
    Y = m(np.array([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]]))
    assert Y.shape == (3, 2) and Y.dtype == np.float64
    assert m.n_evals == 4
    b = ForwardModel(lambda X: (X[:, :1] > 0).repeat(2, 1), batched=True)
    Y = b(np.array([[1.0], [-1.0]]))
    assert Y.dtype == np.float64 and Y.tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_failures_become_nan_rows_batched_or_not():
    def g(x):
        x = np.atleast_2d(x)
        if np.any(x[:, 0] < 0):
            raise Failed("no")
        return np.hstack([x, 2 * x])

    for batched in (True, False):
        m = ForwardModel(g if batched else (lambda x: g(x)[0]), batched=batched,
                         failures=(Failed,))
        Y = m(np.array([[1.0], [-1.0], [2.0], [-3.0]]))
        assert np.array_equal(Y[[0, 2]], [[1.0, 2.0], [2.0, 4.0]])
        assert np.all(np.isnan(Y[[1, 3]])) and Y.shape == (4, 2)
        assert m.n_failed == 2 and m.n_evals == 4
        # every point failing later: the width is known from the first call
        Y = m(np.array([[-1.0], [-2.0]]))
        assert Y.shape == (2, 2) and np.all(np.isnan(Y)) and m.n_failed == 4
    with pytest.raises(Failed):                            # not a declared failure
        ForwardModel(g, batched=True)(np.array([[-1.0]]))
    fresh = ForwardModel(g, batched=True, failures=(Failed,))
    with pytest.raises(InferenceError, match="^model: failed at every point of the first "
                                             r"call; cannot tell the number of outputs "
                                             r"\(give names\)$"):
        fresh(np.array([[-1.0]]))
    ok_first = ForwardModel(g, batched=True, failures=(Failed,))
    assert ok_first(np.array([[1.0]])).shape == (1, 2)        # the width, from a success
    assert np.all(np.isnan(ok_first(np.array([[-1.0], [-2.0]]))))
    named = ForwardModel(g, batched=True, failures=(Failed,), names=("u", "v"))
    assert np.all(np.isnan(named(np.array([[-1.0]]))))


def test_time_is_accumulated():
    def slow(x):
        time.sleep(0.02)
        return x

    m = ForwardModel(slow, torch_fn=lambda t: (time.sleep(0.02), t)[1],
                     jac_fn=lambda x: (time.sleep(0.02), (x, np.eye(x.size)))[1])
    t0 = time.perf_counter()
    m(np.zeros(1))
    m(np.zeros(1))
    assert 0.04 <= m.time <= time.perf_counter() - t0
    before = m.time
    t0 = time.perf_counter()
    m.torch(torch.zeros(1))
    m.torch(torch.zeros(1))
    assert 0.04 <= m.time - before <= time.perf_counter() - t0
    before = m.time
    t0 = time.perf_counter()
    m.value_and_jacobian(np.zeros(1))
    m.value_and_jacobian(np.zeros(1))
    assert 0.04 <= m.time - before <= time.perf_counter() - t0
    assert m.counts()["time_s"] == m.time and m.counts()["evaluations"] == 6


def test_torch_predictions_count_points_and_are_float64():
    m = ForwardModel(lambda x: x, torch_fn=lambda t: (t * 2).to(torch.float32), name="t")
    out = m.torch(torch.ones(3, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.tolist() == [2.0, 2.0, 2.0]
    m.torch(torch.ones(3, dtype=torch.float64))
    assert m.n_evals == 2                                   # one point each
    m.torch(torch.ones((4, 3), dtype=torch.float64))
    assert m.n_evals == 6                                   # + a batch of 4
    with pytest.raises(InferenceError, match="^plain: no torch version for gradients$"):
        ForwardModel(lambda x: x, name="plain").torch(torch.ones(1))


def test_value_and_jacobian_and_its_failures():
    seen = []

    def jf(x):
        seen.append(x.dtype)
        if x[0] < 0:
            raise Failed("no")
        v = [int(round(x[0] ** 2)), int(x[1])]
        return [[v[0]], [v[1]]], [[int(2 * x[0]), 0], [0, 1]]  # a column, and integers

    m = ForwardModel(lambda x: x, jac_fn=jf, failures=(Failed,))
    y, J = m.value_and_jacobian(np.array([-1.0, 1.0]))     # fails before any width is known
    assert y.shape == (1,) and J.shape == (1, 2) and np.all(np.isnan(y)) and np.isnan(J).all()
    y, J = m.value_and_jacobian([3, 4])
    assert y.dtype == np.float64 and y.tolist() == [9.0, 4.0] and y.shape == (2,)
    assert J.dtype == np.float64 and J.tolist() == [[6.0, 0.0], [0.0, 1.0]]
    assert set(seen) == {np.dtype(np.float64)}
    y, J = m.value_and_jacobian(np.array([-1.0, 1.0]))     # now the width is known: 2
    assert y.shape == (2,) and J.shape == (2, 2) and np.isnan(J).all()
    assert m.n_failed == 2 and m.n_evals == 3


# ------------------------------------------------------------------ fd_jacobian
def _recording(fn):
    pts = []

    def f(X):
        pts.append(np.array(X, dtype=float))
        return fn(X)

    return f, pts


def _cubic(X):
    X = np.atleast_2d(X)
    return np.stack([X[:, 0] ** 3 + X[:, 1], X[:, 0] * X[:, 1]], axis=1)


def _cubic_jac(x):
    return np.array([[3 * x[0] ** 2, 1.0], [x[1], x[0]]])


def test_fd_central_steps_and_points_without_bounds():
    x = np.array([0.5, 100.0])
    f, pts = _recording(_cubic)
    J = fd_jacobian(f, x)                                   # default: central
    assert np.allclose(J, _cubic_jac(x), rtol=1e-8)
    h = FD_STEP["central"] * np.maximum(1.0, np.abs(x))    # documented steps
    P = np.vstack(pts)
    assert len(pts) == 1 and P.shape == (4, 2)             # one batch, no f(x) needed
    expected = np.array([x + [h[0], 0], x - [h[0], 0], x + [0, h[1]], x - [0, h[1]]])
    assert np.allclose(np.sort(P, axis=0), np.sort(expected, axis=0), rtol=0, atol=1e-12)
    # integer points are differentiated as floats
    f, pts = _recording(_cubic)
    assert np.allclose(fd_jacobian(f, [1, 2], step=1e-4), _cubic_jac([1.0, 2.0]), rtol=1e-6)
    assert np.allclose(np.vstack(pts)[:, 0], [1 + 1e-4, 1 - 1e-4, 1, 1], rtol=0, atol=1e-12)
    with pytest.raises(InferenceError, match=r"^finite differences: scheme must be one of "
                                             r"\['central', 'forward'\]$"):
        fd_jacobian(f, x, scheme="backward")


def _stencil(x, lo, hi, scheme="central", f0=None, step=None):
    f, pts = _recording(_cubic)
    bounds = np.array([[lo, hi], [-10.0, 10.0]])
    J = fd_jacobian(f, np.array([x, 1.0]), f0, scheme=scheme, bounds=bounds, step=step)
    P = np.vstack(pts)
    assert np.all(P >= bounds[:, 0]) and np.all(P <= bounds[:, 1])      # never outside
    return J, sorted(np.round((P[:, 0] - x) / h0(x, scheme, step), 6).tolist())


def h0(x, scheme, step=None):
    return ((x + (step or FD_STEP[scheme]) * max(1.0, abs(x))) - x)


def test_fd_one_sided_stencils_inside_the_bounds():
    x = 0.5
    h = h0(x, "central")
    jac = _cubic_jac([x, 1.0])
    # central while both neighbours are inside, bounds included
    J, offs = _stencil(x, x - h, x + h)
    assert offs == [-1.0, 0.0, 0.0, 1.0] and np.allclose(J, jac, rtol=1e-8)
    # the lower neighbour outside: forward, second order (x, x + h, x + 2h)
    J, offs = _stencil(x, x - 0.5 * h, x + 2 * h)
    assert offs == [0.0, 0.0, 0.0, 1.0, 2.0] and np.allclose(J, jac, rtol=1e-6)
    J, offs = _stencil(x, x - 0.5 * h, x + 2.5 * h)
    assert offs == [0.0, 0.0, 0.0, 1.0, 2.0]
    # no room above either: backward, second order
    J, offs = _stencil(x, x - 2 * h, x + 0.5 * h)
    assert offs == [-2.0, -1.0, 0.0, 0.0, 0.0] and np.allclose(J, jac, rtol=1e-6)
    # forward differences: forward up to the bound, backward beyond it
    hf = h0(x, "forward")
    f, pts = _recording(_cubic)
    J = fd_jacobian(f, np.array([x, 1.0]), scheme="forward",
                    bounds=np.array([[0.0, x + hf], [-10.0, 10.0]]))
    assert np.allclose(np.vstack(pts)[:, 0], [x, x + hf, x], rtol=0, atol=1e-15)
    assert np.allclose(J, jac, rtol=1e-6)
    f, pts = _recording(_cubic)
    J = fd_jacobian(f, np.array([x, 1.0]), scheme="forward",
                    bounds=np.array([[0.0, x], [-10.0, 10.0]]))
    assert np.allclose(np.vstack(pts)[:, 0], [x, x - hf, x], rtol=0, atol=1e-15)
    assert np.allclose(J, jac, rtol=1e-6)


def test_fd_reuses_f0_and_asks_only_for_the_stencil_points():
    x = np.array([0.5, 1.0])
    f0 = _cubic(x)[0]
    f, pts = _recording(_cubic)
    J = fd_jacobian(f, x, f0, scheme="forward")
    P = np.vstack(pts)
    assert P.shape == (2, 2) and not any(np.array_equal(p, x) for p in P)   # x not asked
    assert np.allclose(J, _cubic_jac(x), rtol=1e-6)
    f, pts = _recording(_cubic)
    fd_jacobian(f, x, scheme="forward")
    assert np.vstack(pts).shape == (3, 2) and np.array_equal(pts[0][0], x)  # x asked once
    f, pts = _recording(_cubic)
    fd_jacobian(f, x, scheme="central", step=1e-3)
    P = np.vstack(pts)
    assert P.shape == (4, 2) and not any(np.array_equal(p, x) for p in P)
    assert np.allclose(np.abs(P - x).max(axis=0), [1e-3, 1e-3], rtol=1e-9)


# ------------------------------------------------------------------ Posterior
SPACE = ParameterSpace((Parameter("a", 1.0, 5.0), Parameter("k", 0.1, 10.0, log=True)))
A = np.array([[1.0, 0.5], [0.3, -1.0], [0.2, 2.0]])
SIG = np.array([0.1, 0.2, 0.5])
Y = np.array([2.0, -0.5, 1.5])
PRIOR = GaussianPrior([3.0, 0.0], [[1.0, 0.2], [0.2, 0.5]])
PREC = np.linalg.inv(PRIOR.cov)
WIDTH = np.array([4.0, np.log(100.0)])


def _g(X):
    X = np.atleast_2d(X)
    return np.column_stack([X @ A.T, np.sin(X[:, 0])])     # 4 outputs, 3 observed


def _g_torch(X):
    return torch.cat([X @ torch.tensor(A).T, torch.sin(X[..., :1])], dim=-1)


def _jac(mu):
    mu = np.asarray(mu, float)
    return _g(mu)[0], np.vstack([A, [np.cos(mu[0]), 0.0]])


NAMES = ("y0", "y1", "y2", "s")
DATA = Observations(("y2", "y0", "y1"), Y[[2, 0, 1]], SIG[[2, 0, 1]])


def _post(kind, **kw):
    if kind == "torch":
        model = ForwardModel(_g, batched=True, torch_fn=_g_torch, names=NAMES)
    elif kind == "jac":
        model = ForwardModel(_g, batched=True, jac_fn=_jac, names=NAMES)
    else:
        model = ForwardModel(_g, batched=True, names=NAMES)
    return Posterior(model, DATA, SPACE, PRIOR, **kw)


def _phi(mu):
    """½ χ² − log p_θ(θ) written out (the observations matched by name)."""
    mu = np.asarray(mu, float)
    r = (mu @ A.T - Y) / SIG
    d = np.array([mu[0], np.log(mu[1])]) - PRIOR.mean
    return 0.5 * r @ r + 0.5 * d @ PREC @ d


def _log_jac(z):
    s = 1.0 / (1.0 + np.exp(-np.asarray(z)))
    return np.sum(np.log(WIDTH * s * (1 - s)))


MUS = np.array([[2.0, 0.5], [4.0, 3.0], [1.5, 0.2]])


def test_density_and_objective_are_the_formulas():
    post = _post("fd")
    for mu in MUS:
        r = post.residual(mu)
        assert np.allclose(r, (mu @ A.T - Y)[[2, 0, 1]] / SIG[[2, 0, 1]], rtol=1e-13)
        assert post.chi2(mu) == pytest.approx(np.sum(r ** 2), rel=1e-13)
    base = post.neg_log_posterior(MUS[0])
    z = post.transform.to_z(MUS)
    lz = post.log_density(z)
    for i, mu in enumerate(MUS):
        assert post.neg_log_posterior(mu) - base == pytest.approx(_phi(mu) - _phi(MUS[0]),
                                                                  rel=1e-12)
        assert lz[i] - lz[0] == pytest.approx(-(_phi(mu) - _phi(MUS[0])) + _log_jac(z[i])
                                              - _log_jac(z[0]), rel=1e-10)
        w = post.transform.to_w(mu)
        assert post.objective(w) == pytest.approx(post.neg_log_posterior(mu), rel=1e-13)
    pred = post.predict(MUS)
    assert np.allclose(post.objective_from_prediction(MUS, pred),
                       post.neg_log_posterior(MUS), rtol=1e-13)     # a batch: one per row
    bad = pred.copy()
    bad[1, 0] = np.nan
    f = post.objective_from_prediction(MUS, bad)
    assert f.dtype == np.float64 and f[1] == np.inf and np.isfinite(f[[0, 2]]).all()


def test_log_density_and_grad_against_finite_differences():
    post = _post("torch")
    z = post.transform.to_z(MUS)
    f, g = post.log_density_and_grad(z)
    assert np.allclose(f, post.log_density(z), rtol=1e-12)
    h = 1e-6
    for i in range(len(z)):
        for j in range(2):
            e = np.zeros(2)
            e[j] = h
            fd = (post.log_density(z[i] + e) - post.log_density(z[i] - e)) / (2 * h)
            assert g[i, j] == pytest.approx(fd, rel=1e-6, abs=1e-6)
    f1, g1 = post.log_density_and_grad(z[0])                # one point: a batch of one
    assert f1.shape == (1,) and g1.shape == (1, 2) and np.allclose(g1[0], g[0])
    with pytest.raises(InferenceError, match="^model 'model' has no torch version: no "
                                             "gradient of the log-density$"):
        _post("fd").log_density_and_grad(z)


def test_failures_give_minus_inf_and_a_zero_gradient():
    def tfn(X):
        out = _g_torch(X)
        return torch.where(X[..., :1] > 3.0, torch.full_like(out, float("nan")), out)

    def fn(X):
        out = _g(X)
        out[np.atleast_2d(X)[:, 0] > 3.0] = np.nan
        return out

    post = Posterior(ForwardModel(fn, batched=True, torch_fn=tfn, names=NAMES), DATA, SPACE,
                     PRIOR)
    z = post.transform.to_z(MUS)
    f, g = post.log_density_and_grad(z)
    assert f[1] == -np.inf and np.all(g[1] == 0.0)
    assert np.isfinite(f[[0, 2]]).all() and np.all(g[[0, 2]] != 0.0)
    assert post.log_density(z)[1] == -np.inf
    # a point with a finite density but an infinite gradient spoils only itself
    free = ParameterSpace((Parameter("q", -INF, INF),))
    sq = Posterior(ForwardModel(lambda x: np.sqrt(np.abs(x - 2.0)), batched=True,
                                torch_fn=lambda t: torch.sqrt(t - 2.0)),
                   Observations(("o",), [0.0], 1.0), free)
    f, g = sq.log_density_and_grad(np.array([[2.0], [3.0]]))
    assert f[0] == -np.inf and g[0, 0] == 0.0
    assert f[1] == pytest.approx(-0.5) and g[1, 0] == pytest.approx(-0.5)
    w = post.transform.to_w(MUS[1])
    fi, gi = Posterior(ForwardModel(fn, batched=True, names=NAMES), DATA,
                       ParameterSpace((Parameter("a", -INF, INF), Parameter("k", -INF, INF))),
                       PRIOR).objective_and_grad([4, 1])    # integer w: a float gradient
    assert fi == np.inf and gi.dtype == np.float64
    for p in (post, Posterior(ForwardModel(fn, batched=True, names=NAMES), DATA, SPACE,
                              PRIOR)):
        fw, gw = p.objective_and_grad(w)
        assert fw == np.inf and gw.shape == (2,) and np.all(gw == 0.0)


def test_three_gradient_paths_agree_and_use_their_model():
    pt, pj = _post("torch"), _post("jac")
    pf = _post("fd", fd_scheme="central")
    for mu in MUS:
        w = pt.transform.to_w(mu)
        ft, gt = pt.objective_and_grad(w)
        fj, gj = pj.objective_and_grad(w)
        ff, gf = pf.objective_and_grad(w)
        assert ft == pytest.approx(_phi(mu), rel=1e-12)
        assert fj == pytest.approx(ft, rel=1e-12) and ff == pytest.approx(ft, rel=1e-12)
        assert np.allclose(gj, gt, rtol=1e-10) and np.allclose(gf, gt, rtol=1e-6)
        Jw = np.vstack([A, [np.cos(mu[0]), 0.0]])[[2, 0, 1]] * pt.transform.dmu_dw(w)
        for p, tol in ((pt, 1e-12), (pj, 1e-12), (pf, 1e-6)):
            assert np.allclose(p.jacobian_w(w), Jw, rtol=tol, atol=tol)
            assert np.allclose(p.jacobian(mu), A[[2, 0, 1]], rtol=tol, atol=tol)
        y, J = pj.predict_and_jacobian_w(w)
        assert np.allclose(y, (mu @ A.T)[[2, 0, 1]]) and np.allclose(J, Jw, rtol=1e-12)
        assert np.allclose(pt.predict_torch(torch.tensor(mu)).numpy(), y, rtol=1e-12)
    # a torch model differentiates integer inputs as floats
    assert np.allclose(pt.jacobian([2, 1]), A[[2, 0, 1]], rtol=1e-12)
    fi, gi = pt.objective_and_grad([0, 1])
    assert np.allclose(gi, pt.objective_and_grad(np.array([0.0, 1.0]))[1])
    # the jac_fn path asks the model once per gradient, the FD path once (a batch) + f(w)
    n = pj.model.n_evals
    pj.objective_and_grad(np.array([0.3, 0.4]))
    assert pj.model.n_evals == n + 1


def test_finite_differences_honour_the_posterior_settings():
    pts = []

    def rec(X):
        pts.append(np.atleast_2d(X).copy())
        return _g(X)

    post = Posterior(ForwardModel(rec, batched=True, names=NAMES), DATA, SPACE, PRIOR,
                     fd_scheme="forward", fd_step=1e-3)
    w = np.array([0.25, 1.0])                              # k on its upper bound
    f, g = post.objective_and_grad(w)
    P = post.transform.to_w(np.vstack(pts))
    assert len(P) == 3                                     # f(w), then P forward points
    assert np.allclose(P[0], w) and np.allclose(P[1], w + [1e-3, 0], atol=1e-12)
    assert np.allclose(P[2], w - [0, 1e-3], atol=1e-12)     # backward at the bound
    exact = _post("torch").objective_and_grad(w)[1]
    assert np.allclose(g, exact, rtol=1e-2)
    assert f == pytest.approx(_phi(post.transform.from_w(w)), rel=1e-12)
    # with_model and with_data keep the prior and the finite-difference settings
    for other in (post.with_model(ForwardModel(_g, batched=True, names=NAMES)),
                  post.with_data(DATA)):
        assert other.fd_scheme == "forward" and other.fd_step == 1e-3
        assert other.neg_log_posterior(MUS[0]) == pytest.approx(
            post.neg_log_posterior(MUS[0]), rel=1e-13)
    d2 = Observations(("y0",), [1.0], [0.5])
    assert post.with_data(d2).data is d2 and post.with_data(d2).predict(MUS[0]).shape == (1,)


def test_a_corrected_model_in_the_objective():
    """Φ with G(μ(w)) + d + E (w − w_c): torch, jac_fn and FD paths against the formula."""
    corr = Correction(offset=np.array([0.1, -0.2, 0.3]), slope=np.array([[1.0, 0.5],
                                                                         [0.0, 2.0],
                                                                         [-1.0, 0.0]]),
                      center=np.array([0.5, 0.5]))
    w = np.array([0.3, 0.7])
    assert np.allclose(corr(w), corr.offset + corr.slope @ (w - corr.center))
    assert np.allclose(corr.torch(torch.tensor(w)).numpy(), corr(w), rtol=1e-15)
    t32 = corr.torch(torch.tensor(w, dtype=torch.float32))      # in the dtype of w
    assert t32.dtype == torch.float32 and np.allclose(t32.numpy(), corr(w), rtol=1e-6)
    pt, pj, pf = _post("torch"), _post("jac"), _post("fd")
    mu = pt.transform.from_w(w)
    r = ((mu @ A.T)[[2, 0, 1]] + corr(w) - DATA.values) / DATA.sigma
    d = np.array([mu[0], np.log(mu[1])]) - PRIOR.mean
    phi = 0.5 * r @ r + 0.5 * d @ PREC @ d
    ft, gt = pt.objective_and_grad(w, corr)
    assert ft == pytest.approx(phi, rel=1e-12)
    for p, tol in ((pj, 1e-10), (pf, 1e-6)):
        f, g = p.objective_and_grad(w, corr)
        assert f == pytest.approx(phi, rel=1e-12) and np.allclose(g, gt, rtol=tol)
    h = 1e-6
    fd = [(pt.objective_and_grad(w + e, corr)[0] - pt.objective_and_grad(w - e, corr)[0])
          / (2 * h) for e in np.eye(2) * h]
    assert np.allclose(gt, fd, rtol=1e-6)


def test_priors_and_names():
    u = Posterior(ForwardModel(_g, batched=True, names=NAMES), DATA, SPACE, "uniform")
    assert isinstance(u.prior, UniformPrior) and u.prior.transform is u.transform
    assert isinstance(Posterior(u.model, DATA, SPACE).prior, UniformPrior)
    with pytest.raises(InferenceError, match="^unknown prior 'gauss'; give 'uniform' or a "
                                             "GaussianPrior$"):
        Posterior(u.model, DATA, SPACE, "gauss")
    g = Posterior(u.model, DATA, SPACE, GaussianPrior([3.0, 0.0], [4.0, 4.0]))
    draws = g.prior.sample(50, np.random.default_rng(0))    # truncated to the box: bound
    assert np.all(SPACE.to_unit(np.array([draws[:, 0], np.exp(draws[:, 1])]).T) >= 0)
    assert g.describe() == {"parameters": SPACE.to_dict(), "model": "model",
                            "observations": ["y2", "y0", "y1"],
                            "prior": g.prior.describe()}
    assert g.dim == 2 and g.names == ["a", "k"]
    # Fractions are numbers too
    assert u.objective_from_prediction(MUS[0], [Fraction(1), Fraction(2), Fraction(3)]) \
        == pytest.approx(u.objective_from_prediction(MUS[0], [1.0, 2.0, 3.0]))
