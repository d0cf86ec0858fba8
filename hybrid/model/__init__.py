"""The model plug-in API: what a physics model author imports as ``hybrid.model``.

>>> import hybrid.model as hm
>>> class MyPDE(hm.Model): ...

See :mod:`hybrid.model.api` (Model, Settings, Problem, Context, Parameters, TimeGrid),
:mod:`hybrid.model.helpers` (dirichlet_on_boundary, rigid_body_modes) and :mod:`hybrid.model.loader`
(load_model). Built-in models live in :mod:`hybrid.model.library`.
"""

from __future__ import annotations

try:  # the dolfinx-solver-real wheel: order MPI ahead of the compiled bindings (as hybrid.fem)
    import dolfinx_solver  # noqa: F401
except ModuleNotFoundError:  # conda-forge or source installs
    pass

from hybrid.model.api import Context, Model, Parameters, Problem, Settings, TimeGrid
from hybrid.model.helpers import boundary_dofs, dirichlet_on_boundary, rigid_body_modes
from hybrid.model.loader import ENTRY_POINT_GROUP, LoadedModel, load_model

__all__ = [
    "ENTRY_POINT_GROUP",
    "Context",
    "LoadedModel",
    "Model",
    "Parameters",
    "Problem",
    "Settings",
    "TimeGrid",
    "boundary_dofs",
    "dirichlet_on_boundary",
    "load_model",
    "rigid_body_modes",
]
