"""Campaigns under ``mpirun -n 2`` (run as subprocesses from the serial test session)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from hybrid.core.case import load_case
from hybrid.core.store import SnapshotStore, read_sample

from .conftest import BIN, MPIRUN, ROOT, run_cli


def serial_solution(case_path: Path, mu: np.ndarray) -> np.ndarray:
    """An independent in-process serial solve, gathered in store ordering."""
    from mpi4py import MPI

    import hybrid.fem  # noqa: F401
    from hybrid.fem.model_problem import ModelProblem

    p = ModelProblem(load_case(case_path), MPI.COMM_SELF)
    assert p.solve(mu).ok
    u = p.ordering.gather_function(p.u)
    p.destroy()
    return u


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_campaign_resume_grow_and_groups(write_case, tmp_path):
    case = write_case(cells=12, blocks=2, samples=6)
    r = run_cli(["campaign", case, "--no-progress"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert "6/6 ok, 0 failed" in r.stdout and "6 solved now" in r.stdout
    store = SnapshotStore(tmp_path / "store")
    mu, U = store.snapshots()
    assert U.shape == (6, 13 * 13)
    plan = store.plan_points()
    assert np.array_equal(mu, plan)
    for i in (0, 5):  # the campaign's fields equal an independent serial solve
        assert np.allclose(U[i], serial_solution(case, mu[i]), rtol=0, atol=1e-13)
    # QoIs as stored equal the stored functional applied to the stored field
    _, Q = store.qois()
    assert np.allclose(Q, U @ store.static.qoi_functionals.T, rtol=1e-12)
    assert (tmp_path / "store" / "paraview" / "snapshots.xdmf").is_file()
    before = {p.name: digest(p) for p in store.sample_files()}

    # same command again: nothing recomputed, nothing rewritten
    r = run_cli(["campaign", case, "--no-progress"], ranks=2)
    assert r.returncode == 0 and "0 solved now, 6 already in store" in r.stdout
    assert {p.name: digest(p) for p in store.sample_files()} == before

    # grow the campaign: the Sobol plan keeps its prefix, only new samples are solved
    r = run_cli(["campaign", case, "--no-progress", "--samples", "9"], ranks=2)
    assert r.returncode == 0 and "3 solved now, 6 already" in r.stdout, r.stdout
    assert {p.name: digest(p) for p in store.sample_files()[:6]} == before
    info = json.loads(run_cli(["info", tmp_path / "store", "--json"]).stdout)
    assert info["ok"] == 9 and info["planned"] == 9 and info["failed"] == 0

    # one group of two ranks (domain decomposition) gives the same snapshots
    r = run_cli(["campaign", case, "--no-progress", "--samples", "9", "--ranks-per-sample",
                 "2", "--store", tmp_path / "store_g2"], ranks=2)
    assert r.returncode == 0, r.stderr
    s2 = SnapshotStore(tmp_path / "store_g2")
    assert {s.ranks for s in s2.samples()} == {2}
    assert np.allclose(s2.snapshots()[1], store.snapshots()[1], rtol=0, atol=1e-13)


def test_failed_samples_are_recorded(write_case, tmp_path):
    case = write_case(cells=24, blocks=2, samples=4,
                      petsc='ksp_type = "cg"\npc_type = "none"\nksp_max_it = 2\nksp_rtol = 1e-12')
    r = run_cli(["campaign", case, "--no-progress"], ranks=2)
    assert r.returncode == 3, r.stderr
    assert "0/4 ok, 4 failed (DIVERGED_MAX_IT)" in r.stdout
    samples = SnapshotStore(tmp_path / "store").samples()
    assert [s.status for s in samples] == ["failed"] * 4
    assert all(s.reason == "DIVERGED_MAX_IT" and s.u is None for s in samples)


def test_user_errors_are_one_line(write_case, tmp_path):
    case = write_case(cells=12, blocks=2, samples=2)
    r = run_cli(["campaign", case, "--ranks-per-sample", "3", "--no-progress"], ranks=2)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "hybrid: error: --ranks-per-sample 3 must be >= 1 and divide the number of ranks (2)"]
    assert run_cli(["campaign", case, "--no-progress"], ranks=2).returncode == 0
    # a different case pointed at the same store is refused and changes nothing
    other = write_case("other.toml", cells=24, blocks=2, samples=2)
    before = {p.name: digest(p) for p in (tmp_path / "store").rglob("*") if p.is_file()}
    r = run_cli(["campaign", other, "--no-progress"], ranks=2)
    assert r.returncode == 2 and "different case (mesh differ)" in r.stderr
    assert "Traceback" not in r.stderr
    after = {p.name: digest(p) for p in (tmp_path / "store").rglob("*") if p.is_file()}
    assert before == after
    # a directory that is not a store is never written into
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = run_cli(["campaign", case, "--store", foreign, "--no-progress"])
    assert r.returncode == 2 and "is not a snapshot store" in r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    # a second campaign on a store that is being written is refused
    import fcntl

    with open(tmp_path / "store" / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        r = run_cli(["campaign", case, "--no-progress"])
    assert r.returncode == 2 and "another campaign is writing to this store" in r.stderr
    # a corrupted sample file is named
    victim = sorted((tmp_path / "store" / "samples").glob("s*.h5"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    r = run_cli(["info", tmp_path / "store"])
    assert r.returncode == 2 and victim.name in r.stderr and len(r.stderr.splitlines()) == 1


def _count(d: Path) -> int:
    return len(list(d.glob("s*.h5"))) if d.is_dir() else 0


def _run_and_kill(case: Path, samples_dir: Path, at_least: int, n: int) -> None:
    """Start a 2-rank campaign and SIGKILL every process of it once ≥ at_least samples exist."""
    proc = subprocess.Popen(
        [str(MPIRUN), "-n", "2", str(BIN / "hybrid"), "campaign", str(case), "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.time()
    try:
        while _count(samples_dir) < at_least:
            assert proc.poll() is None, "campaign ended before it could be killed"
            assert time.time() - t0 < 120
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.2)
    assert _count(samples_dir) < n, "the kill came too late to test anything"


def test_sigkill_at_any_moment_then_resume(write_case, tmp_path):
    n = 300
    case = write_case(cells=96, blocks=2, samples=n)
    samples_dir = tmp_path / "store" / "samples"
    _run_and_kill(case, samples_dir, 12, n)
    first = {p.name: digest(p) for p in samples_dir.glob("s*.h5")}
    for p in samples_dir.glob("s*.h5"):  # every committed file is complete
        assert read_sample(p).ok
    _run_and_kill(case, samples_dir, len(first) + 40, n)
    second = {p.name: digest(p) for p in samples_dir.glob("s*.h5")}
    assert all(second[k] == v for k, v in first.items())  # nothing recomputed or rewritten

    r = run_cli(["campaign", case, "--no-progress"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert f"{n}/{n} ok" in r.stdout and f"{n - len(second)} solved now" in r.stdout
    final = {p.name: digest(p) for p in samples_dir.glob("s*.h5")}
    assert len(final) == n and all(final[k] == v for k, v in second.items())
    assert not list((tmp_path / "store").rglob(".tmp-*"))
    assert not (tmp_path / "store" / "claims").exists()
    store = SnapshotStore(tmp_path / "store")
    mu, U = store.snapshots()
    assert np.array_equal(mu, store.plan_points())
    rng = np.random.default_rng(0)
    for i in rng.choice(n, 3, replace=False):
        assert np.allclose(U[i], serial_solution(case, mu[i]), rtol=0, atol=1e-13)
    runs = json.loads((tmp_path / "store" / "campaign.json").read_text())["runs"]
    assert runs[-1]["solved"] == n - len(second)


@pytest.mark.parametrize("mu", ["0.2,0.4,0.6,0.8"])
def test_solve_writes_xdmf(write_case, tmp_path, mu):
    case = write_case(cells=12, blocks=2)
    r = run_cli(["solve", case, "--mu", mu, "--out", tmp_path / "sol"], ranks=2)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "sol" / "solution.json").read_text())
    assert summary["status"] == "ok" and summary["ranks"] == 2
    u = serial_solution(case, np.array([0.2, 0.4, 0.6, 0.8]))
    import h5py  # the XDMF's heavy data holds the same field (as a set of values)

    with h5py.File(tmp_path / "sol" / "solution.h5") as f:
        vals = [f["Function/u"][k][()] for k in f["Function/u"]][0].ravel()
    assert np.allclose(np.sort(vals), np.sort(u), atol=1e-13)
    mean = summary["qoi"]["mean"]
    st = SnapshotStore  # noqa: F841
    assert mean > 0
