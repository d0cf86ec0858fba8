"""The PINN baseline (hybrid.baselines.pinn): residual operator, constraints, training."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hybrid.baselines.pinn import (
    PINN,
    SEED,
    PINNConfig,
    PINNError,
    evaluation_grid,
    exact_solution,
    grid_points,
    heat_residual,
    initial_condition,
    pinn_error,
    predict_field,
    relative_l2_error,
    train_pinn,
    tuned_config,
)

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _points(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(n, generator=g, dtype=D) - 1, torch.rand(n, generator=g, dtype=D)


def test_residual_of_the_exact_solution_vanishes_and_a_wrong_kappa_does_not():
    x, t = _points()

    def exact(x, t, k):          # κ = 0.01 baked in, as a "network" of (x, t, κ)
        return exact_solution(x, t, 0.01)

    r = heat_residual(exact, x, t, 0.01)
    assert r.shape == x.shape and float(r.detach().abs().max()) < 1e-15
    # u_t = −κπ²u, u_xx = −π²u, so u_t − κ' u_xx = (κ' − κ) π² u
    r2 = heat_residual(exact, x, t, 0.03)
    expected = (0.03 - 0.01) * math.pi**2 * exact_solution(x, t, 0.01)
    torch.testing.assert_close(r2, expected, rtol=1e-12, atol=1e-15)


def test_residual_of_a_polynomial_tells_x_from_t():
    # u = x³t²: u_t − κ u_xx = 2x³t − 6κ x t² (swapping x and t, or dropping κ, breaks it)
    x, t = _points(seed=1)
    k = torch.linspace(0.005, 0.05, x.numel(), dtype=D)
    r = heat_residual(lambda x, t, k: x**3 * t**2, x, t, k)
    torch.testing.assert_close(r, 2 * x**3 * t - 6 * k * x * t**2, rtol=1e-12, atol=1e-14)
    # a function of x only: u_t = 0 (an unused input gives zeros, not None)
    r = heat_residual(lambda x, t, k: x**4, x, t, 0.5)
    torch.testing.assert_close(r, -0.5 * 12 * x**2)


def test_residual_is_differentiable_in_the_weights():
    model = PINN(replace(SEED, dtype="float64")).double()
    x, t = _points(50)
    loss = heat_residual(model, x, t, 0.01).pow(2).mean()
    loss.backward()
    *weights, last_bias = model.parameters()      # r = u_t − κu_xx does not see a constant
    assert last_bias.grad is None
    assert all(p.grad is not None and float(p.grad.abs().max()) > 0 for p in weights)


@pytest.mark.parametrize("parametric", [False, True])
def test_hard_constraint_satisfies_initial_and_boundary_conditions(parametric):
    torch.manual_seed(3)
    model = PINN(replace(SEED, hard_constraint=True, parametric=parametric)).double()
    with torch.no_grad():                               # weights far from zero
        for p in model.parameters():
            p.normal_(0.0, 2.0)
    x, t = _points(300, seed=2)
    k = torch.full_like(x, 0.02) if parametric else None
    with torch.no_grad():
        u0 = model(x, torch.zeros_like(x), k)
        assert torch.equal(u0, initial_condition(x))
        for side in (-1.0, 1.0):
            ub = model(torch.full_like(t, side), t, k)
            assert float(ub.abs().max()) < 1e-15          # sin(±π) in floating point
        assert float((model(x, t, k) - initial_condition(x)).abs().max()) > 1e-2  # not trivial


def test_parametric_network_needs_kappa_and_scales_it_to_the_unit_interval():
    cfg = replace(SEED, parametric=True)
    model = PINN(cfg)
    with pytest.raises(PINNError, match="pass kappa"):
        model(torch.zeros(3), torch.zeros(3))
    k = torch.tensor(cfg.kappa_range)
    s = (torch.log(k) - model.log_lo) / (model.log_hi - model.log_lo)
    torch.testing.assert_close(2 * s - 1, torch.tensor([-1.0, 1.0]))
    p = grid_points(cfg, torch.Generator().manual_seed(0))
    lo, hi = cfg.kappa_range
    assert float(p.k_r.min()) >= lo and float(p.k_r.max()) <= hi
    assert p.x_r.numel() == cfg.n_x * cfg.n_t and float(p.t_r.min()) == 0.0


def test_seed_grid_has_its_initial_row_and_boundary_columns():
    p = grid_points(SEED, torch.Generator().manual_seed(0))
    assert p.x_r.numel() == 100 * 100 and p.x_0.numel() == 100 and p.t_b.numel() == 200
    assert float(p.x_0.min()) == -1.0 and float(p.x_0.max()) == 1.0
    assert torch.all(p.k_r == 0.01)


@pytest.mark.parametrize("bad, match", [(dict(dtype="float16"), "dtype"),
                                        (dict(width=0), "width"),
                                        (dict(n_x=1), "grid"),
                                        (dict(kappa_range=(0.1, 0.01)), "kappa range"),
                                        (dict(device="tpu"), "device")])
def test_bad_configs_are_refused(bad, match):
    with pytest.raises(PINNError, match=match):
        train_pinn(replace(SEED, **bad, adam_epochs=1))


SHORT = PINNConfig(width=10, depth=2, hard_constraint=True, adam_epochs=100, adam_lr=1e-2,
                   lbfgs_iterations=60, n_x=16, n_t=16, dtype="float64", device="cpu",
                   log_every=0)


def test_a_short_tuned_run_reduces_the_loss_and_the_error():
    x, t = evaluation_grid(101, 21)
    trivial = relative_l2_error(np.broadcast_to(initial_condition(x), (t.size, x.size)),
                                x, t, 0.01)                 # u = u(x, 0): ignores the decay
    torch.manual_seed(SHORT.seed)
    before = pinn_error(PINN(SHORT).double(), grid=(x, t))
    res = train_pinn(SHORT)
    after = pinn_error(res, grid=(x, t))
    assert res.final_loss < 1e-3 * res.initial_loss
    # the untrained network is off by far more than the decay; the trained one resolves it
    assert trivial > 0.03 and before > trivial
    assert after < 0.05 * trivial, (after, trivial)


def test_a_short_seed_style_run_fits_the_initial_and_boundary_data():
    cfg = replace(SEED, n_x=20, n_t=20, adam_epochs=300, adam_lr=1e-2, device="cpu",
                  log_every=50)
    res = train_pinn(cfg)
    assert res.final_loss < 0.05 * res.initial_loss
    assert set(res.final_terms) == {"residual", "initial", "boundary"}
    assert [h["step"] for h in res.history][:2] == [0, 50]
    assert pinn_error(res, grid=evaluation_grid(101, 21)) < 0.3


def test_parametric_run_answers_for_any_kappa_and_beats_its_start():
    cfg = replace(SHORT, parametric=True, adam_epochs=60, lbfgs_iterations=40)
    torch.manual_seed(cfg.seed)
    grid = evaluation_grid(101, 21)
    before = [pinn_error(PINN(cfg).double(), k, grid) for k in (0.005, 0.05)]
    res = train_pinn(cfg)
    after = [pinn_error(res, k, grid) for k in (0.005, 0.05)]
    assert all(a < 0.2 * b for a, b in zip(after, before, strict=True)), (before, after)
    with pytest.raises(PINNError, match="pass kappa"):
        predict_field(res.model, *grid)


def test_seeded_runs_reproduce_and_seeds_differ():
    cfg = replace(SHORT, adam_epochs=20, lbfgs_iterations=10, resample=True)
    a, b = train_pinn(cfg), train_pinn(cfg)
    c = train_pinn(replace(cfg, seed=1))
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.final_loss == b.final_loss
    assert not torch.equal(next(a.model.parameters()), next(c.model.parameters()))


def test_tuned_config_is_the_seed_network_with_other_training():
    cfg = tuned_config()
    assert (cfg.width, cfg.depth) == (SEED.width, SEED.depth)
    assert cfg.hard_constraint and cfg.lbfgs_iterations > 0 and not cfg.parametric
    assert tuned_config(True).parametric and tuned_config(adam_epochs=5).adam_epochs == 5
    assert (SEED.width, SEED.depth, SEED.adam_lr, SEED.adam_epochs, SEED.n_x, SEED.n_t,
            SEED.weights) == (20, 2, 1e-3, 1000, 100, 100, (1.0, 1.0, 1.0))
