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
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
N_DENSE, N_SPARSE, DIM = 13, 26, 16
BATCHES = (1, 64, 512)
CALLERS = (1, 2)
RS_CONFIG = {"session_num": 1, "intra_op_parallelism_threads": 1,
             "inter_op_parallelism_threads": -1}
SYSTEMS = ("rs_bundle_ssd10", "rs_bundle_ssd10_mmap", "rs_bundle_ssd10_nosplit", "rs_bundle_mem",
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


# ----------------------------------------------------------------------------- model

def config(rows: list[int]) -> dict:
    return {
        "name": "criteo_bundle_bench", "label": "label",
        "sparse": [{"name": f"C{i + 1}", "dim": DIM,
                    "embedding": {"kind": "plain", "rows": r, "hashed": False}}
                   for i, r in enumerate(rows)],
        "dense": [{"name": f"I{i + 1}", "transform": "log1p"} for i in range(N_DENSE)],
        "model": {"type": "wdl", "hidden": [512, 256]},
        "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
    }


def build_ingraph(model, cfg, path: Path) -> None:
    """(b)-(d)'s model: one SavedModel with the tables inside, each variable stored once."""
    import tensorflow as tf

    tables = model.embedding_tables()
    names = [f.name for f in cfg.sparse]
    rows = [int(tables[f.table]["subtables"][0].shape[0]) for f in cfg.sparse]
    stage = model.dense_stage
    mod = tf.Module()
    mod.tables = [tf.Variable(tables[f.table]["subtables"][0], name=f"emb_{f.name}")
                  for f in cfg.sparse]
    mod.dense_vars = [w.value if hasattr(w, "value") else w for w in stage.weights]
    specs = [tf.TensorSpec([None], tf.int64, name=n) for n in names]
    specs.append(tf.TensorSpec([None, N_DENSE], tf.float32, name="dense"))

    def serve(*args):
        pooled = {n: tf.gather(mod.tables[i], tf.math.floormod(args[i], rows[i]))
                  for i, n in enumerate(names)}
        pooled["dense"] = args[-1]
        logit = tf.reshape(stage(pooled, training=False), [-1])
        return {"prob": tf.sigmoid(logit)}

    mod.serve = tf.function(serve, input_signature=specs)
    tf.saved_model.save(mod, str(path),
                        signatures={"serving_default": mod.serve.get_concrete_function()})


def build_keras_ingraph(model, cfg, path: Path) -> None:
    """The same model the way a Keras user exports it: a Keras 3 functional model with one
    Embedding layer per feature (ids [B, 1] -> Embedding -> Reshape), the same dense stage and
    the same weights, saved with ``model.export(path, format="tf_saved_model")``. Keras' TF
    backend lowers each Embedding to a cast / negative-index fix-up / gather chain (about a
    dozen graph nodes per lookup instead of the lean model's two)."""
    import keras

    tables = model.embedding_tables()
    inputs, pooled = {}, {}
    for f in cfg.sparse:
        t = tables[f.table]["subtables"][0]
        x = keras.Input(shape=(1,), dtype="int64", name=f.name)
        emb = keras.layers.Embedding(t.shape[0], t.shape[1], name=f"emb_{f.name}")
        pooled[f.name] = keras.layers.Reshape((t.shape[1],), name=f"flat_{f.name}")(emb(x))
        emb.set_weights([t])
        inputs[f.name] = x
    inputs["dense"] = keras.Input(shape=(N_DENSE,), dtype="float32", name="dense")
    logit = model.dense_stage({**pooled, "dense": inputs["dense"]})
    prob = keras.layers.Activation("sigmoid", name="prob")(logit)
    km = keras.Model(inputs=inputs, outputs={"prob": prob})
    km.export(str(path), format="tf_saved_model", verbose=False)


def keras_feeds(feeds: dict) -> dict:
    """Requests for the Keras-exported peers: the same values, ids shaped [B, 1]."""
    return {k: (v.reshape(-1, 1) if k != "dense" else v) for k, v in feeds.items()}


def make_requests(rows: list[int], batch: int, count: int, seed: int) -> list[dict]:
    """`count` requests of `batch` rows: Zipf(1.05) ids per table, lognormal dense values."""
    rng = np.random.default_rng(seed)
    reqs = []
    for _ in range(count):
        feeds = {}
        for i, r in enumerate(rows):
            rank = np.minimum(rng.zipf(1.05, batch), r) - 1          # heavy head, long tail
            feeds[f"C{i + 1}"] = ((rank * 2_654_435_761 + i * 97) % r).astype(np.int64)
        feeds["dense"] = rng.lognormal(0, 1, (batch, N_DENSE)).astype(np.float32)
        reqs.append(feeds)
    return reqs


def save_requests(reqs: list[dict], d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for r, feeds in enumerate(reqs):
        for name, arr in feeds.items():
            (d / f"{name}.{r}.bin").write_bytes(np.ascontiguousarray(arr).tobytes())
    np.savez(d / "requests.npz", **{f"{n}__{r}": a for r, f in enumerate(reqs) for n, a in f.items()})


def load_requests(d: Path) -> list[dict]:
    z = np.load(d / "requests.npz")
    out: dict[int, dict] = {}
    for key in z.files:
        name, r = key.rsplit("__", 1)
        out.setdefault(int(r), {})[name] = z[key]
    return [out[r] for r in sorted(out)]


# ----------------------------------------------------------------------------- measurement

def summarize(lat: list[np.ndarray], batch: int) -> dict:
    allv = np.concatenate(lat)
    wall = max(float(x.sum()) for x in lat)
    return {"calls": int(allv.size), "median_ms": float(np.median(allv)) * 1e3,
            "p99_ms": float(np.percentile(allv, 99)) * 1e3,
            "throughput_rps": allv.size / wall, "items_per_s": allv.size * batch / wall}


def run_threads(fn, reqs: list, callers: int, seconds: float) -> list[np.ndarray]:
    barrier = threading.Barrier(callers)
    out: list = [None] * callers

    def worker(k):
        for r in reqs:
            fn(r)
        barrier.wait()
        lat, i = [], k * 7
        end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            fn(reqs[i % len(reqs)])
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            i += 1
            if t1 >= end:
                break
        out[k] = np.array(lat)

    ths = [threading.Thread(target=worker, args=(k,)) for k in range(callers)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return out


def rss_mib(pid: int | str = "self") -> dict:
    vals = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0]) / 1024.0
    # RssFile: file-backed pages mapped into the process (libraries, mmap'ed store files);
    # RssAnon: heap and other anonymous memory.
    return {"rss_mib": vals.get("VmRSS", 0.0), "peak_mib": vals.get("VmHWM", 0.0),
            "anon_mib": vals.get("RssAnon", 0.0), "file_mib": vals.get("RssFile", 0.0)}


# ----------------------------------------------------------------------------- workers

def make_call(system: str, model: str):
    """(call(feeds) -> probabilities, the loaded object) of a Python-driven system: TF Python
    signature call, ONNX Runtime session or recstrata Model (names may end in "_keras")."""
    kind = system.removesuffix("_keras")
    if kind == "tf_python":
        import tensorflow as tf

        fn_sig = tf.saved_model.load(model).signatures["serving_default"]

        def call(feeds):
            out = fn_sig(**{k: tf.constant(v) for k, v in feeds.items()})
            return (out["prob"] if "prob" in out else next(iter(out.values()))).numpy()
        return call, fn_sig
    if kind == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        alias = {i.name.split(":")[0]: i.name for i in sess.get_inputs()}

        def call(feeds):
            return sess.run(None, {alias[k]: v for k, v in feeds.items()})[0]
        return call, sess
    if kind.startswith("rs_"):
        from recstrata.processor import Model

        m = Model(model, dict(RS_CONFIG))   # bundles default to the pread read path

        def call(feeds):
            return m.run(feeds, outputs=["prob"])["prob"]
        return call, m
    raise SystemExit(f"unknown worker system {system}")


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
        lat = run_threads(call, reqs[b], c, sec)
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


def compile_bundle_loop(out: Path) -> Path:
    import recstrata

    exe = out / "bundle_loop"
    src = HERE / "bundle_loop.c"
    lib_dir = os.path.dirname(recstrata.library_path())
    import tensorflow as tf

    tf_dir = tf.sysconfig.get_lib()
    if not (exe.exists() and exe.stat().st_mtime > src.stat().st_mtime):
        subprocess.run(["gcc", "-O2", "-std=c11", "-D_GNU_SOURCE", str(src), "-o", str(exe),
                        f"-I{recstrata.include_dir()}", f"-L{lib_dir}", "-lrecstrata", "-lpthread",
                        f"-Wl,-rpath,{lib_dir}", f"-Wl,-rpath,{tf_dir}"], check=True)
    return exe


def bundle_spec(model_dir: Path, sets: list[tuple[Path, list[dict]]], path: Path,
                rs_config: dict = RS_CONFIG) -> Path:
    """Spec of perf/bundle_loop.c: one request set per batch size."""
    from recstrata.processor import _dtype_code

    lines = [f"model_dir {model_dir}",
             f"rs_config {json.dumps(rs_config, separators=(',', ':'))}"]
    for req_dir, reqs in sets:
        lines += ["set", f"requests {len(reqs)}", f"inputs {len(reqs[0])}"]
        for name, arr in reqs[0].items():
            lines.append(f"{name} {_dtype_code(arr.dtype)} {arr.ndim} "
                         + " ".join(str(x) for x in arr.shape) + f" {req_dir / name}")
    path.write_text("\n".join(lines) + "\n")
    return path


class StdinLoop:
    """A perf/*_loop.c process driven over stdin: it prints "ready" once loaded, answers
    `run ... LAT_FILE` with "done" after writing the latencies there, and ends on `quit`."""

    def __init__(self, exe: Path, args: list[str], lat_file: Path):
        self.lat_file = lat_file
        self.label = Path(exe).name
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        self._expect("ready")

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"{self.label}: expected {word!r}, got {line!r} {err[-2000:]}")

    def request(self, *fields) -> list[np.ndarray]:
        """`run FIELDS... LAT_FILE`; returns one latency array (seconds) per caller."""
        self.proc.stdin.write("run " + " ".join(str(f) for f in fields) + f" {self.lat_file}\n")
        self.proc.stdin.flush()
        self._expect("done")
        raw = np.fromfile(self.lat_file, dtype=np.int64)
        n = int(raw[0])
        return np.split(raw[1 + n:] / 1e9, np.cumsum(raw[1:1 + n])[:-1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class NativeLoop(StdinLoop):
    """A bundle_loop process (one loaded model, several request sets)."""

    def __init__(self, exe: Path, spec: Path, lat_file: Path):
        super().__init__(exe, ["rs_run", str(spec)], lat_file)

    def run(self, set_index: int, callers: int, seconds: float) -> list[np.ndarray]:
        return self.request(set_index, callers, seconds)


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
        sys.path.insert(0, str(HERE))
        from bench_serving import write_c_spec

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


def convert_onnx(saved_model: str, out_path: str) -> None:
    """tf2onnx conversion of the in-graph SavedModel (runs in a child process).

    tf2onnx 1.17 has no converter for TF's Log1p (used by the dense normalisation), so a custom
    handler rewrites it as Log(x + 1), which is what Log1p computes.
    """
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import utils

    def log1p(ctx, node, name, args):
        one = ctx.make_const(utils.make_name("one"), np.array(1, np.float32)).output[0]
        add = ctx.make_node("Add", [node.input[0], one])
        ctx.replace_inputs(node, [add.output[0]])
        node.type = "Log"

    loaded = tf.saved_model.load(saved_model)   # keep it alive: it owns the variables
    f = loaded.signatures["serving_default"]
    items = sorted(f.structured_input_signature[1].items())
    names = [n for n, _ in items]
    sig = [tf.TensorSpec(spec.shape, spec.dtype, name=n) for n, spec in items]
    g = tf.function(lambda *a: f(**dict(zip(names, a))), input_signature=sig)
    tf2onnx.convert.from_function(g, input_signature=sig, opset=17,
                                  custom_op_handlers={"Log1p": (log1p, [])}, output_path=out_path)


# ----------------------------------------------------------------------------- main

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
    for copy in ("bundle_ssd10_py", "bundle_ssd10_mmap", "bundle_ssd10_nosplit"):
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
            for name, bundle, rcfg in (("rs_bundle_ssd10", ssd["path"], RS_CONFIG),
                                       ("rs_bundle_ssd10_mmap", out / "bundle_ssd10_mmap",
                                        mmap_cfg),
                                       ("rs_bundle_ssd10_nosplit", out / "bundle_ssd10_nosplit",
                                        nosplit_cfg),
                                       ("rs_bundle_mem", mem["path"], RS_CONFIG)):
                if name in systems:
                    live[name] = BundleSystem(exe, Path(bundle), req_root, all_reqs, out, name,
                                              rcfg)
        if "tf_c_api" in systems or "tf_c_api_keras" in systems:
            sys.path.insert(0, str(HERE))
            from bench_serving import compile_c_loop

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
        results = {s: {f"b{b}_c{c}": summarize(v, b) for (b, c), v in cells.items()}
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
    summary = {"bench": "bundle", "quick": quick, "seconds_per_cell": seconds,
               "tables": N_SPARSE, "rows": int(sum(rows)), "table_mib": table_bytes / 2**20,
               "dram_fraction": 0.10, "requests_per_batch": nreq, "results": results,
               "memory_mib": memory, "ratios": ratios, "parity": parity, "targets": targets,
               "wall_s": time.perf_counter() - t_start}
    print(f"\ntotal {summary['wall_s']:.0f} s")
    print("RESULT " + json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
