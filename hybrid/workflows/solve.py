"""One solve for one parameter vector, written for ParaView (collective on WORLD).

A steady case writes ``solution.xdmf`` (the field) and ``solution.json`` (status, QoIs). A
transient case (a model with a time grid: docs/models.md) writes the time series in
``solution.xdmf`` (one XDMF step per output time, every ``[outputs] every``-th step and the
last) and in ``solution.json`` its ``time`` record (scheme, t0, t_end, dt, steps, output
times, operator set-ups) and ``qoi`` as name → one value per output time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hybrid.core.case import Case


def solve_one(case: Case, mu: np.ndarray, out: Path, comm=None) -> dict:
    """Solve ``case`` at ``mu`` on ``comm``; write ``out/solution.xdmf`` and ``out/solution.json``.

    A transient case runs its time loop (see the module docstring). For degree > 1 the
    field is interpolated onto P1 for the XDMF file (the JSON holds the QoIs of the exact
    solution).
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
    if getattr(problem, "transient", False):
        return _solve_transient(case, problem, mu, out, comm)
    t0 = time.perf_counter()
    res = problem.solve(mu)
    summary = _summary(case, problem, mu, res, time.perf_counter() - t0, comm)
    if res.ok:
        summary["qoi"] = dict(zip(case.qoi, map(float, problem.qoi()), strict=True))
    xdmf = write_xdmf(problem, out / "solution.xdmf")
    return _finish(problem, out, summary, xdmf, comm)


def _summary(case: Case, problem, mu: np.ndarray, res, wall: float, comm) -> dict:
    """The JSON summary every solve writes: parameters, status, solver figures, size."""
    return {
        "case": case.name,
        "mu": dict(zip(case.parameters.names, map(float, mu), strict=True)),
        "status": "ok" if res.ok else "failed",
        "reason": res.reason,
        "iterations": res.iterations,
        "solve_time_s": wall,
        "ranks": comm.size,
        "n_dofs": problem.V.dofmap.index_map.size_global * problem.V.dofmap.index_map_bs,
    }


def _finish(problem, out: Path, summary: dict, xdmf: Path, comm) -> dict:
    """Write ``out/solution.json`` (root), free the problem, return the result record."""
    if comm.rank == 0:
        (out / "solution.json").write_text(json.dumps(summary, indent=1))
    problem.destroy()
    return {"summary": summary, "xdmf": xdmf}


def _solve_transient(case: Case, problem, mu: np.ndarray, out: Path, comm) -> dict:
    """The time loop of a transient case, its XDMF time series and JSON summary."""
    from hybrid.fem.output import XDMFSeries

    st = problem.stepper
    path = out / "solution.xdmf"
    with XDMFSeries(problem, path) as series:
        t0 = time.perf_counter()
        res = problem.solve_transient(mu, on_output=series)
        wall = time.perf_counter() - t0
    summary = _summary(case, problem, mu, res, wall, comm)
    summary["time"] = {"scheme": st.scheme, "t0": st.t0, "t_end": st.t_end, "dt": st.dt,
                       "steps": res.steps, "n_steps": st.n_steps, "every": st.every,
                       "times": res.times.tolist(), "operator_setups": res.operator_setups}
    summary["qoi"] = {name: res.qoi[:, k].tolist() for k, name in enumerate(case.qoi)}
    return _finish(problem, out, summary, path, comm)
