"""The monodomain plug-in verified (hybrid/model/library/monodomain.py, splitting loop).

(a) Nagumo cable v_t = D v_xx + k v(1 − v)(v − a): the front speed measured from the
    activation times at x = 20 and x = 40 (of [0, 60]) converges to the exact
    c = √(2Dk)(½ − a) under joint refinement (h, Δt)/2: rate 1 for Godunov, 2 for Strang
    (P1 in space contributes O(h²), h ∝ Δt), and the finest errors are bounded.
(c) The Aliev–Panfilov slab: conduction velocities along and across the fibres are in the
    ratio √(σ_l/σ_t) (5 % on 40×40 P1 cells, converging to it under refinement); exactly
    so (to solver tolerance) where the affine map x ↦ (x/√D_l, y/√D_t) carries the
    discrete problem onto itself; a fibre angle of 90° is the 0° field reflected in the
    diagonal; the assembled tensor, with a 30° fibre on a 20 × 10 mm rectangle mesh (in mm),
    is σ/(χC_m) to round-off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ufl

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError, ModelError
from hybrid.fem import MPI
from hybrid.fem.splitting import SplittingSolver, gather_by_coordinates, solve_case, value_at
from hybrid.model.library.monodomain import Monodomain

CASES = Path(__file__).resolve().parents[1] / "cases"

from dolfinx import fem  # noqa: E402  (after hybrid.fem: the wheel's MPI first)
from dolfinx import mesh as dmesh  # noqa: E402

LU = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
D, K, A = 1.0, 1.0, 0.1
C_EXACT = np.sqrt(2 * D * K) * (0.5 - A)


def cable_speed(n: int, dt: float, splitting: str, comm=MPI.COMM_WORLD) -> float:
    s = Monodomain.Settings(geometry="cable", ionic="nagumo", chi=1.0, C_m=1.0, nagumo_k=K,
                            nagumo_a=A, stimulus_region=[[0.0, 2.0]], stimulus_amplitude=1.0,
                            stimulus_duration=2.0, t_end=76.0, dt=dt, splitting=splitting)
    msh = dmesh.create_interval(comm, n, [0.0, 60.0])
    ctx = hm.Context(mesh=msh, comm=comm, settings=s, mu=hm.Parameters(msh, ["sigma"], [D]))
    pb = Monodomain(s).build(ctx)
    solver = SplittingSolver(pb, petsc_options=LU)
    r = solver.run()
    solver.destroy()
    V = pb.u.function_space
    return 20.0 / (value_at(V, r.activation, [40.0]) - value_at(V, r.activation, [20.0]))


# measured: godunov errors 1.7e-2, 8.6e-3, 4.3e-3 (rates 0.99, 0.99);
#           strang  errors 8.1e-4, 1.9e-4, 3.7e-5 (rates 2.08, 2.36)
@pytest.mark.parametrize("splitting,rate,finest", [("godunov", (0.85, 1.15), 5e-3),
                                                   ("strang", (1.8, 2.6), 5e-5)])
def test_nagumo_front_speed_converges(splitting, rate, finest):
    errs = np.array([abs(cable_speed(n, dt, splitting) - C_EXACT) / C_EXACT
                     for n, dt in ((150, 0.4), (300, 0.2), (600, 0.1))])
    rates = np.log2(errs[:-1] / errs[1:])
    assert np.all((rates > rate[0]) & (rates < rate[1])), (errs, rates)
    assert errs[-1] < finest, errs


def test_nagumo_case_file():
    r, V, solver = solve_case(load_case(CASES / "nagumo_cable.toml"), MPI.COMM_WORLD)
    solver.destroy()
    c = 20.0 / (value_at(V, r.activation, [40.0]) - value_at(V, r.activation, [20.0]))
    assert abs(c - C_EXACT) / C_EXACT < 1e-4, c
    assert r.steps == 800 and r.time_reaction > 0


def slab(n, size, region, angle=0.0, sl=0.12, st=0.03, t_end=260.0, dt=0.2,
         comm=MPI.COMM_WORLD, petsc=None):
    s = Monodomain.Settings(stimulus_region=region, fibre_angle=angle, t_end=t_end, dt=dt)
    msh = dmesh.create_rectangle(comm, [[0.0, 0.0], size], [n, n])
    ctx = hm.Context(mesh=msh, comm=comm, settings=s,
                     mu=hm.Parameters(msh, ["sigma_l", "sigma_t"], [sl, st]))
    pb = Monodomain(s).build(ctx)
    solver = SplittingSolver(pb, petsc_options=petsc)
    r = solver.run()
    solver.destroy()
    return pb.u.function_space, r


def test_slab_velocity_ratio():
    """σ_l/σ_t = 4: c_l/c_t = 2 between (8, 0)–(16, 0) and (0, 4)–(0, 8) mm.

    The stimulus [0, 2] × [0, 1] mm is the image of a square under x ↦ (x/√D_l, y/√D_t), so
    the continuum ratio is exactly 2; on this isotropic 40×40 mesh the across-fibre front
    (width ≈ 0.3 mm) is less resolved than the along-fibre one: measured 1.945 here, 1.966,
    1.945, 1.984, 1.996 on 20 … 160 cells (benchmarks/cardiac.py). Swapping σ_l and σ_t,
    or a ratio σ_l/σ_t instead of its square root, fails by far.
    """
    V, r = slab(40, [20.0, 20.0], [[0.0, 2.0], [0.0, 1.0]], t_end=170.0)
    at = lambda p: value_at(V, r.activation, p)  # noqa: E731  (mesh coordinates: mm)
    cl = 8.0 / (at([16, 0]) - at([8, 0]))
    ct = 4.0 / (at([0, 8]) - at([0, 4]))
    assert abs(cl / ct - 2.0) < 0.1, (cl, ct, cl / ct)
    assert 0.09 < cl < 0.13, cl     # ≈ √(2D*k)(½ − a) in AP units: 0.114 mm/ms


def test_slab_affine_invariance_exact():
    """On [0, 20] × [0, 10] mm with D_l = 4 D_t the field satisfies T(x, 0) = T(0, x/2)."""
    V, r = slab(24, [20.0, 10.0], [[0.0, 2.0], [0.0, 1.0]], t_end=120.0)
    x, t = gather_by_coordinates(V, r.activation)
    bottom = (np.abs(x[:, 1]) < 1e-12) & np.isfinite(t)
    assert bottom.sum() >= 10
    for xi, ti in zip(x[bottom, 0], t[bottom], strict=True):
        tj = value_at(V, r.activation, [0.0, xi / 2])    # mm: (x, 0) ↔ (0, x/2)
        assert abs(ti - tj) < 1e-6, (xi, ti, tj)


def test_fibre_angle_90_is_the_reflection():
    _, r0 = slab(16, [20.0, 20.0], [[0.0, 1.5], [0.0, 1.5]], angle=0.0, t_end=80.0)
    V, r90 = slab(16, [20.0, 20.0], [[0.0, 1.5], [0.0, 1.5]], angle=90.0, t_end=80.0)
    x, t0 = gather_by_coordinates(V, r0.activation)
    _, t90 = gather_by_coordinates(V, r90.activation)
    swap = np.lexsort(np.round(x, 10).T)            # sorted by (y, x): the reflected order
    assert np.isfinite(t0).sum() > 20
    np.testing.assert_allclose(t90[swap], t0, rtol=0, atol=1e-6)


def test_bad_case_refused():
    text = (CASES / "nagumo_cable.toml").read_text().replace("[[0.0, 2.0]]",
                                                              "[[2.0, 0.0]]")
    with pytest.raises(CaseError, match="stimulus_region"):
        parse_case(text, CASES / "bad.toml")


def test_conductivity_tensor_with_fibre_angle_and_slab_map():
    """r(g1; g2) = a1ᵀ D a2 for physical-linear g_i = a_i·x, D = (σ_t I + (σ_l−σ_t) f⊗f)/(χC_m).

    P1 represents linear functions exactly, so the form on the 20 × 10 mm rectangle returns
    the tensor times the area (200 mm²).
    """
    alpha, size, sl, st = 30.0, [20.0, 10.0], 0.12, 0.03
    s = Monodomain.Settings(fibre_angle=alpha)
    msh = dmesh.create_rectangle(MPI.COMM_WORLD, [[0.0, 0.0], size], [4, 3])
    ctx = hm.Context(mesh=msh, comm=msh.comm, settings=s,
                     mu=hm.Parameters(msh, ["sigma_l", "sigma_t"], [sl, st]))
    pb = Monodomain(s).build(ctx)
    V = pb.u.function_space
    f = np.array([np.cos(np.deg2rad(alpha)), np.sin(np.deg2rad(alpha))])
    D = (st * np.eye(2) + (sl - st) * np.outer(f, f)) / (s.chi * s.C_m)
    g = [fem.Function(V), fem.Function(V)]
    for gi, a in zip(g, ([1.0, 0.0], [0.3, -2.0]), strict=True):
        gi.interpolate(lambda x, a=a: a[0] * x[0] + a[1] * x[1])
    phi = pb.F.arguments()[0]
    for a1, g1 in zip(([1.0, 0.0], [0.3, -2.0]), g, strict=True):
        for a2, g2 in zip(([1.0, 0.0], [0.3, -2.0]), g, strict=True):
            form = ufl.replace(pb.F, {pb.u: g1, phi: g2})
            val = msh.comm.allreduce(fem.assemble_scalar(fem.form(form)), op=MPI.SUM)
            want = 200.0 * (np.array(a1) @ D @ np.array(a2))
            assert abs(val - want) < 1e-12 * 200.0 * np.abs(D).max() * 10, (val, want)


def test_slab_case_file_short_run():
    """cases/monodomain_slab.toml for 40 ms: the corner activates first, the front has left it."""
    text = (CASES / "monodomain_slab.toml").read_text()
    assert "cells = 200" in text      # the case itself: 40 401 DOFs (benchmarks/cardiac.py)
    case = parse_case(text.replace("cells = 200", "cells = 40"), CASES / "x.toml")
    r, V, solver = solve_case(case, MPI.COMM_WORLD, t_end=40.0)
    solver.destroy()
    t_corner = value_at(V, r.activation, [0.0, 0.0])
    t_3mm = value_at(V, r.activation, [3.0, 0.0])
    assert 0.0 < t_corner < 5.0 < t_3mm < 40.0, (t_corner, t_3mm)
    assert r.steps == 400 and r.time_reaction > 0


def test_slab_needs_a_mesh_in_mm():
    """The former in-form map (physics.size on a unit square) is refused in one line."""
    text = (CASES / "monodomain_slab.toml").read_text()
    with pytest.raises(CaseError, match=r"physics\.size: is gone: mesh the slab in mm"):
        parse_case(text.replace("[physics]\n", "[physics]\nsize = [20.0, 20.0]\n"),
                   CASES / "x.toml")
    unit = text.replace('type = "rectangle"', 'type = "unit_square"').replace(
        "extent = [[0.0, 20.0], [0.0, 20.0]]\n", "")
    with pytest.raises(CaseError, match=r"mesh\.type: geometry 'slab' is posed on mesh type"):
        parse_case(unit, CASES / "x.toml")


def test_time_scheme_refused_for_splitting():
    text = (CASES / "nagumo_cable.toml").read_text() + '\n[time]\nscheme = "bdf2"\n'
    with pytest.raises(ModelError, match="physics.splitting"):
        solve_case(parse_case(text, CASES / "x.toml"), MPI.COMM_WORLD)
