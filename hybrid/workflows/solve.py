"""One solve for one parameter vector, written for ParaView (collective on WORLD)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hybrid.core.case import Case


def solve_one(case: Case, mu: np.ndarray, out: Path, comm=None) -> dict:
    """Solve ``case`` at ``mu`` on ``comm``; write ``out/solution.xdmf`` and ``out/solution.json``.

    For degree > 1 the field is interpolated onto P1 for the XDMF file (the JSON holds the
    QoIs of the exact solution).
    """
    from hybrid.fem import MPI
    from hybrid.fem.output import write_xdmf
    from hybrid.fem.problems import create_problem

    comm = comm if comm is not None else MPI.COMM_WORLD
    out = Path(out)
    problem = create_problem(case, comm)   # a model that fails to build leaves no directory
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    t0 = time.perf_counter()
    res = problem.solve(mu)
    wall = time.perf_counter() - t0
    summary = {
        "case": case.name,
        "mu": dict(zip(case.parameters.names, map(float, mu), strict=True)),
        "status": "ok" if res.ok else "failed",
        "reason": res.reason,
        "iterations": res.iterations,
        "solve_time_s": wall,
        "ranks": comm.size,
        "n_dofs": problem.V.dofmap.index_map.size_global,
    }
    if res.ok:
        summary["qoi"] = dict(zip(case.qoi, map(float, problem.qoi()), strict=True))
    xdmf = write_xdmf(problem, out / "solution.xdmf")
    if comm.rank == 0:
        (out / "solution.json").write_text(json.dumps(summary, indent=1))
    problem.destroy()
    return {"summary": summary, "xdmf": xdmf}
