"""Data-driven transient surrogates on problems with known latent dynamics (no dolfinx).

Latent linear dynamics dc/dt = −K(μ) c with K(μ) = K0 + μ0 K1 + μ1 K2 symmetric positive
definite (eigenvalues in ≈ [0.7, 8]) and c(0) = c0(μ); the exact trajectories are
c(t) = exp(−K(μ)t) c0(μ) (scipy's expm).

- The neural ODE (hybrid/surrogate/latent.py) learns g(c, μ) = −K(μ)c: its integrated
  held-out trajectories and its right-hand side along them are compared with the exact ones
  (trajectories: ``"linear"`` structure within 1e-2, measured 7.6e-3, the general ``"mlp"``
  one within 2e-2, measured 9.7e-3; right-hand sides within 10× those, measured 8.5e-3 and
  1.7e-2; 24 training trajectories, 20 steps, a few hundred iterations to stay fast);
  its numpy RK4 reproduces torchdiffeq's to round-off.
- POD-NN in (μ, t) (hybrid/surrogate/spacetime_nn.py) reaches a stated mean relative
  space–time error on held-out trajectories, and its batched trajectory equals per-time
  predictions (mean < 1e-3, max < 5e-3; measured 2.1e-4, 1.2e-3).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import scipy.linalg as sla
import torch

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.latent import LatentConfig, NumpyLatentODE, integrate, train_latent_ode
from hybrid.surrogate.spacetime import time_weights
from hybrid.surrogate.spacetime_nn import time_feature, train_spacetime_network
from hybrid.surrogate.training import TrainingConfig

LOWER, UPPER = np.array([0.0, 0.0]), np.array([1.0, 1.0])
TIMES = np.linspace(0.0, 1.0, 21)


def _spd(rng, r, lo, hi):
    Q = np.linalg.qr(rng.standard_normal((r, r)))[0]
    return Q @ np.diag(rng.uniform(lo, hi, r)) @ Q.T


_rng = np.random.default_rng(5)
K0, K1, K2 = _spd(_rng, 3, 0.7, 3.0), _spd(_rng, 3, 0.0, 2.5), _spd(_rng, 3, 0.0, 2.5)
V0, V1 = _rng.standard_normal(3), _rng.standard_normal(3)


def K(mu):
    return K0 + mu[0] * K1 + mu[1] * K2


def trajectories(mus):
    """Exact c(t_n) (S, n_t, 3)."""
    out = []
    for mu in mus:
        c0 = V0 + (0.5 + mu[1]) * V1
        out.append(np.array([sla.expm(-K(mu) * t) @ c0 for t in TIMES]))
    return np.array(out)


def rel_st(C, D):
    w = time_weights(TIMES)
    return np.sqrt(np.einsum("n,snr->s", w, (C - D) ** 2) / np.einsum("n,snr->s", w, C ** 2))


@cache
def sets():
    rng = np.random.default_rng(0)
    mu_tr, mu_te = rng.random((24, 2)), rng.random((8, 2))
    return mu_tr, trajectories(mu_tr), mu_te, trajectories(mu_te)


@cache
def trained(structure: str):
    mu_tr, C_tr, _, _ = sets()
    cfg = LatentConfig(width=24, depth=2, structure=structure, adam_epochs=150,
                       adam_lr=5e-3, lbfgs_iterations=120, seed=1, threads=1)
    return train_latent_ode(mu_tr, TIMES, C_tr, LOWER, UPPER, cfg)


@pytest.mark.parametrize("structure,tol", [("linear", 1e-2), ("mlp", 2e-2)])
def test_neural_ode_learns_linear_latent_dynamics(structure, tol):
    res = trained(structure)
    _, _, mu_te, C_te = sets()
    fast = NumpyLatentODE(res.model)
    pred = np.array([fast.trajectory(m, c[0], TIMES) for m, c in zip(mu_te, C_te, strict=True)])
    err = rel_st(C_te, pred)
    assert err.max() < tol, err
    # the right-hand side itself along the held-out trajectories
    with torch.no_grad():
        res.model.set_mu(torch.as_tensor(np.repeat(mu_te, TIMES.size, axis=0)))
        c = torch.as_tensor(C_te.reshape(-1, 3))
        g = res.model(torch.zeros(()), c).numpy()
    g_true = np.concatenate([-(K(m) @ c_.T).T for m, c_ in zip(mu_te, C_te, strict=True)])
    rel = np.linalg.norm(g - g_true) / np.linalg.norm(g_true)
    assert rel < 10 * tol, rel


def test_numpy_rk4_is_torchdiffeq():
    res = trained("mlp")
    _, _, mu_te, C_te = sets()
    fast = NumpyLatentODE(res.model)
    with torch.no_grad():
        ref = integrate(res.model, torch.as_tensor(mu_te), torch.as_tensor(C_te[:, 0]),
                        torch.as_tensor(TIMES)).numpy().transpose(1, 0, 2)
    mine = np.array([fast.trajectory(m, c[0], TIMES) for m, c in zip(mu_te, C_te, strict=True)])
    assert np.max(np.abs(mine - ref)) < 1e-12 * np.max(np.abs(ref))
    lin = trained("linear")
    with torch.no_grad():
        ref = integrate(lin.model, torch.as_tensor(mu_te[:2]), torch.as_tensor(C_te[:2, 0]),
                        torch.as_tensor(TIMES), substeps=2).numpy().transpose(1, 0, 2)
    mine = np.array([NumpyLatentODE(lin.model).trajectory(m, c[0], TIMES, substeps=2)
                     for m, c in zip(mu_te[:2], C_te[:2], strict=True)])
    assert np.max(np.abs(mine - ref)) < 1e-12 * np.max(np.abs(ref))


def test_latent_ode_refuses_bad_input():
    mu_tr, C_tr, _, _ = sets()
    with pytest.raises(SurrogateError, match="uniform time grid"):
        train_latent_ode(mu_tr, TIMES ** 2, C_tr, LOWER, UPPER)
    with pytest.raises(SurrogateError, match="unknown latent structure"):
        train_latent_ode(mu_tr, TIMES, C_tr, LOWER, UPPER, LatentConfig(structure="gru"))


def test_spacetime_pod_nn_reaches_its_accuracy_on_held_out_trajectories():
    """POD-NN(μ, t): mean relative space–time error < 1e-3 (max < 5e-3) on held-out μ."""
    rng = np.random.default_rng(3)
    mu_tr, mu_te = rng.random((60, 2)), rng.random((10, 2))
    C_tr, C_te = trajectories(mu_tr), trajectories(mu_te)
    cfg = TrainingConfig(width=32, depth=2, adam_epochs=200, lbfgs_iterations=600,
                         device="cpu", threads=1, seed=0, eval_every=50, patience=6)
    st, res = train_spacetime_network(mu_tr, TIMES, C_tr, LOWER, UPPER, cfg, validation=6)
    pred = np.array([st.trajectory(m, c[0]) for m, c in zip(mu_te, C_te, strict=True)])
    err = rel_st(C_te, pred)
    assert err.mean() < 1e-3 and err.max() < 5e-3, err
    one = st.predict(mu_te[0], TIMES[[0, 7, 20]])
    assert np.allclose(one[1:], pred[0][[7, 20]], rtol=1e-12, atol=1e-14)
    assert np.allclose(one[0], st.trajectory(mu_te[0])[0], rtol=1e-12, atol=1e-14)


def test_time_feature():
    tau = time_feature(np.array([0.0, 0.25, 1.0]), 0.0, 1.0)
    assert np.allclose(tau, [-1.0, 0.0, 1.0])
    assert np.allclose(time_feature(np.array([0.5]), 0.0, 1.0, "linear"), [0.0])
    with pytest.raises(SurrogateError, match="must lie in"):
        time_feature(np.array([1.5]), 0.0, 1.0)
