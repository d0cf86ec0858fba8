"""A cardiac slab [0, Lx]×[0, Ly]×[0, Lz] mm of tetrahedra, structured (gmsh transfinite).

    python meshes/slab3d.py --size 0.5 --out meshes/slab3d.msh          # 41×41×7 nodes
    python meshes/slab3d.py --size 0.13 --out runs/slab3d_fine.msh     # ≈ 5.6e5 nodes

One OCC box, every edge divided into round(L/size) equal cells, a transfinite volume: each
hexahedral cell is split into 6 tetrahedra, so the mesh is the same in every column and its
P1 node count is ∏(n_i + 1). Coordinates are in mm (the monodomain model's unit).
Physical groups (names and tags): the volume ``tissue`` (1), the faces z = 0 ``endo`` (101)
and z = Lz ``epi`` (102). hybrid reads it with ``[mesh] type = "file"``, ``gdim = 3``.
"""

from __future__ import annotations

import argparse

import gmsh

TISSUE, ENDO, EPI = 1, 101, 102


def cells(length: float, size: float) -> int:
    """Cells along an edge of ``length`` for a target ``size`` (at least 1)."""
    return max(1, round(length / size))


def build(lx: float = 20.0, ly: float = 20.0, lz: float = 3.0, size: float = 0.5,
          out: str = "meshes/slab3d.msh") -> str:
    """Mesh the slab and write it to ``out`` (gmsh 4 format); return ``out``."""
    if min(lx, ly, lz, size) <= 0:
        raise ValueError(f"lengths and size must be > 0, got {lx}, {ly}, {lz}, {size}")
    init = not gmsh.isInitialized()
    if init:
        gmsh.initialize(["-v", "0"])
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add("slab3d")
    occ = gmsh.model.occ
    box = occ.addBox(0.0, 0.0, 0.0, lx, ly, lz)
    occ.synchronize()
    mesh = gmsh.model.mesh
    for _, curve in gmsh.model.getEntities(1):
        x0, y0, z0, x1, y1, z1 = occ.getBoundingBox(1, curve)
        length = max(x1 - x0, y1 - y0, z1 - z0)
        mesh.setTransfiniteCurve(curve, cells(length, size) + 1)
    for _, face in gmsh.model.getEntities(2):
        mesh.setTransfiniteSurface(face)
    mesh.setTransfiniteVolume(box)
    gmsh.model.addPhysicalGroup(3, [box], TISSUE, name="tissue")
    for z, tag, name in ((0.0, ENDO, "endo"), (lz, EPI, "epi")):
        faces = [f for _, f in gmsh.model.getEntities(2)
                 if max(abs(b - z) for b in occ.getBoundingBox(2, f)[2::3]) < 1e-6 * lz]
        gmsh.model.addPhysicalGroup(2, faces, tag, name=name)
    mesh.generate(3)
    gmsh.write(out)
    gmsh.model.remove()
    if init:
        gmsh.finalize()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lx", type=float, default=20.0)
    ap.add_argument("--ly", type=float, default=20.0)
    ap.add_argument("--lz", type=float, default=3.0)
    ap.add_argument("--size", type=float, default=0.5)
    ap.add_argument("--out", default="meshes/slab3d.msh")
    a = ap.parse_args()
    build(a.lx, a.ly, a.lz, a.size, a.out)
