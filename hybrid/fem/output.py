"""Fields written for ParaView (XDMF) from a problem's current solution."""

from __future__ import annotations

from pathlib import Path

from dolfinx import fem, io


def write_xdmf(problem, path: Path) -> Path:
    """Write ``problem``'s mesh and current field ``u`` to ``path`` (XDMF + HDF5); collective.

    A field of degree > 1 is interpolated onto P1 first (XDMF shows vertex values).
    """
    u = problem.u
    if problem.V.ufl_element().embedded_superdegree > 1:
        u1 = fem.Function(fem.functionspace(problem.mesh, ("Lagrange", 1)), name="u")
        u1.interpolate(u)
        u = u1
    with io.XDMFFile(problem.mesh.comm, str(path), "w") as f:
        f.write_mesh(problem.mesh)
        f.write_function(u)
    return Path(path)
