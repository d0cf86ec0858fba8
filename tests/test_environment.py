"""The conda-forge route (environment.yml) lists every runtime dependency of pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> the name environment.yml uses for it (conda-forge or pip)
CONDA_NAME = {"dolfinx-solver-real": "fenics-dolfinx", "torch": "pytorch",
              "gmsh": "python-gmsh"}


def _names(lines: list[str]) -> set[str]:
    out = set()
    for line in lines:
        m = re.match(r"\s*-\s*([A-Za-z0-9_.\-]+)", line)
        if m:
            out.add(m.group(1).lower())
    return out


def test_every_runtime_dependency_is_in_environment_yml():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = _names((ROOT / "environment.yml").read_text().splitlines())
    missing = []
    for d in deps:
        name = re.split(r"[\[=<>!~ ]", d, maxsplit=1)[0].lower()
        if CONDA_NAME.get(name, name) not in listed:
            missing.append(name)
    assert not missing, f"environment.yml lacks {missing}"
    assert "umbridge" in listed and "pytest-mpi" in listed
