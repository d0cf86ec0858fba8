"""A box beam [0, L]×[0, H]×[0, W] of tetrahedra in K material slabs along its length (gmsh).

    python meshes/beam.py --length 10 --materials 2 --size 0.5 --out meshes/beam.msh

The slabs k = 0 … K−1, x ∈ [kL/K, (k+1)L/K], are fragments of one OCC box, so material
interfaces lie on mesh faces. Physical groups (names and tags): volumes ``material_k`` (tag
k + 1), the clamped face x = 0 ``clamped`` (101) and the loaded face x = L ``loaded`` (102).
hybrid reads it with ``dolfinx.io.gmsh`` (``[mesh] type = "file"``, ``gdim = 3``) and hands
the groups to the model as ``ctx.tags`` (the ``elasticity`` model uses them by name).
"""

from __future__ import annotations

import argparse

import gmsh

CLAMPED, LOADED = 101, 102


def build(length: float = 10.0, height: float = 1.0, width: float = 1.0, materials: int = 2,
          size: float = 0.5, out: str = "meshes/beam.msh") -> str:
    """Mesh the beam and write it to ``out`` (gmsh 4 format); return ``out``."""
    if not 1 <= materials <= 4:
        raise ValueError(f"materials must be 1 … 4, got {materials}")
    init = not gmsh.isInitialized()
    if init:
        gmsh.initialize(["-v", "0"])
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add("beam")
    occ = gmsh.model.occ
    dx = length / materials
    slabs = [occ.addBox(k * dx, 0, 0, dx, height, width) for k in range(materials)]
    if materials > 1:
        occ.fragment([(3, s) for s in slabs[:1]], [(3, s) for s in slabs[1:]])
    occ.synchronize()
    for k in range(materials):
        cx = (k + 0.5) * dx
        vols = [v for _, v in gmsh.model.getEntities(3)
                if abs(occ.getCenterOfMass(3, v)[0] - cx) < 1e-9 * length]
        gmsh.model.addPhysicalGroup(3, vols, k + 1, name=f"material_{k}")
    for x, tag, name in ((0.0, CLAMPED, "clamped"), (length, LOADED, "loaded")):
        faces = [f for _, f in gmsh.model.getEntities(2)
                 if max(abs(b - x) for b in occ.getBoundingBox(2, f)[::3]) < 1e-6 * length]
        gmsh.model.addPhysicalGroup(2, faces, tag, name=name)
    gmsh.option.setNumber("Mesh.CharacteristicLengthMax", size)
    gmsh.option.setNumber("Mesh.CharacteristicLengthMin", size)
    gmsh.model.mesh.generate(3)
    gmsh.write(out)
    gmsh.model.remove()
    if init:
        gmsh.finalize()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=float, default=10.0)
    ap.add_argument("--height", type=float, default=1.0)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--materials", type=int, default=2)
    ap.add_argument("--size", type=float, default=0.5)
    ap.add_argument("--out", default="meshes/beam.msh")
    a = ap.parse_args()
    build(a.length, a.height, a.width, a.materials, a.size, a.out)
