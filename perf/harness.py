"""What every benchmark under perf/ shares: timing, caller threads, percentiles, memory, the
stdin-driven native loops, the RESULT line and the PNG of the main figure.

Imports numpy only; matplotlib is imported by :func:`save_plot` when a plot is written
(a perf dependency: ``pip install recstrata[perf]``). Not thread-safe unless said.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"   # the committed results files and their plots
OUT_DIR = HERE / "out"           # scratch: models, requests, --quick plots


# ----------------------------------------------------------------------------- percentiles

def percentile_ms(lat_s, q: float) -> float:
    """The q-th percentile of latencies given in seconds, in milliseconds (nan when empty)."""
    a = np.asarray(lat_s, dtype=np.float64)
    return float(np.percentile(a, q)) * 1e3 if a.size else float("nan")


def p99(x) -> float:
    """99th percentile of x, in x's unit (nan when empty)."""
    a = np.asarray(x, dtype=np.float64)
    return float(np.percentile(a, 99)) if a.size else float("nan")


# ----------------------------------------------------------------------------- timing

def _throughput(lat_per_thread: list[np.ndarray]) -> float:
    wall = max(float(l.sum()) for l in lat_per_thread)  # callers run back to back
    return sum(l.size for l in lat_per_thread) / wall


def summarize_rounds(rounds: list[list[np.ndarray]], batch: int) -> dict:
    """Figures of one cell from its rounds (each a list of per-thread latencies).

    median/p99/throughput use every call of every round. The best_round_*
    figures take the best round (lowest median, highest throughput): on a
    shared machine other tenants' load only ever slows a round down, so the
    best round is the closest estimate of what the system itself costs.
    """
    threads = [np.concatenate([r[k] for r in rounds]) for k in range(len(rounds[0]))]
    allv = np.concatenate(threads)
    tput = _throughput(threads)
    return {
        "calls": int(allv.size),
        "median_ms": float(np.median(allv)) * 1e3,
        "p99_ms": float(np.percentile(allv, 99)) * 1e3,
        "throughput_rps": tput,  # requests (batches) per second
        "throughput_items_s": tput * batch,
        "best_round_median_ms": min(float(np.median(np.concatenate(r))) for r in rounds) * 1e3,
        "best_round_throughput_rps": max(_throughput(r) for r in rounds),
    }


def run_threads(fn, callers: int, seconds: float, warmup: int = 10) -> list[np.ndarray]:
    """Runs fn() back to back in `callers` Python threads; per-call seconds per thread."""
    barrier = threading.Barrier(callers)
    results: list[np.ndarray] = [None] * callers  # type: ignore[list-item]

    def worker(k):
        for _ in range(warmup):
            fn()
        barrier.wait()
        lat = []
        end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            if t1 >= end:
                break
        results[k] = np.array(lat)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summarize_calls(lat: list[np.ndarray], batch: int) -> dict:
    """Figures of one cell from per-caller latencies (seconds): every call counts."""
    allv = np.concatenate(lat)
    wall = max(float(x.sum()) for x in lat)
    return {"calls": int(allv.size), "median_ms": float(np.median(allv)) * 1e3,
            "p99_ms": float(np.percentile(allv, 99)) * 1e3,
            "throughput_rps": allv.size / wall, "items_per_s": allv.size * batch / wall}


def run_threads_over(fn, reqs: list, callers: int, seconds: float) -> list[np.ndarray]:
    """fn(req) back to back in `callers` threads, cycling through `reqs` (one warm-up pass each,
    caller k starting at request 7k); per-call seconds per caller."""
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


def proc_memory(pid: int | str = "self", data_prefix: str | None = None) -> dict:
    """rss_mib plus the resident MiB of mapped files under data_prefix (the
    model's own data: store data files, ONNX external data), from /proc/<pid>/smaps."""
    m = rss_mib(pid)
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


# ----------------------------------------------------------------------------- native loops

def write_latencies(path: Path, per_thread: list[np.ndarray]) -> None:
    """The latency file format shared with serving_loop.c (see its header)."""
    ns = [np.asarray(np.round(l * 1e9), dtype=np.int64) for l in per_thread]
    header = np.array([len(ns)] + [len(l) for l in ns], dtype=np.int64)
    np.concatenate([header] + ns).tofile(path)


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


# ----------------------------------------------------------------------------- reporting

def print_result(summary: dict, compact: bool = True) -> None:
    """The benchmark's last line: ``RESULT {json}``."""
    sep = (",", ":") if compact else None
    print("RESULT " + json.dumps(summary, separators=sep), flush=True)


def plot_path(name: str, quick: bool = False) -> Path:
    """Where a benchmark's main figure goes: perf/results/NAME.png beside its results file for
    a full run, perf/out/NAME_quick.png for --quick (so a smoke run never replaces it)."""
    return (OUT_DIR / f"{name}_quick.png") if quick else (RESULTS_DIR / f"{name}.png")


def save_plot(path: Path, draw: Callable, *, figsize=(8, 4.5)) -> Path | None:
    """Draws ``draw(fig)`` on a new matplotlib figure (Agg) and writes it to ``path`` as PNG.

    Returns the path, or None (with a note on stderr) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        import sys

        print(f"matplotlib not installed (pip install recstrata[perf]); no plot {path}",
              file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize)
    try:
        draw(fig)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def grouped_bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str,
                 log: bool = False) -> None:
    """Bars of several series side by side per group (e.g. systems per batch size)."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)


def stop_process(proc, timeout=30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
