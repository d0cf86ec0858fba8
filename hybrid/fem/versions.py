"""Versions of the FEM stack for provenance records (not collective; FEM side only)."""

from __future__ import annotations

import dolfinx
from mpi4py import MPI
from petsc4py import PETSc

from hybrid.core.provenance import package_versions


def fem_versions() -> dict[str, str]:
    """Add the PETSc and MPI library versions (imports the FEM stack; FEM side only)."""
    out = package_versions()
    out["dolfinx"] = dolfinx.__version__
    out["petsc"] = ".".join(str(v) for v in PETSc.Sys.getVersion())
    out["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    return out
