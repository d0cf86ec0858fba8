"""The finite-element problem of a case."""

from __future__ import annotations

from mpi4py import MPI

from hybrid.core.case import Case


def create_problem(case: Case, comm: MPI.Intracomm):
    """Build the FEM problem of ``case`` on ``comm`` (collective).

    Every model is a plug-in (:mod:`hybrid.model`; the built-in thermal block included). The
    plug-in is built once on the case's mesh; a :class:`~hybrid.model.reaction.
    ReactionDiffusion` Problem gets the activation-time map
    :class:`~hybrid.fem.activation.ActivationProblem` (stepped by operator splitting), any
    other the generic :class:`~hybrid.fem.model_problem.ModelProblem`.
    """
    if getattr(case.physics, "plugin", False):
        from hybrid.fem.mesh import build_mesh_and_tags
        from hybrid.model.reaction import ReactionDiffusion

        spec = case.physics
        mesh, tags = build_mesh_and_tags(case.mesh, comm, case.mesh_file)
        pb, ctx = spec.loaded.build(spec.model, mesh, case.parameters.names, tags)
        built = (mesh, tags, pb, ctx)
        if isinstance(pb, ReactionDiffusion):
            from hybrid.fem.activation import ActivationProblem

            return ActivationProblem(case, comm, built)
        from hybrid.fem.model_problem import ModelProblem

        return ModelProblem(case, comm, built)
    raise NotImplementedError(f"no finite-element implementation for physics model "
                              f"{case.physics.name!r} (not a plug-in)")
