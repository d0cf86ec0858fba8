"""The monodomain plug-in: verification figures and cost; updates benchmarks/results/cardiac.json.

Modes (each rewrites its own keys of the JSON, rank 0 writes):

``verify`` (serial)
    1. Nagumo cable (``cases/nagumo_cable.toml`` settings): front speed from the activation
       times at x = 20 and 40 against c = √(2Dk)(½ − a), joint refinement (h, Δt)/2 from
       150 cells / Δt = 0.4, Godunov and Strang; observed rates.
    2. Aliev–Panfilov slab (σ_l = 0.12, σ_t = 0.03 mS/mm) on [0, 20]² mm rectangle meshes:
       conduction velocities along (x, 8 → 16 mm at y = 0) and across (y, 4 → 8 mm at
       x = 0) the fibres from a stimulus [0, 2] × [0, 1] mm — the image of a square under
       x ↦ (x/√D_l, y/√D_t), so the continuum ratio c_l/c_t is exactly √(σ_l/σ_t) = 2 — on
       N×N meshes, N = 20 … 160, Strang, Δt = 0.05 ms; Richardson extrapolation
       c_∞ ≈ c_N + (c_N − c_{N/2})/(2^p − 1) with the observed p.

``timing2d`` (run under ``mpirun -n 2``; key ``slab_2d``)
    The real case ``cases/monodomain_slab.toml`` (200×200 cells, 40 401 P1 DOFs, Δt = 0.1 ms
    to 300 ms): for each diffusion solver of :data:`STUDY` the wall time of the whole
    solve (mesh, assembly, setup, loop), the loop time per step, the ionic share of the
    loop (reaction substeps / loop), Krylov iterations per step, and the activation-time
    change max|T − T_ref| against CG + Jacobi at rtol 1e-12; then the case's own solver
    (``repeats`` runs, and one with the numpy ionic kernel instead of the compiled one),
    peak memory per rank, and the activation field on a 21×21 grid
    (plus docs/cardiac_activation.png when matplotlib is present).

``3d`` (run under ``mpirun -n 2``; key ``slab_3d``)
    ``cases/monodomain_slab3d.toml`` on a fine mesh from ``meshes/slab3d.py`` (``--size``,
    default 0.13 mm: 155×155×24 = 576 600 P1 DOFs) for ``--t-end`` ms (default 20):
    mesh generation/read time, setup, time per step, ionic share, iterations, peak memory
    (VmHWM) per rank.

Run (with ``OMP_NUM_THREADS=1``)::

    PYTHONPATH=. .venv/bin/python benchmarks/cardiac.py verify
    PYTHONPATH=. .venv/bin/mpirun -n 2 .venv/bin/python benchmarks/cardiac.py timing2d
    PYTHONPATH=. .venv/bin/mpirun -n 2 .venv/bin/python benchmarks/cardiac.py 3d [--size 0.13]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import load_case, parse_case
from hybrid.fem import MPI
from hybrid.fem.splitting import gather_by_coordinates, solve_case, value_at

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "meshes"))

from streaming_pod import peak_rss_bytes  # noqa: E402  (one reader of VmHWM)

from tests.test_monodomain import C_EXACT, cable_speed, slab  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cardiac.json"
CG = {"ksp_type": "cg"}
NAT = {"ksp_norm_type": "natural"}
STUDY = {   # name → [solver.petsc]; the first is the reference of the activation-time change
    "cg_jacobi_rtol1e-12": CG | {"pc_type": "jacobi", "ksp_rtol": 1e-12} | NAT,
    "cg_gamg_rtol1e-10 (former default)": CG | {"pc_type": "gamg", "ksp_rtol": 1e-10},
    "cg_sor_rtol1e-8": CG | {"pc_type": "sor", "ksp_rtol": 1e-8} | NAT,
    "cg_jacobi_rtol1e-10": CG | {"pc_type": "jacobi", "ksp_rtol": 1e-10} | NAT,
    "cg_jacobi_rtol1e-8": CG | {"pc_type": "jacobi", "ksp_rtol": 1e-8} | NAT,
    "cg_jacobi_rtol1e-6": CG | {"pc_type": "jacobi", "ksp_rtol": 1e-6} | NAT,
}


def cable() -> dict:
    out = {"c_exact": C_EXACT}
    for split in ("godunov", "strang"):
        rows = []
        for n, dt in ((150, 0.4), (300, 0.2), (600, 0.1), (1200, 0.05)):
            tic = time.perf_counter()
            c = cable_speed(n, dt, split)
            rows.append({"cells": n, "dt": dt, "speed": c, "rel_error": abs(c - C_EXACT) / C_EXACT,
                         "seconds": time.perf_counter() - tic})
        e = np.array([r["rel_error"] for r in rows])
        out[split] = {"levels": rows, "rates": np.log2(e[:-1] / e[1:]).tolist()}
        print(split, [f"{r['rel_error']:.2e}" for r in rows], out[split]["rates"], flush=True)
    return out


def velocities(n: int, dt: float) -> tuple[float, float, float]:
    tic = time.perf_counter()
    V, r = slab(n, [20.0, 20.0], [[0.0, 2.0], [0.0, 1.0]], t_end=170.0, dt=dt)
    at = lambda p: value_at(V, r.activation, p)  # noqa: E731  (mm)
    return (8.0 / (at([16, 0]) - at([8, 0])), 4.0 / (at([0, 8]) - at([0, 4])),
            time.perf_counter() - tic)


def slab_convergence() -> dict:
    rows = []
    for n in (20, 40, 80, 160):
        cl, ct, sec = velocities(n, 0.05)
        rows.append({"cells": n, "dt": 0.05, "c_l": cl, "c_t": ct, "ratio": cl / ct,
                     "seconds": sec})
        print("slab", rows[-1], flush=True)
    out = {"levels": rows}
    for key in ("c_l", "c_t"):
        c = np.array([r[key] for r in rows])
        d = np.diff(c)
        p = np.log2(np.abs(d[:-1] / d[1:]))
        out[f"{key}_rates"] = p.tolist()
        out[f"{key}_extrapolated"] = float(c[-1] + d[-1] / (2.0 ** p[-1] - 1.0))
    out["ratio_extrapolated"] = out["c_l_extrapolated"] / out["c_t_extrapolated"]
    out["ratio_expected"] = 2.0
    return out


def _max_over_ranks(x: float) -> float:
    return MPI.COMM_WORLD.allreduce(x, op=MPI.MAX)


def timed_solve(case, petsc: dict | None = None, **options) -> tuple[dict, object, object]:
    """One solve of ``case`` (its solver, or ``petsc``); the figures (max over ranks)."""
    if petsc is not None:
        case = dataclasses.replace(case, petsc_options=petsc)
    comm = MPI.COMM_WORLD
    comm.Barrier()
    tic = time.perf_counter()
    r, V, solver = solve_case(case, comm, **options)
    comm.Barrier()
    wall = time.perf_counter() - tic
    solver.destroy()
    loop, ionic = _max_over_ranks(r.time_total), _max_over_ranks(r.time_reaction)
    diff = _max_over_ranks(r.time_diffusion)
    row = {"wall_s": wall, "loop_s": loop, "setup_s": wall - loop,
           "ms_per_step": 1e3 * loop / r.steps, "ionic_share": ionic / loop,
           "diffusion_share": diff / loop, "krylov_its_per_step": r.iterations / r.steps,
           "steps": r.steps}
    return row, r, V


def timing2d(repeats: int) -> dict:
    case = load_case(ROOT / "cases" / "monodomain_slab.toml")
    comm = MPI.COMM_WORLD
    out = {"case": "cases/monodomain_slab.toml", "ranks": comm.size,
           "dt_ms": case.physics.settings.dt, "t_end_ms": case.physics.settings.t_end,
           "goal": "<= 60 s wall on 2 ranks, ionic <= 10 % of a step", "study": {}}
    ref = None
    for name, petsc in STUDY.items():
        row, r, V = timed_solve(case, petsc)
        x, t = gather_by_coordinates(V, r.activation)
        if ref is None:
            ref = t
        both = np.isfinite(t) & np.isfinite(ref)
        row |= {"petsc": petsc, "activation_change_max_ms": float(np.max(np.abs(t - ref)[both])),
                "activated_set_differs_at": int(np.sum(np.isfinite(t) != np.isfinite(ref)))}
        out["study"][name] = row
        if comm.rank == 0:
            print(name, {k: v for k, v in row.items() if k != "petsc"}, flush=True)
    text = (ROOT / "cases" / "monodomain_slab.toml").read_text()
    numpy_case = parse_case(text.replace('ionic_kernel = "c"', 'ionic_kernel = "numpy"'),
                            ROOT / "cases" / "monodomain_slab.toml")
    row, _, _ = timed_solve(numpy_case)
    out["case_solver_numpy_ionic_kernel"] = row
    if comm.rank == 0:
        print("case solver, numpy ionic kernel", row, flush=True)
    runs = []
    for _ in range(repeats):
        row, r, V = timed_solve(case)
        runs.append(row)
        if comm.rank == 0:
            print("case solver", row, flush=True)
    x, t = gather_by_coordinates(V, r.activation)
    both = np.isfinite(t) & np.isfinite(ref)
    grid = np.linspace(0.0, 20.0, 21)
    sample = [[value_at(V, r.activation, [gx, gy]) for gx in grid] for gy in grid]
    out |= {"dofs": int(t.size), "case_petsc": dict(case.petsc_options), "case_runs": runs,
            "case_wall_s_median": float(np.median([q["wall_s"] for q in runs])),
            "case_ionic_share_median": float(np.median([q["ionic_share"] for q in runs])),
            "case_activation_change_vs_reference_ms": float(np.max(np.abs(t - ref)[both])),
            "peak_rss_bytes_per_rank": comm.allgather(peak_rss_bytes()),
            "activated_fraction": float(np.isfinite(t).mean()),
            "activation_ms": {"min": float(np.nanmin(t)), "max": float(np.nanmax(t)),
                              "mean": float(np.nanmean(t))},
            "activation_grid_21x21_ms": {"x_mm": grid.tolist(), "y_mm": grid.tolist(),
                                         "T_rows_y": sample}}
    if comm.rank == 0:
        out["figure"] = _figure(x, t, out["t_end_ms"])
    return out


def _figure(x: np.ndarray, t: np.ndarray, t_end: float) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    tc = ax.tricontourf(x[:, 0], x[:, 1], np.nan_to_num(t, nan=t_end), levels=26)
    fig.colorbar(tc, label="activation time (ms)")
    ax.set(xlabel="x (mm, fibres)", ylabel="y (mm)", aspect="equal",
           title=f"Aliev–Panfilov slab, {t.size} DOFs")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "cardiac_activation.png", dpi=110)
    plt.close(fig)
    return "docs/cardiac_activation.png"


def slab3d(size: float, t_end: float, mesh_out: Path) -> dict:
    comm = MPI.COMM_WORLD
    tic = time.perf_counter()
    if comm.rank == 0:
        from slab3d import build

        mesh_out.parent.mkdir(parents=True, exist_ok=True)
        build(size=size, out=str(mesh_out))
    comm.Barrier()
    t_gen = time.perf_counter() - tic
    text = (ROOT / "cases" / "monodomain_slab3d.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("file ="))
    case = parse_case(text.replace(line, f'file = "{mesh_out}"'),
                      ROOT / "cases" / "monodomain_slab3d.toml")
    row, r, V = timed_solve(case, t_end=t_end)
    dofs = comm.allreduce(r.activation.size, op=MPI.SUM)
    act = comm.allreduce(int(np.isfinite(r.activation).sum()), op=MPI.SUM)
    out = {"case": "cases/monodomain_slab3d.toml", "mesh": f"meshes/slab3d.py --size {size}",
           "ranks": comm.size, "dofs": dofs, "t_end_ms": t_end,
           "dt_ms": case.physics.settings.dt, "mesh_generation_s": t_gen,
           "petsc": dict(case.petsc_options), "activated_fraction": act / dofs,
           "owned_dofs_per_rank": comm.allgather(int(r.activation.size)),
           "peak_rss_bytes_per_rank": comm.allgather(peak_rss_bytes())} | row
    out["wall_s_includes"] = "mesh read and distribution, assembly, KSP setup, the loop"
    if comm.rank == 0:
        print("3d", out, flush=True)
    return out


def _write(update: dict) -> None:
    if MPI.COMM_WORLD.rank != 0:
        return
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for old in ("slab_big", "ranks"):   # the former serial 2-D figure and its rank count
        data.pop(old, None)
    data |= update
    data["machine"] = platform.node()
    RESULTS.write_text(json.dumps(data, indent=1))
    print("wrote", RESULTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["verify", "timing2d", "3d"])
    ap.add_argument("--repeats", type=int, default=2, help="timing2d: runs of the case solver")
    ap.add_argument("--size", type=float, default=0.13, help="3d: mesh size (mm)")
    ap.add_argument("--t-end", type=float, default=20.0, help="3d: simulated time (ms)")
    ap.add_argument("--mesh-out", type=Path, default=ROOT / "runs" / "slab3d_fine.msh")
    a = ap.parse_args()
    if a.mode == "verify":
        _write({"ranks_verify": MPI.COMM_WORLD.size, "cable": cable(),
                "slab_convergence": slab_convergence()})
    elif a.mode == "timing2d":
        _write({"slab_2d": timing2d(a.repeats)})
    else:
        _write({"slab_3d": slab3d(a.size, a.t_end, a.mesh_out)})


if __name__ == "__main__":
    main()
