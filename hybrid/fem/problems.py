"""Registry of finite-element problems by physics model name."""

from __future__ import annotations

from mpi4py import MPI

from hybrid.case import Case


def create_problem(case: Case, comm: MPI.Intracomm):
    """Build the FEM problem of ``case`` on ``comm`` (collective).

    A plug-in model (:mod:`hybrid.model`) gets the generic
    :class:`~hybrid.fem.model_problem.ModelProblem`; ``thermal_block`` its hand-written one.
    """
    model = case.physics.name
    if getattr(case.physics, "plugin", False):
        from hybrid.fem.model_problem import ModelProblem

        return ModelProblem(case, comm)
    if model == "thermal_block":
        from hybrid.fem.thermal_block import ThermalBlockProblem

        return ThermalBlockProblem(case, comm)
    raise NotImplementedError(f"no finite-element implementation for physics model {model!r}")
