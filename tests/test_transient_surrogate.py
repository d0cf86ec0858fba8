"""Transient surrogates through the Surrogate API: built from a store with a time axis,
saved and loaded, checked against the FEM trajectories they were not trained on.

The Galerkin time-stepping surrogate with every mode reproduces the FEM trajectories to
round-off; with fewer modes its bound holds at every output time and every observation's
certified interval contains the FEM value. The (μ, t) network and the latent ODE are checked
against the held-out FEM trajectories with tolerances a broken time axis, basis or initial
state would fail. Inference on a transient case recovers the truth within the noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybrid.core.store import SnapshotStore

from .conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """cases/heat_block_2x2.toml on an 8×8 mesh: 4 log-scaled conductivities, 24 trajectories
    of 21 output times, 4 sensors × 20 observation times."""
    tmp = tmp_path_factory.mktemp("transient_surrogate")
    text = (ROOT / "cases/heat_block_2x2.toml").read_text().replace("cells = 20", "cells = 8")
    text = text.replace("samples = 128", "samples = 24")
    text = text.replace('store = "runs/heat_block_2x2/store"', f'store = "{tmp / "store"}"')
    case = tmp / "hb.toml"
    case.write_text(text)
    r = run_cli(["campaign", case])
    assert r.returncode == 0, r.stderr
    return case, SnapshotStore(tmp / "store")


def _build(store, kind="galerkin", **kw):
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig

    tc = kw.pop("training", {})
    cfg = TrainingConfig(validation_fraction=0.25, seed=0, progress=False, device="cpu",
                         threads=1, **tc)
    return build_surrogate(store.path, BuildOptions(kind=kind, training=cfg, **kw))


def _m_norm(M, e):
    return np.sqrt(np.einsum("...i,...i->...", e, (M @ e.reshape(-1, e.shape[-1]).T).T
                             .reshape(e.shape)))


def test_full_basis_galerkin_reproduces_the_fem_trajectories(store):
    _, st = store
    sur, rep = _build(st, modes=st.n_dofs, energy=None)
    mu, U = st.trajectories()
    vi = np.array(sur.meta["store"]["validation_indices"])
    V = sur.field(mu[vi])
    assert V.shape == U[vi].shape
    assert np.abs(V - U[vi]).max() <= 1e-9 * np.abs(U).max()
    assert rep["metrics"]["surrogate_error_max"] < 1e-9


def test_galerkin_bound_and_certified_observations_hold_on_held_out_trajectories(store):
    _, st = store
    sur, rep = _build(st, modes=4)
    mu, U = st.trajectories()
    M = st.static.mass
    L = st.static.observation_functionals
    idx = st.time_indices(st.observation_times)
    vi = sur.meta["store"]["validation_indices"]
    assert rep["metrics"]["bound_effectivity_min"] >= 1.0
    worst = []
    for s in vi:
        err = _m_norm(M, U[s] - sur.field(mu[s]))
        d = sur.error_estimate(mu[s], relative=False)
        assert d.shape == (st.times.size,)
        scale = _m_norm(M, U[s]).max()
        assert np.all(d >= err - 1e-13 * scale), (d, err)   # t0: both are round-off
        worst.append(err.max())
        y, delta = sur.observe_with_bound(mu[s])
        y_h = (U[s][idx] @ L.T).ravel()
        np.testing.assert_allclose(y, sur.observe(mu[s]), rtol=0, atol=1e-14)
        assert np.all(np.abs(y - y_h) <= delta + 1e-13 * np.abs(y_h).max())
    assert max(worst) > 1e-8            # six modes do not reproduce the FEM: the test bites
    rel = sur.error_estimate(mu[vi[0]])
    np.testing.assert_allclose(rel, sur.error_estimate(mu[vi[0]], relative=False)
                               / _m_norm(M, sur.field(mu[vi[0]])), rtol=1e-10)


def test_saved_surrogate_answers_the_same_without_the_full_matrices(store, tmp_path):
    from hybrid.surrogate import Surrogate
    from hybrid.surrogate.transient import TransientSurrogate

    case, st = store
    sur, _ = _build(st, modes=8)
    sur.save(tmp_path / "s")
    back = Surrogate.load(tmp_path / "s", case=case)
    assert isinstance(back, TransientSurrogate) and back.kind == "galerkin-time"
    mu = st.trajectories()[0][:3]
    np.testing.assert_array_equal(back.predict(mu), sur.predict(mu))
    np.testing.assert_array_equal(back.error_estimate(mu[0]), sur.error_estimate(mu[0]))
    np.testing.assert_array_equal(back.qoi(mu[1], times=[0.1, 0.2]),
                                  sur.qoi(mu[1])[back.time_indices([0.1, 0.2])])
    assert back.observation_names[:2] == ["p0@0.01", "p1@0.01"]
    from safetensors.numpy import load_file

    red = load_file(tmp_path / "s" / "reduced.safetensors")
    big = [k for k, v in red.items() if sum(d >= st.n_dofs - 1 for d in v.shape) >= 2]
    assert not big, big                 # no full-order matrix is stored, only reduced ones


def test_query_and_info_in_a_process_without_dolfinx(store, tmp_path):
    import subprocess
    import sys

    _, st = store
    sur, _ = _build(st, modes=8)
    sur.save(tmp_path / "s")
    mu = st.trajectories()[0][0]
    code = f"""
import sys, json, numpy as np
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('dolfinx', 'ufl', 'petsc4py', 'mpi4py', 'basix', 'ffcx'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from hybrid.surrogate import Surrogate
s = Surrogate.load({str(tmp_path / 's')!r})
print(json.dumps(s.observe(np.array({mu.tolist()!r})).tolist()))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout), sur.observe(mu), rtol=0, atol=1e-14)


def test_cli_train_and_query_a_transient_store(store, tmp_path):
    _, st = store
    out = tmp_path / "sur"
    r = run_cli(["train", st.path, "--out", out, "--kind", "galerkin", "--modes", "8",
                 "--no-plots"])
    assert r.returncode == 0, r.stderr
    assert "trajectories of 21 output times" in r.stdout and "effectivity" in r.stdout
    mu = st.trajectories()[0][2]
    r = run_cli(["query", out, "--mu", ",".join(repr(float(v)) for v in mu)])
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["times"] == st.times.tolist()
    q = np.array([row["qoi"][n] for n in st.qoi_names]).T
    np.testing.assert_allclose(q, st.trajectories()[1][2] @ st.static.qoi_functionals.T,
                               rtol=0, atol=2e-2 * np.abs(q).max())
    assert len(row["error_estimate"]["relative_l2_bound"]) == 21


@pytest.mark.parametrize("kind,factor", [("pod-nn", 0.2), ("latent", 0.5)])
def test_network_kinds_learn_the_held_out_trajectories(store, kind, factor):
    """Both network kinds beat the best constant predictor (the mean training trajectory) on
    the held-out trajectories (the latent ODE, data-hungry, by less with 18 trajectories),
    and start from the exact initial state."""
    from hybrid.surrogate.spacetime import relative_spacetime_errors

    _, st = store
    sur, rep = _build(st, kind=kind, modes=8,
                      training={"width": 32, "depth": 2, "adam_epochs": 200,
                                "lbfgs_iterations": 200, "collocation": 64 * 21})
    assert sur.kind == {"pod-nn": "pod-nn-time", "latent": "latent-ode"}[kind]
    mu, U = st.trajectories()
    ti = sur.meta["store"]["train_indices"]
    vi = sur.meta["store"]["validation_indices"]
    mean = np.broadcast_to(U[ti].mean(axis=0), U[vi].shape)
    base = relative_spacetime_errors(U[vi], mean, st.times, st.static.mass).mean()
    m = rep["metrics"]
    assert m["surrogate_error_mean"] < factor * base, (m, base)
    assert m["surrogate_error_mean"] >= m["projection_error_mean"] * (1 - 1e-9)
    V = sur.field(mu[vi[0]])
    # the initial state is exact (its affine terms are in the basis), not learned
    assert np.abs(V[0] - U[vi[0]][0]).max() <= 1e-12 * np.abs(U[vi[0]][0]).max()


def test_transient_map_recovers_the_truth_within_the_noise(store, tmp_path):
    case, st = store
    sur, _ = _build(st, modes=20)
    sur.save(tmp_path / "s")
    truth = "0.2,0.35,0.6,0.8"
    data = tmp_path / "obs.csv"
    r = run_cli(["synth", case, "--mu", truth, "--noise", "0.002", "--kind", "absolute",
                 "--seed", "2", "--out", data])
    assert r.returncode == 0, r.stderr
    r = run_cli(["infer", case, "--surrogate", tmp_path / "s", "--data", data, "--method",
                 "map", "--out", tmp_path / "map", "--no-enrich", "--no-field", "--no-plots"])
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "map" / "summary.json").read_text())
    names = s["parameters"]
    est = np.array([s["estimate"][n] for n in names])
    std = np.array([s["std"][n] for n in names])
    z = (est - np.array([float(v) for v in truth.split(",")])) / std
    assert s["fem"]["solves"] >= 1 and s["map"]["converged"], s["map"]
    assert np.all(np.abs(z) < 4.5), z          # every parameter within the noise


def test_coupler_certifies_whole_trajectories(store, tmp_path):
    """A galerkin-time answer is accepted only when ν_i Δ(t_j) ≤ tol σ at every observation
    time, and then it is within tol σ of the FEM; below that the FEM answers."""
    import hybrid.fem  # noqa: F401
    from hybrid.core.case import load_case
    from hybrid.fem import MPI
    from hybrid.fem.model import FEMModel
    from hybrid.workflows.coupler import Coupler

    case, st = store
    sur, _ = _build(st, modes=12)
    fem = FEMModel(load_case(case), MPI.COMM_SELF)
    mu = st.trajectories()[0][sur.meta["store"]["validation_indices"][0]]
    y_fem = fem.observe(mu)
    _, d = sur.observe_with_bound(mu)
    sigma = np.full(y_fem.size, 1e-3)
    loose = 2.0 * float(np.max(d / sigma))      # the bound passes at this tolerance
    c = Coupler(sur, fem, sigma=sigma, tol=loose, reduced_basis=False)
    a = c.evaluate(mu)
    assert a.source == "surrogate" and a.certified and a.basis == "bound"
    assert np.all(np.abs(a.y - y_fem) <= loose * sigma)
    c = Coupler(sur, fem, sigma=sigma, tol=0.25 * loose, store=st.path, enrich=True)
    a = c.evaluate(mu)
    assert a.source == "fem"
    np.testing.assert_allclose(a.y, y_fem, rtol=0, atol=1e-13)
    assert c.report()["basis"] == "bound" and c.report()["levels"] == ["surrogate", "fem"]
    k = c.committed[0]        # the FEM trajectory went into the store, whole
    s = [x for x in SnapshotStore(st.path).samples(field=True) if x.index == k][0]
    assert s.u.shape == (st.times.size, st.n_dofs)
    (st.path / "samples" / f"s{k:07d}.h5").unlink()
    fem.close()


def test_umbridge_model_of_a_transient_surrogate_serves_flattened_trajectories(store):
    from hybrid.serve.models import SurrogateModel

    _, st = store
    sur, _ = _build(st, modes=8)
    m = SurrogateModel(sur)
    mu = st.trajectories()[0][1]
    obs, qoi = m([mu.tolist()], {})
    np.testing.assert_array_equal(obs, sur.observe(mu))
    np.testing.assert_array_equal(np.reshape(qoi, (st.times.size, -1)), sur.qoi(mu))
    assert m.output_names[1][1][:2] == ["mean@0", "block_mean_0@0"]
    assert not m.supports_gradient() and not m.supports_apply_jacobian()
