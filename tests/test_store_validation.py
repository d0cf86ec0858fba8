"""A store validates itself on open: manifest, plan, sample names, shapes, finite values.

In-process tests of :mod:`hybrid.core.store`'s checks (the CLI behaviour is in test_bad_inputs.py),
on a store written with the store's own writers (no FEM needed).
"""

from __future__ import annotations

import json
import threading
import time

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.core.store import (
    STATUS_FAILED,
    STATUS_OK,
    Sample,
    SnapshotStore,
    StaticData,
    h5_atomic,
    init_store,
    read_plan,
    read_static,
    sample_files,
    static_fingerprint,
    store_lock,
    write_json,
    write_sample,
    write_static,
)
from hybrid.errors import StoreError

SPACE = ParameterSpace((Parameter("a", 0.1, 1.0), Parameter("b", 1.0, 10.0, log=True)))
N = 6


def _static() -> StaticData:
    I6 = sp.identity(N, format="csr")
    return StaticData(points=np.zeros((N, 2)), cells=np.zeros((1, 3), dtype=np.int64),
                      cell_type="triangle", mass=I6, stiffness=2 * I6,
                      dirichlet_dofs=np.array([0]), affine_a=[I6, 3 * I6],
                      affine_f=np.ones((1, N)), qoi_functionals=np.ones((2, N)) / N)


def _store(tmp_path, n: int = 3):
    st = tmp_path / "s"
    write_static(st / "static.h5", _static(), fingerprint={"mesh": {"cells": 4}})
    init_store(st, case_name="c", case_text="", physics={"model": "x"}, space=SPACE,
               qoi=["q0", "q1"], n_dofs=N, solver_options={}, versions={})
    for i in range(n):
        write_sample(st, Sample(index=i, mu=np.array([0.2 + 0.1 * i, 2.0]), status=STATUS_OK,
                                reason="CONVERGED_ITS", wall_time=0.1, u=np.arange(N) + i,
                                qoi=np.array([1.0, 2.0 + i])))
    return st


def test_a_good_store_reads_back_what_was_written(tmp_path):
    st = _store(tmp_path)
    s = SnapshotStore(st)
    mu, U = s.snapshots()
    assert mu.shape == (3, 2) and np.array_equal(U[2], np.arange(N) + 2)
    assert [x.reason for x in s.samples()] == ["CONVERGED_ITS"] * 3
    assert [p.name for p in sample_files(st)] == [f"s{i:07d}.h5" for i in range(3)]
    assert static_fingerprint(st / "static.h5") == {"mesh": {"cells": 4}}
    assert read_static(st / "static.h5").n_dofs == N


@pytest.mark.parametrize("manifest,needle", [
    ([], "not a JSON object (got list)"),
    ({"format": "hybrid-store", "format_version": 1}, "lacks 'parameters'"),
    ("drop:qoi", "lacks 'qoi'"),
    ("drop:n_dofs", "lacks 'n_dofs'"),
    ("drop:physics", "lacks 'physics'"),
    ("drop:case_text", "lacks 'case_text'"),
    ("set:n_dofs=6.5", "'n_dofs' must be a int, got float"),
    ("set:n_dofs=true", "'n_dofs' must be a int, got bool"),
    ("set:n_dofs=0", "'n_dofs' must be >= 1, got 0"),
    ("set:qoi={}", "'qoi' must be a list, got dict"),
    ("set:parameters=[{}]", "'parameters' is malformed"),
    ("set:parameters=[{\"name\": \"a\", \"lower\": 1, \"upper\": 0, \"log\": false}]",
     "'parameters' is malformed"),
])
def test_a_damaged_manifest_is_refused_naming_the_problem(tmp_path, manifest, needle):
    st = _store(tmp_path, n=1)
    mf = st / "store.json"
    m = json.loads(mf.read_text())
    if isinstance(manifest, str) and manifest.startswith("drop:"):
        del m[manifest[5:]]
    elif isinstance(manifest, str):
        key, val = manifest[4:].split("=", 1)
        m[key] = json.loads(val)
    else:
        m = manifest
    mf.write_text(json.dumps(m))
    with pytest.raises(StoreError) as e:
        SnapshotStore(st)
    assert needle in str(e.value) and str(mf) in str(e.value)


def test_manifest_edges_accepted_and_refused(tmp_path):
    st = _store(tmp_path, n=0)
    mf = st / "store.json"
    m = json.loads(mf.read_text())
    mf.write_text(json.dumps({**m, "n_dofs": 1}))
    assert SnapshotStore(st).n_dofs == 1                      # one DOF is a store
    equal = [{"name": "a", "lower": 0.5, "upper": 0.5, "log": False}]
    mf.write_text(json.dumps({**m, "parameters": equal}))
    with pytest.raises(StoreError) as e:
        SnapshotStore(st)
    assert str(e.value) == (f"{mf}: manifest 'parameters' is malformed (a: bounds "
                            "[0.5, 0.5])")


def test_stray_files_in_samples_are_refused_but_temporaries_are_not_samples(tmp_path):
    st = _store(tmp_path, n=2)
    (st / "samples" / ".tmp-abc.h5").write_bytes(b"")      # debris: not a sample, not s*
    assert len(sample_files(st)) == 2
    for bad in ("s_backup.h5", "s123.h5", "s00000001a.h5"):
        (st / "samples" / bad).write_bytes(b"x")
        with pytest.raises(StoreError) as e:
            SnapshotStore(st).committed_indices()
        assert str(e.value) == (f"{st / 'samples' / bad}: not a sample file name "
                                "(s<index>.h5) in the store's samples/; move it out of the "
                                "store")
        (st / "samples" / bad).unlink()
    (st / "samples" / "s12345678.h5").write_bytes(b"x")    # 8 digits: a valid name
    assert 12345678 in SnapshotStore(st).committed_indices()
    assert sample_files(tmp_path / "nowhere") == []


@pytest.mark.parametrize("what,edit,needle", [
    ("mu", lambda f: _replace(f, "mu", np.array([0.5, 2.0, 1.0])),
     "sample has 3 parameters, the store 2"),
    ("u", lambda f: _replace(f, "u", np.zeros(N - 1)), f"{N - 1} values, the store has {N}"),
    ("qoi", lambda f: _replace(f, "qoi", np.zeros(3)), "3 QoIs, the store 2"),
    ("u nan", lambda f: _set(f, "u", 2, np.nan), "non-finite values in its field u"),
    ("u inf", lambda f: _set(f, "u", 0, np.inf), "non-finite values in its field u"),
    ("qoi nan", lambda f: _set(f, "qoi", 1, np.nan), "non-finite values in its QoIs"),
    ("mu nan", lambda f: _set(f, "mu", 0, np.nan), "non-finite values in its mu"),
])
def test_a_sample_that_does_not_fit_the_store_is_refused(tmp_path, what, edit, needle):
    st = _store(tmp_path, n=3)
    path = st / "samples" / "s0000001.h5"
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(StoreError) as e:
        SnapshotStore(st).snapshots()
    assert needle in str(e.value) and str(path) in str(e.value)


def _replace(f, key, value):
    del f[key]
    f.create_dataset(key, data=value)


def _set(f, key, i, value):
    d = f[key][()]
    d[i] = value
    _replace(f, key, d)


def test_a_failed_sample_may_hold_no_field_and_nan(tmp_path):
    st = _store(tmp_path, n=2)
    write_sample(st, Sample(index=2, mu=np.array([0.5, 3.0]), status=STATUS_FAILED,
                            reason="DIVERGED_ITS", wall_time=0.1, u=np.full(N, np.nan)))
    s = SnapshotStore(st)
    assert len(s.samples()) == 3 and s.snapshots()[1].shape == (2, N)
    assert s.summary()["failed"] == 1 and s.summary()["failure_reasons"] == ["DIVERGED_ITS"]


def test_plans_generator_and_legacy_and_damaged(tmp_path):
    st = _store(tmp_path, n=1)
    assert read_plan(st) is None and SnapshotStore(st).plan_points() is None
    write_json(st / "plan.json", {"method": "sobol", "seed": 3, "names": ["a", "b"], "n": 5})
    pts = SnapshotStore(st).plan_points()
    assert np.array_equal(pts, SPACE.sample(5, "sobol", 3))
    assert SnapshotStore(st).summary()["planned"] == 5
    write_json(st / "plan.json", {"mu": pts[:4].tolist()})          # points only (legacy)
    assert np.array_equal(SnapshotStore(st).plan_points(), pts[:4])
    assert SnapshotStore(st).summary()["planned"] == 4
    write_json(st / "plan.json", {"mu": [[1, 2], [1, 3]]})          # integers in JSON
    got = SnapshotStore(st).plan_points()
    assert got.dtype == np.float64 and got.shape == (2, 2)
    write_json(st / "plan.json", {"method": "sobol", "seed": 3})     # size not recorded
    assert read_plan(st) == {"method": "sobol", "seed": 3}
    assert SnapshotStore(st).summary()["planned"] is None
    pf = st / "plan.json"
    for text, tail in (('{"method": "sob', "sampling plan is corrupted ("),
                       ("[1, 2]", "sampling plan lacks 'method' and 'seed' (or its points "
                                  "'mu'); delete it to rebuild it from the case"),
                       ('{"method": "sobol"}', "sampling plan lacks 'method'")):
        pf.write_text(text)
        with pytest.raises(StoreError) as e:
            read_plan(st)
        assert str(e.value).startswith(f"{pf}: {tail}"), str(e.value)
    pf.write_text('{"method": "sob')
    with pytest.raises(StoreError) as e:
        read_plan(st)
    assert str(e.value).endswith("; delete it to rebuild it from the case")


def test_static_fingerprint_absent_or_unreadable_is_none(tmp_path):
    write_static(tmp_path / "a.h5", _static())
    assert static_fingerprint(tmp_path / "a.h5") is None
    assert static_fingerprint(tmp_path / "missing.h5") is None
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert static_fingerprint(tmp_path / "junk.h5") is None


def test_h5_atomic_writes_all_or_nothing(tmp_path):
    target = tmp_path / "x.h5"
    with h5_atomic(target) as f:
        f.create_dataset("v", data=np.arange(4.0))
    with h5py.File(target, "r") as f:
        assert np.array_equal(f["v"][()], np.arange(4.0))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with h5_atomic(target) as f:
            f.create_dataset("w", data=np.zeros(3))
            raise RuntimeError("interrupted")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]          # no debris


def test_store_lock_excludes_a_second_writer_and_times_out(tmp_path):
    st = _store(tmp_path, n=0)
    with store_lock(st):
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked by another writer"):
            with store_lock(st, wait=0.2):
                pass
        assert 0.2 <= time.monotonic() - t0 < 5.0
    order = []

    def second():
        with store_lock(st, wait=10.0):
            order.append("second")

    with store_lock(st):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.1)
        order.append("first")
    t.join()
    assert order == ["first", "second"]                 # the waiter got it after release


def test_only_one_of_the_two_affine_observation_sets_is_refused(tmp_path):
    import dataclasses

    st = _static()
    rows = sp.csr_matrix(np.ones((2, N)))
    for half in ({"observation_affine": rows}, {"observation_affine_f": np.ones((1, 1))}):
        with pytest.raises(StoreError, match="must be given together"):
            write_static(tmp_path / "x.h5", dataclasses.replace(st, **half))
        assert not (tmp_path / "x.h5").exists()
