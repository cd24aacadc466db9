#!/usr/bin/env python
"""Serving latency/throughput: recstrata vs TensorFlow on a Criteo-shaped CTR model.

The model (generated under perf/out/, never committed): 13 dense float inputs
I1..I13 [B,1] and 26 categorical id inputs C1..C26 [B,1] int64, each looked up
in its own in-graph embedding table (10k-100k rows, dim 16), concatenated and
fed to an MLP 512-256-1 (ReLU, ReLU, sigmoid). Two exports of it (--model):
  module  a plain tf.Module with tf.Variables and a tf.function signature:
          one tf.gather per table, every variable stored once (a lean graph)
  keras   the same architecture as a Keras 3 functional model (Input,
          Embedding, Reshape, Concatenate, Dense) exported the way a Keras
          user does it, model.export(dir, format="tf_saved_model"): ~12
          graph nodes per embedding lookup, the shape of the model the
          issue's reference figures were measured on
Both have the same signature (inputs I1..I13, C1..C26; output "prob"); the
weights differ (each export initialises its own).

Systems, all on the same SavedModel in one run:
  rs_run        recstrata Model.run from Python (numpy in, numpy out)
  rs_wire       recstrata Model.predict_bytes from Python on a prebuilt
                PredictRequest (decode + run + encode inside the library)
  tf_python     TensorFlow's Python signature call (numpy -> tf.constant ->
                loaded.signatures["serving_default"] -> .numpy())
  c_tf          a bare TF C API loop (perf/serving_loop.c, compiled here):
                TF_SessionRun on prebuilt input tensors, native threads
  c_tf_fresh    the same loop building its 39 input TF_Tensors every call
                (TF_AllocateTensor + memcpy): the least any C host does for
                a new request
  c_rs_run      the same C loop through rs_model_run
  c_rs_predict  the same C loop through rs_model_predict (wire path)
The C loops and recstrata use the same session threading (recstrata's
default: intra_op_parallelism_threads=1, inter-op inline in the caller;
change both with --config '{"intra_op_parallelism_threads": 2}');
TF Python runs with TensorFlow's default thread pools, as users get it.

For batch sizes 1, 64, 512 and 1 and 2 concurrent callers (threads; native
threads for the C loops) it prints per-call medians, p99 and throughput, and
ratios: speedup of recstrata over the Python signature call (throughput) and
the overhead of the native recstrata loops over the bare C API loops (median
latency; this is our own cost: validation, request decoding, session
selection, output encoding). Every system runs in its own worker process
(loaded once, driven over stdin), and systems are measured in interleaved
rounds so that a busy shared machine penalises all of them alike; the
1-minute load average is recorded. The last line is `RESULT {json}`.

    python perf/bench_serving.py            # full run, both models (~8 minutes)
    python perf/bench_serving.py --quick    # reduced run (< 2 minutes): module at
                                            # batch 1/64/512, keras at batch 1/64
    python perf/bench_serving.py --model keras --batches 64
    python perf/bench_serving.py --model keras --fusion-only --quick
                                            # only the fusion section (below)
    python perf/bench_serving.py --systems c_tf,c_rs_run,tf_python \
        --configs '{"i1": {"intra_op_parallelism_threads": 1}, "i2": {"intra_op_parallelism_threads": 2}}'
                                            # interleaved A/B of model_configs

Fusion section (whenever the keras export is measured): recstrata's own graph
rewrite (model_config "graph_rewrite": "on", docs/processor.md "Graph
rewrite") against the graph as exported ("off"), both on the Keras export at
batch 64, 1 caller, interleaved rounds, through the native loop (c_rs_run) and
from Python (rs_run); outputs are checked bit-identical first. RESULT key
`fusion_gain_b64` = 1 - on/off median latency of the native loop
(`fusion_gain_b64_python`: the same from Python).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from c_loops import compile_c_loop, write_c_spec  # noqa: E402
from harness import (grouped_bars, plot_path, print_result, run_threads,  # noqa: E402
                     save_plot, summarize_rounds, write_latencies)
from serving_models import (EMB_DIM, MODEL_BUILDERS, N_DENSE, N_SPARSE,  # noqa: E402
                            make_feeds, table_rows)


class Worker:
    """One system, loaded once in its own process and driven over stdin.

    Every system (the C loops and the Python ones alike) runs in a separate
    process, so one system's idle thread pools never run during another's
    measurement, and the driver can interleave systems in rounds.
    Workers load once for all batch sizes. Protocol: the worker prints
    "ready"; "run CALLERS SECONDS LAT_FILE" runs and answers "done"; "spec
    PATH" (C loops) or "batch B" (Python) switches the inputs and answers
    "done"; "quit" ends it.
    """

    def __init__(self, name: str, cmd: list[str], out_dir: Path):
        self.name = name
        self.lat_file = out_dir / f"lat_{name}.bin"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self._expect("ready")

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"worker {self.name}: expected {word!r}, got {line!r} {err[-3000:]}")

    def run(self, callers: int, seconds: float) -> list[np.ndarray]:
        self.proc.stdin.write(f"run {callers} {seconds} {self.lat_file}\n")
        self.proc.stdin.flush()
        self._expect("done")
        raw = np.fromfile(self.lat_file, dtype=np.int64)
        n_threads = int(raw[0])
        counts = raw[1:1 + n_threads]
        lat = raw[1 + n_threads:] / 1e9
        return np.split(lat, np.cumsum(counts)[:-1])

    def command(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        self._expect("done")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def python_worker(system: str, batches: list[int], model_dir: Path, rs_config: dict) -> int:
    # model_dir: either export (--model-dir); both have the same signature.
    """`--worker SYSTEM`: serves "batch B" / "run ..." commands for one Python system."""
    rows = table_rows(False)
    all_feeds = {b: make_feeds(b, rows, seed=b) for b in batches}
    if system == "tf_python":
        import tensorflow as tf

        sig = tf.saved_model.load(str(model_dir)).signatures["serving_default"]

        def make_fn(feeds):
            return lambda: sig(**{k: tf.constant(v) for k, v in feeds.items()})["prob"].numpy()
    else:
        from recstrata.processor import Model
        from recstrata.wire import codec

        model = Model(model_dir, rs_config)

        def make_fn(feeds):
            if system == "rs_run":
                return lambda: model.run(feeds)
            request = codec.make_request(feeds)
            return lambda: model.predict_bytes(request)
    fns = {b: make_fn(f) for b, f in all_feeds.items()}
    fn = fns[batches[0]]
    fn()
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] == "batch":
            fn = fns[int(parts[1])]
        else:
            callers, seconds, path = int(parts[1]), float(parts[2]), Path(parts[3])
            write_latencies(path, run_threads(fn, callers, seconds))
        print("done", flush=True)
    return 0


C_MODES = {"c_tf": "tf", "c_tf_fresh": "tf_fresh", "c_rs_run": "rs_run", "c_rs_predict": "rs_predict"}


# ---- main ------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced run, under 2 minutes")
    ap.add_argument("--batches", default=None,
                    help="default 1,64,512 (--quick: 1,64,512 for module, 1,64 for keras)")
    ap.add_argument("--model", default="both", choices=["keras", "module", "both"],
                    help="which export of the model to serve (default both, module first)")
    ap.add_argument("--callers", default="1,2")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per cell and round")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--systems", default="rs_run,rs_wire,tf_python,c_tf,c_tf_fresh,c_rs_run,c_rs_predict")
    ap.add_argument("--config", default=None,
                    help="recstrata model_config JSON merged over the default "
                         '{"session_num": 2, "select_session_policy": "LEAST_LOADED"}; its thread '
                         "settings also apply to the bare C API loops")
    ap.add_argument("--configs", default=None,
                    help="A/B of configs: JSON object label -> model_config (each merged over the --config "
                         "result); every system except tf_python then runs once per config, as SYSTEM@LABEL, "
                         "all interleaved in the same rounds, e.g. "
                         '''{"i1": {"intra_op_parallelism_threads": 1}, "i2": {"intra_op_parallelism_threads": 2}}''')
    ap.add_argument("--fusion-only", action="store_true",
                    help="only the fusion section (graph_rewrite on vs off, keras export, batch 64)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rs-config", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return python_worker(args.worker, [int(b) for b in args.batches.split(",")], Path(args.model_dir),
                             json.loads(args.rs_config))
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    args.rounds = args.rounds or (2 if args.quick else 5)
    callers_list = [int(c) for c in args.callers.split(",")]
    systems = args.systems.split(",")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_names = ["module", "keras"] if args.model == "both" else [args.model]

    def batches_for(name: str) -> list[int]:
        if args.batches:
            return [int(b) for b in args.batches.split(",")]
        return [1, 64] if (args.quick and name == "keras") else [1, 64, 512]

    t_start = time.time()
    load_start = os.getloadavg()[0]
    rows = table_rows(args.quick)
    rs_config = {"session_num": 2, "select_session_policy": "LEAST_LOADED"}
    rs_config.update(json.loads(args.config) if args.config else {})
    configs = {"": rs_config}
    if args.configs:
        configs = {label: {**rs_config, **cfg} for label, cfg in json.loads(args.configs).items()}
        systems = [s if s == "tf_python" else f"{s}@{label}" for s in systems
                   for label in (configs if s != "tf_python" else [""])]
    exe = compile_c_loop(out_dir) if any(s.split("@")[0] in C_MODES for s in systems) else None
    print(f"Criteo-shaped CTR, {N_DENSE} dense + {N_SPARSE} tables ({min(rows)}-{max(rows)} rows x "
          f"{EMB_DIM}), MLP 512-256-1; {os.cpu_count()} CPUs; {args.rounds} interleaved rounds x "
          f"{seconds:.2f} s per cell; rs_config {json.dumps(rs_config)}; load {load_start:.2f}")
    cells, ratios, fusion = [], [], None
    if args.fusion_only:
        model_names = ["keras"]
        exe = exe or compile_c_loop(out_dir)
    for name in model_names:
        model_dir = MODEL_BUILDERS[name](out_dir, rows)
        if not args.fusion_only:
            m_cells = measure_model(name, model_dir, batches_for(name), callers_list, systems, configs, rows,
                                    out_dir, exe, args.rounds, seconds)
            cells += m_cells
            ratios += compute_ratios(name, m_cells, batches_for(name), callers_list)
        if name == "keras":
            fusion = measure_fusion(model_dir, rs_config, rows, out_dir, exe or compile_c_loop(out_dir),
                                    max(args.rounds, 6), seconds)
    elapsed = time.time() - t_start
    print(f"elapsed {elapsed:.1f} s; load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    summary = {"benchmark": "serving", "quick": args.quick, "seconds_per_round": seconds,
               "rounds": args.rounds, "load_avg_1m_start": load_start,
               "load_avg_1m": os.getloadavg()[0],
               "models": model_names,
               "model": {"dense": N_DENSE, "tables": len(rows), "rows_min": min(rows),
                         "rows_max": max(rows), "dim": EMB_DIM, "mlp": [512, 256, 1]},
               "rs_config": rs_config, "configs": configs if args.configs else None,
               "cells": cells, "ratios": ratios, "fusion": fusion,
               "elapsed_s": round(elapsed, 1)}
    if fusion:
        summary["fusion_gain_b64"] = fusion["gain_native"]
        summary["fusion_gain_b64_python"] = fusion["gain_python"]
    if not args.configs and not args.fusion_only:
        save_plot(plot_path("serving", args.quick), lambda fig: plot(fig, summary))
    if fusion:
        save_plot(plot_path("serving_fusion", args.quick), lambda fig: plot_fusion(fig, fusion))
    print_result(summary, compact=False)
    return 0


def plot(fig, summary: dict) -> None:
    """Main figure: median latency per call by batch size and system, 1 caller, per model."""
    models = summary["models"]
    for i, name in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        cells = [c for c in summary["cells"] if c["model"] == name and c["callers"] == 1]
        batches = sorted({c["batch"] for c in cells})
        systems = list(dict.fromkeys(c["system"] for c in cells))
        med = {(c["system"], c["batch"]): c["median_ms"] for c in cells}
        grouped_bars(ax, [f"batch {b}" for b in batches],
                     {s: [med.get((s, b), float("nan")) for b in batches] for s in systems},
                     "median ms per call (log)", log=True)
        ax.set_title(f"{name} model, 1 caller")


def plot_fusion(fig, fusion: dict) -> None:
    """The fusion figure: median and p99 per call, graph_rewrite off vs on, per calling path."""
    ax = fig.add_subplot(1, 1, 1)
    paths = {"c_rs_run": "native loop", "rs_run": "Python Model.run"}
    cells = fusion["cells"]
    grouped_bars(ax, list(paths.values()),
                 {f"{stat} {mode}": [cells[f"{p}@{mode}"][f"{stat}_ms"] for p in paths]
                  for stat in ("median", "p99") for mode in ("off", "on")},
                 "ms per call")
    ax.set_title(f"graph_rewrite off vs on, Keras export, batch {fusion['batch']}, 1 caller "
                 f"(median gain native {fusion['gain_native']:.1%}, Python {fusion['gain_python']:.1%})",
                 fontsize=9)


def measure_model(name: str, model_dir: Path, batches: list[int], callers_list: list[int], systems: list[str],
                  configs: dict, rows: list[int], out_dir: Path, exe, rounds: int, seconds: float) -> list[dict]:
    """Every system on one export of the model, interleaved in rounds; the cells (with "model": name).

    configs: label -> recstrata model_config; a system "SYSTEM@LABEL" uses configs[LABEL], a plain
    one configs[""] (or the only config).
    """
    def split(system):
        base, _, label = system.partition("@")
        return base, label if label in configs else next(iter(configs))

    import tensorflow as tf

    from recstrata.processor import Model
    from recstrata.wire import codec

    model = Model(model_dir, next(iter(configs.values())))
    loaded = tf.saved_model.load(str(model_dir))
    sig = loaded.signatures["serving_default"]
    print(f"\nmodel {name} ({model_dir.name})")
    print(f"{'batch':>5} {'callers':>7} {'system':<18} {'median ms':>10} {'p99 ms':>9} {'req/s':>9} {'items/s':>10} "
          f"{'best med':>10} {'best req/s':>9}")
    inputs = {}
    for batch in batches:
        feeds = make_feeds(batch, rows, seed=batch)
        request = codec.make_request(feeds)
        # Parity first: every system must compute the same thing.
        ref = sig(**{k: tf.constant(v) for k, v in feeds.items()})["prob"].numpy()
        got = model.run(feeds)["prob"]
        wire = codec.parse_response(model.predict_bytes(request))["prob"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(wire, ref, rtol=1e-4, atol=1e-6)
        for label, cfg in configs.items():
            inputs[(label, batch)] = (write_c_spec(out_dir, model_dir, feeds, cfg, request, tag=f"{name}_{label}_")
                                      if exe else None)
    model.close()
    del loaded, sig

    cells = []
    workers: dict[str, Worker] = {}
    batch_arg = ",".join(str(b) for b in batches)
    try:
        for system in systems:
            base, label = split(system)
            if base in C_MODES:
                cmd = [str(exe), C_MODES[base], str(inputs[(label, batches[0])])]
            else:
                cmd = [sys.executable, __file__, "--worker", base, "--batches", batch_arg, "--out", str(out_dir),
                       "--model-dir", str(model_dir), "--rs-config", json.dumps(configs[label])]
            workers[system] = Worker(system.replace("@", "_"), cmd, out_dir)
        for bi, batch in enumerate(batches):
            if bi:
                for system, w in workers.items():
                    base, label = split(system)
                    w.command(f"spec {inputs[(label, batch)]}" if base in C_MODES else f"batch {batch}")
            # Systems alternate in every round (rotated order), so the noise of
            # a shared machine spreads over all of them instead of one.
            lat: dict[tuple[str, int], list[list[np.ndarray]]] = {}
            for r in range(rounds):
                order = systems[r % len(systems):] + systems[:r % len(systems)]
                for callers in callers_list:
                    for system in order:
                        lat.setdefault((system, callers), []).append(workers[system].run(callers, seconds))
            for callers in callers_list:
                for system in systems:
                    s = summarize_rounds(lat[(system, callers)], batch)
                    s.update(model=name, batch=batch, callers=callers, system=system)
                    cells.append(s)
                    print(f"{batch:>5} {callers:>7} {system:<18} {s['median_ms']:>10.3f} {s['p99_ms']:>9.3f} "
                          f"{s['throughput_rps']:>9.1f} {s['throughput_items_s']:>10.0f} "
                          f"{s['best_round_median_ms']:>10.3f} {s['best_round_throughput_rps']:>9.1f}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    return cells


def measure_fusion(model_dir: Path, rs_config: dict, rows: list[int], out_dir: Path, exe, rounds: int,
                   seconds: float, batch: int = 64) -> dict:
    """graph_rewrite "on" vs "off" on one export, batch 64, 1 caller, interleaved rounds."""
    from recstrata.processor import Model
    from recstrata.wire import codec

    cfgs = {"off": {**rs_config, "graph_rewrite": "off"}, "on": {**rs_config, "graph_rewrite": "on"}}
    feeds = make_feeds(batch, rows, seed=batch)
    request = codec.make_request(feeds)
    with Model(model_dir, cfgs["off"]) as off, Model(model_dir, cfgs["on"]) as on:
        report = on.describe()["graph_rewrite"]
        if not report["applied"]:
            raise SystemExit(f"fusion: the pass did not apply to {model_dir}: {report}")
        a, b = off.run(feeds)["prob"], on.run(feeds)["prob"]
        # Output-identical, not merely close.
        np.testing.assert_array_equal(a, b)
        executed = {k: sum(m.trace()["executed"].values()) for k, m in (("off", off), ("on", on))}
    print(f"\nfusion: graph_rewrite on vs off, keras export, batch {batch}, 1 caller; rules {report['rules']}; "
          f"graph nodes {report['nodes_before']} -> {report['nodes_after']}; executed nodes per call "
          f"{executed['off']} -> {executed['on']}; outputs bit-identical")
    systems = [f"{s}@{mode}" for s in ("c_rs_run", "rs_run") for mode in ("off", "on")]
    workers: dict[str, Worker] = {}
    lat: dict[str, list[list[np.ndarray]]] = {}
    try:
        for system in systems:
            base, _, mode = system.partition("@")
            if base == "c_rs_run":
                spec = write_c_spec(out_dir, model_dir, feeds, cfgs[mode], request, tag=f"fusion_{mode}_")
                cmd = [str(exe), C_MODES[base], str(spec)]
            else:
                cmd = [sys.executable, __file__, "--worker", base, "--batches", str(batch), "--out", str(out_dir),
                       "--model-dir", str(model_dir), "--rs-config", json.dumps(cfgs[mode])]
            workers[system] = Worker(system.replace("@", "_"), cmd, out_dir)
        for r in range(rounds):
            # off/on alternate, the order flipping every round.
            for pair in (systems[:2], systems[2:]):
                for system in (pair if r % 2 == 0 else pair[::-1]):
                    lat.setdefault(system, []).append(workers[system].run(1, seconds))
    finally:
        for w in workers.values():
            w.close()
    cells = {}
    for system in systems:
        s = summarize_rounds(lat[system], batch)
        cells[system] = s
        print(f"  {system:<16} median {s['median_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
              f"best-round median {s['best_round_median_ms']:.3f} ms")
    gain = {base: 1 - cells[f"{base}@on"]["median_ms"] / cells[f"{base}@off"]["median_ms"]
            for base in ("c_rs_run", "rs_run")}
    p99_gain = {base: 1 - cells[f"{base}@on"]["p99_ms"] / cells[f"{base}@off"]["p99_ms"]
                for base in ("c_rs_run", "rs_run")}
    print(f"  fusion gain (1 - on/off median): native {gain['c_rs_run']:.1%}, python {gain['rs_run']:.1%}; "
          f"p99: native {p99_gain['c_rs_run']:.1%}, python {p99_gain['rs_run']:.1%}")
    return {"batch": batch, "callers": 1, "rounds": rounds, "report": report, "executed_nodes": executed,
            "cells": cells, "gain_native": gain["c_rs_run"], "gain_python": gain["rs_run"],
            "p99_gain_native": p99_gain["c_rs_run"], "p99_gain_python": p99_gain["rs_run"]}


def compute_ratios(name: str, cells: list[dict], batches: list[int], callers_list: list[int]) -> list[dict]:
    """Best-round speedups over tf_python and overheads over the bare C loops, per cell."""
    def cell(system, batch, callers):
        for c in cells:
            if (c["system"], c["batch"], c["callers"]) == (system, batch, callers):
                return c
        return None

    ratios = []
    print(f"ratios ({name}) from best-round figures: speedup = throughput / tf_python throughput; "
          "overhead = median / baseline median - 1 (baselines: c_tf, c_tf_fresh)")
    for batch in batches:
        for callers in callers_list:
            r = {"model": name, "batch": batch, "callers": callers}
            py = cell("tf_python", batch, callers)
            labels = sorted({c["system"] for c in cells}, key=[c["system"] for c in cells].index)
            for system in labels:
                kind, _, label = system.partition("@")
                if kind not in ("rs_run", "rs_wire", "c_tf", "c_rs_run", "c_rs_predict"):
                    continue
                c = cell(system, batch, callers)
                if c is None:
                    continue
                if py:
                    r[f"{system}_speedup_vs_tf_python"] = c["best_round_throughput_rps"] / py["best_round_throughput_rps"]
                    r[f"{system}_speedup_vs_tf_python_all_calls"] = c["throughput_rps"] / py["throughput_rps"]
                for base in ("c_tf", "c_tf_fresh"):
                    b = cell(base + (f"@{label}" if label else ""), batch, callers)
                    if b and kind.startswith("c_rs"):
                        r[f"{system}_overhead_vs_{base}"] = c["best_round_median_ms"] / b["best_round_median_ms"] - 1
            ratios.append(r)
            print(f"  batch {batch:>3}, {callers} caller(s): " + ", ".join(
                f"{k.replace('_speedup_vs_tf_python', ' x').replace('_overhead_vs_', ' +')}={v:.2f}"
                for k, v in r.items() if isinstance(v, float) and not k.endswith("_all_calls")))
    return ratios

if __name__ == "__main__":
    sys.exit(main())
