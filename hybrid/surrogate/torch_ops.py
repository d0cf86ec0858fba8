"""Affine coefficients θ_q(μ), ϑ_q(μ) of a physics spec for torch tensors, differentiably.

A spec whose ``theta_a``/``theta_f`` accept a tensor and return a tensor (written with
array-API operations) is used as it is, so autograd sees the exact derivative. A spec that
works on numpy only is evaluated on numpy and wrapped in an autograd function whose
backward pass uses central finite differences, h_i = 1e-6·max(|μ_i|, 1) — an O(h²) ≈ 1e-12
relative truncation error, far below any surrogate's own error.
"""

from __future__ import annotations

import numpy as np
import torch


class _NumpyCoefficients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mu: torch.Tensor, fn) -> torch.Tensor:
        m = mu.detach().to("cpu", torch.float64).numpy()
        ctx.fn = fn
        ctx.save_for_backward(mu)
        out = np.asarray(fn(m), dtype=float)
        return torch.as_tensor(out, dtype=mu.dtype, device=mu.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mu,) = ctx.saved_tensors
        m = mu.detach().to("cpu", torch.float64).numpy()
        fn = ctx.fn
        h = 1e-6 * np.maximum(np.abs(m), 1.0)
        cols = []
        for i in range(m.shape[-1]):
            e = np.zeros(m.shape[-1])
            e[i] = 1.0
            hp = h[..., i:i + 1]
            cols.append((np.asarray(fn(m + hp * e)) - np.asarray(fn(m - hp * e)))
                        / (2 * hp))
        J = torch.as_tensor(np.stack(cols, axis=-1), dtype=grad.dtype, device=grad.device)
        return torch.einsum("...q,...qp->...p", grad, J), None


def _one(fn, mu: torch.Tensor) -> torch.Tensor:
    try:
        out = fn(mu)
    except (RuntimeError, TypeError):
        out = None
    if isinstance(out, torch.Tensor):
        return out.to(mu.dtype)
    if not mu.requires_grad:
        if out is None:
            out = fn(mu.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(out, dtype=float), dtype=mu.dtype, device=mu.device)
    return _NumpyCoefficients.apply(mu, fn)


def coefficients(spec, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ(μ), ϑ(μ)) as tensors on μ's device, differentiable with respect to μ."""
    return _one(spec.theta_a, mu), _one(spec.theta_f, mu)
