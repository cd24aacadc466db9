"""The Go sample server (go_client/examples/server) end to end.

Builds the server with `go build` (its own module: gRPC and Prometheus come
from the Go module proxy, pinned by its go.sum), runs its Go tests, then
starts the binary on free loopback ports over versioned model directories this
file generates, and talks to it as an outside client would:

- gRPC through a generic grpcio unary call built only from predict.proto
  (recstrata.wire.predict_pb2) and the documented method name — no stub
  generated for this server;
- HTTP JSON / protobuf predict, readiness, /metrics;
- a version swap under concurrent load (0 failed requests, every answer
  computed by the version that says it answered), rollback and unpin over
  HTTP;
- SIGTERM while a slow request is in flight: it completes, new requests are
  refused, the process exits 0.

Model "lin" version v computes y = x @ W + b + v with quarter-valued inputs,
so every answer is exact and names its version.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import grpc  # grpcio, in the test extra
import recstrata
from test_go_client import B, W, build_shifted, go_env  # noqa: F401  (go_env is a fixture)

REPO = Path(__file__).resolve().parents[1]
SERVER_DIR = REPO / "go_client" / "examples" / "server"
METHOD = "/recstrata.serving.v1.PredictionService/Predict"


def _go_env() -> dict:
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="1",
               TF_CPP_MIN_LOG_LEVEL="2", RECSTRATA_LIBRARY=recstrata.library_path())
    return env


def _build_slow(path: Path) -> None:
    """y = 2x after a loop of `spin` iterations (a request that takes a while)."""
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"),
                                      tf.TensorSpec([], tf.int64, name="spin")])
        def serve(self, x, spin):
            (n,) = tf.while_loop(lambda i: i < spin, lambda i: (i + 1,), (tf.constant(0, tf.int64),))
            return {"y": x * 2.0, "n": n}

    m = Slow()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    if shutil.which("go") is None:
        pytest.fail("the Go toolchain is required (go not on PATH)")
    tmp = tmp_path_factory.mktemp("go_server")
    binary = tmp / "recstrata-server"
    res = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=SERVER_DIR,
                         env=_go_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    templates = tmp / "templates"
    for v in (1, 2, 3):
        build_shifted(templates / f"lin{v}", shift=v)
    _build_slow(templates / "slow")
    return {"binary": binary, "templates": templates, "tmp": tmp}


def _install(template: Path, base: Path, version: int) -> None:
    """Copy a version in the way a deployer should: temp name, then rename."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".incoming-{version}"
    shutil.copytree(template, tmp)
    os.rename(tmp, base / str(version))


class Server:
    def __init__(self, proc, grpc_addr, http_addr, log_path):
        self.proc, self.grpc_addr, self.http_url, self.log_path = proc, grpc_addr, f"http://{http_addr}", log_path
        self.channel = grpc.insecure_channel(grpc_addr)
        from recstrata.wire import predict_pb2
        self.pb = predict_pb2
        self.predict = self.channel.unary_unary(
            METHOD, request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString)

    def call(self, x: np.ndarray, model: str | None = None, extra=None, timeout=30):
        """gRPC predict; returns (y, serving version)."""
        req = self.pb.PredictRequest(signature_name="serving_default")
        arr = req.inputs["x"]
        arr.dtype = self.pb.DT_FLOAT
        arr.array_shape.dim.extend(x.shape)
        arr.float_val.extend(x.ravel().tolist())
        for name, value in (extra or {}).items():
            a = req.inputs[name]
            a.dtype = self.pb.DT_INT64
            a.int64_val.append(value)
        md = [("recstrata-model", model)] if model else None
        resp, call = self.predict.with_call(req, metadata=md, timeout=timeout)
        version = int(dict(call.initial_metadata())["recstrata-model-version"])
        y = resp.outputs["y"]
        return np.array(y.float_val, dtype=np.float32).reshape(list(y.array_shape.dim)), version

    def http(self, method: str, path: str, body: bytes | None = None):
        req = urllib.request.Request(self.http_url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self, model="lin") -> dict:
        code, body = self.http("GET", f"/v1/models/{model}:status")
        assert code == 200, body
        return json.loads(body)

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def _serve(env, models: dict[str, Path], *extra):
    log_path = env["tmp"] / f"server-{time.monotonic_ns()}.log"
    args = [str(env["binary"]), "-grpc-port", "0", "-http-port", "0", "-poll", "100ms",
            "-sessions", "2", *extra]
    for name, base in models.items():
        args += ["-model", f"{name}={base}"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=_go_env())
    server = None
    try:
        got: list[str] = []  # the line is printed once the first loads were attempted
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(180)
        line = got[0] if got else ""
        m = re.match(r"serving grpc=(\S+) http=(\S+)", line)
        assert m, f"server did not start: {line!r}\n{log_path.read_text()}"
        server = Server(proc, m.group(1), m.group(2), log_path)
        yield server
    finally:
        if server is not None:
            server.channel.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def req_bytes_truncated(x: np.ndarray) -> bytes:
    from recstrata.wire import predict_pb2

    req = predict_pb2.PredictRequest()
    req.inputs["x"].dtype = predict_pb2.DT_FLOAT
    req.inputs["x"].array_shape.dim.extend(x.shape)
    req.inputs["x"].float_val.extend(x.ravel().tolist())
    return req.SerializeToString()[:-5]


def _quarters(rng, shape):
    return (rng.integers(-16, 17, size=shape) / 4.0).astype(np.float32)


def _expected(x, version):
    return x @ W + B + np.float32(version)


def _wait(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_server_go_vet_and_go_tests(server_env, go_env):  # noqa: F811
    """The server module's own Go tests (HTTP routes, lifecycle, gRPC) against the go_client test model."""
    env = dict(go_env["env"], **{k: v for k, v in _go_env().items() if k.startswith("GO")})
    env.pop("GOPROXY", None)  # this module has dependencies: the proxy is used (go.sum pins them)
    res = subprocess.run(["go", "vet", "./..."], cwd=SERVER_DIR, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(["go", "test", "-count=1", "-v", "./..."], cwd=SERVER_DIR, env=env,
                         capture_output=True, text=True, timeout=900)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-20000:]
    assert not re.findall(r"--- SKIP: (\S+)", log), log[-5000:]
    passed = set(re.findall(r"--- PASS: (\S+)", log))
    for name in ("TestServerPredictJSON", "TestServerPredictProto", "TestServerErrors",
                 "TestServerConcurrentRequests", "TestServerJSONReadsSignatureOnce", "TestGRPCPredict",
                 "TestManagerServesLatestAndDrainsOnSwap", "TestManagerSwapUnderLoadFailsNothing",
                 "TestManagerPinRollbackAndFailedLoads", "TestManagerConfigErrors"):
        assert name in passed, f"{name} did not pass\n{log[-5000:]}"


def test_server_go_tests_under_race_detector(server_env, go_env):  # noqa: F811
    """The lifecycle layer's locking under -race (first run compiles gRPC in race mode, ~1 min)."""
    env = dict(go_env["env"], **{k: v for k, v in _go_env().items() if k.startswith("GO")})
    env.pop("GOPROXY", None)
    res = subprocess.run(["go", "test", "-race", "-count=1", "-v", "./..."], cwd=SERVER_DIR,
                         env=env, capture_output=True, text=True, timeout=900)
    log = res.stdout + res.stderr
    assert res.returncode == 0 and "DATA RACE" not in log, log[-20000:]
    passed = set(re.findall(r"--- PASS: (\S+)", log))
    assert {"TestManagerSwapUnderLoadFailsNothing", "TestServerConcurrentRequests"} <= passed, log[-5000:]


def test_grpc_and_http_predict_two_models(server_env, tmp_path):
    t = server_env["templates"]
    lin, other = tmp_path / "lin", tmp_path / "other"
    _install(t / "lin1", lin, 1)
    _install(t / "lin2", lin, 2)
    _install(t / "lin3", other, 5)  # model "other", version 5, computes with shift 3
    rng = np.random.default_rng(3)
    with _serve(server_env, {"lin": lin, "other": other}) as s:
        assert s.http("GET", "/readyz")[0] == 200
        assert s.http("GET", "/healthz")[0] == 200
        x = _quarters(rng, (3, 4))
        y, v = s.call(x)  # no metadata: the first model
        assert v == 2
        np.testing.assert_array_equal(y, _expected(x, 2))
        y, v = s.call(x, model="other")
        assert v == 5
        np.testing.assert_array_equal(y, _expected(x, 3))
        with pytest.raises(grpc.RpcError) as err:
            s.call(x, model="nope")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in err.value.details()
        # The bytes reach the library as sent: damaged ones are its InvalidArgument.
        raw = s.channel.unary_unary(METHOD)
        for bad in (b"\xff\xff\xff garbage", req_bytes_truncated(x)):
            with pytest.raises(grpc.RpcError) as err:
                raw(bad, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "RS_ERR_INVALID_ARGUMENT" in err.value.details()

        # HTTP JSON, with a version in the path, and the protobuf route.
        body = json.dumps({"inputs": {"x": {"shape": [3, 4], "data": x.ravel().tolist()}}}).encode()
        code, out = s.http("POST", "/v1/models/lin/versions/2:predict", body)
        assert code == 200, out
        doc = json.loads(out)
        assert doc["model_version"] == 2
        np.testing.assert_array_equal(np.array(doc["outputs"]["y"]["data"], np.float32).reshape(3, 3),
                                      _expected(x, 2))
        code, out = s.http("POST", "/v1/models/lin/versions/1:predict", body)
        assert code == 404 and json.loads(out)["code"] == "RS_ERR_NOT_FOUND"
        req = s.pb.PredictRequest()
        req.inputs["x"].dtype = s.pb.DT_FLOAT
        req.inputs["x"].array_shape.dim.extend([3, 4])
        req.inputs["x"].float_val.extend(x.ravel().tolist())
        code, out = s.http("POST", "/v1/models/other:predict_pb", req.SerializeToString())
        assert code == 200
        y = s.pb.PredictResponse.FromString(out).outputs["y"]
        np.testing.assert_array_equal(np.array(y.float_val, np.float32).reshape(3, 3), _expected(x, 3))
        code, out = s.http("POST", "/v1/models/lin:predict", b"{not json")
        assert code == 400 and json.loads(out)["message"]

        st = json.loads(s.http("GET", "/v1/models")[1])["models"]
        assert [(m["name"], m["serving_version"]) for m in st] == [("lin", 2), ("other", 5)]


def test_hot_swap_under_load_rollback_and_metrics(server_env, tmp_path):
    t = server_env["templates"]
    base = tmp_path / "lin"
    _install(t / "lin1", base, 1)
    _install(t / "lin2", base, 2)
    results, errors = [], []
    by_caller: dict[int, list[int]] = {}   # each caller's versions, in its own call order
    stop = threading.Event()

    with _serve(server_env, {"lin": base}) as s:
        def caller(seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                x = _quarters(rng, (2, 4))
                try:
                    y, v = s.call(x)
                except grpc.RpcError as e:  # counted as a failure below
                    errors.append(f"{e.code()}: {e.details()}")
                    continue
                results.append((v, bool(np.array_equal(y, _expected(x, v)))))
                by_caller.setdefault(seed, []).append(v)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        try:
            _wait("requests on version 2", lambda: any(v == 2 for v, _ in results))
            _install(t / "lin3", base, 3)  # discovered by the poller
            _wait("version 3 serving", lambda: s.status()["serving_version"] == 3)
            n = len(results)
            _wait("requests on version 3", lambda: any(v == 3 for v, _ in results[n:]))

            code, out = s.http("POST", "/v1/models/lin:rollback")
            assert code == 200, out
            st = json.loads(out)
            assert st["serving_version"] == 2 and st["pinned_version"] == 2
            n = len(results)
            marks = {c: len(vs) for c, vs in by_caller.items()}
            _wait("requests on version 2 after rollback", lambda: len(results) > n + 50)
            # Each caller may finish one request leased on 3 before the swap (it
            # can land after other callers' newer ones); every later call of that
            # caller is 2 (pinned: the poller leaves it).
            for c, vs in by_caller.items():
                assert set(vs[marks.get(c, 0) + 1:]) <= {2}, (c, vs[marks.get(c, 0):][:10])

            code, out = s.http("POST", "/v1/models/lin:pin", b'{"version": 3}')
            assert code == 200 and json.loads(out)["serving_version"] == 3, out
            code, out = s.http("POST", "/v1/models/lin:pin", b'{"version": 9}')
            assert code == 404 and "9" in json.loads(out)["message"], out
            code, out = s.http("POST", "/v1/models/lin:unpin")
            assert code == 200 and json.loads(out)["pinned_version"] == 0, out
            n = len(results)
            _wait("more requests", lambda: len(results) > n + 50)
            for i in range(10):  # ten more swaps under load
                want = 2 if i % 2 == 0 else 3
                code, out = s.http("POST", "/v1/models/lin:pin", json.dumps({"version": want}).encode())
                assert code == 200 and json.loads(out)["serving_version"] == want, out
                n = len(results)
                _wait("requests after the pin", lambda: len(results) > n + 20)
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=60)
        assert not errors, errors[:5]
        assert results and all(ok for _, ok in results), [r for r in results if not r[1]][:5]
        seen = {v for v, _ in results}
        assert seen == {2, 3}, seen
        # Every replaced version was closed once drained: the host lists 2 as
        # "end" and 3 as the one ready version.
        def states():
            return {v["version"]: v["state"] for v in s.status()["versions"]}
        _wait("replaced versions closed", lambda: states() == {2: "end", 3: "ready"})

        code, body = s.http("GET", "/metrics")
        assert code == 200
        text = body.decode()
        # The server's and the host's series in one exposition, no name twice.
        types = re.findall(r"^# TYPE (\S+) ", text, re.M)
        assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
        from prometheus_client.parser import text_string_to_metric_families
        families = {f.name for f in text_string_to_metric_families(text)}
        assert {"recstrata_requests", "rs_host_requests", "rs_host_loads"} <= families, families
        counts = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
            r'^recstrata_requests_total\{model="lin",protocol="grpc",version="(\d+)"\} (\S+)$', text, re.M)}
        assert counts.get(2, 0) > 0 and counts.get(3, 0) > 0, counts
        assert sum(counts.values()) == len(results)
        # The host counted the same calls on its side.
        host_counts = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
            r'^rs_host_requests_total\{model="lin",version="(\d+)"\} (\S+)$', text, re.M)}
        assert host_counts == counts, (host_counts, counts)
        assert re.search(r'^recstrata_request_duration_seconds_bucket\{model="lin",protocol="grpc",'
                         r'version="3",le="\+Inf"\} [1-9]', text, re.M), text[:3000]
        assert 'recstrata_request_errors_total{model="lin"' not in text
        assert re.search(r'^rs_host_version_ready\{model="lin",version="3"\} 1$', text, re.M)
        assert re.search(r'^rs_host_version_ready\{model="lin",version="2"\} 0$', text, re.M)

        def host_metric(name):
            m = re.search(rf'^{name}\{{model="lin"\}} (\S+)$', text, re.M)
            assert m, name
            return float(m.group(1))
        # 2 at start, 3 (poll), 2 (rollback), 3 (pin), then 10 pins: each one
        # a load, or a revival of a version still draining.
        assert host_metric("rs_host_loads_total") + host_metric("rs_host_revivals_total") == 14
        assert host_metric("rs_host_load_failures_total") == 0


def test_failed_version_keeps_serving(server_env, tmp_path):
    t = server_env["templates"]
    base = tmp_path / "lin"
    _install(t / "lin1", base, 1)
    with _serve(server_env, {"lin": base}) as s:
        (base / "2").mkdir()  # not a SavedModel
        (base / "2" / "saved_model.pb").write_bytes(b"\x00damaged")
        _wait("the failed load reported", lambda: "2" in (s.status().get("failed_versions") or {}))
        st = s.status()
        assert st["serving_version"] == 1 and st["last_error"], st
        y, v = s.call(np.ones((1, 4), np.float32))
        assert v == 1
        text = s.http("GET", "/metrics")[1].decode()
        assert re.search(r'^rs_host_load_failures_total\{model="lin"\} [1-9]', text, re.M), text


def test_sigterm_drains_in_flight_and_exits_zero(server_env, tmp_path):
    t = server_env["templates"]
    lin, slow = tmp_path / "lin", tmp_path / "slow"
    _install(t / "lin1", lin, 1)
    _install(t / "slow", slow, 1)
    with _serve(server_env, {"lin": lin, "slow": slow}) as s:
        x = np.ones((1, 4), np.float32)
        outcome = {}

        def slow_call():
            try:
                outcome["y"] = s.call(x, model="slow", extra={"spin": 1_000_000}, timeout=300)
            except grpc.RpcError as e:
                outcome["error"] = f"{e.code()}: {e.details()}"

        th = threading.Thread(target=slow_call)
        th.start()

        def inflight():
            m = re.search(r"^recstrata_inflight_requests (\S+)$",
                          s.http("GET", "/metrics")[1].decode(), re.M)
            return m and float(m.group(1)) >= 1

        _wait("the slow request in flight", inflight)
        s.proc.send_signal(signal.SIGTERM)
        _wait("shutdown to begin", lambda: "shutting down" in s.log())
        # New work is refused while the slow request drains.
        refused = False
        for _ in range(100):
            try:
                s.call(x, timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                refused = True
                break
            time.sleep(0.02)
        th.join(timeout=300)
        assert refused
        assert "error" not in outcome, outcome
        y, v = outcome["y"]
        assert v == 1
        np.testing.assert_array_equal(y, x * 2)
        assert s.proc.wait(timeout=120) == 0, s.log()
        assert "shutdown complete" in s.log()
