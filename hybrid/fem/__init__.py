"""The finite-element side: the only package that imports dolfinx, petsc4py and ufl.

``dolfinx_solver`` (the PyPI wheel of DOLFINx) must be imported before ``dolfinx`` and
``petsc4py`` so that mpi4py loads the wheel's MPI first; a conda-forge install has no such
module and needs nothing.
"""

from __future__ import annotations

try:  # the dolfinx-solver-real wheel: order MPI ahead of the compiled bindings
    import dolfinx_solver  # noqa: F401
except ModuleNotFoundError:  # conda-forge or source installs
    pass

from mpi4py import MPI  # noqa: E402

__all__ = ["MPI"]
