"""Inference on a small FEM case: MAP recovery, FEM confirmation, the CLI, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hybrid.fem  # noqa: F401
from hybrid.core.case import load_case
from hybrid.core.examples import case_text
from hybrid.fem.model import FEMModel
from hybrid.inference import Observations, Posterior, find_map, synthesize
from hybrid.inference.models import fem_model
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.workflows.campaign import run_campaign
from hybrid.workflows.infer import InferenceOptions, run_inference

from .conftest import run_cli

TRUTH = np.array([0.3, 0.55, 0.8, 0.45])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mpi4py import MPI

    root = tmp_path_factory.mktemp("infer")
    path = root / "case.toml"
    path.write_text(case_text(name="tb_infer", cells=24, blocks=2, samples=16, seed=2, grid=4,
                              store=str(root / "store")))
    case = load_case(path)
    assert run_campaign(case, comm=MPI.COMM_SELF, progress=False, paraview=False).ok == 16
    # a deliberately poor surrogate (3 modes): the FEM confirmation has work to do
    sur, _ = build_surrogate(root / "store", BuildOptions(kind="galerkin", modes=3))
    sur.save(root / "sur3")
    fem = FEMModel(case, MPI.COMM_SELF)
    y = fem.observe(TRUTH)
    fem.close()
    return root, path, case, sur, y


def test_map_recovers_known_parameters_from_noise_free_data(setup, tmp_path):
    root, path, case, sur, y = setup
    data = Observations(tuple(case.observations.names()), y, 1e-3 * np.abs(y))
    s = run_inference(case, sur, data, InferenceOptions(method="map", starts=4, enrich=False),
                      out=tmp_path / "out", store=root / "store")
    mu = np.array([s["estimate"][n] for n in case.parameters.names])
    # the FEM MAP of exact data is the truth; the 3-mode surrogate's own MAP is not
    assert np.allclose(mu, TRUTH, rtol=1e-6), mu - TRUTH
    cheap = np.array(list(s["surrogate_map"]["mu"].values()))
    assert np.max(np.abs(cheap - TRUTH)) > 1e-3
    assert s["misfit"]["chi2_fem"] < 1e-8 and s["map"]["converged"]
    assert 1 <= s["fem"]["solves"] <= 30
    d = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert d["estimate"] == s["estimate"]
    assert (tmp_path / "out" / "corner.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "field" / "solution.xdmf").exists()


def test_fem_confirmed_map_equals_fem_only_map_and_laplace_covers(setup, tmp_path):
    """With 1 % noise: the confirmed MAP equals an independent L-BFGS-B on the FEM alone."""
    root, path, case, sur, y = setup
    data = synthesize(y, 0.01, "relative", seed=4, names=case.observations.names())
    s = run_inference(case, sur, data, InferenceOptions(method="map", starts=4, enrich=False,
                                                        field=False), store=root / "store")
    mu = np.array([s["estimate"][n] for n in case.parameters.names])
    std = np.array([s["std"][n] for n in case.parameters.names])
    from mpi4py import MPI

    fem = FEMModel(case, MPI.COMM_SELF)
    direct = find_map(Posterior(fem_model(fem), data, case.parameters), starts=0, x0=mu * 0.9)
    fem.close()
    assert np.all(np.abs(mu - direct.mu) < 1e-3 * std), (mu - direct.mu) / std
    assert np.all(np.abs(mu - TRUTH) < 4 * std)          # the truth within 4 Laplace std
    assert np.allclose(std, direct.std, rtol=1e-3)


def test_fem_jacobian_matches_finite_differences(setup):
    from mpi4py import MPI

    _, _, case, _, _ = setup
    fem = FEMModel(case, MPI.COMM_SELF)
    y, J = fem.jacobian(TRUTH)
    h = 1e-6
    for k in range(4):
        e = np.zeros(4)
        e[k] = h
        fd = (fem.observe(TRUTH + e) - fem.observe(TRUTH - e)) / (2 * h)
        assert np.allclose(J[:, k], fd, rtol=1e-6, atol=1e-9 * np.abs(J).max())
    fem.close()


def test_cli_synth_and_infer_mcmc_with_coupler(setup, tmp_path):
    root, path, case, _, _ = setup
    obs = tmp_path / "obs.csv"
    r = run_cli(["synth", path, "--mu", "0.3,0.55,0.8,0.45", "--out", obs, "--seed", "3"])
    assert r.returncode == 0, r.stderr
    assert obs.read_text().count("\n") == 16 + 6        # 5 metadata lines, header, 16 rows
    r = run_cli(["synth", path, "--mu", "0.3,0.55,0.8,0.45", "--out", obs])
    assert r.returncode == 2 and "exists" in r.stderr and obs.read_text().count("\n") == 22
    r = run_cli(["infer", path, "--surrogate", root / "sur3", "--data", obs, "--method", "mcmc",
                 "--samples", "300", "--burn-in", "200", "--chains", "2", "--no-enrich",
                 "--out", tmp_path / "mc"])
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "mc" / "summary.json").read_text())
    assert "stage 2 = coupler" in s["mcmc"]["target"] and s["mcmc"]["exact"]
    cp = s["coupler"][0]
    assert sum(cp["answered_by"].values()) == cp["queries"] == s["mcmc"]["counts"]["expensive"]
    for f in ("corner.png", "trace.png", "samples.npz", "posterior.nc", "field/solution.xdmf"):
        assert (tmp_path / "mc" / f).exists(), f


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybrid: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_bad_input_is_one_line_and_writes_nothing(setup, tmp_path):
    root, path, case, _, y = setup
    good = tmp_path / "obs.csv"
    Observations(tuple(case.observations.names()), y, 1e-3).to_csv(good)
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text().replace(f"p3,{float(y[3])!r}", "p3,nan"))
    out = tmp_path / "out"
    r = run_cli(["infer", path, "--surrogate", root / "sur3", "--data", bad, "--out", out])
    _one_line_error(r, f"{bad}:", "value must be finite")
    assert not out.exists()
    # a surrogate of another case (3x3 blocks: 9 parameters)
    other = tmp_path / "other.toml"
    other.write_text(case_text(name="other", cells=12, blocks=3, grid=4,
                               store=str(tmp_path / "st")))
    r = run_cli(["infer", other, "--surrogate", root / "sur3", "--data", good, "--out", out])
    _one_line_error(r, "surrogate has 4 parameters")
    r = run_cli(["infer", path, "--surrogate", tmp_path / "nope", "--data", good, "--out", out])
    _one_line_error(r, "nope")
    r = run_cli(["infer", path, "--surrogate", root / "sur3", "--data", good, "--method", "x"])
    _one_line_error(r, "--method must be one of map, mcmc")
    r = run_cli(["synth", path, "--mu", "0.3,0.55,0.8,4.0", "--out", tmp_path / "o.csv"])
    _one_line_error(r, "mu_3=4 is outside its bounds")
    assert not out.exists() and not (tmp_path / "o.csv").exists()


def test_mcmc_writes_an_arviz_file_and_reports_no_problems(setup, tmp_path):
    import xarray as xr

    root, path, case, sur, y = setup
    obs = synthesize(y, 0.01, "relative", seed=5, names=sur.observation_names)
    s = run_inference(case, sur, obs, InferenceOptions(method="mcmc", stage2="none",
                                                       samples=400, burn_in=300, chains=2,
                                                       field=False, enrich=False),
                      out=tmp_path / "mc")
    dt = xr.open_datatree(tmp_path / "mc" / "posterior.nc", engine="h5netcdf")
    names = case.parameters.names
    assert set(dt["posterior"].data_vars) == set(names)
    assert dt["posterior"][names[0]].shape == (2, 400)
    draws = np.load(tmp_path / "mc" / "samples.npz")["samples"]
    assert np.array_equal(dt["posterior"][names[1]].values, draws[:, :, 1])
    acc = dt["sample_stats"]["accepted"].values
    assert acc.dtype == bool and 0 < acc.mean() < 1
    assert np.allclose(dt["observed_data"]["y"].values, obs.values)
    assert dt["posterior"].attrs["exact"] == 0        # surrogate-only is labelled not exact
    assert s["mcmc"]["settings"]["kernel"] == "mala"
    assert s["files"]["posterior"].endswith("posterior.nc")


def test_surrogate_data_and_store_of_another_case_are_refused(setup, tmp_path):
    from hybrid.errors import HybridError
    from hybrid.surrogate.surrogate import SurrogateError

    root, path, case, sur, y = setup
    obs = synthesize(y, 0.01, "relative", seed=5, names=sur.observation_names)
    opt = InferenceOptions(method="map", field=False, enrich=False, plots=False)
    for name, kw, needle in (("mesh", {"cells": 20}, "mesh"),
                             ("sensors", {"grid": 3}, "sensors")):
        other = tmp_path / f"{name}.toml"
        base = {"cells": 24, "grid": 4} | kw
        other.write_text(case_text(name="tb_infer", blocks=2, samples=16, seed=2,
                                   store=str(root / "store"), **base))
        with pytest.raises(SurrogateError, match=needle) as e:
            run_inference(other, sur, obs, opt)
        assert "tb_infer" in str(e.value) and str(other) in str(e.value)
    # a data file made for another case
    csv = tmp_path / "obs.csv"
    bad = Observations(obs.names, obs.values, obs.sigma, {**obs.meta, "case": "elsewhere"})
    bad.to_csv(csv)
    with pytest.raises(HybridError, match="made for case 'elsewhere'.*not for case 'tb_infer'"):
        run_inference(case, sur, csv, opt)
    # enrichment into a store that another case made: refused, nothing written
    other = tmp_path / "other.toml"
    other.write_text(case_text(name="tb_other", cells=12, blocks=2, samples=2, seed=2,
                               grid=4, store=str(tmp_path / "ostore")))
    assert run_cli(["campaign", other]).returncode == 0
    before = sorted(p.name for p in (tmp_path / "ostore" / "samples").iterdir())
    with pytest.raises(HybridError, match="made from another case.*mesh"):
        run_inference(case, sur, obs, InferenceOptions(method="map", field=False,
                                                       plots=False),
                      store=tmp_path / "ostore")
    assert sorted(p.name for p in (tmp_path / "ostore" / "samples").iterdir()) == before


def test_enrichment_under_mpirun_loses_no_solve(setup, tmp_path):
    """Two ranks, chains on COMM_SELF FEMs, every FEM solve committed: files == committed."""
    import shutil

    from hybrid.core.store import ENRICHMENT_BASE, SnapshotStore

    root, path, case, sur, y = setup
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    obs = tmp_path / "obs.csv"
    synthesize(y, 0.01, "relative", seed=5, names=sur.observation_names).to_csv(obs)
    before = SnapshotStore(store).committed_indices()
    files_before = {p.name: p.read_bytes() for p in SnapshotStore(store).sample_files()}
    args = ["infer", path, "--surrogate", root / "sur3", "--data", obs, "--method", "mcmc",
            "--stage2", "fem", "--samples", "60", "--burn-in", "40", "--chains", "2",
            "--no-field", "--no-plots", "--out", tmp_path / "mc"]
    # the case's store is root/store: point the run at the copy with a case next to it
    c2 = tmp_path / "case.toml"
    c2.write_text(path.read_text().replace(str(root / "store"), str(store)))
    args[1] = c2
    for k in range(2):   # twice: the second run must not overwrite the first one's samples
        r = run_cli([*args[:-1], tmp_path / f"mc{k}"], ranks=2)
        assert r.returncode == 0, r.stderr
    new = SnapshotStore(store).committed_indices() - before
    committed = [json.loads((tmp_path / f"mc{k}" / "summary.json").read_text())["fem"]
                 ["committed"] for k in range(2)]
    assert min(committed) > 10 and len(new) == sum(committed), (len(new), committed)
    assert all(i >= ENRICHMENT_BASE for i in new)
    for name, data in files_before.items():      # nothing overwritten
        assert (store / "samples" / name).read_bytes() == data
