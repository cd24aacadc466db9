"""Benchmark of the tiered embedding store against its peers.

Same data, same batches, same run, side by side:
  * np.take with precomputed row indices: the in-memory ceiling (Python);
  * recstrata memory-only (tiers "dram") and DRAM cache holding 10% of the
    rows over the SSD tier (tiers "dram+ssd"), driven from Python;
  * LevelDB (plyvel) and RocksDB (rocksdict) as a Python user drives them;
  * RocksDB through its native C++ API (MultiGet) and recstrata through its C
    API, both driven by the same native harness (perf/rocksdb_harness/) with
    native threads, including the Zipf reads while a writer thread
    overwrites random keys.

Workload: N random int64 keys, dim-16 float32 rows (and 1M keys at dim 64 in
the full run); batches of 1024 keys from Zipf(1.05) and from a uniform
distribution. Reports keys/s, per-batch p50/p99, load rate, bytes on disk vs
raw payload, write amplification, and the ratios the issue's targets use.
The last line is ``RESULT {json}``.

    python perf/bench_store.py            # full run (2M x 16, 1M x 64)
    python perf/bench_store.py --quick    # reduced, < 2 minutes

Notes: every peer's files sit on the same filesystem and the OS page cache
serves both recstrata's and RocksDB's SSD-tier reads alike. The RocksDB block
cache gets the same byte budget as recstrata's DRAM tier.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import plot_path, print_result, save_plot  # noqa: E402

HARNESS_SRC = HERE / "rocksdb_harness" / "harness.cc"


def row_cost(dim):
    # Bytes per cached row used to size the DRAM budget (10% of rows x this). The store
    # charged exactly this per row until 2026-11-28; it now charges 4*dim + 13 per row plus
    # its presized hash index (32-64 bytes per row), so a bit fewer rows fit the same budget.
    return 4 * dim + 36


def zipf_ranks(rng, n, s, size):
    out = np.empty(0, dtype=np.int64)
    while out.size < size:
        r = rng.zipf(s, size * 2)
        out = np.concatenate([out, r[r <= n] - 1])
    return out[:size]


def summarize(lat_s, keys_total, wall_s):
    lat_us = np.asarray(lat_s) * 1e6
    return {"keys_per_s": keys_total / wall_s, "p50_us": float(np.percentile(lat_us, 50)),
            "p99_us": float(np.percentile(lat_us, 99)), "batches": len(lat_s)}


def timed(fn, batches, reps=1):
    lat = []
    t0 = time.perf_counter()
    for _ in range(reps):
        for b in batches:
            s = time.perf_counter()
            fn(b)
            lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    return summarize(lat, sum(len(b) for b in batches) * reps, wall)


def dir_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def fmt(r):
    return f"{r['keys_per_s'] / 1e6:8.2f} M keys/s  p50 {r['p50_us']:8.1f} us  p99 {r['p99_us']:8.1f} us"


# ------------------------------------------------------------------ harness --

def build_harness(out_dir: Path) -> tuple[Path | None, str]:
    """Builds the native harness; returns (binary, note). RocksDB optional."""
    import recstrata

    inc, lib = Path(recstrata.include_dir()), Path(recstrata.library_path()).parent
    have_rocks = Path("/usr/include/rocksdb/db.h").exists()
    exe = out_dir / ("harness_rocks" if have_rocks else "harness_norocks")
    stamp = f"{HARNESS_SRC.stat().st_mtime}-{(lib / 'librecstrata.so').stat().st_mtime}"
    stamp_file = exe.with_suffix(".stamp")
    if exe.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return exe, "" if have_rocks else "RocksDB not installed"
    cmd = ["g++", "-O2", "-std=c++17", str(HARNESS_SRC), f"-I{inc}", f"-L{lib}", "-lrecstrata",
           f"-Wl,-rpath,{lib}", "-lpthread", "-o", str(exe)]
    if have_rocks:
        cmd[3:3] = ["-DRS_HAVE_ROCKSDB"]
        cmd.insert(-2, "-lrocksdb")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, "harness build failed: " + r.stderr[-2000:]
    stamp_file.write_text(stamp)
    note = "" if have_rocks else (
        "RocksDB is not installed (apt-get install librocksdb-dev): native RocksDB peer skipped")
    return exe, note


def run_harness(exe, engine, work, dim, keys_f, rows_f, batch_files, threads, cache_bytes, passes):
    db = work / f"native_{engine}"
    shutil.rmtree(db, ignore_errors=True)
    spec = ",".join(f"{k}={v}" for k, v in batch_files.items())
    cmd = [str(exe), "--engine", engine, "--db", str(db), "--dim", str(dim), "--keys", str(keys_f),
           "--rows", str(rows_f), "--batches", spec, "--threads", str(threads),
           "--cache_bytes", str(cache_bytes), "--passes", str(passes)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    shutil.rmtree(db, ignore_errors=True)
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout)[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- one size --

def bench_size(n, dim, args, work: Path, exe, rng):
    from recstrata.store import Store

    print(f"\n=== {n:,} keys x dim {dim} (batches of {args.batch}) ===", flush=True)
    keys = rng.integers(-(2**62), 2**62, n, dtype=np.int64)
    keys = np.unique(keys)
    rng.shuffle(keys)
    n = len(keys)
    mat = rng.random((n, dim), dtype=np.float32)
    nb = args.batches
    perm = rng.permutation(n)  # rank -> row: hot keys spread over the id space
    zipf_rows = [perm[zipf_ranks(rng, n, 1.05, args.batch)] for _ in range(nb)]
    uni_rows = [rng.integers(0, n, args.batch) for _ in range(nb)]
    zipf_keys = [keys[r] for r in zipf_rows]
    uni_keys = [keys[r] for r in uni_rows]
    raw_payload = n * (8 + 4 * dim)
    res: dict = {"n": n, "dim": dim, "raw_payload_bytes": raw_payload}

    # np.take ceiling
    res["np_take"] = {"zipf": timed(lambda r: np.take(mat, r, axis=0), zipf_rows, args.reps),
                      "uniform": timed(lambda r: np.take(mat, r, axis=0), uni_rows, args.reps)}
    print(f"np.take            zipf {fmt(res['np_take']['zipf'])}", flush=True)

    # recstrata memory-only (volatile, from Python)
    with Store(None) as st:
        t = st.create_table("t", dim)
        s0 = time.perf_counter()
        t.bulk_load(keys, mat)
        load = time.perf_counter() - s0
        out = np.empty((args.batch, dim), np.float32)
        got, found = t.lookup(zipf_keys[0])
        assert found.all() and np.array_equal(got, mat[zipf_rows[0]]), "wrong rows"
        for b in zipf_keys[: nb // 4]:
            t.lookup(b, out)
        res["recstrata_memory"] = {
            "load_rows_per_s": n / load,
            "zipf": timed(lambda b: t.lookup(b, out), zipf_keys, args.reps),
            "uniform": timed(lambda b: t.lookup(b, out), uni_keys, args.reps)}
        # The same comparison interleaved batch by batch (np.take, then the
        # store, on the same keys), so load from other processes on this
        # shared machine hits both alike: the ratio used for the target.
        paired = {}
        for name, rows_l, keys_l in (("zipf", zipf_rows, zipf_keys), ("uniform", uni_rows, uni_keys)):
            ta = tl = 0.0
            for _ in range(args.reps):
                for r, k in zip(rows_l, keys_l):
                    s = time.perf_counter()
                    np.take(mat, r, axis=0)
                    m = time.perf_counter()
                    t.lookup(k, out)
                    tl += time.perf_counter() - m
                    ta += m - s
            paired[name] = {"np_take_keys_per_s": nb * args.batch * args.reps / ta,
                            "recstrata_keys_per_s": nb * args.batch * args.reps / tl,
                            "ratio": ta / tl}
        res["paired_memory_vs_np_take"] = paired
    print(f"recstrata memory   zipf {fmt(res['recstrata_memory']['zipf'])}  "
          f"(interleaved with np.take: {paired['zipf']['ratio']:.3f} of its keys/s)", flush=True)

    # recstrata DRAM 10% over SSD (from Python)
    cache_bytes = int(0.10 * n * row_cost(dim))
    path = work / "recstrata_ssd"
    shutil.rmtree(path, ignore_errors=True)
    with Store(path, tiers="dram+ssd", dram_capacity_bytes=cache_bytes, durability="fsync") as st:
        t = st.create_table("t", dim)
        s0 = time.perf_counter()
        t.bulk_load(keys, mat)
        load = time.perf_counter() - s0
        disk = dir_bytes(path)
        got, found = t.lookup(uni_keys[0])
        assert found.all() and np.array_equal(got, mat[uni_rows[0]]), "wrong rows"
        for b in zipf_keys:  # warm the cache
            t.lookup(b, out)
        z = timed(lambda b: t.lookup(b, out), zipf_keys, args.reps)
        u = timed(lambda b: t.lookup(b, out), uni_keys, 1)
        # Zipf again with a Python writer thread overwriting random keys.
        stop = threading.Event()

        def writer():
            wr = np.random.default_rng(1)
            while not stop.is_set():
                idx = wr.integers(0, n, 256)
                t.upsert(keys[idx], mat[idx])
                time.sleep(0.001)

        th = threading.Thread(target=writer)
        th.start()
        zw = timed(lambda b: t.lookup(b, out), zipf_keys, args.reps)
        stop.set()
        th.join()
        stats = st.stats()["tables"]["t"]
        res["recstrata_ssd10"] = {
            "load_rows_per_s": n / load, "disk_bytes": disk, "disk_over_raw": disk / raw_payload,
            "disk_over_vectors": disk / (n * 4 * dim),
            "zipf": z, "uniform": u, "zipf_with_writer_python": zw,
            "write_amplification": stats["write_amplification"],
            "dram_hit_rate": stats["dram_hits"] / max(1, stats["dram_hits"] + stats["dram_misses"]),
            "compactions": stats["compactions"]}
    shutil.rmtree(path, ignore_errors=True)
    # The read path: the same store read through pread instead of mmap.
    with Store(path, tiers="dram+ssd", dram_capacity_bytes=cache_bytes, read_path="pread") as st:
        t = st.create_table("t", dim)
        t.bulk_load(keys, mat)
        for b in zipf_keys:
            t.lookup(b, out)
        res["recstrata_ssd10_pread"] = {"zipf": timed(lambda b: t.lookup(b, out), zipf_keys, args.reps),
                                        "uniform": timed(lambda b: t.lookup(b, out), uni_keys, 1)}
    shutil.rmtree(path, ignore_errors=True)
    print(f"recstrata 10%/ssd  pread zipf {fmt(res['recstrata_ssd10_pread']['zipf'])}")
    print(f"recstrata 10%/ssd  zipf {fmt(z)}  (disk/raw {disk / raw_payload:.3f}, "
          f"hit rate {res['recstrata_ssd10']['dram_hit_rate']:.3f})", flush=True)

    # Python-driven peers on fewer batches (they are slow).
    pb = max(20, nb // args.peer_divisor)
    key_bytes = [[int(k).to_bytes(8, "little", signed=True) for k in b] for b in zipf_keys[:pb]]
    try:
        import plyvel

        p = work / "plyvel"
        shutil.rmtree(p, ignore_errors=True)
        db = plyvel.DB(str(p), create_if_missing=True, lru_cache_size=cache_bytes)
        s0 = time.perf_counter()
        with db.write_batch() as wb:
            for i in range(n):
                wb.put(int(keys[i]).to_bytes(8, "little", signed=True), mat[i].tobytes())
        load = time.perf_counter() - s0
        db.compact_range()
        get = db.get

        def pl(b):
            return [get(k) for k in b]

        for b in key_bytes[: pb // 4]:
            pl(b)
        res["plyvel"] = {"load_rows_per_s": n / load, "disk_bytes": dir_bytes(p),
                         "zipf": timed(pl, key_bytes)}
        db.close()
        shutil.rmtree(p, ignore_errors=True)
        print(f"plyvel (LevelDB)   zipf {fmt(res['plyvel']['zipf'])}", flush=True)
    except ImportError:
        res["plyvel"] = {"error": "plyvel not installed (pip install recstrata[perf])"}
    try:
        import rocksdict

        p = work / "rocksdict"
        shutil.rmtree(p, ignore_errors=True)
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        db = rocksdict.Rdict(str(p), options=opts)
        s0 = time.perf_counter()
        wb = rocksdict.WriteBatch(raw_mode=True)
        for i in range(n):
            wb.put(int(keys[i]).to_bytes(8, "little", signed=True), mat[i].tobytes())
            if i % 10000 == 9999:
                db.write(wb)
                wb = rocksdict.WriteBatch(raw_mode=True)
        db.write(wb)
        load = time.perf_counter() - s0
        db.flush()

        def rd(b):
            return db.get(b)  # the list form: one MultiGet-style call per batch

        for b in key_bytes[: pb // 4]:
            rd(b)
        res["rocksdict"] = {"load_rows_per_s": n / load, "zipf": timed(rd, key_bytes)}
        db.close()
        shutil.rmtree(p, ignore_errors=True)
        print(f"rocksdict (RocksDB) zipf {fmt(res['rocksdict']['zipf'])}", flush=True)
    except ImportError:
        res["rocksdict"] = {"error": "rocksdict not installed (pip install recstrata[perf])"}

    # Native harness: RocksDB MultiGet vs recstrata C API, native threads.
    if exe is not None:
        keys_f, rows_f = work / "keys.bin", work / "rows.bin"
        keys.tofile(keys_f)
        mat.tofile(rows_f)
        bfiles = {"zipf": work / "zipf.bin", "uniform": work / "uniform.bin"}
        np.concatenate(zipf_keys).tofile(bfiles["zipf"])
        np.concatenate(uni_keys).tofile(bfiles["uniform"])
        for engine in ("recstrata", "rocksdb"):
            if engine == "rocksdb" and "harness_norocks" in exe.name:
                res["native_rocksdb"] = {"error": "RocksDB not installed (apt-get install librocksdb-dev)"}
                continue
            # One timed pass after the warm pass: RocksDB is slow enough that
            # more passes would dominate the run time.
            r = run_harness(exe, engine, work, dim, keys_f, rows_f, bfiles, args.threads,
                            cache_bytes, 1)
            res[f"native_{engine}"] = r
            if "error" in r:
                print(f"native {engine}: {r['error']}", flush=True)
                continue
            print(f"native {engine:9s}  zipf {fmt(r['zipf'])}\n"
                  f"{'':17s}+writer {fmt(r['zipf_with_writer'])}\n"
                  f"{'':17s}uniform {fmt(r['uniform'])}  load {r['load_rows_per_s'] / 1e6:.2f} M rows/s"
                  f"  disk/raw {r['disk_bytes'] / raw_payload:.3f}", flush=True)
        for f in [keys_f, rows_f, *bfiles.values()]:
            f.unlink(missing_ok=True)
    return res


def ratios(r):
    def kps(*path):
        cur = r
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return None
            cur = cur[p]
        return cur

    def div(a, b):
        return None if a is None or b is None or b == 0 else a / b

    out = {
        "memory_vs_np_take_zipf": kps("paired_memory_vs_np_take", "zipf", "ratio"),
        "memory_vs_np_take_uniform": kps("paired_memory_vs_np_take", "uniform", "ratio"),
        "memory_vs_np_take_zipf_separate_runs": div(kps("recstrata_memory", "zipf", "keys_per_s"),
                                                    kps("np_take", "zipf", "keys_per_s")),
        "mmap_over_pread_zipf": div(kps("recstrata_ssd10", "zipf", "keys_per_s"),
                                    kps("recstrata_ssd10_pread", "zipf", "keys_per_s")),
        "mmap_over_pread_uniform": div(kps("recstrata_ssd10", "uniform", "keys_per_s"),
                                       kps("recstrata_ssd10_pread", "uniform", "keys_per_s")),
        "ssd10_native_vs_rocksdb_native_zipf": div(kps("native_recstrata", "zipf", "keys_per_s"),
                                                   kps("native_rocksdb", "zipf", "keys_per_s")),
        "ssd10_python_vs_rocksdb_native_zipf": div(kps("recstrata_ssd10", "zipf", "keys_per_s"),
                                                   kps("native_rocksdb", "zipf", "keys_per_s")),
        "ssd10_python_vs_plyvel_zipf": div(kps("recstrata_ssd10", "zipf", "keys_per_s"),
                                           kps("plyvel", "zipf", "keys_per_s")),
        "ssd10_python_vs_rocksdict_zipf": div(kps("recstrata_ssd10", "zipf", "keys_per_s"),
                                              kps("rocksdict", "zipf", "keys_per_s")),
        "native_p99_with_writer_over_without": div(kps("native_recstrata", "zipf_with_writer", "p99_us"),
                                                   kps("native_recstrata", "zipf", "p99_us")),
        "rocksdb_p99_with_writer_over_without": div(kps("native_rocksdb", "zipf_with_writer", "p99_us"),
                                                    kps("native_rocksdb", "zipf", "p99_us")),
        "disk_over_raw": kps("recstrata_ssd10", "disk_over_raw"),
    }
    targets = {
        "memory_ge_50pct_np_take": (out["memory_vs_np_take_zipf"] or 0) >= 0.5,
        "ssd10_ge_3x_rocksdb_native": (out["ssd10_native_vs_rocksdb_native_zipf"] or 0) >= 3,
        "ssd10_ge_10x_plyvel": (out["ssd10_python_vs_plyvel_zipf"] or 0) >= 10,
        "ssd10_ge_10x_rocksdict": (out["ssd10_python_vs_rocksdict_zipf"] or 0) >= 10,
        "p99_with_writer_le_2x": 0 < (out["native_p99_with_writer_over_without"] or 99) <= 2,
        "disk_le_1_3x_raw": 0 < (out["disk_over_raw"] or 99) <= 1.3,
    }
    return out, targets


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced run (< 2 minutes)")
    ap.add_argument("--keys", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="native harness reader threads")
    ap.add_argument("--peer-divisor", type=int, default=10,
                    help="Python-driven peers run batches/this many batches")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    sizes = [(args.keys, args.dim), (1_000_000, 64)]
    if args.quick:
        sizes = [(300_000, args.dim)]
        args.batches, args.reps = 400, 1
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rs_bench_store_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    exe, note = build_harness(work.parent if args.workdir is None else work)
    if note:
        print(note, flush=True)
    rng = np.random.default_rng(2026)
    t0 = time.time()
    results = {}
    try:
        for n, dim in sizes:
            r = bench_size(n, dim, args, work, exe, rng)
            r["ratios"], r["targets"] = ratios(r)
            results[f"{n}x{dim}"] = r
            print("ratios:", json.dumps({k: (round(v, 3) if v else v) for k, v in r["ratios"].items()}))
            print("targets:", json.dumps(r["targets"]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.time() - t0
    results["quick"] = args.quick
    results["notes"] = note
    save_plot(plot_path("store", args.quick), lambda fig: plot(fig, results))
    print_result(results, compact=False)


def plot(fig, results: dict) -> None:
    """Main figure: Zipf lookup throughput (keys/s) of every system, per table size."""
    sizes = [k for k, v in results.items() if isinstance(v, dict) and "n" in v]
    for i, size in enumerate(sizes):
        r = results[size]
        names = [k for k, v in r.items() if isinstance(v, dict)
                 and isinstance(v.get("zipf"), dict) and v["zipf"].get("keys_per_s")]
        ax = fig.add_subplot(1, len(sizes), i + 1)
        ax.barh(names, [r[k]["zipf"]["keys_per_s"] / 1e6 for k in names])
        ax.set_xscale("log")
        ax.set_xlabel("M keys/s, Zipf lookups (log)")
        ax.set_title(f"{size} keys x dim")
        ax.tick_params(axis="y", labelsize=7)


if __name__ == "__main__":
    main()
