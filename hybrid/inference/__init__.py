"""Inference core: backend-agnostic parameter estimation (numpy, scipy, torch; no DOLFINx, no MPI).

* :mod:`~hybrid.inference.data` — :class:`Observations`, :class:`GaussianNoise`, CSV, synthesis;
* :mod:`~hybrid.inference.transform` — μ ↔ θ (log where log-scaled) ↔ unconstrained z;
* :mod:`~hybrid.inference.prior` — uniform and Gaussian priors in θ;
* :mod:`~hybrid.inference.posterior` — :class:`ForwardModel`, :class:`Posterior`;
* :mod:`~hybrid.inference.map` — :func:`find_map` (+ Laplace), :func:`confirm` (trust region);
* :mod:`~hybrid.inference.mcmc` — :func:`sample` (delayed acceptance, surrogate-only, plain);
* :mod:`~hybrid.inference.diagnostics` — split-R̂, ESS;
* :mod:`~hybrid.inference.plots` — corner and trace PNGs.

See docs/inference.md.
"""

from __future__ import annotations

from hybrid.inference.data import GaussianNoise, Observations, read_csv, synthesize
from hybrid.inference.diagnostics import ess, ess_bulk, ess_tail, rhat, split_rhat, summarize
from hybrid.inference.errors import DataError, InferenceError
from hybrid.inference.map import ConfirmResult, MAPResult, confirm, find_map, laplace
from hybrid.inference.mcmc import MCMCResult, sample
from hybrid.inference.posterior import Correction, ForwardModel, Posterior, fd_jacobian
from hybrid.inference.prior import GaussianPrior, UniformPrior
from hybrid.inference.transform import Unconstrained

__all__ = [
    "ConfirmResult", "Correction", "DataError", "ForwardModel", "GaussianNoise",
    "GaussianPrior", "InferenceError", "MAPResult", "MCMCResult", "Observations", "Posterior",
    "Unconstrained", "UniformPrior", "confirm", "ess", "ess_bulk", "ess_tail", "fd_jacobian",
    "find_map", "laplace", "read_csv", "rhat", "sample", "split_rhat", "summarize",
    "synthesize",
]
