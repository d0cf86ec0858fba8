r"""A physics-informed neural network (PINN) for the seed's heat equation: the baseline.

The problem (the seed's)::

    u_t = κ u_xx,   x ∈ [−1, 1], t ∈ [0, 1],   u(x, 0) = −sin(πx),   u(±1, t) = 0,

with the exact solution u(x, t; κ) = −sin(πx) exp(−κπ² t) (:func:`exact_solution`); the seed
uses κ = 0.01, the parametric family κ ∈ [0.005, 0.05].

**Network.** u_θ(x, t) — or u_θ(x, t, κ) for the parametric family — is an MLP with tanh
hidden layers on inputs scaled to [−1, 1]: x as it is, τ = 2t − 1 and, for κ,
s = 2 (log κ − log κ_min)/(log κ_max − log κ_min) − 1. Optionally the initial and boundary
conditions are built into the output (a hard constraint)::

    u_θ = −sin(πx) + t (1 − x²) N_θ(x, t[, κ]),

which satisfies u_θ(x, 0) = −sin(πx) and u_θ(±1, t) = 0 for every θ (up to round-off in
sin(±π)), so only the PDE residual is left to train.

**Loss.** With the residual r_θ = ∂_t u_θ − κ ∂_xx u_θ computed by automatic differentiation
(:func:`heat_residual`), the full-batch loss is::

    L(θ) = w_r (1/N_r) Σ_j r_θ(x_j, t_j)²
         + w_0 (1/N_0) Σ_i (u_θ(x_i, 0) + sin(πx_i))²
         + w_b (1/N_b) Σ_k u_θ(±1, t_k)²,

the last two terms dropped with the hard constraint. The seed's weights are equal,
w_r = w_0 = w_b = 1 (:data:`SEED`).

**Set-ups.** :data:`SEED` is the seed's own: two hidden layers of 20 tanh units, Adam with
learning rate 10⁻³ for 1000 full-batch epochs on the 100×100 grid of collocation points
(the residual on all of it; its t = 0 row for the initial and its x = ±1 columns for the
boundary term), float32, soft constraints. :func:`tuned_config` keeps the network and changes
the training: the hard constraint, float64, fresh uniform random collocation points every Adam
epoch (a cosine-decayed learning rate), then L-BFGS (strong Wolfe line search) on a fixed,
larger scrambled Sobol set. For the parametric family κ is a third input; the seed's grid
points each get a κ drawn log-uniformly (seeded), the tuned set-up samples κ with the points.

**Devices and determinism.** ``"auto"`` picks CUDA when torch sees it, else the CPU. Points
are drawn on the CPU from a seeded generator and the network is initialised after
``torch.manual_seed(seed)``, so on the CPU the same configuration and thread count give the
same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from hybrid.errors import HybridError

KAPPA = 0.01
KAPPA_RANGE = (0.005, 0.05)
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# a function (x, t, κ) ↦ u on tensors of shape (N,), differentiable in x and t
Field = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class PINNError(HybridError):
    """A PINN configuration or query is unusable (one-line message)."""


# ----------------------------------------------------------------------------- problem
def initial_condition(x):
    """u(x, 0) = −sin(πx) (numpy or torch)."""
    return -(torch.sin(math.pi * x) if isinstance(x, torch.Tensor) else np.sin(np.pi * x))


def exact_solution(x, t, kappa):
    """u(x, t; κ) = −sin(πx) exp(−κπ² t), broadcasting numpy or torch arrays."""
    if isinstance(x, torch.Tensor):
        return -torch.sin(math.pi * x) * torch.exp(-kappa * math.pi**2 * t)
    return -np.sin(np.pi * x) * np.exp(-np.asarray(kappa) * np.pi**2 * t)


def heat_residual(u: Field, x: torch.Tensor, t: torch.Tensor,
                  kappa: torch.Tensor | float) -> torch.Tensor:
    """The residual r = ∂_t u − κ ∂_xx u at the points (x_j, t_j), by automatic differentiation.

    ``u`` maps (x, t, κ) of shape (N,) to u of shape (N,), the j-th output depending on the
    j-th point only (then ∂(Σ_j u_j)/∂x_j = ∂u_j/∂x_j). The graph is kept (``create_graph``)
    so that the residual can be differentiated with respect to the network's weights.
    """
    x = x.detach().requires_grad_(True)
    t = t.detach().requires_grad_(True)
    k = torch.as_tensor(kappa, dtype=x.dtype, device=x.device)
    if k.ndim == 0:
        k = k.expand_as(x)
    out = u(x, t, k)
    u_t, u_x = torch.autograd.grad(out.sum(), (t, x), create_graph=True, allow_unused=True,
                                   materialize_grads=True)
    (u_xx,) = torch.autograd.grad(u_x.sum(), x, create_graph=True, allow_unused=True,
                                  materialize_grads=True)
    return u_t - k * u_xx


# ----------------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class PINNConfig:
    """Network and training settings; the defaults are the seed's set-up (:data:`SEED`).

    Attributes:
        width, depth: hidden units per layer, hidden layers (tanh).
        hard_constraint: build IC and BC into the output, u = −sin(πx) + t(1 − x²) N.
        adam_epochs, adam_lr, cosine: full-batch Adam epochs, learning rate, cosine decay.
        lbfgs_iterations, lbfgs_points: L-BFGS iterations after Adam, on this many Sobol
            collocation points (0: the Adam points).
        n_x, n_t: the collocation grid (n_x × n_t points; IC on its t = 0 row, BC on its
            x = ±1 columns), or with ``resample`` the number n_x·n_t of fresh uniform random
            points per epoch (and n_x IC, n_t BC points per side).
        weights: (w_r, w_0, w_b) of the residual, initial and boundary terms.
        parametric: κ is a network input, κ ∈ ``kappa_range`` (log scaling); else κ = ``kappa``.
        dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the initial weights and every point drawn.
        device: ``"auto"`` (CUDA if torch sees it, else CPU), ``"cpu"``, ``"cuda[:N]"``.
        log_every: record the loss every this many Adam epochs / L-BFGS evaluations (0: never).
    """

    width: int = 20
    depth: int = 2
    hard_constraint: bool = False
    adam_epochs: int = 1000
    adam_lr: float = 1e-3
    cosine: bool = False
    lbfgs_iterations: int = 0
    lbfgs_points: int = 0
    n_x: int = 100
    n_t: int = 100
    resample: bool = False
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    parametric: bool = False
    kappa: float = KAPPA
    kappa_range: tuple[float, float] = KAPPA_RANGE
    dtype: str = "float32"
    seed: int = 0
    device: str = "auto"
    log_every: int = 100

    def check(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise PINNError(f"width and depth must be >= 1, got {self.width}, {self.depth}")
        if self.adam_epochs < 0 or self.lbfgs_iterations < 0:
            raise PINNError("epochs and L-BFGS iterations must be >= 0")
        if self.n_x < 2 or self.n_t < 2:
            raise PINNError(f"the collocation grid needs n_x, n_t >= 2, got {self.n_x}, "
                            f"{self.n_t}")
        if self.dtype not in DTYPES:
            raise PINNError(f"unknown dtype {self.dtype!r}; expected one of {tuple(DTYPES)}")
        lo, hi = self.kappa_range
        if not 0 < lo < hi:
            raise PINNError(f"kappa range must satisfy 0 < lo < hi, got {self.kappa_range}")
        if not self.parametric and self.kappa <= 0:
            raise PINNError(f"kappa must be > 0, got {self.kappa}")

    def to_dict(self) -> dict:
        return asdict(self)


SEED = PINNConfig()


def tuned_config(parametric: bool = False, **changes) -> PINNConfig:
    """The tuned set-up (``changes`` override its fields).

    The seed's network with the hard constraint, float64, 64·64 fresh random points per epoch
    for a cosine-decayed Adam (2000 epochs, lr 3·10⁻³), then 1000 L-BFGS iterations on 4096
    (fixed κ) or 8192 (parametric) Sobol points.
    """
    base = PINNConfig(hard_constraint=True, dtype="float64", adam_epochs=2000, adam_lr=3e-3,
                      cosine=True, resample=True, n_x=64, n_t=64, lbfgs_iterations=1000,
                      lbfgs_points=8192 if parametric else 4096, parametric=parametric)
    return replace(base, **changes)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA if torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PINNError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PINNError(f"device {device!r} requested but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise PINNError(f"device {device!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


# ----------------------------------------------------------------------------- network
class PINN(nn.Module):
    """u_θ(x, t[, κ]): input scaling, a tanh MLP, and the optional hard-constraint transform."""

    def __init__(self, cfg: PINNConfig):
        super().__init__()
        self.parametric = cfg.parametric
        self.hard_constraint = cfg.hard_constraint
        self.kappa = cfg.kappa
        self.log_lo, self.log_hi = (math.log(k) for k in cfg.kappa_range)
        sizes = [3 if cfg.parametric else 2] + [cfg.width] * cfg.depth + [1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                      strict=True))

    def network(self, x: torch.Tensor, t: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
        """N_θ on the scaled inputs (x, 2t − 1[, s(κ)]), shape (N,)."""
        cols = [x, 2.0 * t - 1.0]
        if self.parametric:
            s = (torch.log(kappa) - self.log_lo) / (self.log_hi - self.log_lo)
            cols.append(2.0 * s - 1.0)
        h = torch.stack(cols, dim=-1)
        for layer in self.layers[:-1]:
            h = torch.tanh(layer(h))
        return self.layers[-1](h).squeeze(-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                kappa: torch.Tensor | None = None) -> torch.Tensor:
        """u_θ at the points (x_j, t_j[, κ_j]), shape (N,)."""
        if kappa is None:
            if self.parametric:
                raise PINNError("this PINN takes κ as an input: pass kappa")
            kappa = torch.full_like(x, self.kappa)
        n = self.network(x, t, kappa)
        if self.hard_constraint:
            return initial_condition(x) + t * (1.0 - x * x) * n
        return n


# ----------------------------------------------------------------------------- points
@dataclass
class Points:
    """Collocation (residual), initial and boundary points, each with its κ."""

    x_r: torch.Tensor
    t_r: torch.Tensor
    k_r: torch.Tensor
    x_0: torch.Tensor
    k_0: torch.Tensor
    t_b: torch.Tensor
    k_b: torch.Tensor

    def to(self, device, dtype) -> Points:
        return Points(*(getattr(self, f).to(device=device, dtype=dtype)
                        for f in ("x_r", "t_r", "k_r", "x_0", "k_0", "t_b", "k_b")))


def _kappas(cfg: PINNConfig, u: torch.Tensor) -> torch.Tensor:
    """κ for uniform variates u ∈ [0, 1): log-uniform on the range, or the fixed κ."""
    if not cfg.parametric:
        return torch.full_like(u, cfg.kappa)
    lo, hi = (math.log(k) for k in cfg.kappa_range)
    return torch.exp(lo + (hi - lo) * u)


def grid_points(cfg: PINNConfig, gen: torch.Generator) -> Points:
    """The seed's n_x × n_t grid on [−1, 1] × [0, 1] (float64, CPU)."""
    x = torch.linspace(-1.0, 1.0, cfg.n_x, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, cfg.n_t, dtype=torch.float64)
    X, T = torch.meshgrid(x, t, indexing="ij")
    rand = torch.rand(X.numel() + cfg.n_x + 2 * cfg.n_t, generator=gen, dtype=torch.float64)
    k = _kappas(cfg, rand)
    n = X.numel()
    return Points(X.reshape(-1), T.reshape(-1), k[:n], x, k[n:n + cfg.n_x],
                  torch.cat([t, t]), k[n + cfg.n_x:])


def random_points(cfg: PINNConfig, gen: torch.Generator) -> Points:
    """n_x·n_t uniform random interior points, n_x initial, n_t boundary points per side."""
    n, m = cfg.n_x * cfg.n_t, cfg.n_t
    r = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    x0 = torch.rand(cfg.n_x, 2, generator=gen, dtype=torch.float64)
    tb = torch.rand(2 * m, 2, generator=gen, dtype=torch.float64)
    return Points(2.0 * r[:, 0] - 1.0, r[:, 1], _kappas(cfg, r[:, 2]),
                  2.0 * x0[:, 0] - 1.0, _kappas(cfg, x0[:, 1]), tb[:, 0], _kappas(cfg, tb[:, 1]))


def sobol_points(cfg: PINNConfig, n: int, seed: int) -> Points:
    """The first n scrambled Sobol points in (x, t[, κ]) (plus 256 initial/boundary points)."""
    eng = torch.quasirandom.SobolEngine(3, scramble=True, seed=seed)
    r = eng.draw(n, dtype=torch.float64)
    s = eng.draw(256, dtype=torch.float64)
    return Points(2.0 * r[:, 0] - 1.0, r[:, 1], _kappas(cfg, r[:, 2]),
                  2.0 * s[:, 0] - 1.0, _kappas(cfg, s[:, 2]), s[:, 1], _kappas(cfg, s[:, 2]))


# ----------------------------------------------------------------------------- training
def pinn_loss(model: PINN, p: Points, weights=(1.0, 1.0, 1.0)) -> tuple[torch.Tensor, dict]:
    """(L, its terms): mean squared residual, initial and boundary misfits, weighted."""
    w_r, w_0, w_b = weights
    r = heat_residual(model, p.x_r, p.t_r, p.k_r)
    loss_r = torch.mean(r**2)
    terms = {"residual": loss_r}
    total = w_r * loss_r
    if not model.hard_constraint:
        u0 = model(p.x_0, torch.zeros_like(p.x_0), p.k_0)
        loss_0 = torch.mean((u0 - initial_condition(p.x_0)) ** 2)
        m = p.t_b.shape[0]
        xb = torch.cat([-torch.ones(m, dtype=p.t_b.dtype, device=p.t_b.device),
                        torch.ones(m, dtype=p.t_b.dtype, device=p.t_b.device)])
        ub = model(xb, torch.cat([p.t_b, p.t_b]), torch.cat([p.k_b, p.k_b]))
        loss_b = torch.mean(ub**2)
        terms |= {"initial": loss_0, "boundary": loss_b}
        total = total + w_0 * loss_0 + w_b * loss_b
    return total, {k: float(v.detach()) for k, v in terms.items()}


@dataclass
class PINNResult:
    """A trained PINN (eval mode, on the training device) and what happened."""

    model: PINN
    config: PINNConfig
    history: list[dict] = field(default_factory=list)
    initial_loss: float = math.nan
    final_loss: float = math.nan
    final_terms: dict = field(default_factory=dict)
    wall_time: float = 0.0
    device: str = "cpu"


def train_pinn(cfg: PINNConfig = SEED) -> PINNResult:
    """Train a PINN with ``cfg``: Adam (full batch), then L-BFGS if asked; seeded."""
    cfg.check()
    device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = PINN(cfg).to(device=device, dtype=dtype)
    history: list[dict] = []
    fixed = grid_points(cfg, gen).to(device, dtype)
    with torch.enable_grad():
        initial = float(pinn_loss(model, fixed, cfg.weights)[0].detach())
    if cfg.adam_epochs:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.adam_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.adam_epochs) \
            if cfg.cosine else None
        for epoch in range(cfg.adam_epochs):
            pts = random_points(cfg, gen).to(device, dtype) if cfg.resample else fixed
            opt.zero_grad(set_to_none=True)
            loss, terms = pinn_loss(model, pts, cfg.weights)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if cfg.log_every and (epoch % cfg.log_every == 0 or epoch == cfg.adam_epochs - 1):
                history.append({"phase": "adam", "step": epoch, "loss": float(loss.detach()),
                                **terms})
    if cfg.lbfgs_iterations:
        pts = (sobol_points(cfg, cfg.lbfgs_points, cfg.seed) if cfg.lbfgs_points
               else fixed if not cfg.resample else random_points(cfg, gen)).to(device, dtype)
        opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=cfg.lbfgs_iterations,
                                max_eval=int(1.25 * cfg.lbfgs_iterations), history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                tolerance_change=1e-16)
        evals = [0]

        def closure():
            opt.zero_grad(set_to_none=True)
            loss, terms = pinn_loss(model, pts, cfg.weights)
            loss.backward()
            if cfg.log_every and evals[0] % cfg.log_every == 0:
                history.append({"phase": "lbfgs", "step": evals[0],
                                "loss": float(loss.detach()), **terms})
            evals[0] += 1
            return loss

        opt.step(closure)
        final_pts = pts
    else:
        final_pts = fixed if not cfg.resample else random_points(cfg, gen).to(device, dtype)
    loss, terms = pinn_loss(model, final_pts, cfg.weights)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.eval()
    return PINNResult(model=model, config=cfg, history=history, initial_loss=initial,
                      final_loss=float(loss.detach()), final_terms=terms,
                      wall_time=time.perf_counter() - t0, device=str(device))


# ----------------------------------------------------------------------------- queries
def evaluation_grid(n_x: int = 1001, n_t: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The uniform (x, t) grid the errors are measured on: n_x × n_t points."""
    return np.linspace(-1.0, 1.0, n_x), np.linspace(0.0, 1.0, n_t)


def predict_field(model: PINN, x: np.ndarray, t: np.ndarray,
                  kappa: float | None = None) -> np.ndarray:
    """u_θ on the tensor grid t × x, shape (len(t), len(x)), as float64 numpy."""
    p = next(model.parameters())
    T, X = np.meshgrid(t, x, indexing="ij")
    xt = torch.as_tensor(X.reshape(-1), dtype=p.dtype, device=p.device)
    tt = torch.as_tensor(T.reshape(-1), dtype=p.dtype, device=p.device)
    k = None if kappa is None else torch.full_like(xt, float(kappa))
    if kappa is None and model.parametric:
        raise PINNError("this PINN takes κ as an input: pass kappa")
    with torch.no_grad():
        u = model(xt, tt, k)
    return u.reshape(T.shape).to(device="cpu", dtype=torch.float64).numpy()


def relative_l2_error(u: np.ndarray, x: np.ndarray, t: np.ndarray, kappa: float) -> float:
    """‖u − u_exact‖ / ‖u_exact‖ over the grid t × x (discrete L², uniform weights)."""
    ref = exact_solution(x[None, :], t[:, None], kappa)
    return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))


def pinn_error(result: PINNResult | PINN, kappa: float | None = None,
               grid: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Relative L² error of a trained PINN against the exact solution at κ.

    κ defaults to the fixed κ of a non-parametric PINN; the grid to :func:`evaluation_grid`.
    """
    model = result.model if isinstance(result, PINNResult) else result
    x, t = grid if grid is not None else evaluation_grid()
    k = model.kappa if kappa is None and not model.parametric else kappa
    if k is None:
        raise PINNError("this PINN takes κ as an input: pass kappa")
    return relative_l2_error(predict_field(model, x, t, k if model.parametric else None),
                             x, t, k)
