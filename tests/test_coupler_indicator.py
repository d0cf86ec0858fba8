"""The coupler's opt-in residual-indicator tier on the nonlinear diffusion model.

Without the opt-in every answer is the FEM's (no bound exists for a nonlinear model); with
``trust="indicator"`` the surrogate's answers are accepted on η/ε_min, labelled uncertified,
and the effectivity measured on held-out snapshots is reported.
"""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import load_case
from hybrid.errors import CaseError
from hybrid.workflows.coupler import Coupler, CouplerError

from .test_model_wiring import _nd_case


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mpi4py import MPI

    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig
    from hybrid.workflows.campaign import run_campaign

    tmp = tmp_path_factory.mktemp("nd")
    case = load_case(_nd_case(tmp, cells=8, samples=30))
    assert run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False).ok == 30
    cfg = TrainingConfig(width=16, depth=2, adam_epochs=300, lbfgs_iterations=300,
                         validation_fraction=0.2, physics_informed=False)
    sur, _ = build_surrogate(tmp / "store", BuildOptions(kind="pod-nn", training=cfg))
    assert sur.meta["pod"]["inner_product"] == "h1" and sur.estimator is None
    return case, sur, tmp / "store"


def test_without_opt_in_every_answer_is_fem(trained):
    from mpi4py import MPI

    from hybrid.fem.model import FEMModel

    case, sur, store = trained
    fem = FEMModel(case, MPI.COMM_SELF)
    cp = Coupler(sur, fem, sigma=np.full(5, 1e-2), tol=1e6, store=None, static=None)
    mu = np.array([1.1, 2.0])
    ans = cp.evaluate(mu)
    assert ans.source == "fem" and ans.basis == "fem" and ans.certified
    assert np.allclose(ans.y, fem.solve(mu).observations, rtol=1e-12)
    r = cp.report()
    assert r["basis"] == "fem" and r["levels"] == ["fem"] and r["effectivity"] is None
    assert r["uncertified_answers"] == 0 and r["calls"]["surrogate"] == 0
    with pytest.raises(CouplerError, match="needs an error estimate"):
        Coupler(sur, None, sigma=np.full(5, 1e-2))
    fem.close()


def test_opted_in_indicator_answers_are_labelled_and_effectivity_reported(trained):
    from mpi4py import MPI

    from hybrid.fem.model import FEMModel

    case, sur, store = trained
    fem = FEMModel(case, MPI.COMM_SELF)
    sigma = np.full(5, 1e-2)
    cp = Coupler(sur, fem, sigma=sigma, tol=1e6, store=store, trust="indicator")
    eff = cp.effectivity
    vi = sur.meta["store"]["validation_indices"]
    assert eff["n"] == len(vi) == 6 and eff["holdout"] == "store validation split"
    assert 0 < eff["min"] <= eff["median"] <= eff["max"] < 10 * eff["min"]
    mu = np.array([1.1, 2.0])
    ans = cp.evaluate(mu)
    assert ans.source == "surrogate" and ans.basis == "indicator" and not ans.certified
    assert np.allclose(ans.y, sur.observe(mu), rtol=1e-12)
    # η in noise units: max_i ν_i η(μ) / (ε_min σ_i), η = ‖F(ũ; μ)‖_{X'} of the field
    eta = fem.indicator(mu, sur.field(mu), "h1")
    assert ans.eta == pytest.approx(np.max(cp.nu * eta / eff["min"] / sigma), rel=1e-12)
    # the estimate ν_i η/ε_min covers the true observation error here (|l·e| ≤ ν‖e‖_X,
    # and ‖e‖_X ≈ η/ε ≤ η/ε_min while this μ's effectivity is above the held-out minimum)
    y_fem = fem.solve(mu).observations
    assert np.all(np.abs(ans.y - y_fem) <= cp.nu * eta / eff["min"])
    assert cp.switches[0]["basis"] == "indicator" and cp.switches[0]["certified"] is False
    r = cp.report()
    assert r["trust"] == "indicator" and r["certified"] is False
    assert r["uncertified_answers"] == 1 and r["effectivity"] == eff
    # a tolerance below the indicator's estimate: the FEM answers, certified
    tight = Coupler(sur, fem, sigma=sigma, tol=1e-3 * ans.eta, store=store, trust="indicator",
                    holdout=3)
    assert tight.effectivity["n"] == 3 and "3 fresh FEM solves" in tight.effectivity["holdout"]
    a2 = tight.evaluate(mu)
    assert a2.source == "fem" and a2.certified and "surrogate" in a2.etas
    assert np.allclose(a2.y, y_fem, rtol=1e-12)
    fem.close()


def test_the_case_opts_in(tmp_path):
    p = _nd_case(tmp_path)
    p.write_text(p.read_text() + '[coupler]\ntrust = "indicator"\ntol = 0.5\nholdout = 20\n')
    c = load_case(p)
    assert (c.coupler.trust, c.coupler.tol, c.coupler.holdout) == ("indicator", 0.5, 20)
    (tmp_path / "plain").mkdir()
    assert load_case(_nd_case(tmp_path / "plain")).coupler.trust == "bound"   # the default
    p.write_text(p.read_text().replace('"indicator"', '"faith"'))
    with pytest.raises(CaseError, match="coupler.trust"):
        load_case(p)
