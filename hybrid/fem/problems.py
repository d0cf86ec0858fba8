"""Registry of finite-element problems by physics model name."""

from __future__ import annotations

from mpi4py import MPI

from hybrid.case import Case


def create_problem(case: Case, comm: MPI.Intracomm):
    """Build the FEM problem of ``case`` on ``comm`` (collective)."""
    model = case.physics.name
    if model == "thermal_block":
        from hybrid.fem.thermal_block import ThermalBlockProblem

        return ThermalBlockProblem(case, comm)
    raise NotImplementedError(f"no finite-element implementation for physics model {model!r}")
