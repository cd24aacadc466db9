#!/usr/bin/env python
"""BF16 vs fp32 for the dense stage of a bundle, at serving batch sizes.

The model is the dense stage bench_bundle serves (WDL over 26 pooled embeddings of
16 floats + 13 dense features = 429 inputs, hidden layers [512, 256], one logit),
built here from fixed random weights as a SavedModel and, from the same weights, as
an ONNX model. In one process, blocks of calls rotate between:
  fp32      recstrata, precision "fp32" (the default)
  bf16      recstrata, precision "bf16" (oneDNN auto mixed precision)
  ort_fp32  ONNX Runtime 1-thread CPU session on the same weights (if installed;
            otherwise the line says SKIPPED and no figure is reported for it)
so that load swings hit all alike. One caller, one intra-op thread each.

Also reports the MLP's GFLOP/s at each batch as a fraction of this CPU's nominal
peaks: cores x clock x FLOP/cycle, where FLOP/cycle is 64 for FP32 (two 512-bit
FMA ports x 16 lanes x 2) and 128 for BF16 with AVX512-BF16 (VDPBF16PS: 32 products
+ 32 adds per instruction, two ports), over every CPU of the machine (os.cpu_count()):
each system is given one intra-op thread, but oneDNN's large matmuls were seen going
past one core's peak, so the whole CPU is the honest denominator. AMX tiles (if
present) are not counted, so a BF16 figure above 1.0 means AMX did the work. The
clock is /proc/cpuinfo's "cpu MHz" (base clock, no turbo).

    python perf/bench_bf16.py            # batches 64, 512, 2048; 12 rounds
    python perf/bench_bf16.py --quick    # batches 64, 512; 6 rounds (< 1 min)

Last line: RESULT {"bf16_over_fp32_b512": fp32 median / bf16 median at batch 512, ...}.
Writes perf/results/bf16.png (median latency per batch, per system; perf/out/bf16_quick.png
with --quick).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import plot_path, print_result, save_plot  # noqa: E402
WIDTHS = [429, 512, 256, 1]


def weights(seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
             (rng.standard_normal(b) * 0.01).astype(np.float32))
            for a, b in zip(WIDTHS[:-1], WIDTHS[1:])]


def build_saved_model(w, path: Path) -> None:
    import tensorflow as tf

    class Mlp(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = [(tf.constant(k), tf.constant(b)) for k, b in w]

        @tf.function(input_signature=[tf.TensorSpec([None, WIDTHS[0]], tf.float32, name="x")])
        def serve(self, x):
            h = x
            for i, (k, b) in enumerate(self.v):
                h = tf.nn.bias_add(tf.matmul(h, k), b)
                if i < len(self.v) - 1:
                    h = tf.nn.relu(h)
            return {"logit": h}

    m = Mlp()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def build_onnx(w, path: Path) -> bool:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return False
    nodes, inits, prev = [], [], "x"
    for i, (k, b) in enumerate(w):
        inits += [numpy_helper.from_array(k, f"k{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}" if i < len(w) - 1 else "logit"
        gemm_out = out if i == len(w) - 1 else f"g{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"k{i}", f"b{i}"], [gemm_out]))
        if i < len(w) - 1:
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTHS[0]])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime this benchmark supports
    onnx.save(model, str(path))
    return True


def cpu_mhz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1])
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=None, help="calls per block")
    args = ap.parse_args(argv)
    batches = [64, 512] if args.quick else [64, 512, 2048]
    rounds = 6 if args.quick else 12
    calls = args.calls or (30 if args.quick else 60)

    from recstrata.errors import FailedPreconditionError
    from recstrata.processor import Model

    work = Path(tempfile.mkdtemp(prefix="bench_bf16_"))
    w = weights()
    build_saved_model(w, work / "mlp")
    have_ort = build_onnx(w, work / "mlp.onnx")
    opts = dict(intra_op_parallelism_threads=1, inter_op_parallelism_threads=-1, warmup_runs=5)
    systems = {"fp32": Model(str(work / "mlp"), **opts)}
    try:
        systems["bf16"] = Model(str(work / "mlp"), precision="bf16", **opts)
    except FailedPreconditionError as e:
        print(f"SKIPPED bf16: {e}", flush=True)
    if have_ort:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(work / "mlp.onnx"), so, providers=["CPUExecutionProvider"])
    else:
        print("SKIPPED ort_fp32: onnx/onnxruntime not installed (pip install '.[perf]' onnx); "
              "no ONNX Runtime figure below", flush=True)

    def call(name, x):
        if name == "ort_fp32":
            return sess.run(None, {"x": x})[0]
        return systems[name].run({"x": x})["logit"]

    names = list(systems) + (["ort_fp32"] if have_ort else [])
    rng = np.random.default_rng(0)
    lat: dict[tuple[str, int], list[float]] = {}
    diff = {}
    for bs in batches:
        xs = [rng.standard_normal((bs, WIDTHS[0])).astype(np.float32) for _ in range(4)]
        ref = call("fp32", xs[0])
        for name in names:
            out = call(name, xs[0])
            diff[(name, bs)] = float(np.abs(out - ref).max())
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                t = lat.setdefault((name, bs), [])
                for i in range(calls):
                    t0 = time.perf_counter()
                    call(name, xs[i % 4])
                    t.append(time.perf_counter() - t0)

    flops = {bs: 2 * bs * sum(a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:])) for bs in batches}
    ghz = cpu_mhz() / 1000
    ncpu = os.cpu_count() or 1
    peak = {"fp32": ncpu * ghz * 64, "bf16": ncpu * ghz * 128}  # GFLOP/s, nominal, whole CPU
    peak["ort_fp32"] = peak["fp32"]
    res: dict = {"batches": batches, "cpu_ghz": ghz, "cpus": ncpu,
                 "peak_gflops": {"fp32": peak["fp32"], "bf16": peak["bf16"]}, "systems": {}}
    print(f"\nMLP {WIDTHS}, one intra-op thread per system; nominal peaks ({ncpu} CPUs, {ghz:.2f} GHz): "
          f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"{'system':<9} {'batch':>5} {'median ms':>10} {'p99 ms':>8} {'GFLOP/s':>8} {'of peak':>8} {'max|d| vs fp32':>15}")
    for name in names:
        for bs in batches:
            a = np.asarray(lat[(name, bs)]) * 1e3
            med, p99 = float(np.median(a)), float(np.percentile(a, 99))
            gf = flops[bs] / (med / 1e3) / 1e9
            res["systems"].setdefault(name, {})[bs] = {"median_ms": med, "p99_ms": p99, "gflops": gf,
                                                       "of_peak": gf / peak[name], "max_abs_diff": diff[(name, bs)]}
            print(f"{name:<9} {bs:>5} {med:>10.3f} {p99:>8.3f} {gf:>8.1f} {gf / peak[name]:>8.2f} {diff[(name, bs)]:>15.2e}")
    ratios = {}
    for bs in batches:
        f = res["systems"]["fp32"][bs]["median_ms"]
        if "bf16" in systems:
            ratios[f"bf16_over_fp32_b{bs}"] = f / res["systems"]["bf16"][bs]["median_ms"]
        if have_ort:
            ratios[f"fp32_vs_ort_b{bs}"] = res["systems"]["ort_fp32"][bs]["median_ms"] / f
            if "bf16" in systems:
                ratios[f"bf16_vs_ort_b{bs}"] = res["systems"]["ort_fp32"][bs]["median_ms"] / res["systems"]["bf16"][bs]["median_ms"]
    print("\nratios (>1: the first is faster): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    res.update(ratios)

    out = save_plot(plot_path("bf16", args.quick), lambda fig: plot(fig, res), figsize=(6, 4))
    if out:
        print(f"plot: {out}")
    for m in systems.values():
        m.close()
    print_result({k: v for k, v in res.items() if k != "systems"} |
                 {"systems": {n: {str(b): v for b, v in d.items()} for n, d in res["systems"].items()}},
                 compact=False)
    return 0


def plot(fig, res: dict) -> None:
    """Main figure: median latency per batch size of every system (log-log)."""
    ax = fig.add_subplot(1, 1, 1)
    batches = res["batches"]
    for name, cells in res["systems"].items():
        ax.plot(batches, [cells[bs]["median_ms"] for bs in batches], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("median latency, ms (1 thread)")
    ax.set_title("dense stage MLP 429-512-256-1: bf16 vs fp32")
    ax.legend()


if __name__ == "__main__":
    sys.exit(main())
