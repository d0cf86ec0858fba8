"""Provenance: package versions and host facts recorded in stores and reports."""

from __future__ import annotations

import importlib.metadata as md
import platform
import socket
import sys

_PACKAGES = ("hybrid", "dolfinx-solver-real", "fenics-dolfinx", "fenics-basix", "fenics-ufl",
             "fenics-ffcx", "petsc4py", "mpi4py", "numpy", "scipy", "h5py", "torch")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results (those installed)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(),
           "host": socket.gethostname()}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def fem_versions() -> dict[str, str]:
    """Add the PETSc and MPI library versions (imports the FEM stack; FEM side only)."""
    import dolfinx
    from mpi4py import MPI
    from petsc4py import PETSc

    import hybrid.fem  # noqa: F401  (orders MPI first)

    out = package_versions()
    out["dolfinx"] = dolfinx.__version__
    out["petsc"] = ".".join(str(v) for v in PETSc.Sys.getVersion())
    out["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    return out
