"""The snapshot store: the contract between the FEM side and the surrogate side.

A store is a directory (format described in docs/store-format.md)::

    STORE/store.json            manifest: format version, case text, parameter space, sizes,
                                QoI names, solver options, package versions
    STORE/static.h5             mesh geometry/cells in store ordering, inner-product matrices
                                (mass, stiffness), affine terms A_q, f_q, Dirichlet dofs,
                                linear QoI functionals
    STORE/plan.json             the campaign's sampling plan (method, seed, μ of every sample)
    STORE/samples/s0000012.h5   one committed sample: μ, status, reason, wall time, field, QoIs

Field values are in the *store ordering*, which does not depend on the number of MPI ranks
(DOFs sorted by coordinates; see :mod:`hybrid.fem.ordering`). Every file is written to a
temporary name, flushed with fsync and renamed into place, so a sample is either fully
committed or absent, whatever moment the writer is killed at. Only numpy and h5py are used
here: reading a store never needs DOLFINx or MPI.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from hybrid.core.parameters import ParameterSpace
from hybrid.errors import HybridError, StoreError

FORMAT = "hybrid-store"
FORMAT_VERSION = 1
STATUS_OK = "ok"
STATUS_FAILED = "failed"
#: Samples added outside a campaign plan (the coupler's enrichment) are numbered from here,
#: so they never collide with a campaign plan, however far it grows.
ENRICHMENT_BASE = 5_000_000


# ----------------------------------------------------------------------------- atomic writes
def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable."""
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: Path, *, sync_dir: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success fsync it and rename it into place.

    The temporary file starts with ``.tmp-`` so an interrupted write leaves only debris that
    :func:`clean_debris` removes; ``target`` itself is never seen half-written. The data are
    fsynced before the rename; with ``sync_dir=False`` the directory entry is not, so after a
    power loss (not a process kill) the file may be absent — never partial. Campaigns use this
    for samples and fsync the directory once at the end of a run.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        if sync_dir:
            _fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def h5_atomic(target: Path, *, sync_dir: bool = True) -> Iterator[h5py.File]:
    """Yield an HDF5 file built in memory; on success write it to ``target`` atomically.

    HDF5 reports a failed write (a full disk) late and noisily, from its buffers and
    destructors; building the file in memory and writing its bytes with plain Python I/O
    turns every such failure into one ``OSError`` (ENOSPC, EROFS, EACCES) at the write, and
    ``target`` is untouched (:func:`atomic_path`).
    """
    import io

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        yield f
    with atomic_path(target, sync_dir=sync_dir) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())


@contextmanager
def store_lock(store: Path, *, wait: float = 30.0) -> Iterator[None]:
    """Hold the exclusive flock on STORE/.lock (the one campaigns hold) while writing.

    Waits up to ``wait`` seconds for another writer (another rank committing one sample),
    then raises :class:`StoreError`: a campaign holds the lock for its whole run.
    """
    import fcntl
    import time

    fd = os.open(store / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > wait:
                    raise StoreError(f"{store}: the store is locked by another writer (a "
                                     "running campaign?)") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def write_json(target: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False))


def clean_debris(store: Path) -> int:
    """Remove temporary files left by interrupted writes; return how many."""
    n = 0
    for d in (store, store / "samples"):
        if d.is_dir():
            for p in d.glob(".tmp-*"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _write_csr(group: h5py.Group, name: str, mat: sp.spmatrix) -> None:
    m = sp.csr_matrix(mat)
    g = group.create_group(name)
    g.create_dataset("data", data=m.data)
    g.create_dataset("indices", data=m.indices.astype(np.int64))
    g.create_dataset("indptr", data=m.indptr.astype(np.int64))
    g.attrs["shape"] = m.shape


def _read_csr(group: h5py.Group) -> sp.csr_matrix:
    return sp.csr_matrix(
        (group["data"][()], group["indices"][()], group["indptr"][()]),
        shape=tuple(group.attrs["shape"]),
    )


# ----------------------------------------------------------------------------- static part
def affine_observation_operator(L: np.ndarray, B: sp.spmatrix, b: np.ndarray,
                                theta_a: np.ndarray, theta_f: np.ndarray
                                ) -> tuple[np.ndarray, np.ndarray]:
    """The observation operator at θ(μ), ϑ(μ): y = rows @ u + offset.

    rows = L + Σ_q θ_q B_{i,q}, offset = Σ_q ϑ_q b_{i,q}; ``B`` is (n_obs·Q_a, N) with
    row i·Q_a + q = B_{i,q} (the store's layout), ``b`` is (n_obs, Q_f).
    """
    ta = np.asarray(theta_a, dtype=float)
    W = sp.kron(sp.eye(L.shape[0]), ta[None, :], format="csr")   # (n_obs, n_obs·Q_a)
    return L + (W @ B).toarray(), np.asarray(b, dtype=float) @ np.asarray(theta_f, dtype=float)


@dataclass
class StaticData:
    """Partition-independent data written once per store (all arrays in store ordering).

    Attributes:
        points: (N, gdim) coordinates of the DOFs (scalar Lagrange: one point per DOF).
        cells: (C, k) cell connectivity in store DOF indices (for P1 the mesh cells).
        cell_type: meshio cell type name ("triangle", "quad", "tetra", "hexahedron").
        mass: (N, N) L² inner-product matrix M_ij = ∫ φ_i φ_j (no boundary conditions).
        stiffness: (N, N) H¹-seminorm matrix K_ij = ∫ ∇φ_i·∇φ_j (no boundary conditions).
        dirichlet_dofs: store indices of DOFs fixed by the (homogeneous) Dirichlet condition.
        affine_a: operator terms A_q (no boundary conditions applied), or [] if not affine.
        affine_f: (Q_f, N) right-hand-side terms f_q, or an empty array.
        qoi_functionals: (n_qoi, N) rows l with QoI(u) = l·u for linear QoIs.
        observation_functionals: (n_obs, N) the μ-independent part L of the observations.
        observation_affine: the μ-dependent part of the observations, or None (all linear):
            CSR (n_obs·Q_a, N) whose row i·Q_a + q is B_{i,q}, so that observation i is

                y_i(μ, u) = L_i u + Σ_q θ_q(μ) B_{i,q} u + Σ_q ϑ_q(μ) b_{i,q}

            with the model's coefficients θ_q, ϑ_q of ``affine_a``/``affine_f``. A boundary
            flux through Γ has L_i = 0, B_{i,q} = −g_Γᵀ A_q, b_{i,q} = g_Γᵀ f_q; point sensors
            and averages have B = 0, b = 0. Stored sparse: the flux rows live next to Γ.
        observation_affine_f: (n_obs, Q_f) the b_{i,q}, or None (with ``observation_affine``).
        initial_terms: transient models only: (Q_0, N) the μ-free fields g_q of an initial
            state u0(μ) = Σ_q ϑ0_q(μ) g_q (interpolated; θ trees in the manifest's
            ``model.theta_0``), or None (steady, or an initial state that is not affine in μ).
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    mass: sp.csr_matrix
    stiffness: sp.csr_matrix
    dirichlet_dofs: np.ndarray
    affine_a: list[sp.csr_matrix]
    affine_f: np.ndarray
    qoi_functionals: np.ndarray
    observation_functionals: np.ndarray | None = None
    observation_affine: sp.csr_matrix | None = None
    observation_affine_f: np.ndarray | None = None
    initial_terms: np.ndarray | None = None

    @property
    def n_dofs(self) -> int:
        return self.points.shape[0]

    @property
    def observations_affine(self) -> bool:
        """Whether some observation depends on μ (boundary fluxes)."""
        return self.observation_affine is not None

    def observation_operator(self, theta_a: np.ndarray,
                             theta_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n_obs, N), offset (n_obs,)) with y = rows @ u + offset at θ(μ), ϑ(μ)."""
        L = np.atleast_2d(np.asarray(self.observation_functionals, dtype=float))
        L = L.reshape(-1, self.n_dofs)
        if not self.observations_affine:
            return L.copy(), np.zeros(L.shape[0])
        ta = np.asarray(theta_a, dtype=float)
        n_obs, qa = L.shape[0], ta.shape[-1]
        B = sp.csr_matrix(self.observation_affine)
        if B.shape[0] != n_obs * qa:
            raise StoreError(f"observation_affine has {B.shape[0]} rows, expected "
                             f"{n_obs}·{qa}")
        return affine_observation_operator(L, B, self.observation_affine_f, ta, theta_f)

    def observe(self, u: np.ndarray, theta_a: np.ndarray | None = None,
                theta_f: np.ndarray | None = None) -> np.ndarray:
        """Observations y of the field(s) u ((N,) or (S, N)) at θ(μ), ϑ(μ) ((Q,) or (S, Q)).

        The coefficients may be omitted when every observation is linear.
        """
        u = np.asarray(u, dtype=float)
        L = np.atleast_2d(np.asarray(self.observation_functionals, dtype=float))
        y = u @ L.reshape(-1, self.n_dofs).T
        if not self.observations_affine:
            return y
        if theta_a is None or theta_f is None:
            raise StoreError("these observations depend on mu (boundary fluxes): "
                             "pass theta_a and theta_f")
        n_obs = y.shape[-1]
        Bu = (sp.csr_matrix(self.observation_affine) @ u.T).T     # (…, n_obs·Q_a)
        Bu = Bu.reshape(*u.shape[:-1], n_obs, -1)
        return y + np.einsum("...iq,...q->...i", Bu, np.asarray(theta_a, dtype=float)) + \
            np.asarray(theta_f, dtype=float) @ np.asarray(self.observation_affine_f).T


def write_static(target: Path, s: StaticData, *, fingerprint: dict | None = None) -> None:
    """Write the static part atomically to ``target`` (static.h5).

    ``fingerprint`` (the case's, JSON) is kept as an attribute, so that a store whose
    manifest was lost still knows which case made it (:func:`static_fingerprint`).
    """
    if (s.observation_affine is None) != (s.observation_affine_f is None):
        raise StoreError(f"{target}: observation_affine and observation_affine_f must be "
                         "given together (the μ-dependent observation rows and offsets)")
    with h5_atomic(target) as f:
        if fingerprint is not None:
            f.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
        m = f.create_group("mesh")
        m.create_dataset("points", data=s.points)
        m.create_dataset("cells", data=s.cells.astype(np.int64))
        m.attrs["cell_type"] = s.cell_type
        ip = f.create_group("inner_product")
        _write_csr(ip, "mass", s.mass)
        _write_csr(ip, "stiffness", s.stiffness)
        f.create_dataset("dirichlet_dofs", data=s.dirichlet_dofs.astype(np.int64))
        a = f.create_group("affine")
        a.attrs["n_a"] = len(s.affine_a)
        for q, A in enumerate(s.affine_a):
            _write_csr(a, f"A_{q}", A)
        a.create_dataset("f", data=np.asarray(s.affine_f, dtype=float))
        f.create_dataset("qoi_functionals", data=s.qoi_functionals)
        if s.observation_functionals is not None:
            f.create_dataset("observation_functionals", data=s.observation_functionals)
        if s.observation_affine is not None:
            _write_csr(f, "observation_affine", s.observation_affine)
            f["observation_affine"].attrs["n_a"] = len(s.affine_a)
            f.create_dataset("observation_affine_f",
                             data=np.asarray(s.observation_affine_f, dtype=float))
        if s.initial_terms is not None:
            f.create_dataset("initial_terms", data=np.asarray(s.initial_terms, dtype=float))


def static_fingerprint(path: Path) -> dict | None:
    """The case fingerprint recorded in static.h5, or None (absent or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("fingerprint")
        return json.loads(raw) if raw is not None else None
    except (OSError, ValueError, TypeError):
        return None


def read_static(path: Path) -> StaticData:
    """Read static.h5 (StoreError if missing or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            a = f["affine"]
            return StaticData(
                points=f["mesh/points"][()],
                cells=f["mesh/cells"][()],
                cell_type=str(f["mesh"].attrs["cell_type"]),
                mass=_read_csr(f["inner_product/mass"]),
                stiffness=_read_csr(f["inner_product/stiffness"]),
                dirichlet_dofs=f["dirichlet_dofs"][()],
                affine_a=[_read_csr(a[f"A_{q}"]) for q in range(int(a.attrs["n_a"]))],
                affine_f=a["f"][()],
                qoi_functionals=f["qoi_functionals"][()],
                observation_functionals=(f["observation_functionals"][()]
                                         if "observation_functionals" in f else None),
                observation_affine=(_read_csr(f["observation_affine"])
                                    if "observation_affine" in f else None),
                observation_affine_f=(f["observation_affine_f"][()]
                                      if "observation_affine" in f else None),
                initial_terms=f["initial_terms"][()] if "initial_terms" in f else None,
            )
    except FileNotFoundError:
        raise StoreError(f"{path}: static part of the store is missing") from None
    except (OSError, KeyError) as exc:
        raise StoreError(f"{path}: static part of the store is unreadable ({exc})") from None


# ----------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One committed sample."""

    index: int
    mu: np.ndarray
    status: str
    reason: str
    wall_time: float
    u: np.ndarray | None = None
    qoi: np.ndarray | None = None
    run_id: str = ""
    ranks: int = 1
    iterations: int = -1

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def sample_path(store: Path, index: int) -> Path:
    """Path of sample ``index`` in ``store``."""
    return Path(store) / "samples" / f"s{index:07d}.h5"


def write_sample(store: Path, s: Sample) -> Path:
    """Commit one sample atomically; return its path."""
    target = sample_path(store, s.index)
    with h5_atomic(target, sync_dir=False) as f:
        f.attrs["index"] = s.index
        f.attrs["status"] = s.status
        f.attrs["reason"] = s.reason
        f.attrs["wall_time"] = s.wall_time
        f.attrs["run_id"] = s.run_id
        f.attrs["ranks"] = s.ranks
        f.attrs["iterations"] = s.iterations
        f.create_dataset("mu", data=np.asarray(s.mu, dtype=float))
        if s.u is not None:
            f.create_dataset("u", data=np.asarray(s.u, dtype=float))
        if s.qoi is not None:
            f.create_dataset("qoi", data=np.asarray(s.qoi, dtype=float))
    return target


def read_sample(path: Path, *, field: bool = True) -> Sample:
    """Read one committed sample (StoreError naming the file if it is corrupted)."""
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            return Sample(
                index=int(a["index"]),
                mu=f["mu"][()],
                status=str(a["status"]),
                reason=str(a["reason"]),
                wall_time=float(a["wall_time"]),
                u=f["u"][()] if field and "u" in f else None,
                qoi=f["qoi"][()] if "qoi" in f else None,
                run_id=str(a["run_id"]),
                ranks=int(a["ranks"]),
                iterations=int(a["iterations"]),
            )
    except (OSError, KeyError) as exc:
        raise StoreError(f"{path}: sample file is unreadable or incomplete ({exc})") from None


# ----------------------------------------------------------------------------- reader
SAMPLE_NAME = re.compile(r"s\d{7,}\.h5")


def sample_files(store: Path) -> list[Path]:
    """Sorted sample files of ``store``.

    A file in samples/ named ``s*.h5`` that is not a sample name (``s<7+ digits>.h5``) is
    refused, so it can never be read as one.
    """
    d = Path(store) / "samples"
    if not d.is_dir():
        return []
    files = sorted(d.glob("s*.h5"))
    for p in files:
        if not SAMPLE_NAME.fullmatch(p.name):
            raise StoreError(f"{p}: not a sample file name (s<index>.h5) in the store's "
                             "samples/; move it out of the store")
    return files


def read_plan(store: Path) -> dict | None:
    """STORE/plan.json (None when absent; StoreError when unreadable)."""
    p = Path(store) / "plan.json"
    if not p.is_file():
        return None
    try:
        plan = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{p}: sampling plan is corrupted ({exc}); delete it to rebuild "
                         "it from the case") from None
    if not isinstance(plan, dict) or not ({"method", "seed"} <= set(plan) or "mu" in plan):
        raise StoreError(f"{p}: sampling plan lacks 'method' and 'seed' (or its points "
                         "'mu'); delete it to rebuild it from the case")
    return plan


def _planned(plan: dict | None) -> int | None:
    """Number of planned samples (None when the plan, or its size, is unknown)."""
    if plan is None:
        return None
    if "mu" in plan:
        return len(plan["mu"])
    return int(plan["n"]) if "n" in plan else None


_MANIFEST_KEYS = {"parameters": list, "qoi": list, "n_dofs": int, "physics": dict,
                  "case_text": str}


def _check_manifest(mf: Path, m: dict) -> None:
    """The keys the readers rely on, with their types (StoreError naming the first problem)."""
    for key, typ in _MANIFEST_KEYS.items():
        if key not in m:
            raise StoreError(f"{mf}: manifest lacks {key!r}")
        if not isinstance(m[key], typ) or (typ is int and isinstance(m[key], bool)):
            raise StoreError(f"{mf}: manifest {key!r} must be a {typ.__name__}, got "
                             f"{type(m[key]).__name__}")
    if m["n_dofs"] < 1:
        raise StoreError(f"{mf}: manifest 'n_dofs' must be >= 1, got {m['n_dofs']}")
    try:
        space = ParameterSpace.from_dict(m["parameters"])
    except (HybridError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{mf}: manifest 'parameters' is malformed ({exc})") from None
    if "time" in m:
        _check_time_record(mf, m["time"])
    for p in space.parameters:
        if not (np.isfinite(p.lower) and np.isfinite(p.upper) and p.lower < p.upper):
            raise StoreError(f"{mf}: manifest 'parameters' is malformed ({p.name}: bounds "
                             f"[{p.lower:g}, {p.upper:g}])")


def output_time_indices(grid: np.ndarray, times, tol: float | None = None) -> np.ndarray:
    """Indices into the output times ``grid`` of ``times``; ValueError(t) for one off the grid.

    A time matches its nearest grid time within ``tol`` (default 1e-9·(1 + |t_end|)).
    """
    grid = np.asarray(grid, dtype=float)
    tol = 1e-9 * (1.0 + abs(grid[-1])) if tol is None else tol
    idx = []
    for x in np.atleast_1d(np.asarray(times, dtype=float)):
        k = int(np.argmin(np.abs(grid - x)))
        if abs(grid[k] - x) > tol:
            raise ValueError(float(x))
        idx.append(k)
    return np.array(idx, dtype=int)


def _check_time_record(mf: Path, rec) -> None:
    """The manifest's ``time`` record: output times strictly increasing and finite."""
    if not isinstance(rec, dict) or not isinstance(rec.get("times"), list):
        raise StoreError(f"{mf}: manifest 'time' must be an object with a list 'times'")
    try:
        t = np.asarray(rec["times"], dtype=float)
    except (TypeError, ValueError):
        raise StoreError(f"{mf}: manifest 'time.times' must be numbers") from None
    if t.ndim != 1 or t.size < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise StoreError(f"{mf}: manifest 'time.times' must be a non-empty, strictly "
                         "increasing list of finite numbers")
    obs = rec.get("observation_times", [])
    try:
        if not isinstance(obs, list) or any(not isinstance(o, int | float) for o in obs):
            raise ValueError
        output_time_indices(t, obs)
    except ValueError:
        raise StoreError(f"{mf}: manifest 'time.observation_times' must be output times") \
            from None


class SnapshotStore:
    """Read access to a snapshot store (numpy + h5py only).

    Example::

        store = SnapshotStore("runs/thermal_block/store")
        mu, U = store.snapshots()          # (S, P), (S, N) of the successful samples
        M = store.static.mass              # scipy.sparse CSR, store ordering
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mf = self.path / "store.json"
        if not mf.is_file():
            raise StoreError(f"{self.path}: not a snapshot store (no store.json)")
        try:
            self.manifest = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{mf}: manifest is corrupted ({exc})") from None
        if not isinstance(self.manifest, dict):
            raise StoreError(f"{mf}: manifest is not a JSON object (got "
                             f"{type(self.manifest).__name__})")
        if self.manifest.get("format") != FORMAT:
            raise StoreError(f"{mf}: not a hybrid store manifest")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{mf}: store format version {self.manifest.get('format_version')} is not "
                f"supported (this hybrid reads version {FORMAT_VERSION})"
            )
        _check_manifest(mf, self.manifest)
        self._static: StaticData | None = None

    # metadata
    @property
    def space(self) -> ParameterSpace:
        return ParameterSpace.from_dict(self.manifest["parameters"])

    @property
    def qoi_names(self) -> list[str]:
        return list(self.manifest["qoi"])

    @property
    def n_dofs(self) -> int:
        return int(self.manifest["n_dofs"])

    @property
    def observation_names(self) -> list[str]:
        return list(self.manifest.get("observations", []))

    @property
    def case_text(self) -> str:
        return self.manifest["case_text"]

    @property
    def field(self) -> dict:
        """What the stored field is: the manifest's ``field`` record, or ``{"name": "u"}``.

        An activation-time store: name, unit, kind, t_end, threshold, missing.
        """
        return self.manifest.get("field", {"name": "u"})

    @property
    def transient(self) -> bool:
        """Whether the samples are trajectories (the manifest has a ``time`` record)."""
        return "time" in self.manifest

    @property
    def time(self) -> dict | None:
        """The ``time`` record (scheme, t0, t_end, dt, every, times, observation_times)."""
        return self.manifest.get("time")

    @property
    def times(self) -> np.ndarray | None:
        """The output times (n_t,) of every trajectory, or None for a steady store."""
        return None if not self.transient else np.asarray(self.time["times"], dtype=float)

    @property
    def observation_times(self) -> np.ndarray | None:
        """The times at which the case's sensors observe (a subset of :attr:`times`)."""
        if not self.transient:
            return None
        return np.asarray(self.time.get("observation_times", []), dtype=float)

    def time_indices(self, times) -> np.ndarray:
        """Indices into :attr:`times` of ``times`` (each must be an output time)."""
        t = self.times
        if t is None:
            raise StoreError(f"{self.path}: a steady store has no time axis")
        try:
            return output_time_indices(t, times)
        except ValueError as exc:
            raise StoreError(f"{self.path}: t = {exc.args[0]:g} is not an output time of the "
                             f"store ({t[0]:g} … {t[-1]:g}, {t.size} times)") from None

    @property
    def physics(self) -> dict:
        return self.manifest["physics"]

    @property
    def static(self) -> StaticData:
        if self._static is None:
            self._static = read_static(self.path / "static.h5")
        return self._static

    def plan(self) -> dict | None:
        return read_plan(self.path)

    def plan_points(self) -> np.ndarray | None:
        """The campaign's sampling plan (n, P) in μ, recomputed from its generator."""
        plan = self.plan()
        if plan is None:
            return None
        if "mu" in plan:   # plans written out point by point (before generator plans)
            return np.array(plan["mu"], dtype=float).reshape(-1, self.space.dim)
        return self.space.sample(int(plan["n"]), plan["method"], int(plan["seed"]))

    # samples
    def sample_files(self) -> list[Path]:
        """The committed sample files, sorted; StoreError for a stray ``s*.h5`` file."""
        return sample_files(self.path)

    def committed_indices(self) -> set[int]:
        return {int(p.stem[1:]) for p in self.sample_files()}

    def samples(self, *, field: bool = False) -> list[Sample]:
        """Every committed sample, checked against the manifest (shapes, finite values)."""
        return [self._checked(read_sample(p, field=field), p) for p in self.sample_files()]

    def _checked(self, s: Sample, path: Path) -> Sample:
        P, N, Q = self.space.dim, self.n_dofs, len(self.qoi_names)
        lead = () if not self.transient else (len(self.time["times"]),)
        if np.shape(s.mu) != (P,):
            raise StoreError(f"{path}: sample has {np.size(s.mu)} parameters, the store {P}")
        if s.ok:
            if s.u is not None and np.shape(s.u) != (*lead, N):
                if not lead:
                    raise StoreError(f"{path}: sample field has {np.size(s.u)} values, the "
                                     f"store has {N} DOFs")
                raise StoreError(f"{path}: sample field has shape {np.shape(s.u)}, the store "
                                 f"has {lead[0]} output times × {N} DOFs")
            if s.qoi is not None and np.shape(s.qoi) != (*lead, Q):
                if not lead:
                    raise StoreError(f"{path}: sample has {np.size(s.qoi)} QoIs, the store {Q}")
                raise StoreError(f"{path}: sample has QoIs of shape {np.shape(s.qoi)}, the "
                                 f"store {(*lead, Q)}")
            nan_ok = "missing" in self.field   # an activation time: NaN = never activated
            for name, v in (("mu", s.mu), ("field u", s.u), ("QoIs", s.qoi)):
                if v is None:
                    continue
                fine = (~np.isinf(v) if nan_ok and name != "mu" else np.isfinite(v))
                if not np.all(fine):
                    raise StoreError(f"{path}: sample marked ok has non-finite values in its "
                                     f"{name} (NaN or inf); remove the file or re-solve it")
        return s

    def snapshots(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (μ, U) of the successful samples, ordered by sample index.

        μ has shape (S, P), U has shape (S, N) in store ordering. A transient store's samples
        are trajectories: use :meth:`trajectories`.
        """
        if self.transient:
            raise StoreError(f"{self.path}: the store holds trajectories (a transient case); "
                             "read them with SnapshotStore.trajectories()")
        ok = [s for s in self.samples(field=True) if s.ok]
        if not ok:
            return np.zeros((0, self.space.dim)), np.zeros((0, self.n_dofs))
        return np.array([s.mu for s in ok]), np.array([s.u for s in ok])

    def trajectories(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ (S, P), U (S, n_t, N)) of a transient store's successful samples, by index.

        ``U[s, k]`` is the field at ``times[k]`` in store ordering.
        """
        if not self.transient:
            raise StoreError(f"{self.path}: a steady store holds no trajectories; read its "
                             "snapshots with SnapshotStore.snapshots()")
        ok = [s for s in self.samples(field=True) if s.ok]
        n_t = len(self.time["times"])
        if not ok:
            return np.zeros((0, self.space.dim)), np.zeros((0, n_t, self.n_dofs))
        return np.array([s.mu for s in ok]), np.array([s.u for s in ok])

    def qois(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (μ, Q): parameters and QoIs (S, n_qoi) of the successful samples.

        For a transient store Q is (S, n_t, n_qoi): the QoIs at every output time.
        """
        ok = [s for s in self.samples(field=False) if s.ok]
        if not ok:
            lead = () if not self.transient else (len(self.time["times"]),)
            return np.zeros((0, self.space.dim)), np.zeros((0, *lead, len(self.qoi_names)))
        return np.array([s.mu for s in ok]), np.array([s.qoi for s in ok])

    def checksum(self) -> str:
        """SHA-256 over the manifest, static part and committed sample files (sorted)."""
        import hashlib

        h = hashlib.sha256()
        for p in [self.path / "store.json", self.path / "static.h5", *self.sample_files()]:
            h.update(p.name.encode())
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()

    def summary(self) -> dict:
        """What the store holds, as a JSON-able dict (used by ``hybrid info``)."""
        samples = self.samples(field=False)
        ok = [s for s in samples if s.ok]
        failed = [s for s in samples if not s.ok]
        plan = self.plan()
        times = np.array([s.wall_time for s in ok]) if ok else np.zeros(0)
        return {
            "store": str(self.path),
            "case": self.manifest.get("case_name"),
            "physics": self.physics.get("model"),
            "parameters": self.space.names,
            "n_dofs": self.n_dofs,
            "output_times": None if not self.transient else len(self.time["times"]),
            "qoi": self.qoi_names,
            "planned": _planned(plan),
            "committed": len(samples),
            "ok": len(ok),
            "failed": len(failed),
            "failure_reasons": sorted({s.reason for s in failed}),
            "solve_time_mean_s": float(times.mean()) if times.size else None,
            "created": self.manifest.get("created"),
            "versions": self.manifest.get("versions"),
        }


def init_store(
    path: str | Path,
    *,
    case_name: str,
    case_text: str,
    physics: dict,
    space: ParameterSpace,
    qoi: list[str],
    n_dofs: int,
    solver_options: dict,
    versions: dict,
    extra: dict | None = None,
) -> Path:
    """Create the store directory and its manifest (store.json) atomically."""
    import datetime

    path = Path(path)
    (path / "samples").mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "case_name": case_name,
        "case_text": case_text,
        "physics": physics,
        "parameters": space.to_dict(),
        "qoi": list(qoi),
        "n_dofs": int(n_dofs),
        "solver_options": solver_options,
        "versions": versions,
        **(extra or {}),
    }
    write_json(path / "store.json", manifest)
    return path
