"""The finite-element problem of a case."""

from __future__ import annotations

from mpi4py import MPI

from hybrid.core.case import Case


def create_problem(case: Case, comm: MPI.Intracomm):
    """Build the FEM problem of ``case`` on ``comm`` (collective).

    Every model is a plug-in (:mod:`hybrid.model`; the built-in thermal block included) and
    gets the generic :class:`~hybrid.fem.model_problem.ModelProblem`.
    """
    if getattr(case.physics, "plugin", False):
        from hybrid.fem.model_problem import ModelProblem

        return ModelProblem(case, comm)
    raise NotImplementedError(f"no finite-element implementation for physics model "
                              f"{case.physics.name!r} (not a plug-in)")
