"""θ_q(μ), ϑ_q(μ) of a store or a surrogate, from its metadata (numpy; no torch, no model code)."""

from __future__ import annotations

from hybrid.surrogate.errors import SurrogateError


def coefficients_of(manifest: dict, n_params: int | None = None):
    """θ_q(μ), ϑ_q(μ) of a store or a surrogate, evaluated from its recorded θ trees.

    Every store made by a model plug-in records ``model`` = {reference, sha256, settings,
    θ trees} (:meth:`hybrid.fem.model_problem.ModelProblem.model_record`); its coefficients
    are evaluated from the trees (:class:`hybrid.core.theta.AffineCoefficients`), and no model
    code is imported. Stores and surrogates of the former hand-written thermal block have no
    record: theirs is θ_k = μ_k, ϑ_0 = 1
    (:func:`hybrid.core.legacy.legacy_model_record`). None for neither.
    """
    from hybrid.core.legacy import model_record
    from hybrid.core.theta import AffineCoefficients
    from hybrid.errors import ThetaError

    record = model_record(manifest)
    if record is None:
        return None
    try:
        return AffineCoefficients.from_record(record, n_params)
    except ThetaError as exc:
        raise SurrogateError(f"the recorded model's θ trees are malformed ({exc})") from None
