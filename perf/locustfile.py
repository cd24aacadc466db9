"""Locust users for perf/load_test.py: JSON predict calls on a Criteo-shaped model.

Environment (set by load_test.py):
  RS_MODEL   model name (default "ctr")
  RS_BATCH   rows per request (default 16)
  RS_RATE    requests per second per user (constant throughput; default 25)
  RS_LOG     file to write one line per request: start_epoch_s latency_ms ok model_version

Each user posts ``{"inputs": {"dense": [B,13] floats, "cat": [B,26] ids}}`` to
/v1/models/<name>:predict, drawn from a few fixed request bodies (seeded), and
records its own timing per request so load_test.py can split steady state from
the reload window. A request fails unless the status is 200 and the body has
outputs.
"""

from __future__ import annotations

import json
import os
import random
import re
import time

from locust import FastHttpUser, constant_throughput, events, task

MODEL = os.environ.get("RS_MODEL", "ctr")
BATCH = int(os.environ.get("RS_BATCH", "16"))
RATE = float(os.environ.get("RS_RATE", "25"))
LOG_PATH = os.environ.get("RS_LOG")

_rng = random.Random(7)
BODIES = [json.dumps({"inputs": {
    "dense": [[round(_rng.random(), 4) for _ in range(13)] for _ in range(BATCH)],
    "cat": [[_rng.randrange(1, 10**9) for _ in range(26)] for _ in range(BATCH)],
}}).encode() for _ in range(8)]
_VERSION = re.compile(rb'"model_version": (\d+)')
_records: list[str] = []


@events.quitting.add_listener
def _write_log(environment, **kwargs):
    if LOG_PATH:
        with open(LOG_PATH, "w") as f:
            f.write("\n".join(_records) + ("\n" if _records else ""))


class Predictor(FastHttpUser):
    wait_time = constant_throughput(RATE)

    @task
    def predict(self):
        body = BODIES[random.randrange(len(BODIES))]
        t_wall = time.time()
        t0 = time.perf_counter()
        with self.client.post(f"/v1/models/{MODEL}:predict", data=body, catch_response=True,
                              headers={"Content-Type": "application/json"}, name="predict") as resp:
            ms = (time.perf_counter() - t0) * 1e3
            content = resp.content or b""
            m = _VERSION.search(content)
            ok = resp.status_code == 200 and b'"outputs"' in content and m is not None
            if ok:
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}: {content[:200]!r}")
            _records.append(f"{t_wall:.6f} {ms:.3f} {int(ok)} {m.group(1).decode() if m else -1}")
