"""POD of a snapshot store that does not fit in memory (streamed, bounded memory).

The snapshots u_1 … u_S (rows, store ordering) stay on disk; the POD in the inner product
⟨u, v⟩_X = u X vᵀ is computed with the conventions of :func:`hybrid.surrogate.pod.pod`
(modes as rows, X-orthonormal, decreasing singular values σ_k of c ↦ Σ_s c_s u_s) in three
passes over the store, each reading it in blocks of *DOFs* (all S samples, a range of
columns):

1. **Gram matrix** (method of snapshots), exact in exact arithmetic:

       C = U X Uᵀ = Σ_r U[:, r] (X[r, c(r)] U[:, c(r)]ᵀ),

   summed over row blocks r of X, where c(r) is the column range X's rows r touch. In store
   ordering (DOFs sorted by coordinates) X is banded, c(r) is r plus about one mesh line,
   so one pass reads each value about once. C = V Λ Vᵀ, σ_k = √λ_k; the total energy
   Σ_s ‖u_s‖²_X = tr C.
2. **Modes**: φ_k = Σ_s V_sk u_s / σ_k for the kept k, accumulated block by block of columns,
   then X-orthonormalised in place (:func:`x_orthonormalise`: Cholesky-QR twice; the basis
   is the output and the only N-sized array held).
3. **Rayleigh–Ritz refinement** (``refine=True``): R = U X Qᵀ (S × n, one more pass) and the
   SVD R = W Σ Yᵀ give the singular values and the rotation of the basis, Φ = Yᵀ Q. The
   Gram route squares the condition number (σ_k accurate to √ε σ_1 only); this step takes
   the singular values and the in-span rotation from R, as the in-memory ``"qr"`` method
   does, so the basis matches pod.py's default to round-off wherever span(Q) holds the
   dominant modes (measured on a thermal-block store: ~1e-13 for all 24 modes, against
   ~1e-10 for the last modes without this pass). Modes with σ_k ≤ rtol·σ_1 (default 1e-7,
   above the Gram matrix's √ε limit) are dropped in step 1 and not recovered; pod.py's
   ``"qr"`` keeps them down to ~1e-13·σ_1.

Why the Gram route (and DOF blocks) rather than an incremental or randomised SVD: for
S ≲ 10⁴ the S × S Gram matrix is small (S = 200: 320 kB), the result is the exact POD of the
whole store (no rank guess, no sampling error, no dependence on the order of the samples),
it needs three sequential reads, and blocks of DOFs read each sample file once per pass
(blocks of samples would read the store S/(2b) times for the off-diagonal Gram blocks).
Memory: O(S² + (S + n)·(block + band) + n·N) for n kept modes (n·N is the basis itself,
the output) — independent of S·N.

Reading: a sample's ``u`` dataset is contiguous and uncompressed in its HDF5 file
(:func:`hybrid.core.store.write_sample`), so :class:`StoreFields` memory-maps it at
``dset.id.get_offset()`` and copies one column range at a time; a dataset stored otherwise
(chunked, another dtype) is read with h5py slicing instead, with the same result. Nothing
here is collective; reading needs numpy, scipy and h5py only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from hybrid.core.store import STATUS_OK, SnapshotStore
from hybrid.errors import StoreError
from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.pod import POD, _truncation
from hybrid.surrogate.reductor import INNER_PRODUCTS

DEFAULT_BLOCK_BYTES = 64 << 20
"""Default size of one block of snapshot values (S × block DOFs × 8 bytes)."""


@dataclass(frozen=True)
class _Field:
    path: Path
    offset: int | None
    """Byte offset of the contiguous little-endian float64 data, or None (read with h5py)."""


class StoreFields:
    """Read access by column blocks to the fields u of a store's successful samples.

    Only the layout of each sample file is read at construction (status, μ, where ``u``
    lies); values are read by :meth:`columns`, which touches the column range asked for and
    nothing else. Samples are ordered by index, as in :meth:`SnapshotStore.snapshots`.
    """

    def __init__(self, store: str | Path | SnapshotStore, *,
                 indices: Sequence[int] | None = None):
        st = store if isinstance(store, SnapshotStore) else SnapshotStore(store)
        self.path, self.n_dofs = st.path, st.n_dofs
        want = None if indices is None else {int(i) for i in indices}
        fields, mu, idx = [], [], []
        for p in st.sample_files():
            i = int(p.stem[1:])
            if want is not None and i not in want:
                continue
            try:
                with h5py.File(p, "r") as f:
                    if str(f.attrs["status"]) != STATUS_OK:
                        continue
                    d = f["u"]
                    if d.shape != (self.n_dofs,):
                        raise StoreError(f"{p}: sample field has {d.size} values, the store "
                                         f"has {self.n_dofs} DOFs")
                    plain = (d.chunks is None and d.compression is None
                             and d.dtype == np.dtype("<f8"))
                    off = d.id.get_offset() if plain else None
                    mu.append(f["mu"][()])
                fields.append(_Field(p, None if off is None else int(off)))
                idx.append(i)
            except (OSError, KeyError) as exc:
                raise StoreError(f"{p}: sample file is unreadable or incomplete ({exc})") \
                    from None
        if want is not None and want - set(idx):
            missing = sorted(want - set(idx))[:5]
            raise StoreError(f"{st.path}: no successful sample with index {missing}")
        self._fields = fields
        self.indices = np.array(idx, dtype=int)
        self.mu = np.array(mu).reshape(len(idx), -1)

    def __len__(self) -> int:
        return len(self._fields)

    @property
    def memory_mapped(self) -> bool:
        """Whether every field is read through a memory map (contiguous float64 layout)."""
        return all(f.offset is not None for f in self._fields)

    def columns(self, lo: int, hi: int) -> np.ndarray:
        """Values of DOFs lo … hi−1 of every sample, shape (S, hi − lo), checked finite."""
        if not 0 <= lo <= hi <= self.n_dofs:
            raise StoreError(f"column range [{lo}, {hi}) outside 0 … {self.n_dofs}")
        out = np.empty((len(self._fields), hi - lo))
        for s, f in enumerate(self._fields):
            if hi == lo:
                break
            if f.offset is not None:
                mm = np.memmap(f.path, dtype="<f8", mode="r", offset=f.offset + 8 * lo,
                               shape=(hi - lo,))
                out[s] = mm
                del mm
            else:
                with h5py.File(f.path, "r") as h:
                    out[s] = h["u"][lo:hi]
            if not np.all(np.isfinite(out[s])):
                raise StoreError(f"{f.path}: sample marked ok has non-finite values in its "
                                 "field u (NaN or inf); remove the file or re-solve it")
        return out

    def blocks(self, block: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(lo, hi, U[:, lo:hi]) for consecutive column blocks of ``block`` DOFs."""
        for lo in range(0, self.n_dofs, block):
            hi = min(lo + block, self.n_dofs)
            yield lo, hi, self.columns(lo, hi)


# ----------------------------------------------------------------------------- X from disk
def _csr(group: h5py.Group) -> sp.csr_matrix:
    return sp.csr_matrix((group["data"][()], group["indices"][()], group["indptr"][()]),
                         shape=tuple(group.attrs["shape"]))


def store_inner_product(store: str | Path | SnapshotStore, kind: str,
                        theta_ref: np.ndarray | None = None) -> sp.csr_matrix:
    """The inner-product matrix ``kind`` read from STORE/static.h5 alone.

    Same matrices as :func:`hybrid.surrogate.reductor.inner_product` (``l2``: M, ``h10``: K,
    ``h1``: M + K, ``energy``: Σ_q θ_q(μ̄) A_q), without loading the rest of the static part
    (at 10⁶ DOFs the affine terms alone are ~100 MB each): A_q are read one at a time.
    """
    if kind not in INNER_PRODUCTS:
        raise SurrogateError(f"unknown inner product {kind!r}; expected one of "
                             f"{INNER_PRODUCTS}")
    st = store if isinstance(store, SnapshotStore) else SnapshotStore(store)
    path = st.path / "static.h5"
    try:
        with h5py.File(path, "r") as f:
            if kind == "l2":
                return _csr(f["inner_product/mass"])
            if kind == "h10":
                return _csr(f["inner_product/stiffness"])
            if kind == "h1":
                return sp.csr_matrix(_csr(f["inner_product/mass"])
                                     + _csr(f["inner_product/stiffness"]))
            n_a = int(f["affine"].attrs["n_a"])
            if n_a == 0 or theta_ref is None:
                raise SurrogateError("the 'energy' inner product needs an affine model; "
                                     "use --inner-product h1, h10 or l2")
            theta = np.asarray(theta_ref, dtype=float)
            if theta.shape != (n_a,):
                raise SurrogateError(f"theta_ref has {theta.size} values, the store {n_a} "
                                     "affine terms")
            X = float(theta[0]) * _csr(f["affine/A_0"])
            for q in range(1, n_a):
                X = X + float(theta[q]) * _csr(f[f"affine/A_{q}"])
            return sp.csr_matrix(X)
    except FileNotFoundError:
        raise StoreError(f"{path}: static part of the store is missing") from None
    except (OSError, KeyError) as exc:
        raise StoreError(f"{path}: static part of the store is unreadable ({exc})") from None


# ----------------------------------------------------------------------------- the POD
def _row_blocks(X: sp.csr_matrix | None, n: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """(lo, hi, c0, c1): rows lo … hi−1 of X and the column range c0 … c1−1 they touch."""
    if X is not None:
        indptr, indices = X.indptr, X.indices
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        if X is None:
            yield lo, hi, lo, hi
            continue
        cols = indices[indptr[lo]:indptr[hi]]
        c0 = min(int(cols.min()), lo) if cols.size else lo
        c1 = max(int(cols.max()) + 1, hi) if cols.size else hi
        yield lo, hi, c0, c1


def _x_products(fields: StoreFields | None, Xc: sp.csr_matrix | None, Y: np.ndarray,
                block: int, N: int) -> np.ndarray:
    """A X Yᵀ by row blocks of X, A = the store's U (fields given) or Y itself.

    Each row block r reads the columns c(r) it touches (:func:`_row_blocks`): one pass over
    the store, no N-sized temporary.
    """
    rows = len(fields) if fields is not None else Y.shape[0]
    out = np.zeros((rows, Y.shape[0]))
    for lo, hi, c0, c1 in _row_blocks(Xc, N, block):
        Yc = Y[:, c0:c1]
        A = fields.columns(lo, hi) if fields is not None else Y[:, lo:hi]
        XY = Y[:, lo:hi].T if Xc is None else Xc[lo:hi, c0:c1] @ Yc.T    # (hi − lo, k)
        out += A @ XY
    return out


def gram_matrix(fields: StoreFields, X: sp.spmatrix | None = None, *,
                block: int | None = None) -> np.ndarray:
    """C = U X Uᵀ (S × S) in one pass over blocks of ``block`` DOFs (symmetrised)."""
    S, N = len(fields), fields.n_dofs
    block = block or _default_block(S)
    Xc = _checked_matrix(X, N)
    C = np.zeros((S, S))
    for lo, hi, c0, c1 in _row_blocks(Xc, N, block):
        Uc = fields.columns(c0, c1)
        Ur = Uc[:, lo - c0:hi - c0]
        XU = Ur.T if Xc is None else Xc[lo:hi, c0:c1] @ Uc.T       # (hi − lo, S)
        C += Ur @ XU
    return 0.5 * (C + C.T)


def _checked_matrix(X: sp.spmatrix | None, N: int) -> sp.csr_matrix | None:
    Xc = None if X is None else sp.csr_matrix(X)
    if Xc is not None and Xc.shape != (N, N):
        raise SurrogateError(f"inner-product matrix is {Xc.shape[0]}×{Xc.shape[1]}, the store "
                             f"has {N} DOFs")
    return Xc


def _transform(T: np.ndarray, B: np.ndarray, block: int) -> np.ndarray:
    """T B computed in place over column blocks of B (T: (k, m) with k ≤ m = rows of B)."""
    k = T.shape[0]
    for lo in range(0, B.shape[1], block):
        B[:k, lo:lo + block] = T @ B[:, lo:lo + block]
    return B[:k]


def x_orthonormalise(B: np.ndarray, X: sp.spmatrix | None, *, block: int,
                     rtol: float = 1e-12) -> np.ndarray:
    """X-orthonormalise the rows of B in place: Cholesky-QR twice, by eigen-decomposition.

    G = B X Bᵀ = E D Eᵀ, B ← D^{-1/2} Eᵀ B (rows with d ≤ rtol·max d dropped), twice: the
    second round restores orthonormality to round-off for the nearly orthonormal rows that
    the Gram route gives. Memory: B itself plus one column block (unlike Gram–Schmidt's
    copies of the whole basis).
    """
    Xc = _checked_matrix(X, B.shape[1])
    for _ in range(2):
        G = _x_products(None, Xc, B, block, B.shape[1])
        d, E = np.linalg.eigh(0.5 * (G + G.T))
        d, E = d[::-1], E[:, ::-1]
        keep = d > rtol * d[0]
        B = _transform(E[:, keep].T / np.sqrt(d[keep])[:, None], B, block)
    return B


def _default_block(S: int) -> int:
    return max(1, DEFAULT_BLOCK_BYTES // (8 * max(S, 1)))


def streaming_pod(
    store: str | Path | SnapshotStore | StoreFields,
    X: sp.spmatrix | None = None,
    *,
    modes: int | None = None,
    energy: float | None = None,
    block: int | None = None,
    refine: bool = True,
    rtol: float = 1e-7,
) -> POD:
    """POD of a store's successful snapshots in the X inner product, read block by block.

    Args:
        store: the store (a path, a :class:`SnapshotStore`, or :class:`StoreFields` to
            choose the samples).
        X: (N, N) symmetric positive (semi)definite inner-product matrix in store ordering
            (e.g. :func:`store_inner_product`), or None (Euclidean).
        modes: keep at most this many modes.
        energy: keep the fewest modes capturing this fraction of Σ‖u_s‖²_X.
        block: DOFs per block (default: S × block × 8 bytes ≈ 64 MiB).
        refine: the Rayleigh–Ritz pass (module docstring, step 3).
        rtol: modes with σ_k ≤ rtol·σ_1 from the Gram spectrum are dropped (its accuracy
            limit is √ε ≈ 1e-8).

    Returns:
        A :class:`~hybrid.surrogate.pod.POD` with ``method="streaming"``; its
        ``singular_values`` are the refined values of the kept modes followed by the
        Gram spectrum's above rtol·σ_1.
    """
    fields = store if isinstance(store, StoreFields) else StoreFields(store)
    S, N = len(fields), fields.n_dofs
    if S == 0:
        raise SurrogateError(f"{fields.path}: no successful snapshot; POD needs at least one")
    if block is not None and block < 1:
        raise SurrogateError(f"block must be >= 1 DOF, got {block}")
    block = block or _default_block(S)
    Xc = _checked_matrix(X, N)
    C = gram_matrix(fields, Xc, block=block)
    total = float(np.trace(C))
    lam, V = np.linalg.eigh(C)
    lam, V = lam[::-1], V[:, ::-1]
    s = np.sqrt(np.maximum(lam, 0.0))
    if not s[0] > 0:
        raise SurrogateError("the snapshots are all zero: no POD basis")
    s = s[s > rtol * s[0]]
    n = _truncation(s, total, modes, energy, rtol)
    W = V[:, :n].T / s[:n, None]                                   # (n, S)
    Q = np.zeros((n, N))
    for lo, hi, U in fields.blocks(block):
        Q[:, lo:hi] = W @ U
    Q = x_orthonormalise(Q, Xc, block=block)
    if not refine:
        return POD(modes=Q, singular_values=s, total_energy=total, method="streaming")
    R = _x_products(fields, Xc, Q, block, N)                      # U X Qᵀ, (S, k)
    _, sr, Yt = np.linalg.svd(R, full_matrices=False)
    Q = _transform(Yt, Q, block)
    n = _truncation(sr, total, modes, energy, 1e-13)
    spectrum = np.concatenate([sr, s[sr.size:]])
    return POD(modes=Q[:n], singular_values=spectrum, total_energy=total, method="streaming")


def coefficients(fields: StoreFields, modes: np.ndarray, X: sp.spmatrix | None = None, *,
                 block: int | None = None) -> np.ndarray:
    """POD coefficients c_sk = ⟨u_s, φ_k⟩_X = (U X Φᵀ)_sk of every sample, (S, n), one pass.

    What a network is trained on (μ_s ↦ c_s): S × n numbers, read without loading U.
    """
    N = fields.n_dofs
    modes = np.atleast_2d(np.asarray(modes, dtype=float))
    if modes.shape[1] != N:
        raise SurrogateError(f"modes have {modes.shape[1]} values, the store {N} DOFs")
    block = block or _default_block(len(fields))
    return _x_products(fields, _checked_matrix(X, N), modes, block, N)
