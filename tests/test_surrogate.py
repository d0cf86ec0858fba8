"""Surrogates end to end on synthetic stores: training, accuracy, artifact, query API, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid.errors import HybridError, ParameterError
from hybrid.surrogate import ExtrapolationWarning, Surrogate, SurrogateError
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.surrogate.pod import norms
from hybrid.surrogate.training import TrainingConfig, resolve_device
from tests import conftest_surrogate as cs
from tests.conftest_surrogate import make_store, space

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(width=24, depth=2, adam_epochs=200, lbfgs_iterations=1000, collocation=512,
             eval_every=25, threads=1)


@pytest.fixture(scope="session")
def fem2():
    return cs.BlockFEM(cells=16, blocks=2)


@pytest.fixture(scope="session")
def store2(tmp_path_factory, fem2):
    return cs.store2(tmp_path_factory.mktemp("store2"), fem2)


@pytest.fixture(scope="session")
def test_set2(fem2):
    return cs.held_out_set2(fem2)


def rel_l2(U, V, M):
    return norms(U - V, M) / norms(U, M)


@pytest.fixture(scope="module")
def podnn(store2, tmp_path_factory):
    s, report = build_surrogate(store2, BuildOptions(training=TrainingConfig(**SMALL)))
    path = s.save(tmp_path_factory.mktemp("sur") / "podnn")
    return s, report, path


@pytest.fixture(scope="module")
def galerkin(store2, tmp_path_factory):
    s, _ = build_surrogate(store2, BuildOptions(kind="galerkin"))
    return s, s.save(tmp_path_factory.mktemp("sur") / "galerkin")


# ----------------------------------------------------------------------------- accuracy
def test_small_podnn_beats_a_fixed_error_bound(podnn, test_set2, fem2, store2):
    """Physics-informed POD-NN from 36 snapshots, trained ~1 s: mean < 3e-3, max < 1e-2."""
    s, report, _ = podnn
    mu, U = test_set2
    e = rel_l2(U, s.field(mu), fem2.mass)
    assert e.mean() < 3e-3 and e.max() < 1e-2, (e.mean(), e.max())
    assert report["training_time_s"] < 60      # ~1 s alone; a loose guard, not a timing test
    # the same network without the physics-informed term is far worse (the gain is real)
    cfg = TrainingConfig(**{**SMALL, "physics_informed": False})
    s_data, _ = build_surrogate(store2, BuildOptions(training=cfg))
    e_data = rel_l2(U, s_data.field(mu), fem2.mass)
    assert e_data.mean() > 5 * e.mean()


def test_galerkin_surrogate_and_error_bound(galerkin, test_set2, fem2):
    s, _ = galerkin
    mu, U = test_set2
    F = s.field(mu)
    e = rel_l2(U, F, fem2.mass)
    assert e.max() < 1e-4
    true = norms(U - F, fem2.stiffness)                  # energy norm at μ̄ = 1
    bound = s.error_estimate(mu, relative=False)
    eff = bound / true
    assert eff.min() >= 1.0 - 1e-9 and eff.max() < 10.0
    rel = s.error_estimate(mu)
    np.testing.assert_allclose(rel, bound / norms(F, fem2.stiffness), rtol=1e-10)


def test_error_bound_holds_for_the_network(podnn, test_set2, fem2):
    s, _, _ = podnn
    mu, U = test_set2
    true = norms(U - s.field(mu), fem2.stiffness)
    eff = s.error_estimate(mu, relative=False) / true
    assert eff.min() >= 1.0 - 1e-9 and eff.max() < 10.0


# ----------------------------------------------------------------------------- artifact
def test_save_load_round_trip_is_bit_identical(podnn, tmp_path):
    s, _, path = podnn
    t = Surrogate.load(path)
    for g, arrays in s._arrays.items():
        for k, v in arrays.items():
            w = t._arrays[g][k]
            assert w.dtype == v.dtype and w.shape == v.shape and np.array_equal(v, w), (g, k)
    mu = space(2).sample(7, "random", 3)
    assert np.array_equal(s.predict(mu), t.predict(mu))
    assert np.array_equal(s.predict(mu[0]), t.predict(mu[0]))
    assert np.array_equal(s.qoi(mu), t.qoi(mu))
    # saving the loaded surrogate again gives byte-identical array files
    t.save(tmp_path / "again")
    for f in ("basis.safetensors", "reduced.safetensors", "network.safetensors"):
        assert (path / f).read_bytes() == (tmp_path / "again" / f).read_bytes()


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_or_mismatched_artifacts_are_refused(podnn, tmp_path):
    _, _, path = podnn
    p = _copy(path, tmp_path / "flip")
    blob = bytearray((p / "network.safetensors").read_bytes())
    blob[-3] ^= 0x01                                    # one bit of one weight
    (p / "network.safetensors").write_bytes(bytes(blob))
    with pytest.raises(SurrogateError, match=r"network\.safetensors: checksum mismatch"):
        Surrogate.load(p)

    p = _copy(path, tmp_path / "meta")
    meta = json.loads((p / "surrogate.json").read_text())
    meta["parameters"][0]["upper"] = 2.0                # widen a bound by hand
    (p / "surrogate.json").write_text(json.dumps(meta))
    with pytest.raises(SurrogateError, match="metadata checksum mismatch"):
        Surrogate.load(p)

    p = _copy(path, tmp_path / "missing")
    (p / "basis.safetensors").unlink()
    with pytest.raises(SurrogateError, match="missing"):
        Surrogate.load(p)

    (tmp_path / "empty").mkdir()
    with pytest.raises(SurrogateError, match="not a surrogate"):
        Surrogate.load(tmp_path / "empty")
    # errors are one line
    try:
        Surrogate.load(tmp_path / "empty")
    except SurrogateError as exc:
        assert "\n" not in str(exc) and isinstance(exc, HybridError)


def test_wrong_case_or_parameter_count_is_refused(podnn, tmp_path):
    from hybrid.core.case import parse_case
    from tests.conftest import small_case_text

    _, _, path = podnn
    case3 = parse_case(small_case_text(blocks=3, cells=12), tmp_path / "c3.toml")
    with pytest.raises(SurrogateError, match="surrogate has 4 parameters"):
        Surrogate.load(path, case=case3)
    case2 = parse_case(small_case_text(blocks=2, cells=12), tmp_path / "c2.toml")
    # same physics and parameters, but the case has none of the surrogate's sensors
    with pytest.raises(SurrogateError, match=r"surrogate has sensors \[twice_mean\]"):
        Surrogate.load(path, case=case2)
    s = Surrogate.load(path)
    s.check_store(s.meta["store"]["path"])               # the store it was trained on
    other = make_store(tmp_path / "other", cs.BlockFEM(cells=8, blocks=2),
                       space(2).sample(3, "sobol", 1))
    with pytest.raises(SurrogateError, match="store differs"):
        s.check_store(other)
    with pytest.raises(ParameterError, match="expected 4 values"):
        s.predict(np.ones(9) * 0.5)
    with pytest.raises(ParameterError, match="mu_2=1.5 is outside"):
        s.qoi([0.5, 0.5, 1.5, 0.5])


def test_writing_into_a_foreign_directory_is_refused(podnn, tmp_path):
    s, _, _ = podnn
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SurrogateError, match="refusing"):
        s.save(tmp_path / "other")


# ----------------------------------------------------------------------------- query API
def test_single_batch_field_and_qoi_are_consistent(podnn, store2):
    from hybrid.core.store import SnapshotStore

    s, _, _ = podnn
    static = SnapshotStore(store2).static
    mu = space(2).sample(5, "random", 8)
    C = s.predict(mu)
    assert C.shape == (5, s.n_modes)
    # single (numpy fast path) and batch differ by round-off amplified through the layers
    # (seen up to 1e-11 relative); a wrong scaling or layer would be O(1)
    tol = 1e-10 * np.abs(C).max()
    for i in range(5):
        np.testing.assert_allclose(s.predict(mu[i]), C[i], rtol=0, atol=tol)
        np.testing.assert_allclose(s.predict(list(mu[i])), C[i], rtol=0, atol=tol)
    F = s.field(mu)
    np.testing.assert_allclose(F, C @ s.modes, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(s.qoi(mu), F @ static.qoi_functionals.T, rtol=1e-12)
    np.testing.assert_allclose(s.observe(mu), F @ static.observation_functionals.T, rtol=1e-12)
    assert s.qoi(mu[0]).shape == (2,) and s.field(mu[0]).shape == (s.n_dofs,)
    assert np.isscalar(s.error_estimate(mu[0])) and s.error_estimate(mu).shape == (5,)


@pytest.mark.parametrize("which", ["podnn", "galerkin"])
def test_torch_in_differentiable_out(which, podnn, galerkin):
    s = podnn[0] if which == "podnn" else galerkin[0]
    mu = space(2).sample(3, "random", 4)
    t = torch.tensor(mu, requires_grad=True)
    q = s.qoi(t)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.float64
    np.testing.assert_allclose(q.detach().numpy(), s.qoi(mu), rtol=1e-10)   # round-off
    q[:, 0].sum().backward()
    h = 1e-6
    fd = np.array([[(s.qoi(m + h * e)[0] - s.qoi(m - h * e)[0]) / (2 * h)
                    for e in np.eye(4)] for m in mu])
    np.testing.assert_allclose(t.grad.numpy(), fd, rtol=1e-5, atol=1e-9)
    t32 = torch.tensor(mu[0], dtype=torch.float32)
    assert s.field(t32).dtype == torch.float32
    d = s.error_estimate(torch.tensor(mu))
    # the bound is the norm of a small residual: round-off differences of c (1e-11) are
    # amplified by cancellation (seen 7e-10); a wrong term would be O(1)
    np.testing.assert_allclose(d.numpy(), s.error_estimate(mu), rtol=1e-8)


def test_amplitude_network(store2, test_set2, fem2):
    """Outputs scaled by the one-mode Galerkin amplitude: all paths agree, gradients exact."""
    s, _ = build_surrogate(store2, BuildOptions(amplitude=True, training=TrainingConfig(
        **{**SMALL, "lbfgs_iterations": 300})))
    assert s.amplitude and s.meta["network"]["amplitude"]
    mu, U = test_set2
    assert rel_l2(U, s.field(mu), fem2.mass).mean() < 2e-2
    C = s.predict(mu[:4])
    for i in range(4):
        np.testing.assert_allclose(s.predict(mu[i]), C[i], rtol=0, atol=1e-12 * abs(C).max())
    t = torch.tensor(mu[:2], requires_grad=True)
    c = s.predict(t)
    np.testing.assert_allclose(c.detach().numpy(), C[:2], rtol=0, atol=1e-12 * abs(C).max())
    c[:, 0].sum().backward()
    h = 1e-6
    fd = [[(s.predict(m + h * e)[0] - s.predict(m - h * e)[0]) / (2 * h) for e in np.eye(4)]
          for m in mu[:2]]
    np.testing.assert_allclose(t.grad.numpy(), fd, rtol=1e-5, atol=1e-9)


def test_out_of_bounds_is_an_error_unless_extrapolating(podnn):
    s, _, _ = podnn
    mu = np.array([0.05, 0.5, 0.5, 0.5])
    with pytest.raises(ParameterError, match="mu_0=0.05 is outside its bounds"):
        s.predict(mu)
    with pytest.raises(ParameterError):
        s.field(torch.tensor(mu))
    with pytest.warns(ExtrapolationWarning, match="mu_0"):
        c = s.predict(mu, extrapolate=True)
    assert np.all(np.isfinite(c))
    s.extrapolate = True
    try:
        with pytest.warns(ExtrapolationWarning):
            s.qoi(np.vstack([mu, mu]))
    finally:
        s.extrapolate = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.predict(np.array([0.1, 1.0, 0.5, 0.5]))        # the bounds themselves are inside
    with pytest.raises(ParameterError, match="finite"):
        s.predict(np.array([np.nan, 0.5, 0.5, 0.5]))


BLOCKER = r"""
import importlib.abc, json, sys
BLOCKED = {"dolfinx", "dolfinx_solver", "mpi4py", "petsc4py", "ufl", "basix", "ffcx"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocker())
try:
    import dolfinx  # noqa
    raise SystemExit("blocker does not work")
except ImportError:
    pass
import numpy as np, torch
from hybrid.surrogate import Surrogate
s = Surrogate.load(sys.argv[1])
mu = np.array(json.loads(sys.argv[2]))
t = torch.tensor(mu, requires_grad=True)
s.qoi(t).sum().backward()
out = {"predict": s.predict(mu).tolist(), "single": s.predict(mu[0]).tolist(),
       "qoi": s.qoi(mu).tolist(), "estimate": s.error_estimate(mu).tolist(),
       "field": s.field(mu[0])[:50].tolist(), "grad": t.grad.tolist(),
       "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)}
print(json.dumps(out))
"""


def test_query_api_works_without_dolfinx_and_mpi(podnn):
    s, _, path = podnn
    mu = space(2).sample(3, "random", 21)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", BLOCKER, str(path), json.dumps(mu.tolist())],
                       capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["loaded"] == []
    assert out["predict"] == s.predict(mu).tolist()
    assert out["single"] == s.predict(mu[0]).tolist()
    assert out["qoi"] == s.qoi(mu).tolist()
    np.testing.assert_allclose(out["estimate"], s.error_estimate(mu), rtol=1e-14)
    assert out["field"] == s.field(mu[0])[:50].tolist()
    assert np.all(np.isfinite(out["grad"]))


# ----------------------------------------------------------------------------- training
def test_training_is_reproducible_and_single_warmup_works(store2):
    cfg = dict(SMALL, adam_epochs=60, lbfgs_iterations=60)
    a, _ = build_surrogate(store2, BuildOptions(training=TrainingConfig(**cfg, seed=3)))
    b, _ = build_surrogate(store2, BuildOptions(training=TrainingConfig(**cfg, seed=3)))
    c, _ = build_surrogate(store2, BuildOptions(training=TrainingConfig(**cfg, seed=4)))
    for k, v in a._arrays["network"].items():
        assert np.array_equal(v, b._arrays["network"][k]), k
    assert not np.array_equal(a._arrays["network"]["members.0.layers.0.weight"],
                              c._arrays["network"]["members.0.layers.0.weight"])
    w, _ = build_surrogate(store2, BuildOptions(training=TrainingConfig(
        **cfg, precision="single-warmup")))
    assert all(v.dtype != np.float32 for v in w._arrays["network"].values())
    assert w.meta["metrics"]["surrogate_error_mean"] < 0.05


def test_device_selection():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SurrogateError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(SurrogateError, match="not supported|unknown device"):
        resolve_device("tpu")


def test_ensemble_spread_for_a_non_affine_store(tmp_path, fem2):
    mu = space(2).sample(30, "sobol", 5)
    store = make_store(tmp_path / "na", fem2, mu, affine=False)
    cfg = TrainingConfig(**{**SMALL, "members": 3, "lbfgs_iterations": 150})
    s, rep = build_surrogate(store, BuildOptions(training=cfg))
    assert not s.meta["affine"] and s.estimator is None and s.meta["pod"]["inner_product"] == "h1"
    q = space(2).sample(6, "random", 1)
    members = s.members_predict(q)
    assert members.shape == (3, 6, s.n_modes)
    np.testing.assert_allclose(members.mean(axis=0), s.predict(q), rtol=1e-10, atol=1e-14)
    G = s.gram
    d = members - members.mean(axis=0)
    expect = np.sqrt(np.einsum("kbi,ij,kbj->b", d, G, d) / 3) / np.sqrt(
        np.einsum("bi,ij,bj->b", members.mean(0), G, members.mean(0)))
    np.testing.assert_allclose(s.error_estimate(q), expect, rtol=1e-10)
    assert np.all(expect > 0)
    with pytest.raises(SurrogateError, match="needs an affine model"):
        build_surrogate(store, BuildOptions(kind="galerkin"))
    one, _ = build_surrogate(store, BuildOptions(training=TrainingConfig(
        **{**SMALL, "lbfgs_iterations": 20})))
    with pytest.raises(SurrogateError, match="not an ensemble"):
        one.error_estimate(q)


DDP_SCRIPT = r"""
import sys, numpy as np, torch
from hybrid.surrogate.build import BuildOptions, build_surrogate
from hybrid.surrogate.training import TrainingConfig
torch.set_num_threads(1)
cfg = TrainingConfig(width=16, depth=2, adam_epochs=20, lbfgs_iterations=20, collocation=256,
                     eval_every=10, threads=1)
s, rep = build_surrogate(sys.argv[1], BuildOptions(training=cfg))
import os
if int(os.environ.get("RANK", "0")) == 0:
    np.savez(sys.argv[2], world=rep.get("device") and s.meta["training"]["world_size"],
             **s._arrays["network"])
"""


def test_distributed_data_parallel_matches_single_process(store2, tmp_path):
    """torchrun with 2 CPU processes (Gloo): sharded loss, same steps as one process."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        raise AssertionError("torchrun is missing from the environment")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r1 = subprocess.run([sys.executable, str(script), str(store2), str(tmp_path / "one.npz")],
                        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script),
                         str(store2), str(tmp_path / "two.npz")],
                        capture_output=True, text=True, env=env, timeout=180, cwd=ROOT)
    assert r2.returncode == 0, r2.stderr[-3000:]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    for k in one.files:
        if k != "world":
            np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)


# ----------------------------------------------------------------------------- CLI
def test_train_and_query_commands(store2, tmp_path, capsys):
    import typer
    from typer.testing import CliRunner

    from hybrid.cli.surrogate import query_command, train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("query")(query_command)
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["train", str(store2), "--out", str(out), "--epochs", "50",
                            "--lbfgs", "100", "--width", "16", "--depth", "2",
                            "--collocation", "256", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "surrogate pod-nn" in r.output and "validation error" in r.output
    for f in ("training.png", "modes.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = Surrogate.load(out)
    r = runner.invoke(app, ["query", str(out), "--mu", "0.2,0.4,0.6,0.8",
                            "--mu", "mu_0=1,mu_1=0.1,mu_2=0.5,mu_3=0.5", "--coefficients",
                            "--field", str(tmp_path / "u.npy")])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    mu = np.array([[0.2, 0.4, 0.6, 0.8], [1, 0.1, 0.5, 0.5]])
    np.testing.assert_allclose([list(x["qoi"].values()) for x in rows], s.qoi(mu), rtol=1e-14)
    np.testing.assert_allclose([x["error_estimate"]["relative_energy_norm_bound"]
                                for x in rows], s.error_estimate(mu), rtol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "u.npy"), s.field(mu), rtol=1e-14)
    r = runner.invoke(app, ["query", str(out), "--mu", "0.2,0.4,0.6,1.8"])
    assert isinstance(r.exception, ParameterError)
    r = runner.invoke(app, ["train", str(store2), "--out", str(tmp_path / "g"), "--kind",
                            "galerkin", "--no-progress"])
    assert r.exit_code == 0 and "surrogate galerkin" in r.output
