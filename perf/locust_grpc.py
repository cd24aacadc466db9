"""Locust users for perf/bench_go_server.py: one DeepRec PredictRequest, over gRPC or HTTP.

Environment (set by bench_go_server.py):
  RS_PROTOCOL  "grpc": unary call /recstrata.serving.v1.PredictionService/Predict
               (a generic grpcio call with predict.proto's messages; --host is
               host:port); "http": POST the same bytes to
               <host>/v1/models/<model>:predict_pb (the Go server and
               `recstrata serve` both have this route)
  RS_MODEL     model name (default "ctr"; gRPC sends it as recstrata-model metadata)
  RS_REQUEST   file holding the serialized PredictRequest

Users send back to back (no wait): the run measures throughput at
saturation. A request fails unless the response parses as a PredictResponse
with at least one output.
"""

from __future__ import annotations

import os
import time

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import FastHttpUser, User, task

from recstrata.wire import predict_pb2

# grpcio blocks in C; under gevent it must yield to locust's event loop.
grpc_gevent.init_gevent()

PROTOCOL = os.environ.get("RS_PROTOCOL", "grpc")
MODEL = os.environ.get("RS_MODEL", "ctr")
with open(os.environ["RS_REQUEST"], "rb") as f:
    BODY = f.read()
METHOD = "/recstrata.serving.v1.PredictionService/Predict"


def _check(payload: bytes) -> int:
    resp = predict_pb2.PredictResponse.FromString(payload)
    if not resp.outputs:
        raise ValueError("PredictResponse without outputs")
    return len(payload)


class GrpcPredictor(User):
    abstract = PROTOCOL != "grpc"

    def on_start(self):
        self.channel = grpc.insecure_channel(self.host)
        self.call = self.channel.unary_unary(METHOD)  # bytes in, bytes out
        self.md = (("recstrata-model", MODEL),)

    def on_stop(self):
        self.channel.close()

    @task
    def predict(self):
        t0 = time.perf_counter()
        exc, size = None, 0
        try:
            size = _check(self.call(BODY, metadata=self.md, timeout=30))
        except Exception as e:  # reported to locust as a failure
            exc = e
        self.environment.events.request.fire(
            request_type="grpc", name="Predict", response_time=(time.perf_counter() - t0) * 1e3,
            response_length=size, exception=exc, context={})


class HttpPredictor(FastHttpUser):
    abstract = PROTOCOL != "http"

    @task
    def predict(self):
        with self.client.post(f"/v1/models/{MODEL}:predict_pb", data=BODY, catch_response=True,
                              headers={"Content-Type": "application/x-protobuf"}, name="predict_pb") as r:
            try:
                if r.status_code != 200:
                    raise ValueError(f"status {r.status_code}: {(r.content or b'')[:200]!r}")
                _check(r.content)
                r.success()
            except Exception as e:
                r.failure(str(e))
