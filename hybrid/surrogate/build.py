"""From a snapshot store to a surrogate: split, POD, reduction, training, metrics.

:func:`build_surrogate` is what ``hybrid train`` runs::

    from hybrid.surrogate.build import BuildOptions, build_surrogate
    s, report = build_surrogate("runs/thermal_block/store", BuildOptions(modes=30))
    s.save("runs/thermal_block/surrogate")

Steps: read the successful snapshots; hold out a seeded validation split; POD of the
training part in the FEM inner product; project the affine operators (reductor) and build
the residual-based error estimator; for POD-NN, train the network on the projection
coefficients, with the physics-informed term on Sobol collocation points for affine
models; measure on the validation split the POD projection error, the Galerkin error and
the surrogate's error against the number of modes.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hybrid.surrogate.coefficients import coefficients_of
from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.pod import norms, pod, projection_errors
from hybrid.surrogate.reductor import (
    build_estimator,
    galerkin_solve,
    inner_product,
    reduce_operators,
)
from hybrid.surrogate.training import TrainingConfig

KINDS = ("pod-nn", "galerkin")


@dataclass
class BuildOptions:
    """What to build.

    Attributes:
        kind: ``"pod-nn"`` (network) or ``"galerkin"`` (reduced Galerkin model; affine only).
        modes: keep at most this many POD modes.
        energy: keep the fewest modes that capture this fraction of the snapshot energy.
        inner_product: ``"auto"`` (``"energy"`` for affine models, else ``"h1"``), ``"energy"``,
            ``"h1"``, ``"h10"`` or ``"l2"``.
        pod_method: ``"auto"``, ``"qr"``, ``"snapshots"``, ``"randomized"`` or
            ``"streaming"`` (the store is read in blocks and never held in memory:
            :mod:`hybrid.surrogate.streaming`; ``"auto"`` streams stores whose fields exceed
            :data:`STREAMING_BYTES`).
        mu_ref: reference parameter μ̄ of the energy norm and the coercivity bound (default:
            (1, …, 1) if inside the box, else the box centre).
        amplitude: scale network outputs by the one-mode Galerkin amplitude (affine models;
            ``"auto"``: where it is well defined). Off by default: on the thermal block it
            changed the errors by less than 1.5× and costs ~2 µs a single query.
        calibrate: calibrate a split-conformal band at this miscoverage level α
            (:mod:`hybrid.surrogate.calibration`): the validation snapshots are split into a
            calibration half and a test half; the band is calibrated on the first and its
            coverage measured on the second. The validation snapshots then play no part in
            training (early stopping watches the training snapshots instead), so the
            calibration and test runs are exchangeable with fresh ones. None: no band.
        training: network and optimiser settings.
    """

    kind: str = "pod-nn"
    modes: int | None = None
    energy: float | None = 1.0 - 1e-10
    inner_product: str = "auto"
    pod_method: str = "auto"
    mu_ref: list[float] | None = None
    amplitude: str | bool = False
    training: TrainingConfig = field(default_factory=TrainingConfig)
    calibrate: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["training"] = self.training.to_dict()
        return d


STREAMING_BYTES = 4 << 30
"""``pod_method="auto"`` streams the store (:mod:`hybrid.surrogate.streaming`) when its fields
would take more than this many bytes in memory (S·N·8)."""


def _store_bytes(store) -> int:
    """S·N·8: the bytes of the store's fields in memory (an upper bound: failed samples count)."""
    return len(store.sample_files()) * store.n_dofs * 8


def _load(store, indices, N: int) -> np.ndarray:
    """The fields of the samples ``indices`` (k, N), read one file at a time."""
    from hybrid.core.store import read_sample, sample_path

    return np.array([read_sample(sample_path(store.path, int(i))).u for i in indices]
                    ).reshape(-1, N)


def store_meta(store, kind: str, ti: np.ndarray, vi: np.ndarray) -> dict:
    """The metadata every surrogate records of its store and its training split.

    Case, physics, model, parameters, QoIs, observations, fingerprint, and the store itself
    (path, checksum, the training and validation sample positions).
    """
    return {
        "kind": kind,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "case_name": store.manifest.get("case_name"),
        "case_text": store.manifest.get("case_text", ""),
        "physics": store.physics,
        **({"model": store.manifest["model"]} if "model" in store.manifest else {}),
        "parameters": store.space.to_dict(),
        "qoi": store.qoi_names,
        "observations": store.observation_names,
        "fingerprint": store.manifest.get("fingerprint"),
        "store": {"path": str(store.path), "checksum": store.checksum(),
                  "snapshots": int(ti.size + vi.size), "train_indices": ti.tolist(),
                  "validation_indices": vi.tolist()},
    }


def _split(S: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_val = int(round(fraction * S)) if S >= 5 else 0
    perm = np.random.default_rng(seed).permutation(S)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def default_mu_ref(space) -> np.ndarray:
    """(1, …, 1) if it lies in the box (θ_q = μ_q models: X = Σ A_q), else the centre."""
    ones = np.ones(space.dim)
    if np.all(ones >= space.lower) and np.all(ones <= space.upper):
        return ones
    return space.from_unit(np.full(space.dim, 0.5))


def amplitude(theta_a: np.ndarray, theta_f: np.ndarray, A: np.ndarray, f: np.ndarray) -> np.ndarray:
    """One-mode Galerkin amplitude a(μ) = f_r(μ)₁ / A_r(μ)₁₁ (batched)."""
    return (theta_f @ f[:, 0]) / (theta_a @ A[:, 0, 0])


def build_surrogate(store_path: str | Path, options: BuildOptions | None = None):
    """Build a surrogate from a store; return (Surrogate, report dict)."""
    from hybrid.core.provenance import package_versions
    from hybrid.core.store import SnapshotStore
    from hybrid.surrogate.surrogate import Surrogate

    opt = options or BuildOptions()
    store = SnapshotStore(store_path)
    if opt.calibrate is not None:
        if store.transient:
            raise SurrogateError("--calibrate: the split-conformal band is for steady stores "
                                 "(a transient store holds trajectories)")
        if not (isinstance(opt.calibrate, int | float) and 0.0 < opt.calibrate < 1.0):
            raise SurrogateError(f"--calibrate: alpha must lie in (0, 1), got {opt.calibrate}")
    if store.transient:             # trajectories: hybrid.surrogate.transient_build
        from hybrid.surrogate.transient_build import build_transient_surrogate

        return build_transient_surrogate(store, opt)
    if opt.kind not in KINDS:
        raise SurrogateError(f"unknown surrogate kind {opt.kind!r}; expected one of {KINDS}")
    if opt.kind == "pod-nn":
        opt.training.check()
    t_start = time.perf_counter()
    space = store.space
    streaming = opt.pod_method == "streaming" or (
        opt.pod_method == "auto" and _store_bytes(store) > STREAMING_BYTES)
    fields = None
    if streaming:     # U stays on disk: the POD and the coefficients read it in blocks
        from hybrid.surrogate.streaming import StoreFields

        fields = StoreFields(store)
        mu, U = fields.mu, None
    else:
        mu, U = store.snapshots()
    S = mu.shape[0]
    if S < 2:
        raise SurrogateError(f"{store.path}: {S} successful snapshot(s); a surrogate needs at "
                             "least 2")
    static = store.static
    spec = coefficients_of(store.manifest, space.dim)
    affine = bool(static.affine_a) and spec is not None and spec.affine
    D = np.asarray(static.dirichlet_dofs, dtype=int)
    N = store.n_dofs
    cfg = opt.training
    ti, vi = _split(S, cfg.validation_fraction, cfg.seed)
    if opt.calibrate is not None:   # refuse a split too small for α before training
        from hybrid.surrogate.calibration import split_validation

        split_validation(vi, opt.calibrate, cfg.seed)
    # the validation snapshots are the only ones held in memory when streaming
    U_check = U if U is not None else _load(store, fields.indices[vi] if vi.size else
                                            fields.indices[:1], N)
    bad = ~np.isfinite(U_check).all(axis=1)
    if bad.any():     # e.g. an activation-time map with never-activated DOFs (NaN)
        what = store.manifest.get("field", {}).get("missing", "NaN or inf values")
        raise SurrogateError(f"{store.path}: {int(bad.sum())} snapshot(s) hold non-finite "
                             f"values ({what}); a POD needs finite fields — for activation "
                             "times, raise t_end so that all tissue activates")
    if D.size and np.abs(U_check[:, D]).max() > 1e-10 * max(np.abs(U_check).max(), 1e-300):
        raise SurrogateError(f"{store.path}: snapshots are not zero on the Dirichlet DOFs; "
                             "non-homogeneous boundary conditions are not supported")
    if getattr(static, "observation_affine", None) is not None and not affine:
        raise SurrogateError(f"{store.path}: the case observes boundary fluxes, which depend on "
                             "mu through the affine decomposition (A_q, f_q and theta_q); "
                             "this model has none")
    if opt.kind == "galerkin" and not affine:
        raise SurrogateError("a Galerkin surrogate needs an affine model (A_q, f_q in the "
                             "store and θ_q from the physics spec)")
    mu_ref = np.asarray(opt.mu_ref, dtype=float) if opt.mu_ref is not None \
        else default_mu_ref(space)
    if mu_ref.shape != (space.dim,):
        raise SurrogateError(f"mu_ref must have {space.dim} values, got {mu_ref.shape}")
    theta_ref = spec.theta_a(mu_ref) if affine else None
    ip = opt.inner_product if opt.inner_product != "auto" else ("energy" if affine else "h1")
    X = inner_product(static, ip, theta_ref)

    # ---- split and POD of the training part
    t0 = time.perf_counter()
    if streaming:
        from hybrid.surrogate.streaming import StoreFields, coefficients, streaming_pod

        P = streaming_pod(StoreFields(store, indices=fields.indices[ti]), X,
                          modes=opt.modes, energy=opt.energy)
    else:
        P = pod(U[ti], X, modes=opt.modes, energy=opt.energy, method=opt.pod_method,
                seed=cfg.seed)
    t_pod = time.perf_counter() - t0
    modes = P.modes
    n = P.n_modes
    XPhi = np.asarray(X @ modes.T)                      # (N, n)
    # projection coefficients (S, n)
    coef = coefficients(fields, modes, X) if streaming else U @ XPhi
    report: dict = {"snapshots": S, "train": int(ti.size), "validation": int(vi.size),
                    "n_modes": n, "inner_product": ip, "pod_method": P.method,
                    "energy_captured": P.energy_fraction(), "pod_time_s": t_pod}

    # ---- reduction and estimator
    reduced: dict[str, np.ndarray] = {"singular_values": P.singular_values}
    ops = est = None
    t0 = time.perf_counter()
    if affine:
        X_E = inner_product(static, "energy", theta_ref)
        ops = reduce_operators(static, modes, X_E)
        est = build_estimator(static, modes, theta_ref, mu_ref)
        reduced.update(A=ops.A, f=ops.f, qoi=ops.qoi, observations=ops.observations,
                       gram=ops.gram, R_f=est.R_f, R_a=est.R_a, theta_ref=est.theta_ref,
                       mu_ref=est.mu_ref)
        if ops.observations_a is not None:
            reduced.update(observations_a=ops.observations_a,
                           observations_f=ops.observations_f)
    else:
        reduced.update(qoi=np.atleast_2d(static.qoi_functionals).reshape(-1, N)
                       @ modes.T)
        obs = static.observation_functionals
        reduced["observations"] = (np.zeros((0, n)) if obs is None or np.size(obs) == 0
                                   else np.atleast_2d(obs) @ modes.T)
        reduced["gram"] = modes @ XPhi
    report["reduction_time_s"] = time.perf_counter() - t0

    # ---- network
    network_arrays: dict[str, np.ndarray] = {}
    net_config = None
    train_info: dict = {}
    use_amp = False
    if opt.kind == "pod-nn":
        from hybrid.surrogate.training import TrainingData, train_network

        if affine and opt.amplitude in ("auto", True):
            mu_c_probe = np.vstack([mu, space.sample(256, "sobol", cfg.seed + 1)])
            a = amplitude(spec.theta_a(mu_c_probe), spec.theta_f(mu_c_probe), ops.A, ops.f)
            ok = np.all(np.isfinite(a)) and (np.all(a > 0) or np.all(a < 0)) and \
                np.abs(a).min() > 1e-6 * np.abs(a).max()
            if opt.amplitude is True and not ok:
                raise SurrogateError("the one-mode Galerkin amplitude is not well defined for "
                                     "this model (changes sign or vanishes); use no amplitude")
            use_amp = bool(ok)
        elif opt.amplitude is True:
            raise SurrogateError("the amplitude needs an affine model")

        def amp(m):
            return amplitude(spec.theta_a(m), spec.theta_f(m), ops.A, ops.f) if use_amp \
                else None

        # a calibrated band needs held-out runs untouched by training: early stopping then
        # watches the training snapshots (it stops when the fit stops improving)
        vs = vi if opt.calibrate is None else ti
        data = TrainingData(mu_train=mu[ti], c_train=coef[ti], mu_val=mu[vs], c_val=coef[vs],
                            lower=space.lower, upper=space.upper, log_mask=space.log_mask,
                            amp_train=amp(mu[ti]), amp_val=amp(mu[vs]))
        if cfg.physics_informed and affine:
            mu_c = space.sample(cfg.collocation, "sobol", cfg.seed + 1)
            th_a, th_f = spec.theta_a(mu_c), spec.theta_f(mu_c)
            data.mu_colloc, data.amp_colloc = mu_c, amp(mu_c)
            data.theta_a, data.theta_f = th_a, th_f
            data.A, data.f, data.gram = ops.A, ops.f, ops.gram
            if cfg.residual_norm == "error":
                data.c_colloc = galerkin_solve(ops, th_a, th_f)
        res = train_network(data, cfg)
        network_arrays = {k: v.detach().cpu().numpy()
                          for k, v in res.network.state_dict().items()}
        net_config = dict(res.network.config)
        train_info = {"wall_time_s": res.wall_time, "device": res.device,
                      "world_size": res.world_size, "best_validation": res.best_validation,
                      "physics_informed": bool(cfg.physics_informed and affine),
                      "early_stopping": "validation" if opt.calibrate is None
                      else "training snapshots (the validation ones calibrate the band)",
                      "history": res.history}
        report["training_time_s"] = res.wall_time
        report["device"] = res.device

    meta = {
        **store_meta(store, opt.kind, ti, vi),
        "n_dofs": int(N),
        "n_modes": int(n),
        "affine": affine,
        "amplitude": use_amp,
        "pod": {"inner_product": ip, "method": P.method, "energy_captured": P.energy_fraction(),
                "requested_modes": opt.modes, "requested_energy": opt.energy},
        "estimator": {"available": est is not None, "norm": "energy at mu_ref",
                      "mu_ref": mu_ref.tolist()},
        "network": net_config,
        "options": opt.to_dict(),
        "training": train_info,
        "versions": package_versions(),
    }
    groups = {"basis": {"modes": modes}, "reduced": reduced, "network": network_arrays}
    sur = Surrogate(meta, groups)

    # ---- metrics on the validation split
    metrics: dict = {}
    if vi.size:
        Uv = U[vi] if U is not None else U_check
        ranks = np.arange(1, n + 1)
        pe = projection_errors(modes, Uv, X, ranks)
        metrics["ranks"] = ranks.tolist()
        metrics["projection_error_mean"] = pe.mean(axis=1).tolist()
        metrics["projection_error_max"] = pe.max(axis=1).tolist()
        ref = norms(Uv, X)
        if affine:
            th_a, th_f = spec.theta_a(mu[vi]), spec.theta_f(mu[vi])
            ge = []
            for m in ranks:
                sub_ops = type(ops)(A=ops.A[:, :m, :m], f=ops.f[:, :m], qoi=ops.qoi[:, :m],
                                    observations=ops.observations[:, :m],
                                    gram=ops.gram[:m, :m])
                c = galerkin_solve(sub_ops, th_a, th_f)
                ge.append(norms(Uv - c @ modes[:m], X) / ref)
            ge = np.array(ge)
            metrics["galerkin_error_mean"] = ge.mean(axis=1).tolist()
            metrics["galerkin_error_max"] = ge.max(axis=1).tolist()
        e = norms(Uv - sur.field(mu[vi], extrapolate=True), X) / ref
        metrics["surrogate_error_mean"] = float(e.mean())
        metrics["surrogate_error_max"] = float(e.max())
    meta["metrics"] = metrics
    report["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    if opt.calibrate is not None:
        from hybrid.surrogate.calibration import calibrate_on_validation

        Uv = U[vi] if U is not None else U_check
        meta["calibration"] = calibrate_on_validation(sur, store, mu, vi, Uv, opt.calibrate,
                                                      seed=cfg.seed)
        report["calibration"] = meta["calibration"]
    report["wall_time_s"] = time.perf_counter() - t_start
    meta["build_time_s"] = report["wall_time_s"]
    return Surrogate(meta, groups), report
