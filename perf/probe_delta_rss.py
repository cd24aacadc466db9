#!/usr/bin/env python
"""Resident memory of a host over many deltas (issue 13: "RSS growth over an hour of deltas").

Not a benchmark (no competitor, no timing): a probe of whether a host applying deltas back to back
keeps its memory bounded. Exports a bundle with two plain tables of --rows x 16, serves it from one
host, then writes --deltas deltas of --rows-per-delta rows of `uid` and applies each at once
(`Host.reload`), printing RSS and the store's bytes on disk every 25 deltas. Deltas add no rows,
so a bounded host shows a flat RSS after warm-up, and the store's files grow until compaction.

    python perf/probe_delta_rss.py --deltas 400
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import harness  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deltas", type=int, default=400)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--rows-per-delta", type=int, default=2_400)
    args = ap.parse_args()

    import delta_helpers as dh
    from recstrata.host import Host
    from recstrata.training.delta import DeltaWriter

    cfg = dict(dh.CONFIG, sparse=[{"name": n, "dim": 16, "embedding": {"kind": "plain", "rows": args.rows}}
                                  for n in ("uid", "item")])
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        model = dh.make_model(cfg)
        v1 = dh.export_version(model, base)
        tables = dh.tables_of(model)
        writer = DeltaWriter(v1, tables)
        key = sorted(tables)[0]
        rng = np.random.default_rng(0)
        marks = []
        with Host(dh.host_config(base)) as host:
            for i in range(args.deltas):
                rows = rng.choice(args.rows, args.rows_per_delta, replace=False)
                tables[key][rows] = rng.normal(size=(len(rows), tables[key].shape[1])).astype(np.float32)
                writer.write(tables)
                host.reload("m")
                if i % 25 == 0 or i == args.deltas - 1:
                    gc.collect()
                    rss = harness.rss_mib()["rss_mib"]
                    disk = sum(f.stat().st_size for f in (v1 / "store").rglob("*") if f.is_file())
                    marks.append(rss)
                    print(f"delta {dh.deltas_status(host)['applied_sequence']:5d}  RSS {rss:8.1f} MiB  "
                          f"store files {disk / 2**20:7.1f} MiB", flush=True)
    print(f"RSS after delta 1 {marks[0]:.1f} MiB, after 26 {marks[1]:.1f} MiB, at the end {marks[-1]:.1f} MiB")


if __name__ == "__main__":
    main()
