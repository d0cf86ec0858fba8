"""Case files: TOML in, a validated :class:`Case` out.

A case file is data (see docs/case-format.md)::

    [case]        name, description                            (optional)
    [mesh]        type = "unit_square" (cells, cell_type), "interval" (cells, interval = [x0, x1]),
                  "rectangle"/"box" (extent = [[x0, x1], …], cells: int or one per direction)
                  or "file" (file)
    [physics]     model = a plug-in (a built-in name such as "thermal_block",
                  "models/my_pde.py:Class" next to the case, "pkg.mod:Class", an entry
                  point; see docs/models.md) and the model's settings
    [parameters.NAME]  lower, upper, log                       (one table per parameter, in order)
    [sampling]    method = "sobol" | "lhs" | "random", samples, seed
    [solver]      petsc = { ksp_type = ..., ... }              (PETSc options)
    [outputs]     store, qoi, every                            (every: transient output stride)
    [time]        scheme = "backward_euler" | "crank_nicolson" | "bdf2", t0, t_end, dt
                  (transient models; docs/models.md)
    [observations] points = [[x, y], …], grid = n, averages = { name = [x0, y0, x1, y1] },
                  fluxes = { name = "x0" | ["x0", "y1", …] }   (boundary fluxes),
                  times = [t1, t2, …]   (transient: every sensor at each time, output times)

Every problem is reported as one line ``FILE: key: what was expected`` through
:class:`hybrid.errors.CaseError`. Relative mesh paths are resolved against the case file's
directory; relative output paths against the current directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.core.physics import REGISTRY, PhysicsSettings, PhysicsSpec
from hybrid.errors import CaseError

_STRICT = ConfigDict(extra="forbid", strict=True)


class CaseMeta(BaseModel):
    model_config = _STRICT
    name: str | None = None
    description: str = ""


def _cells(value: Any) -> int | list[int] | None:
    """``cells``: an int, or a list of ints (one per direction), as one pydantic error."""
    def one(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("Input should be a valid integer" if v is value else
                             f"Input should be a valid integer or a list of integers, got {value}")
        if v < 1:
            raise ValueError(f"Input should be greater than or equal to 1, got {value}")
        return v
    if value is None:
        return None
    return [one(v) for v in value] if isinstance(value, list) else one(value)


class MeshSection(BaseModel):
    """The [mesh] table: a built-in mesh or a file.

    Built-in: ``unit_square``/``unit_cube`` (``cells`` per side), ``interval`` (``cells``,
    ``interval = [x0, x1]``), and the mesh in the case's own units (e.g. mm):
    ``rectangle`` with ``extent = [[x0, x1], [y0, y1]]`` and ``box`` with
    ``extent = [[x0, x1], [y0, y1], [z0, z1]]``, where ``cells`` is an int (every direction)
    or one int per direction.
    """

    model_config = _STRICT
    type: Literal["unit_square", "unit_cube", "interval", "rectangle", "box", "file"]
    cells: Annotated[int | list[int] | None, PlainValidator(_cells)] = None
    interval: list[float] | None = None
    extent: list[list[float]] | None = None
    cell_type: Literal["triangle", "quadrilateral", "tetrahedron", "hexahedron"] | None = None
    file: str | None = None
    gdim: int = Field(2, ge=1, le=3)

    @property
    def cells_per_direction(self) -> list[int]:
        """``cells`` as one int per direction of a rectangle (2) or box (3)."""
        d = 3 if self.type == "box" else 2
        return list(self.cells) if isinstance(self.cells, list) else [self.cells] * d

    @model_validator(mode="after")
    def _needs(self):
        if self.interval is not None:
            if self.type != "interval":
                raise ValueError("'interval' = [x0, x1] belongs to mesh type 'interval'")
            if len(self.interval) != 2 or not self.interval[0] < self.interval[1]:
                raise ValueError(f"interval must be [x0, x1] with x0 < x1, got {self.interval}")
        if self.type in ("unit_square", "unit_cube", "interval", "rectangle", "box") and \
                self.cells is None:
            raise ValueError(f"mesh type {self.type!r} needs 'cells' (cells per side)")
        if self.cells is not None:
            many = isinstance(self.cells, list)
            if many and self.type not in ("rectangle", "box"):
                raise ValueError(f"mesh type {self.type!r} takes one int 'cells', got "
                                 f"{self.cells}; a list per direction is for rectangle/box")
        if self.extent is not None and self.type not in ("rectangle", "box"):
            raise ValueError("'extent' = [[x0, x1], …] belongs to mesh types 'rectangle'/'box'")
        if self.type in ("rectangle", "box"):
            d = 2 if self.type == "rectangle" else 3
            ex = self.extent
            if ex is None:
                raise ValueError(f"mesh type {self.type!r} needs 'extent' = {d} intervals "
                                 f"[[x0, x1], …] (in the case's length unit)")
            if len(ex) != d or any(len(b) != 2 or not b[0] < b[1] for b in ex):
                raise ValueError(f"extent of a {self.type} must be {d} intervals [lo, hi] with "
                                 f"lo < hi, got {ex}")
            if isinstance(self.cells, list) and len(self.cells) != d:
                raise ValueError(f"cells of a {self.type} must be one int or {d} ints, got "
                                 f"{self.cells}")
            if self.cell_type is not None and \
                    self.cell_type not in (("triangle", "quadrilateral") if d == 2
                                           else ("tetrahedron", "hexahedron")):
                raise ValueError(f"cell_type {self.cell_type!r} does not fit a {self.type}")
        if self.type == "file" and not self.file:
            raise ValueError("mesh type 'file' needs 'file' (a gmsh .msh or an XDMF path)")
        return self


class ParameterSection(BaseModel):
    model_config = _STRICT
    lower: float
    upper: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        import math

        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"bounds must be finite numbers (a campaign samples the box), "
                             f"got [{self.lower:g}, {self.upper:g}]")
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower:g}) must be < upper ({self.upper:g})")
        if self.log and self.lower <= 0:
            raise ValueError(f"log = true needs lower > 0, got {self.lower:g}")
        return self


class SamplingSection(BaseModel):
    model_config = _STRICT
    method: Literal["sobol", "lhs", "random"] = "sobol"
    samples: int = Field(64, ge=1)
    seed: int = 0


class SolverSection(BaseModel):
    model_config = _STRICT
    petsc: dict[str, str | int | float | bool] = Field(
        default_factory=lambda: {
            "ksp_type": "preonly",
            "pc_type": "lu",
            "pc_factor_mat_solver_type": "mumps",
        }
    )


class OutputsSection(BaseModel):
    model_config = _STRICT
    store: str | None = None
    qoi: list[str] = Field(default_factory=lambda: ["mean"])
    every: int = Field(1, ge=1)


class TimeSection(BaseModel):
    """[time]: the time grid and scheme of a transient model (overrides ``Problem.time``).

    ``scheme`` is applied by hybrid to the model's semi-discrete form m(∂u/∂t, v) + r(u; v, t)
    (:mod:`hybrid.fem.transient`); ``t0``, ``t_end``, ``dt`` replace those of the model's
    ``TimeGrid`` where given. (t_end − t0)/dt must be a whole number of steps.
    """

    model_config = ConfigDict(extra="forbid")
    scheme: Literal["backward_euler", "crank_nicolson", "bdf2"] | None = None
    t0: float | None = Field(None, allow_inf_nan=False)
    t_end: float | None = Field(None, allow_inf_nan=False)
    dt: float | None = Field(None, gt=0, allow_inf_nan=False)


class CouplerSection(BaseModel):
    """[coupler]: what the coupler may trust besides the FEM (hybrid/workflows/coupler.py).

    ``trust = "bound"`` (default): certified residual bounds of affine models (or an
    ensemble's spread); any other model is answered by the FEM. ``trust = "indicator"``
    opts in to the FEM residual indicator η = ‖F(ũ; μ)‖_{X'} of non-affine or nonlinear
    models — not a bound; answers are labelled uncertified. ``tol`` (default: ``--tol``) is
    the acceptance threshold in noise standard deviations; ``holdout`` is where the
    indicator's effectivity is measured: ``"store"`` (the surrogate's validation snapshots)
    or a number of fresh FEM solves at set-up.
    """

    model_config = _STRICT
    trust: Literal["bound", "indicator"] = "bound"
    tol: float | None = Field(None, gt=0, allow_inf_nan=False)
    holdout: Literal["store"] | Annotated[int, Field(ge=1)] = "store"


#: Sides of the unit square/cube a boundary flux can be taken through (x0: x = 0, x1: x = 1, …).
SIDES = ("x0", "x1", "y0", "y1", "z0", "z1")


def _sides(value) -> list[str]:
    """A flux's sides: one side name or a non-empty list of distinct side names."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or \
            not all(isinstance(s, str) for s in items):
        raise ValueError(f"must be a side name or a list of side names ({', '.join(SIDES)})")
    for s in items:
        if s not in SIDES:
            raise ValueError(f"unknown side {s!r}; expected one of {', '.join(SIDES)}")
    if len(set(items)) != len(items):
        raise ValueError("a side is listed twice")
    return list(items)


def observation_label(name: str, t: float) -> str:
    """The data name of observation ``name`` at time ``t``: ``"p0@0.05"`` (12 digits)."""
    return f"{name}@{float(t):.12g}"


class ObservationsSection(BaseModel):
    """Observation operators: point sensors, box averages (linear in u) and boundary fluxes.

    A flux ``name = "x0"`` (or a list of sides) observes the outward flux of the solution
    through that part of the boundary of the unit square/cube, computed from the residual
    (see :mod:`hybrid.fem.observations`); it is affine in μ, not a fixed row.
    """

    model_config = _STRICT
    points: list[list[float]] = Field(default_factory=list)
    grid: int | None = Field(None, ge=1, le=100)
    averages: dict[str, list[float]] = Field(default_factory=dict)
    fluxes: dict[str, Annotated[list[str], BeforeValidator(_sides)]] = Field(
        default_factory=dict)
    times: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None
    components: list[Literal["x", "y", "z"]] = Field(default_factory=list)
    """Vector fields only: the components each sensor and average observes (p0_x, p0_y, …)."""

    @model_validator(mode="after")
    def _shapes(self):
        if self.times is not None:
            if not self.times:
                raise ValueError("times must list at least one time")
            if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
                raise ValueError("times must be strictly increasing")
        if len(set(self.components)) != len(self.components):
            raise ValueError(f"components must not repeat, got {self.components}")
        for k, p in enumerate(self.points):
            if len(p) not in (2, 3):
                raise ValueError(f"points[{k}] must have 2 or 3 coordinates, got {p}")
        for name, box in self.averages.items():
            if len(box) not in (4, 6):
                raise ValueError(f"averages.{name} must be [x0, y0, x1, y1], got {box}")
            d = len(box) // 2
            if any(box[i] >= box[i + d] for i in range(d)):
                raise ValueError(f"averages.{name}: lower corner must be below upper corner")
        taken = {n for n, _ in self.sensors()} | set(self.averages)
        for name in self.fluxes:
            if name in taken:
                raise ValueError(f"fluxes.{name}: the name is already used by another "
                                 "observation")
        return self

    def sensors(self) -> list[tuple[str, list[float]]]:
        """Point sensors in order: explicit points p0…, then the grid's (row by row)."""
        out = [(f"p{k}", list(p)) for k, p in enumerate(self.points)]
        if self.grid:
            n = self.grid
            out += [(f"p{len(self.points) + i + n * j}", [(i + 0.5) / n, (j + 0.5) / n])
                    for j in range(n) for i in range(n)]
        return out

    def names(self) -> list[str]:
        """All observation names in row order: sensors, then averages, then fluxes.

        With ``components`` (a vector field) each sensor and average is one name per
        component, ``p0_x, p0_y, …``.
        """
        lin = [n for n, _ in self.sensors()] + list(self.averages)
        if self.components:
            lin = [f"{n}_{c}" for n in lin for c in self.components]
        return lin + list(self.fluxes)

    def data_names(self) -> list[str]:
        """The names of the observed values: :meth:`names`, or per time ``name@t`` (time-major).

        A transient case with ``times`` observes every sensor at every listed time; value
        j·n + i is observation i at ``times[j]`` (:func:`observation_label`).
        """
        if not self.times:
            return self.names()
        return [observation_label(n, t) for t in self.times for n in self.names()]

    def fingerprint(self) -> dict:
        """The section as a dict for store fingerprints.

        No ``fluxes`` (``components``) key when there are none and no ``times`` key without
        times, so stores made before fluxes (components, observation times) existed keep
        their fingerprint.
        """
        drop = {k for k in ("fluxes", "components") if not getattr(self, k)} | (
            {"times"} if self.times is None else set())
        return self.model_dump(exclude=drop or None)


class CaseFile(BaseModel):
    model_config = _STRICT
    case: CaseMeta = Field(default_factory=CaseMeta)
    mesh: MeshSection
    physics: dict
    parameters: dict[str, ParameterSection]
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    solver: SolverSection = Field(default_factory=SolverSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    observations: ObservationsSection = Field(default_factory=ObservationsSection)
    coupler: CouplerSection = Field(default_factory=CouplerSection)
    time: TimeSection | None = None


@dataclass
class Case:
    """A validated case: everything a campaign, a solve or a surrogate needs to know."""

    path: Path
    text: str
    name: str
    description: str
    mesh: MeshSection
    physics: PhysicsSpec
    parameters: ParameterSpace
    sampling: SamplingSection
    petsc_options: dict[str, str | int | float | bool]
    store: Path
    qoi: list[str] = field(default_factory=list)
    observations: ObservationsSection = field(default_factory=ObservationsSection)
    coupler: CouplerSection = field(default_factory=CouplerSection)
    time: TimeSection | None = None
    every: int = 1

    def fingerprint(self) -> dict:
        """The parts of the case that make two stores' snapshots comparable.

        Mesh, physics settings, parameter space, QoIs and observations (names, kinds and
        positions), and for a plug-in model its reference and sha256: a store, a surrogate
        trained on it and a data file belong to a case only when this agrees.
        """
        fp = {
            "mesh": self.mesh.model_dump(exclude={k for k in ("interval", "extent")
                                                  if getattr(self.mesh, k) is None}),
            "physics": self.physics.settings.model_dump(),
            "parameters": self.parameters.to_dict(),
            "qoi": self.qoi,
            "observations": self.observations.fingerprint(),
        }
        info = getattr(self.physics, "model_info", None)
        if info is not None:   # plug-ins: the model file's sha256
            fp["model"] = info
        if self.time is not None:   # only transient cases: steady fingerprints unchanged
            fp["time"] = self.time.model_dump()
        return fp

    def fingerprint_against(self, stored: dict | None) -> dict:
        """:meth:`fingerprint` (as JSON) in the form that compares with a ``stored`` one.

        Equal to it except for stores and surrogates of the former hand-written thermal block,
        whose fingerprints have no ``model`` key
        (:func:`hybrid.core.legacy.comparable_fingerprint`).
        """
        import json

        from hybrid.core.legacy import comparable_fingerprint

        return comparable_fingerprint(json.loads(json.dumps(self.fingerprint())), stored)

    @property
    def mesh_file(self) -> Path | None:
        """Absolute path of the mesh file, or None for a built-in mesh."""
        if self.mesh.type != "file":
            return None
        p = Path(self.mesh.file)
        return p if p.is_absolute() else (self.path.parent / p).resolve()


def _loc(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if x != "__root__") or "(top level)"


def _first_error(path: Path, exc: ValidationError, prefix: tuple = ()) -> CaseError:
    err = exc.errors()[0]
    loc = prefix + tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = f"{path}: {_loc(loc)}: unknown key"
    elif kind == "missing":
        msg = f"{path}: {_loc(loc)}: missing required key"
    else:
        text = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        tail = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = f"{path}: {_loc(loc)}: {text}{tail}"
    return CaseError(msg)


def parse_case(text: str, path: Path) -> Case:
    """Validate the TOML ``text`` of the case file at ``path``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"{path}: not valid TOML: {exc}") from None
    try:
        cf = CaseFile.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(path, exc) from None

    model = cf.physics.get("model")
    if model is None:
        raise CaseError(f"{path}: physics.model: missing required key")
    if not isinstance(model, str):
        raise CaseError(f"{path}: physics.model: expected a model name or reference "
                        f"(got {model!r})")
    if not cf.parameters:
        raise CaseError(f"{path}: parameters: at least one [parameters.NAME] table is needed")
    space = ParameterSpace(
        tuple(Parameter(n, p.lower, p.upper, p.log) for n, p in cf.parameters.items())
    )
    if model in REGISTRY:
        spec_cls = REGISTRY[model]
        try:
            settings: PhysicsSettings = spec_cls.Settings.model_validate(cf.physics)
        except ValidationError as exc:
            raise _first_error(path, exc, ("physics",)) from None
        spec = spec_cls(settings)
        if space.dim != spec.n_parameters():
            raise CaseError(
                f"{path}: parameters: physics model {model!r} with these settings takes "
                f"{spec.n_parameters()} parameters, the case declares {space.dim}"
            )
    else:
        spec = _plugin(path, model, cf.physics, space)
    unknown_qoi = [q for q in cf.outputs.qoi if q not in spec.qoi_names()]
    if unknown_qoi:
        raise CaseError(
            f"{path}: outputs.qoi: unknown quantity {unknown_qoi[0]!r}; model {model!r} offers "
            f"{spec.qoi_names()[:6]}{'…' if len(spec.qoi_names()) > 6 else ''}"
        )
    name = cf.case.name or path.stem
    case = Case(
        path=path,
        text=text,
        name=name,
        description=cf.case.description,
        mesh=cf.mesh,
        physics=spec,
        parameters=space,
        sampling=cf.sampling,
        petsc_options=dict(cf.solver.petsc),
        store=Path(cf.outputs.store or f"runs/{name}/store"),
        qoi=list(cf.outputs.qoi),
        observations=cf.observations,
        coupler=cf.coupler,
        time=cf.time,
        every=cf.outputs.every,
    )
    for key, problem in spec.check_consistency(case):
        raise CaseError(f"{path}: {key}: {problem}")
    dim = {"unit_cube": 3, "box": 3, "interval": 1}.get(
        case.mesh.type, case.mesh.gdim if case.mesh.type == "file" else 2)
    if case.mesh.type in ("rectangle", "box") and \
            any(b != [0.0, 1.0] for b in case.mesh.extent):
        if cf.observations.fluxes:
            raise CaseError(f"{path}: observations.fluxes: sides x0/x1, … are the planes at 0 "
                            f"and 1; this {case.mesh.type} spans {case.mesh.extent}")
        if cf.observations.grid:
            raise CaseError(f"{path}: observations.grid: the grid covers the unit square; this "
                            f"{case.mesh.type} spans {case.mesh.extent} (list points instead)")
    if case.mesh.type == "interval" and cf.observations.fluxes and \
            (case.mesh.interval or [0.0, 1.0]) != [0.0, 1.0]:
        raise CaseError(f"{path}: observations.fluxes: sides x0/x1 are x = 0 and x = 1; this "
                        f"interval is {case.mesh.interval}")
    for fname, sides in cf.observations.fluxes.items():
        bad = [s for s in sides if SIDES.index(s) >= 2 * dim]
        if bad:
            need = SIDES.index(bad[0]) // 2 + 1
            raise CaseError(f"{path}: observations.fluxes.{fname}: side {bad[0]!r} needs a "
                            f"{need}D mesh; this mesh is {dim}D")
    mf = case.mesh_file
    if mf is not None and not mf.is_file():
        raise CaseError(f"{path}: mesh.file: mesh file {mf} does not exist")
    return case


def _plugin(path: Path, model: str, table: dict, space: ParameterSpace):
    """The plug-in spec of ``model`` with the other ``[physics]`` keys as its settings.

    Settings and parameter problems are case errors (naming the case file); a model that
    cannot be loaded is a :class:`~hybrid.errors.ModelError` naming the model file.
    """
    import re

    from hybrid.core.physics import PluginSpec
    from hybrid.errors import ModelError

    try:
        from hybrid.model import load_model

        loaded = load_model(model, path.parent)
    except ModelError as exc:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model) and "not a built-in model" in str(exc):
            from hybrid.model.library import BUILTIN

            raise CaseError(
                f"{path}: physics.model: unknown physics model {model!r}; expected one of "
                f"{sorted(set(REGISTRY) | set(BUILTIN))}, an entry point of group "
                "hybrid.models, 'file.py:Class' or 'package.module:Class'") from None
        raise
    rest = {k: v for k, v in table.items() if k != "model"}
    try:
        loaded.cls.Settings.model_validate(rest)
    except ValidationError as exc:
        raise _first_error(path, exc, ("physics",)) from None
    spec = PluginSpec(loaded, loaded.instantiate(table))
    try:
        declared = spec.model.parameters()
    except Exception:   # parameter_names below reports it, naming the model file
        declared = None
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != space.dim:
        raise CaseError(f"{path}: parameters: physics model {model!r} with these settings takes "
                        f"{declared} parameters, the case declares {space.dim}")
    try:
        spec.parameter_names(space.names)
    except ModelError as exc:
        raise CaseError(f"{path}: parameters: {exc}") from None
    return spec


def load_case(path: str | Path) -> Case:
    """Read and validate a case file.

    Raises:
        CaseError: the file is missing, not TOML, or not a valid case (one-line message).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CaseError(f"{p}: case file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"{p}: cannot read case file: {exc}") from None
    return parse_case(text, p)
