"""`recstrata demo`: the main job end to end, on synthetic data, in a couple of minutes.

1. generate synthetic click data with a known teacher (recstrata.training.synthetic);
2. train a DeepFM with plain and compressed (multihash, binary_code) embeddings;
3. export it as a bundle whose DRAM cache is a small share of the tables (SSD tier for the rest);
4. serve the bundle through the C ABI (recstrata.processor.Model over librecstrata.so) and print
   the AUC of the served predictions, their parity with the Keras model, the tier hit rates and
   the serving latency.

No network and no server: everything runs in this process, under a work directory (a temporary
one unless --workdir is given). ``run_demo`` returns the figures as a dict (tests use it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Callable

import numpy as np

# Features: a large plain table, compressed tables (multihash qr, binary_code, kway), a shared
# table, string ids, multi-valued features with different combiners.
DEMO_CONFIG = {
    "name": "demo",
    "label": "label",
    "sparse": [
        {"name": "user", "dim": 8, "embedding": {"kind": "plain", "rows": 100000}},
        {"name": "item", "dtype": "string", "dim": 8,
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 100000, "m": 320}},
        {"name": "shop", "dim": 8, "embedding": {"kind": "binary_code", "bits": 24, "block_bits": 6}},
        # a dynamic table: raw ids, rows only for ids seen twice, in the native tiered store
        # during training (64 KiB of DRAM, the rest on its SSD tier); the bundle links its files
        {"name": "category", "dim": 8,
         "embedding": {"kind": "dynamic", "admission": {"threshold": 2},
                       "eviction": {"max_rows": 100000}, "dram_budget_bytes": 65536}},
        {"name": "recent_items", "dtype": "string", "dim": 8, "max_values": 5, "combiner": "mean",
         "table": "item",
         "embedding": {"kind": "multihash", "strategy": "qr", "vocab": 100000, "m": 320}},
        {"name": "tags", "dim": 8, "max_values": 4, "combiner": "sqrtn",
         "embedding": {"kind": "multihash", "strategy": "kway", "sizes": [1009, 1013]}},
    ],
    "dense": [{"name": "price", "transform": "log1p"}, {"name": "age", "transform": "standard",
                                                        "mean": 0.0, "std": 1.0}],
    "model": {"type": "deepfm", "hidden": [64, 32]},
    "data": {"format": "synthetic",
             "synthetic": {"num_train": 200000, "num_eval": 20000, "seed": 7, "zipf": 1.1,
                           "vocab": {"user": 20000, "item": 20000, "shop": 10000,
                                     "category": 2000, "recent_items": 20000, "tags": 5000}}},
    "train": {"batch_size": 1024, "epochs": 1, "learning_rate": 0.003, "seed": 1},
}


def _pct(a, q):
    return float(np.percentile(np.asarray(a) * 1e3, q))


def run_demo(workdir: str | None = None, *, num_train: int | None = None,
             num_eval: int | None = None, dram_fraction: float = 0.05, latency_requests: int = 200,
             progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Runs the demo; returns its figures. ``num_train``/``num_eval`` shrink it (tests)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    say = log or (lambda s: print(s, flush=True))
    own_dir = workdir is None
    work = workdir or tempfile.mkdtemp(prefix="recstrata-demo-")
    os.makedirs(work, exist_ok=True)
    try:
        return _run(work, num_train, num_eval, dram_fraction, latency_requests, progress, say)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def _run(work, num_train, num_eval, dram_fraction, latency_requests, progress, say) -> dict:
    from recstrata.training import metrics, synthetic
    from recstrata.training.data import encode
    from recstrata.training.export import bundle_feeds, export_bundle
    from recstrata.training.spec import parse_config
    from recstrata.training.trainer import Trainer, make_cluster

    raw = json.loads(json.dumps(DEMO_CONFIG))
    syn = raw["data"]["synthetic"]
    if num_train:
        syn["num_train"] = int(num_train)
    if num_eval:
        syn["num_eval"] = int(num_eval)
    raw["train"]["progress"] = bool(progress)
    raw["train"]["checkpoint_dir"] = os.path.join(work, "checkpoints")
    cfg = parse_config(raw)
    t_start = time.perf_counter()

    say(f"[1/4] synthetic data: {syn['num_train']:,} training and {syn['num_eval']:,} eval "
        f"examples, {len(cfg.sparse)} sparse + {len(cfg.dense)} dense features "
        f"(teacher AUC on eval: {synthetic.teacher_auc(cfg):.4f})")

    say("[2/4] training DeepFM with plain + multihash + binary_code + dynamic embeddings")
    trainer = Trainer(cfg, make_cluster("cpu"), log=lambda s: say("      " + s),
                      fresh=True)  # the demo always trains from the start
    say("\n".join("      " + line for line in trainer.summary().splitlines()))
    trainer.train(eval_each_epoch=False)
    dyn = trainer.dynamic_store.stats()["tables"]["category"]
    say(f"      dynamic table category: {dyn['rows']:,} rows admitted (threshold 2) of the ids "
        f"seen; lookups served from a row {dyn['lookup_hits'] / max(dyn['lookups'], 1):.1%}")
    keras_eval = trainer.evaluate()
    say(f"      Keras model eval AUC {keras_eval['auc']:.4f}, logloss {keras_eval['logloss']:.4f}")
    model = trainer.model

    say(f"[3/4] exporting a bundle (DRAM cache = {dram_fraction:.0%} of each table, at least "
        f"64 KiB; the rest on the SSD tier)")
    bundle_dir = os.path.join(work, "bundle")
    # small sub-tables (compressed schemes) get at least 64 KiB: cached whole
    info = export_bundle(model, bundle_dir, tiers="dram+ssd", dram_fraction=dram_fraction,
                         dram_min_bytes=64 << 10,
                         single_valued_layout="lengths", overwrite=True,
                         log=lambda s: say("      " + s))
    table_mib = info["table_bytes"] / 2**20
    say(f"      {bundle_dir}: tables {table_mib:.1f} MiB, export took "
        f"{info['seconds']['total']:.1f} s")

    say("[4/4] serving the bundle through the C ABI (librecstrata.so)")
    from recstrata.processor import Model

    teacher = synthetic.Teacher(cfg)
    served_p, keras_p, labels = [], [], []
    with Model(bundle_dir, session_num=1, intra_op_parallelism_threads=1,
               inter_op_parallelism_threads=1) as served:
        blocks = list(synthetic.blocks(teacher, "eval"))
        bar = _bar(len(blocks), "      eval", progress)
        for blk in blocks:
            n = len(blk["label"])
            out = served.run(bundle_feeds(info["manifest"], blk), outputs=["prob"])
            served_p.append(out["prob"])
            keras_p.append(model.predict_batch(encode(cfg, blk, np.ones(n, bool), n, 0)))
            labels.append(blk["label"])
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        served_p, keras_p, labels = (np.concatenate(a) for a in (served_p, keras_p, labels))
        stats = served.stats()["bundle"]

        # Latency: single caller, requests drawn from the eval stream.
        lat = {}
        first = blocks[0]
        for bs in (1, 64, 512):
            bs = min(bs, len(first["label"]))
            rng = np.random.default_rng(bs)
            reqs = []
            for _ in range(8):
                lo = int(rng.integers(0, len(first["label"]) - bs + 1))
                part = {k: v[lo:lo + bs] for k, v in first.items()}
                reqs.append(bundle_feeds(info["manifest"], part))
            for r in reqs[:3]:
                served.run(r)
            times = []
            count = max(20, latency_requests if bs < 512 else latency_requests // 4)
            for i in range(count):
                t0 = time.perf_counter()
                served.run(reqs[i % len(reqs)], outputs=["prob"])
                times.append(time.perf_counter() - t0)
            lat[bs] = {"p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99)}
        stats_after = served.stats()["bundle"]

    bf16 = _bf16_eval(Model, bundle_dir, info["manifest"], blocks, labels, served_p)
    served_auc = metrics.auc(labels, served_p)
    keras_auc = metrics.auc(labels, keras_p)
    max_diff = float(np.abs(served_p - keras_p).max())
    rows = sum(s["rows"] for t in stats_after["tables"] for s in t["subtables"])
    dram_rows = sum(s["dram_rows"] for t in stats_after["tables"] for s in t["subtables"])
    say("")
    say("results")
    say(f"  served AUC (bundle, C ABI)   {served_auc:.4f}   (Keras model {keras_auc:.4f}, "
        f"teacher {synthetic.teacher_auc(cfg):.4f})")
    say(f"  parity with Keras            max |served - keras| = {max_diff:.2e} over "
        f"{len(labels):,} examples")
    say(f"  embedding tiers              DRAM hit rate {stats['dram_hit_rate']:.1%} "
        f"({stats['dram_hits']:,} DRAM hits, {stats['ssd_hits']:,} SSD hits); "
        f"{dram_rows:,} of {rows:,} rows resident in DRAM ({dram_rows / max(rows, 1):.1%})")
    for t in stats_after["tables"]:
        hits = t["dram_hits"] + t["ssd_hits"]
        say(f"    table {t['name']:<14} {len(t['subtables'])} sub-table(s), "
            f"{sum(s['rows'] for s in t['subtables']):>8,} rows, DRAM hit rate "
            f"{t['dram_hits'] / max(hits, 1):.1%}")
    if "skipped" in bf16:
        say(f"  bf16 dense stage             not run: {bf16['skipped']}")
    else:
        say(f"  bf16 dense stage             AUC {bf16['auc']:.4f} ({bf16['auc_delta']:+.4f} vs fp32), "
            f"max |bf16 - fp32| = {bf16['max_abs_diff']:.2e}")
    for bs, v in lat.items():
        say(f"  latency batch {bs:<4}           p50 {v['p50_ms']:.3f} ms   p99 {v['p99_ms']:.3f} ms")
    say(f"  total time                   {time.perf_counter() - t_start:.0f} s")
    trainer.close()
    return {"served_auc": served_auc, "keras_auc": keras_auc, "max_abs_diff": max_diff,
            "dram_hit_rate": stats["dram_hit_rate"], "dram_rows": dram_rows, "rows": rows,
            "latency": lat, "examples": int(len(labels)), "bundle_stats": stats_after, "bf16": bf16,
            "dynamic_rows": int(dyn["rows"])}


def _bf16_eval(Model, bundle_dir, manifest, blocks, labels, fp32_p) -> dict:
    """Serves the eval set again with precision "bf16" (the dense stage's matmuls in
    bfloat16, fp32 accumulation): its AUC, the change against fp32 and the largest
    prediction difference. {"skipped": why} on a CPU without BF16."""
    from recstrata.errors import FailedPreconditionError
    from recstrata.training import metrics
    from recstrata.training.export import bundle_feeds

    try:
        m = Model(bundle_dir, session_num=1, intra_op_parallelism_threads=1,
                  inter_op_parallelism_threads=1, precision="bf16")
    except FailedPreconditionError as e:
        return {"skipped": str(e)}
    with m:
        p = np.concatenate([m.run(bundle_feeds(manifest, blk), outputs=["prob"])["prob"]
                            for blk in blocks])
    auc = metrics.auc(labels, p)
    return {"auc": auc, "auc_delta": auc - metrics.auc(labels, fp32_p),
            "max_abs_diff": float(np.abs(p - fp32_p).max())}


def _bar(total, desc, progress):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, dynamic_ncols=True)
