"""MCMC convergence diagnostics: split-R̂ and effective sample size (numpy only).

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
"""

from __future__ import annotations

import numpy as np


def _as_chains(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {x.shape}")
    return x


def split_chains(x) -> np.ndarray:
    """(M, N) → (2M, ⌊N/2⌋): each chain cut into halves (the middle draw of odd N dropped)."""
    x = _as_chains(x)
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def rank_normalize(x) -> np.ndarray:
    """Φ⁻¹((r − 3/8)/(S + 1/4)) of the rank r of each draw among all S (ties averaged)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    x = _as_chains(x)
    r = rankdata(x, method="average").reshape(x.shape)
    return ndtri((r - 0.375) / (x.size + 0.25))


def autocovariance(x) -> np.ndarray:
    """Autocovariance of each chain (M, N) at lags 0…N−1, by FFT, divided by N."""
    x = _as_chains(x)
    n = x.shape[1]
    d = x - x.mean(axis=1, keepdims=True)
    m = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(d, n=m, axis=1)
    return np.fft.irfft(f * np.conj(f), n=m, axis=1)[:, :n] / n


def _rhat_plain(x: np.ndarray) -> float:
    m, n = x.shape
    if m < 2 or n < 2:
        return float("nan")
    w = np.mean(np.var(x, axis=1, ddof=1))
    b_n = np.var(np.mean(x, axis=1), ddof=1)
    if not w > 0:
        return float("nan")
    return float(np.sqrt(((n - 1) / n * w + b_n) / w))


def split_rhat(x, *, rank: bool = False) -> float:
    """Split-R̂ of draws (M, N); on rank-normalised draws if ``rank``."""
    s = split_chains(x)
    return _rhat_plain(rank_normalize(s) if rank else s)


def rhat(x) -> float:
    """Rank-normalised split-R̂: max of the bulk and the folded (tail) versions."""
    s = split_chains(x)
    folded = np.abs(s - np.median(s))
    return max(_rhat_plain(rank_normalize(s)), _rhat_plain(rank_normalize(folded)))


def _ess_chains(x: np.ndarray) -> float:
    m, n = x.shape
    if n < 4:
        return float("nan")
    acov = autocovariance(x)
    w = np.mean(acov[:, 0]) * n / (n - 1)
    var_plus = w * (n - 1) / n + (np.var(np.mean(x, axis=1), ddof=1) if m > 1 else 0.0)
    if not var_plus > 0:
        return float("nan")
    rho = 1.0 - (w - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    npairs = n // 2
    pairs = rho[: 2 * npairs].reshape(npairs, 2).sum(axis=1)
    neg = np.nonzero(pairs <= 0)[0]
    k = neg[0] if neg.size else npairs
    pairs = np.minimum.accumulate(pairs[:k])
    tau = -1.0 + 2.0 * float(np.sum(pairs))
    total = m * n
    return float(min(total / tau, total * np.log10(total))) if tau > 0 else float("nan")


def ess(x) -> float:
    """Effective sample size of the mean (Geyer initial monotone sequence, split chains)."""
    return _ess_chains(split_chains(x))


def ess_bulk(x) -> float:
    """ESS of the rank-normalised split draws (robust to heavy tails)."""
    return _ess_chains(rank_normalize(split_chains(x)))


def ess_tail(x) -> float:
    """The smaller ESS of the indicators x ≤ q₀.₀₅ and x ≤ q₀.₉₅ (split draws)."""
    s = split_chains(x)
    out = []
    for q in (0.05, 0.95):
        ind = (s <= np.quantile(s, q)).astype(float)
        out.append(_ess_chains(ind))
    return float(min(out))


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
