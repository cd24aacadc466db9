"""Dynamic tables under concurrency (the header's contract, tfops/dynamic_table.h): lookups
from several threads while steps apply, evict and snapshot; every row read is a whole row of
one step (never a mix), and the TF evict / snapshot ops work like the control calls."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf  # noqa: E402

from recstrata.training import dynamic  # noqa: E402
from recstrata.training.dynamic_spec import from_dict  # noqa: E402

W = 8


def test_lookups_during_applies_and_snapshots(tmp_path):
    st = dynamic.DynamicStore(str(tmp_path / "store"))
    # lr 1, accumulator huge: each step moves every column of a row by the same amount, so a
    # whole row has equal columns and a torn read would show unequal ones
    info = st.create_table("t", from_dict({"kind": "dynamic", "init_stddev": 0.0,
                                           "optimizer": {"learning_rate": 1.0,
                                                         "initial_accumulator": 1e12}}), W)
    keys = np.arange(500, dtype=np.int64)
    k = tf.constant(keys)
    dynamic.apply_op(info, k, tf.ones_like(k), tf.zeros([500, W]), 0)
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        try:
            while not stop.is_set():
                r = st.lookup("t", keys)
                assert np.all(r == r[:, :1]), "torn row"
                reads[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        g = tf.fill([500, W], -1e6)       # each step adds the same amount to every column
        for step in range(30):
            dynamic.apply_op(info, k, tf.ones_like(k), g, 0)
            if step % 10 == 9:
                st.snapshot(str(tmp_path / f"snap{step}"))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert reads[0] > 0
    r = st.lookup("t", keys)
    assert np.all(r == r[:, :1]) and float(r[0, 0]) > 0
    st.close()


def test_evict_and_snapshot_ops(tmp_path):
    st = dynamic.DynamicStore(str(tmp_path / "store"))
    info = st.create_table("t", from_dict({"kind": "dynamic", "eviction": {"ttl_steps": 1,
                                                                            "every_steps": 1000}}), W)
    try:
        for keys in ([1, 2], [1], [1]):
            k = tf.constant(keys, tf.int64)
            dynamic.apply_op(info, k, tf.ones_like(k), tf.zeros([len(keys), W]), 0)
        assert int(dynamic.ops().recstrata_dynamic_evict(table=info.key)) == 1   # id 2
        out = str(tmp_path / "snap")
        dynamic.ops().recstrata_dynamic_snapshot(out, store=st.id)
        assert os.path.isfile(os.path.join(out, "state", "dyn_t.bin"))
        assert os.path.isfile(os.path.join(out, "store", "MANIFEST"))
        with pytest.raises(tf.errors.InternalError, match="no dynamic table"):
            dynamic.ops().recstrata_dynamic_evict(table="nope/nope")
    finally:
        st.close()
