"""What a model author writes against: Model, Settings, Problem, Context, TimeGrid.

A model is one class: its settings (the ``[physics]`` table of the case, less ``model``),
its parameters and QoIs, and a ``build(ctx)`` that states the residual F(u; v) = 0 in UFL.
hybrid owns everything else: solvers, time loops, orderings, the store, and what it derives
from F (linearity, ∂F/∂μ, affine terms: :mod:`hybrid.fem.analysis`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """Base of a model's settings: a pydantic model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TimeGrid:
    """Fixed-step time grid t_n = t0 + n·dt, n = 0 … N, N·dt = t_end − t0, of a transient problem.

    The model's default; a case's ``[time]`` table replaces any of t0, t_end, dt.
    """

    t0: float
    t_end: float
    dt: float


@dataclass
class Problem:
    """The discrete problem a model's ``build`` returns.

    Attributes:
        u: the unknown, a ``fem.Function`` (also the Newton initial guess for a nonlinear F).
        F: the residual form F(u; v) with the test function v and the unknown u.
            For a transient problem (``time`` given) it is the *spatial* residual r(u; v, t)
            of the semi-discrete equation m(∂u/∂t, v) + r(u; v, t) = 0, written with
            ``ctx.t`` where it depends on time; hybrid applies the case's time scheme
            (backward Euler, Crank–Nicolson, BDF2: :mod:`hybrid.fem.transient`). Only if
            ``u_prev`` is given is F the step residual the author discretised in time
            (with ``ctx.dt`` and ``u_prev``), and hybrid just steps it.
        bcs: Dirichlet conditions, independent of μ.
        qoi: quantity of interest name → scalar form (a functional of u).
        affine: optional explicit affine terms [(θ_q(μ) as a UFL expression of ctx.mu, F_q)],
            checked against F before they are used.
        coercive: the author's promise that the problem is coercive; checked where it can be.
        inner_product: a bilinear form X(u, v) for POD and Riesz maps (default: H¹ or L²).
        solver: default PETSc options (the case's [solver.petsc] overrides them).
        time: a :class:`TimeGrid`: the problem is transient (hybrid sets ``ctx.t`` to
            t_{n+1} before each step and ``ctx.dt`` to the step).
        initial: u(x, 0; μ): a number, a UFL expression (of ``ufl.SpatialCoordinate`` and
            ``ctx.mu``: μ-dependent initial states) or a callable x ↦ values (x of shape
            (3, n)); default 0. Interpolated into the space of u before each time loop.
        mass: the mass form m(u, v) of m(∂u/∂t, v), linear in u (default ∫ u v dx).
        u_prev: only for a step residual written by the author: the previous step's
            Function, which hybrid updates after every step (then ``mass`` is not used).
        near_nullspace: Functions of u's space spanning the near-nullspace of J, for
            algebraic multigrid (``pc_type = "gamg"``): e.g. the rigid-body modes of
            elasticity, :func:`hybrid.model.rigid_body_modes`. hybrid orthonormalises them
            and attaches them to the operator of every solve (forward and sensitivity);
            a direct solver ignores them.
    """

    u: Any
    F: Any
    bcs: list = field(default_factory=list)
    qoi: dict[str, Any] = field(default_factory=dict)
    affine: list[tuple[Any, Any]] | None = None
    coercive: bool = False
    inner_product: Any = None
    solver: dict = field(default_factory=dict)
    u_prev: Any = None
    initial: Any = None
    time: TimeGrid | None = None
    mass: Any = None
    near_nullspace: list | None = None


class Parameters(Mapping):
    """The model parameters as scalar ``fem.Constant`` s, indexable by name and by position.

    ``mu["mu_0"]`` and ``mu[0]`` are the same Constant; iteration yields the names.
    :meth:`assign` sets the values for a solve.
    """

    def __init__(self, mesh, names: Sequence[str], values: Sequence[float] | None = None):
        from dolfinx import fem

        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"parameter names are not unique: {self.names}")
        vals = np.ones(len(self.names)) if values is None else np.asarray(values, dtype=float)
        self.constants = [fem.Constant(mesh, float(v)) for v in vals]
        self._index = {n: k for k, n in enumerate(self.names)}

    def __getitem__(self, key: int | str):
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"no parameter {key!r}; the parameters are {self.names}")
            return self.constants[self._index[key]]
        if isinstance(key, bool) or not isinstance(key, int | np.integer):
            raise KeyError(f"parameters are indexed by name or position, got {key!r}")
        return self.constants[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, constant) -> int | None:
        """Position of a Constant among the parameters (None if it is not one of them)."""
        for k, c in enumerate(self.constants):
            if c is constant:
                return k
        return None

    def assign(self, mu: Sequence[float]) -> None:
        """Set the parameter values (length P)."""
        mu = np.asarray(mu, dtype=float).reshape(-1)
        if mu.size != len(self.constants):
            raise ValueError(f"expected {len(self.constants)} parameter values, got {mu.size}")
        for c, v in zip(self.constants, mu, strict=True):
            c.value = v

    def values_array(self) -> np.ndarray:
        """The current values as a float array (P,)."""
        return np.array([float(c.value) for c in self.constants])


@dataclass
class Context:
    """What ``build`` receives.

    The mesh (already distributed), its communicator, the model's settings, the parameters
    ``mu`` (scalar Constants), optional mesh tags, and the time ``t`` and step ``dt``
    (scalar Constants, set by hybrid's time loop; unused by steady problems).
    """

    mesh: Any
    comm: Any
    settings: Settings
    mu: Parameters
    tags: dict = field(default_factory=dict)
    t: Any = None
    dt: Any = None


class Model:
    """Base class of a physics model plug-in.

    Subclasses set the class attributes ``name`` (str) and ``Settings`` (a :class:`Settings`
    subclass) and implement :meth:`parameters`, :meth:`qoi_names` and :meth:`build`.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[Settings]] = Settings

    def __init__(self, settings: Settings | None = None):
        self.settings = settings if settings is not None else type(self).Settings()

    def parameters(self) -> int | list[str]:
        """The number of parameters, or their names (then the case must use these names)."""
        raise NotImplementedError

    def qoi_names(self) -> list[str]:
        """Names of the quantities of interest ``build`` provides in ``Problem.qoi``."""
        return []

    def check(self, case) -> Iterable[tuple[str, str]]:
        """Optional cross-checks of a case: (key, message) for each problem found."""
        return ()

    def build(self, ctx: Context) -> Problem:
        """State the problem on ``ctx.mesh`` (collective on ``ctx.comm``)."""
        raise NotImplementedError
