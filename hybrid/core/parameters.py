"""Parameter spaces: names, bounds, log-scaling, sampling plans.

A :class:`ParameterSpace` maps between physical parameters μ ∈ Π [lᵢ, uᵢ] and the unit cube
ξ ∈ [0, 1]^P. For a log-scaled parameter the map is log-uniform,

    μᵢ = lᵢ (uᵢ / lᵢ)^ξᵢ,    ξᵢ = log(μᵢ / lᵢ) / log(uᵢ / lᵢ),

otherwise affine, μᵢ = lᵢ + ξᵢ (uᵢ − lᵢ). Sampling plans (Sobol, Latin hypercube, uniform
random) are drawn in ξ with :mod:`scipy.stats.qmc`, seeded, then mapped to μ.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybrid.errors import ParameterError

SAMPLING_METHODS = ("sobol", "lhs", "random")


@dataclass(frozen=True)
class Parameter:
    """One scalar parameter with bounds and scaling."""

    name: str
    lower: float
    upper: float
    log: bool = False


@dataclass(frozen=True)
class ParameterSpace:
    """An ordered box of parameters."""

    parameters: tuple[Parameter, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def dim(self) -> int:
        return len(self.parameters)

    @property
    def lower(self) -> np.ndarray:
        return np.array([p.lower for p in self.parameters])

    @property
    def upper(self) -> np.ndarray:
        return np.array([p.upper for p in self.parameters])

    @property
    def log_mask(self) -> np.ndarray:
        return np.array([p.log for p in self.parameters], dtype=bool)

    def to_unit(self, mu: np.ndarray) -> np.ndarray:
        """Map μ (shape (..., P)) to ξ ∈ [0, 1]^P."""
        mu = np.asarray(mu, dtype=float)
        lo, up, lg = self.lower, self.upper, self.log_mask
        lin = (mu - lo) / (up - lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            logv = np.log(mu / lo) / np.log(up / lo)
        return np.where(lg, logv, lin)

    def from_unit(self, xi: np.ndarray) -> np.ndarray:
        """Map ξ ∈ [0, 1]^P (shape (..., P)) to μ."""
        xi = np.asarray(xi, dtype=float)
        lo, up, lg = self.lower, self.upper, self.log_mask
        lin = lo + xi * (up - lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            logv = lo * (up / np.where(lg, lo, 1.0)) ** xi
        return np.where(lg, logv, lin)

    def check(self, mu: np.ndarray, *, where: str = "mu", rtol: float = 1e-12) -> np.ndarray:
        """Validate μ (shape (P,) or (S, P)); return it as a float array.

        Raises:
            ParameterError: wrong length, NaN/inf, or outside the bounds.
        """
        raw = np.asarray(mu)
        if np.iscomplexobj(raw):
            raise ParameterError(f"{where}: parameters must be real numbers, got complex "
                                 "values")
        try:
            arr = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            raise ParameterError(f"{where}: parameters must be real numbers, got "
                                 f"{raw.dtype} values") from None
        if arr.shape[-1:] != (self.dim,) or arr.ndim > 2:
            raise ParameterError(
                f"{where}: expected {self.dim} values ({', '.join(self.names)}), got shape "
                f"{arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ParameterError(f"{where}: parameters must be finite numbers, got {arr.tolist()}")
        tol = rtol * (self.upper - self.lower)
        bad = (arr < self.lower - tol) | (arr > self.upper + tol)
        if np.any(bad):
            j = int(np.argwhere(bad)[0][-1])
            p = self.parameters[j]
            val = arr[..., j].ravel()[np.argmax(bad[..., j].ravel())]
            raise ParameterError(
                f"{where}: {p.name}={val:g} is outside its bounds [{p.lower:g}, {p.upper:g}]"
            )
        return arr

    def sample(self, n: int, method: str = "sobol", seed: int = 0) -> np.ndarray:
        """Draw an (n, P) sampling plan in μ.

        Sobol points are scrambled with ``seed`` and taken in sequence order, so the first n
        points of a plan of n' > n points are the plan of n points (campaigns can grow).
        """
        if n < 1:
            raise ParameterError(f"number of samples must be >= 1, got {n}")
        from scipy.stats import qmc  # imported here: scipy.stats takes ~1 s to import

        if method == "sobol":
            eng = qmc.Sobol(d=self.dim, scramble=True, seed=seed)
            with warnings.catch_warnings():  # prefixes of any length are wanted here
                warnings.filterwarnings("ignore", message=".*balance properties.*")
                xi = eng.random(n)
        elif method == "lhs":
            xi = qmc.LatinHypercube(d=self.dim, seed=seed).random(n)
        elif method == "random":
            xi = np.random.default_rng(seed).random((n, self.dim))
        else:
            raise ParameterError(f"unknown sampling method {method!r}; expected {SAMPLING_METHODS}")
        return self.from_unit(xi)

    def to_dict(self) -> list[dict]:
        return [
            {"name": p.name, "lower": p.lower, "upper": p.upper, "log": p.log}
            for p in self.parameters
        ]

    @classmethod
    def from_dict(cls, items: Sequence[dict]) -> ParameterSpace:
        return cls(tuple(Parameter(d["name"], float(d["lower"]), float(d["upper"]),
                                   bool(d["log"])) for d in items))


def parse_mu(text: str, space: ParameterSpace, *, where: str = "--mu") -> np.ndarray:
    """Parse ``"a,b,c"`` (or ``"name=a,name=b"``) into a checked parameter vector."""
    parts = [t.strip() for t in text.split(",")]
    if len(parts) > 1 or parts[0]:
        empty = [i + 1 for i, t in enumerate(parts) if not t]
        if empty:
            raise ParameterError(f"{where}: empty value at position {empty[0]} of {text!r}")
    else:
        parts = []
    try:
        if parts and all("=" in t for t in parts):
            keys = [t.split("=", 1)[0].strip() for t in parts]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ParameterError(f"{where}: parameter {dup[0]!r} is given more than once")
            kv = {k.strip(): float(v) for k, v in (t.split("=", 1) for t in parts)}
            unknown = set(kv) - set(space.names)
            if unknown:
                raise ParameterError(
                    f"{where}: unknown parameter(s) {sorted(unknown)}; expected {space.names}"
                )
            missing = [n for n in space.names if n not in kv]
            if missing:
                raise ParameterError(f"{where}: missing parameter(s) {missing}")
            values = [kv[n] for n in space.names]
        else:
            values = [float(t) for t in parts]
    except ValueError as exc:
        raise ParameterError(f"{where}: cannot read {text!r} as numbers ({exc})") from None
    return space.check(np.array(values), where=where)
