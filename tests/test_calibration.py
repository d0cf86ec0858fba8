"""Split-conformal calibration of a surrogate's band (hybrid/surrogate/calibration.py).

(a) the quantile rule against an exact count in rational arithmetic, and the coverage on
synthetic exchangeable data with heteroscedastic Gaussian errors: over many repetitions
the coverage is k/(n+1) ∈ [1−α, 1−α+1/(n+1)], which an off-by-one rank or the rank without
the (n+1) correction misses; an infinite quantile is refused.
(b) end to end on the nonlinear diffusion model: ``hybrid train --members 3 --calibrate``,
the band recomputed from the store, save/load without dolfinx, coverage on fresh FEM runs.
(c) the coupler trusts the band (basis "conformal"), accepts and refuses by it, and a
rigorous bound wins over a calibration.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hybrid.surrogate.calibration import (
    Calibration,
    CalibrationError,
    calibrate,
    conformal_quantile,
    conformal_rank,
    covered,
    scores,
    split_validation,
)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- (a) the rule
def _quantile_by_counting(r: np.ndarray, alpha: float) -> float:
    """The smallest score t with #{j: r_j ≤ t} ≥ (n+1)(1−α), in exact rationals (inf: none)."""
    need = (len(r) + 1) * (1 - Fraction(str(alpha)))
    for t in sorted(r):
        if np.sum(r <= t) >= need:
            return float(t)
    return math.inf


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.25, 0.3, 0.5])
def test_the_quantile_rule_agrees_with_an_exact_count(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    for n in range(1, 45):
        r = rng.exponential(size=n)
        ref = _quantile_by_counting(r, alpha)
        if math.isinf(ref):
            with pytest.raises(CalibrationError, match="band is infinite"):
                conformal_quantile(r, alpha)
        else:
            assert conformal_quantile(r, alpha) == ref, (n, alpha)
    # (n+1)(1−α) an integer up to round-off: 20·0.95 and 10·0.9 must not round up
    assert conformal_rank(19, 0.05) == 19 and conformal_rank(9, 0.1) == 9
    assert conformal_rank(10, 0.2) == 9 and conformal_rank(15, 0.1) == 15


def _coverage(n: int, alpha: float, rank=None, reps: int = 3000, n_test: int = 40,
              m: int = 3, seed: int = 0) -> tuple[float, float]:
    """Mean and standard error over ``reps`` repetitions of the test coverage.

    Each repetition draws calibration and test runs i.i.d.: μ ~ U(0, 1)^m, the true scale
    σ_i(μ) = 0.05 + μ_i² (heteroscedastic), errors σ_i z with z ~ N(0, 1); the band's scale is
    σ_i up to a ±30 % misspecification (the guarantee does not need it exact). ``rank``
    replaces the conformal rank (to show that a wrong one is caught).
    """
    rng = np.random.default_rng(seed)
    cov = np.empty(reps)
    for k in range(reps):
        mu = rng.uniform(size=(n + n_test, m))
        sig = 0.05 + mu**2
        err = sig * rng.standard_normal(sig.shape)
        s = sig * rng.uniform(0.7, 1.3, size=sig.shape)
        y_hat = rng.standard_normal(sig.shape)
        y = y_hat + err
        if rank is None:
            cal = calibrate(y[:n], y_hat[:n], s[:n], alpha, names=["a", "b", "c"],
                            scale_kind="ensemble-std")
            cov[k] = covered(cal, y[n:], y_hat[n:], s[n:]).mean()
        else:
            q = np.sort(scores(y[:n], y_hat[:n], s[:n]))[rank(n, alpha) - 1]
            cov[k] = np.mean(scores(y[n:], y_hat[n:], s[n:]) <= q)
    return float(cov.mean()), float(cov.std(ddof=1) / math.sqrt(reps))


@pytest.mark.parametrize("n, alpha", [(10, 0.2), (15, 0.1), (39, 0.1)])
def test_coverage_on_exchangeable_data_is_k_over_n_plus_one(n, alpha):
    c, se = _coverage(n, alpha)
    k = conformal_rank(n, alpha)
    # the exact marginal coverage of continuous scores is k/(n+1), within the guarantee
    assert 1 - alpha <= k / (n + 1) <= 1 - alpha + 1 / (n + 1)
    assert abs(c - k / (n + 1)) < 3.5 * se, (c, k / (n + 1), se)
    assert 1 - alpha - 3.5 * se <= c <= 1 - alpha + 1 / (n + 1) + 3.5 * se
    # the test catches an off-by-one rank and the rank without the (n+1) correction
    for wrong in (lambda n, a: conformal_rank(n, a) - 1,
                  lambda n, a: math.ceil(n * (1 - a))):
        if wrong(n, alpha) == k:
            continue
        cw, sew = _coverage(n, alpha, rank=wrong, reps=1500)
        assert cw < 1 - alpha - 3.5 * sew, (cw, sew)


def test_an_infinite_or_unsupported_band_is_refused_in_one_line():
    r = np.arange(8.0)
    with pytest.raises(CalibrationError, match=r"alpha = 0.1 needs at least 9 calibration "
                                               r"runs .* exceeds n = 8"):
        conformal_quantile(r, 0.1)
    # zero ensemble spread with a nonzero error: an infinite score; too many of them → refused
    y, y_hat = np.ones((10, 2)), np.zeros((10, 2))
    s = np.ones((10, 2))
    s[:2, 1] = 0.0
    with pytest.raises(CalibrationError, match="quantile is infinite: 2 of 10"):
        calibrate(y, y_hat, s, 0.1, names=["a", "b"], scale_kind="ensemble-std")
    assert scores([[0.0]], [[0.0]], [[0.0]])[0] == 0.0           # 0/0 := 0
    with pytest.raises(CalibrationError, match="needs at least 9 calibration runs, i.e. 17 "
                                               "validation snapshots; .* has 12"):
        split_validation(np.arange(12), 0.1, 0)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(CalibrationError, match="alpha must lie in"):
            conformal_rank(10, bad)


def test_the_record_is_plain_json_and_round_trips():
    rng = np.random.default_rng(1)
    y_hat = rng.standard_normal((20, 2))
    cal = calibrate(y_hat + 0.1 * rng.standard_normal((20, 2)), y_hat, None, 0.1,
                    names=["p", "q"], scale_kind="constant")
    text = json.dumps(cal.to_dict(), allow_nan=False)
    back = Calibration.from_dict(json.loads(text))
    assert back == cal and back.band().tolist() == [cal.q, cal.q]
    assert cal.q >= max(cal.q_per_output)          # the joint band is the wider
    with pytest.raises(CalibrationError, match="incomplete"):
        Calibration.from_dict({"alpha": 0.1})


# ----------------------------------------------------------------------------- (b) end to end
ALPHA = 0.2
MEMBERS = 3


@pytest.fixture(scope="module")
def nd(tmp_path_factory):
    """A 60-sample nonlinear diffusion store, and ``hybrid train --members 3 --calibrate``."""
    from mpi4py import MPI
    from typer.testing import CliRunner

    import hybrid.fem  # noqa: F401  (MPI ordering)
    from hybrid.cli.app import app
    from hybrid.core.case import load_case
    from hybrid.workflows.campaign import run_campaign

    from .test_model_wiring import _nd_case

    tmp = tmp_path_factory.mktemp("ndcal")
    case = load_case(_nd_case(tmp, cells=8, samples=60))
    assert run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False).ok == 60
    out = tmp / "surrogate"
    r = CliRunner().invoke(app, [
        "train", str(tmp / "store"), "--out", str(out), "--members", str(MEMBERS),
        "--calibrate", str(ALPHA), "--validation", "0.5", "--width", "16", "--depth", "2",
        "--epochs", "300", "--lbfgs", "300", "--no-physics-informed", "--no-plots",
        "--threads", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    return case, tmp / "store", out, r.output


def test_training_calibrates_on_half_the_validation_split_and_reports_coverage(nd):
    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate import Surrogate

    case, store, out, output = nd
    s = Surrogate.load(out)
    cal, cq = s.calibration, s.calibration_qoi
    assert cal.target == "observations" and cq.target == "qoi"
    assert cal.scale == "ensemble-std" and cal.alpha == ALPHA
    assert cal.names == s.observation_names and cq.names == s.qoi_names == ["mean"]
    vi = s.meta["store"]["validation_indices"]
    ci, ti = cal.indices["calibration"], cal.indices["test"]
    assert len(vi) == 30 and sorted(ci + ti) == vi and len(ci) == cal.n_cal == 15
    assert cal.n_test == 15 and cal.coverage_se == pytest.approx(math.sqrt(0.16 / 15))
    assert "early_stopping" in s.meta["training"] and \
        s.meta["training"]["early_stopping"].startswith("training snapshots")
    assert f"alpha {ALPHA:g}" in output and "coverage" in output and "test runs" in output
    # independent recomputation from the store: FEM observations L u_h, the members' spread
    st = SnapshotStore(store)
    mu, U = st.snapshots()
    _, Q = st.qois()
    for rec, y_fem, pred, target in ((cal, st.static.observe(U), s.observe, "observations"),
                                     (cq, Q, s.qoi, "qoi")):
        ys = s.members_outputs(mu, target)                           # (K, S, m)
        np.testing.assert_allclose(ys.mean(axis=0), pred(mu), rtol=1e-10, atol=1e-13)
        sd = np.sqrt(((ys - ys.mean(axis=0)) ** 2).sum(axis=0) / (MEMBERS - 1))
        r = np.max(np.abs(y_fem - ys.mean(axis=0)) / sd, axis=1)
        k = math.ceil(16 * (1 - ALPHA))                                # n = 15: k = 13
        assert rec.q == pytest.approx(np.sort(r[ci])[k - 1], rel=1e-9)
        assert rec.coverage == pytest.approx(np.mean(r[ti] <= rec.q), abs=1e-12)
        np.testing.assert_allclose(s.band(mu[:4]) if target == "observations"
                                   else s.band_qoi(mu[:4]), rec.q * sd[:4], rtol=1e-9)


def test_coverage_on_fresh_fem_runs(nd):
    from mpi4py import MPI

    from hybrid.fem.model import FEMModel
    from hybrid.surrogate import Surrogate

    case, _, out, _ = nd
    s = Surrogate.load(out)
    mus = s.space.sample(40, "random", 2026)
    fem = FEMModel(case, MPI.COMM_SELF)
    sols = [fem.solve(m, field=False) for m in mus]
    fem.close()
    y = np.array([st.observations for st in sols])
    q = np.array([st.qoi for st in sols])
    se = math.sqrt(ALPHA * (1 - ALPHA) / len(mus))
    cov = np.mean(np.all(np.abs(y - s.observe(mus)) <= s.band(mus), axis=1))
    cov_q = np.mean(np.all(np.abs(q - s.qoi(mus)) <= s.band_qoi(mus), axis=1))
    print(f"fresh-run coverage: observations {cov:.3f}, QoI {cov_q:.3f} "
          f"(nominal {1 - ALPHA}, s.e. {se:.3f}, n 40)")
    assert cov >= 1 - ALPHA - 3 * se and cov_q >= 1 - ALPHA - 3 * se
    # the band is not vacuous: it is far tighter than the outputs themselves
    assert np.median(s.band(mus) / np.abs(y).max(axis=0)) < 0.2


BLOCKER = r"""
import importlib.abc, json, sys
BLOCKED = {"dolfinx", "dolfinx_solver", "mpi4py", "petsc4py", "ufl", "basix", "ffcx"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocker())
import numpy as np
from hybrid.surrogate import Surrogate
s = Surrogate.load(sys.argv[1])
mu = np.array(json.loads(sys.argv[2]))
print(json.dumps({"band": s.band(mu).tolist(), "band_qoi": s.band_qoi(mu).tolist(),
                  "calibration": s.calibration.to_dict(),
                  "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)}))
"""


def test_the_calibrated_surrogate_round_trips_and_loads_without_dolfinx(nd, tmp_path):
    from hybrid.surrogate import Surrogate, SurrogateError

    _, _, out, _ = nd
    s = Surrogate.load(out)
    s.save(tmp_path / "copy")
    t = Surrogate.load(tmp_path / "copy")
    assert t.calibration == s.calibration and t.calibration_qoi == s.calibration_qoi
    mu = s.space.sample(3, "random", 5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", BLOCKER, str(tmp_path / "copy"),
                        json.dumps(mu.tolist())], capture_output=True, text=True, env=env,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["loaded"] == [] and got["calibration"] == s.calibration.to_dict()
    np.testing.assert_allclose(got["band"], s.band(mu), rtol=1e-12)
    np.testing.assert_allclose(got["band_qoi"], s.band_qoi(mu), rtol=1e-12)
    # hybrid query prints the bands
    from typer.testing import CliRunner

    from hybrid.cli.app import app

    q = CliRunner().invoke(app, ["query", str(out), "--mu", "1.1,2.0"])
    assert q.exit_code == 0, q.output
    row = json.loads(q.output)
    mu1 = np.array([1.1, 2.0])
    assert list(row["conformal_band"]) == s.observation_names
    np.testing.assert_allclose(list(row["conformal_band"].values()), s.band(mu1), rtol=1e-12)
    np.testing.assert_allclose(row["conformal_band_qoi"]["mean"], s.band_qoi(mu1)[0],
                               rtol=1e-12)
    # the record is covered by the metadata checksum: an edited q is refused
    meta = json.loads((tmp_path / "copy" / "surrogate.json").read_text())
    meta["calibration"]["observations"]["q"] *= 10
    (tmp_path / "copy" / "surrogate.json").write_text(json.dumps(meta))
    with pytest.raises(SurrogateError, match="metadata checksum mismatch"):
        Surrogate.load(tmp_path / "copy")


# ----------------------------------------------------------------------------- (c) coupler
def test_the_coupler_trusts_the_band_and_refuses_beyond_it(nd):
    from mpi4py import MPI

    from hybrid.fem.model import FEMModel
    from hybrid.surrogate import Surrogate
    from hybrid.workflows.coupler import Coupler

    case, store, out, _ = nd
    s = Surrogate.load(out)
    fem = FEMModel(case, MPI.COMM_SELF)
    sigma = np.full(5, 1e-2)
    mu = np.array([1.1, 2.0])
    eta = float(np.max(s.band(mu) / sigma))
    cp = Coupler(s, fem, sigma=sigma, tol=2 * eta)
    ans = cp.evaluate(mu)
    assert cp.basis == "conformal"
    assert ans.source == "surrogate" and ans.basis == "conformal" and not ans.certified
    assert ans.eta == pytest.approx(eta, rel=1e-12)
    np.testing.assert_allclose(ans.y, s.observe(mu), rtol=1e-12)
    rep = cp.report()
    assert rep["basis"] == "conformal" and rep["certified"] is False
    assert rep["uncertified_answers"] == 1 and "split-conformal" in rep["bound"]
    assert rep["calibration"]["alpha"] == ALPHA and rep["calibration"]["q"] == \
        s.calibration.q and rep["calibration"]["coverage"] == s.calibration.coverage
    # a tolerance below the band: the FEM answers
    tight = Coupler(s, fem, sigma=sigma, tol=0.5 * eta)
    a2 = tight.evaluate(mu)
    assert a2.source == "fem" and a2.certified and a2.etas["surrogate"] == pytest.approx(eta)
    np.testing.assert_allclose(a2.y, fem.solve(mu).observations, rtol=1e-12)
    # an explicit opt-in to the residual indicator takes precedence over the band
    ind = Coupler(s, fem, sigma=sigma, tol=1e6, store=store, trust="indicator")
    assert ind.basis == "indicator" and ind.report()["calibration"] is None
    fem.close()


def test_a_rigorous_bound_wins_and_a_constant_band_needs_no_ensemble(tmp_path, monkeypatch):
    from hybrid.surrogate import SurrogateError
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig
    from hybrid.workflows.coupler import Coupler, CouplerError
    from tests import conftest_surrogate as cs

    fem = cs.BlockFEM(cells=6, blocks=2)
    mus = cs.space(2).sample(36, "sobol", 3)
    cfg = TrainingConfig(width=8, depth=1, adam_epochs=40, lbfgs_iterations=40,
                         validation_fraction=0.5, threads=1, physics_informed=False)
    # affine: the residual bound wins over the calibration
    aff = cs.make_store(tmp_path / "aff", fem, mus)
    sa, _ = build_surrogate(aff, BuildOptions(training=cfg, calibrate=0.2))
    assert sa.estimator is not None and sa.calibration.scale == "constant"
    cp = Coupler(sa, None, sigma=[1e-2], tol=1e6, store=aff)
    assert cp.basis == "bound" and cp.evaluate(mus[0]).certified
    # non-affine, one network: a constant band q, trusted without an ensemble
    non = cs.make_store(tmp_path / "non", fem, mus, affine=False)
    sn, rep = build_surrogate(non, BuildOptions(training=cfg, calibrate=0.2))
    assert sn.estimator is None and sn.members == 1
    np.testing.assert_array_equal(sn.band(mus[:2]), np.full((2, 1), sn.calibration.q))
    assert rep["calibration"]["observations"]["q"] == sn.calibration.q
    cp = Coupler(sn, None, sigma=[sn.calibration.q / 0.5], tol=1.0)
    a = cp.evaluate(mus[1])
    assert a.basis == "conformal" and a.eta == pytest.approx(0.5) and a.source == "surrogate"
    # without the calibration and without FEM the same surrogate cannot be trusted
    sn.calibration = None
    with pytest.raises(CouplerError, match="needs an error estimate"):
        Coupler(sn, None, sigma=[1.0])
    with pytest.raises(SurrogateError, match="needs at least 19 calibration runs, i.e. 37 "
                                             "validation snapshots; .* has 18"):
        build_surrogate(non, BuildOptions(training=cfg, calibrate=0.05))
    for bad in (0.0, 1.5):
        with pytest.raises(SurrogateError, match="alpha must lie in"):
            build_surrogate(non, BuildOptions(training=cfg, calibrate=bad))
    from hybrid.core.store import SnapshotStore

    monkeypatch.setattr(SnapshotStore, "transient", property(lambda self: True))
    with pytest.raises(SurrogateError, match="band is for steady stores"):
        build_surrogate(non, BuildOptions(training=cfg, calibrate=0.2))
