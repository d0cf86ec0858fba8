"""Hybrid models as UM-Bridge models: ``hybrid serve`` for tinyDA, QMCPy, MUQ and friends.

UM-Bridge (https://um-bridge-benchmarks.readthedocs.io) is a small HTTP protocol: a model is
a map F from a list of input vectors to a list of output vectors, with optional derivatives.
Two hybrid models speak it:

* :class:`SurrogateModel` (name ``"surrogate"``): one input μ ∈ ℝ^P; outputs
  ``[observations, qoi]`` (only ``[qoi]`` when the surrogate has no observations); gradient
  (vector–Jacobian product) and Jacobian action through torch autograd; config
  ``{"extrapolate": true}`` allows μ outside the training box.
* :class:`FEMModel` (name ``"fem"``): the same input and outputs from a DOLFINx solve; a failed
  solve is an error response (type ``ModelError``), not a crash; gradient and Jacobian
  action of the observations when the FEM model offers ``jacobian(mu)`` (dG/dμ, (m, P)).

:func:`serve` runs a small aiohttp app implementing the protocol (umbridge 1.2.10's
``serve_models`` binds every interface and has no ``host`` argument), bound to loopback by
default. Bad requests (malformed JSON, wrong sizes, NaN, μ out of bounds, unknown keys) get
the protocol's error object ``{"error": {"type": …, "message": …}}`` with HTTP 400 and the
server keeps serving.

Under MPI (FEM model on a communicator of several ranks) rank 0 serves HTTP; each request's
parameters go to every rank through :class:`WorkChannel` and all ranks join the solve;
the other ranks wait in :meth:`FEMModel.work_loop` until rank 0 posts a stop.

This module imports neither DOLFINx nor mpi4py; :class:`FEMModel` imports
:mod:`hybrid.fem.model` when it is built.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import umbridge
from aiohttp import web

from hybrid.errors import HybridError, ParameterError, SolveFailed
from hybrid.parameters import ParameterSpace

if TYPE_CHECKING:
    from mpi4py.MPI import Comm

    from hybrid.case import Case
    from hybrid.surrogate import Surrogate

PROTOCOL_VERSION = 1.0


class ServeError(HybridError):
    """The server cannot start (bad address, port in use, inconsistent models)."""


class RequestError(HybridError):
    """A request that the protocol or the model rejects.

    ``kind`` is the UM-Bridge error type (``InvalidInput``, ``ModelNotFound``,
    ``UnsupportedFeature``, ``InvalidOutput``, ``ModelError``), ``status`` the HTTP status.
    """

    def __init__(self, message: str, kind: str = "InvalidInput", status: int = 400):
        super().__init__(message)
        self.kind = kind
        self.status = status


# ----------------------------------------------------------------------------- inputs
def _numbers(values: Any, where: str) -> list[float]:
    """A JSON list of numbers as floats (NaN kept: the models reject it with a named error)."""
    if not isinstance(values, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise RequestError(f"{where}: expected a list of numbers")
    return [float(v) for v in values]


def _config(config: Any, allowed: dict[str, type]) -> dict:
    """Validate a model config (a JSON object with only the ``allowed`` keys and types)."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RequestError("config: expected a JSON object")
    for key, value in config.items():
        if key not in allowed:
            raise RequestError(f"config: unknown key {key!r}; this model accepts "
                               f"{sorted(allowed) or 'no keys'}")
        if not isinstance(value, allowed[key]):
            raise RequestError(f"config: {key} must be {allowed[key].__name__}, got "
                               f"{json.dumps(value)}")
    return config


def _mu(parameters: Any, space: ParameterSpace, *, extrapolate: bool = False) -> np.ndarray:
    """The single input vector μ of a request, checked against ``space``.

    Raises:
        RequestError: not one list of P numbers.
        ParameterError: NaN/inf, or outside the bounds (unless ``extrapolate``).
    """
    if not isinstance(parameters, list) or not all(isinstance(p, list) for p in parameters):
        raise RequestError("input: expected a list of input vectors (a list of lists)")
    if len(parameters) != 1:
        raise RequestError(f"input: expected 1 input vector (the {space.dim} parameters), got "
                           f"{len(parameters)}")
    mu = np.array(_numbers(parameters[0], "input 0"))
    if mu.shape != (space.dim,):
        raise RequestError(f"input 0: expected {space.dim} values ({', '.join(space.names)}), "
                           f"got {mu.size}")
    if extrapolate:
        if not np.all(np.isfinite(mu)):
            raise ParameterError(f"mu: parameters must be finite numbers, got {mu.tolist()}")
        return mu
    return space.check(mu)


def _index(value: Any, n: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise RequestError(f"{where}: expected an integer in [0, {n - 1}], got "
                           f"{json.dumps(value)}")
    return value


def _vector(values: Any, n: int, where: str) -> np.ndarray:
    v = np.array(_numbers(values, where))
    if v.shape != (n,):
        raise RequestError(f"{where}: expected {n} value(s), got {v.size}")
    if not np.all(np.isfinite(v)):
        raise RequestError(f"{where}: values must be finite numbers")
    return v


def _names(names: Sequence[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (", …" if len(names) > k else "")


# ----------------------------------------------------------------------------- models
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


class WorkChannel:
    """Work from rank 0 to every rank of a communicator: a doorbell, then a broadcast.

    The doorbell is a non-blocking barrier (``Ibarrier``). Waiting ranks test it in a tight
    loop for ``spin`` seconds (clients such as MCMC samplers send the next request within
    milliseconds), then with ``poll``-second sleeps, so an idle server does not hold every
    core at 100 % as a blocking broadcast would. Construction is collective over ``comm``
    (it duplicates it, so control messages never mix with the solver's collectives).
    """

    def __init__(self, comm: Comm, poll: float = 0.002, spin: float = 0.05):
        self.comm = comm.Dup()
        self.poll = poll
        self.spin = spin

    def post(self, message: Any) -> None:
        """Rank 0: send ``message`` (picklable; ``None`` means stop) to every rank."""
        self.comm.Ibarrier().Wait()
        self.comm.bcast(message, root=0)

    def wait(self) -> Any:
        """Ranks other than 0: block (politely) until rank 0 posts; return its message."""
        req = self.comm.Ibarrier()
        t0 = time.monotonic()
        while not req.Test():
            if time.monotonic() - t0 > self.spin:
                time.sleep(self.poll)
        return self.comm.bcast(None, root=0)

    def free(self) -> None:
        """Free the duplicated communicator (collective)."""
        self.comm.Free()


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


# ----------------------------------------------------------------------------- HTTP
def _error(kind: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes the protocol's error object; the server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:        # unknown path or method
        if exc.status < 400:
            raise
        return _error("UnsupportedFeature", f"{request.method} {request.path}: {exc.reason}",
                      exc.status)
    except RequestError as exc:
        return _error(exc.kind, str(exc), exc.status)
    except ParameterError as exc:
        return _error("InvalidInput", str(exc), 400)
    except HybridError as exc:              # SolveFailed and the like: the model's answer
        return _error("ModelError", str(exc), 500)
    except Exception as exc:                # a bug: report it, log it, keep serving
        traceback.print_exc(file=sys.stderr)
        return _error("InternalError", f"{type(exc).__name__}: {exc}", 500)


def _outputs(vectors: Any, sizes: Sequence[int], where: str = "output") -> None:
    """Check a model's output: vectors of the declared sizes, finite (strict JSON)."""
    if not isinstance(vectors, list) or len(vectors) != len(sizes):
        raise RequestError(f"{where}: the model returned {type(vectors).__name__} instead of "
                           f"{len(sizes)} vector(s)", "InvalidOutput", 500)
    for i, (v, n) in enumerate(zip(vectors, sizes, strict=True)):
        if not isinstance(v, list) or len(v) != n:
            raise RequestError(f"{where} {i}: the model returned "
                               f"{len(v) if isinstance(v, list) else type(v).__name__} values, "
                               f"declared {n}", "InvalidOutput", 500)
        if not all(isinstance(x, float | int) and math.isfinite(x) for x in v):
            raise RequestError(f"{where} {i}: the model returned non-finite values",
                               "InvalidOutput", 500)


def make_app(models: Sequence[umbridge.Model]) -> web.Application:
    """An aiohttp application speaking UM-Bridge protocol 1.0 for ``models``.

    Endpoints: ``GET /Info``; ``POST /ModelInfo``, ``/InputSizes``, ``/OutputSizes``,
    ``/Evaluate``, ``/Gradient``, ``/ApplyJacobian``, ``/ApplyHessian``. Each model's calls
    run one at a time in a thread of its own, so a long FEM solve does not block a surrogate
    served next to it.
    """
    by_name = {m.name: m for m in models}
    pools = {name: ThreadPoolExecutor(1, thread_name_prefix=f"umbridge-{name}")
             for name in by_name}

    async def body(request: web.Request) -> dict:
        text = await request.text()
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RequestError(f"request body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError("request body must be a JSON object")
        return data

    async def model_of(request: web.Request) -> tuple[umbridge.Model, dict, dict]:
        data = await body(request)
        name = data.get("name")
        if name not in by_name:
            raise RequestError(f"model {name!r} not found; this server has {sorted(by_name)}",
                               "ModelNotFound")
        config = data.get("config", {})
        if not isinstance(config, dict):
            raise RequestError("config: expected a JSON object")
        return by_name[name], data, config

    def need(data: dict, *keys: str) -> list:
        missing = [k for k in keys if k not in data]
        if missing:
            raise RequestError(f"request: missing key(s) {missing}")
        return [data[k] for k in keys]

    def check_input(model: umbridge.Model, parameters: Any, config: dict) -> None:
        sizes = model.get_input_sizes(config)
        if not isinstance(parameters, list) or not all(isinstance(p, list)
                                                       for p in parameters):
            raise RequestError("input: expected a list of input vectors (a list of lists)")
        if len(parameters) != len(sizes):
            raise RequestError(f"input: expected {len(sizes)} input vector(s), got "
                               f"{len(parameters)}")
        for i, (p, n) in enumerate(zip(parameters, sizes, strict=True)):
            _numbers(p, f"input {i}")
            if len(p) != n:
                raise RequestError(f"input {i}: expected {n} values, got {len(p)}")

    def supported(model: umbridge.Model, feature: str, flag: bool) -> None:
        if not flag:
            raise RequestError(f"{feature} is not supported by model {model.name}",
                               "UnsupportedFeature")

    async def call(model: umbridge.Model, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pools[model.name], fn, *args)

    routes = web.RouteTableDef()

    @routes.get("/Info")
    async def info(request: web.Request) -> web.Response:
        return web.json_response({"protocolVersion": PROTOCOL_VERSION,
                                  "models": list(by_name)})

    @routes.post("/ModelInfo")
    async def model_info(request: web.Request) -> web.Response:
        model, _, _ = await model_of(request)
        return web.json_response({"support": {
            "Evaluate": model.supports_evaluate(),
            "Gradient": model.supports_gradient(),
            "ApplyJacobian": model.supports_apply_jacobian(),
            "ApplyHessian": model.supports_apply_hessian()}})

    @routes.post("/InputSizes")
    async def input_sizes(request: web.Request) -> web.Response:
        model, _, config = await model_of(request)
        return web.json_response({"inputSizes": model.get_input_sizes(config)})

    @routes.post("/OutputSizes")
    async def output_sizes(request: web.Request) -> web.Response:
        model, _, config = await model_of(request)
        return web.json_response({"outputSizes": model.get_output_sizes(config)})

    @routes.post("/Evaluate")
    async def evaluate(request: web.Request) -> web.Response:
        model, data, config = await model_of(request)
        supported(model, "Evaluate", model.supports_evaluate())
        (parameters,) = need(data, "input")
        check_input(model, parameters, config)
        output = await call(model, model.__call__, parameters, config)
        _outputs(output, model.get_output_sizes(config))
        return web.json_response({"output": output})

    async def derivative(request: web.Request, feature: str, flag: str, vector: str,
                         method: str, out_size: Callable) -> web.Response:
        model, data, config = await model_of(request)
        supported(model, feature, getattr(model, flag)())
        out_wrt, in_wrt, parameters, v = need(data, "outWrt", "inWrt", "input", vector)
        check_input(model, parameters, config)
        n_out, n_in = model.get_output_sizes(config), model.get_input_sizes(config)
        out_wrt = _index(out_wrt, len(n_out), "outWrt")
        in_wrt = _index(in_wrt, len(n_in), "inWrt")
        n = n_out[out_wrt] if vector == "sens" else n_in[in_wrt]
        _vector(v, n, vector)
        output = await call(model, getattr(model, method), out_wrt, in_wrt, parameters, v,
                            config)
        _outputs([output], [out_size(n_out, n_in, out_wrt, in_wrt)], f"{feature} output")
        return web.json_response({"output": output})

    @routes.post("/Gradient")
    async def gradient(request: web.Request) -> web.Response:
        return await derivative(request, "Gradient", "supports_gradient", "sens", "gradient",
                                lambda no, ni, o, i: ni[i])

    @routes.post("/ApplyJacobian")
    async def apply_jacobian(request: web.Request) -> web.Response:
        return await derivative(request, "ApplyJacobian", "supports_apply_jacobian", "vec",
                                "apply_jacobian", lambda no, ni, o, i: no[o])

    @routes.post("/ApplyHessian")
    async def apply_hessian(request: web.Request) -> web.Response:
        model, data, config = await model_of(request)
        supported(model, "ApplyHessian", model.supports_apply_hessian())
        args = need(data, "outWrt", "inWrt1", "inWrt2", "input", "sens", "vec")
        check_input(model, args[3], config)
        output = await call(model, model.apply_hessian, *args, config)
        _outputs([output], [model.get_input_sizes(config)[args[1]]], "ApplyHessian output")
        return web.json_response({"output": output})

    async def shutdown_pools(app: web.Application) -> None:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    app = web.Application(middlewares=[_errors], client_max_size=16 * 2**20)
    app.add_routes(routes)
    app.on_cleanup.append(shutdown_pools)
    return app


async def _serve_http(app: web.Application, host: str, port: int, line: str) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ServeError(f"cannot listen on {host}:{port}: {why}") from None
        bound = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        print(line.format(url=f"http://{url_host}:{bound}"), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM) \
            if threading.current_thread() is threading.main_thread() else ()
        for s in signals:
            loop.add_signal_handler(s, stop.set)
        try:
            await stop.wait()
        finally:
            for s in signals:
                loop.remove_signal_handler(s)
    finally:
        await runner.cleanup()


def serve(models: Sequence[umbridge.Model], host: str = "127.0.0.1", port: int = 4242) -> None:
    """Serve ``models`` over UM-Bridge at ``host:port`` until SIGINT or SIGTERM.

    Prints ``serving NAME[, NAME…] at http://HOST:PORT`` once listening (``port=0`` picks a
    free port, which the line shows). ``host`` defaults to loopback: ``0.0.0.0`` lets anyone
    who can reach the machine run models on it.

    Collective over the communicator of an MPI-parallel :class:`FEMModel` (at most one per
    server): rank 0 serves and the other ranks run :meth:`FEMModel.work_loop` until rank 0
    stops, so every rank returns from this call.
    """
    names = [m.name for m in models]
    if not names:
        raise ServeError("no model to serve")
    if len(set(names)) != len(names):
        raise ServeError(f"model names must be unique, got {names}")
    parallel = [m for m in models if getattr(getattr(m, "comm", None), "size", 1) > 1]
    if len(parallel) > 1:
        raise ServeError("at most one MPI-parallel model per server")
    if parallel and parallel[0].comm.rank != 0:
        parallel[0].work_loop()
        return
    try:
        app = make_app(models)
        asyncio.run(_serve_http(app, host, port, f"serving {', '.join(names)} at {{url}}"))
    finally:
        if parallel:
            parallel[0].stop()
