"""The served models: a surrogate and a case's FEM model as :class:`umbridge.Model`s."""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import umbridge

from hybrid.core.parameters import ParameterSpace
from hybrid.errors import HybridError, SolveFailed
from hybrid.serve.channel import WorkChannel
from hybrid.serve.inputs import RequestError, ServeError, _config, _index, _mu, _names, _vector

if TYPE_CHECKING:
    from mpi4py.MPI import Comm

    from hybrid.core.case import Case
    from hybrid.surrogate import Surrogate


class _ParameterModel(umbridge.Model):
    """Shared part of the served models: one input vector μ in ``space``, named outputs.

    Subclasses implement, for a checked μ and config (``cfg``), the value of output ``k``
    (:meth:`_values`), its vector–Jacobian and Jacobian–vector products (:meth:`_vjp`,
    :meth:`_jvp`) and value with full Jacobian (:meth:`_value_and_jacobian`); the UM-Bridge
    methods here and the single-output views (:class:`OutputView`,
    :class:`LogLikelihoodView`) are built on those.
    """

    space: ParameterSpace
    output_names: list[tuple[str, list[str]]]
    config_keys: dict[str, Any] = {}

    @property
    def base(self) -> _ParameterModel:
        """The model doing the work (calls for one base run one at a time)."""
        return self

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [self.space.dim]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [len(n) for _, n in self.output_names]

    def supports_evaluate(self) -> bool:
        return True

    def supports_gradient(self) -> bool:
        return any(self._has_derivative(k) for k in range(len(self.output_names)))

    def supports_apply_jacobian(self) -> bool:
        return self.supports_gradient()

    def output_index(self, output: str) -> int:
        """The position of output ``output`` (``"observations"``, ``"qoi"``)."""
        names = [o for o, _ in self.output_names]
        if output not in names:
            raise ServeError(f"model {self.name} has no output {output!r} (it has {names})")
        return names.index(output)

    def _has_derivative(self, k: int) -> bool:
        raise NotImplementedError

    def _check(self, parameters: Any, config: Any, extra: dict | None = None
               ) -> tuple[np.ndarray, dict]:
        """(μ, config) of a request: config keys of this model (and ``extra``), μ in the box."""
        cfg = _config(config, {**self.config_keys, **(extra or {})})
        return _mu(parameters, self.space), cfg

    def _values(self, mu: np.ndarray, cfg: dict) -> list[np.ndarray]:
        raise NotImplementedError

    def _value_and_jacobian(self, k: int, mu: np.ndarray, cfg: dict
                            ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _vjp(self, k: int, mu: np.ndarray, cfg: dict, s: np.ndarray) -> np.ndarray:
        return self._value_and_jacobian(k, mu, cfg)[1].T @ s

    def _jvp(self, k: int, mu: np.ndarray, cfg: dict, v: np.ndarray) -> np.ndarray:
        return self._value_and_jacobian(k, mu, cfg)[1] @ v

    def _wrt(self, out_wrt: Any, in_wrt: Any) -> int:
        k = _index(out_wrt, len(self.output_names), "outWrt")
        _index(in_wrt, 1, "inWrt")
        if not self._has_derivative(k):
            raise RequestError(f"outWrt: model {self.name} has no derivatives of output {k} "
                               f"({self.output_names[k][0]})", "UnsupportedFeature")
        return k

    # -- the UM-Bridge methods
    def __call__(self, parameters: list[list[float]], config: dict | None = None):
        mu, cfg = self._check(parameters, config)
        return [np.asarray(v, dtype=float).tolist() for v in self._values(mu, cfg)]

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list[list[float]],
                 sens: list[float], config: dict | None = None) -> list[float]:
        """sensᵀ J with J = ∂output[out_wrt]/∂μ."""
        k = self._wrt(out_wrt, in_wrt)
        mu, cfg = self._check(parameters, config)
        s = _vector(sens, self.get_output_sizes()[k], "sens")
        return np.asarray(self._vjp(k, mu, cfg, s), dtype=float).tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list[list[float]],
                       vec: list[float], config: dict | None = None) -> list[float]:
        """J vec with J = ∂output[out_wrt]/∂μ."""
        k = self._wrt(out_wrt, in_wrt)
        mu, cfg = self._check(parameters, config)
        v = _vector(vec, self.space.dim, "vec")
        return np.asarray(self._jvp(k, mu, cfg, v), dtype=float).tolist()

    def views(self) -> list[umbridge.Model]:
        """Single-output views for stock clients (tinyDA, ``umbridge.emcee``).

        One per output, and the log-likelihood of the observations when there are any:
        ``NAME-observations``, ``NAME-qoi``, ``NAME-loglik`` (:mod:`hybrid.serve.views`).
        """
        from hybrid.serve.views import LogLikelihoodView, OutputView

        out: list[umbridge.Model] = [OutputView(self, o) for o, _ in self.output_names]
        if self.output_names[0][0] == "observations":
            out.append(LogLikelihoodView(self))
        return out


class SurrogateModel(_ParameterModel):
    """A :class:`hybrid.surrogate.Surrogate` as an UM-Bridge model (numpy + torch; no MPI).

    Input: one vector μ of ``surrogate.space.dim`` parameters. Outputs: the observations
    (``surrogate.observation_names``) and the QoIs (``surrogate.qoi_names``), or the QoIs
    only when the surrogate has no observations. Config: ``{"extrapolate": bool}``.
    Evaluations use the surrogate's numpy path; derivatives torch autograd.

    With ``gradients`` (default), construction imports torch and runs every derivative once
    at the centre of the box, so that the cost of loading torch (with the CUDA wheel ~730 MB
    of resident memory and ~2 s) is paid before serving, not by a client's first Gradient
    request. ``gradients=False`` serves values only and never imports torch.
    """

    config_keys: dict[str, Any] = {"extrapolate": bool}

    def __init__(self, surrogate: Surrogate, name: str = "surrogate", *,
                 gradients: bool = True):
        super().__init__(name)
        self.surrogate = surrogate
        self.space: ParameterSpace = surrogate.space
        outputs = [("qoi", surrogate.qoi_names, surrogate.qoi)]
        if getattr(surrogate, "transient", False):
            # a trajectory: QoIs at every output time, time-major ("mean@0.1"); numpy only,
            # so no derivatives are served
            from hybrid.core.case import observation_label

            names = [observation_label(q, t) for t in surrogate.times
                     for q in surrogate.qoi_names]

            def qoi(mu, extrapolate=False):
                return surrogate.qoi(mu, extrapolate=extrapolate).reshape(-1)

            outputs = [("qoi", names, qoi)]
            gradients = False
        if surrogate.observation_names:
            outputs.insert(0, ("observations", surrogate.observation_names, surrogate.observe))
        self.output_names: list[tuple[str, list[str]]] = [(o, n) for o, n, _ in outputs]
        self._functions: list[Callable] = [f for _, _, f in outputs]
        self.gradients = gradients
        if gradients:
            self._warm_up()

    def _warm_up(self) -> None:
        """Import torch and run each derivative once (at the centre of the box)."""
        mu = 0.5 * (self.space.lower + self.space.upper)
        for k, n in enumerate(self.get_output_sizes()):
            self._vjp(k, mu, {}, np.ones(n))
            self._jvp(k, mu, {}, np.ones(self.space.dim))
            self._value_and_jacobian(k, mu, {})

    def _has_derivative(self, k: int) -> bool:
        return self.gradients

    def _check(self, parameters, config, extra=None) -> tuple[np.ndarray, dict]:
        cfg = _config(config, {**self.config_keys, **(extra or {})})
        return _mu(parameters, self.space, extrapolate=cfg.get("extrapolate", False)), cfg

    def _values(self, mu, cfg) -> list[np.ndarray]:
        """[observations, qoi] at μ (numpy fast path)."""
        ext = cfg.get("extrapolate", False)
        return [np.asarray(f(mu, extrapolate=ext), dtype=float) for f in self._functions]

    def _torch(self, k: int, mu: np.ndarray, cfg: dict):
        import torch

        f, ext = self._functions[k], cfg.get("extrapolate", False)
        return torch, (lambda t: f(t, extrapolate=ext)), torch.tensor(mu, dtype=torch.float64)

    def _vjp(self, k, mu, cfg, s) -> np.ndarray:
        """sensᵀ J: one backward pass through torch."""
        torch, f, t = self._torch(k, mu, cfg)
        t.requires_grad_(True)
        f(t).backward(torch.from_numpy(s))
        return t.grad.numpy()

    def _jvp(self, k, mu, cfg, v) -> np.ndarray:
        """J vec (torch autograd)."""
        torch, f, t = self._torch(k, mu, cfg)
        return torch.autograd.functional.jvp(f, t, torch.from_numpy(v))[1].numpy()

    def _value_and_jacobian(self, k, mu, cfg) -> tuple[np.ndarray, np.ndarray]:
        torch, f, t = self._torch(k, mu, cfg)
        with torch.no_grad():
            y = f(t).numpy()
        return y, torch.autograd.functional.jacobian(f, t).numpy().reshape(y.size, -1)

    def describe(self) -> str:
        """One line: name, parameters, outputs, derivatives."""
        outs = "; ".join(f"{o} {_names(n)}" for o, n in self.output_names)
        grad = "torch autograd" if self.gradients else "off"
        return (f"model {self.name}: {self.space.dim} parameters ({_names(self.space.names)}) -> "
                f"outputs {self.get_output_sizes()} ({outs}); gradient: {grad}")


class FEMModel(_ParameterModel):
    """The FEM model of a case as an UM-Bridge model (DOLFINx; MPI-parallel).

    Wraps :class:`hybrid.fem.model.FEMModel` (``case`` on ``comm``, default COMM_WORLD).
    Input: μ; outputs: the observations (``case.observations.names()``) and the QoIs
    (``case.qoi``), or the QoIs only when the case has no observations. A solve that fails
    is a ``ModelError`` response. Derivatives of the observations and of the QoIs come from
    the wrapped model's ``jacobian(mu)`` and ``qoi_jacobian(mu)`` (each ``(value, J)``, by
    the tangent-linear model); an output whose method is missing has none. For plug-in models
    Gradient (sensᵀJ) is one adjoint solve and ApplyJacobian (J vec) one tangent-linear solve
    (:mod:`hybrid.fem.tangent`), whatever the numbers of parameters and outputs.

    Construction, :meth:`close` and every evaluation are collective over ``comm``: on rank 0
    the HTTP server calls the model, which posts μ to the other ranks (waiting in
    :meth:`work_loop`) before joining the solve itself.
    """

    def __init__(self, case: Case | str | Path, comm: Comm | None = None, *,
                 name: str = "fem"):
        from hybrid.core.case import Case, load_case
        from hybrid.fem.model import FEMModel as _FEMModel

        super().__init__(name)
        self.case = case if isinstance(case, Case) else load_case(Path(case))
        self.model = _FEMModel(self.case, comm)
        self.comm = self.model.comm
        self.space: ParameterSpace = self.case.parameters
        self.output_names: list[tuple[str, list[str]]] = [("qoi", list(self.case.qoi))]
        if self.model.observation_names:
            self.output_names.insert(0, ("observations", self.model.observation_names))
        self._channel = WorkChannel(self.comm) if self.comm.size > 1 else None

    _ops = {"observations": "jacobian", "qoi": "qoi_jacobian"}

    def _has_derivative(self, k: int) -> bool:
        return callable(getattr(self.model, self._ops[self.output_names[k][0]], None))

    # -- collective work: rank 0 posts, every rank runs
    def _run(self, op: str, mu: np.ndarray, *args):
        if op == "solve":
            return self.model.solve(mu, field=False)
        if op in ("jacobian", "qoi_jacobian"):     # (value, J) from the tangent-linear model
            y, J = getattr(self.model, op)(mu)
            return np.asarray(y, dtype=float), np.asarray(J, dtype=float)
        if op in ("vjp", "jvp"):                   # one adjoint / one tangent solve
            y, g = getattr(self.model, op)(mu, *args)
            return np.asarray(y, dtype=float), np.asarray(g, dtype=float)
        raise ValueError(f"unknown operation {op!r}")

    def _collective(self, op: str, mu: np.ndarray, *args):
        """Rank 0: post (op, μ, args) to the other ranks, then run it here too."""
        if self._channel is None:
            return self._run(op, mu, *args)
        if self.comm.rank != 0:
            raise RuntimeError("FEMModel requests are served by rank 0 only")
        self._channel.post((op, mu, *args))
        try:
            return self._run(op, mu, *args)
        except HybridError:
            raise
        except BaseException:       # a bug: the other ranks may be stuck in a collective
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self.comm.Abort(1)

    def work_loop(self) -> None:
        """Ranks other than 0: join every solve rank 0 posts, until it posts a stop.

        SIGINT and SIGTERM are ignored meanwhile (``mpirun`` forwards Ctrl-C to every rank;
        rank 0 alone decides when to stop, so no rank leaves a collective half-way).
        """
        if self._channel is None:
            return
        main = threading.current_thread() is threading.main_thread()
        saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} \
            if main else {}
        try:
            while (message := self._channel.wait()) is not None:
                try:
                    self._run(*message)
                except HybridError:      # rank 0 meets the same error and reports it
                    pass
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    def stop(self) -> None:
        """Rank 0: release the other ranks from :meth:`work_loop`."""
        if self._channel is not None and self.comm.rank == 0:
            self._channel.post(None)

    def close(self) -> None:
        """Destroy the FEM problem (collective)."""
        if self._channel is not None:
            self._channel.free()
            self._channel = None
        self.model.close()

    # -- the model (rank 0; every call is collective)
    def _values(self, mu, cfg) -> list[np.ndarray]:
        """[observations, qoi] at μ from one FEM solve."""
        state = self._collective("solve", mu)
        if not state.ok:
            raise SolveFailed(f"FEM solve at mu={np.round(mu, 6).tolist()} failed: "
                              f"{state.reason}")
        outs = [np.asarray(state.qoi, dtype=float)]
        if len(self.output_names) == 2:
            outs.insert(0, np.asarray(state.observations, dtype=float))
        return outs

    def _products(self) -> bool:
        return bool(getattr(self.model, "has_products", False))

    def _vjp(self, k, mu, cfg, s) -> np.ndarray:
        """sensᵀ J: for plug-in models one solve and ONE adjoint solve (Jᵀλ = Σ s_i l_i)."""
        if not self._products():
            return super()._vjp(k, mu, cfg, s)
        return self._collective("vjp", mu, self.output_names[k][0], s)[1]

    def _jvp(self, k, mu, cfg, v) -> np.ndarray:
        """J vec: for plug-in models one solve and ONE tangent-linear solve."""
        if not self._products():
            return super()._jvp(k, mu, cfg, v)
        return self._collective("jvp", mu, self.output_names[k][0], v)[1]

    def _value_and_jacobian(self, k, mu, cfg) -> tuple[np.ndarray, np.ndarray]:
        """Output k and its Jacobian (n_k, P): one solve and min(P, n_k) TL/adjoint solves."""
        y, J = self._collective(self._ops[self.output_names[k][0]], mu)
        n = len(self.output_names[k][1])
        if J.shape != (n, self.space.dim):
            raise RequestError(f"FEM jacobian of {self.output_names[k][0]} has shape {J.shape}, "
                               f"expected ({n}, {self.space.dim})", "InvalidOutput", 500)
        return y, J

    def describe(self) -> str:
        """One line: name, parameters, outputs, derivatives, ranks."""
        outs = "; ".join(f"{o} {_names(n)}" for o, n in self.output_names)
        grad = ", ".join(f"{o} (tangent-linear)" for k, (o, _) in enumerate(self.output_names)
                         if self._has_derivative(k)) or "no"
        return (f"model {self.name}: {self.space.dim} parameters ({_names(self.space.names)}) -> "
                f"outputs {self.get_output_sizes()} ({outs}); gradient: {grad}; "
                f"{self.comm.size} rank(s)")
