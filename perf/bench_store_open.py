"""Cost of the store's integrity checks at open and close (issue 9).

A store of N dense keys (dim 16, tiers "dram+ssd", one bulk-loaded file) is
closed cleanly, then reopened with verify "auto" and "full" in turns (both
compare every file's whole-file CRC-32C with the clean-close record; "full"
also insists on the record), and the first write after a clean open (which
removes the record from the MANIFEST) is timed against the second. The last
line is ``RESULT {json}``. Run under the benchmark lock:

    flock /tmp/recstrata-bench.lock python perf/bench_store_open.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

import numpy as np

from recstrata.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, dim = args.rows, 16
    root = tempfile.mkdtemp(prefix="rs_open_")
    path = f"{root}/s"
    try:
        keys = np.arange(n, dtype=np.int64)
        rows = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
        res: dict = {"rows": n, "dim": dim}
        with Store(path, tiers="dram+ssd", dram_capacity_bytes=1 << 24) as s:
            s.create_table("t", dim, dense_keys=n).bulk_load(keys, rows)
            t0 = time.perf_counter()
        res["close_s"] = time.perf_counter() - t0
        for mode in ("auto", "full") * args.repeat:
            t0 = time.perf_counter()
            s = Store(path, verify=mode)
            res.setdefault(f"open_{mode}_s", []).append(time.perf_counter() - t0)
            assert s.stats()["recovery"] == "clean"
            s.close()
        with Store(path) as s:
            t = s.table("t")
            for name, sl in (("first_write_ms", slice(0, 10)), ("second_write_ms", slice(10, 20))):
                t0 = time.perf_counter()
                t.upsert(keys[sl], rows[sl])
                res[name] = (time.perf_counter() - t0) * 1e3
        for k, v in res.items():
            print(f"{k}: {v}")
        print("RESULT " + json.dumps(res))
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
