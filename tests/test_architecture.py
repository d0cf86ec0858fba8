"""The house's rules (docs/architecture.md), read from the source with ``ast``.

- Arrows point one way: cli → workflows/serve → surrogate/inference/fem → core → model → errors;
  ``hybrid/baselines`` (comparisons such as the PINN) imports errors and core only.
- Only ``hybrid/fem`` and the model API/library (``hybrid/model``) import dolfinx, ufl,
  petsc4py, basix or ffcx; only they and the MPI channel of ``hybrid/serve`` import mpi4py.
- Command modules of ``hybrid/cli`` import :mod:`hybrid.cli.common`, never each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hybrid"

# what each layer may import, besides itself
ALLOWED = {
    "errors": set(),
    "model": {"errors"},
    "core": {"errors", "model"},
    "fem": {"errors", "core", "model"},
    "surrogate": {"errors", "core"},
    "inference": {"errors", "core"},
    "baselines": {"errors", "core"},   # the PINN baseline: torch, never the FEM stack
    "serve": {"errors", "core", "fem", "surrogate", "inference"},
    "workflows": {"errors", "core", "model", "fem", "surrogate", "inference"},
    "cli": {"errors", "core", "model", "fem", "surrogate", "inference", "serve", "workflows"},
}
# modules kept at their former paths for users' scripts: aliases of the moved module
SHIMS = {"hybrid.case": "core", "hybrid.store": "core", "hybrid.infer": "workflows"}
FEM_STACK = ("dolfinx", "ufl", "petsc4py", "basix", "ffcx", "dolfinx_solver")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    if module in SHIMS:
        return SHIMS[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hybrid"


def _imports(path: Path):
    """(line, imported module) for every import statement, at any depth (lazy ones too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hybrid":
                for a in node.names:
                    yield node.lineno, f"hybrid.{a.name}"
            else:
                yield node.lineno, node.module


SOURCES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_layer():
    top = {_layer(_module(p)) for p in SOURCES}
    assert top <= set(ALLOWED) | {"hybrid", "__main__"}, top - set(ALLOWED)


def test_imports_point_one_way():
    wrong = []
    for path in SOURCES:
        src = _layer(_module(path))
        if src not in ALLOWED:   # hybrid/__init__ (lazy names), __main__
            continue
        for line, mod in _imports(path):
            if not mod.startswith("hybrid.") or _layer(mod) == src:
                continue
            if _layer(mod) not in ALLOWED[src]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} {src} → {mod}")
    assert not wrong, "\n".join(wrong)


def test_only_fem_and_models_import_the_fem_stack():
    wrong = []
    for path in SOURCES:
        src = _layer(_module(path))
        if src in ("fem", "model"):
            continue
        for line, mod in _imports(path):
            root = mod.split(".")[0]
            if root in FEM_STACK or (root == "mpi4py" and src != "serve"):
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_commands_import_the_common_helper_never_each_other():
    commands = [p for p in (ROOT / "cli").glob("*.py")
                if p.stem not in ("__init__", "app", "common")]
    assert {p.stem for p in commands} >= {"fem", "surrogate", "infer", "serve"}
    for path in commands:
        cli_imports = {mod for _, mod in _imports(path) if mod.startswith("hybrid.cli")}
        assert cli_imports <= {"hybrid.cli.common"}, (path.name, cli_imports)


@pytest.mark.parametrize("old, new", [("hybrid.infer", "hybrid.workflows.infer"),
                                      ("hybrid.store", "hybrid.core.store"),
                                      ("hybrid.case", "hybrid.core.case")])
def test_former_import_paths_are_the_moved_modules(old, new):
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)


def test_public_names_of_the_package():
    import hybrid
    from hybrid.core.store import SnapshotStore
    from hybrid.infer import run_inference
    from hybrid.workflows.infer import run_inference as moved

    assert hybrid.SnapshotStore is SnapshotStore and run_inference is moved
    assert hybrid.Surrogate.__module__.startswith("hybrid.surrogate")
