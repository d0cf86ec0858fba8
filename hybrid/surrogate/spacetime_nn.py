"""POD-NN in (μ, t): a network maps the parameters and the time to space–time POD coefficients.

    c(μ, t) ≈ N(ξ(μ), τ(t)),   u(μ, t) ≈ Φᵀ c(μ, t),

with Φ a space–time POD basis (:mod:`hybrid.surrogate.spacetime`), ξ the box scaling of
:mod:`hybrid.surrogate.network` and τ a time feature on [−1, 1]:

* ``"linear"``: τ = 2(t − t0)/(t_end − t0) − 1;
* ``"sqrt"`` (default): τ = 2√((t − t0)/(t_end − t0)) − 1 — a parabolic solution started
  from a non-equilibrium state changes fastest near t0 (the fast modes decay like
  e^{−λt}, λ large), and √ spreads those early times over more of the input range.

The network, its training and its numpy fast path are those of the steady POD-NN
(:class:`~hybrid.surrogate.network.PODNetwork`, :func:`~hybrid.surrogate.training.train_network`
with the exact last layer, :class:`~hybrid.surrogate.fastpath.NumpyNetwork`): a time is one
more input, every (trajectory, output time) pair one training row, and validation holds out
whole trajectories. The training loss is the mean squared relative error per row
(‖c_NN − c‖²/‖c‖², the steady POD-NN's), which bounds the space–time relative error. A
whole trajectory is one batched forward pass over its n_t rows.

Two options keep that per-row relative loss well posed:

* the initial time is not learned: c(μ, t0) = c0(μ), the projection of the initial state,
  is known exactly (u0(μ) = Σ ϑ0_q u0_q) and passed to :meth:`SpaceTimeNetwork.trajectory`;
  a row at t0 whose state is nearly zero (a small initial amplitude) would otherwise weigh
  1/‖c‖² in the loss;
* an amplitude a(μ) > 0 (as in the steady POD-NN): the network learns c/a(μ), so rows
  whose size varies over decades with μ (a linear model scales with its source and its
  initial amplitude) become O(1) targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.fastpath import NumpyNetwork

TIME_TRANSFORMS = ("sqrt", "linear")


def time_feature(times: np.ndarray, t0: float, t_end: float,
                 transform: str = "sqrt") -> np.ndarray:
    """τ(t) ∈ [−1, 1] (module docstring)."""
    if transform not in TIME_TRANSFORMS:
        raise SurrogateError(f"unknown time transform {transform!r}; expected one of "
                             f"{TIME_TRANSFORMS}")
    if not t_end > t0:
        raise SurrogateError(f"need t_end > t0, got t0={t0}, t_end={t_end}")
    s = (np.asarray(times, dtype=float) - t0) / (t_end - t0)
    if np.any(s < -1e-12) or np.any(s > 1 + 1e-12):
        raise SurrogateError(f"times must lie in [{t0}, {t_end}]")
    s = np.clip(s, 0.0, 1.0)
    return 2.0 * (np.sqrt(s) if transform == "sqrt" else s) - 1.0


def rows(mu: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Inputs (S·n_t, P + 1): [μ_s, τ_n] for every trajectory s and time n (s-major)."""
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    S, P = mu.shape
    nt = tau.size
    X = np.empty((S, nt, P + 1))
    X[:, :, :P] = mu[:, None, :]
    X[:, :, P] = tau[None, :]
    return X.reshape(S * nt, P + 1)


@dataclass
class SpaceTimeNetwork:
    """A trained (μ, t) → c network with its time grid (numpy evaluation).

    Attributes:
        net: the numpy fast path of the weights.
        t0, t_end, transform: the time feature.
        times: the output times a :meth:`trajectory` is evaluated at by default.
        state, config: the torch state (numpy arrays) and the network's config.
        amplitude: μ ↦ a(μ) > 0 the network's outputs are scaled by, or None.
    """

    net: NumpyNetwork
    t0: float
    t_end: float
    transform: str
    times: np.ndarray
    state: dict
    config: dict
    amplitude: Callable | None = None

    def __post_init__(self):
        self._tau = time_feature(self.times, self.t0, self.t_end, self.transform)
        P = self.config["n_params"] - 1
        self._X = np.empty((self.times.size, P + 1))
        self._X[:, P] = self._tau

    def _amp(self, mu, k: int):
        return None if self.amplitude is None else np.full(k, float(self.amplitude(mu)))

    def trajectory(self, mu: np.ndarray, c0: np.ndarray | None = None) -> np.ndarray:
        """c(μ, t_n) at every output time, (n_t, n): one batched forward pass.

        With ``c0`` (the initial coefficients) the first row is c0, as in training with
        ``skip_initial``; without it the network's value at t0.
        """
        self._X[:, :-1] = mu
        out = self.net.batch(self._X, self._amp(mu, self.times.size))
        if c0 is not None:
            out[0] = c0
        return out

    def predict(self, mu: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The network's c(μ, t) at arbitrary times in [t0, t_end], (len(times), n)."""
        tau = time_feature(times, self.t0, self.t_end, self.transform)
        return self.net.batch(rows(np.asarray(mu, dtype=float)[None], tau),
                              self._amp(mu, tau.size))


def train_spacetime_network(mu: np.ndarray, times: np.ndarray, C: np.ndarray,
                            lower: np.ndarray, upper: np.ndarray, cfg, *,
                            log_mask: np.ndarray | None = None, transform: str = "sqrt",
                            validation: int | float = 0.1, seed: int = 0,
                            amplitude: Callable | None = None, skip_initial: bool = True,
                            extra: tuple | None = None):
    """Train the (μ, t) network on trajectories' coefficients C (S, n_t, n) at ``times``.

    Args:
        mu: (S, P) parameters of the trajectories.
        times: (n_t,) output times (t0 first, t_end last).
        C: (S, n_t, n) coefficients of the trajectories on the basis.
        lower: (P,) lower corner of the parameter box.
        upper: (P,) upper corner of the parameter box.
        cfg: a :class:`hybrid.surrogate.training.TrainingConfig` (``physics_informed`` is
            ignored: there is no reduced residual of a trajectory here).
        log_mask: log-scaled parameters (default none).
        transform: the time feature (:data:`TIME_TRANSFORMS`).
        validation: trajectories held out for validation/early stopping (count or fraction).
        seed: seed of the validation split.
        amplitude: μ ↦ a(μ) > 0 (the network learns c/a), or None.
        skip_initial: leave the rows at t0 out (the initial state is known exactly).
        extra: more training trajectories (mu_x (S_x, P), times_x, C_x (S_x, n_tx, n)) on
            their own time grid in [t0, t_end] — e.g. Galerkin-ROM trajectories at many more
            parameters (the time-dependent analogue of the steady POD-NN's collocation
            points, whose targets are reduced Galerkin solutions); never used for validation.

    Returns:
        (:class:`SpaceTimeNetwork`, the :class:`~hybrid.surrogate.training.TrainingResult`).
    """
    from hybrid.surrogate.training import TrainingData, train_network

    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    C = np.asarray(C, dtype=float)
    times = np.asarray(times, dtype=float)
    S, P = mu.shape
    if C.ndim != 3 or C.shape[:2] != (S, times.size):
        raise SurrogateError(f"coefficients must have shape (S={S}, n_t={times.size}, n), "
                             f"got {C.shape}")
    t0, t_end = float(times[0]), float(times[-1])
    tau = time_feature(times, t0, t_end, transform)
    n_val = int(round(validation * S)) if isinstance(validation, float) else int(validation)
    n_val = min(max(n_val, 0), S - 2)
    perm = np.random.default_rng(seed).permutation(S)
    vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    n = C.shape[2]
    lm = np.zeros(P, dtype=bool) if log_mask is None else np.asarray(log_mask, dtype=bool)
    k0 = 1 if skip_initial else 0
    tau_fit = tau[k0:]

    def amps(idx):
        if amplitude is None:
            return None
        a = np.array([float(amplitude(m)) for m in mu[idx]])
        if np.any(~(a > 0)):
            raise SurrogateError("the amplitude must be > 0 at every training parameter")
        return np.repeat(a, tau_fit.size)

    X_tr, Y_tr, A_tr = rows(mu[ti], tau_fit), C[ti, k0:].reshape(-1, n), amps(ti)
    if extra is not None:
        mu_x, t_x, C_x = (np.asarray(v, dtype=float) for v in extra)
        mu_x = np.atleast_2d(mu_x)
        if C_x.shape[:2] != (mu_x.shape[0], t_x.size) or C_x.shape[2] != n:
            raise SurrogateError(f"extra coefficients must have shape ({mu_x.shape[0]}, "
                                 f"{t_x.size}, {n}), got {C_x.shape}")
        X_tr = np.vstack([X_tr, rows(mu_x, time_feature(t_x, t0, t_end, transform))])
        Y_tr = np.vstack([Y_tr, C_x.reshape(-1, n)])
        if amplitude is not None:
            a = np.array([float(amplitude(m)) for m in mu_x])
            if np.any(~(a > 0)):
                raise SurrogateError("the amplitude must be > 0 at every training parameter")
            A_tr = np.r_[A_tr, np.repeat(a, t_x.size)]
    data = TrainingData(
        mu_train=X_tr, c_train=Y_tr,
        mu_val=rows(mu[vi], tau_fit) if n_val else np.zeros((0, P + 1)),
        c_val=C[vi, k0:].reshape(-1, n) if n_val else np.zeros((0, n)),
        lower=np.r_[np.asarray(lower, dtype=float), -1.0],
        upper=np.r_[np.asarray(upper, dtype=float), 1.0],
        log_mask=np.r_[lm, False], amp_train=A_tr,
        amp_val=amps(vi) if n_val and amplitude is not None else None)
    cfg.physics_informed = False
    res = train_network(data, cfg)
    state = {k: v.detach().cpu().numpy() for k, v in res.network.state_dict().items()}
    config = dict(res.network.config)
    st = SpaceTimeNetwork(NumpyNetwork(state, config), t0, t_end, transform, times, state,
                          config, amplitude)
    return st, res
