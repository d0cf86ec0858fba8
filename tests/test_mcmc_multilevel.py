"""Multi-level delayed acceptance (surrogate → coarse → fine) against analytic posteriors.

* three linear-Gaussian levels y = Gμ + noise, fine G, coarse G + E1, surrogate G + E2: the
  chain's means and covariances match the *fine* analytic posterior within Z Monte-Carlo
  errors (sd/√ESS), and not the coarse one; a stage 3 that ignores π₂ in its ratio is
  caught as biased (by a monkeypatched ratio, not shipped);
* counts: level-k evaluations = stage-(k−1) passes + one start per chain, stage passes nest;
  the report names the levels and the fine evaluations per effective sample, also for a
  fine-only chain;
* two levels reproduce the sampler as it was before levels existed: the same decisions and
  counts, the same draws (bit for bit on this machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.inference import (
    ForwardModel,
    GaussianPrior,
    InferenceError,
    Observations,
    Posterior,
    ess,
    mcmc,
    sample,
    synthesize,
)

INF = np.inf


# ------------------------------------------------------------------ two levels: unchanged
def _two_level_runs() -> dict[str, np.ndarray]:
    """Two-level (random walk and MALA), metropolis and surrogate-only runs, every output.

    The models use elementwise arithmetic only (no BLAS), so that the draws do not depend on
    the BLAS kernel a CPU picks. ``tests/data/make_mcmc_two_level_reference.py`` wrote the
    reference file from these runs with the sampler as it was before levels existed.
    """
    a = np.array([[1.0, 0.5], [-0.3, 1.2], [0.8, -0.7]])

    def g(x, b=0.0, c=a):
        return x[:, :1] * (c[:, 0] + b) + x[:, 1:] * (c[:, 1] - b)

    def g_torch(x):
        import torch

        return g(x.reshape(-1, 2), 0.15, torch.tensor(a)).reshape(*x.shape[:-1], 3)

    space = ParameterSpace((Parameter("u", -2.0, 3.0), Parameter("v", -INF, INF)))
    data = Observations(("y0", "y1", "y2"), np.array([0.9, 0.2, 0.1]), 0.2)
    fine = Posterior(ForwardModel(g, batched=True), data, space, "uniform")
    cheap = fine.with_model(ForwardModel(lambda x: g(x, 0.15), batched=True,
                                         torch_fn=g_torch))
    kw = {"n_samples": 120, "burn_in": 80, "chains": 3, "seed": 11, "x0": np.array([0.3, 0.1]),
          "start_cov": 0.05 * np.eye(2), "adapt_every": 10, "thin": 2}
    out = {}
    for mode, args in (("delayed-acceptance", (fine, cheap)), ("metropolis", (fine,)),
                       ("surrogate-only", (None, cheap)), ("mala", (fine, cheap))):
        if mode == "mala":
            r = sample(*args, mode="delayed-acceptance", kernel="mala", **kw)
        else:
            r = sample(*args, mode=mode, **kw)
        key = mode.split("-")[0]
        out[f"{key}_samples"] = r.samples
        out[f"{key}_log_density"] = r.log_density
        out[f"{key}_accepted"] = r.accepted
        out[f"{key}_stage1"] = r.stage1
        out[f"{key}_proposal_cov"] = r.proposal_cov
        for k, v in r.counts.items():
            out[f"{key}_count_{k}"] = v
    return out


def test_two_levels_reproduce_the_sampler_before_levels():
    """Every accept/reject decision and count is the same; every draw, log density and
    covariance is the same number (bitwise on the machine that wrote the file; to 1e-12 here,
    because numpy's exp and log, used by the bounded transform and the step-size adaptation,
    may differ in the last bit on another CPU)."""
    ref = np.load(Path(__file__).with_name("data") / "mcmc_two_level_reference.npz")
    now = _two_level_runs()
    assert set(now) == set(ref.files)
    for k in ref.files:
        assert now[k].dtype == ref[k].dtype and now[k].shape == ref[k].shape, k
        if now[k].dtype.kind == "f":
            np.testing.assert_allclose(now[k], ref[k], rtol=1e-12, atol=0, err_msg=k)
        else:
            assert np.array_equal(now[k], ref[k]), k


# ------------------------------------------------------------------ three levels, exact
Z = 4.5  # Monte-Carlo standard errors


def _three_levels(P: int = 2, m: int = 6, e1: float = 0.1, e2: float = 0.05):
    """y = G μ + noise: fine G, coarse G + E1, surrogate G + E2; prior N(0, 4 I).

    Returns the three posteriors (surrogate, coarse, fine), the analytic (mean, cov) of the
    fine and of the coarse posterior, and the sampler's starting settings from the
    surrogate's posterior (as ``hybrid infer`` starts from the surrogate's Laplace fit).
    """
    rng = np.random.default_rng(7)
    G = rng.standard_normal((m, P)) + 2.0 * np.eye(m, P)
    E1, E2 = e1 * rng.standard_normal((m, P)), e2 * rng.standard_normal((m, P))
    sigma = 0.3
    space = ParameterSpace(tuple(Parameter(f"a{i}", -INF, INF) for i in range(P)))
    data = synthesize(G @ np.linspace(0.8, -0.5, P), sigma, seed=3)
    m0, C0 = np.zeros(P), 4.0 * np.eye(P)

    def analytic(B):
        cov = np.linalg.inv(B.T @ B / sigma ** 2 + np.linalg.inv(C0))
        return cov @ (B.T @ data.values / sigma ** 2), cov

    prior = GaussianPrior(m0, C0)

    def post(B, name):
        return Posterior(ForwardModel(lambda x: x @ B.T, batched=True, name=name), data, space,
                         prior)

    ms, Cs = analytic(G + E2)
    start = {"x0": ms, "proposal_cov": Cs, "start_cov": Cs}
    return (post(G + E2, "surrogate"), post(G + E1, "coarse"), post(G, "fine"),
            analytic(G), analytic(G + E1), start)


def _agrees(chains: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[bool, str]:
    """Means, variances and covariances of ``chains`` (C, n, P) within Z Monte-Carlo errors.

    The error of a mean is sd/√ESS; of a (co)variance, that of the mean of
    f = (x_i − m_i)(x_j − m_j), whose own ESS sets its standard error.
    """
    ok, report = True, []
    P = chains.shape[-1]
    for i in range(P):
        x = chains[:, :, i]
        dm = (x.mean() - mean[i]) / np.sqrt(cov[i, i] / ess(x))
        ok &= abs(dm) < Z
        report.append(f"mean {i}: {dm:+.1f} SE")
        for j in range(i, P):
            f = (x - mean[i]) * (chains[:, :, j] - mean[j])
            dc = (f.mean() - cov[i, j]) / (np.std(f) / np.sqrt(ess(f)))
            ok &= abs(dc) < Z
            report.append(f"cov {i}{j}: {dc:+.1f} SE")
    return bool(ok), "; ".join(report)


RUN = {"n_samples": 3000, "burn_in": 500, "chains": 4, "seed": 5}


@pytest.fixture(scope="module")
def three():
    sur, coarse, fine, exact, coarse_exact, start = _three_levels()
    before = [p.model.n_evals for p in (sur, coarse, fine)]
    res = sample(fine, sur, intermediate=[coarse], **RUN, **start)
    evals = [p.model.n_evals - b for p, b in zip((sur, coarse, fine), before, strict=True)]
    return res, evals, exact, coarse_exact


def test_three_levels_sample_the_fine_posterior(three):
    res, _, (m, C), (mc, Cc) = three
    ok, report = _agrees(res.samples, m, C)
    assert ok, report
    # the test has power: the coarse posterior is many standard errors away from the fine one
    se = np.sqrt(np.diag(C) / np.array([ess(res.samples[:, :, j]) for j in range(m.size)]))
    assert np.max(np.abs(mc - m) / se) > 2 * Z
    assert not _agrees(res.samples, mc, Cc)[0]
    assert res.exact and res.mode == "delayed-acceptance" and res.problems() == []


def test_counts_per_level_and_stage(three):
    res, evals, _, _ = three
    c, C = res.counts, res.chains
    # every evaluation counted once: level k is evaluated where stage k − 1 passed (+ starts)
    assert evals == res.evaluations()
    assert np.all(c["n_cheap"] == c["proposals_total"] + 1)
    assert np.all(c["n_intermediate"][:, 0] == c["stage1_total"] + 1)
    assert np.all(c["n_expensive"] == c["stage2_total"] + 1)
    assert evals[2] == c["stage2_total"].sum() + C
    assert np.all(c["accepted_total"] <= c["stage2_total"])
    assert np.all(c["stage2_total"] <= c["stage1_total"])
    assert np.all(c["accepted"] <= c["stage2"]) and np.all(c["stage2"] <= c["stage1"])
    # every stage screens something out, and the surrogate's screening saves fine solves
    assert np.all(c["stage1"] < c["proposals"]) and np.all(c["stage2"] < c["stage1"])
    assert np.all(c["accepted"] < c["stage2"])
    # the retained flags: a move passed every stage
    assert res.stages.shape == (C, RUN["n_samples"], 2)
    assert np.array_equal(res.stages[:, :, 0], res.stage1)
    assert np.all(res.accepted <= res.stages[:, :, 1]) and np.all(
        res.stages[:, :, 1] <= res.stages[:, :, 0])
    acc = res.acceptance()
    assert acc["stage1"] == pytest.approx(c["stage1"].sum() / c["proposals"].sum())
    assert acc["stage2"] == pytest.approx(c["stage2"].sum() / c["stage1"].sum())
    assert acc["stage3"] == pytest.approx(c["accepted"].sum() / c["stage2"].sum())
    assert acc["overall"] == pytest.approx(acc["stage1"] * acc["stage2"] * acc["stage3"])


def test_report_names_the_levels_and_fine_solves_per_effective_sample(three, tmp_path):
    res, evals, _, _ = three
    d = json.loads(json.dumps(res.to_dict()))
    assert [lv["model"] for lv in d["levels"]] == ["surrogate", "coarse", "fine"]
    assert [lv["evaluations"] for lv in d["levels"]] == evals
    assert d["counts"]["cheap"] == evals[0] and d["counts"]["intermediate"] == [evals[1]]
    assert d["counts"]["expensive"] == evals[2]
    assert d["expensive_per_effective_sample"] == pytest.approx(evals[2] / d["min_ess"])
    assert d["levels"][2]["per_effective_sample"] == d["expensive_per_effective_sample"]
    assert [lv["stage_acceptance"] for lv in d["levels"]] == [
        d["acceptance"][f"stage{k}"] for k in (1, 2, 3)]
    assert d["settings"]["levels"] == ["surrogate", "coarse", "fine"]
    dt = res.to_inference_data()
    assert np.array_equal(dt["sample_stats"]["stage2_accepted"].values, res.stages[:, :, 1])
    assert dt["posterior"].attrs["n_intermediate"] == json.dumps([evals[1]])


def test_a_third_stage_that_ignores_the_level_below_is_biased(monkeypatch):
    """The check above has the power to see a wrong stage-3 ratio min(1, π₃(y)/π₃(x)).

    That kernel is reversible for ∝ π₂π₃ (about half the fine covariance), not for π₃.
    """
    sur, coarse, fine, (m, C), _, start = _three_levels()
    right = mcmc._stage_log_ratio

    def wrong(stage, lk_y, lk_x, lprev_x, lprev_y):
        if stage == 3:
            return lk_y - lk_x
        return right(stage, lk_y, lk_x, lprev_x, lprev_y)

    monkeypatch.setattr(mcmc, "_stage_log_ratio", wrong)
    res = sample(fine, sur, intermediate=[coarse], **RUN, **start)
    ok, report = _agrees(res.samples, m, C)
    assert not ok, report
    var = np.var(res.draws(), axis=0)
    assert np.all(var < 0.75 * np.diag(C)), var / np.diag(C)


def test_mala_three_levels_are_exact_and_compare_with_a_fine_only_chain():
    """MALA first stage (surrogate gradients) stays exact; the fine solves per effective
    sample of a fine-only random-walk chain are reported the same way (and are more here:
    9.2 against 6.1 at this seed)."""
    import torch

    sur, coarse, fine, (m, C), _, start = _three_levels()
    B = torch.tensor(sur.model.fn(np.eye(2)).T)
    sur = sur.with_model(ForwardModel(sur.model.fn, batched=True, name="surrogate",
                                      torch_fn=lambda x: x @ B.T))
    res = sample(fine, sur, intermediate=[coarse], kernel="mala", **RUN, **start)
    ok, report = _agrees(res.samples, m, C)
    assert ok, report
    assert res.settings["kernel"] == "mala"
    plain = sample(fine, mode="metropolis", **RUN, **start)
    ok, report = _agrees(plain.samples, m, C)
    assert ok, report
    ml, ref = res.to_dict(), plain.to_dict()
    assert ref["expensive_per_effective_sample"] == pytest.approx(
        (plain.counts["proposals_total"].sum() + plain.chains) / ref["min_ess"])
    assert [lv["model"] for lv in plain.level_report()] == ["expensive"]
    assert ml["expensive_per_effective_sample"] < 0.8 * ref["expensive_per_effective_sample"]


def test_chains_over_ranks_give_the_draws_of_one_process():
    sur, coarse, fine, _, _, start = _three_levels()
    kw = dict(RUN, n_samples=200, burn_in=50, **start)
    one = sample(fine, sur, intermediate=[coarse], **kw)
    box = []
    assert sample(fine, sur, intermediate=[coarse], comm=_Comm(1, 2, box), **kw) is None
    two = sample(fine, sur, intermediate=[coarse], comm=_Comm(0, 2, box), **kw)
    assert np.array_equal(one.samples, two.samples) and np.array_equal(one.stages, two.stages)
    for k, v in one.counts.items():
        assert np.array_equal(v, two.counts[k]), k


class _Comm:
    """Two fake ranks in one process: rank 1 runs first and leaves its part in ``box``."""

    def __init__(self, rank, size, box):
        self.rank, self.size, self.box = rank, size, box

    def gather(self, obj, root=0):
        if self.rank != root:
            self.box.append(obj)
            return None
        return [obj, *self.box]


def test_bad_levels_are_refused():
    sur, coarse, fine, _, _, _ = _three_levels()
    other = Posterior(coarse.model, coarse.data, ParameterSpace(tuple(
        Parameter(f"b{i}", -INF, INF) for i in range(2))), coarse.prior)
    with pytest.raises(InferenceError, match="intermediate level 2 has parameters"):
        sample(fine, sur, intermediate=[other], n_samples=10, burn_in=0)
    with pytest.raises(InferenceError, match="intermediate levels need mode"):
        sample(fine, mode="metropolis", intermediate=[coarse], n_samples=10, burn_in=0)
    with pytest.raises(InferenceError, match="expected a Posterior"):
        sample(fine, sur, intermediate=[coarse.model], n_samples=10, burn_in=0)


# ------------------------------------------------------------------ hybrid infer --coarse
@pytest.fixture(scope="module")
def fem_cases(tmp_path_factory):
    """A 2×2 thermal block (12×12 cells, 4 sensors), its 6×6 coarse twin, a surrogate and
    synthetic data."""
    from mpi4py import MPI

    import hybrid.fem  # noqa: F401
    from hybrid.core.case import load_case
    from hybrid.core.examples import case_text
    from hybrid.fem.model import FEMModel
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.workflows.campaign import run_campaign

    root = tmp_path_factory.mktemp("multilevel")
    fine, coarse = root / "fine.toml", root / "coarse.toml"
    fine.write_text(case_text(name="tb_ml", cells=12, blocks=2, samples=8, seed=2, grid=2,
                              store=str(root / "store")))
    coarse.write_text(case_text(name="tb_ml_coarse", cells=6, blocks=2, samples=8, grid=2,
                                store=str(root / "coarse_store")))
    case = load_case(fine)
    assert run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False).ok == 8
    sur, _ = build_surrogate(root / "store", BuildOptions(kind="galerkin", modes=4))
    sur.save(root / "sur")
    fem = FEMModel(case, MPI.COMM_SELF)
    y = fem.observe(np.array([0.3, 0.55, 0.8, 0.45]))
    fem.close()
    data = root / "obs.csv"
    synthesize(y, 0.01, "relative", seed=4, names=sur.observation_names).to_csv(data)
    return root, fine, coarse, data


def test_cli_infer_with_a_coarse_level_reports_every_level(fem_cases, tmp_path):
    from .conftest import run_cli

    root, fine, coarse, data = fem_cases
    out = tmp_path / "ml"
    r = run_cli(["infer", fine, "--surrogate", root / "sur", "--data", data, "--method", "mcmc",
                 "--stage2", "fem", "--coarse", coarse, "--samples", "150", "--burn-in", "100",
                 "--chains", "2", "--no-enrich", "--no-field", "--no-plots", "--out", out])
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    d = s["mcmc"]
    assert d["exact"] and d["target"].startswith("multi-level delayed acceptance")
    assert [lv["model"] for lv in d["levels"]] == ["surrogate (galerkin)",
                                                   "coarse FEM (coarse.toml)", "FEM (fine.toml)"]
    n_sur, n_coarse, n_fine = (lv["evaluations"] for lv in d["levels"])
    pc = d["counts"]["per_chain"]
    # every FEM solve is a level evaluation: coarse = stage-1 passes, fine = stage-2 passes;
    # the coarse level's approximation error took one coarse solve per store sample (8)
    corr = s["coarse_correction"]
    assert corr["pairs"] == corr["coarse_solves"] == 8 and len(corr["mean"]) == 4
    assert s["coarse"]["solves"] == n_coarse + 8 and n_coarse == sum(pc["stage1_total"]) + 2
    assert s["fem"]["solves"] == n_fine == d["counts"]["expensive"] == sum(pc["stage2_total"]) + 2
    assert n_sur == d["counts"]["cheap"] == sum(pc["proposals_total"]) + 2
    assert n_fine <= n_coarse <= n_sur   # (the corrected coarse level may pass every proposal)
    assert d["levels"][2]["per_effective_sample"] == pytest.approx(n_fine / d["min_ess"])
    assert s["options"]["coarse_case"] == str(coarse)
    assert "level 2 coarse FEM (coarse.toml)" in r.stdout
    assert s["coarse"]["case"].endswith("coarse.toml") and s["coarse"]["committed"] == 0


def test_a_coarse_case_that_does_not_match_is_refused_in_one_line(fem_cases, tmp_path):
    from hybrid.core.examples import case_text
    from hybrid.errors import HybridError
    from hybrid.workflows.infer import InferenceOptions, run_inference

    from .conftest import run_cli

    root, fine, coarse, data = fem_cases
    bounds = tmp_path / "bounds.toml"
    bounds.write_text(coarse.read_text().replace("mu_1 = { lower = 0.1", "mu_1 = { lower = 0.2"))
    r = run_cli(["infer", fine, "--surrogate", root / "sur", "--data", data, "--method", "mcmc",
                 "--stage2", "fem", "--coarse", bounds, "--out", tmp_path / "o"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{bounds}: parameter 'mu_1' is [0.2, 1.0]" in r.stderr and str(fine) in r.stderr
    assert not (tmp_path / "o").exists()
    sensors = tmp_path / "sensors.toml"
    sensors.write_text(case_text(name="s", cells=6, blocks=2, grid=3))
    more = tmp_path / "more.toml"
    more.write_text(case_text(name="m", cells=6, blocks=3, grid=2))

    def run(path, **kw):
        opt = InferenceOptions(**{"method": "mcmc", "stage2": "fem", "coarse_case": str(path),
                                  **kw})
        run_inference(fine, root / "sur", data, opt)

    with pytest.raises(HybridError, match=r"sensors.toml: the coarse case's observation names "
                                          r"differ from those of .*fine.toml \(9 vs 4"):
        run(sensors)
    with pytest.raises(HybridError, match=r"more.toml: the coarse case's parameters \['mu_0'"):
        run(more)
    with pytest.raises(HybridError, match="--coarse needs --method mcmc --stage2 fem"):
        run(coarse, stage2="coupler")
