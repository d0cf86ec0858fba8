"""The ``hybrid`` command line: a thin layer over the Python API.

User errors (:class:`hybrid.errors.HybridError`) print one line ``hybrid: error: …`` on
stderr (from rank 0 only under MPI) and exit with code 2; no traceback. Exit code 3 means
partial success (a campaign with failed samples).
"""

from __future__ import annotations

import os
import sys

# Under mpirun every rank gets one core: keep BLAS/OpenMP from oversubscribing it.
if any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_RANK")):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

from hybrid.errors import HybridError  # noqa: E402

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="hybrid: FEM campaigns, neural reduced-order surrogates and FEM-confirmed inference.",
)


def _launcher_int(keys: tuple[str, ...], default: int) -> int:
    """An integer the MPI launcher put in the environment (MPICH/PMI or Open MPI names)."""
    for k in keys:
        if k in os.environ:
            return int(os.environ[k])
    return default


def _world_rank() -> int:
    return _launcher_int(("PMI_RANK", "OMPI_COMM_WORLD_RANK"), 0)


def world_size() -> int:
    """Number of ranks mpirun started (1 without a launcher), before MPI is initialised."""
    return _launcher_int(("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"), 1)


def _say(text: str) -> None:
    if _world_rank() == 0:
        print(text, flush=True)


@app.command()
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
    from hybrid.campaign import run_campaign
    from hybrid.case import load_case

    c = load_case(case)
    if getattr(c.physics, "plugin", False):   # the user's code runs: say which, once
        lm = c.physics.loaded
        _say(f"model:    {lm.reference} ({lm.origin}, sha256 {lm.sha256[:16]}…)")
    r = run_campaign(c, samples=samples, ranks_per_sample=ranks_per_sample, store=store,
                     retry_failed=retry_failed, progress=progress)
    if r.interrupted:
        _say(f"campaign {c.name}: stopped by SIGTERM after the samples in progress; "
             f"{r.ok + r.failed}/{r.planned} in the store, {r.solved_now} solved now. "
             "Run the same command to resume.")
        raise typer.Exit(r.exit_code)
    reasons = f" ({'; '.join(r.failure_reasons)})" if r.failure_reasons else ""
    _say(f"campaign {c.name}: {r.ok}/{r.planned} ok, {r.failed} failed{reasons}; "
         f"{r.solved_now} solved now, {r.skipped} already in store; {r.wall_time:.1f} s")
    _say(f"store:    {r.store}")
    if r.paraview is not None:
        _say(f"paraview: {r.paraview}")
    raise typer.Exit(r.exit_code)


@app.command()
def solve(
    case: Annotated[Path, typer.Argument(help="case file (TOML)")],
    mu: Annotated[str, typer.Option(help="parameters: 'a,b,c' or 'mu_0=a,mu_1=b,…'")],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/solve"),
    force: Annotated[bool, typer.Option(help="write into an existing --out directory")] = False,
) -> None:
    """Solve one parameter vector; write an XDMF field ParaView opens and a JSON summary."""
    from hybrid.case import load_case
    from hybrid.fem.single import solve_one
    from hybrid.outputs import check_target
    from hybrid.parameters import parse_mu

    c = load_case(case)
    m = parse_mu(mu, c.parameters)
    check_target(out, kind="dir", force=force)
    res = solve_one(c, m, out)
    _say(json.dumps(res["summary"], indent=1))
    _say(f"field:    {res['xdmf']}")
    raise typer.Exit(0 if res["summary"]["status"] == "ok" else 3)


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="snapshot store directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print what a snapshot store holds."""
    from hybrid.store import SnapshotStore

    s = SnapshotStore(store).summary()
    if as_json:
        print(json.dumps(s, indent=1))
        return
    w = max(len(k) for k in s)
    for k, v in s.items():
        if k == "versions" and isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items() if a in ("hybrid", "dolfinx", "petsc"))
        print(f"{k:<{w}}  {v}")


def _register_commands() -> None:
    from hybrid.infer_cli import infer_command, synth_command
    from hybrid.serve_cli import serve_command
    from hybrid.surrogate_cli import query_command, train_command

    app.command("train")(train_command)
    app.command("query")(query_command)
    app.command("synth")(synth_command)
    app.command("infer")(infer_command)
    app.command("serve")(serve_command)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except HybridError as exc:
        if _world_rank() == 0:
            print(f"hybrid: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except OSError as exc:   # read-only location, full disk, quota: the environment's fault
        where = exc.filename or "an output file"
        _fatal(f"cannot write {where}: {exc.strerror or exc}")
        return 2
    except MemoryError:
        _fatal("out of memory (a smaller --samples, mesh or batch may fit)")
        return 2
    except SystemExit as exc:  # click/typer: usage errors (2), typer.Exit(code)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:
        _abort_world()
        raise
    return 0


def _fatal(message: str) -> None:
    """One line on stderr from the rank that hit it; every rank stops (no hang in MPI)."""
    print(f"hybrid: error: {message}", file=sys.stderr, flush=True)
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and mpi.COMM_WORLD.size > 1:
        mpi.COMM_WORLD.Abort(2)


def _abort_world() -> None:
    """Print the traceback and abort every rank of COMM_WORLD.

    A bug on one rank must not leave the other ranks spinning in a collective forever.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and mpi.COMM_WORLD.size > 1:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        mpi.COMM_WORLD.Abort(1)


if __name__ == "__main__":
    sys.exit(main())
