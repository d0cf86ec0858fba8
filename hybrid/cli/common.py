"""What every command shares: launcher facts, printing from rank 0, one-line fatal errors.

Imported first by :mod:`hybrid.cli.app`: under mpirun it sets one BLAS/OpenMP thread per rank
before numpy or torch are loaded. Command modules import this module, never each other.
"""

from __future__ import annotations

import os
import sys

# Under mpirun every rank gets one core: keep BLAS/OpenMP from oversubscribing it.
if any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_RANK")):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def launcher_int(keys: tuple[str, ...], default: int) -> int:
    """An integer the MPI launcher put in the environment (MPICH/PMI or Open MPI names)."""
    for k in keys:
        if k in os.environ:
            return int(os.environ[k])
    return default


def world_rank() -> int:
    """The rank of this process in mpirun's world (0 without a launcher), before MPI starts."""
    return launcher_int(("PMI_RANK", "OMPI_COMM_WORLD_RANK"), 0)


def world_size() -> int:
    """Number of ranks mpirun started (1 without a launcher), before MPI is initialised."""
    return launcher_int(("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"), 1)


def say(text: str) -> None:
    """Print ``text`` on world rank 0 only."""
    if world_rank() == 0:
        print(text, flush=True)


def fatal(message: str) -> None:
    """One line on stderr from the rank that hit it; every rank stops (no hang in MPI)."""
    print(f"hybrid: error: {message}", file=sys.stderr, flush=True)
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and mpi.COMM_WORLD.size > 1:
        mpi.COMM_WORLD.Abort(2)


def abort_world() -> None:
    """Print the traceback and abort every rank of COMM_WORLD.

    A bug on one rank must not leave the other ranks spinning in a collective forever.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and mpi.COMM_WORLD.size > 1:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        mpi.COMM_WORLD.Abort(1)
