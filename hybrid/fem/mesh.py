"""Meshes from the [mesh] section of a case: unit square/cube, interval, or a gmsh file.

``type = "interval"`` with ``cells`` and ``interval = [x0, x1]`` (default [0, 1]) is a 1-D mesh.
"""

from __future__ import annotations

from pathlib import Path

from dolfinx import mesh as dmesh
from mpi4py import MPI

from hybrid.core.case import MeshSection
from hybrid.errors import CaseError

_CELLS = {
    "triangle": dmesh.CellType.triangle,
    "quadrilateral": dmesh.CellType.quadrilateral,
    "tetrahedron": dmesh.CellType.tetrahedron,
    "hexahedron": dmesh.CellType.hexahedron,
}


def build_mesh(section: MeshSection, comm: MPI.Intracomm, mesh_file=None) -> dmesh.Mesh:
    """Create the mesh described by ``section`` on ``comm`` (collective on ``comm``)."""
    if section.type == "unit_square":
        cell = _CELLS[section.cell_type or "triangle"]
        return dmesh.create_unit_square(comm, section.cells, section.cells, cell_type=cell)
    if section.type == "interval":
        x0, x1 = section.interval or (0.0, 1.0)
        return dmesh.create_interval(comm, section.cells, [x0, x1])
    if section.type == "unit_cube":
        cell = _CELLS[section.cell_type or "tetrahedron"]
        n = section.cells
        return dmesh.create_unit_cube(comm, n, n, n, cell_type=cell)
    return _read_msh(mesh_file, comm, section.gdim)


def _read_msh(mesh_file: Path, comm: MPI.Intracomm, gdim: int):
    """Read a gmsh file on rank 0 and distribute it (``dolfinx.io.gmsh.model_to_mesh``).

    Unlike ``dolfinx.io.gmsh.read_from_msh`` this keeps gmsh quiet (its own ``Info``/``Error``
    lines would precede hybrid's one-line error) and tells every rank about a file gmsh
    cannot read before the collective distribution starts (no rank is left waiting).
    """
    import gmsh
    from dolfinx.io import gmsh as dgmsh

    err = None
    if comm.rank == 0:
        gmsh.initialize()
        gmsh.option.setNumber("General.Terminal", 0)
        try:
            gmsh.model.add("hybrid mesh")
            gmsh.merge(str(mesh_file))
        except Exception as exc:  # gmsh raises plain Exceptions for unreadable files
            err = str(exc) or "unreadable"
            gmsh.finalize()
    err = comm.bcast(err, root=0)
    if err is not None:
        raise CaseError(f"{mesh_file}: cannot read mesh ({err})")
    try:
        data = dgmsh.model_to_mesh(gmsh.model, comm, 0, gdim=gdim)
    except Exception as exc:
        raise CaseError(f"{mesh_file}: cannot read mesh ({exc})") from None
    finally:
        if comm.rank == 0:
            gmsh.finalize()
    return data.mesh
