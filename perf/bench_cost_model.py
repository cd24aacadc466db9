#!/usr/bin/env python
"""Cores across models: the core allocator against all-shared, real and simulated.

Real, on this machine (one baseline under steady Poisson load, three experiment
models with bursty on/off load, all the same MLP SavedModel at batch 32):
  alone      the baseline's traffic only, every model on every core
  shared     all four loads, every model on every core (what users get today)
  costmodel  all four loads, cores from the library's allocator
             (recstrata.cost_model.plan_cores, static mode: the baseline gets
             dedicated cores sized to its declared load, the experiments share
             the rest), applied as each model's session cpuset
Each model runs in a process of its own (ModelProcess: Python's GIL would
otherwise couple the load generators), its request threads on the model's
cpuset in the cost-model phases. The phases run in interleaved rounds. Latency is measured from each
request's scheduled (open-loop) arrival to its completion, so queueing counts.

Simulated (perf/cost_model_sim.py, processor sharing per core set, service
time measured above): first the real phases are replayed on 2 simulated cores
and the simulator's p99s compared with the real ones (sim_error_vs_real); then
a 128-core machine with 2 baselines + 20 experiments on a shifting trace: the
largest traffic scale at which every baseline meets its p99 target (and the
experiments a 10x looser one), for shared, static and dynamic plans.

SessionGroup: resident memory of session_num=4 over 1 on a SavedModel with a
512 MiB in-graph table, and throughput of session_num=2 over 1 with 2 callers.

    python perf/bench_cost_model.py --quick   # ~3 minutes
    python perf/bench_cost_model.py           # longer phases, more rounds

Ends with `RESULT {json}`; writes perf/results/cost_model.png.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cost_model_sim as sim  # noqa: E402
from harness import p99, plot_path, print_result, save_plot  # noqa: E402

BATCH, WIDTH = 32, 256


# ---- models ------------------------------------------------------------------

def build_mlp(out: Path) -> Path:
    """A plain tf.Module MLP 256-1024-1024-1 with a batch dimension."""
    path = out / "mlp"
    if (path / "saved_model.pb").exists():
        return path
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Mlp(tf.Module):
        def __init__(self):
            self.w1 = tf.Variable(rng.normal(0, 0.05, (WIDTH, 1024)).astype(np.float32))
            self.w2 = tf.Variable(rng.normal(0, 0.05, (1024, 1024)).astype(np.float32))
            self.w3 = tf.Variable(rng.normal(0, 0.05, (1024, 1)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, WIDTH], tf.float32, name="x")])
        def serve(self, x):
            h = tf.nn.relu(tf.matmul(x, self.w1))
            h = tf.nn.relu(tf.matmul(h, self.w2))
            return {"prob": tf.sigmoid(tf.matmul(h, self.w3))}

    m = Mlp()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


def build_big_table(out: Path, rows: int) -> Path:
    """A SavedModel whose in-graph embedding table is rows x 128 float32."""
    path = out / f"big_table_{rows}"
    if (path / "saved_model.pb").exists():
        return path
    import tensorflow as tf

    class Emb(tf.Module):
        def __init__(self):
            self.table = tf.Variable(tf.random.uniform([rows, 128], seed=1))
            self.w = tf.Variable(tf.random.uniform([128, 1], seed=2))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, ids):
            return {"prob": tf.sigmoid(tf.matmul(tf.gather(self.table, ids), self.w))}

    m = Emb()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


# ---- open-loop load ----------------------------------------------------------

class Load:
    """Open-loop arrivals for one model, served by `workers` threads."""

    def __init__(self, model, arrivals: list[float], workers: int, feeds, cpus: set[int] | None = None):
        self.model, self.arrivals, self.feeds, self.cpus = model, arrivals, feeds, cpus
        self.q: queue.Queue = queue.Queue()
        self.lat: list[float] = []
        self.cpu_ms: list[float] = []
        self.last_done = 0.0
        self.errors = 0
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def _work(self):
        # A model's request threads live on its cores, as a serving process would place its
        # handlers: otherwise their own work between runs lands on another model's
        # dedicated cores (Linux: sched_setaffinity(0) pins the calling thread only).
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        while True:
            t0 = self.q.get()
            if t0 is None:
                return
            c0 = time.thread_time()
            try:
                self.model.run(self.feeds)
            except Exception:  # counted; a benchmark must not hide failures
                self.errors += 1
                continue
            now = time.perf_counter()
            self.cpu_ms.append((time.thread_time() - c0) * 1e3)
            self.lat.append((now - t0) * 1e3)
            self.last_done = max(self.last_done, now)

    def dispatch(self, start: float):
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        for t in self.arrivals:
            delay = start + t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.q.put(start + t)


class ModelProcess:
    """One model in a process of its own, open twice: on every core ("shared") and on its
    plan's cpuset ("costmodel"). One process per model because the load generator is Python:
    in one interpreter the four models' 48 request threads queue for one GIL, and the
    experiments' bursts then delay the baseline's threads whatever cores its sessions own
    (measured: baseline p99 x61 its alone figure with the cost model, x33 all-shared). A C or
    Go host has no such lock; this is the closest Python gets to it."""

    def __init__(self, ctx, mlp, cfg_shared, cfg_costed, cpus):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_model, daemon=True,
                                args=(child, str(mlp), cfg_shared, cfg_costed, sorted(cpus)))
        self.proc.start()

    def wait_ready(self):
        if self.conn.recv() != "ready":
            raise RuntimeError("model process failed to start")

    def start(self, which, arrivals, start, pin):
        self.conn.send((which, arrivals, start, pin))

    def result(self):
        lat, cpu_ms, last_done, errors = self.conn.recv()
        return types.SimpleNamespace(lat=lat, cpu_ms=cpu_ms, last_done=last_done, errors=errors)

    def close(self):
        self.conn.send(None)
        self.proc.join(60)


def _serve_model(conn, mlp, cfg_shared, cfg_costed, cpus):
    import recstrata

    models = {"shared": recstrata.Model(mlp, cfg_shared), "costmodel": recstrata.Model(mlp, cfg_costed)}
    feeds = {"x": np.random.default_rng(1).normal(size=(BATCH, WIDTH)).astype(np.float32)}
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        which, arrivals, start, pin = msg
        ld = Load(models[which], arrivals, 12, feeds, set(cpus) if pin else None)
        for t in ld.threads:
            t.start()
        ld.dispatch(start)
        for _ in ld.threads:
            ld.q.put(None)
        for t in ld.threads:
            t.join()
        conn.send((ld.lat, ld.cpu_ms, ld.last_done, ld.errors))
    for m in models.values():
        m.close()


def run_phase(procs, arrival_lists, which, pin):
    """Replays the arrivals against the model processes at once (perf_counter is the system's
    monotonic clock, shared by the processes); `pin`: request threads on the model's cpuset.
    Returns (loads, start time)."""
    start = time.perf_counter() + 0.3
    for p, a in zip(procs, arrival_lists):
        p.start(which, a, start, pin)
    return [p.result() for p in procs], start


def measure_service_ms(model, reps=200, batch=BATCH) -> float:
    feeds = {"x": np.random.default_rng(1).normal(size=(batch, WIDTH)).astype(np.float32)}
    for _ in range(20):
        model.run(feeds)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        model.run(feeds)
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def rss_of_open(path: Path, session_num: int) -> float:
    """Resident MiB of a fresh process after opening the model (its own process)."""
    code = (
        "import sys, recstrata\n"
        f"m = recstrata.Model({str(path)!r}, {{'session_num': {session_num}, 'warmup_runs': 1}})\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def throughput(model, callers: int, seconds: float) -> float:
    feeds = {"ids": np.arange(BATCH, dtype=np.int64)}
    for _ in range(10):
        model.run(feeds)
    stop = time.perf_counter() + seconds
    counts = [0] * callers

    def loop(i):
        while time.perf_counter() < stop:
            model.run(feeds)
            counts[i] += 1

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


# ---- main --------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "out" / "cost_model"))
    ap.add_argument("--skip-sessiongroup", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phase_s = 6.0 if args.quick else 20.0
    rounds = 2 if args.quick else 4

    import recstrata
    from recstrata.cost_model import cpu_list, plan_cores

    ncpu = len(os.sched_getaffinity(0))
    cpus = f"0-{ncpu - 1}" if ncpu > 1 else "0"
    mlp = build_mlp(out)
    probe = recstrata.Model(str(mlp))
    service = measure_service_ms(probe)
    # The service-time curve (batch -> one-core latency); the 128-core
    # simulation serves batch-512 requests so that it simulates fewer events.
    curve = {b: measure_service_ms(probe, 60, b) for b in (1, 32, 128, 512)}
    probe.close()
    print("service-time curve (batch: ms on one core):", {b: round(v, 3) for b, v in curve.items()}, flush=True)
    print(f"service time (batch {BATCH}, one core): {service:.3f} ms; {ncpu} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    # Traffic, in cores of work: the baseline keeps 0.45 core busy; each
    # experiment bursts to 1.1 cores for 0.6 s of every 2.4 s (0.275 on average).
    base_rps = 0.45 / (service / 1e3)
    burst_rps = 1.1 / (service / 1e3)
    period, on = 2.4, 0.6
    sim_models = [sim.SimModel("baseline", "baseline", service, lambda t: base_rps, base_rps, 8 * service)]
    for i in range(3):
        off = i * 0.55

        def rate(t, off=off):
            return burst_rps if ((t - off) % period) < on else 0.0

        sim_models.append(sim.SimModel(f"exp{i + 1}", "experiment", service, rate, burst_rps * on / period, 0))
    plan = plan_cores(sim.plan_request(sim_models, ncpu, "static"))
    print("cost-model plan:", plan["summary"], {m["name"]: m["cpus"] for m in plan["models"]}, flush=True)
    cfg = {"warmup_runs": 2}
    ctx = multiprocessing.get_context("spawn")
    procs = [ModelProcess(ctx, mlp, cfg, dict(cfg, cpusets=a["cpus"]), cpu_list(a["cpus"]))
             for a in plan["models"]]
    for p in procs:
        p.wait_ready()

    real = {"alone": [], "shared": [], "alone_costmodel": [], "costmodel": []}
    sim_vs_real = []
    for r in range(rounds):
        arr = sim.arrivals(sim_models, phase_s, seed=100 + r)
        lists = [[t for t, i in arr if i == k] for k in range(len(sim_models))]
        for phase in ("alone", "shared", "alone_costmodel", "costmodel"):
            which = "costmodel" if phase.endswith("costmodel") else "shared"
            n = 1 if phase.startswith("alone") else len(procs)
            loads, start = run_phase(procs[:n], lists[:n], which, pin=which == "costmodel")
            # Throughput: completions over the time until the last one (an
            # overloaded plan finishes its backlog late, and scores lower).
            done = sum(len(ld.lat) for ld in loads)
            span = max(phase_s, max(ld.last_done for ld in loads) - start)
            real[phase].append({"baseline_p99": p99(loads[0].lat), "baseline_p50": float(np.median(loads[0].lat)),
                                "exp_p99": p99(sum((ld.lat for ld in loads[1:]), [])) if len(loads) > 1 else None,
                                "throughput": done / span,
                                "cpu_ms": float(np.median(sum((ld.cpu_ms for ld in loads), []))), "errors": sum(ld.errors for ld in loads)})
            # The same trace on 2 simulated cores.
            policy = "static" if phase.endswith("costmodel") else "shared"
            models = sim_models[:1] if phase.startswith("alone") else sim_models
            arr_phase = [(t, i) for t, i in arr if i < len(models)]
            res = sim.simulate(models, ncpu, policy, phase_s, arrival_list=arr_phase,
                               plan=plan if policy == "static" else None)
            sim_vs_real.append((phase, res.p99("baseline"), real[phase][-1]["baseline_p99"]))
            print(f"round {r} {phase:9s} baseline p50 {real[phase][-1]['baseline_p50']:.2f} ms "
                  f"p99 {real[phase][-1]['baseline_p99']:.2f} ms (sim {res.p99('baseline'):.2f}), "
                  f"throughput {real[phase][-1]['throughput']:.0f}/s, errors {real[phase][-1]['errors']}", flush=True)
    for p in procs:
        p.close()

    med = lambda phase, key: float(np.median([x[key] for x in real[phase]]))  # noqa: E731
    # Each ratio is against the baseline alone on the same plan: how much the
    # experiments' bursts hurt it. The cost model's price, a baseline on fewer
    # cores than the machine has, is reported beside it.
    alone_p99 = med("alone", "baseline_p99")
    result = {
        "baseline_p99_ratio_shared": med("shared", "baseline_p99") / alone_p99,
        "baseline_p99_ratio_costmodel": med("costmodel", "baseline_p99") / med("alone_costmodel", "baseline_p99"),
        "baseline_p99_costmodel_over_alone_all_cores": med("costmodel", "baseline_p99") / alone_p99,
        "throughput_costmodel_over_shared": med("costmodel", "throughput") / med("shared", "throughput"),
        "sim_error_vs_real": float(np.median([abs(s - r) / r for _, s, r in sim_vs_real])),
    }
    # Interference: CPU time a request costs when its cores are shared with
    # other models over its cost on dedicated cores (cache and scheduler
    # effects processor sharing alone does not model); the 128-core runs use it.
    interference = max(1.0, med("shared", "cpu_ms") / med("costmodel", "cpu_ms"))
    result["interference_factor"] = interference
    print(f"interference factor (CPU ms per request, shared / cost model): {interference:.3f}", flush=True)
    print(f"real: baseline p99 alone {alone_p99:.2f} ms; shared x{result['baseline_p99_ratio_shared']:.2f}, "
          f"cost model x{result['baseline_p99_ratio_costmodel']:.2f}; throughput cost model / shared "
          f"{result['throughput_costmodel_over_shared']:.3f}; simulator median |error| of baseline p99 "
          f"{result['sim_error_vs_real'] * 100:.1f}%", flush=True)

    # ---- 128 simulated cores, 2 baselines + 20 experiments, shifting trace --
    big_cores, dur = 128, (20.0 if args.quick else 90.0)
    svc = curve[512]

    def big_models(scale: float) -> list[sim.SimModel]:
        # Two baselines of 30 cores of work each at scale 1, shifting +-30%
        # against each other over the trace, declared at their peak (what an
        # operator provisions); latency target 2x the service time. Twenty
        # experiments idle at 5% of a 16-core burst, bursting ~8% of the time.
        ms = []
        for b in range(2):
            mean = scale * 30.0 / (svc / 1e3)

            def rate(t, b=b, mean=mean):
                s = math.sin(2 * math.pi * t / dur)
                return mean * (1 + 0.3 * (s if b == 0 else -s))

            ms.append(sim.SimModel(f"base{b}", "baseline", svc, rate, mean * 1.3, 2 * svc, min_cores=2))
        rng = np.random.default_rng(7)
        for e in range(20):
            peak = scale * 16.0 / (svc / 1e3)
            per = rng.uniform(4, 8)
            on_s, off_s = per * 0.08 * rng.uniform(0.7, 1.3), rng.uniform(0, 8)

            def rate(t, peak=peak, per=per, on_s=on_s, off_s=off_s):
                return peak if ((t - off_s) % per) < on_s else 0.05 * peak

            mean = peak * (on_s / per + 0.05 * (1 - on_s / per))
            ms.append(sim.SimModel(f"exp{e}", "experiment", svc, rate, mean, 2 * svc))
        return ms

    scales = {}
    for policy in ("shared", "static", "dynamic"):
        def run(scale, policy=policy):
            ms = big_models(scale)
            return sim.simulate(ms, big_cores, policy, dur, seed=3, replan_s=dur / 24, warm_s=2.0,
                                interference=interference)

        s, res = sim.max_scale_at_target(run, big_models(1.0), lo=0.1, hi=3.0, iters=6 if args.quick else 9)
        scales[policy] = (s, res.throughput, res.replans)
        print(f"sim 128 cores {policy:8s}: max scale {s:.3f} at the p99 targets, throughput {res.throughput:.0f}/s, "
              f"re-plans {res.replans}", flush=True)
    result["sim_static_over_shared"] = scales["static"][1] / scales["shared"][1]
    result["sim_dynamic_over_static"] = scales["dynamic"][1] / scales["static"][1]

    # ---- SessionGroup: memory and speedup ------------------------------------
    if args.skip_sessiongroup:
        print("SessionGroup part SKIPPED (--skip-sessiongroup): its keys are null", flush=True)
        result["sessiongroup_rss_ratio"] = None
        result["sessiongroup_speedup"] = None
    else:
        big = build_big_table(out, 1_048_576)  # 512 MiB table
        r1, r4 = rss_of_open(big, 1), rss_of_open(big, 4)
        result["sessiongroup_rss_ratio"] = r4 / r1
        print(f"SessionGroup RSS: session_num=1 {r1:.0f} MiB, session_num=4 {r4:.0f} MiB", flush=True)
        tp = {}
        for rep in range(2 if args.quick else 3):  # interleaved
            for n in (1, 2):
                m = recstrata.Model(str(big), {"session_num": n, "select_session_policy": "RR", "warmup_runs": 1})
                tp.setdefault(n, []).append(throughput(m, 2, 3.0))
                m.close()
        result["sessiongroup_speedup"] = float(np.median(tp[2]) / np.median(tp[1]))
        print(f"SessionGroup 2 callers: session_num=1 {np.median(tp[1]):.0f}/s, session_num=2 "
              f"{np.median(tp[2]):.0f}/s", flush=True)

    # the documented figures come from --quick runs, so the plot goes to results/ either way
    dest = save_plot(plot_path("cost_model"), lambda fig: plot(fig, real, scales), figsize=(10, 4))
    if dest:
        print(f"plot: {dest}")
    print_result(result, compact=False)


def plot(fig, real, scales) -> None:
    """Main figure: baseline p99 per phase on this machine, and simulated 128-core throughput."""
    a, b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    phases = ["alone", "shared", "alone_costmodel", "costmodel"]
    a.bar(phases, [np.median([x["baseline_p99"] for x in real[p]]) for p in phases],
          color=["grey", "tab:red", "grey", "tab:green"])
    a.set_ylabel("baseline p99 (ms)")
    a.set_title("real, this machine: baseline p99")
    pol = list(scales)
    b.bar(pol, [scales[p][1] for p in pol], color=["tab:red", "tab:green", "tab:blue"])
    b.set_ylabel("throughput at the p99 targets (req/s)")
    b.set_title("simulated 128 cores")


if __name__ == "__main__":
    main()
