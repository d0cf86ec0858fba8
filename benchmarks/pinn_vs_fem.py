"""PINN baseline vs FEM on the seed's heat equation → JSON (not a timed test).

    u_t = κ u_xx on [−1, 1] × [0, 1],  u(x, 0) = −sin(πx),  u(±1, t) = 0,
    exact u = −sin(πx) exp(−κπ² t);  κ = 0.01, and the family κ ∈ [0.005, 0.05].

Every method is measured the same way, against the exact solution on one uniform grid of
1001 × 101 points in (x, t) (relative discrete L² error over the grid; the spacing 0.002 × 0.01
sees the P1 interpolation error between FEM nodes, not only the nodal values):

* PINNs (:mod:`hybrid.baselines.pinn`): the seed's set-up and the tuned one, for κ = 0.01 and
  for the parametric family (κ a network input), plus ablations of the tuned ingredients;
  wall time to train, wall time per query of the whole field (one forward pass on the grid,
  best of several repeats) and of one value u(x, t) (one forward pass on one point).
* hybrid's own transient FEM path (the ``heat`` plug-in on cases/heat_rod.toml, the time loop
  of :mod:`hybrid.fem.transient`): P1 on an interval mesh of 50 and 200 cells,
  Crank–Nicolson with dt = h/4 (every grid time is an output time), LU (MUMPS). Set-up time
  (mesh, forms, JIT cache hits), and per query (one κ): the operator's assembly and
  factorisation, the time loop and the P1 interpolation onto the grid's x points.

    python benchmarks/pinn_vs_fem.py --out benchmarks/results/pinn_vs_fem.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import timeit
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEST_KAPPAS = (0.005, 0.01, 0.02, 0.035, 0.05)


# ----------------------------------------------------------------------------- FEM
class HeatFEM:
    """hybrid's transient path on the seed's case (cases/heat_rod.toml), serial (COMM_SELF).

    The case's mesh is refined to ``cells`` and its grid to ``dt``, with an output at every
    grid time of the evaluation (``every``); the model is hybrid's ``heat`` plug-in and the
    time loop :class:`hybrid.fem.transient.TransientSolver` (Crank–Nicolson, one LU per κ:
    the operator depends on κ, so the factorisation is part of each query).
    """

    def __init__(self, cells: int, dt: float, t_step: float = 0.01):
        import hybrid.fem  # noqa: F401  (the wheel's MPI first)
        from hybrid.core.case import parse_case
        from hybrid.fem import MPI
        from hybrid.fem.model_problem import ModelProblem

        every = int(round(t_step / dt))
        text = (ROOT / "cases/heat_rod.toml").read_text()
        text = text.replace("cells = 200", f"cells = {cells}").replace(
            "dt = 0.01", f"dt = {dt!r}").replace("every = 10", f"every = {every}")
        self.problem = ModelProblem(parse_case(text, ROOT / "cases/heat_rod.toml"),
                                    MPI.COMM_SELF)
        self.dt = dt
        self.x = self.problem.V.tabulate_dof_coordinates()[:, 0].copy()
        self.order = np.argsort(self.x)
        self.n_dofs = self.x.size

    def field(self, kappa: float, x_eval: np.ndarray, t_eval: np.ndarray) -> np.ndarray:
        """u_h on the grid t_eval × x_eval (every t_eval must be an output time)."""
        times = self.problem.stepper.output_times()
        idx = [int(np.argmin(np.abs(times - t))) for t in t_eval]
        if not np.allclose(times[idx], t_eval, atol=1e-12):
            raise ValueError("every evaluation time must be an output time")
        xs = self.x[self.order]
        rows: list[np.ndarray] = []

        def keep(t, u):
            rows.append(np.interp(x_eval, xs, u.x.array[self.order]))

        res = self.problem.solve_transient(np.array([kappa]), on_output=keep)
        if not res.ok:
            raise RuntimeError(res.reason)
        return np.array(rows)[idx]


def bench_fem(cells: int, x, t, kappas, repeat: int) -> dict:
    from hybrid.baselines.pinn import relative_l2_error

    h = 2.0 / cells
    dt = h / 4
    t0 = time.perf_counter()
    HeatFEM(cells, dt)            # the first build may compile the forms (FFCx JIT, cached)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fem = HeatFEM(cells, dt)
    setup = time.perf_counter() - t0
    errors = {str(k): relative_l2_error(fem.field(k, x, t), x, t, k) for k in kappas}
    q = min(timeit.repeat(lambda: fem.field(0.01, x, t), number=1, repeat=repeat))
    out = {"method": "FEM P1 + Crank-Nicolson (hybrid transient path, heat plug-in)",
           "cells": cells,
           "n_dofs": fem.n_dofs, "h": h, "dt": dt, "steps": int(round(1.0 / dt)),
           "setup_time_s": setup, "setup_time_first_s": first, "query_time_s": q,
           "rel_l2_error": errors["0.01"], "rel_l2_error_by_kappa": errors}
    print(f"  FEM {cells:4d} cells dt {dt:.4g}: error {errors['0.01']:.2e} (κ=0.01), "
          f"max over κ {max(errors.values()):.2e}, query {q * 1e3:.2f} ms", flush=True)
    return out


# ----------------------------------------------------------------------------- surrogates
def p1_interpolation(x_eval: np.ndarray, nodes: np.ndarray):
    """The sparse matrix W with (W u)(x_e) = the P1 interpolant of nodal values u at x_e."""
    import scipy.sparse as sp

    order = np.argsort(nodes)
    xs = nodes[order]
    j = np.clip(np.searchsorted(xs, x_eval, side="right") - 1, 0, xs.size - 2)
    w = (x_eval - xs[j]) / (xs[j + 1] - xs[j])
    rows = np.repeat(np.arange(x_eval.size), 2)
    cols = np.stack([order[j], order[j + 1]], axis=1).ravel()
    vals = np.stack([1.0 - w, w], axis=1).ravel()
    return sp.csr_matrix((vals, (rows, cols)), shape=(x_eval.size, nodes.size))


def bench_surrogates(x, t, kappas, repeat: int, samples: int = 32, cells: int = 200) -> dict:
    """Surrogates of hybrid trained on FEM trajectories of the parametric rod (κ a parameter).

    A campaign of ``samples`` trajectories of cases/heat_rod.toml (P1, ``cells`` cells, CN,
    dt = 0.01, an output at every step), then ``hybrid train`` of each kind; train time =
    campaign + training (the FEM snapshots are the surrogates' training cost), query = the
    whole (x, t) field: the surrogate's trajectory on the P1 nodes and its interpolation
    onto the grid's x points, as for the FEM.
    """
    import tempfile

    from hybrid.baselines.pinn import relative_l2_error
    from hybrid.core.case import load_case
    from hybrid.fem import MPI
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig
    from hybrid.workflows.campaign import run_campaign

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        text = (ROOT / "cases/heat_rod.toml").read_text()
        text = text.replace("cells = 200", f"cells = {cells}").replace(
            "every = 10", "every = 1").replace(
            'store = "runs/heat_rod/store"', f'store = "{tmp}/store"')
        case_path = Path(tmp) / "rod.toml"
        case_path.write_text(text)
        t0 = time.perf_counter()
        run_campaign(load_case(case_path), samples=samples, progress=False, paraview=False,
                     comm=MPI.COMM_SELF)
        t_campaign = time.perf_counter() - t0
        from hybrid.core.store import SnapshotStore

        st = SnapshotStore(Path(tmp) / "store")
        W = p1_interpolation(x, st.static.points[:, 0])      # (n_x, N), sparse
        for kind, label in (("galerkin", "galerkin_time"), ("pod-nn", "pod_nn_time"),
                            ("latent", "latent_ode")):
            # the latent ODE integrates every trajectory per epoch: fewer epochs
            epochs = {"adam_epochs": 200, "lbfgs_iterations": 50} if kind == "latent" else {}
            cfg = TrainingConfig(progress=False, device="cpu", threads=1,
                                 validation_fraction=0.125, seed=0, **epochs)
            t0 = time.perf_counter()
            sur, rep = build_surrogate(st.path, BuildOptions(kind=kind, training=cfg))
            t_build = time.perf_counter() - t0

            def field(k, sur=sur):
                return (W @ sur.field(np.array([k])).T).T        # (n_t, n_x)

            errors = {str(k): relative_l2_error(field(k), x, t, k) for k in kappas}
            q = min(timeit.repeat(lambda f=field: f(0.01), number=5, repeat=repeat)) / 5
            qc = min(timeit.repeat(lambda s=sur: s.predict(np.array([0.01])), number=20,
                                   repeat=repeat)) / 20
            out[label] = {
                "method": f"hybrid {sur.kind} surrogate on {samples} FEM trajectories "
                          f"(P1 {cells} cells, CN, dt 0.01)",
                "kind": sur.kind, "modes": sur.n_modes, "trajectories": samples,
                "campaign_time_s": t_campaign, "build_time_s": t_build,
                "train_time_s": t_campaign + t_build, "query_time_s": q,
                "coefficients_query_time_s": qc,
                "rel_l2_error": errors["0.01"], "rel_l2_error_by_kappa": errors,
                "validation": rep.get("metrics", {})}
            print(f"  {label}: {sur.n_modes} modes, error {errors['0.01']:.2e} (κ=0.01), max "
                  f"{max(errors.values()):.2e}, query {q * 1e3:.2f} ms "
                  f"(coefficients {qc * 1e6:.0f} µs), build {t_build:.1f} s", flush=True)
    return out


# ----------------------------------------------------------------------------- PINN
def bench_pinn(name: str, cfg, x, t, kappas, repeat: int) -> dict:
    import torch

    from hybrid.baselines.pinn import predict_field, relative_l2_error, train_pinn

    res = train_pinn(cfg)
    model = res.model
    ks = kappas if cfg.parametric else (cfg.kappa,)
    errors = {str(k): relative_l2_error(predict_field(model, x, t, k if cfg.parametric
                                                      else None), x, t, k) for k in ks}

    def query():
        predict_field(model, x, t, 0.01 if cfg.parametric else None)
        if res.device.startswith("cuda"):
            torch.cuda.synchronize()

    query()
    q = min(timeit.repeat(query, number=5, repeat=repeat)) / 5
    p = next(model.parameters())
    one = [torch.tensor([v], dtype=p.dtype, device=p.device) for v in (0.3, 0.7, 0.01)]

    def point():             # u(x, t) at one point: what a PINN can answer without the field
        with torch.no_grad():
            model(one[0], one[1], one[2] if cfg.parametric else None)
        if res.device.startswith("cuda"):
            torch.cuda.synchronize()

    point()
    q1 = min(timeit.repeat(point, number=200, repeat=repeat)) / 200
    out = {"method": name, "config": cfg.to_dict(), "device": res.device,
           "train_time_s": res.wall_time, "query_time_s": q, "point_query_time_s": q1,
           "initial_loss": res.initial_loss, "final_loss": res.final_loss,
           "final_loss_terms": res.final_terms,
           "rel_l2_error": errors.get("0.01", errors.get(str(cfg.kappa))),
           "rel_l2_error_by_kappa": errors,
           "loss_history": res.history}
    print(f"  {name:<34} train {res.wall_time:6.1f} s  error {out['rel_l2_error']:.2e} "
          f"(max over κ {max(errors.values()):.2e})  query {q * 1e3:.2f} ms", flush=True)
    return out


def compare(results: dict) -> dict:
    """Where each PINN stands against each FEM mesh: error and time ratios (measured)."""
    out = {}
    for pn, p in results["pinn"].items():
        for fn, f in results["fem"].items():
            ks = [k for k in p["rel_l2_error_by_kappa"] if k in f["rel_l2_error_by_kappa"]]
            pe = max(p["rel_l2_error_by_kappa"][k] for k in ks)
            fe = max(f["rel_l2_error_by_kappa"][k] for k in ks)
            saved = f["query_time_s"] - p["query_time_s"]
            out[f"{pn} vs {fn}"] = {
                "max_error_pinn": pe, "max_error_fem": fe,
                "error_ratio_pinn_over_fem": pe / fe,
                "pinn_more_accurate": pe < fe,
                "query_speedup_pinn": f["query_time_s"] / p["query_time_s"],
                # one value u(x, t): the FEM still runs its time loop to t (here the whole one)
                "point_query_speedup_pinn": f["query_time_s"] / p["point_query_time_s"],
                "cost_to_first_answer_ratio": (p["train_time_s"] + p["query_time_s"])
                / (f["setup_time_s"] + f["query_time_s"]),
                "break_even_queries": (p["train_time_s"] - f["setup_time_s"]) / saved
                if saved > 0 else None,
            }
    return out


def markdown_table(doc: dict) -> str:
    """The measured table (docs/baselines.md) from a result document."""
    rows = ["| method | train / set-up (s) | query, whole field (ms) | one point (µs) "
            "| rel. L² error κ = 0.01 | max rel. L² error over test κ |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, f in doc["results"]["fem"].items():
        rows.append(f"| {name} (dt = {f['dt']:g}) | {f['setup_time_s']:.3f} | "
                    f"{f['query_time_s'] * 1e3:.2f} | — | {f['rel_l2_error']:.2e} | "
                    f"{max(f['rel_l2_error_by_kappa'].values()):.2e} |")
    for name, p in doc["results"].get("surrogates", {}).items():
        rows.append(f"| {name} ({p['modes']} modes; train = campaign + build) | "
                    f"{p['train_time_s']:.1f} | {p['query_time_s'] * 1e3:.2f} | — | "
                    f"{p['rel_l2_error']:.2e} | {max(p['rel_l2_error_by_kappa'].values()):.2e} |")
    for name, p in doc["results"]["pinn"].items():
        errs = p["rel_l2_error_by_kappa"]
        worst = f"{max(errs.values()):.2e}" if len(errs) > 1 else "—"
        rows.append(f"| {name} | {p['train_time_s']:.1f} | {p['query_time_s'] * 1e3:.2f} | "
                    f"{p['point_query_time_s'] * 1e6:.0f} | {p['rel_l2_error']:.2e} | {worst} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/pinn_vs_fem.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cells", default="50,200")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--table", type=Path, default=None,
                    help="print the markdown table of an existing result file and exit")
    args = ap.parse_args()
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return

    import torch

    from hybrid.baselines.pinn import SEED, evaluation_grid, tuned_config
    from hybrid.core.provenance import package_versions

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    x, t = evaluation_grid()
    results: dict = {"fem": {}, "pinn": {}}
    print("FEM reference loop", flush=True)
    for cells in (int(c) for c in args.cells.split(",")):
        results["fem"][f"fem_p1_cn_{cells}"] = bench_fem(cells, x, t, TEST_KAPPAS, args.repeat)
    dev = {"device": args.device}
    runs = {
        "pinn_seed": replace(SEED, **dev),
        "pinn_tuned": tuned_config(False, **dev),
        "pinn_seed_parametric": replace(SEED, parametric=True, **dev),
        "pinn_tuned_parametric": tuned_config(True, **dev),
    }
    if not args.no_ablation:   # what each tuned ingredient buys, fixed κ
        runs |= {
            "ablation_seed_plus_hard_constraint": replace(SEED, hard_constraint=True, **dev),
            "ablation_seed_plus_lbfgs": replace(SEED, dtype="float64", lbfgs_iterations=1000,
                                                **dev),
            "ablation_tuned_soft_constraints": tuned_config(False, hard_constraint=False, **dev),
            "ablation_tuned_no_lbfgs": tuned_config(False, lbfgs_iterations=0, **dev),
        }
    print("surrogates trained on FEM trajectories (κ a parameter)", flush=True)
    results["surrogates"] = bench_surrogates(x, t, TEST_KAPPAS, args.repeat)
    print("PINNs", flush=True)
    for name, cfg in runs.items():
        results["pinn"][name] = bench_pinn(name, cfg, x, t, TEST_KAPPAS, args.repeat)
    main_runs = {k: v for k, v in results["pinn"].items() if not k.startswith("ablation")}
    doc = {
        "benchmark": "pinn_vs_fem",
        "command": " ".join(sys.argv),
        "problem": {"pde": "u_t = kappa u_xx", "domain": "[-1,1] x [0,1]",
                    "initial": "-sin(pi x)", "boundary": "u(+-1,t) = 0",
                    "exact": "-sin(pi x) exp(-kappa pi^2 t)", "kappa": 0.01,
                    "kappa_range": [0.005, 0.05], "test_kappas": list(TEST_KAPPAS)},
        "evaluation": {"grid": [int(x.size), int(t.size)],
                       "error": "relative discrete L2 over the (x, t) grid vs exact",
                       "query": "whole field on the grid: PINN forward pass / FEM time loop"},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "cuda": torch.cuda.is_available()},
        "versions": package_versions(),
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
        "comparison": compare({"fem": results["fem"], "pinn": main_runs}),
        "wall_time_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(markdown_table(doc))
    print(f"wrote {args.out} ({doc['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
