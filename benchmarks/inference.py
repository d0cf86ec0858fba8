"""Inference benchmark: FEM-confirmed MAP, coupled delayed-acceptance MCMC, calibration.

For the thermal block 2×2 and 3×3 (16 point sensors, 1 % relative noise), in one run:

* MAP: the FEM-confirmed MAP (surrogate MAP + trust-region loop with the FEM) against
  scipy's L-BFGS-B on the FEM alone (tangent-linear gradients; the same multi-start design):
  parameter error, FEM solves, wall time;
* posterior: the sampler `make demo` runs (delayed acceptance, MALA first stage on the
  surrogate, stage 2 = the coupler at tol = 0.1; 4 chains × 2000 draws, burn-in 500) against
  an FEM-exact reference computed in the same run (delayed acceptance with the coupler at
  tol = 1e-4, 8 chains × 10 000 draws): posterior mean and std agreement, R̂, ESS, ESS per
  second; and delayed acceptance with the FEM itself as stage 2: ESS per FEM solve;
* calibration: over 50 synthetic experiments (new truth and noise each), how often the
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
    from hybrid.core.case import load_case
    from hybrid.core.examples import case_text
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig
    from hybrid.workflows.campaign import run_campaign

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


def _da(cheap, stage2, *, chains, n, burn, seed, kernel="mala"):
    """Delayed acceptance from the bound-safe Laplace proposal at the surrogate's MAP."""
    from hybrid.inference import find_map, sample
    from hybrid.inference.proposal import laplace_proposal

    cm = find_map(cheap, starts=4, seed=seed)
    lap = laplace_proposal(cheap, cm.mu)
    return sample(stage2, cheap, n_samples=n, burn_in=burn, chains=chains, seed=seed,
                  x0=lap.mu, proposal_cov=lap.cov, start_cov=lap.cov, kernel=kernel)


def run_mcmc(case, sur, data, fem, chains, n, burn, seed, tol, ref_chains, ref_n):
    """The demo's sampler (DA, stage 2 = coupler) and DA with the FEM against a reference.

    The reference is FEM-exact to 1e-4 noise std: delayed acceptance whose second stage is
    the coupler at tol = 1e-4 (the reduced basis, certified, or the FEM), with long chains.
    """
    from hybrid.core.store import SnapshotStore
    from hybrid.inference import Posterior
    from hybrid.inference.models import fem_model, surrogate_model
    from hybrid.workflows.coupler import Coupler

    space = case.parameters
    static = SnapshotStore(case.store).static
    cheap = Posterior(surrogate_model(sur), data, space)
    out = {}
    runs = {"coupled_da": (tol, chains, n, burn, "mala"),
            "coupled_da_rw": (tol, chains, n, burn, "rw"),
            "reference": (1e-4, ref_chains, ref_n, burn, "mala")}
    res = {}
    for key, (t, c, nn, bb, kernel) in runs.items():
        cp = Coupler(sur, fem, sigma=data, tol=t, store=None, static=static)
        n0, t0 = fem.n_solves, time.perf_counter()
        r = _da(cheap, cheap.with_model(cp.forward_model()), chains=c, n=nn, burn=bb,
                seed=seed + len(res), kernel=kernel)
        wall = time.perf_counter() - t0
        d = r.to_dict()
        res[key] = r
        out[key] = {"kernel": kernel, "fem_solves": fem.n_solves - n0, "wall_s": wall,
                    "chains": c,
                    "draws_per_chain": nn, "burn_in": bb, "tol": t,
                    "max_rhat": d["max_rhat"], "min_ess": d["min_ess"],
                    "min_ess_bulk": min(v["ess_bulk"] for v in d["parameters"].values()),
                    "ess_per_second": d["min_ess"] / wall, "acceptance": d["acceptance"],
                    "warnings": d["warnings"], "coupler": cp.report()}
        print(f"  {key}: R-hat {d['max_rhat']:.4f}, min ESS {d['min_ess']:.0f}, "
              f"{wall:.1f} s, FEM {out[key]['fem_solves']}", flush=True)
    # stage 2 = FEM itself (exact FEM posterior): ESS per FEM solve
    n0, t0 = fem.n_solves, time.perf_counter()
    r = _da(cheap, cheap.with_model(fem_model(fem, gradients=False)), chains=chains, n=n,
            burn=burn, seed=seed + 7)
    wall, nf = time.perf_counter() - t0, fem.n_solves - n0
    d = r.to_dict()
    out["fem_da"] = {"fem_solves": nf, "wall_s": wall, "max_rhat": d["max_rhat"],
                     "min_ess": d["min_ess"], "ess_per_fem_solve": d["min_ess"] / nf,
                     "acceptance": d["acceptance"], "warnings": d["warnings"]}
    print(f"  fem_da: ESS/FEM solve {d['min_ess'] / nf:.3f}", flush=True)
    a, b = res["coupled_da"].draws(), res["reference"].draws()
    m_a, m_b, s_a, s_b = a.mean(0), b.mean(0), a.std(0, ddof=1), b.std(0, ddof=1)
    out["mean_diff_in_ref_std"] = (np.abs(m_a - m_b) / s_b).tolist()
    out["std_ratio"] = (s_a / s_b).tolist()
    out["reference_mean"], out["reference_std"] = m_b.tolist(), s_b.tolist()
    out["goals"] = {"mean_within_0.1_std": bool(np.all(np.abs(m_a - m_b) / s_b <= 0.1)),
                    "std_within_5pct": bool(np.all(np.abs(s_a / s_b - 1) <= 0.05)),
                    "rhat_le_1.01": out["coupled_da"]["max_rhat"] <= 1.01,
                    "ess_bulk_ge_400": out["coupled_da"]["min_ess_bulk"] >= 400,
                    "ess_per_s_ge_100": out["coupled_da"]["ess_per_second"] >= 100,
                    "ess_per_fem_solve_ge_0.05": out["fem_da"]["ess_per_fem_solve"] >= 0.05}
    return out


def run_calibration(case, sur, fem, experiments, chains, n, burn, tol, seed):
    from hybrid.core.store import SnapshotStore
    from hybrid.inference import GaussianNoise, Posterior, synthesize
    from hybrid.inference.models import surrogate_model
    from hybrid.workflows.coupler import Coupler

    space = case.parameters
    static = SnapshotStore(case.store).static
    names = case.observations.names()
    rng = np.random.default_rng(seed)
    hits, fem_total, rhats = [], 0, []
    t0 = time.perf_counter()
    for e in range(experiments):
        truth = space.from_unit(rng.uniform(0.1, 0.9, space.dim))
        data = synthesize(fem.observe(truth), GaussianNoise(0.01, "relative"), seed=1000 + e,
                          names=names)
        cheap = Posterior(surrogate_model(sur), data, space)
        cp = Coupler(sur, fem, sigma=data, tol=tol, static=static)
        n0 = fem.n_solves
        res = _da(cheap, cheap.with_model(cp.forward_model()), chains=chains, n=n, burn=burn,
                  seed=e)
        fem_total += fem.n_solves - n0
        rhats.append(res.to_dict()["max_rhat"])
        d = res.draws()
        lo, hi = np.quantile(d, 0.05, axis=0), np.quantile(d, 0.95, axis=0)
        hits.append(((lo <= truth) & (truth <= hi)).tolist())
    hits = np.array(hits)
    cov = float(hits.mean())
    # intervals of one experiment share its data: the SE over experiments is the honest one
    per_exp = hits.mean(1)
    se = float(per_exp.std(ddof=1) / np.sqrt(len(per_exp)))
    return {"experiments": experiments, "intervals": int(hits.size), "coverage_90": cov,
            "binomial_se_at_0.9": float(np.sqrt(0.9 * 0.1 / hits.size)),
            "se_over_experiments": se, "per_parameter": hits.mean(0).tolist(),
            "max_rhat_worst": float(max(rhats)), "fem_solves_total": fem_total,
            "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/inference.json"))
    ap.add_argument("--cells", type=int, default=60)
    ap.add_argument("--snapshots", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--lbfgs", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=2000, help="draws per chain (make demo's)")
    ap.add_argument("--burn-in", type=int, default=500)
    ap.add_argument("--ref-chains", type=int, default=8)
    ap.add_argument("--ref-draws", type=int, default=10_000)
    ap.add_argument("--experiments", type=int, default=50)
    ap.add_argument("--calib-draws", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--blocks", type=int, nargs="+", default=[2, 3])
    args = ap.parse_args()
    from hybrid.fem.model import FEMModel
    from hybrid.inference import synthesize

    results: dict = {"machine": "2-core CPU (shared), no GPU", "tol": args.tol,
                     "noise": "1 % relative, 16 point sensors", "cases": {}}
    root = Path(tempfile.mkdtemp(prefix="hybrid-bench-inference-"))
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
        r["mcmc"] = run_mcmc(case, sur, data, fem, args.chains, args.draws, args.burn_in, 11,
                             args.tol, args.ref_chains, args.ref_draws)
        print(f"{B}x{B} MCMC goals: {r['mcmc']['goals']}", flush=True)
        if args.experiments > 0:
            r["calibration"] = run_calibration(case, sur, fem, args.experiments, args.chains,
                                               args.calib_draws, args.burn_in, args.tol,
                                               100 + B)
            print(f"{B}x{B} calibration: coverage {r['calibration']['coverage_90']:.3f}",
                  flush=True)
        fem.close()
        results["cases"][f"{B}x{B}"] = r
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
