"""Rank 0 → every rank: the doorbell-and-broadcast channel of an MPI-parallel served model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpi4py.MPI import Comm


class WorkChannel:
    """Work from rank 0 to every rank of a communicator: a doorbell, then a broadcast.

    The doorbell is a non-blocking barrier (``Ibarrier``). Waiting ranks test it in a tight
    loop for ``spin`` seconds (clients such as MCMC samplers send the next request within
    milliseconds), then with ``poll``-second sleeps, so an idle server does not hold every
    core at 100 % as a blocking broadcast would. Construction is collective over ``comm``
    (it duplicates it, so control messages never mix with the solver's collectives).
    """

    def __init__(self, comm: Comm, poll: float = 0.002, spin: float = 0.05):
        self.comm = comm.Dup()
        self.poll = poll
        self.spin = spin

    def post(self, message: Any) -> None:
        """Rank 0: send ``message`` (picklable; ``None`` means stop) to every rank."""
        self.comm.Ibarrier().Wait()
        self.comm.bcast(message, root=0)

    def wait(self) -> Any:
        """Ranks other than 0: block (politely) until rank 0 posts; return its message."""
        req = self.comm.Ibarrier()
        t0 = time.monotonic()
        while not req.Test():
            if time.monotonic() - t0 > self.spin:
                time.sleep(self.poll)
        return self.comm.bcast(None, root=0)

    def free(self) -> None:
        """Free the duplicated communicator (collective)."""
        self.comm.Free()
