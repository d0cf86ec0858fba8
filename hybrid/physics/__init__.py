"""Physics models as the case file sees them (DOLFINx-free).

Every built-in model is a plug-in (:mod:`hybrid.model.library`, docs/models.md): a case
names it by reference (:mod:`hybrid.physics.plugin`), and its stores record θ_q as data that
the surrogate side evaluates without the model's code. :mod:`hybrid.physics.thermal_block`
reads stores and surrogates of the former hand-written thermal block.

``REGISTRY`` maps a name to a hand-written :class:`PhysicsSpec` (settings, parameter count,
QoI names, checks) for a case; none is built in any more, it stays for specs registered by
code (tests) without a finite-element half.
"""

from __future__ import annotations

from hybrid.physics.base import PhysicsSpec

REGISTRY: dict[str, type[PhysicsSpec]] = {}

__all__ = ["REGISTRY", "PhysicsSpec"]
