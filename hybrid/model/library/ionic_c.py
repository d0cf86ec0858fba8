"""A compiled Aliev–Panfilov reaction step (C through ctypes): the numpy right-hand side fused.

The same mathematics as the numpy ``rhs`` of :mod:`hybrid.model.library.monodomain`, one
loop over the DOFs instead of ≈ 100 array passes per step:

    dv/dt = v [k (v − a)(1 − v) − w]/T + s(t),
    dw/dt = (ε0 + μ1 w/(v + μ2))(−w − k v (v − a − 1))/T,

advanced by forward Euler or Heun (RK2) substeps of h = τ/m, the stimulus s(t) = s_i on
[t_on, t_off) evaluated at each stage time as the numpy path does (results agree to
round-off: tests/test_monodomain_ionic.py). The C source is compiled once per machine into
a cache directory (``$HYBRID_CACHE`` or ``~/.cache/hybrid``; the temporary directory if that
cannot be made), keyed by its sha256, with the
C compiler that DOLFINx's own JIT needs (``$CC``, default ``cc``), with ``-O3 -march=native``
(falling back to ``-O3``); the key includes the CPU's flags, so a shared cache serves
different machines. Ranks that compile at the same time each write a private file and
rename it into place (atomic). Not collective.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hybrid.errors import ModelError

SOURCE = r"""
static inline double fv(double v, double r, double k, double a, double iT) {
    return v * (k * (v - a) * (1.0 - v) - r) * iT;
}
static inline double fr(double v, double r, double k, double a, double e0, double m1,
                        double m2, double iT) {
    return (e0 + m1 * r / (v + m2)) * (-r - k * v * (v - a - 1.0)) * iT;
}
void ap_step(long n, double* restrict v, double* restrict r, const double* restrict stim,
             double t, double tau, int substeps, int heun, double t_on, double t_off,
             double k, double a, double e0, double m1, double m2, double iT) {
    double h = tau / substeps;
    for (int j = 0; j < substeps; ++j) {
        double s = t + j * h;
        double on1 = (t_on <= s && s < t_off) ? 1.0 : 0.0;
        double on2 = (t_on <= s + h && s + h < t_off) ? 1.0 : 0.0;
        if (!heun) {
            for (long i = 0; i < n; ++i) {
                double vi = v[i], ri = r[i];
                v[i] = vi + h * (fv(vi, ri, k, a, iT) + on1 * stim[i]);
                r[i] = ri + h * fr(vi, ri, k, a, e0, m1, m2, iT);
            }
            continue;
        }
        for (long i = 0; i < n; ++i) {
            double vi = v[i], ri = r[i];
            double dv1 = fv(vi, ri, k, a, iT) + on1 * stim[i];
            double dr1 = fr(vi, ri, k, a, e0, m1, m2, iT);
            double vp = vi + h * dv1, rp = ri + h * dr1;
            double dv2 = fv(vp, rp, k, a, iT) + on2 * stim[i];
            double dr2 = fr(vp, rp, k, a, e0, m1, m2, iT);
            v[i] = vi + 0.5 * h * (dv1 + dv2);
            r[i] = ri + 0.5 * h * (dr1 + dr2);
        }
    }
}
"""

_LIB: ctypes.CDLL | None = None


def _cache_dir() -> Path:
    root = os.environ.get("HYBRID_CACHE") or Path.home() / ".cache" / "hybrid"
    return Path(root) / "ionic"


def _cpu() -> str:
    """What ``-march=native`` depends on: the machine and its CPU flags (the cache key)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def library() -> ctypes.CDLL:
    """The compiled kernel (compiled on first use, then loaded from the cache)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    cc = os.environ.get("CC", "cc")
    digest = hashlib.sha256("\n".join((SOURCE, cc, _cpu())).encode()).hexdigest()[:16]
    so = _cache_dir() / f"aliev_panfilov_{digest}.so"
    if not so.is_file():
        try:
            so.parent.mkdir(parents=True, exist_ok=True)
        except OSError:   # e.g. a read-only home: the system's temporary directory
            so = Path(tempfile.gettempdir()) / f"hybrid-{os.getuid()}" / so.name
            so.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
            src = Path(tmp) / "ap.c"
            src.write_text(SOURCE)
            out = Path(tmp) / "ap.so"
            err = ""
            for flags in (["-O3", "-march=native"], ["-O3"]):   # native: 1.6× here (AVX-512)
                try:
                    subprocess.run([cc, *flags, "-fPIC", "-shared", "-o", str(out), str(src)],
                                   check=True, capture_output=True, text=True)
                    break
                except (OSError, subprocess.CalledProcessError) as exc:
                    err = (getattr(exc, "stderr", None) or str(exc)).strip()
            else:
                last = err.splitlines()[-1] if err else "failed"
                raise ModelError(f"physics.ionic_kernel = 'c': cannot compile the kernel with "
                                 f"{cc!r} ({last}); use ionic_kernel = 'numpy'")
            os.replace(out, so)
    lib = ctypes.CDLL(str(so))
    dp = ctypes.c_void_p     # data pointers, checked in aliev_panfilov_step (cheaper)
    d = ctypes.c_double
    lib.ap_step.argtypes = [ctypes.c_long, dp, dp, dp, d, d, ctypes.c_int, ctypes.c_int,
                            d, d, d, d, d, d, d, d]
    lib.ap_step.restype = None
    _LIB = lib
    return lib


def aliev_panfilov_step(stim: np.ndarray, t_on: float, t_off: float, k_of, a_of,
                        e0: float, m1: float, m2: float, time_scale: float):
    """A ``ReactionDiffusion.reaction_step`` for Aliev–Panfilov (fe and rk2; else None).

    It advances ``v`` (n,) and ``w`` (1, n), C-contiguous float64, in place and returns them.

    ``k_of``, ``a_of`` return the current k and a (a μ Constant's value or a setting).
    """
    lib = library()
    stim = np.ascontiguousarray(stim, dtype=np.float64)
    stim_ptr = stim.ctypes.data      # ``stim`` lives as long as this closure
    iT = 1.0 / time_scale

    def step(t: float, tau: float, v: np.ndarray, w: np.ndarray, scheme: str,
             substeps: int):
        if scheme not in ("fe", "rk2"):
            return None
        r = w[0]
        for x in (v, r):
            if x.dtype != np.float64 or not x.flags.c_contiguous or x.size != stim.size:
                raise ModelError("the compiled ionic step needs contiguous float64 v, w of "
                                 f"{stim.size} DOFs")
        lib.ap_step(v.size, v.ctypes.data, r.ctypes.data, stim_ptr, t, tau, substeps,
                    scheme == "rk2", t_on, t_off, k_of(), a_of(), e0, m1, m2, iT)
        return v, w

    return step
