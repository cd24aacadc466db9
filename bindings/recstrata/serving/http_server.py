"""A small embedded HTTP server over a ModelManager (standard library only).

    from recstrata.serving import ModelManager
    from recstrata.serving.http_server import ServingHTTPServer

    mgr = ModelManager({"ctr": "/models/ctr"}, poll_seconds=5)
    server = ServingHTTPServer(mgr, host="127.0.0.1", port=8500)
    server.serve_forever()            # or server.start() for a background thread

Endpoints (``<name>`` a managed model; ``/versions/<v>`` optional everywhere):

    POST /v1/models/<name>:predict      {"inputs": {input: nested lists}, "output_filter": [..]}
                                        -> {"outputs": {output: nested lists}, "model_version": v}
    POST /v1/models/<name>:predict_pb   DeepRec PredictRequest bytes -> PredictResponse bytes
    GET  /v1/models/<name>              versions and their states (ModelManager.status)
    GET  /v1/models/<name>/metadata     the served version's signature
    GET  /healthz                       200 while the server runs
    GET  /readyz                        200 when every model has a version serving, else 503
    GET  /metrics                       Prometheus text format

Contracts
- Binds 127.0.0.1 unless told otherwise. One thread per connection
  (``ThreadingHTTPServer``), HTTP/1.1 keep-alive.
- Errors are JSON ``{"error": message}`` (the library's message) with a 4xx
  status for client mistakes: 400 malformed JSON/bodies or inputs the model
  rejects, 404 unknown model/version/path, 405 wrong method, 411/413 missing
  or oversized body, 503 no version serving; 500 only for failures inside the
  library that are not the request's fault. No request can stop the server.
- String outputs are UTF-8 text in JSON, or ``{"b64": ...}`` for bytes that are
  not UTF-8. Non-finite floats are written as NaN/Infinity (as TF Serving does).
- Metrics: ``recstrata_http_requests_total{model,endpoint,code}``,
  ``recstrata_http_request_errors_total{model,endpoint}``,
  ``recstrata_http_request_duration_seconds`` histogram ``{model,endpoint}``,
  counted here (requests naming an unknown model under ``model="_unknown"``:
  bounded labels), followed in the same exposition by the native host's
  families (``rs_host_model_ready``, ``rs_host_version_ready``,
  ``rs_host_requests_total``, latency and batch histograms, load and store
  metrics: docs/host.md) from ``manager.metrics_text()``.
- JSON inputs are converted to the served version's signature dtypes
  (``lease.model.signature()``) before they reach the library.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from recstrata.errors import (FailedPreconditionError, InvalidArgumentError, NotFoundError,
                              OutOfRangeError, RecstrataError)
from recstrata.serving.manager import ModelManager, UnavailableError

__all__ = ["ServingHTTPServer", "Metrics"]

log = logging.getLogger("recstrata.serving.http")

_MODEL_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?:(:predict_pb|:predict)|(/metadata))?$")

# Latency histogram buckets, seconds (Prometheus convention).
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Metrics:
    """Thread-safe request counters and latency histograms; Prometheus text output."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._hist: dict[tuple[str, str], list] = {}  # [bucket counts..., sum, count]

    def observe(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        with self._lock:
            key = (model, endpoint, code)
            self._requests[key] = self._requests.get(key, 0) + 1
            if code >= 400:
                self._errors[(model, endpoint)] = self._errors.get((model, endpoint), 0) + 1
            h = self._hist.get((model, endpoint))
            if h is None:
                h = self._hist[(model, endpoint)] = [0] * len(_BUCKETS) + [0.0, 0]
            for i, edge in enumerate(_BUCKETS):
                if seconds <= edge:
                    h[i] += 1
                    break
            h[-2] += seconds
            h[-1] += 1

    def render(self, manager: ModelManager | None = None) -> str:
        lines = []

        def family(name, kind, help_):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            requests = dict(self._requests)
            errors = dict(self._errors)
            hist = {k: list(v) for k, v in self._hist.items()}
        family("recstrata_http_requests_total", "counter", "HTTP requests by model, endpoint and status code.")
        for (m, e, c), n in sorted(requests.items()):
            lines.append(f'recstrata_http_requests_total{{model="{_esc(m)}",endpoint="{e}",code="{c}"}} {n}')
        family("recstrata_http_request_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status.")
        for (m, e), n in sorted(errors.items()):
            lines.append(f'recstrata_http_request_errors_total{{model="{_esc(m)}",endpoint="{e}"}} {n}')
        family("recstrata_http_request_duration_seconds", "histogram",
               "Time from request read to response written, seconds.")
        for (m, e), h in sorted(hist.items()):
            labels = f'model="{_esc(m)}",endpoint="{e}"'
            cum = 0
            for i, edge in enumerate(_BUCKETS):
                cum += h[i]
                lines.append(f'recstrata_http_request_duration_seconds_bucket{{{labels},le="{edge:g}"}} {cum}')
            lines.append(f'recstrata_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {h[-1]}')
            lines.append(f"recstrata_http_request_duration_seconds_sum{{{labels}}} {h[-2]:.9g}")
            lines.append(f"recstrata_http_request_duration_seconds_count{{{labels}}} {h[-1]}")
        text = "\n".join(lines) + "\n"
        host_text = getattr(manager, "metrics_text", None)
        if host_text is not None and not manager.closed:
            text += host_text()  # the native host's families (rs_host_*), one exposition
        return text


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _jsonable(arr: np.ndarray) -> Any:
    if arr.dtype == object:
        flat = []
        for x in arr.ravel().tolist():
            if isinstance(x, bytes):
                try:
                    x = x.decode("utf-8")
                except UnicodeDecodeError:
                    x = {"b64": base64.b64encode(x).decode("ascii")}
            flat.append(x)
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape).tolist()
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 4:  # float16 / bfloat16
        arr = arr.astype(np.float32)
    return arr.tolist()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per keep-alive request). TCP_NODELAY avoids that.
    disable_nagle_algorithm = True
    timeout = 120  # seconds an idle keep-alive connection (and its thread) may linger
    server: "ServingHTTPServer"

    def log_message(self, fmt, *args):  # not to stderr per request
        log.debug("%s " + fmt, self.address_string(), *args)

    # ---- plumbing ---------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            self.close_connection = True
            raise _HttpError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise _HttpError(400, f"bad Content-Length {length!r}") from None
        if n < 0 or n > self.server.max_body_bytes:
            self.close_connection = True  # do not read a body we refuse
            raise _HttpError(413, f"request body of {n} bytes exceeds the limit of "
                                  f"{self.server.max_body_bytes} bytes")
        return self.rfile.read(n)

    def _dispatch(self, method: str) -> None:
        t0 = time.perf_counter()
        model_label, endpoint = "", "other"
        status = 500
        try:
            path = self.path.split("?", 1)[0]
            m = _MODEL_PATH.match(path)
            if m:
                name, version, action, metadata = m.groups()
                endpoint = action[1:] if action else ("metadata" if metadata else "status")
                model_label = name if name in self.server.manager.model_names else "_unknown"
                status = self._model_route(method, name, int(version) if version else None, endpoint)
            elif path in ("/healthz", "/readyz", "/metrics"):
                endpoint = path[1:]
                if method != "GET":
                    raise _HttpError(405, f"{path} takes GET")
                status = self._plain_route(path)
            else:
                raise _HttpError(404, f"no such path {path!r}; see /v1/models/<name>[:predict|:predict_pb]")
        except _HttpError as exc:
            status = exc.status
            self._send_json(status, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True
            status = 499
        except Exception as exc:  # never let a request take the server down
            log.exception("request %s %s failed", method, self.path)
            status = 500
            self._send_json(status, {"error": f"internal error: {type(exc).__name__}: {exc}"})
        finally:
            if endpoint in ("predict", "predict_pb"):
                self.server.metrics.observe(model_label, endpoint, status, time.perf_counter() - t0)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_HEAD(self):
        self._dispatch("GET")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---- routes -----------------------------------------------------------

    def _plain_route(self, path: str) -> int:
        mgr = self.server.manager
        if path == "/healthz":
            ok = not mgr.closed
            self._send_json(200 if ok else 503, {"status": "ok" if ok else "closing"})
            return 200 if ok else 503
        if path == "/readyz":
            st = {} if mgr.closed else mgr.status()
            missing = sorted(n for n, s in st.items() if not s["available"])
            ok = not mgr.closed and not missing
            self._send_json(200 if ok else 503, {"ready": ok, "unavailable": missing})
            return 200 if ok else 503
        text = self.server.metrics.render(mgr).encode("utf-8")
        self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
        return 200

    def _model_route(self, method: str, name: str, version: int | None, endpoint: str) -> int:
        mgr = self.server.manager
        if endpoint in ("status", "metadata"):
            if method != "GET":
                raise _HttpError(405, f"/v1/models/{name} takes GET; predict with POST .../{name}:predict")
            try:
                st = mgr.status(name)
                if endpoint == "metadata":
                    with mgr.lease(name, version) as lease:
                        body = {"model": name, "model_version": lease.version,
                                "signature": lease.model.signature()}
                elif version is not None:
                    vs = [v for v in st["versions"] if v["version"] == version]
                    if not vs:
                        raise NotFoundError(f"model {name!r} has no version {version}")
                    body = vs[0]
                else:
                    body = st
            except NotFoundError as exc:
                raise _HttpError(404, str(exc)) from None
            except (UnavailableError, FailedPreconditionError) as exc:
                raise _HttpError(503, str(exc)) from None
            self._send_json(200, body)
            return 200
        if method != "POST":
            raise _HttpError(405, f"{endpoint} takes POST")
        body = self._body()
        try:
            lease = mgr.lease(name, version)
        except NotFoundError as exc:
            raise _HttpError(404, str(exc)) from None
        except (UnavailableError, FailedPreconditionError) as exc:
            raise _HttpError(503, str(exc)) from None
        with lease:
            if endpoint == "predict_pb":
                out = _call(lambda: lease.model.predict_bytes(body))
                self._send(200, out, "application/octet-stream")
                return 200
            lists, output_filter = _parse_json_request(body)
            outputs = _call(lambda: lease.model.run(_feeds(lease.model.signature(), lists), output_filter))
            version_used = lease.version
        response = {"outputs": {k: _jsonable(v) for k, v in outputs.items()}, "model_version": version_used}
        self._send_json(200, response)
        return 200


def _call(fn):
    """Runs a model call; the request's mistakes become 400 with the library's message."""
    try:
        return fn()
    except (InvalidArgumentError, NotFoundError, OutOfRangeError) as exc:
        raise _HttpError(400, str(exc)) from None
    except RecstrataError as exc:
        raise _HttpError(500, f"{type(exc).__name__}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:  # numpy could not convert the lists
        raise _HttpError(400, f"bad input: {exc}") from None


# TensorFlow DataType names (signature "type") -> rs_dtype codes (recstrata.processor.DTYPES)
_TYPE_CODES = {"DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4, "DT_INT16": 5, "DT_INT8": 6,
               "DT_STRING": 7, "DT_INT64": 9, "DT_BOOL": 10, "DT_BFLOAT16": 14, "DT_UINT16": 17,
               "DT_HALF": 19}


def _feeds(signature: dict, lists: dict) -> dict:
    """JSON values as numpy arrays of the signature's dtypes (strings: object arrays).

    Names the signature does not have are passed on as they are: the
    library's error names them. Raises ValueError/TypeError for values numpy
    cannot convert (ragged lists, text for numbers).
    """
    from recstrata.processor import DTYPES

    types = {i["name"]: _TYPE_CODES.get(i.get("type")) for i in signature.get("inputs", [])}
    out = {}
    for name, value in lists.items():
        code = types.get(name)
        out[name] = np.asarray(value) if code is None else np.asarray(value, dtype=DTYPES[code])
    return out


def _parse_json_request(body: bytes):
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _HttpError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), dict):
        raise _HttpError(400, 'request must be a JSON object {"inputs": {name: nested lists}}')
    feeds = req["inputs"]
    output_filter = req.get("output_filter")
    if output_filter is not None and (not isinstance(output_filter, list)
                                      or not all(isinstance(o, str) for o in output_filter)):
        raise _HttpError(400, "output_filter must be a list of output names")
    return feeds, output_filter


class ServingHTTPServer(ThreadingHTTPServer):
    """The HTTP front of a ModelManager. ``port=0`` picks a free port (see ``.port``).

    The server does not own the manager: :meth:`shutdown_and_close` stops
    serving and closes the socket; close the manager yourself afterwards.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, manager: ModelManager, host: str = "127.0.0.1", port: int = 8500,
                 max_body_bytes: int = 64 << 20):
        self.manager = manager
        self.metrics = Metrics()
        self.max_body_bytes = int(max_body_bytes)
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    def handle_error(self, request, client_address):  # a broken connection, not a crash
        log.debug("connection from %s failed", client_address, exc_info=True)

    @property
    def host(self) -> str:
        return self.server_address[0]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServingHTTPServer":
        """Serves on a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="recstrata-http", daemon=True)
        self._thread.start()
        return self

    def shutdown_and_close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
