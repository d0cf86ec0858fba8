"""Reduced models of the transient thermal block; writes benchmarks/results/transient_rom.json.

The FEM (``cases/heat_block.toml``: 3×3 conductivities κ_k ∈ [0.1, 1], source s ∈ [0, 10],
initial amplitude a ∈ [0, 1], u0 = a sin(πx) sin(πy); P1 on a CELLS×CELLS mesh, the case's
BDF2 with dt = 0.002 to t_end = 0.2: 100 steps, every step an output) generates 100 training
and 100 held-out trajectories at uniformly random μ, here, with the FEM side. Then:

1. **Space–time POD, direct vs two-level** (on a 30×30 mesh, 30 trajectories, so that the
   direct method is affordable): wall time and projection errors of both bases.
2. **Space–time POD of the training set** (two-level, streaming, M inner product, u0's shape
   g as a fixed first vector): the trajectories are never held all at once.
3. **Galerkin time-stepping ROM** (hybrid/surrogate/galerkin_time.py) at several ranks:
   relative space–time L² error on the held-out trajectories, the error bound at every step
   (violations, effectivities), and the online time of a whole trajectory (doubling vs the
   step loop; with and without the θ-tree evaluation) and of its bound.
4. **POD-NN in (μ, t)** (hybrid/surrogate/spacetime_nn.py): errors and the time of one
   batched trajectory; trained on the FEM trajectories alone, and with 1000 more Galerkin-ROM
   trajectories (rank 30, every 10th step) as extra data.
5. **Latent neural ODE** (hybrid/surrogate/latent.py, rank 10, the general ``"mlp"`` and the
   Galerkin-shaped ``"linear"`` right-hand side): errors and the time of one numpy RK4
   trajectory.

Errors are computed without the held-out fields: with Φ M-orthonormal, c = Φ M u and P_r
the M-projection onto the first r modes, ‖u − Φ_rᵀĉ‖²_M = ‖u − P_r u‖²_M + ‖c_{1:r} − ĉ‖²₂
(Pythagoras), the first term measured from the field as it is generated. The FEM time is
that of ``ModelProblem.solve_transient`` (100 steps, one LU per sample, no fields kept),
median over the held-out μ, in the same process.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/transient_rom.py
[CELLS [N_TRAIN N_TEST]]`` (defaults 120, 100, 100); ``TROM_SCHEME=crank_nicolson`` for
another scheme (its results go under ``heat_block_<scheme>``; the file keeps the others);
``TROM_ONLY=latency`` runs only the ROM latency per scheme and rank (a random basis; written
under ``rom_latency_by_scheme_alone``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybrid.surrogate.galerkin_time import GalerkinTimeROM  # noqa: E402
from hybrid.surrogate.latent import LatentConfig, NumpyLatentODE, train_latent_ode  # noqa: E402
from hybrid.surrogate.pod import gram_schmidt  # noqa: E402
from hybrid.surrogate.spacetime import (  # noqa: E402
    TwoLevelPOD,
    project,
    spacetime_norms,
    spacetime_pod,
    time_weights,
)
from hybrid.surrogate.spacetime_nn import train_spacetime_network  # noqa: E402
from hybrid.surrogate.training import TrainingConfig  # noqa: E402
from tests.test_transient_rom import HeatData  # noqa: E402

DT, T_END = 0.002, 0.2
SCHEME = os.environ.get("TROM_SCHEME", "bdf2")
RANKS = [10, 20, 30, 40, 60, 80]
R_NN, R_NODE = 30, 10
N_COLLOC, COLLOC_TIMES = 1000, 10
QUICK = bool(os.environ.get("TROM_QUICK"))   # a smoke run: few iterations
GOAL_MEAN, GOAL_MAX, GOAL_US, GOAL_SPEEDUP = 1e-3, 5e-3, 100.0, 1e4


def timed(f, args_list, repeats: int = 5) -> float:
    """Median over the arguments of the best of ``repeats`` calls, seconds."""
    best = []
    for a in args_list:
        f(*a)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(*a)
            ts.append(time.perf_counter() - t0)
        best.append(min(ts))
    return float(np.median(best))


def rel_errors(err2: np.ndarray, norm2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Relative space–time errors from per-time squared errors and norms, (S,)."""
    return np.sqrt((err2 @ w) / (norm2 @ w))


def summary(e: np.ndarray) -> dict:
    return {"mean": float(e.mean()), "max": float(e.max()), "median": float(np.median(e))}


# ----------------------------------------------------------------------------- 1
def pod_comparison() -> dict:
    h = HeatData(30, SCHEME, DT, T_END)
    mus, mut = h.sample(8 if QUICK else 30, 11), h.sample(10, 12)
    t, U = h.trajectories(mus)
    _, V = h.trajectories(mut)
    M = h.static.mass
    out = {"cells": 30, "n_dofs": int(M.shape[0]), "trajectories": len(mus),
           "times": int(t.size), "rows": int(len(mus) * t.size)}
    ranks = [10, 20, 40]
    for method, kw in (("direct", {}), ("two_level", {"level1_rtol": 1e-7}),
                       ("two_level_rtol_1e-5", {"level1_rtol": 1e-5})):
        m = "direct" if method == "direct" else "two_level"
        t0 = time.perf_counter()
        p = spacetime_pod(U, t, M, method=m, modes=max(ranks), fixed=h.shape[None], **kw)
        sec = time.perf_counter() - t0
        row = {"seconds": sec, "level1_tail_relative": p.level1_tail / p.total_energy,
               "mean_level1_rank": float(np.mean(p.level1_ranks)) if p.level1_ranks else None}
        for r in ranks:
            for name, X in (("train", U), ("test", V)):
                R = X - project(p.modes[:r], X, M) @ p.modes[:r]
                e = spacetime_norms(R, t, M) / spacetime_norms(X, t, M)
                row[f"r{r}_{name}_max"] = float(e.max())
                row[f"r{r}_{name}_mean"] = float(e.mean())
        out[method] = row
    h.problem.destroy()
    return out


# ----------------------------------------------------------------------------- latency
def latency_by_scheme(cells: int = 30, n_mu: int = 50) -> dict:
    """Online time of a 100-step ROM trajectory per scheme and rank (doubling, loop, auto).

    The time depends on r and the scheme only, not on the basis: an M-orthonormal random basis
    of the free DOFs of the heat block's matrices is used (accuracy is measured in the main
    section, for the case's scheme).
    """
    h = HeatData(cells, SCHEME, DT, T_END)
    s, co = h.static, h.coefficients
    N = s.mass.shape[0]
    F = np.setdiff1d(np.arange(N), s.dirichlet_dofs)
    rng = np.random.default_rng(0)
    mus = h.sample(n_mu, 3)
    out = {"cells": cells, "n_mu": n_mu}
    for scheme in ("backward_euler", "crank_nicolson", "bdf2"):
        row = {}
        for r in (10, 20, 30, 40, 60, 80):
            B = np.zeros((r, N))
            B[:, F] = rng.standard_normal((r, F.size))
            B, _ = gram_schmidt(B, s.mass)
            rom = GalerkinTimeROM(s.mass, s.affine_a, s.affine_f, s.dirichlet_dofs, B,
                                  h.shape[None], theta_a=co.theta_a, theta_f=co.theta_f,
                                  theta_0=lambda m: np.atleast_1d(m[..., -1]), scheme=scheme,
                                  dt=DT, n_steps=h.n_steps)
            ta = [(co.theta_a(m), co.theta_f(m), np.atleast_1d(m[-1])) for m in mus]
            row[str(r)] = {m: 1e6 * timed(lambda *a, m=m, rom=rom: rom.solve_theta(*a, method=m),
                                          ta) for m in ("doubling", "sequential", "auto")}
        out[scheme] = row
        print("latency", scheme, row, flush=True)
    h.problem.destroy()
    return out


# ----------------------------------------------------------------------------- 2–5
def amplitude(mu: np.ndarray) -> float:
    """a(μ) = u0 + 0.1·s: the solution is linear in (s, u0); a heat source s raises u by
    about s·t ≤ 0.2 s over the run, so a + 0.1 s is the size of u up to a bounded factor."""
    return float(mu[-1] + 0.1 * mu[-2])


def main_benchmark(cells: int, n_train: int, n_test: int) -> dict:
    h = HeatData(cells, SCHEME, DT, T_END)
    M = h.static.mass
    g = h.shape
    mu_tr, mu_te = h.sample(n_train, 1), h.sample(n_test, 2)
    out: dict = {"cells": cells, "n_dofs": int(M.shape[0]), "scheme": SCHEME, "dt": DT,
                 "t_end": T_END, "steps": h.n_steps, "n_train": n_train, "n_test": n_test}
    # training set, streamed into the two-level POD
    t0 = time.perf_counter()
    tl = None
    fem_keep = []
    for mu in mu_tr:
        s0 = time.perf_counter()
        times, U = h.trajectory(mu)
        fem_keep.append(time.perf_counter() - s0)
        if tl is None:
            tl = TwoLevelPOD(times, M, fixed=g[None], level1_rtol=1e-5, keep_coefficients=True)
        tl.add(U)
    gen = time.perf_counter() - t0
    pod = tl.finish(modes=max(RANKS) - 1)
    Phi = pod.modes
    out["pod"] = {"method": "two_level", "level1_rtol": 1e-5, "n_modes": int(Phi.shape[0]),
                  "mean_level1_rank": float(np.mean(pod.level1_ranks)),
                  "level1_tail_relative": pod.level1_tail / pod.total_energy,
                  "seconds_level1_and_2": pod.seconds,
                  "generation_and_pod_seconds": gen,
                  "singular_values_relative": (pod.singular_values[:max(RANKS)]
                                               / pod.singular_values[0]).tolist()}
    C_tr = tl.coefficients(Phi)
    del tl
    w = time_weights(times)
    # held-out set: projections, norms, projection residuals (no fields kept)
    C_te = np.empty((n_test, times.size, Phi.shape[0]))
    norm2 = np.empty((n_test, times.size))
    res2 = {r: np.empty((n_test, times.size)) for r in RANKS}
    MPhi = np.asarray((M @ Phi.T).T)
    for s, mu in enumerate(mu_te):
        _, U = h.trajectory(mu)
        C_te[s] = U @ MPhi.T
        norm2[s] = np.einsum("ij,ij->i", U, (M @ U.T).T)
        for r in RANKS:
            E = U - C_te[s, :, :r] @ Phi[:r]
            res2[r][s] = np.einsum("ij,ij->i", E, (M @ E.T).T)
    fem = []
    for mu in mu_te[:20]:
        s0 = time.perf_counter()
        res = h.problem.solve_transient(mu)
        fem.append(time.perf_counter() - s0)
        assert res.ok
    fem_s = float(np.median(fem))
    out["fem_seconds_per_trajectory"] = {"median_no_fields": fem_s,
                                         "median_with_fields_gathered": float(np.median(fem_keep)),
                                         "min_no_fields": float(np.min(fem))}
    out["projection_error"] = {str(r): summary(rel_errors(res2[r], norm2, w)) for r in RANKS}

    # ---------------------------------------------------------------- Galerkin ROM
    co = h.coefficients
    rom_out, roms = {}, {}
    args = [(m,) for m in mu_te]
    for r in RANKS:
        b0 = time.perf_counter()
        rom = GalerkinTimeROM(M, h.static.affine_a, h.static.affine_f, h.static.dirichlet_dofs,
                              Phi[:r], g[None], theta_a=co.theta_a, theta_f=co.theta_f,
                              theta_0=lambda m: np.atleast_1d(m[..., -1]), scheme=SCHEME,
                              dt=DT, n_steps=h.n_steps,
                              mu_ref=np.sqrt(h.lower * h.upper))
        build = time.perf_counter() - b0
        err2 = np.empty((n_test, times.size))
        bnd2 = np.empty((n_test, times.size))
        eff = []
        viol = 0
        for s, mu in enumerate(mu_te):
            c = rom.solve(mu)
            err2[s] = res2[r][s] + np.sum((C_te[s, :, :r] - c) ** 2, axis=1)
            b = rom.bound(mu, c)
            bnd2[s] = b ** 2
            e = np.sqrt(np.maximum(err2[s, 1:], 0.0))
            viol += int(np.sum(b[1:] < e * (1 - 1e-9)))
            eff.append(b[1:] / e)
        eff = np.concatenate(eff)
        ta = [(co.theta_a(m), co.theta_f(m), np.atleast_1d(m[-1])) for m in mu_te]
        def traj(method, rom=rom):
            return lambda *a: rom.solve_theta(*a, method=method)

        row = {
            "error": summary(rel_errors(err2, norm2, w)),
            "bound_relative_spacetime": summary(rel_errors(bnd2, norm2, w)),
            "bound_violations": viol,
            "bound_effectivity": {"min": float(eff.min()), "median": float(np.median(eff)),
                                  "max": float(eff.max())},
            "offline_seconds": build,
            "us_trajectory_doubling": 1e6 * timed(traj("doubling"), ta),
            "us_trajectory_sequential": 1e6 * timed(traj("sequential"), ta),
            "us_trajectory_auto": 1e6 * timed(traj("auto"), ta),
            "us_trajectory_auto_with_theta_trees": 1e6 * timed(rom.solve, args),
            "us_bound_with_trajectory": 1e6 * timed(rom.bound, args[:20]),
        }
        rom_out[str(r)] = row
        roms[r] = rom
        print(f"ROM r={r}: {row['error']} doubling {row['us_trajectory_doubling']:.1f} us, "
              f"sequential {row['us_trajectory_sequential']:.1f} us", flush=True)
    out["galerkin_rom"] = rom_out

    # ---------------------------------------------------------------- POD-NN (μ, t)
    r = R_NN
    C0 = C_te[0, 0, :r] / mu_te[0, -1]           # u0's shape on the basis: c0(μ) = a·C0
    mu_x = h.sample(N_COLLOC, 7)                 # Galerkin-ROM trajectories as extra data
    every = h.n_steps // COLLOC_TIMES
    t_x = times[every::every]
    C_x = np.array([roms[r].solve(m)[every::every] for m in mu_x])
    out["pod_nn"] = {}
    for label, extra in (("fem_data", None), ("fem_and_rom_collocation", (mu_x, t_x, C_x))):
        cfg = TrainingConfig(width=64, depth=3, adam_epochs=20 if QUICK else 300,
                             lbfgs_iterations=20 if QUICK else 1500, device="cpu", threads=1,
                             seed=0, eval_every=50, patience=8)
        t0 = time.perf_counter()
        st, tr = train_spacetime_network(mu_tr, times, C_tr[:, :, :r], h.lower, h.upper, cfg,
                                         validation=10, amplitude=amplitude, extra=extra)
        train_s = time.perf_counter() - t0

        def nn(m, st=st):
            return st.trajectory(m, m[-1] * C0)

        err2 = np.array([res2[r][s] + np.sum((C_te[s, :, :r] - nn(m)) ** 2, axis=1)
                         for s, m in enumerate(mu_te)])
        out["pod_nn"][label] = {
            "rank": r, "width": 64, "depth": 3, "time_feature": st.transform,
            "amplitude": "a + 0.1 s (initial amplitude, source)",
            "extra_rom_trajectories": 0 if extra is None else N_COLLOC,
            "extra_times_per_trajectory": 0 if extra is None else int(t_x.size),
            "error": summary(rel_errors(err2, norm2, w)),
            "training_seconds": train_s,
            "best_validation_rms_relative": tr.best_validation,
            "us_trajectory": 1e6 * timed(nn, args)}
        print("POD-NN", label, out["pod_nn"][label], flush=True)

    # ---------------------------------------------------------------- latent neural ODE
    r = R_NODE
    rom_r = GalerkinTimeROM(M, h.static.affine_a, h.static.affine_f, h.static.dirichlet_dofs,
                            Phi[:r], g[None], theta_a=co.theta_a, theta_f=co.theta_f,
                            theta_0=lambda m: np.atleast_1d(m[..., -1]), scheme=SCHEME,
                            dt=DT, n_steps=h.n_steps)
    # stiffness of the latent dynamics: the largest eigenvalue of M_r⁻¹A_r(μ) on the box
    lam = max(float(np.max(np.linalg.eigvals(np.linalg.solve(
        rom_r.M_r, np.tensordot(co.theta_a(m), rom_r.A_r, axes=1))).real))
        for m in (h.upper, h.lower, mu_te[0]))
    substeps = max(1, math.ceil(lam * DT / 2.0))
    out["latent_ode"] = {}
    for structure in ("mlp", "linear"):
        lcfg = LatentConfig(width=64, depth=2, structure=structure, substeps=substeps,
                            adam_epochs=5 if QUICK else 300, adam_lr=3e-3,
                            lbfgs_iterations=5 if QUICK else 100, threads=1)
        t0 = time.perf_counter()
        lat = train_latent_ode(mu_tr, times, C_tr[:, :, :r], h.lower, h.upper, lcfg)
        train_s = time.perf_counter() - t0
        fast = NumpyLatentODE(lat.model)

        def node(m, fast=fast):
            return fast.trajectory(m, rom_r.initial_coefficients(m), times, substeps)

        err2 = np.array([res2[r][s] + np.sum((C_te[s, :, :r] - node(m)) ** 2, axis=1)
                         for s, m in enumerate(mu_te)])
        out["latent_ode"][structure] = {
            "rank": r, "structure": structure, "width": 64, "depth": 2,
            "lambda_max_dt": lam * DT, "substeps": substeps,
            "error": summary(rel_errors(err2, norm2, w)),
            "galerkin_rom_same_rank_error": rom_out[str(r)]["error"],
            "projection_error_same_rank": out["projection_error"][str(r)],
            "training_seconds": train_s, "final_loss": lat.history[-1],
            "iterations": len(lat.history),
            "us_trajectory": 1e6 * timed(node, args[:20], repeats=2)}
        print("NODE", structure, out["latent_ode"][structure], flush=True)

    # ---------------------------------------------------------------- goals
    def verdict(err, us):
        return {"mean_error": err["mean"] <= GOAL_MEAN, "max_error": err["max"] <= GOAL_MAX,
                "latency": us <= GOAL_US, "speedup": fem_s / (us * 1e-6) >= GOAL_SPEEDUP,
                "speedup_value": fem_s / (us * 1e-6)}

    ok = [r for r in RANKS if rom_out[str(r)]["error"]["mean"] <= GOAL_MEAN
          and rom_out[str(r)]["error"]["max"] <= GOAL_MAX]
    head = str(ok[0] if ok else RANKS[-1])
    out["goals"] = {
        "targets": {"mean_error": GOAL_MEAN, "max_error": GOAL_MAX, "us": GOAL_US,
                    "speedup": GOAL_SPEEDUP},
        "galerkin_rom": {"rank": int(head), **verdict(rom_out[head]["error"],
                                                      rom_out[head]["us_trajectory_auto"])},
        "pod_nn": {k: verdict(v["error"], v["us_trajectory"]) for k, v in out["pod_nn"].items()},
        "latent_ode": {k: verdict(v["error"], v["us_trajectory"])
                       for k, v in out["latent_ode"].items()},
    }
    h.problem.destroy()
    return out


def main() -> None:
    cells = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    n_test = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res: dict = {"machine": {"python": platform.python_version(), "cpu": platform.machine(),
                       "load_average_at_start": os.getloadavg()[0],
                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}}
    path = ROOT / "benchmarks/results/transient_rom.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    only_latency = os.environ.get("TROM_ONLY") == "latency"
    if not only_latency and (SCHEME == "bdf2" or "spacetime_pod" not in old):
        res["spacetime_pod"] = pod_comparison()
        print("POD comparison", json.dumps(res["spacetime_pod"], indent=1), flush=True)
    if only_latency:        # its own key: the full run's table stays as it was measured
        res["rom_latency_by_scheme_alone"] = latency_by_scheme()
        res["rom_latency_by_scheme_alone"]["machine"] = res.pop("machine")
        res["rom_latency_by_scheme_alone"]["machine"]["load_average_at_end"] = \
            os.getloadavg()[0]
        old.update(res)
        path.write_text(json.dumps(old, indent=1) + "\n")
        return
    res["rom_latency_by_scheme"] = latency_by_scheme()
    key = f"heat_block_{SCHEME}"
    res[key] = main_benchmark(cells, n_train, n_test)
    res["machine"]["load_average_at_end"] = os.getloadavg()[0]
    res[key]["wall_seconds"] = time.perf_counter() - t0
    res[key]["machine"] = res.pop("machine")
    old.update(res)
    path.write_text(json.dumps(old, indent=1) + "\n")
    print(json.dumps(res[key]["goals"], indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
