"""The snapshot store on its own (numpy + h5py): round trips, the observation operator's two
branches, empty stores, checksums, and every error path with its one-line message."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.core.store import (
    ENRICHMENT_BASE,
    FORMAT,
    FORMAT_VERSION,
    STATUS_FAILED,
    STATUS_OK,
    Sample,
    SnapshotStore,
    StaticData,
    affine_observation_operator,
    atomic_path,
    clean_debris,
    fsync_dir,
    init_store,
    read_sample,
    read_static,
    sample_path,
    write_json,
    write_sample,
    write_static,
)
from hybrid.errors import StoreError

N, QA, QF = 7, 2, 2                 # N ≠ n_obs·Q_a, so rows and columns differ
SPACE = ParameterSpace((Parameter("a", 0.1, 1.0), Parameter("b", 1e-2, 1e2, log=True)))
RNG = np.random.default_rng(0)
L = RNG.standard_normal((3, N))                     # three observations
Bflux = sp.random(3 * QA, N, density=0.5, random_state=1, format="csr")
bflux = RNG.standard_normal((3, QF))


def static(flux: bool = True, **kw) -> StaticData:
    lap = sp.diags([-np.ones(N - 1), 2 * np.ones(N), -np.ones(N - 1)], [-1, 0, 1], format="csr")
    base = dict(points=np.c_[np.linspace(0, 1, N), np.zeros(N)],
                cells=np.c_[np.arange(N - 1), np.arange(1, N)], cell_type="line",
                mass=sp.identity(N, format="csr") / N, stiffness=lap,
                dirichlet_dofs=np.array([0, N - 1]), affine_a=[lap, 2 * lap],
                affine_f=RNG.standard_normal((QF, N)), qoi_functionals=np.ones((1, N)) / N,
                observation_functionals=L,
                observation_affine=Bflux if flux else None,
                observation_affine_f=bflux if flux else None)
    base.update(kw)
    return StaticData(**base)


def dense_observations(u, ta, tf):
    """y_i = L_i u + Σ_q θ_q B_{i,q} u + Σ_q ϑ_q b_{i,q}, row i·Q_a + q of B is B_{i,q}."""
    Bd = Bflux.toarray()
    return np.array([L[i] @ u + sum(ta[q] * Bd[i * QA + q] @ u for q in range(QA))
                     + bflux[i] @ tf for i in range(3)])


# ----------------------------------------------------------------------------- atomic files
def test_atomic_path_commits_or_leaves_the_target_alone(tmp_path):
    target = tmp_path / "d" / "x.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-")
        assert tmp.suffix == ".json"
        tmp.write_text("one")
    assert target.read_text() == "one"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target, sync_dir=False) as tmp:
            tmp.write_text("two")
            raise RuntimeError("boom")
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]
    write_json(target, {"k": [1, 2]})
    assert json.loads(target.read_text()) == {"k": [1, 2]}


def test_clean_debris_counts_and_removes_only_temporaries(tmp_path):
    (tmp_path / "samples").mkdir()
    for p in (tmp_path / ".tmp-a.h5", tmp_path / "samples" / ".tmp-b.h5",
              tmp_path / "samples" / ".tmp-c"):
        p.write_bytes(b"")
    (tmp_path / "store.json").write_text("{}")
    (tmp_path / "samples" / "s0000001.h5").write_bytes(b"")
    assert clean_debris(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["s0000001.h5", "samples",
                                                           "store.json"]
    assert clean_debris(tmp_path) == 0
    assert clean_debris(tmp_path / "nowhere") == 0


# ----------------------------------------------------------------------------- static part
@pytest.mark.parametrize("flux", [True, False])
def test_static_round_trip(tmp_path, flux):
    s = static(flux)
    write_static(tmp_path / "static.h5", s)
    r = read_static(tmp_path / "static.h5")
    for name in ("points", "cells", "dirichlet_dofs", "affine_f", "qoi_functionals",
                 "observation_functionals"):
        np.testing.assert_array_equal(getattr(r, name), getattr(s, name))
    assert r.cell_type == "line" and r.n_dofs == N
    for name in ("mass", "stiffness"):
        M = getattr(r, name)
        assert sp.issparse(M) and M.shape == (N, N)
        assert abs(M - getattr(s, name)).max() == 0
    assert len(r.affine_a) == QA
    for A, B in zip(r.affine_a, s.affine_a, strict=True):
        assert abs(A - B).max() == 0
    assert r.observations_affine is flux
    if flux:
        assert abs(r.observation_affine - Bflux).max() == 0
        np.testing.assert_array_equal(r.observation_affine_f, bflux)
        with h5py.File(tmp_path / "static.h5") as f:
            assert f["observation_affine"].attrs["n_a"] == QA
    else:
        assert r.observation_affine is None and r.observation_affine_f is None


def test_static_without_affine_terms_or_observations(tmp_path):
    s = static(False, affine_a=[], affine_f=np.zeros((0, N)), observation_functionals=None)
    write_static(tmp_path / "s.h5", s)
    r = read_static(tmp_path / "s.h5")
    assert r.affine_a == [] and r.affine_f.shape == (0, N)
    assert r.observation_functionals is None and not r.observations_affine


def test_read_static_errors(tmp_path):
    with pytest.raises(StoreError, match=r"static\.h5: static part of the store is missing$"):
        read_static(tmp_path / "static.h5")
    (tmp_path / "static.h5").write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match=r"static\.h5: static part of the store is "
                                         r"unreadable \("):
        read_static(tmp_path / "static.h5")
    write_static(tmp_path / "static.h5", static())
    with h5py.File(tmp_path / "static.h5", "a") as f:
        del f["qoi_functionals"]
    with pytest.raises(StoreError, match=r"static part of the store is unreadable"):
        read_static(tmp_path / "static.h5")


# ----------------------------------------------------------------------------- observations
def test_affine_observation_operator_against_the_dense_formula():
    ta, tf = np.array([0.3, 1.7]), np.array([2.0, -0.5])
    rows, offset = affine_observation_operator(L, Bflux, bflux, ta, tf)
    u = RNG.standard_normal(N)
    np.testing.assert_allclose(rows @ u + offset, dense_observations(u, ta, tf),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(offset, bflux @ tf, rtol=1e-15)


def test_observation_operator_linear_branch():
    s = static(flux=False)
    rows, offset = s.observation_operator(None, None)
    np.testing.assert_array_equal(rows, L)
    np.testing.assert_array_equal(offset, np.zeros(3))
    rows[0, 0] = 99.0                                   # a copy, not the store's array
    assert s.observation_functionals[0, 0] == L[0, 0]
    u = RNG.standard_normal((4, N))
    np.testing.assert_allclose(s.observe(u), u @ L.T, rtol=1e-14)
    np.testing.assert_allclose(s.observe(u[0]), L @ u[0], rtol=1e-14)
    rows, _ = static(flux=False, observation_functionals=np.eye(N, dtype=int)[:2]
                     ).observation_operator(None, None)
    assert rows.dtype == np.float64
    one = static(flux=False, observation_functionals=L[1])         # a single observation
    r1, o1 = one.observation_operator(None, None)
    assert r1.shape == (1, N) and o1.shape == (1,)
    np.testing.assert_allclose(one.observe(u), u @ L[1][:, None], rtol=1e-14)


def test_observation_operator_flux_branch_and_its_errors():
    s = static()
    ta, tf = np.array([0.3, 1.7]), np.array([2.0, -0.5])
    u = RNG.standard_normal(N)
    rows, offset = s.observation_operator(ta, tf)
    np.testing.assert_allclose(rows @ u + offset, dense_observations(u, ta, tf),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s.observe(u, ta, tf), dense_observations(u, ta, tf),
                               rtol=1e-12, atol=1e-13)
    # batched: each field with its own coefficients
    U = RNG.standard_normal((3, N))
    TA, TF = RNG.uniform(0.1, 2, (3, QA)), RNG.standard_normal((3, QF))
    np.testing.assert_allclose(s.observe(U, TA, TF),
                               [dense_observations(U[k], TA[k], TF[k]) for k in range(3)],
                               rtol=1e-12, atol=1e-13)
    with pytest.raises(StoreError, match=r"^these observations depend on mu \(boundary "
                                         r"fluxes\): pass theta_a and theta_f$"):
        s.observe(u)
    with pytest.raises(StoreError, match="pass theta_a and theta_f"):
        s.observe(u, ta)
    with pytest.raises(StoreError, match="pass theta_a and theta_f"):
        s.observe(u, None, tf)
    with pytest.raises(StoreError, match=r"^observation_affine has 6 rows, expected 3·3$"):
        s.observation_operator(np.ones(3), tf)           # three θ for a two-term store


# ----------------------------------------------------------------------------- samples
def test_sample_round_trip_and_path(tmp_path):
    assert sample_path(tmp_path, 12) == tmp_path / "samples" / "s0000012.h5"
    s = Sample(index=12, mu=np.array([0.5, 1.0]), status=STATUS_OK, reason="", wall_time=1.5,
               u=np.arange(float(N)), qoi=np.array([3.0]), run_id="r1", ranks=2, iterations=7)
    p = write_sample(tmp_path, s)
    assert p == sample_path(tmp_path, 12)
    r = read_sample(p)
    assert (r.index, r.status, r.reason, r.wall_time, r.run_id, r.ranks, r.iterations) == \
        (12, "ok", "", 1.5, "r1", 2, 7)
    assert r.ok
    np.testing.assert_array_equal(r.mu, s.mu)
    np.testing.assert_array_equal(r.u, s.u)
    np.testing.assert_array_equal(r.qoi, s.qoi)
    assert read_sample(p, field=False).u is None
    f = write_sample(tmp_path, Sample(index=3, mu=np.array([0.2, 0.1]), status=STATUS_FAILED,
                                      reason="diverged", wall_time=0.1))
    r = read_sample(f)
    assert not r.ok and r.reason == "diverged" and r.u is None and r.qoi is None
    assert (r.run_id, r.ranks, r.iterations) == ("", 1, -1)


def test_corrupted_sample_names_its_file(tmp_path):
    p = sample_path(tmp_path, 5)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(StoreError, match=r"s0000005\.h5: sample file is unreadable or "
                                         r"incomplete \("):
        read_sample(p)
    with h5py.File(p, "w") as f:
        f.attrs["index"] = 5                         # no mu, no status
    with pytest.raises(StoreError, match="sample file is unreadable or incomplete"):
        read_sample(p)


# ----------------------------------------------------------------------------- the store
def make_store(path, *, with_static=True, **kw):
    init_store(path, case_name="c", case_text="[case]\n", physics={"model": "toy"},
               space=SPACE, qoi=["m", "n"], n_dofs=N, solver_options={"ksp": "cg"},
               versions={"hybrid": "0"}, **kw)
    if with_static:
        write_static(path / "static.h5", static())
    return SnapshotStore(path)


def test_init_store_manifest(tmp_path):
    st = make_store(tmp_path / "s", extra={"observations": ["y0", "y1", "y2"]})
    m = json.loads((tmp_path / "s" / "store.json").read_text())
    assert (m["format"], m["format_version"]) == (FORMAT, FORMAT_VERSION) == ("hybrid-store", 1)
    assert m["created"].endswith("+00:00") and len(m["created"]) == 25
    assert (m["case_name"], m["case_text"], m["physics"]) == ("c", "[case]\n", {"model": "toy"})
    assert m["solver_options"] == {"ksp": "cg"} and m["versions"] == {"hybrid": "0"}
    assert (tmp_path / "s" / "samples").is_dir()
    assert st.space == SPACE and st.qoi_names == ["m", "n"] and st.n_dofs == N
    assert st.observation_names == ["y0", "y1", "y2"]
    assert st.case_text == "[case]\n" and st.physics == {"model": "toy"}
    assert st.plan() is None
    write_json(tmp_path / "s" / "plan.json", {"mu": [[0.5, 1.0]] * 4})
    assert st.plan() == {"mu": [[0.5, 1.0]] * 4}
    assert make_store(tmp_path / "t").observation_names == []


def test_empty_store(tmp_path):
    st = make_store(tmp_path / "s")
    mu, U = st.snapshots()
    assert mu.shape == (0, 2) and U.shape == (0, N)
    mu, Q = st.qois()
    assert mu.shape == (0, 2) and Q.shape == (0, 2)
    assert st.sample_files() == [] and st.committed_indices() == set() and st.samples() == []
    s = st.summary()
    assert (s["committed"], s["ok"], s["failed"], s["planned"]) == (0, 0, 0, None)
    assert s["solve_time_mean_s"] is None and s["failure_reasons"] == []
    (tmp_path / "s" / "samples").rmdir()
    assert st.sample_files() == []


def test_snapshots_qois_summary_and_checksum(tmp_path):
    st = make_store(tmp_path / "s")
    c0 = st.checksum()
    files = [tmp_path / "s" / "store.json", tmp_path / "s" / "static.h5"]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    assert c0 == h.hexdigest()
    for i, (status, t) in enumerate([(STATUS_OK, 2.0), (STATUS_FAILED, 9.0), (STATUS_OK, 4.0)]):
        idx = [7, 2, 11][i]
        write_sample(tmp_path / "s", Sample(
            index=idx, mu=np.array([0.1 * (i + 1), 1.0]), status=status,
            reason="" if status == STATUS_OK else "nan", wall_time=t,
            u=np.full(N, float(idx)) if status == STATUS_OK else None,
            qoi=np.array([idx, -idx], dtype=float) if status == STATUS_OK else None))
    assert st.committed_indices() == {2, 7, 11}
    assert [p.name for p in st.sample_files()] == ["s0000002.h5", "s0000007.h5", "s0000011.h5"]
    mu, U = st.snapshots()                            # ok samples only, by index: 7, 11
    np.testing.assert_allclose(mu, [[0.1, 1.0], [0.3, 1.0]])
    np.testing.assert_array_equal(U, [np.full(N, 7.0), np.full(N, 11.0)])
    mu, Q = st.qois()
    np.testing.assert_array_equal(Q, [[7.0, -7.0], [11.0, -11.0]])
    assert [s.index for s in st.samples()] == [2, 7, 11]
    assert st.samples()[1].u is None and st.samples(field=True)[1].u is not None
    np.testing.assert_allclose(mu, [[0.1, 1.0], [0.3, 1.0]])
    s = st.summary()
    assert (s["committed"], s["ok"], s["failed"]) == (3, 2, 1)
    assert s["failure_reasons"] == ["nan"] and s["solve_time_mean_s"] == 3.0
    assert (s["case"], s["physics"], s["parameters"], s["n_dofs"], s["qoi"]) == \
        ("c", "toy", ["a", "b"], N, ["m", "n"])
    assert s["versions"] == {"hybrid": "0"} and s["created"] == st.manifest["created"]
    assert s["store"] == str(tmp_path / "s")
    c1 = st.checksum()
    assert c1 != c0 and c1 == SnapshotStore(tmp_path / "s").checksum()
    for p in st.sample_files():
        h.update(p.name.encode())
        h.update(p.read_bytes())
    assert c1 == h.hexdigest()
    write_json(tmp_path / "s" / "plan.json", {"mu": [[0.5, 1.0]] * 5})
    assert st.summary()["planned"] == 5


def test_static_is_read_once(tmp_path):
    st = make_store(tmp_path / "s")
    a = st.static
    assert st.static is a and a.n_dofs == N


def test_store_errors(tmp_path):
    with pytest.raises(StoreError, match=r"nowhere: not a snapshot store \(no store\.json\)$"):
        SnapshotStore(tmp_path / "nowhere")
    st = make_store(tmp_path / "s", with_static=False)
    with pytest.raises(StoreError, match=r"static\.h5: static part of the store is missing$"):
        st.static                                            # noqa: B018
    mf = tmp_path / "s" / "store.json"
    good = json.loads(mf.read_text())
    mf.write_text("{")
    with pytest.raises(StoreError, match=r"store\.json: manifest is corrupted \("):
        SnapshotStore(tmp_path / "s")
    mf.write_text(json.dumps({**good, "format": "other"}))
    with pytest.raises(StoreError, match=r"store\.json: not a hybrid store manifest$"):
        SnapshotStore(tmp_path / "s")
    mf.write_text(json.dumps({**good, "format_version": 2}))
    with pytest.raises(StoreError, match=r"store\.json: store format version 2 is not "
                                         r"supported \(this hybrid reads version 1\)$"):
        SnapshotStore(tmp_path / "s")
    mf.write_text(json.dumps({k: v for k, v in good.items() if k != "format_version"}))
    with pytest.raises(StoreError, match="store format version None is not supported"):
        SnapshotStore(tmp_path / "s")


def test_fsync_dir(tmp_path):
    assert fsync_dir(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "nowhere")


def test_index_arrays_are_stored_as_integers_and_values_read_back_as_floats(tmp_path):
    s = static(affine_f=np.ones((QF, N), dtype=int), observation_affine_f=np.ones((3, QF), int),
               cells=np.c_[np.arange(N - 1), np.arange(1, N)].astype(np.int32),
               dirichlet_dofs=np.array([0, N - 1], dtype=np.int32))
    write_static(tmp_path / "static.h5", s)
    with h5py.File(tmp_path / "static.h5") as f:
        for name in ("mesh/cells", "dirichlet_dofs", "inner_product/mass/indices",
                     "inner_product/mass/indptr", "affine/A_1/indices"):
            assert f[name].dtype == np.int64, name
    r = read_static(tmp_path / "static.h5")
    assert r.affine_f.dtype == np.float64 and r.observation_affine_f.dtype == np.float64
    p = write_sample(tmp_path, Sample(index=1, mu=[1, 2], status=STATUS_OK, reason="",
                                      wall_time=0.0, u=np.arange(N), qoi=[3]))
    r = read_sample(p)
    assert r.mu.dtype == r.u.dtype == r.qoi.dtype == np.float64


def test_sparse_shapes_survive_empty_trailing_rows_and_columns(tmp_path):
    B = sp.csr_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(3 * QA, N))   # rows/cols 2+ empty
    write_static(tmp_path / "static.h5", static(observation_affine=B))
    r = read_static(tmp_path / "static.h5")
    assert r.observation_affine.shape == (3 * QA, N)
    assert abs(r.observation_affine - B).max() == 0


def test_enrichment_samples_are_indexed_beyond_any_plan(tmp_path):
    st = make_store(tmp_path / "s")
    for idx in (3, ENRICHMENT_BASE + 12):
        write_sample(tmp_path / "s", Sample(index=idx, mu=np.array([0.5, 1.0]),
                                            status=STATUS_OK, reason="", wall_time=0.0))
    assert st.committed_indices() == {3, ENRICHMENT_BASE + 12}
    assert [s.index for s in st.samples()] == [3, ENRICHMENT_BASE + 12]


def test_init_store_again_keeps_the_samples(tmp_path):
    st = make_store(tmp_path / "s")
    write_sample(tmp_path / "s", Sample(index=0, mu=np.array([0.5, 1.0]), status=STATUS_OK,
                                        reason="", wall_time=0.0))
    st2 = make_store(tmp_path / "s", extra={"note": "re-initialised"})
    assert st2.manifest["note"] == "re-initialised" and st2.committed_indices() == {0}
    assert st.committed_indices() == {0}
