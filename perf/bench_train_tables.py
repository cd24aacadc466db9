"""Training a dynamic table larger than its DRAM budget (issue 14).

Variants, each in its own process (peak RSS is per process), interleaved round by round:

* ``dyn_ssd``  - the ``uid`` table is dynamic with a DRAM budget of a third of its bytes
  (rows + Adagrad slots); the rest lives in the store's SSD tier (files in the page cache on
  this machine: the process's resident memory is what is bounded, not disk I/O);
* ``dyn_dram`` - the same model, the budget larger than the table (fully in DRAM);
* ``plain``    - today's fixed-size ``tf.Variable`` plain table (hashed ids mod rows) with as
  many rows as the dynamic table ends up with (the same embedding bytes), trained with the
  config's optimizer (Adam) like every plain table.

The parent generates the data once (stacked batches in an .npz, so the synthetic teacher's
per-id parameters are not in the measured processes); each child trains two epochs (the second reads every row of the table again, so the working set
is the whole table, three times the budget) on pre-generated batches (timed: the step loop only, after 5
warm-up steps), then reports eval AUC and its peak RSS (VmHWM). RESULT keys:
``dynamic_rss_over_budget_gb`` (peak RSS of dyn_ssd minus its DRAM budget, GB),
``dynamic_throughput_ratio`` (dyn_ssd steps/s over dyn_dram, median of the rounds),
``dynamic_auc_delta`` (dyn_ssd AUC minus dyn_dram AUC), plus the plain table's AUC and
throughput ratio. The machine is shared: figures are indicative.

    flock /tmp/recstrata-bench.lock python perf/bench_train_tables.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

DIM = 16
WIDTH = DIM + 1           # deepfm: + first-order column
EPOCHS = 2                # the 2nd epoch reads every row again: the whole table is the working set


def make_config(variant: str, num_train: int, num_eval: int, uid_vocab: int, budget: int,
                plain_rows: int, store_dir: str | None) -> dict:
    if variant == "plain":
        uid = {"kind": "plain", "rows": int(plain_rows)}
    else:
        uid = {"kind": "dynamic", "admission": {"threshold": 1},
               "optimizer": {"learning_rate": 0.05}, "dram_budget_bytes": int(budget)}
    return {
        "name": "bench_dyn", "label": "label",
        "sparse": [
            {"name": "uid", "dim": DIM, "embedding": uid},
            {"name": "item", "dim": DIM, "embedding": {"kind": "plain", "rows": 20000}},
            {"name": "cat", "dim": DIM, "embedding": {"kind": "plain", "rows": 500}},
        ],
        "dense": [{"name": "d0"}, {"name": "d1"}],
        "model": {"type": "deepfm", "hidden": [64, 32]},
        "data": {"format": "synthetic",
                 "synthetic": {"num_train": num_train, "num_eval": num_eval, "seed": 3,
                               "zipf": 0.9, "vocab": {"uid": uid_vocab, "item": 20000, "cat": 500}}},
        "train": {"batch_size": 1024, "epochs": 1, "learning_rate": 0.002, "progress": False,
                  "devices": "cpu", "dynamic_store_dir": store_dir},
    }


def write_data(cfg_dict: dict, path: Path) -> int:
    """Every padded batch of the train and eval splits, stacked, into one .npz: the children
    train from it, so the synthetic teacher (GBs of per-id parameters for a large vocabulary)
    is never in the measured processes. Returns the distinct uid count of the train split."""
    from recstrata.training import data as D
    from recstrata.training.spec import parse_config

    cfg = parse_config(cfg_dict)
    layout = D.Layout.for_global_batch(cfg.train.batch_size)
    arrays, seen = {}, set()
    for split in ("train", "eval"):
        batches = list(D.worker_batches(cfg, D.make_source(cfg, split), layout))
        for k in batches[0]:
            arrays[f"{split}:{k}"] = np.stack([np.asarray(b[k]) for b in batches])
        if split == "train":
            for b in batches:
                u = np.asarray(b["uid"])[:, 0]
                seen.update(np.unique(u[(np.asarray(b["uid/len"]) > 0) & (np.asarray(b["weight"]) > 0)]).tolist())
    np.savez(path, **arrays)
    return len(seen)


def _batches(data, split: str) -> list[dict]:
    import tensorflow as tf

    keys = [k.split(":", 1)[1] for k in data.files if k.startswith(split + ":")]
    n = len(data[f"{split}:{keys[0]}"])
    stacked = {k: data[f"{split}:{k}"] for k in keys}
    return [{k: tf.constant(v[i]) for k, v in stacked.items()} for i in range(n)]


def child(cfg_path: str, data_path: str, out_path: str) -> None:
    from recstrata.training import metrics
    from recstrata.training.spec import load_config
    from recstrata.training.trainer import Trainer

    cfg = load_config(cfg_path)
    tr = Trainer(cfg, log=lambda s: None)
    tr._build_steps()
    with np.load(data_path) as data:
        train, ev = _batches(data, "train"), _batches(data, "eval")
    times = []
    for i, b in enumerate(train * EPOCHS):
        t0 = time.perf_counter()
        loss, _p, _w = tr._train_step(tr._distribute(b))
        float(loss)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    p, y, w = [], [], []
    for b in ev:
        p.append(tr.model.predict_batch(b))
        y.append(b["label"].numpy())
        w.append(b["weight"].numpy())
    p, y, w = np.concatenate(p), np.concatenate(y), np.concatenate(w)
    keep = w > 0
    res = {"steps": len(train) * EPOCHS, "step_s_median": float(np.median(times)),
           "steps_per_s": float(len(times) / np.sum(times)),
           "auc": float(metrics.auc(y[keep], p[keep])), "mem": harness.rss_mib()}
    if tr.dynamic_store is not None:
        st = tr.dynamic_store.stats()
        res["dynamic"] = st["tables"]["uid"]
        res["store"] = st["store"]["tables"]["dyn_uid"]
    tr.close()
    Path(out_path).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--num-train", type=int, default=None, help="training examples per epoch")
    ap.add_argument("--uid-vocab", type=int, default=None, help="uid ids drawn from [0, this)")
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "DATA", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    num_train, num_eval, vocab = (120_000, 20_000, 2_000_000) if args.quick else (1_000_000, 100_000, 20_000_000)
    rounds = args.rounds or (2 if args.quick else 3)
    num_train = args.num_train or num_train
    vocab = args.uid_vocab or vocab
    work = Path(tempfile.mkdtemp(prefix="bench-train-tables-"))
    data_path = work / "data.npz"
    rows = write_data(make_config("dyn_dram", num_train, num_eval, vocab, 1 << 20, 1, None), data_path)
    row_bytes = 4 * 2 * WIDTH                                   # [embedding | accumulator]
    table_bytes = rows * row_bytes
    budget = table_bytes // 3
    print(f"uid: {rows:,} distinct ids -> dynamic table {table_bytes / 2**20:.1f} MiB "
          f"(rows + slots), DRAM budget {budget / 2**20:.1f} MiB", flush=True)
    variants = {"dyn_ssd": budget, "dyn_dram": 4 * table_bytes + (64 << 20), "plain": 0}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(rounds):
        for v, b in variants.items():
            sd = str(work / f"store_{v}_{r}") if v != "plain" else None
            cp = work / f"cfg_{v}_{r}.json"
            cp.write_text(json.dumps(make_config(v, num_train, num_eval, vocab, b, rows, sd)))
            out = work / f"out_{v}_{r}.json"
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            p = subprocess.run([sys.executable, __file__, "--child", str(cp), str(data_path), str(out)], env=env,
                               capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"{v} round {r} failed:\n{p.stderr[-3000:]}")
            res = json.loads(out.read_text())
            results[v].append(res)
            print(f"round {r} {v:<9} {res['steps_per_s']:.2f} steps/s, AUC {res['auc']:.5f}, "
                  f"peak RSS {res['mem']['peak_mib']:.0f} MiB"
                  + (f", DRAM rows {res['store']['dram_rows']:,} of {res['store']['rows']:,}, "
                     f"SSD hits {res['store']['ssd_hits']:,}" if "store" in res else ""), flush=True)

    def med(v, k):
        return float(np.median([x[k] for x in results[v]]))

    ssd, dram, plain = results["dyn_ssd"], results["dyn_dram"], results["plain"]
    ratio = float(np.median([a["steps_per_s"] / b["steps_per_s"] for a, b in zip(ssd, dram)]))
    plain_ratio = float(np.median([a["steps_per_s"] / b["steps_per_s"] for a, b in zip(ssd, plain)]))
    peak = max(x["mem"]["peak_mib"] for x in ssd) * 2**20
    summary = {
        "dynamic_rss_over_budget_gb": round((peak - budget) / 1e9, 3),
        "dynamic_throughput_ratio": round(ratio, 3),
        "dynamic_auc_delta": round(med("dyn_ssd", "auc") - med("dyn_dram", "auc"), 6),
        "dynamic_vs_plain_throughput_ratio": round(plain_ratio, 3),
        "dynamic_auc": round(med("dyn_ssd", "auc"), 5),
        "plain_auc": round(med("plain", "auc"), 5),
        "dynamic_minus_plain_auc": round(med("dyn_ssd", "auc") - med("plain", "auc"), 5),
        "table_mib": round(table_bytes / 2**20, 1), "budget_mib": round(budget / 2**20, 1),
        "table_over_budget": round(table_bytes / budget, 2),
        "peak_rss_mib": {v: round(max(x["mem"]["peak_mib"] for x in results[v]), 1) for v in results},
        "steps_per_s": {v: round(med(v, "steps_per_s"), 3) for v in results},
        "ssd_dram_rows": ssd[-1]["store"]["dram_rows"], "ssd_rows": ssd[-1]["store"]["rows"],
        "ssd_hits": ssd[-1]["store"]["ssd_hits"], "dram_hits": ssd[-1]["store"]["dram_hits"],
        "rounds": rounds, "quick": bool(args.quick), "num_train": num_train,
        "machine": harness.machine_notes(),
    }

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        names = list(results)
        ax1.bar(names, [summary["steps_per_s"][v] for v in names])
        ax1.set_ylabel("train steps/s (batch 1024)")
        ax2.bar(names, [summary["peak_rss_mib"][v] for v in names])
        ax2.axhline(budget / 2**20, color="r", ls="--", label="dyn_ssd DRAM budget")
        ax2.set_ylabel("peak RSS (MiB)")
        ax2.legend(fontsize=7)

    harness.save_plot(harness.plot_path("train_tables", args.quick), draw)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    harness.print_result(summary)


if __name__ == "__main__":
    main()
