"""``hybrid synth`` and ``hybrid infer``: thin typer commands over :mod:`hybrid.workflows.infer`.

Registered in :mod:`hybrid.cli.app`. User errors raise :class:`~hybrid.errors.HybridError`
subclasses, printed as one line (exit 2). Both are collective under mpirun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid.cli.common import say


def synth_command(
    case: Annotated[Path, typer.Argument(help="case file (TOML) with [observations]")],
    mu: Annotated[str, typer.Option(help="true parameters: 'a,b,c' or 'mu_0=a,…'")],
    out: Annotated[Path, typer.Option("--out", "-o", help="observation CSV to write")],
    noise: Annotated[float, typer.Option(help="noise std (relative: a fraction of |y|)")] = 0.01,
    kind: Annotated[str, typer.Option(help="relative or absolute noise")] = "relative",
    floor: Annotated[float, typer.Option(help="smallest sigma for relative noise")] = 0.0,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Synthetic data: a FEM solve at --mu plus seeded Gaussian noise, as an observation CSV."""
    import numpy as np

    import hybrid.fem  # noqa: F401
    from hybrid.core.case import load_case
    from hybrid.core.parameters import parse_mu
    from hybrid.errors import HybridError
    from hybrid.fem.model import FEMModel
    from hybrid.inference import GaussianNoise, synthesize

    c = load_case(case)
    m = parse_mu(mu, c.parameters)
    names = c.observations.data_names()
    if not names:
        raise HybridError(f"{case}: no [observations] declared: nothing to synthesise")
    from hybrid.core.outputs import check_target

    check_target(out, kind="file", force=force)
    model = FEMModel(c)
    y = model.observe(m)
    model.close()
    obs = synthesize(y, GaussianNoise(noise, kind, floor), seed=seed, names=names)
    obs.meta.update({"case": c.name, "mu_true": ",".join(repr(float(v)) for v in m)})
    if model.comm.rank == 0:
        from hybrid.core.store import atomic_path

        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            obs.to_csv(tmp)
    say(f"data: {out} ({len(obs)} observations, noise {obs.meta['noise']}, "
         f"max |y| {np.abs(y).max():.3g})")


def infer_command(
    case: Annotated[Path, typer.Argument(help="case file (TOML)")],
    surrogate: Annotated[Path, typer.Option(help="surrogate directory (hybrid train)")],
    data: Annotated[Path, typer.Option(help="observation CSV (sensor,value,sigma)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path(
        "runs/infer"),
    method: Annotated[str, typer.Option(help="map or mcmc")] = "map",
    stage2: Annotated[str, typer.Option(
        help="MCMC second stage: coupler (FEM-grade), fem (exact), none (surrogate only)")
    ] = "coupler",
    tol: Annotated[float, typer.Option(
        help="coupler: trust a model whose certified error is <= tol noise std")] = 0.1,
    samples: Annotated[int, typer.Option(help="MCMC draws per chain")] = 2000,
    burn_in: Annotated[int, typer.Option(help="MCMC adaptation steps per chain")] = 1000,
    chains: Annotated[int, typer.Option(help="MCMC chains (spread over MPI ranks)")] = 4,
    kernel: Annotated[str, typer.Option(
        help="MCMC first-stage proposal: mala (surrogate gradients) or rw (random walk)")
    ] = "mala",
    starts: Annotated[int, typer.Option(help="MAP: Sobol starting points")] = 8,
    seed: Annotated[int, typer.Option(help="seed of starts and chains")] = 0,
    max_fem: Annotated[int, typer.Option(help="MAP: budget of FEM solves")] = 200,
    enrich: Annotated[bool, typer.Option(help="commit FEM solves to the case's store")] = True,
    field: Annotated[bool, typer.Option(help="write the FEM field at the estimate")] = True,
    plots: Annotated[bool, typer.Option(help="write corner/trace PNGs")] = True,
    force: Annotated[bool, typer.Option(help="write into an existing --out directory")] = False,
    coarse: Annotated[Path | None, typer.Option(
        help="MCMC with --stage2 fem: a coarse case file (same parameters and observations) "
             "whose FEM screens between the surrogate and the fine FEM (exact)")] = None,
    coarse_pairs: Annotated[int, typer.Option(
        help="with --coarse: store samples at which the coarse FEM's error is estimated "
             "(its likelihood shifted and widened by it; 0: none)")] = 16,
    subchain: Annotated[int, typer.Option(
        help="MCMC with --kernel rw: surrogate random-walk steps per proposal to the FEM "
             "levels (exact; 1: one step)")] = 1,
) -> None:
    """Estimate parameters from data: FEM-confirmed MAP or delayed-acceptance MCMC."""
    from hybrid.core.outputs import check_target
    from hybrid.workflows.infer import InferenceOptions, print_summary, run_inference

    opt = InferenceOptions(method=method, stage2=stage2, tol=tol, samples=samples,
                           burn_in=burn_in, chains=chains, kernel=kernel, starts=starts,
                           seed=seed,
                           max_fem=max_fem, enrich=enrich, field=field, plots=plots,
                           coarse_case=None if coarse is None else str(coarse),
                           coarse_pairs=coarse_pairs, subchain=subchain)
    opt.check()
    check_target(out, kind="dir", force=force)
    summary = run_inference(case, surrogate, data, opt, out=out)
    if summary is None:
        return
    say(print_summary(summary))
    for k, v in summary.get("files", {}).items():
        say(f"{k + ':':<9} {v}")
