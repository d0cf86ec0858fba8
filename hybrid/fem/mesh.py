"""Meshes from the [mesh] section of a case: built-in unit square/cube or a gmsh file."""

from __future__ import annotations

from dolfinx import mesh as dmesh
from mpi4py import MPI

from hybrid.case import MeshSection
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
    if section.type == "unit_cube":
        cell = _CELLS[section.cell_type or "tetrahedron"]
        n = section.cells
        return dmesh.create_unit_cube(comm, n, n, n, cell_type=cell)
    from dolfinx.io import gmsh as dgmsh

    try:
        data = dgmsh.read_from_msh(str(mesh_file), comm, rank=0, gdim=section.gdim)
    except Exception as exc:  # gmsh raises plain Exceptions for unreadable files
        raise CaseError(f"{mesh_file}: cannot read mesh ({exc})") from None
    return data.mesh
