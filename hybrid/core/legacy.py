"""Compatibility with stores and surrogates of the hand-written thermal block (DOLFINx-free).

Up to commit 584f397 the built-in ``thermal_block`` was hand-written (a spec in
``hybrid/physics/``, its FEM half in ``hybrid/fem/thermal_block.py``). It is now the plug-in
:mod:`hybrid.model.library.thermal_block`, whose stores record the model like any plug-in:
``model`` = {reference, sha256, settings, θ trees} in the manifest and ``model`` =
{reference, sha256} in the fingerprint. Stores and surrogates of the old built-in have
neither. This module is the one place that knows how to read them:

- :func:`legacy_model_record`: the record an old store implies. The hand-written block was
  affine with θ_k(μ) = μ_k (k < B²), ϑ_0 = 1, and coercive (the case required μ_k > 0), so the
  record is ``theta_a = [{"mu": k}]``, ``theta_f = [1.0]``, ``certified = true``;
- :func:`comparable_fingerprint`: a case's fingerprint as it compares with a stored one. An
  old store's fingerprint has no ``model`` key; a case naming the built-in ``thermal_block``
  matches it when everything else agrees (mesh, physics settings, parameters, QoIs,
  observations). The model's sha256 is then not compared: the old store predates it, and
  the plug-in gives the old store to 1e-12 (tests/test_thermal_block_plugin.py).

The thermal-block case text of scripts, benchmarks and tests is :mod:`hybrid.core.examples`.
"""

from __future__ import annotations

LEGACY_MODEL = "thermal_block"
"""The model name (and built-in reference) of the hand-written thermal block."""


def is_legacy(physics: dict | None, record: dict | None = None) -> bool:
    """Whether ``physics`` and ``record`` are those of a hand-written thermal-block store.

    That is: no ``model`` record, and ``physics.model = "thermal_block"``.
    """
    return record is None and isinstance(physics, dict) and physics.get("model") == LEGACY_MODEL


def legacy_model_record(physics: dict) -> dict:
    """The ``model`` record of a store of the hand-written thermal block (module docstring).

    ``physics`` is the store's ``physics`` table, e.g. ``{"model": "thermal_block",
    "blocks": 3, "degree": 1, "source": 1.0}``; ``blocks`` defaults to 3 as it did.
    """
    blocks = int(physics.get("blocks", 3))
    settings = {k: v for k, v in physics.items() if k != "model"}
    return {"reference": LEGACY_MODEL, "sha256": "", "settings": settings, "linear": True,
            "affine": True, "certified": True, "reason": "",
            "theta_a": [{"mu": k} for k in range(blocks**2)], "theta_f": [1.0]}


def model_record(manifest: dict) -> dict | None:
    """The ``model`` record of a store's or a surrogate's metadata.

    The recorded one, else the legacy one of a hand-written thermal block; None for neither.
    """
    record = manifest.get("model")
    if record is not None:
        return record
    physics = manifest.get("physics")
    return legacy_model_record(physics) if is_legacy(physics) else None


def comparable_fingerprint(current: dict, stored: dict | None) -> dict:
    """``current`` (a case's fingerprint, JSON) as it compares with ``stored`` (module docstring).

    Only the legacy rule changes anything: a stored fingerprint without ``model`` whose
    physics is the built-in thermal block, against a case naming the built-in
    ``thermal_block``, is compared without the case's ``model`` key.
    """
    if not isinstance(stored, dict) or "model" in stored or "model" not in current:
        return current
    ref = (current.get("model") or {}).get("reference")
    if ref == LEGACY_MODEL and is_legacy(stored.get("physics")):
        return {k: v for k, v in current.items() if k != "model"}
    return current
