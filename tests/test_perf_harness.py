"""perf/harness.py and the benchmarks' plots (no benchmark is run here: timing is not tested).

The figures the harness computes are checked on known latencies; the stdin loop protocol on a
stand-in loop written in Python; each benchmark module must import, and its `plot` must draw
a PNG from a summary shaped like its RESULT line.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

PERF = Path(__file__).resolve().parent.parent / "perf"
sys.path.insert(0, str(PERF))

import harness  # noqa: E402


def test_summaries_of_known_latencies():
    lat = [np.array([0.001, 0.002, 0.003]), np.array([0.004])]
    s = harness.summarize_calls(lat, batch=10)
    assert s["calls"] == 4
    assert s["median_ms"] == pytest.approx(2.5)
    assert s["throughput_rps"] == pytest.approx(4 / 0.006)   # the busiest caller's wall time
    assert s["items_per_s"] == pytest.approx(40 / 0.006)
    rounds = [[np.array([0.001, 0.001])], [np.array([0.004, 0.004])]]
    r = harness.summarize_rounds(rounds, batch=2)
    assert r["calls"] == 4 and r["median_ms"] == pytest.approx(2.5)
    assert r["best_round_median_ms"] == pytest.approx(1.0)
    assert r["best_round_throughput_rps"] == pytest.approx(1000.0)
    assert harness.p99(np.arange(101)) == pytest.approx(99.0)
    assert np.isnan(harness.p99([]))
    assert harness.percentile_ms([0.001, 0.003], 50) == pytest.approx(2.0)


def test_run_threads_over_cycles_requests_in_every_caller():
    seen, lock = [], threading.Lock()

    def fn(req):
        with lock:
            seen.append(req)

    lat = harness.run_threads_over(fn, [0, 1, 2], callers=2, seconds=0.05)
    assert len(lat) == 2 and all(a.size >= 1 and (a >= 0).all() for a in lat)
    assert seen.count(0) >= 2 and seen.count(1) >= 2 and seen.count(2) >= 2  # warm-up passes
    assert len(seen) == 2 * 3 + sum(a.size for a in lat)


def test_stdin_loop_protocol_round_trip(tmp_path):
    # A stand-in for perf/*_loop.c: "ready", then per `run ... LAT_FILE` the latencies of
    # two callers in the shared file format and "done", until `quit`.
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(PERF)!r})
        import harness
        print("ready", flush=True)
        for line in sys.stdin:
            parts = line.split()
            if parts[0] == "quit":
                break
            k = int(parts[1])
            harness.write_latencies(parts[-1], [np.full(k, 0.001), np.full(k + 1, 0.002)])
            print("done", flush=True)
    """)
    loop = harness.StdinLoop(sys.executable, ["-c", script], tmp_path / "lat.bin")
    try:
        a, b = loop.request(3, 0.5)
        np.testing.assert_allclose(a, [0.001] * 3)
        np.testing.assert_allclose(b, [0.002] * 4)
    finally:
        loop.close()
    assert loop.proc.returncode == 0


def test_memory_of_this_process():
    m = harness.rss_mib()
    assert m["rss_mib"] > 0 and m["peak_mib"] >= m["rss_mib"]
    assert harness.proc_memory("self", "/nonexistent-prefix/")["model_files_mib"] == 0
    assert harness.machine_notes()["cpus"] >= 1


def test_plot_paths():
    assert harness.plot_path("bundle") == PERF / "results" / "bundle.png"
    assert harness.plot_path("bundle", quick=True) == PERF / "out" / "bundle_quick.png"


CELL = {"median_ms": 1.0, "p99_ms": 2.0, "throughput_rps": 100.0}

SUMMARIES = {
    "bench_bf16": {"batches": [64, 512], "systems": {
        s: {b: {"median_ms": 0.1 * b} for b in (64, 512)} for s in ("fp32", "bf16")}},
    "bench_serving": {"models": ["module"], "cells": [
        dict(CELL, model="module", batch=b, callers=1, system=s)
        for b in (1, 64) for s in ("rs_run", "tf_python")]},
    "bench_overhead": {"cells": [{"batch": b, "system": s, "median_us": 100.0 + b}
                                 for b in (1, 64) for s in ("tf_c_api", "rs_model_run")]},
    "bench_bundle": {"results": {s: {f"b{b}_c{c}": CELL for b in (1, 64, 512) for c in (1, 2)}
                                 for s in ("rs_bundle_ssd10", "tf_python")},
                     "memory_mib": {"rs_bundle_ssd10": {"rss_mib": 300.0},
                                    "tf_python": {"rss_mib": 900.0}}},
    "bench_bundle_rss": {"table_mib": 3072.0, "results": {
        "rs_bundle_ssd10": {"loaded": {"rss_mib": 200.0}, "served": {"rss_mib": 400.0},
                            "swept": {"rss_mib": 450.0}},
        "tf_c_api": {"loaded": {"rss_mib": 3500.0}, "served": {"rss_mib": 3600.0}}}},
    "bench_store": {"300000x16": {"n": 300000, "dim": 16,
                                  "np_take": {"zipf": {"keys_per_s": 3e7}},
                                  "plyvel": {"error": "not installed"},
                                  "recstrata_memory": {"zipf": {"keys_per_s": 1.5e7}}},
                    "elapsed_s": 1.0, "quick": True},
    "load_test": {"users": 4, "rate_per_user": 20.0, "batch": 16, "systems": {
        s: {"steady": {"p50_ms": 3.0, "p99_ms": 9.0}, "reload": {"p50_ms": 4.0, "p99_ms": None}}
        for s in ("recstrata", "tf_python")}},
}


@pytest.mark.parametrize("name", sorted(SUMMARIES))
def test_each_benchmark_imports_and_plots_its_summary(name, tmp_path):
    pytest.importorskip("matplotlib")
    mod = importlib.import_module(name)
    out = harness.save_plot(tmp_path / f"{name}.png", lambda fig: mod.plot(fig, SUMMARIES[name]))
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compression_and_cost_model_plots(tmp_path):
    pytest.importorskip("matplotlib")
    cs = importlib.import_module("compression_study")
    rows = [{"data": d, "scheme": s, "ratio": r, "rel_auc_loss": loss}
            for d in ("independent", "structured")
            for s, r, loss in (("plain", 1.0, 0.0), ("qr", 10.0, 0.001), ("freq", 30.0, 0.004))]
    assert harness.save_plot(tmp_path / "c.png", lambda fig: cs.plot(fig, rows)).exists()
    cm = importlib.import_module("bench_cost_model")
    real = {p: [{"baseline_p99": 5.0}] for p in ("alone", "shared", "alone_costmodel", "costmodel")}
    scales = {p: (0, 100.0) for p in ("shared", "static", "dynamic")}
    assert harness.save_plot(tmp_path / "m.png", lambda fig: cm.plot(fig, real, scales)).exists()


def test_benchmarks_do_not_import_each_other():
    import ast

    benches = {p.stem for p in PERF.glob("*.py")
               if p.stem.startswith("bench_") or p.stem in ("load_test", "compression_study")}
    for p in PERF.glob("*.py"):
        tree = ast.parse(p.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
        assert not (imported & benches) - {p.stem}, (p.name, imported & benches)
