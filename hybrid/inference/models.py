"""Forward models of inference from hybrid's own models (no DOLFINx import here).

* :func:`surrogate_model` — a :class:`~hybrid.surrogate.Surrogate`'s observations: batched
  numpy, and a torch version for exact gradients (autograd through the network or the
  Galerkin solve);
* :func:`fem_model` — a :class:`hybrid.fem.model.FEMModel`'s observations, one solve per
  point, gradients from its tangent-linear model (one solve plus P back-substitutions),
  failed solves as zero density;
* a :class:`hybrid.workflows.coupler.Coupler` gives its own (:meth:`Coupler.forward_model`).
"""

from __future__ import annotations

from hybrid.errors import SolveFailed
from hybrid.inference.posterior import ForwardModel


def surrogate_model(surrogate) -> ForwardModel:
    """The surrogate's observations as a differentiable, batched forward model.

    A transient surrogate answers numpy only: its gradients are batched finite differences.
    """
    torch_fn = None if getattr(surrogate, "transient", False) else surrogate.observe
    return ForwardModel(surrogate.observe, torch_fn=torch_fn, batched=True,
                        names=surrogate.observation_names, name=f"surrogate ({surrogate.kind})")


def fem_model(fem, *, gradients: bool = True) -> ForwardModel:
    """The FEM model's observations (collective on ``fem.comm`` at every call)."""
    return ForwardModel(fem.observe, names=fem.observation_names, failures=(SolveFailed,),
                        jac_fn=fem.jacobian if gradients and hasattr(fem, "jacobian") else None,
                        name="fem")
