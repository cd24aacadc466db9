"""Shared by the delta tests (tests/test_delta*.py) and perf/bench_freshness.py: a small bundle
model, its export as version 1 of a host base path, and table edits written as deltas."""

from __future__ import annotations

import os
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
