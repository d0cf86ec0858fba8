"""A physics model as the case file sees it: settings, parameter count, QoI names, checks.

:class:`PhysicsSpec` is what :class:`hybrid.core.case.Case` holds in ``case.physics``;
:class:`PluginSpec` is that view of a model plug-in. ``REGISTRY`` maps a name to a
hand-written spec without a finite-element half (code and tests may register one).

``[physics] model = "nonlinear_diffusion"`` (a built-in plug-in or an entry point),
``"models/my_pde.py:MyPDE"`` (a file relative to the case) or ``"pkg.mod:Class"``; the other
keys of ``[physics]`` are the model's Settings (unknown keys refused). :class:`PluginSpec`
gives the case the view of a :class:`PhysicsSpec` (settings, number
of parameters, QoI names, cross-checks) and carries the loaded model for
:class:`hybrid.fem.model_problem.ModelProblem`.

This module imports no model code and no DOLFINx itself; :func:`load_plugin` does, because
a model's settings and checks are its own code (it runs with the trust of the case's author).
Stores and surrogates never call it: they record {reference, sha256, settings, θ trees}.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class PhysicsSettings(BaseModel):
    """Settings common to all models; subclasses add their own fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    degree: int = 1


class PhysicsSpec:
    """A physics model as the case file and the surrogate side see it."""

    name: ClassVar[str]
    Settings: ClassVar[type[PhysicsSettings]] = PhysicsSettings

    def __init__(self, settings: PhysicsSettings):
        self.settings = settings

    def n_parameters(self) -> int:
        """Number of parameters the model expects."""
        raise NotImplementedError

    def qoi_names(self) -> list[str]:
        """Names of the quantities of interest the model can output."""
        raise NotImplementedError

    def check_consistency(self, case) -> list[tuple[str, str]]:
        """Cross-section checks; return (key, message) pairs for each problem."""
        return []


REGISTRY: dict[str, type[PhysicsSpec]] = {}
"""Hand-written specs by name (none is built in: every built-in model is a plug-in)."""


class PluginSettings:
    """A plug-in's settings as the store records them: ``{"model": reference, **settings}``.

    Attribute access falls through to the model's own Settings object.
    """

    def __init__(self, reference: str, settings):
        self.reference = reference
        self.settings = settings

    def model_dump(self) -> dict:
        """The ``[physics]`` table, JSON-compatible: the reference and every setting."""
        return {"model": self.reference, **self.settings.model_dump(mode="json")}

    def __getattr__(self, name: str) -> Any:
        if name in ("reference", "settings"):
            raise AttributeError(name)
        return getattr(self.settings, name)


class PluginSpec(PhysicsSpec):
    """The case's view of a model plug-in (see the module docstring).

    Attributes:
        loaded: the :class:`hybrid.model.LoadedModel` (class, reference, sha256, origin).
        model: the model instance with its settings.
    """

    plugin = True

    def __init__(self, loaded, model):
        self.loaded, self.model = loaded, model
        self.name = loaded.cls.name
        super().__init__(PluginSettings(loaded.reference, model.settings))

    @property
    def model_info(self) -> dict:
        """{reference, sha256}: identifies the model in fingerprints."""
        return dict(self.loaded.info)

    def parameter_names(self, names=None) -> list[str]:
        """The model's parameter names, checked against the case's (ModelError otherwise)."""
        return self.loaded.parameter_names(self.model, names)

    def n_parameters(self) -> int:
        return len(self.parameter_names())

    def qoi_names(self) -> list[str]:
        from hybrid.model.loader import _one_line

        try:
            return [str(q) for q in self.model.qoi_names()]
        except Exception as exc:
            raise self.loaded._fail(f"{self.loaded.cls.__name__}.qoi_names() raised "
                                    f"{_one_line(exc)}") from None

    def check_consistency(self, case) -> list[tuple[str, str]]:
        return list(self.loaded.check(self.model, case))


def load_plugin(reference: str, table: dict, case_dir) -> PluginSpec:
    """Load the model named by ``reference`` and instantiate it with ``table``'s settings.

    Raises :class:`hybrid.errors.ModelError` (one line naming the model file) when the model
    cannot be loaded or its settings are refused.
    """
    from hybrid.model import load_model

    loaded = load_model(reference, case_dir)
    return PluginSpec(loaded, loaded.instantiate(table))
