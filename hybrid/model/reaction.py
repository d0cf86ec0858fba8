"""How a model states a reaction–diffusion system for operator splitting.

    ∂v/∂t = −M⁻¹K v + f(t, x, v, w),   ∂w/∂t = g(t, x, v, w),

with the diffusion part in UFL (``Problem.F`` = r(v; φ) = ∫ D∇v·∇φ dx, linear in v, no
source: K = ∂r/∂v) and the reaction part as a numpy function evaluated pointwise at the
degrees of freedom of v (vectorised over them). ``w`` holds the gating/recovery states,
one row per state, on the same DOFs. hybrid (:mod:`hybrid.fem.splitting`) owns the time
loop: the reaction ODEs by explicit substeps, the diffusion step implicit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybrid.model.api import Problem

# rhs(t, v, w) -> (dv/dt, dw/dt); v: (n,), w: (n_states, n), dw the same shape as w.
# Return new arrays on every call (not v, w or a cached buffer): the integrators form their
# combinations in place on them.
ReactionStep = Callable[[float, float, np.ndarray, np.ndarray, str, int],
                        tuple[np.ndarray, np.ndarray] | None]
ReactionRHS = Callable[[float, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class ReactionDiffusion(Problem):
    """A :class:`Problem` whose reaction is numpy, stepped by operator splitting.

    Attributes (besides Problem's ``u``, ``F`` = the diffusion residual r(v; φ),
    ``mass``, ``initial``, ``time``):
        reaction: the pointwise right-hand side ``rhs(t, v, w) -> (dv, dw)`` at the local
            DOFs of ``u`` (owned and ghosts, in the local order of ``u.x.array``).
        states0: the initial states w(·, t0), shape (n_states, n_local) (n_states may be 0).
        state_names: names of the rows of w.
        threshold: the activation threshold of v (activation time = first upward crossing).
        splitting, ode, substeps: the default scheme (the solver's arguments override).
        info: model facts for reports (units, parameter values).
        reaction_step: optional fused integrator of the same ODEs (e.g. compiled):
            ``step(t, τ, v, w, ode, substeps) -> (v, w)`` advancing v and w **in place** by
            τ as :func:`hybrid.fem.splitting.ode_step` would, and returning them; or None
            for a scheme it does not implement (then ``reaction`` is integrated).
    """

    reaction: ReactionRHS | None = None
    states0: np.ndarray | None = None
    state_names: list[str] = field(default_factory=list)
    threshold: float = 0.5
    splitting: str = "strang"
    ode: str = "rk2"
    substeps: int = 1
    info: dict[str, Any] = field(default_factory=dict)
    reaction_step: ReactionStep | None = None
