"""Streaming POD benchmark → JSON: S snapshots of N DOFs in store format, POD in bounded memory.

The snapshots are synthetic with a known POD: on an m × m grid (N = m²) with the Q1 mass
matrix X = M₁ ⊗ M₁ (M₁ = h/6·tridiag(1, 4, 1)), n X-orthonormal modes φ_k (smooth products
of sines, X-orthonormalised), coefficients with orthonormal columns A (S × n), and

    u_s = Σ_k A_sk σ_k φ_k + noise,    σ_k = 10^(−3(k−1)/(n−1)),

so the POD of the noise-free set is exactly (σ_k, φ_k). Each sample is written with
:func:`hybrid.core.store.write_sample`; the streamed POD (:mod:`hybrid.surrogate.streaming`)
runs in a fresh process whose peak RSS (VmHWM) is recorded, and the store is deleted.

    python benchmarks/streaming_pod.py --samples 200 --grid 1000 \
        --out benchmarks/results/streaming_pod.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM of /proc/self/status; ru_maxrss elsewhere).

    VmHWM belongs to the process image: unlike ``ru_maxrss`` it does not carry over the
    high-water mark of the parent that forked this process before its exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def q1_mass(m: int) -> sp.csr_matrix:
    """Mass matrix of Q1 elements on an m × m node grid of the unit square (N = m²)."""
    h = 1.0 / (m - 1)
    main = np.full(m, 4.0)
    main[[0, -1]] = 2.0
    M1 = sp.diags([np.ones(m - 1), main, np.ones(m - 1)], [-1, 0, 1]) * (h / 6)
    return sp.csr_matrix(sp.kron(M1, M1, format="csr"))


def write_store(path: Path, X: sp.spmatrix, fields: Iterable[np.ndarray]) -> int:
    """A store (manifest, static part with X as mass and stiffness, samples); return S.

    ``fields`` is iterated once: one field in memory at a time.
    """
    from hybrid.core.parameters import Parameter, ParameterSpace
    from hybrid.core.store import Sample, StaticData, init_store, write_sample, write_static

    N = X.shape[0]
    space = ParameterSpace((Parameter("mu_0", 0.0, 1.0),))
    init_store(path, case_name="synthetic", case_text="", physics={"model": "synthetic"},
               space=space, qoi=[], n_dofs=N, solver_options={}, versions={})
    write_static(path / "static.h5", StaticData(
        points=np.zeros((N, 2)), cells=np.zeros((0, 3), dtype=np.int64), cell_type="triangle",
        mass=sp.csr_matrix(X), stiffness=sp.csr_matrix(X), dirichlet_dofs=np.zeros(0, int),
        affine_a=[], affine_f=np.zeros((0, N)), qoi_functionals=np.zeros((0, N))))
    S = 0
    for s, u in enumerate(fields):
        write_sample(path, Sample(index=s, mu=np.array([s / 1000.0]), status="ok", reason="",
                                  wall_time=0.0, u=u, qoi=np.zeros(0)))
        S += 1
    return S


def known_modes(m: int, n: int, X: sp.spmatrix) -> np.ndarray:
    """n X-orthonormal smooth modes on the m × m grid (sines, Gram–Schmidt in X)."""
    from hybrid.surrogate.pod import gram_schmidt

    x = np.linspace(0.0, 1.0, m)
    pairs = [(k, s - k) for s in range(2, 2 * n + 2) for k in range(1, s)][:n]
    G = np.array([np.outer(np.sin(j * np.pi * x + 0.3 * k), np.sin(k * np.pi * x)).ravel()
                  for k, j in pairs])
    Q, kept = gram_schmidt(G, X)
    assert kept.size == n
    return Q


def synthetic_fields(modes: np.ndarray, sigma: np.ndarray, S: int, noise: float,
                     seed: int = 0) -> tuple[Iterable[np.ndarray], np.ndarray]:
    """(iterator over the S fields, A): u_s = Σ_k A_sk σ_k φ_k + noise·N(0, 1)/√N."""
    rng = np.random.default_rng(seed)
    A, _ = np.linalg.qr(rng.standard_normal((S, modes.shape[0])))
    N = modes.shape[1]

    def gen():
        for s in range(S):
            yield (A[s] * sigma) @ modes + noise * rng.standard_normal(N) / np.sqrt(N)

    return gen(), A


def _measure(store: Path, modes: int, block: int | None, out: Path, known: Path) -> None:
    """Child process: the streamed POD of ``store``; peak RSS and errors → ``out`` (JSON)."""
    from hybrid.surrogate.streaming import StoreFields, store_inner_product, streaming_pod

    rss0 = peak_rss_bytes()
    t0 = time.perf_counter()
    X = store_inner_product(store, "l2")
    t_x = time.perf_counter() - t0
    fields = StoreFields(store)
    t1 = time.perf_counter()
    P = streaming_pod(fields, X, modes=modes, block=block)
    t_pod = time.perf_counter() - t1
    peak = peak_rss_bytes()
    ref = np.load(known)
    sigma, Phi = ref["sigma"], ref["modes"]
    C = P.modes @ (X @ Phi.T)                  # ⟨φ̃_i, φ_j⟩_X: ±identity if the basis is known
    out.write_text(json.dumps({
        "S": len(fields), "N": fields.n_dofs, "memory_mapped": fields.memory_mapped,
        "modes": P.n_modes, "block_dofs": block,
        "time_read_X_s": t_x, "time_pod_s": t_pod,
        "peak_rss_bytes": peak, "rss_before_bytes": rss0,
        "max_rel_sigma_error": float(np.max(np.abs(P.singular_values[:modes] - sigma)
                                            / sigma)),
        "max_basis_error": float(np.max(np.abs(np.abs(C) - np.eye(modes)))),
        "orthonormality_error": float(np.max(np.abs(P.modes @ (X @ P.modes.T)
                                                    - np.eye(P.n_modes)))),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--grid", type=int, default=1000, help="m: N = m² DOFs")
    ap.add_argument("--modes", type=int, default=10)
    ap.add_argument("--noise", type=float, default=1e-9)
    ap.add_argument("--block", type=int, default=None)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the store")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/streaming_pod.json")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.child:
        store, block, out, known = a.child
        _measure(Path(store), a.modes, int(block) or None, Path(out), Path(known))
        return

    work = Path(tempfile.mkdtemp(prefix="hybrid-spod-", dir=a.dir))
    try:
        m, n, S = a.grid, a.modes, a.samples
        X = q1_mass(m)
        Phi = known_modes(m, n, X)
        sigma = 10.0 ** (-3.0 * np.arange(n) / (n - 1))
        np.savez(work / "known.npz", sigma=sigma, modes=Phi)
        gen, _ = synthetic_fields(Phi, sigma, S, a.noise)
        t0 = time.perf_counter()
        write_store(work / "store", X, gen)
        t_write = time.perf_counter() - t0
        del Phi
        sample_bytes = sum(p.stat().st_size for p in (work / "store/samples").glob("*.h5"))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, __file__, "--modes", str(n), "--child",
                            str(work / "store"), str(a.block or 0), str(work / "child.json"),
                            str(work / "known.npz")], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        child = json.loads((work / "child.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dense = 8 * S * m * m
    result = {
        "benchmark": "streaming_pod",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "store": {"samples": S, "n_dofs": m * m, "sample_files_bytes": sample_bytes,
                  "dense_matrix_bytes": dense, "time_write_s": t_write,
                  "noise": a.noise, "modes_known": n},
        "streaming_pod": child,
        "goals": {"peak_rss_le_2GiB": child["peak_rss_bytes"] <= 2 * 2**30,
                  "peak_rss_fraction_of_dense": child["peak_rss_bytes"] / dense},
        "command": " ".join(["python", "benchmarks/streaming_pod.py", *sys.argv[1:]]),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
