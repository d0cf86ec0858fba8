"""Inference benchmark: FEM-confirmed MAP, coupled delayed-acceptance MCMC, calibration.

For the thermal block 2×2 and 3×3 (16 point sensors, 1 % relative noise), in one run:

* MAP: the FEM-confirmed MAP (surrogate MAP + trust-region loop with the FEM) against
  scipy's L-BFGS-B on the FEM alone (tangent-linear gradients; the same multi-start design):
  parameter error, FEM solves, wall time;
* posterior: delayed-acceptance MCMC with the coupler as second stage against a FEM-only
  adaptive Metropolis chain of the same length (both 10,000 steps): FEM solves, posterior
  mean and std agreement, wall time;
* calibration: over repeated synthetic experiments (new truth and noise each), how often the
  90 % posterior interval covers the truth.

    .venv/bin/python benchmarks/inference.py --out benchmarks/results/inference.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import hybrid.fem  # noqa: F401
from hybrid.fem import MPI


def setup(root: Path, blocks: int, cells: int, snapshots: int, epochs: int, lbfgs: int):
    from hybrid.campaign import run_campaign
    from hybrid.case import load_case
    from hybrid.physics.thermal_block import case_text
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig

    path = root / f"tb{blocks}.toml"
    path.write_text(case_text(name=f"tb{blocks}x{blocks}", cells=cells, blocks=blocks,
                              samples=snapshots, seed=1, grid=4, store=str(root / f"st{blocks}")))
    case = load_case(path)
    t0 = time.perf_counter()
    run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False)
    t_campaign = time.perf_counter() - t0
    cfg = TrainingConfig(adam_epochs=epochs, lbfgs_iterations=lbfgs, progress=False, seed=0)
    t0 = time.perf_counter()
    sur, rep = build_surrogate(case.store, BuildOptions(kind="pod-nn", training=cfg))
    t_train = time.perf_counter() - t0
    return case, sur, {"campaign_s": t_campaign, "train_s": t_train, "modes": sur.n_modes,
                       "snapshots": snapshots, "validation_error_mean":
                       rep["metrics"].get("surrogate_error_mean")}


def run_map(case, sur, data, fem, starts: int, seed: int, truth):
    from hybrid.inference import Posterior, confirm, find_map
    from hybrid.inference.models import fem_model, surrogate_model

    space = case.parameters
    # hybrid: surrogate MAP, then FEM confirmation
    n0, t0 = fem.n_solves, time.perf_counter()
    cheap = Posterior(surrogate_model(sur), data, space)
    cm = find_map(cheap, starts=starts, seed=seed)
    res = confirm(cheap, fem_model(fem), start=cm, jacobian="model")
    t_h, n_h = time.perf_counter() - t0, fem.n_solves - n0
    # baseline: L-BFGS-B on the FEM alone, same starts, tangent-linear gradients
    n0, t0 = fem.n_solves, time.perf_counter()
    direct = find_map(Posterior(fem_model(fem), data, space), starts=starts, seed=seed)
    t_f, n_f = time.perf_counter() - t0, fem.n_solves - n0
    std = direct.std
    return {
        "hybrid": {"mu": res.mu.tolist(), "fem_solves": n_h, "wall_s": t_h,
                   "chi2_fem": res.chi2, "chi2_surrogate": res.chi2_cheap,
                   "converged": res.converged,
                   "surrogate_map_error": float(np.max(np.abs(cm.mu - truth) / std))},
        "fem_only_lbfgsb": {"mu": direct.mu.tolist(), "fem_solves": n_f, "wall_s": t_f,
                            "chi2": direct.chi2},
        "truth": truth.tolist(),
        "error_vs_truth_in_std": {"hybrid": float(np.max(np.abs(res.mu - truth) / std)),
                                  "fem_only": float(np.max(np.abs(direct.mu - truth) / std))},
        "hybrid_vs_fem_only_in_std": float(np.max(np.abs(res.mu - direct.mu) / std)),
        "fem_solve_ratio": n_h / n_f, "speedup": t_f / t_h,
    }


def run_mcmc(case, sur, data, fem, chains, n, burn, seed, tol, x0, cov_z):
    from hybrid.coupler import Coupler
    from hybrid.inference import Posterior, sample
    from hybrid.inference.diagnostics import ess
    from hybrid.inference.models import fem_model, surrogate_model
    from hybrid.store import SnapshotStore

    space = case.parameters
    cheap = Posterior(surrogate_model(sur), data, space)
    cp = Coupler(sur, fem, sigma=data, tol=tol, store=None,
                 static=SnapshotStore(case.store).static)
    n0, t0 = fem.n_solves, time.perf_counter()
    da = sample(cheap.with_model(cp.forward_model()), cheap, n_samples=n, burn_in=burn,
                chains=chains, seed=seed, x0=x0, proposal_cov=cov_z)
    t_da, n_da = time.perf_counter() - t0, fem.n_solves - n0
    n0, t0 = fem.n_solves, time.perf_counter()
    ref = sample(Posterior(fem_model(fem, gradients=False), data, space), mode="metropolis",
                 n_samples=n, burn_in=burn, chains=chains, seed=seed + 1, x0=x0,
                 proposal_cov=cov_z)
    t_ref, n_ref = time.perf_counter() - t0, fem.n_solves - n0
    a, b = da.draws(), ref.draws()
    m_a, m_b, s_a, s_b = a.mean(0), b.mean(0), a.std(0, ddof=1), b.std(0, ddof=1)
    mcse = np.array([np.sqrt(s_b[j] ** 2 / ess(ref.samples[..., j])
                             + s_a[j] ** 2 / ess(da.samples[..., j])) for j in range(a.shape[1])])
    return {
        "steps": chains * (n + burn), "chains": chains,
        "coupled_da": {"fem_solves": n_da, "wall_s": t_da, "mean": m_a.tolist(),
                       "std": s_a.tolist(), "max_rhat": da.to_dict()["max_rhat"],
                       "min_ess": da.to_dict()["min_ess"], "acceptance": da.acceptance(),
                       "coupler": cp.report()},
        "fem_only": {"fem_solves": n_ref, "wall_s": t_ref, "mean": m_b.tolist(),
                     "std": s_b.tolist(), "max_rhat": ref.to_dict()["max_rhat"],
                     "min_ess": ref.to_dict()["min_ess"]},
        "fem_solve_ratio": n_da / max(n_ref, 1),
        "wall_ratio_fem_only_over_da": t_ref / t_da,
        "mean_diff_in_std": (np.abs(m_a - m_b) / s_b).tolist(),
        "mean_diff_in_mcse": (np.abs(m_a - m_b) / mcse).tolist(),
        "std_rel_diff": (np.abs(s_a / s_b - 1)).tolist(),
    }


def run_calibration(case, sur, fem, experiments, chains, n, burn, tol, seed):
    from hybrid.coupler import Coupler
    from hybrid.inference import GaussianNoise, Posterior, find_map, sample, synthesize
    from hybrid.inference.models import surrogate_model
    from hybrid.store import SnapshotStore

    space = case.parameters
    static = SnapshotStore(case.store).static
    names = case.observations.names()
    rng = np.random.default_rng(seed)
    hits, fem_total = [], 0
    t0 = time.perf_counter()
    for e in range(experiments):
        truth = space.from_unit(rng.uniform(0.1, 0.9, space.dim))
        data = synthesize(fem.observe(truth), GaussianNoise(0.01, "relative"), seed=1000 + e,
                          names=names)
        cheap = Posterior(surrogate_model(sur), data, space)
        cm = find_map(cheap, starts=4, seed=e)
        cp = Coupler(sur, fem, sigma=data, tol=tol, static=static)
        n0 = fem.n_solves
        res = sample(cheap.with_model(cp.forward_model()), cheap, n_samples=n, burn_in=burn,
                     chains=chains, seed=e, x0=cm.mu, proposal_cov=cm.cov_z)
        fem_total += fem.n_solves - n0
        d = res.draws()
        lo, hi = np.quantile(d, 0.05, axis=0), np.quantile(d, 0.95, axis=0)
        hits.append(((lo <= truth) & (truth <= hi)).tolist())
    hits = np.array(hits)
    cov = float(hits.mean())
    se = float(np.sqrt(0.9 * 0.1 / hits.size))
    return {"experiments": experiments, "intervals": int(hits.size), "coverage_90": cov,
            "binomial_se_at_0.9": se, "per_parameter": hits.mean(0).tolist(),
            "fem_solves_total": fem_total, "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/inference.json"))
    ap.add_argument("--cells", type=int, default=60)
    ap.add_argument("--snapshots", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--lbfgs", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10_000, help="MCMC steps in all (all chains)")
    ap.add_argument("--experiments", type=int, default=20)
    ap.add_argument("--calib-steps", type=int, default=4000)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--blocks", type=int, nargs="+", default=[2, 3])
    args = ap.parse_args()
    from hybrid.fem.model import FEMModel
    from hybrid.inference import Posterior, find_map, synthesize
    from hybrid.inference.models import surrogate_model

    results: dict = {"machine": "2-core CPU (shared), no GPU", "tol": args.tol,
                     "noise": "1 % relative, 16 point sensors", "cases": {}}
    root = Path(tempfile.mkdtemp(prefix="hybrid-bench-inference-"))
    per_chain = args.steps // args.chains
    burn = per_chain // 5
    for B in args.blocks:
        case, sur, info = setup(root, B, args.cells, args.snapshots, args.epochs, args.lbfgs)
        fem = FEMModel(case, MPI.COMM_SELF)
        space = case.parameters
        truth = space.from_unit(np.linspace(0.2, 0.8, space.dim)[::-1])
        t0 = time.perf_counter()
        y = fem.observe(truth)
        info["fem_solve_s"] = time.perf_counter() - t0
        info["dofs"] = sur.n_dofs
        data = synthesize(y, 0.01, "relative", seed=7, names=case.observations.names())
        r = {"setup": info}
        r["map"] = run_map(case, sur, data, fem, 8, 0, truth)
        print(f"{B}x{B} MAP: {json.dumps(r['map']['error_vs_truth_in_std'])}, FEM solves "
              f"{r['map']['hybrid']['fem_solves']} vs {r['map']['fem_only_lbfgsb']['fem_solves']}",
              flush=True)
        cm = find_map(Posterior(surrogate_model(sur), data, space), starts=8)
        r["mcmc"] = run_mcmc(case, sur, data, fem, args.chains, per_chain - burn, burn, 11,
                             args.tol, cm.mu, cm.cov_z)
        print(f"{B}x{B} MCMC: FEM solves {r['mcmc']['coupled_da']['fem_solves']} vs "
              f"{r['mcmc']['fem_only']['fem_solves']}, mean diff/std "
              f"{np.round(r['mcmc']['mean_diff_in_std'], 3).tolist()}", flush=True)
        cpc = args.calib_steps // 2
        r["calibration"] = run_calibration(case, sur, fem, args.experiments, 2, cpc - cpc // 5,
                                           cpc // 5, args.tol, 100 + B)
        print(f"{B}x{B} calibration: coverage {r['calibration']['coverage_90']:.3f}", flush=True)
        fem.close()
        results["cases"][f"{B}x{B}"] = r
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
