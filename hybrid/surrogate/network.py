"""The POD-NN network: scaled parameters in, POD coefficients out.

    ξ = a ⊙ t(μ) + b ∈ [−1, 1]^P,   t_i(μ) = log μ_i for log-scaled parameters, μ_i otherwise,
    c(μ) = a(μ) (c̄ + σ ⊙ N(ξ)),  N an MLP (tanh), c̄ and σ the mean and standard deviation
                                    of the training coefficients c/a (per mode),

with an optional amplitude a(μ) > 0 supplied by the caller (for affine models the one-mode
Galerkin solution a(μ) = f_r(μ)₁ / A_r(μ)₁₁, which takes out the overall scaling of the
solution with the parameters — for the thermal block u(tμ) = u(μ)/t — and leaves the network
a bounded, nearly scale-free function to learn); a ≡ 1 without it.

An ensemble of K members predicts the mean of their outputs; their spread is an error
indicator (:mod:`hybrid.surrogate.indicators`). The same weights are evaluated two ways:

* :class:`PODNetwork` — a torch module (training, and differentiable queries on any device);
* :class:`hybrid.surrogate.fastpath.NumpyNetwork` — numpy with the scalings folded into the
  first and last layers and preallocated buffers, for single queries in a few microseconds
  and batched queries with BLAS (no autograd).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hybrid.surrogate.fastpath import input_scaling

ACTIVATIONS = {"tanh": nn.Tanh}


class MLP(nn.Module):
    """Fully connected network with ``depth`` hidden layers of ``width`` units."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, activation: str = "tanh"):
        super().__init__()
        sizes = [n_in] + [width] * depth + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                      strict=True))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor:
        """Output, or with ``features`` the last hidden layer's output."""
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return x if features else self.layers[-1](x)

    def reset_parameters(self) -> None:
        """Draw new initial weights (torch's default initialisation)."""
        for layer in self.layers:
            layer.reset_parameters()


class PODNetwork(nn.Module):
    """μ ↦ reduced coefficients c(μ): scalings + an ensemble of MLPs (torch)."""

    def __init__(self, n_params: int, n_modes: int, *, width: int = 64, depth: int = 3,
                 members: int = 1, activation: str = "tanh", amplitude: bool = False):
        super().__init__()
        self.members = nn.ModuleList(MLP(n_params, n_modes, width, depth, activation)
                                     for _ in range(members))
        self.register_buffer("in_a", torch.ones(n_params, dtype=torch.float64))
        self.register_buffer("in_b", torch.zeros(n_params, dtype=torch.float64))
        self.register_buffer("log_mask", torch.zeros(n_params, dtype=torch.bool))
        self.register_buffer("out_mean", torch.zeros(n_modes, dtype=torch.float64))
        self.register_buffer("out_scale", torch.ones(n_modes, dtype=torch.float64))
        self.config = {"n_params": n_params, "n_modes": n_modes, "width": width, "depth": depth,
                       "members": members, "activation": activation,
                       "amplitude": bool(amplitude)}

    def set_scalings(self, lower, upper, log_mask, mean, scale) -> None:
        a, b = input_scaling(lower, upper, log_mask)
        dev, dt = self.in_a.device, self.in_a.dtype
        self.in_a.copy_(torch.as_tensor(a, dtype=dt, device=dev))
        self.in_b.copy_(torch.as_tensor(b, dtype=dt, device=dev))
        self.log_mask.copy_(torch.as_tensor(np.asarray(log_mask, dtype=bool), device=dev))
        self.out_mean.copy_(torch.as_tensor(mean, dtype=dt, device=dev))
        self.out_scale.copy_(torch.as_tensor(scale, dtype=dt, device=dev))

    def scale_input(self, mu: torch.Tensor) -> torch.Tensor:
        t = torch.where(self.log_mask, torch.log(torch.where(self.log_mask, mu, 1.0)), mu) \
            if bool(self.log_mask.any()) else mu
        return self.in_a * t + self.in_b

    def _amp(self, amp):
        if not self.config["amplitude"]:
            return 1.0
        if amp is None:
            raise ValueError("this network was trained with an amplitude: pass amp")
        return amp[..., None]

    def forward(self, mu: torch.Tensor, amp: torch.Tensor | None = None) -> torch.Tensor:
        """Ensemble-mean coefficients (…, n) for μ of shape (…, P)."""
        xi = self.scale_input(mu)
        y = self.members[0](xi)
        for m in self.members[1:]:
            y = y + m(xi)
        return self._amp(amp) * (self.out_mean + self.out_scale * (y / len(self.members)))

    def all_members(self, mu: torch.Tensor, amp: torch.Tensor | None = None) -> torch.Tensor:
        """(K, …, n) coefficients of every member."""
        xi = self.scale_input(mu)
        a = self._amp(amp)
        return torch.stack([a * (self.out_mean + self.out_scale * m(xi)) for m in self.members])
