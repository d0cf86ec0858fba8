"""``hybrid serve``: a surrogate or a case's FEM model as an UM-Bridge server.

Registered in :mod:`hybrid.cli.app` as ``hybrid serve``. User errors raise
:class:`~hybrid.errors.HybridError` subclasses, which the CLI prints as one line (exit 2).

::

    hybrid serve runs/thermal_block/surrogate                      # model "surrogate"
    mpirun -n 4 hybrid serve cases/thermal_block.toml              # model "fem", 4 ranks
    hybrid serve cases/thermal_block.toml --surrogate runs/thermal_block/surrogate
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid.cli.common import world_size


def _is_surrogate(path: Path) -> bool:
    from hybrid.surrogate.artifact import META

    return path.is_dir() and (path / META).is_file()


def _target_kind(target: Path) -> str:
    """``"surrogate"`` or ``"case"``; a HybridError naming TARGET otherwise."""
    from hybrid.serve import ServeError
    from hybrid.surrogate.artifact import META

    if _is_surrogate(target):
        return "surrogate"
    if target.is_file() and target.suffix == ".toml":
        return "case"
    if not target.exists():
        raise ServeError(f"{target}: no such surrogate directory or case file")
    if target.is_dir():
        raise ServeError(f"{target}: not a surrogate directory (no {META}); TARGET is a "
                         "surrogate directory or a case file (.toml)")
    raise ServeError(f"{target}: not a case file (.toml) nor a surrogate directory")


def serve_command(
    target: Annotated[Path, typer.Argument(
        help="surrogate directory (model 'surrogate') or case file .toml (model 'fem')")],
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one")] = 4242,
    host: Annotated[str, typer.Option(
        help="address to bind; 0.0.0.0 exposes the models to the network")] = "127.0.0.1",
    name: Annotated[str | None, typer.Option(
        help="name of TARGET's model (default: 'surrogate' or 'fem')")] = None,
    surrogate: Annotated[Path | None, typer.Option(
        help="with a case file: also serve this surrogate (model 'surrogate')")] = None,
    gradients: Annotated[bool, typer.Option(
        help="surrogate derivatives (torch autograd; --no-gradients never loads torch)")] = True,
) -> None:
    """Serve a surrogate or a case's FEM model as an UM-Bridge model until Ctrl-C.

    Each model comes with its single-output views (NAME-observations, NAME-qoi,
    NAME-loglik) for clients that take one output vector. Under mpirun with a case file,
    rank 0 serves HTTP and every rank joins each FEM solve.
    """
    from hybrid.serve import ServeError, SurrogateModel, serve

    if not 0 <= port <= 65535:
        raise ServeError(f"--port: {port} is not a TCP port (0 to 65535)")
    kind = _target_kind(target)
    if surrogate is not None:
        if kind != "case":
            raise ServeError("--surrogate: only with a case file as TARGET")
        if not _is_surrogate(surrogate):
            raise ServeError(f"--surrogate: {surrogate} is not a surrogate directory")

    if kind == "surrogate" and world_size() > 1:
        raise ServeError("a surrogate is served by one process: run without mpirun (or serve "
                         "a case file, whose FEM solves use every rank)")
    from hybrid.surrogate import Surrogate

    models = []
    fem = None
    try:
        if kind == "surrogate":
            models.append(SurrogateModel(Surrogate.load(target), name or "surrogate",
                                         gradients=gradients))
        else:
            from hybrid.core.case import load_case

            case = load_case(target)
            sur = None
            if surrogate is not None:
                sur = Surrogate.load(surrogate, case=case)
                if (name or "fem") == "surrogate":
                    raise ServeError("--name: 'surrogate' is the name of the --surrogate model")
            from hybrid.fem import MPI
            from hybrid.serve import FEMModel

            fem = FEMModel(case, MPI.COMM_WORLD, name=name or "fem")
            models.append(fem)
            if sur is not None:
                models.append(SurrogateModel(sur, gradients=gradients))
        models += [v for m in list(models) for v in m.views()]
        if fem is None or fem.comm.rank == 0:
            for m in models:
                print(m.describe(), flush=True)
        serve(models, host=host, port=port)
    finally:
        if fem is not None:
            fem.close()

