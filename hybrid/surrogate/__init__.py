"""Reduced-order neural surrogates: POD in the FEM inner product, POD-NN, Galerkin ROM.

Importing this package needs numpy (and scipy for the offline parts); torch is imported
only when a network is trained or queried with torch tensors. Nothing here imports DOLFINx,
petsc4py or mpi4py.

* :mod:`~hybrid.surrogate.pod` — POD in an inner product (QR, method of snapshots,
  randomized), projection errors;
* :mod:`~hybrid.surrogate.reductor` — reduced affine operators, residual-based error bound;
* :mod:`~hybrid.surrogate.network`, :mod:`~hybrid.surrogate.fastpath` — the network (torch)
  and its numpy evaluation;
* :mod:`~hybrid.surrogate.training` — Adam → L-BFGS, physics-informed term, early stopping,
  devices, DDP;
* :mod:`~hybrid.surrogate.build` — store → surrogate;
* :mod:`~hybrid.surrogate.artifact` — the on-disk format (safetensors + JSON, checksums);
* :mod:`~hybrid.surrogate.surrogate` — :class:`Surrogate`, the query API.
"""

from __future__ import annotations

from hybrid.surrogate.errors import ExtrapolationWarning, SurrogateError
from hybrid.surrogate.surrogate import Surrogate

__all__ = ["ExtrapolationWarning", "Surrogate", "SurrogateError"]
