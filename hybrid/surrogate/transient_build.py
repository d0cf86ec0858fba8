"""Build a :class:`~hybrid.surrogate.transient.TransientSurrogate` from a transient store.

``hybrid train STORE`` on a store with a time axis (docs/store-format.md):

1. split the trajectories into training and validation (whole trajectories held out);
2. space–time POD of the training trajectories in the L² inner product M (the trapezoidal
   rule in time; :func:`hybrid.surrogate.spacetime.spacetime_pod`, two-level), the basis
   starting with the initial state's affine terms g_q (``static.initial_terms``), so that
   u0(μ) = Σ_q ϑ0_q(μ) g_q lies in it exactly;
3. the surrogate of the requested kind: ``galerkin`` → the reduced time-stepping model with
   its bound (affine linear models with the coercivity certificate), ``pod-nn`` → a (μ, t)
   network trained on the projected FEM trajectories and, for affine models, on reduced
   Galerkin trajectories at ``collocation // n_t`` Sobol points (``collocation`` counts
   (μ, t) rows; the time-dependent analogue of the steady physics-informed term),
   ``latent`` → a neural ODE on the reduced coordinates;
4. metrics on the held-out trajectories: the relative space–time L² error
   ‖u_h − ũ‖_{M,T}/‖u_h‖_{M,T} (mean, max) and, for ``galerkin``, the bound's effectivity.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.surrogate.errors import SurrogateError

KIND_OF = {"galerkin": "galerkin-time", "pod-nn": "pod-nn-time", "latent": "latent-ode"}


def observation_dual_norms(mass, rows: np.ndarray, free: np.ndarray) -> np.ndarray:
    """ν_i = ‖l_i‖_{M'} = (l_i,F M_FF⁻¹ l_i,Fᵀ)^{1/2}: |l_i e| ≤ ν_i ‖e‖_M for e zero off F."""
    rows = np.atleast_2d(np.asarray(rows, dtype=float))
    if rows.size == 0:
        return np.zeros(0)
    M = sp.csc_matrix(sp.csr_matrix(mass)[free][:, free])
    L = rows[:, free]
    Z = spla.splu(M).solve(np.ascontiguousarray(L.T))
    return np.sqrt(np.maximum(np.einsum("ij,ji->i", L, Z), 0.0))


def build_transient_surrogate(store, opt):
    """(TransientSurrogate, report) from a transient :class:`SnapshotStore` and BuildOptions."""
    from hybrid.core.provenance import package_versions
    from hybrid.core.theta import evaluate_all
    from hybrid.surrogate.build import _split, default_mu_ref, inner_product, store_meta
    from hybrid.surrogate.coefficients import coefficients_of
    from hybrid.surrogate.reductor import free_dofs
    from hybrid.surrogate.spacetime import project, relative_spacetime_errors
    from hybrid.surrogate.transient import TransientSurrogate, rom_state

    if opt.kind not in KIND_OF:
        raise SurrogateError(f"unknown surrogate kind {opt.kind!r} for a transient store; "
                             f"expected one of {tuple(KIND_OF)}")
    kind = KIND_OF[opt.kind]
    t_start = time.perf_counter()
    space = store.space
    mu, U = store.trajectories()
    S = mu.shape[0]
    if S < 2:
        raise SurrogateError(f"{store.path}: {S} successful trajectory(ies); a surrogate "
                             "needs at least 2")
    tm = dict(store.time)
    times = store.times
    static = store.static
    record = store.manifest.get("model") or {}
    spec = coefficients_of(store.manifest, space.dim)
    affine = bool(static.affine_a) and spec is not None and spec.affine
    D = np.asarray(static.dirichlet_dofs, dtype=int)
    if D.size and np.abs(U[:, :, D]).max() > 1e-10 * max(np.abs(U).max(), 1e-300):
        raise SurrogateError(f"{store.path}: trajectories are not zero on the Dirichlet DOFs; "
                             "non-homogeneous boundary conditions are not supported")
    g = static.initial_terms
    theta0 = record.get("theta_0")
    if (g is None) != (theta0 is None):
        raise SurrogateError(f"{store.path}: initial_terms and the model's theta_0 must be "
                             "stored together")
    if kind == "galerkin-time":
        if not affine:
            raise SurrogateError("a galerkin surrogate needs an affine linear model (A_q, f_q "
                                 "and theta_q in the store)")
        if g is None:
            raise SurrogateError("a galerkin surrogate of a transient model needs an initial "
                                 "state affine in mu (static initial_terms)")
        if record.get("mass", "l2") != "l2":
            raise SurrogateError("a galerkin surrogate needs the default mass form ∫ u v dx")
        steps = (times - times[0]) / float(tm["dt"])
        if np.abs(steps - np.rint(steps)).max() > 1e-6:
            raise SurrogateError("the store's output times are not on its time-step grid")
    if kind == "latent-ode":
        h = np.diff(times)
        if times.size < 2 or not np.allclose(h, h[0], rtol=1e-9):
            raise SurrogateError("a latent surrogate needs uniform output times (choose "
                                 "[outputs] every to divide the number of steps)")
        if g is None:
            raise SurrogateError("a latent surrogate needs an initial state affine in mu")
    cfg = opt.training
    cfg.check()
    mu_ref = np.asarray(opt.mu_ref, dtype=float) if opt.mu_ref is not None \
        else default_mu_ref(space)
    ip = opt.inner_product if opt.inner_product != "auto" else "l2"
    theta_ref = spec.theta_a(mu_ref) if affine else None
    X = inner_product(static, ip, theta_ref)
    M = static.mass

    ti, vi = _split(S, cfg.validation_fraction, cfg.seed)
    t0 = time.perf_counter()
    modes, pod = _basis(U[ti], times, X, g, opt)
    t_pod = time.perf_counter() - t0
    n = modes.shape[0]
    XPhi = np.asarray(X @ modes.T)
    gram = modes @ XPhi
    F = free_dofs(U.shape[2], D)
    reduced: dict[str, np.ndarray] = {
        "singular_values": np.asarray(pod.singular_values, dtype=float),
        "qoi": np.atleast_2d(static.qoi_functionals).reshape(-1, U.shape[2]) @ modes.T,
        "gram": gram,
    }
    obs = static.observation_functionals
    L = np.zeros((0, U.shape[2])) if obs is None or np.size(obs) == 0 else np.atleast_2d(obs)
    reduced["observations"] = L @ modes.T
    reduced["observation_dual_norms"] = observation_dual_norms(M, L, F)
    if g is not None:
        reduced["C0"] = np.atleast_2d(g) @ XPhi         # X-projection of the g_q

    def theta_0(m):
        return evaluate_all(theta0, m)

    report: dict = {"kind": kind, "trajectories": S, "train": int(ti.size),
                    "validation": int(vi.size), "n_modes": int(n), "inner_product": ip,
                    "pod_method": pod.method, "pod_time_s": t_pod,
                    "output_times": int(times.size)}
    network_arrays: dict[str, np.ndarray] = {}
    net_config = None
    extra_meta: dict = {}
    train_info: dict = {}
    rom = None
    if affine and g is not None and record.get("mass", "l2") == "l2":
        from hybrid.surrogate.galerkin_time import GalerkinTimeROM

        t0 = time.perf_counter()
        certified = bool(record.get("certified", False))
        rom = GalerkinTimeROM(M, static.affine_a, static.affine_f, D, modes, g,
                              theta_a=spec.theta_a, theta_f=spec.theta_f, theta_0=theta_0,
                              scheme=tm["scheme"], dt=float(tm["dt"]),
                              n_steps=int(tm["n_steps"]),
                              mu_ref=mu_ref if certified else None)
        report["reduction_time_s"] = time.perf_counter() - t0
    steps = np.rint((times - times[0]) / float(tm["dt"])).astype(int)
    if kind == "galerkin-time":
        reduced.update(rom_state(rom))
        reduced["C0"] = rom.C0                          # the ROM's M-projection of u0
    elif kind == "pod-nn-time":
        from hybrid.surrogate.spacetime_nn import train_spacetime_network

        C = project(modes, U[ti], X)
        extra = None
        if rom is not None and cfg.physics_informed and cfg.collocation:
            # ``collocation`` counts (μ, t) rows: collocation // n_t ROM trajectories
            n_x = max(1, cfg.collocation // times.size)
            mu_x = space.sample(n_x, "sobol", cfg.seed + 1)
            extra = (mu_x, times, np.array([rom.solve(m)[steps] for m in mu_x]))
        st, res = train_spacetime_network(mu[ti], times, C, space.lower, space.upper, cfg,
                                          log_mask=space.log_mask,
                                          validation=cfg.validation_fraction,
                                          seed=cfg.seed, skip_initial=g is not None,
                                          extra=extra)
        network_arrays = {k: np.asarray(v) for k, v in st.state.items()}
        net_config = dict(st.config)
        extra_meta["spacetime_network"] = {"t0": st.t0, "t_end": st.t_end,
                                           "transform": st.transform,
                                           "collocation": 0 if extra is None else
                                           int(extra[0].shape[0])}
        train_info = {"wall_time_s": res.wall_time, "device": res.device,
                      "best_validation": res.best_validation, "history": res.history}
        report["training_time_s"] = res.wall_time
    else:
        from hybrid.surrogate.latent import LatentConfig, train_latent_ode

        C = project(modes, U[ti], X)
        substeps = 1
        if rom is not None:      # the latent dynamics' stiffness: λ_max(M_r⁻¹A_r) on the box
            lam = max(float(np.max(np.linalg.eigvals(np.linalg.solve(
                rom.M_r, np.tensordot(spec.theta_a(m), rom.A_r, axes=1))).real))
                for m in (space.lower, space.upper))
            substeps = max(1, int(np.ceil(lam * float(np.diff(times)[0]) / 2.0)))
        lcfg = LatentConfig(width=cfg.width, depth=min(cfg.depth, 2), substeps=substeps,
                            adam_epochs=cfg.adam_epochs, lbfgs_iterations=min(
                                cfg.lbfgs_iterations, 200), seed=cfg.seed,
                            threads=cfg.threads)
        res = train_latent_ode(mu[ti], times, C, space.lower, space.upper, lcfg)
        network_arrays = {k: v.detach().cpu().double().numpy()
                          for k, v in res.model.state_dict().items()}
        net_config = dict(res.model.config)
        extra_meta["latent"] = {"substeps": substeps, **lcfg.to_dict()}
        train_info = {"wall_time_s": res.wall_time, "history": res.history[-200:]}
        report["training_time_s"] = res.wall_time

    meta = {
        **store_meta(store, kind, ti, vi),
        "observations": _data_names(store),
        "sensors": store.observation_names,
        "time": tm,
        "n_dofs": int(U.shape[2]),
        "n_modes": int(n),
        "affine": affine,
        "pod": {"inner_product": ip, "method": pod.method, "n_fixed": int(pod.n_fixed),
                "rounding_floor": ROUNDING,
                "requested_modes": opt.modes, "requested_energy": opt.energy},
        "estimator": {"available": kind == "galerkin-time" and rom.has_bound,
                      "norm": "L2 (M) at every output time", "mu_ref": mu_ref.tolist()},
        "network": net_config,
        "options": opt.to_dict(),
        "training": train_info,
        "versions": package_versions(),
        **extra_meta,
    }
    groups = {"basis": {"modes": modes}, "reduced": reduced, "network": network_arrays}
    sur = TransientSurrogate(meta, groups)
    metrics: dict = {}
    if vi.size:
        V = sur.field(mu[vi], extrapolate=True)
        e = relative_spacetime_errors(U[vi], V, times, M)
        pe = relative_spacetime_errors(
            U[vi], project(modes, U[vi], X) @ modes, times, M)
        metrics.update(surrogate_error_mean=float(e.mean()), surrogate_error_max=float(e.max()),
                       projection_error_mean=float(pe.mean()),
                       projection_error_max=float(pe.max()))
        if kind == "galerkin-time" and rom.has_bound:
            eff = []
            for j, (s, m) in enumerate(zip(vi, mu[vi], strict=True)):
                d = sur.error_estimate(m, relative=False)
                err = _m_norms(M, U[s] - V[j])
                ok = err > 1e-14 * np.abs(U[s]).max()
                if np.any(ok):
                    eff += [float(np.min(d[ok] / err[ok])), float(np.max(d[ok] / err[ok]))]
            if eff:
                metrics["bound_effectivity_min"] = float(min(eff))
                metrics["bound_effectivity_max"] = float(max(eff))
    meta["metrics"] = metrics
    report["metrics"] = metrics
    report["wall_time_s"] = time.perf_counter() - t_start
    meta["build_time_s"] = report["wall_time_s"]
    return TransientSurrogate(meta, groups), report


ROUNDING = 1e-10
"""Modes beyond the fixed ones whose singular value is below ROUNDING·‖U‖_{X,T} (the whole
data's space–time norm) are round-off, not data: dropped (the energy criterion of the POD is
relative to what the fixed vectors leave, which can itself be round-off — the seed's rod is
one mode, its initial state)."""


def _basis(U: np.ndarray, times: np.ndarray, X, g, opt):
    """(modes, SpaceTimePOD): the fixed vectors g (if any), then the POD of the remainder."""
    from hybrid.surrogate.spacetime import SpaceTimePOD, spacetime_norms, spacetime_pod

    scale = float(np.sqrt(np.sum(spacetime_norms(U, times, X) ** 2)))
    try:
        pod = spacetime_pod(U, times, X, modes=opt.modes, energy=opt.energy, fixed=g)
    except SurrogateError:
        if g is None:
            raise
        # the trajectories lie in the span of the initial state's terms: that is the basis
        from hybrid.surrogate.spacetime import _fixed_basis

        Q, _ = _fixed_basis(g, X, U.shape[-1])
        pod = SpaceTimePOD(modes=np.ascontiguousarray(Q), singular_values=np.zeros(0),
                           total_energy=0.0, method="fixed", n_fixed=Q.shape[0])
        return pod.modes, pod
    sv = np.asarray(pod.singular_values, dtype=float)
    keep = pod.n_fixed + int(np.sum(sv[: pod.modes.shape[0] - pod.n_fixed] > ROUNDING * scale))
    if keep < pod.modes.shape[0]:
        pod = SpaceTimePOD(**{**vars(pod), "modes": np.ascontiguousarray(pod.modes[:keep])})
    return pod.modes, pod


def _m_norms(M, E: np.ndarray) -> np.ndarray:
    """‖e_n‖_M of the rows of E (n_t, N)."""
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", E, np.asarray((M @ E.T).T)), 0.0))


def _data_names(store) -> list[str]:
    """The surrogate's observation names: sensor@t for each observation time (time-major)."""
    from hybrid.core.case import observation_label

    names = store.observation_names
    ot = store.observation_times
    fp = (store.manifest.get("fingerprint") or {}).get("observations", {})
    if fp.get("times") is None:      # a transient case without times observes at t_end
        return list(names)
    return [observation_label(nm, t) for t in ot for nm in names]
