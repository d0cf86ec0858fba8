"""The monodomain slab in 3-D (hybrid/model/library/monodomain.py, cases/monodomain_slab3d.toml).

(a) The conductivity tensor with a transmurally rotating fibre, α(z) = α0 + Δα (z − z0)/Lz:
    for linear g_i = a_i·x (exact in P1) r(g1; g2) = a1ᵀ (∫ D(z) dx) a2, and the z-average
    of f⊗f has a closed form (mean cos²α = ½ + (sin 2α1 − sin 2α0)/(4Δα), …), so a wrong
    sign, direction or end point of the rotation fails.
(b) A z-uniform problem on a thin box (constant fibre along x, a corner stimulus through
    the thickness) is the 2-D slab extruded: c_l/c_t = √(σ_l/σ_t) = 2 within the 2-D test's
    resolution error at h = 0.5 mm.
(c) The case file (gmsh mesh of meshes/slab3d.py, physical groups) validates and runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ufl

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError
from hybrid.fem import MPI
from hybrid.fem.splitting import SplittingSolver, solve_case, value_at
from hybrid.model.library.monodomain import Monodomain

CASES = Path(__file__).resolve().parents[1] / "cases"

from dolfinx import fem  # noqa: E402  (after hybrid.fem: the wheel's MPI first)
from dolfinx import mesh as dmesh  # noqa: E402


def box_problem(size, n, region, angle=0.0, rotation=0.0, t_end=100.0, dt=0.2,
                sl=0.12, st=0.03, comm=MPI.COMM_WORLD):
    s = Monodomain.Settings(stimulus_region=region, fibre_angle=angle,
                            fibre_rotation=rotation, t_end=t_end, dt=dt)
    msh = dmesh.create_box(comm, [[0.0, 0.0, 0.0], size], n)
    ctx = hm.Context(mesh=msh, comm=comm, settings=s,
                     mu=hm.Parameters(msh, ["sigma_l", "sigma_t"], [sl, st]))
    return Monodomain(s).build(ctx), s


def test_rotating_fibre_tensor_is_the_closed_form_average():
    size, a0, rot, sl, st = [4.0, 3.0, 2.0], -60.0, 120.0, 0.12, 0.03
    pb, s = box_problem(size, [2, 2, 8], [[0, 1], [0, 1], [0, 2]], angle=a0, rotation=rot)
    V, msh = pb.u.function_space, pb.u.function_space.mesh
    al0, d = np.deg2rad(a0), np.deg2rad(rot)
    al1 = al0 + d
    cc = 0.5 + (np.sin(2 * al1) - np.sin(2 * al0)) / (4 * d)
    sc = (np.cos(2 * al0) - np.cos(2 * al1)) / (4 * d)
    ff = np.array([[cc, sc, 0.0], [sc, 1.0 - cc, 0.0], [0.0, 0.0, 0.0]])
    vol = np.prod(size)
    D = vol * (st * np.eye(3) + (sl - st) * ff) / (s.chi * s.C_m)
    avec = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, -2.0, 0.7])
    g = []
    for a in avec:
        gi = fem.Function(V)
        gi.interpolate(lambda x, a=a: a[0] * x[0] + a[1] * x[1] + a[2] * x[2])
        g.append(gi)
    phi = pb.F.arguments()[0]
    for a1, g1 in zip(avec, g, strict=True):
        for a2, g2 in zip(avec, g, strict=True):
            form = fem.form(ufl.replace(pb.F, {pb.u: g1, phi: g2}))
            val = msh.comm.allreduce(fem.assemble_scalar(form), op=MPI.SUM)
            want = np.array(a1) @ D @ np.array(a2)
            assert abs(val - want) < 1e-6 * np.abs(D).max(), (a1, a2, val, want)
    # the mean over z is not the value at either face: a constant-angle tensor differs
    assert abs(cc - np.cos(al0) ** 2) > 0.1 and abs(cc - np.cos(al1) ** 2) > 0.1


def test_thin_box_velocity_ratio_is_the_2d_one():
    """σ_l/σ_t = 4 on [0, 20] × [0, 10] × [0, 0.5] mm, 40 × 20 × 1 cells: c_l/c_t ≈ 2.

    The 2-D slab measures 1.945 at this h (tests/test_monodomain.py); here measured 1.947,
    and T differs by 0.23 ms between z = 0 and z = 0.5 at x = 12 mm (the tetrahedra are not
    z-symmetric).
    Swapping σ_l and σ_t gives 0.5, a ratio σ_l/σ_t 4.
    """
    pb, _ = box_problem([20.0, 10.0, 0.5], [40, 20, 1], [[0.0, 2.0], [0.0, 1.0], [0.0, 0.5]],
                        t_end=170.0)
    solver = SplittingSolver(pb)
    r = solver.run()
    solver.destroy()
    V = pb.u.function_space
    at = lambda p: value_at(V, r.activation, p)  # noqa: E731
    cl = 8.0 / (at([16, 0, 0]) - at([8, 0, 0]))
    ct = 4.0 / (at([0, 8, 0]) - at([0, 4, 0]))
    assert abs(cl / ct - 2.0) < 0.15, (cl, ct, cl / ct)
    assert abs(at([12, 0, 0]) - at([12, 0, 0.5])) < 0.5      # ≈ z-uniform


def test_slab3d_case_runs_short():
    """The case (41 × 41 × 7 nodes from meshes/slab3d.py) for 8 ms: the corner column fires."""
    case = load_case(CASES / "monodomain_slab3d.toml")
    assert case.mesh.gdim == 3 and case.mesh_file.name == "slab3d.msh"
    r, V, solver = solve_case(case, MPI.COMM_WORLD, t_end=8.0)
    solver.destroy()
    n = MPI.COMM_WORLD.allreduce(r.activation.size, op=MPI.SUM)
    assert n == 41 * 41 * 7
    assert value_at(V, r.activation, [0, 0, 0]) < 2.0 and value_at(V, r.activation, [0, 0, 3]) < 2.0
    assert np.isnan(value_at(V, r.activation, [10, 10, 1.5]))
    assert r.steps == 80


def test_rotation_on_a_2d_mesh_refused():
    text = (CASES / "monodomain_slab.toml").read_text().replace(
        "[physics]\n", "[physics]\nfibre_rotation = 90.0\n")
    with pytest.raises(CaseError, match=r"physics\.fibre_rotation: a transmural rotation needs"):
        parse_case(text, CASES / "x.toml")
