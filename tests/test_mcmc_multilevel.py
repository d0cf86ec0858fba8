"""Multi-level delayed acceptance (placeholder header, replaced below)."""

from __future__ import annotations

import numpy as np

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.inference import ForwardModel, Observations, Posterior, sample

INF = np.inf


# ------------------------------------------------------------------ two levels: unchanged
def _two_level_runs() -> dict[str, np.ndarray]:
    """Two-level, metropolis and surrogate-only runs whose every output is compared bitwise.

    The models use elementwise arithmetic only (no BLAS), so that the draws do not depend on
    the BLAS kernel a CPU picks. ``tests/data/make_mcmc_two_level_reference.py`` wrote the
    reference file from these runs with the sampler as it was before levels existed.
    """
    a = np.array([[1.0, 0.5], [-0.3, 1.2], [0.8, -0.7]])

    def g(x, b=0.0, c=a):
        return x[:, :1] * (c[:, 0] + b) + x[:, 1:] * (c[:, 1] - b)

    def g_torch(x):
        import torch

        return g(x.reshape(-1, 2), 0.15, torch.tensor(a)).reshape(*x.shape[:-1], 3)

    space = ParameterSpace((Parameter("u", -2.0, 3.0), Parameter("v", -INF, INF)))
    data = Observations(("y0", "y1", "y2"), np.array([0.9, 0.2, 0.1]), 0.2)
    fine = Posterior(ForwardModel(g, batched=True), data, space, "uniform")
    cheap = fine.with_model(ForwardModel(lambda x: g(x, 0.15), batched=True,
                                         torch_fn=g_torch))
    kw = {"n_samples": 120, "burn_in": 80, "chains": 3, "seed": 11, "x0": np.array([0.3, 0.1]),
          "start_cov": 0.05 * np.eye(2), "adapt_every": 10, "thin": 2}
    out = {}
    for mode, args in (("delayed-acceptance", (fine, cheap)), ("metropolis", (fine,)),
                       ("surrogate-only", (None, cheap)), ("mala", (fine, cheap))):
        if mode == "mala":
            r = sample(*args, mode="delayed-acceptance", kernel="mala", **kw)
        else:
            r = sample(*args, mode=mode, **kw)
        key = mode.split("-")[0]
        out[f"{key}_samples"] = r.samples
        out[f"{key}_log_density"] = r.log_density
        out[f"{key}_accepted"] = r.accepted
        out[f"{key}_stage1"] = r.stage1
        out[f"{key}_proposal_cov"] = r.proposal_cov
        for k, v in r.counts.items():
            out[f"{key}_count_{k}"] = v
    return out
