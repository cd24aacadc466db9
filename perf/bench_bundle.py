#!/usr/bin/env python
"""Bundle serving benchmark: one Criteo-shaped model, four ways to serve it.

The model: 26 sparse features C1..C26 (int64 ids, one plain table each, dim 16 (+1 first-order
column: WDL), 10k-40k rows with --quick, 10k-300k rows in the full run), 13 dense features
(log1p-normalised inside the model), MLP 512-256-1 (recstrata.training WDL). Weights are the
model's initial values (latency does not depend on training; parity is checked below).
Ids are row indices (Criteo-style pre-hashed ids) drawn from a Zipf(1.05) distribution per
table, so that a DRAM cache sees a realistic skew; each system cycles through the same R
different requests per batch size.

Systems (same run, same requests):
  rs_bundle_ssd10   recstrata serving the bundle, store "dram+ssd" with each table's DRAM cache
                    at 10% of its bytes; native caller threads (perf/bundle_loop.c, rs_model_run);
                    default config: inline TF threading, and batch splitting (a call of >= 64
                    rows that has the model to itself runs its row ranges on both cores)
  rs_bundle_ssd10_mmap  rs_bundle_ssd10 with the store's mmap read path (model config
                    bundle_read_path="mmap"; the default for "dram+ssd" bundles is "pread",
                    which maps no data file into the process)
  rs_bundle_ssd10_nosplit  rs_bundle_ssd10 with batch splitting off (split_min_batch 0): one
                    thread per call, as the TF C API peer; shows what splitting adds
  rs_bundle_ssd10_bf16  rs_bundle_ssd10 with precision "bf16" (the dense stage's matmuls in
                    bfloat16 with fp32 accumulation; left out, and said so, on a CPU
                    without AVX512-BF16 / AMX-BF16)
  rs_bundle_mem     the same bundle layout with the memory-only store; native callers
  rs_bundle_py      rs_bundle_ssd10 called from Python threads (recstrata.processor.Model.run)
  tf_python         (b) TF Python: the in-graph SavedModel (tables inside), signature call
                    from Python threads on numpy inputs, TF's default thread pools
  tf_c_api          (c) a bare TF C API loop on the in-graph SavedModel (perf/serving_loop.c
                    "tf_fresh": input tensors built per call; native threads, intra_op=1 /
                    inter_op inline (TF's oneDNN matmuls stay on one thread at these sizes
                    whatever intra_op says: docs/processor.md); the same request values repeated: in-graph gathers do
                    not care which ids they get)
  onnxruntime       (d) ONNX Runtime (default CPU session options: an intra-op pool of one
                    thread per core) on the in-graph model converted with tf2onnx, called from
                    Python threads
  *_keras           (b)-(d) on the same model exported the way a Keras user does it: a Keras 3
                    functional model (Input [B, 1] -> Embedding -> Reshape per feature, the same
                    dense stage, the same weights) saved with model.export(format=
                    "tf_saved_model"): ~12 graph nodes per lookup instead of the lean model's 2
                    (hand-written tf.gather; the lean peers are the stronger ones)
Every system runs in its own process, so resident memory (VmRSS after the runs, and the peak
VmHWM) is per system. All systems are loaded first and then measured in interleaved rounds
(every cell of every system in turn, rotating the order), so that load from other processes on
a shared machine falls on all of them alike. For batch 1, 64, 512 and 1 and 2 concurrent callers it reports per-call
median and p99 latency and throughput; ratios are peer median / rs_bundle_ssd10 median
(> 1: recstrata is faster). The last line is `RESULT {json}`.

    python perf/bench_bundle.py            # full run (~10 minutes, ~0.25 GB of tables)
    python perf/bench_bundle.py --quick    # reduced run (< 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bundle_models import (DIM, N_SPARSE, RS_CONFIG, build_ingraph,  # noqa: E402
                           build_keras_ingraph, config, convert_onnx, keras_feeds, load_requests,
                           make_call, make_requests, save_requests)
from c_loops import (NativeLoop, bundle_spec, compile_bundle_loop,  # noqa: E402
                     compile_c_loop, write_c_spec)
from harness import (StdinLoop, grouped_bars, plot_path, print_result, rss_mib,  # noqa: E402
                     run_threads_over, save_plot, summarize_calls)

BATCHES = (1, 64, 512)
CALLERS = (1, 2)
SYSTEMS = ("rs_bundle_ssd10", "rs_bundle_ssd10_mmap", "rs_bundle_ssd10_nosplit", "rs_bundle_ssd10_bf16",
           "rs_bundle_mem",
           "rs_bundle_py",
           "tf_python", "tf_c_api", "onnxruntime",
           "tf_python_keras", "tf_c_api_keras", "onnxruntime_keras")
# peers on the lean hand-written tf.gather SavedModel, and on the Keras model.export one
LEAN_PEERS = ("tf_python", "tf_c_api", "onnxruntime")
KERAS_PEERS = ("tf_python_keras", "tf_c_api_keras", "onnxruntime_keras")


def table_rows(quick: bool) -> list[int]:
    if quick:
        return [10_000 + (i * 7_001) % 30_001 for i in range(N_SPARSE)]
    return [10_000 + (i * 113_017) % 290_001 for i in range(N_SPARSE)]


# ----------------------------------------------------------------------------- workers

def worker_main(args) -> int:
    """One Python-driven system in its own process: loads, prints "ready", then serves
    `run BATCH CALLERS SECONDS LAT_FILE` commands (latencies to LAT_FILE as .npz, one JSON
    memory line back) until `quit`."""
    system, model, req_root = args.worker, args.model, Path(args.reqs)
    reqs = {b: load_requests(req_root / f"b{b}") for b in BATCHES}
    if system.endswith("_keras"):
        reqs = {b: [keras_feeds(r) for r in rs] for b, rs in reqs.items()}
    call, _ = make_call(system, model)
    outputs = {b: np.concatenate([np.asarray(call(r)).reshape(-1) for r in reqs[b]])
               for b in BATCHES}
    np.save(req_root / f"out_{system}.npy", outputs[64])
    print("ready", flush=True)
    for line in sys.stdin:           # run BATCH CALLERS SECONDS LAT_FILE | quit
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        b, c, sec, lat_file = int(parts[1]), int(parts[2]), float(parts[3]), parts[4]
        lat = run_threads_over(call, reqs[b], c, sec)
        np.savez(lat_file, *lat)
        print(json.dumps(rss_mib()), flush=True)
    return 0


class PyWorker:
    """A Python-driven system in its own process, driven over stdin (see worker_main)."""

    def __init__(self, system: str, model: str, req_root: Path, lat_file: Path):
        self.lat_file = lat_file
        self.mem = {"rss_mib": 0.0, "peak_mib": 0.0, "anon_mib": 0.0, "file_mib": 0.0}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--model", model,
               "--reqs", str(req_root)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{system} worker failed: {line} {self.proc.stderr.read()[-3000:]}")

    def run(self, batch: int, callers: int, seconds: float) -> list[np.ndarray]:
        self.proc.stdin.write(f"run {batch} {callers} {seconds} {self.lat_file}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died: {self.proc.stderr.read()[-3000:]}")
        m = json.loads(line)
        self.mem = {k: max(self.mem[k], m[k]) for k in self.mem}
        z = np.load(self.lat_file)
        return [z[k] for k in z.files]

    def memory(self) -> dict:
        return self.mem

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class BundleSystem:
    """rs_bundle_*: one bundle_loop process holding every batch size's request set."""

    def __init__(self, exe: Path, bundle: Path, req_root: Path, all_reqs: dict, out: Path,
                 name: str, rs_config: dict = RS_CONFIG):
        spec = bundle_spec(bundle, [(req_root / f"b{b}", all_reqs[b]) for b in BATCHES],
                           out / f"spec_{name}.txt", rs_config)
        self.loop = NativeLoop(exe, spec, out / f"lat_{name}.bin")
        self.mem = {"rss_mib": 0.0, "peak_mib": 0.0, "anon_mib": 0.0, "file_mib": 0.0}

    def run(self, batch: int, callers: int, seconds: float) -> list[np.ndarray]:
        lat = self.loop.run(BATCHES.index(batch), callers, seconds)
        m = rss_mib(self.loop.proc.pid)
        self.mem = {k: max(self.mem[k], m[k]) for k in self.mem}
        return lat

    def memory(self) -> dict:
        return self.mem

    def close(self) -> None:
        self.loop.close()


class _ServingLoop(StdinLoop):
    """One perf/serving_loop.c process (stdin protocol: run CALLERS SECONDS LAT_FILE)."""

    def __init__(self, exe: Path, mode: str, spec: Path, lat_file: Path):
        super().__init__(exe, [mode, str(spec)], lat_file)

    def run(self, callers: int, seconds: float) -> list[np.ndarray]:
        return self.request(callers, seconds)


class ServingLoopSystem:
    """(c) tf_c_api: perf/serving_loop.c (the core's bare TF C API loop) in "tf_fresh" mode
    (TF_SessionRun on input tensors built anew per call, as a host must for new data), one
    process per batch size (its input values are fixed per process)."""

    def __init__(self, exe: Path, ingraph: Path, all_reqs: dict, out: Path, keras: bool = False):
        self.loops = {}
        tag = "keras_" if keras else ""
        for b in BATCHES:
            feeds = keras_feeds(all_reqs[b][0]) if keras else all_reqs[b][0]
            spec = write_c_spec(out, ingraph, feeds, RS_CONFIG, b"", tag=tag)
            self.loops[b] = _ServingLoop(exe, "tf_fresh", spec, out / f"lat_tf_{tag}b{b}.bin")
        self.mem = {"rss_mib": 0.0, "peak_mib": 0.0, "anon_mib": 0.0, "file_mib": 0.0}

    def run(self, batch: int, callers: int, seconds: float) -> list[np.ndarray]:
        loop = self.loops[batch]
        lat = loop.run(callers, seconds)
        m = rss_mib(loop.proc.pid)
        self.mem = {k: max(self.mem[k], m[k]) for k in self.mem}
        return lat

    def memory(self) -> dict:
        return self.mem

    def close(self) -> None:
        for loop in self.loops.values():
            loop.close()


# ----------------------------------------------------------------------------- main

def cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return " avx512_bf16" in flags or " amx_bf16" in flags


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced run (< 2 minutes)")
    ap.add_argument("--seconds", type=float, help="measuring time per cell")
    ap.add_argument("--out", default=str(HERE / "out" / "bundle"))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--rebuild", action="store_true", help="rebuild the model artifacts")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--reqs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "convert_onnx":
        convert_onnx(args.model, args.reqs)
        return 0
    if args.worker:
        return worker_main(args)

    t_start = time.perf_counter()
    quick = args.quick
    seconds = args.seconds or (0.4 if quick else 1.5)
    rounds = 2 if quick else 3
    nreq = 16 if quick else 64
    systems = [s for s in args.systems.split(",") if s]
    out = Path(args.out) / ("quick" if quick else "full")
    rows = table_rows(quick)

    def say(msg):
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    # --- model, bundles, in-graph SavedModel, ONNX (reused from an earlier run of the same
    # configuration and code unless --rebuild: building is not what is measured)
    import hashlib
    import inspect

    import recstrata.training.export as export_mod

    # the artifacts depend on the model config, the exporter and the builders below only
    stamp = hashlib.sha256(json.dumps(config(rows), sort_keys=True).encode()
                           + Path(export_mod.__file__).read_bytes()
                           + "".join(inspect.getsource(f) for f in (
                               config, build_ingraph, build_keras_ingraph, convert_onnx)).encode()
                           ).hexdigest()
    ssd_dir, mem_dir, ingraph, onnx_path = (out / "bundle_ssd10", out / "bundle_mem",
                                            out / "ingraph", out / "ingraph.onnx")
    keras_dir, keras_onnx = out / "ingraph_keras", out / "ingraph_keras.onnx"
    table_bytes = sum(r * (DIM + 1) * 4 for r in rows)
    cached = (not args.rebuild and (out / "stamp").exists()
              and (out / "stamp").read_text() == stamp)
    if cached:
        say(f"reusing the model artifacts in {out} (--rebuild to rebuild them)")
    else:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        from recstrata.training.export import export_bundle
        from recstrata.training.models import RecModel
        from recstrata.training.spec import parse_config

        cfg = parse_config(config(rows))
        model = RecModel(cfg, name="rec_model")
        model.build_with_dummy()
        say(f"model: {N_SPARSE} tables, {sum(rows):,} rows, {table_bytes / 2**20:.0f} MiB of "
            f"embeddings, MLP 512-256-1")
        info = export_bundle(model, ssd_dir, tiers="dram+ssd", dram_fraction=0.10)
        export_bundle(model, mem_dir, tiers="dram")
        say(f"bundles exported ({info['seconds']['total']:.1f} s for one)")
        build_ingraph(model, cfg, ingraph)
        build_keras_ingraph(model, cfg, keras_dir)
        say("in-graph SavedModels written (lean tf.gather, Keras model.export)")
        del model
        for src, dst in ((ingraph, onnx_path), (keras_dir, keras_onnx)):
            p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                                "convert_onnx", "--model", str(src), "--reqs", str(dst)],
                               capture_output=True, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            if p.returncode != 0:
                # reported, not fatal: the ONNX peer of that model is then left out (exit -9:
                # the kernel's OOM killer; tf2onnx's constant folding of the embedding tables
                # peaked near 20 GB for the full-size lean model in one run)
                dst.unlink(missing_ok=True)
                say(f"tf2onnx FAILED on {src.name} (exit {p.returncode}): {p.stderr[-1500:]}")
            else:
                say(f"ONNX model {dst.name} written ({dst.stat().st_size / 2**20:.0f} MiB)")
        (out / "stamp").write_text(stamp)
    # a store directory is open in one process at a time: the other rs systems get copies
    for copy in ("bundle_ssd10_py", "bundle_ssd10_mmap", "bundle_ssd10_nosplit", "bundle_ssd10_bf16"):
        if not (out / copy).exists():
            shutil.copytree(ssd_dir, out / copy)
    ssd = {"path": str(ssd_dir)}
    mem = {"path": str(mem_dir)}
    for d in (out / "requests",):
        shutil.rmtree(d, ignore_errors=True)

    req_root = out / "requests"
    all_reqs = {}
    for b in BATCHES:
        all_reqs[b] = make_requests(rows, b, nreq, seed=b)
        save_requests(all_reqs[b], req_root / f"b{b}")

    # --- load every system (each in its own process), then measure in interleaved rounds:
    # round r runs every (batch, callers) cell of every system in turn, in a rotated system
    # order, so that load from other processes on this shared machine hits all systems alike.
    live: dict = {}
    try:
        if any(s in systems for s in ("rs_bundle_ssd10", "rs_bundle_mem")):
            exe = compile_bundle_loop(out)
            mmap_cfg = dict(RS_CONFIG, bundle_read_path="mmap")
            nosplit_cfg = dict(RS_CONFIG, split_min_batch=0)
            bf16_cfg = dict(RS_CONFIG, precision="bf16")
            if "rs_bundle_ssd10_bf16" in systems and not cpu_has_bf16():
                say("SKIPPED rs_bundle_ssd10_bf16: this CPU has neither AVX512-BF16 nor AMX-BF16")
                systems = [x for x in systems if x != "rs_bundle_ssd10_bf16"]
            for name, bundle, rcfg in (("rs_bundle_ssd10", ssd["path"], RS_CONFIG),
                                       ("rs_bundle_ssd10_mmap", out / "bundle_ssd10_mmap",
                                        mmap_cfg),
                                       ("rs_bundle_ssd10_nosplit", out / "bundle_ssd10_nosplit",
                                        nosplit_cfg),
                                       ("rs_bundle_ssd10_bf16", out / "bundle_ssd10_bf16",
                                        bf16_cfg),
                                       ("rs_bundle_mem", mem["path"], RS_CONFIG)):
                if name in systems:
                    live[name] = BundleSystem(exe, Path(bundle), req_root, all_reqs, out, name,
                                              rcfg)
        if "tf_c_api" in systems or "tf_c_api_keras" in systems:
            c_exe = compile_c_loop(out)
            if "tf_c_api" in systems:
                live["tf_c_api"] = ServingLoopSystem(c_exe, ingraph, all_reqs, out)
            if "tf_c_api_keras" in systems:
                live["tf_c_api_keras"] = ServingLoopSystem(c_exe, keras_dir, all_reqs, out,
                                                           keras=True)
        for name, model_path in (("rs_bundle_py", str(out / "bundle_ssd10_py")),
                                 ("tf_python", str(ingraph)),
                                 ("onnxruntime", str(onnx_path)),
                                 ("tf_python_keras", str(keras_dir)),
                                 ("onnxruntime_keras", str(keras_onnx))):
            if name.startswith("onnxruntime") and not (Path(model_path).exists()
                                                       and Path(model_path).stat().st_size):
                say(f"{name}: no ONNX model (tf2onnx failed), left out")
                continue
            if name in systems:
                live[name] = PyWorker(name, str(model_path), req_root, out / f"lat_{name}.npz")
        say(f"loaded {', '.join(live)}; measuring {rounds} interleaved rounds of "
            f"{seconds:g} s per cell")
        lat: dict = {s: {} for s in live}
        names = list(live)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for b in BATCHES:
                for c in CALLERS:
                    for name in order:
                        got = live[name].run(b, c, seconds)
                        acc = lat[name].setdefault((b, c), [np.empty(0)] * c)
                        lat[name][(b, c)] = [np.concatenate([a, g]) for a, g in zip(acc, got)]
            say(f"round {r + 1}/{rounds} done")
        results = {s: {f"b{b}_c{c}": summarize_calls(v, b) for (b, c), v in cells.items()}
                   for s, cells in lat.items()}
        memory = {s: live[s].memory() for s in live}
    finally:
        for sysobj in live.values():
            sysobj.close()

    # --- parity of the served outputs (batch 64 requests) between systems
    parity = {}
    outs = {s: np.load(req_root / f"out_{s}.npy") for s in ("rs_bundle_py",) + LEAN_PEERS + KERAS_PEERS
            if (req_root / f"out_{s}.npy").exists()}
    if "rs_bundle_py" in outs:
        for s, o in outs.items():
            if s != "rs_bundle_py":
                parity[f"rs_bundle_vs_{s}_max_abs_diff"] = float(np.abs(o - outs["rs_bundle_py"]).max())

    # --- report
    base = "rs_bundle_ssd10" if "rs_bundle_ssd10" in results else next(iter(results))
    peers = [s for s in LEAN_PEERS + KERAS_PEERS if s in results]
    ratios = {}
    print()
    hdr = f"{'system':<16}" + "".join(f"{f'b{b} c{c}':>22}" for b in BATCHES for c in CALLERS)
    print("median ms / p99 ms per call")
    print(hdr)
    for s, cells in results.items():
        row = f"{s:<16}"
        for b in BATCHES:
            for c in CALLERS:
                v = cells[f"b{b}_c{c}"]
                row += f"{v['median_ms']:>12.3f} /{v['p99_ms']:>8.3f}"
        print(row)
    print("\nthroughput (requests/s)")
    print(hdr)
    for s, cells in results.items():
        print(f"{s:<16}" + "".join(f"{cells[f'b{b}_c{c}']['throughput_rps']:>22.0f}"
                                   for b in BATCHES for c in CALLERS))
    print(f"\nratios: peer median latency / {base} median latency (1 caller), and peer "
          f"throughput ratio {base}/peer (2 callers)")
    for p in peers:
        for b in BATCHES:
            lat = results[p][f"b{b}_c1"]["median_ms"] / results[base][f"b{b}_c1"]["median_ms"]
            thr = (results[base][f"b{b}_c2"]["throughput_rps"]
                   / results[p][f"b{b}_c2"]["throughput_rps"])
            ratios[f"{p}_b{b}_latency"] = lat
            ratios[f"{p}_b{b}_throughput_c2"] = thr
            print(f"  vs {p:<12} batch {b:<4} latency x{lat:5.2f}   2-caller throughput x{thr:5.2f}")
    print("\nresident memory (MiB, per process, largest seen after a cell; peak VmHWM; "
          "anonymous / file-backed)")
    for s, m in memory.items():
        print(f"  {s:<16} {m['rss_mib']:>8.0f}  (peak {m['peak_mib']:.0f}; anon "
              f"{m['anon_mib']:.0f} / file {m['file_mib']:.0f})")
    for k, v in parity.items():
        print(f"parity {k}: {v:.2e}")
    # the targets, against the lean peers (keys as before) and the Keras-export peers
    targets = {}
    for suffix, group, cd_names in (("", LEAN_PEERS, ("tf_c_api", "onnxruntime")),
                                    ("_keras", KERAS_PEERS, ("tf_c_api_keras",
                                                             "onnxruntime_keras"))):
        ps = [p for p in group if p in results]
        if not ps:
            continue
        targets["ahead_of_every_peer_b1_b64_b512" + suffix] = all(
            results[base][f"b{b}_c1"]["median_ms"] < min(results[p][f"b{b}_c1"]["median_ms"]
                                                         for p in ps) for b in BATCHES)
        cd = [p for p in cd_names if p in results]
        if cd:
            best = min(results[p]["b64_c1"]["median_ms"] for p in cd)
            targets["b64_speedup_vs_best_c_d" + suffix] = best / results[base]["b64_c1"]["median_ms"]
        targets["lower_rss_than_every_peer" + suffix] = all(
            memory[base]["rss_mib"] < memory[p]["rss_mib"] for p in ps)
        if "rs_bundle_ssd10_mmap" in memory:
            targets["lower_rss_than_every_peer_mmap" + suffix] = all(
                memory["rs_bundle_ssd10_mmap"]["rss_mib"] < memory[p]["rss_mib"] for p in ps)
    # issue 15's keys: batch 512 against ONNX Runtime (1 caller, latency) and the TF C API
    # (2 callers, throughput), for the default fp32 bundle and the bf16 one; > 1: recstrata wins
    speed = {}
    for tag, sysname in (("", base), ("_bf16", "rs_bundle_ssd10_bf16")):
        if sysname not in results:
            continue
        if "onnxruntime" in results:
            speed["vs_onnxruntime_b512_latency" + tag] = (results["onnxruntime"]["b512_c1"]["median_ms"]
                                                         / results[sysname]["b512_c1"]["median_ms"])
            speed["vs_onnxruntime_b512_2caller_throughput" + tag] = (
                results[sysname]["b512_c2"]["throughput_rps"] / results["onnxruntime"]["b512_c2"]["throughput_rps"])
        if "tf_c_api" in results:
            speed["vs_tf_c_api_b512_2caller_throughput" + tag] = (
                results[sysname]["b512_c2"]["throughput_rps"] / results["tf_c_api"]["b512_c2"]["throughput_rps"])
    if "rs_bundle_ssd10_bf16" in results and base in results:
        speed["bf16_over_fp32_b512"] = (results[base]["b512_c1"]["median_ms"]
                                        / results["rs_bundle_ssd10_bf16"]["b512_c1"]["median_ms"])
    for k, v in speed.items():
        print(f"{k}: {v:.2f}")
    print("fusion_gain_b64: not measured here (the graph rewrite is measured on the Keras export by "
          "perf/bench_serving.py --model keras --fusion-only)")
    summary = {"bench": "bundle", "quick": quick, **speed, "seconds_per_cell": seconds,
               "tables": N_SPARSE, "rows": int(sum(rows)), "table_mib": table_bytes / 2**20,
               "dram_fraction": 0.10, "requests_per_batch": nreq, "results": results,
               "memory_mib": memory, "ratios": ratios, "parity": parity, "targets": targets,
               "wall_s": time.perf_counter() - t_start}
    print(f"\ntotal {summary['wall_s']:.0f} s")
    save_plot(plot_path("bundle", quick), lambda fig: plot(fig, summary))
    print_result(summary)
    return 0


def plot(fig, summary: dict) -> None:
    """Main figure: median latency per call by batch size and system (1 caller), and RSS."""
    results, memory = summary["results"], summary["memory_mib"]
    ax = fig.add_subplot(1, 2, 1)
    grouped_bars(ax, [f"batch {b}" for b in BATCHES],
                 {s: [cells[f"b{b}_c1"]["median_ms"] for b in BATCHES] for s, cells in results.items()},
                 "median ms per call, 1 caller (log)", log=True)
    ax.set_title("bundle serving latency")
    ax = fig.add_subplot(1, 2, 2)
    names = list(memory)
    ax.barh(names, [memory[s]["rss_mib"] for s in names])
    ax.set_xlabel("resident memory, MiB (VmRSS after the runs)")
    ax.tick_params(axis="y", labelsize=7)


if __name__ == "__main__":
    sys.exit(main())
