"""hybrid's time loop against a bare DOLFINx loop, and the seed's rod; writes
benchmarks/results/transient.json.

1. The transient thermal block (``cases/heat_block.toml`` settings, 3×3 blocks, P1) on an
   N×N unit square, Crank–Nicolson, 100 steps: FEM time per step of
   :class:`hybrid.fem.transient.TransientSolver` (through ``ModelProblem``, QoIs only at the
   end, and with the two QoIs at every step) and of the loop a user would write in DOLFINx
   — the CN operator M/dt + ½K assembled and factorised once (MUMPS), per step the
   right-hand side assembled, lifted and solved — on the same mesh, μ and options, in one
   process, alternating, best of ``REPEATS``. The two final fields are compared.
2. The rod u_t = κ u_xx on [−1, 1] (``cases/heat_rod.toml``, CN, 200 cells, dt = 0.01,
   κ = 0.01): wall time of the loop and the relative error against u = −sin(πx)e^{−κπ²t}
   over (x, t) — at the nodes (discrete l², P1) and in L² (P1 and P2).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/transient.py [N]``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.fem import MPI
from hybrid.fem.model_problem import ModelProblem

ROOT = Path(__file__).resolve().parents[1]

import ufl  # noqa: E402  (after hybrid.fem: the wheel's MPI first)
from dolfinx import fem  # noqa: E402
from dolfinx.fem import petsc as fem_petsc  # noqa: E402
from petsc4py import PETSc  # noqa: E402

REPEATS = 7
N_STEPS = 100


def block_case(cells: int, every: int):
    text = (ROOT / "cases/heat_block.toml").read_text()
    text = text.replace("cells = 30", f"cells = {cells}").replace('"bdf2"', '"crank_nicolson"')
    text = text.replace("t_end = 0.2", f"t_end = {N_STEPS * 0.01}").replace(
        "every = 2", f"every = {every}")
    return parse_case(text, ROOT / "cases/heat_block.toml")


def bare_loop(p: ModelProblem, mu: np.ndarray, dt: float, n_steps: int) -> tuple[float, np.ndarray]:
    """The user's CN loop on the problem's mesh and block tags (matrix reused); (s/step, u)."""
    V = p.V
    msh = p.mesh
    F = p.pb.F                                   # r(u; v) = Σ κ_k a_k(u, v) − s v
    u = fem.Function(V)
    u_n = fem.Function(V)
    du, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    dx = F.integrals()[0].subdomain_data()       # the block tags of the model
    dxm = ufl.Measure("dx", domain=msh, subdomain_data=dx)
    B = 3
    kappa = [fem.Constant(msh, float(mu[k])) for k in range(B * B)]
    s = fem.Constant(msh, float(mu[B * B]))
    k_form = sum(kappa[q] * ufl.inner(ufl.grad(du), ufl.grad(v)) * dxm(q) for q in range(B * B))
    a = fem.form(du * v / dt * dxm + 0.5 * k_form)
    k_un = sum(kappa[q] * ufl.inner(ufl.grad(u_n), ufl.grad(v)) * dxm(q) for q in range(B * B))
    L = fem.form(u_n * v / dt * dxm - 0.5 * k_un + s * v * dxm)
    bcs = p.bcs
    A = fem_petsc.assemble_matrix(a, bcs=bcs)
    A.assemble()
    b = fem_petsc.create_vector(V)
    ksp = PETSc.KSP().create(msh.comm)
    ksp.setOperators(A)
    ksp.setType("preonly")
    ksp.getPC().setType("lu")
    ksp.getPC().setFactorSolverType("mumps")
    x = ufl.SpatialCoordinate(msh)
    u0 = fem.Expression(float(mu[-1]) * ufl.sin(np.pi * x[0]) * ufl.sin(np.pi * x[1]),
                        V.element.interpolation_points)
    t0 = time.perf_counter()
    u.interpolate(u0)
    for _ in range(n_steps):
        u_n.x.array[:] = u.x.array
        with b.localForm() as bl:
            bl.set(0.0)
        fem_petsc.assemble_vector(b, L)
        fem_petsc.apply_lifting(b, [a], bcs=[bcs])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(b, bcs)
        ksp.solve(b, u.x.petsc_vec)
        u.x.scatter_forward()
    wall = time.perf_counter() - t0
    out = u.x.array.copy()
    ksp.destroy()
    A.destroy()
    b.destroy()
    return wall / n_steps, out


def block_benchmark(cells: int) -> dict:
    comm = MPI.COMM_WORLD
    mu = np.r_[np.linspace(0.2, 1.0, 9), 5.0, 1.0]
    p_end = ModelProblem(block_case(cells, every=N_STEPS), comm)
    p_all = ModelProblem(block_case(cells, every=1), comm)
    for p in (p_end, p_all):                          # JIT and first factorisations
        p.solve_transient(mu)
    bare_loop(p_end, mu, 0.01, 2)
    times = {"hybrid_qoi_at_end": [], "hybrid_qoi_every_step": [], "bare_dolfinx": []}
    setups = None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        r = p_end.solve_transient(mu)
        times["hybrid_qoi_at_end"].append((time.perf_counter() - t0) / N_STEPS)
        setups = r.operator_setups
        u_h = p_end.u.x.array.copy()
        t0 = time.perf_counter()
        p_all.solve_transient(mu)
        times["hybrid_qoi_every_step"].append((time.perf_counter() - t0) / N_STEPS)
        per_step, u_b = bare_loop(p_end, mu, 0.01, N_STEPS)
        times["bare_dolfinx"].append(per_step)
    best = {k: min(v) for k, v in times.items()}
    diff = float(np.max(np.abs(u_h - u_b)) / np.max(np.abs(u_b)))
    n_dofs = p_end.V.dofmap.index_map.size_global
    p_end.destroy()
    p_all.destroy()
    return {
        "case": "cases/heat_block.toml with cells, crank_nicolson, dt = 0.01",
        "cells": cells, "n_dofs": n_dofs, "steps": N_STEPS, "repeats": REPEATS,
        "seconds_per_step_best": best,
        "seconds_per_step_all": times,
        "ratio_hybrid_over_bare": best["hybrid_qoi_at_end"] / best["bare_dolfinx"],
        "ratio_with_qoi_every_step": best["hybrid_qoi_every_step"] / best["bare_dolfinx"],
        "operator_setups_per_sample": setups,
        "max_rel_difference_final_field": diff,
    }


def rod_benchmark() -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.test_transient import rod

    comm = MPI.COMM_WORLD
    rod(comm, every=10)                                # JIT
    out = {}
    for label, kw in {"P1_200_cells_dt_0.01": {},
                      "P1_200_cells_dt_0.001": {"dt": 0.001},
                      "P2_100_cells_dt_0.01": {"degree": 2, "cells": 100},
                      "P2_200_cells_dt_0.01": {"degree": 2}}.items():
        rod(comm, every=10, **kw)                      # JIT of this variant
        t0 = time.perf_counter()
        rel, rel_nodes, res = rod(comm, **kw)          # errors at every step (trapezoid)
        wall_err = time.perf_counter() - t0
        out[label] = {"rel_L2_error_xt": rel, "rel_nodal_l2_error_xt": rel_nodes,
                      "steps": res.steps, "loop_and_error_wall_s": wall_err}
    # the loop alone, as `hybrid solve` runs it (outputs every 10th step)
    from hybrid.fem.model_problem import ModelProblem as MP

    case = parse_case((ROOT / "cases/heat_rod.toml").read_text(), ROOT / "cases/heat_rod.toml")
    p = MP(case, comm)
    p.solve_transient([0.01])
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        p.solve_transient([0.01])
        walls.append(time.perf_counter() - t0)
    p.destroy()
    out["cases/heat_rod.toml_loop_wall_s_best_of_5"] = min(walls)
    return out


def main() -> None:
    cells = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    t0 = time.perf_counter()
    res = {
        "machine": {"python": platform.python_version(), "ranks": MPI.COMM_WORLD.size,
                    "cpu": platform.processor() or platform.machine()},
        "block": block_benchmark(cells),
        "rod": rod_benchmark(),
    }
    res["total_wall_s"] = time.perf_counter() - t0
    if MPI.COMM_WORLD.rank == 0:
        path = ROOT / "benchmarks/results/transient.json"
        path.write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
