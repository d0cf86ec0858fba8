"""The monodomain plug-in: verification figures and cost; writes benchmarks/results/cardiac.json.

1. Nagumo cable (``cases/nagumo_cable.toml`` settings): front speed from the activation
   times at x = 20 and 40 against c = √(2Dk)(½ − a), joint refinement (h, Δt)/2 from
   150 cells / Δt = 0.4, Godunov and Strang; observed rates.
2. Aliev–Panfilov slab (``cases/monodomain_slab.toml``, σ_l = 0.12, σ_t = 0.03 mS/mm):
   conduction velocities along (x, 8 → 16 mm at y = 0) and across (y, 4 → 8 mm at x = 0)
   the fibres from a stimulus [0, 2] × [0, 1] mm — the image of a square under
   x ↦ (x/√D_l, y/√D_t), so the continuum ratio c_l/c_t is exactly √(σ_l/σ_t) = 2 — on N×N
   meshes, N = 20 … 160, Strang, Δt = 0.05 ms; Richardson
   extrapolation c_∞ ≈ c_N + (c_N − c_{N/2})/(2^p − 1) with the observed p.
3. The slab at N = 200 (40 401 P1 DOFs), Δt = 0.1 ms to t = 260 ms, CG + GAMG: wall time
   per step, the ionic share of the step (reaction substeps / whole step), Krylov
   iterations per step, and the activation-time field sampled on a 21×21 grid of nodes
   (plus a PNG in docs/cardiac_activation.png when matplotlib is present).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/cardiac.py [N_big]``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.fem import MPI
from hybrid.fem.splitting import gather_by_coordinates, value_at

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_monodomain import C_EXACT, cable_speed, slab  # noqa: E402


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
    at = lambda p: value_at(V, r.activation, np.asarray(p) / 20.0)  # noqa: E731
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


def big(n: int) -> dict:
    tic = time.perf_counter()
    V, r = slab(n, [20.0, 20.0], [[0.0, 1.5], [0.0, 1.5]], t_end=260.0, dt=0.1)
    wall = time.perf_counter() - tic
    x, t = gather_by_coordinates(V, r.activation)
    grid = np.linspace(0.0, 1.0, 21)
    sample = [[value_at(V, r.activation, [gx, gy]) for gx in grid] for gy in grid]
    res = {"cells": n, "dofs": int(t.size), "steps": r.steps, "dt_ms": 0.1, "t_end_ms": 260.0,
           "wall_s": wall, "loop_s": r.time_total, "ms_per_step": 1e3 * r.time_total / r.steps,
           "ionic_share": r.time_reaction / r.time_total,
           "diffusion_share": r.time_diffusion / r.time_total,
           "krylov_its_per_step": r.iterations / r.steps,
           "activated_fraction": float(np.isfinite(t).mean()),
           "activation_ms": {"min": float(np.nanmin(t)), "max": float(np.nanmax(t)),
                             "mean": float(np.nanmean(t))},
           "activation_grid_21x21_ms": {"x_mm": (20 * grid).tolist(), "y_mm": (20 * grid).tolist(),
                                        "T_rows_y": sample}}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4))
        tc = ax.tricontourf(20 * x[:, 0], 20 * x[:, 1], np.nan_to_num(t, nan=260.0), levels=26)
        fig.colorbar(tc, label="activation time (ms)")
        ax.set(xlabel="x (mm, fibres)", ylabel="y (mm)", aspect="equal",
               title=f"Aliev–Panfilov slab, {t.size} DOFs")
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / "cardiac_activation.png", dpi=110)
        res["figure"] = "docs/cardiac_activation.png"
    except ImportError:
        pass
    print("big", {k: v for k, v in res.items() if k != "activation_grid_21x21_ms"}, flush=True)
    return res


def main() -> None:
    n_big = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    out = {"machine": platform.node(), "ranks": MPI.COMM_WORLD.size,
           "cable": cable(), "slab_convergence": slab_convergence(), "slab_big": big(n_big)}
    path = ROOT / "benchmarks" / "results" / "cardiac.json"
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
