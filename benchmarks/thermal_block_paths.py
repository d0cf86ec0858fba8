"""FEM per-sample time of the plug-in thermal block against the hand-written one (issue 10).

The hand-written ``ThermalBlockProblem`` exists only up to commit 584f397, so this runs on a
checkout of that commit, where both paths are importable::

    mkdir /tmp/tb_old && git archive 584f397 | tar -x -C /tmp/tb_old
    cd /tmp/tb_old && OMP_NUM_THREADS=1 PYTHONPATH=$PWD python \
        /path/to/benchmarks/thermal_block_paths.py cases/thermal_block.toml 8

To time today's plug-in path against the old one, copy today's hybrid/fem/model_problem.py,
discretisation.py, observations.py and hybrid/model/library/thermal_block.py over that
checkout first. Measured 2026-12-02 that way (60×60 P1, 3721 DOFs, 16 samples, MUMPS):
old 5.9 ms, plug-in 6.1 ms per sample (median; ratio 1.02, min 5.7 ms both), set-up with
static data 0.10 s vs 0.18 s (the analysis: affine terms, their check, the coercivity
certificate); fields equal to 3.7e-14.

Per sample, as a campaign does it: solve, gather the field, QoIs; the two problems alternate
sample by sample (same μ), so load on a shared machine hits both alike. Prints set-up time
(incl. static data) and the median per-sample time of each, and their ratio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import hybrid.fem  # noqa: F401
from hybrid.core.case import load_case, parse_case


def main(path: str, n: int) -> None:
    from mpi4py import MPI  # noqa: I001  (hybrid.fem.thermal_block exists only at 584f397)

    from hybrid.fem.model_problem import ModelProblem
    from hybrid.fem.thermal_block import ThermalBlockProblem

    old_case = load_case(path)
    text = Path(path).read_text().replace(
        'model = "thermal_block"', 'model = "hybrid.model.library.thermal_block:ThermalBlock"')
    new_case = parse_case(text, Path(path))
    mus = old_case.parameters.sample(n, "sobol", 7)
    setup, per = {}, {"old": [], "new": []}
    problems = {}
    for key, cls, case in (("old", ThermalBlockProblem, old_case),
                           ("new", ModelProblem, new_case)):
        t0 = time.perf_counter()
        p = cls(case, MPI.COMM_SELF)
        p.static_data()
        setup[key] = time.perf_counter() - t0
        problems[key] = p
    diff = 0.0
    for mu in mus:
        out = {}
        for key, p in problems.items():
            t0 = time.perf_counter()
            assert p.solve(mu).ok
            u = p.ordering.gather_function(p.u)
            p.qoi()
            per[key].append(time.perf_counter() - t0)
            out[key] = u
        diff = max(diff, np.abs(out["old"] - out["new"]).max() / np.abs(out["old"]).max())
    n_dofs = problems["old"].V.dofmap.index_map.size_global
    for key in ("old", "new"):
        print(f"{key}: set-up + static data {setup[key]:.3f} s, per sample median "
              f"{np.median(per[key]) * 1e3:.1f} ms (min {min(per[key]) * 1e3:.1f} ms)")
    print(f"{n_dofs} DOFs, {n} samples; ratio new/old (median) "
          f"{np.median(per['new']) / np.median(per['old']):.3f}; max rel field diff {diff:.1e}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8)
