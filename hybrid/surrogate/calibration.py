"""Split-conformal calibration of a surrogate's error band (numpy only).

For models without a certified bound (nonlinear or non-affine), a band with a stated coverage
is calibrated on held-out FEM runs (split conformal prediction: Vovk, Gammerman & Shafer 2005;
Lei, G'Sell, Rinaldo, Tibshirani & Wasserman 2018, *J. Am. Stat. Assoc.* 113).

**Scores.** Calibration runs j = 1..n give the FEM outputs y_j ∈ ℝ^m, the surrogate's
ŷ_j and a scale s_j ∈ ℝ^m (the ensemble standard deviation of each output when the surrogate
is an ensemble of K ≥ 2 members, else 1: a constant band). The joint score of run j is

    r_j = max_i |y_ji − ŷ_ji| / s_ji        (0/0 := 0, e/0 := +∞ for e > 0).

**Quantile.** With k = ⌈(n + 1)(1 − α)⌉, q is the k-th smallest of r_1 … r_n. If k > n the
quantile is +∞ (n < (1 − α)/α calibration runs cannot support the level α): this is refused
(:class:`CalibrationError`), never clipped to the largest score.

**Band.** δ_i(μ) = q · s_i(μ).

**Guarantee** (Lei et al. 2018, Thm 2.2). If the calibration runs and the test point are
exchangeable — e.g. all drawn independently from the campaign's parameter distribution, and
the surrogate and the score function fixed without looking at the calibration runs — then

    P( |y_i(μ) − ŷ_i(μ)| ≤ δ_i(μ) for every i ) ≥ 1 − α,

and, when the scores have no ties, ≤ 1 − α + 1/(n + 1). The probability is over the
calibration runs and the test μ together (marginal coverage), not for every μ: the band can
under-cover in a region of parameter space and over-cover elsewhere. The FEM discretisation
is the truth here: y is the FEM output, not the physical one.

**Joint, not per-output.** The joint score gives a *simultaneous* band (all m outputs
covered at once), which is what the coupler's test max_i δ_i/σ_i ≤ tol needs. Per-output
scores r_ji = |y_ji − ŷ_ji|/s_ji with their own quantiles q_i give only *marginal* coverage
per output (the joint coverage can drop to 1 − mα). They are recorded (``q_per_output``) to
show how much the simultaneity costs (q / q_i), not used for the band.

Nothing here is collective; everything is numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from hybrid.surrogate.errors import SurrogateError

SCALES = ("ensemble-std", "constant")


class CalibrationError(SurrogateError):
    """The band cannot be calibrated as asked (too few runs for α, unbounded scores, …)."""


def conformal_rank(n: int, alpha: float) -> int:
    """The rank k = ⌈(n + 1)(1 − α)⌉ of the conformal quantile among n scores.

    Computed with a relative slack of 1e-12 against round-off in (n + 1)(1 − α) (e.g.
    20·0.95 = 18.999…98 in floating point must give 19). k > n means q = +∞.
    """
    if not (0.0 < alpha < 1.0):
        raise CalibrationError(f"alpha must lie in (0, 1), got {alpha}")
    if n < 1:
        raise CalibrationError("calibration needs at least one held-out run")
    x = (n + 1) * (1.0 - alpha)
    return max(1, math.ceil(x - 1e-12 * x))


def min_calibration_runs(alpha: float) -> int:
    """The fewest calibration runs n with ⌈(n + 1)(1 − α)⌉ ≤ n (a finite quantile)."""
    n = 1
    while conformal_rank(n, alpha) > n:
        n += 1
    return n


def conformal_quantile(scores, alpha: float) -> float:
    """The ⌈(n + 1)(1 − α)⌉-th smallest score q; CalibrationError if that rank exceeds n."""
    r = np.asarray(scores, dtype=float).reshape(-1)
    if np.isnan(r).any():
        raise CalibrationError("calibration scores contain NaN (non-finite surrogate or FEM "
                               "outputs)")
    n = r.size
    k = conformal_rank(n, alpha)
    if k > n:
        raise CalibrationError(
            f"alpha = {alpha:g} needs at least {min_calibration_runs(alpha)} calibration runs "
            f"(the rank ceil((n+1)(1-alpha)) = {k} exceeds n = {n}, so the band is infinite); "
            "hold out more FEM runs or take a larger alpha")
    q = float(np.sort(r)[k - 1])
    if not math.isfinite(q):
        raise CalibrationError(
            f"the conformal quantile is infinite: {int(np.isinf(r).sum())} of {n} calibration "
            "runs have an error where the scale is zero (identical ensemble members)")
    return q


def _ratio(err: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """err/scale elementwise with 0/0 = 0 and e/0 = +∞."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = err / scale
    r = np.where(err == 0.0, 0.0, r)
    return np.where((scale == 0.0) & (err > 0.0), np.inf, r)


def scores(y, y_hat, scale=None, *, joint: bool = True) -> np.ndarray:
    """Nonconformity scores: joint r_j = max_i |y_ji − ŷ_ji|/s_ji (n,), or per output (n, m).

    ``scale`` None means s = 1 (a constant band).
    """
    y, y_hat = np.atleast_2d(np.asarray(y, dtype=float)), np.atleast_2d(np.asarray(y_hat, float))
    if y.shape != y_hat.shape:
        raise CalibrationError(f"FEM outputs {y.shape} and surrogate outputs {y_hat.shape} "
                               "differ in shape")
    s = np.ones_like(y) if scale is None else np.broadcast_to(np.asarray(scale, float), y.shape)
    if (s < 0).any():
        raise CalibrationError("the band's scale must be non-negative")
    r = _ratio(np.abs(y - y_hat), s)
    if y.shape[1] == 0:
        return np.zeros(y.shape[0]) if joint else r
    return r.max(axis=1) if joint else r


@dataclass
class Calibration:
    """A calibrated split-conformal band δ_i(μ) = q · s_i(μ) on one set of outputs.

    Attributes:
        alpha: miscoverage level α (coverage ≥ 1 − α under exchangeability).
        q: the conformal quantile of the joint scores.
        n_cal: calibration runs.
        scale: ``"ensemble-std"`` (s = the members' standard deviation of each output, ddof 1)
            or ``"constant"`` (s = 1).
        names: output names, in the order of the band.
        target: ``"observations"`` or ``"qoi"``.
        q_per_output: per-output quantiles (marginal coverage each; recorded, not used).
        coverage: fraction of the held-out *test* runs whose every output lies in the band
            (None without test runs).
        coverage_se: binomial standard error of ``coverage`` at the nominal level,
            √(α(1 − α)/n_test): how far an exactly calibrated band's measured coverage
            strays by chance.
        n_test: test runs.
        indices: sample positions (in the store's successful snapshots) of the calibration
            and test runs.
    """

    alpha: float
    q: float
    n_cal: int
    scale: str
    names: list[str]
    target: str = "observations"
    q_per_output: list[float | None] = field(default_factory=list)
    coverage: float | None = None
    coverage_se: float | None = None
    n_test: int = 0
    indices: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        if self.scale not in SCALES:
            raise CalibrationError(f"unknown band scale {self.scale!r}; expected one of "
                                   f"{SCALES}")
        if not (math.isfinite(self.q) and self.q >= 0):
            raise CalibrationError(f"the conformal quantile must be finite and >= 0, got "
                                   f"{self.q}")

    @property
    def nominal(self) -> float:
        """The guaranteed coverage 1 − α."""
        return 1.0 - self.alpha

    def band(self, scale=None) -> np.ndarray:
        """δ = q · s for scale(s) s (…, m); s None: the constant band q (m,)."""
        if scale is None:
            return np.full(len(self.names), self.q)
        return self.q * np.asarray(scale, dtype=float)

    def to_dict(self) -> dict:
        """Plain JSON (no inf, no numpy types)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        try:
            return cls(alpha=float(d["alpha"]), q=float(d["q"]), n_cal=int(d["n_cal"]),
                       scale=str(d["scale"]), names=[str(n) for n in d["names"]],
                       target=str(d.get("target", "observations")),
                       q_per_output=list(d.get("q_per_output", [])),
                       coverage=None if d.get("coverage") is None else float(d["coverage"]),
                       coverage_se=None if d.get("coverage_se") is None
                       else float(d["coverage_se"]),
                       n_test=int(d.get("n_test", 0)),
                       indices={k: [int(i) for i in v] for k, v in
                                d.get("indices", {}).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration record is incomplete ({exc})") from None

    def summary(self) -> str:
        """One line: level, quantile, runs and measured coverage."""
        cov = ("no test runs" if self.coverage is None else
               f"coverage {self.coverage:.3f} ± {self.coverage_se:.3f} on {self.n_test} test "
               "runs")
        return (f"{self.target}: split-conformal band, alpha {self.alpha:g} (nominal "
                f"{self.nominal:.3g}), q {self.q:.3g} ({self.scale}) from {self.n_cal} runs, "
                f"{cov}")


def calibrate(y, y_hat, scale, alpha: float, *, names, scale_kind: str,
              target: str = "observations") -> Calibration:
    """Calibrate the band on runs (n, m): FEM ``y``, surrogate ``y_hat``, ``scale`` (or None)."""
    y = np.atleast_2d(np.asarray(y, dtype=float))
    r = scores(y, y_hat, scale)
    q = conformal_quantile(r, alpha)
    per = scores(y, y_hat, scale, joint=False)
    k = conformal_rank(r.size, alpha)
    q_i = [None if not math.isfinite(v) else float(v) for v in np.sort(per, axis=0)[k - 1]] \
        if per.shape[1] else []
    names = list(names)
    if len(names) != y.shape[1]:
        raise CalibrationError(f"{len(names)} output names for {y.shape[1]} outputs")
    return Calibration(alpha=float(alpha), q=q, n_cal=int(r.size), scale=scale_kind,
                       names=names, target=target, q_per_output=q_i)


def covered(cal: Calibration, y, y_hat, scale=None) -> np.ndarray:
    """Whether every output of each run lies in the band: (n,) booleans."""
    return scores(y, y_hat, scale) <= cal.q


def with_coverage(cal: Calibration, y, y_hat, scale=None) -> Calibration:
    """``cal`` with the coverage measured on test runs (n_test, m)."""
    c = covered(cal, y, y_hat, scale)
    n = int(c.size)
    if n == 0:
        return cal
    cal.coverage = float(c.mean())
    cal.coverage_se = float(math.sqrt(cal.alpha * (1.0 - cal.alpha) / n))
    cal.n_test = n
    return cal


# ----------------------------------------------------------------------------- at training
def split_validation(vi: np.ndarray, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random halves (calibration ⌈n/2⌉, test ⌊n/2⌋) of the validation positions.

    A random split keeps the calibration and the test runs exchangeable with each other.
    CalibrationError if the calibration half is too small for α.
    """
    vi = np.asarray(vi, dtype=int)
    need = min_calibration_runs(alpha)
    n_cal = (vi.size + 1) // 2
    if n_cal < need:
        raise CalibrationError(
            f"--calibrate {alpha:g} needs at least {need} calibration runs, i.e. "
            f"{2 * need - 1} validation snapshots; the store's validation split has {vi.size} "
            "(raise --validation, or run more samples)")
    perm = np.random.default_rng(seed + 104729).permutation(vi.size)
    return np.sort(vi[perm[:n_cal]]), np.sort(vi[perm[n_cal:]])


def calibrate_on_validation(sur, store, mu: np.ndarray, vi: np.ndarray, U_val: np.ndarray,
                            alpha: float, *, seed: int = 0) -> dict:
    """Calibrate ``sur``'s bands on half the validation snapshots, measure on the other half.

    Args:
        sur: the built surrogate (observations, QoIs, band scale).
        store: its :class:`~hybrid.core.store.SnapshotStore` (static data, recorded QoIs).
        mu: parameters of the store's successful snapshots (S, P).
        vi: positions of the validation snapshots among them.
        U_val: their FEM fields (len(vi), N).
        alpha: the miscoverage level.
        seed: seeds the split into calibration and test halves.

    Returns the JSON record ``{"observations": …, "qoi": …}`` (:meth:`Calibration.to_dict`;
    None for an empty output set). The FEM observations are the store's functionals applied
    to the FEM fields, the FEM QoIs those the campaign recorded.
    """
    vi = np.asarray(vi, dtype=int)
    cal_i, test_i = split_validation(vi, alpha, seed)
    pos = {int(v): k for k, v in enumerate(vi)}
    rows = {"calibration": [pos[int(i)] for i in cal_i], "test": [pos[int(i)] for i in test_i]}
    mu_v = mu[vi]
    static = store.static
    if static.observations_affine:
        ta, tf = sur.spec.theta_a(mu_v), sur.spec.theta_f(mu_v)
        y_obs = static.observe(U_val, ta, tf)
    else:
        y_obs = static.observe(U_val)
    _, Q = store.qois()
    scale_kind = "ensemble-std" if sur.kind == "pod-nn" and sur.members >= 2 else "constant"
    out: dict = {}
    for target, y, predict, names in (
            ("observations", y_obs, sur.observe, sur.observation_names),
            ("qoi", np.asarray(Q)[vi], sur.qoi, sur.qoi_names)):
        if not names:
            out[target] = None
            continue
        y_hat = np.asarray(predict(mu_v, extrapolate=True)).reshape(len(vi), -1)
        s = sur.band_scale(mu_v, target, extrapolate=True) if scale_kind != "constant" \
            else None
        c, t = rows["calibration"], rows["test"]
        cal = calibrate(y[c], y_hat[c], None if s is None else s[c], alpha, names=names,
                        scale_kind=scale_kind, target=target)
        cal = with_coverage(cal, y[t], y_hat[t], None if s is None else s[t])
        cal.indices = {"calibration": cal_i.tolist(), "test": test_i.tolist()}
        out[target] = cal.to_dict()
    return out
