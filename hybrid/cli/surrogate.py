"""``hybrid train`` and ``hybrid query``: thin typer commands over :mod:`hybrid.surrogate`.

Registered in :mod:`hybrid.cli.app` with ``app.command("train")(train_command)`` and
``app.command("query")(query_command)``. User errors raise
:class:`~hybrid.errors.HybridError` subclasses, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def train_command(
    store: Annotated[Path, typer.Argument(help="snapshot store directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="surrogate directory to write")],
    kind: Annotated[str, typer.Option(
        help="pod-nn or galerkin (transient stores: also latent)")] = "pod-nn",
    modes: Annotated[int | None, typer.Option(help="keep at most this many POD modes")] = None,
    energy: Annotated[float, typer.Option(help="POD: keep the modes capturing this fraction "
                                                "of the snapshot energy")] = 1.0 - 1e-10,
    inner_product: Annotated[str, typer.Option(help="POD inner product: auto, energy, h1, "
                                                     "h10 or l2")] = "auto",
    pod_method: Annotated[str, typer.Option(
        help="POD: auto, qr, snapshots, randomized or streaming (read the store in blocks, "
             "never whole; auto streams stores above 4 GiB)")] = "auto",
    epochs: Annotated[int, typer.Option(help="Adam epochs (full batch)")] = 500,
    lbfgs: Annotated[int, typer.Option(help="L-BFGS iterations after Adam")] = 3000,
    width: Annotated[int, typer.Option(help="hidden units per layer")] = 64,
    depth: Annotated[int, typer.Option(help="hidden layers")] = 3,
    members: Annotated[int, typer.Option(help="ensemble members (spread = indicator)")] = 1,
    physics_informed: Annotated[bool, typer.Option(
        help="add the reduced residual at collocation points (affine models)")] = True,
    residual_norm: Annotated[str, typer.Option(help="error or dual")] = "error",
    amplitude: Annotated[bool, typer.Option(
        help="scale outputs by the one-mode Galerkin amplitude (affine models)")] = False,
    collocation: Annotated[int, typer.Option(help="collocation points (Sobol)")] = 4096,
    validation: Annotated[float, typer.Option(help="fraction of snapshots held out")] = 0.1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    precision: Annotated[str, typer.Option(
        help="double, single-warmup or mixed-warmup")] = "double",
    seed: Annotated[int, typer.Option(help="seed of split, initialisation, collocation")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    plots: Annotated[bool, typer.Option(help="write training.png and modes.png")] = True,
    force: Annotated[bool, typer.Option(help="replace an existing surrogate at --out")] = False,
    calibrate: Annotated[float | None, typer.Option(
        help="calibrate a split-conformal error band at this miscoverage ALPHA (e.g. 0.1: "
             "coverage >= 90%) on half the validation snapshots, and measure its coverage on "
             "the other half")] = None,
) -> None:
    """Build a surrogate from a snapshot store: POD, reduced operators, network training."""
    from hybrid.core.outputs import check_target, replaced_dir
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig

    check_target(out, kind="dir", force=force)

    cfg = TrainingConfig(width=width, depth=depth, members=members, adam_epochs=epochs,
                         lbfgs_iterations=lbfgs, physics_informed=physics_informed,
                         residual_norm=residual_norm, collocation=collocation,
                         validation_fraction=validation, seed=seed, device=device,
                         precision=precision, threads=threads,
                         progress=progress and sys.stderr.isatty())
    opts = BuildOptions(kind=kind, modes=modes, energy=energy, inner_product=inner_product,
                        pod_method=pod_method,
                        amplitude=amplitude, training=cfg, calibrate=calibrate)
    sur, report = build_surrogate(store, opts)
    if _rank() != 0:
        return
    extra = {}
    if plots:
        from hybrid.surrogate.plots import modes_png, training_png

        if sur.meta.get("training", {}).get("history"):
            extra["training.png"] = training_png(sur.meta["training"]["history"])
        if sur.meta.get("metrics", {}).get("ranks"):
            extra["modes.png"] = modes_png(sur.meta["metrics"], kind)
    with replaced_dir(out) as tmp:   # the old surrogate survives any failure of the save
        sur.save(tmp, extra)
    m = report.get("metrics", {})
    transient = "output_times" in report
    norm = "space-time L2" if transient else "X-norm"
    err = (f"validation error ({norm}, relative) mean {m['surrogate_error_mean']:.2e}, max "
           f"{m['surrogate_error_max']:.2e}" if "surrogate_error_mean" in m
           else "no validation split")
    if "bound_effectivity_min" in m:
        err += (f"; error bound effectivity {m['bound_effectivity_min']:.3g} … "
                f"{m['bound_effectivity_max']:.3g}")
    train = (f", trained in {report['training_time_s']:.1f} s on {report['device']}"
             if "training_time_s" in report else "")
    what = (f"trajectories of {report['output_times']} output times" if transient
            else "snapshots")
    print(f"surrogate {report.get('kind', kind)}: {report['n_modes']} modes "
          f"({report['inner_product']} inner product), {report['train']} training + "
          f"{report['validation']} validation {what}{train}", flush=True)
    print(err, flush=True)
    for rec in (report.get("calibration") or {}).values():
        if rec:
            from hybrid.surrogate.calibration import Calibration

            print(Calibration.from_dict(rec).summary(), flush=True)
    if kind == "pod-nn" and physics_informed and not sur.meta.get("affine"):
        print("data-only training: the store holds no certified affine terms, so the "
              "physics-informed term was skipped", flush=True)
    print(f"surrogate: {out}", flush=True)
    for name in extra:
        print(f"plot:      {out / name}", flush=True)


def query_command(
    path: Annotated[Path, typer.Argument(help="surrogate directory")],
    mu: Annotated[list[str], typer.Option(
        help="parameters 'a,b,c' or 'mu_0=a,…'; repeat for several")],
    coefficients: Annotated[bool, typer.Option(help="print the reduced coefficients")] = False,
    estimate: Annotated[bool, typer.Option(help="print the error estimate")] = True,
    field: Annotated[Path | None, typer.Option(
        help="write the field(s) to this .npy file (store ordering)")] = None,
    extrapolate: Annotated[bool, typer.Option(
        help="allow parameters outside the training box (with a warning)")] = False,
    force: Annotated[bool, typer.Option(help="replace an existing --field file")] = False,
) -> None:
    """Evaluate a surrogate at parameter vectors; print QoIs (and more) as JSON."""
    import warnings

    import numpy as np

    from hybrid.core.outputs import check_target
    from hybrid.core.parameters import Parameter, ParameterSpace, parse_mu
    from hybrid.core.store import atomic_path
    from hybrid.errors import HybridError
    from hybrid.surrogate import Surrogate, SurrogateError

    if field is not None:
        check_target(field, kind="file", force=force, parent_must_exist=True)

    s = Surrogate.load(path)
    space = s.space
    if extrapolate:   # parse names and count only; bounds are checked (with a warning) below
        space = ParameterSpace(tuple(Parameter(p.name, -np.inf, np.inf) for p in s.space
                                     .parameters))
    mus = np.array([parse_mu(t, space) for t in mu])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = s.qoi(mus, extrapolate=extrapolate)
        obs = s.observe(mus, extrapolate=extrapolate) if s.observation_names else None
        c = s.predict(mus, extrapolate=extrapolate)
        band = s.band(mus, extrapolate=extrapolate) if s.calibration is not None else None
        band_q = s.band_qoi(mus, extrapolate=extrapolate) if s.calibration_qoi is not None \
            else None
        est = None
        if estimate:
            try:
                est = s.error_estimate(mus, coefficients=c, extrapolate=extrapolate)
            except SurrogateError:
                est = None
        if field is not None:
            u = s.reconstruct(c)
            if not np.all(np.isfinite(u)):
                raise HybridError(f"{path}: the surrogate's field is not finite (NaN or inf) "
                                  "at these parameters; nothing written")
            with atomic_path(field) as tmp, open(tmp, "wb") as fh:
                np.save(fh, u)
    for w in {str(w.message) for w in caught}:
        print(f"hybrid: warning: {w}", file=sys.stderr)
    rows = []
    transient = getattr(s, "transient", False)
    for i in range(mus.shape[0]):
        row = {"mu": dict(zip(s.parameter_names, mus[i].tolist(), strict=True))}
        if transient:    # QoIs per output time; the bound at every output time
            row["times"] = s.times.tolist()
            row["qoi"] = {n: q[i][:, k].tolist() for k, n in enumerate(s.qoi_names)}
        else:
            row["qoi"] = dict(zip(s.qoi_names, q[i].tolist(), strict=True))
        if obs is not None:
            row["observations"] = dict(zip(s.observation_names, obs[i].tolist(), strict=True))
        if est is not None and transient:
            row["error_estimate"] = {"relative_l2_bound": est[i].tolist()}
        elif est is not None:
            row["error_estimate"] = {"relative_energy_norm_bound": float(est[i])} \
                if s.estimator is not None else {"relative_ensemble_spread": float(est[i])}
        if band is not None:
            row["conformal_band"] = dict(zip(s.observation_names, band[i].tolist(),
                                             strict=True))
        if band_q is not None:
            row["conformal_band_qoi"] = dict(zip(s.qoi_names, band_q[i].tolist(), strict=True))
        if coefficients:
            row["coefficients"] = c[i].tolist()
        rows.append(row)
    try:
        text = json.dumps(rows[0] if len(rows) == 1 else rows, indent=1, allow_nan=False)
    except ValueError:
        raise HybridError(f"{path}: the surrogate answered non-finite values (NaN or inf) "
                          "at these parameters: it is broken (trained on bad data?)") from None
    print(text)
