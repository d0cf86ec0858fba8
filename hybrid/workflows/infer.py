"""Parameter inference for a case: what ``hybrid infer`` runs (also a Python API).

::

    from hybrid.workflows.infer import InferenceOptions, run_inference
    summary = run_inference("cases/thermal_block.toml", "runs/thermal_block/surrogate",
                            "obs.csv", InferenceOptions(method="map"), out="runs/infer")

**MAP** (``method="map"``): the surrogate's MAP estimate by multi-start L-BFGS-B with
autograd gradients (a Sobol design of starts), then the trust-region confirmation loop of
:func:`hybrid.inference.confirm` with the FEM as the expensive model (gradients from its
tangent-linear model), iterated until the corrected surrogate predicts no further decrease of
the FEM misfit: the answer is the FEM's MAP estimate. Reported: μ̂, the FEM and the surrogate
misfit at μ̂, the Laplace (Gauss–Newton) covariance from the FEM Jacobian, FEM solves used.

**MCMC** (``method="mcmc"``): adaptive delayed-acceptance Metropolis started at the surrogate's
MAP with its Laplace covariance as the first proposal; stage 1 is the surrogate, stage 2 is

* ``stage2="coupler"`` (default): the :class:`~hybrid.workflows.coupler.Coupler` — surrogate,
  reduced basis or FEM, whichever is certified to ``tol`` noise standard deviations (FEM-grade);
  with ``[coupler] trust = "indicator"`` in the case, a nonlinear or non-affine model's
  surrogate answers may be accepted on the FEM residual indicator (not a bound; labelled
  uncertified in the coupler's report);
* ``stage2="fem"``: the FEM itself (the chain targets the FEM posterior exactly);
* ``stage2="none"``: surrogate-only sampling, the fast mode, labelled *not exact*.

With ``coarse_case`` (``--coarse CASE_COARSE.toml``, only with ``stage2="fem"``) a second
:class:`~hybrid.fem.model.FEMModel` on that case (typically the same case with fewer cells or
a larger dt) is a middle level: multi-level delayed acceptance, surrogate → coarse FEM →
fine FEM (:mod:`hybrid.inference.mcmc`), still exact for the fine FEM posterior. The coarse
case must have the same parameters (names, bounds, scaling) and observation names; its
solves are not committed to the store (they are not the case's snapshots). The summary's
``mcmc.levels`` gives each level's evaluations, stage acceptance and evaluations per
effective sample; ``coarse`` the coarse solves and time.

Chains run on the MPI ranks (each rank with its own FEM on COMM_SELF). Every FEM solve is
committed to the store (adaptive enrichment) in a sample range of its own per rank.

Outputs in ``out``: ``summary.json``, ``corner.png``, ``trace.png`` (MCMC), ``samples.npz``
(MCMC), and ``field/solution.xdmf``, the FEM field at the estimate (the MAP, or the posterior
mean), for ParaView. Collective on COMM_WORLD.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hybrid.errors import HybridError

METHODS = ("map", "mcmc")
STAGE2 = ("coupler", "fem", "none")
KERNELS = ("mala", "rw")
RANK_RANGE = 100_000
"""Sample numbers per rank for enrichment commits (disjoint ranges under mpirun)."""


@dataclass
class InferenceOptions:
    """Settings of one inference run (the ``hybrid infer`` options)."""

    method: str = "map"
    prior: str = "uniform"
    starts: int = 8
    seed: int = 0
    tol: float = 0.1
    """Coupler trust threshold: certified error ≤ tol noise standard deviations."""
    stage2: str = "coupler"
    samples: int = 2000
    burn_in: int = 1000
    chains: int = 4
    kernel: str = "mala"
    """MCMC first-stage proposal: ``mala`` (Langevin, surrogate gradients) or ``rw``."""
    enrich: bool = True
    """Commit FEM solves to the store."""
    field: bool = True
    """Write the FEM field at the estimate."""
    plots: bool = True
    max_fem: int = 200
    """Budget of FEM solves of the MAP confirmation loop."""
    coarse_case: str | None = None
    """MCMC with ``stage2="fem"``: a case file whose FEM is the middle level (multi-level
    delayed acceptance)."""
    coarse_pairs: int = 16
    """With ``coarse_case``: store samples at which the coarse FEM is also solved to fit its
    approximation error ê(μ) (linear in μ from P + 3 pairs, else constant) against the fine
    outputs (:mod:`hybrid.inference.discrepancy`); the coarse level is then y_c + ê with the
    fit's spread added to the noise variance. 0: the coarse model as it is."""
    subchain: int = 1
    """MCMC delayed acceptance with ``kernel="rw"``: random-walk steps on the surrogate per
    proposal to the next level (:func:`hybrid.inference.mcmc.sample`); 1: one step."""

    def check(self) -> None:
        if self.method not in METHODS:
            raise HybridError(f"--method must be one of {', '.join(METHODS)}, got "
                              f"{self.method!r}")
        if self.stage2 not in STAGE2:
            raise HybridError(f"--stage2 must be one of {', '.join(STAGE2)}, got "
                              f"{self.stage2!r}")
        if self.kernel not in KERNELS:
            raise HybridError(f"--kernel must be one of {', '.join(KERNELS)}, got "
                              f"{self.kernel!r}")
        if self.prior != "uniform":
            raise HybridError(f"--prior: only 'uniform' (in the natural coordinate: log-uniform "
                              f"for log-scaled parameters) is available, got {self.prior!r}")
        for name in ("starts", "samples", "chains", "max_fem"):
            if getattr(self, name) < 1:
                raise HybridError(f"--{name.replace('_', '-')} must be >= 1")
        if self.burn_in < 0:
            raise HybridError("--burn-in must be >= 0")
        if not (np.isfinite(self.tol) and self.tol > 0):
            raise HybridError(f"--tol must be a positive number, got {self.tol}")
        if self.coarse_pairs < 0 or self.coarse_pairs == 1:
            raise HybridError(f"--coarse-pairs must be 0 (no correction) or >= 2, got "
                              f"{self.coarse_pairs}")
        if self.subchain < 1:
            raise HybridError(f"--subchain must be >= 1, got {self.subchain}")
        if self.subchain > 1 and (self.method != "mcmc" or self.stage2 == "none"
                                  or self.kernel != "rw"):
            raise HybridError("--subchain needs --method mcmc with a second stage (--stage2 "
                              "fem or coupler) and --kernel rw")
        if self.coarse_case is not None and (self.method != "mcmc" or self.stage2 != "fem"):
            raise HybridError("--coarse needs --method mcmc --stage2 fem (the coarse FEM "
                              f"screens for the fine one), got --method {self.method} "
                              f"--stage2 {self.stage2}")


def load_coarse_case(path, case):
    """The coarse level's case, checked against the fine ``case``.

    Refused, in one line naming the file and what differs, unless the parameters (names,
    bounds, scaling) and the observation names are those of ``case``.
    """
    from hybrid.core.case import load_case

    coarse = load_case(path)
    fine_p, coarse_p = case.parameters.to_dict(), coarse.parameters.to_dict()
    if [p["name"] for p in coarse_p] != [p["name"] for p in fine_p]:
        raise HybridError(f"{coarse.path}: the coarse case's parameters "
                          f"{[p['name'] for p in coarse_p]} are not those of {case.path} "
                          f"{[p['name'] for p in fine_p]}")
    for a, b in zip(coarse_p, fine_p, strict=True):
        if a != b:
            raise HybridError(f"{coarse.path}: parameter {a['name']!r} is [{a['lower']}, "
                              f"{a['upper']}]{' log' if a['log'] else ''} in the coarse case, "
                              f"[{b['lower']}, {b['upper']}]{' log' if b['log'] else ''} in "
                              f"{case.path}")
    fine_o, coarse_o = case.observations.data_names(), coarse.observations.data_names()
    if coarse_o != fine_o:
        diff = sorted(set(fine_o) ^ set(coarse_o))
        what = (f"differ from those of {case.path} ({len(coarse_o)} vs {len(fine_o)}; "
                f"in one only: {', '.join(diff[:4])}{', …' if len(diff) > 4 else ''})" if diff
                else f"are those of {case.path} in another order")
        raise HybridError(f"{coarse.path}: the coarse case's observation names {what}")
    return coarse


def _summary_mu(names, mu) -> dict:
    return {n: float(v) for n, v in zip(names, mu, strict=True)}


def run_inference(case, surrogate, data, options: InferenceOptions | None = None, *,
                  out: str | Path | None = None, comm=None, store: str | Path | None = None
                  ) -> dict | None:
    """Estimate the case's parameters from ``data``; return the summary (on rank 0).

    Args:
        case: a :class:`~hybrid.core.case.Case` or a case-file path.
        surrogate: a :class:`~hybrid.surrogate.Surrogate` or its directory (must match the
            case).
        data: :class:`~hybrid.inference.Observations` or an observation CSV path.
        options: what to run.
        out: output directory (None: write nothing).
        comm: the communicator (default COMM_WORLD); collective on it.
        store: the store FEM solves are committed to (default: the case's, if it exists).
    """
    from hybrid.core.case import Case, load_case
    from hybrid.fem import MPI  # the DOLFINx wheel's MPI first
    from hybrid.fem.model import FEMModel
    from hybrid.inference import (
        Observations,
        Posterior,
        confirm,
        find_map,
        read_csv,
        sample,
    )
    from hybrid.inference.discrepancy import corrected_model, inflated_data
    from hybrid.inference.models import fem_model, surrogate_model
    from hybrid.inference.proposal import laplace_proposal
    from hybrid.surrogate import Surrogate

    opt = options or InferenceOptions()
    opt.check()
    comm = comm if comm is not None else MPI.COMM_WORLD
    rank = comm.rank
    t_start = time.perf_counter()
    case = case if isinstance(case, Case) else load_case(case)
    coarse_case = (load_coarse_case(opt.coarse_case, case) if opt.coarse_case is not None
                   else None)
    sur = surrogate if isinstance(surrogate, Surrogate) else Surrogate.load(surrogate)
    sur.check_case(case)
    if not sur.observation_names:
        raise HybridError(f"case {case.name!r} declares no observations ([observations] in "
                          "the case file): nothing to compare data with")
    obs = data if isinstance(data, Observations) else read_csv(
        data, expected=sur.observation_names)
    made_for = obs.meta.get("case")
    if made_for is not None and made_for != case.name:
        raise HybridError(f"{data}: the data were made for case {made_for!r} (its '# case:' "
                          f"line), not for case {case.name!r} ({case.path})")
    store = Path(store) if store is not None else case.store
    if not (store / "store.json").exists():
        store = None
    elif opt.enrich:   # checked on the root, refused on every rank
        problem = None
        if rank == 0:
            try:
                _check_enrichment_store(store, case)
            except HybridError as exc:
                problem = str(exc)
        problem = comm.bcast(problem, root=0)
        if problem:
            raise HybridError(problem)
    out = Path(out) if out is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    space = case.parameters
    cheap = Posterior(surrogate_model(sur), obs, space, opt.prior)
    options = asdict(opt) | {"coarse_case": None if opt.coarse_case is None else
                             str(opt.coarse_case)}
    summary: dict = {"case": case.name, "method": opt.method, "options": options,
                     "parameters": space.names, "observations": list(obs.names),
                     "data": obs.meta, "data_values": obs.values.tolist(),
                     "data_sigma": obs.sigma.tolist(),
                     "surrogate": {"kind": sur.kind, "modes": sur.n_modes,
                                   "path": str(getattr(sur, "path", ""))},
                     "ranks": comm.size}

    # the surrogate's MAP: the MAP method's start, the chains' start and first proposal
    t0 = time.perf_counter()
    cheap_map = find_map(cheap, starts=opt.starts, seed=opt.seed)
    summary["surrogate_map"] = {"mu": _summary_mu(space.names, cheap_map.mu),
                                "chi2": cheap_map.chi2, "wall_time_s": time.perf_counter() - t0,
                                "surrogate_evaluations": cheap_map.n_model_evals}

    laplace_mu = None
    if opt.method == "map":
        fem = FEMModel(case, comm, store=store if opt.enrich else None, run_id="infer-map")
        res = confirm(cheap, fem_model(fem), start=cheap_map, jacobian="model",
                      max_expensive=opt.max_fem)
        estimate = res.mu
        std = res.std
        summary["map"] = res.to_dict()
        summary["estimate"] = _summary_mu(space.names, estimate)
        summary["std"] = None if std is None else _summary_mu(space.names, std)
        if std is not None:  # Laplace: Gaussian 90 % intervals
            summary["interval_90"] = {n: [float(m - 1.6449 * s), float(m + 1.6449 * s)]
                                      for n, m, s in zip(space.names, estimate, std, strict=True)}
        summary["misfit"] = {"chi2_fem": res.chi2, "chi2_surrogate": res.chi2_cheap,
                             "n_observations": len(obs)}
        summary["fem"] = {"solves": fem.n_solves, "time_s": fem.time,
                          "committed": len(fem.committed)}
        fem.close()
        mcmc = None
    else:
        fem = coupler = coarse = None
        stage2 = None
        intermediate = []
        if opt.stage2 != "none":
            base = None if store is None else _enrichment_base(store, rank)
            keep = store if opt.enrich else None
            if opt.stage2 == "fem":
                fem = FEMModel(case, MPI.COMM_SELF, store=keep, index_base=base,
                               run_id="infer-mcmc")
                stage2 = cheap.with_model(fem_model(fem, gradients=False))
                if coarse_case is not None:
                    coarse = FEMModel(coarse_case, MPI.COMM_SELF)
                    mid = fem_model(coarse, gradients=False)
                    mid.name = f"coarse FEM ({coarse_case.path.name})"
                    stage2.model.name = f"FEM ({case.path.name})"
                    level = cheap.with_model(mid)
                    if opt.coarse_pairs:
                        n0 = coarse.n_solves
                        err = _coarse_error(store, coarse, opt.coarse_pairs, space, comm)
                        level = cheap.with_model(corrected_model(mid, err, mid.name)
                                                 ).with_data(inflated_data(obs, err))
                        summary["coarse_correction"] = err.to_dict() | {
                            "coarse_solves": comm.bcast(coarse.n_solves - n0, root=0),
                            "what": "Bayesian approximation error e = y_fine - y_coarse "
                                    f"({err.kind} in mu, fitted at store samples) added to "
                                    "the coarse model, its spread to the noise variance "
                                    "(hybrid.inference.discrepancy)"}
                    intermediate = [level]
            else:
                from hybrid.workflows.coupler import Coupler

                fem = FEMModel(case, MPI.COMM_SELF)
                cc = case.coupler   # [coupler]: trust, tol (else --tol), holdout
                coupler = Coupler(sur, fem, sigma=obs, tol=cc.tol or opt.tol, store=keep,
                                  static=_static(store, sur), index_base=base,
                                  run_id="infer-mcmc", trust=cc.trust, holdout=cc.holdout)
                stage2 = cheap.with_model(coupler.forward_model())
        # the bound-safe Laplace approximation at the surrogate's MAP: first proposal,
        # anchor of the adapted covariance, and the spread of the over-dispersed starts
        lap = laplace_proposal(cheap, cheap_map.mu)
        dmu = cheap.transform.dmu_dw(cheap.transform.to_w(cheap_map.mu))
        laplace_mu = (cheap_map.mu, dmu[:, None] * lap.cov_w * dmu[None, :])
        summary["proposal"] = {"centre": _summary_mu(space.names, lap.mu),
                               "moved_inside": [n for n, m in zip(space.names, lap.moved,
                                                                  strict=True) if m]}
        mcmc = sample(stage2, cheap, mode="surrogate-only" if stage2 is None else
                      "delayed-acceptance", n_samples=opt.samples, burn_in=opt.burn_in,
                      chains=opt.chains, seed=opt.seed, x0=lap.mu, proposal_cov=lap.cov,
                      start_cov=lap.cov, kernel=opt.kernel, intermediate=intermediate,
                      subchain=opt.subchain if stage2 is not None else 1,
                      comm=comm if comm.size > 1 else None)
        committed = (coupler.committed if coupler is not None else
                     fem.committed if fem is not None else [])
        parts = comm.gather({"fem_solves": fem.n_solves if fem else 0,
                             "fem_time_s": fem.time if fem else 0.0,
                             "committed": len(committed),
                             "coarse_solves": coarse.n_solves if coarse else 0,
                             "coarse_time_s": coarse.time if coarse else 0.0,
                             "coupler": coupler.report() if coupler else None}, root=0)
        estimate = None
        if rank == 0:
            d = mcmc.to_dict()
            label = {"coupler": "delayed acceptance, stage 2 = coupler (FEM or a model "
                                "certified within tol noise std)",
                     "fem": "delayed acceptance, stage 2 = FEM (exact FEM posterior)",
                     "none": "surrogate only: NOT the FEM posterior (fast mode)"}[opt.stage2]
            if coarse is not None:
                label = (f"multi-level delayed acceptance, surrogate -> coarse FEM "
                         f"({coarse_case.path.name}) -> FEM (exact FEM posterior)")
            if opt.stage2 == "coupler" and case.coupler.trust == "indicator":
                label = ("delayed acceptance, stage 2 = coupler (FEM, or the surrogate "
                         "accepted on the opted-in residual indicator: NOT certified)")
            elif opt.stage2 == "coupler" and coupler is not None and coupler.basis in (
                    "conformal", "ensemble"):
                label = ("delayed acceptance, stage 2 = coupler (FEM, or the surrogate "
                         "accepted on its calibrated conformal band or ensemble spread: "
                         "NOT certified)")
            d["target"] = label
            summary["mcmc"] = d
            estimate = np.mean(mcmc.draws(), axis=0)
            summary["estimate"] = _summary_mu(space.names, estimate)
            summary["std"] = _summary_mu(space.names, np.std(mcmc.draws(), axis=0, ddof=1))
            summary["interval_90"] = {n: [d["parameters"][n]["q05"], d["parameters"][n]["q95"]]
                                      for n in space.names}
            summary["fem"] = {"solves": sum(p["fem_solves"] for p in parts),
                              "time_s": sum(p["fem_time_s"] for p in parts),
                              "committed": sum(p["committed"] for p in parts)}
            if coupler is not None:
                summary["coupler"] = [p["coupler"] for p in parts]
            if coarse is not None:
                summary["coarse"] = {"case": str(coarse_case.path), "name": coarse_case.name,
                                     "solves": sum(p["coarse_solves"] for p in parts),
                                     "time_s": sum(p["coarse_time_s"] for p in parts),
                                     "committed": 0}
        estimate = comm.bcast(estimate, root=0)
        if fem is not None:
            fem.close()
        if coarse is not None:
            coarse.close()

    if out is not None and opt.field:
        from hybrid.workflows.solve import solve_one

        res_field = solve_one(case, estimate, out / "field", comm)
        if rank == 0:
            summary["field"] = {"xdmf": str(res_field["xdmf"]),
                                "status": res_field["summary"]["status"],
                                "qoi": res_field["summary"].get("qoi")}
    summary["wall_time_s"] = time.perf_counter() - t_start
    if rank != 0:
        return None
    if out is not None:
        _write_outputs(out, summary, mcmc, opt, cheap_map, space.names, laplace_mu)
    return summary


def _coarse_error(store: Path | None, coarse, n: int, space, comm):
    """The error model of y_fine − y_coarse at the first ``n`` ok samples of ``store``.

    The fine outputs are the store's observation rows applied to its fields (no fine solve);
    the coarse FEM (``coarse``, a FEMModel on COMM_SELF) is solved at the same μ on rank 0
    and the result broadcast, so every rank's chains see one correction.
    """
    from hybrid.core.store import SnapshotStore, read_sample, sample_path
    from hybrid.inference.discrepancy import approximation_error

    if store is None:
        raise HybridError("--coarse-pairs needs the case's store (the fine outputs of its "
                          "samples); give --coarse-pairs 0 to use the coarse model as it is")
    err, problem = None, None
    if comm.rank == 0:
        try:
            st = SnapshotStore(store)
            if st.transient:
                raise HybridError(f"{store}: --coarse-pairs: the store holds trajectories; "
                                  "the coarse correction is implemented for steady stores "
                                  "(give --coarse-pairs 0)")
            ok = [s.index for s in st.samples() if s.ok][:n]   # headers only
            if len(ok) < 2:
                raise HybridError(f"{store}: {len(ok)} ok sample(s); the coarse correction "
                                  "needs at least 2")
            pairs = [read_sample(sample_path(st.path, i)) for i in ok]
            fine = st.static.observe(np.array([s.u for s in pairs]))
            cheap = np.array([coarse.observe(s.mu) for s in pairs])
            err = approximation_error(fine, cheap, np.array([s.mu for s in pairs]),
                                      space.log_mask)
        except HybridError as exc:
            problem = str(exc)
    problem = comm.bcast(problem, root=0)
    if problem:
        raise HybridError(problem)
    return comm.bcast(err, root=0)


def _check_enrichment_store(store: Path, case) -> None:
    """Refuse to enrich a store that another case made, or that a campaign is writing."""
    from hybrid.core.store import SnapshotStore, store_lock

    fp = SnapshotStore(store).manifest.get("fingerprint") or {}
    mine = case.fingerprint_against(fp)
    diff = [k for k in mine if fp.get(k) != mine[k]]
    if diff:
        raise HybridError(f"{store}: the store was made from another case ({', '.join(diff)} "
                          f"differ from {case.path}); FEM solves cannot be committed to it "
                          "(use --no-enrich)")
    with store_lock(store, wait=0.0):
        pass


def _enrichment_base(store: Path, rank: int) -> int:
    """First free sample number in this rank's enrichment range.

    Ranks never collide and repeated runs never overwrite a sample.
    """
    from hybrid.core.store import ENRICHMENT_BASE, SnapshotStore

    lo = ENRICHMENT_BASE + RANK_RANGE * (1 + rank)
    used = [i for i in SnapshotStore(store).committed_indices() if lo <= i < lo + RANK_RANGE]
    return max(used, default=lo - 1) + 1


def _static(store: Path | None, sur):
    """The static data of the store the surrogate was trained on."""
    from hybrid.core.store import SnapshotStore

    path = store if store is not None else Path(sur.meta.get("store", {}).get("path", ""))
    if not (Path(path) / "store.json").exists():
        raise HybridError(f"the coupler needs the snapshot store the surrogate was trained on "
                          f"(for its error bounds); {path} is not a store")
    return SnapshotStore(path).static


def _truth(summary: dict, names) -> np.ndarray | None:
    """The true μ of synthetic data (its '# mu_true:' line), or None."""
    txt = summary.get("data", {}).get("mu_true")
    try:
        v = np.array([float(x) for x in txt.split(",")]) if txt else None
    except ValueError:
        return None
    return v if v is not None and v.size == len(names) else None


def _write_outputs(out: Path, summary: dict, mcmc, opt: InferenceOptions, cheap_map,
                   names, laplace=None) -> None:
    from hybrid.core.store import write_json
    from hybrid.inference.map import _jsonable

    files = {"summary": str(out / "summary.json")}
    if opt.plots:
        from hybrid.inference.plots import corner, trace

        truth = _truth(summary, names)
        if mcmc is not None:
            corner(mcmc, out / "corner.png", truths=truth, laplace=laplace,
                   markers={"surrogate MAP": cheap_map.mu})
            trace(mcmc, out / "trace.png")
            files["trace"] = str(out / "trace.png")
        else:
            est = np.array([summary["estimate"][n] for n in names])
            draws = _laplace_draws(est, summary["map"].get("cov"), opt.seed)
            if draws is not None:
                corner(draws, out / "corner.png", names=names, truths=truth,
                       markers={"FEM MAP": est, "surrogate MAP": cheap_map.mu})
        if (out / "corner.png").exists():
            files["corner"] = str(out / "corner.png")
    if mcmc is not None:
        mcmc.save_npz(out / "samples.npz")
        files["samples"] = str(out / "samples.npz")
        observed = {"y": np.asarray(summary["data_values"]),
                    "sigma": np.asarray(summary["data_sigma"])}
        mcmc.save_netcdf(out / "posterior.nc", observed=observed,
                         attrs={"case": summary["case"], "target": summary["mcmc"]["target"],
                                "observations": ",".join(summary["observations"])})
        files["posterior"] = str(out / "posterior.nc")
    if "field" in summary:
        files["field"] = summary["field"]["xdmf"]
    summary["files"] = files
    write_json(out / "summary.json", _jsonable(summary))


def _laplace_draws(mean, cov, seed: int):
    """Draws from the Laplace approximation, for the corner plot of a MAP run."""
    if cov is None:
        return None
    cov = np.asarray(cov, dtype=float)
    try:
        L = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    z = np.random.default_rng(seed).standard_normal((4000, mean.size))
    return mean + z @ L.T


def print_summary(summary: dict) -> str:
    """A few human lines of a summary (for the CLI)."""
    lines = []
    est, std = summary["estimate"], summary.get("std") or {}
    what = ("MAP (FEM-confirmed)" if summary["method"] == "map" else
            summary["mcmc"]["target"])
    lines.append(f"{summary['case']}: {what}")
    for n, v in est.items():
        s = std.get(n)
        lines.append(f"  {n:>10} = {v:.6g}" + (f" ± {s:.3g}" if s is not None else ""))
    if "misfit" in summary:
        m = summary["misfit"]
        lines.append(f"  chi2 {m['chi2_fem']:.4g} (FEM) vs {m['chi2_surrogate']:.4g} "
                     f"(surrogate) for {m['n_observations']} observations")
    if "mcmc" in summary:
        d = summary["mcmc"]
        lines.append(f"  {d['chains']} chains x {d['draws_per_chain']} draws, max R-hat "
                     f"{d['max_rhat']:.3f}, min ESS {d['min_ess']:.0f}")
        for lv in d.get("levels", []):
            per, rate = lv["per_effective_sample"], lv["stage_acceptance"]
            lines.append(f"  level {lv['level']} {lv['model']}: {lv['evaluations']} "
                         f"evaluations" + (f", {per:.3g} per effective sample" if per else "")
                         + (f", stage acceptance {rate:.2f}" if rate is not None else ""))
        for w in d.get("warnings", []):
            lines.append(f"  WARNING: {w}")
    lines.append(f"  FEM solves {summary['fem']['solves']}, wall time "
                 f"{summary['wall_time_s']:.1f} s")
    return "\n".join(lines)

