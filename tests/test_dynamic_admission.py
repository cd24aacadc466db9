"""Dynamic tables: admission by a count-min sketch threshold, the row-wise Adagrad update,
initial rows, zero vectors for ids without a row, and config errors.

Drives the TF ops (RecstrataDynamicLookup / RecstrataDynamicApply) eagerly on one replica, so
each call is one training step of the table.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf  # noqa: E402

from recstrata.training import dynamic  # noqa: E402
from recstrata.training.dynamic_spec import from_dict  # noqa: E402
from recstrata.training.spec import SpecError, parse_config  # noqa: E402

from dynamic_helpers import config  # noqa: E402

W = 4


def _store(tmp_path, **kw):
    scheme = from_dict({"kind": "dynamic", **kw})
    st = dynamic.DynamicStore(str(tmp_path / "store"))
    info = st.create_table("t", scheme, W)
    return st, info


def _step(info, keys, counts, grads=None):
    keys = tf.constant(keys, tf.int64)
    counts = tf.constant(counts, tf.int64)
    g = tf.zeros([len(keys), W]) if grads is None else tf.constant(grads, tf.float32)
    return int(dynamic.apply_op(info, keys, counts, g, 0))


def _rows(info, keys):
    return dynamic.lookup_op(info, tf.constant(keys, tf.int64)).numpy()


def test_threshold_admits_after_enough_occurrences(tmp_path):
    st, info = _store(tmp_path, admission={"threshold": 3})
    try:
        big = 2**62 + 12345                     # raw ids: any int64, no vocabulary
        assert _step(info, [7, big, -5], [1, 2, 1]) == 1
        assert not _rows(info, [7, big, -5]).any()        # nobody has 3 occurrences yet
        assert st.stats()["tables"]["t"]["rows"] == 0
        _step(info, [7, big, -5], [1, 1, 0])              # count 0 (padding) is not counted
        r = _rows(info, [7, big, -5])
        assert not r[0].any() and r[1].any() and not r[2].any()
        _step(info, [7], [1])                              # 7 reaches 3
        r = _rows(info, [7, big, -5, 99])
        assert r[0].any() and r[1].any() and not r[2].any() and not r[3].any()
        s = st.stats()["tables"]["t"]
        assert s["rows"] == 2 and s["admitted"] == 2 and s["step"] == 3
        assert st.stats()["store"]["tables"]["dyn_t"]["rows"] == 2   # rows live in the store
    finally:
        st.close()


def test_threshold_one_admits_at_first_occurrence_with_deterministic_init(tmp_path):
    st, info = _store(tmp_path, init_stddev=0.5, seed=3)
    st2, info2 = _store(tmp_path / "b", init_stddev=0.5, seed=3)
    st3, info3 = _store(tmp_path / "c", init_stddev=0.5, seed=4)
    try:
        keys = list(range(2000))
        for i in (info, info2, info3):
            _step(i, keys, [1] * len(keys))
        a, b, c = _rows(info, keys), _rows(info2, keys), _rows(info3, keys)
        np.testing.assert_array_equal(a, b)           # a function of (seed, id, column)
        assert not np.array_equal(a, c)
        assert abs(a.std() - 0.5) < 0.02 and abs(a.mean()) < 0.02
    finally:
        st.close(), st2.close(), st3.close()


def test_adagrad_update_matches_numpy(tmp_path):
    lr, acc0, eps = 0.3, 0.1, 1e-7
    st, info = _store(tmp_path, optimizer={"learning_rate": lr, "initial_accumulator": acc0,
                                           "epsilon": eps})
    try:
        _step(info, [1, 2], [1, 1])
        w = _rows(info, [1, 2]).astype(np.float64)
        acc = np.full_like(w, acc0)
        rng = np.random.default_rng(0)
        for _ in range(3):
            g = rng.normal(0, 1, (2, W)).astype(np.float32)
            _step(info, [1, 2], [1, 1], g)
            acc = acc + g.astype(np.float64) ** 2
            w = w - lr * g / np.sqrt(acc + eps)
        np.testing.assert_allclose(_rows(info, [1, 2]), w, rtol=1e-5, atol=1e-6)
        # the accumulator is stored in the row: [embedding | accumulator]
        from recstrata.store import Store  # noqa: F401  (same row layout, read via the op)
        assert st.stats()["store"]["tables"]["dyn_t"]["dim"] == 2 * W
    finally:
        st.close()


def test_ids_without_a_row_get_no_update(tmp_path):
    st, info = _store(tmp_path, admission={"threshold": 5})
    try:
        _step(info, [10], [1], np.ones((1, W)))
        _step(info, [10], [1], np.ones((1, W)))
        assert not _rows(info, [10]).any()
        assert st.stats()["tables"]["t"]["updates"] == 0
    finally:
        st.close()


def test_trainer_counts_only_real_values(tmp_path):
    from recstrata.training.trainer import Trainer

    cfg = parse_config(config({"admission": {"threshold": 1}}, batch_size=100))
    tr = Trainer(cfg, log=lambda s: None)
    try:
        tr.train(eval_each_epoch=False)
        s = tr.dynamic_store.stats()["tables"]["user"]
        assert s["step"] == 30                             # one apply per step
        # every admitted id occurred: compare with the data's distinct valid ids
        from recstrata.training import data as D

        ids = set()
        for b in D.iterate(cfg, D.make_source(cfg, "train"), tr.layout):
            w = b["weight"].numpy() > 0
            u = b["user"].numpy()[:, 0][(b["user/len"].numpy() > 0) & w]
            h, hl = b["hist"].numpy(), b["hist/len"].numpy()
            live = (np.arange(h.shape[1])[None, :] < hl[:, None]) & w[:, None]
            ids |= set(u.tolist()) | set(h[live].tolist())
        assert s["rows"] == s["admitted"] == len(ids)
    finally:
        tr.close()


@pytest.mark.parametrize("emb, msg", [
    ({"admission": {"threshold": 0}}, "admission.threshold"),
    ({"admission": {"sketch_width": 1000}}, "power of two"),
    ({"eviction": {"max_rows": -1}}, "max_rows"),
    ({"optimizer": {"name": "adam"}}, "only 'adagrad'"),
    ({"rows": 10}, "unknown field 'rows'"),
    ({"eviction": {"ttl": 3}}, "unknown field 'ttl'"),
])
def test_config_errors_name_the_field(emb, msg):
    d = config(emb)
    with pytest.raises(SpecError, match=msg) as ei:
        parse_config(d)
    assert "sparse[0].embedding" in str(ei.value)


def test_float16_refused_with_dynamic_tables():
    with pytest.raises(SpecError, match="float16"):
        parse_config(config(mixed_precision="float16"))


def test_misuse_is_an_error_not_a_crash(tmp_path):
    st, info = _store(tmp_path)
    with pytest.raises(dynamic.DynamicTableError, match="already open|is locked|LOCK|precondition|another"):
        dynamic.DynamicStore(st.directory)                    # one process per store directory
    k = tf.constant([1, 2], tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError):
        dynamic.ops().recstrata_dynamic_apply(k, tf.constant([1], tf.int64), tf.zeros([2, W]),
                                              0, table=info.key)      # counts of the wrong size
    with pytest.raises(tf.errors.InternalError, match="gradient width"):
        dynamic.apply_op(info, k, tf.ones_like(k), tf.zeros([2, W + 1]), 0)
    with pytest.raises(tf.errors.InternalError, match="out of range"):
        dynamic.apply_op(info, k, tf.ones_like(k), tf.zeros([2, W]), 3)
    st.close()
    with pytest.raises(tf.errors.InternalError, match="no dynamic table"):
        _rows(info, [1])
    with pytest.raises(dynamic.DynamicTableError, match="closed"):
        st.lookup("t", [1])
