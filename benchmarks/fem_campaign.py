"""FEM campaign benchmark → JSON (not a timed test).

Measures, in one run, on the thermal block (default 3×3 blocks, 150×150 cells, P1, MUMPS):
  * time per solve;
  * the overhead of ``hybrid campaign`` (1 rank) against a bare DOLFINx loop doing the same
    solves (benchmarks/bare_loop.py), both as whole processes, alternated, best of --repeat;
  * campaign throughput with ``mpirun -n 2`` (2 groups of 1 rank) against ``-n 1``.

    python benchmarks/fem_campaign.py --out benchmarks/results/fem_campaign.json
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def case_text(cells: int, blocks: int, samples: int, store: Path) -> str:
    params = "\n".join(f"mu_{k} = {{ lower = 0.1, upper = 1.0 }}" for k in range(blocks**2))
    return f"""[case]
name = "bench"
[mesh]
type = "unit_square"
cells = {cells}
[physics]
model = "thermal_block"
blocks = {blocks}
[parameters]
{params}
[sampling]
method = "sobol"
samples = {samples}
seed = 7
[outputs]
store = "{store}"
"""


def timed(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{r.stderr[-2000:]}")
    return dt, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=150)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fem_campaign.json")
    a = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from hybrid.campaign import plan_samples
    from hybrid.case import parse_case

    work = Path(tempfile.mkdtemp(prefix="hybrid-bench-"))
    case = work / "bench.toml"
    case.write_text(case_text(a.cells, a.blocks, a.samples, work / "store"))
    mus = plan_samples(parse_case(case.read_text(), case), a.samples)
    np.save(work / "mu.npy", mus)
    hybrid = [str(BIN / "hybrid"), "campaign", str(case), "--no-progress"]
    mpirun = str(BIN / "mpirun")

    # warm the JIT cache so neither side pays for form compilation
    timed([sys.executable, str(ROOT / "benchmarks/bare_loop.py"), str(a.cells), str(a.blocks),
           str(work / "mu.npy")])
    bare, camp, n1, n2, inner_bare, inner_camp = [], [], [], [], [], []
    for _ in range(a.repeat):
        dt, out = timed([sys.executable, str(ROOT / "benchmarks/bare_loop.py"), str(a.cells),
                         str(a.blocks), str(work / "mu.npy")])
        bare.append(dt)
        inner_bare.append(json.loads(out)["loop_s"])
        for ranks, acc in ((1, n1), (2, n2)):
            shutil.rmtree(work / "store", ignore_errors=True)
            dt, _ = timed([mpirun, "-n", str(ranks), *hybrid])
            acc.append(dt)
            run = json.loads((work / "store/campaign.json").read_text())["runs"][-1]
            if ranks == 1:
                camp.append(dt)
                inner_camp.append(run["wall_time_s"])
    from hybrid.store import SnapshotStore

    st = SnapshotStore(work / "store")
    solve_times = np.array([s.wall_time for s in st.samples()])
    result = {
        "benchmark": "fem_campaign",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "case": {"blocks": a.blocks, "cells": a.cells, "n_dofs": st.n_dofs,
                 "samples": a.samples, "solver": "preonly + LU (MUMPS)"},
        "solve_time_s": {"mean": float(solve_times.mean()),
                         "median": float(np.median(solve_times))},
        "bare_dolfinx_loop_s": {"process_min": min(bare), "loop_min": min(inner_bare)},
        "campaign_n1_s": {"process_min": min(camp), "campaign_min": min(inner_camp)},
        "overhead_vs_bare": {
            "process": min(camp) / min(bare) - 1.0,
            "inner": min(inner_camp) / min(inner_bare) - 1.0,
            "goal": "<= 0.05",
        },
        "throughput": {
            "n1_process_min_s": min(n1), "n2_process_min_s": min(n2),
            "speedup_n2_vs_n1": min(n1) / min(n2),
            "samples_per_s_n1": a.samples / min(n1), "samples_per_s_n2": a.samples / min(n2),
            "goal": ">= 1.8",
        },
        "raw": {"bare": bare, "campaign_n1": n1, "campaign_n2": n2,
                "bare_loop": inner_bare, "campaign_inner": inner_camp},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("solve_time_s", "overhead_vs_bare", "throughput")},
                     indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
