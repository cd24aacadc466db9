"""HTTP load test with a hot reload midway: `recstrata serve` vs TF Python behind the same server.

    python perf/load_test.py [--quick] [--users 4] [--rate 20] [--batch 16] [--duration 40]
                             [--rounds 2] [--vocab 20000] [--md perf/results/serving_load.md]

For each system (recstrata: ``recstrata serve``; baseline:
perf/tf_baseline_server.py, ``tf.saved_model.load`` + signature call behind the
same stdlib HTTP layer), in interleaved rounds:
1. a fresh base dir gets version 1 of a Criteo-shaped SavedModel (13 dense
   floats, 26 categorical ids hashed into 26 x --vocab (20,000) x 16 embedding
   rows, a 429-256-128-1 MLP; generated once under perf/out/serving_load/);
2. the server starts on 127.0.0.1 (free port), locust runs headless for
   ``--duration`` seconds with ``--users`` users at ``--rate`` requests/s each
   (constant throughput: latency is measured below saturation);
3. at 40% of the run version 2 (other weights) is copied in (temp name +
   rename); the driver watches GET /v1/models/ctr until version 2 serves and
   version 1 is unloaded;
4. every request's latency, success and serving version are split into the
   steady window (before the copy, after a 3 s ramp), the reload window (copy
   until swap + unload + 1 s) and after; the server's RSS is sampled every 50 ms.
Reported per system: p50/p99/max latency and errors per window, how requests
switched versions (flip-backs to v1 after the first v2 answer), RSS steady vs
peak during the reload; ratios recstrata vs TF. All traffic goes to
127.0.0.1; every process started here is stopped at the end (also on errors).
The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import grouped_bars, plot_path, print_result, save_plot, stop_process  # noqa: E402
from serving_models import LOAD_DIM as DIM, LOAD_VOCAB as VOCAB, N_CAT, N_DENSE, build_ctr_model  # noqa: E402,F401

OUT = HERE / "out" / "serving_load"


def ensure_templates(vocab: int) -> dict[int, Path]:
    tdir = OUT / ("templates" if vocab == VOCAB else f"templates_vocab{vocab}")
    paths = {1: tdir / "v1", 2: tdir / "v2"}
    if not all((p / "saved_model.pb").is_file() for p in paths.values()):
        subprocess.run([sys.executable, __file__, "--make-models", str(tdir), "--vocab", str(vocab)], check=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return paths


# ---- processes -----------------------------------------------------------------

def start_server(system: str, base: Path, log_path: Path):
    if system == "recstrata":
        cmd = [sys.executable, "-m", "recstrata.cli", "serve", "--model", f"ctr={base}", "--port", "0",
               "--poll-seconds", "0.5", "--log-level", "WARNING"]
    else:
        cmd = [sys.executable, str(HERE / "tf_baseline_server.py"), "--model", f"ctr={base}", "--port", "0",
               "--poll-seconds", "0.5"]
    err = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(180)
    if not line or not line[0].startswith("serving on http://127.0.0.1:"):
        stop_process(proc)
        raise RuntimeError(f"{system} server did not start: {line!r}; see {log_path}")
    return proc, line[0].split()[-1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(self.every):
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for ln in f:
                        if ln.startswith("VmRSS:"):
                            self.samples.append((time.time(), int(ln.split()[1]) / 1024.0))
                            break
            except OSError:
                return


# ---- one run -----------------------------------------------------------------

def run_once(system: str, tag: str, templates, args) -> dict:
    work = OUT / f"run_{tag}"
    shutil.rmtree(work, ignore_errors=True)
    base = work / "ctr"
    base.mkdir(parents=True)
    shutil.copytree(templates[1], base / "1")
    procs = []
    try:
        server, url = start_server(system, base, work / "server.log")
        procs.append(server)
        # sanity: the model answers and says which version did
        body = json.dumps({"inputs": {"dense": [[0.1] * N_DENSE], "cat": [list(range(N_CAT))]}}).encode()
        req = urllib.request.Request(url + "/v1/models/ctr:predict", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            first = json.loads(r.read())
        assert first["model_version"] == 1, first
        rss = RssSampler(server.pid)
        rss.start()
        log = work / "requests.log"
        env = dict(os.environ, RS_MODEL="ctr", RS_BATCH=str(args.batch), RS_RATE=str(args.rate), RS_LOG=str(log))
        loc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
                                "-u", str(args.users), "-r", str(args.users), "-t", f"{int(round(args.duration))}s",
                                "--host", url, "--only-summary", "--stop-timeout", "5",
                                "--loglevel", "WARNING"],
                               stdout=open(work / "locust.out", "w"), stderr=subprocess.STDOUT, env=env)
        procs.append(loc)
        t_start = time.time()
        time.sleep(args.duration * 0.4)
        if loc.poll() is not None:
            raise RuntimeError(f"locust exited early ({loc.returncode}); see {work}/locust.out")
        t_copy = time.time()
        shutil.copytree(templates[2], base / ".2.tmp")
        os.rename(base / ".2.tmp", base / "2")
        t_copied = time.time()
        t_swap = t_unloaded = None
        while time.time() - t_copy < args.duration:
            st = get_json(url + "/v1/models/ctr")
            if t_swap is None and st["serving"] == [2]:
                t_swap = time.time()
            states = {v["version"]: v["state"] for v in st["versions"]}
            if t_swap is not None and states.get(1, "END") == "END":
                t_unloaded = time.time()
                break
            time.sleep(0.05)
        try:
            loc.wait(args.duration + 60)
        except subprocess.TimeoutExpired:
            pass
        rss.halt.set()
        rss.join()
    finally:
        for p in reversed(procs):
            stop_process(p)
    if t_swap is None:
        raise RuntimeError(f"{system}: version 2 never served; see {work}/server.log")
    t_end_reload = (t_unloaded or t_swap) + 1.0
    rec = np.loadtxt(log, ndmin=2) if log.stat().st_size else np.zeros((0, 4))
    t, ms, ok, ver = rec[:, 0], rec[:, 1], rec[:, 2].astype(bool), rec[:, 3].astype(int)
    windows = {
        "steady": (t >= t_start + 3.0) & (t < t_copy),
        "reload": (t >= t_copy) & (t < t_end_reload),
        "after": t >= t_end_reload,
    }
    out = {"system": system, "requests": int(len(t)), "errors": int((~ok).sum()),
           "copy_s": round(t_copied - t_copy, 3), "swap_after_copy_s": round(t_swap - t_copy, 3),
           "unload_after_copy_s": None if t_unloaded is None else round(t_unloaded - t_copy, 3)}
    for name, m in windows.items():
        lat = ms[m & ok]
        out[name] = {"n": int(m.sum()), "errors": int((m & ~ok).sum()),
                     "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": _pct(lat, 100)}
    order = np.argsort(t)
    vs = ver[order][ok[order]]
    first_v2 = int(np.argmax(vs == 2)) if (vs == 2).any() else len(vs)
    out["flip_backs_to_v1"] = int((vs[first_v2:] == 1).sum())
    out["served_by"] = {"v1": int((vs == 1).sum()), "v2": int((vs == 2).sum())}
    samples = np.array(rss.samples) if rss.samples else np.zeros((0, 2))
    steady_rss = samples[(samples[:, 0] < t_copy), 1]
    reload_rss = samples[(samples[:, 0] >= t_copy) & (samples[:, 0] < t_end_reload), 1]
    after_rss = samples[samples[:, 0] >= t_end_reload, 1]
    out["rss_mb"] = {"steady": _r(np.median(steady_rss)) if len(steady_rss) else None,
                     "reload_peak": _r(reload_rss.max()) if len(reload_rss) else None,
                     "after": _r(np.median(after_rss)) if len(after_rss) else None}
    return out


def _pct(a, q):
    return round(float(np.percentile(a, q)), 3) if len(a) else None


def _r(x):
    return round(float(x), 1)


# ---- report ------------------------------------------------------------------

def median_of(runs, *keys):
    vals = []
    for r in runs:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return round(statistics.median(vals), 3) if vals else None


def summarize(runs_by_system):
    summary = {}
    for system, runs in runs_by_system.items():
        s = {"rounds": len(runs), "requests": sum(r["requests"] for r in runs),
             "errors": sum(r["errors"] for r in runs),
             "flip_backs_to_v1": sum(r["flip_backs_to_v1"] for r in runs)}
        for w in ("steady", "reload", "after"):
            s[w] = {k: median_of(runs, w, k) for k in ("p50_ms", "p99_ms", "max_ms")}
            s[w]["errors"] = sum(r[w]["errors"] for r in runs)
            s[w]["n"] = sum(r[w]["n"] for r in runs)
        s["swap_after_copy_s"] = median_of(runs, "swap_after_copy_s")
        s["rss_mb"] = {k: median_of(runs, "rss_mb", k) for k in ("steady", "reload_peak", "after")}
        s["reload_p99_over_steady_p99"] = _ratio(s["reload"]["p99_ms"], s["steady"]["p99_ms"])
        s["reload_rss_growth_mb"] = (None if None in (s["rss_mb"]["reload_peak"], s["rss_mb"]["steady"])
                                     else round(s["rss_mb"]["reload_peak"] - s["rss_mb"]["steady"], 1))
        summary[system] = s
    rs, tf = summary.get("recstrata"), summary.get("tf_python")
    ratios = {}
    if rs and tf:
        for w in ("steady", "reload"):
            for k in ("p50_ms", "p99_ms"):
                ratios[f"tf_over_rs_{w}_{k[:3]}"] = _ratio(tf[w][k], rs[w][k])
    return summary, ratios


def _ratio(a, b):
    return None if not a or not b else round(a / b, 2)


def markdown(summary, ratios, args, cmd) -> str:
    lines = [f"## {args.users} users x {args.rate} req/s, batch {args.batch}, "
             f"model {N_CAT} x {args.vocab} x {DIM} embedding rows "
             f"({N_CAT * args.vocab * DIM * 4 / 2**20:.0f} MiB) + MLP", "",
             f"Command: `{cmd}`", "",
             f"{args.users} locust users x {args.rate} req/s each (constant throughput), batch {args.batch} "
             f"JSON requests, {args.duration} s per run, {args.rounds} interleaved round(s) per system; "
             "version 2 copied in at 40% of the run. Latency = locust client time per request (ms), "
             "medians over rounds. Machine: 2 cores shared with other jobs.", "",
             "| system | window | requests | errors | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    for system, s in summary.items():
        for w in ("steady", "reload", "after"):
            lines.append(f"| {system} | {w} | {s[w]['n']} | {s[w]['errors']} | {s[w]['p50_ms']} | "
                         f"{s[w]['p99_ms']} | {s[w]['max_ms']} |")
    lines += ["", "| system | swap after copy (s) | reload p99 / steady p99 | RSS steady MB | RSS peak in reload MB "
              "| RSS after MB | flip-backs to v1 | total errors |", "|---|---|---|---|---|---|---|---|"]
    for system, s in summary.items():
        lines.append(f"| {system} | {s['swap_after_copy_s']} | {s['reload_p99_over_steady_p99']} | "
                     f"{s['rss_mb']['steady']} | {s['rss_mb']['reload_peak']} | {s['rss_mb']['after']} | "
                     f"{s['flip_backs_to_v1']} | {s['errors']} |")
    lines += ["", "Ratios (TF Python / recstrata): " + ", ".join(f"{k} {v}" for k, v in ratios.items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one 20 s round per system (< 2 minutes)")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second per user")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--systems", default="recstrata,tf_python")
    ap.add_argument("--vocab", type=int, default=VOCAB,
                    help="embedding rows per categorical feature (model size: 26 x vocab x 16 floats)")
    ap.add_argument("--md", default=None, help="also write the markdown summary here")
    ap.add_argument("--make-models", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_models:
        d = Path(args.make_models)
        d.mkdir(parents=True, exist_ok=True)
        for v, seed in ((1, 1), (2, 2)):
            shutil.rmtree(d / f"v{v}", ignore_errors=True)
            build_ctr_model(d / f"v{v}", seed, args.vocab)
        return 0
    if args.quick:
        args.duration, args.rounds = 20.0, 1
    systems = [s for s in args.systems.split(",") if s]
    templates = ensure_templates(args.vocab)
    runs = {s: [] for s in systems}
    for rnd in range(args.rounds):
        order = systems if rnd % 2 == 0 else systems[::-1]
        for system in order:
            r = run_once(system, f"{system}_{rnd}", templates, args)
            runs[system].append(r)
            print(f"round {rnd} {system}: steady p50 {r['steady']['p50_ms']} p99 {r['steady']['p99_ms']} | "
                  f"reload p50 {r['reload']['p50_ms']} p99 {r['reload']['p99_ms']} max {r['reload']['max_ms']} | "
                  f"errors {r['errors']} flip-backs {r['flip_backs_to_v1']} swap {r['swap_after_copy_s']} s | "
                  f"rss {r['rss_mb']}", flush=True)
    summary, ratios = summarize(runs)
    cmd = "python perf/load_test.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(summary, ratios, args, cmd.strip())
    print(text)
    (OUT / "summary.md").write_text(text)
    if args.md:  # appended, so several configurations can share one file
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        with open(args.md, "a") as f:
            f.write(text + "\n")
    result = {"vocab": args.vocab, "users": args.users, "rate_per_user": args.rate, "batch": args.batch, "duration_s": args.duration,
              "rounds": args.rounds, "systems": summary, "ratios": ratios, "runs": runs}
    save_plot(plot_path("serving_load", args.quick), lambda fig: plot(fig, result))
    print_result(result)
    return 0


def plot(fig, result: dict) -> None:
    """Main figure: p50 / p99 client latency per system in the steady and the reload window."""
    systems = result["systems"]
    ax = fig.add_subplot(1, 1, 1)
    groups = [f"{w} {k[:3]}" for w in ("steady", "reload") for k in ("p50_ms", "p99_ms")]
    grouped_bars(ax, groups, {s: [v[w][k] if v[w][k] is not None else float("nan")
                                  for w in ("steady", "reload") for k in ("p50_ms", "p99_ms")]
                              for s, v in systems.items()}, "client latency, ms")
    ax.set_title(f"HTTP load test with a hot reload ({result['users']} users x "
                 f"{result['rate_per_user']:g} req/s, batch {result['batch']})")


if __name__ == "__main__":
    sys.exit(main())
