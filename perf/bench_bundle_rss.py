#!/usr/bin/env python
"""Resident memory of a bundle with several GB of embeddings (the memory target of bundles).

The issue asks: with tables of several GB and the DRAM cache at 10% of them, recstrata serving
a bundle has lower resident memory than every peer. perf/bench_bundle.py measures that at
255 MiB of tables; this benchmark measures it at ~3 GiB (``--size-gib``, 0.4 GiB with
``--quick``).

The model: the same Criteo-shaped WDL as perf/bench_bundle.py (bench_bundle.config: 26 plain
tables of dim 16 + 1 first-order column, 13 log1p dense features, MLP 512-256-1, initial
weights), but the 26 table sizes follow the per-feature cardinalities of the Criteo Kaggle
(Display Advertising Challenge) data set -- three tables of 7-10 M rows, a long tail of small
ones, some with 3-30 rows -- scaled so that the tables hold SIZE_GIB of float32 in total
(3 GiB: ~47 M rows).

Artifacts (perf/out/bundle_rss/<size>gib/, reused while the config, the exporter and the
builders are unchanged; --rebuild rebuilds them), built step by step, each step in its own
process: a TF process keeps the memory of everything it ever allocated (the RecModel's random
initialisation leaves ~2x its tables behind), so one process doing everything would peak near
16 GB for 3 GiB of tables; split, no step goes much above 2.3x the tables:
  model                 RecModel(parse_config(bench_bundle.config(rows))) with its initial
                        weights: each table written to a raw float32 file (onnx/emb_C<i>.bin),
                        the dense-stage weights to dense_weights.npz, and the RecModel's own
                        predictions on the verification requests (the reference for everything)
  export                bundle_ssd10 = export_bundle(M, tiers="dram+ssd", dram_fraction=0.10)
                        and its copy bundle_ssd10_mmap (a store directory is opened by one
                        process at a time). M is a stand-in for the RecModel (_StandIn): the same
                        config, the same table values (memory maps of the files above), the same
                        dense-stage weights (set on a RecModel of the same config with tiny
                        tables, whose table-size-independent methods it forwards to)
  ingraph               bench_bundle.build_ingraph(M): one SavedModel with the tables inside
  convert, tfref, onnx  onnx/model.onnx, ONNX Runtime's model, with the tables as ONNX external
                        data (the files above, one per table, offset 0). tf2onnx cannot convert
                        the full model (a protobuf is limited to 2 GB, and its constant folding
                        needed ~20 GB for a 255 MiB model in an earlier run), so:
                        bench_bundle.convert_onnx (tf2onnx, opset 17) converts a small in-graph
                        model of the SAME structure and the SAME dense weights (its tables: the
                        first 1000 + 7 i rows of the real ones -- zero-padded for the tiny
                        tables -- a distinct row count per table); then each small table
                        initializer becomes an external-data reference to the full table's file
                        (onnx.external_data_helper.set_external_data, dims set to the full
                        size), and each FloorMod row count (tf2onnx writes int64 FloorMod as
                        x - floor(x / C) * C with an int64 constant C) becomes the full row
                        count. The result must match the TF in-graph model on six batch-64
                        verification requests (Zipf ids, ids uniform over every table, each
                        table's first and last rows): max |ORT - TF| <= 1e-5, else ONNX Runtime
                        is left out.

Systems, measured ONE AT A TIME, each in its own process (never two loaded together):
  rs_bundle_ssd10        recstrata serving the bundle (store "dram+ssd", 10% DRAM caches,
                         default config: the pread read path) from native threads:
                         perf/bundle_loop.c
  rs_bundle_ssd10_mmap   the same with model config bundle_read_path="mmap"
  tf_c_api               (c) perf/serving_loop.c "tf_fresh" on the in-graph SavedModel
  tf_python              (b) TF Python, signature call on the in-graph SavedModel
  onnxruntime            (d) ONNX Runtime (default CPU session) on onnx/model.onnx
Each process loads (load time = spawn to ready, imports included), serves one pass over R
batch-64 requests (Zipf(1.05) ids, bench_bundle.make_requests) as a warm-up and then cycles
through them for SECONDS with one caller (median / p99 latency, side figures). Memory is read
from /proc/<pid>/status (VmRSS, VmHWM = peak, RssAnon, RssFile) after loading and after
serving, plus the resident bytes of the model's own files mapped into the process (store data
files, ONNX external data; from /proc/<pid>/smaps). Then a "sweep" pass of 256 batch-512
requests with ids uniform over every table (the long tail a Zipf sample rarely reaches) shows
how the memory of the systems that map their tables grows with the touched rows (tf_c_api: the
same values, ids do not change what an in-graph table holds). The headline figure is VmRSS after
serving the Zipf requests; ratios are peer RSS / recstrata RSS (> 1: recstrata smaller).
The served outputs of TF Python, ONNX Runtime and recstrata (Model.run, in one more process
after the measurements, which also reports the store's DRAM-tier bytes after the Zipf requests,
the sweep and a fill of every cache to capacity) are compared with the RecModel's and the
in-graph model's on the verification requests. A last process opens the store alone
(recstrata.store, pread) for its key-index bytes and the memory of the store by itself.

    python perf/bench_bundle_rss.py                 # ~3 GiB of tables
    python perf/bench_bundle_rss.py --quick         # ~0.4 GiB, < 3 minutes with cached artifacts
    python perf/bench_bundle_rss.py --size-gib 6 --systems rs_bundle_ssd10,onnxruntime
Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
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
import bench_bundle as bb  # noqa: E402  (numpy only at import)

N_SPARSE, DIM = bb.N_SPARSE, bb.DIM
WIDTH = DIM + 1                       # WDL: 16 embedding columns + 1 first-order column
BATCH = 64
SYSTEMS = ("rs_bundle_ssd10", "rs_bundle_ssd10_mmap", "tf_c_api", "tf_python", "onnxruntime")
RS_SYSTEMS = ("rs_bundle_ssd10", "rs_bundle_ssd10_mmap")
PEERS = ("tf_c_api", "tf_python", "onnxruntime")
# Per-feature cardinalities of the Criteo Kaggle (DAC) data set, C1..C26.
CRITEO_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572)
MIN_ROWS = 3
SMALL_ROWS = [1000 + 7 * i for i in range(N_SPARSE)]   # the tf2onnx stand-in (distinct counts)
SWEEP_REQUESTS, SWEEP_BATCH = 256, 512
# Fewest bytes the DRAM tier charges per row (DramTier::RowBytes; its index comes on top), so
# budget // this bounds the rows a cache can hold from above (used to size the cache fill).
DRAM_ROW_COST = 4 * WIDTH + 13


def table_rows(size_gib: float) -> list[int]:
    """Criteo-shaped row counts whose float32 [rows, 17] tables hold ~size_gib GiB."""
    total_rows = size_gib * 2**30 / (WIDTH * 4)
    scale = total_rows / sum(CRITEO_CARDINALITIES)
    return [max(MIN_ROWS, int(round(c * scale))) for c in CRITEO_CARDINALITIES]


def table_bytes(rows: list[int]) -> int:
    return sum(r * WIDTH * 4 for r in rows)


# ----------------------------------------------------------------------------- memory

def proc_memory(pid: int | str = "self", data_prefix: str | None = None) -> dict:
    """bench_bundle.rss_mib plus the resident MiB of mapped files under data_prefix (the
    model's own data: store data files, ONNX external data), from /proc/<pid>/smaps."""
    m = bb.rss_mib(pid)
    if data_prefix:
        mapped, cur = 0, None
        with open(f"/proc/{pid}/smaps") as fh:
            for line in fh:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):      # a mapping's header line
                    parts = line.split(None, 5)
                    cur = parts[5].strip() if len(parts) == 6 else ""
                elif first == "Rss:" and cur and cur.startswith(data_prefix):
                    mapped += int(line.split()[1])
        m["model_files_mib"] = mapped / 1024.0
    return m


def machine_notes() -> dict:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            k, v = line.split(":")
            if k in ("MemTotal", "MemAvailable", "MemFree", "Cached"):
                info[k.lower() + "_mib"] = int(v.split()[0]) / 1024.0
    info["loadavg_1m"] = os.getloadavg()[0]
    info["cpus"] = os.cpu_count()
    return info


# ----------------------------------------------------------------------------- build steps

class _StandIn:
    """Stands in for the full-size RecModel once its process has ended (a TF process keeps the
    memory of the RecModel's random initialisation, ~2x the tables, until it exits): the full
    config, the RecModel's table values (read-only memory maps of the files step_model wrote
    them to) and its dense stage (the same weights, set on a RecModel of the same config with
    tiny tables, whose other methods -- feature_info etc., independent of table sizes -- are
    used as they are). `take` gives a table fewer rows (the tf2onnx stand-in; zero-padded when
    the real table is smaller)."""

    def __init__(self, cfg, small_model, files: dict, file_rows: dict, take: dict | None = None):
        self.cfg = cfg
        self._small = small_model
        self.dense_stage = small_model.dense_stage
        self._files, self._file_rows, self._take = files, file_rows, take or file_rows

    def embedding_tables(self) -> dict:
        out = {}
        schemes = self.cfg.tables()
        for t, meta in self._small.embedding_tables().items():
            full = np.memmap(self._files[t], dtype=np.float32, mode="r",
                             shape=(self._file_rows[t], WIDTH))
            sub = full[:self._take[t]]
            if sub.shape[0] < self._take[t]:
                sub = np.concatenate([sub, np.zeros((self._take[t] - sub.shape[0], WIDTH),
                                                    np.float32)])
            scheme = schemes[t][0]
            out[t] = dict(meta, scheme=scheme.to_dict(), subtable_rows=list(scheme.subtable_rows),
                          subtables=[sub])
            if list(scheme.subtable_rows) != [self._take[t]]:
                raise RuntimeError(f"table {t}: config rows {scheme.subtable_rows} != {self._take[t]}")
        return out

    def __getattr__(self, name):
        return getattr(self._small, name)


def _peak() -> float:
    return bb.rss_mib()["peak_mib"]


def _keras_batch(feeds: dict) -> dict:
    """A request in the RecModel's own batch layout (ids [B, 1] + lengths)."""
    b = {}
    for k, v in feeds.items():
        if k == "dense":
            b[k] = v
        else:
            b[k] = v.reshape(-1, 1)
            b[k + "/len"] = np.ones(len(v), np.int32)
    return b


def step_model(out: Path, rows: list[int]) -> dict:
    """The full-size RecModel: its tables to raw float32 files (ONNX Runtime's external data and
    the source of every other artifact), its dense-stage weights, and its own predictions on the
    verification requests (the reference every served output is compared with)."""
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    t0 = time.perf_counter()
    cfg = parse_config(bb.config(rows))
    model = RecModel(cfg, name="rec_model")
    model.build_with_dummy()
    info = {"model_s": time.perf_counter() - t0, "peak_after_model_mib": _peak()}
    onnx_dir = out / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    for f in cfg.sparse:            # one table at a time (embedding_tables() copies them all)
        layer = model.embedding_stage.tables[f.table]
        if len(layer.subtables) != 1:
            raise RuntimeError(f"{f.table}: {len(layer.subtables)} sub-tables, want 1 (plain)")
        arr = np.asarray(layer.subtables[0].numpy(), dtype=np.float32)
        if arr.shape != (rows[int(f.name[1:]) - 1], WIDTH):
            raise RuntimeError(f"{f.table}: shape {arr.shape}")
        arr.tofile(onnx_dir / f"emb_{f.name}.bin")
        del arr
    np.savez(out / "dense_weights.npz", *model.dense_stage.get_weights())
    ref = np.stack([model.predict_batch(_keras_batch(r)).reshape(-1)
                    for r in bb.load_requests(out / "verify")])
    np.save(out / "verify" / "ref_keras.npy", ref)
    info.update(seconds=time.perf_counter() - t0, peak_mib=_peak())
    print(f"  RecModel built, tables written ({info['seconds']:.0f} s, peak "
          f"{info['peak_mib']:.0f} MiB)", flush=True)
    return info


def _stand_ins(out: Path, rows: list[int]):
    """(full-size stand-in, tf2onnx stand-in) for the RecModel of step_model."""
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    small_cfg = parse_config(bb.config(SMALL_ROWS))
    small = RecModel(small_cfg, name="rec_model")
    small.build_with_dummy()
    z = np.load(out / "dense_weights.npz")
    small.dense_stage.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    cfg = parse_config(bb.config(rows))
    files = {f.table: str(out / "onnx" / f"emb_{f.name}.bin") for f in cfg.sparse}
    file_rows = {f.table: rows[i] for i, f in enumerate(cfg.sparse)}
    full = _StandIn(cfg, small, files, file_rows)
    tiny = _StandIn(small_cfg, small, files, file_rows,
                    {f.table: SMALL_ROWS[i] for i, f in enumerate(small_cfg.sparse)})
    return full, tiny


def step_export(out: Path, rows: list[int]) -> dict:
    """export_bundle (tiers dram+ssd, DRAM caches at 10%), then the copy for the mmap system."""
    from recstrata.training.export import export_bundle

    t0 = time.perf_counter()
    full, _ = _stand_ins(out, rows)
    bi = export_bundle(full, out / "bundle_ssd10", tiers="dram+ssd", dram_fraction=0.10)
    info = {"export_seconds": dict(bi["seconds"]), "peak_after_export_mib": _peak()}
    t = time.perf_counter()
    shutil.copytree(out / "bundle_ssd10", out / "bundle_ssd10_mmap")
    info.update(copy_s=time.perf_counter() - t, seconds=time.perf_counter() - t0, peak_mib=_peak())
    print(f"  bundle exported and copied ({info['seconds']:.0f} s, peak {info['peak_mib']:.0f} MiB)",
          flush=True)
    return info


def step_ingraph(out: Path, rows: list[int]) -> dict:
    """bench_bundle.build_ingraph on the full tables and on the tf2onnx stand-in."""
    t0 = time.perf_counter()
    full, tiny = _stand_ins(out, rows)
    bb.build_ingraph(full, full.cfg, out / "ingraph")
    bb.build_ingraph(tiny, tiny.cfg, out / "ingraph_small")
    info = {"seconds": time.perf_counter() - t0, "peak_mib": _peak()}
    print(f"  in-graph SavedModels written ({info['seconds']:.0f} s, peak {info['peak_mib']:.0f} MiB)",
          flush=True)
    return info


def step_convert(out: Path) -> dict:
    """tf2onnx on the small in-graph model (bench_bundle.convert_onnx)."""
    t = time.perf_counter()
    bb.convert_onnx(str(out / "ingraph_small"), str(out / "onnx" / "small.onnx"))
    return {"seconds": time.perf_counter() - t, "peak_mib": _peak()}


def step_tfref(out: Path) -> dict:
    """The in-graph SavedModel's outputs on the verification requests (TF is the reference)."""
    import tensorflow as tf

    t = time.perf_counter()
    reqs = bb.load_requests(out / "verify")
    sig = tf.saved_model.load(str(out / "ingraph")).signatures["serving_default"]
    ref = np.stack([sig(**{k: tf.constant(v) for k, v in r.items()})["prob"].numpy().reshape(-1)
                    for r in reqs])
    np.save(out / "verify" / "ref_tf.npy", ref)
    return {"seconds": time.perf_counter() - t, "peak_mib": _peak()}


def step_onnx(out: Path, rows: list[int]) -> dict:
    """Grafts the full tables (external data) and row counts into the tf2onnx-converted small
    model, then checks it against TF on the verification requests."""
    import onnx
    import onnxruntime as ort
    from onnx import external_data_helper, numpy_helper

    t = time.perf_counter()
    onnx_dir = out / "onnx"
    m = onnx.load(str(onnx_dir / "small.onnx"))
    by_rows = {r: i for i, r in enumerate(SMALL_ROWS)}
    tables: dict[int, object] = {}
    for init in m.graph.initializer:
        if (init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2
                and init.dims[1] == WIDTH and init.dims[0] in by_rows):
            i = by_rows[init.dims[0]]
            if i in tables:
                raise RuntimeError(f"two table initializers with {init.dims[0]} rows")
            tables[i] = init
    if len(tables) != N_SPARSE:
        raise RuntimeError(f"found {len(tables)} table initializers in small.onnx, want {N_SPARSE}")
    for i, init in tables.items():
        small = numpy_helper.to_array(init)
        path = onnx_dir / f"emb_C{i + 1}.bin"
        full = np.memmap(path, dtype=np.float32, mode="r", shape=(rows[i], WIDTH))
        n = min(rows[i], SMALL_ROWS[i])
        if not np.array_equal(small[:n], full[:n]):
            raise RuntimeError(f"table C{i + 1}: small.onnx's rows are not the full table's first rows")
        external_data_helper.set_external_data(init, location=path.name, offset=0,
                                               length=rows[i] * WIDTH * 4)
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.dims[:] = [rows[i], WIDTH]
        del full
    # FloorMod(ids, rows): tf2onnx writes int64 FloorMod as ids - floor(ids / C) * C (or Mod),
    # with C an int64 constant per table: every int64 one-element constant whose value is a
    # stand-in row count becomes that table's full row count (the stand-in counts 1000 + 7 i
    # occur nowhere else in this model; the check against TF below would catch it if they did)
    int64 = onnx.TensorProto.INT64
    consts = [(t, numpy_helper.to_array(t)) for t in m.graph.initializer if t.data_type == int64]
    consts += [(a.t, numpy_helper.to_array(a.t)) for n in m.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value" and a.t.data_type == int64]
    patched: dict[int, int] = {}
    for holder, val in consts:
        if val.dtype == np.int64 and val.size == 1 and int(val.reshape(-1)[0]) in by_rows:
            i = by_rows[int(val.reshape(-1)[0])]
            holder.CopyFrom(numpy_helper.from_array(np.array(rows[i], np.int64).reshape(val.shape),
                                                    holder.name))
            patched[i] = patched.get(i, 0) + 1
    if len(patched) != N_SPARSE:
        raise RuntimeError(f"found row-count constants of {len(patched)} tables, want {N_SPARSE}")
    model_path = onnx_dir / "model.onnx"
    onnx.save_model(m, str(model_path))
    onnx.checker.check_model(str(model_path))
    del m
    gc.collect()

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    alias = {i.name.split(":")[0]: i.name for i in sess.get_inputs()}
    reqs = bb.load_requests(out / "verify")
    got = np.stack([sess.run(None, {alias[k]: v for k, v in r.items()})[0].reshape(-1)
                    for r in reqs])
    ref = np.load(out / "verify" / "ref_tf.npy")
    diff = float(np.abs(got - ref).max())
    ok = diff <= 1e-5
    return {"seconds": time.perf_counter() - t, "peak_mib": _peak(), "max_abs_diff_vs_tf": diff,
            "ok": ok, "row_count_constants_patched": sum(patched.values()),
            "onnx_mib": model_path.stat().st_size / 2**20,
            "small_onnx_mib": (onnx_dir / "small.onnx").stat().st_size / 2**20}


def step_store_stats(out: Path) -> dict:
    """The bundle's store opened alone (recstrata.store, pread): its own index_bytes
    (SSD-tier key index: direct arrays + hash shards) and the memory of a process holding just
    the store (plus the libraries recstrata loads)."""
    from recstrata.store import Store

    before = bb.rss_mib()
    t = time.perf_counter()
    store = Store(str(out / "bundle_ssd10" / "store"), read_path="pread")
    open_s = time.perf_counter() - t
    tables = list(store.stats()["tables"].values())
    info = {"open_s": open_s, "index_bytes": sum(x.get("index_bytes", 0) for x in tables),
            "rows": sum(x["rows"] for x in tables),
            "dram_capacity_bytes": sum(x["dram_capacity_bytes"] for x in tables),
            "memory_before_open": before, "memory_open": bb.rss_mib(), "peak_mib": _peak()}
    store.close()
    return info


def run_step(name: str, out: Path, size_gib: float, say) -> dict:
    """Runs one build step in its own process; its last stdout line is a JSON dict."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--step", name,
                          "--out-dir", str(out), "--size-gib", repr(size_gib)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("  "):
            say(line.strip())
    err = p.stderr.read()
    p.wait()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"build step {name} failed (exit {p.returncode}): {err[-3000:]}")
    info = json.loads(lines[-1])
    info["wall_s"] = time.perf_counter() - t
    say(f"step {name}: {info['wall_s']:.0f} s, peak RSS {info.get('peak_mib', 0):.0f} MiB")
    return info


# ----------------------------------------------------------------------------- requests

def verification_requests(rows: list[int], zipf: list[dict]) -> list[dict]:
    """Four of the measured Zipf requests, one with uniform ids over every table, one with each
    table's first and last rows (the tail of a big table is where a grafted table would show a
    mis-sized or misplaced external-data reference)."""
    rng = np.random.default_rng(7)
    uni = {f"C{i + 1}": rng.integers(0, r, BATCH, dtype=np.int64) for i, r in enumerate(rows)}
    uni["dense"] = rng.lognormal(0, 1, (BATCH, bb.N_DENSE)).astype(np.float32)
    edge = {f"C{i + 1}": np.where(np.arange(BATCH) % 2 == 0, r - 1, 0).astype(np.int64)
            for i, r in enumerate(rows)}
    edge["dense"] = rng.lognormal(0, 1, (BATCH, bb.N_DENSE)).astype(np.float32)
    return zipf[:4] + [uni, edge]


def sweep_requests(rows: list[int]) -> list[dict]:
    rng = np.random.default_rng(11)
    reqs = []
    for _ in range(SWEEP_REQUESTS):
        feeds = {f"C{i + 1}": rng.integers(0, r, SWEEP_BATCH, dtype=np.int64)
                 for i, r in enumerate(rows)}
        feeds["dense"] = rng.lognormal(0, 1, (SWEEP_BATCH, bb.N_DENSE)).astype(np.float32)
        reqs.append(feeds)
    return reqs


# ----------------------------------------------------------------------------- workers

def worker_main(args) -> int:
    """A Python-driven system in its own process. Prints one JSON line per phase (loaded,
    served, swept) with its own memory; latencies and outputs go to files."""
    system, model, req_root = args.worker, args.model, Path(args.reqs)
    prefix = args.data_prefix
    reqs = bb.load_requests(req_root / "zipf")
    verify = bb.load_requests(req_root / "verify")
    call, m = bb.make_call(system, model)   # m: the recstrata Model for rs_parity
    print(json.dumps({"phase": "loaded", **proc_memory("self", prefix)}), flush=True)
    outs = np.stack([np.asarray(call(r)).reshape(-1) for r in verify])
    np.save(req_root / f"out_{system}.npy", outs)
    if system == "rs_parity":                  # outputs, then the store's DRAM-tier bytes
        def dram():
            subs = [st for t in m.stats()["bundle"]["tables"] for st in t["subtables"]]
            return {"dram_rows": sum(st["dram_rows"] for st in subs),
                    "dram_bytes": sum(st["dram_bytes"] for st in subs)}
        for r in reqs:
            call(r)
        print(json.dumps({"phase": "served", **proc_memory("self", prefix), **dram()}), flush=True)
        if args.sweep:
            for r in bb.load_requests(req_root / "sweep"):
                call(r)
            print(json.dumps({"phase": "swept", **proc_memory("self", prefix), **dram()}),
                  flush=True)
        # fill every DRAM cache to capacity: the store admits a row on its second miss, so each
        # request (ids 0.. of every table, 1.25x the rows the cache holds) is sent twice in a row
        rows = json.loads((req_root / "rows.json").read_text())
        cap = [max(1, int(0.10 * r * WIDTH * 4)) // DRAM_ROW_COST for r in rows]
        span = [min(r, int(c * 1.25) + 1) for r, c in zip(rows, cap)]
        rng = np.random.default_rng(3)
        fb = SWEEP_BATCH       # the sweep's batch size: TF's buffers for it already exist
        for j in range(-(-max(span) // fb)):
            feeds = {f"C{i + 1}": (np.arange(j * fb, (j + 1) * fb) % span[i]).astype(np.int64)
                     for i in range(len(rows))}
            feeds["dense"] = rng.lognormal(0, 1, (fb, bb.N_DENSE)).astype(np.float32)
            call(feeds)
            call(feeds)
        print(json.dumps({"phase": "filled", **proc_memory("self", prefix), **dram(),
                          "dram_rows_upper_bound": sum(cap)}), flush=True)
        return 0
    lat = bb.run_threads(call, reqs, 1, args.seconds)[0]   # a warm-up pass, then one caller
    np.save(req_root / f"lat_{system}.npy", lat)
    print(json.dumps({"phase": "served", **proc_memory("self", prefix)}), flush=True)
    if args.sweep:
        for r in bb.load_requests(req_root / "sweep"):
            call(r)
        print(json.dumps({"phase": "swept", **proc_memory("self", prefix)}), flush=True)
    return 0


def _py_system(system: str, model: str, req_root: Path, seconds: float, sweep: bool,
               prefix: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--model", model,
           "--reqs", str(req_root), "--seconds", repr(seconds)]
    if sweep:
        cmd.append("--sweep")
    if prefix:
        cmd += ["--data-prefix", prefix]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    res: dict = {}
    for line in p.stdout:
        d = json.loads(line)
        phase = d.pop("phase")
        if phase == "loaded":
            res["load_s"] = time.perf_counter() - t0
        if phase != "done":
            res[phase] = d
    err = p.stderr.read()
    p.wait()
    if p.returncode != 0 or ("served" not in res and seconds > 0):
        raise RuntimeError(f"{system} worker failed (exit {p.returncode}): {err[-3000:]}")
    if seconds > 0:
        res["lat"] = np.load(req_root / f"lat_{system}.npy")
    return res


class _CLoop:
    """perf/serving_loop.c (protocol: run CALLERS SECONDS LAT_FILE -> done; quit)."""

    def __init__(self, exe: Path, mode: str, spec: Path, lat_file: Path):
        self.lat_file = lat_file
        self.proc = subprocess.Popen([str(exe), mode, str(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"serving_loop: {self.proc.stderr.read()[-2000:]}")

    def run(self, callers: int, seconds: float) -> np.ndarray:
        self.proc.stdin.write(f"run {callers} {seconds} {self.lat_file}\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "done":
            raise RuntimeError(f"serving_loop: {self.proc.stderr.read()[-2000:]}")
        raw = np.fromfile(self.lat_file, dtype=np.int64)
        n = int(raw[0])
        return raw[1 + n:] / 1e9

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(system: str, out: Path, req_root: Path, zipf: list[dict], seconds: float,
            sweep: bool) -> dict:
    """One system, loaded, measured and ended in its own process."""
    if system in RS_SYSTEMS:
        bundle = out / ("bundle_ssd10" if system == "rs_bundle_ssd10" else "bundle_ssd10_mmap")
        rcfg = dict(bb.RS_CONFIG) if system == "rs_bundle_ssd10" else dict(
            bb.RS_CONFIG, bundle_read_path="mmap")
        exe = bb.compile_bundle_loop(out)
        sets = [(req_root / "zipf", zipf)]
        if sweep:
            sets.append((req_root / "sweep", bb.load_requests(req_root / "sweep")))
        spec = bb.bundle_spec(bundle, sets, out / f"spec_{system}.txt", rcfg)
        t0 = time.perf_counter()
        loop = bb.NativeLoop(exe, spec, out / f"lat_{system}.bin")
        res = {"load_s": time.perf_counter() - t0}
        pid, prefix = loop.proc.pid, str(bundle) + "/"
        try:
            res["loaded"] = proc_memory(pid, prefix)
            res["lat"] = np.concatenate(loop.run(0, 1, seconds))   # warm-up pass inside
            res["served"] = proc_memory(pid, prefix)
            if sweep:
                loop.run(1, 1, 0.0)             # one pass over the sweep set (+ one call)
                res["swept"] = proc_memory(pid, prefix)
        finally:
            loop.close()
        return res
    if system == "tf_c_api":
        from bench_serving import compile_c_loop, write_c_spec

        exe = compile_c_loop(out)
        spec = write_c_spec(out, out / "ingraph", zipf[0], bb.RS_CONFIG, b"", tag="rss_")
        t0 = time.perf_counter()
        loop = _CLoop(exe, "tf_fresh", spec, out / "lat_tf_c_api.bin")
        res = {"load_s": time.perf_counter() - t0}
        try:
            res["loaded"] = proc_memory(loop.proc.pid, str(out / "ingraph") + "/")
            res["lat"] = loop.run(1, seconds)    # 20-call warm-up inside
            res["served"] = proc_memory(loop.proc.pid, str(out / "ingraph") + "/")
        finally:
            loop.close()
        return res
    if system == "tf_python":
        return _py_system(system, str(out / "ingraph"), req_root, seconds, sweep,
                          str(out / "ingraph") + "/")
    if system == "onnxruntime":
        return _py_system(system, str(out / "onnx" / "model.onnx"), req_root, seconds, sweep,
                          str(out / "onnx") + "/")
    raise ValueError(system)


# ----------------------------------------------------------------------------- main

def _stamp(rows: list[int]) -> str:
    import recstrata.training.export as export_mod

    src = "".join(inspect.getsource(f) for f in (
        bb.config, bb.build_ingraph, bb.convert_onnx, _StandIn, _keras_batch, step_model,
        _stand_ins, step_export, step_ingraph, step_convert, step_tfref, step_onnx,
        verification_requests))
    return hashlib.sha256(json.dumps([bb.config(rows), SMALL_ROWS], sort_keys=True).encode()
                          + Path(export_mod.__file__).read_bytes() + src.encode()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~0.4 GiB of tables, short cells")
    ap.add_argument("--size-gib", type=float, help="GiB of embeddings (default 3, --quick 0.4)")
    ap.add_argument("--seconds", type=float, help="measuring time per system (default 10, quick 3)")
    ap.add_argument("--requests", type=int, help="distinct batch-64 requests (default 256, quick 64)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--no-sweep", action="store_true", help="skip the uniform-id sweep pass")
    ap.add_argument("--no-parity", action="store_true",
                    help="skip recstrata's parity check (one more bundle open)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the model artifacts")
    ap.add_argument("--out", default=str(HERE / "out" / "bundle_rss"))
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--reqs", help=argparse.SUPPRESS)
    ap.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data-prefix", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size_gib = args.size_gib or (0.4 if args.quick else 3.0)
    rows = table_rows(size_gib)
    if args.step:
        out = Path(args.out_dir)
        fn = {"model": lambda: step_model(out, rows), "export": lambda: step_export(out, rows),
              "ingraph": lambda: step_ingraph(out, rows), "convert": lambda: step_convert(out),
              "tfref": lambda: step_tfref(out), "onnx": lambda: step_onnx(out, rows),
              "store_stats": lambda: step_store_stats(out)}[args.step]
        print(json.dumps(fn()), flush=True)
        return 0
    if args.worker:
        args.seconds = args.seconds or 0.0
        return worker_main(args)

    t_start = time.perf_counter()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    nreq = args.requests or (64 if args.quick else 256)
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s}; known: {', '.join(SYSTEMS)}")
    sweep = not args.no_sweep
    out = Path(args.out) / f"{size_gib:g}gib"
    tbytes = table_bytes(rows)

    def say(msg):
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    machine_start = machine_notes()
    say(f"{N_SPARSE} tables, {sum(rows):,} rows ({min(rows):,}-{max(rows):,}), "
        f"{tbytes / 2**30:.2f} GiB of embeddings; machine: {machine_start['cpus']} CPUs, "
        f"{machine_start['memavailable_mib'] / 1024:.1f} of {machine_start['memtotal_mib'] / 1024:.1f}"
        f" GiB available, load {machine_start['loadavg_1m']:.2f}")

    # --- requests (deterministic; the verification set is needed by the build's checks)
    req_root = out / "requests"
    zipf = bb.make_requests(rows, BATCH, nreq, seed=BATCH)
    verify = verification_requests(rows, zipf)

    # --- artifacts
    stamp = _stamp(rows)
    build: dict = {}
    cached = (not args.rebuild and (out / "stamp").exists()
              and (out / "stamp").read_text() == stamp)
    if cached:
        say(f"reusing the model artifacts in {out} (--rebuild to rebuild them)")
        build = json.loads((out / "build.json").read_text())
    else:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        bb.save_requests(verify, out / "verify")
        say("building (each step in its own process)")
        for step in ("model", "export", "ingraph"):
            build[step] = run_step(step, out, size_gib, say)
        build["convert"] = run_step("convert", out, size_gib, say)
        build["tfref"] = run_step("tfref", out, size_gib, say)
        try:
            build["onnx"] = run_step("onnx", out, size_gib, say)
        except RuntimeError as e:
            build["onnx"] = {"ok": False, "error": str(e)[-1500:]}
            say(f"ONNX graft FAILED: {e}")
        if build["onnx"].get("ok") is False and "error" not in build["onnx"]:
            say(f"ONNX model does NOT match TF: max abs diff {build['onnx']['max_abs_diff_vs_tf']:.2e}")
        (out / "build.json").write_text(json.dumps(build))
        (out / "stamp").write_text(stamp)
    if not (out / "bundle_ssd10_mmap").exists():     # artifacts of an older layout of this script
        shutil.copytree(out / "bundle_ssd10", out / "bundle_ssd10_mmap")
    shutil.rmtree(req_root, ignore_errors=True)
    bb.save_requests(zipf, req_root / "zipf")
    bb.save_requests(verify, req_root / "verify")
    (req_root / "rows.json").write_text(json.dumps(rows))
    if sweep:
        bb.save_requests(sweep_requests(rows), req_root / "sweep")
    disk = {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2**20
            for d in (out / "bundle_ssd10", out / "ingraph", out / "onnx") if d.exists()}
    onnx_ok = bool(build.get("onnx", {}).get("ok"))
    if "onnxruntime" in systems and not onnx_ok:
        say("onnxruntime left out: no verified ONNX model")
        systems.remove("onnxruntime")

    # --- measure, one system at a time
    results: dict = {}
    notes: dict = {}
    for s in systems:
        gc.collect()
        time.sleep(2)
        notes[s] = machine_notes()
        say(f"{s}: loading (available {notes[s]['memavailable_mib'] / 1024:.1f} GiB, load "
            f"{notes[s]['loadavg_1m']:.2f})")
        r = measure(s, out, req_root, zipf, seconds, sweep)
        lat = r.pop("lat")
        r["calls"] = int(lat.size)
        r["median_ms"] = float(np.median(lat)) * 1e3
        r["p99_ms"] = float(np.percentile(lat, 99)) * 1e3
        results[s] = r
        m = r["served"]
        say(f"{s}: load {r['load_s']:.1f} s, RSS {m['rss_mib']:.0f} MiB (anon {m['anon_mib']:.0f}"
            f" / file {m['file_mib']:.0f}, peak {m['peak_mib']:.0f}), b64 median "
            f"{r['median_ms']:.3f} ms")

    # --- parity of the served outputs on the verification requests
    parity, rs_py = {}, {}
    if not args.no_parity and any(s in results for s in RS_SYSTEMS):
        say("parity: recstrata Model.run (default config) on the verification requests, then its "
            "memory and DRAM-tier bytes after the Zipf requests, the sweep, and a cache fill")
        rs_py = _py_system("rs_parity", str(out / "bundle_ssd10"), req_root, 0.0, sweep,
                           str(out / "bundle_ssd10") + "/")
    store_info = {}
    if any(s in results for s in RS_SYSTEMS):
        store_info = run_step("store_stats", out, size_gib, say)
    refs = {n: np.load(out / "verify" / f"ref_{n}.npy") for n in ("keras", "tf")
            if (out / "verify" / f"ref_{n}.npy").exists()}
    if "keras" in refs and "tf" in refs:
        parity["tf_ingraph_vs_keras_max_abs_diff"] = float(np.abs(refs["tf"] - refs["keras"]).max())
    for s in ("rs_parity", "tf_python", "onnxruntime"):
        f = req_root / f"out_{s}.npy"
        if f.exists():
            for n, ref in refs.items():
                parity[f"{s}_vs_{n}_max_abs_diff"] = float(np.abs(np.load(f) - ref).max())
    if "onnx" in build and "max_abs_diff_vs_tf" in build["onnx"]:
        parity["onnx_build_check_max_abs_diff"] = build["onnx"]["max_abs_diff_vs_tf"]

    # --- report
    def row_mem(m, k):
        return f"{m[k]:>8.0f}" if m and k in m else f"{'-':>8}"

    print(f"\nresident memory, MiB ({tbytes / 2**30:.2f} GiB of tables, {sum(rows):,} rows; "
          f"DRAM cache 10%; b64 Zipf requests x{nreq}, {seconds:g} s)")
    print(f"{'system':<22}{'load s':>7}{'RSS':>8}{'anon':>8}{'file':>8}{'of it model files':>18}"
          f"{'peak':>8}{'RSS loaded':>11}{'RSS swept':>10}{'med ms':>8}{'p99 ms':>8}")
    for s, r in results.items():
        m = r["served"]
        print(f"{s:<22}{r['load_s']:>7.1f}{row_mem(m, 'rss_mib')}{row_mem(m, 'anon_mib')}"
              f"{row_mem(m, 'file_mib')}{m.get('model_files_mib', 0):>18.0f}"
              f"{max(m['peak_mib'], r.get('swept', m)['peak_mib']):>8.0f}"
              f"{r['loaded']['rss_mib']:>11.0f}"
              + (f"{r['swept']['rss_mib']:>10.0f}" if "swept" in r else f"{'-':>10}")
              + f"{r['median_ms']:>8.3f}{r['p99_ms']:>8.2f}")
    ratios, targets = {}, {}
    for base in RS_SYSTEMS:
        if base not in results:
            continue
        b = results[base]["served"]["rss_mib"]
        peers = [p for p in PEERS if p in results]
        for p in peers:
            ratios[f"{p}_rss_over_{base}"] = results[p]["served"]["rss_mib"] / b
            if "swept" in results[base]:
                pm = results[p].get("swept", results[p]["served"])["rss_mib"]
                ratios[f"{p}_rss_over_{base}_after_sweep"] = pm / results[base]["swept"]["rss_mib"]
        if peers:
            targets[f"lower_rss_than_every_peer_{base}"] = all(
                b < results[p]["served"]["rss_mib"] for p in peers)
    print("\nratios, peer RSS / recstrata RSS after serving (> 1: recstrata smaller)")
    for k, v in ratios.items():
        print(f"  {k:<52} {v:6.2f}")
    for k, v in targets.items():
        print(f"target {k}: {v}")
    for k, v in parity.items():
        print(f"parity {k}: {v:.2e}")
    if store_info:
        mo, mb = store_info["memory_open"], store_info["memory_before_open"]
        print(f"store alone (recstrata.store, pread): key index {store_info['index_bytes'] / 2**20:.0f}"
              f" MiB for {store_info['rows']:,} rows; DRAM caches: capacity "
              f"{store_info['dram_capacity_bytes'] / 2**20:.0f} MiB; process RSS "
              f"{mb['rss_mib']:.0f} -> {mo['rss_mib']:.0f} MiB at open (anon {mb['anon_mib']:.0f} -> "
              f"{mo['anon_mib']:.0f}), open {store_info['open_s']:.1f} s")
    if rs_py:
        for ph, what in (("loaded", "at open"), ("served", "after the Zipf requests"),
                         ("swept", "after the sweep"), ("filled", "after filling it")):
            if ph in rs_py and "dram_rows" in rs_py[ph]:
                print(f"  DRAM tier {what} (Model.run process, pread): "
                      f"{rs_py[ph]['dram_rows']:,} rows, "
                      f"{rs_py[ph]['dram_bytes'] / 2**20:.0f} MiB charged; that process: RSS "
                      f"{rs_py[ph]['rss_mib']:.0f} (anon {rs_py[ph]['anon_mib']:.0f})")
    summary = {"bench": "bundle_rss", "quick": args.quick, "size_gib": size_gib,
               "table_mib": tbytes / 2**20, "rows": int(sum(rows)), "table_rows": rows,
               "dram_fraction": 0.10, "batch": BATCH, "requests": nreq, "seconds": seconds,
               "sweep": {"requests": SWEEP_REQUESTS, "batch": SWEEP_BATCH} if sweep else None,
               "results": results, "ratios": ratios, "targets": targets, "parity": parity,
               "store_alone": store_info, "rs_model_run_process": rs_py,
               "disk_mib": disk, "build": build,
               "built_this_run": not cached, "machine_start": machine_start,
               "machine_before_system": notes, "machine_end": machine_notes(),
               "wall_s": time.perf_counter() - t_start}
    print(f"\ntotal {summary['wall_s']:.0f} s")
    print("RESULT " + json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
