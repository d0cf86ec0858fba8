"""MCMC convergence diagnostics: split-R̂ and effective sample size, computed by ArviZ.

Draws of one scalar are an array (M, N): M chains of N draws. Following Vehtari, Gelman,
Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and localization: an
improved R̂", Bayesian Analysis 16(2):

* **split chains**: each chain is cut into halves (the middle draw of an odd chain is
  dropped), so a chain that drifts looks like two chains that disagree: M' = 2M, N' = ⌊N/2⌋.
* **split-R̂** (Gelman–Rubin on split chains): with chain means x̄ₘ, chain variances sₘ²,

      W = mean(sₘ²),   B/N' = var(x̄ₘ),   var⁺ = (N'−1)/N' · W + B/N',   R̂ = √(var⁺ / W).

* **rank normalisation**: draws are replaced by Φ⁻¹((r − 3/8)/(S + 1/4)) of their rank r
  among all S draws, so R̂ works for heavy tails; :func:`rhat` is the maximum of the
  rank-normalised split-R̂ of the draws (bulk) and of |x − median| (tails).
* **ESS** (Geyer's initial monotone sequence on the multi-chain autocorrelation): with
  ĉₘ(t) the autocovariance of chain m at lag t (FFT, divided by N'),

      ρ̂(t) = 1 − (W − mean_m ĉₘ(t)) / var⁺,

  pairs Γₖ = ρ̂(2k) + ρ̂(2k+1) are summed while positive, made non-increasing, and

      τ̂ = −1 + 2 Σₖ Γₖ,     ESS = M' N' / τ̂   (capped at M'N' log₁₀(M'N') as in Stan).

  :func:`ess` applies this to the split draws (the ESS of the mean), :func:`ess_bulk` to
  the rank-normalised ones, :func:`ess_tail` to the indicators of the 5 % and 95 %
  quantiles (the smaller).

The numbers come from ``arviz_stats`` (ArviZ 1.x, the reference implementation of that paper):
these functions only fix the shape convention (M, N), the methods and the tail quantiles, so
that a summary means the same as ArviZ's own. A hand-written copy (earlier versions) agreed
with ArviZ to round-off on even chain lengths but not on odd ones or single chains.
"""

from __future__ import annotations

import warnings

import numpy as np


def _as_chains(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {x.shape}")
    return x


def _azs():
    import arviz_stats

    return arviz_stats


def _scalar(f, x, **kw) -> float:
    """One diagnostic of draws (M, N); NaN where undefined (e.g. constant draws)."""
    x = _as_chains(x)
    if x.size == 0 or np.ptp(x) == 0:
        return float("nan")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        v = float(f(x, chain_axis=0, draw_axis=1, **kw))
    return v if np.isfinite(v) else float("nan")


def split_rhat(x, *, rank: bool = False) -> float:
    """Split-R̂ of draws (M, N); on rank-normalised draws if ``rank``."""
    return _scalar(_azs().rhat, x, method="z_scale" if rank else "split")


def rhat(x) -> float:
    """Rank-normalised split-R̂: max of the bulk and the folded (tail) versions."""
    return _scalar(_azs().rhat, x, method="rank")


def ess(x) -> float:
    """Effective sample size of the mean (Geyer initial monotone sequence, split chains)."""
    return _scalar(_azs().ess, x, method="mean")


def ess_bulk(x) -> float:
    """ESS of the rank-normalised split draws (robust to heavy tails)."""
    return _scalar(_azs().ess, x, method="bulk")


def ess_tail(x) -> float:
    """The smaller ESS of the indicators x ≤ q₀.₀₅ and x ≤ q₀.₉₅ (split draws)."""
    return _scalar(_azs().ess, x, method="tail", prob=(0.05, 0.95))


def summarize(draws, names) -> dict[str, dict[str, float]]:
    """Per-parameter mean, std, 5/50/95 % quantiles, R̂, ESS (mean, bulk, tail), MCSE.

    ``draws`` has shape (chains, n, P).
    """
    draws = np.asarray(draws, dtype=float)
    out = {}
    for j, name in enumerate(names):
        x = draws[:, :, j]
        flat = x.reshape(-1)
        e = ess(x)
        sd = float(np.std(flat, ddof=1)) if flat.size > 1 else float("nan")
        q05, q50, q95 = np.quantile(flat, [0.05, 0.5, 0.95])
        out[name] = {"mean": float(np.mean(flat)), "std": sd, "q05": float(q05),
                     "q50": float(q50), "q95": float(q95), "rhat": rhat(x), "ess": e,
                     "ess_bulk": ess_bulk(x), "ess_tail": ess_tail(x),
                     "mcse_mean": sd / np.sqrt(e) if e > 0 else float("nan")}
    return out
