"""Meshes from the [mesh] section of a case: unit square/cube, interval, rectangle, box, or a file.

``type = "interval"`` with ``cells`` and ``interval = [x0, x1]`` (default [0, 1]) is a 1-D mesh.
``type = "rectangle"`` / ``"box"`` with ``extent = [[x0, x1], [y0, y1](, [z0, z1])]`` and
``cells`` (an int, or one per direction) is the box ∏[x0_i, x1_i] in the case's own length
unit (``dolfinx.mesh.create_rectangle`` / ``create_box``): point sensors and stimulus regions
are then given in those coordinates.
A file is a gmsh ``.msh`` or an XDMF mesh (``.xdmf``: the first grid, as DOLFINx or meshio
write it; mesh only, no tags).
:func:`build_mesh_and_tags` also returns a gmsh file's physical groups as mesh tags, the
``ctx.tags`` a model receives: ``{"cells": MeshTags, "facets": MeshTags, "groups": {name:
(dim, tag)}}`` (empty for built-in meshes).
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
    return build_mesh_and_tags(section, comm, mesh_file)[0]


def build_mesh_and_tags(section: MeshSection, comm: MPI.Intracomm,
                        mesh_file=None) -> tuple[dmesh.Mesh, dict]:
    """The mesh of ``section`` and its tags (module docstring); collective on ``comm``."""
    if section.type == "file" and Path(mesh_file).suffix.lower() == ".xdmf":
        return _read_xdmf(mesh_file, comm), {}
    if section.type == "file":
        data = _read_msh(mesh_file, comm, section.gdim)
        groups = {name: (int(g.dim), int(g.tag)) for name, g in data.physical_groups.items()}
        tags = {k: t for k, t in (("cells", data.cell_tags), ("facets", data.facet_tags))
                if t is not None}
        return data.mesh, {**tags, "groups": groups}
    return _built_in(section, comm), {}


def _built_in(section: MeshSection, comm: MPI.Intracomm) -> dmesh.Mesh:
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
    if section.type in ("rectangle", "box"):
        ex = section.extent
        corners = [[b[0] for b in ex], [b[1] for b in ex]]
        n = section.cells_per_direction
        if section.type == "rectangle":
            return dmesh.create_rectangle(comm, corners, n,
                                          cell_type=_CELLS[section.cell_type or "triangle"])
        return dmesh.create_box(comm, corners, n,
                                cell_type=_CELLS[section.cell_type or "tetrahedron"])
    raise ValueError(f"not a built-in mesh type: {section.type!r}")


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
    return data


def _read_xdmf(mesh_file: Path, comm: MPI.Intracomm) -> dmesh.Mesh:
    """Read the first grid of an XDMF file (DOLFINx's ``mesh``, meshio's ``Grid``); collective.

    Rank 0 finds the grid's name in the XML and tells every rank (or the reason it cannot)
    before the collective read.
    """
    import xml.etree.ElementTree as ET

    from dolfinx.io import XDMFFile

    name, err = None, None
    if comm.rank == 0:
        try:
            grids = [g for g in ET.parse(mesh_file).iter("Grid")
                     if g.get("GridType", "Uniform") == "Uniform" and g.find("Topology")
                     is not None]
            name = grids[0].get("Name") if grids else None
            if name is None:
                err = "no uniform grid with a topology"
        except (ET.ParseError, OSError) as exc:
            err = str(exc) or "unreadable"
    name, err = comm.bcast((name, err), root=0)
    if err is not None:
        raise CaseError(f"{mesh_file}: cannot read mesh ({err})")
    try:
        with XDMFFile(comm, str(mesh_file), "r") as f:
            return f.read_mesh(name=name, ghost_mode=dmesh.GhostMode.none)
    except Exception as exc:
        raise CaseError(f"{mesh_file}: cannot read mesh ({exc})") from None
