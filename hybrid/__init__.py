"""hybrid: FEM + reduced-order neural surrogates for FEM-confirmed parameter estimation.

The top-level names are imported lazily, so ``import hybrid`` pulls in neither DOLFINx nor
torch: ``hybrid.Surrogate`` needs numpy + torch only, ``hybrid.run_campaign`` the FEM stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Surrogate": "hybrid.surrogate",
    "SnapshotStore": "hybrid.core.store",
    "load_case": "hybrid.core.case",
    "ParameterSpace": "hybrid.core.parameters",
    "run_campaign": "hybrid.workflows.campaign",
    "HybridError": "hybrid.errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybrid' has no attribute {name!r}")
