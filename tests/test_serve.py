"""``hybrid serve``: surrogate and FEM models over UM-Bridge, driven by the real umbridge client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import umbridge

from hybrid.surrogate import Surrogate
from hybrid.surrogate.build import BuildOptions, build_surrogate
from tests import conftest_surrogate as cs

from .conftest import MPIRUN, ROOT

OBS = "\n[observations]\ngrid = 2\n"


@contextlib.contextmanager
def served(*args, ranks: int | None = None, timeout: float = 60):
    """Run ``python -m hybrid serve ARGS --port 0``; yield (url, lines printed, process).

    The server is always stopped: SIGINT (a clean stop), then SIGKILL of its process group.
    """
    cmd = [sys.executable, "-m", "hybrid", "serve", *map(str, args), "--port", "0"]
    if ranks:
        cmd = [str(MPIRUN), "-n", str(ranks), *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    proc.log = []       # every line the server prints, as it prints it

    def read():
        for line in proc.stdout:
            proc.log.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=timeout)
            assert line is not None, f"server exited before serving:\n{''.join(seen)}"
            seen.append(line)
            if line.startswith("serving "):
                break
        yield line.split()[-1], [t.strip() for t in seen], proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=15)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybrid", "serve", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def post(url: str, path: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, str | bytes) else json.dumps(body)  # json.dumps writes NaN
    r = requests.post(url + path, data=data, timeout=30)
    return r.status_code, r.json()


@pytest.fixture(scope="module")
def surrogate_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    store = cs.store2(root, cs.BlockFEM(cells=16, blocks=2))
    s, _ = build_surrogate(store, BuildOptions(kind="galerkin"))
    return s.save(root / "surrogate")


@pytest.fixture(scope="module")
def server(surrogate_dir):
    with served(surrogate_dir) as (url, lines, proc):
        yield url, lines[-1], proc


MU = [0.3, 0.55, 0.8, 0.15]


def views(*names: str) -> list[str]:
    """The models a server of ``names`` lists: each model, then every model's views."""
    return [*names, *(f"{n}-{v}" for n in names for v in ("observations", "qoi", "loglik"))]


# ----------------------------------------------------------------------------- surrogate
def test_surrogate_model_evaluates_like_the_surrogate(server, surrogate_dir):
    url, _, _ = server
    s = Surrogate.load(surrogate_dir)
    m = umbridge.HTTPModel(url, "surrogate")
    assert umbridge.supported_models(url) == views("surrogate")
    assert m.get_input_sizes() == [4] and m.get_output_sizes() == [1, 2]
    assert m.supports_evaluate() and m.supports_gradient() and m.supports_apply_jacobian()
    assert not m.supports_apply_hessian()
    for mu in (MU, [0.1, 1.0, 0.1, 1.0], cs.space(2).sample(1, "random", 5)[0].tolist()):
        obs, qoi = m([mu])
        assert np.allclose(obs, s.observe(np.array(mu)), rtol=1e-12, atol=0)
        assert np.allclose(qoi, s.qoi(np.array(mu)), rtol=1e-12, atol=0)
    # config: extrapolation outside the box, refused without it
    out = [0.3, 0.55, 0.8, 1.2]
    _, qoi = m([out], {"extrapolate": True})
    with pytest.warns(UserWarning, match="extrapolating"):
        assert np.allclose(qoi, s.qoi(np.array(out), extrapolate=True), rtol=1e-12, atol=0)
    with pytest.raises(Exception, match=r"InvalidInput: mu: mu_3=1.2 is outside its bounds"):
        m([out])


def test_surrogate_gradient_and_jacobian_match_finite_differences(server, surrogate_dir):
    url, _, _ = server
    s = Surrogate.load(surrogate_dir)
    m = umbridge.HTTPModel(url, "surrogate")
    mu, h = np.array(MU), 1e-6
    outputs = [s.observe, s.qoi]
    rng = np.random.default_rng(1)
    for k, f in enumerate(outputs):
        fd = np.array([(f(mu + h * e) - f(mu - h * e)) / (2 * h) for e in np.eye(4)]).T
        sens = rng.standard_normal(fd.shape[0])
        g = np.array(m.gradient(k, 0, [MU], sens.tolist()))
        assert g.shape == (4,)
        assert np.linalg.norm(g - fd.T @ sens) <= 1e-6 * np.linalg.norm(fd.T @ sens)
        vec = rng.standard_normal(4)
        jv = np.array(m.apply_jacobian(k, 0, [MU], vec.tolist()))
        assert np.linalg.norm(jv - fd @ vec) <= 1e-6 * np.linalg.norm(fd @ vec)


def _loglik(y, d, sigma) -> float:
    """log N(d; y, diag σ²), written out independently of the server."""
    y, d, sigma = (np.broadcast_to(np.asarray(a, dtype=float), np.shape(d)) for a in (y, d, sigma))
    return float(np.sum(-0.5 * ((y - d) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)))


def test_single_output_views_for_stock_clients(server, surrogate_dir):
    """NAME-observations and NAME-qoi: one output vector, the base model's values/derivatives."""
    url, _, _ = server
    s = Surrogate.load(surrogate_dir)
    mu, h = np.array(MU), 1e-6
    rng = np.random.default_rng(2)
    for view, f in (("surrogate-observations", s.observe), ("surrogate-qoi", s.qoi)):
        m = umbridge.HTTPModel(url, view)
        n = f(mu).size
        assert m.get_input_sizes() == [4] and m.get_output_sizes() == [n]
        assert m.supports_gradient() and m.supports_apply_jacobian()
        out = m([MU])
        assert len(out) == 1 and np.allclose(out[0], f(mu), rtol=1e-12, atol=0)
        flat = np.array(out).flatten()               # what tinyDA's UmBridgeModel does
        assert flat.shape == (n,)
        fd = np.array([(f(mu + h * e) - f(mu - h * e)) / (2 * h) for e in np.eye(4)]).T
        sens, vec = rng.standard_normal(n), rng.standard_normal(4)
        g = np.array(m.gradient(0, 0, [MU], sens.tolist()))
        assert np.linalg.norm(g - fd.T @ sens) <= 1e-6 * np.linalg.norm(fd.T @ sens)
        jv = np.array(m.apply_jacobian(0, 0, [MU], vec.tolist()))
        assert np.linalg.norm(jv - fd @ vec) <= 1e-6 * np.linalg.norm(fd @ vec)
        with pytest.raises(Exception, match=r"InvalidInput: outWrt: expected an integer in "
                                            r"\[0, 0\], got 1"):
            m.gradient(1, 0, [MU], sens.tolist())
        ext = [0.3, 0.55, 0.8, 1.2]
        with pytest.warns(UserWarning, match="extrapolating"):
            ref = f(np.array(ext), extrapolate=True)
        assert np.allclose(m([ext], {"extrapolate": True})[0], ref, rtol=1e-12, atol=0)


def test_loglik_view_with_umbridge_emcee_and_outside_config(server, surrogate_dir):
    """NAME-loglik: log N(data; G(μ), σ²) for umbridge.emcee; outside the box -inf on request."""
    from umbridge.emcee import UmbridgeLogProb

    url, _, _ = server
    s = Surrogate.load(surrogate_dir)
    d = s.observe(np.array([0.5, 0.4, 0.7, 0.2])) + 0.01
    config = {"data": d.tolist(), "sigma": 0.05}
    with pytest.raises(AssertionError):             # the issue: two outputs
        UmbridgeLogProb(url, "surrogate", {})
    logp = UmbridgeLogProb(url, "surrogate-loglik", config)
    assert logp.ndim == 4
    rng = np.random.default_rng(3)
    for mu in [np.array(MU), *cs.space(2).sample(3, "random", 7)]:
        value = logp(mu)
        assert value.shape == (1,)
        expected = _loglik(s.observe(mu), d, 0.05)
        assert abs(value[0] - expected) <= 1e-12 * abs(expected)
    m = umbridge.HTTPModel(url, "surrogate-loglik")
    assert m.get_output_sizes(config) == [1] and m.supports_gradient()
    mu, h = np.array(MU), 1e-6
    fd = np.array([(_loglik(s.observe(mu + h * e), d, 0.05)
                    - _loglik(s.observe(mu - h * e), d, 0.05)) / (2 * h) for e in np.eye(4)])
    g = np.array(m.gradient(0, 0, [MU], [2.0], config))
    assert np.linalg.norm(g - 2 * fd) <= 1e-6 * np.linalg.norm(2 * fd)
    vec = rng.standard_normal(4)
    jv = m.apply_jacobian(0, 0, [MU], vec.tolist(), config)
    assert len(jv) == 1 and abs(jv[0] - fd @ vec) <= 1e-6 * abs(fd @ vec)
    # outside the box: an error by default, -inf with {"outside": "-inf"}
    out = [0.3, 0.55, 0.8, 1.2]
    with pytest.raises(Exception, match=r"InvalidInput: mu: mu_3=1.2 is outside its bounds"):
        m([out], config)
    assert m([out], {**config, "outside": "-inf"}) == [[-np.inf]]
    assert UmbridgeLogProb(url, "surrogate-loglik", {**config, "outside": "-inf"})(
        np.array(out))[0] == -np.inf
    status, reply = post(url, "/Evaluate", {"name": "surrogate-loglik", "input": [out],
                                            "config": {**config, "outside": "-inf"}})
    assert status == 200 and reply == {"output": [[-np.inf]]}
    sigma = [0.05] * d.size
    assert m([MU], {**config, "sigma": sigma, "outside": "-inf"})[0][0] == pytest.approx(
        _loglik(s.observe(mu), d, 0.05), rel=1e-12)
    for bad, message in [
        ({"sigma": 0.05}, "config: data is required"),
        ({"data": d.tolist()}, "config: sigma is required"),
        ({**config, "data": [1.0] * (d.size + 1)}, f"config: data must have {d.size} values"),
        ({**config, "sigma": -1}, "config: sigma must be a positive number or a list"),
        ({**config, "sigma": [1.0] * (d.size + 1)}, f"config: sigma must be one number or "
                                                     f"{d.size} values"),
        ({**config, "outside": "zero"}, 'config: outside must be "error" or "-inf", got "zero"'),
        ({**config, "tol": 1}, "config: unknown key 'tol'"),
    ]:
        with pytest.raises(Exception, match="InvalidInput: " + re.escape(message)):
            m([MU], bad)
    status, reply = post(url, "/Evaluate", {"name": "surrogate-loglik", "input": [
        [0.3, float("nan"), 0.8, 0.5]], "config": {**config, "outside": "-inf"}})
    assert status == 400 and "finite" in reply["error"]["message"]   # NaN is not "outside"
    with pytest.raises(Exception, match=r"InvalidInput: mu: mu_3=1.2 is outside"):
        m.gradient(0, 0, [out], [1.0], {**config, "outside": "-inf"})


def test_emcee_samples_the_loglik_view_through_umbridge_emcee(server, surrogate_dir):
    """A stock emcee run on UmbridgeLogProb: walkers that step outside the box are rejected
    (log-density -inf), the run finishes and every draw is inside the box."""
    emcee = pytest.importorskip("emcee")
    from umbridge.emcee import UmbridgeLogProb

    url, _, _ = server
    s = Surrogate.load(surrogate_dir)
    d = s.observe(np.array([0.5, 0.4, 0.7, 0.2]))
    logp = UmbridgeLogProb(url, "surrogate-loglik", {"data": d.tolist(), "sigma": 0.05,
                                                     "outside": "-inf"})
    rejected = []

    def counted(mu):
        value = logp(mu)
        rejected.append(value[0] == -np.inf)
        return value

    rng = np.random.default_rng(5)      # walkers next to the bound mu_3 = 0.1: many step out
    p0 = np.array([0.5, 0.4, 0.7, 0.13]) + 0.02 * rng.standard_normal((8, 4))
    p0[:, 3] = np.clip(p0[:, 3], 0.105, None)
    sampler = emcee.EnsembleSampler(8, logp.ndim, counted)
    sampler.run_mcmc(p0, 30, progress=False)
    assert sum(rejected) > 0
    draws = sampler.get_chain(flat=True)
    space = cs.space(2)
    assert np.all((draws >= space.lower) & (draws <= space.upper))
    lp = sampler.get_log_prob(flat=True)
    assert np.all(np.isfinite(lp))
    k = int(np.argmax(lp))
    assert lp[k] == pytest.approx(_loglik(s.observe(draws[k]), d, 0.05), rel=1e-12)


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("no /proc/PID/status")
    line = next(t for t in status.read_text().splitlines() if t.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_gradient_requests_do_not_grow_server_memory(surrogate_dir):
    """Torch is loaded before the server listens: derivative requests neither grow the
    server's memory (it grew by ~740 MB at the first one) nor stall (~2 s for the first)."""
    with served(surrogate_dir) as (url, _, proc):
        http = requests.Session()
        assert http.post(url + "/Evaluate", json={"name": "surrogate", "input": [MU]}).ok
        before = _rss_mb(proc.pid)
        rng = np.random.default_rng(4)
        first = None
        for i in range(150):
            mu = cs.space(2).sample(1, "random", i)[0].tolist()
            name, k, path, key, n = [
                ("surrogate", 0, "/Gradient", "sens", 1),
                ("surrogate", 1, "/ApplyJacobian", "vec", 4),
                ("surrogate-qoi", 0, "/Gradient", "sens", 2),
            ][i % 3]
            t0 = time.perf_counter()
            r = http.post(url + path, json={"name": name, "outWrt": k, "inWrt": 0,
                                            "input": [mu], key: rng.random(n).tolist()})
            first = time.perf_counter() - t0 if first is None else first
            assert r.status_code == 200, r.text
        growth = _rss_mb(proc.pid) - before
    assert growth < 40, f"server RSS grew by {growth:.0f} MB over 150 derivative requests"
    assert first < 0.5, f"first Gradient request took {first:.2f} s"


def test_no_gradients_server_never_loads_torch(surrogate_dir):
    with served(surrogate_dir, "--no-gradients") as (url, lines, proc):
        assert lines[0].endswith("gradient: off")
        m = umbridge.HTTPModel(url, "surrogate")
        assert m.supports_evaluate() and not m.supports_gradient()
        assert len(m([MU])) == 2
        status, reply = post(url, "/Gradient", {"name": "surrogate", "outWrt": 0, "inWrt": 0,
                                                "input": [MU], "sens": [1.0]})
        assert status == 400 and reply["error"]["type"] == "UnsupportedFeature"
        assert _rss_mb(proc.pid) < 400          # torch alone is ~730 MB (CUDA wheel)


@pytest.mark.parametrize("path, body, kind, message", [
    ("/Evaluate", "{not json", "InvalidInput", "not valid JSON"),
    ("/Evaluate", "[1, 2]", "InvalidInput", "must be a JSON object"),
    ("/Evaluate", {"name": "surrogate", "input": [[0.3, 0.5, 0.7]]}, "InvalidInput",
     "input 0: expected 4 values, got 3"),
    ("/Evaluate", {"name": "surrogate", "input": [MU, [1.0]]}, "InvalidInput",
     "expected 1 input vector(s), got 2"),
    ("/Evaluate", {"name": "surrogate", "input": [[0.3, 0.5, 0.7, 1.5]]}, "InvalidInput",
     "mu_3=1.5 is outside its bounds [0.1, 1]"),
    ("/Evaluate", {"name": "surrogate", "input": [[0.3, float("nan"), 0.7, 0.5]]},
     "InvalidInput", "finite"),
    ("/Evaluate", {"name": "surrogate", "input": [[0.3, "x", 0.7, 0.5]]}, "InvalidInput",
     "input 0: expected a list of numbers"),
    ("/Evaluate", {"name": "surrogate", "input": [MU], "config": {"tol": 1}}, "InvalidInput",
     "config: unknown key 'tol'"),
    ("/Evaluate", {"name": "fem", "input": [MU]}, "ModelNotFound", "model 'fem' not found"),
    ("/Evaluate", {"name": "surrogate"}, "InvalidInput", "missing key(s) ['input']"),
    ("/Gradient", {"name": "surrogate", "outWrt": 2, "inWrt": 0, "input": [MU], "sens": [1]},
     "InvalidInput", "outWrt: expected an integer in [0, 1], got 2"),
    ("/Gradient", {"name": "surrogate", "outWrt": 1, "inWrt": 0, "input": [MU], "sens": [1]},
     "InvalidInput", "sens: expected 2 value(s), got 1"),
    ("/ApplyJacobian", {"name": "surrogate", "outWrt": 0, "inWrt": 0, "input": [MU],
                        "vec": [1, 2]}, "InvalidInput", "vec: expected 4 value(s), got 2"),
    ("/ApplyHessian", {"name": "surrogate", "outWrt": 0, "inWrt1": 0, "inWrt2": 0,
                       "input": [MU], "sens": [1], "vec": [1, 0, 0, 0]},
     "UnsupportedFeature", "ApplyHessian is not supported"),
])
def test_bad_requests_get_error_responses_and_the_server_stays_up(server, path, body, kind,
                                                                  message):
    url, _, proc = server
    status, reply = post(url, path, body)
    assert status == 400
    assert set(reply) == {"error"} and reply["error"]["type"] == kind
    assert message in reply["error"]["message"]
    assert proc.poll() is None
    status, reply = post(url, "/Evaluate", {"name": "surrogate", "input": [MU]})
    assert status == 200 and len(reply["output"]) == 2


_GRAD = '"outWrt": 0, "inWrt": 0, "input": [[0.3, 0.55, 0.8, 0.15]]'


@pytest.mark.parametrize("path, body, message", [
    ("/Evaluate", b'{"name": ["surrogate"], "input": [[0.3, 0.55, 0.8, 0.15]]}',
     'name: expected a model name (a string), got ["surrogate"]'),
    ("/InputSizes", b'{"name": {"surrogate": 1}}', "name: expected a model name (a string)"),
    ("/Evaluate", b'{"name": "surrogate", "input": [[' + b"9" * 4300 + b', 0.5, 0.5, 0.5]]}',
     "input 0: 9999999999\u20269999 (4300 digits) is too large for a float"),
    ("/Gradient", b'{"name": "surrogate", ' + _GRAD.encode() + b', "sens": [' + b"7" * 400
     + b"]}", "sens: 7777777777\u20267777 (400 digits) is too large for a float"),
    ("/Gradient", b'{"name": "surrogate", "outWrt": ' + b"5" * 4300 + b', "inWrt": 0, '
     b'"input": [[0.3, 0.55, 0.8, 0.15]], "sens": [1]}',
     "outWrt: expected an integer in [0, 1], got 5555555555\u20265555 (4300 digits)"),
    ("/Evaluate", b'{"name": "surrogate", "input": [[' + b"9" * 4301 + b"]]}",
     "not valid JSON (Exceeds the limit (4300 digits)"),
    ("/Evaluate", b'{"name": "surr\xff\xfeogate", "input": [[0.3, 0.55, 0.8, 0.15]]}',
     "request body is not valid UTF-8 (invalid start byte at byte 14)"),
    ("/Evaluate", b"[" * 100_000, "request body is not valid JSON (nested too deeply)"),
    ("/Evaluate", b'{"name": "surrogate", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "request body is not valid JSON (nested too deeply)"),
    ("/Evaluate", b'{"input": [[0.3, 0.55, 0.8, 0.15]]}', "request: missing key(s) ['name']"),
    ("/Evaluate", b'{"name": "surrogate", "input": [[0.3, 0.55, 0.8, 0.15]], "config": '
     b'{"extrapolate": ' + b"[" * 500 + b"]" * 500 + b"}}", "config: extrapolate must be bool"),
])
def test_malformed_bodies_are_invalid_input_with_one_log_line(server, path, body, message):
    """Each body answers 400 InvalidInput naming the problem, logged as one line, no traceback."""
    url, _, proc = server
    n_log = len(proc.log)
    status, reply = post(url, path, body)
    assert status == 400, reply
    assert reply["error"]["type"] == "InvalidInput"
    assert message in reply["error"]["message"]
    assert len(reply["error"]["message"]) < 300
    new = _new_log(proc, n_log, 1)
    assert len(new) == 1 and new[0].startswith(f"hybrid serve: POST {path}: 400 InvalidInput: ")
    status, reply = post(url, "/Evaluate", {"name": "surrogate", "input": [MU]})
    assert status == 200


def _new_log(proc, start: int, n: int, timeout: float = 5.0) -> list[str]:
    """The lines the server printed after ``start``, once there are ``n`` (or after timeout)."""
    t0 = time.monotonic()
    while len(proc.log) - start < n and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    time.sleep(0.1)                         # a traceback would follow within this
    return proc.log[start:]


@pytest.mark.parametrize("head", [
    b"Content-Length: 1000\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n40\r\n",
])
def test_client_disconnecting_mid_body_logs_one_line(server, head):
    url, _, proc = server
    port = int(url.rsplit(":", 1)[1])
    n_log = len(proc.log)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n" + head + b'{"name": "surr')
        time.sleep(0.2)
    new = _new_log(proc, n_log, 1)
    assert new == ["hybrid serve: POST /Evaluate: 400 InvalidInput: request body incomplete: "
                   "the client disconnected (Connection lost)"], new
    assert post(url, "/Evaluate", {"name": "surrogate", "input": [MU]})[0] == 200


def test_server_binds_loopback_only(server):
    url, line, _ = server
    assert line == f"serving {', '.join(views('surrogate'))} at {url}"
    assert url.startswith("http://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1])
    tcp = Path("/proc/net/tcp")
    if not tcp.exists():
        pytest.skip("no /proc/net/tcp")
    listening = [row.split()[1] for row in tcp.read_text().splitlines()[1:]
                 if row.split()[3] == "0A" and int(row.split()[1].split(":")[1], 16) == port]
    assert listening == ["0100007F:" + f"{port:04X}"]      # 127.0.0.1 only, not 0.0.0.0


def test_cli_user_errors_are_one_line(surrogate_dir, server, tmp_path):
    url, _, _ = server
    port = url.rsplit(":", 1)[1]
    cases = [
        ((tmp_path,), "not a surrogate directory (no surrogate.json)"),
        ((tmp_path / "missing",), "no such surrogate directory or case file"),
        ((surrogate_dir, "--surrogate", surrogate_dir), "--surrogate: only with a case file"),
        ((surrogate_dir, "--port", port), f"cannot listen on 127.0.0.1:{port}: Address already"),
    ]
    for args, message in cases:
        r = cli(*args)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hybrid: error: "), r.stderr
        assert message in lines[0]


# ----------------------------------------------------------------------------- FEM
def _fem_reference(case_path: Path):
    from hybrid.core.case import load_case
    from hybrid.fem import MPI  # imports dolfinx_solver ahead of mpi4py
    from hybrid.fem.model import FEMModel

    return FEMModel(load_case(case_path), MPI.COMM_SELF)


def _check_fem_server(url: str, case_path: Path, rtol: float) -> None:
    ref = _fem_reference(case_path)
    m = umbridge.HTTPModel(url, "fem")
    assert m.get_input_sizes() == [4] and m.get_output_sizes() == [4, 2]
    assert m.supports_gradient() == hasattr(ref, "jacobian")
    for mu in (MU, [0.9, 0.2, 0.4, 0.6]):
        obs, qoi = m([mu])
        state = ref.solve(np.array(mu), field=False)
        assert np.allclose(obs, ref.observe(np.array(mu)), rtol=rtol, atol=0)
        assert np.allclose(qoi, state.qoi, rtol=rtol, atol=0)
    if m.supports_gradient():
        out = ref.jacobian(np.array(MU))
        J = out[1] if isinstance(out, tuple) else out
        sens = np.array([1.0, -2.0, 0.5, 3.0])
        assert np.allclose(m.gradient(0, 0, [MU], sens.tolist()), J.T @ sens, rtol=rtol,
                           atol=1e-14)
    # QoI derivatives (tangent-linear) against central differences of in-process solves
    mu, h = np.array(MU), 1e-6
    fd = np.array([(ref.solve(mu + h * e, field=False).qoi - ref.solve(mu - h * e, field=False)
                    .qoi) / (2 * h) for e in np.eye(4)]).T
    sens, vec = np.array([0.7, -1.3]), np.array([0.2, -0.4, 1.0, 0.3])
    for model, k in ((m, 1), (umbridge.HTTPModel(url, "fem-qoi"), 0)):
        g = np.array(model.gradient(k, 0, [MU], sens.tolist()))
        assert np.linalg.norm(g - fd.T @ sens) <= 1e-6 * np.linalg.norm(fd.T @ sens)
        jv = np.array(model.apply_jacobian(k, 0, [MU], vec.tolist()))
        assert np.linalg.norm(jv - fd @ vec) <= 1e-6 * np.linalg.norm(fd @ vec)
    # single-output views and the log-likelihood (values of the in-process model)
    obs_view = umbridge.HTTPModel(url, "fem-observations")
    assert obs_view.get_output_sizes() == [4]
    assert np.allclose(obs_view([MU])[0], ref.observe(mu), rtol=rtol, atol=0)
    assert np.allclose(umbridge.HTTPModel(url, "fem-qoi")([MU])[0],
                       ref.solve(mu, field=False).qoi, rtol=rtol, atol=0)
    d = ref.observe(np.array([0.5, 0.5, 0.5, 0.5]))
    config = {"data": d.tolist(), "sigma": [0.01, 0.02, 0.03, 0.04]}
    lik = umbridge.HTTPModel(url, "fem-loglik")
    y, J = ref.jacobian(mu)
    sigma = np.array(config["sigma"])
    assert lik([MU], config)[0][0] == pytest.approx(_loglik(y, d, sigma), rel=1e-10)
    assert np.allclose(lik.gradient(0, 0, [MU], [1.0], config),
                       -J.T @ ((y - d) / sigma**2), rtol=1e-8, atol=1e-12)
    out = [0.3, 0.5, 0.7, 2.0]
    assert lik([out], {**config, "outside": "-inf"}) == [[-np.inf]]
    status, reply = post(url, "/Evaluate", {"name": "fem", "input": [out]})
    assert status == 400 and "mu_3=2 is outside its bounds" in reply["error"]["message"]
    ref.close()


def test_fem_model_served_matches_in_process_model(write_case):
    case = write_case(cells=8, blocks=2)
    case.write_text(case.read_text() + OBS)
    with served(case) as (url, lines, proc):
        assert lines[-1] == f"serving {', '.join(views('fem'))} at {url}"
        assert lines[0].startswith("model fem: 4 parameters") and "1 rank(s)" in lines[0]
        _check_fem_server(url, case, rtol=1e-12)
        assert stop(proc) == 0


def test_fem_model_under_mpirun_two_ranks(write_case, tmp_path):
    """Rank 0 serves, both ranks solve; the surrogate is served next to it; clean stop."""
    from hybrid.core.case import load_case
    from hybrid.fem import MPI
    from hybrid.workflows.campaign import run_campaign

    case = write_case(cells=8, blocks=2)
    case.write_text(case.read_text() + OBS)
    c = load_case(case)       # a surrogate of this very case (one of another is refused)
    assert run_campaign(c, comm=MPI.COMM_SELF, progress=False, paraview=False).failed == 0
    surrogate_dir = build_surrogate(c.store, BuildOptions(kind="galerkin"))[0].save(
        tmp_path / "surrogate")
    with served(case, "--surrogate", surrogate_dir, ranks=2) as (url, lines, proc):
        assert lines[-1] == f"serving {', '.join(views('fem', 'surrogate'))} at {url}"
        assert "2 rank(s)" in lines[0]
        status, reply = post(url, "/Evaluate", {"name": "fem", "input": [MU]})  # timeout
        assert status == 200, reply
        _check_fem_server(url, case, rtol=1e-10)
        assert umbridge.supported_models(url) == views("fem", "surrogate")
        assert len(umbridge.HTTPModel(url, "surrogate")([MU])) == 2
        assert stop(proc) == 0


def test_failed_fem_solve_is_an_error_response(write_case):
    """A diverged solve answers ModelError (HTTP 500) and the app goes on answering."""
    from aiohttp.test_utils import TestClient, TestServer

    from hybrid.core.case import load_case
    from hybrid.fem import MPI
    from hybrid.serve import FEMModel, make_app

    case = write_case(cells=24, blocks=2,
                      petsc='ksp_type = "cg"\npc_type = "none"\nksp_max_it = 2')
    case.write_text(case.read_text() + OBS)
    model = FEMModel(load_case(case), MPI.COMM_SELF)

    async def run():
        async with TestClient(TestServer(make_app([model]))) as client:
            replies = []
            for _ in range(2):
                r = await client.post("/Evaluate", json={"name": "fem", "input": [MU]})
                replies.append((r.status, await r.json()))
            r = await client.post("/InputSizes", json={"name": "fem"})
            return replies, await r.json()

    replies, sizes = asyncio.run(run())
    assert sizes == {"inputSizes": [4]}
    for status, reply in replies:
        assert status == 500 and reply["error"]["type"] == "ModelError"
        assert "FEM solve at mu=" in reply["error"]["message"]
        assert "DIVERGED_MAX_IT" in reply["error"]["message"]
    model.close()
