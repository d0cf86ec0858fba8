"""Boundary-flux observations on the surrogate side (numpy + torch; synthetic stores).

A flux y = g_Γᵀ f − Σ_q μ_q g_Γᵀ A_q u is affine in μ; the store holds it as B_q = −g_Γᵀ A_q,
b = g_Γᵀ f and the surrogate evaluates it as L_r c + Σ_q θ_q B_r,q c + ϑ b from reduced data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid.core.store import SnapshotStore
from hybrid.surrogate import Surrogate, SurrogateError
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.surrogate.training import TrainingConfig
from tests import conftest_surrogate as cs

FLUXES = {"left": ["x0"], "right": ["x1"], "bottom": ["y0"], "top": ["y1"],
          "lower_left": ["x0", "y0"]}


@pytest.fixture(scope="module")
def fem():
    return cs.BlockFEM(cells=16, blocks=2)


@pytest.fixture(scope="module")
def flux_store(tmp_path_factory, fem):
    return cs.make_store(tmp_path_factory.mktemp("flux") / "store", fem,
                         cs.space(2).sample(40, "sobol", 11), fluxes=FLUXES)


@pytest.fixture(scope="module")
def galerkin(flux_store):
    return build_surrogate(flux_store, BuildOptions(kind="galerkin"))[0]


@pytest.fixture(scope="module")
def held_out(fem):
    return cs.held_out_set2(fem)


def fem_fluxes(fem, U, mu):
    return np.stack([fem.flux(U, mu, sides) for sides in FLUXES.values()], axis=-1)


def test_store_holds_the_affine_flux_terms(flux_store, fem, held_out):
    store = SnapshotStore(flux_store)
    assert store.observation_names == ["twice_mean", *FLUXES]
    st = store.static
    assert st.observation_affine.shape == (6 * 4, fem.n_dofs)
    assert st.observation_affine_f.shape == (6, 1)
    mu, U = held_out
    y = st.observe(U, mu, np.ones((len(mu), 1)))
    np.testing.assert_allclose(y[:, 0], 2 * U @ fem.qoi[0], rtol=1e-13)
    np.testing.assert_allclose(y[:, 1:], fem_fluxes(fem, U, mu), rtol=0, atol=1e-14)
    # conservative: the four sides carry ∫ s = 1; sides add up
    np.testing.assert_allclose(y[:, 1:5].sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(y[:, 5], y[:, 1] + y[:, 3], rtol=0, atol=1e-14)
    rows, offset = st.observation_operator(mu[0], np.ones(1))
    np.testing.assert_allclose(rows @ U[0] + offset, y[0], rtol=0, atol=1e-14)
    with pytest.raises(Exception, match="pass theta_a"):
        st.observe(U[0])


def test_galerkin_fluxes_match_the_fem(galerkin, fem, held_out):
    s = galerkin
    assert s.observation_names == ["twice_mean", *FLUXES]
    assert s.observation_affine.shape == (6, 4, s.n_modes)
    mu, U = held_out
    y = s.observe(mu)
    assert y.shape == (len(mu), 6) and s.observe(mu[0]).shape == (6,)
    np.testing.assert_allclose(s.observe(mu[3]), y[3], rtol=0, atol=1e-14)
    # exactly the FEM flux of the surrogate's own field (the reduction is exact) ...
    F = s.field(mu)
    np.testing.assert_allclose(y[:, 1:], fem_fluxes(fem, F, mu), rtol=0, atol=1e-13)
    # ... and the FEM flux of the FEM solution to the Galerkin accuracy (field errors ~1e-5)
    err = np.abs(y[:, 1:] - fem_fluxes(fem, U, mu)).max()
    assert err < 2e-5, err
    # without the μ-dependent terms the flux rows would be zero: the affine part matters
    assert np.all(np.abs(y[:, 1:5]) > 0.05)


def test_torch_fluxes_are_differentiable(galerkin):
    s = galerkin
    mu = cs.space(2).sample(3, "random", 5)
    t = torch.tensor(mu, requires_grad=True)
    y = s.observe(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    np.testing.assert_allclose(y.detach().numpy(), s.observe(mu), rtol=0, atol=1e-13)
    y[:, 1].sum().backward()                            # d(left flux)/dμ
    h = 1e-6
    fd = np.array([[(s.observe(m + h * e)[1] - s.observe(m - h * e)[1]) / (2 * h)
                    for e in np.eye(4)] for m in mu])
    np.testing.assert_allclose(t.grad.numpy(), fd, rtol=1e-5, atol=1e-9)
    assert np.all(t.grad.numpy()[:, [0, 2]] > 0)       # conductive left blocks: more out left
    assert s.observe(torch.tensor(mu[0], dtype=torch.float32)).dtype == torch.float32


def test_podnn_fluxes_and_artifact_round_trip(flux_store, fem, held_out, tmp_path):
    cfg = TrainingConfig(width=16, depth=2, adam_epochs=50, lbfgs_iterations=100,
                         collocation=128, eval_every=25, threads=1)
    s, _ = build_surrogate(flux_store, BuildOptions(training=cfg))
    mu, _ = held_out
    y = s.observe(mu)
    np.testing.assert_allclose(y[:, 1:], fem_fluxes(fem, s.field(mu), mu), rtol=0, atol=1e-13)
    np.testing.assert_allclose(s.observe(mu[0]), y[0], rtol=0, atol=1e-13)
    t = torch.tensor(mu[:2], requires_grad=True)
    s.observe(t)[:, 2].sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    back = Surrogate.load(s.save(tmp_path / "sur"))
    assert np.array_equal(back.observation_affine, s.observation_affine)
    assert np.array_equal(back.observation_affine_f, s.observation_affine_f)
    assert np.array_equal(back.observe(mu), y)


def test_stores_and_surrogates_without_fluxes_are_unchanged(fem, tmp_path):
    store = cs.make_store(tmp_path / "plain", fem, cs.space(2).sample(12, "sobol", 2))
    st = SnapshotStore(store).static
    assert st.observation_affine is None and st.observation_affine_f is None
    s, _ = build_surrogate(store, BuildOptions(kind="galerkin"))
    assert s.observation_affine is None and "observations_a" not in s._arrays["reduced"]
    back = Surrogate.load(s.save(tmp_path / "sur"))
    mu = cs.space(2).sample(2, "random", 1)
    np.testing.assert_allclose(back.observe(mu), s.field(mu) @ st.observation_functionals.T,
                               rtol=1e-12)


def test_fluxes_need_an_affine_model(fem, tmp_path):
    store = cs.make_store(tmp_path / "na", fem, cs.space(2).sample(8, "sobol", 2),
                          affine=False, fluxes={"left": ["x0"]})
    with pytest.raises(SurrogateError, match="boundary fluxes.*affine decomposition"):
        build_surrogate(store, BuildOptions(training=TrainingConfig(adam_epochs=1)))
