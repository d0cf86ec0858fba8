"""Find a model from its reference in a case file, and run it with errors that name its file.

A reference is one of

- ``"thermal_block"``: a built-in model (:mod:`hybrid.model.library`), or else an entry
  point of the group ``hybrid.models`` with that name;
- ``"models/my_pde.py:MyPDE"`` (or ``"models/my_pde.py"`` when the file defines exactly one
  Model): a Python file, relative to the case's directory unless absolute. It is imported
  with ``importlib.util.spec_from_file_location`` under the module name
  ``hybrid_model_<sha256[:16]>`` of its contents, so two versions of a file never collide;
- ``"pkg.mod:Class"``: an importable module.

A model file runs with the trust of ``python my_pde.py``: it is the user's own code. The
sha256 of the file (of the module's source file for the other forms) identifies the model
in fingerprints. Everything that goes wrong raises :class:`~hybrid.errors.ModelError` with
one line naming the model file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import inspect
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hybrid.errors import ModelError
from hybrid.model.api import Context, Model, Parameters, Problem, Settings, TimeGrid

ENTRY_POINT_GROUP = "hybrid.models"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, SyntaxError) and exc.lineno:
        text = f"{exc.msg} (line {exc.lineno})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class LoadedModel:
    """A model class and where it came from.

    Attributes:
        cls: the Model subclass.
        reference: the reference as the case wrote it.
        sha256: sha256 of the model's file (of its module's source file), or "" if unknown.
        origin: the file, for messages.
    """

    cls: type[Model]
    reference: str
    sha256: str
    origin: str

    @property
    def info(self) -> dict[str, str]:
        """{reference, sha256}: what a store or a surrogate records about the model."""
        return {"reference": self.reference, "sha256": self.sha256}

    def _fail(self, what: str) -> ModelError:
        return ModelError(f"{self.origin}: {what}")

    def instantiate(self, table: dict | None = None) -> Model:
        """The model with its settings from a ``[physics]`` table (its ``model`` key ignored)."""
        table = {k: v for k, v in (table or {}).items() if k != "model"}
        try:
            settings = self.cls.Settings(**table)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(table)"
            raise self._fail(f"{self.cls.__name__} setting physics.{loc}: {err['msg']}") from None
        try:
            return self.cls(settings)
        except Exception as exc:
            raise self._fail(f"{self.cls.__name__}(settings) raised {_one_line(exc)}") from None

    def parameter_names(self, model: Model, names: Sequence[str] | None = None) -> list[str]:
        """The parameter names, checked against ``names`` (e.g. the case's) when given.

        ``parameters()`` returning an int P needs P names (default ``mu_0`` … ``mu_{P-1}``);
        returning names needs exactly these names in this order.
        """
        try:
            declared = model.parameters()
        except Exception as exc:
            raise self._fail(f"{self.cls.__name__}.parameters() raised {_one_line(exc)}") from None
        if isinstance(declared, bool) or not isinstance(declared, int | list | tuple):
            raise self._fail(f"{self.cls.__name__}.parameters() must return an int or a list of "
                             f"names, got {type(declared).__name__}")
        if isinstance(declared, int):
            if names is None:
                return [f"mu_{k}" for k in range(declared)]
            if len(names) != declared:
                raise self._fail(f"model {self.cls.name!r} has {declared} parameters, the case "
                                 f"declares {len(names)}: {list(names)}")
            return list(names)
        declared = [str(n) for n in declared]
        if names is not None and list(names) != declared:
            raise self._fail(f"model {self.cls.name!r} expects the parameters {declared}, the "
                             f"case declares {list(names)}")
        return declared

    def check(self, model: Model, case: Any) -> list[tuple[str, str]]:
        """The model's own (key, message) problems with a case."""
        try:
            return [(str(k), str(m)) for k, m in (model.check(case) or ())]
        except Exception as exc:
            raise self._fail(f"{self.cls.__name__}.check raised {_one_line(exc)}") from None

    def build(self, model: Model, mesh, names: Sequence[str] | None = None,
              tags: dict | None = None) -> tuple[Problem, Context]:
        """Run ``model.build`` on ``mesh`` and check what it returns (collective).

        Returns the Problem and the Context (whose ``mu`` holds the parameter Constants).
        """
        names = self.parameter_names(model, names)
        from dolfinx import fem

        ctx = Context(mesh=mesh, comm=mesh.comm, settings=model.settings,
                      mu=Parameters(mesh, names), tags=dict(tags or {}),
                      t=fem.Constant(mesh, 0.0), dt=fem.Constant(mesh, 1.0))
        try:
            problem = model.build(ctx)
        except Exception as exc:
            raise self._fail(f"{self.cls.__name__}.build raised {_one_line(exc)}") from None
        self.check_problem(model, problem, ctx)
        return problem, ctx

    def check_problem(self, model: Model, problem: Any, ctx: Context) -> None:
        """Refuse a Problem that hybrid cannot use, with a one-line reason."""
        import ufl
        from dolfinx import fem

        who = f"{self.cls.__name__}.build"
        if not isinstance(problem, Problem):
            raise self._fail(f"{who} must return a hybrid.model.Problem, got "
                             f"{type(problem).__name__}")
        if not isinstance(problem.u, fem.Function):
            raise self._fail(f"{who}: Problem.u must be a dolfinx fem.Function (the unknown), "
                             f"got {type(problem.u).__name__}")
        if not isinstance(problem.F, ufl.Form) or problem.F.empty():
            raise self._fail(f"{who}: Problem.F must be a non-empty UFL form F(u; v)")
        args = problem.F.arguments()
        if not args:
            raise self._fail(f"{who}: the residual F has no test function; write F(u; v) with "
                             f"v = ufl.TestFunction(V)")
        if len(args) > 1:
            raise self._fail(f"{who}: the residual F has {len(args)} arguments; write F(u; v) "
                             f"with u a fem.Function, not a TrialFunction")
        if args[0].ufl_function_space() != problem.u.ufl_function_space():
            raise self._fail(f"{who}: the test function of F is not on the space of u")
        if problem.u not in problem.F.coefficients():
            raise self._fail(f"{who}: the residual F does not depend on u")
        for bc in problem.bcs:
            if not isinstance(bc, fem.DirichletBC):
                raise self._fail(f"{who}: Problem.bcs must hold fem.DirichletBC objects, got "
                                 f"{type(bc).__name__}")
        try:
            expected = list(model.qoi_names())
        except Exception as exc:
            raise self._fail(f"{self.cls.__name__}.qoi_names() raised {_one_line(exc)}") from None
        if sorted(problem.qoi) != sorted(expected):
            raise self._fail(f"{who}: Problem.qoi has {sorted(problem.qoi)}, qoi_names() says "
                             f"{sorted(expected)}")
        if problem.time is not None and not isinstance(problem.time, TimeGrid):
            raise self._fail(f"{who}: Problem.time must be a hybrid.model.TimeGrid, got "
                             f"{type(problem.time).__name__}")
        if problem.u_prev is not None and not isinstance(problem.u_prev, fem.Function):
            raise self._fail(f"{who}: Problem.u_prev must be a fem.Function on the space of u")
        if problem.mass is not None and (not isinstance(problem.mass, ufl.Form)
                                         or problem.u not in problem.mass.coefficients()):
            raise self._fail(f"{who}: Problem.mass must be a form m(u, v) in u and v")
        if problem.time is None and (problem.u_prev is not None or problem.mass is not None
                                     or problem.initial is not None):
            raise self._fail(f"{who}: Problem.u_prev, mass and initial need Problem.time "
                             "(a TimeGrid)")
        for name, form in problem.qoi.items():
            if not isinstance(form, ufl.Form) or form.arguments():
                raise self._fail(f"{who}: QoI {name!r} must be a scalar form (no test or "
                                 f"trial function)")


def _model_classes(module) -> list[type[Model]]:
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Model) and obj is not Model
            and obj.__module__ == module.__name__]


def _pick(module, cls_name: str | None, origin: str) -> type[Model]:
    if cls_name is None:
        found = _model_classes(module)
        if len(found) != 1:
            names = [c.__name__ for c in found]
            raise ModelError(f"{origin}: name the model class (file.py:Class); the file defines "
                             f"{len(found)} Model subclasses {names}")
        obj = found[0]
    else:
        if not hasattr(module, cls_name):
            names = [c.__name__ for c in _model_classes(module)]
            raise ModelError(f"{origin}: no class {cls_name!r} (Model subclasses found: {names})")
        obj = getattr(module, cls_name)
    if not (inspect.isclass(obj) and issubclass(obj, Model)):
        raise ModelError(f"{origin}: {obj.__name__ if hasattr(obj, '__name__') else cls_name} "
                         f"is not a subclass of hybrid.model.Model")
    if not isinstance(getattr(obj, "name", None), str) or not obj.name:
        raise ModelError(f"{origin}: {obj.__name__} must set the class attribute name = '...'")
    settings = getattr(obj, "Settings", None)
    if not (inspect.isclass(settings) and issubclass(settings, Settings)):
        raise ModelError(f"{origin}: {obj.__name__}.Settings must subclass hybrid.model.Settings")
    return obj


def _load_file(path: Path, cls_name: str | None, reference: str) -> LoadedModel:
    origin = str(path)
    if not path.is_file():
        raise ModelError(f"{origin}: model file does not exist (model = {reference!r})")
    sha = _sha256_file(path)
    mod_name = f"hybrid_model_{sha[:16]}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ModelError(f"{origin}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[mod_name]
            raise ModelError(f"{origin}: importing the model raised {_one_line(exc)}") from None
    return LoadedModel(_pick(module, cls_name, origin), reference, sha, origin)


def _module_origin(module) -> tuple[str, str]:
    path = getattr(module, "__file__", None)
    if path and Path(path).is_file():
        return str(path), _sha256_file(Path(path))
    return module.__name__, ""


def _load_module(mod_name: str, cls_name: str | None, reference: str) -> LoadedModel:
    try:
        module = importlib.import_module(mod_name)
    except (Exception, SystemExit) as exc:
        raise ModelError(f"{mod_name}: importing the model module raised {_one_line(exc)} "
                         f"(model = {reference!r})") from None
    origin, sha = _module_origin(module)
    return LoadedModel(_pick(module, cls_name, origin), reference, sha, origin)


def load_model(reference: str, case_dir: str | Path = ".") -> LoadedModel:
    """Resolve a model reference (see the module docstring); relative files from ``case_dir``."""
    from hybrid.model.library import BUILTIN

    ref = str(reference).strip()
    if _NAME.fullmatch(ref):
        if ref in BUILTIN:
            mod_name, cls_name = BUILTIN[ref].split(":")
            return _load_module(mod_name, cls_name, ref)
        eps = md.entry_points(group=ENTRY_POINT_GROUP, name=ref)
        for ep in eps:
            try:
                obj = ep.load()
            except (Exception, SystemExit) as exc:
                raise ModelError(f"{ep.value}: loading entry point {ref!r} of group "
                                 f"{ENTRY_POINT_GROUP} raised {_one_line(exc)}") from None
            if inspect.ismodule(obj):  # "pkg.mod" without ":Class": its one Model subclass
                module, cls_name = obj, None
            else:
                module, cls_name = sys.modules.get(getattr(obj, "__module__", "")), obj.__name__
            if module is None:
                raise ModelError(f"{ep.value}: entry point {ref!r} is not a class of a module")
            origin, sha = _module_origin(module)
            return LoadedModel(_pick(module, cls_name, origin), ref, sha, origin)
        raise ModelError(f"model {ref!r}: not a built-in model ({', '.join(sorted(BUILTIN))}) "
                         f"nor an entry point of group {ENTRY_POINT_GROUP}")
    left, sep, right = ref.rpartition(":")
    if not sep:
        left, right = ref, ""
    if left.endswith(".py"):
        path = Path(left).expanduser()
        if not path.is_absolute():
            path = Path(case_dir) / path
        if right and not _NAME.fullmatch(right):
            raise ModelError(f"{path}: {right!r} is not a class name (model = {ref!r})")
        return _load_file(path.resolve(), right or None, ref)
    if sep and _DOTTED.fullmatch(left) and _NAME.fullmatch(right):
        return _load_module(left, right, ref)
    raise ModelError(f"model {ref!r}: expected a built-in name, 'path/to/file.py:Class' or "
                     f"'package.module:Class'")
