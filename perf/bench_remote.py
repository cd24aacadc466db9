"""Benchmark of the Redis Cluster tier (tiers "dram+redis") against its peers.

Same keys, same Zipf batches, same run, interleaved round by round:
  * recstrata "dram+redis": a DRAM cache of 10% of the rows over a 3-master
    Redis Cluster (Debian's redis-server on loopback, started here), driven
    from Python through the store's lookup;
  * the same tier with a ~0 DRAM cache (every key goes to Redis: the client
    alone, pipelined per node);
  * redis-py's cluster client (redis.cluster.RedisCluster.mget_nonatomic,
    which groups keys per slot and pipelines them), reading the same values
    and decoding them into a float32 array, as a Python service would;
  * recstrata "dram+ssd": the local SSD hash tier with the same 10% cache.

Workload: N int64 ids with dim-16 float32 rows (the values the tier writes:
16-byte header + 64 bytes); batches of 1024 ids from Zipf(1.05) over a random
id permutation. Reports keys/s, per-batch p50/p99 and the ratios the issue's
goals use. The last line is ``RESULT {json}``; the PNG goes through
perf/harness.py.

    python perf/bench_remote.py --quick     # 200k ids, ~1-2 minutes
    python perf/bench_remote.py             # 1M ids

The machine is shared (2 cores, several tenants) and Redis runs on the same
cores as the client: figures are indicative.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from harness import grouped_bars, machine_notes, plot_path, print_result, save_plot  # noqa: E402

import redis_cluster as rc  # noqa: E402

DIM = 16
BATCH = 1024


def zipf_batches(rng, n, count, s=1.05):
    perm = rng.permutation(n).astype(np.int64)
    out = []
    for _ in range(count):
        r = np.empty(0, dtype=np.int64)
        while r.size < BATCH:
            z = rng.zipf(s, BATCH * 2)
            r = np.concatenate([r, z[z <= n] - 1])
        out.append(perm[r[:BATCH]])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--rounds", type=int)
    args = ap.parse_args()
    n = args.rows or (200_000 if args.quick else 1_000_000)
    rounds = args.rounds or (5 if args.quick else 10)
    per_round = 20 if args.quick else 50
    why = rc.available()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    import redis  # redis-py (pip install recstrata[perf])
    from redis.cluster import ClusterNode, RedisCluster

    from recstrata.store import Store

    rng = np.random.default_rng(0)
    keys = np.arange(n, dtype=np.int64)
    rows = rng.normal(size=(n, DIM)).astype(np.float32)
    cache = int(0.10 * n * (4 * DIM + 13 + 48))  # 10% of the rows (row + index share)
    tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    with rc.RedisTestCluster(tmp / "redis") as cluster:
        w = Store(None, tiers="dram+redis", redis_url=cluster.url, redis_model="bench",
                  redis_key_space="v1", dram_capacity_bytes=1 << 16)
        t0 = time.perf_counter()
        wt = w.create_table("emb", DIM)
        for lo in range(0, n, 100_000):
            wt.bulk_load(keys[lo:lo + 100_000], rows[lo:lo + 100_000])
        load_s = time.perf_counter() - t0
        w.remote_pointer("publish")
        w.close()
        local = Store(str(tmp / "local"), tiers="dram+ssd", dram_capacity_bytes=cache, durability="none")
        lt = local.create_table("emb", DIM)
        lt.bulk_load(keys, rows)
        tier = Store(None, tiers="dram+redis", redis_url=cluster.url, redis_model="bench",
                     dram_capacity_bytes=cache).table("emb")
        nocache_store = Store(None, tiers="dram+redis", redis_url=cluster.url, redis_model="bench",
                              dram_capacity_bytes=1)
        nocache = nocache_store.table("emb")
        rp = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
        prefix = "rs:bench:v1:emb:"

        def redispy_lookup(q):
            vals = rp.mget_nonatomic([prefix + str(int(k)) for k in q])
            out = np.empty((len(q), DIM), np.float32)
            for i, v in enumerate(vals):
                out[i] = np.frombuffer(v, np.float32, count=DIM, offset=16)
            return out

        systems = {
            "recstrata dram+redis (10% DRAM)": lambda q: tier.lookup(q)[0],
            "recstrata redis, no cache": lambda q: nocache.lookup(q)[0],
            "redis-py cluster mget": redispy_lookup,
            "recstrata dram+ssd (10% DRAM)": lambda q: lt.lookup(q)[0],
        }
        batches = zipf_batches(rng, n, per_round * (rounds + 1))
        # parity check and warm-up (fills the DRAM caches): one round's batches each
        for name, fn in systems.items():
            for q in batches[:per_round]:
                np.testing.assert_array_equal(fn(q), rows[q])
        lat = {name: [] for name in systems}
        for r in range(rounds):
            mine = batches[(r + 1) * per_round:(r + 2) * per_round]
            order = list(systems.items())
            if r % 2:
                order.reverse()  # alternate who goes first
            for name, fn in order:
                for q in mine:
                    t = time.perf_counter()
                    fn(q)
                    lat[name].append(time.perf_counter() - t)
        tier_stats = tier._store.stats()
        nc_stats = nocache_store.stats()["remote"]
        rp.close()

    fig = {}
    for name, l in lat.items():
        a = np.asarray(l)
        fig[name] = {"keys_per_s": BATCH * a.size / a.sum(), "p50_us": float(np.median(a)) * 1e6,
                     "p99_us": float(np.percentile(a, 99)) * 1e6}
        print(f"{name:34s} {fig[name]['keys_per_s']:12,.0f} keys/s  p50 {fig[name]['p50_us']:8.0f} us  "
              f"p99 {fig[name]['p99_us']:8.0f} us")
    T, N, P, L = (fig[k] for k in systems)
    t = tier_stats["tables"]["emb"]
    hit = t["dram_hits"] / max(1, t["dram_hits"] + t["dram_misses"])
    calls = (rounds + 1) * per_round
    print(f"tier DRAM hit rate {hit:.3f}; round trips per batch {tier_stats['remote']['round_trips'] / calls:.2f} "
          f"(no cache: {nc_stats['round_trips'] / calls:.2f}); load {n / load_s:,.0f} rows/s")

    def draw(f):
        ax = f.add_subplot(1, 2, 1)
        grouped_bars(ax, ["keys/s"], {k: [v["keys_per_s"]] for k, v in fig.items()}, "keys/s", log=True)
        ax.set_title(f"Zipf(1.05) batches of {BATCH}, {n:,} ids x {DIM}")
        ax2 = f.add_subplot(1, 2, 2)
        grouped_bars(ax2, ["p50", "p99"], {k: [v["p50_us"], v["p99_us"]] for k, v in fig.items()},
                     "per-batch latency (us)", log=True)
    plot = save_plot(plot_path("bench_remote", args.quick), draw, figsize=(11, 4.5))
    print_result({
        "redis_tier_over_redispy": T["keys_per_s"] / P["keys_per_s"],
        "redis_tier_p99_us": T["p99_us"],
        "redis_tier_keys_per_s": T["keys_per_s"],
        "redis_tier_p50_us": T["p50_us"],
        "redis_tier_dram_hit_rate": hit,
        "redis_nocache_over_redispy": N["keys_per_s"] / P["keys_per_s"],
        "redis_nocache_keys_per_s": N["keys_per_s"],
        "redis_nocache_p99_us": N["p99_us"],
        "redispy_keys_per_s": P["keys_per_s"],
        "redispy_p99_us": P["p99_us"],
        "local_ssd_keys_per_s": L["keys_per_s"],
        "local_ssd_p99_us": L["p99_us"],
        "redis_tier_over_local_ssd": T["keys_per_s"] / L["keys_per_s"],
        "redis_load_rows_per_s": n / load_s,
        "rows": n, "dim": DIM, "batch": BATCH, "quick": args.quick,
        "round_trips_per_batch": tier_stats["remote"]["round_trips"] / calls,
        "plot": str(plot) if plot else None, "loadavg_1m": machine_notes()["loadavg_1m"],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
