"""The UM-Bridge protocol 1.0 over aiohttp, bound to loopback by default."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import umbridge
from aiohttp import web

from hybrid.errors import HybridError, ParameterError
from hybrid.serve.inputs import RequestError, ServeError, _index, _numbers, _show, _vector

PROTOCOL_VERSION = 1.0


def _error(kind: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


def _log(request: web.Request, status: int, kind: str, message: str) -> None:
    """One line on stderr for a rejected request (no traceback: it is not the server's bug)."""
    text = " ".join(message.split())
    print(f"hybrid serve: {request.method} {request.path}: {status} {kind}: "
          f"{text[:300]}{'…' if len(text) > 300 else ''}", file=sys.stderr, flush=True)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes the protocol's error object; the server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:        # unknown path or method, body too large
        if exc.status < 400:
            raise
        kind = "InvalidInput" if exc.status == 413 else "UnsupportedFeature"
        message, status = f"{request.method} {request.path}: {exc.reason}", exc.status
    except RequestError as exc:
        kind, message, status = exc.kind, str(exc), exc.status
    except ParameterError as exc:
        kind, message, status = "InvalidInput", str(exc), 400
    except HybridError as exc:              # SolveFailed and the like: the model's answer
        kind, message, status = "ModelError", str(exc), 500
    except Exception as exc:                # a bug: report it, log it, keep serving
        traceback.print_exc(file=sys.stderr)
        return _error("InternalError", f"{type(exc).__name__}: {exc}", 500)
    _log(request, status, kind, message)
    return _error(kind, message, status)


def _outputs(vectors: Any, sizes: Sequence[int], where: str = "output", *,
             minus_inf: bool = False) -> None:
    """Check a model's output: vectors of the declared sizes, finite (strict JSON).

    With ``minus_inf`` (a log-density), −inf is allowed too; it is sent as ``-Infinity``,
    which Python's json module (the ``umbridge`` client) reads.
    """
    if not isinstance(vectors, list) or len(vectors) != len(sizes):
        raise RequestError(f"{where}: the model returned {type(vectors).__name__} instead of "
                           f"{len(sizes)} vector(s)", "InvalidOutput", 500)
    for i, (v, n) in enumerate(zip(vectors, sizes, strict=True)):
        if not isinstance(v, list) or len(v) != n:
            raise RequestError(f"{where} {i}: the model returned "
                               f"{len(v) if isinstance(v, list) else type(v).__name__} values, "
                               f"declared {n}", "InvalidOutput", 500)
        if not all(isinstance(x, float | int) and (math.isfinite(x) or minus_inf
                                                   and x == -math.inf) for x in v):
            raise RequestError(f"{where} {i}: the model returned non-finite values",
                               "InvalidOutput", 500)


def _base(model: umbridge.Model) -> umbridge.Model:
    """The model that does ``model``'s work (itself, or the base of a view)."""
    return getattr(model, "base", model)


def make_app(models: Sequence[umbridge.Model]) -> web.Application:
    """An aiohttp application speaking UM-Bridge protocol 1.0 for ``models``.

    Endpoints: ``GET /Info``; ``POST /ModelInfo``, ``/InputSizes``, ``/OutputSizes``,
    ``/Evaluate``, ``/Gradient``, ``/ApplyJacobian``, ``/ApplyHessian``. Each model's calls
    run one at a time in a thread of its own, so a long FEM solve does not block a surrogate
    served next to it.
    """
    by_name = {m.name: m for m in models}
    bases = {id(_base(m)): _base(m) for m in models}     # a view runs in its base's thread
    pools = {key: ThreadPoolExecutor(1, thread_name_prefix=f"umbridge-{b.name}")
             for key, b in bases.items()}

    async def body(request: web.Request) -> dict:
        try:
            raw = await request.read()
        except ConnectionError as exc:      # the client went away mid-body
            raise RequestError(f"request body incomplete: the client disconnected ({exc})") \
                from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"request body is not valid UTF-8 ({exc.reason} at byte "
                               f"{exc.start})") from None
        try:
            data = json.loads(text)
        except RecursionError:
            raise RequestError("request body is not valid JSON (nested too deeply)") from None
        except ValueError as exc:
            raise RequestError(f"request body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError("request body must be a JSON object")
        return data

    async def model_of(request: web.Request) -> tuple[umbridge.Model, dict, dict]:
        data = await body(request)
        if "name" not in data:
            raise RequestError("request: missing key(s) ['name']")
        name = data["name"]
        if not isinstance(name, str):
            raise RequestError(f"name: expected a model name (a string), got {_show(name)}")
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
        return await asyncio.get_running_loop().run_in_executor(pools[id(_base(model))], fn, *args)

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
        _outputs(output, model.get_output_sizes(config),
                 minus_inf=getattr(model, "minus_inf", False))
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
    bases = list({id(_base(m)): _base(m) for m in models}.values())
    parallel = [m for m in bases if getattr(getattr(m, "comm", None), "size", 1) > 1]
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
