"""Surrogate benchmark → JSON (not a timed test).

For the thermal block 2×2 and 3×3 (P1, MUMPS; 100×100 cells for 2×2, 99×99 for 3×3 since
the mesh must resolve the block edges), in one run:

  * 100 training snapshots (Sobol) and 100 held-out test solves (uniform random), FEM solve
    time (assembly + MUMPS, as a campaign records it) measured here;
  * surrogates from the training store: Galerkin ROM, POD-NN (data only), POD-NN with the
    physics-informed term, all on the same POD basis (90 training + 10 validation snapshots);
  * on the test set: relative L²(Ω) errors (mean, max) of each and of the POD projection
    (X-orthogonal projection onto the basis: the best the space allows, in the X-norm);
  * online cost: one query (``predict``, ``qoi``, ``field``) and batched throughput, speedup
    against the FEM solve; training wall time;
  * effectivity of the residual-based error bound, Δ(μ)/‖u_h − ũ‖_X, on the test set.

    python benchmarks/surrogate.py --out benchmarks/results/surrogate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOALS = {"2x2": {"mean": 5e-4, "max": 2e-3}, "3x3": {"mean": 5e-3, "max": 2e-2},
         "single_query_us": 20.0, "batched_queries_per_s": 1e6, "speedup": 2000.0}


def bench_case(blocks: int, cells: int) -> str:
    from hybrid.core.examples import case_text

    return case_text(name=f"bench_tb{blocks}x{blocks}", cells=cells, blocks=blocks,
                     qoi=("mean", "block_mean_0"), grid=4)


def make_stores(blocks: int, cells: int, n_train: int, n_test: int, root: Path) -> dict:
    """Solve training and test plans with DOLFINx into two stores; time every solve."""
    from mpi4py import MPI

    import hybrid.fem  # noqa: F401  (MPI first)
    from hybrid.core.case import parse_case
    from hybrid.core.store import Sample, init_store, write_sample, write_static
    from hybrid.fem.problems import create_problem
    from hybrid.fem.versions import fem_versions

    case = parse_case(bench_case(blocks, cells), root / "case.toml")
    problem = create_problem(case, MPI.COMM_WORLD)
    static = problem.static_data()
    versions = fem_versions()
    plans = {"train": case.parameters.sample(n_train, "sobol", 1),
             "test": case.parameters.sample(n_test, "random", 2)}
    out, times = {}, []
    for name, mus in plans.items():
        path = root / f"{name}_store"
        init_store(path, case_name=case.name, case_text=case.text,
                   physics=case.physics.settings.model_dump(), space=case.parameters,
                   qoi=case.qoi, n_dofs=static.n_dofs, solver_options=case.petsc_options,
                   versions=versions, extra={"observations": case.observations.names()})
        write_static(path / "static.h5", static)
        problem.solve(mus[0])                              # warm-up (first factorisation)
        for i, mu in enumerate(mus):
            t0 = time.perf_counter()
            res = problem.solve(mu)
            wall = time.perf_counter() - t0
            assert res.ok, res.reason
            times.append(wall)
            write_sample(path, Sample(index=i, mu=mu, status="ok", reason="", wall_time=wall,
                                      u=problem.ordering.gather_function(problem.u),
                                      qoi=problem.qoi()))
        out[name] = path
    problem.destroy()
    t = np.array(times)
    out["fem"] = {"n_dofs": int(static.n_dofs), "cells": cells, "solves": int(t.size),
                  "solve_time_mean_s": float(t.mean()), "solve_time_median_s":
                  float(np.median(t)), "solve_time_min_s": float(t.min())}
    return out


def per_query_us(fn, mus: np.ndarray, repeat: int = 5, loops: int = 20) -> float:
    """Best-of-``repeat`` mean time of fn(μ) over the rows of mus, in microseconds."""
    rows = [np.ascontiguousarray(m) for m in mus]

    def run():
        for m in rows:
            fn(m)

    run()
    best = min(timeit.repeat(run, number=loops, repeat=repeat))
    return best / (loops * len(rows)) * 1e6


def throughput(fn, mus: np.ndarray, repeat: int = 3) -> float:
    fn(mus[:1000])
    best = min(timeit.repeat(lambda: fn(mus), number=1, repeat=repeat))
    return mus.shape[0] / best


def evaluate(name: str, s, mu_test, U_test, M, X, fem_time: float, batch: np.ndarray) -> dict:
    F = s.field(mu_test)
    ref_l2 = np.sqrt(np.einsum("ij,ij->i", U_test @ M, U_test))
    e = U_test - F
    l2 = np.sqrt(np.einsum("ij,ij->i", e @ M, e)) / ref_l2
    ex = np.sqrt(np.einsum("ij,ij->i", e @ X, e))
    ref_x = np.sqrt(np.einsum("ij,ij->i", U_test @ X, U_test))
    out = {
        "n_modes": s.n_modes,
        "rel_l2_error_mean": float(l2.mean()), "rel_l2_error_max": float(l2.max()),
        "rel_energy_error_mean": float((ex / ref_x).mean()),
        "rel_energy_error_max": float((ex / ref_x).max()),
    }
    t_pred = per_query_us(s.predict, mu_test)
    t_qoi = per_query_us(s.qoi, mu_test)
    t_field = per_query_us(s.field, mu_test, loops=5)
    out.update({
        "single_query_us": {"predict": t_pred, "qoi": t_qoi, "field": t_field},
        "batched_queries_per_s": {"predict": throughput(s.predict, batch),
                                  "qoi": throughput(s.qoi, batch)},
        "speedup_vs_fem": {"predict": fem_time / (t_pred * 1e-6),
                           "qoi": fem_time / (t_qoi * 1e-6),
                           "field": fem_time / (t_field * 1e-6)},
    })
    out["speedup_vs_fem"]["batched_predict"] = fem_time * out["batched_queries_per_s"][
        "predict"]
    if s.estimator is not None:
        est = s.error_estimate(mu_test, relative=False)
        eff = est / ex
        out["error_estimate"] = {
            "effectivity_min": float(eff.min()), "effectivity_mean": float(eff.mean()),
            "effectivity_max": float(eff.max()),
            "single_query_us": per_query_us(s.error_estimate, mu_test, loops=5)}
    print(f"  {name:<28} modes {s.n_modes:3d}  L2 mean {l2.mean():.2e} max {l2.max():.2e}  "
          f"predict {t_pred:6.1f} us  batched {out['batched_queries_per_s']['predict']:.2e}/s",
          flush=True)
    return out


def run_case(blocks: int, cells: int, args, root: Path) -> dict:
    import torch

    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.pod import projection_errors
    from hybrid.surrogate.training import TrainingConfig

    label = f"{blocks}x{blocks}"
    print(f"thermal block {label}: {cells}x{cells} cells", flush=True)
    t0 = time.perf_counter()
    stores = make_stores(blocks, cells, args.train, args.test, root)
    fem = stores["fem"]
    print(f"  FEM: {fem['n_dofs']} dofs, {fem['solve_time_mean_s'] * 1e3:.1f} ms per solve, "
          f"{time.perf_counter() - t0:.0f} s for {fem['solves']} solves", flush=True)
    test = SnapshotStore(stores["test"])
    mu_test, U_test = test.snapshots()
    M, X = test.static.mass, test.static.stiffness
    rng = np.random.default_rng(5)
    space = test.space
    batch = space.from_unit(rng.random((args.batch, space.dim)))
    threads = torch.get_num_threads()
    result: dict = {"fem": fem, "train_snapshots": args.train, "test_solves": args.test,
                    "surrogates": {}}
    base = dict(width=args.width, depth=args.depth, adam_epochs=args.epochs,
                lbfgs_iterations=args.lbfgs, collocation=args.collocation, threads=threads,
                seed=args.seed)
    variants = {
        "galerkin": BuildOptions(kind="galerkin", training=TrainingConfig(**base)),
        "pod_nn": BuildOptions(training=TrainingConfig(**base, physics_informed=False)),
        "pod_nn_pi": BuildOptions(training=TrainingConfig(**base)),
    }
    if args.fast_variant:   # latency first: one hidden layer less
        variants["pod_nn_pi_fast"] = BuildOptions(training=TrainingConfig(
            **{**base, "depth": args.depth - 1}))
    if args.ablation:   # what each ingredient of the default POD-NN+PI buys
        variants["ablation_with_amplitude"] = BuildOptions(amplitude=True,
                                                           training=TrainingConfig(**base))
        variants["ablation_no_exact_last_layer"] = BuildOptions(training=TrainingConfig(
            **base, exact_last_layer=False))
        variants["ablation_dual_residual_norm"] = BuildOptions(training=TrainingConfig(
            **base, residual_norm="dual"))
    fem_time = fem["solve_time_mean_s"]
    for name, opts in variants.items():
        t = time.perf_counter()
        s, report = build_surrogate(stores["train"], opts)
        wall = time.perf_counter() - t
        out = evaluate(name, s, mu_test, U_test, M, X, fem_time, batch)
        out["build_time_s"] = wall
        out["training_time_s"] = report.get("training_time_s", 0.0)
        out["validation"] = report.get("metrics", {})
        result["surrogates"][name] = out
        if name == "pod_nn_pi":
            modes = s.modes
            pe_x = projection_errors(modes, U_test, X, [s.n_modes])[0]
            c = U_test @ (X @ modes.T)
            e = U_test - c @ modes
            l2 = np.sqrt(np.einsum("ij,ij->i", e @ M, e)) / np.sqrt(
                np.einsum("ij,ij->i", U_test @ M, U_test))
            result["pod_projection"] = {
                "n_modes": s.n_modes, "inner_product": s.meta["pod"]["inner_product"],
                "rel_l2_error_mean": float(l2.mean()), "rel_l2_error_max": float(l2.max()),
                "rel_energy_error_mean": float(pe_x.mean()),
                "rel_energy_error_max": float(pe_x.max())}
            print(f"  {'POD projection':<28} modes {s.n_modes:3d}  L2 mean {l2.mean():.2e} max "
                  f"{l2.max():.2e}", flush=True)
            if args.keep:
                s.save(Path(args.keep) / f"surrogate_{label}")
    goals = GOALS[label]
    pi = result["surrogates"]["pod_nn_pi"]
    result["goals"] = {
        "pod_nn_pi_mean": goals["mean"], "pod_nn_pi_max": goals["max"],
        "met_mean": pi["rel_l2_error_mean"] <= goals["mean"],
        "met_max": pi["rel_l2_error_max"] <= goals["max"],
        "met_single_query": pi["single_query_us"]["predict"] <= GOALS["single_query_us"],
        "met_batched": pi["batched_queries_per_s"]["predict"] >= GOALS["batched_queries_per_s"],
        "met_speedup": pi["speedup_vs_fem"]["predict"] >= GOALS["speedup"],
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/surrogate.json")
    ap.add_argument("--cases", default="2,3", help="block counts, e.g. 2,3")
    ap.add_argument("--cells", type=int, default=100, help="cells per side (rounded down to a "
                    "multiple of the block count)")
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--lbfgs", type=int, default=3000)
    ap.add_argument("--collocation", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast-variant", action="store_true",
                    help="also train a network with one hidden layer less (latency)")
    ap.add_argument("--ablation", action="store_true",
                    help="also train with the amplitude, without the exact last layer, and "
                    "with the dual residual norm")
    ap.add_argument("--keep", default=None, help="save the POD-NN+PI surrogates here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="hybrid-bench-"))
    results = {}
    try:
        for b in (int(x) for x in args.cases.split(",")):
            cells = args.cells - args.cells % b
            d = tmp / f"tb{b}"
            d.mkdir()
            results[f"{b}x{b}"] = run_case(b, cells, args, d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from hybrid.core.provenance import package_versions

    doc = {
        "benchmark": "surrogate",
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "processor": platform.processor(),
                    "cuda": torch.cuda.is_available()},
        "versions": package_versions(),
        "settings": vars(args) | {"out": str(args.out)},
        "goals": GOALS,
        "cases": results,
        "wall_time_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out} ({doc['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
