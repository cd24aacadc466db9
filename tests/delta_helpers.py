"""Shared by the delta tests (tests/test_delta*.py) and perf/bench_freshness.py: a small bundle
model, its export as version 1 of a host base path, and table edits written as deltas."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS = 1000
DIM = 4

CONFIG = {
    "name": "deltam", "label": "label",
    "sparse": [{"name": "uid", "dim": DIM, "embedding": {"kind": "plain", "rows": ROWS}},
               {"name": "item", "dim": DIM, "embedding": {"kind": "plain", "rows": ROWS}}],
    "dense": [{"name": "d0"}],
    "model": {"type": "wdl", "hidden": [8]},
    "data": {"format": "synthetic", "synthetic": {"num_train": 2048, "num_eval": 64}},
    "train": {"batch_size": 128, "epochs": 1, "progress": False},
}


def make_model(config=CONFIG):
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    model = RecModel(parse_config(config), name="rec_model")
    model.build_with_dummy()
    return model


def export_version(model, base: Path, version: int = 1) -> Path:
    """Exports ``model`` as BASE/<version> (atomically, by the exporter)."""
    from recstrata.training.export import export_bundle

    base.mkdir(parents=True, exist_ok=True)
    return Path(export_bundle(model, base / str(version), tiers="dram")["path"])


def tables_of(model) -> dict:
    """{(table, j): float32 copy} of a model's sub-tables (the DeltaWriter's state layout)."""
    out = {}
    for tname, t in model.embedding_tables().items():
        for j, arr in enumerate(t["subtables"]):
            out[(tname, j)] = np.array(arr, dtype=np.float32, copy=True)
    return out


def feeds(ids) -> dict:
    ids = np.asarray(ids, dtype=np.int64)
    return {"uid": ids, "item": ids, "dense": np.ones((len(ids), 1), np.float32)}


def host_config(base: Path, **extra) -> dict:
    cfg = {"models": [{"name": "m", "base_path": str(base)}]}
    cfg.update(extra)
    return cfg


def deltas_status(host, version: int = 1) -> dict:
    for v in host.status("m")["versions"]:
        if v["version"] == version:
            return v.get("deltas", {})
    return {}


def store_rows(bundle_dir: Path, store_table: str, rows: int) -> np.ndarray:
    """Every row of one store table of a bundle that no process has open."""
    from recstrata.store import Store

    with Store(os.fspath(bundle_dir / "store"), create_if_missing=False) as st:
        vals, found = st.table(store_table).lookup(np.arange(rows, dtype=np.int64))
        assert found.all()
        return np.array(vals)


def edit_tables(tables: dict, seed: int, n: int = 50) -> dict:
    """A copy of ``tables`` with n random rows of every sub-table changed."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in tables.items()}
    for v in out.values():
        rows = rng.choice(v.shape[0], n, replace=False)
        v[rows] = rng.normal(size=(n, v.shape[1])).astype(np.float32)
    return out


def applied_marker(version_dir: Path) -> dict:
    """The store's DELTAS_APPLIED marker ({} while there is none, or mid-replace)."""
    try:
        return json.loads((version_dir / "store" / "DELTAS_APPLIED").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_for(pred, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


_HOST_CHILD = r"""
import sys, time
from recstrata.host import Host
with Host({"models": [{"name": "m", "base_path": sys.argv[1]}], "poll_interval_seconds": 0.05}) as h:
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


@contextlib.contextmanager
def host_process(base: Path, table_delay_ms: int):
    """A host process serving BASE, polling every 50 ms; each delta apply sleeps table_delay_ms
    after every sub-table's batch (the test hook), so a test can SIGKILL it mid-apply. Yields
    the Popen once the host is open; kills it (SIGKILL) when the block ends."""
    env = dict(os.environ, RECSTRATA_TEST_DELTA_TABLE_DELAY_MS=str(table_delay_ms))
    child = subprocess.Popen([sys.executable, "-c", _HOST_CHILD, str(base)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
