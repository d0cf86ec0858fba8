"""Base class of physics specs."""

from __future__ import annotations

from typing import ClassVar

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
