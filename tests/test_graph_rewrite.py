"""graph_rewrite "on": recstrata's own fusion pass over a plain SavedModel at load
(processor/src/core/graph_rewrite.h, docs/processor.md "Graph rewrite").

Every rule is checked on a model that exercises it: outputs with the pass on are
bit-identical to the pass off (and to TF's own signature call), the graph shrinks,
the executed graph (rs_model_trace_json) is the rewritten one, the off switch
loads the graph as exported, and graphs the pass cannot prove things about are left
alone (including their errors).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.errors import InvalidArgumentError, RecstrataError  # noqa: E402
from recstrata.processor import Model  # noqa: E402

N_DENSE, N_SPARSE, DIM = 3, 4, 8
ROWS = [50, 70, 90, 110]


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory):
    """A Keras 3 functional CTR model exported with model.export: an Embedding + Reshape
    per id input, nested Concatenates, a 2-layer MLP."""
    import keras

    keras.utils.set_random_seed(3)
    dense = [keras.Input(shape=(1,), dtype="float32", name=f"d{i}") for i in range(N_DENSE)]
    ids = [keras.Input(shape=(1,), dtype="int64", name=f"c{i}") for i in range(N_SPARSE)]
    embs = [keras.layers.Reshape((DIM,))(keras.layers.Embedding(r, DIM)(x)) for r, x in zip(ROWS, ids)]
    h = keras.layers.Concatenate()([keras.layers.Concatenate()(dense)] + embs)
    h = keras.layers.Dense(16, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="prob")(h)
    m = keras.Model(inputs={x.name: x for x in dense + ids}, outputs={"prob": out})
    path = tmp_path_factory.mktemp("rewrite") / "keras_ctr"
    m.export(str(path), format="tf_saved_model", verbose=False)
    return str(path)


def keras_feeds(batch: int, seed: int = 0, negative: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {f"d{i}": rng.standard_normal((batch, 1)).astype(np.float32) for i in range(N_DENSE)}
    for i, r in enumerate(ROWS):
        lo = -r if negative else 0  # Keras's Embedding maps -k to row r - k
        feeds[f"c{i}"] = rng.integers(lo, r, (batch, 1), dtype=np.int64)
    return feeds


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """tf.Module with the other patterns: split -> concat in order, a nested concat,
    a Reshape/ExpandDims/Squeeze chain, an identity reshape, and shape arithmetic on a
    variable of static shape."""
    import tensorflow as tf

    rng = np.random.default_rng(5)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((12, 5)).astype(np.float32))
            self.t = tf.Variable(rng.standard_normal((6, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 12], tf.float32, name="x"),
                                      tf.TensorSpec([None, 3, 4], tf.float32, name="z")])
        def serve(self, x, z):
            parts = tf.split(x, 3, axis=1)
            x2 = tf.concat(parts, axis=1)                          # concat of a split: x
            inner = tf.concat([x2[:, :4], x2[:, 4:]], axis=1)
            h = tf.concat([inner, x], axis=-1)                      # nested concat
            y = tf.matmul(h[:, :12] + h[:, 12:], self.w)
            r = tf.reshape(z, [-1, 12])                             # [B,3,4] -> [B,12]
            r = tf.expand_dims(r, 1)                                # [B,1,12]
            r = tf.squeeze(r, axis=[1])                             # [B,12]
            r = tf.reshape(r, [-1, 12])                             # identity
            rows = tf.cast(tf.shape(self.t)[0], tf.float32)         # 6, foldable
            cols = tf.shape(self.t)[1:]                             # [4]
            k = tf.reshape(tf.tile(self.t[:1], tf.concat([[2], cols // 4], 0)), [-1, 4])
            return {"y": y * rows, "r": r, "k": k}

    m = M()
    path = tmp_path_factory.mktemp("rewrite") / "shapes"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return str(path)


@pytest.fixture(scope="module")
def dynamic_dir(tmp_path_factory):
    """Keras-style Reshape(x, [Shape(x)[0], 16]) on an x whose second dim is unknown:
    -1 would accept inputs the original rejects, so the pass must leave it."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.reshape(x, tf.stack([tf.shape(x)[0], 16])) * 2.0}

    m = M()
    path = tmp_path_factory.mktemp("rewrite") / "dynamic"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return str(path)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """x @ W: only the function call is there to inline."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w)}

    m = M()
    path = tmp_path_factory.mktemp("rewrite") / "plain"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return str(path)


@pytest.fixture(scope="module")
def effect_dir(tmp_path_factory):
    """A serving function with an effect its output values do not depend on (a call
    counter)."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
            self.calls = tf.Variable(0, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            self.calls.assign_add(1)
            return {"y": tf.matmul(x, self.w)}

        @tf.function(input_signature=[])
        def count(self):
            return {"calls": self.calls.read_value()}

    m = M()
    path = tmp_path_factory.mktemp("rewrite") / "effect"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve, "count": m.count})
    return str(path)


def tf_reference(model_dir: str, feeds: dict) -> dict:
    import tensorflow as tf

    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --- Keras export: the embedding lookups' shape chains --------------------------------

def test_keras_outputs_identical_on_and_off(keras_dir):
    with Model(keras_dir, graph_rewrite="off") as off, Model(keras_dir, graph_rewrite="on") as on:
        for batch, seed in ((1, 0), (7, 1), (64, 2), (0, 3)):
            feeds = keras_feeds(batch, seed)
            assert_same(on.run(feeds), off.run(feeds))
        feeds = keras_feeds(33, 4, negative=True)
        assert_same(on.run(feeds), off.run(feeds))
        assert_same(on.run(feeds), tf_reference(keras_dir, feeds))


def test_keras_rewrite_report_and_node_counts(keras_dir):
    with Model(keras_dir, graph_rewrite="on") as m:
        rep = m.describe()["graph_rewrite"]
    assert rep["applied"] is True and rep["note"] is None
    # One Reshape(x, Pack(StridedSlice(Shape(x)), 8)) per lookup became Reshape(x, [-1, 8]).
    assert rep["rules"]["shape_chain"] == N_SPARSE
    assert rep["rules"]["concat_flatten"] >= 1
    assert rep["rules"]["inline_call"] >= 2  # the signature wrapper and the model's call
    # Shape, StridedSlice and Pack (and their 3 + 1 Consts) per lookup are gone.
    assert rep["nodes_before"] - rep["nodes_after"] >= 3 * N_SPARSE


def test_keras_executed_graph_is_the_rewritten_one(keras_dir):
    with Model(keras_dir, graph_rewrite="off") as m:
        off = m.trace()["executed"]
    with Model(keras_dir, graph_rewrite="on") as m:
        on = m.trace()["executed"]
    for op in ("Shape", "StridedSlice", "Pack"):
        assert off.get(op, 0) >= N_SPARSE, (op, off)
        assert on.get(op, 0) == 0, (op, on)
    assert on["Reshape"] == off["Reshape"] == N_SPARSE
    # The calls are inlined by us: none of TensorFlow's per-argument Identity nodes.
    assert off.get("Identity", 0) >= N_SPARSE and on.get("Identity", 0) == 0, (off, on)
    assert sum(on.values()) <= sum(off.values()) - 3 * N_SPARSE


def test_keras_errors_unchanged(keras_dir):
    # An id beyond its table fails the same way with the pass on and off.
    feeds = keras_feeds(4)
    feeds["c0"][2, 0] = ROWS[0] + 5
    msgs = []
    for mode in ("off", "on"):
        with Model(keras_dir, graph_rewrite=mode) as m:
            with pytest.raises(RecstrataError) as e:
                m.run(feeds)
            msgs.append(type(e.value))
    assert msgs[0] is msgs[1]


# --- split/concat, nested concat, reshape chains, constants ------------------------

def shapes_feeds(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 12)).astype(np.float32),
            "z": rng.standard_normal((batch, 3, 4)).astype(np.float32)}


def test_shape_patterns_identical_and_rewritten(shapes_dir):
    with Model(shapes_dir, graph_rewrite="off") as off, Model(shapes_dir, graph_rewrite="on") as on:
        for batch in (1, 5, 64):
            feeds = shapes_feeds(batch, batch)
            assert_same(on.run(feeds), off.run(feeds))
        assert_same(on.run(shapes_feeds(9)), tf_reference(shapes_dir, shapes_feeds(9)))
        rep = on.describe()["graph_rewrite"]
        trace_on, trace_off = on.trace()["executed"], off.trace()["executed"]
    assert rep["applied"] is True
    rules = rep["rules"]
    assert rules.get("concat_split", 0) == 1, rules
    assert rules.get("concat_flatten", 0) >= 1, rules
    # Reshape -> ExpandDims -> Squeeze -> Reshape(identity) collapses into one Reshape.
    assert rules.get("reshape_chain", 0) + rules.get("identity_reshape", 0) >= 2, rules
    assert rules.get("fold_constant", 0) >= 2, rules
    assert rep["nodes_after"] < rep["nodes_before"]
    # The split is gone from what runs; so are the ExpandDims/Squeeze of the chain.
    assert trace_off.get("Split", 0) >= 1 and trace_on.get("Split", 0) == 0, (trace_off, trace_on)
    for op in ("ExpandDims", "Squeeze"):
        assert trace_on.get(op, 0) == 0, (op, trace_on)
    assert sum(trace_on.values()) < sum(trace_off.values())


# --- what the pass must leave alone ---------------------------------------------------

def test_dynamic_reshape_is_left_alone_errors_included(dynamic_dir):
    with Model(dynamic_dir, graph_rewrite="on") as on, Model(dynamic_dir, graph_rewrite="off") as off:
        assert "shape_chain" not in on.describe()["graph_rewrite"]["rules"]
        x = np.arange(48, dtype=np.float32).reshape(3, 16)
        assert_same(on.run({"x": x}), off.run({"x": x}))
        # [2, 32] holds 64 = 4 x 16 values: Reshape to [-1, 16] would accept it, the
        # exported Reshape to [2, 16] rejects it. Both must reject.
        bad = np.ones((2, 32), np.float32)
        for m in (on, off):
            with pytest.raises(InvalidArgumentError):
                m.run({"x": bad})


def test_call_inlined(plain_dir):
    with Model(plain_dir, graph_rewrite="on") as on, Model(plain_dir, graph_rewrite="off") as off:
        rep = on.describe()["graph_rewrite"]
        assert rep["applied"] is True and set(rep["rules"]) == {"inline_call"}, rep
        x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
        assert_same(on.run({"x": x}), off.run({"x": x}))
        ex_on, ex_off = on.trace()["executed"], off.trace()["executed"]
    assert ex_on.get("Identity", 0) == 0 and sum(ex_on.values()) <= sum(ex_off.values()), (ex_off, ex_on)


def test_pbtxt_savedmodel_is_loaded_unchanged(plain_dir, tmp_path):
    import shutil

    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    d = tmp_path / "pbtxt"
    shutil.copytree(plain_dir, d)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((d / "saved_model.pb").read_bytes())
    (d / "saved_model.pbtxt").write_text(text_format.MessageToString(sm))
    (d / "saved_model.pb").unlink()
    with Model(d, graph_rewrite="on") as on, Model(plain_dir, graph_rewrite="off") as off:
        rep = on.describe()["graph_rewrite"]
        assert rep["applied"] is False and "no binary saved_model.pb" in rep["note"], rep
        x = np.ones((2, 4), np.float32)
        assert_same(on.run({"x": x}), off.run({"x": x}))


def test_function_with_effects_keeps_them(effect_dir):
    with Model(effect_dir, graph_rewrite="on") as on, Model(effect_dir, graph_rewrite="off") as off:
        rep = on.describe()["graph_rewrite"]
        # TF2 makes the returned tensors depend on the counter's update (automatic
        # control dependencies), so the update feeds the results and may be inlined;
        # it must still run on every call.
        assert rep["rules"].get("inline_call", 0) >= 1, rep
        x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
        assert_same(on.run({"x": x}), off.run({"x": x}))
        ex_on, ex_off = on.trace()["executed"], off.trace()["executed"]
    assert ex_on.get("AssignAddVariableOp") == ex_off.get("AssignAddVariableOp") == 1, (ex_on, ex_off)


# --- the switch -----------------------------------------------------------------------

def test_off_switch_and_default(keras_dir):
    with Model(keras_dir, graph_rewrite="off") as m:
        assert m.describe()["graph_rewrite"] == {"applied": False, "note": "off"}
        ops = m.trace()["executed"]
    assert ops.get("Shape", 0) >= N_SPARSE  # the graph as exported
    with Model(keras_dir) as m:
        default = m.describe()["graph_rewrite"]
    # The default is documented in docs/processor.md ("Graph rewrite").
    assert default["applied"] is False and default["note"] == "off"


def test_bad_switch_value_is_invalid_argument(plain_dir):
    with pytest.raises(InvalidArgumentError, match="graph_rewrite"):
        Model(plain_dir, graph_rewrite="yes")


def test_temporary_directory_is_removed(keras_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with Model(keras_dir, graph_rewrite="on") as m:
        assert m.describe()["graph_rewrite"]["applied"] is True
        assert list(tmp_path.iterdir()) == []
        m.run(keras_feeds(3))  # serving needs nothing on disk
    assert list(tmp_path.iterdir()) == []


def test_unwritable_temporary_directory_falls_back(keras_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "does-not-exist"))
    with Model(keras_dir, graph_rewrite="on") as on, Model(keras_dir, graph_rewrite="off") as off:
        rep = on.describe()["graph_rewrite"]
        assert rep["applied"] is False
        assert rep["note"].startswith("not rewritten:") and "does-not-exist" in rep["note"]
        feeds = keras_feeds(5)
        assert_same(on.run(feeds), off.run(feeds))
