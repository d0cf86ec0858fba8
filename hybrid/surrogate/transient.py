"""Surrogates of transient cases: a whole trajectory per query (numpy + torch; no DOLFINx).

::

    s = Surrogate.load("runs/heat_block_2x2/surrogate")     # a TransientSurrogate
    s.times                                 # the store's output times (n_t,)
    c = s.predict(mu)                       # reduced coefficients at every output time (n_t, n)
    u = s.field(mu, times=[0.1, 0.2])       # fields at chosen output times (2, N)
    q = s.qoi(mu)                           # the case's QoIs over time (n_t, n_qoi)
    y = s.observe(mu)                       # the sensors at [observations] times, time-major
    y, d = s.observe_with_bound(mu)         # … with certified bounds |y_i − y_h,i| ≤ d_i

Three kinds, one basis Φ (a space–time POD in the L² inner product, starting with the
initial state's affine terms so that u0(μ) is represented exactly;
:mod:`hybrid.surrogate.spacetime`):

* ``galerkin-time`` — the reduced time-stepping model of an affine linear model
  (:mod:`hybrid.surrogate.galerkin_time`): the FEM's own scheme and step on the reduced
  operators, with the parabolic residual bound Δ_n ≥ ‖u_h(t_n) − Φᵀc^n‖_M at every step;
  an observation l_i then obeys |l_i(u_h − Φᵀc)| ≤ ν_i Δ_n with ν_i = ‖l_i‖_{M'} =
  (l_i,F M_FF⁻¹ l_i,Fᵀ)^{1/2} on the free DOFs F (both fields vanish on the Dirichlet DOFs);
* ``pod-nn-time`` — a network (μ, t) ↦ c (:mod:`hybrid.surrogate.spacetime_nn`), the
  initial coefficients c(t0) = Σ_q ϑ0_q(μ) C0_q exact;
* ``latent-ode`` — a neural ODE dc/dt = g(c, μ) from c(t0) (:mod:`hybrid.surrogate.latent`).

Queries take one μ (P,) or a batch (B, P) (a leading batch axis on every output). The
inference side differentiates these by batched finite differences (no torch path here).
"""

from __future__ import annotations

import numpy as np

from hybrid.core.parameters import ParameterSpace
from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.surrogate import Surrogate

TRANSIENT_KINDS = ("galerkin-time", "pod-nn-time", "latent-ode")
ROM_ARRAYS = ("free_dofs", "M_r", "A_r", "f_r", "C0", "G0", "theta_ref", "R_f", "R_M", "R_A")
"""What a saved :class:`~hybrid.surrogate.galerkin_time.GalerkinTimeROM` consists of (the
``reduced`` group): no N×N matrix is kept, only reduced operators and the bound's factors."""


def rom_state(rom) -> dict[str, np.ndarray]:
    """The arrays of a built ROM that :func:`rom_from_state` restores it from."""
    out = {"free_dofs": np.asarray(rom.F, dtype=np.int64), "M_r": rom.M_r, "A_r": rom.A_r,
           "f_r": rom.f_r, "C0": rom.C0, "G0": rom.G0}
    if rom.has_bound:
        out.update(theta_ref=rom.theta_ref, R_f=rom.R_f, R_M=rom.R_M, R_A=rom.R_A)
    return out


def rom_from_state(arrays: dict, modes: np.ndarray, *, theta_a, theta_f, theta_0,
                   scheme: str, dt: float, n_steps: int):
    """A :class:`~hybrid.surrogate.galerkin_time.GalerkinTimeROM` from its saved arrays.

    The online state of the ROM (reduced operators, initial coefficients, the bound's
    R matrices) is set directly; the offline construction (projections, Riesz
    representers) is not repeated, and no full-order matrix is needed.
    """
    from hybrid.surrogate.galerkin_time import SCHEMES, GalerkinTimeROM

    if scheme not in SCHEMES:
        raise SurrogateError(f"unknown time scheme {scheme!r}")
    missing = [k for k in ("free_dofs", "M_r", "A_r", "f_r", "C0", "G0") if k not in arrays]
    if missing:
        raise SurrogateError(f"galerkin-time surrogate lacks {missing[0]!r}")
    rom = GalerkinTimeROM.__new__(GalerkinTimeROM)
    rom.scheme, rom.dt, rom.n_steps = scheme, float(dt), int(n_steps)
    rom.theta_a, rom.theta_f, rom.theta_0 = theta_a, theta_f, theta_0
    rom.N = modes.shape[1]
    rom.F = np.asarray(arrays["free_dofs"], dtype=np.int64)
    rom.Phi = np.ascontiguousarray(modes[:, rom.F])
    rom.M_r, rom.A_r, rom.f_r = arrays["M_r"], arrays["A_r"], arrays["f_r"]
    rom.C0, rom.G0 = arrays["C0"], arrays["G0"]
    r = rom.Phi.shape[0]
    if rom.M_r.shape != (r, r) or rom.A_r.shape[1:] != (r, r) or rom.f_r.shape[1] != r \
            or rom.C0.shape[1] != r:
        raise SurrogateError(f"galerkin-time surrogate: reduced operators do not fit {r} "
                             "modes")
    rom._online_setup()
    rom.has_bound = "R_f" in arrays
    if rom.has_bound:
        rom.theta_ref, rom.R_f = arrays["theta_ref"], arrays["R_f"]
        rom.R_M, rom.R_A = arrays["R_M"], arrays["R_A"]
    return rom


def latent_from_state(state: dict, config: dict):
    """The numpy evaluator of a saved latent ODE (weights into a torch module, then folded)."""
    import torch

    from hybrid.surrogate.latent import LatentODE, NumpyLatentODE

    model = LatentODE(int(config["n_latent"]), int(config["n_params"]),
                      width=int(config["width"]), depth=int(config["depth"]),
                      structure=config["structure"]).double()
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    except (RuntimeError, KeyError) as exc:
        raise SurrogateError(f"latent-ODE weights are incomplete ({exc})") from None
    return NumpyLatentODE(model)


class TransientSurrogate(Surrogate):
    """A surrogate of a transient case (see the module docstring)."""

    transient = True

    def __init__(self, meta: dict, groups: dict[str, dict[str, np.ndarray]]):
        from hybrid.core import theta as th

        self.meta = meta
        self.kind = meta["kind"]
        if self.kind not in TRANSIENT_KINDS:
            raise SurrogateError(f"unknown transient surrogate kind {self.kind!r}")
        self.space = ParameterSpace.from_dict(meta["parameters"])
        self.extrapolate = False
        self._arrays = groups
        basis, red = groups.get("basis", {}), groups.get("reduced", {})
        if "modes" not in basis:
            raise SurrogateError("surrogate has no POD basis")
        self.modes = basis["modes"]
        n, N = self.modes.shape
        if n != meta.get("n_modes") or N != meta.get("n_dofs"):
            raise SurrogateError(f"basis has shape {self.modes.shape}, metadata says "
                                 f"({meta.get('n_modes')}, {meta.get('n_dofs')})")
        tm = meta["time"]
        self.times = np.asarray(tm["times"], dtype=float)
        self.observation_times = np.asarray(tm.get("observation_times", []), dtype=float)
        self._obs_idx = self.time_indices(self.observation_times) \
            if self.observation_times.size else np.zeros(0, dtype=int)
        self.qoi_matrix = red["qoi"].reshape(-1, n)
        self.observation_matrix = red.get("observations", np.zeros((0, n))).reshape(-1, n)
        self.observation_affine = None
        self.gram = red["gram"]
        self.singular_values = red.get("singular_values", np.zeros(0))
        self.C0 = red.get("C0")
        record = meta.get("model") or {}
        self._theta0 = record.get("theta_0")
        if self.C0 is not None and self._theta0 is None:
            raise SurrogateError("surrogate has initial coefficients but no theta_0 trees")
        for tree in self._theta0 or []:
            th.validate(tree, self.space.dim, "theta_0")
        self.ops = None
        self.estimator = None
        self.network_config = meta.get("network")
        self.amplitude = False
        self._spec = None
        self._torch_cache = {}
        self._np_net = None
        self._torch_net = None
        self.rom = None
        self.nu = red.get("observation_dual_norms")
        self._lo, self._up = self.space.lower, self.space.upper
        self._lo_list, self._up_list = self._lo.tolist(), self._up.tolist()
        self._P = self.space.dim
        if self.kind == "galerkin-time":
            spec = self.spec
            self.rom = rom_from_state(
                red, self.modes, theta_a=spec.theta_a, theta_f=spec.theta_f,
                theta_0=self.theta_0, scheme=tm["scheme"], dt=float(tm["dt"]),
                n_steps=int(tm["n_steps"]))
            self._steps = np.rint((self.times - self.times[0]) / float(tm["dt"])).astype(int)
        elif self.kind == "pod-nn-time":
            from hybrid.surrogate.fastpath import NumpyNetwork
            from hybrid.surrogate.spacetime_nn import SpaceTimeNetwork

            state = groups.get("network", {})
            if not state or not self.network_config:
                raise SurrogateError("POD-NN surrogate without network weights")
            try:
                net = NumpyNetwork(state, self.network_config)
            except (KeyError, ValueError) as exc:
                raise SurrogateError(f"network weights are incomplete ({exc})") from None
            nn_meta = meta["spacetime_network"]
            self.net = SpaceTimeNetwork(net, float(nn_meta["t0"]), float(nn_meta["t_end"]),
                                        nn_meta["transform"], self.times, state,
                                        self.network_config)
        else:
            state = groups.get("network", {})
            if not state or not self.network_config:
                raise SurrogateError("latent-ODE surrogate without network weights")
            self.latent_np = latent_from_state(state, self.network_config)
            self._substeps = int(meta.get("latent", {}).get("substeps", 1))
        if self.kind != "galerkin-time" and self.C0 is None and self.kind == "latent-ode":
            raise SurrogateError("a latent-ODE surrogate needs the initial coefficients C0")

    # ------------------------------------------------------------------ time
    @property
    def members(self) -> int:
        return 1

    def time_indices(self, times) -> np.ndarray:
        """Indices into :attr:`times` of ``times`` (each must be an output time)."""
        from hybrid.core.store import output_time_indices

        t = self.times
        try:
            return output_time_indices(t, times)
        except ValueError as exc:
            raise SurrogateError(f"t = {exc.args[0]:g} is not an output time of the surrogate "
                                 f"({t[0]:g} … {t[-1]:g}, {t.size} times)") from None

    def theta_0(self, mu):
        """ϑ0_q(μ) of the initial state's terms, (..., Q0)."""
        from hybrid.core.theta import evaluate_all

        return evaluate_all(self._theta0, mu)

    def initial_coefficients(self, mu: np.ndarray) -> np.ndarray | None:
        """c(t0) = Σ_q ϑ0_q(μ) C0_q, or None without initial terms."""
        if self.C0 is None:
            return None
        return np.asarray(self.theta_0(mu), dtype=float) @ self.C0

    # ------------------------------------------------------------------ queries
    def _one(self, mu: np.ndarray) -> np.ndarray:
        """The coefficients at every output time, (n_t, n), for one checked μ."""
        if self.kind == "galerkin-time":
            return self.rom.solve(mu)[self._steps]
        c0 = self.initial_coefficients(mu)
        if self.kind == "pod-nn-time":
            return self.net.trajectory(mu, c0)
        return self.latent_np.trajectory(mu, c0, self.times, self._substeps)

    def predict(self, mu, *, times=None, extrapolate: bool | None = None):
        """Reduced coefficients at the output times: (n_t, n), or (B, n_t, n) for a batch.

        ``times``: a subset of :attr:`times` (default all).
        """
        if type(mu).__module__.startswith("torch"):
            raise SurrogateError("a transient surrogate answers numpy queries (the inference "
                                 "side differentiates it by finite differences)")
        arr = self._np_in(mu, extrapolate)
        idx = slice(None) if times is None else self.time_indices(times)
        if arr.ndim == 1:
            return self._one(arr)[idx]
        return np.array([self._one(m)[idx] for m in arr])

    def field(self, mu, *, times=None, extrapolate: bool | None = None):
        """Fields Φᵀc at the output times (store ordering): (n_t, N) or (B, n_t, N)."""
        return self.predict(mu, times=times, extrapolate=extrapolate) @ self.modes

    def qoi(self, mu, *, times=None, extrapolate: bool | None = None):
        """The case's QoIs at the output times: (n_t, n_qoi) or (B, n_t, n_qoi)."""
        return self.predict(mu, times=times, extrapolate=extrapolate) @ self.qoi_matrix.T

    def observe(self, mu, *, extrapolate: bool | None = None):
        """The observations at the case's observation times, time-major: (m,) or (B, m)."""
        c = self.predict(mu, extrapolate=extrapolate)
        y = c[..., self._obs_idx, :] @ self.observation_matrix.T
        return y.reshape(*y.shape[:-2], -1)

    def error_estimate(self, mu, *, relative: bool = True, method: str = "auto",
                       coefficients=None, extrapolate: bool | None = None):
        """The bound Δ_n ≥ ‖u_h(t_n) − ũ(t_n)‖_M at every output time (``galerkin-time``).

        Relative: Δ_n / ‖ũ(t_n)‖_M. (n_t,) or (B, n_t).
        """
        if self.kind != "galerkin-time" or not self.rom.has_bound:
            raise SurrogateError(f"no error bound: a {self.kind} surrogate has none (only "
                                 "galerkin-time surrogates of affine models are certified)")
        if method not in ("auto", "residual"):
            raise SurrogateError(f"unknown error-estimate method {method!r}")
        arr = self._np_in(mu, extrapolate)
        one = arr.ndim == 1
        out = []
        for m in np.atleast_2d(arr):
            c = self.rom.solve(m)
            d = self.rom.bound(m, c)[self._steps]
            if relative:
                cs = c[self._steps]
                d = d / np.sqrt(np.einsum("ni,ij,nj->n", cs, self.gram, cs))
            out.append(d)
        return out[0] if one else np.array(out)

    def observe_with_bound(self, mu) -> tuple[np.ndarray, np.ndarray]:
        """(y, δ) at one μ: observations and certified bounds |y_i − y_h,i| ≤ δ_i = ν_i Δ."""
        if self.kind != "galerkin-time" or self.nu is None:
            raise SurrogateError("certified observations need a galerkin-time surrogate")
        mu = self._np_in(mu, None)
        c = self.rom.solve(mu)
        Delta = self.rom.bound(mu, c)[self._steps][self._obs_idx]        # (n_obs_t,)
        y = c[self._steps][self._obs_idx] @ self.observation_matrix.T     # (n_obs_t, m)
        return y.reshape(-1), (Delta[:, None] * self.nu[None, :]).reshape(-1)

    def members_predict(self, mu, *, extrapolate: bool | None = None) -> np.ndarray:
        raise SurrogateError("a transient surrogate has no ensemble")

    def __repr__(self) -> str:
        return (f"TransientSurrogate(kind={self.kind!r}, case={self.case_name!r}, "
                f"parameters={self.space.dim}, modes={self.n_modes}, dofs={self.n_dofs}, "
                f"times={self.times.size})")
