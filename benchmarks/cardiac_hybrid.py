"""Cardiac activation times through the whole platform: surrogate and inference goals → JSON.

cases/cardiac_slab.toml (monodomain, Aliev–Panfilov, 8 × 4 mm slab in mm, P1 at h = 0.25 mm,
Strang splitting at Δt = 0.1 ms, fibres along x, corner stimulus; 8 electrodes) with its
coarse level cases/cardiac_slab_coarse.toml (h = 0.5 mm, Δt = 0.2 ms). In one run:

``--part surrogate`` (issue 12: "activation-time error ≤ 1 ms mean, ≤ 3 ms max on 100
held-out samples; ≥ 1e4× faster than the FEM simulation measured in the same run"):

* a training campaign (the case's Sobol plan) and a held-out campaign of 100 samples from an
  independent scrambled Sobol plan (another seed), each sample one FEM simulation;
* a POD-NN surrogate of the activation-time field (data only: the map is neither affine nor
  linear), an ensemble of ``--members`` networks;
* on the 100 held-out samples: per sample the mean and the max over the DOFs of
  |T_surrogate − T_FEM| (ms), and the electrodes' errors;
* the time of one surrogate field query (mean and max over the 100) against the FEM
  simulation's wall time per sample measured in the campaigns of this run.

``--part inference`` (issue 12: "fine-FEM solves per effective sample ≤ 1/20 of a
fine-FEM-only chain; posterior mean/std within Monte-Carlo error of that chain on the same
data"; the truth inside the 90 % credible interval): synthetic data from the fine FEM at
μ* = (0.15, 0.04, 0.13) with 1 ms noise at the 8 electrodes; the surrogate of the first part
(its store is the fine store); chains started as ``hybrid infer`` starts them (over-dispersed
around the surrogate's MAP, first proposal its Laplace covariance), on the MPI ranks:

* ``fine_only``: adaptive random-walk Metropolis on the fine FEM alone (the reference);
* ``three_level``: surrogate (subchains of ``--subchain`` random-walk steps) → coarse FEM
  with its approximation-error model fitted at 16 store samples → fine FEM;
* ``two_level``: the same without the coarse level.

Per sampler: fine (and coarse) solves including burn-in and starts, min ESS (ArviZ), fine
solves per effective sample, R̂, means, stds and 90 % intervals; agreement with the fine-only
chain as |Δmean| ≤ 4.5 √(MCSE₁² + MCSE₂²) and |Δstd| ≤ 4.5 √(SE₁² + SE₂²), SE of a std
≈ std/√(2 ESS).

    .venv/bin/mpirun -n 2 .venv/bin/python benchmarks/cardiac_hybrid.py --part all \\
        --out benchmarks/results/cardiac_hybrid.json
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
CASE = ROOT / "cases/cardiac_slab.toml"
COARSE = ROOT / "cases/cardiac_slab_coarse.toml"


def case_copy(src: Path, work: Path, name: str, *, store: Path, seed: int | None = None,
              samples: int | None = None):
    """The case ``src`` with its store (and plan seed/size) redirected; loaded."""
    import re

    from hybrid.core.case import load_case

    text = re.sub(r'^store = ".*"$', f'store = "{store}"', src.read_text(), flags=re.M)
    if seed is not None:
        text = re.sub(r"^seed = \d+$", f"seed = {seed}", text, flags=re.M)
    if samples is not None:
        text = re.sub(r"^samples = \d+$", f"samples = {samples}", text, flags=re.M)
    path = work / f"{name}.toml"
    path.write_text(text)
    return load_case(path)


def campaign(case, comm) -> dict:
    from hybrid.core.store import SnapshotStore
    from hybrid.workflows.campaign import run_campaign

    t0 = time.perf_counter()
    r = run_campaign(case, progress=False, paraview=False, comm=comm)
    wall = time.perf_counter() - t0
    walls = [s.wall_time for s in SnapshotStore(r.store).samples() if s.ok]
    return {"samples": r.ok, "failed": r.failed, "wall_s": wall, "ranks": comm.size,
            "fem_simulation_s": {"mean": float(np.mean(walls)), "min": float(np.min(walls)),
                                 "max": float(np.max(walls))}}


def surrogate_part(work: Path, members: int, modes: int | None, alpha: float, comm) -> dict:
    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig

    train = case_copy(CASE, work, "train", store=work / "store")
    test = case_copy(CASE, work, "test", store=work / "test_store", seed=99, samples=100)
    out = {"case": str(CASE.relative_to(ROOT)), "campaign_train": campaign(train, comm),
           "campaign_test": campaign(test, comm)}
    if comm.rank != 0:
        return out
    t0 = time.perf_counter()
    sur, rep = build_surrogate(work / "store", BuildOptions(
        kind="pod-nn", modes=modes, energy=1 - 1e-8, calibrate=alpha,
        training=TrainingConfig(members=members, progress=False, validation_fraction=0.25)))
    out["build"] = {"s": time.perf_counter() - t0, "modes": sur.n_modes, "members": members,
                    "validation": rep.get("metrics")}
    sur.save(work / "surrogate")
    st = SnapshotStore(work / "test_store")
    mu, U = st.snapshots()
    L = st.static.observation_functionals
    sur.field(mu[0])          # warm-up (first-call allocations)
    times, err_mean, err_max, obs_err = [], [], [], []
    for k in range(mu.shape[0]):
        t0 = time.perf_counter()
        T = sur.field(mu[k])
        times.append(time.perf_counter() - t0)
        e = np.abs(T - U[k])
        err_mean.append(float(e.mean()))
        err_max.append(float(e.max()))
        obs_err.append(np.abs(sur.observe(mu[k]) - L @ U[k]))
    obs_err = np.array(obs_err)
    fem_s = out["campaign_test"]["fem_simulation_s"]["mean"]
    q_mean, q_max = float(np.mean(times)), float(np.max(times))
    out["held_out"] = {
        "samples": int(mu.shape[0]),
        "field_error_ms": {"mean_of_means": float(np.mean(err_mean)),
                           "max_of_means": float(np.max(err_mean)),
                           "max": float(np.max(err_max)),
                           "p95_of_max": float(np.percentile(err_max, 95))},
        "electrode_error_ms": {"mean": float(obs_err.mean()), "max": float(obs_err.max())},
        "activation_time_range_ms": [float(U.min()), float(U.max())],
        "query_field_s": {"mean": q_mean, "max": q_max},
        "speedup_vs_fem_mean_query": fem_s / q_mean,
        "speedup_vs_fem_max_query": fem_s / q_max,
        "goals": {"mean_error_ms": 1.0, "max_error_ms": 3.0, "speedup": 1e4},
    }
    # the conformal band (calibrated on half the validation split) on 100 independent runs
    band = sur.band(mu)
    y_fem = U @ L.T
    inside = np.all(np.abs(sur.observe(mu) - y_fem) <= band, axis=1)
    cov = float(inside.mean())
    out["held_out"]["electrode_band"] = {
        "alpha": alpha, "calibration": sur.calibration.to_dict()
        if hasattr(sur.calibration, "to_dict") else sur.calibration,
        "coverage_100": cov, "coverage_se": float(np.sqrt(cov * (1 - cov) / mu.shape[0])),
        "band_ms": {"median": float(np.median(band)), "max": float(band.max())}}
    if sur.members > 1:   # the ensemble spread against the actual error, per held-out sample
        spread = np.array([float(sur.error_estimate(m, method="ensemble")) for m in mu])
        rel = np.array(err_mean) / np.abs(U).mean(axis=1)
        out["held_out"]["ensemble_spread_vs_error"] = {
            "spearman": float(_spearman(spread, rel)),
            "ratio_median": float(np.median(spread / np.maximum(rel, 1e-300)))}
    return out


TRUTH = np.array([0.15, 0.04, 0.13])
Z = 4.5


def inference_part(work: Path, chains: int, samples: int, burn_in: int, fine_samples: int,
                   fine_burn_in: int, subchain: int, comm) -> dict:
    """The three samplers of the module docstring on one data set (collective)."""
    from hybrid.fem.model import FEMModel
    from hybrid.inference import Posterior, find_map, sample, synthesize
    from hybrid.inference.models import fem_model, surrogate_model
    from hybrid.inference.proposal import laplace_proposal
    from hybrid.surrogate import Surrogate
    from hybrid.workflows.infer import InferenceOptions, run_inference

    comm.Barrier()    # the surrogate is built and saved on rank 0
    case = case_copy(CASE, work, "train", store=work / "store")
    sur = Surrogate.load(work / "surrogate")
    data = None
    if comm.rank == 0:
        fem = FEMModel(case, MPI.COMM_SELF)
        data = synthesize(fem.observe(TRUTH), 1.0, "absolute", seed=1,
                          names=sur.observation_names)
        fem.close()
    data = comm.bcast(data, root=0)
    out = {"truth": TRUTH.tolist(), "noise_ms": 1.0, "data": data.values.tolist()}
    runs = {}
    for name, coarse in (("three_level", str(COARSE)), ("two_level", None)):
        t0 = time.perf_counter()
        s = run_inference(case, sur, data, InferenceOptions(
            method="mcmc", stage2="fem", kernel="rw", subchain=subchain, chains=chains,
            samples=samples, burn_in=burn_in, enrich=False, field=False, plots=False,
            coarse_case=coarse), comm=comm, store=work / "store")
        if comm.rank == 0:
            m = s["mcmc"]
            runs[name] = {"wall_s": time.perf_counter() - t0, "fine_solves": s["fem"]["solves"],
                          "coarse_solves": s.get("coarse", {}).get("solves", 0),
                          "coarse_correction": s.get("coarse_correction"),
                          "min_ess": m["min_ess"], "max_rhat": m["max_rhat"],
                          "levels": m.get("levels"), "acceptance": m["acceptance"],
                          "summary": m["parameters"], "warnings": m["warnings"]}
    # the reference: random-walk Metropolis on the fine FEM alone, the same start
    cheap = Posterior(surrogate_model(sur), data, case.parameters)
    cmap = find_map(cheap, starts=8, seed=0)
    lap = laplace_proposal(cheap, cmap.mu)
    fem = FEMModel(case, MPI.COMM_SELF)
    fine = cheap.with_model(fem_model(fem, gradients=False))
    t0 = time.perf_counter()
    ref = sample(fine, mode="metropolis", n_samples=fine_samples, burn_in=fine_burn_in,
                 chains=chains, seed=0, x0=lap.mu, proposal_cov=lap.cov, start_cov=lap.cov,
                 kernel="rw", comm=comm if comm.size > 1 else None)
    n_fine = comm.reduce(fem.n_solves, root=0)
    fem.close()
    if comm.rank != 0:
        return out
    d = ref.to_dict()
    runs["fine_only"] = {"wall_s": time.perf_counter() - t0, "fine_solves": n_fine,
                         "min_ess": d["min_ess"], "max_rhat": d["max_rhat"],
                         "acceptance": d["acceptance"], "summary": d["parameters"],
                         "warnings": d["warnings"]}
    names = case.parameters.names
    base = runs["fine_only"]
    base["fine_per_ess"] = base["fine_solves"] / base["min_ess"]
    for name in ("three_level", "two_level"):
        r = runs[name]
        r["fine_per_ess"] = r["fine_solves"] / r["min_ess"]
        r["fine_per_ess_ratio_vs_fine_only"] = r["fine_per_ess"] / base["fine_per_ess"]
        agree = {}
        for n in names:
            a, b = r["summary"][n], base["summary"][n]
            se_m = np.hypot(a["mcse_mean"], b["mcse_mean"])
            se_s = np.hypot(a["std"] / np.sqrt(2 * a["ess"]), b["std"] / np.sqrt(2 * b["ess"]))
            agree[n] = {"dmean_se": (a["mean"] - b["mean"]) / se_m,
                        "dstd_se": (a["std"] - b["std"]) / se_s}
        r["agreement_with_fine_only"] = agree
        r["within_mc_error"] = all(abs(v["dmean_se"]) <= Z and abs(v["dstd_se"]) <= Z
                                   for v in agree.values())
        r["truth_in_90"] = {n: bool(r["summary"][n]["q05"] <= t <= r["summary"][n]["q95"])
                            for n, t in zip(names, TRUTH, strict=True)}
    out["samplers"] = runs
    out["goals"] = {"fine_per_ess_ratio": 1 / 20, "agreement_se": Z}
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return spearmanr(a, b).statistic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["surrogate", "inference", "all"], default="all")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--burn-in", type=int, default=200)
    ap.add_argument("--fine-samples", type=int, default=1000)
    ap.add_argument("--fine-burn-in", type=int, default=300)
    ap.add_argument("--subchain", type=int, default=50)
    ap.add_argument("--work", type=Path, default=ROOT / "runs/bench_cardiac_hybrid")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--modes", type=int, default=None)
    ap.add_argument("--alpha", type=float, default=0.1, help="conformal band: 1 - coverage")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cardiac_hybrid.json")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    work = args.work
    if comm.rank == 0 and args.part != "inference":
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    comm.Barrier()
    t0 = time.perf_counter()
    res = {"machine": platform.node(), "cpus": platform.processor() or platform.machine(),
           "ranks": comm.size, "args": {k: str(v) for k, v in vars(args).items()}}
    for part in ("surrogate", "inference"):
        if args.part not in (part, "all"):
            continue
        t1 = time.perf_counter()
        if part == "surrogate":
            res[part] = surrogate_part(work, args.members, args.modes, args.alpha, comm)
        else:
            res[part] = inference_part(work, args.chains, args.samples, args.burn_in,
                                       args.fine_samples, args.fine_burn_in, args.subchain,
                                       comm)
        res[part] |= {"args": res["args"], "ranks": comm.size,
                      "wall_s": time.perf_counter() - t1}
    res.pop("args")
    res["wall_s"] = time.perf_counter() - t0
    if comm.rank == 0:
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        old.update(res)
        args.out.write_text(json.dumps(old, indent=1))
        for part in ("surrogate", "inference"):
            if part in res:
                show = res[part].get("held_out") if part == "surrogate" else {
                    k: {q: v[q] for q in ("fine_solves", "min_ess", "max_rhat", "fine_per_ess",
                                          "fine_per_ess_ratio_vs_fine_only", "within_mc_error",
                                          "truth_in_90") if q in v}
                    for k, v in res[part].get("samplers", {}).items()}
                print(part, json.dumps(show, indent=1))


if __name__ == "__main__":
    main()
