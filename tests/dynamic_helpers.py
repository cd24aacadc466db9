"""Shared configs and helpers of the dynamic-table tests (tests/test_dynamic_*.py)."""

from __future__ import annotations

import copy

import numpy as np

QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def config(dynamic: dict | None = None, **train) -> dict:
    """A small DeepFM with a dynamic table shared by a single- and a multi-valued feature,
    plus a plain table."""
    emb = {"kind": "dynamic", "admission": {"threshold": 2}}
    emb.update(dynamic or {})
    t = {"batch_size": 128, "epochs": 1, "progress": False, "learning_rate": 0.01}
    t.update(train)
    return copy.deepcopy({
        "name": "dyn", "label": "label",
        "sparse": [
            {"name": "user", "dim": 8, "embedding": emb},
            {"name": "hist", "dim": 8, "max_values": 4, "combiner": "mean", "table": "user",
             "embedding": emb},
            {"name": "item", "dim": 8, "embedding": {"kind": "plain", "rows": 3000}},
        ],
        "dense": [{"name": "d0"}, {"name": "d1", "transform": "log1p"}],
        "model": {"type": "deepfm", "hidden": [16]},
        "data": {"format": "synthetic",
                 "synthetic": {"num_train": 3000, "num_eval": 800, "zipf": 1.05,
                               "vocab": {"user": 20000, "hist": 20000, "item": 3000}}},
        "train": t,
    })


def examples(cfg, n: int, seed: int, vocab: int = 20000) -> dict:
    rng = np.random.default_rng(seed)
    ex: dict = {}
    for f in cfg.sparse:
        k = f.max_values
        ex[f.name] = rng.integers(0, vocab, (n, k)).astype(np.int64)
        ex[f.name + "/len"] = (np.ones(n, np.int32) if k == 1
                               else rng.integers(0, k + 1, n).astype(np.int32))
    ex["dense"] = rng.normal(0, 1, (n, len(cfg.dense))).astype(np.float32)
    ex["label"] = np.zeros(n, np.float32)
    return ex


def keras_probs(model, cfg, ex) -> np.ndarray:
    from recstrata.training.data import encode

    n = len(ex["label"])
    return model.predict_batch(encode(cfg, ex, np.ones(n, bool), n, 0))
