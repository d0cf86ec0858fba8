"""``hybrid campaign``, ``hybrid solve`` and ``hybrid info``: the FEM side and its store.

Thin typer commands over :mod:`hybrid.workflows.campaign`, :mod:`hybrid.workflows.solve` and
:class:`hybrid.core.store.SnapshotStore`; registered in :mod:`hybrid.cli.app`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hybrid.cli.common import say


def campaign(
    case: Annotated[Path, typer.Argument(help="case file (TOML)")],
    samples: Annotated[int | None, typer.Option(help="samples of the plan to complete")] = None,
    ranks_per_sample: Annotated[
        int, typer.Option("--ranks-per-sample", "-g", help="ranks that solve one sample")
    ] = 1,
    store: Annotated[Path | None, typer.Option(help="store directory (default: case's)")] = None,
    retry_failed: Annotated[bool, typer.Option(help="solve failed samples again")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Solve the case's sampling plan into a snapshot store (run under mpirun; resumable)."""
    from hybrid.core.case import load_case
    from hybrid.workflows.campaign import run_campaign

    c = load_case(case)
    if getattr(c.physics, "plugin", False):   # the user's code runs: say which, once
        lm = c.physics.loaded
        say(f"model:    {lm.reference} ({lm.origin}, sha256 {lm.sha256[:16]}…)")
    r = run_campaign(c, samples=samples, ranks_per_sample=ranks_per_sample, store=store,
                     retry_failed=retry_failed, progress=progress)
    if r.interrupted:
        say(f"campaign {c.name}: stopped by SIGTERM after the samples in progress; "
             f"{r.ok + r.failed}/{r.planned} in the store, {r.solved_now} solved now. "
             "Run the same command to resume.")
        raise typer.Exit(r.exit_code)
    reasons = f" ({'; '.join(r.failure_reasons)})" if r.failure_reasons else ""
    say(f"campaign {c.name}: {r.ok}/{r.planned} ok, {r.failed} failed{reasons}; "
         f"{r.solved_now} solved now, {r.skipped} already in store; {r.wall_time:.1f} s")
    say(f"store:    {r.store}")
    if r.paraview is not None:
        say(f"paraview: {r.paraview}")
    raise typer.Exit(r.exit_code)



def solve(
    case: Annotated[Path, typer.Argument(help="case file (TOML)")],
    mu: Annotated[str, typer.Option(help="parameters: 'a,b,c' or 'mu_0=a,mu_1=b,…'")],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/solve"),
    force: Annotated[bool, typer.Option(help="write into an existing --out directory")] = False,
) -> None:
    """Solve one parameter vector; write an XDMF field ParaView opens and a JSON summary."""
    from hybrid.core.case import load_case
    from hybrid.core.outputs import check_target
    from hybrid.core.parameters import parse_mu
    from hybrid.workflows.solve import solve_one

    c = load_case(case)
    m = parse_mu(mu, c.parameters)
    check_target(out, kind="dir", force=force)
    res = solve_one(c, m, out)
    say(json.dumps(res["summary"], indent=1))
    say(f"field:    {res['xdmf']}")
    raise typer.Exit(0 if res["summary"]["status"] == "ok" else 3)



def info(
    store: Annotated[Path, typer.Argument(help="snapshot store directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print what a snapshot store holds."""
    from hybrid.core.store import SnapshotStore

    s = SnapshotStore(store).summary()
    if as_json:
        print(json.dumps(s, indent=1))
        return
    w = max(len(k) for k in s)
    for k, v in s.items():
        if k == "versions" and isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items() if a in ("hybrid", "dolfinx", "petsc"))
        print(f"{k:<{w}}  {v}")
