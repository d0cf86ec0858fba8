"""The surrogate: load once, query many times (numpy + torch; no DOLFINx, no MPI).

::

    from hybrid.surrogate import Surrogate

    s = Surrogate.load("runs/thermal_block/surrogate")
    c = s.predict([0.1, 0.5, 1.0, 0.3])          # reduced coefficients (n,)
    u = s.field(mu_batch)                         # (B, N) DOF vectors, store ordering
    q = s.qoi(mu)                                 # the case's QoIs, without building u
    d = s.error_estimate(mu)                      # relative error bound (affine models)
    b = s.band(mu)                                # calibrated band on the observations
                                                  #   (hybrid train --calibrate ALPHA)

Every query accepts one parameter vector (P,) or a batch (B, P): numpy arrays or lists give
numpy results (single vectors take a numpy fast path with folded scalings and preallocated
buffers); torch tensors give torch tensors on the same device, differentiable with respect
to μ. Parameters outside the box the surrogate was trained on raise
:class:`~hybrid.errors.ParameterError`; with ``extrapolate=True`` (per call, or the
attribute for all calls) they are evaluated with an
:class:`~hybrid.surrogate.errors.ExtrapolationWarning`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from hybrid.core.parameters import ParameterSpace
from hybrid.errors import ParameterError
from hybrid.surrogate.calibration import Calibration
from hybrid.surrogate.errors import ExtrapolationWarning, SurrogateError
from hybrid.surrogate.fastpath import NumpyNetwork
from hybrid.surrogate.indicators import ensemble_spread
from hybrid.surrogate.reductor import ReducedOperators, ResidualEstimator


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "requires_grad")


class Surrogate:
    """A reduced-order surrogate of one case (see the module docstring for the API)."""

    calibration: Calibration | None = None
    calibration_qoi: Calibration | None = None

    def __init__(self, meta: dict, groups: dict[str, dict[str, np.ndarray]]):
        self.meta = meta
        self.kind: str = meta["kind"]
        self.space = ParameterSpace.from_dict(meta["parameters"])
        self.extrapolate = False
        basis = groups.get("basis", {})
        red = groups.get("reduced", {})
        if "modes" not in basis:
            raise SurrogateError("surrogate has no POD basis")
        self.modes: np.ndarray = basis["modes"]
        n, N = self.modes.shape
        if n != meta.get("n_modes") or N != meta.get("n_dofs"):
            raise SurrogateError(f"basis has shape {self.modes.shape}, metadata says "
                                 f"({meta.get('n_modes')}, {meta.get('n_dofs')})")
        self._arrays = groups
        self.qoi_matrix: np.ndarray = red["qoi"].reshape(-1, n)
        self.observation_matrix: np.ndarray = red.get("observations", np.zeros((0, n)))
        # μ-dependent observations (boundary fluxes): B_r (n_obs, Q_a, n), b (n_obs, Q_f)
        self.observation_affine: np.ndarray | None = red.get("observations_a")
        self.observation_affine_f: np.ndarray | None = red.get("observations_f")
        self.gram: np.ndarray = red["gram"]
        self.singular_values = red.get("singular_values", np.zeros(0))
        self.ops: ReducedOperators | None = None
        self.estimator: ResidualEstimator | None = None
        if "A" in red:
            self.ops = ReducedOperators(A=red["A"], f=red["f"], qoi=self.qoi_matrix,
                                        observations=self.observation_matrix, gram=self.gram,
                                        observations_a=self.observation_affine,
                                        observations_f=self.observation_affine_f)
            if self.ops.A.shape[1:] != (n, n):
                raise SurrogateError(f"reduced operator has shape {self.ops.A.shape}, expected "
                                     f"(Q, {n}, {n})")
        if self.observation_affine is not None:
            m = self.observation_matrix.shape[0]
            Ba, bf = self.observation_affine, self.observation_affine_f
            if self.ops is None or bf is None or Ba.shape != (m, self.ops.A.shape[0], n) \
                    or bf.shape != (m, self.ops.f.shape[0]):
                raise SurrogateError(
                    f"affine observation terms of shapes {Ba.shape}, "
                    f"{None if bf is None else bf.shape} do not fit {m} observations, {n} "
                    "modes and the reduced operators")
        if "R_f" in red:
            self.estimator = ResidualEstimator(R_f=red["R_f"], R_a=red["R_a"],
                                               theta_ref=red["theta_ref"], mu_ref=red["mu_ref"])
        self._spec = None
        self.amplitude = bool(meta.get("amplitude", False))
        self.network_config = meta.get("network")
        self._np_net: NumpyNetwork | None = None
        self._torch_net = None
        self._torch_cache: dict = {}
        if self.kind == "pod-nn":
            state = groups.get("network", {})
            cfg = self.network_config
            if not state or not cfg:
                raise SurrogateError("POD-NN surrogate without network weights")
            if cfg["n_params"] != self.space.dim or cfg["n_modes"] != n:
                raise SurrogateError(f"network maps {cfg['n_params']} parameters to "
                                     f"{cfg['n_modes']} modes; surrogate has {self.space.dim} "
                                     f"parameters and {n} modes")
            try:
                self._np_net = NumpyNetwork(state, cfg)
            except (KeyError, ValueError) as exc:
                raise SurrogateError(f"network weights are incomplete ({exc})") from None
            W0 = self._np_net.members[0][0][0]
            if W0.shape[1] != self.space.dim:
                raise SurrogateError(f"network's first layer takes {W0.shape[1]} inputs, the "
                                     f"surrogate has {self.space.dim} parameters")
        elif self.kind == "galerkin":
            if self.ops is None:
                raise SurrogateError("Galerkin surrogate without reduced operators")
        else:
            raise SurrogateError(f"unknown surrogate kind {self.kind!r}")
        if self.amplitude and self.ops is None:
            raise SurrogateError("surrogate uses an amplitude but has no reduced operators")
        if self.ops is not None:
            self._f1 = np.ascontiguousarray(self.ops.f[:, 0])
            self._a11 = np.ascontiguousarray(self.ops.A[:, 0, 0])
        lo, up = self.space.lower, self.space.upper
        tol = 1e-12 * (up - lo)
        self._lo, self._up = lo - tol, up + tol
        self._lo_list, self._up_list = self._lo.tolist(), self._up.tolist()
        self._P = self.space.dim
        cal = meta.get("calibration") or {}
        self.calibration = \
            Calibration.from_dict(cal["observations"]) if cal.get("observations") else None
        """The split-conformal band on the observations (None: not calibrated)."""
        self.calibration_qoi = \
            Calibration.from_dict(cal["qoi"]) if cal.get("qoi") else None
        """The split-conformal band on the QoIs (None: not calibrated)."""
        ensemble = self.kind == "pod-nn" and self.members >= 2
        for c in (self.calibration, self.calibration_qoi):
            if c is not None and c.scale == "ensemble-std" and not ensemble:
                raise SurrogateError("the calibration scales its band by the ensemble spread, "
                                     "but the surrogate is not an ensemble")

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(cls, path: str | Path, *, case=None) -> Surrogate:
        """Load a surrogate directory (verifying every checksum).

        Args:
            path: the directory written by :meth:`save` / ``hybrid train``.
            case: optionally a :class:`hybrid.core.case.Case` or a case-file path the surrogate
                must belong to (same physics and parameter space).

        Raises:
            SurrogateError: missing, corrupted or modified files, an unknown format, or a
                surrogate of another case.
        """
        from hybrid.surrogate.artifact import read_artifact

        meta, groups = read_artifact(path)
        if cls is Surrogate and "time" in meta:   # a transient case's surrogate
            from hybrid.surrogate.transient import TransientSurrogate

            cls = TransientSurrogate
        try:
            s = cls(meta, groups)
        except (KeyError, TypeError, ValueError) as exc:
            raise SurrogateError(f"{path}: surrogate is inconsistent ({exc})") from None
        s.path = Path(path)
        if case is not None:
            s.check_case(case)
        return s

    def save(self, path: str | Path, extra_files: dict[str, bytes] | None = None) -> Path:
        """Write the surrogate to a directory (see :mod:`hybrid.surrogate.artifact`)."""
        from hybrid.surrogate.artifact import write_artifact

        meta = {k: v for k, v in self.meta.items()
                if k not in ("files", "meta_sha256", "format", "format_version")}
        return write_artifact(path, meta, self._arrays, extra_files)

    def check_case(self, case) -> None:
        """Raise SurrogateError unless ``case`` (Case or case-file path) matches."""
        if isinstance(case, str | Path):
            from hybrid.core.case import load_case

            case = load_case(case)
        where = getattr(self, "path", "surrogate")
        mine, theirs = self.space, case.parameters
        if mine.dim != theirs.dim:
            raise SurrogateError(f"{where}: surrogate has {mine.dim} parameters "
                                 f"({', '.join(mine.names)}), case {case.name!r} has "
                                 f"{theirs.dim}")
        if mine.to_dict() != theirs.to_dict():
            raise SurrogateError(f"{where}: parameter space differs from case {case.name!r} "
                                 "(names, bounds or log-scaling)")
        physics = case.physics.settings.model_dump()
        if physics != self.meta.get("physics"):
            raise SurrogateError(f"{where}: surrogate was trained for physics "
                                 f"{self.meta.get('physics')}, case {case.name!r} has {physics}")

        mine_fp = self.meta.get("fingerprint")
        theirs_fp = case.fingerprint_against(mine_fp)
        if mine_fp is None:   # surrogates saved before fingerprints: what can be compared
            mine_fp = {"observations": None, "mesh": None}
            if self.observation_names != case.observations.names():
                raise SurrogateError(
                    f"{where}: surrogate has sensors {_short(self.observation_names)}, case "
                    f"{case.name!r} ({case.path}) has {_short(case.observations.names())}")
            store_n = _store_dofs(case.store)
            if store_n is not None and store_n != self.n_dofs:
                raise SurrogateError(f"{where}: surrogate has {self.n_dofs} DOFs, the store "
                                     f"of case {case.name!r} ({case.store}) has {store_n}")
            return
        diff = [k for k in theirs_fp if mine_fp.get(k) != theirs_fp[k]]
        if diff:
            what = {"mesh": "mesh", "observations": "sensors (names, kinds or positions)",
                    "qoi": "QoIs", "parameters": "parameters", "physics": "physics"}
            raise SurrogateError(
                f"{where}: surrogate was trained on case {self.meta.get('case_name')!r} and "
                f"does not belong to case {case.name!r} ({case.path}): "
                f"{', '.join(what.get(k, k) for k in diff)} differ")

    def check_store(self, store) -> None:
        """Raise SurrogateError unless ``store`` (path or SnapshotStore) is the one trained on."""
        from hybrid.core.store import SnapshotStore

        st = store if isinstance(store, SnapshotStore) else SnapshotStore(store)
        if st.checksum() != self.meta.get("store", {}).get("checksum"):
            raise SurrogateError(f"{st.path}: store differs from the one the surrogate was "
                                 "trained on (checksum mismatch)")

    # ------------------------------------------------------------------ properties
    @property
    def parameter_names(self) -> list[str]:
        return self.space.names

    @property
    def qoi_names(self) -> list[str]:
        return list(self.meta.get("qoi", []))

    @property
    def observation_names(self) -> list[str]:
        return list(self.meta.get("observations", []))

    @property
    def n_modes(self) -> int:
        return self.modes.shape[0]

    @property
    def n_dofs(self) -> int:
        return self.modes.shape[1]

    @property
    def case_name(self) -> str | None:
        return self.meta.get("case_name")

    @property
    def members(self) -> int:
        return self.network_config["members"] if self.network_config else 1

    @property
    def spec(self):
        """θ_q(μ), ϑ_q(μ) of the model, from the recorded θ trees (no model code runs).

        Surrogates of the former hand-written thermal block record none: θ_k = μ_k, ϑ_0 = 1
        (:func:`hybrid.surrogate.coefficients.coefficients_of`).
        """
        if self._spec is None:
            from hybrid.surrogate.coefficients import coefficients_of

            self._spec = coefficients_of(self.meta, self.space.dim)
            if self._spec is None:
                physics = self.meta.get("physics") or {}
                raise SurrogateError(f"surrogate of physics model {physics.get('model')!r} "
                                     "records no θ trees (model record)")
        return self._spec

    # ------------------------------------------------------------------ inputs
    def _check(self, arr: np.ndarray, extrapolate: bool | None) -> None:
        if arr.ndim == 1 and arr.shape[0] == self._P:
            # plain Python comparisons beat two numpy reductions for a few parameters
            if all(lo <= x <= up for lo, x, up in zip(self._lo_list, arr.tolist(),
                                                      self._up_list, strict=True)):
                return
        if arr.ndim == 2 and arr.shape[1] == self._P and (arr >= self._lo).all() \
                and (arr <= self._up).all():
            return
        if arr.ndim not in (1, 2) or arr.shape[-1] != self._P:
            raise ParameterError(f"mu: expected {self._P} values ({', '.join(self.space.names)})"
                                 f" or a batch of shape (B, {self._P}), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ParameterError("mu: parameters must be finite numbers")
        ext = self.extrapolate if extrapolate is None else extrapolate
        if not ext:
            self.space.check(arr)            # raises with the name and bounds
        bad = (arr < self._lo) | (arr > self._up)
        j = int(np.argwhere(bad)[0][-1])
        p = self.space.parameters[j]
        warnings.warn(f"mu outside the training box ({p.name} not in [{p.lower:g}, "
                      f"{p.upper:g}]): extrapolating", ExtrapolationWarning, stacklevel=3)

    def _np_in(self, mu, extrapolate) -> np.ndarray:
        arr = mu if type(mu) is np.ndarray and mu.dtype == np.float64 \
            else np.asarray(mu, dtype=float)
        self._check(arr, extrapolate)
        return arr

    def _torch_in(self, mu, extrapolate):
        import torch

        self._check(mu.detach().to("cpu", torch.float64).numpy(), extrapolate)
        dt = mu.dtype if mu.dtype in (torch.float32, torch.float64) else torch.float64
        return mu.to(torch.float64), dt

    # ------------------------------------------------------------------ coefficients
    def _theta_np(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec = self.spec
        return np.asarray(spec.theta_a(mu), dtype=float), np.asarray(spec.theta_f(mu),
                                                                     dtype=float)

    def _theta_torch(self, mu):
        from hybrid.surrogate.torch_ops import coefficients

        return coefficients(self.spec, mu)

    def predict(self, mu, *, extrapolate: bool | None = None):
        """Reduced coefficients c(μ): (n,) for one vector, (B, n) for a batch."""
        if type(mu) is np.ndarray and mu.ndim == 1 and mu.dtype == np.float64 \
                and self._np_net is not None and mu.shape[0] == self._P \
                and all(lo <= x <= up for lo, x, up in zip(self._lo_list, mu.tolist(),
                                                          self._up_list, strict=True)):
            # fast path: one valid float64 vector, numpy network (a few microseconds)
            if self.amplitude:
                spec = self.spec
                amp = spec.theta_f(mu).dot(self._f1) / spec.theta_a(mu).dot(self._a11)
                return self._np_net.one(mu, amp)
            return self._np_net.one(mu)
        if _is_torch(mu):
            m, dt = self._torch_in(mu, extrapolate)
            return self._predict_torch(m).to(dt)
        arr = self._np_in(mu, extrapolate)
        if self.kind == "pod-nn":
            amp = None
            if self.amplitude:
                ta, tf = self._theta_np(arr)
                amp = (tf @ self._f1) / (ta @ self._a11)
            if arr.ndim == 1:
                return self._np_net.one(arr, 1.0 if amp is None else float(amp))
            return self._np_net.batch(arr, amp)
        ta, tf = self._theta_np(arr)
        return np.linalg.solve(self.ops.operator(ta), self.ops.rhs(tf)[..., None])[..., 0]

    def _tensor(self, name: str, array: np.ndarray, like):
        key = (name, like.device)
        t = self._torch_cache.get(key)
        if t is None:
            import torch

            t = torch.as_tensor(array, dtype=torch.float64, device=like.device)
            self._torch_cache[key] = t
        return t

    def torch_network(self, device=None):
        """The network as a float64 torch module (cached; moved to ``device``)."""
        import torch

        from hybrid.surrogate.network import PODNetwork

        if self._torch_net is None:
            cfg = self.network_config
            net = PODNetwork(cfg["n_params"], cfg["n_modes"], width=cfg["width"],
                             depth=cfg["depth"], members=cfg["members"],
                             activation=cfg["activation"], amplitude=cfg["amplitude"]).double()
            state = {k: torch.from_numpy(np.array(v)) for k, v in
                     self._arrays["network"].items()}
            net.load_state_dict(state)          # float64 weights into a float64 module
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            self._torch_net = net
        if device is not None:
            self._torch_net.to(device)
        return self._torch_net

    def _predict_torch(self, mu):
        import torch

        if self.kind == "pod-nn":
            net = self.torch_network(mu.device)
            amp = None
            if self.amplitude:
                ta, tf = self._theta_torch(mu)
                amp = (tf @ self._tensor("f1", self._f1, mu)) / \
                    (ta @ self._tensor("a11", self._a11, mu))
            return net(mu, amp)
        ta, tf = self._theta_torch(mu)
        A = torch.einsum("...q,qij->...ij", ta, self._tensor("A", self.ops.A, mu))
        f = tf @ self._tensor("f", self.ops.f, mu)
        return torch.linalg.solve(A, f.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------ outputs
    def _linear(self, mu, matrix: np.ndarray, name: str, extrapolate):
        c = self.predict(mu, extrapolate=extrapolate)
        if _is_torch(c):
            return c @ self._tensor(name, matrix, c).T.to(c.dtype)
        return c @ matrix.T

    def field(self, mu, *, extrapolate: bool | None = None):
        """Full DOF vector(s) u(μ) in store ordering: (N,) or (B, N)."""
        c = self.predict(mu, extrapolate=extrapolate)
        return self.reconstruct(c)

    def reconstruct(self, c):
        """Field(s) Σ_k c_k φ_k from reduced coefficients (numpy or torch)."""
        if _is_torch(c):
            return c @ self._tensor("modes", self.modes, c).to(c.dtype)
        return np.asarray(c) @ self.modes

    def qoi(self, mu, *, extrapolate: bool | None = None):
        """The case's quantities of interest (``qoi_names``), from the reduced functionals."""
        return self._linear(mu, self.qoi_matrix, "qoi", extrapolate)

    def observe(self, mu, *, extrapolate: bool | None = None):
        """The case's observations (``observation_names``), without building the field.

        Linear observations are L_r c; with μ-dependent ones (boundary fluxes)
        y = L_r c + Σ_q θ_q(μ) B_r,q c + Σ_q ϑ_q(μ) b_q, differentiable in μ for torch input.
        """
        if self.observation_affine is None:
            return self._linear(mu, self.observation_matrix, "obs", extrapolate)
        L, Ba, bf = self.observation_matrix, self.observation_affine, self.observation_affine_f
        if _is_torch(mu):
            import torch

            m, dt = self._torch_in(mu, extrapolate)
            c = self._predict_torch(m)
            ta, tf = self._theta_torch(m)
            y = c @ self._tensor("obs", L, m).T \
                + torch.einsum("...q,iqj,...j->...i", ta, self._tensor("obs_a", Ba, m), c) \
                + tf @ self._tensor("obs_f", bf, m).T
            return y.to(dt)
        arr = self._np_in(mu, extrapolate)
        c = self.predict(arr, extrapolate=True)
        ta, tf = self._theta_np(arr)
        return c @ L.T + np.einsum("...q,iqj,...j->...i", ta, Ba, c) + tf @ bf.T

    def members_predict(self, mu, *, extrapolate: bool | None = None) -> np.ndarray:
        """Coefficients of every ensemble member (K, …, n) (numpy)."""
        if self.kind != "pod-nn":
            raise SurrogateError("a Galerkin surrogate has no ensemble")
        import torch

        arr = self._np_in(np.asarray(mu.detach().cpu() if _is_torch(mu) else mu, dtype=float),
                          extrapolate)
        net = self.torch_network("cpu")
        amp = None
        m = torch.from_numpy(arr)
        if self.amplitude:
            ta, tf = self._theta_np(arr)
            amp = torch.from_numpy(np.asarray((tf @ self._f1) / (ta @ self._a11)))
        with torch.no_grad():
            return net.all_members(m, amp).numpy()

    def members_outputs(self, mu, target: str = "observations", *,
                        extrapolate: bool | None = None) -> np.ndarray:
        """Observations or QoIs of every ensemble member (K, …, m) (numpy)."""
        c = self.members_predict(mu, extrapolate=extrapolate)          # (K, …, n)
        if target == "qoi":
            return c @ self.qoi_matrix.T
        if target != "observations":
            raise SurrogateError(f"unknown output set {target!r}; expected 'observations' "
                                 "or 'qoi'")
        y = c @ self.observation_matrix.T
        if self.observation_affine is not None:
            arr = np.asarray(mu.detach().cpu() if _is_torch(mu) else mu, dtype=float)
            ta, tf = self._theta_np(arr)
            y = y + np.einsum("...q,iqj,k...j->k...i", ta, self.observation_affine, c) \
                + tf @ self.observation_affine_f.T
        return y

    def band_scale(self, mu, target: str = "observations", *,
                   extrapolate: bool | None = None) -> np.ndarray:
        """The band's scale s(μ) (…, m).

        The members' standard deviation (ddof 1) of each output for an ensemble (K ≥ 2),
        else ones (a constant band).
        """
        if self.kind == "pod-nn" and self.members >= 2:
            return self.members_outputs(mu, target, extrapolate=extrapolate).std(axis=0, ddof=1)
        arr = np.asarray(mu.detach().cpu() if _is_torch(mu) else mu, dtype=float)
        self._check(arr, extrapolate)
        m = len(self.observation_names if target == "observations" else self.qoi_names)
        return np.ones((*arr.shape[:-1], m))

    def band(self, mu, *, extrapolate: bool | None = None) -> np.ndarray:
        """Calibrated error band δ(μ) = q·s(μ) on the observations (…, m) (numpy).

        Split-conformal (:mod:`hybrid.surrogate.calibration`): for μ drawn like the
        campaign's samples, P(|y_i^FEM(μ) − y_i(μ)| ≤ δ_i(μ) ∀i) ≥ 1 − α. Not a bound at
        any one μ. SurrogateError if the surrogate was not calibrated (``hybrid train
        --calibrate ALPHA``).
        """
        return self._band(mu, self.calibration, "observations", extrapolate)

    def band_qoi(self, mu, *, extrapolate: bool | None = None) -> np.ndarray:
        """Calibrated error band on the QoIs (…, n_qoi); see :meth:`band`."""
        return self._band(mu, self.calibration_qoi, "qoi", extrapolate)

    def _band(self, mu, cal: Calibration | None, target: str, extrapolate) -> np.ndarray:
        if cal is None:
            raise SurrogateError(f"the surrogate has no calibrated band on its {target} "
                                 "(train with hybrid train --calibrate ALPHA)")
        scale = self.band_scale(mu, target, extrapolate=extrapolate)
        if cal.scale == "constant":
            scale = np.ones_like(scale)
        return cal.band(scale)

    def error_estimate(self, mu, *, relative: bool = True, method: str = "auto",
                       coefficients=None, extrapolate: bool | None = None):
        """Error estimate of the surrogate's field at μ: (,) or (B,).

        ``method="residual"`` (affine models; the default when available): the rigorous bound
        Δ(μ) = ‖r(μ)‖_{X'}/α_LB(μ) ≥ ‖u_h(μ) − ũ(μ)‖_X in the energy norm at μ̄ (see
        :mod:`hybrid.surrogate.reductor`), relative: Δ(μ)/‖ũ(μ)‖_X. ``coefficients`` gives
        the reduced coefficients to assess (default: this surrogate's prediction).
        ``method="ensemble"``: the spread of the ensemble members
        (:mod:`hybrid.surrogate.indicators`) — an indicator, not a bound.
        """
        if method == "auto":
            method = "residual" if self.estimator is not None else "ensemble"
        if method == "ensemble":
            if self.kind != "pod-nn" or self.members < 2:
                raise SurrogateError("no error estimate: the model is not affine and the "
                                     "surrogate is not an ensemble (train with --members >= 2)")
            spread = ensemble_spread(self.members_predict(mu, extrapolate=extrapolate),
                                     self.gram, relative=relative)
            if _is_torch(mu):
                import torch

                return torch.as_tensor(spread, dtype=torch.float64, device=mu.device)
            return spread
        if method != "residual":
            raise SurrogateError(f"unknown error-estimate method {method!r}")
        if self.estimator is None:
            raise SurrogateError("no residual-based estimate: the model is not affine")
        est = self.estimator
        if _is_torch(mu):
            import torch

            m, dt = self._torch_in(mu, extrapolate)
            c = self._predict_torch(m) if coefficients is None else coefficients.to(m)
            ta, tf = self._theta_torch(m)
            r, qa, n = est.R_a.shape
            outer = (ta.unsqueeze(-1) * c.unsqueeze(-2)).reshape(*c.shape[:-1], qa * n)
            v = tf @ self._tensor("R_f", est.R_f, m).T - \
                outer @ self._tensor("R_a", est.R_a.reshape(r, qa * n), m).T
            alpha = torch.min(ta / self._tensor("theta_ref", est.theta_ref, m), dim=-1).values
            if bool((alpha <= 0).any()):
                raise SurrogateError("the min-theta coercivity bound needs theta_q(mu) > 0")
            d = torch.linalg.vector_norm(v, dim=-1) / alpha
            if relative:
                G = self._tensor("gram", self.gram, m)
                d = d / torch.sqrt(torch.einsum("...i,ij,...j->...", c, G, c))
            return d.to(dt)
        arr = self._np_in(mu, extrapolate)
        c = self.predict(arr, extrapolate=True) if coefficients is None \
            else np.asarray(coefficients, dtype=float)
        ta, tf = self._theta_np(arr)
        d = est.dual_norm(ta, tf, c) / est.coercivity_lower_bound(ta)
        if relative:
            d = d / np.sqrt(np.einsum("...i,ij,...j->...", c, self.gram, c))
        return d if d.ndim else float(d)

    def __repr__(self) -> str:
        return (f"Surrogate(kind={self.kind!r}, case={self.case_name!r}, "
                f"parameters={self.space.dim}, modes={self.n_modes}, dofs={self.n_dofs})")


def _short(names: list[str], k: int = 4) -> str:
    return "[" + ", ".join(names[:k]) + (", …" if len(names) > k else "") + f"] ({len(names)})"


def _store_dofs(store: Path) -> int | None:
    """The number of DOFs recorded in a store's manifest, or None if there is no store."""
    import json

    try:
        return int(json.loads((Path(store) / "store.json").read_text())["n_dofs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
