"""The competitor of perf/load_test.py: TensorFlow Python behind the same HTTP server.

    python perf/tf_baseline_server.py --model ctr=BASE_DIR [--port 0] [--poll-seconds 0.5]

What a team without recstrata would write: ``tf.saved_model.load`` and a call
of its ``serving_default`` signature, served by the *same* standard-library
HTTP layer as ``recstrata serve`` (recstrata.serving.http_server), so the
comparison is about the model runtime and the reload, not the HTTP code.
Reload: a poll thread watches ``BASE_DIR/<int>/saved_model.pb``; a newer
version is loaded and warmed up (5 batch-1 calls of all-ones, as recstrata's
default warmup), then the serving reference is swapped; the old model is freed
by the garbage collector when the last request holding it returns.
TF's default thread pools are used (what ``tf.saved_model.load`` gives you).
Prints ``serving on http://HOST:PORT`` when ready; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class TFModel:
    """The subset of recstrata.Model the HTTP handler uses, on TF Python."""

    def __init__(self, path: str, warmup_runs: int = 5):
        import tensorflow as tf

        self._tf = tf
        self._obj = tf.saved_model.load(path)
        self._fn = self._obj.signatures["serving_default"]
        self._specs = dict(self._fn.structured_input_signature[1])
        self.closed = False
        for _ in range(warmup_runs):
            self._fn(**{k: tf.ones([1 if d is None else d for d in s.shape.as_list()], s.dtype)
                        for k, s in self._specs.items()})

    def run(self, feeds, outputs=None):
        tf = self._tf
        if set(feeds) != set(self._specs):
            raise ValueError(f"inputs must be exactly {sorted(self._specs)}, got {sorted(feeds)}")
        tensors = {k: tf.constant(np.asarray(v, dtype=self._specs[k].dtype.as_numpy_dtype))
                   for k, v in feeds.items()}
        out = self._fn(**tensors)
        names = list(out) if outputs is None else list(outputs)
        return {k: out[k].numpy() for k in names}

    def predict_bytes(self, request: bytes) -> bytes:
        from recstrata.wire import codec

        feeds, _sig, out_filter = codec.parse_request(request)
        return codec.make_response(self.run(feeds, out_filter or None))

    def signature(self) -> dict:
        from tensorflow.core.framework import types_pb2

        return {"inputs": [{"name": k, "dtype": s.dtype.name, "type": types_pb2.DataType.Name(s.dtype.as_datatype_enum)}
                           for k, s in self._specs.items()]}


class _Lease:
    def __init__(self, model, version):
        self.model, self.version = model, version

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class TFManager:
    """Serves the newest complete version of each model; the interface ServingHTTPServer needs."""

    def __init__(self, models: dict[str, str], poll_seconds: float):
        self._bases = dict(models)
        self._current: dict[str, tuple[int, TFModel]] = {}
        self._failures = {name: 0 for name in models}
        self._loading: dict[str, int] = {}
        self.closed = False
        self._stop = threading.Event()
        self.poll()
        self._thread = threading.Thread(target=self._loop, args=(poll_seconds,), daemon=True)
        self._thread.start()

    @property
    def model_names(self):
        return sorted(self._bases)

    @staticmethod
    def _newest(base):
        vs = [int(e) for e in os.listdir(base)
              if e.isdigit() and os.path.isfile(os.path.join(base, e, "saved_model.pb"))]
        return max(vs) if vs else None

    def poll(self):
        for name, base in self._bases.items():
            v = self._newest(base)
            cur = self._current.get(name)
            if v is None or (cur and cur[0] >= v):
                continue
            try:
                model = TFModel(os.path.join(base, str(v)))
            except Exception as exc:  # keep serving the old one
                self._failures[name] += 1
                print(f"tf baseline: version {v} failed: {exc}", file=sys.stderr)
                continue
            self._current[name] = (v, model)  # the swap: one reference assignment

    def _loop(self, seconds):
        while not self._stop.wait(seconds):
            self.poll()

    def lease(self, name, version=None):
        from recstrata.errors import NotFoundError
        from recstrata.serving.manager import UnavailableError

        if name not in self._bases:
            raise NotFoundError(f"no model named {name!r}")
        cur = self._current.get(name)
        if cur is None:
            raise UnavailableError(f"model {name!r} has no version available")
        if version is not None and version != cur[0]:
            raise NotFoundError(f"version {version} of model {name!r} is not serving")
        return _Lease(cur[1], cur[0])

    def status(self, name=None):
        out = {}
        for n in self._bases:
            cur = self._current.get(n)
            versions = [{"version": cur[0], "state": "AVAILABLE", "load_failures": 0}] if cur else []
            if self._failures[n]:
                versions.append({"version": -1, "state": "FAILED", "load_failures": self._failures[n]})
            out[n] = {"name": n, "available": cur is not None, "serving": [cur[0]] if cur else [],
                      "default_version": cur[0] if cur else None, "versions": versions}
        return out[name] if name else out

    def close(self):
        self._stop.set()
        self._thread.join()
        self.closed = True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="TF Python baseline server for perf/load_test.py")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=BASE_DIR")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--poll-seconds", type=float, default=0.5)
    args = ap.parse_args(argv)
    from recstrata.serving.http_server import ServingHTTPServer

    models = dict(spec.split("=", 1) for spec in args.model)
    mgr = TFManager(models, args.poll_seconds)
    server = ServingHTTPServer(mgr, host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    server.start()
    print(f"serving on {server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown_and_close()
        mgr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
