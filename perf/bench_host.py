#!/usr/bin/env python
"""The native model host (rs_host) under load: hot swaps and dynamic batching.

The model (generated under perf/out/host/, never committed): an MLP SavedModel
x [B, 64] float32 -> 512 -> 512 -> prob [B, 1], in two versions (different
weights) under BASE/1 and BASE/2. Callers are Python threads calling
recstrata.host.Host.run at batch 1 (cffi releases the GIL for the native
call, so threads overlap inside the library).

Swap: C callers run for a steady phase, then the main thread makes --swaps
version swaps (rs_host_pin alternating 1 <-> 2: each loads and warms a
version from disk, publishes it and retires the other) while they keep
calling. Reported: failed calls (any exception), p99 during the swaps over
the steady p99, peak RSS during the swaps over the steady RSS.

Batching: the same callers against a host without batching and one with
batching (max_batch_size = callers, max_queue_delay_us --delay-us), in
interleaved rounds: throughput ratio batched/unbatched and both p99s, once
with the Python callers and once with native caller threads
(perf/host_loop.c, compiled here; the RESULT's batching_* keys).

Ends with `RESULT {json}` (keys swap_failed_requests, swap_p99_ratio,
swap_rss_ratio, batching_throughput_ratio, batching_p99_ms,
unbatched_p99_ms (C callers), py_batching_* (Python callers), load_avg_1m).

    flock /tmp/recstrata-bench.lock python perf/bench_host.py --quick
    flock /tmp/recstrata-bench.lock python perf/bench_host.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

HIDDEN = 512
OUT = Path(__file__).resolve().parent / "out" / f"host_h{HIDDEN}"


def build(path: Path, seed: int) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class Mlp(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = [tf.Variable(rng.normal(size=s).astype(np.float32) * 0.1)
                      for s in ((64, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 1))]

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def serve(self, x):
            h = tf.nn.relu(tf.matmul(x, self.w[0]))
            h = tf.nn.relu(tf.matmul(h, self.w[1]))
            return {"prob": tf.sigmoid(tf.matmul(h, self.w[2]))}

    m = Mlp()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def base_dir() -> Path:
    base = OUT / "base"
    if not (base / "2" / "saved_model.pb").exists():
        shutil.rmtree(OUT, ignore_errors=True)
        base.mkdir(parents=True)
        for v in (1, 2):
            build(base / str(v), v)
    return base


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Callers:
    """n threads calling host.run(model) at batch 1, recording latencies while `recording`."""

    def __init__(self, host, n: int, model: str = "m"):
        self.host, self.model = host, model
        self.stop = threading.Event()
        self.lat: list[list[float]] = [[] for _ in range(n)]
        self.failed = 0
        self.calls = [0] * n
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]

    def _run(self, i):
        x = {"x": np.random.default_rng(i).normal(size=(1, 64)).astype(np.float32)}
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                self.host.run(self.model, x)
            except Exception:
                self.failed += 1
                continue
            self.lat[i].append(time.perf_counter() - t0)  # take() swaps the list
            self.calls[i] += 1

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def take(self) -> np.ndarray:
        """Latencies recorded since the last take (seconds)."""
        out = []
        for i, lat in enumerate(self.lat):
            out.extend(lat)
            self.lat[i] = []
        return np.array(out)

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def bench_swap(base: Path, callers: int, swaps: int, steady_s: float) -> dict:
    from recstrata.host import Host

    host = Host({"models": [{"name": "m", "base_path": str(base), "version_policy": {"latest": {}},
                             "model_config": {"warmup_runs": 2}}]})
    c = Callers(host, callers).start()
    time.sleep(0.5)
    c.take()
    rss_steady = []
    t_end = time.monotonic() + steady_s
    while time.monotonic() < t_end:
        rss_steady.append(rss_kib())
        time.sleep(0.01)
    steady = c.take()
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    for k in range(swaps):
        host.pin("m", 1 if k % 2 == 0 else 2)
    swap_s = time.monotonic() - t0
    during = c.take()
    sampling.set()
    sampler.join()
    c.join()
    failed = c.failed
    host.close()
    return {
        "swaps": swaps, "swap_seconds": round(swap_s, 2), "failed": failed,
        "steady_calls": len(steady), "swap_calls": len(during),
        "steady_p50_ms": round(float(np.percentile(steady, 50)) * 1e3, 3),
        "steady_p99_ms": round(float(np.percentile(steady, 99)) * 1e3, 3),
        "swap_p50_ms": round(float(np.percentile(during, 50)) * 1e3, 3),
        "swap_p99_ms": round(float(np.percentile(during, 99)) * 1e3, 3),
        "p99_ratio": round(float(np.percentile(during, 99) / np.percentile(steady, 99)), 3),
        "rss_steady_mib": round(float(np.median(rss_steady)) / 1024, 1),
        "rss_peak_mib": round(peak[0] / 1024, 1),
        "rss_ratio": round(peak[0] / float(np.median(rss_steady)), 3),
    }


def bench_batching(base: Path, callers: int, rounds: int, round_s: float, delay_us: int) -> dict:
    from recstrata.host import Host

    spec = {"name": "m", "base_path": str(base), "model_config": {"warmup_runs": 2}}
    hosts = {
        "unbatched": Host({"models": [spec]}),
        "batched": Host({"models": [{**spec, "batching": {"max_batch_size": callers,
                                                         "max_queue_delay_us": delay_us}}]}),
    }
    res = {k: {"tput": [], "p99": [], "p50": []} for k in hosts}
    for _ in range(rounds):
        for name, host in hosts.items():  # interleaved rounds
            c = Callers(host, callers).start()
            time.sleep(0.3)
            c.take()
            n0 = sum(c.calls)
            t0 = time.perf_counter()
            time.sleep(round_s)
            n1 = sum(c.calls)
            dt = time.perf_counter() - t0
            lat = c.take()
            c.join()
            assert c.failed == 0, f"{name}: {c.failed} failed calls"
            res[name]["tput"].append((n1 - n0) / dt)
            res[name]["p99"].append(float(np.percentile(lat, 99)) * 1e3)
            res[name]["p50"].append(float(np.percentile(lat, 50)) * 1e3)
    text = hosts["batched"].metrics_text()
    for h in hosts.values():
        h.close()
    out = {k: {m: round(float(np.median(v)), 3) for m, v in r.items()} for k, r in res.items()}
    out["ratio"] = round(out["batched"]["tput"] / out["unbatched"]["tput"], 3)
    out["batch_size_mean"] = _mean_batch(text)
    return out


def compile_loop() -> Path:
    import subprocess

    from recstrata._paths import include_dir, library_path

    exe = OUT / "host_loop"
    lib_dir = str(Path(library_path()).parent)
    subprocess.run(["gcc", "-O2", "-std=c11", str(Path(__file__).resolve().parent / "host_loop.c"),
                    "-I", include_dir(), "-L", lib_dir, "-lrecstrata", f"-Wl,-rpath,{lib_dir}", "-lpthread",
                    "-o", str(exe)], check=True)
    return exe


def bench_batching_c(base: Path, callers: int, rounds: int, round_s: float, delay_us: int) -> dict:
    """The batching comparison with native caller threads (perf/host_loop.c)."""
    import subprocess

    exe = compile_loop()
    spec = {"name": "m", "base_path": str(base), "model_config": {"warmup_runs": 2}}
    configs = {"unbatched": {"models": [spec]},
               "batched": {"models": [{**spec, "batching": {"max_batch_size": callers,
                                                           "max_queue_delay_us": delay_us}}]}}
    res = {k: {"tput": [], "p50": [], "p99": []} for k in configs}
    for _ in range(rounds):
        for name, cfg in configs.items():
            path = OUT / f"{name}.json"
            path.write_text(json.dumps(cfg))
            line = subprocess.run([str(exe), str(path), "m", str(callers), str(round_s), "64"], check=True,
                                  capture_output=True, text=True).stdout.split()
            f = dict(zip(line[::2], line[1::2]))
            assert int(f["failed"]) == 0, f"{name}: {f['failed']} failed calls"
            res[name]["tput"].append(int(f["calls"]) / float(f["seconds"]))
            res[name]["p50"].append(float(f["p50_us"]) / 1e3)
            res[name]["p99"].append(float(f["p99_us"]) / 1e3)
    out = {k: {m: round(float(np.median(v)), 3) for m, v in r.items()} for k, r in res.items()}
    out["ratio"] = round(out["batched"]["tput"] / out["unbatched"]["tput"], 3)
    return out


def _mean_batch(text: str) -> float:
    s = c = 0.0
    for line in text.splitlines():
        if line.startswith("rs_host_batch_size_sum"):
            s = float(line.split()[-1])
        elif line.startswith("rs_host_batch_size_count"):
            c = float(line.split()[-1])
    return round(s / c, 2) if c else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a couple of minutes")
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--swaps", type=int, default=None)
    ap.add_argument("--delay-us", type=int, default=500)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    swaps = args.swaps or (20 if args.quick else 50)
    base = base_dir()
    load = os.getloadavg()[0]
    print(f"# cpus {os.cpu_count()}, load avg 1m {load:.2f}, callers {args.callers}")
    swap = bench_swap(base, args.callers, swaps, 3.0 if args.quick else 6.0)
    print("swap", json.dumps(swap))
    bat = bench_batching(base, args.callers, 2 if args.quick else 4, 2.0 if args.quick else 4.0, args.delay_us)
    print("batching (python callers)", json.dumps(bat))
    batc = bench_batching_c(base, args.callers, 2 if args.quick else 4, 2.0 if args.quick else 4.0, args.delay_us)
    print("batching (C callers)", json.dumps(batc))
    summary = {
        "swap_failed_requests": swap["failed"], "swap_p99_ratio": swap["p99_ratio"],
        "swap_rss_ratio": swap["rss_ratio"],
        "batching_throughput_ratio": batc["ratio"], "batching_p99_ms": batc["batched"]["p99"],
        "unbatched_p99_ms": batc["unbatched"]["p99"],
        "py_batching_throughput_ratio": bat["ratio"], "py_batching_p99_ms": bat["batched"]["p99"],
        "py_batch_size_mean": bat["batch_size_mean"], "load_avg_1m": round(load, 2),
    }
    print("RESULT " + json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
