"""Inference on the transient thermal block: FEM-confirmed MAP against FEM-only MAP → JSON.

cases/heat_block_2x2.toml (u_t = ∇·(κ_k∇u) + 5, 2×2 conductivity blocks κ_k ∈ [0.1, 1]
log-uniform, BDF2, dt = 0.01 to t = 0.2, P1 on 20×20 cells), 4 sensors at the block centres
observed at 20 times (80 values), 1 % relative noise. In one run:

* a campaign of 128 trajectories and a galerkin-time surrogate (space–time POD, the
  parabolic residual bound);
* hybrid: the surrogate's MAP (multi-start L-BFGS-B, finite-difference gradients of the
  ROM), then the FEM trust-region confirmation with the FEM's tangent-linear time loop
  (:mod:`hybrid.fem.transient_tangent`);
* baseline: L-BFGS-B on the FEM alone with the same tangent-linear gradients and the same
  multi-start design;
* the two MAPs' difference in posterior standard deviations (Laplace, FEM Jacobian), their
  FEM solves and wall times.

    .venv/bin/python benchmarks/transient_inference.py \
        --out benchmarks/results/transient_inference.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import hybrid.fem  # noqa: F401  (the wheel's MPI first)
from hybrid.fem import MPI

ROOT = Path(__file__).resolve().parents[1]
TRUTH = np.array([0.2, 0.35, 0.6, 0.8])


def setup(work: Path, samples: int, modes: int):
    from hybrid.core.case import load_case
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig
    from hybrid.workflows.campaign import run_campaign

    text = (ROOT / "cases/heat_block_2x2.toml").read_text().replace(
        'store = "runs/heat_block_2x2/store"', f'store = "{work / "store"}"')
    path = work / "heat_block_2x2.toml"
    path.write_text(text)
    case = load_case(path)
    t0 = time.perf_counter()
    run_campaign(case, samples=samples, progress=False, paraview=False, comm=MPI.COMM_SELF)
    t_campaign = time.perf_counter() - t0
    t0 = time.perf_counter()
    sur, rep = build_surrogate(work / "store", BuildOptions(
        kind="galerkin", modes=modes, training=TrainingConfig(progress=False)))
    return case, sur, {"campaign_s": t_campaign, "trajectories": samples,
                       "build_s": time.perf_counter() - t0, "modes": sur.n_modes,
                       "validation": rep["metrics"]}


def run_map(case, sur, data, fem, starts: int, seed: int) -> dict:
    from hybrid.inference import Posterior, confirm, find_map
    from hybrid.inference.models import fem_model, surrogate_model

    space = case.parameters
    n0, t0 = fem.n_solves, time.perf_counter()
    cheap = Posterior(surrogate_model(sur), data, space)
    cm = find_map(cheap, starts=starts, seed=seed)
    t_cheap = time.perf_counter() - t0
    res = confirm(cheap, fem_model(fem), start=cm, jacobian="model")
    t_h, n_h = time.perf_counter() - t0, fem.n_solves - n0
    n0, t0 = fem.n_solves, time.perf_counter()
    direct = find_map(Posterior(fem_model(fem), data, space), starts=starts, seed=seed)
    t_f, n_f = time.perf_counter() - t0, fem.n_solves - n0
    std = direct.std
    return {
        "hybrid": {"mu": res.mu.tolist(), "std": res.std.tolist(), "fem_solves": n_h,
                   "wall_s": t_h, "surrogate_map_s": t_cheap, "chi2_fem": res.chi2,
                   "chi2_surrogate": res.chi2_cheap, "converged": res.converged,
                   "message": res.message,
                   "surrogate_map_vs_fem_only_in_std":
                       float(np.max(np.abs(cm.mu - direct.mu) / std))},
        "fem_only_lbfgsb": {"mu": direct.mu.tolist(), "std": std.tolist(), "fem_solves": n_f,
                            "wall_s": t_f, "chi2": direct.chi2,
                            "converged": direct.converged},
        "truth": TRUTH.tolist(),
        "error_vs_truth_in_std": {"hybrid": float(np.max(np.abs(res.mu - TRUTH) / std)),
                                  "fem_only": float(np.max(np.abs(direct.mu - TRUTH) / std))},
        "hybrid_vs_fem_only_in_std": float(np.max(np.abs(res.mu - direct.mu) / std)),
        "fem_solve_ratio": n_h / n_f, "speedup": t_f / t_h,
    }


def main() -> None:
    import tempfile

    from hybrid.fem.model import FEMModel
    from hybrid.inference import GaussianNoise, synthesize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks/results/transient_inference.json")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--modes", type=int, default=30)
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.01)
    args = ap.parse_args()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        case, sur, info = setup(work, args.samples, args.modes)
        print(f"campaign {info['campaign_s']:.1f} s, surrogate {sur.n_modes} modes, "
              f"validation error {info['validation']['surrogate_error_mean']:.2e} mean",
              flush=True)
        fem = FEMModel(case, MPI.COMM_SELF)
        y = fem.observe(TRUTH)
        data = synthesize(y, GaussianNoise(args.noise, "relative"), seed=1,
                          names=case.observations.data_names())
        t0 = time.perf_counter()
        fem.observe(TRUTH)
        t_fem = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(200):
            sur.observe(TRUTH)
        t_sur = (time.perf_counter() - t0) / 200
        res = run_map(case, sur, data, fem, args.starts, 0)
        fem.close()
    doc = {
        "benchmark": "transient_inference",
        "case": "cases/heat_block_2x2.toml (20x20 P1, BDF2, 20 steps), 4 sensors x 20 times",
        "noise": f"gaussian relative {args.noise}",
        "setup": info,
        "fem_trajectory_s": t_fem, "surrogate_observe_s": t_sur,
        "map": res,
        "goals": {"map_within_1e-3_std_of_fem_only": res["hybrid_vs_fem_only_in_std"] <= 1e-3,
                  "fem_solves_at_most_1_20": res["fem_solve_ratio"] <= 1 / 20},
        "wall_time_s": time.perf_counter() - t_all,
        "host": platform.node(), "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    m = res
    print(f"MAP: hybrid {m['hybrid']['fem_solves']} FEM solves vs FEM-only "
          f"{m['fem_only_lbfgsb']['fem_solves']} (ratio {m['fem_solve_ratio']:.3f}); "
          f"difference {m['hybrid_vs_fem_only_in_std']:.2e} std; speed-up "
          f"{m['speedup']:.1f}x", flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
