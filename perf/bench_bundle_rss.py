#!/usr/bin/env python
"""Resident memory of a bundle with several GB of embeddings (the memory target of bundles).

The issue asks: with tables of several GB and the DRAM cache at 10% of them, recstrata serving
a bundle has lower resident memory than every peer. perf/bench_bundle.py measures that at
255 MiB of tables; this benchmark measures it at ~3 GiB (``--size-gib``, 0.4 GiB with
``--quick``).

The model: the same Criteo-shaped WDL as perf/bench_bundle.py (bundle_models.config: 26 plain
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
  model                 RecModel(parse_config(bundle_models.config(rows))) with its initial
                        weights: each table written to a raw float32 file (onnx/emb_C<i>.bin),
                        the dense-stage weights to dense_weights.npz, and the RecModel's own
                        predictions on the verification requests (the reference for everything)
  export                bundle_ssd10 = export_bundle(M, tiers="dram+ssd", dram_fraction=0.10)
                        and its copy bundle_ssd10_mmap (a store directory is opened by one
                        process at a time). M is a stand-in for the RecModel (_StandIn): the same
                        config, the same table values (memory maps of the files above), the same
                        dense-stage weights (set on a RecModel of the same config with tiny
                        tables, whose table-size-independent methods it forwards to)
  ingraph               bundle_models.build_ingraph(M): one SavedModel with the tables inside
  convert, tfref, onnx  onnx/model.onnx, ONNX Runtime's model, with the tables as ONNX external
                        data (the files above, one per table, offset 0). tf2onnx cannot convert
                        the full model (a protobuf is limited to 2 GB, and its constant folding
                        needed ~20 GB for a 255 MiB model in an earlier run), so:
                        bundle_models.convert_onnx (tf2onnx, opset 17) converts a small in-graph
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
batch-64 requests (Zipf(1.05) ids, bundle_models.make_requests) as a warm-up and then cycles
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
import bundle_models as bb  # noqa: E402  (numpy only at import)
from bundle_rss_build import (BATCH, N_SPARSE, WIDTH, _stamp, run_step,  # noqa: E402
                              table_bytes, table_rows, verification_requests)
from c_loops import (NativeLoop, bundle_spec, compile_bundle_loop,  # noqa: E402
                     compile_c_loop, write_c_spec)
from harness import (StdinLoop, grouped_bars, machine_notes, plot_path,  # noqa: E402
                     print_result, proc_memory, run_threads_over, save_plot)

SYSTEMS = ("rs_bundle_ssd10", "rs_bundle_ssd10_mmap", "tf_c_api", "tf_python", "onnxruntime")
RS_SYSTEMS = ("rs_bundle_ssd10", "rs_bundle_ssd10_mmap")
PEERS = ("tf_c_api", "tf_python", "onnxruntime")
# Per-feature cardinalities of the Criteo Kaggle (DAC) data set, C1..C26.
SWEEP_REQUESTS, SWEEP_BATCH = 256, 512
# Fewest bytes the DRAM tier charges per row (DramTier::RowBytes; its index comes on top), so
# budget // this bounds the rows a cache can hold from above (used to size the cache fill).
DRAM_ROW_COST = 4 * WIDTH + 13


# ----------------------------------------------------------------------------- requests

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
    lat = run_threads_over(call, reqs, 1, args.seconds)[0]   # a warm-up pass, then one caller
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


def measure(system: str, out: Path, req_root: Path, zipf: list[dict], seconds: float,
            sweep: bool) -> dict:
    """One system, loaded, measured and ended in its own process."""
    if system in RS_SYSTEMS:
        bundle = out / ("bundle_ssd10" if system == "rs_bundle_ssd10" else "bundle_ssd10_mmap")
        rcfg = dict(bb.RS_CONFIG) if system == "rs_bundle_ssd10" else dict(
            bb.RS_CONFIG, bundle_read_path="mmap")
        exe = compile_bundle_loop(out)
        sets = [(req_root / "zipf", zipf)]
        if sweep:
            sets.append((req_root / "sweep", bb.load_requests(req_root / "sweep")))
        spec = bundle_spec(bundle, sets, out / f"spec_{system}.txt", rcfg)
        t0 = time.perf_counter()
        loop = NativeLoop(exe, spec, out / f"lat_{system}.bin")
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
        exe = compile_c_loop(out)
        spec = write_c_spec(out, out / "ingraph", zipf[0], bb.RS_CONFIG, b"", tag="rss_")
        t0 = time.perf_counter()
        loop = StdinLoop(exe, ["tf_fresh", str(spec)], out / "lat_tf_c_api.bin")
        res = {"load_s": time.perf_counter() - t0}
        try:
            res["loaded"] = proc_memory(loop.proc.pid, str(out / "ingraph") + "/")
            res["lat"] = np.concatenate(loop.request(1, seconds))   # 20-call warm-up inside
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
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--reqs", help=argparse.SUPPRESS)
    ap.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data-prefix", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size_gib = args.size_gib or (0.4 if args.quick else 3.0)
    rows = table_rows(size_gib)
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
    save_plot(plot_path("bundle_rss", args.quick), lambda fig: plot(fig, summary))
    print_result(summary)
    return 0


def plot(fig, summary: dict) -> None:
    """Main figure: VmRSS per system after loading, after the Zipf requests and after the sweep."""
    res = summary["results"]
    names = list(res)
    phases = [p for p in ("loaded", "served", "swept") if any(p in res[s] for s in names)]
    ax = fig.add_subplot(1, 1, 1)
    grouped_bars(ax, names, {p: [res[s].get(p, {}).get("rss_mib", float("nan")) for s in names]
                             for p in phases}, "resident memory, MiB (VmRSS)")
    ax.set_title(f"{summary['table_mib'] / 1024:.2f} GiB of tables, 10% DRAM cache")
    ax.tick_params(axis="x", labelsize=7)


if __name__ == "__main__":
    sys.exit(main())
