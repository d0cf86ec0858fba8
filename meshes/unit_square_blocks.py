"""Generate an unstructured triangle mesh of the unit square whose edges follow a B×B block grid.

    python meshes/unit_square_blocks.py --blocks 3 --size 0.05 --out meshes/unit_square_3x3.msh

The blocks are fragments of one OCC rectangle, so the thermal block's conductivity jumps lie
on mesh edges. Cells carry physical group k+1 for block k (k = ix + B·iy), the boundary
physical group 100. Read in DOLFINx with ``dolfinx.io.gmsh.read_from_msh`` (hybrid does this
for ``[mesh] type = "file"``).
"""

from __future__ import annotations

import argparse

import gmsh


def build(blocks: int, size: float, out: str) -> None:
    gmsh.initialize(["-v", "0"]) if not gmsh.isInitialized() else None
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add("unit_square_blocks")
    occ = gmsh.model.occ
    h = 1.0 / blocks
    tiles = {}
    for iy in range(blocks):
        for ix in range(blocks):
            tiles[ix + blocks * iy] = occ.addRectangle(ix * h, iy * h, 0, h, h)
    occ.fragment([(2, t) for t in tiles.values()], [])
    occ.synchronize()
    for k in range(blocks * blocks):
        ix, iy = k % blocks, k // blocks
        cx, cy = (ix + 0.5) * h, (iy + 0.5) * h
        tags = [s for _, s in gmsh.model.getEntities(2)
                if abs(occ.getCenterOfMass(2, s)[0] - cx) < 1e-9
                and abs(occ.getCenterOfMass(2, s)[1] - cy) < 1e-9]
        gmsh.model.addPhysicalGroup(2, tags, k + 1)
    boundary = [c for _, c in gmsh.model.getBoundary(gmsh.model.getEntities(2), combined=True,
                                                     oriented=False)]
    gmsh.model.addPhysicalGroup(1, boundary, 100)
    gmsh.option.setNumber("Mesh.CharacteristicLengthMax", size)
    gmsh.model.mesh.generate(2)
    gmsh.write(out)
    gmsh.finalize()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--size", type=float, default=0.05)
    ap.add_argument("--out", default="meshes/unit_square_3x3.msh")
    a = ap.parse_args()
    build(a.blocks, a.size, a.out)
