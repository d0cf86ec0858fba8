"""Built-in meshes in the case's own units: [mesh] type = "rectangle" / "box" with ``extent``.

The mesh spans exactly the extent (coordinate min/max over all ranks), has the requested
cells per direction (2·nx·ny triangles, 6·nx·ny·nz tetrahedra; ∫1 dx is the volume), and
bad tables are refused in one line naming the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import MeshSection, parse_case
from hybrid.errors import CaseError
from hybrid.fem import MPI
from hybrid.fem.mesh import build_mesh

CASES = Path(__file__).resolve().parents[1] / "cases"

import ufl  # noqa: E402  (after hybrid.fem: the wheel's MPI first)
from dolfinx import fem  # noqa: E402


def _span_and_cells(msh):
    x = msh.geometry.x[:, : msh.geometry.dim]
    lo = msh.comm.allreduce(x.min(axis=0), op=MPI.MIN)
    hi = msh.comm.allreduce(x.max(axis=0), op=MPI.MAX)
    tdim = msh.topology.dim
    n = msh.comm.allreduce(msh.topology.index_map(tdim).size_local, op=MPI.SUM)
    one = fem.form(fem.Constant(msh, 1.0) * ufl.dx(msh))
    vol = msh.comm.allreduce(fem.assemble_scalar(one), op=MPI.SUM)
    return lo, hi, n, vol


def test_rectangle_in_mm_with_cells_per_direction():
    sec = MeshSection(type="rectangle", extent=[[-1.0, 19.0], [2.0, 12.0]], cells=[8, 5])
    lo, hi, n, vol = _span_and_cells(build_mesh(sec, MPI.COMM_WORLD))
    np.testing.assert_allclose(lo, [-1.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(hi, [19.0, 12.0], atol=1e-12)
    assert n == 2 * 8 * 5
    assert abs(vol - 200.0) < 1e-10
    quad = MeshSection(type="rectangle", extent=[[0, 2], [0, 1]], cells=3,
                       cell_type="quadrilateral")
    assert _span_and_cells(build_mesh(quad, MPI.COMM_WORLD))[2] == 9


def test_box_in_mm():
    sec = MeshSection(type="box", extent=[[0, 4.0], [0, 2.0], [1.0, 1.5]], cells=[4, 2, 1])
    assert sec.cells_per_direction == [4, 2, 1]
    lo, hi, n, vol = _span_and_cells(build_mesh(sec, MPI.COMM_WORLD))
    np.testing.assert_allclose(lo, [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(hi, [4.0, 2.0, 1.5], atol=1e-12)
    assert n == 6 * 4 * 2 * 1
    assert abs(vol - 4.0) < 1e-10
    assert MeshSection(type="box", extent=[[0, 1]] * 3, cells=2).cells_per_direction == [2] * 3


@pytest.mark.parametrize("mesh,match", [
    ('type = "rectangle"\ncells = 4', r"mesh: .*needs 'extent'"),
    ('type = "rectangle"\ncells = 4\nextent = [[0, 1]]', r"extent of a rectangle must be 2"),
    ('type = "box"\ncells = 4\nextent = [[0, 1], [0, 1], [2, 1]]', r"lo < hi, got"),
    ('type = "box"\ncells = [4, 4]\nextent = [[0, 1], [0, 1], [0, 1]]', r"one int or 3 ints"),
    ('type = "rectangle"\ncells = [4, 0]\nextent = [[0, 1], [0, 1]]',
     r"mesh\.cells: Input should be greater than or equal to 1"),
    ('type = "unit_square"\ncells = [4, 4]', r"list per direction is for rectangle/box"),
    ('type = "unit_square"\ncells = 4\nextent = [[0, 1], [0, 1]]', r"'extent' .* belongs to"),
    ('type = "rectangle"\ncells = 4\nextent = [[0, 1], [0, 1]]\ncell_type = "tetrahedron"',
     r"cell_type 'tetrahedron' does not fit a rectangle"),
])
def test_bad_mesh_tables_refused_in_one_line(mesh, match):
    text = (CASES / "thermal_block.toml").read_text()
    start = text.index("[mesh]")
    end = text.index("\n[", start + 1)
    bad = text[:start] + "[mesh]\n" + mesh + "\n" + text[end:]
    with pytest.raises(CaseError, match=match) as err:
        parse_case(bad, CASES / "bad.toml")
    assert "\n" not in str(err.value)


def test_unit_square_fingerprint_has_no_extent():
    """Stores of existing cases keep their fingerprints (no new key for old mesh types)."""
    from hybrid.core.case import load_case

    fp = load_case(CASES / "thermal_block.toml").fingerprint()["mesh"]
    assert "extent" not in fp and "interval" not in fp
    slab = load_case(CASES / "monodomain_slab.toml").fingerprint()["mesh"]
    assert slab["extent"] == [[0.0, 20.0], [0.0, 20.0]] and slab["type"] == "rectangle"


def test_grid_and_fluxes_refused_off_the_unit_square():
    text = (CASES / "monodomain_slab.toml").read_text()
    with pytest.raises(CaseError, match=r"observations\.grid: the grid covers the unit square"):
        parse_case(text + "\n[observations]\ngrid = 3\n", CASES / "x.toml")
