"""The streamed POD of a store equals the in-memory POD, reads in blocks, and bounds memory."""

from __future__ import annotations

import shutil
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.streaming_pod import known_modes, q1_mass, synthetic_fields, write_store
from hybrid.core.store import SnapshotStore, sample_files
from hybrid.errors import HybridError, StoreError
from hybrid.surrogate import SurrogateError
from hybrid.surrogate.build import default_mu_ref
from hybrid.surrogate.coefficients import coefficients_of
from hybrid.surrogate.pod import pod
from hybrid.surrogate.reductor import inner_product
from hybrid.surrogate.streaming import (
    StoreFields,
    coefficients,
    gram_matrix,
    store_inner_product,
    streaming_pod,
)
from tests.conftest import run_cli, small_case_text


@pytest.fixture(scope="module")
def campaign_store(tmp_path_factory):
    """A thermal block 3×3 store (P1, 18×18 cells: 361 DOFs, 24 samples)."""
    d = tmp_path_factory.mktemp("spod")
    case = d / "case.toml"
    case.write_text(small_case_text(cells=18, blocks=3, samples=24, store=str(d / "store")))
    r = run_cli(["campaign", case, "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "store"


def _theta_ref(st: SnapshotStore) -> np.ndarray:
    spec = coefficients_of(st.manifest, st.space.dim)
    return spec.theta_a(default_mu_ref(st.space))


def _mode_errors(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Max-norm difference of the rows of A and B relative to A's rows, up to row signs."""
    sg = np.sign(np.sum(A * B, axis=1))
    return np.abs(A - sg[:, None] * B).max(axis=1) / np.abs(A).max(axis=1)


@pytest.mark.parametrize("kind", ["l2", "h1", "energy"])
def test_streamed_basis_equals_in_memory_basis(campaign_store, kind):
    st = SnapshotStore(campaign_store)
    mu, U = st.snapshots()
    theta = _theta_ref(st) if kind == "energy" else None
    X = inner_product(st.static, kind, theta)
    Xs = store_inner_product(campaign_store, kind, theta)
    assert abs(X - Xs).max() == 0.0                      # the same matrix, read alone
    ref = pod(U, X)                                      # in memory, the default ("qr")
    fields = StoreFields(campaign_store)
    assert fields.memory_mapped and len(fields) == U.shape[0] == 24
    np.testing.assert_array_equal(fields.mu, mu)
    P = streaming_pod(fields, Xs)
    assert P.n_modes == ref.n_modes == 24                 # 24 independent snapshots
    assert _mode_errors(ref.modes, P.modes).max() < 1e-8
    np.testing.assert_allclose(P.singular_values[:24], ref.singular_values[:24], rtol=1e-10)
    assert P.total_energy == pytest.approx(ref.total_energy, rel=1e-12)
    np.testing.assert_allclose(P.modes @ (X @ P.modes.T), np.eye(24), atol=1e-12)
    # truncation by energy and by rank, as pod.py does
    for kw in ({"energy": 1 - 1e-4}, {"modes": 5}):
        a, b = pod(U, X, **kw), streaming_pod(fields, Xs, **kw)
        assert a.n_modes == b.n_modes
        assert _mode_errors(a.modes, b.modes).max() < 1e-8


def test_block_size_does_not_change_the_result(campaign_store):
    st = SnapshotStore(campaign_store)
    X = store_inner_product(st, "h1")
    fields = StoreFields(st)
    N = fields.n_dofs
    _, U = st.snapshots()
    C_ref = U @ (X @ U.T)
    runs = {}
    for block in (1, 7, N):
        np.testing.assert_allclose(gram_matrix(fields, X, block=block), C_ref,
                                   rtol=1e-12, atol=1e-14 * np.abs(C_ref).max())
        runs[block] = streaming_pod(fields, X, block=block)
    for block in (1, 7):
        assert _mode_errors(runs[N].modes, runs[block].modes).max() < 1e-10
        np.testing.assert_allclose(runs[block].singular_values, runs[N].singular_values,
                                   rtol=1e-11)
    np.testing.assert_allclose(gram_matrix(fields, None, block=7), U @ U.T, rtol=1e-12)
    # the training data: coefficients ⟨u_s, φ_k⟩_X, streamed, against U X Φᵀ in memory
    Phi = runs[N].modes[:6]
    c = coefficients(fields, Phi, X, block=7)
    np.testing.assert_allclose(c, U @ (X @ Phi.T), rtol=1e-10, atol=1e-12 * np.abs(c).max())
    with pytest.raises(SurrogateError, match="modes have 5 values, the store 361 DOFs"):
        coefficients(fields, np.ones((2, 5)), X)


def test_failed_and_chunked_samples(campaign_store, tmp_path):
    """A failed sample is skipped; a chunked dataset is read through h5py, same basis."""
    store = tmp_path / "store"
    shutil.copytree(campaign_store, store)
    files = sample_files(store)
    with h5py.File(files[3], "a") as f:
        f.attrs["status"] = "failed"
        del f["u"]
    with h5py.File(files[5], "a") as f:
        u = f["u"][()]
        del f["u"]
        f.create_dataset("u", data=u, chunks=(50,))
    st = SnapshotStore(store)
    mu, U = st.snapshots()
    X = store_inner_product(st, "l2")
    fields = StoreFields(st)
    assert len(fields) == 23 and not fields.memory_mapped
    assert 3 not in fields.indices
    ref, P = pod(U, X), streaming_pod(fields, X, block=40)
    assert _mode_errors(ref.modes, P.modes).max() < 1e-8
    sub = StoreFields(st, indices=[0, 5, 7])
    np.testing.assert_array_equal(sub.columns(0, sub.n_dofs), U[[0, 4, 6]])
    with pytest.raises(StoreError, match=r"no successful sample with index \[3\]"):
        StoreFields(st, indices=[3])


def test_bad_values_and_inputs_are_one_line_errors(campaign_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(campaign_store, store)
    target = sample_files(store)[2]
    with h5py.File(target, "a") as f:
        f["u"][10] = np.nan
    fields = StoreFields(store)
    X = store_inner_product(store, "l2")
    with pytest.raises(StoreError, match=rf"{target.name}: sample marked ok has non-finite"):
        streaming_pod(fields, X)
    with pytest.raises(SurrogateError, match="block must be >= 1"):
        streaming_pod(fields, X, block=0)
    with pytest.raises(SurrogateError, match=r"inner-product matrix is 3×3"):
        streaming_pod(fields, sp.eye(3))
    with pytest.raises(SurrogateError, match="unknown inner product 'hdiv'"):
        store_inner_product(store, "hdiv")
    with pytest.raises(SurrogateError, match="theta_ref has 2 values, the store 9"):
        store_inner_product(store, "energy", np.ones(2))
    with pytest.raises(HybridError, match="energy' inner product needs an affine model"):
        store_inner_product(store, "energy")
    (store / "static.h5").unlink()
    with pytest.raises(StoreError, match="static part of the store is missing"):
        store_inner_product(store, "l2")


def test_memory_stays_bounded_and_the_known_basis_is_found(tmp_path):
    """40 × 2e5 snapshots (64 MB dense): the streamed POD allocates a fraction of that."""
    m, n, S = 447, 4, 40
    X = q1_mass(m)
    Phi = known_modes(m, n, X)
    sigma = np.array([1.0, 0.3, 0.05, 0.01])
    gen, _ = synthetic_fields(Phi, sigma, S, noise=0.0, seed=2)
    write_store(tmp_path / "store", X, gen)
    dense = 8 * S * m * m
    fields = StoreFields(tmp_path / "store")
    tracemalloc.start()
    P = streaming_pod(fields, X, block=4000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert P.n_modes == n                       # rank 4: the Gram spectrum's rest is dropped
    np.testing.assert_allclose(P.singular_values[:n], sigma, rtol=1e-10)
    C = P.modes @ (X @ Phi.T)
    np.testing.assert_allclose(np.abs(C), np.eye(n), atol=1e-9)
    # the basis itself (n × N, 6.4 MB) and one block of values (S × 4000 + band): ≪ S·N
    assert peak < 0.25 * dense, (peak, dense)        # measured 10.4 MB of 64 MB
    assert peak > 8 * n * m * m                 # it did hold the basis (the bound can fail)


def test_train_with_a_streamed_store_equals_the_in_memory_build(campaign_store):
    """build_surrogate(pod_method="streaming") never loads the store; it gives the in-memory
    build's basis (up to signs), coefficients and validation errors."""
    from hybrid.surrogate.build import BuildOptions, build_surrogate
    from hybrid.surrogate.training import TrainingConfig

    store = campaign_store
    cfg = dict(validation_fraction=0.25, seed=0, progress=False, device="cpu", threads=1)
    ref, _ = build_surrogate(store, BuildOptions(kind="galerkin", modes=8, pod_method="qr",
                                                 training=TrainingConfig(**cfg)))
    got, rep = build_surrogate(store, BuildOptions(kind="galerkin", modes=8,
                                                   pod_method="streaming",
                                                   training=TrainingConfig(**cfg)))
    assert rep["pod_method"] == "streaming"
    st = SnapshotStore(store)
    X = inner_product(st.static, "energy", _theta_ref(st))     # the build's inner product
    G = got.modes @ (X @ ref.modes.T)      # X-orthonormal bases: ±identity up to round-off
    np.testing.assert_allclose(np.abs(np.diag(G)), 1.0, atol=1e-8)
    mu = SnapshotStore(store).snapshots()[0][:4]
    np.testing.assert_allclose(got.field(mu), ref.field(mu), rtol=0,
                               atol=1e-8 * np.abs(ref.field(mu)).max())
    m0, m1 = ref.meta["metrics"], got.meta["metrics"]
    np.testing.assert_allclose(m1["surrogate_error_mean"], m0["surrogate_error_mean"],
                               rtol=1e-5)
