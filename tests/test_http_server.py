"""The HTTP server over a ModelManager: endpoints, error statuses, metrics, the serve CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from recstrata.serving import ModelManager
from recstrata.serving.http_server import ServingHTTPServer
from recstrata.wire import codec

from serving_helpers import const_models, put_version  # noqa: F401


def call(url, body=None, method=None, headers=None):
    """(status, parsed JSON or raw bytes) of one request; 4xx/5xx are returned, not raised."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    if ctype.startswith("application/json"):
        return status, json.loads(data)
    return status, data


@pytest.fixture(scope="module")
def served(tmp_path_factory, const_models, string_model_dir):
    """A server on a free port with models 'c' (version 1), 's' (strings, version 7), 'none' (empty).

    Shared by the tests of this module: they must not change its model directories.
    """
    import shutil

    tmp_path = tmp_path_factory.mktemp("served")
    (tmp_path / "c").mkdir()
    put_version(tmp_path / "c", 1, const_models[1])
    (tmp_path / "s").mkdir()
    shutil.copytree(string_model_dir, tmp_path / "s" / "7")
    (tmp_path / "none").mkdir()
    mgr = ModelManager({"c": tmp_path / "c", "s": tmp_path / "s", "none": tmp_path / "none"})
    server = ServingHTTPServer(mgr, port=0).start()
    try:
        yield server, mgr, tmp_path
    finally:
        server.shutdown_and_close()
        mgr.close()


def test_binds_loopback_by_default(served):
    server, _, _ = served
    assert server.host == "127.0.0.1"


def test_json_predict_and_versions(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    with ModelManager({"c": tmp_path}) as mgr:
        server = ServingHTTPServer(mgr, port=0).start()
        try:
            _json_predict_and_versions(server, mgr, tmp_path, const_models)
        finally:
            server.shutdown_and_close()


def _json_predict_and_versions(server, mgr, root, const_models):
    status, body = call(server.url + "/v1/models/c:predict", {"inputs": {"x": [[1, 2], [3, 4]]}})
    assert status == 200
    assert body == {"outputs": {"y": [1.0, 1.0]}, "model_version": 1}
    put_version(root, 2, const_models[2])
    mgr.poll()
    status, body = call(server.url + "/v1/models/c:predict", {"inputs": {"x": [[1, 2]]}})
    assert (status, body["outputs"]["y"], body["model_version"]) == (200, [2.0], 2)
    # an explicit version that is no longer served
    status, body = call(server.url + "/v1/models/c/versions/1:predict", {"inputs": {"x": [[1, 2]]}})
    assert status == 404 and "not serving" in body["error"]
    status, body = call(server.url + "/v1/models/c/versions/2:predict", {"inputs": {"x": [[1, 2]]}})
    assert status == 200 and body["model_version"] == 2


def test_string_model_and_output_filter(served):
    server, _, _ = served
    status, body = call(server.url + "/v1/models/s:predict",
                        {"inputs": {"s": ["ab", "héllo"], "n": [1, 2]}, "output_filter": ["tagged", "length"]})
    assert status == 200, body
    assert body["outputs"] == {"tagged": ["ab#1", "héllo#2"], "length": [2, 6]}
    assert body["model_version"] == 7


def test_predict_pb_round_trip_and_bad_bytes(served):
    server, _, _ = served
    req = codec.make_request({"x": np.array([[1, 2], [3, 4]], np.float32)})
    status, data = call(server.url + "/v1/models/c:predict_pb", req,
                        headers={"Content-Type": "application/octet-stream"})
    assert status == 200
    np.testing.assert_array_equal(codec.parse_response(data)["y"], np.array([1.0, 1.0], np.float32))
    status, body = call(server.url + "/v1/models/c:predict_pb", b"\xff\x00not a request")
    assert status == 400 and body["error"]
    status, data = call(server.url + "/v1/models/c:predict_pb", b"")  # DeepRec: signature JSON
    assert status == 200 and b'"x"' in data


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    ({"instances": [[1, 2]]}, '{"inputs"'),
    ({"inputs": {"x": [[1, 2]], "bogus": [1]}}, "bogus"),      # the library's message names it
    ({"inputs": {}}, "x"),                                       # missing input
    ({"inputs": {"x": [1, 2, 3]}}, "x"),                         # wrong rank
    ({"inputs": {"x": [[1, 2], [3]]}}, "bad input"),             # ragged lists
    ({"inputs": {"x": [["a", "b"]]}}, "bad input"),              # strings for floats
    ({"inputs": {"x": [[1, 2]]}, "output_filter": "y"}, "output_filter"),
    ({"inputs": {"x": [[1, 2]]}, "output_filter": ["nope"]}, "nope"),
])
def test_bad_requests_are_400_with_a_message(served, body, fragment):
    server, _, _ = served
    status, resp = call(server.url + "/v1/models/c:predict", body)
    assert status == 400, resp
    assert fragment in resp["error"]


def test_routing_errors(served):
    server, _, _ = served
    u = server.url
    assert call(u + "/v1/models/nope:predict", {"inputs": {}})[0] == 404
    assert call(u + "/v1/models/nope")[0] == 404
    assert call(u + "/v1/models/c/versions/9")[0] == 404
    assert call(u + "/elsewhere")[0] == 404
    assert call(u + "/v1/models/c:predict")[0] == 405           # GET on predict
    assert call(u + "/v1/models/c", {"inputs": {}})[0] == 405   # POST on status
    status, body = call(u + "/v1/models/none:predict", {"inputs": {"x": [[1, 2]]}})
    assert status == 503 and "has no version serving" in body["error"]  # the host's words
    req = urllib.request.Request(u + "/v1/models/c:predict", data=b"x" * 10, method="POST",
                                 headers={"Content-Length": str(1 << 40)})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 413
    # after all of that, the server still serves
    assert call(u + "/v1/models/c:predict", {"inputs": {"x": [[1, 2]]}})[0] == 200


def test_status_metadata_health_ready(served):
    server, _, _ = served
    u = server.url
    status, st = call(u + "/v1/models/c")
    assert status == 200 and st["serving"] == [1] and st["versions"][0]["state"] == "AVAILABLE"
    status, v = call(u + "/v1/models/c/versions/1")
    assert status == 200 and v["version"] == 1 and v["load_ms"] > 0
    status, meta = call(u + "/v1/models/c/metadata")
    assert status == 200 and meta["model_version"] == 1
    assert [i["name"] for i in meta["signature"]["inputs"]] == ["x"]
    assert call(u + "/healthz") == (200, {"status": "ok"})
    status, ready = call(u + "/readyz")
    assert status == 503 and ready["unavailable"] == ["none"]


def _metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_count_requests_errors_and_latency(served):
    _, mgr, _ = served
    server = ServingHTTPServer(mgr, port=0).start()  # fresh counters
    try:
        _metrics_count_requests_errors_and_latency(server.url)
    finally:
        server.shutdown_and_close()


def _metrics_count_requests_errors_and_latency(u):
    for _ in range(5):
        assert call(u + "/v1/models/c:predict", {"inputs": {"x": [[1, 2]]}})[0] == 200
    for _ in range(2):
        assert call(u + "/v1/models/c:predict", {"inputs": {"y": [[1, 2]]}})[0] == 400
    assert call(u + "/v1/models/zzz:predict", {"inputs": {}})[0] == 404
    status, text = call(u + "/metrics")
    text = text.decode()
    assert status == 200
    assert _metric(text, "recstrata_http_requests_total", model="c", endpoint="predict", code="200") == 5
    assert _metric(text, "recstrata_http_requests_total", model="c", endpoint="predict", code="400") == 2
    assert _metric(text, "recstrata_http_requests_total", model="_unknown", endpoint="predict", code="404") == 1
    assert _metric(text, "recstrata_http_request_errors_total", model="c", endpoint="predict") == 2
    assert _metric(text, "recstrata_http_request_duration_seconds_count", model="c", endpoint="predict") == 7
    inf = _metric(text, "recstrata_http_request_duration_seconds_bucket", model="c", endpoint="predict", le="+Inf")
    first = _metric(text, "recstrata_http_request_duration_seconds_bucket", model="c", endpoint="predict",
                    le="0.0005")
    assert inf == 7 and 0 <= first <= 7
    assert "# TYPE recstrata_http_request_duration_seconds histogram" in text
    # the native host's metrics, in the same exposition
    assert _metric(text, "rs_host_model_ready", model="none") == 0
    assert _metric(text, "rs_host_model_ready", model="c") == 1
    assert _metric(text, "rs_host_version_ready", model="c", version="1") == 1
    assert _metric(text, "rs_host_requests_total", model="c", version="1") >= 5
    assert _metric(text, "rs_host_errors_total", model="c", version="1") >= 2
    # one well-formed exposition: every family once, every sample under its family
    from prometheus_client.parser import text_string_to_metric_families

    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), names
    assert {"recstrata_http_requests", "rs_host_requests", "rs_host_request_duration_seconds"} <= set(names)


def test_serve_cli_end_to_end_with_hot_reload(tmp_path, const_models):
    base = tmp_path / "ctr"
    base.mkdir()
    put_version(base, 1, const_models[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "recstrata.cli", "serve", "--model", f"ctr={base}",
                             "--port", "0", "--poll-seconds", "0.2", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)  # a hung start fails the test instead of hanging it
        line = got[0] if got else ""
        m = re.match(r"serving on (http://127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = m.group(1)
        body = {"inputs": {"x": [[0.5, 0.5]]}}
        assert call(url + "/v1/models/ctr:predict", body)[1]["outputs"]["y"] == [1.0]
        put_version(base, 2, const_models[2])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if call(url + "/v1/models/ctr:predict", body)[1]["model_version"] == 2:
                break
            time.sleep(0.05)
        assert call(url + "/v1/models/ctr:predict", body)[1]["outputs"]["y"] == [2.0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0


def test_http_clients_see_no_error_across_a_reload(tmp_path, const_models):
    put_version(tmp_path, 1, const_models[1])
    mgr = ModelManager({"c": tmp_path}, poll_seconds=0.05)
    server = ServingHTTPServer(mgr, port=0).start()
    seen: list[list[int]] = [[] for _ in range(4)]
    failures: list = []
    stop = threading.Event()

    def client(i):
        while not stop.is_set():
            status, body = call(server.url + "/v1/models/c:predict", {"inputs": {"x": [[1, 2]]}})
            if status != 200 or body["outputs"]["y"] != [float(body["model_version"])]:
                failures.append((status, body))
                return
            seen[i].append(body["model_version"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(len(s) >= 3 for s in seen):
            time.sleep(0.01)
        put_version(tmp_path, 2, const_models[2])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(s and s[-1] == 2 for s in seen):
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.shutdown_and_close()
        mgr.close()
    assert failures == []
    for s in seen:
        assert s[0] == 1 and s[-1] == 2
        assert s == sorted(s)  # never back to v1 once v2 answered
