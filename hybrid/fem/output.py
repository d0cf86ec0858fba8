"""Fields written for ParaView (XDMF) from a problem's current solution."""

from __future__ import annotations

from pathlib import Path

from dolfinx import fem, io


def _p1_space(problem) -> fem.FunctionSpace:
    """P1 of the unknown's value shape (scalar, or a vector field's components)."""
    shape = problem.u.ufl_shape
    return fem.functionspace(problem.mesh, ("Lagrange", 1, shape) if shape else ("Lagrange", 1))


def write_xdmf(problem, path: Path) -> Path:
    """Write ``problem``'s mesh and current field ``u`` to ``path`` (XDMF + HDF5); collective.

    A field of degree > 1 is interpolated onto P1 first (XDMF shows vertex values).
    """
    u = problem.u
    if problem.V.ufl_element().embedded_superdegree > 1:
        u1 = fem.Function(_p1_space(problem), name="u")
        u1.interpolate(u)
        u = u1
    with io.XDMFFile(problem.mesh.comm, str(path), "w") as f:
        f.write_mesh(problem.mesh)
        f.write_function(u)
    return Path(path)


class XDMFSeries:
    """A time series of ``problem``'s field in one XDMF file (one step per call); collective.

    ``series(t, u)`` writes u at time t (P1-interpolated for degree > 1), the mesh once.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, problem, path: Path):
        self.path = Path(path)
        self._file = io.XDMFFile(problem.mesh.comm, str(self.path), "w")
        self._file.write_mesh(problem.mesh)
        self._p1 = None
        if problem.V.ufl_element().embedded_superdegree > 1:
            self._p1 = fem.Function(_p1_space(problem), name="u")

    def __call__(self, t: float, u: fem.Function) -> None:
        if self._p1 is not None:
            self._p1.interpolate(u)
            u = self._p1
        self._file.write_function(u, float(t))

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
