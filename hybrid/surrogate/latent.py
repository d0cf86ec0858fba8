"""Latent dynamics: a neural ODE dc/dt = g(c, μ) on reduced coordinates (torchdiffeq).

The coordinates are the X-orthogonal projections c_s(t_n) = Φ X u_s(t_n) of FEM
trajectories onto a space–time POD basis (:mod:`hybrid.surrogate.spacetime`), and

    dc/dt = g(c, μ),   c(t0) = c0(μ)  (the projection of the initial state),

with g one of two networks (scaled inputs ĉ = (c − c̄)/σ_c, ξ = box scaling of μ, outputs
scaled by σ_g, the per-mode standard deviation of the finite-difference rates):

* ``"mlp"``: g = σ_g ⊙ MLP([ĉ, ξ]) — a general neural ODE;
* ``"linear"``: g = σ_g ⊙ (K(ξ) ĉ + b(ξ)) with [K, b] = MLP(ξ) — linear in c, the form
  of the Galerkin ROM (dc/dt = −M_r⁻¹A_r(μ)c + M_r⁻¹f_r(μ)) with its operator learned.

**Training** minimises the mean relative space–time error of the integrated trajectories,

    L = (1/S) Σ_s Σ_n w_n ‖c_θ,s(t_n) − c_s(t_n)‖² / Σ_n w_n ‖c_s(t_n)‖²

(trapezoidal w; for an X-orthonormal basis ‖c‖₂ = ‖Φᵀc‖_X), with the fixed-step
``rk4`` of torchdiffeq (its 3/8 rule) on the data grid, ``substeps`` steps per output
interval, all trajectories in one batch, Adam (cosine decay) then L-BFGS. Gradients by
**direct backpropagation** through the solver, not the adjoint: the latent state is
small (r ≤ ~30, batch ~100), so storing every stage of ~100–400 steps costs a few MB, and
backpropagation gives the exact gradient of the discrete loss, whereas the adjoint method
re-integrates the state backwards (twice the solves, and a gradient that is only as
accurate as that re-integration of a dissipative — backwards unstable — system).

**Online**, :class:`NumpyLatentODE` runs the same 3/8-rule RK4 in numpy with the scalings
folded into the weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.fastpath import input_scaling
from hybrid.surrogate.network import MLP
from hybrid.surrogate.spacetime import time_weights

STRUCTURES = ("mlp", "linear")


class LatentODE(nn.Module):
    """The right-hand side g(c, μ) (module docstring); ``set_mu`` before integrating."""

    def __init__(self, n_latent: int, n_params: int, *, width: int = 64, depth: int = 2,
                 structure: str = "mlp"):
        super().__init__()
        if structure not in STRUCTURES:
            raise SurrogateError(f"unknown latent structure {structure!r}; expected one of "
                                 f"{STRUCTURES}")
        r, P = n_latent, n_params
        self.structure = structure
        n_in, n_out = (r + P, r) if structure == "mlp" else (P, r * r + r)
        self.mlp = MLP(n_in, n_out, width, depth)
        for name, size in (("in_a", P), ("in_b", P), ("c_mean", r), ("c_scale", r),
                           ("g_scale", r)):
            self.register_buffer(name, torch.ones(size, dtype=torch.float64))
        self.config = {"n_latent": r, "n_params": P, "width": width, "depth": depth,
                       "structure": structure}
        self._xi: torch.Tensor | None = None
        self._Kb: tuple | None = None

    def set_scalings(self, lower, upper, c_mean, c_scale, g_scale) -> None:
        a, b = input_scaling(lower, upper, np.zeros(len(lower), dtype=bool))
        for name, v in (("in_a", a), ("in_b", b), ("c_mean", c_mean), ("c_scale", c_scale),
                        ("g_scale", g_scale)):
            getattr(self, name).copy_(torch.as_tensor(np.asarray(v, dtype=float)))

    def set_mu(self, mu: torch.Tensor) -> None:
        """Fix μ (B, P) for the next integration (precomputes K, b for ``"linear"``)."""
        self._xi = self.in_a * mu + self.in_b
        if self.structure == "linear":
            r = self.config["n_latent"]
            out = self.mlp(self._xi)
            self._Kb = (out[:, : r * r].reshape(-1, r, r), out[:, r * r:])

    def forward(self, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ch = (c - self.c_mean) / self.c_scale
        if self.structure == "mlp":
            g = self.mlp(torch.cat([ch, self._xi], dim=-1))
        else:
            K, b = self._Kb
            g = torch.einsum("bij,bj->bi", K, ch) + b
        return self.g_scale * g


@dataclass
class LatentConfig:
    """Settings of :func:`train_latent_ode`."""

    width: int = 64
    depth: int = 2
    structure: str = "mlp"
    substeps: int = 1
    adam_epochs: int = 1000
    adam_lr: float = 3e-3
    lbfgs_iterations: int = 200
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LatentResult:
    """A trained latent ODE, its loss history and wall time."""

    model: LatentODE
    history: list[float] = field(default_factory=list)
    wall_time: float = 0.0


def integrate(model: LatentODE, mu: torch.Tensor, c0: torch.Tensor, times: torch.Tensor,
              substeps: int = 1) -> torch.Tensor:
    """c(t_n) for every μ of the batch, (n_t, B, r), by torchdiffeq's fixed-step rk4."""
    from torchdiffeq import odeint

    model.set_mu(mu)
    dt = float(times[1] - times[0]) / substeps
    return odeint(model, c0, times, method="rk4", options={"step_size": dt})


def train_latent_ode(mu: np.ndarray, times: np.ndarray, C: np.ndarray, lower: np.ndarray,
                     upper: np.ndarray, cfg: LatentConfig | None = None) -> LatentResult:
    """Fit g to trajectories' coefficients C (S, n_t, r) at uniform ``times`` (docstring)."""
    cfg = cfg or LatentConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    C = np.asarray(C, dtype=float)
    times = np.asarray(times, dtype=float)
    S, nt, r = C.shape
    if mu.shape[0] != S or nt != times.size or nt < 2:
        raise SurrogateError(f"need coefficients (S={mu.shape[0]}, n_t={times.size}, r) with "
                             f"n_t >= 2, got {C.shape}")
    h = np.diff(times)
    if not np.allclose(h, h[0], rtol=1e-9):
        raise SurrogateError("the latent ODE is trained on a uniform time grid")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = LatentODE(r, mu.shape[1], width=cfg.width, depth=cfg.depth,
                      structure=cfg.structure).double()
    rates = np.diff(C, axis=1) / h[0]
    c_scale = C.reshape(-1, r).std(axis=0)
    g_scale = rates.reshape(-1, r).std(axis=0)
    c_scale = np.where(c_scale > 1e-12 * c_scale.max(), c_scale, 1.0)
    g_scale = np.where(g_scale > 1e-12 * g_scale.max(), g_scale, 1.0)
    model.set_scalings(lower, upper, C.reshape(-1, r).mean(axis=0), c_scale, g_scale)
    w = torch.as_tensor(time_weights(times))
    T = torch.as_tensor(times)
    Ct = torch.as_tensor(np.transpose(C, (1, 0, 2)).copy())          # (n_t, S, r)
    Mu = torch.as_tensor(mu)
    norm = torch.einsum("n,nsr->s", w, Ct ** 2)

    def loss_fn():
        pred = integrate(model, Mu, Ct[0], T, cfg.substeps)
        e = torch.einsum("n,nsr->s", w, (pred - Ct) ** 2) / norm
        return e.mean()

    hist: list[float] = []
    if cfg.adam_epochs:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.adam_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.adam_epochs,
                                                           eta_min=cfg.adam_lr * 1e-2)
        for _ in range(cfg.adam_epochs):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            opt.step()
            sched.step()
            hist.append(float(loss.detach()))
    if cfg.lbfgs_iterations:
        opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=cfg.lbfgs_iterations,
                                history_size=50, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-14, tolerance_change=1e-16)

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            hist.append(float(loss.detach()))
            return loss

        opt.step(closure)
    if hist and not math.isfinite(hist[-1]):
        raise SurrogateError("latent ODE training diverged (loss is not finite)")
    model.eval()
    return LatentResult(model, hist, time.perf_counter() - t0)


class NumpyLatentODE:
    """Numpy evaluation of a trained :class:`LatentODE`: the 3/8-rule RK4, no torch.

    Scalings are folded in: for ``"mlp"`` the first layer acts on [c, μ] directly and the
    last layer returns dc/dt; for ``"linear"`` K(μ), b(μ) are turned into dc/dt = Ĝ c + ĝ
    once per μ, and each stage is one matrix–vector product.
    """

    def __init__(self, model: LatentODE):
        st = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
        self.config = dict(model.config)
        r, P = self.config["n_latent"], self.config["n_params"]
        depth = self.config["depth"]
        Ws = [(st[f"mlp.layers.{i}.weight"].copy(), st[f"mlp.layers.{i}.bias"].copy())
              for i in range(depth + 1)]
        a, b = st["in_a"], st["in_b"]
        cm, cs, gs = st["c_mean"], st["c_scale"], st["g_scale"]
        self.r, self.P = r, P
        W0, b0 = Ws[0]
        if self.config["structure"] == "mlp":       # inputs [c, μ] → [ĉ, ξ]
            Wc, Wm = W0[:, :r] / cs, W0[:, r:] * a
            Ws[0] = (np.hstack([Wc, Wm]), b0 - Wc @ cm + W0[:, r:] @ b)
            WL, bL = Ws[-1]
            Ws[-1] = (gs[:, None] * WL, gs * bL)
        else:                                       # inputs μ → ξ
            Ws[0] = (W0 * a, b0 + W0 @ b)
        self.layers = [(np.ascontiguousarray(W), c) for W, c in Ws]
        self.c_mean, self.c_scale, self.g_scale = cm, cs, gs

    def _mlp(self, x: np.ndarray) -> np.ndarray:
        for W, c in self.layers[:-1]:
            x = np.tanh(W @ x + c)
        W, c = self.layers[-1]
        return W @ x + c

    def trajectory(self, mu: np.ndarray, c0: np.ndarray, times: np.ndarray,
                   substeps: int = 1) -> np.ndarray:
        """c(t_n), (n_t, r), from c(t0) = c0 on the uniform grid ``times``."""
        r = self.r
        nt = len(times)
        h = float(times[1] - times[0]) / substeps
        out = np.empty((nt, r))
        out[0] = c0
        c = np.array(c0, dtype=float)
        if self.config["structure"] == "linear":
            kb = self._mlp(np.asarray(mu, dtype=float))
            K = kb[: r * r].reshape(r, r)
            G = (self.g_scale / 1.0)[:, None] * K / self.c_scale[None, :]
            g0 = self.g_scale * (kb[r * r:] - K @ (self.c_mean / self.c_scale))

            def f(y):
                return G @ y + g0
        else:
            x = np.empty(r + self.P)
            x[r:] = mu

            def f(y):
                x[:r] = y
                return self._mlp(x)
        third = 1.0 / 3.0
        for n in range(1, nt):
            for _ in range(substeps):
                k1 = f(c)
                k2 = f(c + h * third * k1)
                k3 = f(c + h * (k2 - third * k1))
                k4 = f(c + h * (k1 - k2 + k3))
                c = c + (k1 + 3.0 * (k2 + k3) + k4) * (h * 0.125)
            out[n] = c
        return out
