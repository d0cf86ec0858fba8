"""Error indicators that need no affine structure.

**Ensemble spread.** K networks trained from different random initialisations (same data)
agree where the data and the physics pin the answer down and disagree elsewhere. With
member predictions c_1 … c_K and their mean c̄ (the ensemble's prediction),

    s(μ) = ( (1/K) Σ_k ‖c_k(μ) − c̄(μ)‖²_G )^{1/2},    relative: s(μ) / ‖c̄(μ)‖_G,

in the reduced inner product G (the identity for an X-orthonormal POD basis, so s is the
X-norm spread of the reconstructed fields). It is an *indicator*, not a bound: it does not
see the POD truncation error, and members can agree on a wrong answer. Use it to rank
queries (trust the surrogate where the spread is small) for models without the affine
decomposition the residual-based bound needs. The spread is uncalibrated; scaled by a
split-conformal quantile calibrated on held-out FEM runs (:mod:`hybrid.surrogate.calibration`,
``hybrid train --calibrate ALPHA``) it becomes a band with a stated coverage.
"""

from __future__ import annotations

import numpy as np


def ensemble_spread(members: np.ndarray, gram: np.ndarray | None = None, *,
                    relative: bool = True) -> np.ndarray:
    """Spread of member predictions ``members`` (K, …, n) → (…)."""
    members = np.asarray(members, dtype=float)
    mean = members.mean(axis=0)
    d = members - mean
    if gram is None:
        sq = np.einsum("k...i,k...i->...", d, d) / members.shape[0]
        ref = np.einsum("...i,...i->...", mean, mean)
    else:
        sq = np.einsum("k...i,ij,k...j->...", d, gram, d) / members.shape[0]
        ref = np.einsum("...i,ij,...j->...", mean, gram, mean)
    s = np.sqrt(np.maximum(sq, 0.0))
    if relative:
        s = s / np.sqrt(np.maximum(ref, 1e-300))
    return s
