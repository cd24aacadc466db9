"""The Go gRPC sample server vs `recstrata serve` (Python HTTP) on one model, same load.

    python perf/bench_go_server.py [--quick] [--users 8] [--duration 20] [--rounds 3]
                                   [--batch 64] [--vocab 20000] [--sessions 2]

Systems, each serving the same Criteo-shaped SavedModel (perf/serving_models.py's
CTR model: 13 dense + 26 ids, 26 x vocab x 16 embeddings, 429-256-128-1 MLP)
with the same model_config (session_num, LEAST_LOADED):
  go_grpc    go_client/examples/server (built here with `go build`), gRPC
  go_http    the same Go process's HTTP :predict_pb route
  python     `recstrata serve` (bindings/recstrata/serving), HTTP :predict_pb
Every system gets the same serialized PredictRequest (one batch of --batch
rows) from locust (perf/locust_grpc.py) with --users users sending back to
back for --duration seconds, in interleaved rounds. Reported per system:
throughput (requests/s, locust's count / duration), p50 and p99 client
latency (locust rounds them to whole ms), failures, and the server process's
CPU time per request (/proc; meaningful even when the load generator, not
the server, is what saturates); the ratios Go / Python. The load generator runs on the same
machine as the server (2 cores here), so both share the CPU with locust.
Writes perf/results/go_server.png; the last line is ``RESULT {json}`` with
``go_vs_python_throughput`` (go_grpc / python, median over rounds). All
traffic goes to 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out" / "go_server"
SERVER_DIR = REPO / "go_client" / "examples" / "server"
sys.path.insert(0, str(HERE))
from harness import RESULTS_DIR, grouped_bars, print_result, save_plot  # noqa: E402
from harness import stop_process  # noqa: E402
from serving_models import N_CAT, N_DENSE, build_ctr_model  # noqa: E402

SYSTEMS = ("go_grpc", "go_http", "python")


def build_go_server() -> Path:
    binary = OUT / "recstrata-server"
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="1")
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=SERVER_DIR, env=env, check=True)
    return binary


def make_request(path: Path, batch: int) -> None:
    from recstrata.wire import predict_pb2

    rng = np.random.default_rng(11)
    req = predict_pb2.PredictRequest(signature_name="serving_default")
    d = req.inputs["dense"]
    d.dtype = predict_pb2.DT_FLOAT
    d.array_shape.dim.extend([batch, N_DENSE])
    d.float_val.extend(rng.random(batch * N_DENSE).astype(np.float32).tolist())
    c = req.inputs["cat"]
    c.dtype = predict_pb2.DT_INT64
    c.array_shape.dim.extend([batch, N_CAT])
    c.int64_val.extend(rng.integers(1, 10**9, size=batch * N_CAT).tolist())
    path.write_bytes(req.SerializeToString())


def _first_line(proc, timeout=180.0) -> str:
    line: list[str] = []
    t = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return line[0] if line else ""


def start(system: str, binary: Path, base: Path, config: dict, log: Path):
    """Starts a server; returns (process, {protocol: locust host})."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if system == "python":
        cmd = [sys.executable, "-m", "recstrata.cli", "serve", "--model", f"ctr={base}", "--port", "0",
               "--poll-seconds", "0", "--config", json.dumps(config), "--log-level", "WARNING"]
    else:
        import recstrata
        cmd = [str(binary), "-model", f"ctr={base}", "-grpc-port", "0", "-http-port", "0", "-poll", "0",
               "-config", json.dumps(config), "-library", recstrata.library_path()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)
    line = _first_line(proc)
    if system == "python":
        if not line.startswith("serving on http://"):
            stop_process(proc)
            raise RuntimeError(f"python server did not start: {line!r}; see {log}")
        return proc, {"http": line.split()[-1]}
    parts = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
    if not line.startswith("serving ") or "grpc" not in parts:
        stop_process(proc)
        raise RuntimeError(f"go server did not start: {line!r}; see {log}")
    return proc, {"grpc": parts["grpc"], "http": "http://" + parts["http"]}


def run_locust(protocol: str, host: str, request: Path, users: int, duration: float, work: Path) -> dict:
    prefix = work / f"locust_{protocol}"
    env = dict(os.environ, RS_PROTOCOL=protocol, RS_MODEL="ctr", RS_REQUEST=str(request))
    res = subprocess.run([sys.executable, "-m", "locust", "-f", str(HERE / "locust_grpc.py"), "--headless",
                          "-u", str(users), "-r", str(users), "-t", f"{int(round(duration))}s",
                          "--host", host, "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING",
                          "--csv", str(prefix)],
                         env=env, capture_output=True, text=True, timeout=duration + 120)
    (work / f"locust_{protocol}.out").write_text(res.stdout + res.stderr)
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    n, fails = int(row["Request Count"]), int(row["Failure Count"])
    return {"requests": n, "failures": fails, "rps": round((n - fails) / duration, 1),
            "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"])}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(system, binary, template, request, args, tag) -> dict:
    work = OUT / f"run_{tag}_{system}"
    shutil.rmtree(work, ignore_errors=True)
    base = work / "ctr"
    base.mkdir(parents=True)
    shutil.copytree(template, base / "1")
    config = {"session_num": args.sessions, "select_session_policy": "LEAST_LOADED"}
    proc, hosts = start(system, binary, base, config, work / "server.log")
    try:
        protocol = "grpc" if system == "go_grpc" else "http"
        # A short unmeasured run first: connections, TF first-run work.
        run_locust(protocol, hosts[protocol], request, args.users, 2, work)
        cpu0 = cpu_seconds(proc.pid)
        res = run_locust(protocol, hosts[protocol], request, args.users, args.duration, work)
        cpu = cpu_seconds(proc.pid) - cpu0
        res["server_cpu_ms_per_request"] = round(1e3 * cpu / max(res["requests"], 1), 3)
        res["server_cpu_cores"] = round(cpu / args.duration, 2)
        return res
    finally:
        stop_process(proc)


def plot(summary: dict, dest: Path, title: str) -> None:
    names = list(summary)
    colors = ["#2a7", "#7b4", "#c64"]

    def draw(fig):
        a, b, c = fig.subplots(1, 3)
        a.bar(names, [summary[s]["rps"] for s in names], color=colors)
        a.set_ylabel("requests/s (median of rounds)")
        a.set_title("throughput")
        grouped_bars(b, names, {"p50": [summary[s]["p50_ms"] for s in names],
                                "p99": [summary[s]["p99_ms"] for s in names]}, "client latency (ms)")
        b.set_title("latency")
        c.bar(names, [summary[s]["server_cpu_ms_per_request"] for s in names], color=colors)
        c.set_ylabel("server CPU ms per request")
        c.set_title("server CPU per request")
        fig.suptitle(title, fontsize=9)

    save_plot(dest, draw, figsize=(13, 4))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 8 s, vocab 2000")
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=2)
    # The documented figure is a --quick run (see perf/RESULTS.md), so --quick writes it too.
    ap.add_argument("--png", type=Path, default=RESULTS_DIR / "go_server.png")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.vocab = 2, 8.0, 2000
    OUT.mkdir(parents=True, exist_ok=True)
    binary = build_go_server()
    template = OUT / f"ctr_v{args.vocab}"
    if not (template / "saved_model.pb").exists():
        shutil.rmtree(template, ignore_errors=True)
        build_ctr_model(template, seed=1, vocab=args.vocab)
    request = OUT / f"request_b{args.batch}.pb"
    make_request(request, args.batch)

    runs = {s: [] for s in SYSTEMS}
    for r in range(args.rounds):
        for system in SYSTEMS:
            res = one_round(system, binary, template, request, args, f"r{r}")
            runs[system].append(res)
            print(f"round {r} {system:8s} {res['rps']:8.1f} req/s  p50 {res['p50_ms']:6.1f} ms  "
                  f"p99 {res['p99_ms']:6.1f} ms  server CPU {res['server_cpu_ms_per_request']:.3f} ms/req "
                  f"({res['server_cpu_cores']} cores)  failures {res['failures']}", flush=True)
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "server_cpu_cores")
    summary = {s: {k: round(statistics.median(run[k] for run in runs[s]), 3) for k in keys}
               | {"failures": sum(run["failures"] for run in runs[s])} for s in SYSTEMS}
    ratio = lambda a, b: round(a / b, 3) if b else None  # noqa: E731
    result = {
        "go_vs_python_throughput": ratio(summary["go_grpc"]["rps"], summary["python"]["rps"]),
        "go_http_vs_python_throughput": ratio(summary["go_http"]["rps"], summary["python"]["rps"]),
        "python_vs_go_p99": ratio(summary["python"]["p99_ms"], summary["go_grpc"]["p99_ms"]),
        # CPU the server spends per request: python / go (higher: Go is leaner).
        "python_vs_go_server_cpu_per_request": ratio(summary["python"]["server_cpu_ms_per_request"],
                                                     summary["go_grpc"]["server_cpu_ms_per_request"]),
        "failures": {s: summary[s]["failures"] for s in SYSTEMS},
        "summary": summary,
        "config": {"users": args.users, "duration_s": args.duration, "rounds": args.rounds,
                   "batch": args.batch, "vocab": args.vocab, "sessions": args.sessions},
    }
    plot(summary, args.png, f"CTR model, batch {args.batch}, {args.users} locust users back to back, "
                            f"{args.sessions} sessions, {args.rounds} x {args.duration:.0f} s (same 2-core machine)")
    print(f"wrote {args.png}")
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
