#!/usr/bin/env python
"""Freshness of embeddings under load: deltas applied in place vs full-version swaps.

The model (generated under perf/out/freshness/, never committed): a WDL bundle from the training
package with two plain tables (`uid`, `item`; --rows rows of dim 16 each), exported twice, as
version 1 of base path D (served with deltas) and of base path F (served by full versions).

"Training" changes rows at a fixed rate: every --step-seconds a step overwrites --rows-per-step
random rows of the `uid` table with new values (numpy edits of the trainer-side tables: the
optimizer is not run, the delta path is: diff, write, discover, validate, apply). Every
--delta-seconds (5 s) the changes since the last publication are published:

* **delta** (system under test): `DeltaWriter.write` -> BASE_D/1/deltas/<seq>/; the host applies
  it in place at its next discovery pass.
* **full** (the baseline): the same change as a new full version, made the cheapest way there
  is (copy the newest version directory, upsert the changed rows into the copy's store, close it
  cleanly, rename it into place as BASE_F/<n+1>): the host loads and warms it, publishes it and
  retires the previous one (no TensorFlow export in the loop, which would only add to it).

Both hosts live in this process; the two systems run in interleaved phases (D, F, D, F, ...) of
--phase-seconds each, with the same load: --callers threads calling `Host.run` at batch --batch
(ids Zipf-distributed), plus one probe thread. A discovery thread calls `Host.reload` every
--poll-seconds and records each pass that applied a delta / published a version as a window.

Reported per system:
* freshness: each step reserves one probe id whose `uid` row only that step changes; the probe
  thread asks for it until the served prob differs from the one before the step; freshness = that
  time - the step's time. p50 / p99 / max.
* failed requests (any exception in the callers or the probe).
* p99 of requests that overlap an apply (swap) window / p99 of the rest (steady).
* RSS (whole process): after the load phases, with the callers idle, --rss-changes changes of
  one publication's size (rows-per-step x steps per delta) published back to back after a few
  warm-up ones; growth per change, scaled to an hour at one change per --delta-seconds. Rows
  added by a delta: 0 (deltas overwrite rows of the bundle's fixed-size tables).

Ends with `RESULT {json}`: freshness_p99_s, delta_failed_requests, delta_p99_ratio (the issue's
keys, for deltas) plus full_* for the baseline and rss figures. The machine is shared: figures
are indicative.

    flock /tmp/recstrata-bench.lock python perf/bench_freshness.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

OUT = HERE / "out" / "freshness"


def model_config(rows: int) -> dict:
    return {
        "name": "fresh", "label": "label",
        "sparse": [{"name": "uid", "dim": 16, "embedding": {"kind": "plain", "rows": rows}},
                   {"name": "item", "dim": 16, "embedding": {"kind": "plain", "rows": rows}}],
        "dense": [{"name": "d0"}],
        "model": {"type": "wdl", "hidden": [64, 32]},
        "data": {"format": "synthetic", "synthetic": {"num_train": 10, "num_eval": 10}},
    }


class Phase:
    """Requests, windows and probes of one phase of one system."""

    def __init__(self, system: str):
        self.system = system
        self.lat: list[tuple[float, float]] = []   # (start, seconds) of caller requests
        self.windows: list[tuple[float, float]] = []
        self.fresh: list[float] = []
        self.failed = 0
        self.published = 0
        self.rss = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--rows-per-step", type=int, default=200)
    ap.add_argument("--step-seconds", type=float, default=0.5)
    ap.add_argument("--delta-seconds", type=float, default=5.0)
    ap.add_argument("--poll-seconds", type=float, default=0.25)
    ap.add_argument("--phase-seconds", type=float, default=60.0)
    ap.add_argument("--phases", type=int, default=4, help="total, alternating delta / full")
    ap.add_argument("--callers", type=int, default=2)
    ap.add_argument("--rss-changes", type=int, default=40,
                    help="changes applied back to back (no load) for the RSS figure")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.phase_seconds, args.phases, args.rss_changes = 50_000, 22.0, 4, 20

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from recstrata.bundle import manifest as mf
    from recstrata.host import Host
    from recstrata.store import Store
    from recstrata.training.delta import DeltaWriter
    from recstrata.training.export import export_bundle
    from recstrata.training.keys import scheme_from_dict
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    model = RecModel(parse_config(model_config(args.rows)), name="rec_model")
    model.build_with_dummy()
    base_d, base_f = OUT / "deltas", OUT / "full"
    base_d.mkdir()
    base_f.mkdir()
    v1d = Path(export_bundle(model, base_d / "1", tiers="dram")["path"])
    shutil.copytree(v1d, base_f / "1")
    man = mf.read(v1d)
    uid_t = next(t for t in man.tables if t.name == "uid")
    uid_store = uid_t.subtables[0].store_table
    uid_rows = int(uid_t.subtables[0].rows)
    scheme = scheme_from_dict(model.embedding_tables()["uid"]["scheme"])
    tables = {}
    for tname, t in model.embedding_tables().items():
        for j, arr in enumerate(t["subtables"]):
            tables[(tname, j)] = np.array(arr, dtype=np.float32)
    writer = DeltaWriter(v1d, tables)
    ukey = ("uid", 0)

    # probe ids: ids whose uid row no other id in the pool maps to; random edits avoid them
    cand = np.arange(1, 200_000, dtype=np.int64)
    rows_of = scheme.row_keys(cand)[:, 0]
    uniq, first, counts = np.unique(rows_of, return_index=True, return_counts=True)
    probe_ids = list(cand[first[counts == 1]][:5000])
    reserved = set(int(r) for r in scheme.row_keys(np.array(probe_ids))[:, 0])
    free_rows = np.array([r for r in range(uid_rows) if r not in reserved], dtype=np.int64)
    rng = np.random.default_rng(0)
    zipf_ids = (rng.zipf(1.2, size=200_000) % 1_000_000).astype(np.int64) + 1_000_000

    def feeds(ids):
        ids = np.asarray(ids, dtype=np.int64)
        return {"uid": ids, "item": ids, "dense": np.ones((len(ids), 1), np.float32)}

    cfg = lambda b: {"models": [{"name": "m", "base_path": str(b),  # noqa: E731
                                 "version_policy": {"latest": {"num_versions": 1}}}]}
    hosts = {"delta": Host(cfg(base_d)), "full": Host(cfg(base_f))}
    lock = threading.Lock()
    state = {"phase": None}
    pending: list[dict] = []   # probes: {"id", "t", "old", "system"}
    stop_all = threading.Event()

    def caller(seed):
        r = np.random.default_rng(seed)
        while not stop_all.is_set():
            ph = state["phase"]
            if ph is None:
                time.sleep(0.01)
                continue
            ids = zipf_ids[r.integers(0, len(zipf_ids), args.batch)]
            t0 = time.perf_counter()
            try:
                hosts[ph.system].run("m", feeds(ids))
                ph.lat.append((t0, time.perf_counter() - t0))
            except Exception:
                ph.failed += 1

    def prober():
        while not stop_all.is_set():
            ph = state["phase"]
            with lock:
                todo = [p for p in pending if ph is not None and p["system"] == ph.system]
            if not todo:
                time.sleep(0.005)
                continue
            ids = np.array([p["id"] for p in todo])
            try:
                prob = hosts[ph.system].run("m", feeds(ids))["prob"]
            except Exception:
                ph.failed += 1
                continue
            now = time.perf_counter()
            with lock:
                for p, v in zip(todo, prob):
                    if abs(float(v) - p["old"]) > 1e-7:
                        ph.fresh.append(now - p["t"])
                        pending.remove(p)
            time.sleep(0.002)

    def discovery():
        while not stop_all.is_set():
            ph = state["phase"]
            if ph is None:
                time.sleep(0.01)
                continue
            h = hosts[ph.system]
            t0 = time.perf_counter()
            before = json.dumps(h.status("m")["serving"]) + str(_applied(h))
            try:
                h.reload("m")
            except Exception:
                ph.failed += 1
            t1 = time.perf_counter()
            if json.dumps(h.status("m")["serving"]) + str(_applied(h)) != before:
                ph.windows.append((t0, t1))
            time.sleep(args.poll_seconds)

    def _applied(h):
        for v in h.status("m")["versions"]:
            if v["state"] == "ready" and "deltas" in v:
                return v["deltas"]["applied_sequence"]
        return 0

    full_next = [2]

    def publish_full(changed_rows: np.ndarray):
        newest = max(int(p.name) for p in base_f.iterdir() if p.name.isdigit())
        n = full_next[0]
        full_next[0] += 1
        tmp = base_f / f".{n}.tmp"
        shutil.copytree(base_f / str(newest), tmp,
                        ignore=shutil.ignore_patterns("LOCK"))
        with Store(str(tmp / "store"), create_if_missing=False) as st:
            st.table(uid_store).upsert(changed_rows, tables[ukey][changed_rows])
        os.rename(tmp, base_f / str(n))
        # old versions: drop the ones the host has finished with
        for p in base_f.iterdir():
            if p.name.isdigit() and int(p.name) < n - 1:
                shutil.rmtree(p, ignore_errors=True)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
    threads += [threading.Thread(target=prober), threading.Thread(target=discovery)]
    for t in threads:
        t.start()
    phases: list[Phase] = []
    probe_iter = iter(probe_ids)
    # rows changed since host F's newest version (the delta writer diffs by itself: its first
    # delta after a full phase also carries that phase's rows)
    changed_f: set[int] = set()
    try:
        for k in range(args.phases):
            ph = Phase("delta" if k % 2 == 0 else "full")
            with lock:
                pending.clear()
            state["phase"] = ph
            time.sleep(1.0)   # callers settle on this host
            ph.rss.append(harness.rss_mib()["rss_mib"])
            t_end = time.perf_counter() + args.phase_seconds
            last_pub = time.perf_counter()
            while time.perf_counter() < t_end:
                # one training step: random rows + one probe row
                pid = int(next(probe_iter))
                prow = int(scheme.row_keys(np.array([pid]))[0, 0])
                old = float(hosts[ph.system].run("m", feeds([pid]))["prob"][0])
                rows = rng.choice(free_rows, args.rows_per_step - 1, replace=False)
                rows = np.append(rows, prow)
                tables[ukey][rows] = rng.normal(size=(len(rows), tables[ukey].shape[1])).astype(np.float32)
                t_step = time.perf_counter()
                changed_f.update(int(r) for r in rows)
                with lock:
                    pending.append({"id": pid, "t": t_step, "old": old, "system": ph.system})
                if time.perf_counter() - last_pub >= args.delta_seconds:
                    if ph.system == "delta":
                        writer.write(tables)
                    else:
                        publish_full(np.array(sorted(changed_f), dtype=np.int64))
                        changed_f.clear()
                    last_pub = time.perf_counter()
                    ph.published += 1
                    ph.rss.append(harness.rss_mib()["rss_mib"])
                time.sleep(max(0.0, args.step_seconds - (time.perf_counter() - t_step)))
            # the last changes: publish, then give the probes time to see them
            if ph.system == "delta":
                writer.write(tables)
            else:
                publish_full(np.array(sorted(changed_f), dtype=np.int64))
                changed_f.clear()
            ph.published += 1
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:
                with lock:
                    if not any(p["system"] == ph.system for p in pending):
                        break
                time.sleep(0.05)
            with lock:
                ph.unseen = sum(p["system"] == ph.system for p in pending)
            ph.rss.append(harness.rss_mib()["rss_mib"])
            phases.append(ph)
            state["phase"] = None
        # RSS: no load, back-to-back changes of one step's size x delta cadence, measured after a
        # few warm-up changes (the allocator's first growth), per system.
        import gc

        per = args.rows_per_step * int(round(args.delta_seconds / args.step_seconds))
        rss_runs = {}
        for system, warm, n in (("delta", 5, args.rss_changes), ("full", 2, max(2, args.rss_changes // 4))):
            ph = Phase(system)
            state["phase"] = ph        # the discovery thread drives the host, callers stay idle
            marks = []
            for i in range(warm + n):
                if i == warm:
                    gc.collect()
                    time.sleep(1.0)
                    marks.append(harness.rss_mib()["rss_mib"])
                rows = rng.choice(free_rows, per, replace=False)
                tables[ukey][rows] = rng.normal(size=(per, tables[ukey].shape[1])).astype(np.float32)
                changed_f.update(int(r) for r in rows)
                before = len(ph.windows)
                if system == "delta":
                    writer.write(tables)
                else:
                    publish_full(np.array(sorted(changed_f), dtype=np.int64))
                    changed_f.clear()
                end = time.perf_counter() + 60
                while len(ph.windows) == before and time.perf_counter() < end:
                    time.sleep(0.02)
            time.sleep(2.0 if system == "full" else 0.5)   # the retired version is closed
            gc.collect()
            marks.append(harness.rss_mib()["rss_mib"])
            rss_runs[system] = (marks[-1] - marks[0]) / n
            state["phase"] = None
    finally:
        stop_all.set()
        for t in threads:
            t.join()
    dstat = [v for v in hosts["delta"].status("m")["versions"] if "deltas" in v]
    from prometheus_client.parser import text_string_to_metric_families

    def _gauge(text, name):
        return [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == name]

    apply_s = _gauge(hosts["delta"].metrics_text(), "rs_host_delta_apply_seconds")
    load_s = _gauge(hosts["full"].metrics_text(), "rs_host_load_seconds")
    apply_ms = float(np.mean(apply_s)) * 1e3 if apply_s else float("nan")
    load_ms = float(np.median(load_s)) * 1e3 if load_s else float("nan")
    print(f"newest delta apply {apply_ms:.1f} ms; full-version loads (open + warmup), median "
          f"{load_ms:.0f} ms over {len(load_s)} versions")
    for h in hosts.values():
        h.close()

    def summarize(system):
        phs = [p for p in phases if p.system == system]
        lat = [(s, d) for p in phs for (s, d) in p.lat]
        win = [w for p in phs for w in p.windows]
        during = [d for s, d in lat if any(a <= s <= b or a <= s + d <= b for a, b in win)]
        steady = [d for s, d in lat if not any(a <= s <= b or a <= s + d <= b for a, b in win)]
        fresh = [f for p in phs for f in p.fresh]
        per_change = rss_runs.get(system, float("nan"))
        return {
            "freshness_p50_s": float(np.percentile(fresh, 50)) if fresh else float("nan"),
            "freshness_p99_s": harness.p99(fresh),
            "freshness_max_s": float(max(fresh)) if fresh else float("nan"),
            "probes": len(fresh), "probes_unseen": sum(getattr(p, "unseen", 0) for p in phs),
            "failed_requests": sum(p.failed for p in phs),
            "requests": len(lat), "windows": len(win),
            "requests_during_apply": len(during),
            "p99_during_ms": harness.p99(during) * 1e3,
            "p99_steady_ms": harness.p99(steady) * 1e3,
            "p99_ratio": harness.p99(during) / harness.p99(steady) if during and steady else float("nan"),
            "published": sum(p.published for p in phs),
            "rss_growth_mib_per_change": per_change,
            "rss_growth_mib_per_hour_scaled": per_change * 3600.0 / args.delta_seconds,
        }

    d, f = summarize("delta"), summarize("full")
    for name, s in (("delta", d), ("full", f)):
        print(f"{name:5s}: freshness p50 {s['freshness_p50_s']:.2f} s p99 {s['freshness_p99_s']:.2f} s "
              f"max {s['freshness_max_s']:.2f} s ({s['probes']} probes, {s['probes_unseen']} unseen); "
              f"failed {s['failed_requests']} of {s['requests']}; p99 during {s['p99_during_ms']:.2f} ms "
              f"({s['requests_during_apply']} requests in {s['windows']} windows) / steady "
              f"{s['p99_steady_ms']:.2f} ms = {s['p99_ratio']:.2f}; RSS "
              f"{s['rss_growth_mib_per_change']:+.2f} MiB per change "
              f"({s['rss_growth_mib_per_hour_scaled']:+.0f} MiB/h scaled)", flush=True)
    if dstat:
        print("delta host status:", json.dumps(dstat[0]["deltas"]))

    def draw(fig):
        ax = fig.add_subplot(1, 2, 1)
        fr = {s: [x for p in phases if p.system == s for x in p.fresh] for s in ("delta", "full")}
        ax.boxplot([fr["delta"] or [0], fr["full"] or [0]])
        ax.set_xticks([1, 2], ["delta", "full version"])
        ax.set_ylabel("freshness (s): step -> first served prediction")
        ax.grid(axis="y", alpha=0.3)
        ax2 = fig.add_subplot(1, 2, 2)
        harness.grouped_bars(ax2, ["steady p99", "p99 during apply/swap"],
                             {"delta": [d["p99_steady_ms"], d["p99_during_ms"]],
                              "full version": [f["p99_steady_ms"], f["p99_during_ms"]]}, "ms")

    harness.save_plot(harness.plot_path("freshness", args.quick), draw, figsize=(10, 4.5))
    result = {
        "freshness_p99_s": d["freshness_p99_s"],
        "delta_failed_requests": d["failed_requests"],
        "delta_p99_ratio": d["p99_ratio"],
        "delta_freshness_p50_s": d["freshness_p50_s"],
        "delta_probes_unseen": d["probes_unseen"],
        "delta_rss_growth_mib_per_hour_scaled": d["rss_growth_mib_per_hour_scaled"],
        "full_freshness_p99_s": f["freshness_p99_s"],
        "full_failed_requests": f["failed_requests"],
        "full_p99_ratio": f["p99_ratio"],
        "full_rss_growth_mib_per_hour_scaled": f["rss_growth_mib_per_hour_scaled"],
        "freshness_full_over_delta": f["freshness_p99_s"] / d["freshness_p99_s"],
        "delta_apply_ms": apply_ms, "full_load_ms": load_ms,
        "rows": args.rows, "rows_per_step": args.rows_per_step, "delta_seconds": args.delta_seconds,
        "load_avg_1m": os.getloadavg()[0], "quick": args.quick,
    }
    harness.print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
