"""Provenance: package versions and host facts recorded in stores and reports.

The FEM stack's library versions (PETSc, MPI) are :func:`hybrid.fem.versions.fem_versions`.
"""

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

