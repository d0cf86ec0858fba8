"""Multi-level delayed acceptance (surrogate → coarse FEM → fine FEM) against a fine-FEM chain.

On the thermal block (B×B blocks, 16 point sensors, 1 % relative noise), one data set, three
samplers of the *fine* FEM posterior, all started like ``hybrid infer`` (over-dispersed around
the surrogate's MAP, first proposal its bound-safe Laplace covariance):

* ``fine_only``: adaptive random-walk Metropolis on the fine FEM alone (the reference chain);
* ``two_level``: delayed acceptance, MALA on the surrogate, stage 2 the fine FEM;
* ``three_level``: surrogate → coarse FEM (``--coarse-cells``) → fine FEM, MALA first stage.

Reported per sampler: fine (and coarse) solves, min ESS (ArviZ), fine solves per effective
sample, R̂, wall time, means and stds; and the goals of issue 12: fine solves per effective
sample of the three-level chain ≤ 1/20 of the fine-only chain's, and its posterior means
within Monte-Carlo error of the fine-only chain's (|Δmean| ≤ 4.5 √(MCSE₁² + MCSE₂²)) and stds
within 4.5 combined standard errors (SE of a std ≈ std/√(2 ESS)).

    .venv/bin/python benchmarks/multilevel_mcmc.py --out benchmarks/results/multilevel_mcmc.json
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

Z = 4.5


def setup(root: Path, blocks: int, cells: int, coarse_cells: int, snapshots: int, modes):
    from hybrid.core.case import load_case
    from hybrid.core.examples import case_text
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.workflows.campaign import run_campaign

    paths = {}
    for key, n in (("fine", cells), ("coarse", coarse_cells)):
        paths[key] = root / f"{key}.toml"
        paths[key].write_text(case_text(name=f"tb{blocks}_{key}", cells=n, blocks=blocks,
                                        samples=snapshots, seed=1, grid=4,
                                        store=str(root / f"st_{key}")))
    case = load_case(paths["fine"])
    t0 = time.perf_counter()
    run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False)
    t_campaign = time.perf_counter() - t0
    sur, _ = build_surrogate(case.store, BuildOptions(kind="galerkin", modes=modes))
    return case, load_case(paths["coarse"]), sur, {"campaign_s": t_campaign,
                                                    "modes": sur.n_modes,
                                                    "snapshots": snapshots}


def summarize_run(res, wall: float, fine, coarse, n0) -> dict:
    d = res.to_dict()
    draws = res.draws()
    ess = np.array([v["ess"] for v in d["parameters"].values()])
    return {"fine_solves": fine.n_solves - n0[0],
            "coarse_solves": None if coarse is None else coarse.n_solves - n0[1],
            "min_ess": d["min_ess"], "max_rhat": d["max_rhat"],
            "fine_solves_per_effective_sample": d["expensive_per_effective_sample"],
            "acceptance": d["acceptance"], "levels": d.get("levels"), "wall_s": wall,
            "mean": draws.mean(0).tolist(), "std": draws.std(0, ddof=1).tolist(),
            "ess": ess.tolist(), "warnings": d["warnings"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/multilevel_mcmc.json"))
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--cells", type=int, default=48)
    ap.add_argument("--coarse-cells", type=int, default=24)
    ap.add_argument("--snapshots", type=int, default=64)
    ap.add_argument("--modes", type=int, default=None, help="surrogate modes (default: energy)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--burn-in", type=int, default=1000)
    ap.add_argument("--plain-draws", type=int, default=None,
                    help="draws per chain of the fine-only chain (default --draws)")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    from hybrid.fem.model import FEMModel
    from hybrid.inference import Posterior, find_map, sample, synthesize
    from hybrid.inference.models import fem_model, surrogate_model
    from hybrid.inference.proposal import laplace_proposal

    root = Path(tempfile.mkdtemp(prefix="hybrid-bench-multilevel-"))
    case, coarse_case, sur, info = setup(root, args.blocks, args.cells, args.coarse_cells,
                                         args.snapshots, args.modes)
    fine, coarse = FEMModel(case, MPI.COMM_SELF), FEMModel(coarse_case, MPI.COMM_SELF)
    space = case.parameters
    truth = space.from_unit(np.linspace(0.2, 0.8, space.dim)[::-1])
    t0 = time.perf_counter()
    y = fine.observe(truth)
    info["fine_solve_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coarse.observe(truth)
    info["coarse_solve_s"] = time.perf_counter() - t0
    info["fine_dofs"], info["cells"], info["coarse_cells"] = sur.n_dofs, args.cells, \
        args.coarse_cells
    data = synthesize(y, 0.01, "relative", seed=7, names=case.observations.names())
    cheap = Posterior(surrogate_model(sur), data, space)
    post_f = cheap.with_model(fem_model(fine, gradients=False))
    post_c = cheap.with_model(fem_model(coarse, gradients=False))
    cm = find_map(cheap, starts=4, seed=args.seed)
    lap = laplace_proposal(cheap, cm.mu)
    common = {"burn_in": args.burn_in, "chains": args.chains, "x0": lap.mu,
              "proposal_cov": lap.cov, "start_cov": lap.cov}
    runs = {"fine_only": ((post_f,), {"mode": "metropolis", "kernel": "rw",
                                      "n_samples": args.plain_draws or args.draws}),
            "two_level": ((post_f, cheap), {"kernel": "mala", "n_samples": args.draws}),
            "three_level": ((post_f, cheap), {"kernel": "mala", "n_samples": args.draws,
                                              "intermediate": [post_c]})}
    out = {"machine": "2-core CPU (shared), no GPU", "case": f"thermal block {args.blocks}x"
           f"{args.blocks}, 16 sensors, 1 % relative noise", "setup": info,
           "args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    for i, (key, (pos, kw)) in enumerate(runs.items()):
        n0 = (fine.n_solves, coarse.n_solves)
        t0 = time.perf_counter()
        res = sample(*pos, seed=args.seed + i, **common, **kw)
        wall = time.perf_counter() - t0
        out["runs"][key] = r = summarize_run(res, wall, fine, coarse if "intermediate" in kw
                                             else None, n0)
        print(f"{key}: fine {r['fine_solves']}, coarse {r['coarse_solves']}, min ESS "
              f"{r['min_ess']:.0f}, fine/ESS {r['fine_solves_per_effective_sample']:.3g}, "
              f"R-hat {r['max_rhat']:.4f}, {wall:.0f} s", flush=True)
    ref, ml = out["runs"]["fine_only"], out["runs"]["three_level"]

    def agree(a, b):
        """Differences of means and stds in combined Monte-Carlo standard errors."""
        m1, m2 = np.array(a["mean"]), np.array(b["mean"])
        s1, s2 = np.array(a["std"]), np.array(b["std"])
        e1, e2 = np.array(a["ess"]), np.array(b["ess"])
        dm = (m1 - m2) / np.sqrt(s1 ** 2 / e1 + s2 ** 2 / e2)
        ds = (s1 - s2) / np.sqrt(s1 ** 2 / (2 * e1) + s2 ** 2 / (2 * e2))
        return dm, ds

    dm, ds = agree(ml, ref)
    ratio = ml["fine_solves_per_effective_sample"] / ref["fine_solves_per_effective_sample"]
    out["three_level_vs_fine_only"] = {
        "fine_solves_per_ess_ratio": ratio, "mean_diff_in_se": dm.tolist(),
        "std_diff_in_se": ds.tolist()}
    out["goals"] = {"fine_solves_per_ess_le_1/20_of_fine_only": bool(ratio <= 1 / 20),
                    "means_within_mc_error": bool(np.all(np.abs(dm) <= Z)),
                    "stds_within_mc_error": bool(np.all(np.abs(ds) <= Z))}
    print(f"ratio {ratio:.4f} (goal <= 0.05); mean diffs {np.round(dm, 2)} SE; std diffs "
          f"{np.round(ds, 2)} SE; goals {out['goals']}", flush=True)
    fine.close()
    coarse.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
