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

from hybrid.errors import HybridError, SolveFailed
from hybrid.parameters import ParameterSpace
from hybrid.serve.channel import WorkChannel
from hybrid.serve.inputs import RequestError, _config, _index, _mu, _names, _vector

if TYPE_CHECKING:
    from mpi4py.MPI import Comm

    from hybrid.case import Case
    from hybrid.surrogate import Surrogate


class _ParameterModel(umbridge.Model):
    """Shared part of the served models: one input vector μ in ``space``, named outputs."""

    space: ParameterSpace
    output_names: list[tuple[str, list[str]]]

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [self.space.dim]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [len(n) for _, n in self.output_names]

    def supports_evaluate(self) -> bool:
        return True


class SurrogateModel(_ParameterModel):
    """A :class:`hybrid.surrogate.Surrogate` as an UM-Bridge model (numpy + torch; no MPI).

    Input: one vector μ of ``surrogate.space.dim`` parameters. Outputs: the observations
    (``surrogate.observation_names``) and the QoIs (``surrogate.qoi_names``), or the QoIs
    only when the surrogate has no observations. Config: ``{"extrapolate": bool}``.
    """

    config_keys: dict[str, type] = {"extrapolate": bool}

    def __init__(self, surrogate: Surrogate, name: str = "surrogate"):
        super().__init__(name)
        self.surrogate = surrogate
        self.space: ParameterSpace = surrogate.space
        outputs = [("qoi", surrogate.qoi_names, surrogate.qoi)]
        if surrogate.observation_names:
            outputs.insert(0, ("observations", surrogate.observation_names, surrogate.observe))
        self.output_names: list[tuple[str, list[str]]] = [(o, n) for o, n, _ in outputs]
        self._functions: list[Callable] = [f for _, _, f in outputs]

    def supports_gradient(self) -> bool:
        return True

    def supports_apply_jacobian(self) -> bool:
        return True

    def _input(self, parameters, config) -> tuple[np.ndarray, bool]:
        ext = _config(config, self.config_keys).get("extrapolate", False)
        return _mu(parameters, self.space, extrapolate=ext), ext

    def __call__(self, parameters: list[list[float]], config: dict | None = None):
        """[observations, qoi] at μ (numpy fast path)."""
        mu, ext = self._input(parameters, config)
        return [np.asarray(f(mu, extrapolate=ext), dtype=float).tolist()
                for f in self._functions]

    def _torch(self, out_wrt: int, in_wrt: int, parameters, config):
        import torch

        mu, ext = self._input(parameters, config)
        _index(in_wrt, 1, "inWrt")
        f = self._functions[_index(out_wrt, len(self._functions), "outWrt")]
        return torch, (lambda t: f(t, extrapolate=ext)), torch.tensor(mu, dtype=torch.float64)

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list[list[float]],
                 sens: list[float], config: dict | None = None) -> list[float]:
        """sensᵀ J with J = ∂output[out_wrt]/∂μ: one backward pass through torch."""
        torch, f, t = self._torch(out_wrt, in_wrt, parameters, config)
        s = _vector(sens, self.get_output_sizes()[out_wrt], "sens")
        t.requires_grad_(True)
        f(t).backward(torch.from_numpy(s))
        return t.grad.tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list[list[float]],
                       vec: list[float], config: dict | None = None) -> list[float]:
        """J vec with J = ∂output[out_wrt]/∂μ (torch autograd)."""
        torch, f, t = self._torch(out_wrt, in_wrt, parameters, config)
        v = torch.from_numpy(_vector(vec, self.space.dim, "vec"))
        return torch.autograd.functional.jvp(f, t, v)[1].tolist()

    def describe(self) -> str:
        """One line: name, parameters, outputs, derivatives."""
        outs = "; ".join(f"{o} {_names(n)}" for o, n in self.output_names)
        return (f"model {self.name}: {self.space.dim} parameters ({_names(self.space.names)}) -> "
                f"outputs {self.get_output_sizes()} ({outs}); gradient: torch autograd")


class FEMModel(_ParameterModel):
    """The FEM model of a case as an UM-Bridge model (DOLFINx; MPI-parallel).

    Wraps :class:`hybrid.fem.model.FEMModel` (``case`` on ``comm``, default COMM_WORLD).
    Input: μ; outputs: the observations (``case.observations.names()``) and the QoIs
    (``case.qoi``), or the QoIs only when the case has no observations. A solve that fails
    is a ``ModelError`` response. Gradients are offered when the wrapped model has
    ``jacobian(mu)`` giving the observations' dG/dμ (m, P) (or ``(G, dG/dμ)``).

    Construction, :meth:`close` and every evaluation are collective over ``comm``: on rank 0
    the HTTP server calls the model, which posts μ to the other ranks (waiting in
    :meth:`work_loop`) before joining the solve itself.
    """

    def __init__(self, case: Case | str | Path, comm: Comm | None = None, *,
                 name: str = "fem"):
        from hybrid.case import Case, load_case
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

    def supports_gradient(self) -> bool:
        return callable(getattr(self.model, "jacobian", None))

    def supports_apply_jacobian(self) -> bool:
        return self.supports_gradient()

    # -- collective work: rank 0 posts, every rank runs
    def _run(self, op: str, mu: np.ndarray):
        if op == "solve":
            return self.model.solve(mu, field=False)
        if op == "jacobian":    # J, or (observations, J) as hybrid.fem.model gives it
            out = self.model.jacobian(mu)
            return np.asarray(out[1] if isinstance(out, tuple) else out, dtype=float)
        raise ValueError(f"unknown operation {op!r}")

    def _collective(self, op: str, mu: np.ndarray):
        """Rank 0: post (op, μ) to the other ranks, then run it here too."""
        if self._channel is None:
            return self._run(op, mu)
        if self.comm.rank != 0:
            raise RuntimeError("FEMModel requests are served by rank 0 only")
        self._channel.post((op, mu))
        try:
            return self._run(op, mu)
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

    # -- the UM-Bridge methods (rank 0)
    def __call__(self, parameters: list[list[float]], config: dict | None = None):
        """[observations, qoi] at μ from one FEM solve (collective)."""
        _config(config, {})
        mu = _mu(parameters, self.space)
        state = self._collective("solve", mu)
        if not state.ok:
            raise SolveFailed(f"FEM solve at mu={np.round(mu, 6).tolist()} failed: "
                              f"{state.reason}")
        outs = [state.qoi]
        if len(self.output_names) == 2:
            outs.insert(0, state.observations)
        return [np.asarray(o, dtype=float).tolist() for o in outs]

    def _jacobian(self, out_wrt: int, in_wrt: int, parameters, config, vector: Any,
                  n: Callable[[int], int], where: str) -> tuple[np.ndarray, np.ndarray]:
        """Check a derivative request, then run the (collective) Jacobian: (J, vector)."""
        if not self.supports_gradient():
            raise RequestError(f"model {self.name}: derivatives are not available (the FEM "
                               "model has no jacobian)", "UnsupportedFeature")
        _config(config, {})
        mu = _mu(parameters, self.space)
        _index(in_wrt, 1, "inWrt")
        _index(out_wrt, len(self.output_names), "outWrt")
        if self.output_names[out_wrt][0] != "observations":
            raise RequestError(f"outWrt: model {self.name} has derivatives of the observations "
                               "(output 0) only", "UnsupportedFeature")
        v = _vector(vector, n(out_wrt), where)
        J = self._collective("jacobian", mu)
        m = len(self.output_names[0][1])
        if J.shape != (m, self.space.dim):
            raise RequestError(f"FEM jacobian has shape {J.shape}, expected "
                               f"({m}, {self.space.dim})", "InvalidOutput", 500)
        return J, v

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list[list[float]],
                 sens: list[float], config: dict | None = None) -> list[float]:
        """sensᵀ dG/dμ from the FEM model's ``jacobian`` (collective)."""
        J, s = self._jacobian(out_wrt, in_wrt, parameters, config, sens,
                              lambda o: self.get_output_sizes()[o], "sens")
        return (J.T @ s).tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list[list[float]],
                       vec: list[float], config: dict | None = None) -> list[float]:
        """dG/dμ vec from the FEM model's ``jacobian`` (collective)."""
        J, v = self._jacobian(out_wrt, in_wrt, parameters, config, vec,
                              lambda o: self.space.dim, "vec")
        return (J @ v).tolist()

    def describe(self) -> str:
        """One line: name, parameters, outputs, derivatives, ranks."""
        outs = "; ".join(f"{o} {_names(n)}" for o, n in self.output_names)
        grad = "FEM jacobian" if self.supports_gradient() else "no"
        return (f"model {self.name}: {self.space.dim} parameters ({_names(self.space.names)}) -> "
                f"outputs {self.get_output_sizes()} ({outs}); gradient: {grad}; "
                f"{self.comm.size} rank(s)")
