"""Regenerate the thermal-block reference data from the hand-written implementation.

The hand-written thermal block (``hybrid/fem/thermal_block.py``, ``hybrid/physics/
thermal_block.py``) was removed when the built-in ``thermal_block`` became the plug-in of
``hybrid/model/library/thermal_block.py``. This script must run on a checkout of the last
commit that had it, 584f397::

    mkdir /tmp/tb_old && git archive 584f397 | tar -x -C /tmp/tb_old
    cd /tmp/tb_old && OMP_NUM_THREADS=1 PYTHONPATH=$PWD python \
        /path/to/tests/data/make_thermal_block_reference.py /path/to/tests/data

It writes

- ``thermal_block_reference.npz``: for two small cases (their TOML text included), what the
  hand-written problem puts in a store (mesh points and cells, mass, stiffness, A_q, f_q,
  Dirichlet DOFs, QoI rows, observation rows, the affine flux operator B_q, b_q) and, at two
  μ, the field, QoIs, observations (sensors, an average, fluxes), the observation operator
  and the tangent-linear Jacobians — the reference of tests/test_thermal_block_plugin.py;
- ``legacy_thermal_block/``: a store of the old format (no ``model`` record, no ``model`` key
  in the fingerprint) with a Galerkin and a POD-NN surrogate trained on it, for the
  compatibility tests (old stores and surrogates keep loading, resuming and answering).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from hybrid.fem.thermal_block import ThermalBlockProblem
from hybrid.physics.thermal_block import case_text

import hybrid.fem  # noqa: F401  (MPI first)
from hybrid.case import parse_case

CASES = {
    "a": case_text(name="tb_ref_a", cells=6, blocks=3, degree=1, samples=4,
                   qoi=("mean", "block_mean_0", "block_mean_4"))
    + "\n[observations]\npoints = [[0.3, 0.6]]\ngrid = 2\n"
      "averages = { low = [0.0, 0.0, 1.0, 0.5] }\n"
      'fluxes = { left = "x0", upper = ["y1", "x1"] }\n',
    "b": case_text(name="tb_ref_b", cells=4, blocks=2, degree=2, samples=4,
                   qoi=("mean", "block_mean_3"))
    + '\n[observations]\ngrid = 2\nfluxes = { all = ["x0", "x1", "y0", "y1"], bottom = "y0" }\n',
}
MUS = {"a": [np.linspace(0.15, 0.95, 9), np.array([1.0, 0.1, 0.5, 0.3, 0.7, 0.2, 0.9, 0.4, 0.6])],
       "b": [np.array([0.2, 0.9, 0.5, 0.3]), np.array([1.0, 1.0, 0.1, 0.1])]}

LEGACY_CASE = case_text(name="tb_legacy", cells=4, blocks=2, degree=1, samples=6, seed=5,
                        store="store", qoi=("mean", "block_mean_0")) \
    + '\n[observations]\ngrid = 2\nfluxes = { left = "x0" }\n'


def _dense(a):
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def reference(out: Path) -> None:
    from mpi4py import MPI

    arrays: dict[str, np.ndarray] = {}
    for key, text in CASES.items():
        case = parse_case(text, Path(f"{key}.toml"))
        p = ThermalBlockProblem(case, MPI.COMM_SELF)
        s = p.static_data()
        pre = f"{key}/"
        arrays[pre + "case_text"] = np.array(text)
        for name in ("points", "cells", "mass", "stiffness", "dirichlet_dofs", "affine_f",
                     "qoi_functionals", "observation_functionals", "observation_affine",
                     "observation_affine_f"):
            arrays[pre + name] = _dense(getattr(s, name))
        arrays[pre + "affine_a"] = np.array([_dense(A) for A in s.affine_a])
        for j, mu in enumerate(MUS[key]):
            assert p.solve(mu).ok
            q = f"{pre}mu{j}/"
            arrays[q + "mu"] = mu
            arrays[q + "u"] = p.ordering.gather_function(p.u)
            arrays[q + "qoi"] = p.qoi()
            arrays[q + "observe"] = p.observe()
            rows, offset = p.observation_operator(mu)
            arrays[q + "operator_rows"], arrays[q + "operator_offset"] = rows, offset
            arrays[q + "observation_jacobian"] = p.observation_jacobian(mu)
            arrays[q + "qoi_jacobian"] = p.qoi_jacobian(mu)
        p.destroy()
    arrays["commit"] = np.array(_commit())
    np.savez_compressed(out / "thermal_block_reference.npz", **arrays)


def _commit() -> str:
    return "584f397 (hand-written thermal block, last commit that had it)"


def legacy_store(out: Path) -> None:
    from hybrid.campaign import run_campaign
    from mpi4py import MPI

    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig

    root = out / "legacy_thermal_block"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "case.toml").write_text(LEGACY_CASE)
    case = parse_case(LEGACY_CASE, root / "case.toml")
    run_campaign(case, store=root / "store", progress=False, paraview=False,
                 comm=MPI.COMM_WORLD)
    s, _ = build_surrogate(root / "store", BuildOptions(kind="galerkin", modes=4))
    s.save(root / "galerkin")
    cfg = TrainingConfig(width=8, depth=2, adam_epochs=30, lbfgs_iterations=20,
                         collocation=64, eval_every=10, device="cpu", threads=1)
    s, _ = build_surrogate(root / "store", BuildOptions(kind="pod-nn", modes=4, training=cfg))
    s.save(root / "podnn")
    from hybrid.surrogate.surrogate import Surrogate

    mu = [0.3, 0.8, 0.55, 0.15]
    answers = {}
    for kind in ("galerkin", "podnn"):
        sg = Surrogate.load(root / kind)
        answers[kind] = {"mu": mu, "field": sg.field(np.array(mu)).tolist(),
                         "qoi": np.asarray(sg.qoi(np.array(mu))).tolist(),
                         "observe": np.asarray(sg.observe(np.array(mu))).tolist(),
                         "error_estimate": float(sg.error_estimate(np.array(mu)))}
    (root / "answers.json").write_text(json.dumps(answers))
    made = {"commit": _commit(), "script": "tests/data/make_thermal_block_reference.py"}
    (root / "MADE_BY").write_text(json.dumps(made))
    (root / "store" / ".lock").unlink(missing_ok=True)


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    print(f"writing reference data to {target} (git HEAD here: {head or 'not a git checkout'})")
    reference(target)
    legacy_store(target)
