"""Dynamic tables: eviction by age (steps since the last update) and by frequency under a row
cap; evicted rows leave the store, read as zeros, and come back fresh when re-admitted."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf  # noqa: E402

from recstrata.training import dynamic  # noqa: E402
from recstrata.training.dynamic_spec import from_dict  # noqa: E402

W = 3


def _store(tmp_path, **kw):
    st = dynamic.DynamicStore(str(tmp_path / "store"))
    return st, st.create_table("t", from_dict({"kind": "dynamic", **kw}), W)


def _step(info, keys):
    k = tf.constant(keys, tf.int64)
    return int(dynamic.apply_op(info, k, tf.ones_like(k), tf.zeros([len(keys), W]), 0))


def _present(info, keys):
    return dynamic.lookup_op(info, tf.constant(keys, tf.int64)).numpy().any(axis=1)


def test_age_eviction(tmp_path):
    st, info = _store(tmp_path, eviction={"ttl_steps": 3, "every_steps": 1})
    try:
        _step(info, [1, 2, 3])                 # step 1
        for s in range(2, 6):                  # steps 2..5 touch only id 1
            _step(info, [1])
            alive = _present(info, [1, 2, 3])
            # ids 2, 3 were last updated at step 1: evicted once step - 1 > 3, i.e. at step 5
            assert alive.tolist() == ([True, True, True] if s < 5 else [True, False, False]), s
        s = st.stats()
        assert s["tables"]["t"]["rows"] == 1 and s["tables"]["t"]["evicted_age"] == 2
        assert s["store"]["tables"]["dyn_t"]["rows"] == 1      # deleted from the store too
        before = dynamic.lookup_op(info, tf.constant([1], tf.int64)).numpy()
        _step(info, [2])                       # re-admitted (threshold 1) with a fresh row
        assert _present(info, [2]).all()
        np.testing.assert_array_equal(dynamic.lookup_op(info, tf.constant([1], tf.int64)).numpy(),
                                      before)
    finally:
        st.close()


def test_age_pass_runs_every_n_steps(tmp_path):
    st, info = _store(tmp_path, eviction={"ttl_steps": 1, "every_steps": 4})
    try:
        _step(info, [5])                       # step 1
        _step(info, [6])                       # 2
        _step(info, [6])                       # 3: 5 is 2 steps old, but no pass yet
        assert _present(info, [5]).all()
        _step(info, [6])                       # 4: the pass
        assert not _present(info, [5]).any()
        # an explicit evict() runs the pass now
        _step(info, [7])                       # 5
        _step(info, [8]), _step(info, [8])     # 6, 7: 7 is 2 steps old, 6 is 3
        assert st.evict("t") == 2
        assert _present(info, [6, 7, 8]).tolist() == [False, False, True]
    finally:
        st.close()


def test_row_cap_evicts_least_frequent_first(tmp_path):
    st, info = _store(tmp_path, eviction={"max_rows": 100, "age_scale_steps": 1e9})
    try:
        hot = list(range(20))
        for _ in range(5):
            _step(info, hot)                   # the hot ids are updated in 5 steps
        cold = list(range(1000, 1090))
        _step(info, cold)                      # 110 rows > cap 100 -> down to 90
        s = st.stats()["tables"]["t"]
        assert s["rows"] == 90 and s["evicted_cap"] == 20
        assert _present(info, hot).all()       # frequency protects the hot rows
        assert int(_present(info, cold).sum()) == 70
        assert st.stats()["store"]["tables"]["dyn_t"]["rows"] == 90
    finally:
        st.close()


def test_row_cap_prefers_old_rows_at_equal_frequency(tmp_path):
    st, info = _store(tmp_path, eviction={"max_rows": 10, "age_scale_steps": 1})
    try:
        _step(info, list(range(10)))           # step 1: 10 rows
        for i in range(5):
            _step(info, [100 + i])             # steps 2..6; each pass over the cap evicts
        s = st.stats()["tables"]["t"]
        assert s["rows"] <= 10
        # the newest id survives, the oldest of the first batch went first
        assert _present(info, [104]).all()
        assert s["evicted_cap"] >= 5
    finally:
        st.close()


def test_trainer_keeps_the_cap(tmp_path):
    from recstrata.training.spec import parse_config
    from recstrata.training.trainer import Trainer

    from dynamic_helpers import config

    cfg = parse_config(config({"admission": {"threshold": 1}, "eviction": {"max_rows": 500}}))
    tr = Trainer(cfg, log=lambda s: None)
    try:
        h = tr.train()
        s = tr.dynamic_store.stats()["tables"]["user"]
        assert s["rows"] <= 500 and s["evicted_cap"] > 0, s
        assert s["admitted"] - s["evicted_cap"] == s["rows"]
        assert h[0].eval_auc is not None and np.isfinite(h[0].eval_auc)
    finally:
        tr.close()
