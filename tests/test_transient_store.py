"""Transient campaigns: the store's time axis, observations over time, data with a time column.

Every trajectory in the store is compared with an independent run of the FEM time loop;
the initial state's affine terms with the stored first fields; the FEM observations with
the stored fields times the stored sensor rows; 1 and 2 ranks, G = 1 and G = 2, against
each other; a killed-and-resumed store against a fresh one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI first)
from hybrid.core.case import load_case, observation_label
from hybrid.core.store import SnapshotStore, sample_path
from hybrid.errors import StoreError
from hybrid.fem import MPI
from hybrid.inference.data import read_csv

from .conftest import ROOT, run_cli

SENSORS = """
[sampling]
samples = 5

[observations]
points = [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.7, 0.8]]
times = [0.04, 0.1, 0.2]
"""


def block_case(tmp_path, name="hb", cells=6, extra=SENSORS):
    text = (ROOT / "cases/heat_block.toml").read_text().replace("cells = 30", f"cells = {cells}")
    text = text.replace('store = "runs/heat_block/store"', f'store = "{tmp_path / name}"')
    p = tmp_path / f"{name}.toml"
    p.write_text(text + extra)
    return p


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transient_store")
    case = block_case(tmp)
    r = run_cli(["campaign", case])
    assert r.returncode == 0, r.stderr
    return case, SnapshotStore(tmp / "hb")


def test_store_time_axis_and_trajectories_equal_the_time_loop(campaign):
    from hybrid.fem.model_problem import ModelProblem

    case, store = campaign
    assert store.transient and store.time["scheme"] == "bdf2" and store.time["every"] == 2
    np.testing.assert_allclose(store.times, np.linspace(0.0, 0.2, 11), atol=1e-15)
    np.testing.assert_allclose(store.observation_times, [0.04, 0.1, 0.2])
    np.testing.assert_array_equal(store.time_indices([0.04, 0.2]), [2, 10])
    with pytest.raises(StoreError, match="not an output time"):
        store.time_indices([0.03])
    mu, U = store.trajectories()
    _, Q = store.qois()
    assert U.shape == (5, 11, store.n_dofs) and Q.shape == (5, 11, 2)
    with pytest.raises(StoreError, match="trajectories"):
        store.snapshots()
    p = ModelProblem(load_case(case), MPI.COMM_SELF)
    for k in (0, 3):
        res = p.solve_transient(mu[k], keep_fields=True)
        ref = np.array([p.ordering.gather(f) for f in res.fields])
        np.testing.assert_allclose(U[k], ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(Q[k], res.qoi, rtol=0, atol=1e-13)
        # the QoI rows of the static part give the stored QoIs of every stored field
        np.testing.assert_allclose(U[k] @ store.static.qoi_functionals.T, Q[k], atol=1e-12)
    p.destroy()


def test_initial_state_terms_reproduce_the_first_fields(campaign):
    """u0(μ) = a·sin(πx)sin(πy): one term, θ0 = μ_u0, g the interpolated sine."""
    from hybrid.core.theta import evaluate_all

    _, store = campaign
    theta0 = store.manifest["model"]["theta_0"]
    assert theta0 == [{"mu": store.space.names.index("u0")}]
    g = store.static.initial_terms
    mu, U = store.trajectories()
    np.testing.assert_allclose(evaluate_all(theta0, mu) @ g, U[:, 0], rtol=0, atol=1e-14)
    pts = store.static.points
    np.testing.assert_allclose(g[0], np.sin(np.pi * pts[:, 0]) * np.sin(np.pi * pts[:, 1]),
                               atol=1e-14)


def test_fem_observations_over_time_are_the_sensor_rows_of_the_stored_fields(campaign):
    from hybrid.fem.model import FEMModel

    case, store = campaign
    c = load_case(case)
    names = c.observations.data_names()
    assert names[:2] == ["p0@0.04", "p1@0.04"] and names[-1] == "p3@0.2" and len(names) == 12
    mu, U = store.trajectories()
    L = store.static.observation_functionals
    idx = store.time_indices(store.observation_times)
    m = FEMModel(c, MPI.COMM_SELF)
    assert m.observation_names == names
    y = m.observe(mu[2])
    np.testing.assert_allclose(y, (U[2][idx] @ L.T).ravel(), rtol=0, atol=1e-13)
    s = m.solve(mu[2])
    assert s.u.shape == U[2].shape and s.qoi.shape == (11, 2)
    m.close()


def test_synth_writes_a_time_column_that_reads_back(campaign, tmp_path):
    case, store = campaign
    out = tmp_path / "obs.csv"
    mu = store.trajectories()[0][1]
    r = run_cli(["synth", case, "--mu", ",".join(repr(float(v)) for v in mu), "--noise", "0.01",
                 "--kind", "absolute", "--seed", "3", "--out", out])
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert lines[0] == "sensor,time,value,sigma" and lines[1].startswith("p0,0.04,")
    names = load_case(case).observations.data_names()
    obs = read_csv(out, names, require_all=True)
    assert list(obs.names) == names
    U = store.trajectories()[1][1]
    clean = (U[store.time_indices(store.observation_times)]
             @ store.static.observation_functionals.T).ravel()
    z = (obs.values - clean) / obs.sigma
    assert np.all(np.abs(z) < 5) and np.std(z) > 0.3     # noise of std 0.01 was added


def test_time_column_errors_name_file_and_line(tmp_path):
    from hybrid.inference.errors import DataError

    p = tmp_path / "d.csv"
    p.write_text("sensor,time,value,sigma\np0,0.1,1.0,0.1\np0,abc,1.0,0.1\n")
    with pytest.raises(DataError, match=r"d.csv:3: time 'abc' is not a number"):
        read_csv(p)
    p.write_text("sensor,time,value,sigma\np0,0.1,1.0,0.1\np0,0.1,2.0,0.1\n")
    with pytest.raises(DataError, match=r"d.csv:3: duplicate sensor 'p0@0.1'"):
        read_csv(p)
    p.write_text("sensor,time,value,sigma\np0,0.3,1.0,0.1\n")
    with pytest.raises(DataError, match="unknown sensor 'p0@0.3'"):
        read_csv(p, [observation_label("p0", 0.1)])


def test_resume_after_lost_samples_equals_a_fresh_campaign(campaign, tmp_path):
    import shutil

    case, store = campaign
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    for k in (1, 4):
        sample_path(copy, k).unlink()
    text = case.read_text().replace(f'store = "{store.path}"', f'store = "{copy}"')
    p = tmp_path / "c.toml"
    p.write_text(text)
    r = run_cli(["campaign", p])
    assert r.returncode == 0, r.stderr
    assert "2 solved now, 3 already in store" in r.stdout + r.stderr
    a, b = SnapshotStore(copy).trajectories(), store.trajectories()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-13)


def test_two_ranks_and_two_ranks_per_sample_equal_serial(campaign, tmp_path):
    case, store = campaign
    ref = store.trajectories()
    for G in (1, 2):
        text = case.read_text().replace(f'store = "{store.path}"',
                                        f'store = "{tmp_path / f"g{G}"}"')
        p = tmp_path / f"g{G}.toml"
        p.write_text(text)
        r = run_cli(["campaign", p, "--ranks-per-sample", G], ranks=2)
        assert r.returncode == 0, r.stderr
        got = SnapshotStore(tmp_path / f"g{G}")
        assert got.time == store.time
        mu, U = got.trajectories()
        np.testing.assert_array_equal(mu, ref[0])
        np.testing.assert_allclose(U, ref[1], rtol=0, atol=1e-12)


def test_store_refuses_bad_trajectories_and_time_records(campaign, tmp_path):
    import shutil

    import h5py

    _, store = campaign
    bad = tmp_path / "bad"
    shutil.copytree(store.path, bad)
    with h5py.File(sample_path(bad, 0), "r+") as f:
        u = f["u"][()]
        del f["u"]
        f["u"] = u[:-1]
    with pytest.raises(StoreError, match=r"s0000000.h5: sample field has shape \(10, 49\), "
                       r"the store has 11 output times × 49 DOFs"):
        SnapshotStore(bad).trajectories()
    m = json.loads((bad / "store.json").read_text())
    m["time"]["times"] = [0.0, 0.1, 0.1]
    (bad / "store.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="strictly increasing"):
        SnapshotStore(bad)
    m["time"]["times"] = store.times.tolist()
    m["time"]["observation_times"] = [0.05]
    (bad / "store.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="must be output times"):
        SnapshotStore(bad)


def test_fem_jacobian_over_time_matches_central_differences(campaign):
    """FEMModel.jacobian of a transient case: the tangent loop, rows at the observation times."""
    from hybrid.fem.model import FEMModel

    case, store = campaign
    m = FEMModel(load_case(case), MPI.COMM_SELF)
    mu = store.trajectories()[0][2]
    y, J = m.jacobian(mu)
    np.testing.assert_allclose(y, m.observe(mu), rtol=0, atol=1e-13)
    assert J.shape == (12, mu.size)
    for p in (0, 4, 9, 10):
        h = 1e-5 * max(1.0, abs(mu[p]))
        e = np.zeros_like(mu)
        e[p] = h
        fd = (m.observe(mu + e) - m.observe(mu - e)) / (2 * h)
        np.testing.assert_allclose(J[:, p], fd, rtol=1e-6, atol=1e-9 * np.abs(y).max())
    m.close()
