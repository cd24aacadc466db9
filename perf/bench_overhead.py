#!/usr/bin/env python
"""recstrata's own overhead over the bare TensorFlow C API, on the Criteo-shaped model.

Runs perf/overhead_ab.c (compiled here): in ONE native process, blocks of 50
calls rotate between tf_c_api (TF_SessionRun on prebuilt tensors), tf_fresh_tensors
(TF_SessionRun on per-call TF_NewTensor wrappers: what new request data costs
any server), rs_model_run, rs_model_predict (decode + run + encode) and
tf_fresh_session2 (tf_fresh_tensors on a second bare session of the model: the
session-to-session spread, since recstrata necessarily runs its own session),
so that load swings on a shared machine hit all of them alike. One caller, one
session, inline threading (recstrata's defaults) for every system.

Prints medians and p99 per batch size and the overhead ratios
(median / tf_c_api median - 1); the last line is `RESULT {json}`.

    python perf/bench_overhead.py            # batches 1, 64, 512; 3000 calls each
    python perf/bench_overhead.py --quick    # batches 1, 64; 800 calls each (< 2 min)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from c_loops import write_c_spec  # noqa: E402
from harness import grouped_bars, plot_path, print_result, save_plot  # noqa: E402
from serving_models import build_model, make_feeds, table_rows  # noqa: E402


def compile_ab(out_dir: Path) -> Path:
    import tensorflow as tf

    import recstrata

    exe = out_dir / "overhead_ab"
    src = HERE / "overhead_ab.c"
    if exe.exists() and exe.stat().st_mtime > src.stat().st_mtime:
        return exe
    tf_dir = tf.sysconfig.get_lib()
    lib_dir = os.path.dirname(recstrata.library_path())
    subprocess.run(["gcc", "-O2", "-std=c11", str(src), "-o", str(exe),
                    f"-I{tf.sysconfig.get_include()}", f"-I{recstrata.include_dir()}", f"-L{lib_dir}", "-lrecstrata",
                    f"{tf_dir}/libtensorflow_cc.so.2", f"{tf_dir}/libtensorflow_framework.so.2",
                    f"-Wl,-rpath,{tf_dir}", f"-Wl,-rpath,{lib_dir}"], check=True)
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batches", default=None)
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args(argv)
    batches = [int(b) for b in (args.batches or ("1,64" if args.quick else "1,64,512")).split(",")]
    calls = args.calls or (800 if args.quick else 3000)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from recstrata.wire import codec

    t0 = time.time()
    rows = table_rows(args.quick)
    model_dir = build_model(out_dir, rows)
    exe = compile_ab(out_dir)
    cfg = {"session_num": 1}
    results = []
    print(f"{'batch':>5} {'system':<17} {'median us':>10} {'p99 us':>9} {'overhead':>9}")
    for batch in batches:
        feeds = make_feeds(batch, rows, seed=batch)
        spec = write_c_spec(out_dir, model_dir, feeds, cfg, codec.make_request(feeds))
        proc = subprocess.run([str(exe), str(spec), str(calls)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        rows_out = {}
        for line in proc.stdout.strip().splitlines():
            name, med, p99, n = line.split()
            rows_out[name] = {"median_us": float(med), "p99_us": float(p99), "calls": int(n)}
        base = rows_out["tf_c_api"]["median_us"]
        for name, r in rows_out.items():
            r["overhead_vs_tf_c_api"] = r["median_us"] / base - 1
            r.update(batch=batch, system=name)
            results.append(r)
            print(f"{batch:>5} {name:<17} {r['median_us']:>10.1f} {r['p99_us']:>9.1f} {r['overhead_vs_tf_c_api']:>+9.1%}")
    print(f"elapsed {time.time() - t0:.1f} s")
    summary = {"benchmark": "overhead", "quick": args.quick, "calls_per_system": calls,
               "rs_config": cfg, "cells": results}
    save_plot(plot_path("core", args.quick), lambda fig: plot(fig, summary))
    print_result(summary, compact=False)
    return 0


def plot(fig, summary: dict) -> None:
    """Main figure: median latency per call of each entry point, by batch size."""
    cells = summary["cells"]
    batches = sorted({c["batch"] for c in cells})
    systems = list(dict.fromkeys(c["system"] for c in cells))
    med = {(c["system"], c["batch"]): c["median_us"] for c in cells}
    ax = fig.add_subplot(1, 1, 1)
    grouped_bars(ax, [f"batch {b}" for b in batches],
                 {s: [med.get((s, b), float("nan")) for b in batches] for s in systems},
                 "median us per call")
    ax.set_title("processor overhead over the bare TF C API (one native process)")


if __name__ == "__main__":
    sys.exit(main())
