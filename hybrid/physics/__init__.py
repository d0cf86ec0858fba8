"""Physics models: the DOLFINx-free half (settings, affine coefficients, QoI names).

Each physics model is a :class:`PhysicsSpec` subclass registered by name. The spec validates
the model's settings from the case file, says how many parameters it takes, and — for affine
models — gives the parameter-dependent coefficients θ_q(μ), ϑ_q(μ) of

    A(μ) = Σ_q θ_q(μ) A_q,      f(μ) = Σ_q ϑ_q(μ) f_q.

The finite-element half (forms, solve) lives in :mod:`hybrid.fem` under the same name; this
split keeps the surrogate side importable without DOLFINx (see docs/architecture.md).

Models written as plug-ins (:mod:`hybrid.model`, docs/models.md) are not registered here:
a case names them by reference (:mod:`hybrid.physics.plugin`), and their stores record the
θ_q as data that the surrogate side evaluates without the model's code.
"""

from __future__ import annotations

from hybrid.physics.base import PhysicsSpec
from hybrid.physics.thermal_block import ThermalBlock

REGISTRY: dict[str, type[PhysicsSpec]] = {ThermalBlock.name: ThermalBlock}


def get_spec(name: str) -> type[PhysicsSpec]:
    """Return the spec class registered under ``name`` (KeyError if unknown)."""
    return REGISTRY[name]


__all__ = ["REGISTRY", "PhysicsSpec", "ThermalBlock", "get_spec"]
