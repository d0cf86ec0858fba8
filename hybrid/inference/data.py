"""Observation data and the Gaussian noise model.

An :class:`Observations` holds named measurements yᵢ with a standard deviation σᵢ each; the
likelihood of the inference side is independent Gaussian,

    −log L(μ) = ½ Σᵢ ((Gᵢ(μ) − yᵢ) / σᵢ)² + const = ½ χ²(μ) + const.

A :class:`GaussianNoise` model gives σ from the data: absolute (σᵢ = std) or relative
(σᵢ = max(std·|yᵢ|, floor)).

Data files are CSV with a header and one row per observation::

    # noise: gaussian relative 0.01 floor 1e-06      (comment lines: '# key: value' metadata)
    sensor,value,sigma
    p0,0.0123,0.000123
    p1,0.0456,0.000456

The ``sigma`` column may be left out (header ``sensor,value``) when a noise model is given,
as an argument or as the ``noise`` metadata line. Observations of a transient case carry a
time column (header ``sensor,time,value,sigma`` or ``sensor,time,value``): the row of sensor
``p0`` at t = 0.05 is the observation named ``p0@0.05``
(:func:`hybrid.core.case.observation_label`), one of the case's
``observations.data_names()``. Every problem raises :class:`DataError`
with one line ``FILE:LINE: problem``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid.inference.errors import DataError

NOISE_KINDS = ("absolute", "relative")


MIN_SIGMA = 1e-150
"""Smallest accepted noise std: 1/σ² must stay finite in float64."""
MAX_VALUE = 1e150
"""Largest accepted |observation|: (y/σ)² must stay finite for any sensible σ."""


@dataclass(frozen=True)
class GaussianNoise:
    """Independent zero-mean Gaussian noise with σᵢ = std, or σᵢ = max(std·|yᵢ|, floor)."""

    std: float
    kind: str = "absolute"
    floor: float = 0.0

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise DataError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise DataError(f"noise std must be a finite number > 0, got {self.std}")
        if not (math.isfinite(self.floor) and self.floor >= 0):
            raise DataError(f"noise floor must be a finite number >= 0, got {self.floor}")

    def sigma(self, y: np.ndarray) -> np.ndarray:
        """Standard deviations for observations ``y`` (relative noise scales with |y|)."""
        y = np.asarray(y, dtype=float)
        if self.kind == "absolute":
            return np.full(y.shape, self.std)
        s = np.maximum(self.std * np.abs(y), self.floor)
        if np.any(s <= 0):
            raise DataError("relative noise gives sigma = 0 for an observation equal to 0; "
                            "set a floor")
        return s

    def describe(self) -> str:
        """One-line description, readable back with :meth:`parse`."""
        text = f"gaussian {self.kind} {float(self.std)!r}"
        return text + (f" floor {float(self.floor)!r}" if self.floor else "")

    @classmethod
    def parse(cls, text: str) -> GaussianNoise:
        """Read ``"gaussian absolute 0.01"`` or ``"gaussian relative 0.05 floor 1e-6"``."""
        tok = text.split()
        ok = len(tok) in (3, 5) and tok[0].lower() == "gaussian" and (
            len(tok) == 3 or tok[3].lower() == "floor")
        if not ok:
            raise DataError(f"noise model {text!r}: expected 'gaussian absolute|relative STD "
                            "[floor F]'")
        try:
            std = float(tok[2])
            floor = float(tok[4]) if len(tok) == 5 else 0.0
        except ValueError:
            raise DataError(f"noise model {text!r}: std and floor must be numbers") from None
        return cls(std, tok[1].lower(), floor)


@dataclass(frozen=True, eq=False)
class Observations:
    """Named measurements ``values`` with standard deviations ``sigma`` (all shape (m,))."""

    names: tuple[str, ...]
    values: np.ndarray
    sigma: np.ndarray
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        values = np.asarray(self.values, dtype=float).reshape(-1)
        sigma = np.broadcast_to(np.asarray(self.sigma, dtype=float), values.shape).copy()
        if len(names) != values.size:
            raise DataError(f"{len(names)} observation names for {values.size} values")
        if values.size == 0:
            raise DataError("no observations")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"duplicate observation names {dup}")
        if not np.all(np.isfinite(values)):
            raise DataError(f"observation values must be finite, got {values.tolist()}")
        if not (np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
            raise DataError(f"observation sigma must be finite and > 0, got {sigma.tolist()}")
        with np.errstate(over="ignore"):
            bad = np.nonzero((sigma < MIN_SIGMA) | (np.abs(values) > MAX_VALUE)
                             | (np.abs(values) / sigma > MAX_VALUE))[0]
        if bad.size:
            i = int(bad[0])
            raise DataError(f"observation {names[i]!r}: value {values[i]:g} with sigma "
                            f"{sigma[i]:g} is out of range (|value| <= {MAX_VALUE:g}, sigma >= "
                            f"{MIN_SIGMA:g}): the misfit would overflow")
        values.flags.writeable = False
        sigma.flags.writeable = False
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "meta", dict(self.meta))

    def __len__(self) -> int:
        return self.values.size

    def residual(self, predicted: np.ndarray) -> np.ndarray:
        """Data-weighted residual (G − y)/σ of predictions (shape (..., m))."""
        return (np.asarray(predicted, dtype=float) - self.values) / self.sigma

    def chi2(self, predicted: np.ndarray) -> np.ndarray:
        """χ² = Σ ((G − y)/σ)² of predictions (shape (..., m) → (...))."""
        r = self.residual(predicted)
        return np.sum(r * r, axis=-1)

    def select(self, names: Sequence[str]) -> Observations:
        """The observations named ``names``, in that order."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise DataError(f"no observation named {missing[0]!r}; have {list(self.names)}")
        idx = [index[n] for n in names]
        return Observations(tuple(names), self.values[idx], self.sigma[idx], self.meta)

    def with_noise(self, noise: GaussianNoise) -> Observations:
        """The same values with σ from ``noise`` (relative noise uses the measured |yᵢ|)."""
        return Observations(self.names, self.values, noise.sigma(self.values),
                            {**self.meta, "noise": noise.describe()})

    def to_dict(self) -> dict:
        return {"names": list(self.names), "values": self.values.tolist(),
                "sigma": self.sigma.tolist(), "meta": dict(self.meta)}

    def to_csv(self, path: str | Path) -> Path:
        """Write ``sensor,value,sigma`` with '# key: value' metadata lines; values round-trip.

        When every name is ``sensor@t`` (a transient case) the file has a time column:
        ``sensor,time,value,sigma``.
        """
        path = Path(path)
        lines = [f"# {k}: {v}" for k, v in self.meta.items()]
        timed = [split_label(n) for n in self.names]
        with_time = all(t is not None for _, t in timed)
        lines.append("sensor,time,value,sigma" if with_time else "sensor,value,sigma")
        for n, (sensor, t), v, s in zip(self.names, timed, self.values, self.sigma,
                                        strict=True):
            if any(c in n for c in ',"\n#') or n != n.strip():
                raise DataError(f"sensor name {n!r} cannot be written to CSV")
            head = f"{sensor},{t!r}" if with_time else n
            lines.append(f"{head},{float(v)!r},{float(s)!r}")  # shortest exact round trip
        path.write_text("\n".join(lines) + "\n")
        return path

    @classmethod
    def from_csv(cls, path: str | Path, expected: Sequence[str] | None = None, *,
                 noise: GaussianNoise | None = None, require_all: bool = False) -> Observations:
        """See :func:`read_csv`."""
        return read_csv(path, expected, noise=noise, require_all=require_all)


def split_label(name: str) -> tuple[str, float | None]:
    """(sensor, t) of a data name ``sensor@t``; (name, None) for a name without a time."""
    sensor, at, t = name.rpartition("@")
    if not at or not sensor:
        return name, None
    try:
        value = float(t)
    except ValueError:
        return name, None
    return (sensor, value) if math.isfinite(value) else (name, None)


def _number(text: str, what: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: {what} must be finite, got {text}")
    return v


def read_csv(path: str | Path, expected: Sequence[str] | None = None, *,
             noise: GaussianNoise | None = None, require_all: bool = False) -> Observations:
    """Read and validate an observation CSV file.

    Args:
        path: the file.
        expected: the sensor names the model predicts; a row naming another sensor is an error.
        noise: the noise model for a file without a ``sigma`` column (overrides a ``noise``
            metadata line there); ignored when the file has one.
        require_all: every name in ``expected`` must have a row.

    Raises:
        DataError: ``FILE:LINE: problem`` for NaN/inf or non-numeric values, a wrong column
            count, sigma ≤ 0, an unknown or duplicate sensor, a bad header, an empty file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: data file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read data file ({exc})") from None
    meta: dict[str, str] = {}
    meta_line: dict[str, int] = {}
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, list[str]]] = []
    for ln, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if ":" in body:
                k, v = body.split(":", 1)
                if k.strip() and " " not in k.strip():
                    meta[k.strip()] = v.strip()
                    meta_line[k.strip()] = ln
            continue
        cells = [c.strip() for c in next(csv.reader([line]))]
        if header is None:
            header, header_line = [c.lower() for c in cells], ln
            if header not in (["sensor", "value", "sigma"], ["sensor", "value"],
                              ["sensor", "time", "value", "sigma"],
                              ["sensor", "time", "value"]):
                raise DataError(f"{path}:{ln}: header must be 'sensor,value,sigma' (or "
                                f"'sensor,value' with a noise model; 'sensor,time,value,sigma' "
                                f"for observations over time), got {line!r}")
            continue
        rows.append((ln, cells))
    if header is None:
        raise DataError(f"{path}: empty data file (expected a header 'sensor,value,sigma' "
                        "and one row per observation)")
    if not rows:
        raise DataError(f"{path}:{header_line}: no observations after the header")
    timed = header[1] == "time"
    ncol = len(header)
    if timed:   # the time column is folded into the name: sensor@t
        from hybrid.core.case import observation_label

        folded = []
        for ln, cells in rows:
            if len(cells) != ncol:
                raise DataError(f"{path}:{ln}: expected {ncol} columns ({','.join(header)}), "
                                f"got {len(cells)}")
            t = _number(cells[1], "time", f"{path}:{ln}")
            folded.append((ln, [observation_label(cells[0], t) if cells[0] else "",
                                *cells[2:]]))
        rows, ncol = folded, ncol - 1
        header = [header[0], *header[2:]]
    if ncol == 2 and noise is None:
        if "noise" not in meta:
            raise DataError(f"{path}:{header_line}: no sigma column and no noise model (give "
                            "one, or a '# noise: gaussian absolute|relative STD' line)")
        try:
            noise = GaussianNoise.parse(meta["noise"])
        except DataError as exc:
            raise DataError(f"{path}:{meta_line['noise']}: {exc}") from None
    known = set(expected) if expected is not None else None
    seen: dict[str, int] = {}
    names, values, sigmas = [], [], []
    for ln, cells in rows:
        where = f"{path}:{ln}"
        if len(cells) != ncol:
            raise DataError(f"{where}: expected {ncol} columns ({','.join(header)}), "
                            f"got {len(cells)}")
        name = cells[0]
        if not name:
            raise DataError(f"{where}: empty sensor name")
        if known is not None and name not in known:
            shown = sorted(known)
            more = f", … ({len(shown)} in all)" if len(shown) > 8 else ""
            raise DataError(f"{where}: unknown sensor {name!r}; expected one of "
                            f"{', '.join(shown[:8])}{more}")
        if name in seen:
            raise DataError(f"{where}: duplicate sensor {name!r} (first on line {seen[name]})")
        seen[name] = ln
        values.append(_number(cells[1], "value", where))
        if abs(values[-1]) > MAX_VALUE:
            raise DataError(f"{where}: value {cells[1]} is too large in magnitude (> "
                            f"{MAX_VALUE:g}): squared residuals would overflow")
        if ncol == 3:
            s = _number(cells[2], "sigma", where)
            if s <= 0:
                raise DataError(f"{where}: sigma must be > 0, got {cells[2]}")
            if s < MIN_SIGMA:
                raise DataError(f"{where}: sigma {cells[2]} is too small (< {MIN_SIGMA:g}): "
                                "1/sigma^2 overflows; give the measurement's real noise")
            sigmas.append(s)
        else:
            try:
                sigmas.append(float(noise.sigma(np.array([values[-1]]))[0]))
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
        names.append(name)
    if require_all and expected is not None:
        missing = [n for n in expected if n not in seen]
        if missing:
            raise DataError(f"{path}: no row for sensor(s) {missing}")
    if ncol == 2:
        meta["noise"] = noise.describe()
    return Observations(tuple(names), np.array(values), np.array(sigmas), meta)


def synthesize(y_true: np.ndarray, noise: float | GaussianNoise, rel_or_abs: str = "absolute",
               seed: int = 0, *, names: Sequence[str] | None = None,
               floor: float = 0.0) -> Observations:
    """Noisy synthetic data y = y_true + σ ε, ε ~ N(0, I), σ from the noise model at y_true.

    ``noise`` is a :class:`GaussianNoise` or its std (with ``rel_or_abs`` and ``floor``);
    names default to ``y0, y1, …``. The result's metadata records the noise model and seed.
    """
    y_true = np.asarray(y_true, dtype=float).reshape(-1)
    model = noise if isinstance(noise, GaussianNoise) else GaussianNoise(float(noise),
                                                                         rel_or_abs, floor)
    sigma = model.sigma(y_true)
    rng = np.random.default_rng(seed)
    values = y_true + sigma * rng.standard_normal(y_true.shape)
    names = tuple(names) if names is not None else tuple(f"y{i}" for i in range(y_true.size))
    return Observations(names, values, sigma,
                        {"noise": model.describe(), "seed": str(seed), "synthetic": "true"})
