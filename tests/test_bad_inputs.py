"""Bad input across every verb and the Python API: refused cleanly, nothing lost.

Each command-line case asserts the exit code, one line ``hybrid: error: …`` naming what is
wrong and where, no traceback, and that every file that existed before is byte-identical
afterwards (and, for a refused command, that nothing new was written). A read-only
location and a full disk are real tmpfs mounts (CI runs as root); where mounting is not
allowed they are skipped with that reason. A campaign stopped by SIGTERM stops cleanly and
resumes to completion.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hybrid.core.examples import case_text

from .conftest import BIN, MPIRUN, ROOT, run_cli

MU = "0.3,0.5,0.7,0.4"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small case with sensors, its store, a surrogate and a data file."""
    from hybrid.core.case import load_case
    from hybrid.fem import MPI
    from hybrid.fem.model import FEMModel
    from hybrid.inference import synthesize
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.workflows.campaign import run_campaign

    root = tmp_path_factory.mktemp("bad")
    case = root / "case.toml"
    case.write_text(case_text(name="tb_bad", cells=8, blocks=2, samples=4, seed=1, grid=2,
                              store=str(root / "store")))
    c = load_case(case)
    assert run_campaign(c, comm=MPI.COMM_SELF, progress=False, paraview=False).failed == 0
    sur = build_surrogate(c.store, BuildOptions(kind="galerkin"))[0]
    sur.save(root / "sur")
    fem = FEMModel(c, MPI.COMM_SELF)
    y = fem.observe(np.array([0.3, 0.5, 0.7, 0.4]))
    fem.close()
    obs = synthesize(y, 0.01, "relative", seed=1, names=c.observations.names())
    obs.meta["case"] = "tb_bad"
    obs.to_csv(root / "obs.csv")
    return root


def _copy(world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "w"
    shutil.copytree(world, dst)
    text = (dst / "case.toml").read_text().replace(str(world / "store"), str(dst / "store"))
    (dst / "case.toml").write_text(text)
    return dst


def _refused(r, *needles, code: int = 2):
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hybrid: error: "), lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _variant(w: Path, name: str, old: str, new: str) -> Path:
    p = w / name
    p.write_text((w / "case.toml").read_text().replace(old, new))
    return p


def _edit(w: Path, kind: str) -> list:
    """Damage w's store or files in one way; return the hybrid arguments and the needles."""
    st = w / "store"
    case = w / "case.toml"
    if kind == "manifest_list":
        (st / "store.json").write_text("[]")
        return [["info", st], ["manifest is not a JSON object"]]
    if kind == "manifest_no_parameters":
        m = json.loads((st / "store.json").read_text())
        del m["parameters"]
        (st / "store.json").write_text(json.dumps(m))
        return [["train", st, "--out", w / "s2", "--kind", "galerkin"], ["lacks 'parameters'"]]
    if kind == "manifest_truncated":
        t = (st / "store.json").read_text()
        (st / "store.json").write_text(t[: len(t) // 2])
        return [["campaign", case, "--no-progress"], ["manifest is corrupted"]]
    if kind == "plan_truncated":
        t = (st / "plan.json").read_text()
        (st / "plan.json").write_text(t[:5])
        return [["campaign", case, "--no-progress"], ["plan.json", "corrupted"]]
    if kind == "stray_sample":
        shutil.copy(st / "samples" / "s0000000.h5", st / "samples" / "s_backup.h5")
        return [["train", st, "--out", w / "s2", "--kind", "galerkin"],
                ["s_backup.h5", "not a sample file name"]]
    if kind == "stray_sample_campaign":
        shutil.copy(st / "samples" / "s0000000.h5", st / "samples" / "s_backup.h5")
        return [["campaign", case, "--no-progress"], ["s_backup.h5"]]
    if kind == "wrong_length":
        with h5py.File(st / "samples" / "s0000001.h5", "r+") as f:
            u = f["u"][()]
            del f["u"]
            f.create_dataset("u", data=u[:-3])
        return [["train", st, "--out", w / "s2", "--kind", "galerkin"],
                ["s0000001.h5", "field has"]]
    if kind == "nan_sample":
        with h5py.File(st / "samples" / "s0000002.h5", "r+") as f:
            f["u"][3] = np.nan
        return [["train", st, "--out", w / "s2", "--kind", "galerkin"],
                ["s0000002.h5", "non-finite"]]
    if kind == "no_manifest_other_mesh":
        (st / "store.json").unlink()
        other = _variant(w, "other.toml", "cells = 8", "cells = 10")
        return [["campaign", other, "--no-progress"], ["store.json is missing"]]
    if kind == "other_case_store":
        other = _variant(w, "other.toml", "cells = 8", "cells = 10")
        return [["campaign", other, "--no-progress"], ["different case", "mesh"]]
    raise KeyError(kind)


STORE_DAMAGE = ["manifest_list", "manifest_no_parameters", "manifest_truncated",
                "plan_truncated", "stray_sample", "stray_sample_campaign", "wrong_length",
                "nan_sample", "no_manifest_other_mesh", "other_case_store"]


@pytest.mark.parametrize("kind", STORE_DAMAGE)
def test_damaged_or_foreign_store_is_refused_and_left_alone(world, tmp_path, kind):
    w = _copy(world, tmp_path)
    args, needles = _edit(w, kind)
    before = _tree(w)
    _refused(run_cli(args), *needles)
    assert _tree(w) == before


def _case_cli(w: Path):
    """(name, args, needles) of refused commands that need no damage to the store."""
    case, st, sur, obs = w / "case.toml", w / "store", w / "sur", w / "obs.csv"
    (w / "afile").write_text("x")
    (w / "adir").mkdir(exist_ok=True)
    (w / "adir" / "keep.txt").write_text("keep")
    bad_ksp = _variant(w, "ksp.toml", 'ksp_type = "preonly"', 'ksp_type = "nope"')
    rtoll = _variant(w, "rtoll.toml", 'pc_type = "lu"', 'pc_type = "lu"\nksp_rtoll = 1e-9')
    inf = _variant(w, "inf.toml", "mu_0 = { lower = 0.1, upper = 1.0 }",
                   "mu_0 = { lower = 0.1, upper = inf }")
    no_obs = _variant(w, "noobs.toml", "[observations]\ngrid = 2", "")
    other_mesh = _variant(w, "mesh.toml", "cells = 8", "cells = 12")
    outside = _variant(w, "outside.toml", "grid = 2", "grid = 2\npoints = [[2.0, 2.0]]")
    outside.write_text(outside.read_text().replace(f'store = "{st}"', f'store = "{w}/new"'))
    (w / "broken.msh").write_bytes((ROOT / "meshes" / "unit_square_3x3.msh").read_bytes()[:300])
    gm = (ROOT / "cases" / "thermal_block_gmsh.toml").read_text()
    gm = gm.replace('file = "../meshes/unit_square_3x3.msh"', 'file = "broken.msh"')
    (w / "gmsh.toml").write_text(gm.replace('store = "', f'store = "{w}/new" # "', 1))
    csv = obs.read_text()
    (w / "other_case.csv").write_text(csv.replace("# case: tb_bad", "# case: elsewhere"))
    lines = csv.splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.startswith("p0,"))
    tiny = lines.copy()
    tiny[row] = "p0,0.5,1e-300"
    (w / "tiny.csv").write_text("\n".join(tiny) + "\n")
    huge = lines.copy()
    huge[row] = "p0,1e308,0.01"
    (w / "huge.csv").write_text("\n".join(huge) + "\n")
    unknown = lines.copy()
    unknown[row] = "q9,0.5,0.01"
    (w / "unknown.csv").write_text("\n".join(unknown) + "\n")
    inf_args = ["--surrogate", sur, "--data", obs]
    return [
        ("campaign samples 0", ["campaign", case, "--samples", "0"], ["--samples must be >= 1"]),
        ("campaign samples huge", ["campaign", case, "--samples", "1000000000000"],
         ["exceeds the limit"]),
        ("campaign ranks per sample", ["campaign", case, "-g", "3"], ["--ranks-per-sample 3"]),
        ("campaign store is a file", ["campaign", case, "--store", w / "afile"],
         ["afile", "not a directory"]),
        ("campaign foreign dir", ["campaign", case, "--store", w / "adir"],
         ["adir", "not a snapshot store"]),
        ("campaign unknown ksp", ["campaign", bad_ksp, "--store", w / "s_ksp",
                                  "--no-progress"],
         ["PETSc refused", "nope"]),
        ("campaign misspelled option", ["campaign", rtoll, "--store", w / "s_rtoll",
                                        "--no-progress"],
         ["ksp_rtoll", "never used"]),
        ("campaign infinite bound", ["campaign", inf], ["inf.toml", "finite"]),
        ("campaign sensor outside", ["campaign", outside, "--no-progress"],
         ["sensor", "outside the mesh"]),
        ("campaign corrupt msh", ["campaign", w / "gmsh.toml", "--no-progress"],
         ["broken.msh", "cannot read mesh"]),
        ("campaign missing case", ["campaign", w / "nope.toml"], ["nope.toml"]),
        ("solve out is a file", ["solve", case, "--mu", MU, "--out", w / "afile"],
         ["afile", "not a directory"]),
        ("solve out exists", ["solve", case, "--mu", MU, "--out", w / "adir"],
         ["adir", "exists", "--force"]),
        ("solve duplicate mu", ["solve", case, "--mu", "mu_0=0.5,mu_0=0.9,mu_1=0.5,"
                                "mu_2=0.5,mu_3=0.5"], ["mu_0", "more than once"]),
        ("solve empty field", ["solve", case, "--mu", "0.5,,0.5,0.5,0.5"], ["empty value"]),
        ("solve out of bounds", ["solve", case, "--mu", "0.5,0.5,0.5,5"],
         ["mu_3=5", "outside"]),
        ("solve wrong count", ["solve", case, "--mu", "0.5,0.5"], ["expected 4 values"]),
        ("solve not numbers", ["solve", case, "--mu", "a,b,c,d"], ["cannot read"]),
        ("info not a store", ["info", w / "adir"], ["not a snapshot store"]),
        ("train out exists", ["train", st, "--out", sur, "--kind", "galerkin"],
         ["sur", "exists", "--force"]),
        ("train out is a file", ["train", st, "--out", w / "afile", "--kind", "galerkin"],
         ["afile", "not a directory"]),
        ("train not a store", ["train", w / "adir", "--out", w / "s3"], ["not a snapshot"]),
        ("query field exists", ["query", sur, "--mu", MU, "--field", w / "afile"],
         ["afile", "exists"]),
        ("query field dir missing", ["query", sur, "--mu", MU, "--field",
                                     w / "missing" / "dir" / "u.npy"], ["does not exist"]),
        ("query field is a dir", ["query", sur, "--mu", MU, "--field", w / "adir"],
         ["is a directory"]),
        ("query out of bounds", ["query", sur, "--mu", "0.5,0.5,0.5,5"], ["outside"]),
        ("query no surrogate", ["query", w / "nosur", "--mu", MU], ["nosur"]),
        ("synth out exists", ["synth", case, "--mu", MU, "--out", obs], ["exists"]),
        ("synth out is a dir", ["synth", case, "--mu", MU, "--out", w / "adir", "--force"],
         ["is a directory"]),
        ("synth duplicate mu", ["synth", case, "--mu", "mu_0=1,mu_0=1", "--out", w / "o.csv"],
         ["more than once"]),
        ("synth no observations", ["synth", no_obs, "--mu", MU, "--out", w / "o.csv"],
         ["no [observations]"]),
        ("infer out is a file", ["infer", case, *inf_args, "--out", w / "afile"],
         ["afile", "not a directory"]),
        ("infer out exists", ["infer", case, *inf_args, "--out", w / "adir"],
         ["adir", "exists"]),
        ("infer data of another case", ["infer", case, "--surrogate", sur, "--data",
                                        w / "other_case.csv", "--out", w / "i1"],
         ["other_case.csv", "elsewhere"]),
        ("infer tiny sigma", ["infer", case, "--surrogate", sur, "--data", w / "tiny.csv",
                              "--out", w / "i2"], ["tiny.csv:", "too small"]),
        ("infer huge value", ["infer", case, "--surrogate", sur, "--data", w / "huge.csv",
                              "--out", w / "i3"], ["huge.csv:", "too large"]),
        ("infer unknown sensor", ["infer", case, "--surrogate", sur, "--data",
                                  w / "unknown.csv", "--out", w / "i4"], ["unknown sensor"]),
        ("infer method", ["infer", case, *inf_args, "--method", "x", "--out", w / "i5"],
         ["--method"]),
        ("infer kernel", ["infer", case, *inf_args, "--method", "mcmc", "--kernel", "hmc",
                          "--out", w / "i6"], ["--kernel"]),
        ("infer chains", ["infer", case, *inf_args, "--chains", "0", "--out", w / "i7"],
         ["--chains"]),
        ("infer surrogate of another mesh", ["infer", other_mesh, *inf_args, "--no-enrich",
                                             "--out", w / "i8"], ["mesh"]),
        ("serve missing target", ["serve", w / "nothing"], ["nothing"]),
    ]


def test_refused_commands_write_nothing_and_print_one_line(world, tmp_path):
    w = _copy(world, tmp_path)
    cases = _case_cli(w)
    assert len(cases) >= 40
    failures = []
    for name, args, needles in cases:
        before = _tree(w)
        r = run_cli(args)
        try:
            _refused(r, *needles)
            assert _tree(w) == before, "files changed"
            assert not (w / "new").exists(), "a store was left behind"
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------- the Python API
def test_api_raises_its_own_errors(world, tmp_path):
    from hybrid.core.parameters import Parameter, ParameterSpace, parse_mu
    from hybrid.core.store import SnapshotStore
    from hybrid.errors import HybridError, ParameterError, StoreError
    from hybrid.inference import DataError, InferenceError, Observations, read_csv, sample
    from hybrid.surrogate import Surrogate, SurrogateError

    w = _copy(world, tmp_path)
    space = ParameterSpace((Parameter("a", 0.0, 1.0), Parameter("b", 0.0, 1.0)))
    checks = [
        (lambda: SnapshotStore(w / "adir_missing"), StoreError, "not a snapshot store"),
        (lambda: parse_mu("a=0.1,a=0.2", space), ParameterError, "more than once"),
        (lambda: parse_mu("0.1,", space), ParameterError, "empty value"),
        (lambda: parse_mu("b=0.1", space), ParameterError, "missing parameter"),
        (lambda: space.check(np.array([0.5 + 1j, 0.2])), ParameterError, "complex"),
        (lambda: space.check(np.array([[0.5, 0.2], [0.5, 1.0 + 1e-6]])), ParameterError,
         "b=1"),
        (lambda: Observations(("y",), [1e308], 0.01), DataError, "out of range"),
        (lambda: Observations(("y",), [1.0], 1e-300), DataError, "out of range"),
        (lambda: Surrogate.load(w / "sur", case=w / "nope.toml"), HybridError, "nope.toml"),
        (lambda: Surrogate.load(w / "store"), SurrogateError, "not a surrogate"),
    ]
    (w / "d.csv").write_text("sensor,value,sigma\np0,0.5,0\n")
    checks.append((lambda: read_csv(w / "d.csv"), DataError, "d.csv:2"))
    post = _posterior1()
    checks.append((lambda: sample(post, proposal_cov=np.array([[-1.0]]), n_samples=2,
                                  burn_in=0), InferenceError, "not positive definite"))
    for fn, err, needle in checks:
        with pytest.raises(err) as ei:
            fn()
        assert needle in str(ei.value) and "\n" not in str(ei.value), str(ei.value)
    # a NaN in a stored sample is caught by the reader, not answered as NaN
    with h5py.File(w / "store" / "samples" / "s0000000.h5", "r+") as f:
        f["u"][0] = np.nan
    with pytest.raises(StoreError, match="non-finite"):
        SnapshotStore(w / "store").snapshots()


def _posterior1():
    from hybrid.core.parameters import Parameter, ParameterSpace
    from hybrid.inference import ForwardModel, Observations, Posterior

    space = ParameterSpace((Parameter("k", 0.0, 1.0),))
    return Posterior(ForwardModel(lambda x: np.atleast_2d(x)[:, :1], batched=True),
                     Observations(("y",), [0.5], 0.1), space)


def test_train_force_replaces_atomically_and_keeps_the_old_one_on_failure(world, tmp_path):
    w = _copy(world, tmp_path)
    old = _tree(w / "sur")
    r = run_cli(["train", w / "store", "--out", w / "sur", "--kind", "galerkin", "--modes",
                 "2", "--force", "--no-plots"])
    assert r.returncode == 0, r.stderr
    new = _tree(w / "sur")
    assert new != old and json.loads(new["surrogate.json"])["n_modes"] == 2
    assert not [p for p in w.iterdir() if p.name.startswith(".sur.")]   # no debris


# --------------------------------------------------------------------- real filesystems
def _mount_tmpfs(path: Path, size: str, ro: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        return False
    if ro:
        r = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            return False
    return True


@pytest.fixture
def fs(tmp_path):
    mounted = []

    def mount(name: str, size: str = "64k", ro: bool = False) -> Path:
        p = tmp_path / name
        if os.geteuid() != 0 or not _mount_tmpfs(p, size, ro):
            pytest.skip("needs root and permission to mount a tmpfs (read-only location and "
                        "full-disk tests)")
        mounted.append(p)
        return p

    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def test_read_only_location_is_one_line_for_every_writer(world, tmp_path, fs):
    w = _copy(world, tmp_path)
    ro = fs("ro", ro=True)
    case = w / "case.toml"
    cmds = [
        ["campaign", case, "--store", ro / "store", "--no-progress"],
        ["train", w / "store", "--out", ro / "sur", "--kind", "galerkin"],
        ["solve", case, "--mu", MU, "--out", ro / "sol"],
        ["synth", case, "--mu", MU, "--out", ro / "o.csv"],
        ["infer", case, "--surrogate", w / "sur", "--data", w / "obs.csv", "--out", ro / "i",
         "--no-enrich"],
        ["query", w / "sur", "--mu", MU, "--field", ro / "u.npy"],
    ]
    before = _tree(w)
    for args in cmds:
        line = _refused(run_cli(args))
        assert str(ro) in line and ("read-only" in line.lower() or "cannot" in line), line
    assert _tree(w) == before and not any(ro.iterdir())


def test_full_disk_is_one_line_and_keeps_what_was_there(world, tmp_path, fs):
    w = _copy(world, tmp_path)
    full = fs("full", size="48k")
    shutil.copytree(w / "sur", full / "sur")          # an old surrogate on the small disk
    old = _tree(full / "sur")
    st = os.statvfs(full)
    (full / "filler").write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - 8192, 0))
    case = w / "case.toml"
    # campaign into a disk too small for its static part: one line, no store left behind
    _refused(run_cli(["campaign", case, "--store", full / "store", "--no-progress"]),
             "cannot write", "No space left")
    assert not (full / "store").exists()
    # train over the old surrogate: refused, old surrogate intact, no debris
    _refused(run_cli(["train", w / "store", "--out", full / "sur", "--kind", "galerkin",
                      "--force", "--no-plots"]), "cannot write")
    assert _tree(full / "sur") == old
    assert not [p for p in full.iterdir() if p.name.startswith(".sur.")]


# --------------------------------------------------------------------- SIGTERM
def test_sigterm_stops_a_campaign_cleanly_and_it_resumes(tmp_path):
    case = tmp_path / "case.toml"
    case.write_text(case_text(name="tb_term", cells=90, blocks=2, samples=400, seed=1,
                              store=str(tmp_path / "store")))
    cmd = [str(MPIRUN), "-n", "2", str(BIN / "hybrid"), "campaign", str(case), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    samples = tmp_path / "store" / "samples"
    t0 = time.time()
    while time.time() - t0 < 120:       # wait until the campaign is well under way
        if samples.is_dir() and len(list(samples.glob("s*.h5"))) >= 20:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, out, err)
    assert "stopped by SIGTERM" in out and "Traceback" not in err
    assert "PETSC ERROR" not in err and "Caught signal" not in err
    kept = _tree(samples)
    assert 20 <= len(kept) < 400
    assert not [n for n in os.listdir(samples) if n.startswith(".tmp")]
    r = run_cli(["campaign", case, "--no-progress"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert "400/400 ok" in r.stdout
    after = _tree(samples)
    assert len(after) == 400 and all(after[k] == v for k, v in kept.items())
