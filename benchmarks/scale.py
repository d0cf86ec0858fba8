"""How campaign cost grows with mesh size → benchmarks/results/scale.json (not a timed test).

The thermal block 3×3 (P1, CG + GAMG, ksp_rtol 1e-10) on unit-square meshes of ≈1e4, 1e5
and 1e6 DOFs, each run as ``mpirun -n 2`` with 2 ranks per sample (one group, domain
decomposition) and with 1 rank per sample (two groups, ensemble parallelism). Per run:

* time per solve (the store's per-sample wall time: assembly + KSP), GAMG iterations;
* time per committed sample: campaign wall / samples, and the steady-state share (the
  sample loop of each group / samples it committed);
* the campaign's overhead per sample over the solve: gather to the group root in store
  ordering, QoIs, the sample write, the claim — measured as loop time − solve time (less
  the one-time store ordering of a group that builds it at its first sample), and the
  gather (``StoreOrdering.gather_function``), the write (``write_sample``), the QoIs and
  the claim timed alone; which ranks wrote samples (each group's root, never via world
  rank 0);
* set-up: the store ordering (coordinates gathered and sorted on the group root), the
  static part (mesh, M, K, A_q gathered in store ordering) and its write;
* peak RSS of every rank (``ru_maxrss``), after set-up and at the end;
* store bytes per sample and of the static part;
* least-squares fits log t = a + b log N (b ≈ 1: linear in the DOFs);
* serial solves alone (no campaign) at ≈1e5, 1e6 and 4e6 DOFs: the slope past 1e6, where a
  campaign's static part would make the run long.

Timers wrap the campaign's own functions in this process only (a ``perf_counter`` pair per
call); the campaign code is unchanged. Weak scaling: 1 → 2 groups of 1 rank with the same
samples per group (``mpirun -n 1`` with k samples against ``-n 2`` with 2k), alternated
``--weak-repeat`` times; efficiency = loop time per sample of 1 group / of 2 groups (best
of the repeats, and median). On a machine shared with other jobs every figure is an upper
bound on the uncontended time; the minimum over samples is the least disturbed one, and
the group roots' CPU time (``process_time``; MPICH polls, so waiting in MPI counts) is not
inflated by time-sharing — ``efficiency_cpu`` keeps only what two solves on one machine do
to each other (memory bandwidth, caches).

    python benchmarks/scale.py --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from streaming_pod import peak_rss_bytes  # noqa: E402  (one reader of VmHWM)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GAMG = 'ksp_type = "cg"\npc_type = "gamg"\nksp_rtol = 1e-10'


def worker(case_path: Path, store: Path, G: int, samples: int, out: Path) -> None:
    """Run one campaign under mpirun with timers on its pieces; world rank 0 writes ``out``."""
    sys.path.insert(0, str(ROOT))
    import hybrid.workflows.campaign as cp
    from hybrid.core.case import load_case
    from hybrid.fem import MPI
    from hybrid.fem.model_problem import ModelProblem
    from hybrid.fem.ordering import StoreOrdering

    world = MPI.COMM_WORLD
    timers: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    cpu: dict[str, float] = defaultdict(float)
    marks: dict[str, int] = {}
    in_loop = [False]

    def wrap(owner, name: str, key: str, mark: str | None = None, loop: bool = False) -> None:
        f = getattr(owner, name)

        def timed(*args, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            in_loop[0] |= loop
            try:
                return f(*args, **kw)
            finally:
                dt = time.perf_counter() - t0
                timers[key] += dt
                cpu[key] += time.process_time() - c0
                calls[key] += 1
                if in_loop[0] and not loop:
                    timers[key + "_in_loop"] += dt
                in_loop[0] &= not loop
                if mark:
                    marks[mark] = peak_rss_bytes()

        setattr(owner, name, timed)

    wrap(cp, "_set_up", "set_up", mark="rss_after_set_up")
    wrap(cp, "_solve_claimed", "sample_loop", loop=True)
    wrap(cp, "_claim", "claim")
    wrap(cp, "write_sample", "write_sample")
    wrap(cp, "write_static", "write_static")
    wrap(StoreOrdering, "__init__", "ordering_init")
    wrap(StoreOrdering, "gather_function", "gather_field")
    wrap(ModelProblem, "static_data", "static_data")
    wrap(ModelProblem, "solve", "solve")
    wrap(ModelProblem, "qoi", "qoi")

    case = load_case(case_path)
    world.Barrier()
    t0 = time.perf_counter()
    res = cp.run_campaign(case, samples=samples, ranks_per_sample=G, store=store,
                          progress=False, paraview=False, comm=world)
    wall = time.perf_counter() - t0
    mine = {"rank": world.rank, "group": world.rank // G, "group_rank": world.rank % G,
            "timers_s": dict(timers), "cpu_s": dict(cpu), "calls": dict(calls),
            "peak_rss_bytes": peak_rss_bytes(), **marks}
    ranks = world.gather(mine, root=0)
    if world.rank != 0:
        return
    from hybrid.core.store import SnapshotStore

    st = SnapshotStore(store)
    ss = st.samples()
    files = st.sample_files()
    out.write_text(json.dumps({
        "ranks": world.size, "ranks_per_sample": G, "groups": world.size // G,
        "n_dofs": st.n_dofs, "samples": samples, "ok": res.ok, "campaign_wall_s": wall,
        "solve_wall_s": [s.wall_time for s in ss], "iterations": [s.iterations for s in ss],
        "sample_file_bytes": float(np.mean([p.stat().st_size for p in files])),
        "static_bytes": (store / "static.h5").stat().st_size,
        "per_rank": ranks}))


def solve_worker(cells: int, repeat: int, out: Path) -> None:
    """Solves alone (no campaign, no store), serial: wall and CPU time per solve, peak RSS."""
    sys.path.insert(0, str(ROOT))
    from hybrid.core.case import parse_case
    from hybrid.core.examples import case_text
    from hybrid.fem import MPI
    from hybrid.fem.model_problem import ModelProblem
    from hybrid.workflows.campaign import plan_samples

    case = parse_case(case_text(cells=cells, blocks=3, petsc=GAMG, store=str(out) + ".store"),
                      out.with_suffix(".toml"))
    t0 = time.perf_counter()
    problem = ModelProblem(case, MPI.COMM_SELF)
    build = time.perf_counter() - t0
    walls, cpus, its = [], [], []
    for mu in plan_samples(case, repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        res = problem.solve(mu)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        its.append(res.iterations)
        assert res.ok, res.reason
    out.write_text(json.dumps({
        "n_dofs": problem.V.dofmap.index_map.size_global, "build_s": build,
        "solve_wall_s": walls, "solve_cpu_s": cpus, "iterations": its,
        "peak_rss_bytes": peak_rss_bytes()}))


def run(cmd: list[str], timeout: float) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def one(work: Path, cells: int, ranks: int, G: int, samples: int, timeout: float) -> dict:
    """One campaign run (fresh store); its summary."""
    from hybrid.core.examples import case_text

    tag = f"c{cells}_n{ranks}_g{G}_s{samples}"
    case = work / f"{tag}.toml"
    store = work / f"{tag}-store"
    case.write_text(case_text(name=tag, cells=cells, blocks=3, samples=samples, seed=5,
                              petsc=GAMG, store=str(store)))
    out = work / f"{tag}.json"
    process = run([str(BIN / "mpirun"), "-n", str(ranks), sys.executable, __file__, "--worker",
                   str(case), str(store), str(G), str(samples), str(out)], timeout)
    r = json.loads(out.read_text())
    shutil.rmtree(store, ignore_errors=True)
    return summarise(r, process)


def summarise(r: dict, process_s: float) -> dict:
    """Per-sample figures of one run, from the timers of every rank."""
    G, S = r["ranks_per_sample"], r["samples"]
    leaders = [p for p in r["per_rank"] if p["group_rank"] == 0]
    t = {k: sum(p["timers_s"].get(k, 0.0) for p in leaders) for k in
         ("sample_loop", "solve", "gather_field", "write_sample", "qoi", "claim",
          "ordering_init_in_loop")}
    solve = float(np.mean(r["solve_wall_s"]))
    # each group's loop over its own samples, less the one-time store ordering of a group
    # that did not write the static part (built lazily at its first gather)
    loop_per_sample = (t["sample_loop"] - t["ordering_init_in_loop"]) / S
    # CPU time of the group roots: what time-sharing with other jobs does not inflate
    c = {k: sum(p["cpu_s"].get(k, 0.0) for p in leaders) for k in ("sample_loop", "solve")}
    setup = max(p["timers_s"].get("set_up", 0.0) for p in r["per_rank"])
    return {
        "n_dofs": r["n_dofs"], "ranks": r["ranks"], "ranks_per_sample": G,
        "groups": r["groups"], "samples": S,
        "solve_s": {"mean": solve, "min": float(np.min(r["solve_wall_s"])),
                    "max": float(np.max(r["solve_wall_s"]))},
        "gamg_iterations": r["iterations"],
        "time_per_committed_sample_s": r["campaign_wall_s"] / S,
        "throughput_per_sample_s": (r["campaign_wall_s"] - setup) / S,
        "group_loop_per_sample_s": loop_per_sample,
        "cpu_solve_per_sample_s": c["solve"] / S,
        "cpu_loop_per_sample_s": c["sample_loop"] / S,
        "overhead_per_sample_s": loop_per_sample - t["solve"] / S,
        "overhead_fraction_of_solve": (loop_per_sample - t["solve"] / S) / solve,
        "gather_per_sample_s": t["gather_field"] / S,
        "gather_fraction_of_solve": t["gather_field"] / S / solve,
        "write_per_sample_s": t["write_sample"] / S,
        "write_fraction_of_solve": t["write_sample"] / S / solve,
        "qoi_per_sample_s": t["qoi"] / S,
        "qoi_fraction_of_solve": t["qoi"] / S / solve,
        "claim_per_sample_s": t["claim"] / S,
        "ordering_init_in_loop_s": t["ordering_init_in_loop"],
        "samples_written_per_rank": [p["calls"].get("write_sample", 0) for p in r["per_rank"]],
        "set_up_s": setup,
        "ordering_init_s": max(p["timers_s"].get("ordering_init", 0.0) for p in r["per_rank"]),
        "static_data_s": max(p["timers_s"].get("static_data", 0.0) for p in r["per_rank"]),
        "write_static_s": max(p["timers_s"].get("write_static", 0.0) for p in r["per_rank"]),
        "campaign_wall_s": r["campaign_wall_s"], "process_wall_s": process_s,
        "peak_rss_bytes_per_rank": [p["peak_rss_bytes"] for p in r["per_rank"]],
        "rss_after_set_up_bytes_per_rank": [p.get("rss_after_set_up") for p in r["per_rank"]],
        "sample_file_bytes": r["sample_file_bytes"], "static_bytes": r["static_bytes"],
        "bytes_per_dof_sample": r["sample_file_bytes"] / r["n_dofs"],
    }


def fit(n: list[float], t: list[float]) -> dict:
    """Least squares log y = a + b log N: the exponent b, e^a and y at 1e6 DOFs from the fit."""
    b, a = np.polyfit(np.log(n), np.log(t), 1)
    return {"exponent": float(b), "prefactor": float(np.exp(a)),
            "at_1e6": float(np.exp(a) * 1e6**b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[99, 315, 999],
                    help="cells per side (multiples of 3): (c+1)² DOFs")
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 8, 4])
    ap.add_argument("--weak-cells", type=int, default=315)
    ap.add_argument("--weak-samples", type=int, default=6, help="samples per group")
    ap.add_argument("--weak-repeat", type=int, default=3,
                    help="weak-scaling runs per variant, alternated (best and median kept)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.json")
    ap.add_argument("--solve-cells", type=int, nargs="*", default=[315, 999, 1998],
                    help="serial solves alone at these cells per side (the slope past 1e6)")
    ap.add_argument("--solve-repeat", type=int, default=3)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--solve-worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        case, store, G, S, out = a.worker
        worker(Path(case), Path(store), int(G), int(S), Path(out))
        return
    if a.solve_worker:
        cells, repeat, out = a.solve_worker
        solve_worker(int(cells), int(repeat), Path(out))
        return
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="hybrid-scale-"))
    t_start = time.perf_counter()
    # warm the JIT cache, so that no run pays for form compilation
    one(work, 9, 1, 1, 1, a.timeout)
    runs = []
    for cells, S in zip(a.cells, a.samples, strict=True):
        for G in (2, 1):
            runs.append(one(work, cells, 2, G, S, a.timeout))
            print(json.dumps({k: runs[-1][k] for k in ("n_dofs", "ranks_per_sample", "solve_s",
                                                        "overhead_fraction_of_solve")}),
                  flush=True)
    weak_runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(a.weak_repeat):
        for g in (1, 2):
            weak_runs[g].append(one(work, a.weak_cells, g, 1, g * a.weak_samples, a.timeout))
    loops = {g: [r["group_loop_per_sample_s"] for r in weak_runs[g]] for g in (1, 2)}
    cpus = {g: [r["cpu_loop_per_sample_s"] for r in weak_runs[g]] for g in (1, 2)}
    weak = {g: min(weak_runs[g], key=lambda r: r["group_loop_per_sample_s"]) for g in (1, 2)}
    solves = []
    for cells in a.solve_cells:
        out = work / f"solve{cells}.json"
        run([sys.executable, __file__, "--solve-worker", str(cells), str(a.solve_repeat),
             str(out)], a.timeout)
        solves.append(json.loads(out.read_text()))
        print(json.dumps({k: solves[-1][k] for k in ("n_dofs", "solve_cpu_s", "iterations")}),
              flush=True)
    shutil.rmtree(work, ignore_errors=True)

    fits = {}
    for G in (2, 1):
        rs = [r for r in runs if r["ranks_per_sample"] == G]
        n = [r["n_dofs"] for r in rs]
        fits[f"ranks_per_sample_{G}"] = {
            "solve": fit(n, [r["solve_s"]["mean"] for r in rs]),
            "solve_min": fit(n, [r["solve_s"]["min"] for r in rs]),
            "solve_cpu": fit(n, [r["cpu_solve_per_sample_s"] for r in rs]),
            "time_per_gamg_iteration": fit(n, [r["solve_s"]["min"] / min(r["gamg_iterations"])
                                               for r in rs]),
            "time_per_committed_sample": fit(n, [r["time_per_committed_sample_s"] for r in rs]),
            "overhead_per_sample": fit(n, [max(r["overhead_per_sample_s"], 1e-9) for r in rs]),
            "peak_rss_max_rank": fit(n, [max(r["peak_rss_bytes_per_rank"]) for r in rs]),
        }
    big = [r for r in runs if r["n_dofs"] == max(x["n_dofs"] for x in runs)]
    w1, w2 = weak[1]["group_loop_per_sample_s"], weak[2]["group_loop_per_sample_s"]
    m1, m2 = float(np.median(loops[1])), float(np.median(loops[2]))
    result = {
        "benchmark": "scale",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "note": "2 cores shared with other jobs: timings are upper bounds"},
        "case": {"model": "thermal_block", "blocks": 3, "degree": 1,
                 "solver": "cg + gamg, ksp_rtol 1e-10"},
        "runs": runs,
        "fits_log_t_vs_log_dofs": fits,
        "serial_solves_alone": {
            "runs": solves,
            "fit_cpu_min": fit([r["n_dofs"] for r in solves],
                               [min(r["solve_cpu_s"]) for r in solves]) if solves else None,
            "fit_cpu_per_iteration": fit([r["n_dofs"] for r in solves],
                                         [min(r["solve_cpu_s"]) / min(r["iterations"])
                                          for r in solves]) if solves else None,
            "fit_wall_min": fit([r["n_dofs"] for r in solves],
                                [min(r["solve_wall_s"]) for r in solves]) if solves else None,
        },
        "at_largest": {f"ranks_per_sample_{r['ranks_per_sample']}": {
            "n_dofs": r["n_dofs"],
            "overhead_fraction_of_solve": r["overhead_fraction_of_solve"],
            "gather_fraction_of_solve": r["gather_fraction_of_solve"],
            "write_fraction_of_solve": r["write_fraction_of_solve"],
            "qoi_fraction_of_solve": r["qoi_fraction_of_solve"],
            "samples_written_per_rank": r["samples_written_per_rank"],
            "peak_rss_gib_per_rank": [b / 2**30 for b in r["peak_rss_bytes_per_rank"]],
            "goal_overhead_le_5_percent": r["overhead_fraction_of_solve"] <= 0.05}
            for r in big},
        "weak_scaling": {
            "n_dofs": weak[1]["n_dofs"], "samples_per_group": a.weak_samples,
            "repeats": a.weak_repeat,
            "one_group_best": weak[1], "two_groups_best": weak[2],
            "loop_per_sample_s_all": {"1_group": loops[1], "2_groups": loops[2]},
            "loop_per_sample_s": {"1_group": w1, "2_groups": w2},
            "efficiency": w1 / w2,
            "efficiency_median": m1 / m2,
            "throughput_ratio_2_vs_1": 2 * w1 / w2,
            "cpu_loop_per_sample_s_all": {"1_group": cpus[1], "2_groups": cpus[2]},
            "efficiency_cpu": min(cpus[1]) / min(cpus[2]),
            "campaign_wall_s": {"1_group": weak[1]["campaign_wall_s"],
                                "2_groups": weak[2]["campaign_wall_s"]},
        },
        "benchmark_wall_s": time.perf_counter() - t_start,
        "command": " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"fits": fits, "at_largest": result["at_largest"],
                      "weak_efficiency": result["weak_scaling"]["efficiency"],
                      "weak_efficiency_cpu": result["weak_scaling"]["efficiency_cpu"]}, indent=1))


if __name__ == "__main__":
    main()
